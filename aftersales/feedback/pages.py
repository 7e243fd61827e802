"""The product teams' pages: the team inbox (filter, search, group, acknowledge, record an action),
the action page that closes the loop, the supervisors' overview, and the agent's confirm / correct
of a ticket's feedback category."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any
from urllib.parse import parse_qsl, urlencode

from litestar import Controller, Request, get, post
from litestar.exceptions import PermissionDeniedException
from litestar.response import Redirect, Template
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales import i18n
from aftersales.auth.guards import WORK_TICKETS, current_principal, requires
from aftersales.auth.principal import Principal
from aftersales.clock import Clock
from aftersales.errors import DomainError, Forbidden, InvalidInput, NotFound
from aftersales.feedback import inbox
from aftersales.feedback.actions import FeedbackActions, allowed_teams, day_start
from aftersales.feedback.controllers import HELPERS
from aftersales.feedback.models import FeedbackItem, FeedbackRecord
from aftersales.feedback.routing import TEAMS
from aftersales.feedback.service import FeedbackService
from aftersales.feedback.taxonomy import REASONS, is_known_reason
from aftersales.pages import PAGE_ERRORS, is_htmx, render
from aftersales.settings import Settings
from aftersales.tickets.models import Ticket

READ_FEEDBACK = ("product", "supervisor", "admin")
SUPERVISE = ("supervisor", "admin")
PAGE_SIZE = 50
INBOX_BLOCKS = ("feedback_body", "inbox")
FILTER_KEYS = ("status", "category", "product", "session", "host", "from", "to", "q", "group")


class FeedbackPages(Controller):
    include_in_schema = False
    guards = [requires(*READ_FEEDBACK)]
    exception_handlers = PAGE_ERRORS

    @get("/feedback")
    async def inbox(self, request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock, settings: Settings) -> Template:
        """The chosen team's items: filters, grouping with counts, paging; `inbox` is the htmx block."""
        params = {k: v for k, v in request.query_params.items()}
        context = await _inbox_context(params, current_principal(request), db_session, clock, settings)
        return render(request, "feedback/inbox.html", context, blocks=INBOX_BLOCKS)

    @post("/feedback/acknowledge")
    async def acknowledge(self, request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock, settings: Settings) -> Template | Redirect:
        """Acknowledge the selected items (new or reopened → acknowledged)."""
        form = await request.form()
        back = _back_params(str(form.get("back", "")))
        principal = current_principal(request)
        error, status_code, moved = None, 200, 0
        try:
            ids = [int(v) for v in form.getall("item") if str(v).isdigit()] if hasattr(form, "getall") else []
            moved = await FeedbackActions(db_session, clock, settings.zone).acknowledge(ids, principal)
            await db_session.commit()
        except Forbidden as exc:
            await db_session.rollback()
            raise PermissionDeniedException(exc.detail) from exc
        except DomainError as exc:
            await db_session.rollback()
            error, status_code = exc.detail, exc.status_code
        htmx = is_htmx(request)
        if error is None and not htmx:
            return Redirect("/feedback?" + urlencode(back), status_code=303)
        context = await _inbox_context(back, principal, db_session, clock, settings)
        context["error"] = error
        context["notice"] = None if error else i18n.gettext("%(n)s items acknowledged.", n=moved)
        return render(request, "feedback/inbox.html", context, blocks=INBOX_BLOCKS, status_code=status_code,
                      block="inbox" if htmx else None)

    @post("/feedback/actions")
    async def record_action(self, request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock, settings: Settings) -> Template | Redirect:
        """Record what the team did about a product; its open items move to actioned."""
        form = await request.form()
        principal = current_principal(request)
        team = str(form.get("team", ""))
        try:
            raw_date = str(form.get("action_date", "")).strip()
            try:
                action_date = date.fromisoformat(raw_date) if raw_date else clock.now().astimezone(settings.zone).date()
            except ValueError as exc:
                raise InvalidInput.on("action_date", "must be a date (YYYY-MM-DD)") from exc
            reason = str(form.get("reason", "")).strip() or None
            action, _ = await FeedbackActions(db_session, clock, settings.zone).record_action(
                team=team, product_id=str(form.get("product_id", "")).strip(), reason=reason,
                description=str(form.get("description", "")), action_date=action_date, principal=principal,
            )
            await db_session.commit()
        except (Forbidden, NotFound) as exc:
            await db_session.rollback()
            raise PermissionDeniedException(exc.detail) from exc
        except DomainError as exc:
            await db_session.rollback()
            context = await _inbox_context({"team": team}, principal, db_session, clock, settings)
            context["action_error"] = exc.detail
            context["action_form"] = {k: str(form.get(k, "")) for k in ("product_id", "reason", "description", "action_date")}
            return render(request, "feedback/inbox.html", context, blocks=INBOX_BLOCKS, status_code=exc.status_code)
        return Redirect(f"/feedback/actions/{action.id}", status_code=303)

    @get("/feedback/actions/{action_id:int}")
    async def action(self, request: Request[Any, Any, Any], action_id: int, db_session: AsyncSession, clock: Clock, settings: Settings) -> Template:
        """The action and the product's return rate for its reason before vs after the action date."""
        context = await _action_context(action_id, current_principal(request), db_session, clock, settings)
        return render(request, "feedback/action.html", context, blocks=("action_outcome",))

    @post("/feedback/actions/{action_id:int}/outcome")
    async def decide(self, request: Request[Any, Any, Any], action_id: int, db_session: AsyncSession, clock: Clock,
                     settings: Settings) -> Template | Redirect:
        """The team confirms the outcome: verified (the rate fell) or reopened."""
        form = await request.form()
        principal = current_principal(request)
        error, status_code = None, 200
        try:
            await FeedbackActions(db_session, clock, settings.zone).decide(action_id, str(form.get("outcome", "")), principal,
                                                                            str(form.get("note", "")))
            await db_session.commit()
        except (Forbidden, NotFound) as exc:
            await db_session.rollback()
            raise PermissionDeniedException(exc.detail) from exc
        except DomainError as exc:
            await db_session.rollback()
            error, status_code = exc.detail, exc.status_code
        htmx = is_htmx(request)
        if error is None and not htmx:
            return Redirect(f"/feedback/actions/{action_id}", status_code=303)
        context = await _action_context(action_id, principal, db_session, clock, settings)
        context["error"] = error
        return render(request, "feedback/action.html", context, blocks=("action_outcome",), status_code=status_code,
                      block="action_outcome" if htmx else None)

    @get("/feedback/overview", guards=[requires(*SUPERVISE)])
    async def overview(self, request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock) -> Template:
        """Supervisors: open items per team and how long they have been waiting."""
        now = clock.now()
        rows = await inbox.team_status(db_session, list(TEAMS), now)
        oldest = list((await db_session.execute(
            select(FeedbackItem).where(FeedbackItem.status == "new").order_by(FeedbackItem.created_at, FeedbackItem.id).limit(10)
        )).scalars())
        context = {"rows": rows, "oldest": oldest, "now": now, "statuses": ("new", "acknowledged", "reopened", "actioned", "verified"),
                   **HELPERS}
        return render(request, "feedback/overview.html", context, blocks=("overview_body",))


