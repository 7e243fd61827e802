"""Group commit for `POST /api/v1/tickets`.

After a live session the platform sends thousands of requests at once. One at a time, each
intake was its own transaction of ~26 statements, and on SQLite every one waited for the single
writer (bench F5). Here the requests that arrive while a batch is being written wait together and
become the next batch: one transaction with a fixed number of statements (IntakeService), one
commit. A lone request is answered at once as before: batches only form under load.

Each request still gets its own answer: its ticket, its replayed Idempotency-Key answer or its
own 4xx error. If a batch fails as a whole (for example another instance stored the same
Idempotency-Key first), it is rolled back and its requests are answered one by one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import AsyncContextManager
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.auth.models import IdempotencyRecord
from aftersales.auth.principal import Principal
from aftersales.clock import Clock
from aftersales.db import in_bound, reads_only
from aftersales.errors import DomainError, IdempotencyMismatch
from aftersales.idempotency import answer_record, check_key, replay, run_once
from aftersales.tickets.intake import IntakeRequest, IntakeService, Opened
from aftersales.tickets.repository import TicketRepository
from aftersales.tickets.schemas import TicketIn, ticket_detail
from aftersales.web import encode

log = logging.getLogger("aftersales.intake")

OpenSession = Callable[[], AsyncContextManager[AsyncSession]]


@dataclass
class IntakeCall:
    data: TicketIn
    actor: Principal
    key: str | None  # Idempotency-Key
    print_: str  # the request's fingerprint, to tell a replay from a reused key


@dataclass
class IntakeAnswer:
    status: int
    body: bytes
    replayed: bool


# The longest a batch waits for the next requests of clients just answered (see IntakeQueue._gather).
GATHER_SECONDS = 0.005

# A request whose Idempotency-Key an earlier request of the batch used, and that request failed:
# answered on its own afterwards, as it would have been had it come second.
_ON_ITS_OWN = object()


class IntakeQueue:
    def __init__(self, open_session: OpenSession, clock: Clock, zone: ZoneInfo, *, max_batch: int = 128,
                 parallel: int = 1) -> None:
        """`parallel`: batches written at the same time. SQLite has one writer, so 1; on PostgreSQL a
        batch spends much of its time waiting for the server's answers, and others can use it."""
        self.open_session = open_session
        self.clock = clock
        self.zone = zone
        self.max_batch = max_batch
        self.parallel = parallel
        self._pending: list[tuple[IntakeCall, asyncio.Future[IntakeAnswer]]] = []
        self._runners: set[asyncio.Task[None]] = set()
        self.sizes: Counter[int] = Counter()  # batch size -> batches of that size written so far

    async def submit(self, call: IntakeCall) -> IntakeAnswer:
        """The request's answer; raises the request's own error (a DomainError is its 4xx)."""
        future: asyncio.Future[IntakeAnswer] = asyncio.get_running_loop().create_future()
        self._pending.append((call, future))
        # A finished runner leaves the set only in a callback a moment later: count the live ones.
        if sum(not runner.done() for runner in self._runners) < self.parallel:
            runner = asyncio.create_task(self._drain())
            self._runners.add(runner)
            runner.add_done_callback(self._runners.discard)
        return await future

    async def _drain(self) -> None:
        last = 0
        while True:
            if len(self._pending) < last // 2:
                await self._gather(last // 2)
            if not self._pending:
                return
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            self.sizes[len(batch)] += 1
            try:
                results: list[object] = list(await self._answer_all([call for call, _ in batch]))
            except Exception as exc:  # never leave a request waiting forever
                results = [exc] * len(batch)
            except BaseException as exc:
                _settle(batch, [exc] * len(batch))
                raise
            _settle(batch, results)
            last = len(batch)

    @property
    def batches(self) -> int:
        return sum(self.sizes.values())

    @property
    def largest(self) -> int:
        return max(self.sizes, default=0)

    def summary(self) -> str:
        """One line on how requests were grouped so far, e.g. for the log at shutdown."""
        requests = sum(size * count for size, count in self.sizes.items())
        return (f"intake: {requests:,} requests in {self.batches:,} batches (mean {requests / max(self.batches, 1):.1f}, "
                f"largest {self.largest}, {self.sizes[1]:,} alone)")

    async def _gather(self, enough: int) -> None:
        """Right after a large batch, its clients are still being answered and their next requests
        are on the way: wait a moment for them rather than write the first alone. Under load a
        batch of one cost as much as one of sixty (bench F5: a quarter of the batches were single
        requests); an idle service never waits, as its last batch was small."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATHER_SECONDS
        while len(self._pending) < enough and loop.time() < deadline:
            await asyncio.sleep(GATHER_SECONDS / 10)

    async def _answer_all(self, calls: list[IntakeCall]) -> list[IntakeAnswer | BaseException]:
        if len(calls) > 1:
            try:
                async with self.open_session() as session:
                    results = await answer_batch(session, self.clock, self.zone, calls)
            except Exception:
                log.warning("an intake batch of %d failed as a whole; answering its requests one by one", len(calls), exc_info=True)
            else:
                return [await self.answer_one(call) if result is _ON_ITS_OWN else result for call, result in zip(calls, results)]
        return [await self.answer_one(call) for call in calls]

    async def answer_one(self, call: IntakeCall) -> IntakeAnswer | BaseException:
        """One request in its own transaction, with the Idempotency-Key race handled by run_once."""
        try:
            async with self.open_session() as session:
                service = IntakeService(session, self.clock, self.zone)

                async def run() -> tuple[int, bytes]:
                    (outcome,) = await service.open_tickets([IntakeRequest(call.data, call.actor)], fresh_session=True)
                    if isinstance(outcome, Exception):
                        raise outcome
                    return await _answer(session, outcome)

                status, body, replayed = await run_once(
                    session, self.clock, scope=call.actor.actor, key=call.key, print_=call.print_, run=run)
                return IntakeAnswer(status, body, replayed)
        except Exception as exc:
            return exc


async def answer_batch(session: AsyncSession, clock: Clock, zone: ZoneInfo, calls: list[IntakeCall]) -> list[object]:
    """Answers for the calls, committed together; per call an IntakeAnswer, its DomainError, or
    _ON_ITS_OWN. Raises (and writes nothing) when the batch cannot be written as a whole."""
    results: list[object] = [None] * len(calls)
    with reads_only():  # the batch is read and decided before it takes SQLite's write lock (IntakeService._create)
        stored = await _stored_answers(session, calls, results)
    first_with_key: dict[tuple[str, str], int] = {}
    repeats: dict[int, int] = {}
    todo: list[int] = []
    for i, call in enumerate(calls):
        if results[i] is not None:
            continue
        if call.key is not None:
            scope_key = (call.actor.actor, call.key)
            if scope_key in stored:
                results[i] = _replayed(stored[scope_key], call.print_)
                continue
            if scope_key in first_with_key:
                repeats[i] = first_with_key[scope_key]
                continue
            first_with_key[scope_key] = i
        todo.append(i)
    outcomes = await IntakeService(session, clock, zone).open_tickets(
        [IntakeRequest(calls[i].data, calls[i].actor) for i in todo], fresh_session=True)
    chains = await TicketRepository(session).load_chains([o.ticket.id for o in outcomes if isinstance(o, Opened)])
    now = clock.now()
    stored_now: list[dict[str, object]] = []
    for i, outcome in zip(todo, outcomes):
        if not isinstance(outcome, Opened):
            results[i] = outcome
            continue
        status, body = _status(outcome), encode(ticket_detail(chains[outcome.ticket.id]))
        results[i] = IntakeAnswer(status, body, False)
        call = calls[i]
        if call.key is not None:
            stored_now.append(answer_record(call.actor.actor, call.key, call.print_, status, body, now))
    if stored_now:  # one executemany, not the unit of work's per-object bookkeeping
        await session.execute(_STORE_ANSWERS, stored_now)
    await session.commit()
    for i, first in repeats.items():
        answer = results[first]
        if not isinstance(answer, IntakeAnswer):
            results[i] = _ON_ITS_OWN
        elif calls[i].print_ != calls[first].print_:
            results[i] = IdempotencyMismatch("this Idempotency-Key was used for a different request")
        else:
            results[i] = IntakeAnswer(answer.status, answer.body, True)
    return results


async def _stored_answers(session: AsyncSession, calls: list[IntakeCall], results: list[object]) -> dict[tuple[str, str], IdempotencyRecord]:
    """Stored answers of the batch's Idempotency-Keys (a bad key is that call's error)."""
    wanted: set[tuple[str, str]] = set()
    for i, call in enumerate(calls):
        if call.key is None:
            continue
        try:
            check_key(call.key)
        except DomainError as exc:
            results[i] = exc
            continue
        wanted.add((call.actor.actor, call.key))
    if not wanted:
        return {}
    rows = await session.execute(_STORED_ANSWERS, {"scopes": sorted({s for s, _ in wanted}), "keys": sorted({k for _, k in wanted})})
    return {(r.scope, r.key): r for r in rows.scalars() if (r.scope, r.key) in wanted}


_STORED_ANSWERS = select(IdempotencyRecord).where(in_bound(IdempotencyRecord.scope, "scopes"), in_bound(IdempotencyRecord.key, "keys"))
_STORE_ANSWERS = insert(IdempotencyRecord.__table__)


def _replayed(stored: IdempotencyRecord, print_: str) -> IntakeAnswer | DomainError:
    try:
        status, body, replayed = replay(stored, print_)
    except DomainError as exc:
        return exc
    return IntakeAnswer(status, body, replayed)


async def _answer(session: AsyncSession, opened: Opened) -> tuple[int, bytes]:
    chain = await TicketRepository(session).load_chain(opened.ticket.id)
    return _status(opened), encode(ticket_detail(chain))


def _status(opened: Opened) -> int:
    return 201 if opened.created else 200


def _settle(batch: list[tuple[IntakeCall, asyncio.Future[IntakeAnswer]]], results: list[object]) -> None:
    for (_, future), result in zip(batch, results):
        if future.done():  # the client went away meanwhile
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)  # type: ignore[arg-type]


__all__ = ["IntakeAnswer", "IntakeCall", "IntakeQueue", "answer_batch"]
