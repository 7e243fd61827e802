"""The only code that writes feedback: records at intake, routing to teams, agent refinement,
acknowledgements and actions."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.clock import Clock
from aftersales.errors import InvalidInput, NotFound
from aftersales.feedback import classify
from aftersales.feedback.models import FeedbackItem, FeedbackRecord, ReasonCategory, RoutingRule
from aftersales.feedback.routing import DEFAULT_ROUTES
from aftersales.feedback.taxonomy import REASONS
from aftersales.orders.models import LiveSession, Order, OrderItem
from aftersales.tickets.models import Ticket, TicketItem

# Beyond the one-to-one defaults: size trouble that repeats on one product is a selection issue.
EXTRA_DEFAULT_RULES = (("fit.size", "selection", 3, "repeated size complaints on one product"),)
REPEAT_WINDOW = timedelta(days=30)


class FeedbackService:
    def __init__(self, session: AsyncSession, clock: Clock, *, fresh: bool = False) -> None:
        """`fresh`: recording tickets new in this transaction (set-wise intake): routing rules are
        read once per category, and repeat counts come from `prepare_repeats` plus the batch's
        own tickets so far, as if they had come one at a time."""
        self.session = session
        self.clock = clock
        self.fresh = fresh
        self._rules: dict[str, list[RoutingRule]] = {}
        self._seen: dict[tuple[str, str], list[tuple[int, datetime]]] = {}

    async def ensure_defaults(self) -> None:
        known = set((await self.session.execute(select(ReasonCategory.code))).scalars())
        for code, reason in REASONS.items():
            if code not in known:
                self.session.add(ReasonCategory(code=code, parent=reason.parent, quality=reason.quality,
                                                name_zh=reason.zh_CN, name_en=reason.en, active=True))
        if not await self.session.scalar(select(func.count()).select_from(RoutingRule)):
            for category, teams in DEFAULT_ROUTES.items():
                for team in teams:
                    self.session.add(RoutingRule(category=category, team=team, min_repeat=1, note="default"))
            for category, team, repeat, note in EXTRA_DEFAULT_RULES:
                self.session.add(RoutingRule(category=category, team=team, min_repeat=repeat, note=note))
        await self.session.flush()

    async def record_ticket(self, ticket: Ticket, order: Order, claimed: list[OrderItem]) -> FeedbackRecord:
        """The category starts from the reason code; the text suggestion is kept beside it."""
        suggestion = classify.suggest(ticket.description)
        record = FeedbackRecord(
            ticket_id=ticket.id, category=ticket.reason_code, source="reason_code",
            suggested_category=suggestion.category, suggestion_confidence=suggestion.confidence,
            suggestion_terms=list(suggestion.terms), created_at=self.clock.now(),
        )
        self.session.add(record)
        if self.fresh:  # its claimed items make it count for those products (as its ticket_items rows would)
            for item in claimed:
                self._seen.setdefault((item.product_id, ticket.reason_code), []).append((ticket.id, ticket.requested_at))
        await self._route(ticket, order, claimed, ticket.reason_code)
        return record

    async def prepare_repeats(self, tickets: list[tuple[list[OrderItem], str, datetime]]) -> None:
        """For a batch of new (routed items, reason, requested_at): the earlier tickets each
        product's repeat count may include, read in one query before the batch is written."""
        categories = {reason for _, reason, _ in tickets}
        needing = set()
        for category in categories:
            if any(rule.min_repeat > 1 for rule in await self._rules_for(category)):
                needing.add(category)
        products = sorted({item.product_id for items, reason, _ in tickets if reason in needing for item in items})
        if not products:
            return
        first = min(at for _, _, at in tickets) - REPEAT_WINDOW
        last = max(at for _, _, at in tickets)
        rows = await self.session.execute(
            select(OrderItem.product_id, Ticket.reason_code, Ticket.id, Ticket.requested_at).distinct()
            .join(TicketItem, TicketItem.ticket_id == Ticket.id)
            .join(OrderItem, OrderItem.id == TicketItem.order_item_id)
            .where(OrderItem.product_id.in_(products), Ticket.reason_code.in_(sorted(needing)),
                   Ticket.requested_at >= first, Ticket.requested_at <= last)
        )
        for product_id, reason, ticket_id, requested_at in rows:
            self._seen.setdefault((product_id, reason), []).append((ticket_id, requested_at))

    async def refine(self, ticket_id: int, category: str, by: str) -> FeedbackRecord:
        from aftersales.feedback.settings import reason_exists  # settings imports this module
        """An agent confirms or corrects the category; new (unread) items are routed again."""
        if not await reason_exists(self.session, category):
            raise InvalidInput.on("category", f"unknown category {category!r}")
        record = await self.session.get(FeedbackRecord, ticket_id)
        ticket = await self.session.get(Ticket, ticket_id)
        if record is None or ticket is None:
            raise NotFound(f"ticket {ticket_id} has no feedback record")
        record.category, record.source = category, "agent"
        record.confirmed_by, record.confirmed_at = by, self.clock.now()
        record.corrected = category != record.suggested_category
        await self.session.execute(delete(FeedbackItem).where(FeedbackItem.ticket_id == ticket_id, FeedbackItem.status == "new"))
        order = await self.session.get(Order, ticket.order_id)
        assert order is not None
        claimed = list((await self.session.execute(
            select(OrderItem).join(TicketItem, TicketItem.order_item_id == OrderItem.id).where(TicketItem.ticket_id == ticket_id)
        )).scalars())
        await self._route(ticket, order, claimed, category)
        await self.session.flush()
        return record

    async def _route(self, ticket: Ticket, order: Order, claimed: list[OrderItem], category: str) -> None:
        items = claimed or list((await self.session.execute(select(OrderItem).where(OrderItem.order_id == order.id))).scalars())
        rules = await self._rules_for(category)
        if not rules or not items:
            return
        live = await self.session.get(LiveSession, order.live_session_id) if order.live_session_id else None
        offset = int((order.placed_at - live.started_at).total_seconds()) if live and live.started_at else None
        existing: set[Any] = set() if self.fresh else set((await self.session.execute(
            select(FeedbackItem.team, FeedbackItem.product_id).where(FeedbackItem.ticket_id == ticket.id)
        )).all())
        for item in items:
            for rule in rules:
                if (rule.team, item.product_id) in existing:
                    continue
                if rule.product_categories and item.category not in rule.product_categories:
                    continue
                if rule.min_repeat > 1 and await self._repeats(item.product_id, category, ticket) < rule.min_repeat:
                    continue
                existing.add((rule.team, item.product_id))
                self.session.add(FeedbackItem(
                    ticket_id=ticket.id, team=rule.team, category=category, product_id=item.product_id,
                    product_name=item.product_name, sku=item.sku, product_category=item.category,
                    live_session_id=order.live_session_id, host=live.host if live else None, quote=ticket.description,
                    evidence_urls=list(ticket.evidence_urls or []), stream_offset_seconds=offset if offset and offset >= 0 else None,
                    routed_because=_because(rule), status="new", created_at=self.clock.now(),
                ))

    async def _rules_for(self, category: str) -> list[RoutingRule]:
        if category not in self._rules or not self.fresh:
            self._rules[category] = await self._read_rules(category)
        return self._rules[category]

    async def _read_rules(self, category: str) -> list[RoutingRule]:
        group = category.split(".")[0]
        query = select(RoutingRule).where(RoutingRule.active.is_(True), RoutingRule.category.in_((category, group)))
        rules = list((await self.session.execute(query.order_by(RoutingRule.id))).scalars())
        if not rules and await self.session.scalar(select(RoutingRule.id).limit(1)) is None:
            # A database that never ran `migrate`'s defaults (tests, fresh installs) still routes.
            await self.ensure_defaults()
            rules = list((await self.session.execute(query.order_by(RoutingRule.id))).scalars())
        return rules

    async def _repeats(self, product_id: str, category: str, ticket: Ticket) -> int:
        since = ticket.requested_at - REPEAT_WINDOW
        if self.fresh:
            return len({tid for tid, at in self._seen.get((product_id, category), ()) if since <= at <= ticket.requested_at})
        # Sessions do not autoflush: the ticket's own items must be written for it to count itself.
        await self.session.flush()
        query = (
            select(func.count(func.distinct(Ticket.id)))
            .join(TicketItem, TicketItem.ticket_id == Ticket.id)
            .join(OrderItem, OrderItem.id == TicketItem.order_item_id)
            .where(OrderItem.product_id == product_id, Ticket.reason_code == category,
                   Ticket.requested_at >= since, Ticket.requested_at <= ticket.requested_at)
        )
        return int(await self.session.scalar(query) or 0)


def _because(rule: RoutingRule) -> str:
    parts = [f"{rule.category} → {rule.team}"]
    if rule.product_categories:
        parts.append(f"product category in {', '.join(rule.product_categories)}")
    if rule.min_repeat > 1:
        parts.append(f"≥ {rule.min_repeat} on this product in 30 days")
    return " · ".join(parts)


def summary(record: FeedbackRecord) -> dict[str, Any]:
    return {
        "category": record.category, "source": record.source, "suggested": record.suggested_category,
        "confidence": record.suggestion_confidence, "terms": record.suggestion_terms, "corrected": record.corrected,
    }
