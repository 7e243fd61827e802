"""Request-scoped helpers shared by every controller."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.datastructures import State
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.clock import Clock
from aftersales.settings import Settings


READ_METHODS = frozenset({"GET", "HEAD"})


async def provide_db_session(state: State, request: Request[Any, Any, Any]) -> AsyncIterator[AsyncSession]:
    """Reads get a session that never queues for SQLite's write lock; everything else the writer,
    after passing the process's write gate (a FIFO lock on SQLite, nothing on PostgreSQL)."""
    if request.method in READ_METHODS:
        async with state.read_sessionmaker() as session:
            yield session
        return
    async with write_session(state) as session:
        yield session


@contextlib.asynccontextmanager
async def write_session(state: State) -> AsyncIterator[AsyncSession]:
    """A writer session behind the process's write gate; for handlers that choose their session."""
    async with state.write_gate, state.sessionmaker() as session:
        yield session


def provide_clock(state: State) -> Clock:
    return state.clock


def provide_settings(state: State) -> Settings:
    return state.settings


def json_response(status: int, body: bytes, *, replayed: bool = False, headers: dict[str, str] | None = None) -> Response[bytes]:
    extra = dict(headers or {})
    if replayed:
        extra["Idempotent-Replayed"] = "true"
    return Response(content=body, status_code=status, media_type="application/json", headers=extra)


def encode(value: Any) -> bytes:
    return msgspec.json.encode(value)


def idempotency_key(request: Request[Any, Any, Any]) -> str | None:
    return request.headers.get("idempotency-key")
