"""SQLite readers run statements on the event loop, except those marked for a worker thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, literal, select, text

from aftersales.db import checkpointer_of, create_engine
from aftersales.sqlite_inline import OFFLOAD_MARK, Checkpointer


@pytest.fixture
async def reader(tmp_path: Path) -> Any:
    url = f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}"
    engine = create_engine(url, for_writes=False)
    threads: list[int] = []

    def slow_ident(seconds: float) -> int:
        # Where the statement runs, and long enough to see whether the loop kept going meanwhile.
        threads.append(threading.get_ident())
        time.sleep(seconds)
        return threading.get_ident()

    @event.listens_for(engine.sync_engine, "connect")
    def _functions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.create_function("slow_ident", 1, slow_ident)

    yield engine, threads
    await engine.dispose()


async def _ticks_while(coro: Any) -> tuple[Any, int]:
    ticks = 0
    done = asyncio.Event()

    async def tick() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    try:
        return await coro, ticks
    finally:
        done.set()
        await ticker


async def test_plain_statement_runs_on_the_loop_thread(reader: Any) -> None:
    engine, threads = reader
    async with engine.connect() as conn:
        ran_on, ticks = await _ticks_while(conn.scalar(select(func.slow_ident(0.2))))
    assert ran_on == threading.get_ident()
    assert ticks <= 2  # the loop was blocked for the statement's 0.2 s


async def test_marked_statement_runs_on_a_thread_while_the_loop_goes_on(reader: Any) -> None:
    engine, threads = reader
    query = select(func.slow_ident(0.2), literal("x")).prefix_with(OFFLOAD_MARK)
    async with engine.connect() as conn:
        row, ticks = await _ticks_while(conn.execute(query))
        ran_on, text = row.one()
    assert ran_on != threading.get_ident()
    assert text == "x"
    assert ticks >= 10  # 0.2 s at 5 ms a tick: the loop served others meanwhile


async def test_marked_statement_returns_every_row_in_order(reader: Any) -> None:
    engine, _ = reader
    query = text(f"SELECT {OFFLOAD_MARK} n FROM (WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 500)"
                 " SELECT n FROM c) ORDER BY n")
    async with engine.connect() as conn:
        assert list((await conn.execute(query)).scalars()) == list(range(1, 501))
        # partial fetches take the buffered rows one part at a time
        result = await conn.stream(query)
        first = await result.fetchmany(3)
        rest = await result.all()
    assert [r[0] for r in first] == [1, 2, 3]
    assert [r[0] for r in rest] == list(range(4, 501))


async def test_writes_are_checkpointed_by_the_background_thread_not_by_the_committer(tmp_path: Path) -> None:
    """The committing connection (on the event loop) leaves the copy from the log to the database
    file to the engine's checkpoint thread; disposing of the engine stops that thread."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'wal.db'}")
    checkpointer = checkpointer_of(engine)
    assert checkpointer is not None and checkpointer._thread.is_alive()
    async with engine.begin() as conn:
        limit = (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar_one()
        await conn.execute(text("CREATE TABLE t (x TEXT)"))
    assert limit > 1000  # the committer no longer checkpoints every ~1,000 pages
    async with engine.begin() as conn:  # ~2,000 pages of log: the committer would have checkpointed
        await conn.execute(text("INSERT INTO t VALUES (:x)"), [{"x": "x" * 4000} for _ in range(2000)])
    wal = tmp_path / "wal.db-wal"
    assert wal.stat().st_size > 2000 * 4096
    passes = checkpointer.checkpoints
    for _ in range(100):  # the thread passes every quarter of a second
        if checkpointer.checkpoints > passes:
            break
        await asyncio.sleep(0.05)
    assert checkpointer.checkpoints > passes
    async with engine.connect() as conn:  # and the rows are all there
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 2000
    await engine.dispose()
    assert not checkpointer._thread.is_alive()


async def test_an_in_memory_database_has_no_checkpoint_thread() -> None:
    engine = create_engine("sqlite+aiosqlite:///:memory:")
    assert checkpointer_of(engine) is None
    await engine.dispose()


# -- writers: one engine's writers queue in the process; other processes are polled for -------


def _count_begins(engine: Any) -> list[str]:
    """Every BEGIN IMMEDIATE the database was asked for, failed attempts included."""
    begins: list[str] = []

    @event.listens_for(engine.sync_engine, "connect")
    def _trace(dbapi_connection: Any, _record: Any) -> None:
        raw = dbapi_connection.driver_connection._conn
        raw.set_trace_callback(lambda sql: begins.append(sql) if sql.startswith("BEGIN IMMEDIATE") else None)

    return begins


async def test_writers_of_one_process_take_the_write_lock_in_arrival_order_without_retrying(tmp_path: Path) -> None:
    """Before the gate, a writer finding the lock taken slept 1, 2, 4 … 50 ms and tried again: the lock lay
    idle meanwhile and the order was whoever woke first."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'gate.db'}")
    begins = _count_begins(engine)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (n INTEGER)"))
    begins.clear()
    order: list[int] = []

    async def writer(n: int) -> None:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
            order.append(n)
            await asyncio.sleep(0.01)  # holds the lock across an await, as a request does

    await asyncio.gather(*(writer(n) for n in range(6)))
    assert order == list(range(6))
    assert len(begins) == 6  # one attempt each: nobody polled
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 6
    await engine.dispose()


async def test_a_failed_transaction_hands_the_lock_on(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'gate.db'}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (n INTEGER PRIMARY KEY)"))

    async def failing() -> None:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t VALUES (1)"))
            await asyncio.sleep(0.01)
            await conn.execute(text("INSERT INTO t VALUES (1)"))  # duplicate key: the transaction rolls back

    async def next_writer() -> None:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t VALUES (2)"))

    first, second = await asyncio.wait_for(asyncio.gather(failing(), next_writer(), return_exceptions=True), 5)
    assert isinstance(first, Exception) and second is None
    async with engine.connect() as conn:
        assert list((await conn.execute(text("SELECT n FROM t"))).scalars()) == [2]
    await engine.dispose()


async def test_a_writer_waiting_on_its_own_process_gives_up_with_locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second write transaction opened while the first is still open (a bug) fails after the wait, as
    SQLite's own lock would have failed it, instead of hanging."""
    from aftersales import sqlite_inline

    monkeypatch.setattr(sqlite_inline, "LOCK_WAIT_SECONDS", 0.2)
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'gate.db'}")
    async with engine.begin() as outer:
        await outer.execute(text("CREATE TABLE t (n INTEGER)"))
    async with engine.begin() as outer:
        await outer.execute(text("INSERT INTO t VALUES (1)"))
        with pytest.raises(Exception, match="locked"):
            async with engine.begin() as inner:
                await inner.execute(text("INSERT INTO t VALUES (2)"))
    async with engine.connect() as conn:
        assert list((await conn.execute(text("SELECT n FROM t"))).scalars()) == [1]
    await engine.dispose()


