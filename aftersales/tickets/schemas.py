"""API bodies for tickets, their actions and their chain."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from aftersales.orders.schemas import Carrier, OrderOut, ShipmentOut, TrackingNumber
from aftersales.schemas import NO_NUL, AwareDatetime, DbInt, ExternalId, LongText, Quantity

Kind = Literal["refund_only", "return_refund", "exchange", "reship", "complaint"]
EvidenceUrl = Annotated[str, msgspec.Meta(max_length=1000, pattern=r"^https?://\S+$")]


class TicketItemIn(msgspec.Struct, kw_only=True):
    sku: ExternalId
    quantity: Quantity


class TicketIn(msgspec.Struct, kw_only=True):
    order_external_id: ExternalId
    kind: Kind
    reason_code: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NO_NUL)]
    requested_amount: Decimal
    items: Annotated[list[TicketItemIn], msgspec.Meta(max_length=200)] = []
    description: LongText = ""
    evidence_urls: Annotated[list[EvidenceUrl], msgspec.Meta(max_length=20)] = []
    requested_at: AwareDatetime | None = None
    # The platform's own after-sales id: a second request with it returns the first ticket.
    external_id: ExternalId | None = None


class ActionIn(msgspec.Struct, kw_only=True):
    version: DbInt
    note: LongText = ""
    passed: bool | None = None
    carrier: Carrier | None = None
    tracking_number: TrackingNumber | None = None
    amount: Decimal | None = None
    refund_reference: Annotated[str, msgspec.Meta(max_length=128, pattern=NO_NUL)] | None = None


class TicketItemOut(msgspec.Struct, kw_only=True):
    sku: str
    quantity: int
    product_name: str
    category: str


class TimelineEventOut(msgspec.Struct, kw_only=True):
    id: int
    at: datetime
    actor: str
    action: str
    from_status: str | None
    to_status: str | None
    note: str
    data: dict[str, Any]


class TicketSummary(msgspec.Struct, kw_only=True):
    id: int
    number: str
    status: str
    version: int
    kind: str
    reason_code: str
    order_id: int
    requested_amount: Decimal
    refunded_amount: Decimal
    queue: str | None
    priority: int
    assignee_id: int | None
    requested_at: datetime
    updated_at: datetime
    closed_at: datetime | None


class ChainEntry(msgspec.Struct, kw_only=True):
    """One step of the whole chain, from order placed to closure, in time order."""

    at: datetime
    kind: str
    title: str
    detail: str = ""
    status: str | None = None
    ref: str | None = None


class DecisionOut(msgspec.Struct, kw_only=True):
    """What the auto-approval policy decided at intake, and why."""

    policy_version: int
    decision: str
    rule: str | None
    queue: str | None
    priority: int
    suggestion: str | None
    explanation: str
    decided_at: datetime


class TicketDetail(TicketSummary, kw_only=True):
    decision: DecisionOut | None
    description: str
    evidence_urls: list[str]
    external_id: str | None
    received_at: datetime
    first_response_at: datetime | None
    approved_at: datetime | None
    rejected_at: datetime | None
    return_received_at: datetime | None
    refunded_at: datetime | None
    replacement_shipped_at: datetime | None
    cancelled_at: datetime | None
    allowed_actions: list[str]
    items: list[TicketItemOut]
    order: OrderOut
    shipments: list[ShipmentOut]
    timeline: list[TimelineEventOut]
    chain: list[ChainEntry]


class TicketPage(msgspec.Struct, kw_only=True):
    items: list[TicketSummary]
    next_cursor: str | None


# -- the chain document ---------------------------------------------------------------------------
# What TicketRepository.load_chain's single statement returns, as JSON decoded straight into these.


class TicketDoc(TicketSummary, kw_only=True):
    description: str
    evidence_urls: list[str] | None
    external_id: str | None
    received_at: datetime
    first_response_at: datetime | None
    approved_at: datetime | None
    rejected_at: datetime | None
    return_received_at: datetime | None
    refunded_at: datetime | None
    replacement_shipped_at: datetime | None
    cancelled_at: datetime | None


class ClaimedItem(msgspec.Struct, kw_only=True):
    """A ticket item with its order item's name and category."""

    id: int
    order_item_id: int
    sku: str
    quantity: int
    product_name: str
    category: str


class DecisionDoc(DecisionOut, kw_only=True):
    trace: list[dict[str, Any]] = []


class ShipmentEntry(msgspec.Struct, kw_only=True):
    created_at: datetime
    shipment: ShipmentOut


class HistoryDoc(msgspec.Struct, kw_only=True):
    id: int
    number: str
    status: str
    reason_code: str
    requested_amount: Decimal
    requested_at: datetime


class PersonDoc(msgspec.Struct, kw_only=True):
    id: int
    username: str
    display_name: str


class FeedbackDoc(msgspec.Struct, kw_only=True):
    category: str
    source: str
    suggested_category: str
    suggestion_confidence: float
    suggestion_terms: list[str] | None
    confirmed_by: str | None


class QueueDoc(msgspec.Struct, kw_only=True):
    key: str
    name_zh: str
    name_en: str


class ChainDoc(msgspec.Struct, kw_only=True):
    ticket: TicketDoc
    items: list[ClaimedItem]
    events: list[TimelineEventOut]
    order: OrderOut
    shipments: list[ShipmentEntry]
    decision: DecisionDoc | None
    # Only for the ticket page:
    history: list[HistoryDoc] = []
    assignee: PersonDoc | None = None
    feedback: FeedbackDoc | None = None
    queues: list[QueueDoc] = []
    people: list[PersonDoc] = []


# -- building the answers -----------------------------------------------------------------------


def ticket_summary(t: Any) -> TicketSummary:
    """From anything with the summary's attributes: an ORM ticket or a listing row."""
    return TicketSummary(
        id=t.id, number=t.number, status=t.status, version=t.version, kind=t.kind, reason_code=t.reason_code,
        order_id=t.order_id, requested_amount=t.requested_amount, refunded_amount=t.refunded_amount, queue=t.queue,
        priority=t.priority, assignee_id=t.assignee_id, requested_at=t.requested_at, updated_at=t.updated_at,
        closed_at=t.closed_at,
    )


_DECISION_FIELDS = DecisionOut.__struct_fields__


def ticket_detail(chain: "TicketChain") -> TicketDetail:
    t, d = chain.ticket, chain.decision
    fields = msgspec.structs.asdict(t)
    fields["evidence_urls"] = t.evidence_urls or []
    return TicketDetail(
        **fields,
        decision=DecisionOut(**{name: getattr(d, name) for name in _DECISION_FIELDS}) if d else None,
        allowed_actions=workflow.allowed_actions(t.kind, t.status),
        items=[
            TicketItemOut(sku=i.sku, quantity=i.quantity, product_name=i.product_name, category=i.category)
            for i in chain.ticket_items()
        ],
        order=chain.order,
        shipments=chain.shipments,
        timeline=chain.timeline(),
        chain=chain.chain(),
    )


from aftersales.tickets import workflow  # noqa: E402

if TYPE_CHECKING:
    from aftersales.tickets.repository import TicketChain
