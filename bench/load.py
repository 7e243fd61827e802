"""The load driver: a lean asyncio HTTP/1.1 keep-alive client (uvloop + httptools).

Run by bench/run.py as a separate process: `python -m bench.load SPEC.json` prints one JSON result.
Each of `concurrency` workers owns one keep-alive connection (spread round-robin over the
targets, so two app instances share the load) and sends its next request as soon as the previous
answer is complete (closed loop). Requests started during the warm-up are not recorded; requests
started during the measured window are, including the ones that finish just after it.

A request is an error when the connection fails or the status is not the expected one. An answer
marked `Idempotent-Replayed` counts as status -N (an error): every intake request carries a fresh key,
so a replay means the run measured stored answers instead of intakes.

Kinds of scenario (spec["kind"]):
- get: GET a random path of spec["paths"];
- post: POST spec["body"] (JSON) to a random path of spec["paths"];
- once: POST to spec["paths"] in order, each once across all workers (on-demand digests: each request
  generates a new one); a worker stops when every path has been used;
- intake, tracking: generated bodies (see the makers below);
- agent: each worker is one agent with its own personal token (spec["tokens"]) working its queues in a loop:
  POST /api/v1/tickets/next, GET /api/v1/tickets/{id}, then the action the status calls for (approve with
  the version in pending_review, ...). A ticket handed out to two agents is counted as an error.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httptools

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]


class Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.fut: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.replayed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(exc or ConnectionError("connection closed"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.body = []
        self.replayed = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"idempotent-replayed":
            self.replayed = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.fut is not None and not self.fut.done():
            status = self.parser.get_status_code()
            self.fut.set_result((-status if self.replayed else status, b"".join(self.body)))

    def _fail(self, exc: Exception) -> None:
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(exc)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.fut = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.fut


def build(method: str, host: str, path: str, headers: dict[str, str], body: bytes | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


# -- request makers ---------------------------------------------------------------------------


def intake_body(external_id: str, sku: str, reason: str, kind: str, description: str,
                evidence_urls: list[str] | None = None) -> dict[str, Any]:
    """A platform's after-sales request on one item of a generated order, as every intake the
    benchmark makes asks it: ¥0.01, so repeated requests on a sampled order stay refundable; a
    complaint names no items and asks nothing."""
    goods = kind != "complaint"
    return {
        "order_external_id": external_id, "kind": kind, "reason_code": reason,
        "items": [{"sku": sku, "quantity": 1}] if goods else [],
        "requested_amount": "0.01" if goods else "0.00",
        "description": description, "evidence_urls": evidence_urls or [],
    }


class Maker:
    """Builds the next request of a scenario: (raw bytes, expected statuses, units of work)."""

    def __init__(self, spec: dict[str, Any], seed: int, shared: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.shared = shared if shared is not None else {}
        self.rng = random.Random(seed)
        self.kind = spec["kind"]
        self.headers = dict(spec.get("headers", {}))
        self.sent_events: list[dict[str, Any]] = []

    def next(self, host: str) -> tuple[bytes, tuple[int, ...], int] | None:
        rng = self.rng
        if self.kind == "get":
            path = rng.choice(self.spec["paths"])
            return build("GET", host, path, self.headers), tuple(self.spec.get("expect", (200,))), 1
        if self.kind == "post":
            path = rng.choice(self.spec["paths"])
            body = json.dumps(self.spec.get("body", {})).encode()
            return build("POST", host, path, self.headers, body), tuple(self.spec.get("expect", (200,))), 1
        if self.kind == "once":
            paths = self.spec["paths"]
            i = self.shared["next"] = self.shared.get("next", -1) + 1
            if i >= len(paths):
                return None  # every one done: the answers after this would be stored digests, not new ones
            body = json.dumps(self.spec["body"]).encode() if "body" in self.spec else b""
            return build("POST", host, paths[i % len(paths)], self.headers, body), tuple(self.spec.get("expect", (200,))), 1
        if self.kind == "intake":
            return self._intake(host)
        if self.kind == "tracking":
            return self._tracking(host)
        raise ValueError(self.kind)

    def _intake(self, host: str) -> tuple[bytes, tuple[int, ...], int]:
        rng = self.rng
        external_id, sku = rng.choice(self.spec["orders"])
        reason, kind = rng.choice(self.spec["reasons"])
        body = intake_body(external_id, sku, reason, kind, "直播间买的，收到有问题，申请售后 (bench)",
                           ["https://img.example.com/bench/1.jpg"])
        # A fresh key every time, not one drawn from the seeded generator: on a reused data set the same
        # sequence of keys would be answered from the previous run's stored answers (replays, not intakes).
        headers = {**self.headers, "Idempotency-Key": f"bench-{uuid.uuid4()}"}
        return build("POST", host, "/api/v1/tickets", headers, json.dumps(body).encode()), (201,), 1

    def _tracking(self, host: str) -> tuple[bytes, tuple[int, ...], int]:
        """A carrier push: 500 events, 10 % replays of events already sent, late and out-of-order ones."""
        rng = self.rng
        size = self.spec.get("batch", 500)
        replays = int(size * self.spec.get("replay_share", 0.10)) if self.sent_events else 0
        events: list[dict[str, Any]] = [rng.choice(self.sent_events) for _ in range(replays)]
        fresh: list[dict[str, Any]] = []
        while len(fresh) < size - replays:
            carrier, number, created, last = rng.choice(self.spec["shipments"])
            t0 = datetime.fromisoformat(created)
            t1 = datetime.fromisoformat(last) if last else t0 + timedelta(days=1)
            pair = []
            for _ in range(2):
                if rng.random() < 0.7:  # late scans that belong before the parcel's latest event
                    at = t0 + (t1 - t0) * rng.random()
                    status = rng.choice(("0", "1002", "1003"))
                else:  # new scans after it
                    at = t1 + timedelta(minutes=rng.randrange(1, 3000), microseconds=rng.randrange(1_000_000))
                    status = rng.choice(("0", "1001", "5"))
                pair.append({
                    "carrier": carrier, "tracking_number": number, "source": "kuaidi100", "status": status,
                    "occurred_at": at.replace(tzinfo=at.tzinfo or UTC).isoformat(),
                    "location": "杭州", "description": f"bench scan {status}",
                })
            pair.sort(key=lambda e: e["occurred_at"], reverse=rng.random() < 0.5)  # half arrive out of order
            fresh.extend(pair)
        events.extend(fresh[: size - replays])
        rng.shuffle(events)
        self.sent_events.extend(fresh)
        if len(self.sent_events) > 20_000:
            del self.sent_events[: len(self.sent_events) - 20_000]
        body = json.dumps({"events": events}).encode()
        return build("POST", host, "/api/v1/tracking-events", self.headers, body), (200,), size


# -- the run ----------------------------------------------------------------------------------


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    targets = [tuple(t) for t in spec["targets"]]
    concurrency = spec["concurrency"]
    warmup, duration = spec["warmup"], spec["duration"]
    latencies: list[int] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    units = 0
    t_start = time.perf_counter()
    measure_from = t_start + warmup
    measure_to = measure_from + duration

    shared: dict[str, Any] = {}
    handed: Counter[int] = Counter()
    steps: dict[str, list[int]] = {}
    idle = 0

    async def agent(i: int) -> None:
        """One agent: next ticket, open it, act on it; every request timed, per step too."""
        nonlocal units, idle
        host, port = targets[i % len(targets)]
        tokens = spec["tokens"]
        headers = {"Authorization": f"Bearer {tokens[i % len(tokens)]}"}
        hostport = f"{host}:{port}"
        conn: Conn | None = None
        rng = random.Random(spec.get("seed", 1) * 1000 + i)

        async def call(step: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
            nonlocal conn
            if conn is None or conn.lost:
                _, conn = await loop.create_connection(Conn, host, port)
            raw = build(method, hostport, path, headers, json.dumps(body).encode() if body is not None else b"" if method == "POST" else None)
            t0 = time.perf_counter()
            try:
                status, data = await conn.request(raw)
                error = None if status == 200 else f"{step} {status}: {data[:300].decode(errors='replace')}"
            except Exception as exc:
                status, data, error, conn = 0, b"", f"{step} connection: {exc!r}", None
            t1 = time.perf_counter()
            if t0 >= measure_from:
                latencies.append(int((t1 - t0) * 1e9))
                steps.setdefault(step, []).append(int((t1 - t0) * 1e9))
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if error:
                    errors.append(error)
            if error:
                return status, None
            return status, json.loads(data) if data else None

        while time.perf_counter() < measure_to:
            _, summary = await call("next", "POST", "/api/v1/tickets/next")
            if not summary:
                if time.perf_counter() >= measure_from:
                    idle += 1
                await asyncio.sleep(0.05)  # nothing to hand out: look again shortly
                continue
            ticket_id = summary["id"]
            handed[ticket_id] += 1
            if handed[ticket_id] > 1:
                errors.append(f"ticket {ticket_id} handed out {handed[ticket_id]} times")
            _, detail = await call("open", "GET", f"/api/v1/tickets/{ticket_id}")
            if not detail:
                continue
            version, allowed = detail["version"], set(detail.get("allowed_actions") or ())
            # The next step the ticket offers (its allowed_actions), approval first.
            options = [
                ("approve", {}),
                ("record_inspection", {"passed": True}),
                ("confirm_refund", {"refund_reference": f"BENCH-{ticket_id}"}),
                ("ship_replacement", {"carrier": "SF", "tracking_number": f"SFB{ticket_id}{rng.randrange(10**6):06d}"}),
                ("close", {"note": "bench: done"}),
            ]
            action, body = next(((a, b) for a, b in options if a in allowed), ("note", {"note": "bench: looked at it"}))
            _, done = await call("act", "POST", f"/api/v1/tickets/{ticket_id}/actions/{action}", {"version": version, **body})
            if done and time.perf_counter() >= measure_from:
                units += 1
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    # Requests that take longer than the run (a policy simulation) still get measured: keep going past the
    # end until this many requests started after the warm-up have completed.
    min_requests = spec.get("min_requests", 0)

    async def worker(i: int) -> None:
        nonlocal units
        host, port = targets[i % len(targets)]
        maker = Maker(spec, seed=spec.get("seed", 1) * 1000 + i, shared=shared)
        conn: Conn | None = None
        while True:
            now = time.perf_counter()
            if now >= measure_to and len(latencies) >= min_requests:
                break
            if conn is None or conn.lost:
                _, conn = await loop.create_connection(Conn, host, port)
            made = maker.next(f"{host}:{port}")
            if made is None:
                break
            raw, expect, n = made
            t0 = time.perf_counter()
            try:
                status, body = await conn.request(raw)
                error = None if status in expect else f"{status}: {body[:300].decode(errors='replace')}"
            except Exception as exc:  # a dropped connection is an error, then reconnect
                status, error, conn = 0, f"connection: {exc!r}", None
            t1 = time.perf_counter()
            if t0 >= measure_from:
                latencies.append(int((t1 - t0) * 1e9))
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if error:
                    errors.append(error)
                else:
                    units += n
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    await asyncio.gather(*((agent if spec["kind"] == "agent" else worker)(i) for i in range(concurrency)))
    ended = time.perf_counter()
    elapsed = max(ended, measure_to) - measure_from
    # The measured window on the wall clock, so that the runner can charge the servers' CPU to it.
    epoch_offset = time.time() - ended
    window = [round(measure_from + epoch_offset, 3), round(max(ended, measure_to) + epoch_offset, 3)]
    latencies.sort()

    def pct(p: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] / 1e6, 2)

    extra: dict[str, Any] = {}
    if spec["kind"] == "agent":
        extra = {
            "handed_out": len(handed), "handed_out_twice": sum(1 for n in handed.values() if n > 1), "idle_polls": idle,
            "steps": {k: {"requests": len(v), "p50_ms": _pct(sorted(v), 0.5), "p99_ms": _pct(sorted(v), 0.99)} for k, v in steps.items()},
        }
    return {
        **extra,
        "requests": len(latencies),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
        "statuses": statuses,
        "seconds": round(elapsed, 2),
        "rps": round(len(latencies) / max(duration, elapsed), 2),
        "units_per_s": round(units / max(duration, elapsed), 1),
        "units": units,
        "window": window,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1] / 1e6, 2) if latencies else None,
    }


def _pct(values: list[int], p: float) -> float | None:
    return round(values[min(len(values) - 1, int(p * len(values)))] / 1e6, 2) if values else None


def main(argv: list[str] | None = None) -> int:
    argv = argv if argv is not None else sys.argv[1:]
    with open(argv[0]) as f:
        spec = json.load(f)
    if uvloop is not None:
        uvloop.install()
    result = asyncio.run(run(spec))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
