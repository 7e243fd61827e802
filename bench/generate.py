"""Bulk data generator: millions of tickets with their whole chain, fast and reproducible.

    python -m bench.generate --db sqlite+aiosqlite:///./bench/data/bench-1m.db --tickets 1000000
    python -m bench.generate --db postgresql+asyncpg://postgres@127.0.0.1/aftersales_bench --tickets 100000

It does not go through the HTTP API or the services (that would take hours at a million tickets); it plans every
row in memory (bench/genplan.py) and writes them with bulk paths (bench/genwrite.py): `executemany` of an INSERT
built from each model's `__table__` on SQLite, and COPY (`asyncpg.copy_records_to_table`) on PostgreSQL. The work
is split over worker processes (one per core, at most 2 by default) that each plan and write their own blocks of
days; secondary indexes (and PostgreSQL's unique constraints) are dropped during the load and recreated with their
exact original DDL at the end, then the database is ANALYZEd.

The chain is faithful to what the services would have written: every ticket's timeline follows the transition
table (`aftersales.tickets.workflow.transition` validates each path template at start-up), state-entry timestamps
and `version` match the timeline, shipments carry the status of their latest event, tracking events have the
dedupe key the ingestion computes, ticket numbers are AS-YYYYMMDD-NNNNNN per Asia/Shanghai day of receipt and
`ticket_number_counters` holds each day's last number, so intake after the load continues the sequence. Each
ticket's intake decision holds the facts `tickets/facts.gather_facts` would have seen and the shipped policy's
decision, rule, trace and explanation; its feedback record and items follow the default routing rules; its SLA
clocks are replayed as `SlaService` and the worker's `fire_due_alerts` would have (sla_events, the ticket's SLA
columns, `resolution_breached`). Values are encoded as SQLAlchemy would store them (integer fen; naive UTC ISO
strings on SQLite); `_check_encoding` asserts this against the column types' own bind processors before anything
is written, and the defaults `aftersales migrate` wrote (SLA policy, policy version, routing rules) are read back
and asserted.

Same seed + same --anchor => the same data set, whatever the number of workers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import queue as queue_module
import sys
import time
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bench.genplan import (
    BLOCK_TICKETS,
    COLUMNS,
    DAYS,
    POLICY_VERSION,
    ROUTING_RULES,
    SLA_FIRST_RESPONSE,
    SLA_PAUSE,
    SLA_RESOLUTION,
    SLA_THRESHOLDS,
    TABLES,
    Encoder,
    Plan,
)
from bench.genwrite import (
    Job,
    asyncpg_dsn,
    pg_finish,
    pg_prepare,
    sqlite_finish,
    sqlite_path,
    sqlite_prepare,
    work,
)
from aftersales.models import Ticket, TicketNumberCounter
from aftersales.tickets import policy as policy_rules

__all__ = ["asyncpg_dsn", "generate", "main"]


# -- encoding checks ---------------------------------------------------------------------


def _check_encoding(enc: Encoder) -> None:
    """Fail before writing anything if our fast encoding differs from SQLAlchemy's own."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = sqlite.dialect() if enc.dialect == "sqlite" else postgresql.asyncpg.dialect()
    col = Ticket.__table__.c
    ts_proc = col.requested_at.type._cached_bind_processor(dialect)
    for naive in (datetime(2025, 3, 1, 12, 0, 0), datetime(2025, 3, 1, 12, 0, 0, 5), datetime(2026, 11, 25, 23, 59, 59, 999999)):
        expected = ts_proc(naive.replace(tzinfo=UTC)) if ts_proc else naive.replace(tzinfo=UTC).replace(tzinfo=None if enc.dialect == "sqlite" else UTC)
        got = enc.ts(naive)
        assert got == expected, f"datetime encoding {got!r} != SQLAlchemy {expected!r}"
    money_proc = col.requested_amount.type._cached_bind_processor(dialect)
    for fen in (0, 1, 8900, 123456789):
        value = Decimal(fen) / 100
        expected = money_proc(value) if money_proc else col.requested_amount.type.process_bind_param(value, dialect)
        assert expected == fen, f"money {value} -> {expected!r}, expected {fen}"
    json_proc = col.evidence_urls.type._cached_bind_processor(dialect)
    if json_proc is not None:
        for value in ([], ["https://img.example.com/a.jpg"], {"queue": "general", "n": "丝"}):
            assert json_proc(value) == enc.json(value), "JSON encoding differs"
    day_proc = TicketNumberCounter.__table__.c.day.type._cached_bind_processor(dialect)
    if day_proc is not None:
        assert day_proc(date(2025, 1, 2)) == enc.day(date(2025, 1, 2))
    for model in TABLES:
        table = model.__table__
        unknown = set(COLUMNS[table.name]) - set(table.c.keys())
        assert not unknown, f"{table.name}: columns {unknown} are gone, update bench/generate.py"
        for col in table.c:
            if col.key in COLUMNS[table.name]:
                continue
            # A column added since this generator was written: it must fill itself in.
            assert col.nullable or col.server_default is not None, (
                f"{table.name}.{col.key} is new and NOT NULL without a server default: update bench/generate.py")


