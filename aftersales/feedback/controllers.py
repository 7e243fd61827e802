"""Feedback HTTP: the JSON API (digests, return-rate analytics, problem products) and the report
pages built on the same figures (digest pages with a printable variant, the analytics page with
CSV export of every table)."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.exceptions import PermissionDeniedException
from litestar.params import Parameter
from litestar.response import Redirect, Template
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales import i18n
from aftersales.auth.guards import current_principal, requires
from aftersales.clock import Clock, ensure_utc
from aftersales.errors import InvalidInput, NotFound
from aftersales.feedback import analytics
from aftersales.feedback.actions import allowed_teams, require_team
from aftersales.feedback.charts import return_rate_trend, weekly_return_rates
from aftersales.feedback.digests import (
    PERIODS, build_digest, find_digest, get_or_generate, last_complete_period, period_complete,
)
from aftersales.feedback.models import Digest, FeedbackRecord
from aftersales.feedback.routing import TEAMS
from aftersales.feedback.stats import ALPHA, MIN_RATIO, MIN_RETURNS, MIN_UNITS
from aftersales.feedback.taxonomy import REASONS, is_known_reason, reason_label
from aftersales.pages import PAGE_ERRORS, render
from aftersales.settings import Settings
from aftersales.sla.controllers import CSV_BOM, parse_instant

READ_FEEDBACK = ("product", "supervisor", "admin")
READ_ANALYTICS = ("integration", "product", "supervisor", "admin")
SUPERVISE = ("supervisor", "admin")
DEFAULT_DAYS = 90
MAX_PERIOD = timedelta(days=3 * 366)
# Tested by default: the overall return rate and the reasons that point at the product itself.
PROBLEM_REASONS: list[str | None] = [None, "quality.defect", "quality.damaged"]
TABLE_ROWS = 25  # rows per table on the page; the CSV has them all


def N_(message: str) -> str:
    return message


ITEM_STATUS_LABELS = {
    "open": N_("Open (new, acknowledged, reopened)"), "all": N_("All"), "new": N_("New"), "acknowledged": N_("Acknowledged"),
    "actioned": N_("Actioned"), "verified": N_("Verified"), "reopened": N_("Reopened"),
}
GROUP_LABELS = {"product": N_("Product"), "category": N_("Reason"), "session": N_("Live session"), "host": N_("Host")}


def fb_status(status: str) -> str:
    text = ITEM_STATUS_LABELS.get(status)
    return i18n.gettext(text) if text else status


def fb_group(group: str) -> str:
    text = GROUP_LABELS.get(group)
    return i18n.gettext(text) if text else group




# -- input ------------------------------------------------------------------------------------------


def analytics_period(raw_from: str | None, raw_to: str | None, zone: ZoneInfo, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of order time; by default the last 90 local days, today included."""
    today = ensure_utc(now).astimezone(zone).date()
    end = parse_instant(raw_to, "to", zone, end=True) if raw_to else ensure_utc(datetime.combine(today + timedelta(days=1), time.min, tzinfo=zone))
    start = (parse_instant(raw_from, "from", zone) if raw_from
             else ensure_utc(datetime.combine(today - timedelta(days=DEFAULT_DAYS - 1), time.min, tzinfo=zone)))
    if end <= start:
        raise InvalidInput.on("to", "must be after from")
    if end - start > MAX_PERIOD:
        raise InvalidInput.on("from", "a period spans at most three years")
    return start, end


def parse_reason(raw: str | None) -> str | None:
    if not raw:
        return None
    if not is_known_reason(raw):
        raise InvalidInput.on("reason", f"unknown reason {raw!r}")
    return raw


def parse_group(raw: str | None) -> str:
    group = raw or "product"
    if group not in analytics.GROUPS:
        raise InvalidInput.on("group", f"must be one of {', '.join(analytics.GROUPS)}")
    return group


def parse_digest_key(team: str, period: str, start: str) -> tuple[str, str, date]:
    if team not in TEAMS:
        raise NotFound(f"no team {team!r}")
    if period not in PERIODS:
        raise InvalidInput.on("period", f"must be one of {', '.join(PERIODS)}")
    try:
        day = date.fromisoformat(start)
    except ValueError as exc:
        raise InvalidInput.on("start", "must be a date (YYYY-MM-DD)") from exc
    if period == "week" and day.weekday() != 0:
        raise InvalidInput.on("start", "a weekly digest starts on a Monday")
    return team, period, day


