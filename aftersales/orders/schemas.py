"""API bodies for orders, shipments and tracking events."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

import msgspec

from aftersales.schemas import NO_NUL, AwareDatetime, DbInt, ExternalId, Quantity, ShortText

Direction = Literal["outbound", "return", "replacement"]
Source = Literal["kuaidi100", "aftership", "17track", "canonical"]
Carrier = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[^\x00]+$")]
TrackingNumber = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^\S+$")]


class CustomerIn(msgspec.Struct, kw_only=True):
    external_id: ExternalId
    name: ShortText = ""


class LiveSessionIn(msgspec.Struct, kw_only=True):
    external_id: ExternalId
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=NO_NUL)]
    title: ShortText = ""
    started_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None


class OrderItemIn(msgspec.Struct, kw_only=True):
    sku: ExternalId
    product_id: ExternalId
    product_name: Annotated[str, msgspec.Meta(min_length=1, max_length=300, pattern=NO_NUL)]
    category: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NO_NUL)]
    quantity: Quantity
    unit_price: Decimal
    # Excluded from the 7-day no-reason return at checkout (custom-made, perishable, unsealed digital...).
    no_reason_excluded: bool = False


class OrderIn(msgspec.Struct, kw_only=True):
    customer: CustomerIn
    placed_at: AwareDatetime
    paid_amount: Decimal
    items: Annotated[list[OrderItemIn], msgspec.Meta(min_length=1, max_length=200)]
    live_session: LiveSessionIn | None = None
    paid_at: AwareDatetime | None = None
    shop: ShortText = ""
    channel: ShortText = ""


class OrderItemOut(msgspec.Struct, kw_only=True):
    id: int
    sku: str
    product_id: str
    product_name: str
    category: str
    quantity: int
    unit_price: Decimal
    no_reason_excluded: bool = False


class LiveSessionOut(msgspec.Struct, kw_only=True):
    external_id: str
    host: str
    title: str
    started_at: datetime | None
    ended_at: datetime | None


class CustomerOut(msgspec.Struct, kw_only=True):
    external_id: str
    name: str


class OrderOut(msgspec.Struct, kw_only=True):
    id: int
    external_id: str
    shop: str
    channel: str
    customer: CustomerOut
    live_session: LiveSessionOut | None
    paid_amount: Decimal
    placed_at: datetime
    paid_at: datetime | None
    delivered_at: datetime | None
    items: list[OrderItemOut]
    created: bool = False


class ShipmentIn(msgspec.Struct, kw_only=True):
    order_external_id: ExternalId
    direction: Direction
    carrier: Carrier
    tracking_number: TrackingNumber
    ticket_id: DbInt | None = None


class TrackingEventIn(msgspec.Struct, kw_only=True):
    carrier: Carrier
    tracking_number: TrackingNumber
    source: Source
    status: str | int
    occurred_at: AwareDatetime
    location: ShortText = ""
    description: Annotated[str, msgspec.Meta(max_length=1000, pattern=NO_NUL)] = ""
    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None


class TrackingBatchIn(msgspec.Struct, kw_only=True):
    events: list[TrackingEventIn]


class TrackingEventOut(msgspec.Struct, kw_only=True):
    id: int
    source: str
    raw_status: str
    status: str
    occurred_at: datetime
    location: str
    description: str
    event_id: str | None


class ShipmentOut(msgspec.Struct, kw_only=True):
    id: int
    order_id: int
    ticket_id: int | None
    direction: str
    carrier: str
    tracking_number: str
    status: str | None
    raw_status: str | None
    last_event_at: datetime | None
    delivered_at: datetime | None
    events: list[TrackingEventOut] = []
    created: bool = False


class TrackingResult(msgspec.Struct, kw_only=True):
    received: int
    stored: int
    duplicates: int
    unmatched: int
    shipments_updated: int
    tickets_moved: list[str]


def order_out(order: "Order", *, created: bool = False) -> OrderOut:
    ls = order.live_session
    return OrderOut(
        id=order.id,
        external_id=order.external_id,
        shop=order.shop,
        channel=order.channel,
        customer=CustomerOut(external_id=order.customer.external_id, name=order.customer.name),
        live_session=LiveSessionOut(
            external_id=ls.external_id, host=ls.host, title=ls.title, started_at=ls.started_at, ended_at=ls.ended_at
        ) if ls else None,
        paid_amount=order.paid_amount,
        placed_at=order.placed_at,
        paid_at=order.paid_at,
        delivered_at=order.delivered_at,
        items=[
            OrderItemOut(
                id=i.id, sku=i.sku, product_id=i.product_id, product_name=i.product_name,
                category=i.category, quantity=i.quantity, unit_price=i.unit_price,
                no_reason_excluded=i.no_reason_excluded,
            )
            for i in order.items
        ],
        created=created,
    )


def shipment_out(shipment: "Shipment", *, with_events: bool = False, created: bool = False) -> ShipmentOut:
    events = [
        TrackingEventOut(
            id=e.id, source=e.source, raw_status=e.raw_status, status=e.status, occurred_at=e.occurred_at,
            location=e.location, description=e.description, event_id=e.event_id,
        )
        for e in (shipment.events if with_events else [])
    ]
    return ShipmentOut(
        id=shipment.id, order_id=shipment.order_id, ticket_id=shipment.ticket_id, direction=shipment.direction,
        carrier=shipment.carrier, tracking_number=shipment.tracking_number, status=shipment.status,
        raw_status=shipment.raw_status, last_event_at=shipment.last_event_at, delivered_at=shipment.delivered_at,
        events=events, created=created,
    )


from aftersales.orders.models import Order, Shipment  # noqa: E402  (models import nothing from here)
