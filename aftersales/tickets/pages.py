"""The agent's pages: the queue and the ticket with its whole chain and actions."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple
from urllib.parse import urlencode

import msgspec
from litestar import Controller, Request, get, post
from litestar.response import Redirect, Template
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales import i18n
from aftersales.auth.guards import WORK_TICKETS, current_principal, requires
from aftersales.clock import Clock
from aftersales.errors import DomainError, InvalidInput
from aftersales.feedback.taxonomy import REASONS, reason_label
from aftersales.labels import label
from aftersales.pages import PAGE_ERRORS, condition_text, duration, escape_text, is_htmx, localtime, money, render, status_badge
from aftersales.settings import Settings
from aftersales.tickets import macros, workflow
from aftersales.tickets.assignment import AssignmentService
from aftersales.tickets.models import Queue
from aftersales.tickets.repository import DEFAULT_SORT, SORTS, TicketChain, TicketFilter, TicketRepository
from aftersales.tickets.schemas import ActionIn
from aftersales.tickets.service import TicketService

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
        flt, chosen = _queue_filter(params, current_principal(request), settings)
        cursor = params.get("cursor") or None
        tickets, next_cursor = await TicketRepository(db_session).list_page(flt, limit=PAGE_SIZE, cursor=cursor, queue_names=True)
        kept = [(k, v) for k, v in params.multi_items() if k != "cursor" and v]
        base_query = urlencode(kept)
        context = {
            "rows": queue_rows(tickets, clock.now(), settings.zone),
            "paused": i18n.gettext("paused"),
            "filters": flt if chosen else TicketFilter(kinds=flt.kinds, reason_codes=flt.reason_codes, queues=flt.queues),
            "statuses": OPEN_STATUSES + ["closed", "cancelled"],
            "kinds": workflow.KINDS,
            "reasons": list(REASONS),
            "assignee": params.get("assignee", ""),
            "empty": params.get("empty") == "1",
            "date_from": params.get("from", ""),
            "date_to": params.get("to", ""),
            "sort": flt.sort,
            "cursor": cursor,
            "first_url": "/queue" + (f"?{base_query}" if base_query else ""),
            "next_url": f"/queue?{base_query}{'&' if base_query else ''}cursor={next_cursor}" if next_cursor else None,
        }
        return render(request, "tickets/queue.html", context, blocks=QUEUE_BLOCKS)

    @get("/tickets/{ticket_id:int}")
    async def ticket(self, request: Request[Any, Any, Any], ticket_id: int, db_session: AsyncSession, clock: Clock) -> Template:
        context = await _ticket_context(request, db_session, ticket_id, clock)
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
        context = await _ticket_context(request, db_session, ticket_id, clock)
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
        context = await _ticket_context(request, db_session, ticket_id, clock)
        context["error"] = error
        block = "ticket_main" if is_htmx(request) else None
        return render(request, "tickets/ticket.html", context, blocks=TICKET_BLOCKS, status_code=status_code, block=block)


async def _ticket_context(request: Request[Any, Any, Any], db_session: AsyncSession, ticket_id: int, clock: Clock) -> dict[str, Any]:
    """Everything the ticket page shows, from one statement (TicketRepository.load_chain)."""
    principal = current_principal(request)
    supervises = principal.role in ("supervisor", "admin")
    chain = await TicketRepository(db_session).load_chain(ticket_id, page=True, people=supervises)
    t, doc = chain.ticket, chain.doc
    claimed = chain.ticket_items()
    decision = chain.decision
    rules = rules_checked(decision.trace) if decision else []
    macro_data = macro_fields(chain)
    return {
        "t": t,
        "order": chain.order,
        "chain": chain.chain(),
        "shipments": chain.shipments,
        "claimed": claimed,
        "claimed_ids": {item.order_item_id for item in claimed},
        "history": doc.history,
        "actions": workflow.allowed_actions(t.kind, t.status),
        "can_act": principal.role in WORK_TICKETS,
        "macros": macros.macro_options(macro_data),
        "macro_data": macro_data,
        "now": clock.now(),
        "error": None,
        "notice": None,
        "decision": decision,
        "queue_names": _names(doc.queues),
        "rules": rules,
        "matched_rule": next((r for r in rules if r.matched), None),
        "assignee": doc.assignee,
        "people": doc.people,
        "feedback": doc.feedback,
    }


class RuleChecked(NamedTuple):
    rule: str
    matched: bool
    conditions: list[tuple[bool, str]]  # (held, the condition in plain words)


def rules_checked(trace: list[dict[str, Any]]) -> list[RuleChecked]:
    """The decision's trace in plain words, worked out once per page rather than per template call."""
    return [
        RuleChecked(r["rule"], r["matched"], [(c["held"], condition_text(c)) for c in r["conditions"]])
        for r in trace
    ]


