"""The tickets API: listing filters, keyset pagination, 404s, Idempotency-Key, order upserts, ops."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from aftersales.models import Customer, LiveSession, Order, OrderItem, Ticket, TimelineEvent
from tests.conftest import START
from tests.factories import order_body, ticket_body


async def count(session, model) -> int:
    n = await session.scalar(select(func.count()).select_from(model))
    await session.rollback()  # end the read: SQLite writers wait for open transactions
    return n


async def put_order(client, tokens, external_id: str = "O-1", **kw) -> dict[str, Any]:
    r = await client.put(f"/api/v1/orders/{external_id}", json=order_body(**kw), headers=tokens["integration"])
    assert r.status_code in (200, 201), r.text
    return r.json()


async def open_ticket(client, tokens, **overrides) -> dict[str, Any]:
    r = await client.post("/api/v1/tickets", json=ticket_body(**overrides), headers=tokens["integration"])
    assert r.status_code == 201, r.text
    return r.json()


async def list_ids(client, tokens, params: dict[str, Any] | list[tuple[str, str]]) -> list[int]:
    r = await client.get("/api/v1/tickets", params=params, headers=tokens["agent"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["next_cursor"] is None, "filter tests fit in one page"
    return [t["id"] for t in body["items"]]


def at(hours_before: float) -> str:
    return (START - timedelta(hours=hours_before)).isoformat()


async def test_listing_filters(client, tokens):
    await put_order(client, tokens, "O-1")
    await put_order(client, tokens, "O-2", customer="C-2")
    # Register the outbound parcels so that no refund is approved before shipment by the policy.
    for order, tn in (("O-1", "SF-1"), ("O-2", "SF-2")):
        r = await client.post("/api/v1/shipments", json={"order_external_id": order, "direction": "outbound", "carrier": "SF", "tracking_number": tn}, headers=tokens["integration"])
        assert r.status_code == 201, r.text
    a = await open_ticket(client, tokens, order_external_id="O-1", requested_at=at(10))
    b = await open_ticket(client, tokens, order_external_id="O-1", kind="refund_only", reason_code="logistics.delay", requested_at=at(8), requested_amount="5.00")
    c = await open_ticket(client, tokens, order_external_id="O-2", kind="exchange", reason_code="fit.size", requested_at=at(6), items=[{"sku": "SKU-TEE-M", "quantity": 1}], requested_amount="0.00")
    d = await open_ticket(client, tokens, order_external_id="O-2", kind="complaint", reason_code="logistics.delay", requested_at=at(4), items=[], requested_amount="0.00")
    agent = tokens["agent"]
    for t, action, body in ((a, "approve", {}), (d, "reject", {"note": "no"})):
        if t["status"] == "pending_review":
            r = await client.post(f"/api/v1/tickets/{t['id']}/actions/{action}", json={"version": t["version"], **body}, headers=agent)
            assert r.status_code == 200, r.text
    A, B, C, D = a["id"], b["id"], c["id"], d["id"]
    tickets = {t["id"]: (await client.get(f"/api/v1/tickets/{t['id']}", headers=agent)).json() for t in (a, b, c, d)}
    newest_first = [D, C, B, A]

    def where(pred) -> list[int]:
        return [i for i in newest_first if pred(tickets[i])]

    statuses = {t["status"] for t in tickets.values()}
    queues = {t["queue"] for t in tickets.values()}
    assert len(statuses) >= 3, statuses  # the status filter must have something to tell apart

    # default: newest request first
    assert await list_ids(client, tokens, {}) == newest_first
    assert await list_ids(client, tokens, {"sort": "requested_at"}) == [A, B, C, D]
    for status in statuses:
        assert await list_ids(client, tokens, {"status": status}) == where(lambda t: t["status"] == status), status
    two = sorted(statuses)[:2]
    assert await list_ids(client, tokens, [("status", two[0]), ("status", two[1])]) == where(lambda t: t["status"] in two)
    assert await list_ids(client, tokens, {"status": ",".join(two)}) == where(lambda t: t["status"] in two)
    assert await list_ids(client, tokens, {"kind": "exchange"}) == [C]
    assert await list_ids(client, tokens, {"kind": "refund_only,complaint"}) == [D, B]
    assert await list_ids(client, tokens, {"reason": "logistics.delay"}) == [D, B]
    for queue in queues - {None}:
        assert await list_ids(client, tokens, {"queue": queue}) == where(lambda t: t["queue"] == queue), queue
    assert await list_ids(client, tokens, {"queue": "no-such-queue"}) == []
    assert await list_ids(client, tokens, {"order": "O-2"}) == [D, C]
    assert await list_ids(client, tokens, {"order": "O-404"}) == []
    # from is inclusive, to is exclusive
    assert await list_ids(client, tokens, {"from": at(8), "to": at(4)}) == [C, B]
    assert await list_ids(client, tokens, {"from": at(8)}) == [D, C, B]
    assert await list_ids(client, tokens, {"to": at(8)}) == [A]
    # the same instant written in another offset means the same thing
    shanghai = (START - timedelta(hours=8)).astimezone(ZoneInfo("Asia/Shanghai")).isoformat()
    assert await list_ids(client, tokens, {"from": shanghai, "to": at(4)}) == [C, B]
    # combined filters
    b_status = tickets[B]["status"]
    assert await list_ids(client, tokens, {"order": "O-1", "reason": "logistics.delay", "status": b_status}) == [B]


@pytest.mark.parametrize(("param", "value"), [("status", "nope"), ("kind", "teleport"), ("sort", "id")])
async def test_listing_bad_filter_value_is_named(client, tokens, param, value):
    r = await client.get("/api/v1/tickets", params={param: value}, headers=tokens["agent"])
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in r.json()["errors"]] == [param]


@pytest.mark.parametrize("limit", ["0", "201", "ten"])
async def test_listing_bad_limit_is_4xx(client, tokens, limit):
    r = await client.get("/api/v1/tickets", params={"limit": limit}, headers=tokens["agent"])
    assert r.status_code == 400, r.text
    assert "limit" in r.json()["detail"]


async def _make_many(client, tokens, hours: list[float]) -> list[tuple[datetime, int]]:
    await put_order(client, tokens, "O-1", paid_amount="1000.00")
    made = []
    for h in hours:
        t = await open_ticket(client, tokens, requested_at=at(h), requested_amount="1.00")
        made.append((datetime.fromisoformat(t["requested_at"]), t["id"]))
    return made


async def _all_pages(client, tokens, params: dict[str, Any]) -> tuple[list[int], int]:
    ids: list[int] = []
    cursor, pages = None, 0
    while True:
        query = {**params, "limit": 10, **({"cursor": cursor} if cursor else {})}
        r = await client.get("/api/v1/tickets", params=query, headers=tokens["agent"])
        assert r.status_code == 200, r.text
        body = r.json()
        pages += 1
        assert len(body["items"]) <= 10
        ids += [t["id"] for t in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids, pages
        assert pages < 10, "pagination does not terminate"


async def test_keyset_pagination_distinct_times(client, tokens):
    # 25 tickets, created in a shuffled time order so that id order differs from time order.
    hours = [(i * 7) % 25 + 0.5 for i in range(25)]
    made = await _make_many(client, tokens, hours)
    ascending = [tid for _, tid in sorted(made)]
    assert ascending != sorted(tid for _, tid in made), "time order must differ from id order for this test to bite"
    ids, pages = await _all_pages(client, tokens, {"sort": "requested_at"})
    assert ids == ascending and pages == 3
    ids, pages = await _all_pages(client, tokens, {})
    assert ids == list(reversed(ascending)) and pages == 3


async def test_keyset_pagination_with_ties(client, tokens):
    # Many tickets share one requested_at; a page boundary falls inside each group.
    hours = [float(i // 6) + 1 for i in range(23)]
    made = await _make_many(client, tokens, hours)
    ascending = [tid for _, tid in sorted(made)]
    ids, _ = await _all_pages(client, tokens, {"sort": "requested_at"})
    assert ids == ascending
    ids, _ = await _all_pages(client, tokens, {})
    assert ids == list(reversed(ascending))
    # with a filter applied, pages still add up to exactly the filtered set
    ids, _ = await _all_pages(client, tokens, {"status": "pending_review", "to": at(2)})
    assert ids == [tid for (t, tid) in sorted(made, reverse=True) if t < START - timedelta(hours=2)]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!", "abc", _b64(b"not json"), _b64(b'{"a": 1}'), _b64(b"[1, 2]"), _b64(b'["yesterday", 3]'),
        _b64(b'["2026-11-20T00:00:00+00:00", "x"]'), _b64(b"\xff\xfe"),
        # The position before the sort was part of the cursor, and positions that cannot exist.
        _b64(b'["2026-11-20T00:00:00+00:00", 3]'), _b64(b'["-requested_at", "2026-11-20T00:00:00+00:00", "3"]'),
        _b64(b'["-requested_at", "2026-11-20T00:00:00+00:00", 99999999999999999999]'),
        _b64(b'["-requested_at", "2026-11-20T00:00:00+00:00", 0]'), _b64(b'["-requested_at", null, 3]'),
        _b64(b'["id", "2026-11-20T00:00:00+00:00", 3]'), _b64(b'["-requested_at", "yesterday", 3]'),
    ],
)
async def test_bad_cursor_is_422(client, tokens, cursor):
    r = await client.get("/api/v1/tickets", params={"cursor": cursor}, headers=tokens["agent"])
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["cursor"]


async def test_unknown_ticket_is_404(client, tokens):
    r = await client.get("/api/v1/tickets/999999", headers=tokens["agent"])
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "999999" in r.json()["detail"]
    r = await client.post("/api/v1/tickets/999999/actions/approve", json={"version": 1}, headers=tokens["agent"])
    assert r.status_code == 404


async def test_ticket_detail_has_the_chain(client, tokens):
    await put_order(client, tokens)
    t = await open_ticket(client, tokens)
    r = await client.get(f"/api/v1/tickets/{t['id']}", headers=tokens["integration"])
    assert r.status_code == 200
    body = r.json()
    assert body["order"]["external_id"] == "O-1" and body["items"][0]["sku"] == "SKU-LIP-01"
    assert [e["action"] for e in body["timeline"]] == ["open", "route_to_review"]
    assert body["allowed_actions"][:3] == ["approve", "reject", "request_info"]


async def test_post_ticket_with_idempotency_key_twice(client, tokens, session):
    await put_order(client, tokens)
    headers = {**tokens["integration"], "Idempotency-Key": "abc-123"}
    first = await client.post("/api/v1/tickets", json=ticket_body(), headers=headers)
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    second = await client.post("/api/v1/tickets", json=ticket_body(), headers=headers)
    assert second.status_code == 201
    assert second.headers.get("idempotent-replayed") == "true"
    assert second.json() == first.json()
    assert await count(session, Ticket) == 1
    assert await count(session, TimelineEvent) == 2
    # The key is scoped to the caller: another token using the same key makes its own request.
    other = await client.post("/api/v1/tickets", json=ticket_body(), headers={**tokens["admin"], "Idempotency-Key": "abc-123"})
    assert other.status_code == 201 and "idempotent-replayed" not in other.headers
    assert await count(session, Ticket) == 2


async def test_action_with_idempotency_key_is_replayed_not_refused(client, tokens, session):
    await put_order(client, tokens)
    t = await open_ticket(client, tokens)
    url = f"/api/v1/tickets/{t['id']}/actions/approve"
    headers = {**tokens["agent"], "Idempotency-Key": "approve-1"}
    first = await client.post(url, json={"version": t["version"]}, headers=headers)
    assert first.status_code == 200
    second = await client.post(url, json={"version": t["version"]}, headers=headers)
    assert second.status_code == 200 and second.headers.get("idempotent-replayed") == "true"
    assert second.json()["version"] == first.json()["version"] == t["version"] + 1
    assert await count(session, TimelineEvent) == 3


async def _order_counts(session) -> dict[str, int]:
    return {m.__tablename__: await count(session, m) for m in (Order, OrderItem, Customer, LiveSession)}


async def test_put_order_twice_is_idempotent(client, tokens, session):
    body = order_body()
    first = await client.put("/api/v1/orders/O-1", json=body, headers=tokens["integration"])
    assert first.status_code == 201 and first.json()["created"] is True
    before = await _order_counts(session)
    assert before == {"orders": 1, "order_items": 2, "customers": 1, "live_sessions": 1}
    second = await client.put("/api/v1/orders/O-1", json=body, headers=tokens["integration"])
    assert second.status_code == 200 and second.json()["created"] is False
    assert await _order_counts(session) == before
    a, b = first.json(), second.json()
    a.pop("created"), b.pop("created")
    assert a == b


async def test_re_put_updates_price_and_items(client, tokens, session):
    await put_order(client, tokens)
    body = order_body()
    body["items"][0]["unit_price"] = "79.00"
    body["items"][1]["quantity"] = 3
    body["paid_amount"] = "257.50"
    r = await client.put("/api/v1/orders/O-1", json=body, headers=tokens["integration"])
    assert r.status_code == 200, r.text
    items = {i["sku"]: i for i in r.json()["items"]}
    assert items["SKU-LIP-01"]["unit_price"] == "79.00" and items["SKU-TEE-M"]["quantity"] == 3
    got = (await client.get("/api/v1/orders/O-1", headers=tokens["agent"])).json()
    assert got["paid_amount"] == "257.50"
    assert {i["sku"]: i["unit_price"] for i in got["items"]} == {"SKU-LIP-01": "79.00", "SKU-TEE-M": "59.50"}
    assert await count(session, OrderItem) == 2


async def test_re_put_cannot_drop_an_item_a_ticket_refers_to(client, tokens, session):
    await put_order(client, tokens)
    await open_ticket(client, tokens)  # refers to SKU-LIP-01
    body = order_body()
    body["items"] = body["items"][1:]
    r = await client.put("/api/v1/orders/O-1", json=body, headers=tokens["integration"])
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["items"]
    assert await count(session, OrderItem) == 2


async def test_openapi_lists_ticket_paths(client):
    r = await client.get("/schema/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/api/v1/tickets" in paths and "post" in paths["/api/v1/tickets"] and "get" in paths["/api/v1/tickets"]
    assert "/api/v1/tickets/{ticket_id}" in paths
    assert "/api/v1/tickets/{ticket_id}/actions/{action}" in paths
    assert "/api/v1/tracking-events" in paths


async def test_healthz(client):
    r = await client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
