"""The generator's writers: bulk paths into SQLite and PostgreSQL, and the worker processes that plan and write.

The main process (bench/generate.py) drops the secondary indexes (and on PostgreSQL the unique constraints), writes
the reference rows, starts the workers, and rebuilds the indexes with their exact original DDL at the end. Each
worker runs `work()`: it plans its own blocks (bench/genplan.py) and writes each one in one transaction —
`executemany` on SQLite (the workers take turns: one writer at a time), COPY on PostgreSQL (concurrently).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import make_url

from bench.genplan import BLOCK_TICKETS, COLUMNS, TABLES, Encoder, Plan

Rows = dict[str, list[tuple[Any, ...]]]


def sqlite_path(url: str) -> str:
    return make_url(url).database or ""


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _insert_sql(table: str) -> str:
    cols = COLUMNS[table]
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"


# -- SQLite ----------------------------------------------------------------------------------------


def sqlite_connect(path: str) -> sqlite3.Connection:
    """A connection tuned for bulk loading: nothing is durable until the generator is done anyway."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=600)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA journal_mode=OFF")  # the main process set the file to DELETE mode; WAL comes back at the end
    conn.execute("PRAGMA cache_size=-400000")
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


def sqlite_write(conn: sqlite3.Connection, rows: Rows) -> None:
    conn.execute("BEGIN IMMEDIATE")
    for model in TABLES:
        t = model.__tablename__
        if rows.get(t):
            conn.executemany(_insert_sql(t), rows[t])
    conn.execute("COMMIT")


