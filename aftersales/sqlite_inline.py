"""A thread-free async face over the standard sqlite3 module.

SQLAlchemy's aiosqlite driver runs every statement on a helper thread and wakes the event loop
when it is done. For the short indexed statements a request makes, that hand-off (and the two
threads fighting over the GIL when many requests are in flight) costs more than the query: about
0.2 ms a statement against 0.03 ms called directly (bench F16), and every socket write of the
event loop then waits for the GIL. A reader in WAL mode never waits for a lock, and a writer only
waits once, for the write lock at BEGIN IMMEDIATE: so statements run right on the event loop,
blocking it no longer than the statement itself, and a BEGIN IMMEDIATE that finds the database
locked is retried after an asynchronous sleep (writers' connections have no busy timeout, which
would stop the loop) until LOCK_WAIT_SECONDS have passed.

A statement that carries OFFLOAD_MARK (`select(...).prefix_with(OFFLOAD_MARK)`) is the exception:
the ticket chain is one statement of several milliseconds, analytics and simulation take seconds;
inline they would stop every other request for that long, while on a thread they run beside the
loop on the second core (sqlite3 releases the GIL while it steps). Such a statement is executed, and
its rows fetched, on a worker thread, part by part, so a streamed result stays a stream.

The classes mimic the parts of aiosqlite's interface that SQLAlchemy's adapter calls.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from sqlalchemy.engine import make_url

# An SQL comment: harmless on PostgreSQL, where statements go to the server anyway.
OFFLOAD_MARK = "/*offload*/"
LOCK_WAIT_SECONDS = 30.0

class _RunNow:
    """Stands in for aiosqlite's request queue (SQLAlchemy sets isolation_level through it)."""

    def put_nowait(self, item: tuple[Any, Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except BaseException as exc:  # handed to the awaiting caller, as aiosqlite does
            future.set_exception(exc)


class InlineCursor:
    def __init__(self, cursor: sqlite3.Cursor, owner: InlineConnection) -> None:
        self._cursor = cursor
        self._owner = owner
        self._offloaded = False  # the current statement steps on a worker thread

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Any = None) -> InlineCursor:
        parameters = parameters if parameters is not None else ()
        self._offloaded = OFFLOAD_MARK in sql[:40]
        if self._offloaded:
            await asyncio.to_thread(self._cursor.execute, sql, parameters)
        elif sql.startswith("BEGIN IMMEDIATE"):
            await self._owner.take_write_lock(self._cursor, sql)
        else:
            self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> InlineCursor:
        self._cursor.executemany(sql, parameters)
        return self

    # sqlite3 steps through the rows as they are fetched: an offloaded statement's fetches run on the
    # worker thread too.
    async def fetchone(self) -> Any:
        if self._offloaded:
            return await asyncio.to_thread(self._cursor.fetchone)
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        size = size if size is not None else self._cursor.arraysize
        if self._offloaded:
            return await asyncio.to_thread(self._cursor.fetchmany, size)
        return self._cursor.fetchmany(size)

    async def fetchall(self) -> list[Any]:
        if self._offloaded:
            return await asyncio.to_thread(self._cursor.fetchall)
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    def __aiter__(self) -> InlineCursor:
        return self

    async def __anext__(self) -> Any:
        row = await self.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row


class WriteGate:
    """The writers of one engine in one process queue here, in arrival order, for SQLite's write
    lock. Without it each waited by polling BEGIN IMMEDIATE with pauses growing to 50 ms: the lock
    lay idle between one writer's commit and the next one's wake-up, and the order was whoever woke
    first (bench F21). Other processes are still waited for by polling, in short pauses."""

    def __init__(self) -> None:
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    def lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock


class InlineConnection:
    def __init__(self, conn: sqlite3.Connection, gate: WriteGate | None = None) -> None:
        self._conn = conn
        self._connection: sqlite3.Connection | None = conn  # SQLAlchemy checks it before commit / rollback
        self._tx = _RunNow()
        self._gate = gate or WriteGate()
        # The gate's lock and its loop, held from BEGIN IMMEDIATE to the transaction's end.
        self._holding: tuple[asyncio.Lock, asyncio.AbstractEventLoop] | None = None

    async def take_write_lock(self, cursor: sqlite3.Cursor, sql: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOCK_WAIT_SECONDS
        lock = self._gate.lock()
        try:
            await asyncio.wait_for(lock.acquire(), LOCK_WAIT_SECONDS)
        except TimeoutError:
            raise sqlite3.OperationalError("database is locked (waited for this process's other writers)") from None
        self._holding = (lock, loop)
        pause = 0.0005
        try:
            while True:
                try:
                    cursor.execute(sql)
                    return
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or loop.time() > deadline:
                        raise
                await asyncio.sleep(pause)  # another process writes: its transactions are short
                pause = min(pause * 2, 0.004)
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        if self._holding is None:
            return
        (lock, loop), self._holding = self._holding, None
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            lock.release()
        elif not loop.is_closed():  # closed by the pool from the garbage collector's thread
            loop.call_soon_threadsafe(lock.release)

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._conn.isolation_level = value

    def cursor(self) -> InlineCursor:
        return InlineCursor(self._conn.cursor(), self)

    async def execute(self, sql: str, parameters: Any = None) -> InlineCursor:
        return await self.cursor().execute(sql, parameters)

    async def commit(self) -> None:
        try:
            self._conn.commit()
        finally:
            if not self._conn.in_transaction:
                self._release()

    async def rollback(self) -> None:
        try:
            self._conn.rollback()
        finally:
            self._release()

    async def create_function(self, *args: Any, **kw: Any) -> None:
        self._conn.create_function(*args, **kw)

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        if self._connection is not None:
            self._conn.close()
            self._connection = None
        self._release()


def inline_creator(url: str, *, timeout: float = 30.0) -> Callable[[], Awaitable[InlineConnection]]:
    """`async_creator` for create_async_engine: opens the URL's database file with sqlite3."""
    database = make_url(url).database or ":memory:"
    gate = WriteGate()

    async def connect() -> InlineConnection:
        # check_same_thread=False: the pool may close a connection from the garbage collector's thread.
        return InlineConnection(sqlite3.connect(database, timeout=timeout, check_same_thread=False), gate)

    return connect


# Checkpoints: in WAL mode a commit appends the transaction's pages to the -wal file, and every
# ~1,000 pages the committing connection copies them back into the database file. On a 12 GB
# database that copy, right on the event loop, was ~80 % of an intake batch's commit (bench F5,
# ~8 ms a batch). The writer engine's connections therefore only checkpoint as a safety net, when
# the log is far behind (SAFETY_CHECKPOINT_PAGES), and a thread of its own does it meanwhile, on a
# connection of its own: sqlite3 releases the GIL while it copies, and a PASSIVE checkpoint never
# waits for (nor blocks) readers or the writer.
SAFETY_CHECKPOINT_PAGES = 16_000  # ~64 MB of log
CHECKPOINT_EVERY_SECONDS = 0.25
# A PASSIVE checkpoint copies pages but never makes the log start again from its beginning: the
# next writer does that only when no reader is still reading from the log. With two processes on
# one file there always was one, and the log grew by ~20 MB a second of intake without end, each
# page lookup and commit slower than the last (bench F28). When the log has not started afresh for
# STUCK_SECONDS and holds this many pages, the thread runs a RESTART checkpoint, which waits at most
# RESTART_WAIT_MS for the readers to move on. Not sooner: a RESTART also holds off writers, and one
# process's log starts afresh by itself many times a second.
RESTART_AFTER_PAGES = 4_096  # ~16 MB of log
STUCK_SECONDS = 2.0
RESTART_WAIT_MS = 50


class Checkpointer:
    def __init__(self, database: str, every: float = CHECKPOINT_EVERY_SECONDS,
                 restart_after: int = RESTART_AFTER_PAGES, stuck_seconds: float = STUCK_SECONDS) -> None:
        self.database = database
        self.every = every
        self.restart_after = restart_after
        self.stuck_seconds = stuck_seconds
        self.checkpoints = 0  # passes that copied pages, for tests and diagnosis
        self.restarts = 0  # RESTART checkpoints that succeeded
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)

    def start(self) -> Checkpointer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        conn = sqlite3.connect(self.database, timeout=0, check_same_thread=False)
        before = (0, 0)
        fresh_at = time.monotonic()  # when the log last started afresh
        try:
            while not self._stop.wait(self.every):
                try:
                    _busy, log, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.OperationalError:
                    continue  # locked for a moment (another checkpoint, a schema change): next round
                # The figures are the whole log's (frames in it, frames copied so far): a pass that
                # finds them unchanged copied nothing; fewer frames than before means it started afresh.
                if copied > 0 and (log, copied) != before:
                    self.checkpoints += 1
                if log < before[0]:
                    fresh_at = time.monotonic()
                before = (log, copied)
                stuck = time.monotonic() - fresh_at >= self.stuck_seconds
                if log >= self.restart_after and stuck and self._restart(conn):
                    before, fresh_at = (0, 0), time.monotonic()
        finally:
            conn.close()

    def _restart(self, conn: sqlite3.Connection) -> bool:
        """Copy the rest of the log and have the next writer start it afresh. Meanwhile new
        writers wait (they retry BEGIN IMMEDIATE asynchronously); readers never do."""
        conn.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
        try:
            busy, _log, _copied = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        except sqlite3.OperationalError:
            return False
        finally:
            conn.execute("PRAGMA busy_timeout=0")
        if busy:
            return False  # a long reader (a report) is still on the log: next round
        self.restarts += 1
        return True
