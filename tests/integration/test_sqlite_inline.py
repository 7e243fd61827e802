"""SQLite readers run statements on the event loop, except those marked for a worker thread."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, literal, select, text

from aftersales.db import checkpointer_of, create_engine
from aftersales.sqlite_inline import OFFLOAD_MARK


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
