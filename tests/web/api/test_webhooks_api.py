"""Webhook endpoints and the delivery log through the admin API, with a real HTTP receiver.

What it protects (issue 5, "what it must show"): an admin registers a receiver and gets its secret
once; an SLA warning raced for by two workers is written once and becomes one outbox delivery;
delivered by two racing senders to a receiver that answers 500 twice, it is retried after the
backoff (not before) and accepted on the third try — exactly one accepted delivery per warning,
each request signed with HMAC-SHA256 over "<timestamp>.<body>" with the endpoint's secret; the
delivery log lists the three attempts; a deactivated endpoint gets nothing; only admins may do any
of this.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from aftersales.db import create_sessionmaker
from aftersales.notifications.models import OutboxMessage
from aftersales.notifications.service import deliver_due, sign
from aftersales.sla import service as sla_service
from aftersales.sla.models import SlaEvent
from aftersales.sla.tasks import fire_due_alerts
from aftersales.tickets import policy_service
from tests.factories import order_body, ticket_body


@pytest.fixture(autouse=True)
def fresh_caches():
    policy_service._parsed.clear()
    sla_service._policies.clear()


@dataclass
class Receiver:
    """A tiny HTTP/1.1 server on 127.0.0.1: answers 500 to the first `fail` requests, then 200."""

    fail: int = 2
    requests: list[dict] = field(default_factory=list)
    server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/hook"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        status = 500 if len(self.requests) < self.fail else 200
        self.requests.append({"method": method, "path": path, "headers": headers, "body": body, "status": status})
        text = b"boom" if status == 500 else b"ok"
        reason = b"Internal Server Error" if status == 500 else b"OK"
        writer.write(b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (status, reason, len(text), text))
        await writer.drain()
        writer.close()

    @property
    def accepted(self) -> list[dict]:
        return [r for r in self.requests if r["status"] == 200]


@pytest.fixture()
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    r.server = await asyncio.start_server(r.handle, "127.0.0.1", 0)
    yield r
    r.server.close()
    await r.server.wait_closed()


async def _open_ticket(client, tokens, clock) -> dict:
    feed = tokens["integration"]
    assert (await client.put("/api/v1/orders/O-1", json=order_body(), headers=feed)).status_code == 201
    response = await client.post("/api/v1/tickets", json=ticket_body(requested_at=clock.now().isoformat()), headers=feed)
    assert response.status_code == 201, response.text
    ticket = response.json()
    assert ticket["status"] == "pending_review"  # a person must answer within 2 h
    return ticket


async def _race_alerts(engine, clock) -> int:
    first, second = await asyncio.gather(fire_due_alerts(create_sessionmaker(engine), clock),
                                         fire_due_alerts(create_sessionmaker(engine), clock))
    return first + second


async def _race_delivery(engine, clock, http: httpx.AsyncClient) -> int:
    first, second = await asyncio.gather(deliver_due(create_sessionmaker(engine), clock, client=http),
                                         deliver_due(create_sessionmaker(engine), clock, client=http))
    return first + second


async def _count(engine, model, *where) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(model).where(*where))).scalar_one()


async def test_warning_delivered_once_signed_after_two_failures(client, tokens, engine, clock, receiver):
    admin = tokens["admin"]
    response = await client.post("/api/v1/webhooks", json={"name": "值班群", "url": receiver.url, "format": "json",
                                                           "events": ["sla.at_risk", "sla.breach"]}, headers=admin)
    assert response.status_code == 201, response.text
    endpoint = response.json()
    secret = endpoint["secret"]
    assert len(secret) >= 32 and endpoint["active"] is True
    listed = (await client.get("/api/v1/webhooks", headers=admin)).json()
    assert [e["id"] for e in listed] == [endpoint["id"]] and "secret" not in listed[0]  # shown once only

    ticket = await _open_ticket(client, tokens, clock)
    start = clock.now()
    clock.set(start + timedelta(minutes=90) - timedelta(seconds=1))
    assert await _race_alerts(engine, clock) == 0  # not a second early
    clock.set(start + timedelta(minutes=90, seconds=20))  # 75 % of the 2-hour first-response target
    assert await _race_alerts(engine, clock) == 1  # two workers, one warning
    assert await _count(engine, SlaEvent, SlaEvent.event == "at_risk") == 1
    assert await _count(engine, OutboxMessage) == 1

    async with httpx.AsyncClient() as http:
        sent_at = [clock.now()]
        assert await _race_delivery(engine, clock, http) == 0  # 500
        assert len(receiver.requests) == 1
        clock.advance(seconds=9)
        assert await _race_delivery(engine, clock, http) == 0  # backoff (10 s) not over: nothing sent
        assert len(receiver.requests) == 1
        clock.advance(seconds=1)
        sent_at.append(clock.now())
        assert await _race_delivery(engine, clock, http) == 0  # 500 again, next try in 20 s
        assert len(receiver.requests) == 2
        clock.advance(seconds=20)
        sent_at.append(clock.now())
        assert await _race_delivery(engine, clock, http) == 1  # accepted on the third try
        clock.advance(minutes=5)
        assert await _race_delivery(engine, clock, http) == 0  # and never again
    assert [r["status"] for r in receiver.requests] == [500, 500, 200]
    assert len(receiver.accepted) == 1

    for request, at in zip(receiver.requests, sent_at):
        h = request["headers"]
        assert request["method"] == "POST" and request["path"] == "/hook"
        assert h["x-aftersales-timestamp"] == str(int(at.timestamp()))
        assert h["x-aftersales-signature"] == sign(secret, h["x-aftersales-timestamp"], request["body"])
        assert h["x-aftersales-signature"] != sign("not-the-secret", h["x-aftersales-timestamp"], request["body"])
        payload = json.loads(request["body"])
        assert payload["type"] == "sla.at_risk" and payload["ticket_id"] == ticket["id"] and payload["threshold"] == 0.75
        assert payload["metric"] == "first_response"
    assert len({r["headers"]["x-aftersales-delivery"] for r in receiver.requests}) == 1  # one delivery, three attempts

    log = (await client.get("/api/v1/deliveries", params={"status": "delivered"}, headers=admin)).json()
    assert len(log) == 1
    assert log[0]["attempts"] == 3 and [a["status_code"] for a in log[0]["log"]] == [500, 500, 200]
    assert log[0]["log"][0]["error"] == "boom" and log[0]["endpoint_name"] == "值班群" and log[0]["event_type"] == "sla.at_risk"
    assert (await client.get("/api/v1/deliveries", params={"status": "pending"}, headers=admin)).json() == []
    assert (await client.get("/api/v1/deliveries", params={"status": "failed"}, headers=admin)).json() == []

    # The next warning (90 %) is a delivery of its own, accepted at once.
    clock.set(start + timedelta(minutes=108, seconds=20))
    assert await _race_alerts(engine, clock) == 1
    async with httpx.AsyncClient() as http:
        assert await _race_delivery(engine, clock, http) == 1
    assert len(receiver.accepted) == 2
    assert [json.loads(r["body"])["threshold"] for r in receiver.accepted] == [0.75, 0.9]

    # Deactivated: the breach is recorded, but nothing more is sent there.
    response = await client.delete(f"/api/v1/webhooks/{endpoint['id']}", headers=admin)
    assert response.status_code == 200 and response.json()["active"] is False
    clock.set(start + timedelta(hours=2, seconds=20))
    assert await _race_alerts(engine, clock) == 1
    assert await _count(engine, SlaEvent, SlaEvent.event == "breach") == 1
    assert await _count(engine, OutboxMessage) == 2


async def test_only_admins_manage_webhooks(client, tokens):
    body = {"name": "x", "url": "https://example.com/hook", "format": "feishu", "events": []}
    for role in ("integration", "agent", "supervisor", "product"):
        headers = tokens[role]
        assert (await client.get("/api/v1/webhooks", headers=headers)).status_code == 403, role
        assert (await client.post("/api/v1/webhooks", json=body, headers=headers)).status_code == 403, role
        assert (await client.delete("/api/v1/webhooks/1", headers=headers)).status_code == 403, role
        assert (await client.get("/api/v1/deliveries", headers=headers)).status_code == 403, role
    assert (await client.get("/api/v1/webhooks")).status_code == 401


async def test_bad_webhooks_are_refused_naming_the_field(client, tokens):
    admin = tokens["admin"]
    good = {"name": "robot", "url": "https://example.com/hook", "format": "dingtalk", "events": ["sla.breach"]}
    for change, field_name in (({"format": "telegram"}, "format"), ({"url": "ftp://example.com"}, "url"),
                               ({"name": ""}, "name"), ({"events": ["Not An Event"]}, "events")):
        response = await client.post("/api/v1/webhooks", json={**good, **change}, headers=admin)
        assert 400 <= response.status_code < 500 and response.status_code != 403, response.text
        assert field_name in response.json()["errors"][0]["field"], response.text
    assert (await client.get("/api/v1/deliveries", params={"status": "lost"}, headers=admin)).status_code == 422
    assert (await client.delete("/api/v1/webhooks/999", headers=admin)).status_code == 404
    assert (await client.get("/api/v1/webhooks", headers=admin)).json() == []
