"""The weekly return-rate trend: figures from the same analytics as the tables, drawn as a
server-side SVG (no script, no CDN; <title> and <desc> for screen readers)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import count

from markupsafe import Markup, escape
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.clock import ensure_utc
from aftersales.feedback.analytics import NOT_COUNTED
from aftersales.i18n import gettext
from aftersales.orders.models import Order, OrderItem
from aftersales.tickets.models import Ticket, TicketItem

_ids = count(1)


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


def _pct(value: float) -> str:
    return f"{value * 100:.1f}".rstrip("0").rstrip(".") + " %"


def _nice_ceiling(value: float) -> float:
    for step in (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0):
        if value <= step:
            return step
    return 1.0


def return_rate_trend(points: Sequence[WeekPoint], zone: object, *, width: int = 720, height: int = 220) -> Markup:
    """Weekly return rate (by units) as a line over bars of units sold."""
    chart_id = f"fbchart-{next(_ids)}"
    left, right, top, bottom = 48, 40, 12, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(points), 1)
    slot = plot_w / n
    most = max((p.units for p in points), default=0) or 1
    rates = [p.rate for p in points if p.rate is not None]
    ceiling = _nice_ceiling(max(rates, default=0.0))

    def y(rate: float) -> float:
        return top + plot_h * (1 - rate / ceiling)

    def day(moment: datetime) -> str:
        return moment.astimezone(zone).date().isoformat()  # type: ignore[arg-type]

    title = gettext("Return rate per week (units), %(n)s weeks", n=len(points))
    total_units = sum(p.units for p in points)
    overall = sum(p.returned for p in points) / total_units if total_units else None
    desc = (gettext("Overall %(rate)s of %(units)s units; highest week %(top)s.", rate=_pct(overall), units=total_units,
                    top=_pct(max(rates))) if overall is not None and rates else gettext("No orders in this period."))
    parts: list[str] = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" xmlns="http://www.w3.org/2000/svg" data-chart="return-rate">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>',
    ]
    for tick in (0.0, ceiling / 2, ceiling):
        parts.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>')
        parts.append(f'<text class="axis" x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{_pct(tick)}</text>')
    for i, p in enumerate(points):
        if p.units:
            bar_h = plot_h * 0.4 * p.units / most
            x = left + i * slot + slot * 0.2
            tip = gettext("Week of %(day)s: %(n)s units sold", day=day(p.start), n=p.units)
            parts.append(f'<rect class="bar" x="{x:.1f}" y="{top + plot_h - bar_h:.1f}" width="{slot * 0.6:.1f}" '
                         f'height="{bar_h:.1f}"><title>{escape(tip)}</title></rect>')
    parts.append(f'<text class="axis" x="{left + plot_w + 4}" y="{top + plot_h * 0.6 + 4:.1f}">{most}</text>')
    path: list[str] = []
    pen_down = False
    for i, p in enumerate(points):
        if p.rate is None:
            pen_down = False
            continue
        path.append(f'{"L" if pen_down else "M"}{left + (i + 0.5) * slot:.1f},{y(p.rate):.1f}')
        pen_down = True
    if path:
        parts.append(f'<path class="line" d="{" ".join(path)}" fill="none"/>')
    for i, p in enumerate(points):
        if p.rate is not None:
            tip = gettext("Week of %(day)s: %(r)s of %(n)s units returned (%(rate)s)", day=day(p.start), r=p.returned, n=p.units,
                          rate=_pct(p.rate))
            parts.append(f'<circle class="point" cx="{left + (i + 0.5) * slot:.1f}" cy="{y(p.rate):.1f}" r="3" '
                         f'data-week="{day(p.start)}" data-rate="{p.rate:.4f}"><title>{escape(tip)}</title></circle>')
    step = max(1, n // 6)
    for i, p in enumerate(points):
        if i % step == 0 or i == n - 1:
            label = p.start.astimezone(zone).strftime("%m-%d")  # type: ignore[arg-type]
            parts.append(f'<text class="axis" x="{left + (i + 0.5) * slot:.1f}" y="{height - 8}" text-anchor="middle">{label}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
