"""Periodic work: SLA warnings, team digests and webhook delivery. Safe to run in several processes at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from zoneinfo import ZoneInfo

from aftersales.clock import Clock
from aftersales.feedback.digests import generate_due_digests
from aftersales.notifications.service import deliver_due
from aftersales.sla.tasks import fire_due_alerts

log = logging.getLogger("aftersales.worker")

Task = Callable[[], Awaitable[int]]


def tasks(factory: async_sessionmaker[AsyncSession], clock: Clock, client: httpx.AsyncClient, tz: ZoneInfo,
          read: async_sessionmaker[AsyncSession] | None = None) -> dict[str, Task]:
    """`read`: sessions for what only reads (SQLite's deferred readers); `factory` when absent."""
    return {
        "sla_alerts": lambda: fire_due_alerts(factory, clock),
        "digests": lambda: generate_due_digests(factory, clock, tz, read=read),
        "webhooks": lambda: deliver_due(factory, clock, client=client),
    }


async def run_once(factory: async_sessionmaker[AsyncSession], clock: Clock, client: httpx.AsyncClient,
                   tz: ZoneInfo | None = None, read: async_sessionmaker[AsyncSession] | None = None) -> dict[str, int]:
    done: dict[str, int] = {}
    for name, task in tasks(factory, clock, client, tz or ZoneInfo("Asia/Shanghai"), read).items():
        try:
            done[name] = await task()
        except Exception:  # one failing task must not stop the others or the loop
            log.exception("periodic task %s failed", name)
            done[name] = -1
    return done


async def run_forever(factory: async_sessionmaker[AsyncSession], clock: Clock, *, interval: float,
                      stop: asyncio.Event | None = None, tz: ZoneInfo | None = None,
                      read: async_sessionmaker[AsyncSession] | None = None) -> None:
    stop = stop or asyncio.Event()
    async with httpx.AsyncClient() as client:
        while not stop.is_set():
            done = await run_once(factory, clock, client, tz, read)
            if any(done.values()):
                log.info("worker pass: %s", done)
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                pass
