"""SLA API: the closure report (JSON and CSV), the board's figures, and one ticket's clock audit.

Board and report figures are read-mostly and costly to read (a pass over the open tickets, the
period's closures); they are served from a short-lived in-process cache (`FiguresCache`), shared
with the pages. Each answer carries `generated_at`, when its figures were read.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Awaitable, Callable, Hashable
from datetime import date, datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import msgspec
from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.params import QueryParameter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.auth.guards import READ_TICKETS, requires
from aftersales.clock import Clock, ensure_utc
from aftersales.errors import InvalidInput, NotFound
from aftersales.feedback.taxonomy import PARENTS
from aftersales.i18n import get_locale, gettext
from aftersales.settings import Settings
from aftersales.sla import reports
from aftersales.sla.models import SlaEvent
from aftersales.sla.service import SlaService
from aftersales.tickets.models import Ticket
from aftersales.tickets.workflow import KINDS

# Reports are read by supervisors and admins, and by integrations (BI exports).
READ_REPORTS = ("integration", "supervisor", "admin")
MAX_PERIOD = timedelta(days=3 * 366)
CSV_BOM = "\ufeff"


# -- input parsing, shared with the pages ---------------------------------------------------------


def parse_instant(raw: str, field: str, zone: ZoneInfo, *, end: bool = False) -> datetime:
    """A local day (YYYY-MM-DD; as `to` it includes that whole day) or an ISO 8601 instant
    (naive ones are read in the service's zone)."""
    value = raw.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value) + (timedelta(days=1) if end else timedelta())
            return ensure_utc(datetime.combine(day, time.min, tzinfo=zone))
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput.on(field, "must be a date (YYYY-MM-DD) or an ISO 8601 date-time") from exc
    return ensure_utc(moment if moment.tzinfo else moment.replace(tzinfo=zone))


def parse_period(raw_from: str | None, raw_to: str | None, zone: ZoneInfo, now: datetime) -> tuple[datetime, datetime]:
    """[start, end); by default the last 30 local days, today included."""
    today = ensure_utc(now).astimezone(zone).date()
    end = parse_instant(raw_to, "to", zone, end=True) if raw_to else ensure_utc(datetime.combine(today + timedelta(days=1), time.min, tzinfo=zone))
    start = parse_instant(raw_from, "from", zone) if raw_from else ensure_utc(datetime.combine(today - timedelta(days=29), time.min, tzinfo=zone))
    if end <= start:
        raise InvalidInput.on("to", "must be after from")
    if end - start > MAX_PERIOD:
        raise InvalidInput.on("from", "a period spans at most three years")
    return start, end


def parse_group(raw: str | None) -> str:
    group = raw or "none"
    if group not in reports.GROUPS:
        raise InvalidInput.on("group", f"must be one of {', '.join(reports.GROUPS)}")
    return group


def parse_filters(queue: str | None, kind: str | None, reason: str | None, session: str | None) -> reports.BoardFilters:
    if kind and kind not in KINDS:
        raise InvalidInput.on("kind", f"must be one of {', '.join(KINDS)}")
    if reason and reason not in PARENTS:
        raise InvalidInput.on("reason", f"must be a reason group: {', '.join(PARENTS)}")
    session_id: int | None = None
    if session:
        if not session.isdigit():
            raise InvalidInput.on("session", "must be a live session id")
        session_id = int(session)
    return reports.BoardFilters(queue=queue or None, kind=kind or None, reason=reason or None, session=session_id)


# -- the figures cache ----------------------------------------------------------------------------

T = TypeVar("T")


class FiguresCache:
    """Figures per key for `lifetime` seconds of the app's clock, at most `size` keys.

    A missing or expired entry is read by one request while the others asking for the same key wait
    for it: when an entry expires under load the database does the work once, not once per waiting
    request. A lifetime of 0 (or less) reads every time."""

    def __init__(self, lifetime: float, size: int = 256) -> None:
        self.lifetime = timedelta(seconds=lifetime)
        self.size = size
        self._entries: dict[Hashable, tuple[datetime, Any]] = {}
        self._locks: dict[Hashable, asyncio.Lock] = {}

    async def get(self, key: Hashable, clock: Clock, read: Callable[[datetime], Awaitable[T]]) -> T:
        """The entry under `key`, or `read(now)` stored under it."""
        if self.lifetime <= timedelta(0):
            return await read(clock.now())
        found = self._fresh(key, clock.now())
        if found is not None:
            return found
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                found = self._fresh(key, clock.now())  # read by the request we waited for
                if found is None:
                    now = clock.now()
                    found = await read(now)
                    self._store(key, now, found)
        finally:
            if self._locks.get(key) is lock and not lock.locked():
                del self._locks[key]
        return found

    def _fresh(self, key: Hashable, now: datetime) -> Any:
        entry = self._entries.get(key)
        # A clock set back (tests move time) makes an entry from the "future" stale as well.
        if entry is None or not timedelta(0) <= now - entry[0] < self.lifetime:
            return None
        return entry[1]

    def _store(self, key: Hashable, now: datetime, value: Any) -> None:
        # Expired entries go at once (a rendered board is tens of kB), then the oldest beyond `size`.
        for old in [k for k, (at, _) in self._entries.items() if not timedelta(0) <= now - at < self.lifetime]:
            del self._entries[old]
        self._entries.pop(key, None)
        self._entries[key] = (now, value)
        while len(self._entries) > self.size:
            del self._entries[next(iter(self._entries))]


