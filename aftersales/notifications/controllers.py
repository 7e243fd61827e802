"""Admin API for outbound webhooks and the delivery log."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec
from litestar import Controller, delete, get, post
from litestar.params import Parameter
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.auth.guards import requires
from aftersales.clock import Clock
from aftersales.errors import InvalidInput, NotFound
from aftersales.notifications.models import FORMATS, DeliveryAttempt, OutboxMessage, WebhookEndpoint

ADMIN = ("admin",)
DELIVERY_STATUSES = ("pending", "delivered", "failed")
EventType = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$", max_length=32)]


class WebhookIn(msgspec.Struct, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    url: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
    format: Literal["json", "wecom", "dingtalk", "feishu", "slack"] = "json"
    # Event types delivered to this endpoint (e.g. sla.at_risk, sla.breach); empty means all.
    events: Annotated[list[EventType], msgspec.Meta(max_length=50)] = []


class WebhookOut(msgspec.Struct, kw_only=True):
    id: int
    name: str
    url: str
    format: str
    events: list[str]
    active: bool
    created_at: datetime


class WebhookCreated(WebhookOut, kw_only=True):
    # Shown once: only the receiver and the service know it afterwards.
    secret: str


class AttemptOut(msgspec.Struct, kw_only=True):
    at: datetime
    status_code: int | None
    error: str
    duration_ms: int


class DeliveryOut(msgspec.Struct, kw_only=True):
    id: int
    endpoint_id: int
    endpoint_name: str
    event_type: str
    event_key: str
    status: str
    created_at: datetime
    attempts: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    failed_at: datetime | None
    last_status: int | None
    last_error: str
    log: list[AttemptOut]


def endpoint_out(e: WebhookEndpoint) -> WebhookOut:
    return WebhookOut(id=e.id, name=e.name, url=e.url, format=e.format, events=list(e.events or []), active=e.active,
                      created_at=e.created_at)


def check_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput.on("url", "must be an http:// or https:// address")
    return url.strip()


async def create_endpoint(session: AsyncSession, clock: Clock, data: WebhookIn) -> WebhookCreated:
    if data.format not in FORMATS:
        raise InvalidInput.on("format", f"must be one of {', '.join(FORMATS)}")
    if not data.name.strip():
        raise InvalidInput.on("name", "must not be blank")
    endpoint = WebhookEndpoint(
        name=data.name.strip(), url=check_url(data.url), format=data.format, secret=secrets.token_urlsafe(32),
        events=sorted(set(data.events)), active=True, created_at=clock.now(),
    )
    session.add(endpoint)
    await session.flush()
    return WebhookCreated(**msgspec.structs.asdict(endpoint_out(endpoint)), secret=endpoint.secret)


async def list_endpoints(session: AsyncSession) -> list[WebhookOut]:
    rows = (await session.execute(select(WebhookEndpoint).order_by(WebhookEndpoint.active.desc(), WebhookEndpoint.id))).scalars()
    return [endpoint_out(e) for e in rows]


async def deactivate_endpoint(session: AsyncSession, endpoint_id: int) -> WebhookOut:
    endpoint = await session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise NotFound(f"webhook endpoint {endpoint_id} does not exist")
    await session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id).values(active=False))
    endpoint.active = False
    return endpoint_out(endpoint)


def delivery_status(message: OutboxMessage) -> str:
    if message.delivered_at is not None:
        return "delivered"
    if message.failed_at is not None:
        return "failed"
    return "pending"


async def delivery_log(session: AsyncSession, status: str | None = None, *, limit: int = 100) -> list[DeliveryOut]:
    """Newest deliveries first, each with every attempt (two queries: messages, then their attempts)."""
    if status is not None and status not in DELIVERY_STATUSES:
        raise InvalidInput.on("status", f"must be one of {', '.join(DELIVERY_STATUSES)}")
    query = select(OutboxMessage, WebhookEndpoint.name).join(WebhookEndpoint, WebhookEndpoint.id == OutboxMessage.endpoint_id)
    if status == "delivered":
        query = query.where(OutboxMessage.delivered_at.is_not(None))
    elif status == "failed":
        query = query.where(OutboxMessage.failed_at.is_not(None))
    elif status == "pending":
        query = query.where(OutboxMessage.delivered_at.is_(None), OutboxMessage.failed_at.is_(None))
    rows = (await session.execute(query.order_by(OutboxMessage.id.desc()).limit(limit))).all()
    ids = [m.id for m, _ in rows]
    attempts: dict[int, list[AttemptOut]] = {}
    if ids:
        found = await session.execute(select(DeliveryAttempt).where(DeliveryAttempt.outbox_id.in_(ids)).order_by(DeliveryAttempt.id))
        for a in found.scalars():
            attempts.setdefault(a.outbox_id, []).append(
                AttemptOut(at=a.at, status_code=a.status_code, error=a.error, duration_ms=a.duration_ms))
    return [
        DeliveryOut(
            id=m.id, endpoint_id=m.endpoint_id, endpoint_name=name, event_type=m.event_type, event_key=m.event_key,
            status=delivery_status(m), created_at=m.created_at, attempts=m.attempts,
            next_attempt_at=m.next_attempt_at if delivery_status(m) == "pending" else None,
            delivered_at=m.delivered_at, failed_at=m.failed_at, last_status=m.last_status, last_error=m.last_error,
            log=attempts.get(m.id, []),
        )
        for m, name in rows
    ]


class WebhookController(Controller):
    path = "/api/v1"
    tags = ["webhooks"]
    guards = [requires(*ADMIN)]

    @get("/webhooks")
    async def list_webhooks(self, db_session: AsyncSession) -> list[WebhookOut]:
        """Outbound endpoints (secrets are never shown again after creation)."""
        return await list_endpoints(db_session)

    @post("/webhooks", status_code=201)
    async def create_webhook(self, data: WebhookIn, db_session: AsyncSession, clock: Clock) -> WebhookCreated:
        """Register a receiver. The answer carries the HMAC secret once; keep it on the receiver's side
        to check `X-Aftersales-Signature: sha256=hex(HMAC(secret, "<X-Aftersales-Timestamp>.<body>"))`."""
        created = await create_endpoint(db_session, clock, data)
        await db_session.commit()
        return created

    @delete("/webhooks/{endpoint_id:int}", status_code=200)
    async def deactivate_webhook(self, endpoint_id: int, db_session: AsyncSession) -> WebhookOut:
        """Stop delivering to an endpoint (kept, inactive, so the delivery log still names it)."""
        out = await deactivate_endpoint(db_session, endpoint_id)
        await db_session.commit()
        return out

    @get("/deliveries")
    async def deliveries(
        self, db_session: AsyncSession, status: str | None = None,
        limit: int = Parameter(default=100, ge=1, le=500),
    ) -> list[DeliveryOut]:
        """The delivery log, newest first, with every attempt; filter by pending, delivered or failed."""
        return await delivery_log(db_session, status or None, limit=limit)


__all__ = ["WebhookController", "create_endpoint", "delivery_log", "list_endpoints", "deactivate_endpoint"]