def sqlite_prepare(path: str, reference: Rows) -> list[tuple[str, str]]:
    """Leave WAL mode (the workers write without a journal), drop the secondary indexes, write the reference
    rows; returns the dropped (name, DDL)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
        names = ", ".join(f"'{t}'" for t in COLUMNS)
        indexes = list(conn.execute(
            f"SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL AND tbl_name IN ({names})"))
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        conn.close()
        conn = sqlite_connect(path)
        sqlite_write(conn, reference)
    finally:
        conn.close()
    return indexes


def sqlite_finish(path: str, indexes: list[tuple[str, str]], progress: Callable[[str], None]) -> None:
    conn = sqlite_connect(path)
    try:
        conn.execute("PRAGMA threads=2")  # CREATE INDEX sorts with a helper thread (2 cores)
        for name, sql in indexes:
            progress(f"index {name}")
            conn.execute(sql)
        progress("ANALYZE")
        conn.execute("ANALYZE")
        conn.execute("PRAGMA journal_mode=WAL")  # what the application runs in (aftersales.db)
    finally:
        conn.close()


# -- PostgreSQL ------------------------------------------------------------------------------------


async def pg_connect(dsn: str) -> Any:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    await conn.execute("SET synchronous_commit = off")
    return conn


async def pg_copy(conn: Any, rows: Rows) -> None:
    async with conn.transaction():
        for model in TABLES:
            t = model.__tablename__
            if rows.get(t):
                await conn.copy_records_to_table(t, records=rows[t], columns=list(COLUMNS[t]))


@dataclass
class PgRebuild:
    """What pg_prepare dropped: (name, CREATE INDEX) to run in any order, then the ALTER TABLEs that turn some of
    those indexes back into the unique constraints they were."""

    indexes: list[tuple[str, str]]
    constraints: list[str]


async def pg_prepare(dsn: str, reference: Rows) -> PgRebuild:
    """Drop the secondary indexes and the unique constraints of the generated tables (rebuilt in bulk at the end),
    write the reference rows."""
    conn = await pg_connect(dsn)
    try:
        tables = list(COLUMNS)
        constraints = await conn.fetch(
            """SELECT c.conname, c.conrelid::regclass::text, pg_get_indexdef(c.conindid), pg_get_constraintdef(c.oid)
               FROM pg_constraint c
               WHERE c.contype = 'u' AND c.connamespace = 'public'::regnamespace AND c.conrelid::regclass::text = ANY($1::text[])
                 AND NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.conindid = c.conindid)""",
            tables,
        )
        indexes = await conn.fetch(
            """SELECT i.indexname, i.indexdef FROM pg_indexes i
               JOIN pg_class c ON c.relname = i.indexname AND c.relnamespace = 'public'::regnamespace
               JOIN pg_index x ON x.indexrelid = c.oid
               WHERE i.schemaname = 'public' AND i.tablename = ANY($1::text[]) AND NOT x.indisprimary
                 AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = c.oid)
                 -- Partial indexes stay: they hold the few open tickets only, and pg_get_indexdef would not give
                 -- back the migration's predicate text (an equivalent but differently spelled expression).
                 AND x.indpred IS NULL""",
            tables,
        )
        rebuild = PgRebuild([], [])
        for name, table, indexdef, _condef in constraints:
            # Same index, then the constraint on top of it: what ADD CONSTRAINT ... UNIQUE would have built.
            rebuild.indexes.append((name, indexdef))
            rebuild.constraints.append(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" UNIQUE USING INDEX "{name}"')
            await conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for name, indexdef in indexes:
            rebuild.indexes.append((name, indexdef))
            await conn.execute(f'DROP INDEX "{name}"')
        await pg_copy(conn, reference)
    finally:
        await conn.close()
    return rebuild


async def pg_finish(dsn: str, rebuild: PgRebuild, progress: Callable[[str], None]) -> None:
    """Rebuild on two connections at once (two cores), biggest tables first; then constraints, statistics and
    sequences."""
    conns = [await pg_connect(dsn) for _ in range(2)]
    try:
        sizes = dict(await conns[0].fetch(
            "SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"))
        for conn in conns:
            await conn.execute("SET maintenance_work_mem = '512MB'")
            await conn.execute("SET max_parallel_maintenance_workers = 0")  # the two connections already fill the cores
        todo = sorted(rebuild.indexes, key=lambda item: -sizes.get(_table_of(item[1]), 0))

        async def build(conn: Any) -> None:
            while todo:
                name, sql = todo.pop(0)
                progress(f"index {name}")
                await conn.execute(sql)

        await asyncio.gather(*(build(conn) for conn in conns))
        # Not inside the builds: ALTER TABLE waits for every lock on its table (the other connection's build).
        for sql in rebuild.constraints:
            await conns[0].execute(sql)
        tables = sorted(sizes, key=lambda t: -sizes[t])

        async def analyze(conn: Any) -> None:
            while tables:
                table = tables.pop(0)
                progress(f"ANALYZE {table}")
                await conn.execute(f'ANALYZE "{table}"')

        await asyncio.gather(*(analyze(conn) for conn in conns))
        for t, cols in COLUMNS.items():
            if "id" in cols:
                await conns[0].execute(
                    f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), GREATEST((SELECT max(id) FROM {t}), 1))")
    finally:
        for conn in conns:
            await conn.close()


def _table_of(sql: str) -> str:
    # "CREATE [UNIQUE] INDEX name ON public.table USING ..."
    return sql.split(" ON ", 1)[1].split()[0].split(".")[-1]


# -- the workers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    url: str
    dialect: str
    tickets: int
    seed: int
    anchor: datetime
    sla_policy_id: int
    worker: int
    workers: int
    block_tickets: int = BLOCK_TICKETS


def owned_blocks(n_blocks: int, worker: int, workers: int) -> set[int]:
    return {b for b in range(n_blocks) if b % workers == worker}


def work(job: Job, queue: Any, lock: Any) -> None:
    """A worker process: plan the blocks this worker owns and write them; report progress and a summary."""
    try:
        queue.put(("summary", job.worker, _work(job, queue, lock)))
    except BaseException:
        queue.put(("error", job.worker, traceback.format_exc()))
        raise


def _work(job: Job, queue: Any, lock: Any) -> dict[str, Any]:
    plan = Plan(tickets=job.tickets, seed=job.seed, anchor=job.anchor, enc=Encoder(job.dialect), sla_policy_id=job.sla_policy_id,
                block_tickets=job.block_tickets)
    owned = owned_blocks(len(plan.blocks), job.worker, job.workers)
    if job.dialect == "sqlite":
        writing, waited = _write_sqlite(plan, owned, job, queue, lock)
    else:
        writing, waited = asyncio.run(_copy_postgres(plan, owned, job, queue)), 0.0
    return {
        "rows": plan.counts,
        "status_counts": plan.status_counts,
        "decision_counts": plan.decision_counts,
        "queue_status": plan.queue_status,
        "seconds_writing": round(writing, 1),
        "seconds_waiting_to_write": round(waited, 1),
    }


def _write_sqlite(plan: Plan, owned: set[int], job: Job, queue: Any, lock: Any) -> tuple[float, float]:
    """Each block in one transaction; returns (seconds writing, seconds waiting for the other worker's write)."""
    writing = waited = 0.0
    conn = sqlite_connect(sqlite_path(job.url))
    try:
        for _block, tickets, rows in plan.walk(owned):
            t0 = time.perf_counter()
            with lock:  # one writer at a time; the other worker keeps planning meanwhile
                t1 = time.perf_counter()
                sqlite_write(conn, rows)
            waited += t1 - t0
            writing += time.perf_counter() - t1
            queue.put(("done", job.worker, tickets))
    finally:
        conn.close()
    return writing, waited


async def _copy_postgres(plan: Plan, owned: set[int], job: Job, queue: Any) -> float:
    """Each block in one transaction (the workers COPY concurrently); returns the seconds spent in COPY."""
    spent = 0.0
    conn = await pg_connect(asyncpg_dsn(job.url))
    try:
        await _skip_foreign_key_checks(conn)
        for _block, tickets, rows in plan.walk(owned):
            t0 = time.perf_counter()
            await pg_copy(conn, rows)
            spent += time.perf_counter() - t0
            queue.put(("done", job.worker, tickets))
    finally:
        await conn.close()
    return spent


async def _skip_foreign_key_checks(conn: Any) -> None:
    """Every row's parents are planned with it (or written before the workers start), as on SQLite where nothing
    checks them during the load: skip PostgreSQL's per-row foreign key triggers when allowed (superuser)."""
    import asyncpg

    try:
        await conn.execute("SET session_replication_role = replica")
    except asyncpg.InsufficientPrivilegeError:
        pass
