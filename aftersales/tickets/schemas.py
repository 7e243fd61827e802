"""API bodies for tickets, their actions and their chain."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

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


def ticket_summary(t: "Ticket") -> TicketSummary:
    return TicketSummary(
        id=t.id, number=t.number, status=t.status, version=t.version, kind=t.kind, reason_code=t.reason_code,
        order_id=t.order_id, requested_amount=t.requested_amount, refunded_amount=t.refunded_amount, queue=t.queue,
        priority=t.priority, assignee_id=t.assignee_id, requested_at=t.requested_at, updated_at=t.updated_at,
        closed_at=t.closed_at,
    )


def ticket_detail(chain: "TicketChain") -> TicketDetail:
    t = chain.ticket
    return TicketDetail(
        **msgspec.structs.asdict(ticket_summary(t)),
        decision=DecisionOut(
            policy_version=chain.decision.policy_version, decision=chain.decision.decision, rule=chain.decision.rule,
            queue=chain.decision.queue, priority=chain.decision.priority, suggestion=chain.decision.suggestion,
            explanation=chain.decision.explanation, decided_at=chain.decision.decided_at,
        ) if chain.decision else None,
        description=t.description,
        evidence_urls=list(t.evidence_urls or []),
        external_id=t.external_id,
        received_at=t.received_at,
        first_response_at=t.first_response_at,
        approved_at=t.approved_at,
        rejected_at=t.rejected_at,
        return_received_at=t.return_received_at,
        refunded_at=t.refunded_at,
        replacement_shipped_at=t.replacement_shipped_at,
        cancelled_at=t.cancelled_at,
        allowed_actions=workflow.allowed_actions(t.kind, t.status),
        items=[
            TicketItemOut(sku=ti.sku, quantity=ti.quantity, product_name=oi.product_name, category=oi.category)
            for ti, oi in chain.ticket_items()
        ],
        order=order_out(t.order),
        shipments=[shipment_out(s, with_events=True) for s in chain.shipments],
        timeline=[
            TimelineEventOut(
                id=e.id, at=e.at, actor=e.actor, action=e.action, from_status=e.from_status,
                to_status=e.to_status, note=e.note, data=e.data or {},
            )
            for e in chain.timeline()
        ],
        chain=[ChainEntry(**entry) for entry in chain.chain()],
    )


from aftersales.orders.schemas import order_out, shipment_out  # noqa: E402
from aftersales.tickets import workflow  # noqa: E402
from aftersales.tickets.models import Ticket  # noqa: E402
from aftersales.tickets.repository import TicketChain  # noqa: E402
