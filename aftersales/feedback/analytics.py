"""Return, exchange and refund rates by category, product, SKU, live session and host, and
problem-product detection against the category baseline. One grouped query per figure."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.db import unindexed
from aftersales.feedback.stats import Candidate, detect
from aftersales.orders.models import LiveSession, Order, OrderItem
from aftersales.sqlite_inline import OFFLOAD_MARK
from aftersales.tickets.models import Ticket, TicketItem

GROUPS = ("category", "product", "sku", "session", "host")
# Requests that did not go through do not count as returns.
NOT_COUNTED = ("cancelled", "rejected")


def _group_columns(group: str) -> list[Any]:
    # product: (id, category); the display name is aggregated since SKU names differ by variant.
    return {
        "category": [OrderItem.category],
        "product": [OrderItem.product_id, OrderItem.category],
        "sku": [OrderItem.sku, OrderItem.product_name, OrderItem.category],
        "session": [LiveSession.external_id, LiveSession.title, LiveSession.host],
        "host": [LiveSession.host],
    }[group]


async def return_rates(session: AsyncSession, start: datetime, end: datetime, group: str, *, reason: str | None = None,
                       limit: int = 500) -> list[dict[str, Any]]:
    """Rates for orders placed in [start, end): units and amount sold, returned, exchanged, refunded."""
    cols = _group_columns(group)
    sold = await _sold(session, start, end, cols)
    returned = await _returned(session, start, end, cols, reason=reason)
    return _rates(sold, returned, limit)


def _with_sessions(query: Select[Any], cols: list[Any]) -> Select[Any]:
    """The live session only where the grouping shows it: a join per order costs a fifth of the query."""
    if any(getattr(col, "table", None) is LiveSession.__table__ for col in cols):
        return query.outerjoin(LiveSession, LiveSession.id == Order.live_session_id)
    return query


async def _sold(session: AsyncSession, start: datetime, end: datetime, cols: list[Any]) -> dict[tuple[Any, ...], dict[str, Any]]:
    query = (
        _with_sessions(
            select(*cols, func.min(OrderItem.product_name).label("name"), func.sum(OrderItem.quantity).label("units"),
                   func.sum(OrderItem.quantity * OrderItem.unit_price).label("amount"))
            .join(Order, Order.id == OrderItem.order_id), cols)
        .where(Order.placed_at >= start, Order.placed_at < end)
        .group_by(*cols)
        .prefix_with(OFFLOAD_MARK)  # a period's every order: seconds on SQLite, kept off the event loop
    )
    width = len(cols)
    return {tuple(row[:width]): {"units": int(row.units or 0), "amount": _money(row.amount), "name": row.name}
            for row in (await session.execute(query)).all()}


async def _returned(session: AsyncSession, start: datetime, end: datetime, cols: list[Any], *, reason: str | None = None,
                    by_reason: bool = False) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Returned / exchanged units and refunded amount per group (and per reason code with `by_reason`:
    the reason is then the key's last element)."""
    counted = and_(Ticket.status.not_in(NOT_COUNTED), *([Ticket.reason_code == reason] if reason else []))
    keys = [*cols, Ticket.reason_code] if by_reason else cols
    query = (
        select(
            *keys,
            func.sum(case((and_(counted, Ticket.kind.in_(("return_refund", "refund_only"))), TicketItem.quantity), else_=0)).label("returned"),
            func.sum(case((and_(counted, Ticket.kind == "exchange"), TicketItem.quantity), else_=0)).label("exchanged"),
            func.sum(case((and_(counted, Ticket.kind.in_(("return_refund", "refund_only"))),
                           TicketItem.quantity * OrderItem.unit_price), else_=0)).label("returned_amount"),
            func.count(func.distinct(Ticket.id)).label("tickets"),
        )
        .select_from(TicketItem)
        .join(Ticket, Ticket.id == TicketItem.ticket_id)
        .join(OrderItem, OrderItem.id == TicketItem.order_item_id)
        .join(Order, Order.id == OrderItem.order_id)
    )
    # Driven by the period's requests (a request never precedes its order, so none is lost): about half
    # the rows of walking every order item placed in the period to look for its tickets.
    query = (
        _with_sessions(query, keys)
        .where(unindexed(Order.placed_at) >= start, unindexed(Order.placed_at) < end, Ticket.requested_at >= start)
        .group_by(*keys)
        .prefix_with(OFFLOAD_MARK)
    )
    width = len(keys)
    return {tuple(row[:width]): {"returned": int(row.returned or 0), "exchanged": int(row.exchanged or 0),
                                 "returned_amount": _money(row.returned_amount), "tickets": int(row.tickets or 0)}
            for row in (await session.execute(query)).all()}