def figures_cache(state: State) -> FiguresCache:
    """The app's cache, made on first use with the lifetime from the settings."""
    cache = state.get("sla_figures")
    if cache is None:
        cache = state.sla_figures = FiguresCache(state.settings.sla_report_cache_seconds)
    return cache


def _key(kind: str, filters: reports.BoardFilters, *rest: Any) -> Hashable:
    # Figures are the same for every role allowed to read them, but labels come in the reader's language.
    return (kind, msgspec.structs.astuple(filters), get_locale(), *rest)


async def cached_board(state: State, db_session: AsyncSession, clock: Clock, zone: ZoneInfo,
                       filters: reports.BoardFilters) -> reports.Board:
    return await figures_cache(state).get(
        _key("board", filters), clock, lambda now: reports.board(db_session, now, filters, zone=zone))


async def cached_report(state: State, db_session: AsyncSession, clock: Clock, period: tuple[datetime, datetime],
                        group: str, filters: reports.BoardFilters) -> reports.ClosureReport:
    return await figures_cache(state).get(
        _key("report", filters, *period, group), clock,
        lambda now: reports.closure_report(db_session, *period, group, filters, now=now))


# -- CSV ---------------------------------------------------------------------------------------------


def _hours(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds / 3600:.2f}"


def report_csv(report: reports.ClosureReport, zone: ZoneInfo) -> bytes:
    """UTF-8 with a BOM so that Excel shows Chinese names correctly; times in hours."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([
        gettext("Group"), gettext("Key"), gettext("Closed"), gettext("Closed within target"), gettext("Rate"),
        gettext("Median resolution (h)"), gettext("P90 resolution (h)"), gettext("Median first response (h)"),
        gettext("P90 first response (h)"), gettext("Breaches"), gettext("First-response breaches"),
    ])
    for row in [*report.rows, report.total]:
        writer.writerow([
            row.label, row.key if row is not report.total else "", row.closed, row.met,
            "" if row.rate is None else f"{row.rate:.4f}",
            _hours(row.resolution_median_seconds), _hours(row.resolution_p90_seconds),
            _hours(row.first_response_median_seconds), _hours(row.first_response_p90_seconds),
            row.breaches, row.first_response_breaches,
        ])
    return (CSV_BOM + out.getvalue()).encode("utf-8")


def csv_response(report: reports.ClosureReport, zone: ZoneInfo) -> Response[bytes]:
    first = report.start.astimezone(zone).date().isoformat()
    last = (report.end - timedelta(microseconds=1)).astimezone(zone).date().isoformat()
    name = f"sla-report-{first}-{last}-{report.group}.csv"
    return Response(content=report_csv(report, zone), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


# -- API -----------------------------------------------------------------------------------------


class SlaController(Controller):
    path = "/api/v1"
    tags = ["SLA"]

    @get("/reports/sla", guards=[requires(*READ_REPORTS)])
    async def report(
        self, state: State, db_session: AsyncSession, clock: Clock, settings: Settings,
        start: str | None = QueryParameter(name="from", default=None), end: str | None = QueryParameter(name="to", default=None),
        group: str | None = None, queue: str | None = None, kind: str | None = None, reason: str | None = None,
        session: str | None = None,
    ) -> reports.ClosureReport:
        """Tickets closed in [from, to) per group (none, queue, agent, kind, reason, category, session,
        host): closed, closed within target, rate, median / p90 resolution and first-response seconds
        (merchant time), breaches. `from` / `to` take a local day (both inclusive) or an instant.
        `generated_at` says when the figures were read: they may be up to the cache lifetime old
        (AFTERSALES_SLA_REPORT_CACHE_SECONDS, 15 s by default)."""
        period = parse_period(start, end, settings.zone, clock.now())
        return await cached_report(state, db_session, clock, period, parse_group(group), parse_filters(queue, kind, reason, session))

    @get("/reports/sla.csv", guards=[requires(*READ_REPORTS)], media_type="text/csv")
    async def report_as_csv(
        self, state: State, db_session: AsyncSession, clock: Clock, settings: Settings,
        start: str | None = QueryParameter(name="from", default=None), end: str | None = QueryParameter(name="to", default=None),
        group: str | None = None, queue: str | None = None, kind: str | None = None, reason: str | None = None,
        session: str | None = None,
    ) -> Response[bytes]:
        """The same report as CSV (UTF-8 with BOM, hours), one row per group and a total row."""
        period = parse_period(start, end, settings.zone, clock.now())
        report = await cached_report(state, db_session, clock, period, parse_group(group), parse_filters(queue, kind, reason, session))
        return csv_response(report, settings.zone)

    @get("/sla/board", guards=[requires(*READ_REPORTS)])
    async def board(
        self, state: State, db_session: AsyncSession, clock: Clock, settings: Settings,
        queue: str | None = None, kind: str | None = None, reason: str | None = None, session: str | None = None,
    ) -> reports.Board:
        """What the SLA board shows: open tickets by time left, at-risk list, first-response
        compliance, load per agent and queue, 48-hour closure rates and the 30-day trend.
        `generated_at` (= `now`) says when the figures were read: they may be up to the cache
        lifetime old (AFTERSALES_SLA_REPORT_CACHE_SECONDS, 15 s by default)."""
        return await cached_board(state, db_session, clock, settings.zone, parse_filters(queue, kind, reason, session))

    @get("/tickets/{ticket_id:int}/sla", guards=[requires(*READ_TICKETS)])
    async def ticket_sla(self, ticket_id: int, db_session: AsyncSession, clock: Clock) -> dict[str, Any]:
        """One ticket's clock events, the stored figures, and the figures replayed from the events."""
        ticket = await db_session.get(Ticket, ticket_id)
        if ticket is None:
            raise NotFound(f"ticket {ticket_id} does not exist")
        now = clock.now()
        service = SlaService(db_session, clock)
        targets = await service.targets(ticket.sla_policy_id)
        recomputed = await service.recompute(ticket_id, now)
        events = (await db_session.execute(select(SlaEvent).where(SlaEvent.ticket_id == ticket_id).order_by(SlaEvent.id))).scalars()
        elapsed = ticket.sla_elapsed_seconds or 0.0
        if ticket.sla_running_since is not None:
            elapsed += targets.calendar.working_seconds(ticket.sla_running_since, now)
        stored = {
            "resolution_elapsed": elapsed,
            "resolution_running": ticket.sla_running_since is not None,
            "resolution_due_at": ticket.sla_due_at,
            "resolution_met": ticket.resolution_met,
            "resolution_breached": ticket.resolution_breached,
            "resolution_seconds": ticket.resolution_seconds,
            "first_response_due_at": ticket.first_response_due_at,
            "first_response_seconds": ticket.first_response_seconds,
            "first_response_met": ticket.first_response_met,
            "alerts_fired": list(ticket.sla_alerts_fired or []),
            "next_alert_at": ticket.sla_next_alert_at,
        }
        differences = [
            key for key in ("resolution_elapsed", "resolution_running", "resolution_due_at", "resolution_met", "resolution_breached")
            if not _same(stored[key], recomputed[key])
        ]
        if ticket.first_response_met is not None and not _same(ticket.first_response_met, recomputed["first_response_met"]):
            differences.append("first_response_met")
        return {
            "ticket_id": ticket.id,
            "number": ticket.number,
            "status": ticket.status,
            "policy": {"id": targets.policy.id, "name": targets.policy.name, "resolution_minutes": targets.policy.resolution_minutes,
                       "first_response_minutes": targets.policy.first_response_minutes, "calendar": targets.policy.calendar,
                       "pause_statuses": targets.policy.pause_statuses, "warn_at": targets.policy.warn_at},
            "events": [{"id": e.id, "metric": e.metric, "event": e.event, "at": e.at, "cause": e.cause,
                        "threshold": e.threshold} for e in events],
            "stored": stored,
            "recomputed": recomputed,
            "consistent": not differences,
            "differences": differences,
        }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(float(a) - float(b)) < 1.0
    if isinstance(a, datetime) and isinstance(b, datetime):
        return abs((ensure_utc(a) - ensure_utc(b)).total_seconds()) < 1.0
    return a == b
