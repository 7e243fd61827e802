"""`python -m bench`: generate (or reuse) a data set, start the real server, drive load, report.

    python -m bench --quick                                  # CI: 2,000 tickets, SQLite, 1.5 s scenarios, 8 agents
    python -m bench --db sqlite --tickets 100000             # one database, one scale
    python -m bench --db both --tickets 1000000 --reuse      # SQLite and PostgreSQL, 1 and 2 app instances each

For every database the server is started exactly as the README runs it (`aftersales serve
--port P --no-migrate`, AFTERSALES_DATABASE_URL pointing at the generated data); tokens and the
signed-in user come from the CLI. Each scenario runs in a separate load process (bench/load.py)
for a fixed time and concurrency after a warm-up, and the ceiling (`GET /healthz` of the same
server) is measured in the same run so every figure is also a ratio to it. Peak server memory is
sampled from /proc (VmRSS of the server process tree, and VmHWM at the end).

Results go to bench/results/<timestamp>-<db>-<scale>.json and docs/performance.md is regenerated
from all result files. Exit status is 1 when any scenario had an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DATA = BENCH / "data"
RESULTS = BENCH / "results"
BIN = Path(sys.executable).parent
AFTERSALES = str(BIN / "aftersales")
PG_DEFAULT = "postgresql+asyncpg://postgres@127.0.0.1/aftersales_bench"
SECRET = "bench-secret-key-0123456789abcdef-not-for-production"
SHANGHAI = ZoneInfo("Asia/Shanghai")
SIM_TICKETS = 100_000
# The agent queue scenarios list tickets by SLA due time, most urgent first (issue 7).
QUEUE_SORT = "sla_due_at"

# Intake bodies: (reason, kind) pairs a platform sends.
INTAKE_REASONS = [
    ("quality.defect", "return_refund"), ("quality.damaged", "reship"), ("fit.size", "exchange"),
    ("preference.changed_mind", "return_refund"), ("price.promo_dispute", "refund_only"),
    ("logistics.delay", "complaint"), ("description.not_as_described", "return_refund"),
]

TARGETS = {
    # scenario: (target description, metric, limit) — from issue 7.
    "intake": ("≥ 1,000 tickets/s, 0 errors", "units_per_s", 1000),
    "tracking": ("≥ 20,000 events/s", "units_per_s", 20000),
    "queue_api": ("p99 ≤ 50 ms at c=16", "p99_ms", 50),
    "queue_api_deep": ("p99 ≤ 50 ms at c=16", "p99_ms", 50),
    "queue_page": ("p99 ≤ 50 ms at c=16", "p99_ms", 50),
    "queue_page_default": ("p99 ≤ 50 ms at c=16", "p99_ms", 50),
    "ticket_page": ("p99 ≤ 50 ms at c=16", "p99_ms", 50),
    "ticket_api": ("p99 ≤ 50 ms at c=16", "p99_ms", 50),
    "sla_board_page": ("p99 ≤ 100 ms", "p99_ms", 100),
    "sla_board_api": ("p99 ≤ 100 ms", "p99_ms", 100),
    "sla_report": ("p99 ≤ 100 ms", "p99_ms", 100),
    "digest_generate": ("≤ 2 s (p99)", "p99_ms", 2000),
    "digest_get": ("≤ 2 s (p99)", "p99_ms", 2000),
    "analytics": ("≤ 2 s (p99)", "p99_ms", 2000),
    "simulate": ("≤ 5 s (p99) over ~100,000 tickets", "p99_ms", 5000),
    "mixed_agents": ("0 errors, no ticket handed out twice", "errors", 0),
    "mixed_intake": ("0 errors", "errors", 0),
    "mixed_tracking": ("0 errors", "errors", 0),
}
N_AGENTS = 40
AGENT_PASSWORD = "bench-agent-pass-1"
SUPERVISOR = ("bench-sup", "bench-sup-pass-1")
# A draft the supervisor tries: the no-reason auto-approval up to ¥300 instead of ¥200.
SIMULATE_DRAFT = None  # filled from the shipped policy at first use (see simulate_draft)


def log(msg: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


# -- the machine ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    os_name = platform.platform()
    try:
        rel = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
        os_name = f"{rel.get('PRETTY_NAME', '').strip(chr(34))} (kernel {platform.release()})"
    except OSError:
        pass
    sqlite_version = __import__("sqlite3").sqlite_version
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "os": os_name,
        "python": platform.python_version(),
        "sqlite": sqlite_version,
        "loadavg_at_start": os.getloadavg(),
    }


def pg_version(url: str) -> str | None:
    import asyncpg

    from bench.generate import asyncpg_dsn

    async def q() -> str:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            return await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()

    try:
        return asyncio.run(q())
    except Exception:
        return None


# -- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WORKER = {"mode": "auto"}


def env_for(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(AFTERSALES_DATABASE_URL=url, AFTERSALES_SECRET_KEY=SECRET, AFTERSALES_DEFAULT_LOCALE="zh_CN",
               AFTERSALES_RUN_WORKER=WORKER["mode"])
    env.pop("AFTERSALES_SQL_ECHO", None)
    env.pop("AFTERSALES_DEBUG", None)
    return env


def cli(url: str, *args: str, check: bool = True) -> str:
    proc = subprocess.run([AFTERSALES, *args], env=env_for(url), capture_output=True, text=True, cwd=ROOT)
    if check and proc.returncode != 0:
        raise RuntimeError(f"aftersales {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


class Server:
    def __init__(self, url: str) -> None:
        self.url = url
        self.port = free_port()
        self.cmd = [AFTERSALES, "serve", "--port", str(self.port), "--no-migrate"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log = open(DATA / f"server-{self.port}.log", "wb")
        self.proc = subprocess.Popen(self.cmd, env=env_for(self.url), stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: see {self.log.name}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not start in 60 s")

    def pids(self) -> list[int]:
        """The server process and its descendants."""
        if self.proc is None:
            return []
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            try:
                for tid in os.listdir(f"/proc/{pid}/task"):
                    children = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
                    todo.extend(int(c) for c in children)
            except OSError:
                pass
        return out

    def intake_summary(self) -> list[str]:
        """The server's own line on intake batching (IntakeQueue.summary), if it wrote one."""
        text = Path(self.log.name).read_text(errors="replace")
        return ["intake: " + line.split(" intake: ", 1)[1] for line in text.splitlines()
                if "aftersales.intake" in line and " intake: " in line]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_ticks(pids: list[int]) -> dict[int, int]:
    """User + system clock ticks each process has used so far."""
    ticks = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        ticks[pid] = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks


