"""The weekly return-rate trend: figures from the same analytics as the tables, drawn as a
server-side SVG (no script, no CDN; <title> and <desc> for screen readers)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from markupsafe import Markup
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.clock import ensure_utc
from aftersales.feedback.analytics import NOT_COUNTED
from aftersales.charts import Point, pct, rate_over_volume
from aftersales.i18n import gettext
from aftersales.orders.models import Order, OrderItem
from aftersales.tickets.models import Ticket, TicketItem



@dataclass(frozen=True)
class WeekPoint:
    start: datetime
    end: datetime
    units: int
    returned: int

    @property
    def rate(self) -> float | None:
        return self.returned / self.units if self.units else None


async def weekly_return_rates(session: AsyncSession, start: datetime, end: datetime, *, reason: str | None = None) -> list[WeekPoint]:
    """Units sold and returned per 7-day bucket of order time, from `start` (the last may be shorter).
    Same definition as analytics.return_rates (returns and refunds that went through, by the
    order's time), in two queries bucketed here rather than one query per week."""
    period = (Order.placed_at >= start, Order.placed_at < end)
    sold = (
        select(Order.placed_at, func.sum(OrderItem.quantity))
        .join(OrderItem, OrderItem.order_id == Order.id).where(*period).group_by(Order.id, Order.placed_at)
    )
    conditions = [*period, Ticket.status.not_in(NOT_COUNTED), Ticket.kind.in_(("return_refund", "refund_only"))]
    if reason:
        conditions.append(Ticket.reason_code == reason)
    returned = (
        select(Order.placed_at, func.sum(TicketItem.quantity))
        .select_from(TicketItem)
        .join(Ticket, Ticket.id == TicketItem.ticket_id)
        .join(OrderItem, OrderItem.id == TicketItem.order_item_id)
        .join(Order, Order.id == OrderItem.order_id)
        .where(*conditions).group_by(Order.id, Order.placed_at)
    )
    weeks = max(1, -(-(end - start) // timedelta(days=7)))
    units, returns = [0] * weeks, [0] * weeks
    for target, query in ((units, sold), (returns, returned)):
        for placed_at, quantity in (await session.execute(query)).all():
            index = min(int((ensure_utc(placed_at) - start) // timedelta(days=7)), weeks - 1)
            target[index] += int(quantity or 0)
    return [WeekPoint(start + timedelta(days=7 * i), min(start + timedelta(days=7 * (i + 1)), end), units[i], returns[i])
            for i in range(weeks)]


def _nice_ceiling(value: float) -> float:
    for step in (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0):
        if value <= step:
            return step
    return 1.0


def return_rate_trend(points: Sequence[WeekPoint], zone: object, *, width: int = 720, height: int = 220) -> Markup:
    """Weekly return rate (by units) as a line over bars of units sold."""
    rates = [p.rate for p in points if p.rate is not None]

    def day(moment: datetime) -> str:
        return moment.astimezone(zone).date().isoformat()  # type: ignore[arg-type]

    total_units = sum(p.units for p in points)
    overall = sum(p.returned for p in points) / total_units if total_units else None
    desc = (gettext("Overall %(rate)s of %(units)s units; highest week %(top)s.", rate=pct(overall), units=total_units,
                    top=pct(max(rates))) if overall is not None and rates else gettext("No orders in this period."))
    chart_points = [
        Point(
            label=p.start.astimezone(zone).strftime("%m-%d"),  # type: ignore[arg-type]
            volume=p.units, rate=p.rate,
            bar_tip=gettext("Week of %(day)s: %(n)s units sold", day=day(p.start), n=p.units),
            point_tip=gettext("Week of %(day)s: %(r)s of %(n)s units returned (%(rate)s)", day=day(p.start), r=p.returned,
                              n=p.units, rate=pct(p.rate)) if p.rate is not None else "",
            attrs=f'data-week="{day(p.start)}" data-rate="{p.rate:.4f}"' if p.rate is not None else "",
        )
        for p in points
    ]
    return rate_over_volume(
        chart_points, ceiling=_nice_ceiling(max(rates, default=0.0)), data_name="return-rate", width=width, height=height,
        title=gettext("Return rate per week (units), %(n)s weeks", n=len(points)), desc=desc,
    )
