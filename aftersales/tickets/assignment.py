"""Who works which ticket: next ticket, claim, release, reassign and auto-assignment.

Ownership changes are conditional UPDATEs on `assignee_id`, so two agents can never both
own a ticket; "next ticket" on PostgreSQL also skips rows another agent is taking right now.
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any

from sqlalchemy import Integer, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.auth.models import User
from aftersales.auth.principal import Principal
from aftersales.clock import Clock
from aftersales.db import add_row, numbered_values, union_of_parts
from aftersales.errors import Conflict, Forbidden, InvalidInput, NotFound
from aftersales.schemas import check_id
from aftersales.tickets.models import Queue, QueueMember, Ticket, TimelineEvent

# Statuses where the next move is the merchant's: these are what an agent is handed.
WORKABLE = ("pending_review", "return_received", "approved", "refunding", "refunded", "rejected")
ASSIGN_ANYONE = ("supervisor", "admin")


# "Next ticket" reads this many candidates at first, and at most this many when others took them all.
CANDIDATES = 4
MAX_CANDIDATES = 256


@functools.lru_cache(maxsize=128)
def _next_candidates(groups: int, due: bool) -> Any:
    """The `k` most urgent unassigned tickets over `groups` (queue, status) pairs (bound as q0, s0, …):
    each pair is one range of ix_tickets_next (unassigned tickets in this very order), and only the
    pairs' first rows are merged. One query over every pair at once sorted every unassigned ticket of
    the agent's queues first: ~47,000 rows a request at a backlog of that size (bench F27). `due`:
    tickets with an SLA due time (most urgent first); else those without one, by priority and age."""
    t = Ticket.__table__
    def order(c: Any) -> tuple[Any, ...]:
        return ((c.sla_due_at.asc(),) if due else ()) + (c.priority.desc(), c.requested_at.asc(), c.id.asc())
    k = bindparam("k", type_=Integer())
    merged = union_of_parts(groups, lambda i: (
        select(t.c.id, t.c.sla_due_at, t.c.priority, t.c.requested_at)
        .where(t.c.queue == bindparam(f"q{i}"), t.c.assignee_id.is_(None), t.c.status == bindparam(f"s{i}"),
               t.c.sla_due_at.is_not(None) if due else t.c.sla_due_at.is_(None))
        .order_by(*order(t.c)).limit(k)
    )).subquery()
    return select(merged.c.id).order_by(*order(merged.c)).limit(k)


# Built once, like the statements below: next ticket runs it for each candidate it tries.
_LOCK_IF_FREE = (select(Ticket.id).where(Ticket.id == bindparam("ticket_id"), Ticket.assignee_id.is_(None))
                 .with_for_update(skip_locked=True))

# (user_id, open tickets) of a queue's active members, fewest first: read by every intake batch
# for each auto-assigning queue, so built once.
_QUEUE_LOADS = (
    select(QueueMember.user_id, func.count(Ticket.id).label("open"))
    .join(User, User.id == QueueMember.user_id)
    .outerjoin(Ticket, (Ticket.assignee_id == QueueMember.user_id) & Ticket.status.in_(WORKABLE))
    .where(QueueMember.queue_key == bindparam("queue_key"), User.active.is_(True))
    .group_by(QueueMember.user_id)
    .order_by(func.count(Ticket.id).asc(), QueueMember.user_id.asc())
)


class AssignmentService:
    def __init__(self, session: AsyncSession, clock: Clock, *, fresh: bool = False) -> None:
        """`fresh`: auto-assigning tickets new in this transaction (set-wise intake). Each queue's
        loads are read once and counted on as tickets are handed out, and the owner is set on the
        object for the session's flush (nobody else can see the ticket yet)."""
        self.session = session
        self.clock = clock
        self.fresh = fresh
        self._loads: dict[str, list[tuple[int, int]]] = {}
        self._given: Counter[int] = Counter()
        self._queues: dict[str, Queue | None] = {}

    async def queues_of(self, user_id: int) -> list[str]:
        query = select(QueueMember.queue_key).join(Queue, Queue.key == QueueMember.queue_key).where(
            QueueMember.user_id == user_id, Queue.active.is_(True)
        )
        return list((await self.session.execute(query)).scalars())

    async def next_ticket(self, agent: Principal) -> Ticket | None:
        """The most urgent unassigned ticket of the agent's queues: SLA due, then priority, then age."""
        assert agent.id is not None
        queues = await self.queues_of(agent.id)
        if not queues:
            return None
        groups = [(queue, status) for queue in queues for status in WORKABLE]
        values = numbered_values(groups, ("q", "s"))
        postgres = self.session.get_bind().dialect.name == "postgresql"
        for due in (True, False):  # tickets with an SLA due time first, then those without (paused clocks)
            many = CANDIDATES
            while True:
                ids = list(await self.session.scalars(_next_candidates(len(groups), due), {**values, "k": many}))
                for ticket_id in ids:
                    if postgres and not await self._lock_if_free(ticket_id):
                        continue  # another agent is taking it right now
                    if await self._take(ticket_id, agent, expected_assignee=None, action="assign_next"):
                        return await self.session.get(Ticket, ticket_id, populate_existing=True)
                if len(ids) < many or many >= MAX_CANDIDATES:
                    break
                many *= 4  # all taken meanwhile: look further down the queues
        return None

    async def _lock_if_free(self, ticket_id: int) -> bool:
        """PostgreSQL: lock the ticket unless another transaction holds it, and only if still unassigned."""
        return await self.session.scalar(_LOCK_IF_FREE, {"ticket_id": ticket_id}) is not None

    async def claim(self, ticket_id: int, agent: Principal) -> Ticket:
        ticket = await self._get(ticket_id)
        if ticket.assignee_id == agent.id:
            return ticket
        if ticket.assignee_id is not None:
            raise Conflict(f"ticket {ticket.number} is already assigned", assignee_id=ticket.assignee_id)
        if not await self._take(ticket_id, agent, expected_assignee=None, action="claim"):
            raise Conflict(f"ticket {ticket.number} was just taken by someone else")
        return await self._get(ticket_id)

    async def release(self, ticket_id: int, agent: Principal) -> Ticket:
        ticket = await self._get(ticket_id)
        if ticket.assignee_id is None:
            return ticket
        if ticket.assignee_id != agent.id and agent.role not in ASSIGN_ANYONE:
            raise Forbidden(f"ticket {ticket.number} is assigned to someone else")
        await self._set(ticket, None, agent, "release", expected_assignee=ticket.assignee_id)
        return await self._get(ticket_id)

    async def assign(self, ticket_id: int, user_id: int | None, by: Principal) -> Ticket:
        if by.role not in ASSIGN_ANYONE:
            raise Forbidden("only a supervisor can assign tickets to others")
        ticket = await self._get(ticket_id)
        if user_id is not None:
            user = await self.session.get(User, user_id)
            if user is None or not user.active or user.role not in ("agent", "supervisor"):
                raise InvalidInput.on("user_id", "is not an active agent")
        await self._set(ticket, user_id, by, "assign", expected_assignee=ticket.assignee_id)
        return await self._get(ticket_id)

    async def auto_assign(self, ticket: Ticket, by: Principal) -> int | None:
        """Give the ticket to the member of its queue with the fewest open tickets, under the cap."""
        queue = await self._queue(ticket.queue) if ticket.queue else None
        if queue is None or not queue.auto_assign:
            return None
        if self.fresh:
            if queue.key not in self._loads:
                # The batch's tickets are written after it is decided, so this reads only earlier ones.
                self._loads[queue.key] = await self._queue_loads(queue.key)
            # Loads as the query would read them had the batch's earlier tickets come one by one.
            loads = sorted(((user_id, n + self._given[user_id]) for user_id, n in self._loads[queue.key]),
                           key=lambda entry: (entry[1], entry[0]))
        else:
            loads = await self._queue_loads(queue.key)
        chosen = next((user_id for user_id, open_count in loads if open_count < queue.agent_cap), None)
        if chosen is None:
            return None
        if self.fresh:
            ticket.assignee_id = chosen
            ticket.updated_at = self.clock.now()
            self._record_owner(ticket, chosen, by, "auto_assign", None)
            self._given[chosen] += 1
        else:
            await self._set(ticket, chosen, by, "auto_assign", expected_assignee=None)
        return chosen

    async def _queue(self, key: str) -> Queue | None:
        # The identity map only holds objects someone else holds: a batch keeps its queues here.
        if key not in self._queues or not self.fresh:
            self._queues[key] = await self.session.get(Queue, key)
        return self._queues[key]

    async def _queue_loads(self, queue_key: str) -> list[tuple[int, int]]:
        """(user_id, open tickets) of the queue's active members, fewest first."""
        rows = await self.session.execute(_QUEUE_LOADS, {"queue_key": queue_key})
        return [(user_id, open_count) for user_id, open_count in rows.all()]

    async def _take(self, ticket_id: int, agent: Principal, *, expected_assignee: int | None, action: str) -> bool:
        ticket = await self._get(ticket_id)
        try:
            await self._set(ticket, agent.id, agent, action, expected_assignee=expected_assignee)
        except Conflict:
            return False
        return True

    async def _set(self, ticket: Ticket, user_id: int | None, by: Principal, action: str, *, expected_assignee: int | None) -> None:
        condition = Ticket.assignee_id.is_(None) if expected_assignee is None else Ticket.assignee_id == expected_assignee
        result = await self.session.execute(
            update(Ticket).where(Ticket.id == ticket.id, condition).values(assignee_id=user_id, updated_at=self.clock.now())
        )
        if result.rowcount != 1:
            raise Conflict(f"ticket {ticket.number} changed hands meanwhile; reload it")
        self._record_owner(ticket, user_id, by, action, expected_assignee)
        await self.session.flush()

    def _record_owner(self, ticket: Ticket, user_id: int | None, by: Principal, action: str, previous: int | None) -> None:
        add_row(self.session, TimelineEvent, ticket_id=ticket.id, at=self.clock.now(), actor=by.actor, action=action,
                from_status=None, to_status=None, note="", data={"from_assignee": previous, "to_assignee": user_id})

    async def _get(self, ticket_id: int) -> Ticket:
        check_id(ticket_id, "ticket")
        ticket = await self.session.get(Ticket, ticket_id, populate_existing=True)
        if ticket is None:
            raise NotFound(f"ticket {ticket_id} does not exist")
        return ticket
