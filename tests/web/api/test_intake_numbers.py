"""Ticket numbers under intake: one per-day sequence without gaps from rejected requests, and
concurrent intakes never share a number (on PostgreSQL the number is taken in its own transaction)."""

from __future__ import annotations

import asyncio

from tests.factories import order_body, ticket_body


async def _order(client, tokens, external_id: str) -> None:
    r = await client.put(f"/api/v1/orders/{external_id}", json=order_body(), headers=tokens["integration"])
    assert r.status_code in (200, 201), r.text


async def test_numbers_follow_the_day_sequence_and_rejected_intakes_take_none(client, tokens):
    for external_id in ("O-N1", "O-N2"):
        await _order(client, tokens, external_id)
    first = await client.post("/api/v1/tickets", json=ticket_body(order_external_id="O-N1"), headers=tokens["integration"])
    assert first.status_code == 201, first.text
    bad = await client.post("/api/v1/tickets", json=ticket_body(order_external_id="O-N2", requested_amount="999999.00"),
                            headers=tokens["integration"])
    assert bad.status_code == 422 and "requested_amount" in bad.text
    second = await client.post("/api/v1/tickets", json=ticket_body(order_external_id="O-N2"), headers=tokens["integration"])
    assert second.status_code == 201, second.text
    a, b = first.json()["number"], second.json()["number"]
    assert a[:12] == b[:12]  # AS-YYYYMMDD-
    assert int(b[12:]) == int(a[12:]) + 1


async def test_concurrent_intakes_get_distinct_numbers(client, tokens):
    ids = [f"O-C{i}" for i in range(8)]
    for external_id in ids:
        await _order(client, tokens, external_id)
    answers = await asyncio.gather(*[
        client.post("/api/v1/tickets", json=ticket_body(order_external_id=external_id), headers=tokens["integration"])
        for external_id in ids
    ])
    assert [r.status_code for r in answers] == [201] * len(ids), [r.text for r in answers if r.status_code != 201]
    numbers = [r.json()["number"] for r in answers]
    assert len(set(numbers)) == len(numbers)
