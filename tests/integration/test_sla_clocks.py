"""SLA clocks against a real database, through the API and TicketService, with a moving clock.

What they protect (issue 5, items 1, 2 and 7; design guide "SLA semantics"):
- both clocks start at the request's own timestamp, not when we received it;
- the resolution clock pauses while the ball is with the customer or a carrier and resumes after,
  so a ticket can close within 48 h of merchant time after 60+ h of wall time; without pauses,
  50 h is a miss; a reopened ticket continues from its stored elapsed time;
- first response: a person's first action on a manual-queue ticket, met within 2 h; an automatic
  decision is an immediate response; notes and integration actions are not responses;
- a business-calendar policy skips the weekend and a holiday; the policy in force at opening
  keeps governing the ticket after the policies change;
- the stored figures on the ticket equal a replay of the event log (SlaService.recompute).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update

from aftersales.auth import service as auth_service
from aftersales.auth.principal import Principal
from aftersales.auth.service import AuthService, principal_for
from aftersales.auth.tokens import create_token
from aftersales.db import create_sessionmaker
from aftersales.orders.schemas import OrderIn
from aftersales.orders.service import OrderService
from aftersales.sla import service as sla_service
from aftersales.sla.calendar import Calendar
from aftersales.sla.models import SlaEvent, SlaPolicy
from aftersales.sla.service import SlaService
from aftersales.sla.tasks import fire_due_alerts
from aftersales.tickets.models import Ticket
from aftersales.tickets.policy_service import PolicyService
from aftersales.tickets.schemas import ActionIn, TicketIn
from aftersales.tickets.service import TicketService
from tests.conftest import START
from tests.factories import k100_event, order_body, ticket_body

H = 3600.0
SH = ZoneInfo("Asia/Shanghai")
FEED = Principal(kind="token", id=None, name="shop", role="integration")
BUSINESS = {
    "type": "business", "timezone": "Asia/Shanghai",
    "hours": {str(d): ["09:00", "18:00"] for d in range(5)},
    "holidays": ["2026-11-23"],  # the Monday after START's Friday
}


def sh(day: int, hour: int, minute: int = 0) -> datetime:
    """November 2026, Shanghai wall clock, as UTC."""
    return datetime.combine(date(2026, 11, day), time(hour, minute), tzinfo=SH).astimezone(timezone.utc)


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth_service, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture(autouse=True)
def fresh_policy_cache() -> None:
    # SlaService caches policies by id; every test empties the tables, so ids come back.
    sla_service._policies.clear()


@pytest.fixture()
def factory(engine):
    return create_sessionmaker(engine)


@pytest.fixture()
async def world(factory, clock) -> dict[str, Any]:
    """Default queues and intake policy, order O-1 (not shipped), agent a1 and supervisor boss."""
    async with factory() as session:
        await PolicyService(session, clock).ensure_defaults()
        await OrderService(session, clock).upsert_order("O-1", msgspec.convert(order_body(), OrderIn))
        auth = AuthService(session, clock)
        a1 = await auth.create_user(username="a1", password="a1-secret-pw", role="agent")
        boss = await auth.create_user(username="boss", password="boss-secret-pw", role="supervisor")
        token = await create_token(session, clock, name="a1-personal", role="agent", user_id=a1.id)
        await session.commit()
    return {"a1": principal_for(a1), "boss": principal_for(boss), "a1_headers": {"Authorization": f"Bearer {token}"}}


async def open_ticket(factory, clock, **overrides: Any) -> int:
    async with factory() as session:
        body = msgspec.convert(ticket_body(**overrides), TicketIn)
        ticket, created = await TicketService(session, clock).open_ticket(body, FEED)
        assert created
        await session.commit()
        return ticket.id


async def act(factory, clock, ticket_id: int, action: str, actor: Principal, **fields: Any) -> Ticket:
    async with factory() as session:
        service = TicketService(session, clock)
        current = await service.get(ticket_id)
        ticket = await service.act(ticket_id, action, ActionIn(version=current.version, **fields), actor)
        await session.commit()
        return ticket


async def load(factory, ticket_id: int) -> Ticket:
    async with factory() as session:
        ticket = await session.get(Ticket, ticket_id)
        assert ticket is not None
        return ticket


async def sla_events(factory, ticket_id: int, metric: str) -> list[tuple[str, datetime]]:
    async with factory() as session:
        rows = (await session.execute(
            select(SlaEvent.event, SlaEvent.at).where(SlaEvent.ticket_id == ticket_id, SlaEvent.metric == metric)
            .order_by(SlaEvent.id)
        )).all()
    return [(event, at) for event, at in rows]


async def assert_cache_is_the_log(factory, clock, ticket_id: int) -> dict[str, Any]:
    """The ticket's SLA columns equal a from-scratch replay of its sla_events."""
    async with factory() as session:
        ticket = await session.get(Ticket, ticket_id)
        assert ticket is not None
        service = SlaService(session, clock)
        replayed = await service.recompute(ticket_id)
        targets = await service.targets(ticket.sla_policy_id)
    now = clock.now()
    stored_elapsed = ticket.sla_elapsed_seconds + (
        targets.calendar.working_seconds(ticket.sla_running_since, now) if ticket.sla_running_since else 0.0)
    assert replayed["resolution_elapsed"] == pytest.approx(stored_elapsed)
    assert replayed["resolution_running"] == (ticket.sla_running_since is not None)
    assert replayed["resolution_due_at"] == ticket.sla_due_at
    assert replayed["resolution_met"] == ticket.resolution_met
    assert replayed["resolution_breached"] == ticket.resolution_breached
    if ticket.resolution_seconds is not None:
        assert replayed["resolution_elapsed"] == pytest.approx(ticket.resolution_seconds)
    assert replayed["first_response_met"] == ticket.first_response_met
    if ticket.first_response_seconds is not None:
        assert replayed["first_response_elapsed"] == pytest.approx(ticket.first_response_seconds)
    return replayed


