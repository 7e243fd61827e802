"""The product teams' overview: what customers returned, by reason, routed to each team."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from litestar import Controller, Request, get
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.response import Template
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.auth.guards import current_principal, requires
from aftersales.clock import Clock
from aftersales.feedback.routing import TEAMS, reasons_for
from aftersales.orders.models import OrderItem
from aftersales.pages import page_auth_error, render
from aftersales.tickets.models import Ticket, TicketItem

READ_FEEDBACK = ("product", "supervisor", "admin")


class FeedbackPages(Controller):
    include_in_schema = False
    guards = [requires(*READ_FEEDBACK)]
    exception_handlers = {NotAuthorizedException: page_auth_error, PermissionDeniedException: page_auth_error}

    @get("/feedback")
    async def overview(self, request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock, team: str | None = None) -> Template:
        principal = current_principal(request)
        my_teams = [t for t in TEAMS if t in principal.teams] if principal.role == "product" else list(TEAMS)
        chosen = team if team in my_teams else (my_teams[0] if my_teams else None)
        reasons = reasons_for(chosen) if chosen else []
        now = clock.now()
        counts = await _reason_counts(db_session, reasons, now - timedelta(days=7), now)
        previous = await _reason_counts(db_session, reasons, now - timedelta(days=14), now - timedelta(days=7))
        products = await _top_products(db_session, reasons, now - timedelta(days=30), now)
        context = {
            "teams": my_teams,
            "team": chosen,
            "rows": [{"reason": r, "week": counts.get(r, 0), "previous": previous.get(r, 0)} for r in reasons],
            "products": products,
        }
        return render(request, "feedback/overview.html", context, blocks=("feedback_body",))


async def _reason_counts(session: AsyncSession, reasons: list[str], start: Any, end: Any) -> dict[str, int]:
    if not reasons:
        return {}
    query = (
        select(Ticket.reason_code, func.count())
        .where(Ticket.reason_code.in_(reasons), Ticket.requested_at >= start, Ticket.requested_at < end)
        .group_by(Ticket.reason_code)
    )
    return {code: n for code, n in (await session.execute(query)).all()}


async def _top_products(session: AsyncSession, reasons: list[str], start: Any, end: Any) -> list[dict[str, Any]]:
    if not reasons:
        return []
    query = (
        select(OrderItem.product_name, OrderItem.category, func.count(func.distinct(Ticket.id)).label("n"))
        .join(TicketItem, TicketItem.ticket_id == Ticket.id)
        .join(OrderItem, OrderItem.id == TicketItem.order_item_id)
        .where(Ticket.reason_code.in_(reasons), Ticket.requested_at >= start, Ticket.requested_at < end)
        .group_by(OrderItem.product_name, OrderItem.category)
        .order_by(func.count(func.distinct(Ticket.id)).desc(), OrderItem.product_name)
        .limit(10)
    )
    return [{"product": p, "category": c, "tickets": n} for p, c, n in (await session.execute(query)).all()]
