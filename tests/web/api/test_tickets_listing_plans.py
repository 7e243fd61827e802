"""Query plans of the hot listings (findings F4 and issue 7): the queue page's default listing,
every open status newest first, must be able to read the partial index over open tickets instead of
walking the whole history backwards; an agent's queue sorted by SLA due time must read
ix_tickets_queue_status_due. On PostgreSQL the planner prefers a sequential scan of a tiny test
table, so sequential scans and sorts are priced out to see which indexes the query can use.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from aftersales.db import create_sessionmaker
from aftersales.tickets.pages import OPEN_STATUSES
from aftersales.tickets.repository import TicketFilter, TicketRepository
from tests.web.api.test_api_tickets import put_order
from tests.web.api.test_api_tickets_sla_sort import insert_tickets


async def plans(engine, backend: str, flt: TicketFilter) -> list[str]:
    """The plan of every SELECT the listing runs."""
    captured: list[tuple[str, Any]] = []

    def grab(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", grab)
    try:
        async with create_sessionmaker(engine)() as session:
            await TicketRepository(session).list_page(flt, limit=50, cursor=None)
            await session.rollback()
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", grab)
    out = []
    async with engine.connect() as conn:
        if backend == "postgresql":
            for setting in ("enable_seqscan", "enable_sort", "enable_bitmapscan"):
                await conn.exec_driver_sql(f"SET LOCAL {setting} = off")
        prefix = "EXPLAIN QUERY PLAN " if backend == "sqlite" else "EXPLAIN "
        for statement, parameters in captured:
            rows = (await conn.exec_driver_sql(prefix + statement, parameters)).all()
            out.append("\n".join(str(r[-1]) for r in rows))
        await conn.rollback()
    return out


@pytest.fixture()
async def history(client, tokens, engine) -> None:
    await put_order(client, tokens)
    specs = [("general", "closed", None)] * 40 + [("general", "pending_review", h) for h in range(5)] + [("risk", "awaiting_return", None)] * 3
    await insert_tickets(engine, specs)


async def test_default_queue_listing_reads_the_open_tickets_index(engine, backend, history):
    (plan,) = await plans(engine, backend, TicketFilter(statuses=list(OPEN_STATUSES)))
    assert "ix_tickets_open_requested" in plan, plan
    if backend == "sqlite":
        assert "TEMP B-TREE" not in plan, plan  # read in order, no sort


async def test_several_open_statuses_read_the_open_tickets_index(engine, backend, history):
    (plan,) = await plans(engine, backend, TicketFilter(statuses=["pending_review", "awaiting_return"]))
    assert "ix_tickets_open_requested" in plan, plan


@pytest.mark.parametrize("sort", ["sla_due_at", "-sla_due_at"])
async def test_agent_queue_by_sla_due_reads_its_index_in_one_statement(engine, backend, history, sort):
    (plan,) = await plans(engine, backend, TicketFilter(statuses=["pending_review"], queues=["general"], sort=sort))
    assert plan.count("ix_tickets_queue_status_due") == 2, plan  # both parts, each a range scan
