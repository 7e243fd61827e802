"""JSON API for the policy (versions, simulate, publish), queues, assignment and the auto-approval report."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post, put
from litestar.datastructures import State
from litestar.params import Parameter
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.auth.guards import ACT_ON_TICKETS, READ_TICKETS, current_principal, requires
from aftersales.auth.models import User
from aftersales.clock import Clock, ensure_utc
from aftersales.errors import InvalidInput, NotFound
from aftersales.settings import Settings
from aftersales.tickets.assignment import AssignmentService
from aftersales.tickets.models import PolicyVersion, Queue, QueueMember, Ticket, TicketDecision
from aftersales.tickets.policy_service import PolicyService
from aftersales.tickets.schemas import TicketSummary, ticket_summary

SUPERVISE = ("supervisor", "admin")


class PolicyVersionOut(msgspec.Struct, kw_only=True):
    version: int
    text: str
    note: str
    author: str
    created_at: datetime
    published_at: datetime | None
    published_by: str | None
    current: bool = False


class DraftIn(msgspec.Struct, kw_only=True):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]
    note: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class SimulateIn(msgspec.Struct, kw_only=True):
    start: datetime
    end: datetime
    text: str | None = None
    version: int | None = None


class QueueIn(msgspec.Struct, kw_only=True):
    name_zh: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    name_en: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    priority: Annotated[int, msgspec.Meta(ge=0, le=9)] = 0
    description: str = ""
    auto_assign: bool = False
    agent_cap: Annotated[int, msgspec.Meta(ge=1, le=500)] = 20
    active: bool = True
    members: list[int] = []


class QueueOut(QueueIn, kw_only=True):
    key: str


class AssignIn(msgspec.Struct, kw_only=True):
    user_id: int | None


def version_out(row: PolicyVersion, current: int | None = None) -> PolicyVersionOut:
    return PolicyVersionOut(
        version=row.version, text=row.text, note=row.note, author=row.author, created_at=row.created_at,
        published_at=row.published_at, published_by=row.published_by, current=row.version == current,
    )


class PolicyController(Controller):
    path = "/api/v1"
    tags = ["policy, queues and assignment"]

    @get("/policy", guards=[requires(*READ_TICKETS)])
    async def current_policy(self, db_session: AsyncSession, clock: Clock) -> list[PolicyVersionOut]:
        """Every version, newest first; `current` marks the one deciding new tickets."""
        service = PolicyService(db_session, clock)
        current = await service.current()
        return [version_out(row, current.version) for row in await service.versions()]

    @post("/policy/drafts", guards=[requires(*SUPERVISE)], status_code=201)
    async def save_draft(self, request: Request[Any, Any, Any], data: DraftIn, db_session: AsyncSession, clock: Clock) -> PolicyVersionOut:
        """Validate and store a draft; errors name the line and the problem."""
        row = await PolicyService(db_session, clock).save_draft(data.text, data.note, current_principal(request).actor)
        await db_session.commit()
        return version_out(row)

    @post("/policy/versions/{version:int}/publish", guards=[requires(*SUPERVISE)], status_code=200)
    async def publish(self, request: Request[Any, Any, Any], version: int, db_session: AsyncSession, clock: Clock) -> PolicyVersionOut:
        row = await PolicyService(db_session, clock).publish(version, current_principal(request).actor)
        await db_session.commit()
        return version_out(row, row.version)

    @post("/policy/simulate", guards=[requires(*SUPERVISE)], status_code=200)
    async def simulate(self, data: SimulateIn, state: State, clock: Clock) -> dict[str, Any]:
        """Replay a draft (text or version) over the tickets requested in [start, end)."""
        # It only reads, for seconds over a large period: a read session, so that on SQLite it neither
        # holds the write lock nor the process's write gate (a POST would get both) meanwhile.
        async with state.read_sessionmaker() as session:
            service = PolicyService(session, clock)
            text = data.text if data.text is not None else (await service.get_version(data.version)).text if data.version else None
            if text is None:
                raise InvalidInput.on("text", "give the draft's text or a version")
            if data.end <= data.start:
                raise InvalidInput.on("end", "must be after start")
            return await service.simulate(text, ensure_utc(data.start), ensure_utc(data.end))

    @get("/queues", guards=[requires(*READ_TICKETS)])
    async def list_queues(self, db_session: AsyncSession) -> list[QueueOut]:
        return await _queues_out(db_session)

    @put("/queues/{key:str}", guards=[requires(*SUPERVISE)])
    async def put_queue(self, key: Annotated[str, Parameter(pattern=r"^[a-z][a-z0-9_]{1,63}$")], data: QueueIn, db_session: AsyncSession) -> QueueOut:
        """Create or change a queue and set its members (user ids of agents or supervisors)."""
        await save_queue(db_session, key, data)
        await db_session.commit()
        return next(q for q in await _queues_out(db_session) if q.key == key)

    @post("/tickets/next", guards=[requires(*ACT_ON_TICKETS)], status_code=200)
    async def next_ticket(self, request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock) -> TicketSummary | None:
        """Hand the caller the most urgent unassigned ticket of their queues (null when none)."""
        ticket = await AssignmentService(db_session, clock).next_ticket(_person(request))
        await db_session.commit()
        return ticket_summary(ticket) if ticket else None

    @post("/tickets/{ticket_id:int}/claim", guards=[requires(*ACT_ON_TICKETS)], status_code=200)
    async def claim(self, request: Request[Any, Any, Any], ticket_id: int, db_session: AsyncSession, clock: Clock) -> TicketSummary:
        ticket = await AssignmentService(db_session, clock).claim(ticket_id, _person(request))
        await db_session.commit()
        return ticket_summary(ticket)

    @post("/tickets/{ticket_id:int}/release", guards=[requires(*ACT_ON_TICKETS)], status_code=200)
    async def release(self, request: Request[Any, Any, Any], ticket_id: int, db_session: AsyncSession, clock: Clock) -> TicketSummary:
        ticket = await AssignmentService(db_session, clock).release(ticket_id, _person(request))
        await db_session.commit()
        return ticket_summary(ticket)

    @post("/tickets/{ticket_id:int}/assign", guards=[requires(*SUPERVISE)], status_code=200)
    async def assign(self, request: Request[Any, Any, Any], ticket_id: int, data: AssignIn, db_session: AsyncSession, clock: Clock) -> TicketSummary:
        ticket = await AssignmentService(db_session, clock).assign(ticket_id, data.user_id, current_principal(request))
        await db_session.commit()
        return ticket_summary(ticket)

    @get("/reports/auto-approval", guards=[requires(*SUPERVISE)])
    async def auto_approval_report(
        self, db_session: AsyncSession, clock: Clock, settings: Settings,
        start: datetime | None = Parameter(query="from", default=None),
        end: datetime | None = Parameter(query="to", default=None),
        group: str = "day",
    ) -> list[dict[str, Any]]:
        """Share of requests decided automatically, per day, kind or reason."""
        end_at = ensure_utc(end) if end else clock.now()
        start_at = ensure_utc(start) if start else end_at - timedelta(days=30)
        if group not in ("day", "kind", "reason"):
            raise InvalidInput.on("group", "must be day, kind or reason")
        automatic = TicketDecision.decision.in_(("approve", "fast_refund"))
        query = (
            select(Ticket.requested_at, Ticket.kind, Ticket.reason_code, automatic)
            .join(TicketDecision, TicketDecision.ticket_id == Ticket.id)
            .where(Ticket.requested_at >= start_at, Ticket.requested_at < end_at)
        )
        # Days are the shop's local days, so grouping happens here rather than in SQL's UTC date().
        totals: dict[str, list[int]] = {}
        async for requested_at, kind, reason, auto in await db_session.stream(query):
            key = {"day": lambda: requested_at.astimezone(settings.zone).date().isoformat(), "kind": lambda: kind,
                   "reason": lambda: reason}[group]()
            entry = totals.setdefault(key, [0, 0])
            entry[0] += 1
            entry[1] += int(bool(auto))
        return [{"group": k, "tickets": n, "auto_approved": a, "rate": round(a / n, 4) if n else None}
                for k, (n, a) in sorted(totals.items())]


def _person(request: Request[Any, Any, Any]) -> Any:
    principal = current_principal(request)
    if principal.id is None or principal.kind != "user":
        raise InvalidInput.on("Authorization", "tickets are owned by people: use a personal token (aftersales token create --user NAME)")
    return principal


async def save_queue(session: AsyncSession, key: str, data: QueueIn) -> None:
    queue = await session.get(Queue, key)
    fields = {f: getattr(data, f) for f in ("name_zh", "name_en", "priority", "description", "auto_assign", "agent_cap", "active")}
    if queue is None:
        session.add(Queue(key=key, **fields))
    else:
        for name, value in fields.items():
            setattr(queue, name, value)
    members = set(data.members)
    if members:
        found = set((await session.execute(select(User.id).where(User.id.in_(members), User.role.in_(("agent", "supervisor"))))).scalars())
        missing = sorted(members - found)
        if missing:
            raise InvalidInput.on("members", f"not agents or supervisors: {missing}")
    await session.flush()
    await session.execute(delete(QueueMember).where(QueueMember.queue_key == key))
    for user_id in sorted(members):
        session.add(QueueMember(queue_key=key, user_id=user_id))
    await session.flush()


async def _queues_out(session: AsyncSession) -> list[QueueOut]:
    queues = list((await session.execute(select(Queue).order_by(Queue.priority.desc(), Queue.key))).scalars())
    members: dict[str, list[int]] = {}
    for key, user_id in (await session.execute(select(QueueMember.queue_key, QueueMember.user_id))).all():
        members.setdefault(key, []).append(user_id)
    return [
        QueueOut(key=q.key, name_zh=q.name_zh, name_en=q.name_en, priority=q.priority, description=q.description,
                 auto_assign=q.auto_assign, agent_cap=q.agent_cap, active=q.active, members=sorted(members.get(q.key, [])))
        for q in queues
    ]


__all__ = ["PolicyController", "NotFound"]
