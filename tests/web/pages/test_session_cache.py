"""Page requests find the signed-in user without a query (auth.tokens.SessionCache), yet an expired
session is refused at once and sign-out is immediate."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event

from aftersales.auth.service import SESSION_LIFETIME


async def test_repeat_page_requests_do_not_look_the_session_up(clients, seeded, app):
    agent = await clients("agent")
    assert (await agent.get("/queue")).status_code == 200
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    engine = app.state.read_sessionmaker.kw["bind"].sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        assert (await agent.get("/queue")).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert not [s for s in statements if "web_sessions" in s], statements


async def test_an_expired_session_is_refused_even_when_cached(clients, seeded, clock):
    agent = await clients("agent")
    assert (await agent.get("/queue")).status_code == 200  # now cached
    clock.advance(SESSION_LIFETIME + timedelta(minutes=1))
    response = await agent.get("/queue", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")