# -- output -----------------------------------------------------------------------------------------


class DigestOut(msgspec.Struct, kw_only=True):
    id: int
    team: str
    period: str
    period_start: date
    generated_at: datetime
    url: str
    content: dict[str, Any]


def digest_out(d: Digest) -> DigestOut:
    return DigestOut(id=d.id, team=d.team, period=d.period, period_start=d.period_start, generated_at=d.generated_at,
                     url=f"/feedback/digests/{d.team}/{d.period}/{d.period_start}", content=d.content)


def percent(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f} %"


def why_text(f: dict[str, Any]) -> str:
    """A finding's reason in the reader's language (the stored `why` is the English original)."""
    try:
        return i18n.gettext(
            "%(r)s of %(n)s returned = %(rate)s against %(base)s for the rest of the category (×%(ratio)s); p = %(p)s, below the threshold %(t)s",
            r=f["returns"], n=f["units"], rate=percent(f["rate"]), base=percent(f["baseline_rate"]), ratio=f"{f['ratio']:.1f}",
            p=f"{f['p_value']:.2g}", t=f"{f['threshold']:.2g}")
    except (KeyError, TypeError, ValueError):
        return str(f.get("why", ""))


HELPERS = {"fb_status": fb_status, "fb_group": fb_group, "percent": percent, "why_text": why_text}


def group_key_columns(group: str) -> list[str]:
    return {
        "category": [i18n.gettext("Product category")],
        "product": [i18n.gettext("Product id"), i18n.gettext("Product category")],
        "sku": [i18n.gettext("SKU"), i18n.gettext("Product"), i18n.gettext("Product category")],
        "session": [i18n.gettext("Live session"), i18n.gettext("Title"), i18n.gettext("Host")],
        "host": [i18n.gettext("Host")],
    }[group]


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def rates_csv(rows: list[dict[str, Any]], group: str) -> bytes:
    """UTF-8 with a BOM so that Excel shows Chinese names; rates as fractions."""
    out = io.StringIO()
    writer = csv.writer(out)
    name_col = [i18n.gettext("Product")] if group == "product" else []
    writer.writerow([*group_key_columns(group), *name_col, i18n.gettext("Units sold"), i18n.gettext("Amount sold"),
                     i18n.gettext("Units returned"), i18n.gettext("Return rate (units)"), i18n.gettext("Units exchanged"),
                     i18n.gettext("Exchange rate (units)"), i18n.gettext("Amount refunded"), i18n.gettext("Refund rate (amount)"),
                     i18n.gettext("Tickets")])
    for r in rows:
        key = ["" if k is None else k for k in r["key"]]
        names = [r["name"] or ""] if group == "product" else []
        writer.writerow([*key, *names, r["units"], r["amount"], r["returned_units"], _rate(r["return_rate"]), r["exchanged_units"],
                         _rate(r["exchange_rate"]), r["returned_amount"], _rate(r["refund_rate_amount"]), r["tickets"]])
    return (CSV_BOM + out.getvalue()).encode("utf-8")


