"""Profile one endpoint (or ticket intake with --intake) in-process with cProfile (no extra tools): where does a request's time go?

    python -m bench.profile --db sqlite+aiosqlite:///./bench/data/bench-100000.db --path /api/v1/tickets/123 -n 200
    python -m bench.profile --db postgresql+asyncpg://postgres@127.0.0.1/aftersales_bench --path /api/v1/tickets/123

Requests go through the real app (create_app) over httpx's ASGI transport, one at a time, so the
figures are service time without queueing. Also prints the SQL statements per request and the
time spent waiting on the database (cursor execute wall time).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import itertools
import os
import pstats
import time
from typing import Any


async def _main(args: argparse.Namespace) -> None:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    import httpx
    from sqlalchemy import event

    os.environ["AFTERSALES_DATABASE_URL"] = args.db
    phases = _time_phases() if args.phases else None
    from aftersales.app import create_app
    from aftersales.auth.tokens import create_token
    from aftersales.clock import SystemClock
    from aftersales.settings import Settings

    app = create_app(Settings.from_env())
    engine = app.state.engine
    stats = {"statements": 0, "db_seconds": 0.0}
    started: dict[int, float] = {}

    def before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        started[id(cursor)] = time.perf_counter()

    shapes: dict[str, tuple[int, float]] = {}

    def after(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        stats["statements"] += 1
        took = time.perf_counter() - started.get(id(cursor), time.perf_counter())
        shape = " ".join(statement.split())[:100]
        count, seconds = shapes.get(shape, (0, 0.0))
        shapes[shape] = (count + 1, seconds + took)
        stats["db_seconds"] += time.perf_counter() - started.get(id(cursor), time.perf_counter())

    # SQLite GETs run on a separate read engine (deferred transactions): count both.
    engines = {id(e): e for e in (engine, app.state.read_sessionmaker.kw.get("bind") or engine)}.values()
    for e in engines:
        event.listen(e.sync_engine, "before_cursor_execute", before)
        event.listen(e.sync_engine, "after_cursor_execute", after)
    async with app.state.sessionmaker() as session:
        token = await create_token(session, SystemClock(), name="bench-profile", role=args.role)
        await session.commit()
    headers = {"Authorization": f"Bearer {token}"}
    transport = httpx.ASGITransport(app=app)
    async with app.lifespan() if hasattr(app, "lifespan") and callable(getattr(app, "lifespan")) else _null():
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            if args.intake:
                send = await _intake_sender(app, client, headers, (args.n + 5) * args.batch, args.batch)
            elif args.tracking:
                send = await _tracking_sender(app, client, headers)
            else:
                if args.sign_in:  # HTML pages: a signed-in session instead of the token
                    headers = await _signed_in(client, *args.sign_in.split(":", 1))
                send = _getter(client, headers, args.path)
            for _ in range(5):
                await send()
            stats.update(statements=0, db_seconds=0.0)
            if phases is not None:
                phases.clear()
            shapes.clear()
            prof = cProfile.Profile()
            t0, cpu0 = time.perf_counter(), time.process_time()
            if not args.time_only:
                prof.enable()
            for _ in range(args.n):
                await send()
            prof.disable()
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    what = "POST /api/v1/tickets" if args.intake else "POST /api/v1/tracking-events (500)" if args.tracking else f"GET {args.path}"
    if args.batch > 1:
        what += f" × {args.batch} at once"
    print(f"{args.n} × {what}: {wall / args.n * 1000:.2f} ms per step ({cpu / args.n * 1000:.2f} ms of CPU), "
          f"{stats['statements'] / args.n:.1f} SQL statements per request, "
          f"{stats['db_seconds'] / args.n * 1000:.2f} ms of it waiting on the database")
    if phases is not None:
        for phase, seconds in sorted(phases.items(), key=lambda kv: -kv[1]):
            print(f"  {seconds / args.n * 1000:8.3f} ms per step  {phase}")
    if args.statements:
        print("  per step  ms/step  statement")
        for shape, (count, seconds) in sorted(shapes.items(), key=lambda kv: -kv[1][1])[:25]:
            print(f"{count / args.n:8.1f}  {seconds / args.n * 1000:7.2f}  {shape}")
    if not args.time_only:
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats(args.sort).print_stats(args.top)
        print(out.getvalue())
        if args.dump:
            prof.dump_stats(args.dump)
    await engine.dispose()


async def _signed_in(client: Any, username: str, password: str) -> dict[str, str]:
    """Sign in through the login form, as the benchmark's page scenarios do; the client keeps the cookie."""
    (await client.get("/login")).raise_for_status()
    csrf = client.cookies.get("csrftoken") or ""
    r = await client.post("/login", data={"username": username, "password": password, "_csrf_token": csrf},
                          headers={"x-csrftoken": csrf})
    if r.status_code not in (302, 303):
        raise RuntimeError(f"sign-in failed: {r.status_code} {r.text[:200]}")
    return {}


