"""The SLA board and report figures cache (aftersales.sla.controllers.FiguresCache).

What it protects: within the cache lifetime (AFTERSALES_SLA_REPORT_CACHE_SECONDS) the board and the
report answer the figures read the first time — and say when they were read (`generated_at`) —
even though tickets changed meanwhile; a different filter or period is read on its own; at the end
of the lifetime the figures are read again and show the change. With several requests waiting on
an expired entry the database is read once; a lifetime of 0 reads every time.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import msgspec
import pytest

from aftersales.clock import FrozenClock
from aftersales.sla import service as sla_service
from aftersales.sla.controllers import FiguresCache
from aftersales.tickets import policy_service
from tests.conftest import START
from tests.factories import order_body, ticket_body

LIFETIME = 15


@pytest.fixture()
def settings(settings):
    return msgspec.structs.replace(settings, sla_report_cache_seconds=LIFETIME)


@pytest.fixture(autouse=True)
def fresh_caches():
    policy_service._parsed.clear()
    sla_service._policies.clear()


async def _complaint(client, tokens, clock, n: int) -> dict[str, Any]:
    """An open complaint in a manual queue, requested now."""
    order = f"O-{n}"
    response = await client.put(f"/api/v1/orders/{order}", json=order_body(customer=f"C-{n}"), headers=tokens["integration"])
    assert response.status_code in (200, 201), response.text
    body = ticket_body(order, kind="complaint", reason_code="price.promo_dispute", items=[], requested_at=clock.now().isoformat())
    response = await client.post("/api/v1/tickets", json=body, headers=tokens["integration"])
    assert response.status_code == 201, response.text
    return response.json()


async def _close(client, tokens, ticket: dict[str, Any]) -> None:
    current = (await client.get(f"/api/v1/tickets/{ticket['id']}", headers=tokens["supervisor"])).json()
    response = await client.post(f"/api/v1/tickets/{ticket['id']}/actions/close", json={"version": current["version"]},
                                 headers=tokens["supervisor"])
    assert response.status_code == 200, response.text


async def _get(client, tokens, url: str, **params: str) -> dict[str, Any]:
    response = await client.get(url, params=params, headers=tokens["supervisor"])
    assert response.status_code == 200, response.text
    return response.json()


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_figures_are_served_within_the_lifetime_and_read_again_after(client, tokens, clock):
    first_ticket = await _complaint(client, tokens, clock, 1)
    board = await _get(client, tokens, "/api/v1/sla/board")
    report = await _get(client, tokens, "/api/v1/reports/sla", group="queue")
    read_at = clock.now()
    assert (board["open_total"], report["total"]["closed"]) == (1, 0)
    assert _at(board["generated_at"]) == _at(board["now"]) == read_at and _at(report["generated_at"]) == read_at

    # Tickets change: one more opens, the first one closes.
    clock.advance(seconds=LIFETIME - 1)
    await _complaint(client, tokens, clock, 2)
    await _complaint(client, tokens, clock, 3)
    await _close(client, tokens, first_ticket)
    assert await _get(client, tokens, "/api/v1/sla/board") == board
    assert await _get(client, tokens, "/api/v1/reports/sla", group="queue") == report
    # Another filter or grouping is another entry: read now, and it sees the change.
    filtered = await _get(client, tokens, "/api/v1/sla/board", kind="complaint")
    assert filtered["open_total"] == 2 and _at(filtered["generated_at"]) == clock.now()
    by_kind = await _get(client, tokens, "/api/v1/reports/sla", group="kind")
    assert by_kind["total"]["closed"] == 1

    clock.advance(seconds=1)  # the lifetime is over
    board = await _get(client, tokens, "/api/v1/sla/board")
    report = await _get(client, tokens, "/api/v1/reports/sla", group="queue")
    assert (board["open_total"], report["total"]["closed"]) == (2, 1)
    assert _at(board["generated_at"]) == _at(report["generated_at"]) == read_at + timedelta(seconds=LIFETIME)
    # The CSV is the same cached report.
    csv_text = (await client.get("/api/v1/reports/sla.csv", params={"group": "queue"}, headers=tokens["supervisor"])).content
    assert csv_text.decode("utf-8-sig").splitlines()[-1].split(",")[2] == "1"


async def test_a_clock_set_back_reads_again(client, tokens, clock):
    await _complaint(client, tokens, clock, 1)
    assert (await _get(client, tokens, "/api/v1/sla/board"))["open_total"] == 1
    await _complaint(client, tokens, clock, 2)
    clock.set(START - timedelta(seconds=1))
    board = await _get(client, tokens, "/api/v1/sla/board")
    assert board["open_total"] == 2 and _at(board["generated_at"]) == clock.now()


# -- the cache itself ---------------------------------------------------------------------------------


async def test_requests_waiting_on_an_expired_entry_read_once():
    clock = FrozenClock(START)
    cache = FiguresCache(lifetime=10)
    reads: list[datetime] = []

    async def read(now: datetime) -> str:
        reads.append(now)
        await asyncio.sleep(0.01)  # the database at work: the others arrive meanwhile
        return f"figures of {now:%H:%M:%S}"

    answers = await asyncio.gather(*(cache.get("board", clock, read) for _ in range(16)))
    assert len(reads) == 1 and set(answers) == {"figures of 02:00:00"}
    clock.advance(seconds=10)
    answers = await asyncio.gather(*(cache.get("board", clock, read) for _ in range(16)))
    assert len(reads) == 2 and set(answers) == {"figures of 02:00:10"}


async def test_a_failed_read_is_not_stored_and_the_next_request_reads_again():
    clock = FrozenClock(START)
    cache = FiguresCache(lifetime=10)
    calls = 0

    async def read(now: datetime) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database went away")
        return calls

    with pytest.raises(RuntimeError):
        await cache.get("report", clock, read)
    assert await cache.get("report", clock, read) == 2
    assert await cache.get("report", clock, read) == 2


async def test_no_lifetime_reads_every_time_and_size_is_bounded():
    clock = FrozenClock(START)
    calls = 0

    async def read(now: datetime) -> int:
        nonlocal calls
        calls += 1
        return calls

    off = FiguresCache(lifetime=0)
    assert [await off.get("k", clock, read) for _ in range(3)] == [1, 2, 3]
    small = FiguresCache(lifetime=60, size=2)
    for key in ("a", "b", "c"):
        await small.get(key, clock, read)
    assert await small.get("c", clock, read) == 6  # kept
    assert await small.get("a", clock, read) == 7  # the oldest was dropped: read again
