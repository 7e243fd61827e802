"""Idempotency-Key: the first answer to a keyed request is stored and replayed on repeats."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.auth.models import IdempotencyRecord
from aftersales.clock import Clock
from aftersales.errors import IdempotencyMismatch, InvalidInput

Run = Callable[[], Awaitable[tuple[int, bytes]]]


def fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


async def run_once(
    session: AsyncSession, clock: Clock, *, scope: str, key: str | None, print_: str, run: Run
) -> tuple[int, bytes, bool]:
    """Run and commit, or replay the stored answer. Returns (status, body, replayed)."""
    if key is None:
        status, body = await run()
        await session.commit()
        return status, body, False
    check_key(key)
    stored = await session.get(IdempotencyRecord, (scope, key))
    if stored is not None:
        return replay(stored, print_)
    status, body = await run()
    session.add(IdempotencyRecord(**answer_record(scope, key, print_, status, body, clock.now())))
    try:
        await session.commit()
    except IntegrityError:
        # The same key raced us and won: our work is rolled back and theirs is the answer.
        await session.rollback()
        stored = await session.get(IdempotencyRecord, (scope, key))
        if stored is None:
            raise
        return replay(stored, print_)
    return status, body, False


def answer_record(scope: str, key: str, print_: str, status: int, body: bytes, at: datetime) -> dict[str, Any]:
    """The columns of the IdempotencyRecord that answers later repeats of this request."""
    return {"scope": scope, "key": key, "fingerprint": print_, "status_code": status, "body": body.decode(), "created_at": at}


def check_key(key: str) -> None:
    if not 1 <= len(key) <= 200:
        raise InvalidInput.on("Idempotency-Key", "must be 1 to 200 characters")


def replay(stored: IdempotencyRecord, print_: str) -> tuple[int, bytes, bool]:
    if stored.fingerprint != print_:
        raise IdempotencyMismatch("this Idempotency-Key was used for a different request")
    return stored.status_code, stored.body.encode(), True
