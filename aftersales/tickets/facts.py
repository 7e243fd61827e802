"""The facts the auto-approval policy sees about a new request, read for a whole batch at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.db import in_bound
from aftersales.feedback.taxonomy import is_quality_reason
from aftersales.orders.models import Customer, LiveSession, Order, OrderItem, Shipment
from aftersales.tickets.models import Ticket

# Statutory exclusions from the 7-day no-reason return that a whole category implies.
NO_REASON_EXCLUDED_CATEGORIES = frozenset({"生鲜", "定制", "fresh", "custom"})
NO_REASON_DAYS = 7
HISTORY_DAYS = timedelta(days=90)


def no_reason_window_open(delivered_at: datetime | None, requested_at: datetime, tz: ZoneInfo) -> bool:
    """Seven days counted from the day after sign-for; before sign-for the goods can still come back."""
    if delivered_at is None:
        return True
    signed_day = delivered_at.astimezone(tz).date()
    window_end = datetime.combine(signed_day + timedelta(days=NO_REASON_DAYS + 1), time.min, tzinfo=tz)
    return requested_at < window_end


@dataclass
class FactSources:
    """What the facts of a batch of new requests are read from, fetched in four queries for the
    whole batch. `add` makes each new ticket part of the history of the ones after it, as if
    they had come one at a time."""

    history: dict[int, list[tuple[int, datetime, datetime | None, datetime | None]]] = field(default_factory=dict)
    shipped: set[int] = field(default_factory=set)
    customers: dict[int, str] = field(default_factory=dict)
    live: dict[int, LiveSession] = field(default_factory=dict)  # held here, so the session's identity map keeps them

    def add(self, ticket: Ticket) -> None:
        self.history.setdefault(ticket.customer_id, []).append((ticket.id, ticket.requested_at, None, None))


async def load_fact_sources(session: AsyncSession, orders: list[Order], first_at: datetime, last_at: datetime) -> FactSources:
    """Before the batch's own tickets are written: each customer's requests in the 90 days before."""
    sources = FactSources()
    customer_ids = sorted({o.customer_id for o in orders})
    order_ids = sorted({o.id for o in orders})
    session_ids = sorted({o.live_session_id for o in orders if o.live_session_id})
    rows = await session.execute(_HISTORY, {"customer_ids": customer_ids, "since": first_at - HISTORY_DAYS, "until": last_at})
    for customer_id, *row in rows:
        sources.history.setdefault(customer_id, []).append(tuple(row))  # type: ignore[arg-type]
    sources.shipped = set((await session.execute(_SHIPPED, {"order_ids": order_ids})).scalars())
    sources.customers = dict((await session.execute(_CUSTOMERS, {"customer_ids": customer_ids})).all())
    if session_ids:
        # Whole objects: routing feedback reads them again through the session's identity map.
        for live in (await session.execute(_LIVE_SESSIONS, {"ids": session_ids})).scalars():
            sources.live[live.id] = live
    return sources


# Built once, every value bound (see aftersales.tickets.intake).
_HISTORY = (select(Ticket.customer_id, Ticket.id, Ticket.requested_at, Ticket.refunded_at, Ticket.rejected_at)
            .where(in_bound(Ticket.customer_id, "customer_ids"), Ticket.requested_at >= bindparam("since"),
                   Ticket.requested_at <= bindparam("until")))
_SHIPPED = select(Shipment.order_id).where(in_bound(Shipment.order_id, "order_ids"), Shipment.direction == "outbound").distinct()
_CUSTOMERS = select(Customer.id, Customer.external_id).where(in_bound(Customer.id, "customer_ids"))
_LIVE_SESSIONS = select(LiveSession).where(in_bound(LiveSession.id, "ids"))


async def gather_facts(
    session: AsyncSession, ticket: Ticket, order: Order, claimed: list[OrderItem], tz: ZoneInfo
) -> dict[str, Any]:
    """One stored ticket's facts as they would be read now (the bench generator's check uses it)."""
    sources = await load_fact_sources(session, [order], ticket.requested_at, ticket.requested_at)
    return intake_facts(ticket, order, claimed, tz, sources)


def intake_facts(ticket: Ticket, order: Order, claimed: list[OrderItem], tz: ZoneInfo, sources: FactSources) -> dict[str, Any]:
    items = claimed or list(order.items)
    at = ticket.requested_at
    history = customer_history(sources.history.get(ticket.customer_id, []), ticket.id, at)
    live = sources.live.get(order.live_session_id) if order.live_session_id else None
    amount = ticket.requested_amount
    share = (amount / order.paid_amount).quantize(Decimal("0.0001")) if order.paid_amount else Decimal("0")
    categories = sorted({i.category for i in items})
    return {
        "kind": ticket.kind,
        "reason": ticket.reason_code,
        "reason_group": ticket.reason_code.split(".")[0],
        "quality": is_quality_reason(ticket.reason_code),
        "amount": str(amount),
        "amount_share": str(share),
        "categories": categories,
        "products": sorted({i.product_id for i in items}),
        "shipped": order.id in sources.shipped,
        "delivered": order.delivered_at is not None,
        "days_since_signed": round((at - order.delivered_at).total_seconds() / 86400, 2) if order.delivered_at else None,
        "window_open": no_reason_window_open(order.delivered_at, at, tz),
        "excluded": any(i.no_reason_excluded for i in items) or bool(NO_REASON_EXCLUDED_CATEGORIES & set(categories)),
        "evidence": bool(ticket.evidence_urls),
        **history,
        "session": live.external_id if live else None,
        "host": live.host if live else None,
        "customer": sources.customers.get(order.customer_id),
    }


def customer_history(rows: list[tuple[int, datetime, datetime | None, datetime | None]], ticket_id: int, at: datetime) -> dict[str, int]:
    """Requests, refunds and rejections of this customer before this request."""
    d30, d90 = at - timedelta(days=30), at - HISTORY_DAYS
    counts = dict.fromkeys(("requests_30d", "requests_90d", "refunds_30d", "refunds_90d", "rejections_90d"), 0)
    for other_id, requested_at, refunded_at, rejected_at in rows:
        if other_id == ticket_id or not d90 <= requested_at <= at:
            continue
        counts["requests_90d"] += 1
        counts["requests_30d"] += requested_at >= d30
        if refunded_at is not None:
            counts["refunds_90d"] += refunded_at >= d90
            counts["refunds_30d"] += refunded_at >= d30
        if rejected_at is not None:
            counts["rejections_90d"] += rejected_at >= d90
    return counts