def _getter(client: Any, headers: dict[str, str], path: str) -> Any:
    async def send() -> None:
        (await client.get(path, headers=headers)).raise_for_status()

    return send


async def _intake_sender(app: Any, client: Any, headers: dict[str, str], n: int, batch: int = 1) -> Any:
    """POST /api/v1/tickets for n different delivered orders (one item each), as the intake scenario does;
    `batch` requests at once per send (they are written as one batch: group commit)."""
    from sqlalchemy import select

    from aftersales.orders.models import Order, OrderItem
    from aftersales.tickets.models import Ticket

    async with app.state.sessionmaker() as session:
        rows = (await session.execute(
            select(Order.external_id, OrderItem.sku).join(OrderItem, OrderItem.order_id == Order.id)
            .where(Order.delivered_at.is_not(None), ~select(Ticket.id).where(Ticket.order_id == Order.id).exists())
            .order_by(Order.id.desc()).limit(n)
        )).all()
    from bench.load import intake_body
    from bench.run import INTAKE_REASONS

    bodies = iter(rows)
    reasons = itertools.cycle(INTAKE_REASONS)  # the load scenario's mix (fit.size takes the repeat-count path)

    async def post_one() -> None:
        external_id, sku = next(bodies)
        reason, kind = next(reasons)
        r = await client.post("/api/v1/tickets", json=intake_body(external_id, sku, reason, kind, "profile"), headers=headers)
        if r.status_code != 201:
            raise RuntimeError(f"{r.status_code} {r.text[:300]}")

    async def send() -> None:
        await asyncio.gather(*(post_one() for _ in range(batch)))

    return send


async def _tracking_sender(app: Any, client: Any, headers: dict[str, str]) -> Any:
    """POST 500-event carrier batches built the way the tracking scenario builds them (bench/load.py)."""
    import random

    from sqlalchemy import select

    from aftersales.orders.models import Shipment
    from bench.load import Maker

    async with app.state.sessionmaker() as session:
        rows = (await session.execute(
            select(Shipment.carrier, Shipment.tracking_number, Shipment.created_at, Shipment.last_event_at)
            .order_by(Shipment.id).limit(20_000)
        )).all()
    shipments = [[c, t, a.isoformat(), b.isoformat() if b else None] for c, t, a, b in random.Random(7).sample(rows, 5000)]
    maker = Maker({"kind": "tracking", "shipments": shipments, "batch": 500, "replay_share": 0.10}, seed=7)

    async def send() -> None:
        raw, _, _ = maker.next("bench")
        body = raw.split(b"\r\n\r\n", 1)[1]
        r = await client.post("/api/v1/tracking-events", content=body,
                              headers={**headers, "Content-Type": "application/json"})
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code} {r.text[:300]}")

    return send


