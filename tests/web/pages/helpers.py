"""Helpers for page tests: signing in through the real form, form posts with CSRF, DB probes."""

from __future__ import annotations

import re
from typing import Any

import httpx
from litestar.testing import AsyncTestClient
from litestar.testing.transport import TestClientTransport
from sqlalchemy import func, select

from aftersales.models import Ticket, TimelineEvent
from tests.factories import order_body, ticket_body

CSRF_COOKIE = "csrftoken"


class _SharedAppTransport(httpx.AsyncBaseTransport):
    def __init__(self, client: AsyncTestClient) -> None:
        self.inner = TestClientTransport(client=client, raise_server_exceptions=True, root_path="")  # type: ignore[arg-type]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)


def browser_like(client: AsyncTestClient) -> httpx.AsyncClient:
    """Another "browser" (its own cookie jar) on the same running test app.

    Not a second `AsyncTestClient(app=app)`: each of those runs the app in its own portal thread
    and event loop, while the app's engine is shared — on PostgreSQL an asyncpg connection made in
    one loop and reused from another hangs forever (and Litestar's shared lifespan hangs when
    test clients close out of LIFO order). Sharing `client`'s portal avoids both."""
    return httpx.AsyncClient(
        transport=_SharedAppTransport(client), base_url=client.base_url, follow_redirects=True, headers={"user-agent": "testclient"},
    )


def csrf(client: Any) -> str:
    return client.cookies.get(CSRF_COOKIE) or ""


async def fetch_csrf(client: Any) -> str:
    """A GET sets the CSRF cookie; unsafe requests must echo it."""
    if not csrf(client):
        response = await client.get("/login")
        assert response.status_code == 200, response.text
    token = csrf(client)
    assert token, "GET /login did not set the csrftoken cookie"
    return token


async def sign_in(client: Any, username: str, password: str, *, next_url: str = "") -> Any:
    token = await fetch_csrf(client)
    form = {"username": username, "password": password, "_csrf_token": token}
    if next_url:
        form["next"] = next_url
    return await client.post("/login", data=form, follow_redirects=False)


async def post_form(
    client: Any, url: str, form: dict[str, Any] | None = None, *,
    htmx_target: str | None = None, with_csrf: bool = True,
) -> Any:
    data = dict(form or {})
    if with_csrf:
        data["_csrf_token"] = await fetch_csrf(client)
    headers = {"HX-Request": "true", "HX-Target": htmx_target} if htmx_target else {}
    return await client.post(url, data=data, headers=headers, follow_redirects=False)


async def open_ticket(client: Any, tokens: dict, order: str = "O-1", **overrides: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/tickets", json=ticket_body(order, **overrides), headers=tokens["integration"])
    assert response.status_code == 201, response.text
    return response.json()


async def put_order(client: Any, tokens: dict, order: str, **kwargs: Any) -> None:
    response = await client.put(f"/api/v1/orders/{order}", json=order_body(**kwargs), headers=tokens["integration"])
    assert response.status_code in (200, 201), response.text


async def db_state(engine: Any, ticket_id: int | None = None) -> dict[str, Any]:
    """What an action could change: the timeline event count, and the ticket's status and version."""
    async with engine.connect() as conn:
        state: dict[str, Any] = {"events": await conn.scalar(select(func.count()).select_from(TimelineEvent))}
        if ticket_id is not None:
            row = (await conn.execute(select(Ticket.status, Ticket.version).where(Ticket.id == ticket_id))).one()
            state["status"], state["version"] = row.status, row.version
    return state


TICKET_ROW = re.compile(r'<tr data-ticket="([^"]+)"')
TIMELINE_TICKET_STEP = re.compile(r'<li class="step step-ticket"')


def ticket_numbers(html: str) -> list[str]:
    return TICKET_ROW.findall(html)


def ticket_steps(html: str) -> int:
    return len(TIMELINE_TICKET_STEP.findall(html))
