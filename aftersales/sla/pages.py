"""The supervisors' SLA pages: the self-refreshing board and the closure report with CSV export."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from litestar import Controller, Request, Response, get
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales import i18n
from aftersales.auth.guards import requires
from aftersales.clock import Clock
from aftersales.errors import InvalidInput
from aftersales.feedback.taxonomy import PARENTS
from aftersales.pages import PAGE_ERRORS, page_auth_error, render
from aftersales.settings import Settings
from aftersales.sla import reports
from aftersales.sla.charts import closure_trend
from aftersales.sla.controllers import csv_response, parse_filters, parse_group, parse_period
from aftersales.tickets.pages import queue_names
from aftersales.tickets.workflow import KINDS

SUPERVISE = ("supervisor", "admin")
BOARD_BLOCKS = ("sla_board",)
REPORT_BLOCKS = ("sla_report",)
FILTER_KEYS = ("queue", "kind", "reason", "session")


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}".rstrip("0").rstrip(".") + " %"


def group_label(group: str) -> str:
    names = {
        "none": i18n.gettext("No grouping"), "queue": i18n.gettext("Queue"), "agent": i18n.gettext("Agent"),
        "kind": i18n.gettext("Kind"), "reason": i18n.gettext("Reason"), "category": i18n.gettext("Category"),
        "session": i18n.gettext("Live session"), "host": i18n.gettext("Host"),
    }
    return names.get(group, group)


def reason_group_label(key: str) -> str:
    names = PARENTS.get(key, {})
    return names.get(i18n.get_locale(), names.get("en", key))


def _query(params: Any, keys: tuple[str, ...]) -> dict[str, str]:
    return {k: params.get(k) for k in keys if params.get(k)}


class SlaPages(Controller):
    include_in_schema = False
    guards = [requires(*SUPERVISE)]
    exception_handlers = PAGE_ERRORS

    @get("/sla")
    async def board(self, request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock, settings: Settings) -> Template:
        """Open tickets by time left, at risk, first responses, load and the 48-hour closure rate.
        The `sla_board` block polls itself every 30 s (htmx), keeping the chosen filters."""
        params = request.query_params
        chosen = _query(params, FILTER_KEYS)
        error = None
        try:
            filters = parse_filters(chosen.get("queue"), chosen.get("kind"), chosen.get("reason"), chosen.get("session"))
        except InvalidInput as exc:
            error, filters, chosen = exc.detail, reports.BoardFilters(), {}
        now = clock.now()
        data = await reports.board(db_session, now, filters, zone=settings.zone)
        query = urlencode(chosen)
        context = {
            "board": data,
            "chosen": chosen,
            "error": error,
            "self_url": "/sla" + (f"?{query}" if query else ""),
            "report_url": "/sla/report" + (f"?{query}" if query else ""),
            "queue_names": await queue_names(db_session),
            "kinds": KINDS,
            "reason_groups": list(PARENTS),
            "reason_group_label": reason_group_label,
            "sessions": (await reports.filter_options(db_session, now))["sessions"],
            "people": await reports.assignable_people(db_session),
            "chart": closure_trend(data.trend, target=data.target_rate),
            "percent": percent,
            "bucket_names": {
                "breached": i18n.gettext("Breached"), "lt2h": i18n.gettext("Due in < 2 h"), "lt6h": i18n.gettext("Due in < 6 h"),
                "lt12h": i18n.gettext("Due in < 12 h"), "more": i18n.gettext("Due later"),
            },
            "window_names": {"today": i18n.gettext("Today"), "7d": i18n.gettext("Last 7 days"), "30d": i18n.gettext("Last 30 days")},
        }
        return render(request, "sla/board.html", context, blocks=BOARD_BLOCKS)

    @get("/sla/report")
    async def report(self, request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock, settings: Settings) -> Template:
        params = request.query_params
        chosen = _query(params, ("from", "to", "group", *FILTER_KEYS))
        error, report = None, None
        try:
            start, end = parse_period(chosen.get("from"), chosen.get("to"), settings.zone, clock.now())
            group = parse_group(chosen.get("group"))
            filters = parse_filters(chosen.get("queue"), chosen.get("kind"), chosen.get("reason"), chosen.get("session"))
            report = await reports.closure_report(db_session, start, end, group, filters)
        except InvalidInput as exc:
            error = exc.detail
        zone = settings.zone
        context = {
            "report": report,
            "error": error,
            "chosen": chosen,
            "date_from": chosen.get("from") or (report.start.astimezone(zone).date().isoformat() if report else ""),
            "date_to": chosen.get("to") or (_last_day(report, zone) if report else ""),
            "groups": reports.GROUPS,
            "group_label": group_label,
            "csv_url": "/sla/report.csv" + (f"?{urlencode(chosen)}" if chosen else ""),
            "percent": percent,
        }
        return render(request, "sla/report.html", context, blocks=REPORT_BLOCKS, status_code=422 if error else 200)

    @get("/sla/report.csv")
    async def report_csv(self, request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock, settings: Settings) -> Response[bytes]:
        """The report as the browser's download (the API has the same at /api/v1/reports/sla.csv)."""
        params = request.query_params
        start, end = parse_period(params.get("from") or None, params.get("to") or None, settings.zone, clock.now())
        filters = parse_filters(params.get("queue"), params.get("kind"), params.get("reason"), params.get("session"))
        report = await reports.closure_report(db_session, start, end, parse_group(params.get("group") or None), filters)
        return csv_response(report, settings.zone)


def _last_day(report: reports.ClosureReport, zone: Any) -> str:
    return (report.end - timedelta(microseconds=1)).astimezone(zone).date().isoformat()