# -- the database ----------------------------------------------------------------------------


async def _recreate_pg_database(url: str) -> None:
    import asyncpg

    u = make_url(url)
    admin = await asyncpg.connect(asyncpg_dsn(str(u.set(database="postgres"))))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{u.database}"')
    finally:
        await admin.close()


def prepare_database(url: str) -> None:
    """An empty database at the latest schema (the real migrations)."""
    from aftersales.cli import run_migrations

    if url.startswith("sqlite"):
        path = Path(sqlite_path(url))
        path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    else:
        asyncio.run(_recreate_pg_database(url))
    run_migrations(url)


async def _defaults(url: str, since: datetime) -> int:
    """Check the defaults `aftersales migrate` wrote match what the plan assumes, date them before the data
    (they were there first), and return the default SLA policy's id."""
    from sqlalchemy import select, update

    from aftersales.db import create_engine
    from aftersales.feedback.models import RoutingRule
    from aftersales.sla.models import SlaPolicy
    from aftersales.tickets.models import PolicyVersion

    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            policies = (await conn.execute(select(SlaPolicy.id, SlaPolicy.resolution_minutes, SlaPolicy.first_response_minutes,
                                                  SlaPolicy.calendar, SlaPolicy.pause_statuses, SlaPolicy.warn_at))).all()
            assert len(policies) == 1, f"expected the one default SLA policy, found {len(policies)}"
            pid, res, first, calendar, pause, warn = policies[0]
            assert (res * 60.0, first * 60.0, calendar.get("type"), set(pause), tuple(sorted({*warn, 1.0}))) == (
                SLA_RESOLUTION, SLA_FIRST_RESPONSE, "24x7", set(SLA_PAUSE), SLA_THRESHOLDS), "the default SLA policy changed: update bench/generate.py"
            versions = (await conn.execute(select(PolicyVersion.version, PolicyVersion.text))).all()
            assert versions == [(POLICY_VERSION, policy_rules.DEFAULT_POLICY)], "the shipped policy changed: update bench/generate.py"
            rules = (await conn.execute(select(RoutingRule.category, RoutingRule.team, RoutingRule.min_repeat, RoutingRule.note)
                                        .order_by(RoutingRule.id))).all()
            assert [tuple(r) for r in rules] == list(ROUTING_RULES), "the default routing rules changed: update bench/generate.py"
            at = since.replace(tzinfo=UTC)
            await conn.execute(update(SlaPolicy).values(created_at=at))
            await conn.execute(update(PolicyVersion).values(created_at=at, published_at=at))
    finally:
        await engine.dispose()
    return pid


# -- the command -----------------------------------------------------------------------------


def default_anchor() -> datetime:
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day)


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def generate(url: str, *, tickets: int, seed: int, anchor: datetime | None = None, quiet: bool = False,
             workers: int | None = None, block_tickets: int = BLOCK_TICKETS) -> dict[str, Any]:
    """Create the database from scratch and fill it. Returns a summary (row counts, seconds). Neither `workers` nor
    `block_tickets` (how the work is cut) changes the data."""
    anchor = anchor or default_anchor()
    t0 = time.perf_counter()
    prepare_database(url)
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    enc = Encoder(dialect)
    _check_encoding(enc)
    sla_policy_id = asyncio.run(_defaults(url, anchor - timedelta(days=DAYS + 30)))
    # The reference rows (customers, live sessions) are written before the workers start, with the indexes dropped.
    reference = Plan(tickets=tickets, seed=seed, anchor=anchor, enc=enc, sla_policy_id=sla_policy_id).reference_rows()
    if dialect == "sqlite":
        rebuild: Any = sqlite_prepare(sqlite_path(url), reference)
    else:
        rebuild = asyncio.run(pg_prepare(asyncpg_dsn(url), reference))
    job = Job(url=url, dialect=dialect, tickets=tickets, seed=seed, anchor=anchor, sla_policy_id=sla_policy_id,
              worker=0, workers=workers or default_workers(), block_tickets=block_tickets)
    summaries, seconds = _load(job, rebuild, quiet)
    return _summary(job, reference, summaries, {"total": time.perf_counter() - t0, **seconds})


