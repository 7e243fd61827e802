"""bench/generate.py (the benchmark's data generator) against a real database: SQLite, or PostgreSQL when
AFTERSALES_TEST_DATABASE_URL is set (the generator then creates and drops its own databases beside that one).

What they protect (issue 7, finding F6):
- same seed and anchor => the same rows in every table, whether one worker wrote them or two workers in small
  blocks (the work is split over processes, the data must not be);
- the rows hang together: every foreign key resolves, ids are dense from 1, the indexes and unique constraints
  dropped for the load are all back, ticket_number_counters holds each day's last number;
- the rows are what the services would have written: each stored intake decision (outcome, rule, trace,
  explanation) is what the shipped policy gives on the stored facts, the facts are what gather_facts sees,
  each ticket's SLA columns equal SlaService.recompute at the anchor, resolution_breached is set exactly when a
  resolution breach warning fired, and every timeline follows the transition table to the ticket's status.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import selectinload

from aftersales.clock import FrozenClock
from aftersales.db import Base, create_engine, create_sessionmaker
from aftersales.orders.models import Order, OrderItem
from aftersales.sla.service import SlaService
from aftersales.tickets import policy as policy_rules
from aftersales.tickets import workflow
from aftersales.tickets.facts import gather_facts
from aftersales.tickets.models import Ticket, TicketDecision, TicketItem, TimelineEvent
from bench.generate import generate
from bench.genplan import COLUMNS

ANCHOR = datetime(2026, 11, 25)
TICKETS = 1_200
SEED = 11
SAMPLE = 60  # tickets checked one by one against the services


def _url(tmp: Path, name: str) -> str:
    base = os.environ.get("AFTERSALES_TEST_DATABASE_URL")
    if base and base.startswith("postgresql"):
        u = make_url(base)
        return u.set(database=f"{u.database}_{name}").render_as_string(hide_password=False)
    return f"sqlite+aiosqlite:///{tmp / f'{name}.db'}"


async def _drop_pg(url: str) -> None:
    import asyncpg

    u = make_url(url)
    admin = await asyncpg.connect(u.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two data sets from the same seed and anchor: two workers in blocks of 250 tickets, and one worker."""
    tmp = tmp_path_factory.mktemp("generate")
    urls = {"split": _url(tmp, "gen_split"), "single": _url(tmp, "gen_single")}
    summaries = {
        "split": generate(urls["split"], tickets=TICKETS, seed=SEED, anchor=ANCHOR, quiet=True, workers=2, block_tickets=250),
        "single": generate(urls["single"], tickets=TICKETS, seed=SEED, anchor=ANCHOR, quiet=True, workers=1),
    }
    yield {"urls": urls, "summaries": summaries}
    for url in urls.values():
        if url.startswith("postgresql"):
            asyncio.run(_drop_pg(url))


@pytest.fixture()
async def gen_session(generated: dict[str, Any]) -> Any:
    engine = create_engine(generated["urls"]["split"])
    async with create_sessionmaker(engine)() as session:
        yield session
    await engine.dispose()


