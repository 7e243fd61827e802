"""Bad requests are answered with a 4xx problem body that names the field — never a 500 —
and leave every table exactly as it was."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from aftersales.models import Order, OrderItem, Shipment, Ticket, TimelineEvent, TrackingEvent
from tests.conftest import START
from tests.factories import k100_event, order_body, ticket_body

TABLES = (Ticket, TimelineEvent, Order, OrderItem, Shipment, TrackingEvent)


async def counts(session) -> dict[str, int]:
    out = {m.__tablename__: await session.scalar(select(func.count()).select_from(m)) for m in TABLES}
    await session.rollback()  # end the read: SQLite writers wait for open transactions
    return out


@pytest.fixture()
async def world(client, tokens, session) -> dict[str, Any]:
    """One order with an outbound shipment and events, and one ticket in pending_review."""
    feed = tokens["integration"]
    r = await client.put("/api/v1/orders/O-1", json=order_body(), headers=feed)
    assert r.status_code == 201, r.text
    r = await client.post("/api/v1/shipments", json={"order_external_id": "O-1", "direction": "outbound", "carrier": "SF", "tracking_number": "SF1"}, headers=feed)
    assert r.status_code == 201, r.text
    r = await client.post("/api/v1/tracking-events", json={"events": [k100_event("SF1", 0, START - timedelta(days=3))]}, headers=feed)
    assert r.status_code == 200, r.text
    r = await client.post("/api/v1/tickets", json=ticket_body(), headers=feed)
    assert r.status_code == 201, r.text
    ticket = r.json()
    return {"ticket": ticket, "before": await counts(session)}


def assert_problem(response, status: int, field: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status and body["title"] and "detail" in body
    if field is not None:
        fields = [e["field"] for e in body.get("errors", [])]
        assert field in fields or field in body["detail"], body
    return body


def ticket_with(**changes: Any) -> dict[str, Any]:
    return ticket_body(**changes)


def ticket_without(name: str) -> dict[str, Any]:
    body = ticket_body()
    del body[name]
    return body


def order_with_item(**changes: Any) -> dict[str, Any]:
    body = order_body()
    body["items"][0].update(changes)
    return body


# (method, url, json body or raw bytes, role, status, field)
CASES = {
    "wrong type (quantity 'two')": ("PUT", "/api/v1/orders/O-1", order_with_item(quantity="two"), "integration", 400, "items[0].quantity"),
    "wrong type in ticket items": ("POST", "/api/v1/tickets", ticket_with(items=[{"sku": "SKU-LIP-01", "quantity": "two"}]), "integration", 400, "items[0].quantity"),
    "missing required field": ("POST", "/api/v1/tickets", ticket_without("kind"), "integration", 400, "kind"),
    "missing required order field": ("PUT", "/api/v1/orders/O-2", {k: v for k, v in order_body().items() if k != "placed_at"}, "integration", 400, "placed_at"),
    "unknown order": ("POST", "/api/v1/tickets", ticket_with(order_external_id="O-404"), "integration", 422, "order_external_id"),
    "negative amount": ("POST", "/api/v1/tickets", ticket_with(requested_amount="-1.00"), "integration", 422, "requested_amount"),
    "amount with 3 decimals": ("POST", "/api/v1/tickets", ticket_with(requested_amount="1.005"), "integration", 422, "requested_amount"),
    "negative unit price": ("PUT", "/api/v1/orders/O-2", order_with_item(unit_price="-5.00"), "integration", 422, "items[0].unit_price"),
    "over-paid requested_amount": ("POST", "/api/v1/tickets", ticket_with(requested_amount="208.01"), "integration", 422, "requested_amount"),
    "unknown reason code": ("POST", "/api/v1/tickets", ticket_with(reason_code="quality.vibes"), "integration", 422, "reason_code"),
    "unknown kind": ("POST", "/api/v1/tickets", ticket_with(kind="teleport"), "integration", 400, "kind"),
    "naive datetime": ("POST", "/api/v1/tickets", ticket_with(requested_at="2026-11-20T01:00:00"), "integration", 400, "requested_at"),
    "naive datetime in tracking": (
        "POST", "/api/v1/tracking-events",
        {"events": [dict(k100_event("SF1", 3, START), occurred_at="2026-11-19T01:00:00")]}, "integration", 400, "events[0].occurred_at",
    ),
    "sku not in order": ("POST", "/api/v1/tickets", ticket_with(items=[{"sku": "SKU-NOPE", "quantity": 1}]), "integration", 422, "items[0].sku"),
    "quantity above ordered": ("POST", "/api/v1/tickets", ticket_with(items=[{"sku": "SKU-LIP-01", "quantity": 2}]), "integration", 422, "items[0].quantity"),
    "batch of 1001 events": (
        "POST", "/api/v1/tracking-events",
        {"events": [k100_event("SF1", 0, START - timedelta(days=2, minutes=i)) for i in range(1001)]}, "integration", 422, "events",
    ),
    "unknown carrier status": ("POST", "/api/v1/tracking-events", {"events": [k100_event("SF1", 3, START), k100_event("SF1", 999, START)]}, "integration", 422, "events[1].status"),
    "malformed JSON": ("POST", "/api/v1/tickets", b'{"order_external_id": "O-1", "kind": ', "integration", 400, None),
    "malformed JSON on order": ("PUT", "/api/v1/orders/O-1", b"[1, 2", "integration", 400, None),
    "no token": ("POST", "/api/v1/tickets", ticket_body(), None, 401, None),
    "agent role PUT order": ("PUT", "/api/v1/orders/O-1", order_body(paid_amount="1.00"), "agent", 403, None),
    "product role opening ticket": ("POST", "/api/v1/tickets", ticket_body(), "product", 403, None),
}


async def test_bad_requests_are_problems_and_change_nothing(client, tokens, session, world, subtests):
    """Each case in CASES (one subtest each; a single setup keeps the file fast)."""
    for case, (method, url, body, role, status, field) in CASES.items():
        with subtests.test(case=case):
            headers = dict(tokens[role]) if role else {}
            if isinstance(body, bytes):
                response = await client.request(method, url, content=body, headers={**headers, "Content-Type": "application/json"})
            else:
                response = await client.request(method, url, json=body, headers=headers)
            assert_problem(response, status, field)
            assert await counts(session) == world["before"]


# Validation errors (msgspec, raised by Litestar) should name fields the same way domain errors
# do ("items[0].quantity", "requested_at"), so a client can map every error to its form field.
FIELD_NAMES = {
    "wrong type (quantity 'two')": "items[0].quantity",
    "wrong type in ticket items": "items[0].quantity",
    "missing required field": "kind",
    "missing required order field": "placed_at",
    "unknown kind": "kind",
    "naive datetime": "requested_at",
    "naive datetime in tracking": "events[0].occurred_at",
}


@pytest.mark.parametrize("case", list(FIELD_NAMES))
async def test_validation_errors_name_the_exact_field(case, client, tokens):
    method, url, body, role, status, _ = CASES[case]
    response = await client.request(method, url, json=body, headers=tokens[role])
    problem = assert_problem(response, status, None)
    assert [e["field"] for e in problem["errors"]] == [FIELD_NAMES[case]]


async def test_body_over_size_limit_is_413(client, tokens, session, world):
    body = ticket_body(description="x" * 2_500_000)
    response = await client.post("/api/v1/tickets", content=json.dumps(body).encode(), headers={**tokens["integration"], "Content-Type": "application/json"})
    assert_problem(response, 413, None)
    assert await counts(session) == world["before"]


def action_url(world, action: str) -> str:
    return f"/api/v1/tickets/{world['ticket']['id']}/actions/{action}"


async def test_unknown_action_is_404(client, tokens, session, world):
    response = await client.post(action_url(world, "teleport"), json={"version": world["ticket"]["version"]}, headers=tokens["agent"])
    assert_problem(response, 404, None)
    assert "teleport" in response.json()["detail"]
    assert await counts(session) == world["before"]


async def test_illegal_action_is_409_with_allowed_actions(client, tokens, session, world):
    ticket = world["ticket"]
    response = await client.post(action_url(world, "confirm_refund"), json={"version": ticket["version"]}, headers=tokens["integration"])
    body = assert_problem(response, 409, None)
    assert body["ticket_status"] == "pending_review"
    assert set(body["allowed_actions"]) >= {"approve", "reject", "request_info", "cancel", "note"}
    assert "confirm_refund" not in body["allowed_actions"]
    assert await counts(session) == world["before"]
    again = (await client.get(f"/api/v1/tickets/{ticket['id']}", headers=tokens["agent"])).json()
    assert again["version"] == ticket["version"] and again["status"] == "pending_review"


async def test_illegal_shipment_action_registers_no_shipment(client, tokens, session, world):
    # ship_replacement on a return_refund ticket under review: refused before any shipment is written.
    response = await client.post(
        action_url(world, "ship_replacement"),
        json={"version": world["ticket"]["version"], "carrier": "SF", "tracking_number": "REP-X"},
        headers=tokens["agent"],
    )
    assert_problem(response, 409, None)
    assert await counts(session) == world["before"]


async def test_stale_version_is_409(client, tokens, session, world):
    ticket = world["ticket"]
    response = await client.post(action_url(world, "approve"), json={"version": ticket["version"] - 1}, headers=tokens["agent"])
    body = assert_problem(response, 409, None)
    assert body["current_version"] == ticket["version"]
    assert await counts(session) == world["before"]


async def test_missing_version_is_named(client, tokens, session, world):
    response = await client.post(action_url(world, "approve"), json={"note": "ok"}, headers=tokens["agent"])
    assert_problem(response, 400, "version")
    assert await counts(session) == world["before"]


async def test_idempotency_key_reused_with_other_body_is_422(client, tokens, session, world):
    headers = {**tokens["integration"], "Idempotency-Key": "k-1"}
    first = await client.post("/api/v1/tickets", json=ticket_body(requested_amount="10.00"), headers=headers)
    assert first.status_code == 201, first.text
    after_first = await counts(session)
    assert after_first["tickets"] == world["before"]["tickets"] + 1
    response = await client.post("/api/v1/tickets", json=ticket_body(requested_amount="11.00"), headers=headers)
    assert_problem(response, 422, None)
    assert await counts(session) == after_first


async def test_no_token_on_every_api_route(client, world):
    tid = world["ticket"]["id"]
    for method, url in (
        ("GET", "/api/v1/tickets"),
        ("GET", f"/api/v1/tickets/{tid}"),
        ("POST", f"/api/v1/tickets/{tid}/actions/approve"),
        ("PUT", "/api/v1/orders/O-1"),
        ("GET", "/api/v1/orders/O-1"),
        ("POST", "/api/v1/shipments"),
        ("POST", "/api/v1/tracking-events"),
    ):
        response = await client.request(method, url, json={}, headers={"Authorization": "Bearer aft_not-a-real-token"})
        assert_problem(response, 401, None)


async def test_product_role_acting_is_403(client, tokens, session, world):
    response = await client.post(action_url(world, "note"), json={"version": world["ticket"]["version"], "note": "hi"}, headers=tokens["product"])
    assert_problem(response, 403, None)
    assert await counts(session) == world["before"]


async def test_integration_role_approving_is_403(client, tokens, session, world):
    response = await client.post(action_url(world, "approve"), json={"version": world["ticket"]["version"]}, headers=tokens["integration"])
    assert_problem(response, 403, None)
    assert await counts(session) == world["before"]
    ticket = (await client.get(f"/api/v1/tickets/{world['ticket']['id']}", headers=tokens["agent"])).json()
    assert ticket["status"] == "pending_review"


async def test_agent_put_order_is_403_and_order_unchanged(client, tokens, session, world):
    response = await client.put("/api/v1/orders/O-1", json=order_body(paid_amount="1.00"), headers=tokens["agent"])
    assert_problem(response, 403, None)
    order = (await client.get("/api/v1/orders/O-1", headers=tokens["agent"])).json()
    assert order["paid_amount"] == "208.00"


@pytest.mark.parametrize(("params", "field"), [({"from": "garbage"}, "from"), ({"assignee_id": "x"}, "assignee_id")])
async def test_query_errors_name_the_parameter(client, tokens, params, field):
    response = await client.get("/api/v1/tickets", params=params, headers=tokens["agent"])
    problem = assert_problem(response, 400, None)
    assert [e["field"] for e in problem["errors"]] == [field]


@pytest.mark.parametrize(
    ("method", "url", "body", "field"),
    [
        ("POST", "/api/v1/tickets", ticket_body(requested_amount="1e30"), "requested_amount"),
        ("POST", "/api/v1/tickets", ticket_body(requested_amount="1" + "0" * 29), "requested_amount"),
        ("PUT", "/api/v1/orders/O-9", order_body(paid_amount="1e30"), "paid_amount"),
    ],
    ids=["exponent", "30 digits", "paid_amount"],
)
async def test_huge_amount_is_422_not_500(client, tokens, session, world, method, url, body, field):
    response = await client.request(method, url, json=body, headers=tokens["integration"])
    assert_problem(response, 422, field)
    assert await counts(session) == world["before"]


@pytest.mark.parametrize(
    ("method", "url", "body", "field"),
    [
        ("POST", "/api/v1/tickets", ticket_body(description="broken\u0000lipstick", requested_amount="1.00"), "description"),
        ("POST", "/api/v1/tracking-events", {"events": [dict(k100_event("SF1", 0, START - timedelta(days=2)), description="a\u0000b")]}, "events[0].description"),
        ("PUT", "/api/v1/orders/O-9", order_with_item(product_name="口红\u0000"), "items[0].product_name"),
    ],
    ids=["ticket description", "tracking description", "product name"],
)
async def test_nul_character_is_4xx_on_every_backend(client, tokens, session, world, method, url, body, field):
    response = await client.request(method, url, json=body, headers=tokens["integration"])
    assert 400 <= response.status_code < 500, response.text
    assert_problem(response, response.status_code, field)
    assert await counts(session) == world["before"]


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("GET", "/api/v1/tickets/99999999999999999999", None),
        ("POST", "/api/v1/tickets/99999999999999999999/actions/approve", {"version": 1}),
        ("POST", "/api/v1/shipments", {"order_external_id": "O-1", "direction": "return", "carrier": "SF", "tracking_number": "R-1", "ticket_id": 10**20}),
    ],
    ids=["get ticket", "act", "shipment ticket_id"],
)
async def test_out_of_range_id_is_4xx(client, tokens, session, world, method, url, body):
    headers = tokens["integration"] if method == "POST" and "shipments" in url else tokens["agent"]
    response = await client.request(method, url, json=body, headers=headers)
    assert 400 <= response.status_code < 500, response.text
    assert await counts(session) == world["before"]
