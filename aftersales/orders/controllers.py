"""JSON API for the integrations that feed orders, shipments and tracking events."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post, put
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.auth.guards import FEED, READ_TICKETS, current_principal, requires
from aftersales.clock import Clock
from aftersales.db import run_retrying
from aftersales.idempotency import fingerprint, run_once
from aftersales.orders.schemas import (
    OrderIn,
    OrderOut,
    ShipmentIn,
    ShipmentOut,
    TrackingBatchIn,
    TrackingResult,
    order_out,
    shipment_out,
)
from aftersales.orders.service import OrderService
from aftersales.settings import Settings
from aftersales.tickets.service import TicketService
from aftersales.web import encode, idempotency_key, json_response

ExternalIdPath = Annotated[str, Parameter(min_length=1, max_length=64, pattern=r"^\S+$")]


class OrderController(Controller):
    path = "/api/v1"
    tags = ["orders and logistics"]

    @put("/orders/{external_id:str}", guards=[requires(*FEED)], status_code=200)
    async def put_order(self, external_id: ExternalIdPath, data: OrderIn, db_session: AsyncSession, clock: Clock) -> Response[OrderOut]:
        """Create or update an order with its items, customer and live session."""
        order, created = await OrderService(db_session, clock).upsert_order(external_id, data)
        await db_session.commit()
        return Response(order_out(order, created=created), status_code=201 if created else 200)

    @get("/orders/{external_id:str}", guards=[requires(*READ_TICKETS)])
    async def get_order(self, external_id: ExternalIdPath, db_session: AsyncSession, clock: Clock) -> OrderOut:
        return order_out(await OrderService(db_session, clock).get_order(external_id))

    @post("/shipments", guards=[requires(*FEED)])
    async def post_shipment(self, data: ShipmentIn, db_session: AsyncSession, clock: Clock) -> Response[ShipmentOut]:
        """Register a shipment; registering the same carrier and tracking number again changes nothing."""
        shipment, created = await OrderService(db_session, clock).register_shipment(data)
        await db_session.commit()
        return Response(shipment_out(shipment, created=created), status_code=201 if created else 200)

    @post("/tracking-events", guards=[requires(*FEED)], status_code=200)
    async def post_tracking_events(
        self, request: Request[Any, Any, Any], data: TrackingBatchIn, db_session: AsyncSession, clock: Clock, settings: Settings
    ) -> Response[TrackingResult]:
        """Ingest up to 1,000 carrier events; repeats, out-of-order events and full snapshots are safe."""
        principal = current_principal(request)
        tickets = TicketService(db_session, clock, settings.zone)

        async def run() -> tuple[int, bytes]:
            result = await OrderService(db_session, clock).ingest_tracking(
                data.events, limit=settings.max_tracking_batch, on_delivered=tickets.apply_carrier_delivery,
                fresh_session=not db_session.in_transaction(),  # an Idempotency-Key lookup has begun one
            )
            return 200, encode(TrackingResult(**result))

        print_ = fingerprint("POST", request.url.path, await request.body())
        # Two batches touching the same parcels can still deadlock on PostgreSQL (rows are locked in
        # id order, but a ticket moved by a delivery locks more); the loser simply runs again.
        status, body, replayed = await run_retrying(db_session, lambda: run_once(
            db_session, clock, scope=principal.actor, key=idempotency_key(request), print_=print_, run=run,
        ))
        return json_response(status, body, replayed=replayed)