def macro_fields(chain: TicketChain) -> dict[str, str]:
    """What canned replies fill in; the preview and the sent text both come from here."""
    t, order = chain.ticket, chain.order
    items = "、".join(f"{item.product_name} × {item.quantity}" for item in chain.ticket_items())
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
    for field in ("amount",):
        if field in raw:
            try:
                raw[field] = Decimal(str(raw[field]))
            except InvalidOperation as exc:
                raise InvalidInput.on(field, "is not an amount") from exc
    if action == "reply" and not raw.get("note") and form.get("macro"):
        chain = await TicketRepository(db_session).load_chain(ticket_id)
        raw["note"] = macros.fill(str(form.get("macro")), macro_fields(chain))
    try:
        return msgspec.convert(raw, ActionIn, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidInput(str(exc)) from exc


_QUEUES = Queue.__table__
# Built once: constructing a statement per request costs more than this tiny query.
_QUEUE_NAMES = select(_QUEUES.c.key, _QUEUES.c.name_zh, _QUEUES.c.name_en)


async def queue_names(db_session: AsyncSession) -> dict[str, str]:
    """Queue keys to their name in the reader's language."""
    return _names((await db_session.execute(_QUEUE_NAMES)).all())


def _names(queues: Any) -> dict[str, str]:
    zh = i18n.get_locale() == "zh_CN"
    return {q.key: q.name_zh if zh else q.name_en for q in queues}


def _queue_filter(params: Any, principal: Any, settings: Settings) -> tuple[TicketFilter, bool]:
    """The queue page's filter from its query string (unknown values are ignored), and whether
    statuses were chosen (none means every open status)."""
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
        sort=params.get("sort") if params.get("sort") in SORTS else DEFAULT_SORT,
    )
    return flt, bool(statuses)


class QueueRow(NamedTuple):
    """One line of the queue as HTML-ready text: every value is escaped here (or made only of
    digits and our own catalogue's words), once, so that the template's row loop prints them
    without autoescape; escaping ~11 values a line in the template was half the list's render
    time (bench F24)."""

    id: int
    number: str
    badge: Markup
    kind: str
    reason: str
    amount: str
    requested: str
    waiting: str
    sla: str  # final | paused | overdue | left
    sla_text: str
    queue: str


class _Labels(dict[str, Any]):
    """Computes each distinct label once per request."""

    def __init__(self, make: Any) -> None:
        super().__init__()
        self.make = make

    def __missing__(self, key: str) -> Any:
        value = self[key] = self.make(key)
        return value


def queue_rows(tickets: list[Any], now: datetime, zone: Any) -> list[QueueRow]:
    """From listing rows with queue names (TicketRepository.list_page(queue_names=True))."""
    locale = i18n.get_locale()
    zh = locale == "zh_CN"
    badges = _Labels(status_badge)
    kinds = _Labels(lambda kind: escape_text(label("kind", kind)))
    reasons = _Labels(lambda code: escape_text(reason_label(code, locale)))
    queues: dict[tuple[str | None, str | None], str] = {}
    rows = []
    # Read through each row's mapping: a Row's attribute access costs ~5× as much (bench F24).
    for t in (row._mapping for row in tickets):
        final = t["status"] in workflow.FINAL_STATUSES
        sla, sla_text = _sla_left(t["sla_due_at"], now, final)
        queue, name = t["queue"], t["queue_name_zh"] if zh else t["queue_name_en"]
        if (queue, name) not in queues:
            # A queue that no longer exists shows its key.
            queues[queue, name] = escape_text((queue if name is None else name) if queue else "")
        requested_at = t["requested_at"]
        rows.append(QueueRow(
            id=t["id"], number=escape_text(t["number"]), badge=badges[t["status"]], kind=kinds[t["kind"]],
            reason=reasons[t["reason_code"]], amount=money(t["requested_amount"]), requested=localtime(requested_at, zone),
            waiting="—" if final else duration((now - requested_at).total_seconds()),
            sla=sla, sla_text=sla_text, queue=queues[queue, name],
        ))
    return rows


def _sla_left(due: datetime | None, now: datetime, final: bool) -> tuple[str, str]:
    """The "SLA left" cell: its state and text."""
    if final:
        return "final", ""
    if due is None:
        return "paused", ""
    if due < now:
        return "overdue", i18n.gettext("overdue %(d)s", d=duration((now - due).total_seconds()))
    return "left", duration((due - now).total_seconds())


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
