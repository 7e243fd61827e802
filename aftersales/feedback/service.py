"""The only code that writes feedback: records at intake, routing to teams, agent refinement,
acknowledgements and actions."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, bindparam, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.clock import Clock
from aftersales.db import add_row, numbered_values, union_of_parts
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


@functools.lru_cache(maxsize=256)
def _latest_statement(pairs: int) -> Any:
    """The latest rows of each of `pairs` (product, reason) pairs, one index range each, every value
    bound (p0, r0, …, before, limit): built once per pair count, as building and compiling the union
    of subqueries cost more than running it (bench F26)."""
    t = TicketItem.__table__
    return union_of_parts(pairs, lambda i: (
        select(t.c.product_id, t.c.reason_code, t.c.ticket_id, t.c.requested_at)
        .where(t.c.product_id == bindparam(f"p{i}"), t.c.reason_code == bindparam(f"r{i}"),
               t.c.requested_at < bindparam("before", type_=t.c.requested_at.type))
        .order_by(t.c.requested_at.desc()).limit(bindparam("limit", type_=Integer()))
    ))


class FeedbackService:
    def __init__(self, session: AsyncSession, clock: Clock, *, fresh: bool = False) -> None:
        """`fresh`: recording tickets new in this transaction (set-wise intake): routing rules are
        read once per category, and repeat counts come from `prepare_repeats` plus the batch's
        own tickets so far, as if they had come one at a time."""
        self.session = session
        self.clock = clock
        self.fresh = fresh
        self._rules: dict[str, list[RoutingRule]] = {}
        self._active: list[RoutingRule] | None = None
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

    async def record_ticket(self, ticket: Ticket, order: Order, claimed: list[OrderItem]) -> None:
        """The category starts from the reason code; the text suggestion is kept beside it."""
        suggestion = classify.suggest(ticket.description)
        add_row(
            self.session, FeedbackRecord, ticket_id=ticket.id, category=ticket.reason_code, source="reason_code",
            suggested_category=suggestion.category, suggestion_confidence=suggestion.confidence,
            suggestion_terms=list(suggestion.terms), created_at=self.clock.now(),
        )
        if self.fresh:  # its claimed items make it count for those products (as its ticket_items rows would)
            for item in claimed:
                self._remember(item.product_id, ticket.reason_code, ticket.id, ticket.requested_at)
        await self._route(ticket, order, claimed, ticket.reason_code)

    async def load_rules(self) -> None:
        """Read the active routing rules for the batch now (writing the defaults into a database
        that has none), so that routing the batch only reads."""
        if self._active is None:
            self._active = await self._read_rules(None)

    async def prepare_repeats(self, tickets: list[tuple[list[OrderItem], str, datetime]]) -> None:
        """For a batch of new (routed items, reason, requested_at): the earlier tickets each
        product's repeat count may include, read before the batch is written.

        Only "at least min_repeat" matters, so the whole 30-day window is not needed: every ticket
        within the batch's own time span, and before it the latest `min_repeat` tickets of each
        (product, reason). A batch ticket's window either starts inside the span (the span rows
        decide) or reaches back before it, where the latest `min_repeat` tickets are either all in
        the window (the count is reached) or include every ticket that is."""
        needing = {reason for _, reason, _ in tickets}
        enough = 1
        for category in sorted(needing):
            repeats = [rule.min_repeat for rule in await self._rules_for(category) if rule.min_repeat > 1]
            if repeats:
                enough = max(enough, *repeats)
            else:
                needing.discard(category)
        pairs = sorted({(item.product_id, reason) for items, reason, _ in tickets if reason in needing for item in items})
        if not pairs:
            return
        first = min(at for _, _, at in tickets)
        last = max(at for _, _, at in tickets)
        rows = await self.session.execute(
            select(TicketItem.product_id, TicketItem.reason_code, TicketItem.ticket_id, TicketItem.requested_at)
            .where(TicketItem.product_id.in_(sorted({p for p, _ in pairs})), TicketItem.reason_code.in_(sorted(needing)),
                   TicketItem.requested_at >= first, TicketItem.requested_at <= last)
        )
        wanted = set(pairs)
        for product_id, reason, ticket_id, requested_at in rows:
            if (product_id, reason) in wanted:
                self._remember(product_id, reason, ticket_id, requested_at)
        await self._remember_latest(pairs, first, enough)

    async def _remember_latest(self, pairs: list[tuple[str, str]], before: datetime, enough: int) -> None:
        """The latest `enough` distinct tickets of each (product, reason) requested before `before`:
        one index range per pair. A ticket with two items of one product is two rows, so a pair
        whose rows hold fewer distinct tickets than asked is read again, further back."""
        limit = enough
        while pairs:
            values = {"before": before, "limit": limit, **numbered_values(pairs, ("p", "r"))}
            found: dict[tuple[str, str], list[tuple[int, datetime]]] = {pair: [] for pair in pairs}
            for product_id, reason, ticket_id, requested_at in await self.session.execute(_latest_statement(len(pairs)), values):
                found[(product_id, reason)].append((ticket_id, requested_at))
            short = []
            for pair, rows in found.items():
                if len({ticket_id for ticket_id, _ in rows}) < enough and len(rows) == limit:
                    short.append(pair)
                    continue
                for ticket_id, requested_at in rows:
                    self._remember(*pair, ticket_id, requested_at)
            pairs, limit = short, limit * 4

    def _remember(self, product_id: str, reason: str, ticket_id: int, requested_at: datetime) -> None:
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
        items = claimed or await self._order_items(order)
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
                add_row(
                    self.session, FeedbackItem, ticket_id=ticket.id, team=rule.team, category=category, product_id=item.product_id,
                    product_name=item.product_name, sku=item.sku, product_category=item.category,
                    live_session_id=order.live_session_id, host=live.host if live else None, quote=ticket.description,
                    evidence_urls=list(ticket.evidence_urls or []), stream_offset_seconds=offset if offset and offset >= 0 else None,
                    routed_because=_because(rule), status="new", created_at=self.clock.now(),
                )

    async def _order_items(self, order: Order) -> list[OrderItem]:
        if "items" in order.__dict__:  # loaded with the order (intake reads orders with their items)
            return list(order.items)
        return list((await self.session.execute(select(OrderItem).where(OrderItem.order_id == order.id))).scalars())

    async def _rules_for(self, category: str) -> list[RoutingRule]:
        if not self.fresh:
            return await self._read_rules(category)
        if category not in self._rules:
            await self.load_rules()  # a batch reads every active rule once, not once per category
            assert self._active is not None
            group = category.split(".")[0]
            self._rules[category] = [rule for rule in self._active if rule.category in (category, group)]
        return self._rules[category]

    async def _read_rules(self, category: str | None) -> list[RoutingRule]:
        """The active rules for a category and its group (all of them for None), by id."""
        query = select(RoutingRule).where(RoutingRule.active.is_(True)).order_by(RoutingRule.id)
        if category is not None:
            query = query.where(RoutingRule.category.in_((category, category.split(".")[0])))
        rules = list((await self.session.execute(query)).scalars())
        if not rules and await self.session.scalar(select(RoutingRule.id).limit(1)) is None:
            # A database that never ran `migrate`'s defaults (tests, fresh installs) still routes.
            await self.ensure_defaults()
            rules = list((await self.session.execute(query)).scalars())
        return rules

    async def _repeats(self, product_id: str, category: str, ticket: Ticket) -> int:
        since = ticket.requested_at - REPEAT_WINDOW
        if self.fresh:
            return len({tid for tid, at in self._seen.get((product_id, category), ()) if since <= at <= ticket.requested_at})
        # Sessions do not autoflush: the ticket's own items must be written for it to count itself.
        await self.session.flush()
        query = select(func.count(func.distinct(TicketItem.ticket_id))).where(
            TicketItem.product_id == product_id, TicketItem.reason_code == category,
            TicketItem.requested_at >= since, TicketItem.requested_at <= ticket.requested_at,
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
