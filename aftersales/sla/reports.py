"""SLA figures read from the tickets: the closure report and the supervisors' board.

Each panel is one SQL query aggregated in the database, and none of them reads the whole history:
the board reads the open tickets through the partial indexes of migration 0007 and bounded periods
through range indexes; the report reads the period's closures. Percentiles are percentile_cont on
PostgreSQL and taken in Python from one JSON array per group on SQLite. Labels come out in the
reader's language. Serving these figures from a short-lived cache is the controllers' business.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from sqlalchemy import ColumnElement, Select, and_, case, func, literal, or_, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales import i18n
from aftersales.auth.models import User
from aftersales.clock import SystemClock, ensure_utc
from aftersales.db import unindexed
from aftersales.feedback.taxonomy import reason_label
from aftersales.labels import label
from aftersales.orders.models import LiveSession, Order, OrderItem
from aftersales.tickets.models import OPEN_TICKET_SQL, Queue, Ticket, TicketItem

GROUPS = ("none", "queue", "agent", "kind", "reason", "category", "session", "host")
TARGET_RATE = 0.95
# Board buckets by time left to the resolution due time: (key, upper bound in hours).
BUCKETS = (("breached", 0), ("lt2h", 2), ("lt6h", 6), ("lt12h", 12), ("more", None))
AT_RISK_HOURS = 12
AT_RISK_LIMIT = 50
TREND_DAYS = 30


# -- shapes ----------------------------------------------------------------------------------


class ReportRow(msgspec.Struct, kw_only=True):
    key: str | None
    label: str
    closed: int
    met: int
    rate: float | None
    resolution_median_seconds: float | None
    resolution_p90_seconds: float | None
    first_response_median_seconds: float | None
    first_response_p90_seconds: float | None
    breaches: int
    first_response_breaches: int


class ClosureReport(msgspec.Struct, kw_only=True):
    start: datetime
    end: datetime
    group: str
    target_rate: float
    rows: list[ReportRow]
    total: ReportRow
    # When the figures were read: a cached report can be up to the cache lifetime old.
    generated_at: datetime | None = None


class BoardFilters(msgspec.Struct, kw_only=True):
    queue: str | None = None
    kind: str | None = None
    reason: str | None = None  # a reason group: the part of the code before the dot
    session: int | None = None  # live session id


class Bucket(msgspec.Struct, kw_only=True):
    key: str
    count: int


class AtRiskTicket(msgspec.Struct, kw_only=True):
    id: int
    number: str
    status: str
    kind: str
    reason_code: str
    queue: str | None
    priority: int
    assignee_id: int | None
    assignee_name: str | None
    due_at: datetime
    seconds_left: float


class FirstResponse(msgspec.Struct, kw_only=True):
    """Tickets requested in the last 7 days that have a verdict, how many were answered in time,
    and the open tickets whose first response is overdue right now (or still due)."""

    answered: int
    met: int
    rate: float | None
    overdue: int
    waiting: int


class Load(msgspec.Struct, kw_only=True):
    key: str | None
    label: str
    open: int
    breached: int
    at_risk: int


class ClosureWindow(msgspec.Struct, kw_only=True):
    key: str  # today, 7d, 30d
    start: datetime
    closed: int
    met: int
    rate: float | None
    on_target: bool | None


class TrendDay(msgspec.Struct, kw_only=True):
    day: date
    closed: int
    met: int
    rate: float | None


class Board(msgspec.Struct, kw_only=True):
    now: datetime  # the moment time left and "overdue" are measured from
    generated_at: datetime  # when the figures were read (the same moment; a cached board can be older)
    filters: BoardFilters
    open_total: int
    buckets: list[Bucket]
    paused: int
    at_risk: list[AtRiskTicket]
    first_response: FirstResponse
    agents: list[Load]
    queues: list[Load]
    closure: list[ClosureWindow]
    trend: list[TrendDay]
    target_rate: float = TARGET_RATE


# -- helpers ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (as PostgreSQL's percentile_cont)."""
    return _ranked(sorted(values), q)


