"""Policy versions (draft → published), default queues, and simulation over past tickets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.clock import Clock
from aftersales.errors import Conflict, FieldError, InvalidInput, NotFound
from aftersales.tickets import policy as rules
from aftersales.tickets.models import PolicyVersion, Queue, Ticket, TicketDecision, TimelineEvent

DEFAULT_QUEUES = (
    # key, 中文, English, priority, description
    ("quality_review", "质量审核", "Quality review", 2, "Quality claims that need a person to look at the evidence."),
    ("high_value", "高价值", "High value", 3, "Large amounts: a second pair of eyes before money moves."),
    ("logistics", "物流异常", "Logistics exceptions", 2, "Lost or late parcels: talk to the carrier first."),
    ("risk", "风险", "Risk", 3, "Repeat requesters, blocked lists, suspected counterfeits."),
    ("complaints", "投诉", "Complaints", 2, "Complaints without goods movement."),
    ("general", "通用", "General", 1, "Everything no other queue claims."),
)

# Parsed policies by their text (not by version number, which a reset database reuses).
_parsed: dict[str, rules.Policy] = {}


def _parse_cached(text: str) -> rules.Policy:
    policy = _parsed.get(text)
    if policy is None:
        if len(_parsed) > 64:
            _parsed.clear()
        policy = _parsed[text] = rules.parse(text)
    return policy


@dataclass
class CurrentPolicy:
    version: int
    policy: rules.Policy


def parse_or_422(text: str) -> rules.Policy:
    try:
        return rules.parse(text)
    except rules.PolicyError as exc:
        raise InvalidInput(str(exc), errors=[FieldError(field=f"text:line {exc.line}", reason=exc.message)], line=exc.line) from exc


class PolicyService:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self.session = session
        self.clock = clock

    async def ensure_defaults(self) -> None:
        """The shipped queues and policy, written once; later edits are never overwritten."""
        existing = set((await self.session.execute(select(Queue.key))).scalars())
        for key, zh, en, priority, description in DEFAULT_QUEUES:
            if key not in existing:
                self.session.add(Queue(key=key, name_zh=zh, name_en=en, priority=priority, description=description))
        if await self.session.scalar(select(func.count()).select_from(PolicyVersion)) == 0:
            now = self.clock.now()
            self.session.add(PolicyVersion(
                version=1, text=rules.DEFAULT_POLICY, note="default policy shipped with aftersales",
                author="system", created_at=now, published_at=now, published_by="system",
            ))
        try:
            # A savepoint: losing this race must not roll back the caller's work (e.g. an intake).
            async with self.session.begin_nested():
                await self.session.flush()
        except IntegrityError:
            pass  # another process wrote the defaults at the same moment; theirs are as good

    async def current(self) -> CurrentPolicy:
        row = (await self.session.execute(
            select(PolicyVersion.version, PolicyVersion.text).where(PolicyVersion.published_at.is_not(None))
            .order_by(PolicyVersion.version.desc()).limit(1)
        )).first()
        if row is None:
            await self.ensure_defaults()
            return CurrentPolicy(version=1, policy=_parse_cached(rules.DEFAULT_POLICY))
        return CurrentPolicy(version=row.version, policy=_parse_cached(row.text))

    async def versions(self) -> list[PolicyVersion]:
        return list((await self.session.execute(select(PolicyVersion).order_by(PolicyVersion.version.desc()))).scalars())

    async def get_version(self, version: int) -> PolicyVersion:
        row = await self.session.scalar(select(PolicyVersion).where(PolicyVersion.version == version))
        if row is None:
            raise NotFound(f"policy version {version} does not exist")
        return row

    async def save_draft(self, text: str, note: str, author: str) -> PolicyVersion:
        policy = parse_or_422(text)
        await self._check_queues(policy)
        latest = await self.session.scalar(select(func.max(PolicyVersion.version))) or 0
        draft = PolicyVersion(version=latest + 1, text=text, note=note, author=author, created_at=self.clock.now())
        self.session.add(draft)
        await self.session.flush()
        return draft

    async def publish(self, version: int, by: str) -> PolicyVersion:
        row = await self.get_version(version)
        if row.published_at is not None:
            raise Conflict(f"policy version {version} is already published")
        newest = await self.session.scalar(select(func.max(PolicyVersion.version)).where(PolicyVersion.published_at.is_not(None))) or 0
        if version < newest:
            raise Conflict(f"version {newest} is already published; save this draft again to publish it on top")
        parse_or_422(row.text)
        result = await self.session.execute(
            update(PolicyVersion)
            .where(PolicyVersion.version == version, PolicyVersion.published_at.is_(None))
            .values(published_at=self.clock.now(), published_by=by)
        )
        if result.rowcount != 1:
            raise Conflict(f"policy version {version} was published by someone else")
        await self.session.refresh(row)
        return row

    async def _check_queues(self, policy: rules.Policy) -> None:
        known = set((await self.session.execute(select(Queue.key).where(Queue.active.is_(True)))).scalars())
        unknown = sorted(policy.queues() - known)
        if unknown:
            raise InvalidInput.on("text", f"unknown queue(s): {', '.join(unknown)}; create them first")

    async def simulate(self, text: str, start: datetime, end: datetime, *, max_listed: int = 200) -> dict[str, Any]:
        """Replay a draft over the stored facts of past requests and compare with what happened."""
        policy = parse_or_422(text)
        human = (
            select(TimelineEvent.ticket_id, func.min(TimelineEvent.id).label("first_id"))
            .where(TimelineEvent.action.in_(("approve", "reject")))
            .group_by(TimelineEvent.ticket_id)
            .subquery()
        )
        human_action = (
            select(TimelineEvent.ticket_id, TimelineEvent.action)
            .join(human, human.c.first_id == TimelineEvent.id)
            .subquery()
        )
        query = (
            select(TicketDecision.ticket_id, TicketDecision.facts, TicketDecision.decision, Ticket.number,
                   Ticket.requested_amount, human_action.c.action)
            .join(Ticket, Ticket.id == TicketDecision.ticket_id)
            .outerjoin(human_action, human_action.c.ticket_id == TicketDecision.ticket_id)
            .where(Ticket.requested_at >= start, Ticket.requested_at < end)
        )
        totals = {"tickets": 0, "auto_approved": 0, "auto_approved_amount": Decimal("0"), "currently_auto_approved": 0,
                  "changed": 0, "human_decided": 0, "agree": 0}
        disagreements: list[dict[str, Any]] = []
        result = await self.session.stream(query.execution_options(yield_per=2000))
        async for ticket_id, facts, old_decision, number, amount, human_choice in result:
            totals["tickets"] += 1
            outcome, _ = rules.decide(policy, facts)  # the full trace only for the disagreements listed
            automatic = outcome.decision in ("approve", "fast_refund")
            if automatic:
                totals["auto_approved"] += 1
                totals["auto_approved_amount"] += amount
            if old_decision in ("approve", "fast_refund"):
                totals["currently_auto_approved"] += 1
            if automatic != (old_decision in ("approve", "fast_refund")):
                totals["changed"] += 1
            if human_choice is None:
                continue
            totals["human_decided"] += 1
            agrees = automatic == (human_choice == "approve")
            if agrees:
                totals["agree"] += 1
            elif len(disagreements) < max_listed:
                decision = rules.evaluate(policy, facts)
                disagreements.append({
                    "ticket_id": ticket_id, "number": number, "amount": str(amount), "draft": decision.outcome.to_dict(),
                    "rule": decision.rule, "agent_decision": human_choice, "explanation": decision.explain(),
                })
        decided = totals["human_decided"]
        return {
            **totals,
            "auto_approved_amount": str(totals["auto_approved_amount"]),
            "agreement_rate": round(totals["agree"] / decided, 4) if decided else None,
            "disagreements": disagreements,
        }