def problems_csv(findings: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([i18n.gettext("Product id"), i18n.gettext("Product"), i18n.gettext("Product category"), i18n.gettext("Reason"),
                     i18n.gettext("Units sold"), i18n.gettext("Units returned"), i18n.gettext("Return rate (units)"),
                     i18n.gettext("Category baseline"), i18n.gettext("Ratio"), i18n.gettext("p-value"), i18n.gettext("Threshold"),
                     i18n.gettext("Flagged"), i18n.gettext("Why")])
    for f in findings:
        writer.writerow([f["product_id"], f["product_name"], f["category"], f["reason"] or "", f["units"], f["returns"],
                         _rate(f["rate"]), _rate(f["baseline_rate"]), f["ratio"], f"{f['p_value']:.3g}", f"{f['threshold']:.3g}",
                         "1" if f["flagged"] else "0", f["why"]])
    return (CSV_BOM + out.getvalue()).encode("utf-8")


def csv_download(content: bytes, name: str) -> Response[bytes]:
    return Response(content=content, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _span_name(start: datetime, end: datetime, zone: ZoneInfo) -> str:
    last = (end - timedelta(microseconds=1)).astimezone(zone).date()
    return f"{start.astimezone(zone).date()}-{last}"


async def suggestion_accuracy(session: AsyncSession, start: datetime | None = None, end: datetime | None = None) -> dict[str, Any]:
    """How often agents kept the text suggestion: over records an agent confirmed (in the period,
    by confirmation time), accuracy = not corrected / confirmed."""
    conditions = [FeedbackRecord.confirmed_at.is_not(None)]
    if start is not None and end is not None:
        conditions += [FeedbackRecord.confirmed_at >= start, FeedbackRecord.confirmed_at < end]
    confirmed = int(await session.scalar(select(func.count()).select_from(FeedbackRecord).where(*conditions)) or 0)
    corrected = int(await session.scalar(
        select(func.count()).select_from(FeedbackRecord).where(*conditions, FeedbackRecord.corrected.is_(True))
    ) or 0)
    confusions = [
        {"suggested": s, "chosen": c, "count": int(n)}
        for s, c, n in (await session.execute(
            select(FeedbackRecord.suggested_category, FeedbackRecord.category, func.count())
            .where(*conditions, FeedbackRecord.corrected.is_(True))
            .group_by(FeedbackRecord.suggested_category, FeedbackRecord.category)
            .order_by(func.count().desc(), FeedbackRecord.suggested_category).limit(10)
        )).all()
    ]
    return {"confirmed": confirmed, "corrected": corrected,
            "accuracy": round((confirmed - corrected) / confirmed, 4) if confirmed else None, "confusions": confusions}


# -- API ----------------------------------------------------------------------------------------------


class FeedbackController(Controller):
    path = "/api/v1/feedback"
    tags = ["feedback"]

    @get("/digests", guards=[requires(*READ_FEEDBACK)])
    async def list_digests(self, request: Request[Any, Any, Any], db_session: AsyncSession, team: str | None = None,
                           limit: int = Parameter(default=30, ge=1, le=200)) -> list[DigestOut]:
        """Recent digests of the caller's teams (or one team), newest first."""
        principal = current_principal(request)
        teams = allowed_teams(principal)
        if team is not None:
            require_team(principal, team)
            teams = [team]
        query = select(Digest).where(Digest.team.in_(teams)).order_by(Digest.period_start.desc(), Digest.team, Digest.period).limit(limit)
        return [digest_out(d) for d in (await db_session.execute(query)).scalars()]

    @get("/digests/{team:str}/{period:str}/{start:str}", guards=[requires(*READ_FEEDBACK)])
    async def get_digest(self, request: Request[Any, Any, Any], team: str, period: str, start: str, db_session: AsyncSession) -> DigestOut:
        """A generated digest (404 until the worker or a POST generated it)."""
        team, period, day = parse_digest_key(team, period, start)
        require_team(current_principal(request), team)
        digest = await find_digest(db_session, team, period, day)
        if digest is None:
            raise NotFound(f"no {period} digest for {team} starting {day}: POST to generate it once the period is over")
        return digest_out(digest)

    @post("/digests/{team:str}/{period:str}/{start:str}", guards=[requires(*SUPERVISE)], status_code=200)
    async def generate(self, request: Request[Any, Any, Any], team: str, period: str, start: str, db_session: AsyncSession,
                       clock: Clock, settings: Settings) -> Response[DigestOut]:
        """Generate on demand, exactly once: 201 with the new digest, 200 with the existing one."""
        team, period, day = parse_digest_key(team, period, start)
        digest, created = await get_or_generate(db_session, request.app.state.read_sessionmaker, clock, settings.zone,
                                                team, period, day)
        return Response(content=digest_out(digest), status_code=201 if created else 200)

    @get("/analytics", guards=[requires(*READ_ANALYTICS)])
    async def rates(
        self, db_session: AsyncSession, clock: Clock, settings: Settings,
        start: str | None = Parameter(query="from", default=None), end: str | None = Parameter(query="to", default=None),
        group: str | None = None, reason: str | None = None, format: str | None = None,  # noqa: A002
    ) -> Any:
        """Return / exchange / refund rates (units and amount) of orders placed in [from, to) per
        category, product, sku, session or host, optionally for one reason. `format=csv` for CSV."""
        period = analytics_period(start, end, settings.zone, clock.now())
        chosen_group, chosen_reason = parse_group(group), parse_reason(reason)
        rows = await analytics.return_rates(db_session, *period, chosen_group, reason=chosen_reason, limit=100_000)
        if format == "csv":
            return csv_download(rates_csv(rows, chosen_group), f"return-rates-{chosen_group}-{_span_name(*period, settings.zone)}.csv")
        return {"group": chosen_group, "from": period[0], "to": period[1], "reason": chosen_reason, "rows": rows}

    @get("/problem-products", guards=[requires(*READ_ANALYTICS)])
    async def problem_products(
        self, db_session: AsyncSession, clock: Clock, settings: Settings,
        start: str | None = Parameter(query="from", default=None), end: str | None = Parameter(query="to", default=None),
        reason: str | None = None, all: bool = False, format: str | None = None,  # noqa: A002
    ) -> Any:
        """Products whose return rate (overall, or for a quality reason) is significantly above their
        category's: one-sided exact binomial test, Bonferroni over every test of the run.
        `all=true` lists every tested product, not only the flagged ones."""
        period = analytics_period(start, end, settings.zone, clock.now())
        reasons = [parse_reason(reason)] if reason else PROBLEM_REASONS
        findings = await analytics.problem_products(db_session, *period, reasons=reasons)
        shown = findings if all else [f for f in findings if f["flagged"]]
        if format == "csv":
            return csv_download(problems_csv(shown), f"problem-products-{_span_name(*period, settings.zone)}.csv")
        return {"from": period[0], "to": period[1], "reasons": reasons, "tested": len(findings), "family": _family(findings),
                "threshold": findings[0]["threshold"] if findings else None, "products": shown}


# -- report pages ---------------------------------------------------------------------------------------


class FeedbackReportPages(Controller):
    include_in_schema = False
    guards = [requires(*READ_FEEDBACK)]
    exception_handlers = PAGE_ERRORS

    @get("/feedback/digests")
    async def digests(self, request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock, settings: Settings,
                      team: str | None = None) -> Template:
        teams = allowed_teams(current_principal(request))
        chosen = team if team in teams else (teams[0] if teams else None)
        rows = list((await db_session.execute(
            select(Digest).where(Digest.team == chosen).order_by(Digest.period_start.desc(), Digest.period).limit(40)
        )).scalars()) if chosen else []
        now = clock.now()
        latest = {p: last_complete_period(p, now, settings.zone) for p in PERIODS}
        context = {"teams": teams, "team": chosen, "digests": rows, "latest": latest, "periods": list(PERIODS),
                   "today": now.astimezone(settings.zone).date()}
        return render(request, "feedback/digests.html", context, blocks=("digest_list",))

    @get("/feedback/digests/open")
    async def open_digest(self, team: str = "", period: str = "day", start: str = "") -> Redirect:
        """The list page's form: go to the digest's own address."""
        return Redirect(f"/feedback/digests/{team}/{period}/{start}", status_code=303)

    @get("/feedback/digests/{team:str}/{period:str}/{start:str}")
    async def digest(self, request: Request[Any, Any, Any], team: str, period: str, start: str, db_session: AsyncSession,
                     clock: Clock, settings: Settings) -> Template:
        principal = current_principal(request)
        try:
            team, period, day = parse_digest_key(team, period, start)
        except (NotFound, InvalidInput) as exc:
            return render(request, "feedback/digest.html", {"error": exc.detail, "digest": None, "content": None, "team": team,
                                                            "period": period, "day": None, **HELPERS}, status_code=exc.status_code)
        if team not in allowed_teams(principal):
            raise PermissionDeniedException(f"not a member of team {team!r}")
        zone = settings.zone
        preview = not period_complete(period, day, zone, clock.now())
        if preview:
            digest, content = None, await build_digest(db_session, team, period, day, zone)
        else:
            digest, _ = await get_or_generate(db_session, request.app.state.read_sessionmaker, clock, zone, team, period, day)
            content = digest.content
        span = PERIODS[period]
        context = {
            "error": None, "digest": digest, "content": content, "preview": preview, "team": team, "period": period, "day": day,
            "previous_url": f"/feedback/digests/{team}/{period}/{day - span}",
            "next_url": f"/feedback/digests/{team}/{period}/{day + span}",
            "json_url": f"/api/v1/feedback/digests/{team}/{period}/{day}",
            "print_url": f"/feedback/digests/{team}/{period}/{day}?print=1",
            "last_day": day + span - timedelta(days=1), **HELPERS,
        }
        if request.query_params.get("print") == "1":
            return render(request, "feedback/digest_print.html", context)
        return render(request, "feedback/digest.html", context, blocks=("digest",))

    @get("/feedback/analytics")
    async def analytics_page(self, request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock, settings: Settings) -> Any:
        params = request.query_params
        chosen = {k: params.get(k, "") for k in ("from", "to", "reason")}
        zone = settings.zone
        try:
            start, end = analytics_period(chosen["from"] or None, chosen["to"] or None, zone, clock.now())
            reason = parse_reason(chosen["reason"] or None)
        except InvalidInput as exc:
            context = {"error": exc.detail, "chosen": chosen, "reasons": list(REASONS), "date_from": chosen["from"],
                       "date_to": chosen["to"]}
            return render(request, "feedback/analytics.html", context, blocks=("analytics_body",), status_code=422)
        table = params.get("table", "")
        if params.get("format") == "csv":
            span = _span_name(start, end, zone)
            if table == "problems":
                findings = await analytics.problem_products(db_session, start, end, reasons=[reason] if reason else PROBLEM_REASONS)
                return csv_download(problems_csv(findings), f"problem-products-{span}.csv")
            group = parse_group(table or None)
            rows = await analytics.return_rates(db_session, start, end, group, reason=reason, limit=100_000)
            return csv_download(rates_csv(rows, group), f"return-rates-{group}-{span}.csv")
        tables = []
        totals = {"units": 0, "returned": 0, "exchanged": 0, "rate": None}
        for group in analytics.GROUPS:
            rows = await analytics.return_rates(db_session, start, end, group, reason=reason, limit=100_000)
            if group == "category":
                totals.update(units=sum(r["units"] for r in rows), returned=sum(r["returned_units"] for r in rows),
                              exchanged=sum(r["exchanged_units"] for r in rows))
                totals["rate"] = totals["returned"] / totals["units"] if totals["units"] else None
            many = group in ("product", "sku", "session")
            shown = [r for r in rows if r["units"] >= MIN_UNITS] if many else rows
            tables.append({"group": group, "rows": shown[:TABLE_ROWS], "total_rows": len(rows), "filtered": many,
                           "csv_url": _query_url("/feedback/analytics", {**chosen, "format": "csv", "table": group})})
        findings = await analytics.problem_products(db_session, start, end, reasons=[reason] if reason else PROBLEM_REASONS)
        points = await weekly_return_rates(db_session, start, end, reason=reason)
        context = {
            "error": None, "chosen": chosen, "reasons": list(REASONS), "reason": reason, "start": start, "end": end,
            "date_from": chosen["from"] or start.astimezone(zone).date().isoformat(),
            "date_to": chosen["to"] or (end - timedelta(days=1)).astimezone(zone).date().isoformat(),
            "tables": tables, "totals": totals,
            "chart": return_rate_trend(points, zone), "weeks": points,
            "flagged": [f for f in findings if f["flagged"]], "tested": _family(findings),
            "threshold": findings[0]["threshold"] if findings else None,
            "problem_reasons": [reason] if reason else PROBLEM_REASONS,
            "method": {"alpha": ALPHA, "min_units": MIN_UNITS, "min_returns": MIN_RETURNS, "min_ratio": MIN_RATIO},
            "problems_csv_url": _query_url("/feedback/analytics", {**chosen, "format": "csv", "table": "problems"}),
            "accuracy": await suggestion_accuracy(db_session, start, end),
            "accuracy_all": await suggestion_accuracy(db_session),
            "group_title": group_title, "reason_text": reason_text, **HELPERS,
        }
        return render(request, "feedback/analytics.html", context, blocks=("analytics_body",))


def _family(findings: list[dict[str, Any]]) -> int:
    """How many product × reason pairs the Bonferroni correction divided alpha by."""
    return round(ALPHA / findings[0]["threshold"]) if findings else 0


def group_title(group: str) -> str:
    return {
        "category": i18n.gettext("By product category"), "product": i18n.gettext("By product"), "sku": i18n.gettext("By SKU"),
        "session": i18n.gettext("By live session"), "host": i18n.gettext("By host"),
    }[group]


def reason_text(code: str | None) -> str:
    return i18n.gettext("All reasons") if code is None else reason_label(code, i18n.get_locale())


def _query_url(path: str, params: dict[str, str]) -> str:
    kept = {k: v for k, v in params.items() if v}
    return path + (f"?{urlencode(kept)}" if kept else "")


__all__ = ["FeedbackController", "FeedbackReportPages"]
