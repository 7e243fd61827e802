"""The agent's pages: the queue and the ticket with its whole chain and actions."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

import msgspec
from litestar import Controller, Request, get, post
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales import i18n
from aftersales.auth.guards import WORK_TICKETS, current_principal, requires
from aftersales.clock import Clock
from aftersales.errors import DomainError, InvalidInput
from aftersales.feedback.models import FeedbackRecord
from aftersales.feedback.taxonomy import REASONS
from aftersales.pages import PAGE_ERRORS, page_auth_error, render, is_htmx
from aftersales.settings import Settings
from aftersales.tickets import macros, workflow
from aftersales.tickets.repository import TicketChain, TicketFilter, TicketRepository
from aftersales.tickets.schemas import ActionIn
from aftersales.tickets.service import TicketService
from aftersales.tickets.models import TicketDecision
from aftersales.auth.models import User
from aftersales.tickets.assignment import AssignmentService
from sqlalchemy import select

OPEN_STATUSES = [s for s in workflow.STATUSES if s not in workflow.FINAL_STATUSES and s != "requested"]
QUEUE_BLOCKS = ("ticket_list",)
TICKET_BLOCKS = ("ticket_main", "ticket_header", "ticket_actions", "ticket_timeline")
PAGE_SIZE = 50


class TicketPages(Controller):
    include_in_schema = False
    guards = [requires(*WORK_TICKETS)]
    exception_handlers = PAGE_ERRORS

    @get("/queue")
    async def queue(self, request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock, settings: Settings) -> Template:
        params = request.query_params
        principal = current_principal(request)
        statuses = _pick(params.getall("status", []), workflow.STATUSES)
        flt = TicketFilter(
            statuses=statuses or OPEN_STATUSES,
            kinds=_pick(params.getall("kind", []), workflow.KINDS),
            reason_codes=_pick(params.getall("reason", []), tuple(REASONS)),
            queues=[q for q in params.getall("queue", []) if q],
            assignee_id=principal.id if params.get("assignee") == "me" else None,
            unassigned=params.get("assignee") == "none",
            requested_from=_day_start(params.get("from"), settings),
            requested_to=_day_start(params.get("to"), settings, next_day=True),
            ascending=params.get("sort") == "requested_at",
        )
        cursor = params.get("cursor") or None
        tickets, next_cursor = await TicketRepository(db_session).list_page(flt, limit=PAGE_SIZE, cursor=cursor)
        kept = [(k, v) for k, v in params.multi_items() if k != "cursor" and v]
        base_query = urlencode(kept)
        context = {
            "tickets": tickets,
            "now": clock.now(),
            "filters": flt if statuses else TicketFilter(kinds=flt.kinds, reason_codes=flt.reason_codes, queues=flt.queues),
            "statuses": OPEN_STATUSES + ["closed", "cancelled"],
            "kinds": workflow.KINDS,
            "reasons": list(REASONS),
            "assignee": params.get("assignee", ""),
            "empty": params.get("empty") == "1",
            "date_from": params.get("from", ""),
            "date_to": params.get("to", ""),
            "sort": params.get("sort", "-requested_at"),
            "cursor": cursor,
            "first_url": "/queue" + (f"?{base_query}" if base_query else ""),
            "next_url": f"/queue?{base_query}{'&' if base_query else ''}cursor={next_cursor}" if next_cursor else None,
        }
        context["queue_names"] = await queue_names(db_session)
        return render(request, "tickets/queue.html", context, blocks=QUEUE_BLOCKS)

    @get("/tickets/{ticket_id:int}")
    async def ticket(self, request: Request[Any, Any, Any], ticket_id: int, db_session: AsyncSession, clock: Clock) -> Template:
        chain = await TicketRepository(db_session).load_chain(ticket_id)
        context = await _ticket_context(request, db_session, chain, clock)
        return render(request, "tickets/ticket.html", context, blocks=TICKET_BLOCKS)

    @post("/tickets/{ticket_id:int}/actions/{action:str}")
    async def act(
        self, request: Request[Any, Any, Any], ticket_id: int, action: str, db_session: AsyncSession, clock: Clock, settings: Settings
    ) -> Template | Redirect:
        principal = current_principal(request)
        form = await request.form()
        service = TicketService(db_session, clock, settings.zone)
        error: str | None = None
        status_code = 200
        try:
            data = await _action_from_form(db_session, ticket_id, action, form)
            await service.act(ticket_id, action, data, principal)
            await db_session.commit()
        except DomainError as exc:
            await db_session.rollback()
            error, status_code = _explain(exc), exc.status_code
        if error is None and not is_htmx(request):
            return Redirect(f"/tickets/{ticket_id}", status_code=303)
        chain = await TicketRepository(db_session).load_chain(ticket_id)
        context = await _ticket_context(request, db_session, chain, clock)
        context["error"] = error
        context["notice"] = None if error else i18n.gettext("Done: %(action)s", action=_action_label(action))
        block = "ticket_main" if is_htmx(request) else None
        return render(request, "tickets/ticket.html", context, blocks=TICKET_BLOCKS, status_code=status_code, block=block)


class AssignmentPages(Controller):
    include_in_schema = False
    guards = [requires(*WORK_TICKETS)]
    exception_handlers = PAGE_ERRORS

    @post("/tickets/{ticket_id:int}/owner")
    async def change_owner(self, request: Request[Any, Any, Any], ticket_id: int, db_session: AsyncSession, clock: Clock) -> Template | Redirect:
        """Claim, release or (supervisors) assign, from the ticket page."""
        form = await request.form()
        principal = current_principal(request)
        service = AssignmentService(db_session, clock)
        error, status_code = None, 200
        try:
            intent = str(form.get("intent", ""))
            if intent == "claim":
                await service.claim(ticket_id, principal)
            elif intent == "release":
                await service.release(ticket_id, principal)
            elif intent == "assign":
                raw = str(form.get("user_id", ""))
                await service.assign(ticket_id, int(raw) if raw.isdigit() else None, principal)
            else:
                raise InvalidInput.on("intent", "must be claim, release or assign")
            await db_session.commit()
        except DomainError as exc:
            await db_session.rollback()
            error, status_code = exc.detail, exc.status_code
        if error is None and not is_htmx(request):
            return Redirect(f"/tickets/{ticket_id}", status_code=303)
        chain = await TicketRepository(db_session).load_chain(ticket_id)
        context = await _ticket_context(request, db_session, chain, clock)
        context["error"] = error
        block = "ticket_main" if is_htmx(request) else None
        return render(request, "tickets/ticket.html", context, blocks=TICKET_BLOCKS, status_code=status_code, block=block)


async def _ticket_context(request: Request[Any, Any, Any], db_session: AsyncSession, chain: TicketChain, clock: Clock) -> dict[str, Any]:
    t = chain.ticket
    principal = current_principal(request)
    order = t.order
    claimed = chain.ticket_items()
    history = await TicketRepository(db_session).customer_history(t.customer_id, exclude_id=t.id)
    decision = await db_session.get(TicketDecision, t.id)
    assignee = await db_session.get(User, t.assignee_id) if t.assignee_id else None
    people = list((await db_session.execute(
        select(User).where(User.role.in_(("agent", "supervisor")), User.active.is_(True)).order_by(User.username)
    )).scalars()) if principal.role in ("supervisor", "admin") else []
    actions = workflow.allowed_actions(t.kind, t.status)
    macro_data = macro_fields(chain)
    return {
        "t": t,
        "order": order,
        "chain": chain.chain(),
        "shipments": chain.shipments,
        "claimed": claimed,
        "claimed_ids": {oi.id for _, oi in claimed},
        "history": history,
        "actions": actions,
        "can_act": principal.role in WORK_TICKETS,
        "macros": macros.macro_options(macro_data),
        "macro_data": macro_data,
        "now": clock.now(),
        "error": None,
        "notice": None,
        "decision": decision,
        "queue_names": await queue_names(db_session),
        "matched_rule": next((r for r in decision.trace if r["matched"]), None) if decision else None,
        "assignee": assignee,
        "people": people,
        "feedback": await db_session.get(FeedbackRecord, t.id),
    }


def macro_fields(chain: TicketChain) -> dict[str, str]:
    """What canned replies fill in; the preview and the sent text both come from here."""
    t, order = chain.ticket, chain.ticket.order
    claimed = chain.ticket_items()
    items = "、".join(f"{oi.product_name} × {ti.quantity}" for ti, oi in claimed)
    return {
        "customer": order.customer.name or order.customer.external_id,
        "number": t.number,
        "order": order.external_id,
        "items": items or "、".join(i.product_name for i in order.items),
        "amount": f"¥{t.requested_amount:,.2f}",
    }


async def _action_from_form(db_session: AsyncSession, ticket_id: int, action: str, form: Any) -> ActionIn:
    raw: dict[str, Any] = {k: v for k, v in form.items() if k not in ("_csrf_token", "macro") and v != ""}
    if "passed" in raw:
        raw["passed"] = raw["passed"] == "true"
    for money in ("amount",):
        if money in raw:
            try:
                raw[money] = Decimal(str(raw[money]))
            except InvalidOperation as exc:
                raise InvalidInput.on(money, "is not an amount") from exc
    if action == "reply" and not raw.get("note") and form.get("macro"):
        chain = await TicketRepository(db_session).load_chain(ticket_id)
        raw["note"] = macros.fill(str(form.get("macro")), macro_fields(chain))
    try:
        return msgspec.convert(raw, ActionIn, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidInput(str(exc)) from exc


async def queue_names(db_session: AsyncSession) -> dict[str, str]:
    """Queue keys to their name in the reader's language."""
    from aftersales.tickets.models import Queue

    rows = (await db_session.execute(select(Queue.key, Queue.name_zh, Queue.name_en))).all()
    return {key: (zh if i18n.get_locale() == "zh_CN" else en) for key, zh, en in rows}


def _explain(exc: DomainError) -> str:
    if exc.status_code == 409 and exc.type_slug == "stale-version":
        return i18n.gettext("Someone else changed this ticket while you were looking at it. The view below is current; check it and try again.")
    if exc.status_code == 409:
        return i18n.gettext("This action is not possible in the ticket's current status.")
    return i18n.gettext("The action was refused: %(detail)s", detail=exc.detail)


def _action_label(action: str) -> str:
    from aftersales.labels import label

    return label("action", action)


def _pick(values: list[str], allowed: tuple[str, ...]) -> list[str]:
    return [v for raw in values for v in raw.split(",") if v in allowed]


def _day_start(value: str | None, settings: Settings, *, next_day: bool = False) -> datetime | None:
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        return None
    if next_day:
        day += timedelta(days=1)
    return datetime.combine(day, time.min, tzinfo=settings.zone)