def _ranked(data: Sequence[float], q: float) -> float | None:
    """percentile() of values already in ascending order."""
    if not data:
        return None
    pos = (len(data) - 1) * q
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def rate(met: int, total: int) -> float | None:
    return round(met / total, 4) if total else None


def day_bounds(first: date, days: int, zone: ZoneInfo) -> list[datetime]:
    """UTC instants of local midnights: first, first + 1 day, ... (days + 1 of them)."""
    return [ensure_utc(datetime.combine(first + timedelta(days=i), time.min, tzinfo=zone)) for i in range(days + 1)]


def _is_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _sorted_numbers(raw: Any) -> list[float]:
    """A JSON array of one group's seconds (SQLite json_group_array), NULLs dropped, ascending."""
    values = json.loads(raw) if isinstance(raw, str | bytes) else list(raw or [])
    if None in values:
        values = [v for v in values if v is not None]
    values.sort()  # numbers as JSON gave them (int or float): no per-value conversion at 50,000 values
    return values


def _count(condition: ColumnElement[bool]) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


# Open tickets, as the partial indexes ix_tickets_open / ix_tickets_open_requested (migration 0007)
# state it: literal SQL, since bound parameters keep SQLite from matching a partial index.
IS_OPEN = text(f"{Ticket.__tablename__}.{OPEN_TICKET_SQL}")


def apply_filters(query: Select[Any], filters: BoardFilters) -> Select[Any]:
    """The board's filters, none of them usable as the query's index (see `unindexed`): every query
    is driven by its open-ticket, period or requested_at condition, whatever the filters."""
    if filters.queue:
        query = query.where(unindexed(Ticket.queue) == filters.queue)
    if filters.kind:
        query = query.where(unindexed(Ticket.kind) == filters.kind)
    if filters.reason:
        code = unindexed(Ticket.reason_code)
        query = query.where(or_(code == filters.reason, code.like(f"{filters.reason}.%")))
    if filters.session:
        query = query.where(unindexed(Ticket.order_id).in_(select(Order.id).where(Order.live_session_id == filters.session)))
    return query


def _closed_between(query: Select[Any], start: datetime, end: datetime, filters: BoardFilters) -> Select[Any]:
    """Tickets closed in [start, end), read through ix_tickets_closed_at."""
    query = query.where(unindexed(Ticket.status) == "closed", Ticket.closed_at >= start, Ticket.closed_at < end)
    return apply_filters(query, filters)


def _queue_label(key: str | None, name_zh: str | None, name_en: str | None) -> str:
    if key is None:
        return i18n.gettext("No queue (decided automatically)")
    name = name_zh if i18n.get_locale() == "zh_CN" else name_en
    return name or key


# -- the closure report ------------------------------------------------------------------------


def _group_columns(group: str) -> tuple[list[Any], list[Any]]:
    """(key column, label column) for the SELECT, and the joins they need."""
    # The ticket's first item, looked up per closed ticket (ix_ticket_items_ticket_id), not aggregated
    # over every ticket item ever.
    first_item = select(func.min(TicketItem.id)).where(TicketItem.ticket_id == Ticket.id).correlate(Ticket).scalar_subquery()
    if group == "queue":
        return [Ticket.queue, Queue.name_zh, Queue.name_en], [(Queue, Queue.key == Ticket.queue)]
    if group == "agent":
        return [Ticket.assignee_id, User.display_name], [(User, User.id == Ticket.assignee_id)]
    if group == "kind":
        return [Ticket.kind], []
    if group == "reason":
        return [Ticket.reason_code], []
    if group == "category":
        return [OrderItem.category], [
            (TicketItem, TicketItem.id == first_item),
            (OrderItem, OrderItem.id == TicketItem.order_item_id),
        ]
    if group == "session":
        return [LiveSession.id, LiveSession.title], [(Order, Order.id == Ticket.order_id), (LiveSession, LiveSession.id == Order.live_session_id)]
    if group == "host":
        return [LiveSession.host], [(Order, Order.id == Ticket.order_id), (LiveSession, LiveSession.id == Order.live_session_id)]
    return [], []


