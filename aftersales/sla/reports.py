"""SLA figures read from the tickets: the closure report and the supervisors' board.

Each function is one SQL query (the board is a handful of them, one per panel), aggregated in the
database; only percentiles are taken in Python, over the seconds the query collected per group.
Works the same on SQLite and PostgreSQL. Labels come out in the reader's language.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from sqlalchemy import ColumnElement, Select, and_, case, exists, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales import i18n
from aftersales.auth.models import User
from aftersales.clock import ensure_utc
from aftersales.feedback.taxonomy import reason_label
from aftersales.labels import label
from aftersales.orders.models import LiveSession, Order, OrderItem
from aftersales.sla.models import SlaEvent
from aftersales.tickets.models import Queue, Ticket, TicketItem

GROUPS = ("none", "queue", "agent", "kind", "reason", "category", "session", "host")
FINAL = ("closed", "cancelled")
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
    now: datetime
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
    data = sorted(values)
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


def _seconds_array(session: AsyncSession, column: Any) -> Any:
    """All values of a column in the group as a JSON array (NULLs dropped in Python)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.json_agg(column)
    return func.json_group_array(column)


def _numbers(raw: Any) -> list[float]:
    values = json.loads(raw) if isinstance(raw, str | bytes) else (raw or [])
    return [float(v) for v in values if v is not None]


def _count(condition: ColumnElement[bool]) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _is_open() -> ColumnElement[bool]:
    return Ticket.status.not_in(FINAL)


def apply_filters(query: Select[Any], filters: BoardFilters) -> Select[Any]:
    if filters.queue:
        query = query.where(Ticket.queue == filters.queue)
    if filters.kind:
        query = query.where(Ticket.kind == filters.kind)
    if filters.reason:
        query = query.where(or_(Ticket.reason_code == filters.reason, Ticket.reason_code.like(f"{filters.reason}.%")))
    if filters.session:
        query = query.where(Ticket.order_id.in_(select(Order.id).where(Order.live_session_id == filters.session)))
    return query


def _queue_label(key: str | None, name_zh: str | None, name_en: str | None) -> str:
    if key is None:
        return i18n.gettext("No queue (decided automatically)")
    name = name_zh if i18n.get_locale() == "zh_CN" else name_en
    return name or key


# -- the closure report ------------------------------------------------------------------------


def _group_columns(group: str) -> tuple[list[Any], list[Any]]:
    """(key column, label column) for the SELECT, and the joins they need."""
    first_item = (
        select(TicketItem.ticket_id, func.min(TicketItem.id).label("item_id")).group_by(TicketItem.ticket_id).subquery()
    )
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
            (first_item, first_item.c.ticket_id == Ticket.id),
            (TicketItem, TicketItem.id == first_item.c.item_id),
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


