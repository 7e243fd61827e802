"""Periodic SLA work: fire at-risk and breach warnings exactly once, and escalate."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from aftersales.clock import Clock
from aftersales.db import dialect_insert
from aftersales.notifications.service import enqueue, notify_users, supervisor_ids
from aftersales.sla.models import SlaEvent
from aftersales.sla.service import FINAL, SlaService, Targets, next_alert_at, thresholds
from aftersales.tickets.models import Ticket


async def fire_due_alerts(factory: async_sessionmaker[AsyncSession], clock: Clock, *, limit: int = 200) -> int:
    """Warnings whose time has come. The unique (ticket, metric:threshold) index makes each fire once,
    even with several workers: only the worker whose insert lands notifies, in the same transaction."""
    fired = 0
    async with factory() as session:
        now = clock.now()
        ids = (await session.execute(
            select(Ticket.id).where(Ticket.sla_next_alert_at.is_not(None), Ticket.sla_next_alert_at <= now)
            .order_by(Ticket.sla_next_alert_at).limit(limit)
        )).scalars().all()
        await session.commit()
    for ticket_id in ids:
        async with factory() as session:
            fired += await _fire_for_ticket(session, clock, ticket_id)
            await session.commit()
    return fired


async def _fire_for_ticket(session: AsyncSession, clock: Clock, ticket_id: int) -> int:
    ticket = await session.get(Ticket, ticket_id, populate_existing=True)
    if ticket is None or ticket.status in FINAL:
        return 0
    service = SlaService(session, clock)
    targets = await service.targets(ticket.sla_policy_id)
    now = clock.now()
    fired_keys = list(ticket.sla_alerts_fired or [])
    count = 0
    breached = False
    for metric, fraction in _crossed(ticket, targets, now):
        key = f"{metric}:{fraction}"
        if key in fired_keys:
            continue
        fired_keys.append(key)
        event = "breach" if fraction >= 1.0 else "at_risk"
        inserted = await session.execute(
            dialect_insert(session, SlaEvent)
            .values(ticket_id=ticket.id, metric=metric, event=event, at=now, threshold=fraction, dedupe_key=key,
                    cause=f"{int(fraction * 100)} % of the {metric} target", data={})
            .on_conflict_do_nothing(index_elements=["ticket_id", "dedupe_key"])
            .returning(SlaEvent.id)
        )
        if inserted.first() is None:
            continue  # another worker fired it first
        count += 1
        breached = breached or (metric == "resolution" and event == "breach")
        await _escalate(session, clock, ticket, metric, event, fraction)
    ticket.sla_alerts_fired = fired_keys
    values: dict[str, Any] = {"sla_alerts_fired": fired_keys, "sla_next_alert_at": next_alert_at(ticket, targets)}
    if breached:
        # The breach stays on the ticket (reports count it without reading sla_events); only the
        # worker whose breach event landed writes it, in the same transaction as the event.
        values["resolution_breached"] = True
        set_committed_value(ticket, "resolution_breached", True)
    await session.execute(update(Ticket).where(Ticket.id == ticket.id).values(**values).execution_options(synchronize_session=False))
    return count


def _crossed(ticket: Ticket, targets: Targets, now: Any) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    if ticket.sla_running_since is not None:
        elapsed = (ticket.sla_elapsed_seconds or 0.0) + targets.calendar.working_seconds(ticket.sla_running_since, now)
        out += [("resolution", f) for f in thresholds(targets) if elapsed >= f * targets.resolution]
    if ticket.first_response_seconds is None and ticket.first_response_due_at is not None:
        elapsed = targets.calendar.working_seconds(ticket.requested_at, now)
        out += [("first_response", f) for f in thresholds(targets) if elapsed >= f * targets.first_response]
    return out


async def _escalate(session: AsyncSession, clock: Clock, ticket: Ticket, metric: str, event: str, fraction: float) -> None:
    """Raise the priority, tell the assignee and the supervisors, and queue the webhooks."""
    # Compute first and write without expiring the attribute: a second escalation in the same
    # pass must not lazy-load it (async sessions cannot).
    priority = min((ticket.priority or 0) + 1, 9)
    await session.execute(
        update(Ticket).where(Ticket.id == ticket.id).values(priority=priority).execution_options(synchronize_session=False)
    )
    set_committed_value(ticket, "priority", priority)
    percent = int(fraction * 100)
    title = f"{ticket.number}: {'SLA breached' if event == 'breach' else f'{percent} % of SLA used'} ({metric})"
    users = await supervisor_ids(session)
    if ticket.assignee_id:
        users.add(ticket.assignee_id)
    await notify_users(session, clock, users, kind=f"sla.{event}", title=title, body=f"status {ticket.status}", ticket_id=ticket.id)
    await enqueue(session, clock, f"sla.{event}", f"{ticket.id}:{metric}:{fraction}", {
        "title": title,
        "text": f"{ticket.number} · {ticket.kind} · {ticket.reason_code} · status {ticket.status} · queue {ticket.queue or '-'}",
        "ticket_id": ticket.id, "ticket_number": ticket.number, "metric": metric, "threshold": fraction,
        "event": event, "url": f"/tickets/{ticket.id}",
    })
