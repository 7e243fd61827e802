"""A transaction PostgreSQL picks as a deadlock victim runs again (aftersales.db.run_retrying)."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest
from sqlalchemy import select, update

from aftersales.db import create_sessionmaker, run_retrying
from aftersales.tickets.models import TicketNumberCounter

DAY1, DAY2 = date(2026, 1, 1), date(2026, 1, 2)


def bump(day: date):
    return update(TicketNumberCounter).where(TicketNumberCounter.day == day).values(last=TicketNumberCounter.last + 1)


async def test_deadlock_victim_is_run_again(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer: no deadlocks between transactions")
    factory = create_sessionmaker(engine)
    async with factory() as s:
        s.add_all([TicketNumberCounter(day=DAY1, last=0), TicketNumberCounter(day=DAY2, last=0)])
        await s.commit()
    a_holds_day1, b_holds_day2 = asyncio.Event(), asyncio.Event()
    runs = {"a": 0, "b": 0}

    async with factory() as a, factory() as b:
        async def work_a() -> None:
            runs["a"] += 1
            await a.execute(bump(DAY1))
            a_holds_day1.set()
            await b_holds_day2.wait()
            await a.execute(bump(DAY2))  # waits for b; one of the two is then chosen as the victim
            await a.commit()

        async def work_b() -> None:
            runs["b"] += 1
            await b.execute(bump(DAY2))
            b_holds_day2.set()
            await a_holds_day1.wait()
            await b.execute(bump(DAY1))
            await b.commit()

        await asyncio.wait_for(asyncio.gather(run_retrying(a, work_a), run_retrying(b, work_b)), timeout=30)

    assert runs["a"] + runs["b"] == 3  # exactly one of them ran twice
    async with factory() as s:
        counters = dict((await s.execute(select(TicketNumberCounter.day, TicketNumberCounter.last))).all())
    assert counters == {DAY1: 2, DAY2: 2}  # both committed once each: nothing lost, nothing doubled
