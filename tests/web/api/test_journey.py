"""The whole chain through the API alone, and replaying every request of it changes nothing."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from aftersales.models import Shipment, Ticket, TimelineEvent, TrackingEvent
from tests.conftest import START
from tests.factories import k100_event, order_body, ticket_body


async def _counts(session) -> dict[str, int]:
    out = {}
    for model in (Ticket, TimelineEvent, Shipment, TrackingEvent):
        out[model.__tablename__] = await session.scalar(select(func.count()).select_from(model))
    await session.rollback()  # end the read: SQLite writers wait for open transactions
    return out


async def test_return_refund_journey_and_replay(client, tokens, session, clock):
    feed, agent = tokens["integration"], tokens["agent"]
    requests: list[tuple[str, str, dict, dict]] = []

    async def call(method: str, url: str, body: dict, headers: dict, expect: int | tuple[int, ...]):
        requests.append((method, url, body, headers))
        response = await client.request(method, url, json=body, headers=headers)
        allowed = expect if isinstance(expect, tuple) else (expect,)
        assert response.status_code in allowed, response.text
        return response.json()

    order = await call("PUT", "/api/v1/orders/O-1", order_body(), feed, 201)
    assert order["customer"]["external_id"] == "C-1" and len(order["items"]) == 2

    await call("POST", "/api/v1/shipments", {"order_external_id": "O-1", "direction": "outbound", "carrier": "SF", "tracking_number": "SF100"}, feed, 201)
    shipped = START - timedelta(days=4)
    outbound_events = [k100_event("SF100", s, shipped + timedelta(hours=h)) for s, h in ((1, 0), (0, 10), (5, 30), (3, 34))]
    await call("POST", "/api/v1/tracking-events", {"events": outbound_events}, feed, 200)

    ticket = await call("POST", "/api/v1/tickets", ticket_body(), {**feed, "Idempotency-Key": "req-1"}, 201)
    assert ticket["status"] == "pending_review" and ticket["number"].startswith("AS-")
    tid = ticket["id"]
    base = f"/api/v1/tickets/{tid}/actions"

    t = await call("POST", f"{base}/approve", {"version": ticket["version"], "note": "ok"}, agent, 200)
    assert t["status"] == "awaiting_return"
    t = await call("POST", f"{base}/add_return_tracking", {"version": t["version"], "carrier": "YTO", "tracking_number": "YT900"}, agent, 200)
    assert t["status"] == "return_in_transit"

    clock.advance(hours=30)
    back = START + timedelta(hours=20)
    signed = [k100_event("YT900", 1, back, carrier="YTO"), k100_event("YT900", 3, back + timedelta(hours=9), carrier="YTO", desc="仓库已签收")]
    result = await call("POST", "/api/v1/tracking-events", {"events": signed}, feed, 200)
    assert result["tickets_moved"] == [ticket["number"]]

    t = (await client.get(f"/api/v1/tickets/{tid}", headers=agent)).json()
    assert t["status"] == "return_received"
    t = await call("POST", f"{base}/record_inspection", {"version": t["version"], "passed": True, "note": "包装完好"}, agent, 200)
    assert t["status"] == "refunding"
    t = await call("POST", f"{base}/confirm_refund", {"version": t["version"], "refund_reference": "FIN-1"}, feed, 200)
    assert t["status"] == "refunded" and t["refunded_amount"] == "89.00"
    t = await call("POST", f"{base}/close", {"version": t["version"]}, agent, 200)
    assert t["status"] == "closed" and t["closed_at"]

    final = (await client.get(f"/api/v1/tickets/{tid}", headers=agent)).json()
    actions = [e["action"] for e in final["timeline"]]
    assert actions == ["open", "route_to_review", "approve", "add_return_tracking", "return_delivered", "record_inspection", "confirm_refund", "close"]
    statuses = [e["to_status"] for e in final["timeline"]]
    assert statuses[-1] == "closed"
    delivered = final["timeline"][4]
    assert delivered["actor"] == "carrier:YTO" and delivered["data"]["raw_status"] == "3"
    times = [e["at"] for e in final["chain"]]
    assert times == sorted(times)
    kinds = {e["kind"] for e in final["chain"]}
    assert {"order", "outbound_tracking", "return_tracking", "ticket"} <= kinds
    outbound = next(s for s in final["shipments"] if s["direction"] == "outbound")
    assert outbound["status"] == "delivered" and len(outbound["events"]) == 4
    assert final["order"]["delivered_at"] is not None

    before = await _counts(session)
    # Replay the whole journey: same bodies, same versions, same keys. Nothing may change.
    for method, url, body, headers in requests:
        response = await client.request(method, url, json=body, headers=headers)
        assert response.status_code < 500, response.text
        if "/actions/" in url:
            assert response.status_code == 409
    assert await _counts(session) == before
    again = (await client.get(f"/api/v1/tickets/{tid}", headers=agent)).json()
    assert again["version"] == final["version"] and again["timeline"] == final["timeline"]


async def test_intake_answer_names_the_decision_and_policy_version(client, tokens):
    feed = tokens["integration"]
    assert (await client.put("/api/v1/orders/O-9", json=order_body(customer="C-9"), headers=feed)).status_code == 201
    body = ticket_body(order="O-9", kind="refund_only", reason_code="preference.changed_mind", items=[], requested_amount="59.50")
    answer = (await client.post("/api/v1/tickets", json=body, headers=feed)).json()
    assert answer["status"] == "refunding"  # nothing shipped: refunded without a person
    decision = answer["decision"]
    assert decision["policy_version"] == 1 and decision["decision"] == "approve"
    assert decision["rule"] == "refund_before_shipment"
    assert "kind refund_only = refund_only ✓" in decision["explanation"]
    assert "shipped false = false ✓" in decision["explanation"]