async def closure_report(session: AsyncSession, start: datetime, end: datetime, group: str = "none",
                         filters: BoardFilters | None = None) -> ClosureReport:
    """Tickets closed in [start, end) — cancelled ones are not closures — per group: closed, closed
    within target, rate, median / p90 resolution and first-response merchant time, breaches.

    A breach is a closed ticket over its resolution target: closed late, or a breach warning was
    recorded on its resolution clock (e.g. before a reopen)."""
    if group not in GROUPS:
        raise ValueError(f"group must be one of {', '.join(GROUPS)}")
    start, end = ensure_utc(start), ensure_utc(end)
    keys, joins = _group_columns(group)
    breach_event = exists().where(SlaEvent.ticket_id == Ticket.id, SlaEvent.metric == "resolution", SlaEvent.event == "breach")
    query = select(
        *keys,
        func.count(Ticket.id),
        _count(Ticket.resolution_met.is_(True)),
        _count(or_(Ticket.resolution_met.is_(False), breach_event)),
        _count(Ticket.first_response_met.is_(False)),
        _seconds_array(session, Ticket.resolution_seconds),
        _seconds_array(session, Ticket.first_response_seconds),
    ).select_from(Ticket)
    for target, on in joins:
        query = query.outerjoin(target, on)
    query = query.where(Ticket.status == "closed", Ticket.closed_at >= start, Ticket.closed_at < end)
    query = apply_filters(query, filters or BoardFilters())
    if keys:
        query = query.group_by(*keys)
    rows: list[ReportRow] = []
    all_resolution: list[float] = []
    all_first: list[float] = []
    for row in (await session.execute(query)).all():
        values = tuple(row[: len(keys)])
        closed, met, breaches, fr_breaches, res_raw, fr_raw = row[len(keys):]
        if not closed:
            continue  # "none" over an empty period still answers one row of NULLs
        resolution, first = _numbers(res_raw), _numbers(fr_raw)
        all_resolution += resolution
        all_first += first
        key, name = _group_label(group, values)
        rows.append(_row(key, name, int(closed), int(met), int(breaches), int(fr_breaches), resolution, first))
    rows.sort(key=lambda r: (-r.closed, r.label))
    total = _row(None, i18n.gettext("All tickets"), sum(r.closed for r in rows), sum(r.met for r in rows),
                 sum(r.breaches for r in rows), sum(r.first_response_breaches for r in rows), all_resolution, all_first)
    return ClosureReport(start=start, end=end, group=group, target_rate=TARGET_RATE, rows=rows, total=total)


def _row(key: str | None, name: str, closed: int, met: int, breaches: int, fr_breaches: int,
         resolution: list[float], first: list[float]) -> ReportRow:
    return ReportRow(
        key=key, label=name, closed=closed, met=met, rate=rate(met, closed),
        resolution_median_seconds=percentile(resolution, 0.5), resolution_p90_seconds=percentile(resolution, 0.9),
        first_response_median_seconds=percentile(first, 0.5), first_response_p90_seconds=percentile(first, 0.9),
        breaches=breaches, first_response_breaches=fr_breaches,
    )


# -- the board ---------------------------------------------------------------------------------


async def board(session: AsyncSession, now: datetime, filters: BoardFilters | None = None, *,
                zone: ZoneInfo | None = None) -> Board:
    filters = filters or BoardFilters()
    zone = zone or ZoneInfo("Asia/Shanghai")
    now = ensure_utc(now)
    buckets, paused, open_total = await _buckets(session, now, filters)
    closure, trend = await _closure_windows(session, now, filters, zone)
    return Board(
        now=now, filters=filters, open_total=open_total, buckets=buckets, paused=paused,
        at_risk=await _at_risk(session, now, filters),
        first_response=await _first_response(session, now, filters),
        agents=await _agent_load(session, now, filters),
        queues=await _queue_load(session, now, filters),
        closure=closure,
        trend=trend,
    )


async def _buckets(session: AsyncSession, now: datetime, filters: BoardFilters) -> tuple[list[Bucket], int, int]:
    due = Ticket.sla_due_at
    columns = [func.count(Ticket.id), _count(due.is_(None))]
    lower: datetime | None = None
    for _, hours in BUCKETS:
        upper = now + timedelta(hours=hours) if hours is not None else None
        conditions = [due.is_not(None)]
        if lower is not None:
            conditions.append(due >= lower)
        if upper is not None:
            conditions.append(due < upper)
        columns.append(_count(and_(*conditions)))
        lower = upper
    query = apply_filters(select(*columns).where(_is_open()), filters)
    row = (await session.execute(query)).one()
    total, paused, *counts = (int(v or 0) for v in row)
    return [Bucket(key=key, count=n) for (key, _), n in zip(BUCKETS, counts)], paused, total


