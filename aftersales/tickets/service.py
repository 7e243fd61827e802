"""The only code that writes a ticket's status: intake, actions and carrier-driven moves."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.auth.principal import Principal, carrier_actor
from aftersales.clock import Clock
from aftersales.db import add_row
from aftersales.errors import ActionNotAllowed, Conflict, InvalidInput, NotFound, StaleVersion
from aftersales.orders.models import Order, Shipment, TrackingEvent
from aftersales.orders.schemas import ShipmentIn
from aftersales.orders.service import OrderService
from aftersales.schemas import check_id, money_field
from aftersales.sla.service import SlaService
from aftersales.tickets import workflow
from aftersales.tickets.models import Ticket, TimelineEvent
from aftersales.tickets.schemas import ActionIn, TicketIn

# The state-entry timestamp each target status sets (Dispatch-style: only here).
STATUS_STAMPS = {
    "rejected": "rejected_at",
    "return_received": "return_received_at",
    "refunded": "refunded_at",
    "replacement_shipped": "replacement_shipped_at",
    "closed": "closed_at",
    "cancelled": "cancelled_at",
}
APPROVALS = frozenset({"approve", "auto_approve"})
# Actions by a person that do not count as the first response to the customer.
NOT_A_RESPONSE = frozenset({"customer_reply", "note"})


class TicketService:
    def __init__(self, session: AsyncSession, clock: Clock, tz: ZoneInfo | None = None, *, fresh: bool = False) -> None:
        """`fresh`: moving tickets created in this very transaction (set-wise intake): nobody else
        can see them, so a move is set on the object and the session's flush writes the batch."""
        self.session = session
        self.clock = clock
        self.tz = tz or ZoneInfo("Asia/Shanghai")
        self.fresh = fresh
        self.sla = SlaService(session, clock, fresh=fresh)

    # -- intake ---------------------------------------------------------------------------

    async def open_ticket(self, data: TicketIn, actor: Principal, *, fresh_session: bool = False) -> tuple[Ticket, bool]:
        """Open an after-sales request; a replay with the same external_id returns the first one.
        One request is a batch of one (aftersales.tickets.intake holds the rules).

        `fresh_session`: the caller has written nothing in this session yet, so on PostgreSQL the
        ticket number may be taken in its own short transaction (see IntakeService.take_numbers)."""
        from aftersales.tickets.intake import IntakeRequest, IntakeService  # it builds on this service

        (outcome,) = await IntakeService(self.session, self.clock, self.tz).open_tickets(
            [IntakeRequest(data, actor)], fresh_session=fresh_session)
        if isinstance(outcome, Exception):
            raise outcome
        ticket = outcome.ticket
        if not isinstance(ticket, Ticket):  # opened just now: the row the batch wrote
            ticket = await self.session.get(Ticket, ticket.id)
            assert ticket is not None
        return ticket, outcome.created

    # -- actions --------------------------------------------------------------------------

    async def act(self, ticket_id: int, action: str, data: ActionIn, actor: Principal) -> Ticket:
        if action not in workflow.USER_ACTIONS:
            raise NotFound(f"unknown action {action!r}; actions are {', '.join(workflow.USER_ACTIONS)}")
        ticket = await self.get(ticket_id)
        if data.version != ticket.version:
            raise StaleVersion(
                f"ticket {ticket.number} is at version {ticket.version}, not {data.version}: reload it",
                current_version=ticket.version,
                ticket_status=ticket.status,
            )
        owned_by_other = ticket.assignee_id is not None and not (actor.kind == "user" and actor.id == ticket.assignee_id)
        if actor.role == "agent" and owned_by_other and action != "note":
            raise Conflict(f"ticket {ticket.number} is assigned to another agent; ask a supervisor to reassign it",
                           assignee_id=ticket.assignee_id)
        handler = getattr(self, f"_prepare_{action}", None)
        extra, details = (await handler(ticket, data)) if handler else ({}, {})
        await self._move(ticket, action, actor, note=data.note, data=details, extra=extra, passed=data.passed)
        if action == "add_return_tracking":
            await self._apply_early_delivery(ticket, details["shipment_id"])
        return ticket

    async def _prepare_reject(self, ticket: Ticket, data: ActionIn) -> tuple[dict[str, Any], dict[str, Any]]:
        if not data.note.strip():
            raise InvalidInput.on("note", "a rejection must say why")
        return {}, {}

    async def _prepare_request_info(self, ticket: Ticket, data: ActionIn) -> tuple[dict[str, Any], dict[str, Any]]:
        if not data.note.strip():
            raise InvalidInput.on("note", "say what the customer should provide")
        return {}, {}

    async def _prepare_reply(self, ticket: Ticket, data: ActionIn) -> tuple[dict[str, Any], dict[str, Any]]:
        if not data.note.strip():
            raise InvalidInput.on("note", "a reply to the customer needs text")
        return {}, {"customer_facing": True}

    async def _prepare_approve(self, ticket: Ticket, data: ActionIn) -> tuple[dict[str, Any], dict[str, Any]]:
        if data.amount is None:
            return {}, {"approved_amount": str(ticket.requested_amount)}
        amount = money_field(data.amount, "amount")
        if amount > ticket.requested_amount:
            raise InvalidInput.on("amount", f"¥{amount} is more than the ¥{ticket.requested_amount} requested")
        return {}, {"approved_amount": str(amount)}

    async def _prepare_record_inspection(self, ticket: Ticket, data: ActionIn) -> tuple[dict[str, Any], dict[str, Any]]:
        if data.passed is None:
            raise InvalidInput.on("passed", "say whether the returned goods passed inspection (true / false)")
        return {}, {"passed": data.passed}

    async def _prepare_add_return_tracking(self, ticket: Ticket, data: ActionIn) -> tuple[dict[str, Any], dict[str, Any]]:
        self._check_allowed(ticket, "add_return_tracking")
        shipment = await self._register_ticket_shipment(ticket, data, "return")
        return {}, {"shipment_id": shipment.id, "carrier": shipment.carrier, "tracking_number": shipment.tracking_number}

    async def _prepare_ship_replacement(self, ticket: Ticket, data: ActionIn) -> tuple[dict[str, Any], dict[str, Any]]:
        self._check_allowed(ticket, "ship_replacement")
        shipment = await self._register_ticket_shipment(ticket, data, "replacement")
        return {}, {"shipment_id": shipment.id, "carrier": shipment.carrier, "tracking_number": shipment.tracking_number}

    async def _prepare_confirm_refund(self, ticket: Ticket, data: ActionIn) -> tuple[dict[str, Any], dict[str, Any]]:
        approved = await self._approved_amount(ticket)
        amount = approved if data.amount is None else money_field(data.amount, "amount")
        if amount > ticket.requested_amount:
            raise InvalidInput.on("amount", f"¥{amount} is more than the ¥{ticket.requested_amount} requested")
        # Never refund more than the customer paid, across every ticket of the order.
        paid = await self.session.scalar(select(Order.paid_amount).where(Order.id == ticket.order_id)) or Decimal("0")
        refunded = await self.session.scalar(select(func.sum(Ticket.refunded_amount)).where(Ticket.order_id == ticket.order_id))
        left = paid - (refunded or Decimal("0"))
        if amount > left:
            raise InvalidInput.on("amount", f"¥{amount} exceeds the ¥{left} still refundable on this order")
        details = {"amount": str(amount), "refund_reference": data.refund_reference}
        return {"refunded_amount": ticket.refunded_amount + amount}, details

    async def _prepare_reopen(self, ticket: Ticket, data: ActionIn) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"closed_at": None}, {"previous_closed_at": ticket.closed_at.isoformat() if ticket.closed_at else None}

    def _check_allowed(self, ticket: Ticket, action: str) -> None:
        """Check before side effects (a shipment) so a refused action writes nothing at all."""
        try:
            workflow.transition(ticket.kind, ticket.status, action)
        except workflow.InvalidTransition as exc:
            raise _not_allowed(exc, ticket) from exc

    async def _register_ticket_shipment(self, ticket: Ticket, data: ActionIn, direction: str) -> Shipment:
        if not data.carrier:
            raise InvalidInput.on("carrier", "is required")
        if not data.tracking_number:
            raise InvalidInput.on("tracking_number", "is required")
        order_external_id = await self.session.scalar(select(Order.external_id).where(Order.id == ticket.order_id))
        body = ShipmentIn(
            order_external_id=order_external_id or "",
            direction=direction,  # type: ignore[arg-type]
            carrier=data.carrier,
            tracking_number=data.tracking_number,
            ticket_id=ticket.id,
        )
        shipment, _ = await OrderService(self.session, self.clock).register_shipment(body)
        return shipment

    async def _approved_amount(self, ticket: Ticket) -> Decimal:
        query = (
            select(TimelineEvent.data)
            .where(TimelineEvent.ticket_id == ticket.id, TimelineEvent.action.in_(APPROVALS))
            .order_by(TimelineEvent.id.desc())
            .limit(1)
        )
        data = await self.session.scalar(query)
        if data and data.get("approved_amount"):
            return Decimal(data["approved_amount"])
        return ticket.requested_amount

    # -- carrier-driven moves ---------------------------------------------------------------

    async def apply_carrier_delivery(self, shipment: Shipment, event: TrackingEvent) -> str | None:
        """A delivered return parcel means goods are back; a delivered replacement ends the ticket."""
        action = {"return": "return_delivered", "replacement": "replacement_delivered"}.get(shipment.direction)
        if action is None or shipment.ticket_id is None:
            return None
        ticket = await self.get(shipment.ticket_id)
        try:
            workflow.transition(ticket.kind, ticket.status, action)
        except workflow.InvalidTransition:
            # e.g. the customer cancelled meanwhile: keep the fact on the timeline, move nothing.
            self._record(ticket.id, self.clock.now(), carrier_actor(shipment.carrier), "carrier_event", ticket.status, ticket.status,
                         f"{shipment.direction} parcel delivered; ticket left in {ticket.status}", _event_ref(shipment, event))
            return None
        await self._move(ticket, action, carrier_actor(shipment.carrier), note="", data=_event_ref(shipment, event))
        return ticket.number

    async def _apply_early_delivery(self, ticket: Ticket, shipment_id: int) -> None:
        """Tracking given after the carrier already reported delivery (events arrived first)."""
        shipment = await self.session.get(Shipment, shipment_id)
        if shipment is None or shipment.delivered_at is None:
            return
        event = (
            await self.session.execute(
                select(TrackingEvent)
                .where(TrackingEvent.shipment_id == shipment_id, TrackingEvent.status == "delivered")
                .order_by(TrackingEvent.occurred_at)
                .limit(1)
            )
        ).scalar_one()
        await self.apply_carrier_delivery(shipment, event)

    # -- the one writer of status -----------------------------------------------------------

    async def _move(
        self,
        ticket: Ticket,
        action: str,
        actor: Principal,
        *,
        note: str = "",
        data: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        passed: bool | None = None,
    ) -> None:
        try:
            target = workflow.transition(ticket.kind, ticket.status, action, inspection_passed=passed)
        except workflow.InvalidTransition as exc:
            raise _not_allowed(exc, ticket) from exc
        except ValueError as exc:
            raise InvalidInput.on("passed", str(exc)) from exc
        now = self.clock.now()
        values: dict[str, Any] = {"status": target, "version": ticket.version + 1, "updated_at": now, **(extra or {})}
        if target != ticket.status and target in STATUS_STAMPS:
            values[STATUS_STAMPS[target]] = now
        if action in APPROVALS:
            values["approved_at"] = now
        if actor.is_person and ticket.first_response_at is None and action not in NOT_A_RESPONSE:
            values["first_response_at"] = now
        if not self.fresh:
            # The conditional UPDATE settles races: it changes the row only if nobody moved it first.
            result = await self.session.execute(
                update(Ticket)
                .where(Ticket.id == ticket.id, Ticket.version == ticket.version, Ticket.status == ticket.status)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                raise StaleVersion(f"ticket {ticket.number} was changed by someone else: reload it")
        from_status = ticket.status
        for key, value in values.items():
            setattr(ticket, key, value)
        self._record(ticket.id, now, actor, action, from_status, target, note, data or {})
        await self.sla.on_transition(
            ticket, from_status, target, now, first_response="first_response_at" in values
        )

    def _record(
        self, ticket_id: int, at: datetime, actor: Principal, action: str,
        from_status: str | None, to_status: str | None, note: str, data: dict[str, Any],
    ) -> None:
        add_row(self.session, TimelineEvent, ticket_id=ticket_id, at=at, actor=actor.actor, action=action,
                from_status=from_status, to_status=to_status, note=note, data=data)

    async def get(self, ticket_id: int) -> Ticket:
        check_id(ticket_id, "ticket")
        ticket = await self.session.get(Ticket, ticket_id, populate_existing=True)
        if ticket is None:
            raise NotFound(f"ticket {ticket_id} does not exist")
        return ticket


def _not_allowed(exc: workflow.InvalidTransition, ticket: Ticket) -> ActionNotAllowed:
    return ActionNotAllowed(
        f"{exc.action!r} is not possible for ticket {ticket.number} in status {ticket.status!r}",
        ticket_status=ticket.status,
        allowed_actions=exc.allowed,
    )


def _event_ref(shipment: Shipment, event: TrackingEvent) -> dict[str, Any]:
    return {
        "shipment_id": shipment.id,
        "carrier": shipment.carrier,
        "tracking_number": shipment.tracking_number,
        "tracking_event_id": event.id,
        "raw_status": event.raw_status,
        "source": event.source,
        "occurred_at": event.occurred_at.isoformat(),
    }