def _group_label(group: str, values: tuple[Any, ...]) -> tuple[str | None, str]:
    if group == "none":
        return None, i18n.gettext("All tickets")
    key = values[0]
    if group == "queue":
        return key, _queue_label(key, values[1], values[2])
    if group == "agent":
        return (str(key) if key is not None else None), (values[1] or f"#{key}") if key is not None else i18n.gettext("Unassigned")
    if group == "kind":
        return key, label("kind", key)
    if group == "reason":
        return key, reason_label(key, i18n.get_locale())
    if group == "category":
        return key, key or i18n.gettext("No item")
    if group == "session":
        return (str(key) if key is not None else None), (values[1] or f"#{key}") if key is not None else i18n.gettext("No live session")
    return key, key or i18n.gettext("No live session")  # host


def _report_counts() -> list[Any]:
    """closed, met, breaches, first-response breaches. A breach is a closed ticket over its
    resolution target: closed late, or its resolution breach warning fired (e.g. before a reopen),
    which the worker records on the ticket as resolution_breached."""
    return [
        func.count(Ticket.id),
        _count(Ticket.resolution_met.is_(True)),
        _count(or_(Ticket.resolution_met.is_(False), Ticket.resolution_breached.is_(True))),
        _count(Ticket.first_response_met.is_(False)),
    ]


async def closure_report(session: AsyncSession, start: datetime, end: datetime, group: str = "none",
                         filters: BoardFilters | None = None, *, now: datetime | None = None) -> ClosureReport:
    """Tickets closed in [start, end) — cancelled ones are not closures — per group: closed, closed
    within target, rate, median / p90 resolution and first-response merchant time, breaches.
    One query over the period's closures (ix_tickets_closed_at): its cost follows the period, not
    the history. `now` is when the figures are read (the report's generated_at)."""
    if group not in GROUPS:
        raise ValueError(f"group must be one of {', '.join(GROUPS)}")
    start, end = ensure_utc(start), ensure_utc(end)
    generated_at = ensure_utc(now) if now is not None else SystemClock().now()
    keys, joins = _group_columns(group)
    query = select(*keys).select_from(Ticket)
    for target, on in joins:
        query = query.outerjoin(target, on)
    query = _closed_between(query, start, end, filters or BoardFilters())
    if _is_postgresql(session):
        rows, total = await _report_rows_in_sql(session, query, keys, group)
    else:
        rows, total = await _report_rows_in_python(session, query, keys, group)
    rows.sort(key=lambda r: (-r.closed, r.label))
    return ClosureReport(start=start, end=end, group=group, target_rate=TARGET_RATE, rows=rows, total=total,
                         generated_at=generated_at)


async def _report_rows_in_sql(session: AsyncSession, query: Select[Any], keys: list[Any],
                              group: str) -> tuple[list[ReportRow], ReportRow]:
    """PostgreSQL: percentiles by percentile_cont, the total row by a grouping set in the same query."""
    seconds = (Ticket.resolution_seconds, Ticket.first_response_seconds)
    percentiles = [func.percentile_cont(q).within_group(column) for column in seconds for q in (0.5, 0.9)]
    is_total = func.grouping(keys[0]) if keys else literal(1)
    query = query.add_columns(is_total, *_report_counts(), *percentiles)
    if keys:
        query = query.group_by(func.grouping_sets(tuple_(*keys), tuple_()))
    rows, total = [], None
    for row in (await session.execute(query)).all():
        values = tuple(row[: len(keys)])
        total_row, closed, met, breaches, fr_breaches, *pcts = row[len(keys):]
        if total_row:
            total = _row(None, i18n.gettext("All tickets"), closed, met, breaches, fr_breaches, *pcts)
        if closed and (not total_row or group == "none"):
            rows.append(_row(*_group_label(group, values), closed, met, breaches, fr_breaches, *pcts))
    assert total is not None  # the empty grouping set always answers
    return rows, total