# -- the clock starts at the request ----------------------------------------------------------------


async def test_clocks_start_at_the_requests_own_time(client, tokens, world, factory, clock):
    requested = START - timedelta(hours=10)
    response = await client.post("/api/v1/tickets", json=ticket_body(requested_at=requested.isoformat()),
                                  headers=tokens["integration"])
    assert response.status_code == 201, response.text
    tid = response.json()["id"]
    ticket = await load(factory, tid)
    assert ticket.status == "pending_review" and ticket.received_at == START
    assert ticket.sla_running_since == requested
    assert ticket.sla_due_at == requested + timedelta(hours=48)
    assert ticket.first_response_due_at == requested + timedelta(hours=2)
    # First-response warnings were due long before we even received the request.
    assert ticket.sla_next_alert_at == requested + timedelta(minutes=90)
    assert await sla_events(factory, tid, "resolution") == [("start", requested)]
    assert await sla_events(factory, tid, "first_response") == [("start", requested)]
    replayed = await assert_cache_is_the_log(factory, clock, tid)
    assert replayed["resolution_elapsed"] == 10 * H
    clock.advance(hours=5)
    replayed = await assert_cache_is_the_log(factory, clock, tid)
    assert replayed["resolution_elapsed"] == 15 * H


# -- pauses ----------------------------------------------------------------------------------------


