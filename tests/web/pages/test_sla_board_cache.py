"""The SLA board page served from the figures cache.

What it protects: within the cache lifetime every reader of /sla (full page or polled `sla_board`
fragment) gets the same figures with the same "as of" time, even after tickets changed; the board
HTML is rendered once and shared, yet each reader's reassign forms carry their own CSRF token and
still work; after the lifetime the page shows the change and a new "as of" time.
"""

from __future__ import annotations

import re
from datetime import timedelta

import msgspec
import pytest

from aftersales.db import create_sessionmaker
from aftersales.sla import service as sla_service
from aftersales.tickets import policy_service
from aftersales.tickets.policy_service import PolicyService
from tests.factories import order_body, ticket_body
from tests.web.pages.helpers import csrf, post_form, sign_in

HTMX_BOARD = {"HX-Request": "true", "HX-Target": "sla_board"}
LIFETIME = 15


@pytest.fixture()
def settings(settings):
    return msgspec.structs.replace(settings, sla_report_cache_seconds=LIFETIME)


@pytest.fixture(autouse=True)
async def defaults(engine, clock):
    policy_service._parsed.clear()
    sla_service._policies.clear()
    async with create_sessionmaker(engine)() as session:
        await PolicyService(session, clock).ensure_defaults()
        await session.commit()


async def _at_risk_ticket(client, tokens, clock, n: int) -> dict:
    """Requested 40 h ago: due within 12 h, so it is on the at-risk list with a reassign form."""
    order = f"O-{n}"
    response = await client.put(f"/api/v1/orders/{order}", json=order_body(customer=f"C-{n}"), headers=tokens["integration"])
    assert response.status_code in (200, 201), response.text
    body = ticket_body(order, requested_at=(clock.now() - timedelta(hours=40)).isoformat())
    response = await client.post("/api/v1/tickets", json=body, headers=tokens["integration"])
    assert response.status_code == 201, response.text
    return response.json()


def _board(html: str) -> dict:
    return {
        "generated_at": re.search(r'data-generated-at="([^"]+)"', html).group(1),
        "open": int(re.search(r'data-open-total="(\d+)"', html).group(1)),
        "csrf": set(re.findall(r'name="_csrf_token" value="([^"]*)"', html)),
    }


async def _read_as(client, users, role: str, headers: dict | None = None) -> dict:
    client.cookies.clear()
    response = await sign_in(client, users[role]["username"], users[role]["password"])
    assert response.status_code == 303, response.text
    response = await client.get("/sla", headers=headers or {})
    assert response.status_code == 200, response.text
    return {**_board(response.text), "token": csrf(client)}


async def test_readers_share_the_cached_board_with_their_own_csrf_token(client, tokens, users, clock, engine):
    ticket = await _at_risk_ticket(client, tokens, clock, 1)
    supervisor = await _read_as(client, users, "supervisor")
    assert supervisor["open"] == 1 and supervisor["csrf"] == {supervisor["token"]}

    await _at_risk_ticket(client, tokens, clock, 2)
    clock.advance(seconds=LIFETIME - 1)
    admin = await _read_as(client, users, "admin", HTMX_BOARD)
    # The same figures, read at the same moment, in another reader's own forms.
    assert (admin["open"], admin["generated_at"]) == (1, supervisor["generated_at"])
    assert admin["csrf"] == {admin["token"]} and admin["token"] != supervisor["token"]
    # The form the admin was served works with the admin's session.
    response = await post_form(client, f"/tickets/{ticket['id']}/owner", {"intent": "assign", "user_id": users["agent"]["id"]})
    assert response.status_code == 303

    clock.advance(seconds=1)
    later = await _read_as(client, users, "supervisor")
    assert later["open"] == 2 and later["generated_at"] != supervisor["generated_at"]
    page = (await client.get("/sla")).text
    assert re.search(r'data-agent="(\d+)" data-open="(\d+)"', page).groups() == (str(users["agent"]["id"]), "1")
