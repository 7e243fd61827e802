"""SLA clocks: started at intake, paused / resumed / stopped by status changes, recomputable.

Every clock change is an `sla_events` row; the ticket's SLA columns are a cache of replaying them
(see `recompute`). Times are merchant time under the ticket's SLA policy calendar.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.clock import Clock
from aftersales.db import add_row
from aftersales.sla.calendar import Calendar
from aftersales.sla.clock import ClockState, replay
from aftersales.sla.models import SlaEvent, SlaPolicy
from aftersales.tickets.models import Ticket

FINAL = frozenset({"closed", "cancelled"})
DEFAULT_PAUSE = ["awaiting_customer", "awaiting_return", "return_in_transit", "replacement_shipped"]
DEFAULT_WARN = [0.75, 0.9]

# Policies are never edited in place (a change is a new row), so caching them by id is safe.
_policies: dict[int, SlaPolicy] = {}


def _detached_copy(policy: SlaPolicy) -> SlaPolicy:
    """The cache holds copies that belong to no session: the object a session loaded is expired when
    that session rolls back, and every later request reading it from the cache then failed."""
    return SlaPolicy(**{column.key: getattr(policy, column.key) for column in SlaPolicy.__table__.columns})


@dataclass(frozen=True)
class Targets:
    policy: SlaPolicy
    calendar: Calendar

    @property
    def resolution(self) -> float:
        return self.policy.resolution_minutes * 60.0

    @property
    def first_response(self) -> float:
        return self.policy.first_response_minutes * 60.0


class SlaService:
    def __init__(self, session: AsyncSession, clock: Clock, *, fresh: bool = False) -> None:
        """`fresh`: the tickets are new in this transaction (set-wise intake), so clock changes are
        set on the objects and written by the session's flush, one statement for the batch; the
        active policies are then also read once for the batch."""
        self.session = session
        self.clock = clock
        self.fresh = fresh
        self._active: list[SlaPolicy] | None = None
        self._created: set[int] = set()

    # -- policies ---------------------------------------------------------------------------

    async def ensure_default_policy(self) -> SlaPolicy:
        policy = await self.session.scalar(
            select(SlaPolicy).where(SlaPolicy.active.is_(True), SlaPolicy.kind.is_(None), SlaPolicy.queue.is_(None),
                                    SlaPolicy.min_priority.is_(None)).order_by(SlaPolicy.id).limit(1)
        )
        if policy is None:
            policy = SlaPolicy(
                name="48 h closure, 2 h first response (24/7)", resolution_minutes=48 * 60, first_response_minutes=120,
                calendar={"type": "24x7"}, pause_statuses=list(DEFAULT_PAUSE), warn_at=list(DEFAULT_WARN),
                active=True, created_at=self.clock.now(),
            )
            self.session.add(policy)
            await self.session.flush()
            self._created.add(policy.id)
        return policy

    async def policy_for(self, ticket: Ticket) -> SlaPolicy:
        """The most specific active policy: kind + queue, then queue, then kind, then the default."""
        rows = self._active
        if rows is None:
            rows = list((await self.session.execute(select(SlaPolicy).where(SlaPolicy.active.is_(True)))).scalars())
            if self.fresh:
                self._active = rows

        def fits(p: SlaPolicy) -> bool:
            return ((p.kind is None or p.kind == ticket.kind) and (p.queue is None or p.queue == ticket.queue)
                    and (p.min_priority is None or ticket.priority >= p.min_priority))

        candidates = [p for p in rows if fits(p)]
        if not candidates:
            return await self.ensure_default_policy()
        # Equally specific: the newest wins (a change is a new row).
        return max(candidates, key=lambda p: ((p.kind is not None) + 2 * (p.queue is not None) + (p.min_priority is not None), p.id))

    async def targets(self, policy_id: int | None) -> Targets:
        policy = _policies.get(policy_id) if policy_id else None
        if policy is None:
            policy = await self.session.get(SlaPolicy, policy_id) if policy_id else await self.ensure_default_policy()
            assert policy is not None
            if policy.id not in self._created:  # a row this transaction made may yet be rolled back
                _policies[policy.id] = _detached_copy(policy)
        return Targets(policy=policy, calendar=Calendar.from_dict(policy.calendar))

    # -- clock changes ------------------------------------------------------------------------

    async def start(self, ticket: Ticket) -> None:
        """Both clocks start at the customer's own request time, not when we received it."""
        policy = await self.policy_for(ticket)
        targets = await self.targets(policy.id)
        at = ticket.requested_at
        for metric in ("resolution", "first_response"):
            self._event(ticket.id, metric, "start", at, f"request {ticket.number}")
        values = {
            "sla_policy_id": policy.id,
            "sla_elapsed_seconds": 0.0,
            "sla_running_since": at,
            "sla_due_at": targets.calendar.add_working(at, targets.resolution),
            "first_response_due_at": targets.calendar.add_working(at, targets.first_response),
            "sla_alerts_fired": [],
        }
        await self._save(ticket, values, targets)

    async def on_transition(self, ticket: Ticket, from_status: str, to_status: str, at: datetime, *, first_response: bool) -> None:
        targets = await self.targets(ticket.sla_policy_id)
        pause = set(targets.policy.pause_statuses)
        values: dict[str, Any] = {}
        if first_response and ticket.first_response_seconds is None:
            seconds = targets.calendar.working_seconds(ticket.requested_at, at)
            self._event(ticket.id, "first_response", "first_response", at, f"first response ({to_status})")
            values.update(first_response_seconds=seconds, first_response_met=seconds <= targets.first_response,
                          first_response_due_at=None)
        state = self._state(ticket)
        if to_status in FINAL and from_status not in FINAL:
            self._stop_running(ticket, state, targets, at, "stop", f"ticket {to_status}")
            met = state.elapsed <= targets.resolution if to_status == "closed" else None
            values.update(sla_elapsed_seconds=state.elapsed, sla_running_since=None, sla_due_at=None,
                          resolution_seconds=state.elapsed, resolution_met=met)
            if ticket.first_response_seconds is None and "first_response_seconds" not in values:
                # Closed without anyone answering (e.g. cancelled at once): the clock simply ends.
                self._event(ticket.id, "first_response", "stop", at, f"ticket {to_status}")
                values["first_response_due_at"] = None
        elif from_status in FINAL and to_status not in FINAL:
            self._event(ticket.id, "resolution", "reopen", at, f"reopened to {to_status}")
            running = to_status not in pause
            values.update(sla_running_since=at if running else None, resolution_seconds=None, resolution_met=None,
                          sla_due_at=targets.calendar.add_working(at, max(targets.resolution - state.elapsed, 0)) if running else None)
        elif from_status not in pause and to_status in pause:
            self._stop_running(ticket, state, targets, at, "pause", f"waiting: {to_status}")
            values.update(sla_elapsed_seconds=state.elapsed, sla_running_since=None, sla_due_at=None)
        elif from_status in pause and to_status not in pause:
            self._event(ticket.id, "resolution", "resume", at, f"back with the merchant: {to_status}")
            values.update(sla_running_since=at, sla_due_at=targets.calendar.add_working(at, max(targets.resolution - state.elapsed, 0)))
        if values:
            await self._save(ticket, values, targets)

    def _stop_running(self, ticket: Ticket, state: ClockState, targets: Targets, at: datetime, event: str, cause: str) -> None:
        if state.running_since is not None:
            state.elapsed += targets.calendar.working_seconds(state.running_since, at)
            state.running_since = None
        self._event(ticket.id, "resolution", event, at, cause)

    def _state(self, ticket: Ticket) -> ClockState:
        return ClockState(elapsed=ticket.sla_elapsed_seconds or 0.0, running_since=ticket.sla_running_since,
                          stopped=ticket.sla_running_since is None, started=True)

    async def _save(self, ticket: Ticket, values: dict[str, Any], targets: Targets) -> None:
        for key, value in values.items():
            setattr(ticket, key, value)
        ticket.sla_next_alert_at = next_alert_at(ticket, targets)
        if self.fresh:
            return
        values["sla_next_alert_at"] = ticket.sla_next_alert_at
        await self.session.execute(update(Ticket).where(Ticket.id == ticket.id).values(**values).execution_options(synchronize_session=False))

    def _event(self, ticket_id: int, metric: str, event: str, at: datetime, cause: str, **extra: Any) -> None:
        add_row(self.session, SlaEvent, ticket_id=ticket_id, metric=metric, event=event, at=at, cause=cause, data=extra)

    # -- audit ----------------------------------------------------------------------------------

    async def recompute(self, ticket_id: int, now: datetime | None = None) -> dict[str, Any]:
        """Replay the event log from scratch: what the stored figures must equal."""
        ticket = await self.session.get(Ticket, ticket_id)
        assert ticket is not None
        targets = await self.targets(ticket.sla_policy_id)
        rows = (await self.session.execute(
            select(SlaEvent.metric, SlaEvent.at, SlaEvent.event).where(SlaEvent.ticket_id == ticket_id).order_by(SlaEvent.id)
        )).all()
        resolution = replay([(at, ev) for metric, at, ev in rows if metric == "resolution"], targets.calendar)
        first = replay([(at, ev) for metric, at, ev in rows if metric == "first_response"], targets.calendar)
        now = now or self.clock.now()
        return {
            "resolution_elapsed": resolution.elapsed_at(targets.calendar, now),
            "resolution_running": resolution.running_since is not None,
            "resolution_due_at": resolution.due_at(targets.calendar, targets.resolution),
            # Cancelled tickets are neither met nor missed: only a closure is judged.
            "resolution_met": (resolution.elapsed <= targets.resolution) if resolution.stopped and ticket.status == "closed" else None,
            # Once the breach warning fired, the ticket stays breached (even if reopened and closed again).
            "resolution_breached": any(metric == "resolution" and ev == "breach" for metric, _, ev in rows),
            "first_response_elapsed": first.elapsed_at(targets.calendar, now),
            "first_response_met": (first.elapsed <= targets.first_response) if first.stopped and ticket.first_response_at else None,
        }


def thresholds(targets: Targets) -> list[float]:
    return sorted({*targets.policy.warn_at, 1.0})


def next_alert_at(ticket: Ticket, targets: Targets) -> datetime | None:
    """The earliest moment a not-yet-fired warning or breach falls due on a running clock."""
    fired = set(ticket.sla_alerts_fired or [])
    moments: list[datetime] = []
    if ticket.sla_running_since is not None:
        for fraction in thresholds(targets):
            if f"resolution:{fraction}" not in fired:
                remaining = fraction * targets.resolution - (ticket.sla_elapsed_seconds or 0.0)
                moment = targets.calendar.add_working(ticket.sla_running_since, max(remaining, 0.0))
                if moment:
                    moments.append(moment)
                break
    if ticket.first_response_seconds is None and ticket.first_response_due_at is not None and ticket.status not in FINAL:
        for fraction in thresholds(targets):
            if f"first_response:{fraction}" not in fired:
                moment = targets.calendar.add_working(ticket.requested_at, fraction * targets.first_response)
                if moment:
                    moments.append(moment)
                break
    return min(moments) if moments else None