async def test_waiting_for_the_return_parcel_does_not_count(client, tokens, world, factory, clock):
    """Approved → awaiting_return (paused) 30 h → parcel back (resumed) → closed: 61.5 h of wall time,
    31.5 h of merchant time, within the 48 h target."""
    feed, agent = tokens["integration"], world["a1_headers"]
    requested = START - timedelta(hours=1)
    response = await client.post("/api/v1/tickets", json=ticket_body(requested_at=requested.isoformat()), headers=feed)
    assert response.status_code == 201, response.text
    t = response.json()
    tid = t["id"]
    base = f"/api/v1/tickets/{tid}/actions"

    async def do(action: str, body: dict, headers: dict) -> dict:
        current = (await client.get(f"/api/v1/tickets/{tid}", headers=headers)).json()
        r = await client.post(f"{base}/{action}", json={"version": current["version"], **body}, headers=headers)
        assert r.status_code == 200, r.text
        return r.json()

    clock.advance(minutes=30)
    paused_at = clock.now()
    assert (await do("approve", {"note": "ok"}, agent))["status"] == "awaiting_return"
    ticket = await load(factory, tid)
    assert ticket.sla_running_since is None and ticket.sla_due_at is None
    assert ticket.sla_elapsed_seconds == 1.5 * H
    assert ticket.first_response_seconds == 1.5 * H and ticket.first_response_met is True
    assert ticket.sla_next_alert_at is None  # paused and answered: nothing can fall due
    await assert_cache_is_the_log(factory, clock, tid)

    clock.advance(hours=10)
    assert (await do("add_return_tracking", {"carrier": "YTO", "tracking_number": "YT900"}, agent))["status"] == "return_in_transit"
    clock.advance(hours=20)
    resumed_at = clock.now()
    delivered = k100_event("YT900", 3, resumed_at - timedelta(hours=1), carrier="YTO", desc="仓库已签收")
    r = await client.post("/api/v1/tracking-events", json={"events": [delivered]}, headers=feed)
    assert r.status_code == 200 and r.json()["tickets_moved"] == [t["number"]], r.text
    ticket = await load(factory, tid)
    assert ticket.status == "return_received"
    assert ticket.sla_running_since == resumed_at and ticket.sla_elapsed_seconds == 1.5 * H
    assert ticket.sla_due_at == resumed_at + timedelta(hours=48 - 1.5)
    await assert_cache_is_the_log(factory, clock, tid)

    clock.advance(hours=20)
    assert (await do("record_inspection", {"passed": True}, agent))["status"] == "refunding"
    clock.advance(hours=5)
    assert (await do("confirm_refund", {"refund_reference": "FIN-1"}, feed))["status"] == "refunded"
    clock.advance(hours=5)
    closed_at = clock.now()
    assert (await do("close", {}, agent))["status"] == "closed"

    assert (closed_at - requested) == timedelta(hours=61.5)
    merchant = (paused_at - requested).total_seconds() + (closed_at - resumed_at).total_seconds()
    assert merchant == 31.5 * H
    ticket = await load(factory, tid)
    assert ticket.resolution_met is True
    assert ticket.resolution_seconds == merchant
    assert ticket.sla_running_since is None and ticket.sla_due_at is None and ticket.sla_next_alert_at is None
    assert [e for e, _ in await sla_events(factory, tid, "resolution")] == ["start", "pause", "resume", "stop"]
    assert [at for _, at in await sla_events(factory, tid, "resolution")] == [requested, paused_at, resumed_at, closed_at]
    await assert_cache_is_the_log(factory, clock, tid)


async def test_no_pause_and_closed_after_50_hours_is_a_miss(world, factory, clock):
    tid = await open_ticket(factory, clock)  # requested an hour before START
    clock.advance(hours=1)
    await act(factory, clock, tid, "reject", world["a1"], note="not a defect")
    clock.advance(hours=48)
    await act(factory, clock, tid, "close", world["a1"])
    ticket = await load(factory, tid)
    assert ticket.status == "closed"
    assert ticket.resolution_seconds == 50 * H
    assert ticket.resolution_met is False
    await assert_cache_is_the_log(factory, clock, tid)