def _time_phases(patch: Any = setattr) -> dict[str, float]:
    """Wrap the request's known phases with timers (seconds, summed): where a page or a batch spends
    its time without cProfile's overhead on every call (bench F23, F24). Also times how long SQLite's
    write lock is held, from BEGIN IMMEDIATE to the end of the transaction."""
    import functools

    from jinja2_fragments.litestar import HTMXBlockTemplate
    from litestar import Litestar

    from aftersales import sqlite_inline
    from aftersales.orders.service import OrderService
    from aftersales.tickets import intake, pages
    from aftersales.tickets.repository import TicketRepository

    spent: dict[str, float] = {}

    def timed(owner: Any, name: str, phase: str) -> None:
        original = getattr(owner, name)
        if asyncio.iscoroutinefunction(original):
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return await original(*args, **kwargs)
                finally:
                    spent[phase] = spent.get(phase, 0.0) + time.perf_counter() - started
        else:
            def wrapper(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
                started = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    spent[phase] = spent.get(phase, 0.0) + time.perf_counter() - started
        patch(owner, name, functools.wraps(original)(wrapper))

    timed(Litestar, "__call__", "app (all of the request's server side)")
    timed(TicketRepository, "list_page", "TicketRepository.list_page")
    timed(TicketRepository, "load_chain", "TicketRepository.load_chain")
    timed(pages, "queue_rows", "tickets.pages.queue_rows")
    timed(HTMXBlockTemplate, "to_asgi_response", "template render and response")
    # Intake's steps (bench F5, F28, F29).
    timed(intake, "insert_pending", "intake: the batch's INSERTs (db.insert_pending)")
    timed(intake.IntakeService, "_check", "intake: reading and checking the requests")
    timed(intake.IntakeService, "_decide_all", "intake: reading and deciding")
    timed(TicketRepository, "load_chains", "intake: the answers' chains (load_chains)")
    # Tracking's steps (bench F23, F30).
    timed(OrderService, "_shipments_for", "tracking: reading the batch's parcels")
    timed(OrderService, "_insert_new_events", "tracking: inserting the new events")
    timed(OrderService, "_move_parcels", "tracking: updating the parcels")

    take, release = sqlite_inline.InlineConnection.take_write_lock, sqlite_inline.InlineConnection._release
    taken: dict[int, float] = {}

    async def take_write_lock(self: Any, cursor: Any, sql: str) -> None:
        await take(self, cursor, sql)
        taken[id(self)] = time.perf_counter()

    def _release(self: Any) -> None:
        started = taken.pop(id(self), None)
        if started is not None:
            spent["SQLite write lock held"] = spent.get("SQLite write lock held", 0.0) + time.perf_counter() - started
        release(self)

    patch(sqlite_inline.InlineConnection, "take_write_lock", take_write_lock)
    patch(sqlite_inline.InlineConnection, "_release", _release)
    return spent


class _null:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: Any) -> None:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile")
    p.add_argument("--db", required=True)
    p.add_argument("--path", default="/healthz")
    p.add_argument("--tracking", action="store_true", help="profile POST /api/v1/tracking-events (500-event batches)")
    p.add_argument("--intake", action="store_true", help="profile POST /api/v1/tickets (n tickets on recent orders)")
    p.add_argument("--role", default="agent")
    p.add_argument("--sign-in", default="", metavar="USER:PASSWORD",
                   help="sign in through /login first (HTML pages; e.g. bench:bench-pass-1 on a benchmark data set)")
    p.add_argument("-n", type=int, default=100)
    p.add_argument("--sort", default="cumulative")
    p.add_argument("--top", type=int, default=35)
    p.add_argument("--dump", help="also write the cProfile data to this file (for pstats: callers, callees)")
    p.add_argument("--time-only", action="store_true", help="no cProfile: the time per request without its overhead")
    p.add_argument("--statements", action="store_true", help="print the commonest SQL statements per step")
    p.add_argument("--phases", action="store_true",
                   help="time the known phases (listing, chain, rows, template, SQLite write lock); implies --time-only")
    p.add_argument("--batch", type=int, default=1, help="with --intake: requests sent at once per step (group commit)")
    args = p.parse_args(argv)
    args.time_only = args.time_only or args.phases
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
