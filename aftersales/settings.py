"""One typed settings object, read from AFTERSALES_* environment variables."""

from __future__ import annotations

import os
from typing import Any

import msgspec
from zoneinfo import ZoneInfo

ENV_PREFIX = "AFTERSALES_"


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    database_url: str = "sqlite+aiosqlite:///./aftersales.db"
    # Signs session cookies and CSRF tokens. The default is for the embedded demo only:
    # production must set AFTERSALES_SECRET_KEY.
    secret_key: str = "dev-only-change-me-in-production-0123456789"
    timezone: str = "Asia/Shanghai"
    default_locale: str = "zh_CN"
    host: str = "127.0.0.1"
    port: int = 8000
    debug: bool = False
    # Largest request body accepted, in bytes (tracking batches of 1,000 events fit easily).
    max_body_bytes: int = 2_000_000
    max_tracking_batch: int = 1000
    page_size_default: int = 50
    page_size_max: int = 200
    # PostgreSQL connections a process keeps (and as many more at peaks, closed after use). At 10, 16
    # requests at once kept opening and closing connections: one instance's ticket API p99 69-71 ms
    # against 28-30 at 20 (bench F31). Two instances at their peak hold 80 of PostgreSQL's default 100.
    db_pool_size: int = 20
    # Periodic work (SLA warnings, webhook delivery, digests) inside `serve`: "auto" runs it on the
    # embedded SQLite default; with PostgreSQL run `aftersales worker` processes instead.
    run_worker: str = "auto"
    worker_interval_seconds: float = 15.0
    # SLA board and report figures are served from a per-process cache for this long (the board page
    # polls itself every 30 s per open browser); each answer says when its figures were read. 0 disables.
    sla_report_cache_seconds: float = 15.0
    sql_echo: bool = False
    # Freeze what exists at start-up out of the garbage collector's reach (`aftersales serve` sets it;
    # off by default so that test processes, which build many apps, do not keep them all).
    gc_freeze: bool = False
    # Ticket intake requests arriving together are written as one batch of at most this many
    # (group commit, bench F5); a lone request is still written at once.
    intake_batch_max: int = 128
    # On PostgreSQL, intake batches written at the same time per process (SQLite: always 1). More
    # overlap the database's round trips but make batches smaller, and each has a fixed cost: with
    # the app and PostgreSQL sharing 2 cores, 1 took the least CPU per ticket (bench F28). Raise it
    # when PostgreSQL runs on a host of its own.
    intake_parallel_batches: int = 1

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> "Settings":
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in msgspec.structs.fields(cls):
            raw = env.get(ENV_PREFIX + field.name.upper())
            if raw is not None:
                values[field.name] = raw
        values.update(overrides)
        # msgspec converts "8000" -> 8000 and "true" -> True with strict=False.
        return msgspec.convert(values, cls, strict=False)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