async def test_awaiting_the_customer_pauses_and_their_reply_resumes(world, factory, clock):
    tid = await open_ticket(factory, clock, requested_at=START.isoformat())
    clock.advance(hours=1)
    await act(factory, clock, tid, "request_info", world["a1"], note="photo please")
    clock.advance(hours=72)
    await act(factory, clock, tid, "customer_reply", FEED, note="here")
    ticket = await load(factory, tid)
    assert ticket.status == "pending_review"
    assert ticket.sla_elapsed_seconds == 1 * H and ticket.sla_running_since == clock.now()
    clock.advance(hours=10)
    await act(factory, clock, tid, "reject", world["a1"], note="no")
    await act(factory, clock, tid, "close", world["a1"])
    ticket = await load(factory, tid)
    assert ticket.resolution_seconds == 11 * H and ticket.resolution_met is True
    await assert_cache_is_the_log(factory, clock, tid)


async def test_reopen_continues_from_the_stored_elapsed_time(world, factory, clock):
    tid = await open_ticket(factory, clock)  # requested START - 1 h
    clock.advance(hours=1)
    await act(factory, clock, tid, "reject", world["a1"], note="no")
    clock.advance(hours=8)
    await act(factory, clock, tid, "close", world["a1"])
    ticket = await load(factory, tid)
    assert ticket.resolution_seconds == 10 * H and ticket.resolution_met is True
    await assert_cache_is_the_log(factory, clock, tid)

    # Closed tickets stand still: 100 h later nothing has run or fired.
    clock.advance(hours=100)
    assert await fire_due_alerts(factory, clock) == 0
    reopened_at = clock.now()
    await act(factory, clock, tid, "reopen", world["a1"], note="customer came back")
    ticket = await load(factory, tid)
    assert ticket.status == "pending_review"
    assert ticket.sla_elapsed_seconds == 10 * H and ticket.sla_running_since == reopened_at
    assert ticket.sla_due_at == reopened_at + timedelta(hours=38)
    assert ticket.resolution_seconds is None and ticket.resolution_met is None
    await assert_cache_is_the_log(factory, clock, tid)

    clock.advance(hours=30)
    await assert_cache_is_the_log(factory, clock, tid)
    await act(factory, clock, tid, "reject", world["a1"], note="still no")
    await act(factory, clock, tid, "close", world["a1"])
    ticket = await load(factory, tid)
    assert ticket.resolution_seconds == 40 * H and ticket.resolution_met is True
    await assert_cache_is_the_log(factory, clock, tid)

    # Once more, past the target this time.
    clock.advance(hours=5)
    await act(factory, clock, tid, "reopen", world["a1"])
    clock.advance(hours=9)
    await act(factory, clock, tid, "reject", world["a1"], note="final")
    await act(factory, clock, tid, "close", world["a1"])
    ticket = await load(factory, tid)
    assert ticket.resolution_seconds == 49 * H and ticket.resolution_met is False
    assert [e for e, _ in await sla_events(factory, tid, "resolution")] == ["start", "stop", "reopen", "stop", "reopen", "stop"]
    await assert_cache_is_the_log(factory, clock, tid)


async def test_stored_figures_equal_the_replayed_log_for_every_ticket(world, factory, clock):
    a1 = world["a1"]
    # The auto-approved one first: later it would be the customer's 5th request (risk queue).
    auto = await open_ticket(factory, clock, kind="refund_only", items=[], reason_code="preference.changed_mind")
    ids = {
        "open": await open_ticket(factory, clock),
        "paused": await open_ticket(factory, clock),
        "resumed": await open_ticket(factory, clock),
        "closed": await open_ticket(factory, clock),
        "auto": auto,
    }
    # Warnings on the way (one threshold per pass) leave at_risk / breach rows the replay must skip.
    for minutes in (30, 48, 60):
        clock.set(START + timedelta(minutes=minutes))
        assert await fire_due_alerts(factory, clock) == 4  # all but the auto-approved one
    await act(factory, clock, ids["paused"], "approve", a1)
    await act(factory, clock, ids["resumed"], "request_info", a1, note="?")
    await act(factory, clock, ids["closed"], "reject", a1, note="no")
    clock.advance(hours=7)
    await act(factory, clock, ids["resumed"], "customer_reply", FEED, note="!")
    await act(factory, clock, ids["closed"], "close", a1)
    clock.advance(hours=3)
    for name, tid in ids.items():
        replayed = await assert_cache_is_the_log(factory, clock, tid)
        ticket = await load(factory, tid)
        if name in ("open", "auto"):
            assert replayed["resolution_elapsed"] == 12 * H
        if name == "paused":
            assert replayed["resolution_elapsed"] == 2 * H
        if name == "resumed":
            assert replayed["resolution_elapsed"] == 5 * H
        if name == "closed":
            assert ticket.resolution_seconds == 9 * H


