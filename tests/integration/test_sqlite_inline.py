"""SQLite readers run statements on the event loop, except those marked for a worker thread."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, literal, select, text

from aftersales.db import create_engine
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
