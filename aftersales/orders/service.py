"""The only code that writes orders, shipments and tracking events."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from aftersales.clock import Clock, ensure_utc
from aftersales.db import dialect_insert, reads_only, sqlite_datetime_text
from aftersales.errors import FieldError, InvalidInput, NotFound
from aftersales.orders import carriers
from aftersales.orders.models import Customer, LiveSession, Order, OrderItem, Shipment, TrackingEvent
from aftersales.orders.schemas import OrderIn, ShipmentIn, TrackingEventIn
from aftersales.schemas import money_field

# Called when a return or replacement parcel is delivered: (shipment, delivering event) -> ticket number.
DeliveryHook = Callable[[Shipment, TrackingEvent], Awaitable[str | None]]


class OrderService:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self.session = session
        self.clock = clock

    # -- orders ---------------------------------------------------------------------------

    async def upsert_order(self, external_id: str, data: OrderIn) -> tuple[Order, bool]:
        self._check_order(data)
        now = self.clock.now()
        customer_id = await self._upsert_customer(data)
        session_id = await self._upsert_live_session(data) if data.live_session else None
        values = {
            "shop": data.shop,
            "channel": data.channel,
            "customer_id": customer_id,
            "live_session_id": session_id,
            "paid_amount": data.paid_amount,
            "placed_at": data.placed_at,
            "paid_at": data.paid_at,
            "updated_at": now,
        }
        stmt = (
            dialect_insert(self.session, Order)
            .values(external_id=external_id, created_at=now, **values)
            .on_conflict_do_nothing(index_elements=["external_id"])
        )
        created = (await self.session.execute(stmt)).rowcount == 1
        order = await self._load_order(external_id)
        if not created:
            await self.session.execute(update(Order).where(Order.id == order.id).values(**values))
        await self._sync_items(order, data)
        self.session.expire(order)
        return await self._load_order(external_id), created

    def _check_order(self, data: OrderIn) -> None:
        money_field(data.paid_amount, "paid_amount")
        skus: set[str] = set()
        for i, item in enumerate(data.items):
            money_field(item.unit_price, f"items[{i}].unit_price")
            if item.sku in skus:
                raise InvalidInput.on(f"items[{i}].sku", f"duplicate sku {item.sku!r} in one order")
            skus.add(item.sku)
        if data.paid_at and data.paid_at < data.placed_at:
            raise InvalidInput.on("paid_at", "is before placed_at")

    async def _upsert_customer(self, data: OrderIn) -> int:
        c = data.customer
        stmt = dialect_insert(self.session, Customer).values(
            external_id=c.external_id, name=c.name, created_at=self.clock.now()
        )
        stmt = stmt.on_conflict_do_update(index_elements=["external_id"], set_={"name": c.name})
        await self.session.execute(stmt)
        return (await self.session.execute(select(Customer.id).where(Customer.external_id == c.external_id))).scalar_one()

    async def _upsert_live_session(self, data: OrderIn) -> int:
        ls = data.live_session
        assert ls is not None
        values = {"host": ls.host, "title": ls.title, "started_at": ls.started_at, "ended_at": ls.ended_at}
        stmt = dialect_insert(self.session, LiveSession).values(external_id=ls.external_id, **values)
        stmt = stmt.on_conflict_do_update(index_elements=["external_id"], set_=values)
        await self.session.execute(stmt)
        query = select(LiveSession.id).where(LiveSession.external_id == ls.external_id)
        return (await self.session.execute(query)).scalar_one()

    async def _sync_items(self, order: Order, data: OrderIn) -> None:
        """Items are matched by SKU; one that a ticket refers to is never deleted."""
        from aftersales.tickets.models import TicketItem

        existing = {item.sku: item for item in order.items}
        for item in data.items:
            fields = {
                "product_id": item.product_id,
                "product_name": item.product_name,
                "category": item.category,
                "quantity": item.quantity,
                "unit_price": item.unit_price,
                "no_reason_excluded": item.no_reason_excluded,
            }
            if item.sku in existing:
                await self.session.execute(update(OrderItem).where(OrderItem.id == existing[item.sku].id).values(**fields))
            else:
                self.session.add(OrderItem(order_id=order.id, sku=item.sku, **fields))
        gone = [row for sku, row in existing.items() if sku not in {i.sku for i in data.items}]
        for row in gone:
            used = await self.session.scalar(select(TicketItem.id).where(TicketItem.order_item_id == row.id).limit(1))
            if used is not None:
                raise InvalidInput.on("items", f"sku {row.sku!r} is part of an after-sales ticket and cannot be removed")
            await self.session.delete(row)
        await self.session.flush()

    async def _load_order(self, external_id: str) -> Order:
        query = (
            select(Order)
            .where(Order.external_id == external_id)
            .options(selectinload(Order.items), selectinload(Order.customer), selectinload(Order.live_session))
            .execution_options(populate_existing=True)
        )
        order = (await self.session.execute(query)).scalar_one_or_none()
        if order is None:
            raise NotFound(f"order {external_id!r} does not exist")
        return order

    async def get_order(self, external_id: str) -> Order:
        return await self._load_order(external_id)

    # -- shipments ------------------------------------------------------------------------

    async def register_shipment(self, data: ShipmentIn, *, field_prefix: str = "") -> tuple[Shipment, bool]:
        from aftersales.tickets.models import Ticket

        order_id = await self.session.scalar(select(Order.id).where(Order.external_id == data.order_external_id))
        if order_id is None:
            raise InvalidInput.on(field_prefix + "order_external_id", f"unknown order {data.order_external_id!r}")
        if data.direction == "outbound" and data.ticket_id is not None:
            raise InvalidInput.on(field_prefix + "ticket_id", "an outbound shipment belongs to the order, not to a ticket")
        if data.direction != "outbound":
            if data.ticket_id is None:
                raise InvalidInput.on(field_prefix + "ticket_id", f"a {data.direction} shipment needs its ticket")
            ticket_order = await self.session.scalar(select(Ticket.order_id).where(Ticket.id == data.ticket_id))
            if ticket_order is None:
                raise InvalidInput.on(field_prefix + "ticket_id", f"unknown ticket {data.ticket_id}")
            if ticket_order != order_id:
                raise InvalidInput.on(field_prefix + "ticket_id", "the ticket belongs to another order")
        existing = await self._find_shipment(data.carrier, data.tracking_number)
        if existing is not None:
            same = (existing.order_id, existing.direction, existing.ticket_id) == (order_id, data.direction, data.ticket_id)
            if not same:
                raise InvalidInput.on(
                    field_prefix + "tracking_number",
                    f"{data.carrier} {data.tracking_number} is already registered for another order or direction",
                )
            return existing, False
        shipment = Shipment(
            order_id=order_id,
            ticket_id=data.ticket_id,
            direction=data.direction,
            carrier=data.carrier,
            tracking_number=data.tracking_number,
            created_at=self.clock.now(),
        )
        self.session.add(shipment)
        await self.session.flush()
        await self._adopt_orphan_events(shipment)
        return shipment, True

    async def _find_shipment(self, carrier: str, tracking_number: str) -> Shipment | None:
        query = select(Shipment).where(Shipment.carrier == carrier, Shipment.tracking_number == tracking_number)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def _adopt_orphan_events(self, shipment: Shipment) -> None:
        """Carriers may push before the shipment is registered; those events are kept and linked now."""
        await self.session.execute(
            update(TrackingEvent)
            .where(
                TrackingEvent.carrier == shipment.carrier,
                TrackingEvent.tracking_number == shipment.tracking_number,
                TrackingEvent.shipment_id.is_(None),
            )
            .values(shipment_id=shipment.id)
        )
        await self._refresh_shipment_status(shipment.id)

    # -- tracking events --------------------------------------------------------------------

    def normalize_batch(self, events: list[TrackingEventIn], limit: int) -> list[dict[str, Any]]:
        """Validate the whole batch before writing anything, naming the first bad field."""
        if not events:
            raise InvalidInput.on("events", "must contain at least one event")
        if len(events) > limit:
            raise InvalidInput.on("events", f"has {len(events)} events; a batch holds at most {limit}")
        rows: list[dict[str, Any]] = []
        errors: list[FieldError] = []
        now = self.clock.now()
        for i, ev in enumerate(events):
            try:
                status = carriers.normalize_status(ev.source, ev.status)
            except (carriers.UnknownCarrierStatus, carriers.UnknownSource) as exc:
                errors.append(FieldError(f"events[{i}].status", str(exc)))
                continue
            raw = str(ev.status).strip()
            rows.append(
                {
                    "carrier": ev.carrier,
                    "tracking_number": ev.tracking_number,
                    "source": ev.source,
                    "raw_status": raw,
                    "status": status,
                    "occurred_at": ev.occurred_at,
                    "location": ev.location,
                    "description": ev.description,
                    "event_id": ev.event_id,
                    "dedupe_key": ev.event_id or _event_digest(ev.source, raw, ev.occurred_at),
                    "received_at": now,
                }
            )
        if errors:
            raise InvalidInput("; ".join(f"{e.field}: {e.reason}" for e in errors[:5]), errors=errors)
        return rows

    async def ingest_tracking(
        self, events: list[TrackingEventIn], *, limit: int, on_delivered: DeliveryHook | None = None,
        fresh_session: bool = False,
    ) -> dict[str, Any]:
        """`fresh_session`: nothing was read or written in this session yet. On SQLite the batch's
        parcels are then read, and its events folded into them, before the write lock is taken, so
        that a second process waits for the lock only while this batch writes (bench F30)."""
        rows = self.normalize_batch(events, limit)
        keys = {(r["carrier"], r["tracking_number"]) for r in rows}
        early = fresh_session and self.session.get_bind().dialect.name == "sqlite"
        with reads_only() if early else nullcontext():
            shipments = await self._shipments_for(keys)
        if early:
            await self.session.commit()  # the reading ends; the INSERT below takes the write lock
        for row in rows:
            shipment = shipments.get((row["carrier"], row["tracking_number"]))
            row["shipment_id"] = shipment.id if shipment else None
        # The whole batch is folded, replays too: a parcel already reflects every stored event.
        moves = fold_events({s.id: s for s in shipments.values()}, _by_shipment(rows))
        stored = await self._insert_new_events(rows)
        newly_delivered = await self._move_parcels(moves)
        moved: list[str] = []
        for shipment_id in sorted(newly_delivered):
            if on_delivered is None:
                break
            event = await self.session.scalar(
                select(TrackingEvent).where(TrackingEvent.shipment_id == shipment_id, TrackingEvent.status == "delivered")
                .order_by(TrackingEvent.occurred_at).limit(1)
            )
            # Only the few parcels this batch delivered become ORM objects (the hook moves their tickets).
            shipment = await self.session.get(Shipment, shipment_id, populate_existing=True)
            number = await on_delivered(shipment, event) if event and shipment else None
            if number:
                moved.append(number)
        return {
            "received": len(rows),
            "stored": len(stored),
            "duplicates": len(rows) - len(stored),
            "unmatched": sum(1 for row in stored if row["shipment_id"] is None),
            "shipments_updated": len(_by_shipment(stored)),
            "tickets_moved": moved,
        }

    async def _move_parcels(self, moves: ParcelMoves) -> set[int]:
        """Write what fold_events found; returns the parcels this batch made delivered.

        The parcels may have been read before this transaction (ingest_tracking): each UPDATE
        applies only where the row is still behind the batch, so a parcel another batch moved on
        meanwhile is never moved back, and whether a parcel was delivered before is asked now."""
        delivered_now = await self._undelivered(sorted(moves.deliveries))
        # Rows are locked in one global order (by id) so concurrent batches cannot deadlock on
        # PostgreSQL; each statement is one cached executemany.
        if moves.latest:
            statement = _move_to_latest(self.session.get_bind().dialect.name)
            await self.session.execute(statement, sorted(moves.latest, key=lambda r: r["b_id"]))
        if moves.deliveries:
            await self.session.execute(_SIGN_FOR, [{"b_id": i, "b_at": at} for i, at in sorted(moves.deliveries.items())])
        if moves.signed_orders:
            # Sign-for of the outbound parcel starts the 7-day no-reason window.
            await self.session.execute(_ORDER_SIGNED_FOR, [{"b_id": i, "b_at": at} for i, at in sorted(moves.signed_orders.items())])
        return delivered_now

    async def _undelivered(self, shipment_ids: list[int]) -> set[int]:
        if not shipment_ids:
            return set()
        rows = await self.session.execute(_UNDELIVERED, {"ids": shipment_ids})
        return {row[0] for row in rows}

    async def _shipments_for(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], Any]:
        """The batch's parcels as plain rows with the columns the fold reads: loading ~500 ORM
        objects (and flushing what changed on them) was most of a batch's Python (bench F17)."""
        found: dict[tuple[str, str], Any] = {}
        ordered = sorted(keys)
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            # Two IN lists (not a row-value IN, which SQLite scans) so the unique
            # (carrier, tracking_number) index is searched on both backends.
            carriers_in = sorted({c for c, _ in chunk})
            numbers_in = sorted({n for _, n in chunk})
            for s in (await self.session.execute(_SHIPMENTS_BY_KEY, {"carriers": carriers_in, "numbers": numbers_in})):
                if (s.carrier, s.tracking_number) in keys:
                    found[(s.carrier, s.tracking_number)] = s
        return found

    async def _insert_new_events(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Insert, skipping rows already stored (replays) and repeats inside the batch itself."""
        unique: dict[tuple[str, str, str], dict[str, Any]] = {}
        for row in rows:
            unique.setdefault((row["carrier"], row["tracking_number"], row["dedupe_key"]), row)
        candidates = [unique[key] for key in sorted(unique)]  # a stable insert order, same reason
        if not candidates:
            return []
        if self.session.get_bind().dialect.name == "sqlite":
            inserted = await self._insert_events_sqlite(candidates)
            return [row for key, row in unique.items() if key in inserted]
        table = TrackingEvent.__table__
        # A Core executemany ("insertmanyvalues"): its SQL is compiled once and cached, where a
        # 500-row .values() list was compiled anew for every batch (most of the request's CPU).
        stmt = (
            dialect_insert(self.session, table)
            .on_conflict_do_nothing(index_elements=["carrier", "tracking_number", "dedupe_key"])
            .returning(table.c.carrier, table.c.tracking_number, table.c.dedupe_key)
        )
        columns = [c.name for c in table.columns if c.name in candidates[0]]
        params = [{c: row[c] for c in columns} for row in candidates]
        result = await self.session.execute(stmt, params)
        inserted = {(r[0], r[1], r[2]) for r in result}
        return [row for key, row in unique.items() if key in inserted]

    async def _insert_events_sqlite(self, candidates: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
        """The same insert as plain sqlite3 executemany, the batch's keys read back by rowid: even a
        cached Core executemany processed every row's 12 parameters in Python, inside the write
        lock (bench F23). This transaction began with BEGIN IMMEDIATE, so no one else inserts until
        it ends, and a rowid table numbers new rows from its largest id up: the rows above the
        largest id before the insert are exactly the ones this batch stored."""
        conn = await self.session.connection()
        before = (await conn.exec_driver_sql(_SQLITE_MAX_EVENT_ID)).scalar_one()
        await conn.exec_driver_sql(_SQLITE_INSERT_EVENTS, [
            (row["shipment_id"], row["carrier"], row["tracking_number"], row["source"], row["raw_status"], row["status"],
             sqlite_datetime_text(row["occurred_at"]), row["location"], row["description"], row["event_id"],
             row["dedupe_key"], sqlite_datetime_text(row["received_at"]))
            for row in candidates
        ])
        result = await conn.exec_driver_sql(_SQLITE_EVENT_KEYS_AFTER, (before,))
        return {(r[0], r[1], r[2]) for r in result}

    async def _refresh_shipment_status(self, shipment_id: int) -> tuple[Shipment, TrackingEvent] | None:
        """The shipment's status is always that of its latest event, whatever order they came in.

        Returns (shipment, event) when this refresh is what made the shipment delivered.
        """
        shipment = await self.session.get(Shipment, shipment_id, populate_existing=True)
        assert shipment is not None
        latest = (
            await self.session.execute(
                select(TrackingEvent)
                .where(TrackingEvent.shipment_id == shipment_id)
                # Same-second scans are ordered by progress, not by arrival, so replays in any order agree.
                .order_by(TrackingEvent.occurred_at.desc(), case(carriers.PROGRESS, value=TrackingEvent.status, else_=0).desc(),
                          _by_code_point(TrackingEvent.raw_status, self.session.get_bind().dialect.name).desc())
                .limit(1)
            )
        ).scalar_one_or_none()
        if latest is None:
            return None
        delivered = (
            await self.session.execute(
                select(TrackingEvent)
                .where(TrackingEvent.shipment_id == shipment_id, TrackingEvent.status == "delivered")
                .order_by(TrackingEvent.occurred_at)
                .limit(1)
            )
        ).scalar_one_or_none()
        newly_delivered = delivered is not None and shipment.delivered_at is None
        result = await self.session.execute(
            update(Shipment)
            .where(Shipment.id == shipment_id)
            .values(
                status=latest.status,
                raw_status=latest.raw_status,
                status_source=latest.source,
                last_event_at=latest.occurred_at,
                delivered_at=delivered.occurred_at if delivered is not None else None,
            )
            .returning(Shipment.id)
        )
        result.all()
        await self.session.refresh(shipment)
        if delivered is not None and shipment.direction == "outbound":
            # Sign-for of the outbound parcel starts the 7-day no-reason window.
            await self.session.execute(
                update(Order)
                .where(Order.id == shipment.order_id, Order.delivered_at.is_(None))
                .values(delivered_at=delivered.occurred_at)
            )
        return (shipment, delivered) if newly_delivered and delivered is not None else None

    async def shipments_for_order(self, order_id: int) -> list[Shipment]:
        query = (
            select(Shipment)
            .where(Shipment.order_id == order_id)
            .options(selectinload(Shipment.events))
            .order_by(Shipment.created_at, Shipment.id)
        )
        return list((await self.session.execute(query)).scalars())


@dataclass
class ParcelMoves:
    """What a batch changes on its parcels: their latest event (as _move_to_latest's parameters),
    their earliest delivery, and the sign-for of outbound parcels' orders."""

    latest: list[dict[str, Any]] = field(default_factory=list)
    deliveries: dict[int, datetime] = field(default_factory=dict)
    signed_orders: dict[int, datetime] = field(default_factory=dict)


def fold_events(shipments: dict[int, Any], events_by_shipment: dict[int, list[dict[str, Any]]]) -> ParcelMoves:
    """Fold a batch's events into each parcel's status without re-reading its history: the latest
    event wins (same-second scans by progress), the earliest delivery is the sign-for."""
    moves = ParcelMoves()
    for shipment_id, events in events_by_shipment.items():
        shipment = shipments[shipment_id]
        latest = max(events, key=_event_order)
        current = (shipment.last_event_at, carriers.PROGRESS.get(shipment.status or "", 0), shipment.raw_status or "")
        if shipment.last_event_at is None or _event_order(latest) > current:
            moves.latest.append({"b_id": shipment_id, "b_status": latest["status"], "b_raw_status": latest["raw_status"],
                                 "b_source": latest["source"], "b_at": latest["occurred_at"],
                                 "b_progress": carriers.PROGRESS.get(latest["status"], 0)})
        first = min((e["occurred_at"] for e in events if e["status"] == "delivered"), default=None)
        if first is not None and (shipment.delivered_at is None or first < shipment.delivered_at):
            moves.deliveries[shipment_id] = first
            if shipment.direction == "outbound":
                moves.signed_orders[shipment.order_id] = min(first, moves.signed_orders.get(shipment.order_id, first))
    return moves


def _by_shipment(rows: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    grouped: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        if row["shipment_id"] is not None:
            grouped.setdefault(row["shipment_id"], []).append(row)
    return grouped


_S = Shipment.__table__
_SHIPMENTS_BY_KEY = select(
    _S.c.id, _S.c.carrier, _S.c.tracking_number, _S.c.direction, _S.c.order_id, _S.c.status, _S.c.raw_status,
    _S.c.last_event_at, _S.c.delivered_at,
).where(_S.c.carrier.in_(bindparam("carriers", expanding=True)), _S.c.tracking_number.in_(bindparam("numbers", expanding=True)))


def _by_code_point(text_value: Any, dialect: str) -> Any:
    """Text compared by code point, as Python compares it: SQLite's BINARY does, PostgreSQL follows the
    column's collation unless told (en_US puts "exception" before "InTransit")."""
    return text_value.collate("C") if dialect == "postgresql" else text_value


@functools.cache
def _move_to_latest(dialect: str) -> Any:
    """The batch's latest event becomes the parcel's status only where it is later than the row's
    own: later in time, or at the same second further along, then by raw status (_event_order).
    Raw statuses compare by code point, as in Python (_by_code_point)."""
    progress = case(carriers.PROGRESS, value=_S.c.status, else_=0)
    at = bindparam("b_at", type_=_S.c.last_event_at.type)
    raw = _by_code_point(func.coalesce(_S.c.raw_status, ""), dialect)
    return (
        update(_S)
        .where(_S.c.id == bindparam("b_id"), or_(
            _S.c.last_event_at.is_(None),
            _S.c.last_event_at < at,
            and_(_S.c.last_event_at == at, or_(
                progress < bindparam("b_progress"),
                and_(progress == bindparam("b_progress"), raw < bindparam("b_raw_status")),
            )),
        ))
        .values(status=bindparam("b_status"), raw_status=bindparam("b_raw_status"), status_source=bindparam("b_source"),
                last_event_at=at)
    )


def _earliest_delivery(table: Any) -> Any:
    """delivered_at := b_at where none or a later one is recorded: the earliest delivery is the sign-for."""
    at = bindparam("b_at", type_=table.c.delivered_at.type)
    return (update(table).where(table.c.id == bindparam("b_id"), or_(table.c.delivered_at.is_(None), table.c.delivered_at > at))
            .values(delivered_at=at))


_SIGN_FOR = _earliest_delivery(_S)
_ORDER_SIGNED_FOR = _earliest_delivery(Order.__table__)
_UNDELIVERED = select(_S.c.id).where(_S.c.id.in_(bindparam("ids", expanding=True)), _S.c.delivered_at.is_(None))

_SQLITE_MAX_EVENT_ID = "SELECT coalesce(max(id), 0) FROM tracking_events"
_SQLITE_INSERT_EVENTS = (
    "INSERT INTO tracking_events (shipment_id, carrier, tracking_number, source, raw_status, status, occurred_at,"
    " location, description, event_id, dedupe_key, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (carrier, tracking_number, dedupe_key) DO NOTHING"
)
_SQLITE_EVENT_KEYS_AFTER = "SELECT carrier, tracking_number, dedupe_key FROM tracking_events WHERE id > ?"


def _event_order(event: dict[str, Any]) -> tuple[datetime, int, str]:
    """Latest first by time; at the same second the scan further along wins (as in the SQL refresh)."""
    return (ensure_utc(event["occurred_at"]), carriers.PROGRESS.get(event["status"], 0), event["raw_status"])


def _event_digest(source: str, raw: str, occurred_at: datetime) -> str:
    # Without the source's event id, an event is its (time, status) on this parcel.
    text = f"{source}|{raw}|{ensure_utc(occurred_at).isoformat()}"
    return "h:" + hashlib.sha256(text.encode()).hexdigest()[:40]
