"""The facts the auto-approval policy sees about a new request, gathered in few queries."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.feedback.taxonomy import is_quality_reason
from aftersales.orders.models import Customer, LiveSession, Order, OrderItem, Shipment
from aftersales.tickets.models import Ticket

# Statutory exclusions from the 7-day no-reason return that a whole category implies.
NO_REASON_EXCLUDED_CATEGORIES = frozenset({"生鲜", "定制", "fresh", "custom"})
NO_REASON_DAYS = 7


def no_reason_window_open(delivered_at: datetime | None, requested_at: datetime, tz: ZoneInfo) -> bool:
    """Seven days counted from the day after sign-for; before sign-for the goods can still come back."""
    if delivered_at is None:
        return True
    signed_day = delivered_at.astimezone(tz).date()
    window_end = datetime.combine(signed_day + timedelta(days=NO_REASON_DAYS + 1), time.min, tzinfo=tz)
    return requested_at < window_end


async def gather_facts(
    session: AsyncSession, ticket: Ticket, order: Order, claimed: list[OrderItem], tz: ZoneInfo
) -> dict[str, Any]:
    items = claimed or list(order.items)
    at = ticket.requested_at
    history = await _customer_history(session, ticket.customer_id, ticket.id, at)
    shipped = await session.scalar(
        select(func.count()).select_from(Shipment).where(Shipment.order_id == order.id, Shipment.direction == "outbound")
    )
    customer_ext = await session.scalar(select(Customer.external_id).where(Customer.id == order.customer_id))
    live = (
        await session.execute(select(LiveSession.external_id, LiveSession.host).where(LiveSession.id == order.live_session_id))
    ).first() if order.live_session_id else None
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
        "shipped": bool(shipped),
        "delivered": order.delivered_at is not None,
        "days_since_signed": round((at - order.delivered_at).total_seconds() / 86400, 2) if order.delivered_at else None,
        "window_open": no_reason_window_open(order.delivered_at, at, tz),
        "excluded": any(i.no_reason_excluded for i in items) or bool(NO_REASON_EXCLUDED_CATEGORIES & set(categories)),
        "evidence": bool(ticket.evidence_urls),
        **history,
        "session": live[0] if live else None,
        "host": live[1] if live else None,
        "customer": customer_ext,
    }


async def _customer_history(session: AsyncSession, customer_id: int, ticket_id: int, at: datetime) -> dict[str, int]:
    """Requests, refunds and rejections of this customer before this request, in one query."""
    d30, d90 = at - timedelta(days=30), at - timedelta(days=90)

    def count(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    row = (
        await session.execute(
            select(
                count(Ticket.requested_at >= d30),
                count(Ticket.requested_at >= d90),
                count(and_(Ticket.refunded_at.is_not(None), Ticket.refunded_at >= d30)),
                count(and_(Ticket.refunded_at.is_not(None), Ticket.refunded_at >= d90)),
                count(and_(Ticket.rejected_at.is_not(None), Ticket.rejected_at >= d90)),
            ).where(Ticket.customer_id == customer_id, Ticket.id != ticket_id, Ticket.requested_at >= d90, Ticket.requested_at <= at)
        )
    ).one()
    keys = ("requests_30d", "requests_90d", "refunds_30d", "refunds_90d", "rejections_90d")
    return {key: int(value or 0) for key, value in zip(keys, row)}