async def _report_rows_in_python(session: AsyncSession, query: Select[Any], keys: list[Any],
                                 group: str) -> tuple[list[ReportRow], ReportRow]:
    """SQLite: the seconds of each group come back as one JSON array per group (no percentile
    function); the total's percentiles come from the same arrays."""
    arrays = [func.json_group_array(Ticket.resolution_seconds), func.json_group_array(Ticket.first_response_seconds)]
    query = query.add_columns(*_report_counts(), *arrays)
    if keys:
        query = query.group_by(*keys)
    rows: list[ReportRow] = []
    sums, all_resolution, all_first = [0, 0, 0, 0], [], []
    for row in (await session.execute(query)).all():
        values = tuple(row[: len(keys)])
        *counts, res_raw, fr_raw = row[len(keys):]
        if not counts[0]:
            continue  # "none" over an empty period still answers one row of NULLs
        resolution, first = _sorted_numbers(res_raw), _sorted_numbers(fr_raw)
        sums = [a + int(b) for a, b in zip(sums, counts)]
        all_resolution += resolution
        all_first += first
        rows.append(_row(*_group_label(group, values), *counts, *_percentiles(resolution), *_percentiles(first)))
    # Sorting concatenated sorted runs is close to linear (Timsort merges them).
    total = _row(None, i18n.gettext("All tickets"), *sums, *_percentiles(sorted(all_resolution)), *_percentiles(sorted(all_first)))
    return rows, total


def _percentiles(ascending: list[float]) -> tuple[float | None, float | None]:
    return _ranked(ascending, 0.5), _ranked(ascending, 0.9)


def _row(key: str | None, name: str, closed: int, met: int, breaches: int, fr_breaches: int,
         res_median: float | None, res_p90: float | None, fr_median: float | None, fr_p90: float | None) -> ReportRow:
    def seconds(value: Any) -> float | None:
        return None if value is None else float(value)

    return ReportRow(
        key=key, label=name, closed=int(closed), met=int(met), rate=rate(int(met), int(closed)),
        resolution_median_seconds=seconds(res_median), resolution_p90_seconds=seconds(res_p90),
        first_response_median_seconds=seconds(fr_median), first_response_p90_seconds=seconds(fr_p90),
        breaches=int(breaches), first_response_breaches=int(fr_breaches),
    )


# -- the board ---------------------------------------------------------------------------------


async def board(session: AsyncSession, now: datetime, filters: BoardFilters | None = None, *,
                zone: ZoneInfo | None = None) -> Board:
    """Every panel reads either the open tickets (through the partial indexes of migration 0007) or
    a bounded period (7 days requested, 30 days closed): nothing grows with the whole history."""
    filters = filters or BoardFilters()
    zone = zone or ZoneInfo("Asia/Shanghai")
    now = ensure_utc(now)
    per_queue = await _open_per_queue(session, now, filters)
    closure, trend = await _closure_windows(session, now, filters, zone)
    buckets = [Bucket(key=key, count=sum(r.buckets[i] for r in per_queue)) for i, (key, _) in enumerate(BUCKETS)]
    return Board(
        now=now, generated_at=now, filters=filters, open_total=sum(r.load.open for r in per_queue), buckets=buckets,
        paused=sum(r.paused for r in per_queue),
        at_risk=await _at_risk(session, now, filters),
        first_response=await _first_response(session, now, filters, per_queue),
        agents=await _agent_load(session, now, filters),
        queues=sorted((r.load for r in per_queue), key=lambda x: (-x.open, x.label)),
        closure=closure,
        trend=trend,
    )


