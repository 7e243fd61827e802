"""Policy versions (draft → published), default queues, and simulation over past tickets."""

from __future__ import annotations

import heapq
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Row, Select, Text, cast, func, select, type_coerce, update
from sqlalchemy import text as sql_text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.clock import Clock
from aftersales.errors import Conflict, FieldError, InvalidInput, NotFound
from aftersales.tickets import policy as rules
from aftersales.sqlite_inline import OFFLOAD_MARK
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


# The policy in force: the latest published version (read by every intake batch; built once).
_PUBLISHED = (select(PolicyVersion.version, PolicyVersion.text).where(PolicyVersion.published_at.is_not(None))
              .order_by(PolicyVersion.version.desc()).limit(1))


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
        row = (await self.session.execute(_PUBLISHED)).first()
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
        """Replay a draft over the stored facts of past requests and compare with what happened.

        Disagreements are listed by ticket id, the first `max_listed`."""
        policy = parse_or_422(text)
        judge = rules.AutoApprovalJudge(policy)
        tally = _Tally(max_listed)
        conn = await self.session.connection()
        if conn.dialect.name == "postgresql":
            # The per-ticket subquery makes the plan look costly enough for JIT compilation, which
            # costs more (≈ 0.6 s) than it saves on this index-driven plan.
            await conn.execute(sql_text("SET LOCAL jit = off"))
        result = await conn.stream(simulation_query(start, end).execution_options(yield_per=SIMULATION_BATCH))
        async for rows in result.partitions():
            tally.add(rows, judge)
        return tally.summary(policy)


SIMULATION_BATCH = 5000


def simulation_query(start: datetime, end: datetime) -> Select[Any]:
    """The period's tickets with their stored facts (as text), old decision and first human decision.

    Every lookup is by the period's own tickets (the range on ix_tickets_requested_id, then primary
    keys, then ix_ticket_events_ticket_at), so the cost follows the period, not the whole history."""
    first_human = (
        select(TimelineEvent.action)
        .where(TimelineEvent.ticket_id == Ticket.id, TimelineEvent.action.in_(("approve", "reject")))
        .order_by(TimelineEvent.id)
        .limit(1)
        .correlate(Ticket)
        .scalar_subquery()
    )
    return (
        select(Ticket.id, cast(TicketDecision.facts, Text), TicketDecision.decision, Ticket.number,
               type_coerce(Ticket.requested_amount, BigInteger), first_human)  # fen: no Decimal per row
        .join(TicketDecision, TicketDecision.ticket_id == Ticket.id)
        .where(Ticket.requested_at >= start, Ticket.requested_at < end)
        .prefix_with(OFFLOAD_MARK)  # up to 100,000 rows: read on a thread, off the event loop
    )


class _Tally:
    """The simulation's counts, plus the disagreements with the smallest ticket ids."""

    def __init__(self, max_listed: int) -> None:
        self.max_listed = max_listed
        # (draft approves, approved at the time, first human decision) -> tickets
        self.counts: Counter[tuple[bool, bool, str | None]] = Counter()
        self.auto_approved_fen = 0
        # A heap on -ticket_id: its top is the listed disagreement with the largest ticket id.
        self._listed: list[tuple[int, str, str, int, str]] = []

    def add(self, rows: Sequence[Row[Any]], judge: rules.AutoApprovalJudge) -> None:
        """Rows of simulation_query (this runs for every ticket of the period: keep it lean)."""
        counts, automatic_of = self.counts, judge.automatic
        for ticket_id, document, old_decision, number, fen, human_choice in rows:
            automatic = automatic_of(document)
            counts[automatic, old_decision in rules.AUTOMATIC, human_choice] += 1
            if automatic:
                self.auto_approved_fen += fen
            if human_choice is not None and automatic != (human_choice == "approve"):
                self._offer((-ticket_id, number, document, fen, human_choice))

    def _offer(self, entry: tuple[int, str, str, int, str]) -> None:
        if len(self._listed) < self.max_listed:
            heapq.heappush(self._listed, entry)
        elif self._listed and entry > self._listed[0]:  # a smaller ticket id than the largest listed
            heapq.heapreplace(self._listed, entry)

    def summary(self, policy: rules.Policy) -> dict[str, Any]:
        def count(test: Callable[[bool, bool, str | None], bool]) -> int:
            return sum(n for key, n in self.counts.items() if test(*key))

        decided = count(lambda auto, was, human: human is not None)
        agree = count(lambda auto, was, human: human is not None and auto == (human == "approve"))
        auto_approved = count(lambda auto, was, human: auto)
        # Two-decimal amounts add up to the fen total scaled by 10⁻² ("0" when nothing is approved).
        amount = Decimal(self.auto_approved_fen).scaleb(-2) if auto_approved else Decimal("0")
        return {
            "tickets": sum(self.counts.values()),
            "auto_approved": auto_approved,
            "auto_approved_amount": str(amount),
            "currently_auto_approved": count(lambda auto, was, human: was),
            "changed": count(lambda auto, was, human: auto != was),
            "human_decided": decided,
            "agree": agree,
            "agreement_rate": round(agree / decided, 4) if decided else None,
            "disagreements": [_disagreement(policy, entry) for entry in sorted(self._listed, reverse=True)],
        }


def _disagreement(policy: rules.Policy, entry: tuple[int, str, str, int, str]) -> dict[str, Any]:
    negative_id, number, document, fen, human_choice = entry
    decision = rules.evaluate(policy, json.loads(document))  # the full trace only for the few listed
    return {
        "ticket_id": -negative_id, "number": number, "amount": str(Decimal(fen).scaleb(-2)),
        "draft": decision.outcome.to_dict(), "rule": decision.rule, "agent_decision": human_choice,
        "explanation": decision.explain(),
    }