def _load(job: Job, rebuild: Any, quiet: bool) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The workers' load, then the index rebuild, under one progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("tickets"),
        TimeElapsedColumn(), TimeRemainingColumn(), disable=quiet, transient=False,
    )
    t_load = time.perf_counter()
    with progress:
        task = progress.add_task(f"generating ({job.dialect}, {job.workers} workers)", total=job.tickets)
        summaries = _run_workers(job, lambda n: progress.advance(task, n))
        t_index = time.perf_counter()
        say = lambda message: progress.update(task, description=message)  # noqa: E731
        if job.dialect == "sqlite":
            sqlite_finish(sqlite_path(job.url), rebuild, say)
        else:
            asyncio.run(pg_finish(asyncpg_dsn(job.url), rebuild, say))
        progress.update(task, description="done")
    return summaries, {"load": t_index - t_load, "index_analyze": time.perf_counter() - t_index}


def _summary(job: Job, reference: dict[str, list[Any]], summaries: list[dict[str, Any]],
             seconds: dict[str, float]) -> dict[str, Any]:
    rows = {t: len(reference.get(t, ())) + sum(s["rows"][t] for s in summaries) for t in COLUMNS}
    status_counts = _sum(s["status_counts"] for s in summaries)
    decision_counts = _sum(s["decision_counts"] for s in summaries)
    queue_status = _sum(s["queue_status"] for s in summaries)
    return {
        "url": make_url(job.url).render_as_string(hide_password=True),
        "dialect": job.dialect,
        "tickets": job.tickets,
        "seed": job.seed,
        "anchor": job.anchor.isoformat(),
        "workers": job.workers,
        "rows": rows,
        "rows_total": sum(rows.values()),
        "status_counts": dict(sorted(status_counts.items(), key=lambda kv: -kv[1])),
        "decision_counts": dict(sorted(decision_counts.items(), key=lambda kv: -kv[1])),
        "pending_review_general": queue_status.get(("general", "pending_review"), 0),
        **{f"seconds_{name}": round(value, 1) for name, value in seconds.items()},
        # Per worker: time inside its write transactions, and waiting for the other worker's (SQLite: one writer).
        "seconds_writing": [s["seconds_writing"] for s in summaries],
        "seconds_waiting_to_write": [s["seconds_waiting_to_write"] for s in summaries],
        "size_bytes": os.path.getsize(sqlite_path(job.url)) if job.dialect == "sqlite" else None,
    }


def _run_workers(job: Job, advance: Any) -> list[dict[str, Any]]:
    """Start one process per worker, relay their progress, and return their summaries (in worker order)."""
    ctx = multiprocessing.get_context("spawn")  # no inherited threads, connections or event loops
    messages = ctx.Queue()
    lock = ctx.Lock()
    procs = [ctx.Process(target=work, args=(replace(job, worker=w), messages, lock), name=f"bench.generate-{w}", daemon=True)
             for w in range(job.workers)]
    for p in procs:
        p.start()
    summaries: dict[int, dict[str, Any]] = {}
    try:
        while len(summaries) < len(procs):
            try:
                kind, worker, payload = messages.get(timeout=1.0)
            except queue_module.Empty:
                dead = [p for w, p in enumerate(procs) if w not in summaries and p.exitcode is not None]
                if dead:
                    raise RuntimeError(f"generator worker {dead[0].name} exited with code {dead[0].exitcode}") from None
                continue
            if kind == "done":
                advance(payload)
            elif kind == "summary":
                summaries[worker] = payload
            else:
                raise RuntimeError(f"generator worker {worker} failed:\n{payload}")
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()
    return [summaries[w] for w in range(len(procs))]


def _sum(dicts: Any) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--db", default="sqlite+aiosqlite:///./bench/data/bench.db", help="SQLAlchemy URL (the database is recreated)")
    p.add_argument("--tickets", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--anchor", default=None, help="UTC day the data ends (YYYY-MM-DD; default today)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core, at most 2)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    anchor = datetime.fromisoformat(args.anchor) if args.anchor else None
    summary = generate(args.db, tickets=args.tickets, seed=args.seed, anchor=anchor, quiet=args.quiet, workers=args.workers)
    json.dump(summary, sys.stdout, indent=2, ensure_ascii=False)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
