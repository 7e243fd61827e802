"""Queries over tickets: the filtered keyset listing and the whole chain of one ticket."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from aftersales.clock import ensure_utc
from aftersales.errors import InvalidInput, NotFound
from aftersales.schemas import check_id
from aftersales.orders.models import Order, OrderItem, Shipment
from aftersales.tickets.models import Ticket, TicketDecision, TicketItem, TimelineEvent


@dataclass
class TicketFilter:
    statuses: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    reason_codes: list[str] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)
    assignee_id: int | None = None
    unassigned: bool = False
    order_external_id: str | None = None
    customer_id: int | None = None
    requested_from: datetime | None = None
    requested_to: datetime | None = None
    ascending: bool = False


def encode_cursor(ticket: Ticket) -> str:
    raw = json.dumps([ensure_utc(ticket.requested_at).isoformat(), ticket.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, ticket_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return ensure_utc(datetime.fromisoformat(at)), int(ticket_id)
    except (ValueError, TypeError) as exc:
        raise InvalidInput.on("cursor", "is not a cursor this service handed out") from exc


class TicketRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def list_page(self, flt: TicketFilter, *, limit: int, cursor: str | None) -> tuple[list[Ticket], str | None]:
        query = await self._filtered(flt)
        order_cols = (Ticket.requested_at, Ticket.id)
        if cursor:
            at, ticket_id = decode_cursor(cursor)
            key = tuple_(*order_cols)
            query = query.where(key > tuple_(at, ticket_id) if flt.ascending else key < tuple_(at, ticket_id))
        if flt.ascending:
            query = query.order_by(Ticket.requested_at.asc(), Ticket.id.asc())
        else:
            query = query.order_by(Ticket.requested_at.desc(), Ticket.id.desc())
        rows = list((await self.session.execute(query.limit(limit + 1))).scalars())
        next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
        return rows[:limit], next_cursor

    async def _filtered(self, flt: TicketFilter) -> Select[tuple[Ticket]]:
        query = select(Ticket)
        if flt.statuses:
            query = query.where(Ticket.status.in_(flt.statuses))
        if flt.kinds:
            query = query.where(Ticket.kind.in_(flt.kinds))
        if flt.reason_codes:
            query = query.where(Ticket.reason_code.in_(flt.reason_codes))
        if flt.queues:
            query = query.where(Ticket.queue.in_(flt.queues))
        if flt.assignee_id is not None:
            query = query.where(Ticket.assignee_id == flt.assignee_id)
        if flt.unassigned:
            query = query.where(Ticket.assignee_id.is_(None))
        if flt.customer_id is not None:
            query = query.where(Ticket.customer_id == flt.customer_id)
        if flt.order_external_id:
            order_id = await self.session.scalar(select(Order.id).where(Order.external_id == flt.order_external_id))
            query = query.where(Ticket.order_id == (order_id or -1))
        if flt.requested_from:
            query = query.where(Ticket.requested_at >= flt.requested_from)
        if flt.requested_to:
            query = query.where(Ticket.requested_at < flt.requested_to)
        return query

    async def load_chain(self, ticket_id: int) -> "TicketChain":
        check_id(ticket_id, "ticket")
        query = (
            select(Ticket)
            .where(Ticket.id == ticket_id)
            .options(
                selectinload(Ticket.items),
                selectinload(Ticket.events),
                selectinload(Ticket.order).selectinload(Order.items),
                selectinload(Ticket.order).selectinload(Order.customer),
                selectinload(Ticket.order).selectinload(Order.live_session),
            )
            .execution_options(populate_existing=True)
        )
        ticket = (await self.session.execute(query)).scalar_one_or_none()
        if ticket is None:
            raise NotFound(f"ticket {ticket_id} does not exist")
        shipments_q = (
            select(Shipment)
            .where(Shipment.order_id == ticket.order_id)
            .where((Shipment.direction == "outbound") | (Shipment.ticket_id == ticket.id))
            .options(selectinload(Shipment.events))
            .order_by(Shipment.created_at, Shipment.id)
        )
        shipments = list((await self.session.execute(shipments_q)).scalars())
        decision = await self.session.get(TicketDecision, ticket.id)
        return TicketChain(ticket=ticket, shipments=shipments, decision=decision)

    async def customer_history(self, customer_id: int, *, exclude_id: int, limit: int = 20) -> list[Ticket]:
        query = (
            select(Ticket)
            .where(Ticket.customer_id == customer_id, Ticket.id != exclude_id)
            .order_by(Ticket.requested_at.desc(), Ticket.id.desc())
            .limit(limit)
        )
        return list((await self.session.execute(query)).scalars())


@dataclass
class TicketChain:
    ticket: Ticket
    shipments: list[Shipment]
    decision: TicketDecision | None = None

    def item_lookup(self) -> dict[int, OrderItem]:
        return {item.id: item for item in self.ticket.order.items}

    def ticket_items(self) -> list[tuple[TicketItem, OrderItem]]:
        lookup = self.item_lookup()
        return [(ti, lookup[ti.order_item_id]) for ti in self.ticket.items]

    def timeline(self) -> list[TimelineEvent]:
        return sorted(self.ticket.events, key=lambda e: (e.at, e.id))

    def chain(self) -> list[dict[str, Any]]:
        """Order, logistics and ticket steps merged into one time-ordered list."""
        order = self.ticket.order
        entries: list[dict[str, Any]] = [
            {"at": order.placed_at, "kind": "order", "title": "order_placed", "detail": order.external_id, "status": None, "ref": order.external_id}
        ]
        if order.paid_at:
            entries.append({"at": order.paid_at, "kind": "order", "title": "order_paid", "detail": str(order.paid_amount), "status": None, "ref": order.external_id})
        for shipment in self.shipments:
            for ev in shipment.events:
                entries.append({
                    "at": ev.occurred_at,
                    "kind": f"{shipment.direction}_tracking",
                    "title": ev.status,
                    "detail": " · ".join(x for x in (ev.location, ev.description) if x),
                    "status": ev.status,
                    "ref": f"{shipment.carrier} {shipment.tracking_number}",
                })
        for ev in self.ticket.events:
            entries.append({
                "at": ev.at,
                "kind": "ticket",
                "title": ev.action,
                "detail": ev.note,
                "status": ev.to_status,
                "ref": ev.actor,
            })
        # Stable sort: equal times keep order → logistics → ticket, and ticket events their id order.
        return sorted(entries, key=lambda e: ensure_utc(e["at"]))


__all__ = ["TicketChain", "TicketFilter", "TicketRepository", "decode_cursor", "encode_cursor", "TicketItem", "Any"]