def _ticks_used(samples: list[dict[int, int]]) -> int:
    """Ticks used between the first and the last sample, process by process: one that starts
    meanwhile counts from zero, one that exits (an autovacuum worker, a closed connection's
    backend) up to its last sample rather than taking its whole past out of the total."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for index, sample in enumerate(samples):
        for pid, ticks in sample.items():
            first.setdefault(pid, ticks if index == 0 else 0)
            last[pid] = ticks
    return sum(last[pid] - first[pid] for pid in last)


def _postgres_pids() -> list[int]:
    """Every PostgreSQL server process on this machine (the backends serving the app among them)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == "postgres":
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Peak resident memory of each server's process tree while a scenario runs, and the CPU the
    servers (and PostgreSQL's processes) use, sampled so that it can be charged to the load
    driver's measured window: CPU per unit of work is steadier than a rate on a shared machine."""

    def __init__(self, servers: list[Server]) -> None:
        self.servers = servers
        self.peak_kb = 0
        self.cpu: list[tuple[float, dict[int, int], dict[int, int]]] = []  # (time, server ticks, PostgreSQL ticks) by pid
        self._postgres = any(s.url.startswith("postgresql") for s in servers)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "RssSampler":
        for s in self.servers:
            for pid in s.pids():
                try:  # reset VmHWM (Linux ≥ 4.0) so it is this scenario's peak
                    Path(f"/proc/{pid}/clear_refs").write_text("5")
                except OSError:
                    pass
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = []
            for s in self.servers:
                tree = s.pids()
                pids += tree
                self.peak_kb = max(self.peak_kb, sum(_status_kb(p, "VmRSS") for p in tree))
            self.cpu.append((time.time(), _cpu_ticks(pids), _cpu_ticks(_postgres_pids()) if self._postgres else {}))
            time.sleep(0.1)

    def cpu_ms_per_unit(self, result: dict[str, Any]) -> dict[str, float]:
        """Milliseconds of CPU per unit of work in the driver's measured window (samples every 0.1 s)."""
        start, end = result.get("window") or (0.0, 0.0)
        inside = [sample for sample in self.cpu if start <= sample[0] <= end]
        units = result.get("units") or 0
        if len(inside) < 2 or not units:
            return {}
        span = inside[-1][0] - inside[0][0]
        scale = 1000 / CLOCK_TICKS / units * (end - start) / span  # the samples span a little less than the window
        out = {"server_cpu_ms_per_unit": round(_ticks_used([app for _, app, _ in inside]) * scale, 3)}
        if self._postgres:
            out["postgres_cpu_ms_per_unit"] = round(_ticks_used([db for _, _, db in inside]) * scale, 3)
        return out

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        for s in self.servers:
            self.peak_kb = max(self.peak_kb, sum(_status_kb(p, "VmHWM") for p in s.pids()))


# -- data samples -----------------------------------------------------------------------------


async def _samples(url: str, n: int, seed: int) -> dict[str, Any]:
    from decimal import Decimal

    from sqlalchemy import and_, func, or_, select

    from aftersales.db import create_engine
    from aftersales.models import Order, OrderItem, Shipment, Ticket
    from aftersales.tickets.repository import encode_cursor

    rng = random.Random(seed)
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            max_order = await conn.scalar(select(func.max(Order.id)))
            max_ship = await conn.scalar(select(func.max(Shipment.id)))
            max_ticket = await conn.scalar(select(func.max(Ticket.id)))
            order_ids = sorted({rng.randint(1, max_order) for _ in range(n)})
            # Orders with nothing refunded yet, nor a request still open that could refund it all (the
            # mixed scenario's agents approve open requests: a sampled order refunded in full made later
            # intakes on it a 422); the benchmark's own requests ask ¥0.01, so thousands of them fit.
            refunded = select(Ticket.id).where(
                Ticket.order_id == Order.id,
                or_(Ticket.refunded_amount > 0,
                    and_(Ticket.requested_amount > Decimal("0.01"), Ticket.status.not_in(("closed", "cancelled", "rejected")))),
            ).exists()
            rows = await conn.execute(
                select(Order.external_id, func.min(OrderItem.sku)).join(OrderItem, OrderItem.order_id == Order.id)
                .where(Order.id.in_(order_ids), ~refunded).group_by(Order.external_id)
            )
            orders = [list(r) for r in rows]
            ship_ids = sorted({rng.randint(1, max_ship) for _ in range(n)})
            rows = await conn.execute(
                select(Shipment.carrier, Shipment.tracking_number, Shipment.created_at, Shipment.last_event_at)
                .where(Shipment.id.in_(ship_ids))
            )
            shipments = [[c, t, a.isoformat(), b.isoformat() if b else None] for c, t, a, b in rows]
            # Only ids that exist: on PostgreSQL a batch that rolled back leaves a gap in the sequence, and
            # run M asked for one (a 404 measures nothing the scenario is about).
            drawn = sorted({rng.randint(1, max_ticket) for _ in range(n)})
            ticket_ids = sorted((await conn.scalars(select(Ticket.id).where(Ticket.id.in_(drawn)))).all())
            rows = await conn.execute(
                select(Ticket.id, Ticket.sla_due_at).where(Ticket.id.in_(ticket_ids), Ticket.queue == "general")
            )
            # Positions anywhere in two years of the SLA-due ordering (the cursor names its sort).
            history_cursors = [encode_cursor(SimpleNamespace(id=i, sla_due_at=at), QUEUE_SORT) for i, at in rows]
            total = await conn.scalar(select(func.count()).select_from(Ticket))
            # Policy simulation: the period holding the newest ~100,000 requests.
            sim_start = await conn.scalar(select(Ticket.requested_at).order_by(Ticket.requested_at.desc(), Ticket.id.desc())
                                          .offset(min(SIM_TICKETS, total) - 1).limit(1))
            first = await conn.scalar(select(func.min(Ticket.requested_at)))
    finally:
        await engine.dispose()
    sim_end = datetime.now(UTC) + timedelta(days=1)
    # Weekly digests: past Mondays (Asia/Shanghai), newest first, from two weeks back (the worker builds last
    # week's at start-up) to the first week of data.
    today = datetime.now(SHANGHAI).date()
    monday = today - timedelta(days=today.weekday()) - timedelta(days=14)
    first_day = first.astimezone(SHANGHAI).date() if first.tzinfo else first.date()
    mondays = []
    while monday >= first_day:
        mondays.append(monday.isoformat())
        monday -= timedelta(days=7)
    return {"orders": orders, "shipments": shipments, "ticket_ids": ticket_ids, "history_cursors": history_cursors,
            "tickets_in_db": total, "simulate": {"start": _iso(sim_start), "end": sim_end.isoformat()}, "mondays": mondays}


def _iso(at: datetime) -> str:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()


def simulate_draft() -> str:
    from aftersales.tickets.policy import DEFAULT_POLICY

    draft = DEFAULT_POLICY.replace("amount <= 200 and requests_30d < 3", "amount <= 300 and requests_30d < 3")
    assert draft != DEFAULT_POLICY, "the shipped policy changed: update SIMULATE draft in bench/run.py"
    return draft


def walk_cursors(base: str, path: str, headers: dict[str, str], max_pages: int) -> list[str]:
    """Follow next_cursor from the first page; returns every cursor handed out."""
    cursors: list[str] = []
    cursor = None
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for _ in range(max_pages):
            url = path + (f"&cursor={cursor}" if cursor else "")
            r = client.get(url)
            r.raise_for_status()
            cursor = r.json().get("next_cursor")
            if not cursor:
                break
            cursors.append(cursor)
    return cursors


def sign_in(base: str, username: str, password: str) -> str:
    """GET /login for the CSRF cookie, POST the form; returns the Cookie header of the session."""
    with httpx.Client(base_url=base, timeout=30) as client:
        client.get("/login").raise_for_status()
        csrf = client.cookies.get("csrftoken")
        r = client.post("/login", data={"username": username, "password": password, "_csrf_token": csrf or ""},
                        headers={"x-csrftoken": csrf or ""})
        if r.status_code not in (302, 303) or "as_session" not in client.cookies:
            raise RuntimeError(f"sign-in failed: {r.status_code} {r.text[:200]}")
        return "; ".join(f"{k}={v}" for k, v in client.cookies.items())


# -- scenarios --------------------------------------------------------------------------------


def scenarios(s: dict[str, Any], tokens: dict[str, str], cookie: str, cursors: list[str], *, sup_cookie: str = "",
              run_index: int = 0, runs: int = 1) -> list[dict[str, Any]]:
    feed = {"Authorization": f"Bearer {tokens['integration']}"}
    agent = {"Authorization": f"Bearer {tokens['agent']}"}
    sup = {"Authorization": f"Bearer {tokens['supervisor']}"}
    page = {"Cookie": cookie}
    q = f"status=pending_review&queue=general&sort={QUEUE_SORT}"
    first = [f"/api/v1/tickets?{q}"]
    deep_api = first + [f"/api/v1/tickets?{q}&cursor={c}" for c in cursors]
    deep_page = [f"/queue?{q}"] + [f"/queue?{q}&cursor={c}" for c in cursors]
    history = [f"/api/v1/tickets?status=closed&queue=general&sort={QUEUE_SORT}&cursor={c}" for c in s["history_cursors"]] or first
    ids = s["ticket_ids"]
    return [
        {"name": "ceiling", "what": "GET /healthz", "kind": "get", "paths": ["/healthz"], "concurrency": 16},
        {"name": "ticket_api", "what": "GET /api/v1/tickets/{id} (whole chain)", "kind": "get", "headers": agent,
         "paths": [f"/api/v1/tickets/{i}" for i in ids], "concurrency": 16},
        {"name": "ticket_page", "what": "GET /tickets/{id} (HTML, whole chain)", "kind": "get", "headers": page,
         "paths": [f"/tickets/{i}" for i in ids], "concurrency": 16},
        {"name": "queue_api", "what": f"GET /api/v1/tickets?{q} (first + every cursor page)", "kind": "get",
         "headers": agent, "paths": deep_api, "concurrency": 16},
        {"name": "queue_api_deep", "what": f"GET /api/v1/tickets?status=closed&queue=general&sort={QUEUE_SORT}&cursor=<anywhere in 2 years>",
         "kind": "get", "headers": agent, "paths": history, "concurrency": 16},
        {"name": "queue_page", "what": f"GET /queue?{q} (HTML, first + every cursor page)", "kind": "get",
         "headers": page, "paths": deep_page, "concurrency": 16},
        {"name": "queue_page_default", "what": "GET /queue (HTML, all open statuses)", "kind": "get",
         "headers": page, "paths": ["/queue"], "concurrency": 16},
        {"name": "intake", "what": "POST /api/v1/tickets (Idempotency-Key, random generated orders)", "kind": "intake",
         "headers": feed, "orders": s["orders"], "reasons": INTAKE_REASONS, "concurrency": 64},
        {"name": "tracking", "what": "POST /api/v1/tracking-events, 500/batch, 10 % replays, late + out-of-order",
         "kind": "tracking", "headers": feed, "shipments": s["shipments"], "batch": 500, "replay_share": 0.10,
         "concurrency": 4},
        {"name": "sla_board_page", "what": "GET /sla (HTML SLA board, supervisor session)", "kind": "get",
         "headers": {"Cookie": sup_cookie}, "paths": ["/sla"], "concurrency": 16},
        {"name": "sla_board_api", "what": "GET /api/v1/sla/board", "kind": "get", "headers": sup,
         "paths": ["/api/v1/sla/board"], "concurrency": 16},
        {"name": "sla_report", "what": "GET /api/v1/reports/sla?group=queue (last 30 days)", "kind": "get", "headers": sup,
         "paths": ["/api/v1/reports/sla?group=queue"], "concurrency": 16},
        # Each POST a Monday whose digest does not exist (reset_digests forgets them first), so each one builds it.
        {"name": "digest_generate", "what": "POST /api/v1/feedback/digests/qc/week/<past Monday> (on demand, a new week each time)",
         "kind": "once", "headers": sup, "expect": [201, 200], "concurrency": 1,
         "paths": [f"/api/v1/feedback/digests/qc/week/{m}" for m in s["mondays"]] or ["/api/v1/feedback/digests/qc/week/2020-01-06"]},
        {"name": "digest_get", "what": "GET /api/v1/feedback/digests/qc/week/<a generated Monday>", "kind": "get", "headers": sup,
         "paths": "generated-digests", "concurrency": 16},
        {"name": "analytics", "what": "GET /api/v1/feedback/analytics?group=product (last 90 days)", "kind": "get", "headers": sup,
         "paths": ["/api/v1/feedback/analytics?group=product"], "concurrency": 1},
        {"name": "simulate", "what": f"POST /api/v1/policy/simulate (draft: no-reason auto-approval up to ¥300) over the newest "
         f"{min(SIM_TICKETS, s['tickets_in_db']):,} tickets", "kind": "post", "headers": sup, "paths": ["/api/v1/policy/simulate"],
         "body": {"start": s["simulate"]["start"], "end": s["simulate"]["end"], "text": simulate_draft()}, "concurrency": 1,
         "min_requests": 2},
    ]


def run_load(spec: dict[str, Any], servers: list[Server]) -> dict[str, Any]:
    return run_loads([spec], servers)[0]


def run_loads(specs: list[dict[str, Any]], servers: list[Server]) -> list[dict[str, Any]]:
    """One load process per spec, all at once (the mixed scenario), under one memory sampler."""
    paths = []
    for spec in specs:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(spec, f)
            paths.append(f.name)
    try:
        with RssSampler(servers) as rss:
            procs = [subprocess.Popen([sys.executable, "-m", "bench.load", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, cwd=ROOT) for path in paths]
            outputs = [proc.communicate() for proc in procs]
        results = []
        for proc, (out, err) in zip(procs, outputs):
            if proc.returncode != 0:
                raise RuntimeError(f"load driver failed: {err[-2000:]}")
            result = json.loads(out.strip().splitlines()[-1])
            result["peak_rss_mb"] = round(rss.peak_kb / 1024, 1)
            if len(specs) == 1:  # loads run together share the servers' CPU: no per-unit figure
                result.update(rss.cpu_ms_per_unit(result))
            results.append(result)
        return results
    finally:
        for path in paths:
            os.unlink(path)


def cli_batch(url: str, commands: list[list[str]]) -> list[dict[str, Any]]:
    """Many `aftersales` commands in one interpreter (bench/clibatch.py)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(commands, f)
        path = f.name
    try:
        proc = subprocess.run([sys.executable, "-m", "bench.clibatch", path], env=env_for(url), capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"aftersales commands failed: {proc.stderr[-2000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        os.unlink(path)


def make_people(url: str, n_agents: int) -> tuple[dict[str, str], list[str]]:
    """Service tokens (integration, agent, supervisor), the signed-in agent `bench` and supervisor `bench-sup`,
    and agent1..agentN (`aftersales user create --role agent`) with a personal token each (`token create --user`)."""
    roles = [("integration", "bench-integration"), ("agent", "bench-agent"), ("supervisor", "bench")]
    users = [["user", "create", "--username", "bench", "--role", "agent", "--password", "bench-pass-1"],
             ["user", "create", "--username", SUPERVISOR[0], "--role", "supervisor", "--password", SUPERVISOR[1]]]
    users += [["user", "create", "--username", f"agent{i}", "--name", f"坐席{i:02d}", "--role", "agent", "--password", AGENT_PASSWORD]
              for i in range(1, n_agents + 1)]
    made = [["token", "create", "--role", role, "--name", name] for role, name in roles]
    made += [["token", "create", "--user", f"agent{i}"] for i in range(1, n_agents + 1)]
    out = cli_batch(url, users + made)[len(users):]  # users already there when the data set is reused: fine
    bad = [t["out"] for t in out if not t["ok"]]
    if bad:
        raise RuntimeError(f"tokens: {bad[:3]}")
    tokens = {role: t["out"] for (role, _), t in zip(roles, out)}
    return tokens, [t["out"] for t in out[len(roles):]]


async def user_ids(url: str, usernames: list[str]) -> list[int]:
    from sqlalchemy import select

    from aftersales.auth.models import User
    from aftersales.db import create_engine

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            found = dict((await conn.execute(select(User.username, User.id).where(User.username.in_(usernames)))).all())
    finally:
        await engine.dispose()
    return [found[u] for u in usernames]


def staff_queues(base: str, supervisor_token: str, ids: list[int]) -> dict[str, list[int]]:
    """Every agent works two queues: PUT /api/v1/queues/{key} with the members (keeping the queue's settings)."""
    headers = {"Authorization": f"Bearer {supervisor_token}"}
    with httpx.Client(base_url=base, timeout=30) as client:
        queues = client.get("/api/v1/queues", headers=headers)
        queues.raise_for_status()
        out: dict[str, list[int]] = {}
        keys = [q["key"] for q in queues.json() if q["active"]]
        for i, uid in enumerate(ids):
            for key in (keys[i % len(keys)], keys[(i + 1) % len(keys)]):
                out.setdefault(key, []).append(uid)
        for q in queues.json():
            if q["key"] not in out:
                continue
            body = {k: q[k] for k in ("name_zh", "name_en", "priority", "description", "auto_assign", "agent_cap", "active")}
            r = client.put(f"/api/v1/queues/{q['key']}", headers=headers, json={**body, "members": sorted(out[q["key"]])})
            if r.status_code != 200:
                raise RuntimeError(f"PUT /api/v1/queues/{q['key']}: {r.status_code} {r.text[:300]}")
        return out


async def reset_digests(url: str, paths: list[str]) -> None:
    """Forget the qc weekly digests this run will ask for (a reused data set has them from an earlier run),
    so that every POST of digest_generate really builds one."""
    from datetime import date

    from sqlalchemy import delete

    from aftersales.db import create_engine
    from aftersales.feedback.models import Digest

    days = [date.fromisoformat(p.rsplit("/", 1)[1]) for p in paths]
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(delete(Digest).where(Digest.team == "qc", Digest.period == "week", Digest.period_start.in_(days)))
    finally:
        await engine.dispose()


async def assign_next_check(url: str, since: datetime) -> dict[str, int]:
    """From ticket_events: tickets handed out by 'next ticket' since the run began, and any ticket handed out
    by it more than once (ever: nothing in this benchmark releases a ticket)."""
    from sqlalchemy import func, select

    from aftersales.db import create_engine
    from aftersales.models import TimelineEvent

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            handed = await conn.scalar(select(func.count()).select_from(TimelineEvent)
                                       .where(TimelineEvent.action == "assign_next", TimelineEvent.at >= since))
            twice = select(TimelineEvent.ticket_id).where(TimelineEvent.action == "assign_next").group_by(TimelineEvent.ticket_id) \
                .having(func.count() > 1).subquery()
            dup = await conn.scalar(select(func.count()).select_from(twice))
    finally:
        await engine.dispose()
    return {"handed_out_db": int(handed or 0), "handed_out_twice_db": int(dup or 0)}


# -- query plans ------------------------------------------------------------------------------


async def explain(url: str, agent_id: int | None = None, samples: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run the real repository/service code, capture the SQL it sends, and EXPLAIN each statement."""
    from sqlalchemy import event, func, select

    from aftersales.clock import SystemClock
    from aftersales.db import create_engine, create_sessionmaker
    from aftersales.models import Shipment, Ticket
    from aftersales.orders.schemas import TrackingEventIn
    from aftersales.orders.service import OrderService
    from aftersales.tickets.repository import TicketFilter, TicketRepository, encode_cursor
    from aftersales.tickets.pages import OPEN_STATUSES

    engine = create_engine(url)
    captured: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if not executemany:  # a batch's executemany INSERTs have nothing to plan beyond their indexes
            captured.append((statement, parameters))

    plans: list[dict[str, Any]] = []
    sessionmaker = create_sessionmaker(engine)
    is_pg = not url.startswith("sqlite")

    async def capture(title: str, fn: Any) -> None:
        captured.clear()
        event.listen(engine.sync_engine, "before_cursor_execute", grab)
        try:
            async with sessionmaker() as session:
                await fn(session)
                await session.rollback()
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", grab)
        statements = [(st, p) for st, p in captured if st.lstrip().upper().startswith(("SELECT", "INSERT", "UPDATE"))]
        async with engine.connect() as conn:
            for st, params in statements:
                prefix = "EXPLAIN " if is_pg else "EXPLAIN QUERY PLAN "
                rows = (await conn.exec_driver_sql(prefix + st, params)).all()
                plan = "\n".join(r[0] for r in rows) if is_pg else "\n".join(f"{'  ' * _depth(rows, r)}{r[-1]}" for r in rows)
                plans.append({"query": title, "sql": " ".join(st.split()), "plan": plan})
            await conn.rollback()

    async with sessionmaker() as session:
        mid = await session.scalar(select(func.max(Ticket.id))) // 2
        t = (await session.execute(select(Ticket.id, Ticket.requested_at, Ticket.sla_due_at).where(Ticket.id == mid))).one()
        deep = encode_cursor(SimpleNamespace(id=t[0], requested_at=t[1]))
        deep_due = encode_cursor(SimpleNamespace(id=t[0], sla_due_at=t[2]), QUEUE_SORT)
        ship = (await session.execute(select(Shipment).where(Shipment.id == mid))).scalar_one()
        carrier, number = ship.carrier, ship.tracking_number

    flt = TicketFilter(statuses=["pending_review"], queues=["general"], sort=QUEUE_SORT)
    await capture("queue listing: status=pending_review & queue=general, sorted by SLA due, first page",
                  lambda s: TicketRepository(s).list_page(flt, limit=50, cursor=None))
    await capture("queue listing: status=closed & queue=general, sorted by SLA due, keyset page in the middle of history",
                  lambda s: TicketRepository(s).list_page(TicketFilter(statuses=["closed"], queues=["general"], sort=QUEUE_SORT),
                                                          limit=50, cursor=deep_due))
    await capture("queue listing: status=closed & queue=general, newest first, keyset page in the middle of history",
                  lambda s: TicketRepository(s).list_page(TicketFilter(statuses=["closed"], queues=["general"]), limit=50, cursor=deep))
    await capture("queue page default: every open status, newest first",
                  lambda s: TicketRepository(s).list_page(TicketFilter(statuses=OPEN_STATUSES), limit=50, cursor=None))
    await capture("ticket by id with its whole chain (load_chain)", lambda s: TicketRepository(s).load_chain(mid))

    async def ingest(s: Any) -> None:
        ev = TrackingEventIn(carrier=carrier, tracking_number=number, source="kuaidi100", status="0",
                             occurred_at=datetime(2025, 1, 1, tzinfo=UTC), location="杭州", description="explain")
        await OrderService(s, SystemClock()).ingest_tracking([ev], limit=1000)

    await capture("tracking-event ingestion: shipment lookup, dedupe insert, shipment refresh", ingest)

    from datetime import date

    from aftersales.auth.principal import Principal
    from aftersales.feedback.analytics import return_rates
    from aftersales.feedback.digests import build_digest
    from aftersales.sla import reports
    from aftersales.tickets.assignment import AssignmentService
    from aftersales.tickets.policy_service import PolicyService

    if samples and samples["orders"]:
        import msgspec

        from aftersales.tickets.intake import IntakeRequest, IntakeService
        from bench.load import intake_body
        from aftersales.tickets.schemas import TicketIn

        async def intake(s: Any) -> None:
            platform = Principal(kind="token", id=0, name="explain", role="integration")
            bodies = [msgspec.convert(intake_body(external_id, sku, reason, kind, "explain"), TicketIn)
                      for (external_id, sku), (reason, kind) in zip(samples["orders"][:8], INTAKE_REASONS + INTAKE_REASONS)]
            await IntakeService(s, SystemClock(), SHANGHAI).open_tickets([IntakeRequest(b, platform) for b in bodies])

        await capture("ticket intake, a batch of 8 (IntakeService.open_tickets: orders, refundable sums, customer histories, "
                      "repeat counts, routing; rolled back)", intake)

    now = datetime.now(UTC)
    await capture("SLA board (GET /sla, /api/v1/sla/board): every query of reports.board",
                  lambda s: reports.board(s, now, reports.BoardFilters(), zone=SHANGHAI))
    await capture("SLA report, 30 days, group=queue (GET /api/v1/reports/sla?group=queue)",
                  lambda s: reports.closure_report(s, now - timedelta(days=30), now, "queue"))
    if samples and samples["mondays"]:
        monday = date.fromisoformat(samples["mondays"][0])
        await capture(f"weekly digest of qc ({monday}): build_digest, including the 30-day problem products",
                      lambda s: build_digest(s, "qc", "week", monday, SHANGHAI))
    await capture("return-rate analytics, 90 days, group=product (GET /api/v1/feedback/analytics?group=product)",
                  lambda s: return_rates(s, now - timedelta(days=90), now, "product", limit=100_000))
    if samples:
        period = (datetime.fromisoformat(samples["simulate"]["start"]), datetime.fromisoformat(samples["simulate"]["end"]))
        await capture("policy simulation over the newest ~100,000 tickets (PolicyService.simulate)",
                      lambda s: PolicyService(s, SystemClock()).simulate(simulate_draft(), *period))
    if agent_id is not None:
        async def next_ticket(s: Any) -> None:
            service = AssignmentService(s, SystemClock())

            async def two_queues(user_id: int) -> list[str]:  # the membership the mixed scenario gives agent1
                return ["general", "quality_review"]

            service.queues_of = two_queues  # type: ignore[method-assign]
            await service.next_ticket(Principal(kind="user", id=agent_id, name="agent1", role="agent"))

        await capture("next ticket (POST /api/v1/tickets/next) for an agent of general + quality_review", next_ticket)
    await engine.dispose()
    return plans


def _depth(rows: list[Any], row: Any) -> int:
    # EXPLAIN QUERY PLAN rows are (id, parent, notused, detail).
    parents = {r[0]: r[1] for r in rows}
    depth, p = 0, row[1]
    while p in parents and depth < 10:
        depth, p = depth + 1, parents[p]
    return depth


# -- the run ------------------------------------------------------------------------------------


def prepare(url: str, tickets: int, seed: int, reuse: bool, label: str) -> dict[str, Any]:
    from bench.generate import generate

    meta_path = DATA / f"{label}.json"
    if reuse and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("tickets") == tickets and meta.get("seed") == seed:
            log(f"reusing {label} ({tickets:,} tickets, generated in {meta['seconds_total']} s)")
            meta["reused"] = True
            return meta
    log(f"generating {tickets:,} tickets into {label}")
    # The database is recreated: a data set of another scale kept at the same URL (PostgreSQL's one
    # bench database) is gone, and `--reuse` must not take it for present.
    for other in DATA.glob("*.json"):
        if other != meta_path and json.loads(other.read_text()).get("url") == url:
            other.unlink()
    meta = generate(url, tickets=tickets, seed=seed)
    meta_path.write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    log(f"generated {meta['rows_total']:,} rows in {meta['seconds_total']} s")
    meta["reused"] = False
    return meta


def warm_cache(url: str) -> float:
    """Read the data set's files once so that the scenarios start from the OS page cache, as a
    server that has been running does. Without it a run measured whatever the previous one left
    in memory: this 24 GB machine cannot hold both 1,000,000-ticket data sets (13 + 10 GB) at once,
    and the first scenarios after the other database's run read from disk (ticket API p99 1.2 s,
    40 % I/O wait; bench F26). Returns the seconds it took; 0 when the files are not readable here."""
    started = time.perf_counter()
    if url.startswith("sqlite"):
        path = Path(url.split("///", 1)[1])
        files = [p for p in (path, Path(f"{path}-wal")) if p.exists()]
    else:
        files = asyncio.run(_postgres_files(url))
    total = sum(f.stat().st_size for f in files)
    done = 0
    for f in files:
        try:
            with open(f, "rb", buffering=0) as handle:
                while chunk := handle.read(8 << 20):
                    done += len(chunk)
                    if done % (1 << 30) < (8 << 20):
                        log(f"  warming the page cache: {done / 2**30:.0f} of {total / 2**30:.1f} GB")
        except OSError:
            continue
    return round(time.perf_counter() - started, 1)


async def _postgres_files(url: str) -> list[Path]:
    """The files of the benchmark database, when the server runs on this machine and they can be read."""
    from sqlalchemy import text

    from aftersales.db import create_engine

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            data_dir = await conn.scalar(text("SHOW data_directory"))
            oid = await conn.scalar(text("SELECT oid FROM pg_database WHERE datname = current_database()"))
    except Exception:
        return []
    finally:
        await engine.dispose()
    folder = Path(data_dir) / "base" / str(oid)
    try:
        return [f for f in folder.iterdir() if f.is_file()]
    except OSError:
        return []


def bench_database(url: str, *, db: str, tickets: int, seed: int, reuse: bool, duration: float, warmup: float,
                   instances: list[int], only: set[str] | None, label: str, samples_n: int,
                   concurrency: int | None = None, agents: int = N_AGENTS) -> dict[str, Any]:
    meta = prepare(url, tickets, seed, reuse, label)
    log("reading the data set into the page cache")
    meta["cache_warm_seconds"] = warm_cache(url)
    log(f"  done in {meta['cache_warm_seconds']} s")
    want_mixed = not only or "mixed" in only
    log("tokens and users (aftersales token create / user create)")
    tokens, agent_tokens = make_people(url, agents if want_mixed else 0)
    agent_ids = asyncio.run(user_ids(url, [f"agent{i}" for i in range(1, agents + 1)])) if want_mixed else []
    samples = asyncio.run(_samples(url, samples_n, seed))
    log("EXPLAIN of the hot queries")
    plans = asyncio.run(explain(url, agent_ids[0] if agent_ids else None, samples))
    runs: list[dict[str, Any]] = []
    for run_index, n in enumerate(instances):
        servers = [Server(url) for _ in range(n)]
        loadavg, started_at = os.getloadavg(), datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        log(f"{db} × {n}: load average at start {loadavg[0]:.2f}, {loadavg[1]:.2f}, {loadavg[2]:.2f}")
        try:
            for s in servers:
                s.start()
            base = f"http://127.0.0.1:{servers[0].port}"
            cookie = sign_in(base, "bench", "bench-pass-1")
            sup_cookie = sign_in(base, *SUPERVISOR)
            cursors = walk_cursors(base, f"/api/v1/tickets?status=pending_review&queue=general&sort={QUEUE_SORT}&limit=50",
                                   {"Authorization": f"Bearer {tokens['agent']}"}, max_pages=400)
            log(f"{db} × {n} instance(s): {len(cursors) + 1} pages in the pending_review/general queue")
            targets = [["127.0.0.1", s.port] for s in servers]
            results: dict[str, Any] = {}
            for sc in scenarios(samples, tokens, cookie, cursors, sup_cookie=sup_cookie, run_index=run_index, runs=len(instances)):
                if only and sc["name"] not in only and sc["name"] != "ceiling":
                    continue
                if sc["name"] == "digest_generate":
                    asyncio.run(reset_digests(url, sc["paths"]))
                if sc.get("paths") == "generated-digests":
                    sc["paths"] = generated_digests(base, tokens["supervisor"])
                spec = {**sc, "targets": targets, "duration": duration, "warmup": warmup, "seed": seed}
                spec["concurrency"] = max(concurrency or sc["concurrency"], n)
                log(f"{db} × {n}: {sc['name']} (c={spec['concurrency']}, {duration:g} s after {warmup:g} s warm-up)")
                r = run_load(spec, servers)
                r.update(what=sc["what"], concurrency=spec["concurrency"])
                results[sc["name"]] = r
                _log_result(r)
            if want_mixed:
                results.update(mixed(url, db, n, base, targets, servers, samples, tokens, agent_tokens, agent_ids,
                                     duration=duration, warmup=warmup, seed=seed))
            ceiling = results.get("ceiling", {}).get("rps") or None
            for r in results.values():
                r["ceiling_ratio"] = round(r["rps"] / ceiling, 3) if ceiling else None
            runs.append({"instances": n, "queue_pages": len(cursors) + 1, "loadavg_at_start": loadavg, "started_at": started_at,
                         "scenarios": results})
        finally:
            for s in servers:
                s.stop()
            # Each server logs at shutdown how intake's requests were grouped (group commit).
            batching = [line for s in servers for line in s.intake_summary()]
            for line in batching:
                log(f"  {db} × {n}: {line}")
            if runs and runs[-1]["instances"] == n:
                runs[-1]["intake_batching"] = batching
    return {"db": db, "url": meta["url"], "scale": tickets, "generation": meta, "tickets_in_db_at_start": samples["tickets_in_db"],
            "runs": runs, "explain": plans}


def _log_result(r: dict[str, Any], name: str = "") -> None:
    log(f"  → {name}{r['rps']:,} req/s ({r['units_per_s']:,} units/s), p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
        f"errors {r['errors']}, peak RSS {r['peak_rss_mb']} MB, statuses {r['statuses']}"
        + (f"  {r['error_samples'][:2]}" if r["errors"] else ""))


def generated_digests(base: str, supervisor_token: str) -> list[str]:
    """The qc weekly digests that exist (the digest_generate scenario just built them)."""
    with httpx.Client(base_url=base, timeout=60) as client:
        r = client.get("/api/v1/feedback/digests?team=qc&limit=200", headers={"Authorization": f"Bearer {supervisor_token}"})
        r.raise_for_status()
        weeks = [d["period_start"] for d in r.json() if d["period"] == "week"]
    return [f"/api/v1/feedback/digests/qc/week/{w}" for w in weeks] or ["/api/v1/feedback/digests/qc/week/2020-01-06"]


def mixed(url: str, db: str, n: int, base: str, targets: list[list[Any]], servers: list[Server], samples: dict[str, Any],
          tokens: dict[str, str], agent_tokens: list[str], agent_ids: list[int], *, duration: float, warmup: float,
          seed: int) -> dict[str, Any]:
    """40 agents work their queues (next, open, act) while intake and ingestion run; then ticket_events must show
    no ticket handed out twice."""
    staffed = staff_queues(base, tokens["supervisor"], agent_ids)
    feed = {"Authorization": f"Bearer {tokens['integration']}"}
    common = {"targets": targets, "duration": duration, "warmup": warmup, "seed": seed + 7}
    specs = [
        {**common, "name": "mixed_agents", "kind": "agent", "tokens": agent_tokens, "concurrency": len(agent_tokens),
         "what": f"{len(agent_tokens)} agents (personal tokens, 2 queues each): POST /api/v1/tickets/next, GET the ticket, "
                 "act with its version (approve / close / inspect / refund / ship), in a loop — while intake and ingestion run"},
        {**common, "name": "mixed_intake", "kind": "intake", "headers": feed, "orders": samples["orders"], "reasons": INTAKE_REASONS,
         "concurrency": 8, "what": "during mixed: POST /api/v1/tickets"},
        {**common, "name": "mixed_tracking", "kind": "tracking", "headers": feed, "shipments": samples["shipments"], "batch": 500,
         "replay_share": 0.10, "concurrency": 2, "what": "during mixed: POST /api/v1/tracking-events, 500/batch"},
    ]
    since = datetime.now(UTC)
    log(f"{db} × {n}: mixed — {len(agent_tokens)} agents in {len(staffed)} queues + intake (c=8) + ingestion (c=2), "
        f"{duration:g} s after {warmup:g} s warm-up")
    out: dict[str, Any] = {}
    for spec, r in zip(specs, run_loads(specs, servers)):
        r.update(what=spec["what"], concurrency=spec["concurrency"])
        out[spec["name"]] = r
    agents = out["mixed_agents"]
    agents.update(asyncio.run(assign_next_check(url, since)))
    if agents["handed_out_twice_db"]:
        agents["errors"] += agents["handed_out_twice_db"]
        agents["error_samples"].append(f"{agents['handed_out_twice_db']} tickets handed out twice (ticket_events assign_next)")
    for name, r in out.items():
        _log_result(r, f"{name}: ")
    log(f"  agents: {agents['handed_out']} tickets handed out (warm-up included; {agents['handed_out_db']} assign_next rows "
        f"since start), twice: {agents['handed_out_twice']} (driver) / {agents['handed_out_twice_db']} (database); "
        f"idle polls {agents['idle_polls']}; steps {agents['steps']}")
    return out


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from bench.report import cpu_per_unit

    table = Table(title=f"{result['db']} · {result['scale']:,} tickets")
    for col in ("inst", "scenario", "c", "req/s", "units/s", "p50 ms", "p95 ms", "p99 ms", "errors", "× ceiling", "CPU ms/unit", "peak RSS MB"):
        table.add_column(col, justify="right" if col not in ("scenario",) else "left")
    for run in result["runs"]:
        for name, r in run["scenarios"].items():
            table.add_row(str(run["instances"]), name, str(r["concurrency"]), f"{r['rps']:,.0f}", f"{r['units_per_s']:,.0f}",
                          str(r["p50_ms"]), str(r["p95_ms"]), str(r["p99_ms"]), str(r["errors"]),
                          f"{r['ceiling_ratio']:.3f}" if r["ceiling_ratio"] is not None else "-", cpu_per_unit(r),
                          str(r["peak_rss_mb"]))
    Console(stderr=True, width=190).print(table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description="Benchmarks of the aftersales service (issue 7).")
    p.add_argument("--quick", action="store_true", help="2,000 tickets, SQLite, 1.5-second scenarios, 8 agents: for CI")
    p.add_argument("--db", choices=("sqlite", "postgres", "both"), default="sqlite")
    p.add_argument("--tickets", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds per scenario")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--reuse", action="store_true", help="reuse a data set generated earlier with the same scale and seed")
    p.add_argument("--pg-url", default=os.environ.get("AFTERSALES_BENCH_PG_URL", PG_DEFAULT))
    p.add_argument("--sqlite-path", default=None, help="default bench/data/bench-<scale>.db")
    p.add_argument("--instances", default="1,2",
                   help="app instances (server processes against the one database) to run in turn, e.g. 1,2")
    p.add_argument("--only", default="", help="comma-separated scenario names (the ceiling always runs)")
    p.add_argument("--no-docs", action="store_true", help="do not regenerate docs/performance.md")
    p.add_argument("--worker", choices=("auto", "on", "off"), default="auto",
                   help="AFTERSALES_RUN_WORKER for the servers (auto = as the README runs it: in-process on SQLite)")
    p.add_argument("--concurrency", type=int, default=None, help="override every scenario's concurrency (diagnosis)")
    p.add_argument("--agents", type=int, default=N_AGENTS, help="agents in the mixed scenario (issue 7: 40)")
    args = p.parse_args(argv)
    if args.quick:
        args.tickets, args.duration, args.warmup, args.db, args.agents = 2000, 1.5, 0.5, "sqlite", 8
    WORKER["mode"] = args.worker
    DATA.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    info = machine()
    only = {x for x in args.only.split(",") if x} or None
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    failed = False
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for db in dbs:
        if db == "sqlite":
            path = Path(args.sqlite_path or DATA / f"bench-{args.tickets}.db").resolve()
            url, label = f"sqlite+aiosqlite:///{path}", f"sqlite-{args.tickets}"
        else:
            url, label = args.pg_url, f"postgres-{args.tickets}"
            info["postgresql"] = pg_version(url)
        instances = [1] if args.quick else [int(x) for x in args.instances.split(",") if x]
        info = {**info, "loadavg_at_start": os.getloadavg()}
        result = bench_database(url, db=db, tickets=args.tickets, seed=args.seed, reuse=args.reuse,
                                duration=args.duration, warmup=args.warmup, instances=instances, only=only,
                                label=label, samples_n=200 if args.quick else 5000, concurrency=args.concurrency,
                                agents=args.agents)
        diagnostic = bool(args.concurrency or only)
        result.update(worker=args.worker, machine=info, command=command, quick=args.quick, at=stamp, duration=args.duration, warmup=args.warmup,
                      diagnostic=diagnostic)
        suffix = "-quick" if args.quick else ("-diag" if diagnostic else "")
        out = RESULTS / f"{stamp}-{db}-{args.tickets}{suffix}.json"
        out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
        log(f"wrote {out.relative_to(ROOT)}")
        print_table(result)
        if any(r["errors"] for run in result["runs"] for r in run["scenarios"].values()):
            failed = True
    if not args.no_docs and not args.quick:
        from bench.report import write_docs

        write_docs()
        log("regenerated docs/performance.md")
    if failed:
        log("some scenarios had errors")
    return 1 if failed else 0
