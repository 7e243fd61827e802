"""Page-test fixtures: one signed-in browser-like client per role, and a seeded order + ticket.

Each role gets its own browser-like client (its own cookie jar) on the shared test app, signed in through the real
/login form with the CSRF cookie from a GET, exactly as a browser would do it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
from argon2 import PasswordHasher

from aftersales.auth import service as auth_service
from aftersales.auth.service import AuthService
from aftersales.db import create_sessionmaker
from tests.factories import order_body, ticket_body
from tests.web.pages.helpers import browser_like, fetch_csrf, sign_in

ROLES = ("agent", "supervisor", "product", "admin")
PASSWORDS = {role: f"{role}-secret-1" for role in ROLES}
TEAMS = {"product": ["qc"]}


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same argon2 code path, lighter parameters: the production cost (~0.4 s a hash on this
    machine) would make the page suite slow without protecting anything more."""
    monkeypatch.setattr(auth_service, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture(autouse=True)
def fresh_policy_cache() -> None:
    """Parsed intake policies are cached per process by version number, and every test's empty
    database starts again at version 1: forget what an earlier test published."""
    from aftersales.tickets import policy_service

    getattr(policy_service, "_parsed", {}).clear()


@pytest.fixture()
async def users(engine, clock) -> dict[str, dict[str, Any]]:
    """One person per role, created through AuthService: role -> {username, password, id}."""
    out: dict[str, dict[str, Any]] = {}
    async with create_sessionmaker(engine)() as session:
        service = AuthService(session, clock)
        for role in ROLES:
            user = await service.create_user(
                username=f"{role}1", password=PASSWORDS[role], role=role,
                display_name=f"{role.title()} One", teams=TEAMS.get(role),
            )
            out[role] = {"username": user.username, "password": PASSWORDS[role], "id": user.id}
        await session.commit()
    return out


@pytest.fixture()
async def clients(app, users, client) -> AsyncIterator[Callable[[str], Awaitable[Any]]]:
    """`await clients(role)`: a separate browser-like client (own cookie jar) signed in as that
    role through the real form; "anonymous" is not signed in but holds a CSRF cookie, so its
    posts reach the guards. All of them share `client`'s running app (see `browser_like`)."""
    async with AsyncExitStack() as stack:
        cache: dict[str, Any] = {}

        async def get(role: str) -> Any:
            if role not in cache:
                other = await stack.enter_async_context(browser_like(client))
                if role == "anonymous":
                    await fetch_csrf(other)
                else:
                    user = users[role]
                    response = await sign_in(other, user["username"], user["password"])
                    assert response.status_code == 303, response.text
                cache[role] = other
            return cache[role]

        yield get


@pytest.fixture()
async def seeded(client, tokens) -> dict[str, Any]:
    """One order (O-1) with one return_refund ticket, fed through the API like the platform does."""
    feed = tokens["integration"]
    response = await client.put("/api/v1/orders/O-1", json=order_body(), headers=feed)
    assert response.status_code == 201, response.text
    response = await client.post("/api/v1/tickets", json=ticket_body(), headers=feed)
    assert response.status_code == 201, response.text
    ticket = response.json()
    assert ticket["status"] == "pending_review"
    return {"order": "O-1", "id": ticket["id"], "number": ticket["number"], "version": ticket["version"]}