class TicketFeedbackPages(Controller):
    """The agent's side: confirm or correct a ticket's feedback category (kept to measure accuracy)."""

    include_in_schema = False
    guards = [requires(*WORK_TICKETS)]
    exception_handlers = PAGE_ERRORS

    @get("/tickets/{ticket_id:int}/feedback")
    async def edit(self, request: Request[Any, Any, Any], ticket_id: int, db_session: AsyncSession) -> Template:
        context = await _record_context(db_session, ticket_id)
        context["editing"] = True
        if is_htmx(request):
            return render(request, "feedback/_ticket_feedback.html", context)
        return render(request, "feedback/ticket_feedback.html", context)

    @post("/tickets/{ticket_id:int}/feedback")
    async def refine(self, request: Request[Any, Any, Any], ticket_id: int, db_session: AsyncSession, clock: Clock) -> Template | Redirect:
        form = await request.form()
        principal = current_principal(request)
        htmx = is_htmx(request)
        error, status_code = None, 200
        try:
            await FeedbackService(db_session, clock).refine(ticket_id, str(form.get("category", "")), principal.actor)
            await db_session.commit()
        except DomainError as exc:
            await db_session.rollback()
            error, status_code = exc.detail, exc.status_code
        if error is None and not htmx:
            return Redirect(f"/tickets/{ticket_id}", status_code=303)
        context = await _record_context(db_session, ticket_id)
        context.update(feedback_error=error, editing=error is not None,
                       feedback_notice=None if error else i18n.gettext("Feedback category saved."))
        return render(request, "feedback/_ticket_feedback.html" if htmx else "feedback/ticket_feedback.html", context,
                      status_code=status_code)


# -- context builders ---------------------------------------------------------------------------------


def _back_params(raw: str) -> dict[str, str]:
    return {k: v for k, v in parse_qsl(raw.lstrip("?")) if k in (*FILTER_KEYS, "team", "page") and v}


def _local_day(raw: str, settings: Settings, *, next_day: bool = False) -> Any:
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        return None
    return day_start(date.fromordinal(day.toordinal() + 1) if next_day else day, settings.zone)


