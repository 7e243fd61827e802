"""The auto-approval policy at intake, through POST /api/v1/tickets against a real database.

What they protect (issue 4, "What it must show"):
- the standard cases are decided at once, with their explanation and the policy version on the
  timeline and in the stored decision; the non-standard ones land in the expected queue;
- a supervisor's draft is validated (errors name the line), simulated over past tickets (fewer
  auto-approvals, `changed` counted), published; the next ticket is decided by the new version and
  the old tickets keep their old decision and explanation.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from aftersales.auth import service as auth_service
from aftersales.auth.service import AuthService
from aftersales.auth.tokens import create_token
from aftersales.db import create_sessionmaker
from aftersales.models import Ticket
from aftersales.tickets.models import PolicyVersion, TicketDecision
from aftersales.tickets.policy import DEFAULT_POLICY
from aftersales.tickets.policy_service import PolicyService
from tests.conftest import START, _empty_tables
from tests.factories import k100_event, order_body, ticket_body

SEVEN_DAY_200 = "and amount <= 200 and requests_30d < 3 -> approve"
SEVEN_DAY_50 = "and amount <= 50 and requests_30d < 3 -> approve"
CHEAP = {"sku": "SKU-CHEAP", "product_id": "P-CHEAP", "product_name": "小样", "category": "美妆", "quantity": 1, "unit_price": "30.00"}
MID = {"sku": "SKU-MID", "product_id": "P-MID", "product_name": "精华", "category": "美妆", "quantity": 1, "unit_price": "150.00"}


@pytest.fixture()
async def defaults(engine, clock) -> None:
    async with create_sessionmaker(engine)() as session:
        await PolicyService(session, clock).ensure_defaults()
        await session.commit()


@pytest.fixture()
async def supervisor(engine, clock, monkeypatch) -> dict[str, Any]:
    """A supervisor person and a personal token acting as them."""
    monkeypatch.setattr(auth_service, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    async with create_sessionmaker(engine)() as session:
        user = await AuthService(session, clock).create_user(username="sup1", password="sup1-secret", role="supervisor")
        token = await create_token(session, clock, name="sup1-laptop", role="supervisor", user_id=user.id)
        await session.commit()
    return {"id": user.id, "headers": {"Authorization": f"Bearer {token}"}}


# -- helpers ----------------------------------------------------------------------------------


async def put_order(client, tokens, order: str, *, customer: str, placed_at: datetime | None = None,
                    items: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    response = await client.put(f"/api/v1/orders/{order}", json=order_body(customer=customer, placed_at=placed_at, items=items),
                                headers=tokens["integration"])
    assert response.status_code in (200, 201), response.text
    return response.json()


async def ship(client, tokens, order: str, *, signed_at: datetime | None = None) -> None:
    """An outbound parcel; signed for at `signed_at` when given (this sets the order's delivered_at)."""
    tracking = f"SF{order}"
    body = {"order_external_id": order, "direction": "outbound", "carrier": "SF", "tracking_number": tracking}
    response = await client.post("/api/v1/shipments", json=body, headers=tokens["integration"])
    assert response.status_code == 201, response.text
    if signed_at is not None:
        events = [k100_event(tracking, 0, signed_at - timedelta(hours=20)), k100_event(tracking, 3, signed_at, desc="已签收")]
        response = await client.post("/api/v1/tracking-events", json={"events": events}, headers=tokens["integration"])
        assert response.status_code == 200, response.text


async def open_ticket(client, tokens, order: str, **overrides: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/tickets", json=ticket_body(order, **overrides), headers=tokens["integration"])
    assert response.status_code == 201, response.text
    return response.json()


async def detail(client, tokens, ticket_id: int) -> dict[str, Any]:
    response = await client.get(f"/api/v1/tickets/{ticket_id}", headers=tokens["agent"])
    assert response.status_code == 200, response.text
    return response.json()


async def decision_of(engine, ticket_id: int) -> TicketDecision:
    async with create_sessionmaker(engine)() as session:
        row = await session.get(TicketDecision, ticket_id)
        assert row is not None, f"ticket {ticket_id} has no stored decision"
        return row


def no_reason(**overrides: Any) -> dict[str, Any]:
    return {"kind": "return_refund", "reason_code": "preference.changed_mind", "description": "不想要了", **overrides}


def decided_event(ticket: dict[str, Any], action: str) -> dict[str, Any]:
    actions = [e["action"] for e in ticket["timeline"]]
    assert actions == ["open", action], actions
    return ticket["timeline"][1]


# -- the standard cases: decided at once --------------------------------------------------------


async def test_refund_only_before_shipment_is_approved_and_refunding(client, tokens, engine, defaults):
    await put_order(client, tokens, "O-RO", customer="C-RO")
    created = await open_ticket(client, tokens, "O-RO", kind="refund_only", reason_code="preference.changed_mind", items=[])
    assert created["status"] == "refunding"
    assert created["queue"] is None
    event = decided_event(created, "auto_approve")
    assert event["actor"] == "system:system" and event["to_status"] == "refunding"
    assert event["data"]["policy_version"] == 1 and event["data"]["rule"] == "refund_before_shipment"
    assert event["note"] == "kind refund_only = refund_only ✓ · shipped false = false ✓ → approve"
    assert created["first_response_at"] is not None and created["approved_at"] is not None
    # The GET answer says the same.
    again = await detail(client, tokens, created["id"])
    assert again["status"] == "refunding" and again["timeline"] == created["timeline"]
    stored = await decision_of(engine, created["id"])
    assert (stored.policy_version, stored.decision, stored.rule) == (1, "approve", "refund_before_shipment")
    assert stored.explanation == event["note"]
    assert stored.facts["shipped"] is False and stored.facts["kind"] == "refund_only"
    assert [r["rule"] for r in stored.trace][-1] == "refund_before_shipment" and stored.trace[-1]["matched"] is True


async def test_seven_day_no_reason_return_within_the_window_awaits_the_return(client, tokens, engine, defaults):
    await put_order(client, tokens, "O-7D", customer="C-7D")
    await ship(client, tokens, "O-7D", signed_at=START - timedelta(days=3))
    created = await open_ticket(client, tokens, "O-7D", **no_reason())
    assert created["status"] == "awaiting_return"
    event = decided_event(created, "auto_approve")
    assert event["data"]["policy_version"] == 1 and event["data"]["rule"] == "seven_day_no_reason"
    note = event["note"]
    for part in ("window_open true = true ✓", "excluded false = false ✓", "amount ¥89.00 ≤ ¥200 ✓", "requests_30d 0 < 3 ✓"):
        assert part in note, note
    assert note.endswith("→ approve")
    stored = await decision_of(engine, created["id"])
    assert stored.facts["shipped"] is True and stored.facts["delivered"] is True
    assert stored.facts["days_since_signed"] == pytest.approx(2.96, abs=0.01)
    assert stored.facts["categories"] == ["美妆"] and stored.facts["customer"] == "C-7D"


async def test_seven_day_return_after_the_window_goes_to_a_person(client, tokens, engine, defaults):
    await put_order(client, tokens, "O-LATE", customer="C-LATE", placed_at=START - timedelta(days=15))
    await ship(client, tokens, "O-LATE", signed_at=START - timedelta(days=10))
    created = await open_ticket(client, tokens, "O-LATE", **no_reason())
    assert created["status"] == "pending_review" and created["queue"] == "general"
    event = decided_event(created, "route_to_review")
    assert event["data"]["policy_version"] == 1 and event["data"]["queue"] == "general"
    stored = await decision_of(engine, created["id"])
    assert stored.facts["window_open"] is False
    seven = next(r for r in stored.trace if r["rule"] == "seven_day_no_reason")
    window = next(c for c in seven["conditions"] if c["fact"] == "window_open")
    assert window == {**window, "actual": False, "held": False}


async def test_an_item_excluded_at_checkout_goes_to_a_person(client, tokens, engine, defaults):
    item = {"sku": "SKU-CUSTOM", "product_id": "P-CUSTOM", "product_name": "刻字口红", "category": "美妆", "quantity": 1,
            "unit_price": "89.00", "no_reason_excluded": True}
    order = await put_order(client, tokens, "O-EX", customer="C-EX", items=[item])
    assert order["items"][0]["no_reason_excluded"] is True
    created = await open_ticket(client, tokens, "O-EX", **no_reason(items=[{"sku": "SKU-CUSTOM", "quantity": 1}]))
    assert created["status"] == "pending_review" and created["queue"] == "general"
    stored = await decision_of(engine, created["id"])
    assert stored.facts["excluded"] is True and stored.facts["window_open"] is True


async def test_a_fresh_food_category_is_excluded_by_law(client, tokens, engine, defaults):
    item = {"sku": "SKU-FRUIT", "product_id": "P-FRUIT", "product_name": "车厘子", "category": "生鲜", "quantity": 1, "unit_price": "89.00"}
    await put_order(client, tokens, "O-FR", customer="C-FR", items=[item])
    created = await open_ticket(client, tokens, "O-FR", **no_reason(items=[{"sku": "SKU-FRUIT", "quantity": 1}]))
    assert created["status"] == "pending_review"
    assert (await decision_of(engine, created["id"])).facts["excluded"] is True


async def test_a_small_quality_claim_with_a_photo_is_refunded_at_once(client, tokens, engine, defaults):
    await put_order(client, tokens, "O-QF", customer="C-QF")
    await ship(client, tokens, "O-QF", signed_at=START - timedelta(days=2))
    created = await open_ticket(client, tokens, "O-QF", evidence_urls=["https://img.example.com/lip-broken.jpg"])
    assert created["status"] == "refunding"
    event = decided_event(created, "fast_refund")
    assert event["data"]["policy_version"] == 1 and event["data"]["rule"] == "fast_quality_refund"
    assert "evidence true = true ✓" in event["note"] and "amount ¥89.00 ≤ ¥100 ✓" in event["note"]
    assert event["note"].endswith("→ fast_refund")
    assert (await decision_of(engine, created["id"])).decision == "fast_refund"


async def test_the_same_quality_claim_without_a_photo_goes_to_quality_review(client, tokens, defaults):
    await put_order(client, tokens, "O-QR", customer="C-QR")
    created = await open_ticket(client, tokens, "O-QR")
    assert created["status"] == "pending_review" and created["queue"] == "quality_review" and created["priority"] == 1
    event = decided_event(created, "route_to_review")
    assert event["data"]["suggestion"] == "approve"


# -- the non-standard cases: the right queue ------------------------------------------------------


async def test_non_standard_requests_land_in_their_queues(client, tokens, engine, defaults):
    big = {"sku": "SKU-BAG", "product_id": "P-BAG", "product_name": "真皮手袋", "category": "箱包", "quantity": 1, "unit_price": "1299.00"}
    await put_order(client, tokens, "O-BIG", customer="C-BIG", items=[big])
    await put_order(client, tokens, "O-LOST", customer="C-LOST")
    await ship(client, tokens, "O-LOST")
    await put_order(client, tokens, "O-CMP", customer="C-CMP")
    await put_order(client, tokens, "O-FAKE", customer="C-FAKE")
    await put_order(client, tokens, "O-GEN", customer="C-GEN")

    cases = {
        "high_value": await open_ticket(client, tokens, "O-BIG", kind="return_refund", reason_code="fit.size",
                                        items=[{"sku": "SKU-BAG", "quantity": 1}], requested_amount="1299.00"),
        "logistics": await open_ticket(client, tokens, "O-LOST", kind="refund_only", reason_code="logistics.lost", items=[],
                                       requested_amount="208.00"),
        "complaints": await open_ticket(client, tokens, "O-CMP", kind="complaint", reason_code="description.host_claim_mismatch",
                                        items=[], requested_amount="0"),
        "risk": await open_ticket(client, tokens, "O-FAKE", reason_code="quality.counterfeit_suspected",
                                  evidence_urls=["https://img.example.com/fake.jpg"]),
        "general": await open_ticket(client, tokens, "O-GEN", kind="exchange", reason_code="fit.size"),
    }
    expected = {"high_value": ("high_value", 2), "logistics": ("logistics_problem", 1), "complaints": ("complaint", 1),
                "risk": ("counterfeit_claim", 3), "general": (None, 0)}
    for queue, ticket in cases.items():
        assert (ticket["status"], ticket["queue"]) == ("pending_review", queue), ticket
        rule, priority = expected[queue]
        assert ticket["priority"] == priority, queue
        event = decided_event(ticket, "route_to_review")
        assert event["data"] == {**event["data"], "policy_version": 1, "queue": queue, "rule": rule}
        stored = await decision_of(engine, ticket["id"])
        assert (stored.policy_version, stored.decision, stored.queue, stored.rule) == (1, "queue", queue, rule)
        assert stored.explanation == event["note"]
    assert cases["risk"]["timeline"][1]["data"]["suggestion"] == "request_info"
    assert cases["high_value"]["timeline"][1]["note"].startswith("amount ¥1299.00 > ¥1000 ✓")


async def test_a_fourth_request_in_thirty_days_goes_to_risk(client, tokens, engine, defaults):
    await put_order(client, tokens, "O-REP", customer="C-REP", placed_at=START - timedelta(days=20))
    await put_order(client, tokens, "O-REP2", customer="C-REP", placed_at=START - timedelta(days=20))
    first = [
        await open_ticket(client, tokens, "O-REP", kind="refund_only", reason_code="other", items=[], requested_amount="1.00",
                          requested_at=(START - timedelta(days=days)).isoformat())
        for days in (15, 9, 2)
    ]
    # Each was a standard refund before shipment: approved, with its own count of earlier requests.
    assert [t["status"] for t in first] == ["refunding"] * 3
    assert [(await decision_of(engine, t["id"])).facts["requests_30d"] for t in first] == [0, 1, 2]
    fourth = await open_ticket(client, tokens, "O-REP2", **no_reason())
    assert (fourth["status"], fourth["queue"], fourth["priority"]) == ("pending_review", "risk", 2)
    stored = await decision_of(engine, fourth["id"])
    assert stored.rule == "repeat_requester" and stored.facts["requests_30d"] == 3
    assert "requests_30d 3 ≥ 3 ✓" in stored.explanation


async def test_requests_older_than_thirty_days_do_not_count(client, tokens, engine, defaults):
    await put_order(client, tokens, "O-OLD", customer="C-OLD", placed_at=START - timedelta(days=60))
    for days in (50, 45, 40):
        await open_ticket(client, tokens, "O-OLD", kind="refund_only", reason_code="other", items=[], requested_amount="1.00",
                          requested_at=(START - timedelta(days=days)).isoformat())
    await put_order(client, tokens, "O-OLD2", customer="C-OLD")
    fresh = await open_ticket(client, tokens, "O-OLD2", **no_reason())
    assert fresh["status"] == "awaiting_return"
    facts = (await decision_of(engine, fresh["id"])).facts
    assert (facts["requests_30d"], facts["requests_90d"]) == (0, 3)


# -- changing the policy ----------------------------------------------------------------------


async def test_draft_simulate_publish_then_new_tickets_follow_the_new_version(client, tokens, engine, defaults, supervisor):
    sup = supervisor["headers"]
    await put_order(client, tokens, "O-A", customer="C-A")
    await put_order(client, tokens, "O-B", customer="C-B", items=[CHEAP])
    await put_order(client, tokens, "O-C", customer="C-C", items=[MID])
    await put_order(client, tokens, "O-D", customer="C-D")
    old_89 = await open_ticket(client, tokens, "O-A", **no_reason())
    cheap = await open_ticket(client, tokens, "O-B", **no_reason(items=[{"sku": "SKU-CHEAP", "quantity": 1}], requested_amount="30.00"))
    mid = await open_ticket(client, tokens, "O-C", **no_reason(items=[{"sku": "SKU-MID", "quantity": 1}], requested_amount="150.00"))
    routed = await open_ticket(client, tokens, "O-D")  # quality claim without photo: a queue under both versions
    assert [t["status"] for t in (old_89, cheap, mid, routed)] == ["awaiting_return"] * 3 + ["pending_review"]
    old_explanation = old_89["timeline"][1]["note"]
    assert "amount ¥89.00 ≤ ¥200 ✓" in old_explanation

    # The supervisor lowers the threshold in a draft.
    assert SEVEN_DAY_200 in DEFAULT_POLICY
    draft_text = DEFAULT_POLICY.replace(SEVEN_DAY_200, SEVEN_DAY_50)
    response = await client.post("/api/v1/policy/drafts", json={"text": draft_text, "note": "¥50 cap for no-reason returns"}, headers=sup)
    assert response.status_code == 201, response.text
    draft = response.json()
    assert draft["version"] == 2 and draft["published_at"] is None and draft["author"] == "user:sup1"
    assert draft["note"] == "¥50 cap for no-reason returns"
    listed = (await client.get("/api/v1/policy", headers=tokens["agent"])).json()
    assert [(v["version"], v["current"]) for v in listed] == [(2, False), (1, True)]

    # Simulate the draft over the period: two of the three approvals would go to a person.
    period = {"start": (START - timedelta(days=1)).isoformat(), "end": (START + timedelta(hours=1)).isoformat()}
    response = await client.post("/api/v1/policy/simulate", json={**period, "version": 2}, headers=sup)
    assert response.status_code == 200, response.text
    sim = response.json()
    assert sim["tickets"] == 4
    assert sim["currently_auto_approved"] == 3 and sim["auto_approved"] == 1
    assert sim["auto_approved"] < sim["currently_auto_approved"]
    assert sim["changed"] == 2
    assert sim["auto_approved_amount"] == "30.00"
    by_text = (await client.post("/api/v1/policy/simulate", json={**period, "text": draft_text}, headers=sup)).json()
    assert {k: by_text[k] for k in ("tickets", "auto_approved", "changed")} == {"tickets": 4, "auto_approved": 1, "changed": 2}
    same = (await client.post("/api/v1/policy/simulate", json={**period, "text": DEFAULT_POLICY}, headers=sup)).json()
    assert (same["auto_approved"], same["changed"]) == (3, 0)
    # A period without tickets simulates nothing.
    empty = (await client.post("/api/v1/policy/simulate", json={"start": "2025-01-01T00:00:00Z", "end": "2025-02-01T00:00:00Z",
                                                                  "version": 2}, headers=sup)).json()
    assert empty["tickets"] == 0 and empty["changed"] == 0

    # Publishing changes nothing about past decisions.
    response = await client.post("/api/v1/policy/versions/2/publish", headers=sup)
    assert response.status_code == 200, response.text
    published = response.json()
    assert published["current"] is True and published["published_by"] == "user:sup1" and published["published_at"]
    again = await client.post("/api/v1/policy/versions/2/publish", headers=sup)
    assert again.status_code == 409, again.text
    listed = (await client.get("/api/v1/policy", headers=tokens["agent"])).json()
    assert [(v["version"], v["current"]) for v in listed] == [(2, True), (1, False)]

    await put_order(client, tokens, "O-E", customer="C-E")
    new = await open_ticket(client, tokens, "O-E", **no_reason())
    assert new["status"] == "pending_review" and new["queue"] == "general"
    event = decided_event(new, "route_to_review")
    assert event["data"]["policy_version"] == 2
    new_decision = await decision_of(engine, new["id"])
    assert new_decision.policy_version == 2 and new_decision.decision == "queue"
    seven = next(r for r in new_decision.trace if r["rule"] == "seven_day_no_reason")
    amount = next(c for c in seven["conditions"] if c["fact"] == "amount")
    assert (amount["expected"], amount["actual"], amount["held"]) == ("50", "89.00", False)

    # The old ticket keeps its version-1 decision, explanation and timeline.
    old_decision = await decision_of(engine, old_89["id"])
    assert (old_decision.policy_version, old_decision.decision, old_decision.explanation) == (1, "approve", old_explanation)
    old_now = await detail(client, tokens, old_89["id"])
    assert old_now["status"] == "awaiting_return" and old_now["timeline"] == old_89["timeline"]
    async with create_sessionmaker(engine)() as session:
        versions = {t.number: t.policy_version for t in (await session.execute(select(Ticket))).scalars()}
    assert versions[old_89["number"]] == 1 and versions[new["number"]] == 2


async def test_an_invalid_draft_is_refused_naming_the_line(client, tokens, engine, defaults, supervisor):
    text = DEFAULT_POLICY.replace("amount <= 200", "amout <= 200")
    line = next(i for i, raw in enumerate(text.splitlines(), start=1) if "amout" in raw)
    response = await client.post("/api/v1/policy/drafts", json={"text": text}, headers=supervisor["headers"])
    assert response.status_code == 422, response.text
    problem = response.json()
    shown = response.text
    assert f"line {line}" in shown and "unknown fact 'amout'" in shown and "did you mean 'amount'" in shown
    assert problem["errors"] == [{"field": f"text:line {line}", "reason": "unknown fact 'amout' (did you mean 'amount'?)"}]
    # A queue that does not exist is refused too, and nothing was stored.
    unknown_queue = DEFAULT_POLICY.replace("default -> queue general", "default -> queue nowhere")
    response = await client.post("/api/v1/policy/drafts", json={"text": unknown_queue}, headers=supervisor["headers"])
    assert response.status_code == 422 and "nowhere" in response.text
    async with create_sessionmaker(engine)() as session:
        assert list((await session.execute(select(PolicyVersion.version))).scalars()) == [1]


async def test_publishing_an_older_draft_over_a_newer_version_is_refused(client, tokens, defaults, supervisor):
    sup = supervisor["headers"]
    texts = [DEFAULT_POLICY.replace(SEVEN_DAY_200, SEVEN_DAY_50), DEFAULT_POLICY.replace("amount <= 100", "amount <= 80")]
    for text in texts:
        assert (await client.post("/api/v1/policy/drafts", json={"text": text}, headers=sup)).status_code == 201
    assert (await client.post("/api/v1/policy/versions/3/publish", headers=sup)).status_code == 200
    response = await client.post("/api/v1/policy/versions/2/publish", headers=sup)
    assert response.status_code == 409, response.text
    assert (await client.post("/api/v1/policy/versions/9/publish", headers=sup)).status_code == 404


async def test_a_reset_database_does_not_reuse_an_old_parse(client, tokens, engine, settings, clock, defaults, supervisor):
    """A running server must not decide by a parse cached for an earlier database's 'version 2'
    (the operator ran `aftersales demo --reset` meanwhile)."""
    sup = supervisor["headers"]

    async def publish(text: str) -> None:
        assert (await client.post("/api/v1/policy/drafts", json={"text": text}, headers=sup)).status_code == 201
        assert (await client.post("/api/v1/policy/versions/2/publish", headers=sup)).status_code == 200

    await publish(DEFAULT_POLICY.replace(SEVEN_DAY_200, SEVEN_DAY_50))
    await put_order(client, tokens, "O-1", customer="C-1")
    assert (await open_ticket(client, tokens, "O-1", **no_reason()))["status"] == "pending_review"

    # The operator resets the database (as `aftersales demo --reset` does) while the server runs.
    await _empty_tables(engine, settings.database_url)
    async with create_sessionmaker(engine)() as session:
        await PolicyService(session, clock).ensure_defaults()
        await session.commit()
    tokens_again: dict[str, dict[str, str]] = {}
    async with create_sessionmaker(engine)() as session:
        for role in ("integration", "agent", "supervisor"):
            tokens_again[role] = {"Authorization": f"Bearer {await create_token(session, clock, name=f'again-{role}', role=role)}"}
        await session.commit()
    sup = tokens_again["supervisor"]
    # A new version 2 that approves no-reason returns up to ¥500.
    await publish(DEFAULT_POLICY.replace(SEVEN_DAY_200, "and amount <= 500 and requests_30d < 3 -> approve"))
    await put_order(client, tokens_again, "O-1", customer="C-1")
    assert (await open_ticket(client, tokens_again, "O-1", **no_reason()))["status"] == "awaiting_return"