class _QueueCounts(msgspec.Struct):
    """One queue's open tickets: its load row, its tickets per bucket, paused ones, and first
    responses still pending (overdue, within time)."""

    load: Load
    buckets: list[int]
    paused: int
    fr_overdue: int
    fr_waiting: int


def _bucket_columns(now: datetime) -> list[Any]:
    due = Ticket.sla_due_at
    columns, lower = [], None
    for _, hours in BUCKETS:
        upper = now + timedelta(hours=hours) if hours is not None else None
        conditions = [due.is_not(None)]
        if lower is not None:
            conditions.append(due >= lower)
        if upper is not None:
            conditions.append(due < upper)
        columns.append(_count(and_(*conditions)))
        lower = upper
    return columns


async def _open_per_queue(session: AsyncSession, now: datetime, filters: BoardFilters) -> list[_QueueCounts]:
    """One pass over the open tickets, per queue: the buckets, the queue load and the pending first
    responses are all sums of it."""
    pending = and_(Ticket.first_response_seconds.is_(None), Ticket.first_response_due_at.is_not(None))
    query = (
        select(Ticket.queue, Queue.name_zh, Queue.name_en, *_load_columns(now), _count(Ticket.sla_due_at.is_(None)),
               _count(and_(pending, Ticket.first_response_due_at < now)),
               _count(and_(pending, Ticket.first_response_due_at >= now)), *_bucket_columns(now))
        .outerjoin(Queue, Queue.key == Ticket.queue)
        .where(IS_OPEN)
        .group_by(Ticket.queue, Queue.name_zh, Queue.name_en)
    )
    out = []
    for row in (await session.execute(apply_filters(query, filters))).all():
        key, zh, en, n, breached, at_risk, paused, overdue, waiting, *buckets = row
        load = Load(key=key, label=_queue_label(key, zh, en), open=int(n), breached=int(breached), at_risk=int(at_risk))
        out.append(_QueueCounts(load=load, buckets=[int(b) for b in buckets], paused=int(paused),
                                fr_overdue=int(overdue), fr_waiting=int(waiting)))
    return out


async def _at_risk(session: AsyncSession, now: datetime, filters: BoardFilters) -> list[AtRiskTicket]:
    query = (
        select(Ticket.id, Ticket.number, Ticket.status, Ticket.kind, Ticket.reason_code, Ticket.queue, Ticket.priority,
               Ticket.assignee_id, User.display_name, Ticket.sla_due_at)
        .outerjoin(User, User.id == Ticket.assignee_id)
        .where(IS_OPEN, Ticket.sla_due_at.is_not(None), Ticket.sla_due_at < now + timedelta(hours=AT_RISK_HOURS))
        .order_by(Ticket.sla_due_at, Ticket.id)
        .limit(AT_RISK_LIMIT)
    )
    rows = (await session.execute(apply_filters(query, filters))).all()
    return [
        AtRiskTicket(id=r[0], number=r[1], status=r[2], kind=r[3], reason_code=r[4], queue=r[5], priority=r[6],
                     assignee_id=r[7], assignee_name=r[8], due_at=r[9], seconds_left=(ensure_utc(r[9]) - now).total_seconds())
        for r in rows
    ]


async def _first_response(session: AsyncSession, now: datetime, filters: BoardFilters,
                          per_queue: list[_QueueCounts]) -> FirstResponse:
    """Compliance over the tickets requested in the last 7 days (a requested_at range); the pending
    part (open tickets still without a response) comes from the pass over open tickets."""
    query = select(
        _count(Ticket.first_response_met.is_not(None)),
        _count(Ticket.first_response_met.is_(True)),
    ).where(Ticket.requested_at >= now - timedelta(days=7))
    answered, met = (int(v or 0) for v in (await session.execute(apply_filters(query, filters))).one())
    return FirstResponse(answered=answered, met=met, rate=rate(met, answered),
                         overdue=sum(r.fr_overdue for r in per_queue), waiting=sum(r.fr_waiting for r in per_queue))