async def _checksums(url: str) -> dict[str, tuple[int, str]]:
    engine = create_engine(url)
    out = {}
    try:
        async with engine.connect() as conn:
            for table, cols in COLUMNS.items():
                key = "id" if "id" in cols else cols[0]
                digest = hashlib.sha256()
                n = 0
                for row in (await conn.execute(text(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {key}"))).all():
                    digest.update(repr(tuple(row)).encode())
                    n += 1
                out[table] = (n, digest.hexdigest())
    finally:
        await engine.dispose()
    return out


async def test_same_seed_and_anchor_give_the_same_rows_whatever_the_workers(generated: dict[str, Any]) -> None:
    split, single = generated["summaries"]["split"], generated["summaries"]["single"]
    assert split["workers"] == 2 and single["workers"] == 1
    assert split["rows"] == single["rows"]
    assert split["rows"]["tickets"] == TICKETS
    a = await _checksums(generated["urls"]["split"])
    b = await _checksums(generated["urls"]["single"])
    assert a == b
    assert all(n > 0 for n, _ in a.values()), a


async def test_ids_are_dense_and_every_foreign_key_resolves(gen_session: Any) -> None:
    for table, cols in COLUMNS.items():
        if "id" in cols:
            count, low, high = (await gen_session.execute(text(f"SELECT count(*), min(id), max(id) FROM {table}"))).one()
            assert (low, high) == (1, count), table
    for table in Base.metadata.sorted_tables:
        if table.name not in COLUMNS:
            continue
        for fk in table.foreign_keys:
            child, parent = fk.parent, fk.column
            missing = await gen_session.scalar(
                select(func.count()).select_from(table)
                .where(child.is_not(None), ~select(parent).where(parent == child).exists()))
            assert missing == 0, f"{table.name}.{child.name} -> {parent.table.name}"


async def test_indexes_and_unique_constraints_are_back(gen_session: Any) -> None:
    def names(sync_conn: Any) -> dict[str, set[str]]:
        insp = inspect(sync_conn)
        return {t: {i["name"] for i in insp.get_indexes(t)} | {u["name"] for u in insp.get_unique_constraints(t)}
                for t in COLUMNS}

    found = await (await gen_session.connection()).run_sync(names)
    for table in Base.metadata.sorted_tables:
        if table.name in COLUMNS:
            expected = {i.name for i in table.indexes} | {c.name for c in table.constraints if c.__class__.__name__ == "UniqueConstraint"}
            assert expected <= found[table.name], (table.name, expected - found[table.name])


async def test_number_counters_hold_each_days_last_number(gen_session: Any) -> None:
    numbers = (await gen_session.execute(select(Ticket.number))).scalars().all()
    last: dict[str, int] = {}
    for number in numbers:
        _, day, seq = number.split("-")
        last[day] = max(last.get(day, 0), int(seq))
    rows = (await gen_session.execute(text("SELECT day, last FROM ticket_number_counters"))).all()
    stored = {str(day).replace("-", "")[:8]: n for day, n in rows}
    assert {d: n for d, n in stored.items() if d in last} == last
    assert sum(last.values()) == TICKETS  # no gaps, no duplicates


async def _sample(session: Any) -> list[Ticket]:
    ids = (await session.execute(select(Ticket.id).order_by(Ticket.id))).scalars().all()
    step = max(1, len(ids) // SAMPLE)
    chosen = ids[::step][:SAMPLE]
    # The few tickets still open at the anchor are the interesting SLA cases: always include them.
    open_ids = (await session.execute(select(Ticket.id).where(Ticket.status.not_in(workflow.FINAL_STATUSES)))).scalars().all()
    return list((await session.execute(select(Ticket).where(Ticket.id.in_(set(chosen) | set(open_ids))).order_by(Ticket.id))).scalars())


async def test_stored_decisions_are_what_the_policy_decides_on_the_stored_facts(gen_session: Any) -> None:
    policy = policy_rules.parse(policy_rules.DEFAULT_POLICY)
    decisions = (await gen_session.execute(select(TicketDecision))).scalars().all()
    assert len(decisions) == TICKETS
    seen_rules = set()
    for d in decisions:
        facts = d.facts if isinstance(d.facts, dict) else json.loads(d.facts)
        expected = policy_rules.evaluate(policy, facts)
        assert (d.rule, d.trace) == (expected.rule, json.loads(json.dumps(expected.trace))), d.ticket_id
        # The explanation may add why an automatic decision was not possible for the ticket's kind.
        assert d.explanation.startswith(expected.explain()), d.ticket_id
        if d.explanation == expected.explain():
            assert (d.decision, d.queue, d.priority) == (expected.outcome.decision, expected.outcome.queue, expected.outcome.priority)
        seen_rules.add(d.rule)
    assert len(seen_rules) >= 4, seen_rules  # several branches of the policy were exercised


async def test_facts_are_what_gather_facts_sees(gen_session: Any) -> None:
    tz = ZoneInfo("Asia/Shanghai")
    for ticket in await _sample(gen_session):
        order = await gen_session.scalar(select(Order).where(Order.id == ticket.order_id).options(selectinload(Order.items)))
        claimed = list((await gen_session.execute(
            select(OrderItem).join(TicketItem, TicketItem.order_item_id == OrderItem.id).where(TicketItem.ticket_id == ticket.id)
        )).scalars())
        seen = await gather_facts(gen_session, ticket, order, claimed, tz)
        stored = (await gen_session.get(TicketDecision, ticket.id)).facts
        stored = stored if isinstance(stored, dict) else json.loads(stored)
        # gather_facts reads the history as it is now; at intake, later refunds and rejections had not happened yet.
        for key in ("refunds_30d", "refunds_90d", "rejections_90d"):
            assert stored.pop(key) <= seen.pop(key), (ticket.id, key)
        assert list(stored) == [k for k in seen]  # same keys in the same order
        assert json.loads(json.dumps(seen)) == stored, ticket.id


async def test_sla_columns_equal_a_replay_of_the_stored_events(gen_session: Any) -> None:
    clock = FrozenClock(ANCHOR.replace(tzinfo=UTC))
    service = SlaService(gen_session, clock)
    sample = await _sample(gen_session)
    assert any(t.status not in workflow.FINAL_STATUSES for t in sample)
    for ticket in sample:
        replayed = await service.recompute(ticket.id)
        running = ticket.sla_running_since is not None
        elapsed = ticket.sla_elapsed_seconds + ((clock.now() - ticket.sla_running_since).total_seconds() if running else 0.0)
        assert replayed["resolution_running"] == running, ticket.id
        assert replayed["resolution_elapsed"] == pytest.approx(elapsed, abs=1e-3), ticket.id
        assert replayed["resolution_due_at"] == ticket.sla_due_at, ticket.id
        assert replayed["resolution_met"] == ticket.resolution_met, ticket.id
        assert replayed["resolution_breached"] == ticket.resolution_breached, ticket.id
        assert replayed["first_response_met"] == ticket.first_response_met, ticket.id


async def test_resolution_breached_is_set_exactly_when_the_breach_warning_fired(gen_session: Any) -> None:
    breached = set((await gen_session.execute(text(
        "SELECT DISTINCT ticket_id FROM sla_events WHERE metric = 'resolution' AND event = 'breach'"))).scalars())
    flagged = set((await gen_session.execute(select(Ticket.id).where(Ticket.resolution_breached.is_(True)))).scalars())
    assert flagged == breached
    assert breached, "the sample should contain late tickets"


async def test_every_timeline_follows_the_transition_table(gen_session: Any) -> None:
    tickets = {t.id: t for t in (await gen_session.execute(select(Ticket))).scalars()}
    events = (await gen_session.execute(select(TimelineEvent).order_by(TimelineEvent.ticket_id, TimelineEvent.id))).scalars()
    status: dict[int, str] = {}
    moves: dict[int, int] = {}
    for e in events:
        if e.action == "open":
            status[e.ticket_id] = "requested"
            continue
        kind = tickets[e.ticket_id].kind
        assert e.from_status == status[e.ticket_id], e.ticket_id
        passed = True if e.action == "record_inspection" else None
        assert workflow.transition(kind, e.from_status, e.action, inspection_passed=passed) == e.to_status, e.ticket_id
        status[e.ticket_id] = e.to_status
        moves[e.ticket_id] = moves.get(e.ticket_id, 0) + 1
    assert {i: t.status for i, t in tickets.items()} == status
    assert all(t.version == 1 + moves.get(i, 0) for i, t in tickets.items())


async def test_tracking_events_carry_the_dedupe_key_the_ingestion_computes(gen_session: Any) -> None:
    from aftersales.orders.models import TrackingEvent
    from aftersales.orders.service import _event_digest

    events = (await gen_session.execute(select(TrackingEvent).order_by(TrackingEvent.id))).scalars().all()
    assert events
    for e in events[:: max(1, len(events) // 200)]:
        assert e.dedupe_key == _event_digest(e.source, e.raw_status, e.occurred_at), e.id
