"""SLA warnings (aftersales.sla.tasks.fire_due_alerts) against a real database, with a moving clock.

What they protect (issue 5, items 3, 4 and 7):
- at-risk warnings at 75 % and 90 % of a target and a breach at 100 % fire at their due time, not
  a second earlier, exactly once per ticket, metric and threshold — also with two workers racing
  over the same due tickets (SQLite and PostgreSQL), and across a worker restart or a worker that
  dies half-way (nothing lost, nothing repeated);
- each warning raises the ticket's priority, notifies the assignee and the active supervisors /
  admins once each, and writes one outbox delivery per subscribed active webhook endpoint;
- a paused resolution clock does not warn while paused; closed and cancelled tickets never warn.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
import msgspec
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update

from aftersales.auth import service as auth_service
from aftersales.auth.principal import Principal
from aftersales.auth.service import AuthService, principal_for
from aftersales.db import create_engine, create_sessionmaker
from aftersales.notifications import service as outbox
from aftersales.notifications.models import Notification, OutboxMessage, WebhookEndpoint
from aftersales.orders.schemas import OrderIn
from aftersales.orders.service import OrderService
from aftersales.sla import service as sla_service
from aftersales.sla import tasks
from aftersales.sla.models import SlaEvent
from aftersales.sla.tasks import fire_due_alerts
from aftersales.tickets.models import Ticket
from aftersales.tickets.policy_service import PolicyService
from aftersales.tickets.schemas import ActionIn, TicketIn
from aftersales.tickets.service import TicketService
from tests.conftest import START
from tests.factories import order_body, ticket_body

H = 3600.0
FEED = Principal(kind="token", id=None, name="shop", role="integration")
FR = "first_response"
RES = "resolution"
# Requested at START: first response 2 h → 90 min, 108 min, 120 min; resolution 48 h → 36 h, 43.2 h, 48 h.
FR_DUE = {0.75: timedelta(minutes=90), 0.9: timedelta(minutes=108), 1.0: timedelta(minutes=120)}
RES_DUE = {0.75: timedelta(hours=36), 0.9: timedelta(hours=43.2), 1.0: timedelta(hours=48)}


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
    """Queues and intake policy, order O-1, agent a1, two supervisors, an admin, an inactive
    supervisor, and three webhook endpoints: all events, breaches only, and an inactive one."""
    async with factory() as session:
        await PolicyService(session, clock).ensure_defaults()
        await OrderService(session, clock).upsert_order("O-1", msgspec.convert(order_body(), OrderIn))
        auth = AuthService(session, clock)
        a1 = await auth.create_user(username="a1", password="a1-secret-pw", role="agent")
        watchers = set()
        for name, role in (("boss1", "supervisor"), ("boss2", "supervisor"), ("root", "admin")):
            watchers.add((await auth.create_user(username=name, password=f"{name}-secret-pw", role=role)).id)
        gone = await auth.create_user(username="gone", password="gone-secret-pw", role="supervisor")
        gone.active = False
        endpoints = {}
        for name, events, active in (("all", [], True), ("breach", ["sla.breach"], True), ("off", [], False)):
            endpoint = WebhookEndpoint(name=name, url=f"https://hooks.example/{name}", format="json", secret="s3cret",
                                       events=events, active=active, created_at=clock.now())
            session.add(endpoint)
            await session.flush()
            endpoints[name] = endpoint.id
        await session.commit()
    return {"a1": principal_for(a1), "watchers": watchers, "endpoints": endpoints}


async def open_tickets(factory, clock, world, count: int, *, assign_every: int = 2, **overrides: Any) -> list[int]:
    """`count` manual-queue tickets requested at the current time; every `assign_every`-th goes to a1."""
    ids = []
    async with factory() as session:
        service = TicketService(session, clock)
        for i in range(count):
            body = msgspec.convert(ticket_body(**{"requested_at": clock.now().isoformat(), **overrides}), TicketIn)
            ticket, _ = await service.open_ticket(body, FEED)
            assert ticket.queue is not None and ticket.first_response_at is None
            if assign_every and i % assign_every == 0:
                await session.execute(update(Ticket).where(Ticket.id == ticket.id).values(assignee_id=world["a1"].id))
            ids.append(ticket.id)
        await session.commit()
    return ids


async def act(factory, clock, ticket_id: int, action: str, actor: Principal, **fields: Any) -> None:
    async with factory() as session:
        service = TicketService(session, clock)
        current = await service.get(ticket_id)
        await service.act(ticket_id, action, ActionIn(version=current.version, **fields), actor)
        await session.commit()


async def priorities(factory, ids: list[int]) -> dict[int, int]:
    async with factory() as session:
        rows = (await session.execute(select(Ticket.id, Ticket.priority).where(Ticket.id.in_(ids)))).all()
    return dict(rows)


async def warnings(factory) -> list[tuple[int, str, str, float]]:
    async with factory() as session:
        rows = (await session.execute(
            select(SlaEvent.ticket_id, SlaEvent.metric, SlaEvent.event, SlaEvent.threshold)
            .where(SlaEvent.event.in_(("at_risk", "breach"))).order_by(SlaEvent.id)
        )).all()
    return [tuple(r) for r in rows]


async def assert_each_warning_once(factory, world, expected: set[tuple[int, str, float]]) -> None:
    """Every expected (ticket, metric, threshold) warning — and no other — exists exactly once as an
    event, once per recipient as a notification and once per subscribed endpoint in the outbox."""
    fired = await warnings(factory)
    assert Counter((t, m, f) for t, m, _, f in fired) == Counter(expected)
    for ticket_id, metric, event, fraction in fired:
        assert event == ("breach" if fraction >= 1.0 else "at_risk")
    async with factory() as session:
        assignees = dict((await session.execute(select(Ticket.id, Ticket.assignee_id))).all())
        numbers = dict((await session.execute(select(Ticket.id, Ticket.number))).all())
        notes = (await session.execute(select(Notification.ticket_id, Notification.user_id, Notification.kind,
                                              Notification.title))).all()
        outbox = (await session.execute(select(OutboxMessage.endpoint_id, OutboxMessage.event_type,
                                               OutboxMessage.event_key))).all()
    want_notes: Counter = Counter()
    want_outbox: Counter = Counter()
    for ticket_id, metric, fraction in expected:
        event = "breach" if fraction >= 1.0 else "at_risk"
        text = "SLA breached" if event == "breach" else f"{int(fraction * 100)} % of SLA used"
        title = f"{numbers[ticket_id]}: {text} ({metric})"
        recipients = set(world["watchers"]) | ({assignees[ticket_id]} if assignees[ticket_id] else set())
        for user_id in recipients:
            want_notes[(ticket_id, user_id, f"sla.{event}", title)] += 1
        want_outbox[(world["endpoints"]["all"], f"sla.{event}", f"{ticket_id}:{metric}:{fraction}")] += 1
        if event == "breach":
            want_outbox[(world["endpoints"]["breach"], f"sla.{event}", f"{ticket_id}:{metric}:{fraction}")] += 1
    assert Counter(tuple(n) for n in notes) == want_notes
    assert Counter(tuple(o) for o in outbox) == want_outbox


async def race(engine, clock) -> int:
    """Two workers, each with its own sessionmaker, over the same due tickets at the same moment."""
    first, second = await asyncio.gather(
        fire_due_alerts(create_sessionmaker(engine), clock),
        fire_due_alerts(create_sessionmaker(engine), clock),
    )
    return first + second


# -- one worker -----------------------------------------------------------------------------------


async def test_at_risk_fires_at_75_percent_once_and_not_a_second_early(world, factory, clock):
    ids = await open_tickets(factory, clock, world, 3)
    before = await priorities(factory, ids)
    async with factory() as session:
        due = (await session.execute(select(Ticket.sla_next_alert_at).where(Ticket.id.in_(ids)))).scalars().all()
    assert set(due) == {START + FR_DUE[0.75]}

    clock.set(START + FR_DUE[0.75] - timedelta(seconds=1))
    assert await fire_due_alerts(factory, clock) == 0
    assert await warnings(factory) == []
    clock.set(START + FR_DUE[0.75])
    assert await fire_due_alerts(factory, clock) == 3
    assert await fire_due_alerts(factory, clock) == 0  # again: nothing new
    clock.advance(minutes=5)
    assert await fire_due_alerts(factory, clock) == 0  # nor later, before the next threshold
    await assert_each_warning_once(factory, world, {(t, FR, 0.75) for t in ids})
    after = await priorities(factory, ids)
    assert after == {t: before[t] + 1 for t in ids}
    async with factory() as session:
        rows = (await session.execute(select(Ticket.sla_alerts_fired, Ticket.sla_next_alert_at).where(Ticket.id.in_(ids)))).all()
    assert {(tuple(fired), nxt) for fired, nxt in rows} == {(("first_response:0.75",), START + FR_DUE[0.9])}


async def test_breach_fires_once_at_100_percent(world, factory, clock):
    ids = await open_tickets(factory, clock, world, 2)
    for fraction in (0.75, 0.9, 1.0):
        clock.set(START + FR_DUE[fraction])
        assert await fire_due_alerts(factory, clock) == 2
        assert await fire_due_alerts(factory, clock) == 0
    clock.advance(hours=3)
    assert await fire_due_alerts(factory, clock) == 0
    fired = await warnings(factory)
    assert [(m, e, f) for t, m, e, f in fired if t == ids[0]] == [(FR, "at_risk", 0.75), (FR, "at_risk", 0.9), (FR, "breach", 1.0)]
    await assert_each_warning_once(factory, world, {(t, FR, f) for t in ids for f in FR_DUE})
    async with factory() as session:
        breaches = (await session.execute(select(SlaEvent.at).where(SlaEvent.event == "breach"))).scalars().all()
    assert breaches == [START + FR_DUE[1.0]] * 2


async def breach_flags(factory, ids: list[int]) -> dict[int, bool]:
    async with factory() as session:
        return dict((await session.execute(select(Ticket.id, Ticket.resolution_breached).where(Ticket.id.in_(ids)))).all())


async def replayed_breach_flags(factory, clock, ids: list[int]) -> dict[int, bool]:
    async with factory() as session:
        service = sla_service.SlaService(session, clock)
        return {t: (await service.recompute(t))["resolution_breached"] for t in ids}


async def test_the_resolution_breach_is_recorded_on_the_ticket_once(engine, world, factory, clock):
    """The worker that fires a resolution breach also sets tickets.resolution_breached (reports count
    breaches from it); at-risk warnings, first-response breaches and a paused clock do not; the
    replay of sla_events agrees at every step, also after the ticket is closed and reopened."""
    late, other, paused = await open_tickets(factory, clock, world, 3)
    ids = [late, other, paused]
    clock.advance(hours=1)
    await act(factory, clock, paused, "request_info", world["a1"], note="photo please")  # the customer has the ball
    moments = sorted([START + due for due in FR_DUE.values()] + [START + due for due in RES_DUE.values()])
    for moment in moments:
        clock.set(moment)
        await race(engine, clock)  # two workers: the flag follows the breach event that lands
        breached = moment >= START + RES_DUE[1.0]
        assert await breach_flags(factory, ids) == {late: breached, other: breached, paused: False}, moment
        assert await replayed_breach_flags(factory, clock, ids) == await breach_flags(factory, ids)
    async with factory() as session:
        events = (await session.execute(
            select(SlaEvent.ticket_id).where(SlaEvent.metric == RES, SlaEvent.event == "breach")
        )).scalars().all()
    assert Counter(events) == {late: 1, other: 1}

    # Closed late and reopened: still a breached ticket, and the replay says so too.
    await act(factory, clock, late, "reject", world["a1"], note="no")
    await act(factory, clock, late, "close", world["a1"])
    await act(factory, clock, late, "reopen", world["a1"], note="customer appealed")
    clock.advance(hours=100)
    assert await race(engine, clock) == 0
    assert await breach_flags(factory, ids) == {late: True, other: True, paused: False}
    assert await replayed_breach_flags(factory, clock, ids) == {late: True, other: True, paused: False}


async def test_several_thresholds_crossed_in_one_pass_all_fire(world, factory, clock):
    """Regression: the second warning in one pass used to crash the worker (MissingGreenlet on priority),
    and the crashing ticket, being the earliest due, blocked every later warning."""
    # Received 10 h after the customer asked: its first-response target passed long ago.
    [late] = await open_tickets(factory, clock, world, 1, requested_at=(START - timedelta(hours=10)).isoformat())
    [normal] = await open_tickets(factory, clock, world, 1)
    before = await priorities(factory, [late])
    clock.set(START + FR_DUE[0.75])
    assert await fire_due_alerts(factory, clock) == 4
    await assert_each_warning_once(factory, world, {(late, FR, 0.75), (late, FR, 0.9), (late, FR, 1.0), (normal, FR, 0.75)})
    assert (await priorities(factory, [late]))[late] == before[late] + 3


# -- two workers racing ---------------------------------------------------------------------------


async def test_two_workers_racing_fire_each_warning_once(engine, world, factory, clock):
    ids = await open_tickets(factory, clock, world, 20)
    before = await priorities(factory, ids)
    expected: set[tuple[int, str, float]] = set()
    rounds = [(FR, f, START + due) for f, due in FR_DUE.items()] + [(RES, f, START + due) for f, due in RES_DUE.items()]
    for n, (metric, fraction, moment) in enumerate(rounds, start=1):
        clock.set(moment)
        assert await race(engine, clock) == 20, (metric, fraction)
        assert await race(engine, clock) == 0  # the same moment again: nothing new
        expected |= {(t, metric, fraction) for t in ids}
        await assert_each_warning_once(factory, world, expected)
        assert await priorities(factory, ids) == {t: min(before[t] + n, 9) for t in ids}
    clock.advance(hours=100)
    assert await race(engine, clock) == 0
    await assert_each_warning_once(factory, world, expected)


async def test_racing_workers_with_their_own_engines(database_url, world, factory, clock):
    """As two processes would: separate engines (connection pools) against one database."""
    ids = await open_tickets(factory, clock, world, 20)
    engines = [create_engine(database_url, pool_size=3), create_engine(database_url, pool_size=3)]
    try:
        expected: set[tuple[int, str, float]] = set()
        for fraction, due in FR_DUE.items():
            clock.set(START + due)
            counts = await asyncio.gather(*(fire_due_alerts(create_sessionmaker(e), clock) for e in engines))
            assert sum(counts) == 20
            expected |= {(t, FR, fraction) for t in ids}
        await assert_each_warning_once(factory, world, expected)
    finally:
        for e in engines:
            await e.dispose()


# -- restarts ---------------------------------------------------------------------------------------


async def test_a_restarted_worker_neither_loses_nor_repeats(database_url, world, factory, clock):
    ids = await open_tickets(factory, clock, world, 20)
    clock.set(START + FR_DUE[0.75])
    worker = create_engine(database_url, pool_size=2)
    assert await fire_due_alerts(create_sessionmaker(worker), clock, limit=7) == 7  # stopped after a batch
    await worker.dispose()  # the process goes away

    worker = create_engine(database_url, pool_size=2)  # and comes back
    sla_service._policies.clear()  # a new process has no cache
    assert await fire_due_alerts(create_sessionmaker(worker), clock) == 13
    assert await fire_due_alerts(create_sessionmaker(worker), clock) == 0
    await worker.dispose()
    await assert_each_warning_once(factory, world, {(t, FR, 0.75) for t in ids})


async def test_a_worker_dying_mid_ticket_leaves_nothing_half_done(database_url, world, factory, clock, monkeypatch):
    ids = await open_tickets(factory, clock, world, 10)
    clock.set(START + FR_DUE[0.75])
    real_escalate = tasks._escalate
    calls = 0

    async def dies_on_the_fifth(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        await real_escalate(*args, **kwargs)  # notifications and outbox written ...
        if calls == 5:
            raise RuntimeError("worker killed")  # ... but never committed

    monkeypatch.setattr(tasks, "_escalate", dies_on_the_fifth)
    worker = create_engine(database_url, pool_size=2)
    with pytest.raises(RuntimeError):
        await fire_due_alerts(create_sessionmaker(worker), clock)
    await worker.dispose()
    # The four tickets before it were committed; the fifth left no trace at all.
    await assert_each_warning_once(factory, world, {(t, FR, 0.75) for t in ids[:4]})

    monkeypatch.setattr(tasks, "_escalate", real_escalate)
    worker = create_engine(database_url, pool_size=2)
    sla_service._policies.clear()
    assert await fire_due_alerts(create_sessionmaker(worker), clock) == 6
    assert await fire_due_alerts(create_sessionmaker(worker), clock) == 0
    await worker.dispose()
    await assert_each_warning_once(factory, world, {(t, FR, 0.75) for t in ids})


# -- paused, closed and cancelled tickets -------------------------------------------------------------


async def test_a_paused_clock_does_not_warn_while_paused(world, factory, clock):
    [tid] = await open_tickets(factory, clock, world, 1)
    clock.advance(hours=1)
    await act(factory, clock, tid, "request_info", world["a1"], note="photo please")  # answered and paused
    async with factory() as session:
        assert (await session.get(Ticket, tid)).sla_next_alert_at is None
    # Past 75 %, 90 % and 100 % of 48 h of wall time: nothing, the ball is with the customer.
    for hours in (36, 44, 49, 60):
        clock.set(START + timedelta(hours=hours))
        assert await fire_due_alerts(factory, clock) == 0
    assert await warnings(factory) == []

    clock.set(START + timedelta(hours=61))
    await act(factory, clock, tid, "customer_reply", FEED, note="here it is")
    # 1 h used before the pause: 75 % (36 h) is 35 h of running time away.
    due = START + timedelta(hours=61 + 35)
    async with factory() as session:
        assert (await session.get(Ticket, tid)).sla_next_alert_at == due
    clock.set(due - timedelta(seconds=1))
    assert await fire_due_alerts(factory, clock) == 0
    clock.set(due)
    assert await fire_due_alerts(factory, clock) == 1
    await assert_each_warning_once(factory, world, {(tid, RES, 0.75)})


async def test_a_paused_resolution_clock_still_lets_first_response_warn(world, factory, clock):
    [tid] = await open_tickets(factory, clock, world, 1)
    clock.advance(minutes=10)
    # The shop's integration asked the customer: the clock pauses, but no person has answered.
    await act(factory, clock, tid, "request_info", FEED, note="请补充照片")
    for fraction, due in FR_DUE.items():
        clock.set(START + due)
        assert await fire_due_alerts(factory, clock) == 1
    clock.set(START + timedelta(hours=50))
    assert await fire_due_alerts(factory, clock) == 0
    await assert_each_warning_once(factory, world, {(tid, FR, f) for f in FR_DUE})


async def test_closed_and_cancelled_tickets_never_warn(world, factory, clock):
    closed, cancelled, open_ = await open_tickets(factory, clock, world, 3)
    clock.advance(minutes=30)
    await act(factory, clock, closed, "reject", world["a1"], note="no")
    await act(factory, clock, closed, "close", world["a1"])
    await act(factory, clock, cancelled, "cancel", FEED, note="withdrawn")
    async with factory() as session:
        rows = dict((await session.execute(select(Ticket.id, Ticket.sla_next_alert_at))).all())
    assert rows[closed] is None and rows[cancelled] is None and rows[open_] is not None
    for hours in (1.5, 1.8, 2, 36, 43.2, 48, 200):
        clock.set(START + timedelta(hours=hours))
        await fire_due_alerts(factory, clock)
    fired = await warnings(factory)
    assert {t for t, *_ in fired} == {open_}
    assert len(fired) == 6


async def test_a_warning_due_before_closing_is_not_fired_after_it(world, factory, clock):
    """The worker was late: the ticket closed after its 75 % moment but before the worker ran."""
    [tid] = await open_tickets(factory, clock, world, 1)
    clock.set(START + FR_DUE[0.75] + timedelta(minutes=5))
    await act(factory, clock, tid, "reject", world["a1"], note="no")
    await act(factory, clock, tid, "close", world["a1"])
    assert await fire_due_alerts(factory, clock) == 0
    assert await warnings(factory) == []


# -- delivering the warning -------------------------------------------------------------------------


async def test_a_failed_warning_delivery_waits_for_its_backoff_even_for_a_worker_that_listed_it(world, factory, clock):
    """Regression: the claim used to ignore next_attempt_at, so a worker holding a stale list re-sent at once."""
    await open_tickets(factory, clock, world, 1)
    clock.set(START + FR_DUE[0.75])
    assert await fire_due_alerts(factory, clock) == 1
    async with factory() as session:
        [message_id] = (await session.execute(select(OutboxMessage.id))).scalars().all()
    calls: list[httpx.Request] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500, text="down")

    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as http:
        assert await outbox.deliver_due(factory, clock, client=http) == 0
        assert len(calls) == 1
        # A second worker had listed the message before the first one's attempt ended; it now gets to it,
        # at the same instant: the 10 s backoff is not over, so nothing may be sent.
        assert await outbox._deliver_one(factory, clock, http, message_id) is False
        assert len(calls) == 1
