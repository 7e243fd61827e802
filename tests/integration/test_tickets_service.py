"""TicketService against a real database: numbering, replays, versions, races, timestamps."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone

import msgspec
import pytest
from sqlalchemy import func, select

from aftersales.auth.principal import SYSTEM, Principal
from aftersales.db import create_sessionmaker
from aftersales.errors import Conflict, InvalidInput, StaleVersion
from aftersales.models import Ticket, TimelineEvent
from aftersales.orders.schemas import OrderIn
from aftersales.orders.service import OrderService
from aftersales.tickets.schemas import ActionIn, TicketIn
from aftersales.tickets.service import TicketService
from tests.conftest import START
from tests.factories import order_body, ticket_body

ALICE = Principal(kind="user", id=1, name="alice", role="agent")
BOB = Principal(kind="user", id=2, name="bob", role="agent")
FEED = Principal(kind="token", id=3, name="shop", role="integration")


@pytest.fixture()
async def order(session, clock):
    # paid 89.00 + 2 × 59.50 = 208.00
    order, _ = await OrderService(session, clock).upsert_order("O-1", msgspec.convert(order_body(), OrderIn))
    await session.commit()
    return order


async def open_(session, clock, **overrides) -> Ticket:
    body = msgspec.convert(ticket_body(**overrides), TicketIn)
    ticket, _ = await TicketService(session, clock).open_ticket(body, FEED)
    await session.commit()
    return ticket


async def act(session, clock, ticket_id: int, action: str, actor: Principal = ALICE, **fields) -> Ticket:
    service = TicketService(session, clock)
    current = await service.get(ticket_id)
    ticket = await service.act(ticket_id, action, ActionIn(version=current.version, **fields), actor)
    await session.commit()
    return ticket


async def approve_unless_auto(session, clock, ticket: Ticket) -> Ticket:
    """Intake may already have approved the ticket (auto-approval policy); otherwise a person does."""
    if ticket.status == "pending_review":
        ticket = await act(session, clock, ticket.id, "approve")
    return ticket


async def events_of(session, ticket_id: int) -> list[TimelineEvent]:
    query = select(TimelineEvent).where(TimelineEvent.ticket_id == ticket_id).order_by(TimelineEvent.id)
    return list((await session.execute(query)).scalars())


NUMBER = re.compile(r"^AS-(\d{8})-(\d{6})$")


async def test_ticket_numbers_follow_the_shanghai_day(session, clock, order):
    # START is 02:00 UTC = 10:00 in Shanghai on 2026-11-20.
    a = await open_(session, clock)
    b = await open_(session, clock)
    clock.set(datetime(2026, 11, 20, 15, 59, tzinfo=timezone.utc))  # 23:59 Shanghai, same day
    c = await open_(session, clock)
    clock.set(datetime(2026, 11, 20, 16, 1, tzinfo=timezone.utc))  # 00:01 Shanghai, next day
    d = await open_(session, clock)
    e = await open_(session, clock)
    for t in (a, b, c, d, e):
        assert NUMBER.match(t.number), t.number
    assert [a.number, b.number, c.number] == ["AS-20261120-000001", "AS-20261120-000002", "AS-20261120-000003"]
    assert [d.number, e.number] == ["AS-20261121-000001", "AS-20261121-000002"]


async def test_external_id_replay_returns_the_same_ticket(session, clock, order):
    body = msgspec.convert(ticket_body(external_id="PLAT-9"), TicketIn)
    first, created = await TicketService(session, clock).open_ticket(body, FEED)
    await session.commit()
    assert created
    clock.advance(minutes=5)
    again, created_again = await TicketService(session, clock).open_ticket(body, FEED)
    await session.commit()
    assert not created_again and again.id == first.id and again.number == first.number
    assert await session.scalar(select(func.count()).select_from(Ticket)) == 1
    assert len(await events_of(session, first.id)) == 2  # open + route_to_review, once


async def test_stale_version_changes_nothing(session, clock, order):
    ticket = await open_(session, clock)
    ticket_id, version, status = ticket.id, ticket.version, ticket.status
    before = len(await events_of(session, ticket_id))
    with pytest.raises(StaleVersion):
        await TicketService(session, clock).act(ticket_id, "approve", ActionIn(version=version - 1), ALICE)
    await session.rollback()
    fresh = await TicketService(session, clock).get(ticket_id)
    assert (fresh.version, fresh.status, fresh.approved_at) == (version, status, None)
    assert len(await events_of(session, ticket_id)) == before


@pytest.mark.parametrize("attempt", range(3))
async def test_concurrent_actions_exactly_one_wins(engine, session, clock, order, attempt):
    ticket = await open_(session, clock)
    ticket_id, version = ticket.id, ticket.version
    await session.rollback()
    maker = create_sessionmaker(engine)

    async def try_act(action: str, actor: Principal, note: str) -> str | None:
        async with maker() as s:
            try:
                await TicketService(s, clock).act(ticket_id, action, ActionIn(version=version, note=note), actor)
                await s.commit()
                return action
            except Conflict:
                await s.rollback()
                return None

    results = await asyncio.gather(try_act("approve", ALICE, "ok"), try_act("reject", BOB, "no"))
    winners = [r for r in results if r]
    assert len(winners) == 1, results
    fresh = await TicketService(session, clock).get(ticket_id)
    assert fresh.version == version + 1
    assert fresh.status == {"approve": "awaiting_return", "reject": "rejected"}[winners[0]]
    decisions = [e.action for e in await events_of(session, ticket_id) if e.action in ("approve", "reject")]
    assert decisions == winners


async def test_concurrent_same_action_exactly_one_wins(engine, session, clock, order):
    ticket = await open_(session, clock)
    ticket_id, version = ticket.id, ticket.version
    await session.rollback()
    maker = create_sessionmaker(engine)

    async def try_act(actor: Principal) -> bool:
        async with maker() as s:
            try:
                await TicketService(s, clock).act(ticket_id, "approve", ActionIn(version=version), actor)
                await s.commit()
                return True
            except StaleVersion:
                await s.rollback()
                return False

    results = await asyncio.gather(*(try_act(p) for p in (ALICE, BOB, ALICE, BOB)))
    assert sorted(results) == [False, False, False, True]
    assert [e.action for e in await events_of(session, ticket_id)].count("approve") == 1


async def test_state_entry_timestamps(session, clock, order):
    ticket = await open_(session, clock)
    assert ticket.approved_at is None and ticket.closed_at is None
    t_approve = clock.advance(minutes=10)
    ticket = await act(session, clock, ticket.id, "approve")
    assert ticket.approved_at == t_approve
    clock.advance(hours=1)
    ticket = await act(session, clock, ticket.id, "add_return_tracking", carrier="YTO", tracking_number="R1")
    assert ticket.return_received_at is None
    # The warehouse receives the parcel (carrier event), inspects, finance refunds, agent closes.
    from aftersales.orders.schemas import TrackingEventIn

    t_received = clock.advance(hours=5)
    event = TrackingEventIn(carrier="YTO", tracking_number="R1", source="kuaidi100", status="3", occurred_at=t_received - timedelta(hours=1))
    await OrderService(session, clock).ingest_tracking([event], limit=1000, on_delivered=TicketService(session, clock).apply_carrier_delivery)
    await session.commit()
    ticket = await TicketService(session, clock).get(ticket.id)
    assert ticket.status == "return_received" and ticket.return_received_at == t_received
    clock.advance(hours=1)
    ticket = await act(session, clock, ticket.id, "record_inspection", passed=True)
    assert ticket.status == "refunding" and ticket.refunded_at is None
    t_refund = clock.advance(hours=1)
    ticket = await act(session, clock, ticket.id, "confirm_refund", FEED, refund_reference="FIN-1")
    assert ticket.refunded_at == t_refund
    t_close = clock.advance(hours=1)
    ticket = await act(session, clock, ticket.id, "close")
    assert ticket.closed_at == t_close
    # Earlier stamps are not moved by later steps.
    fresh = await TicketService(session, clock).get(ticket.id)
    assert (fresh.approved_at, fresh.return_received_at, fresh.refunded_at, fresh.closed_at) == (t_approve, t_received, t_refund, t_close)


async def test_rejected_cancelled_and_replacement_stamps(session, clock, order):
    a = await open_(session, clock)
    t = clock.advance(minutes=1)
    a = await act(session, clock, a.id, "reject", note="outside window")
    assert a.rejected_at == t and a.approved_at is None
    b = await open_(session, clock, kind="reship", reason_code="fulfillment.missing_item")
    t = clock.advance(minutes=1)
    b = await act(session, clock, b.id, "approve")
    t2 = clock.advance(minutes=1)
    b = await act(session, clock, b.id, "ship_replacement", carrier="SF", tracking_number="REP-1")
    assert (b.approved_at, b.replacement_shipped_at) == (t, t2)
    c = await open_(session, clock)
    t = clock.advance(minutes=1)
    c = await act(session, clock, c.id, "cancel", FEED)
    assert c.cancelled_at == t and c.closed_at is None


async def test_first_response_is_a_persons_action(session, clock, order):
    ticket = await open_(session, clock)
    # Intake routing was done by the system: no response yet.
    assert ticket.first_response_at is None
    clock.advance(minutes=5)
    ticket = await act(session, clock, ticket.id, "customer_reply", ALICE, note="any news?")
    assert ticket.first_response_at is None, "a customer's message is not our response"
    clock.advance(minutes=5)
    ticket = await act(session, clock, ticket.id, "customer_reply", FEED, note="hello?")
    assert ticket.first_response_at is None
    t = clock.advance(minutes=30)
    ticket = await act(session, clock, ticket.id, "request_info", ALICE, note="photo please")
    assert ticket.first_response_at == t
    clock.advance(minutes=30)
    ticket = await act(session, clock, ticket.id, "customer_reply", FEED, note="here")
    ticket = await act(session, clock, ticket.id, "approve", BOB)
    assert ticket.first_response_at == t, "only the first response counts"


async def test_reply_counts_as_first_response_but_internal_note_does_not(session, clock, order):
    ticket = await open_(session, clock)
    clock.advance(minutes=5)
    ticket = await act(session, clock, ticket.id, "note", ALICE, note="looks like a courier problem")
    assert ticket.first_response_at is None and ticket.status == "pending_review"
    t = clock.advance(minutes=5)
    ticket = await act(session, clock, ticket.id, "reply", ALICE, note="we are on it")
    assert ticket.first_response_at == t and ticket.status == "pending_review"
    with pytest.raises(InvalidInput) as info:
        await act(session, clock, ticket.id, "reply", ALICE, note="  ")
    assert [e.field for e in info.value.errors] == ["note"]


async def test_system_actions_do_not_count_as_first_response(session, clock, order):
    ticket = await open_(session, clock)
    service = TicketService(session, clock)
    fresh = await service.get(ticket.id)
    await service._move(fresh, "request_info", SYSTEM, note="bot")
    await session.commit()
    assert (await service.get(ticket.id)).first_response_at is None


async def test_requested_amount_over_what_is_left(session, clock, order):
    with pytest.raises(InvalidInput) as info:
        await open_(session, clock, kind="refund_only", requested_amount="208.01")
    assert [e.field for e in info.value.errors] == ["requested_amount"]
    await session.rollback()
    first = await open_(session, clock, kind="refund_only", requested_amount="200.00")
    first = await approve_unless_auto(session, clock, first)
    assert first.status == "refunding"
    first = await act(session, clock, first.id, "confirm_refund", FEED)
    assert first.refunded_amount == pytest.approx(200) and str(first.refunded_amount) == "200.00"
    with pytest.raises(InvalidInput) as info:
        await open_(session, clock, kind="refund_only", requested_amount="8.01")
    assert [e.field for e in info.value.errors] == ["requested_amount"]
    await session.rollback()
    assert await session.scalar(select(func.count()).select_from(Ticket)) == 1
    await session.rollback()
    last = await open_(session, clock, kind="refund_only", requested_amount="8.00")
    assert str(last.requested_amount) == "8.00"


async def test_reopen_clears_closed_at(session, clock, order):
    ticket = await open_(session, clock)
    ticket = await act(session, clock, ticket.id, "reject", note="no")
    closed_at = clock.advance(hours=1)
    ticket = await act(session, clock, ticket.id, "close")
    assert ticket.closed_at == closed_at
    clock.advance(hours=1)
    ticket = await act(session, clock, ticket.id, "reopen", note="customer appealed by phone")
    fresh = await TicketService(session, clock).get(ticket.id)
    assert fresh.status == "pending_review" and fresh.closed_at is None
    reopen = (await events_of(session, ticket.id))[-1]
    assert reopen.action == "reopen" and reopen.data["previous_closed_at"] == closed_at.isoformat()


async def test_concurrent_intake_gets_distinct_numbers(engine, session, clock, order):
    await session.rollback()
    maker = create_sessionmaker(engine)

    async def one(i: int) -> str:
        async with maker() as s:
            body = msgspec.convert(ticket_body(requested_amount="1.00", description=f"#{i}"), TicketIn)
            ticket, _ = await TicketService(s, clock).open_ticket(body, FEED)
            await s.commit()
            return ticket.number

    numbers = await asyncio.gather(*(one(i) for i in range(4)))
    assert sorted(numbers) == [f"AS-20261120-{n:06d}" for n in range(1, 5)]


async def test_refunds_never_exceed_what_was_paid(session, clock, order):
    paid = order.paid_amount  # read now: the rollback below expires the object
    # Both requests pass intake: nothing has been refunded yet when each is opened.
    a = await open_(session, clock, kind="refund_only", requested_amount="200.00")
    b = await open_(session, clock, kind="refund_only", requested_amount="200.00")
    a = await approve_unless_auto(session, clock, a)
    b = await approve_unless_auto(session, clock, b)
    assert a.status == b.status == "refunding"
    a = await act(session, clock, a.id, "confirm_refund", FEED, refund_reference="FIN-A")
    assert str(a.refunded_amount) == "200.00"
    try:
        await act(session, clock, b.id, "confirm_refund", FEED, refund_reference="FIN-B")
    except InvalidInput as exc:
        refused = [e.field for e in exc.errors]
    else:
        refused = None
    await session.rollback()
    assert refused == ["amount"], "the second refund of 200.00 on an order paid 208.00 must be refused"
    total = await session.scalar(select(func.sum(Ticket.refunded_amount)))
    assert total <= paid