def _load_columns(now: datetime) -> list[Any]:
    return [
        func.count(Ticket.id),
        _count(Ticket.sla_due_at < now),
        _count(and_(Ticket.sla_due_at >= now, Ticket.sla_due_at < now + timedelta(hours=AT_RISK_HOURS))),
    ]


async def _agent_load(session: AsyncSession, now: datetime, filters: BoardFilters) -> list[Load]:
    query = (
        select(Ticket.assignee_id, User.display_name, *_load_columns(now))
        .outerjoin(User, User.id == Ticket.assignee_id)
        .where(IS_OPEN)
        .group_by(Ticket.assignee_id, User.display_name)
    )
    out = []
    for user_id, name, n, breached, at_risk in (await session.execute(apply_filters(query, filters))).all():
        shown = (name or f"#{user_id}") if user_id is not None else i18n.gettext("Unassigned")
        out.append(Load(key=str(user_id) if user_id is not None else None, label=shown, open=int(n),
                        breached=int(breached), at_risk=int(at_risk)))
    # Unassigned last, then the busiest first.
    return sorted(out, key=lambda x: (x.key is None, -x.open, x.label))


async def _closure_windows(session: AsyncSession, now: datetime, filters: BoardFilters,
                           zone: ZoneInfo) -> tuple[list[ClosureWindow], list[TrendDay]]:
    """Closed tickets per local day over the last 30 days (today included); today, 7 and 30 days
    are sums of those days, so the rates and the chart always agree."""
    today = now.astimezone(zone).date()
    bounds = day_bounds(today - timedelta(days=TREND_DAYS - 1), TREND_DAYS, zone)
    day = case(*[(Ticket.closed_at < bounds[i + 1], literal(i)) for i in range(TREND_DAYS)], else_=literal(-1))
    inner = _closed_between(select(day.label("day"), Ticket.resolution_met.label("met")), bounds[0], bounds[-1], filters).subquery()
    query = select(inner.c.day, func.count(), _count(inner.c.met.is_(True))).group_by(inner.c.day)
    per_day = {int(d): (int(n), int(m)) for d, n, m in (await session.execute(query)).all()}
    trend = []
    for i in range(TREND_DAYS):
        n, m = per_day.get(i, (0, 0))
        trend.append(TrendDay(day=today - timedelta(days=TREND_DAYS - 1 - i), closed=n, met=m, rate=rate(m, n)))
    windows = []
    for key, days in (("today", 1), ("7d", 7), ("30d", 30)):
        part = trend[-days:]
        n, m = sum(d.closed for d in part), sum(d.met for d in part)
        r = rate(m, n)
        windows.append(ClosureWindow(key=key, start=bounds[TREND_DAYS - days], closed=n, met=m, rate=r,
                                     on_target=None if r is None else r >= TARGET_RATE))
    return windows, trend


async def filter_options(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Live sessions of the last 60 days for the board's filter (the queues come from queue_names)."""
    query = (
        select(LiveSession.id, LiveSession.title, LiveSession.host, LiveSession.started_at)
        .where(or_(LiveSession.started_at.is_(None), LiveSession.started_at >= now - timedelta(days=60)))
        .order_by(LiveSession.started_at.desc(), LiveSession.id.desc())
        .limit(100)
    )
    return {"sessions": [{"id": i, "title": t or f"#{i}", "host": h} for i, t, h, _ in (await session.execute(query)).all()]}


async def assignable_people(session: AsyncSession) -> list[dict[str, Any]]:
    query = select(User.id, User.display_name).where(User.role.in_(("agent", "supervisor")), User.active.is_(True)).order_by(User.display_name)
    return [{"id": i, "name": n} for i, n in (await session.execute(query)).all()]