async def _inbox_context(params: Mapping[str, str], principal: Principal, db_session: AsyncSession, clock: Clock,
                         settings: Settings) -> dict[str, Any]:
    teams = allowed_teams(principal)
    team = params.get("team", "")
    chosen = team if team in teams else (teams[0] if teams else None)
    status = params.get("status", "open")
    status = status if status in inbox.STATUS_CHOICES else "open"
    group = params.get("group", "product")
    group = group if group in inbox.GROUPS else "product"
    category = params.get("category", "")
    session_raw = params.get("session", "")
    page_raw = params.get("page", "1")
    page = max(int(page_raw), 1) if page_raw.isdigit() else 1
    filters = {
        "status": status, "group": group, "category": category if is_known_reason(category) else "",
        "product": params.get("product", "")[:64], "session": session_raw if session_raw.isdigit() else "",
        "host": params.get("host", "")[:100], "from": params.get("from", ""), "to": params.get("to", ""),
        "q": params.get("q", "").strip()[:100],
    }
    context: dict[str, Any] = {
        "teams": teams, "team": chosen, "filters": filters, "statuses": inbox.STATUS_CHOICES, "groups": inbox.GROUPS,
        "error": None, "notice": None, "action_error": None, "action_form": {}, "reasons": list(REASONS),
        "today": clock.now().astimezone(settings.zone).date().isoformat(), "now": clock.now(), **HELPERS,
    }
    if chosen is None:
        return context
    flt = inbox.InboxFilter(
        team=chosen, status=status, category=filters["category"], product=filters["product"],
        session=int(filters["session"]) if filters["session"] else None, host=filters["host"],
        created_from=_local_day(filters["from"], settings) if filters["from"] else None,
        created_to=_local_day(filters["to"], settings, next_day=True) if filters["to"] else None, q=filters["q"],
    )
    rows, total = await inbox.list_items(db_session, flt, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    pages = max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1)

    def url(**changes: Any) -> str:
        # status first and team last: the address always names its filters and its team.
        merged = {**filters, **{k: ("" if v is None else str(v)) for k, v in changes.items()}}
        ordered = [("status", merged["status"])] + [(k, merged[k]) for k in FILTER_KEYS if k != "status" and merged.get(k)]
        if merged.get("page") and merged["page"] != "1":
            ordered.append(("page", merged["page"]))
        ordered.append(("team", chosen))
        return "/feedback?" + urlencode(ordered)

    context.update(
        rows=rows, total=total, page=page, pages=pages,
        prev_url=url(page=page - 1) if page > 1 else None, next_url=url(page=page + 1) if page < pages else None,
        url=url, back=urlencode({**{k: v for k, v in filters.items() if v}, "page": str(page), "team": chosen}),
        grouped=await inbox.group_counts(db_session, flt, group),
        options=await inbox.filter_options(db_session, chosen),
        status_summary=(await inbox.team_status(db_session, [chosen], clock.now()))[0],
        actions=await inbox.team_actions(db_session, chosen),
        can_act=True,
    )
    return context


async def _action_context(action_id: int, principal: Principal, db_session: AsyncSession, clock: Clock,
                          settings: Settings) -> dict[str, Any]:
    service = FeedbackActions(db_session, clock, settings.zone)
    try:
        action = await service.get(action_id, principal)
    except NotFound as exc:
        raise PermissionDeniedException(exc.detail) from exc
    except Forbidden as exc:
        raise PermissionDeniedException(exc.detail) from exc
    figures = await service.evaluate(action)
    by_status = dict((await db_session.execute(
        select(FeedbackItem.status, func.count()).where(FeedbackItem.action_id == action.id).group_by(FeedbackItem.status)
    )).all())
    items = list((await db_session.execute(
        select(FeedbackItem).where(FeedbackItem.action_id == action.id).order_by(FeedbackItem.created_at.desc()).limit(20)
    )).scalars())
    return {"action": action, "figures": figures, "stored": action.outcome_data or {}, "by_status": by_status, "items": items,
            "error": None, "now": clock.now(), **HELPERS}


async def _record_context(db_session: AsyncSession, ticket_id: int) -> dict[str, Any]:
    record = await db_session.get(FeedbackRecord, ticket_id)
    ticket = await db_session.get(Ticket, ticket_id)
    if record is None or ticket is None:
        raise NotFound(f"ticket {ticket_id} has no feedback record")
    return {"feedback": record, "t": ticket, "reasons": list(REASONS), "feedback_error": None, "feedback_notice": None, "editing": False,
            **HELPERS}


__all__ = ["FeedbackPages", "TicketFeedbackPages"]