async def _at_risk(session: AsyncSession, now: datetime, filters: BoardFilters) -> list[AtRiskTicket]:
    query = (
        select(Ticket.id, Ticket.number, Ticket.status, Ticket.kind, Ticket.reason_code, Ticket.queue, Ticket.priority,
               Ticket.assignee_id, User.display_name, Ticket.sla_due_at)
        .outerjoin(User, User.id == Ticket.assignee_id)
        .where(_is_open(), Ticket.sla_due_at.is_not(None), Ticket.sla_due_at < now + timedelta(hours=AT_RISK_HOURS))
        .order_by(Ticket.sla_due_at, Ticket.id)
        .limit(AT_RISK_LIMIT)
    )
    rows = (await session.execute(apply_filters(query, filters))).all()
    return [
        AtRiskTicket(id=r[0], number=r[1], status=r[2], kind=r[3], reason_code=r[4], queue=r[5], priority=r[6],
                     assignee_id=r[7], assignee_name=r[8], due_at=r[9], seconds_left=(ensure_utc(r[9]) - now).total_seconds())
        for r in rows
    ]


async def _first_response(session: AsyncSession, now: datetime, filters: BoardFilters) -> FirstResponse:
    recent = Ticket.requested_at >= now - timedelta(days=7)
    pending = and_(_is_open(), Ticket.first_response_seconds.is_(None), Ticket.first_response_due_at.is_not(None))
    query = select(
        _count(and_(recent, Ticket.first_response_met.is_not(None))),
        _count(and_(recent, Ticket.first_response_met.is_(True))),
        _count(and_(pending, Ticket.first_response_due_at < now)),
        _count(and_(pending, Ticket.first_response_due_at >= now)),
    ).where(or_(recent, pending))
    answered, met, overdue, waiting = (int(v or 0) for v in (await session.execute(apply_filters(query, filters))).one())
    return FirstResponse(answered=answered, met=met, rate=rate(met, answered), overdue=overdue, waiting=waiting)


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
        .where(_is_open())
        .group_by(Ticket.assignee_id, User.display_name)
    )
    out = []
    for user_id, name, n, breached, at_risk in (await session.execute(apply_filters(query, filters))).all():
        text = (name or f"#{user_id}") if user_id is not None else i18n.gettext("Unassigned")
        out.append(Load(key=str(user_id) if user_id is not None else None, label=text, open=int(n),
                        breached=int(breached), at_risk=int(at_risk)))
    # Unassigned last, then the busiest first.
    return sorted(out, key=lambda x: (x.key is None, -x.open, x.label))


async def _queue_load(session: AsyncSession, now: datetime, filters: BoardFilters) -> list[Load]:
    query = (
        select(Ticket.queue, Queue.name_zh, Queue.name_en, *_load_columns(now))
        .outerjoin(Queue, Queue.key == Ticket.queue)
        .where(_is_open())
        .group_by(Ticket.queue, Queue.name_zh, Queue.name_en)
    )
    out = [
        Load(key=key, label=_queue_label(key, zh, en), open=int(n), breached=int(b), at_risk=int(r))
        for key, zh, en, n, b, r in (await session.execute(apply_filters(query, filters))).all()
    ]
    return sorted(out, key=lambda x: (-x.open, x.label))


async def _closure_windows(session: AsyncSession, now: datetime, filters: BoardFilters,
                           zone: ZoneInfo) -> tuple[list[ClosureWindow], list[TrendDay]]:
    """Closed tickets per local day over the last 30 days (today included); today, 7 and 30 days
    are sums of those days, so the rates and the chart always agree."""
    today = now.astimezone(zone).date()
    bounds = day_bounds(today - timedelta(days=TREND_DAYS - 1), TREND_DAYS, zone)
    day = case(*[(Ticket.closed_at < bounds[i + 1], literal(i)) for i in range(TREND_DAYS)], else_=literal(-1))
    inner = apply_filters(
        select(day.label("day"), Ticket.resolution_met.label("met"))
        .where(Ticket.status == "closed", Ticket.closed_at >= bounds[0], Ticket.closed_at < bounds[-1]),
        filters,
    ).subquery()
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
