"""The only code that writes a ticket's status: intake, actions and carrier-driven moves."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from aftersales.auth.principal import SYSTEM, Principal, carrier_actor
from aftersales.clock import Clock
from aftersales.db import dialect_insert
from aftersales.errors import ActionNotAllowed, Conflict, InvalidInput, NotFound, StaleVersion
from aftersales.feedback.settings import reason_exists
from aftersales.orders.models import Order, OrderItem, Shipment, TrackingEvent
from aftersales.orders.schemas import ShipmentIn
from aftersales.orders.service import OrderService
from aftersales.schemas import check_id, money_field
from aftersales.tickets import policy as policy_rules
from aftersales.tickets import workflow
from aftersales.feedback.service import FeedbackService
from aftersales.sla.service import SlaService
from aftersales.tickets.assignment import AssignmentService
from aftersales.tickets.facts import gather_facts
from aftersales.tickets.models import Ticket, TicketDecision, TicketItem, TicketNumberCounter, TimelineEvent
from aftersales.tickets.policy_service import PolicyService
from aftersales.tickets.schemas import ActionIn, TicketIn

# Kinds where goods move, so the request must say which items.
KINDS_WITH_ITEMS = frozenset({"return_refund", "exchange", "reship"})
# A platform clock a little ahead of ours is not an error; a request from the future is.
CLOCK_SKEW = timedelta(minutes=5)

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
    def __init__(self, session: AsyncSession, clock: Clock, tz: ZoneInfo | None = None) -> None:
        self.session = session
        self.clock = clock
        self.tz = tz or ZoneInfo("Asia/Shanghai")

    # -- intake ---------------------------------------------------------------------------

    async def open_ticket(self, data: TicketIn, actor: Principal, *, fresh_session: bool = False) -> tuple[Ticket, bool]:
        """Open an after-sales request; a replay with the same external_id returns the first one.

        `fresh_session`: the caller has written nothing in this session yet, so on PostgreSQL the
        ticket number may be taken in its own short transaction (see `_next_number`)."""
        if data.external_id:
            existing = await self.session.scalar(select(Ticket).where(Ticket.external_id == data.external_id))
            if existing is not None:
                return existing, False
        order = await self._order_for_intake(data.order_external_id)
        now = self.clock.now()
        requested_at = data.requested_at or now
        amount = await self._check_intake(data, order, requested_at, now)
        ticket = Ticket(
            number=await self._next_number(now, own_transaction=fresh_session),
            external_id=data.external_id,
            order_id=order.id,
            customer_id=order.customer_id,
            kind=data.kind,
            reason_code=data.reason_code,
            status="requested",
            requested_amount=amount,
            refunded_amount=Decimal("0"),
            description=data.description,
            evidence_urls=list(data.evidence_urls),
            requested_at=requested_at,
            received_at=now,
            updated_at=now,
            priority=0,
            version=1,
        )
        self.session.add(ticket)
        await self.session.flush()
        by_sku = {item.sku: item for item in order.items}
        for item in data.items:
            self.session.add(
                TicketItem(ticket_id=ticket.id, order_item_id=by_sku[item.sku].id, sku=item.sku, quantity=item.quantity)
            )
        self._record(ticket.id, requested_at, actor, "open", None, "requested", data.description, {"received_at": now.isoformat()})
        claimed = [by_sku[item.sku] for item in data.items]
        await self._decide_intake(ticket, order, claimed)
        await FeedbackService(self.session, self.clock).record_ticket(ticket, order, claimed)
        await self.session.flush()
        return ticket, True

    async def _order_for_intake(self, external_id: str) -> Order:
        query = select(Order).where(Order.external_id == external_id).options(selectinload(Order.items))
        order = (await self.session.execute(query)).scalar_one_or_none()
        if order is None:
            raise InvalidInput.on("order_external_id", f"unknown order {external_id!r}")
        return order

    async def _check_intake(self, data: TicketIn, order: Order, requested_at: datetime, now: datetime) -> Decimal:
        if not await reason_exists(self.session, data.reason_code):
            raise InvalidInput.on("reason_code", f"unknown reason code {data.reason_code!r}")
        if requested_at > now + CLOCK_SKEW:
            raise InvalidInput.on("requested_at", "is in the future")
        if requested_at < order.placed_at:
            raise InvalidInput.on("requested_at", "is before the order was placed")
        if data.kind in KINDS_WITH_ITEMS and not data.items:
            raise InvalidInput.on("items", f"a {data.kind} request must name at least one item")
        by_sku = {item.sku: item for item in order.items}
        seen: set[str] = set()
        for i, item in enumerate(data.items):
            ordered = by_sku.get(item.sku)
            if ordered is None:
                raise InvalidInput.on(f"items[{i}].sku", f"sku {item.sku!r} is not part of order {order.external_id}")
            if item.sku in seen:
                raise InvalidInput.on(f"items[{i}].sku", f"sku {item.sku!r} is listed twice")
            seen.add(item.sku)
            if item.quantity > ordered.quantity:
                raise InvalidInput.on(f"items[{i}].quantity", f"exceeds the {ordered.quantity} ordered")
        amount = money_field(data.requested_amount, "requested_amount")
        # sum() keeps the Money type, so this comes back in yuan (None when nothing was refunded).
        already = await self.session.scalar(select(func.sum(Ticket.refunded_amount)).where(Ticket.order_id == order.id))
        left = order.paid_amount - (already or Decimal("0"))
        if amount > left:
            raise InvalidInput.on("requested_amount", f"¥{amount} exceeds the ¥{left} still refundable on this order")
        return amount

    async def _next_number(self, now: datetime, *, own_transaction: bool = False) -> str:
        """AS-YYYYMMDD-NNNNNN with a per-day sequence, race-safe through one atomic upsert."""
        day = now.astimezone(self.tz).date()
        stmt = (
            dialect_insert(self.session, TicketNumberCounter)
            .values(day=day, last=1)
            .on_conflict_do_update(index_elements=["day"], set_={"last": TicketNumberCounter.last + 1})
            .returning(TicketNumberCounter.last)
        )
        if own_transaction and self.session.bind.dialect.name == "postgresql":
            # The day's counter row is the one row every intake writes: holding its lock until the intake
            # commits serialized all intakes on PostgreSQL (bench F5). So end the read-only validation
            # transaction here and take the number in a transaction of its own, on the same connection.
            # An intake failing after this point leaves a gap in the day's numbers.
            await self.session.commit()
            seq = (await self.session.execute(stmt)).scalar_one()
            await self.session.commit()
        else:
            # SQLite has one writer anyway: the number stays in the intake's transaction (no gaps).
            seq = (await self.session.execute(stmt)).scalar_one()
        return f"AS-{day:%Y%m%d}-{seq:06d}"

    async def _decide_intake(self, ticket: Ticket, order: Order, claimed: list[OrderItem]) -> None:
        """Apply the published policy: approve the standard cases, route the rest to a queue."""
        current = await PolicyService(self.session, self.clock).current()
        facts = await gather_facts(self.session, ticket, order, claimed, self.tz)
        decision = policy_rules.evaluate(current.policy, facts)
        outcome = decision.outcome
        explanation = decision.explain()
        if outcome.decision in ("approve", "fast_refund"):
            action = "auto_approve" if outcome.decision == "approve" else "fast_refund"
            if (ticket.status, action) not in workflow.TRANSITIONS[ticket.kind]:
                # The rule asked for a step this kind cannot take: a person decides instead.
                outcome = current.policy.default
                explanation += f" · {action} is not possible for {ticket.kind} → queue {outcome.queue}"
        self.session.add(TicketDecision(
            ticket_id=ticket.id, policy_version=current.version, decision=outcome.decision, rule=decision.rule,
            queue=outcome.queue, priority=outcome.priority, suggestion=outcome.suggestion, facts=facts,
            trace=decision.trace, explanation=explanation, decided_at=self.clock.now(),
        ))
        # The SLA policy may depend on the queue and priority just decided, so the clocks start now.
        ticket.queue = outcome.queue
        ticket.priority = outcome.priority
        await SlaService(self.session, self.clock).start(ticket)
        data = {"policy_version": current.version, "rule": decision.rule, "suggestion": outcome.suggestion}
        extra: dict[str, Any] = {"policy_version": current.version}
        if outcome.decision == "queue":
            extra.update(queue=outcome.queue, priority=outcome.priority)
            await self._move(ticket, "route_to_review", SYSTEM, note=explanation, data={**data, "queue": outcome.queue}, extra=extra)
            await AssignmentService(self.session, self.clock).auto_assign(ticket, SYSTEM)
            return
        # An automatic decision is an immediate first response.
        extra["first_response_at"] = self.clock.now()
        action = "auto_approve" if outcome.decision == "approve" else "fast_refund"
        await self._move(ticket, action, SYSTEM, note=explanation, data=data, extra=extra)

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
        await SlaService(self.session, self.clock).on_transition(
            ticket, from_status, target, now, first_response="first_response_at" in values
        )

    def _record(
        self, ticket_id: int, at: datetime, actor: Principal, action: str,
        from_status: str | None, to_status: str | None, note: str, data: dict[str, Any],
    ) -> None:
        self.session.add(
            TimelineEvent(
                ticket_id=ticket_id, at=at, actor=actor.actor, action=action,
                from_status=from_status, to_status=to_status, note=note, data=data,
            )
        )

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