async def test_writers_of_two_engines_still_wait_for_each_other(tmp_path: Path) -> None:
    """Two engines stand for two processes (`serve --workers 2`): the second polls until the first commits."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'gate.db'}"
    one, two = create_engine(url), create_engine(url)
    begins = _count_begins(two)
    async with one.begin() as conn:
        await conn.execute(text("CREATE TABLE t (n INTEGER)"))
    seen: list[str] = []

    async def first() -> None:
        async with one.begin() as conn:
            await conn.execute(text("INSERT INTO t VALUES (1)"))
            await asyncio.sleep(0.05)
            seen.append("first commits")

    async def second() -> None:
        await asyncio.sleep(0.01)
        async with two.begin() as conn:
            seen.append("second writes")
            await conn.execute(text("INSERT INTO t VALUES (2)"))

    await asyncio.gather(first(), second())
    assert seen == ["first commits", "second writes"]
    assert len(begins) > 1  # it found the lock taken and tried again
    await one.dispose()
    await two.dispose()


async def test_sqlite_datetimes_are_stored_as_sortable_utc_text(tmp_path: Path) -> None:
    """The fast converters store what SQLAlchemy's SQLite dialect stored (UTC, always with microseconds,
    so text order is time order) and read back aware UTC datetimes, older rows included."""
    from datetime import UTC, datetime, timedelta, timezone

    from sqlalchemy import Column, Integer, MetaData, Table

    from aftersales.db import UTCDateTime

    table = Table("stamps", MetaData(), Column("id", Integer, primary_key=True), Column("at", UTCDateTime()))
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'stamps.db'}")
    shanghai = timezone(timedelta(hours=8))
    values = [datetime(2026, 11, 26, 8, 0, 0, tzinfo=shanghai),  # 00:00 UTC
              datetime(2026, 11, 26, 0, 0, 0, 1, tzinfo=UTC),
              datetime(2026, 11, 25, 23, 59, 59)]  # naive: taken as UTC
    async with engine.begin() as conn:
        await conn.run_sync(table.metadata.create_all)
        await conn.execute(table.insert(), [{"id": i, "at": v} for i, v in enumerate(values)])
        await conn.execute(text("INSERT INTO stamps VALUES (9, '2026-11-24 10:00:00')"))  # no microseconds
    async with engine.connect() as conn:
        raw = dict((await conn.execute(text("SELECT id, at FROM stamps"))).all())
        read = dict((await conn.execute(table.select())).all())
        ordered = list((await conn.execute(select(table.c.id).order_by(table.c.at))).scalars())
        later = list((await conn.execute(select(table.c.id).where(table.c.at > datetime(2026, 11, 26, tzinfo=UTC)))).scalars())
    assert raw[0] == "2026-11-26 00:00:00.000000" and raw[1] == "2026-11-26 00:00:00.000001"
    assert read[0] == datetime(2026, 11, 26, tzinfo=UTC) and read[0].tzinfo is UTC
    assert read[2] == datetime(2026, 11, 25, 23, 59, 59, tzinfo=UTC)
    assert read[9] == datetime(2026, 11, 24, 10, tzinfo=UTC)
    assert ordered == [9, 2, 0, 1]
    assert later == [1]
    await engine.dispose()


@pytest.mark.parametrize("restart_after", [200, None])
def test_the_log_starts_afresh_although_some_reader_is_always_reading_it(tmp_path: Path, restart_after: int | None) -> None:
    """Two app processes on one file: at every moment some reader is inside a transaction, so a
    PASSIVE checkpoint never lets the next writer start the log again, and it grew without end
    (bench F28). Past `restart_after` pages, when the log has not started afresh for a while, the
    checkpoint thread runs a RESTART checkpoint that waits for the readers to move on. (None:
    restarts off, showing that the scenario is real.)"""
    database = str(tmp_path / "busy.db")
    writer = sqlite3.connect(database, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # as the app's writers: the thread checkpoints
    writer.execute("CREATE TABLE t (x TEXT)")
    stop = threading.Event()

    def overlapping_readers() -> None:
        first, second = (sqlite3.connect(database, isolation_level=None) for _ in range(2))
        first.execute("BEGIN")
        first.execute("SELECT count(*) FROM t").fetchone()
        while not stop.is_set():  # one of the two is always inside a read transaction
            for started, ending in ((second, first), (first, second)):
                started.execute("BEGIN")
                started.execute("SELECT count(*) FROM t").fetchone()
                time.sleep(0.002)
                ending.execute("COMMIT")
        first.close()
        second.close()

    readers = threading.Thread(target=overlapping_readers, daemon=True)
    readers.start()
    checkpointer = Checkpointer(database, every=0.01, restart_after=restart_after or 10**9, stuck_seconds=0.05).start()
    try:
        for _ in range(120):  # ~15 pages of log each
            writer.execute("BEGIN IMMEDIATE")
            writer.executemany("INSERT INTO t VALUES (?)", [("x" * 3000,)] * 20)
            writer.execute("COMMIT")
            time.sleep(0.005)
    finally:
        checkpointer.stop()
        stop.set()
        readers.join()
    _busy, pages_in_log, _copied = writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert writer.execute("SELECT count(*) FROM t").fetchone()[0] == 2400
    writer.close()
    if restart_after is None:
        assert pages_in_log > 1500 and checkpointer.restarts == 0  # every commit's pages still in the log
    else:
        assert checkpointer.restarts > 0
        assert pages_in_log < 2 * restart_after  # started afresh: only the last few commits' pages


async def test_sixteen_readers_at_once_reuse_their_connections_afterwards(reader: Any) -> None:
    """Each request at once holds a connection; SQLAlchemy's default pool kept 5 and closed the rest
    when their requests ended, so the next wave opened the file again: its schema parsed anew and
    its page cache empty (bench F31)."""
    engine, _ = reader
    opened = 0

    @event.listens_for(engine.sync_engine, "connect")
    def _count(_dbapi_connection: Any, _record: Any) -> None:
        nonlocal opened
        opened += 1

    async def read(release: asyncio.Event) -> None:
        async with engine.connect() as conn:
            await conn.execute(select(literal(1)))
            await release.wait()

    for _ in range(3):  # three waves of 16 requests at once
        release = asyncio.Event()
        tasks = [asyncio.create_task(read(release)) for _ in range(16)]
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(*tasks)
    assert opened == 16  # the first wave opened them; the next two found them in the pool
    assert engine.sync_engine.pool.checkedin() == 16