async def test_a_cancelled_ticket_replays_to_the_same_figures(world, factory, clock):
    """Regression: recompute() used to judge a cancelled ticket met, the stored figure says neither."""
    running, waiting = await open_ticket(factory, clock), await open_ticket(factory, clock)
    clock.advance(hours=1)
    await act(factory, clock, waiting, "request_info", world["a1"], note="photo please")
    clock.advance(hours=2)
    await act(factory, clock, running, "cancel", FEED, note="customer withdrew")
    await act(factory, clock, waiting, "cancel", FEED, note="customer gave up")
    for tid, seconds in ((running, 4 * H), (waiting, 2 * H)):
        ticket = await load(factory, tid)
        assert ticket.status == "cancelled" and ticket.resolution_seconds == seconds and ticket.resolution_met is None
    for tid in (running, waiting):
        await assert_cache_is_the_log(factory, clock, tid)


async def test_closed_from_a_paused_status_replays_to_the_same_figures(world, factory, clock):
    """Regression: the replay used to ignore a stop while paused and answer resolution_met None."""
    tid = await open_ticket(factory, clock, kind="reship", reason_code="fulfillment.missing_item")
    clock.advance(hours=1)
    await act(factory, clock, tid, "approve", world["a1"])
    clock.advance(hours=1)
    await act(factory, clock, tid, "ship_replacement", world["a1"], carrier="SF", tracking_number="SF777")
    clock.advance(hours=40)
    await act(factory, clock, tid, "close", world["a1"])
    ticket = await load(factory, tid)
    assert ticket.status == "closed" and ticket.resolution_seconds == 3 * H and ticket.resolution_met is True
    await assert_cache_is_the_log(factory, clock, tid)


# -- first response -------------------------------------------------------------------------------


@pytest.mark.parametrize(("after_hours", "met"), [(1, True), (2, True), (3, False)])
async def test_first_response_on_a_manual_queue_ticket(world, factory, clock, after_hours, met):
    tid = await open_ticket(factory, clock, requested_at=START.isoformat())
    ticket = await load(factory, tid)
    assert ticket.queue == "quality_review" and ticket.first_response_at is None
    assert ticket.first_response_due_at == START + timedelta(hours=2)
    # Neither an internal note nor the integration answering counts.
    clock.advance(minutes=30)
    await act(factory, clock, tid, "note", world["a1"], note="looking")
    await act(factory, clock, tid, "reply", FEED, note="auto-ack from the shop")
    assert (await load(factory, tid)).first_response_seconds is None
    clock.set(START + timedelta(hours=after_hours))
    await act(factory, clock, tid, "reply", world["a1"], note="我们正在处理")
    ticket = await load(factory, tid)
    assert ticket.first_response_at == clock.now()
    assert ticket.first_response_seconds == after_hours * H
    assert ticket.first_response_met is met
    assert ticket.first_response_due_at is None
    assert await sla_events(factory, tid, "first_response") == [("start", START), ("first_response", clock.now())]
    await assert_cache_is_the_log(factory, clock, tid)


async def test_first_response_through_the_api_with_a_personal_token(client, tokens, world, factory, clock):
    r = await client.post("/api/v1/tickets", json=ticket_body(requested_at=START.isoformat()), headers=tokens["integration"])
    tid, version = r.json()["id"], r.json()["version"]
    clock.advance(hours=3)
    r = await client.post(f"/api/v1/tickets/{tid}/actions/approve", json={"version": version}, headers=world["a1_headers"])
    assert r.status_code == 200, r.text
    ticket = await load(factory, tid)
    assert ticket.first_response_seconds == 3 * H and ticket.first_response_met is False
    await assert_cache_is_the_log(factory, clock, tid)