def _rates(sold: dict[tuple[Any, ...], dict[str, Any]], returned: dict[tuple[Any, ...], dict[str, Any]],
           limit: int) -> list[dict[str, Any]]:
    nothing_sold = {"units": 0, "amount": _money(0), "name": None}
    nothing_returned = {"returned": 0, "exchanged": 0, "returned_amount": _money(0), "tickets": 0}
    out = []
    for key in {**sold, **returned}:
        e = {**nothing_sold, **sold.get(key, {}), **nothing_returned, **returned.get(key, {})}
        units = e["units"]
        out.append({
            "key": list(key), "name": e["name"], "units": units, "amount": str(e["amount"]), "returned_units": e["returned"],
            "exchanged_units": e["exchanged"], "returned_amount": str(e["returned_amount"]), "tickets": e["tickets"],
            "return_rate": round(e["returned"] / units, 4) if units else None,
            "exchange_rate": round(e["exchanged"] / units, 4) if units else None,
            "refund_rate_amount": round(float(e["returned_amount"] / e["amount"]), 4) if e["amount"] else None,
        })
    out.sort(key=lambda r: (-(r["return_rate"] or 0), -r["units"]))
    return out[:limit]


async def _rates_per_reason(session: AsyncSession, start: datetime, end: datetime,
                            reasons: list[str | None]) -> dict[str | None, list[dict[str, Any]]]:
    """Per-product rates for each reason (None: every reason) from one sold and one returned query,
    instead of both queries per reason (a weekly digest asks for three)."""
    cols = _group_columns("product")
    sold = await _sold(session, start, end, cols)
    per_reason = await _returned(session, start, end, cols, by_reason=True)
    # As in return_rates(reason=...): a product's ticket count is every ticket on it, whatever the reason.
    tickets: dict[tuple[Any, ...], int] = defaultdict(int)
    for (*key, _code), figures in per_reason.items():
        tickets[tuple(key)] += figures["tickets"]
    out: dict[str | None, list[dict[str, Any]]] = {}
    for reason in reasons:
        returned = {key: {"returned": 0, "exchanged": 0, "returned_amount": _money(0), "tickets": n} for key, n in tickets.items()}
        for (*key, code), figures in per_reason.items():
            if reason is None or code == reason:
                entry = returned[tuple(key)]
                for name in ("returned", "exchanged", "returned_amount"):
                    entry[name] += figures[name]
        out[reason] = _rates(sold, returned, 100_000)
    return out


async def problem_products(session: AsyncSession, start: datetime, end: datetime, *, reasons: list[str | None] | None = None) -> list[dict[str, Any]]:
    """Products whose return rate (overall, or for one reason) is significantly above their category's."""
    findings: list[dict[str, Any]] = []
    candidates: list[Candidate] = []
    meta: dict[str, dict[str, Any]] = {}
    rates = await _rates_per_reason(session, start, end, reasons or [None])
    for reason, rows in rates.items():
        by_category: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            by_category[r["key"][1]].append(r)
        for category, products in by_category.items():
            total_units = sum(p["units"] for p in products)
            total_returns = sum(p["returned_units"] for p in products)
            for p in products:
                key = f"{p['key'][0]}|{reason or '*'}"
                candidates.append(Candidate(key, p["units"], p["returned_units"], total_units - p["units"], total_returns - p["returned_units"]))
                meta[key] = {"product_id": p["key"][0], "product_name": p["name"], "category": category, "reason": reason}
    for f in detect(candidates):
        findings.append({**meta[f.key], "units": f.units, "returns": f.returns, "rate": round(f.rate, 4),
                         "baseline_rate": round(f.baseline_rate, 4), "ratio": round(f.ratio, 2), "p_value": f.p_value,
                         "threshold": f.threshold, "flagged": f.flagged, "why": f.why})
    return findings


async def rate_before_after(session: AsyncSession, product_id: str, reason: str | None, pivot: datetime,
                            window_days: int = 30) -> dict[str, Any]:
    """The product's return rate (for the reason) in equal windows before and after an action."""
    from datetime import timedelta

    window = timedelta(days=window_days)
    figures = {}
    for label, (start, end) in {"before": (pivot - window, pivot), "after": (pivot, pivot + window)}.items():
        rows = await return_rates(session, start, end, "product", reason=reason, limit=100_000)
        row = next((r for r in rows if r["key"][0] == product_id), None)
        figures[label] = {"units": row["units"] if row else 0, "returned": row["returned_units"] if row else 0,
                          "rate": row["return_rate"] if row else None}
    return figures


def _money(value: Any) -> Decimal:
    """Sums of Money columns come back in yuan; products of fen by quantity come back as raw fen."""
    if value is None:
        return Decimal("0")
    return Decimal(value).quantize(Decimal("0.01"))
