"""After-sales tickets, their items, the timeline and the per-day number counter."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Date, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from aftersales.db import Base, BigId, JSONType, Money, UTCDateTime
from aftersales.orders.models import Customer, Order


# Final statuses, spelled as literal SQL for the partial indexes above and the queries that use them.
OPEN_TICKET_SQL = "status NOT IN ('closed', 'cancelled')"
UNASSIGNED_SQL = "assignee_id IS NULL"


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        # Keyset pagination of the default listing and of filtered listings.
        Index("ix_tickets_requested_id", "requested_at", "id"),
        Index("ix_tickets_status_requested_id", "status", "requested_at", "id"),
        Index("ix_tickets_queue_status_requested", "queue", "status", "requested_at", "id"),
        Index("ix_tickets_assignee_status", "assignee_id", "status"),
        # "Next ticket": ix_tickets_next, declared after the class (it sorts a column descending).
        # SLA reports: tickets closed in a period.
        Index("ix_tickets_closed_at", "closed_at"),
        # Queue listings sorted by SLA due time (keyset on sla_due_at, id).
        Index("ix_tickets_queue_status_due", "queue", "status", "sla_due_at", "id"),
        # Open tickets only (about 1 % of a mature history): the SLA board and the default queue page
        # read these. The condition is literal SQL and queries must spell it the same way
        # (OPEN_TICKET_SQL) -- a bound parameter defeats SQLite's partial-index matching.
        Index("ix_tickets_open", "queue", "assignee_id", "sla_due_at", "first_response_due_at",
              sqlite_where=text(OPEN_TICKET_SQL), postgresql_where=text(OPEN_TICKET_SQL)),
        Index("ix_tickets_open_requested", "requested_at", "id",
              sqlite_where=text(OPEN_TICKET_SQL), postgresql_where=text(OPEN_TICKET_SQL)),
        # A reason's tickets of a period (reports) and lookups by reason alone.
        Index("ix_tickets_reason_requested", "reason_code", "requested_at"),
        # A customer's recent requests (intake's history facts): only the rows of the period are
        # visited, not every ticket the customer ever had (bench F5), and from the index alone, not
        # the table's scattered rows (F26).
        Index("ix_tickets_customer_history", "customer_id", "requested_at", "id", "refunded_at", "rejected_at"),
        # An order's tickets; intake's "already refunded on this order" sum reads the index alone (bench F26).
        Index("ix_tickets_order_refunded", "order_id", "refunded_amount"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    # The platform's own after-sales id, when it sends one; replays with it find this ticket.
    external_id: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    kind: Mapped[str] = mapped_column(String(16))  # four values: no index (bench F26)
    reason_code: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    requested_amount: Mapped[Decimal] = mapped_column(Money)
    refunded_amount: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"))
    description: Mapped[str] = mapped_column(Text, default="")
    evidence_urls: Mapped[list[str]] = mapped_column(JSONType, default=list)
    queue: Mapped[str | None] = mapped_column(String(64), nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    assignee_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # SLA clocks, kept current by aftersales.sla.service (derived from sla_events, recomputable).
    # When the resolution target falls due; "next ticket" hands out the earliest first.
    sla_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    sla_policy_id: Mapped[int | None] = mapped_column(ForeignKey("sla_policies.id"), nullable=True)
    first_response_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Merchant seconds accumulated up to sla_running_since (NULL while paused or stopped).
    sla_elapsed_seconds: Mapped[float] = mapped_column(default=0.0, server_default="0")
    sla_running_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    sla_next_alert_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    # Warnings already fired, as "metric:threshold" keys (the sla_events unique index is the guard).
    sla_alerts_fired: Mapped[list[str]] = mapped_column(JSONType, default=list, server_default="[]")
    # Set when the resolution clock stops at closure: merchant seconds and whether within target.
    resolution_seconds: Mapped[float | None] = mapped_column(nullable=True)
    resolution_met: Mapped[bool | None] = mapped_column(nullable=True)
    # Set once when the worker fires the resolution breach warning (mirrors sla_events), so that reports
    # need no per-ticket lookup into sla_events.
    resolution_breached: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    first_response_seconds: Mapped[float | None] = mapped_column(nullable=True)
    first_response_met: Mapped[bool | None] = mapped_column(nullable=True)
    policy_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The customer's own request time (from the platform): every SLA clock starts here.
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # State-entry timestamps, written only by the workflow service.
    first_response_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    rejected_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    return_received_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    refunded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    replacement_shipped_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)

    order: Mapped[Order] = relationship(lazy="raise")
    customer: Mapped[Customer] = relationship(lazy="raise")
    items: Mapped[list[TicketItem]] = relationship(lazy="raise", order_by="TicketItem.id")
    events: Mapped[list[TimelineEvent]] = relationship(lazy="raise", order_by="TimelineEvent.id")


# "Next ticket": a queue's unassigned work in the order it is handed out (due, then priority, then
# age), so each (queue, status) range is read from its first rows, not sorted (bench F27). Partial:
# PostgreSQL takes `assignee_id IS NULL` for a filter, not an equality, so with assignee_id among
# the leading columns it could not read the later ones in order.
Index("ix_tickets_next", Ticket.queue, Ticket.status, Ticket.sla_due_at, Ticket.priority.desc(), Ticket.requested_at,
      Ticket.id, sqlite_where=text(UNASSIGNED_SQL), postgresql_where=text(UNASSIGNED_SQL))


class TicketItem(Base):
    __tablename__ = "ticket_items"
    # Repeat counts ("≥ 3 size complaints on one product in 30 days") read one range of this index
    # instead of joining every ticket of the reason's 30 days to its items (bench F18).
    __table_args__ = (Index("ix_ticket_items_repeats", "product_id", "reason_code", "requested_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    order_item_id: Mapped[int] = mapped_column(ForeignKey("order_items.id"), index=True)
    sku: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int]
    # Copies of the order item's product and of the ticket's reason and request time, which never
    # change after intake: they are what the repeat-count index is made of.
    product_id: Mapped[str] = mapped_column(String(64))
    reason_code: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TimelineEvent(Base):
    """Every change to a ticket: who, when, what, from which status to which, and why."""

    __tablename__ = "ticket_events"
    __table_args__ = (Index("ix_ticket_events_ticket_at", "ticket_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    to_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class TicketNumberCounter(Base):
    """Hands out the daily sequence in AS-YYYYMMDD-NNNNNN with one atomic upsert."""

    __tablename__ = "ticket_number_counters"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    last: Mapped[int] = mapped_column(Integer)


class PolicyVersion(Base):
    """One version of the auto-approval policy. Published versions are never edited."""

    __tablename__ = "policy_versions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, unique=True)
    text: Mapped[str] = mapped_column(Text)
    note: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    published_by: Mapped[str | None] = mapped_column(String(100), nullable=True)


class TicketDecision(Base):
    """What the policy decided at intake, with the facts it saw and every rule's trace."""

    __tablename__ = "ticket_decisions"

    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    policy_version: Mapped[int] = mapped_column(Integer, index=True)
    decision: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str | None] = mapped_column(String(64), nullable=True)
    queue: Mapped[str | None] = mapped_column(String(64), nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    suggestion: Mapped[str | None] = mapped_column(String(16), nullable=True)
    facts: Mapped[dict[str, Any]] = mapped_column(JSONType)
    trace: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    explanation: Mapped[str] = mapped_column(Text)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Queue(Base):
    __tablename__ = "queues"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    name_zh: Mapped[str] = mapped_column(String(100))
    name_en: Mapped[str] = mapped_column(String(100))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    description: Mapped[str] = mapped_column(Text, default="")
    auto_assign: Mapped[bool] = mapped_column(default=False)
    # Most open tickets one agent holds before auto-assignment passes them over.
    agent_cap: Mapped[int] = mapped_column(Integer, default=20)
    active: Mapped[bool] = mapped_column(default=True)


class QueueMember(Base):
    __tablename__ = "queue_members"

    queue_key: Mapped[str] = mapped_column(ForeignKey("queues.key"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