async def test_an_automatic_decision_is_an_immediate_first_response(world, factory, clock):
    tid = await open_ticket(factory, clock, kind="refund_only", items=[], reason_code="preference.changed_mind",
                            requested_at=START.isoformat())
    ticket = await load(factory, tid)
    assert ticket.status == "refunding" and ticket.queue is None
    assert ticket.first_response_at == START
    assert ticket.first_response_seconds == 0 and ticket.first_response_met is True
    assert ticket.first_response_due_at is None
    assert await sla_events(factory, tid, "first_response") == [("start", START), ("first_response", START)]
    # Only the resolution clock can warn from now on.
    assert ticket.sla_next_alert_at == START + timedelta(hours=36)
    clock.advance(hours=5)
    assert await fire_due_alerts(factory, clock) == 0
    await assert_cache_is_the_log(factory, clock, tid)


# -- policies: business calendars, and the policy in force at opening -------------------------------


async def add_policy(factory, clock, **fields: Any) -> int:
    values: dict[str, Any] = {
        "name": "test policy", "resolution_minutes": 48 * 60, "first_response_minutes": 120,
        "calendar": {"type": "24x7"}, "pause_statuses": list(sla_service.DEFAULT_PAUSE),
        "warn_at": [0.75, 0.9], "active": True, "created_at": clock.now(),
    }
    values.update(fields)
    async with factory() as session:
        policy = SlaPolicy(**values)
        session.add(policy)
        await session.commit()
        return policy.id


COMPLAINT = {"kind": "complaint", "items": [], "reason_code": "price.promo_dispute", "requested_amount": "10.00"}


async def test_a_business_calendar_skips_the_weekend_and_the_holiday(world, factory, clock):
    async with factory() as session:
        await SlaService(session, clock).ensure_default_policy()
        await session.commit()
    business = await add_policy(factory, clock, name="complaints, office hours", kind="complaint",
                                resolution_minutes=16 * 60, calendar=BUSINESS)
    friday_evening = sh(20, 20)  # Friday 20:00 Shanghai, after hours; Monday 23rd is a holiday
    clock.set(friday_evening)
    tid = await open_ticket(factory, clock, **COMPLAINT, requested_at=friday_evening.isoformat())
    ticket = await load(factory, tid)
    assert ticket.sla_policy_id == business
    # 2 working hours: Tuesday 09:00–11:00. 16 h: Tuesday 9 h + Wednesday 7 h.
    assert ticket.first_response_due_at == sh(24, 11)
    assert ticket.sla_due_at == sh(25, 16)
    assert ticket.sla_next_alert_at == sh(24, 10, 30)
    await assert_cache_is_the_log(factory, clock, tid)

    # The weekend and the holiday pass without a warning.
    clock.set(sh(23, 17))
    assert await fire_due_alerts(factory, clock) == 0
    replayed = await assert_cache_is_the_log(factory, clock, tid)
    assert replayed["resolution_elapsed"] == 0
    clock.set(sh(24, 10, 30) - timedelta(seconds=1))
    assert await fire_due_alerts(factory, clock) == 0
    clock.set(sh(24, 10, 30))
    assert await fire_due_alerts(factory, clock) == 1
    async with factory() as session:
        fired = (await session.execute(select(SlaEvent.dedupe_key).where(SlaEvent.ticket_id == tid,
                                                                         SlaEvent.event == "at_risk"))).scalars().all()
    assert fired == ["first_response:0.75"]

    # Paused over Tuesday evening to Thursday morning: only working hours before count.
    clock.set(sh(24, 15))
    await act(factory, clock, tid, "request_info", world["a1"], note="order screenshot please")
    ticket = await load(factory, tid)
    assert ticket.first_response_seconds == 6 * H and ticket.first_response_met is False
    assert ticket.sla_elapsed_seconds == 6 * H
    clock.set(sh(26, 10))
    await act(factory, clock, tid, "customer_reply", FEED, note="ok")
    ticket = await load(factory, tid)
    # 10 h left from Thursday 10:00: 8 h Thursday, 2 h Friday.
    assert ticket.sla_due_at == sh(27, 11)
    await assert_cache_is_the_log(factory, clock, tid)


