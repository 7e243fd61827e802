"""JSON API for tickets: intake, listing, the whole chain and actions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.auth.guards import ACT_ON_TICKETS, FEED, INTEGRATION_ACTIONS, READ_TICKETS, current_principal, requires
from aftersales.clock import Clock, ensure_utc
from aftersales.errors import Forbidden, InvalidInput
from aftersales.idempotency import fingerprint, run_once
from aftersales.settings import Settings
from aftersales.tickets import workflow
from aftersales.tickets.intake_queue import IntakeCall
from aftersales.tickets.repository import DEFAULT_SORT, SORTS, TicketFilter, TicketRepository
from aftersales.tickets.schemas import ActionIn, TicketDetail, TicketIn, TicketPage, ticket_detail, ticket_summary
from aftersales.tickets.service import TicketService
from aftersales.web import encode, idempotency_key, json_response

OPEN_TICKETS = tuple(sorted(set(FEED) | set(ACT_ON_TICKETS)))


def _split(values: list[str] | None, field: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    """Accept ?status=a&status=b and ?status=a,b alike, and name the field of a bad value."""
    out = [v for raw in values or [] for v in raw.split(",") if v]
    if allowed is not None:
        for value in out:
            if value not in allowed:
                raise InvalidInput.on(field, f"unknown value {value!r}; expected one of {', '.join(allowed)}")
    return out


class TicketController(Controller):
    path = "/api/v1/tickets"
    tags = ["tickets"]

    @post("/", guards=[requires(*OPEN_TICKETS)])
    async def open_ticket(self, request: Request[Any, Any, Any], data: TicketIn, state: State) -> Response[bytes]:
        """Open an after-sales request. Honours `Idempotency-Key`; a known `external_id` returns the first ticket.
        Requests arriving together are written together (group commit), each with its own answer."""
        call = IntakeCall(data=data, actor=current_principal(request), key=idempotency_key(request),
                          print_=fingerprint("POST", request.url.path, await request.body()))
        answer = await state.intake_queue.submit(call)
        return json_response(answer.status, answer.body, replayed=answer.replayed)

    @get("/", guards=[requires(*READ_TICKETS)])
    async def list_tickets(
        self,
        db_session: AsyncSession,
        settings: Settings,
        status: list[str] | None = None,
        kind: list[str] | None = None,
        reason: list[str] | None = None,
        queue: list[str] | None = None,
        assignee_id: int | None = None,
        unassigned: bool = False,
        order: str | None = None,
        requested_from: datetime | None = Parameter(query="from", default=None),
        requested_to: datetime | None = Parameter(query="to", default=None),
        sort: str = DEFAULT_SORT,
        cursor: str | None = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> TicketPage:
        """Filter tickets; pages are keyset cursors (`next_cursor`), fast at any depth. `sort` is
        `-requested_at` (default), `requested_at`, `sla_due_at` or `-sla_due_at` (tickets without an SLA
        due time last); a cursor only continues the sort it was handed out for."""
        if assignee_id is not None and not 0 < assignee_id < 2**63:
            raise InvalidInput.on("assignee_id", "is not a user id")
        if sort not in SORTS:
            raise InvalidInput.on("sort", f"must be one of {', '.join(SORTS)}")
        flt = TicketFilter(
            statuses=_split(status, "status", workflow.STATUSES),
            kinds=_split(kind, "kind", workflow.KINDS),
            reason_codes=_split(reason, "reason"),
            queues=_split(queue, "queue"),
            assignee_id=assignee_id,
            unassigned=unassigned,
            order_external_id=order,
            requested_from=ensure_utc(requested_from) if requested_from else None,
            requested_to=ensure_utc(requested_to) if requested_to else None,
            sort=sort,
        )
        rows, next_cursor = await TicketRepository(db_session).list_page(flt, limit=limit, cursor=cursor)
        return TicketPage(items=[ticket_summary(t) for t in rows], next_cursor=next_cursor)

    @get("/{ticket_id:int}", guards=[requires(*READ_TICKETS)])
    async def get_ticket(self, ticket_id: int, db_session: AsyncSession) -> TicketDetail:
        """The ticket with its whole chain: order, items, shipments with events, timeline — in time order."""
        return ticket_detail(await TicketRepository(db_session).load_chain(ticket_id))

    @post("/{ticket_id:int}/actions/{action:str}", guards=[requires(*READ_TICKETS)])
    async def act(
        self,
        request: Request[Any, Any, Any],
        ticket_id: int,
        action: str,
        data: ActionIn,
        db_session: AsyncSession,
        clock: Clock,
        settings: Settings,
    ) -> Response[bytes]:
        """Apply one action. A status that does not allow it answers 409 with the allowed actions;
        a stale `version` answers 409 too."""
        principal = current_principal(request)
        if principal.role not in ACT_ON_TICKETS and action not in INTEGRATION_ACTIONS:
            raise Forbidden(f"role {principal.role!r} may not {action!r}")
        service = TicketService(db_session, clock, settings.zone)

        async def run() -> tuple[int, bytes]:
            await service.act(ticket_id, action, data, principal)
            await db_session.flush()
            return 200, encode(ticket_detail(await TicketRepository(db_session).load_chain(ticket_id)))

        status, body, replayed = await run_once(
            db_session, clock, scope=principal.actor, key=idempotency_key(request),
            print_=fingerprint("POST", request.url.path, await request.body()), run=run,
        )
        return json_response(status, body, replayed=replayed)
