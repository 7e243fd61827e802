"""Ticket intake, set-wise: a batch of requests is checked, decided and written with a fixed
number of statements, whatever its size (bench F5: one at a time, an intake was 38 statements and
~25 ms of CPU). One request is a batch of one, so these rules exist only here.

The batch behaves as if its requests had come one after the other in list order: each ticket's
customer history, repeat counts and agent loads include the batch's tickets before it.
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Integer, bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from aftersales.auth.principal import SYSTEM, Principal
from aftersales.clock import Clock
from aftersales.db import (
    add_row, collecting_rows, in_bound, insert_for, insert_pending, python_default, reads_only, relabel_collected,
)
from aftersales.errors import DomainError, InvalidInput
from aftersales.feedback.service import FeedbackService
from aftersales.feedback.settings import existing_reasons
from aftersales.orders.models import Order, OrderItem
from aftersales.schemas import money_field
from aftersales.tickets import policy as policy_rules
from aftersales.tickets import workflow
from aftersales.tickets.assignment import AssignmentService
from aftersales.tickets.facts import FactSources, intake_facts, load_fact_sources
from aftersales.feedback.models import FeedbackItem, FeedbackRecord
from aftersales.sla.models import SlaEvent
from aftersales.tickets.models import Ticket, TicketDecision, TicketItem, TicketNumberCounter, TimelineEvent
from aftersales.tickets.policy_service import CurrentPolicy, PolicyService
from aftersales.tickets.schemas import TicketIn
from aftersales.tickets.service import TicketService

# Kinds where goods move, so the request must say which items.
KINDS_WITH_ITEMS = frozenset({"return_refund", "exchange", "reship"})
# What a batch adds beside its tickets, in foreign-key order; nothing in the batch reads their ids.
DEPENDENT_ROWS = (TicketItem, TimelineEvent, SlaEvent, TicketDecision, FeedbackRecord, FeedbackItem)
# A platform clock a little ahead of ours is not an error; a request from the future is.
CLOCK_SKEW = timedelta(minutes=5)

# The batch's statements are built once, every value bound: building one and its cache key cost
# ~0.2 ms, and a batch of a few tickets (PostgreSQL's parallel batches) paid it per statement.
_TICKETS_BY_EXTERNAL_ID = select(Ticket).where(in_bound(Ticket.external_id, "external_ids"))
_ORDERS_WITH_ITEMS = (select(Order).where(in_bound(Order.external_id, "external_ids"))
                      .options(selectinload(Order.items)))
# sum() keeps the Money type, so this comes back in yuan (None when nothing was refunded).
_REFUNDED_BY_ORDER = (select(Ticket.order_id, func.sum(Ticket.refunded_amount))
                      .where(in_bound(Ticket.order_id, "order_ids")).group_by(Ticket.order_id))
_LAST_TICKET_ID = select(func.max(Ticket.id))
_PG_TICKET_IDS = text("SELECT nextval(pg_get_serial_sequence('tickets', 'id')) FROM generate_series(1, :n)")


@dataclass
class IntakeRequest:
    data: TicketIn
    actor: Principal


class NewTicket:
    """A ticket being opened: plain attributes named and defaulted like Ticket's columns, which
    the intake rules read and set as they would a Ticket, written by the batch's one INSERT. Not
    an ORM object: building, tracking and attaching 64 of them took ~15 % of a batch (bench F26)."""

    __slots__ = tuple(column.key for column in Ticket.__table__.columns)

    def __init__(self, **values: Any) -> None:
        for column in Ticket.__table__.columns:
            key = column.key
            setattr(self, key, values[key] if key in values else python_default(column))

    def row(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.__slots__}


@dataclass
class Opened:
    ticket: Ticket | NewTicket  # a NewTicket when this batch opened it (created), else the stored Ticket
    created: bool


# Per request: the ticket, or the error that request alone gets (the others go on).
Outcome = Opened | DomainError


@dataclass
class _Valid:
    index: int
    request: IntakeRequest
    order: Order
    amount: Decimal
    requested_at: datetime

    def claimed(self) -> list[OrderItem]:
        by_sku = {item.sku: item for item in self.order.items}
        return [by_sku[item.sku] for item in self.request.data.items]


class IntakeService:
    def __init__(self, session: AsyncSession, clock: Clock, tz: ZoneInfo) -> None:
        self.session = session
        self.clock = clock
        self.tz = tz

    async def open_tickets(self, requests: list[IntakeRequest], *, fresh_session: bool = False) -> list[Outcome]:
        """Open the requests' tickets (flushed, not committed). A request naming a known
        external_id gets that ticket back (created=False), even when it is earlier in the batch.

        `fresh_session`: nothing was written in this session yet (see `take_numbers`)."""
        now = self.clock.now()
        outcomes: list[Outcome | None] = [None] * len(requests)
        with self._reading(fresh_session):
            known = await self._known_external_ids(requests)
            valid, same_as = await self._check(requests, known, outcomes, now)
        for index, ticket in known.items():
            outcomes[index] = Opened(ticket, False)
        if valid:
            tickets = await self._create(valid, now, fresh_session)
            for entry, ticket in zip(valid, tickets):
                outcomes[entry.index] = Opened(ticket, True)
        elif fresh_session:
            await self.session.commit()  # end the reading: what the caller writes next takes the write lock
        for index, first in same_as.items():
            opened = outcomes[first]
            outcomes[index] = Opened(opened.ticket, False) if isinstance(opened, Opened) else opened
        assert all(outcome is not None for outcome in outcomes)
        return outcomes  # type: ignore[return-value]

    @staticmethod
    def _reading(fresh_session: bool) -> AbstractContextManager[None]:
        """In a fresh session the batch is read and decided in transactions that take no write
        lock on SQLite (reads_only); in a caller's transaction, in that transaction."""
        return reads_only() if fresh_session else nullcontext()

    # -- reading and checking the batch ------------------------------------------------------------

    async def _known_external_ids(self, requests: list[IntakeRequest]) -> dict[int, Ticket]:
        wanted = sorted({r.data.external_id for r in requests if r.data.external_id})
        if not wanted:
            return {}
        found = {t.external_id: t for t in (await self.session.execute(
            _TICKETS_BY_EXTERNAL_ID, {"external_ids": wanted})).scalars()}
        return {i: found[r.data.external_id] for i, r in enumerate(requests) if r.data.external_id in found}

    async def _check(
        self, requests: list[IntakeRequest], known: dict[int, Ticket], outcomes: list[Outcome | None], now: datetime
    ) -> tuple[list[_Valid], dict[int, int]]:
        """The requests that may open a ticket; the others get their error in `outcomes`.
        Also: which requests repeat an external_id an earlier request of the batch opens."""
        pending = [(i, r) for i, r in enumerate(requests) if i not in known]
        if not pending:
            return [], {}
        order_ids = sorted({r.data.order_external_id for _, r in pending})
        orders = {o.external_id: o for o in (await self.session.execute(
            _ORDERS_WITH_ITEMS, {"external_ids": order_ids})).scalars()}
        reasons = await existing_reasons(self.session, {r.data.reason_code for _, r in pending})
        refunded = await self._refunded({o.id for o in orders.values()})
        valid: list[_Valid] = []
        same_as: dict[int, int] = {}
        opening: dict[str, int] = {}
        for i, request in pending:
            data = request.data
            if data.external_id in opening:
                same_as[i] = opening[data.external_id]
                continue
            order = orders.get(data.order_external_id)
            try:
                if order is None:
                    raise InvalidInput.on("order_external_id", f"unknown order {data.order_external_id!r}")
                requested_at = data.requested_at or now
                amount = check_intake(data, order, data.reason_code in reasons, refunded.get(order.id), requested_at, now)
            except DomainError as exc:
                outcomes[i] = exc
                continue
            if data.external_id:
                opening[data.external_id] = i
            valid.append(_Valid(i, request, order, amount, requested_at))
        return valid, same_as

    async def _refunded(self, order_ids: set[int]) -> dict[int, Decimal]:
        if not order_ids:
            return {}
        rows = await self.session.execute(_REFUNDED_BY_ORDER, {"order_ids": sorted(order_ids)})
        return {order_id: amount or Decimal("0") for order_id, amount in rows}

    # -- writing the batch ------------------------------------------------------------------------

    async def _create(self, valid: list[_Valid], now: datetime, fresh_session: bool) -> list[NewTicket]:
        """In a fresh session, three transactions: the numbers (and any missing defaults), then
        reading and deciding the batch without the write lock, then writing it. The decisions
        then read the database as of a moment before the write, as a batch on PostgreSQL always
        did: another process's batch meanwhile is not in this one's customer histories and
        repeat counts (its external_ids are: the unique key fails the batch, and its requests
        are answered one by one)."""
        numbers = await self.take_numbers(now, len(valid), own_transaction=fresh_session)
        moves = TicketService(self.session, self.clock, self.tz, fresh=True)
        assignment = AssignmentService(self.session, self.clock, fresh=True)
        feedback = FeedbackService(self.session, self.clock, fresh=True)
        # Settled before any row is pending, and before the reading: each may write its defaults.
        current = await PolicyService(self.session, self.clock).current()
        await moves.sla.ensure_default_policy()
        await feedback.load_rules()
        if fresh_session:
            await self.session.commit()
        with collecting_rows(self.session):
            with self._reading(fresh_session):
                tickets = await self._decide_all(valid, now, numbers, current, moves, assignment, feedback)
            if fresh_session:
                await self.session.commit()  # the snapshot ends; the write lock is taken for the ids
            # The tickets were built whole with provisional ids (-1, -2, ...) and are written once, in
            # their final state: an INSERT then an UPDATE of every new row maintained each index twice.
            ids = dict(zip((t.id for t in tickets), await self._new_ids(len(tickets))))
            for ticket in tickets:
                ticket.id = ids[ticket.id]
            relabel_collected(self.session, "ticket_id", ids)
            for ticket in tickets:  # before the rows that refer to them
                add_row(self.session, Ticket, **ticket.row())
            await insert_pending(self.session, (Ticket, *DEPENDENT_ROWS))
        return tickets

    async def _decide_all(
        self, valid: list[_Valid], now: datetime, numbers: list[str], current: CurrentPolicy, moves: TicketService,
        assignment: AssignmentService, feedback: FeedbackService,
    ) -> list[NewTicket]:
        """Decide each ticket as if they had come one by one; their rows are collected, not written."""
        first_at = min(v.requested_at for v in valid)
        last_at = max(v.requested_at for v in valid)
        # Read before the batch's own tickets exist: they join the history one by one below.
        sources = await load_fact_sources(self.session, [v.order for v in valid], first_at, last_at)
        await feedback.prepare_repeats([(v.claimed() or list(v.order.items), v.request.data.reason_code, v.requested_at)
                                        for v in valid])
        tickets = [NewTicket(id=-n, **self._new_ticket(v, number, now)) for n, (v, number) in enumerate(zip(valid, numbers), 1)]
        for entry, ticket in zip(valid, tickets):
            data, claimed = entry.request.data, entry.claimed()
            for item, ordered in zip(data.items, claimed):
                add_row(self.session, TicketItem, ticket_id=ticket.id, order_item_id=ordered.id, sku=item.sku,
                        quantity=item.quantity, product_id=ordered.product_id, reason_code=data.reason_code,
                        requested_at=entry.requested_at)
            moves._record(ticket.id, entry.requested_at, entry.request.actor, "open", None, "requested", data.description,
                          {"received_at": now.isoformat()})
            await self._decide(ticket, entry.order, claimed, current, sources, moves, assignment)
            sources.add(ticket)
            await feedback.record_ticket(ticket, entry.order, claimed)
        return tickets

    async def _new_ids(self, count: int) -> list[int]:
        if self.session.get_bind().dialect.name == "postgresql":
            rows = await self.session.execute(_PG_TICKET_IDS, {"n": count})
            return sorted(row[0] for row in rows)
        # SQLite: this transaction holds the write lock (BEGIN IMMEDIATE), so nobody else takes these.
        last = await self.session.scalar(_LAST_TICKET_ID) or 0
        return list(range(last + 1, last + count + 1))

    def _new_ticket(self, entry: _Valid, number: str, now: datetime) -> dict[str, Any]:
        data = entry.request.data
        return dict(
            number=number, external_id=data.external_id, order_id=entry.order.id, customer_id=entry.order.customer_id,
            kind=data.kind, reason_code=data.reason_code, status="requested", requested_amount=entry.amount,
            refunded_amount=Decimal("0"), description=data.description, evidence_urls=list(data.evidence_urls),
            requested_at=entry.requested_at, received_at=now, updated_at=now, priority=0, version=1,
        )

    async def take_numbers(self, now: datetime, count: int, *, own_transaction: bool = False) -> list[str]:
        """AS-YYYYMMDD-NNNNNN with a per-day sequence: `count` numbers from one atomic upsert."""
        day = now.astimezone(self.tz).date()
        stmt = _take_numbers_statement(self.session.get_bind().dialect.name)
        if own_transaction:
            # The day's counter row is the one row every intake writes: holding its lock until the intake
            # commits serialized all intakes on PostgreSQL (bench F5), and on SQLite the batch is read
            # and decided without the write lock (_create). So end the read-only validation transaction
            # here and take the numbers in a short transaction of their own, on the same connection
            # (the caller commits it). An intake failing after this point leaves a gap in the day's numbers.
            await self.session.commit()
        last = (await self.session.execute(stmt, {"day": day, "n": count})).scalar_one()
        return [f"AS-{day:%Y%m%d}-{seq:06d}" for seq in range(last - count + 1, last + 1)]

    async def _decide(
        self, ticket: NewTicket, order: Order, claimed: list[OrderItem], current: CurrentPolicy, sources: FactSources,
        moves: TicketService, assignment: AssignmentService,
    ) -> None:
        """Apply the published policy: approve the standard cases, route the rest to a queue."""
        facts = intake_facts(ticket, order, claimed, self.tz, sources)
        decision = policy_rules.evaluate(current.policy, facts)
        outcome = decision.outcome
        explanation = decision.explain()
        if outcome.decision in ("approve", "fast_refund"):
            action = "auto_approve" if outcome.decision == "approve" else "fast_refund"
            if (ticket.status, action) not in workflow.TRANSITIONS[ticket.kind]:
                # The rule asked for a step this kind cannot take: a person decides instead.
                outcome = current.policy.default
                explanation += f" · {action} is not possible for {ticket.kind} → queue {outcome.queue}"
        add_row(
            self.session, TicketDecision, ticket_id=ticket.id, policy_version=current.version, decision=outcome.decision,
            rule=decision.rule, queue=outcome.queue, priority=outcome.priority, suggestion=outcome.suggestion, facts=facts,
            trace=decision.trace, explanation=explanation, decided_at=self.clock.now(),
        )
        # The SLA policy may depend on the queue and priority just decided, so the clocks start now.
        ticket.queue = outcome.queue
        ticket.priority = outcome.priority
        await moves.sla.start(ticket)
        data = {"policy_version": current.version, "rule": decision.rule, "suggestion": outcome.suggestion}
        extra: dict[str, Any] = {"policy_version": current.version}
        if outcome.decision == "queue":
            extra.update(queue=outcome.queue, priority=outcome.priority)
            await moves._move(ticket, "route_to_review", SYSTEM, note=explanation, data={**data, "queue": outcome.queue}, extra=extra)
            await assignment.auto_assign(ticket, SYSTEM)
            return
        # An automatic decision is an immediate first response.
        extra["first_response_at"] = self.clock.now()
        action = "auto_approve" if outcome.decision == "approve" else "fast_refund"
        await moves._move(ticket, action, SYSTEM, note=explanation, data=data, extra=extra)


@functools.cache
def _take_numbers_statement(dialect: str) -> Any:
    """`n` more numbers of `day`'s sequence, in one atomic upsert that returns the last one."""
    n = bindparam("n", type_=Integer())
    return (insert_for(dialect, TicketNumberCounter).values(day=bindparam("day"), last=n)
            .on_conflict_do_update(index_elements=["day"], set_={"last": TicketNumberCounter.last + n})
            .returning(TicketNumberCounter.last))


def check_intake(data: TicketIn, order: Order, reason_known: bool, already: Decimal | None, requested_at: datetime,
                 now: datetime) -> Decimal:
    """The request against its order; returns the requested amount. Raises for the first problem."""
    if not reason_known:
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
    left = order.paid_amount - (already or Decimal("0"))
    if amount > left:
        raise InvalidInput.on("requested_amount", f"¥{amount} exceeds the ¥{left} still refundable on this order")
    return amount