async def test_the_policy_in_force_at_opening_keeps_governing(world, factory, clock):
    old = await add_policy(factory, clock, name="complaints, office hours", kind="complaint",
                           resolution_minutes=16 * 60, calendar=BUSINESS)
    friday_evening = sh(20, 20)
    clock.set(friday_evening)
    first = await open_ticket(factory, clock, **COMPLAINT, requested_at=friday_evening.isoformat())

    # The policy changes: a new 24/7 row replaces the old one.
    clock.set(sh(21, 9))
    async with factory() as session:
        await session.execute(update(SlaPolicy).where(SlaPolicy.id == old).values(active=False))
        await session.commit()
    new = await add_policy(factory, clock, name="complaints, 24/7", kind="complaint", resolution_minutes=24 * 60)
    second = await open_ticket(factory, clock, **COMPLAINT, requested_at=clock.now().isoformat())

    t1, t2 = await load(factory, first), await load(factory, second)
    assert (t1.sla_policy_id, t2.sla_policy_id) == (old, new)
    assert t2.sla_due_at == sh(21, 9) + timedelta(hours=24)
    assert t1.sla_due_at == sh(25, 16)

    # The first ticket is still measured in office hours after the change: answered Tuesday 10:00 is 1 h.
    clock.set(sh(24, 10))
    await act(factory, clock, first, "reply", world["a1"], note="在处理")
    await act(factory, clock, second, "reply", world["a1"], note="在处理")
    t1, t2 = await load(factory, first), await load(factory, second)
    assert t1.first_response_seconds == 1 * H and t1.first_response_met is True
    assert t2.first_response_seconds == (sh(24, 10) - sh(21, 9)).total_seconds() and t2.first_response_met is False
    await act(factory, clock, first, "close", world["a1"])
    t1 = await load(factory, first)
    assert t1.resolution_seconds == 1 * H and t1.resolution_met is True
    # Replays use the ticket's own policy too (not the one now active).
    sla_service._policies.clear()
    await assert_cache_is_the_log(factory, clock, first)
    await assert_cache_is_the_log(factory, clock, second)
    assert Calendar.from_dict(BUSINESS).working_seconds(sh(20, 20), sh(24, 10)) == 1 * H


async def test_a_queue_policy_governs_the_tickets_routed_to_that_queue(world, factory, clock):
    """Regression: the policy used to be chosen before intake routed the ticket (queue None, priority 0)."""
    policy = await add_policy(factory, clock, name="quality review, 24 h", queue="quality_review",
                              resolution_minutes=24 * 60)
    tid = await open_ticket(factory, clock, requested_at=START.isoformat())
    ticket = await load(factory, tid)
    assert ticket.queue == "quality_review"
    assert ticket.sla_policy_id == policy
    assert ticket.sla_due_at == START + timedelta(hours=24)
    # A priority policy: the counterfeit claim is routed to risk with priority 3 at intake.
    urgent = await add_policy(factory, clock, name="priority 3+, 12 h", min_priority=3, resolution_minutes=12 * 60)
    risky = await open_ticket(factory, clock, requested_at=START.isoformat(), reason_code="quality.counterfeit_suspected")
    ticket = await load(factory, risky)
    assert (ticket.queue, ticket.priority) == ("risk", 3)
    assert ticket.sla_policy_id == urgent
    assert ticket.sla_due_at == START + timedelta(hours=12)
    # The quality-review ticket (priority 1) keeps the queue policy.
    again = await open_ticket(factory, clock, requested_at=START.isoformat())
    assert (await load(factory, again)).sla_policy_id == policy
