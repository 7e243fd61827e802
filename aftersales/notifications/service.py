"""The outbox: events become deliveries in their own transaction; a worker sends them, signed,
with retries and backoff, and logs every attempt."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aftersales.auth.models import User
from aftersales.clock import Clock
from aftersales.notifications.formats import render
from aftersales.notifications.models import DeliveryAttempt, Notification, OutboxMessage, WebhookEndpoint

MAX_ATTEMPTS = 8
LOCK_FOR = timedelta(minutes=2)


def backoff(attempts: int) -> timedelta:
    """10 s, 20 s, 40 s … capped at one hour."""
    return timedelta(seconds=min(10 * 2 ** max(attempts - 1, 0), 3600))


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over "<timestamp>.<body>", hex: receivers recompute it and reject old timestamps."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


async def enqueue(session: AsyncSession, clock: Clock, event_type: str, event_key: str, payload: dict[str, Any]) -> int:
    """Write one delivery per subscribed endpoint, inside the caller's transaction."""
    endpoints = (await session.execute(select(WebhookEndpoint).where(WebhookEndpoint.active.is_(True)))).scalars()
    count = 0
    now = clock.now()
    for endpoint in endpoints:
        if endpoint.events and event_type not in endpoint.events:
            continue
        session.add(OutboxMessage(endpoint_id=endpoint.id, event_type=event_type, event_key=event_key, payload=payload,
                                  created_at=now, attempts=0, next_attempt_at=now))
        count += 1
    return count


async def notify_users(session: AsyncSession, clock: Clock, user_ids: set[int], *, kind: str, title: str, body: str,
                       ticket_id: int | None) -> None:
    for user_id in sorted(user_ids):
        session.add(Notification(user_id=user_id, ticket_id=ticket_id, kind=kind, title=title, body=body, created_at=clock.now()))


async def supervisor_ids(session: AsyncSession) -> set[int]:
    query = select(User.id).where(User.role.in_(("supervisor", "admin")), User.active.is_(True))
    return set((await session.execute(query)).scalars())


async def deliver_due(factory: async_sessionmaker[AsyncSession], clock: Clock, *, client: httpx.AsyncClient, limit: int = 50) -> int:
    """Send what is due. Each message is locked by a conditional UPDATE so two workers never send it twice."""
    sent = 0
    async with factory() as session:
        now = clock.now()
        due = (await session.execute(
            select(OutboxMessage.id).where(
                OutboxMessage.delivered_at.is_(None), OutboxMessage.failed_at.is_(None),
                OutboxMessage.next_attempt_at <= now,
                or_(OutboxMessage.locked_until.is_(None), OutboxMessage.locked_until < now),
            ).order_by(OutboxMessage.next_attempt_at).limit(limit)
        )).scalars().all()
        await session.commit()
    for message_id in due:
        if await _deliver_one(factory, clock, client, message_id):
            sent += 1
    return sent


async def _deliver_one(factory: async_sessionmaker[AsyncSession], clock: Clock, client: httpx.AsyncClient, message_id: int) -> bool:
    async with factory() as session:
        now = clock.now()
        claimed = await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message_id, OutboxMessage.delivered_at.is_(None), OutboxMessage.failed_at.is_(None),
                   # Re-checked here: another worker may have failed it (and set a backoff) since we listed it.
                   OutboxMessage.next_attempt_at <= now,
                   or_(OutboxMessage.locked_until.is_(None), OutboxMessage.locked_until < now))
            .values(locked_until=now + LOCK_FOR)
        )
        await session.commit()
        if claimed.rowcount != 1:
            return False
        message = await session.get(OutboxMessage, message_id)
        endpoint = await session.get(WebhookEndpoint, message.endpoint_id) if message else None
        assert message is not None and endpoint is not None
        body = json.dumps(render(endpoint.format, message.event_type, message.payload), ensure_ascii=False).encode()
        timestamp = str(int(clock.now().timestamp()))
        headers = {
            "Content-Type": "application/json",
            "X-Aftersales-Event": message.event_type,
            "X-Aftersales-Delivery": str(message.id),
            "X-Aftersales-Timestamp": timestamp,
            "X-Aftersales-Signature": sign(endpoint.secret, timestamp, body),
        }
        started = time.monotonic()
        status, error = None, ""
        try:
            response = await client.post(endpoint.url, content=body, headers=headers, timeout=10.0)
            status = response.status_code
            if status >= 300:
                error = response.text[:500]
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        ok = status is not None and 200 <= status < 300
        attempts = message.attempts + 1
        session.add(DeliveryAttempt(outbox_id=message.id, at=clock.now(), status_code=status, error=error,
                                    duration_ms=int((time.monotonic() - started) * 1000)))
        values: dict[str, Any] = {"attempts": attempts, "last_status": status, "last_error": error, "locked_until": None}
        if ok:
            values["delivered_at"] = clock.now()
        elif attempts >= MAX_ATTEMPTS:
            values["failed_at"] = clock.now()
        else:
            values["next_attempt_at"] = clock.now() + backoff(attempts)
        await session.execute(update(OutboxMessage).where(OutboxMessage.id == message.id).values(**values))
        await session.commit()
        return ok


def next_attempt(attempts: int, now: datetime) -> datetime:
    return now + backoff(attempts)
