"""The supervisors' SLA pages: the self-refreshing board and the closure report with CSV export."""

from __future__ import annotations

from datetime import datetime, timedelta
from html import escape as html_escape
from typing import Any
from urllib.parse import urlencode

from litestar import Controller, Request, Response, get
from litestar.response import Template
from litestar.utils.scope.state import ScopeState
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales import i18n
from aftersales.auth.guards import requires
from aftersales.clock import Clock
from aftersales.errors import InvalidInput
from aftersales.feedback.taxonomy import PARENTS
from aftersales.pages import PAGE_ERRORS, is_htmx, render
from aftersales.settings import Settings
from aftersales.sla import reports
from aftersales.sla.charts import closure_trend
from aftersales.sla.controllers import cached_board, cached_report, csv_response, figures_cache, parse_filters, parse_group, parse_period
from aftersales.tickets.pages import queue_names
from aftersales.tickets.workflow import KINDS
from aftersales.template_i18n import localized

SUPERVISE = ("supervisor", "admin")
BOARD_BLOCKS = ("sla_board",)
# Stands for the reader's own CSRF field in the shared, cached board HTML.
CSRF_SLOT = "<!--sla-csrf-input-->"
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
        The `sla_board` block polls itself every 30 s (htmx), keeping the chosen filters.

        Figures, filter choices and both rendered parts come from the figures cache: every supervisor
        polling the same filters within its lifetime gets the same HTML, with their own CSRF field."""
        params = request.query_params
        chosen = _query(params, FILTER_KEYS)
        error = None
        try:
            filters = parse_filters(chosen.get("queue"), chosen.get("kind"), chosen.get("reason"), chosen.get("session"))
        except InvalidInput as exc:
            error, filters, chosen = exc.detail, reports.BoardFilters(), {}
        cache, locale, query = figures_cache(request.app.state), i18n.get_locale(), urlencode(chosen)
        data = await cached_board(request.app.state, db_session, clock, settings.zone, filters)
        choices = await cache.get(("board_choices", locale), clock, lambda now: _board_choices(db_session, now))
        # Each part is rendered once per cached input (its read time is in the key) and language.
        panels = await cache.get(("board_panels", locale, query, error, data.generated_at), clock, lambda now: _render(
            request, "sla/board_panels.html", _panels_context(data, choices, error, query)))
        polled = is_htmx(request) and request.headers.get("hx-target") in BOARD_BLOCKS  # only the panels are sent
        heading = "" if polled else await cache.get(("board_filters", locale, query, choices["read_at"]), clock, lambda now: _render(
            request, "sla/board_filters.html", _filters_context(chosen, choices, query)))
        context = {
            "filters_html": Markup(heading),
            "board_html": Markup(panels.replace(CSRF_SLOT, _csrf_input(request))),
        }
        return render(request, "sla/board.html", context, blocks=BOARD_BLOCKS)

    @get("/sla/report")
    async def report(self, request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock, settings: Settings) -> Template:
        params = request.query_params
        chosen = _query(params, ("from", "to", "group", *FILTER_KEYS))
        error, report = None, None
        try:
            period = parse_period(chosen.get("from"), chosen.get("to"), settings.zone, clock.now())
            group = parse_group(chosen.get("group"))
            filters = parse_filters(chosen.get("queue"), chosen.get("kind"), chosen.get("reason"), chosen.get("session"))
            report = await cached_report(request.app.state, db_session, clock, period, group, filters)
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
        period = parse_period(params.get("from") or None, params.get("to") or None, settings.zone, clock.now())
        filters = parse_filters(params.get("queue"), params.get("kind"), params.get("reason"), params.get("session"))
        report = await cached_report(request.app.state, db_session, clock, period, parse_group(params.get("group") or None), filters)
        return csv_response(report, settings.zone)


async def _render(request: Request[Any, Any, Any], template: str, context: dict[str, Any]) -> str:
    """A shared part of a page as HTML (the page's own template only places it)."""
    engine = request.app.template_engine.engine  # type: ignore[union-attr]
    return str(engine.get_template(localized(template)).render(**context))


def _panels_context(data: reports.Board, choices: dict[str, Any], error: str | None, query: str) -> dict[str, Any]:
    return {
        "board": data,
        "error": error,
        "self_url": "/sla" + (f"?{query}" if query else ""),
        "queue_names": choices["queue_names"],
        "people": choices["people"],
        "csrf_input": Markup(CSRF_SLOT),
        "chart": closure_trend(data.trend, target=data.target_rate),
        "percent": percent,
        "bucket_names": {
            "breached": i18n.gettext("Breached"), "lt2h": i18n.gettext("Due in < 2 h"), "lt6h": i18n.gettext("Due in < 6 h"),
            "lt12h": i18n.gettext("Due in < 12 h"), "more": i18n.gettext("Due later"),
        },
        "window_names": {"today": i18n.gettext("Today"), "7d": i18n.gettext("Last 7 days"), "30d": i18n.gettext("Last 30 days")},
    }


def _filters_context(chosen: dict[str, str], choices: dict[str, Any], query: str) -> dict[str, Any]:
    return {
        "chosen": chosen,
        "report_url": "/sla/report" + (f"?{query}" if query else ""),
        "queue_names": choices["queue_names"],
        "sessions": choices["sessions"],
        "kinds": KINDS,
        "reason_groups": list(PARENTS),
        "reason_group_label": reason_group_label,
    }


def _csrf_input(request: Request[Any, Any, Any]) -> str:
    """The hidden CSRF field exactly as Litestar's template responses make it."""
    token = ScopeState.from_scope(request.scope).csrf_token or ""
    return f'<input type="hidden" name="_csrf_token" value="{html_escape(token)}" />'


async def _board_choices(db_session: AsyncSession, now: datetime) -> dict[str, Any]:
    """What the board's filters and reassign controls offer: queues, recent live sessions, people."""
    return {
        "read_at": now,
        "queue_names": await queue_names(db_session),
        "sessions": (await reports.filter_options(db_session, now))["sessions"],
        "people": await reports.assignable_people(db_session),
    }


def _last_day(report: reports.ClosureReport, zone: Any) -> str:
    return (report.end - timedelta(microseconds=1)).astimezone(zone).date().isoformat()
