"""The ticket listing sorted by SLA due time (`sort=sla_due_at` / `-sla_due_at`).

What it protects: tickets come in due-time order with ties broken by id, tickets without a due time
(clock paused, or no SLA) come after all the others in both directions, keyset pages add up to
exactly the filtered set (no duplicate, no gap, also across the boundary into the tickets without a
due time), and a cursor only continues the sort it was handed out for.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from aftersales.models import Order, Ticket
from tests.conftest import START
from tests.web.api.test_api_tickets import put_order

# (queue, status, hours until the SLA falls due; None = no due time). Ties on purpose: 1 h, 3 h, 5 h.
SPECS = [
    ("general", "pending_review", 5), ("general", "pending_review", 1), ("risk", "pending_review", 3),
    ("general", "awaiting_return", None), ("general", "pending_review", 1), ("general", "pending_review", -2),
    ("general", "pending_review", None), ("risk", "approved", 8), ("general", "pending_review", 3),
    ("general", "pending_review", 1), ("general", "closed", None), ("general", "pending_review", 5),
    ("general", "pending_review", None), ("general", "approved", 4), ("general", "pending_review", 3),
]


async def insert_tickets(engine, specs: list[tuple[str, str, float | None]]) -> list[dict[str, Any]]:
    """Tickets straight into the table (the listing only reads rows): id, number, queue, status, due."""
    made = []
    async with engine.begin() as conn:
        order_id, customer_id = (await conn.execute(select(Order.id, Order.customer_id))).one()
        for i, (queue, status, hours) in enumerate(specs):
            due = START + timedelta(hours=hours) if hours is not None else None
            at = START - timedelta(hours=1, minutes=i)
            number = f"AS-T-{i:04d}"
            result = await conn.execute(Ticket.__table__.insert().values(
                number=number, order_id=order_id, customer_id=customer_id, kind="return_refund",
                reason_code="quality.defect", status=status, requested_amount=1, refunded_amount=0, description="",
                evidence_urls=[], queue=queue, priority=0, sla_due_at=due, requested_at=at, received_at=at,
                updated_at=at, version=1,
            ))
            made.append({"id": result.inserted_primary_key[0], "number": number, "queue": queue, "status": status, "due": due})
    return made


def expected_order(tickets: list[dict[str, Any]], descending: bool) -> list[int]:
    with_due = sorted((t for t in tickets if t["due"] is not None), key=lambda t: (t["due"], t["id"]), reverse=descending)
    without = sorted((t["id"] for t in tickets if t["due"] is None), reverse=descending)
    return [t["id"] for t in with_due] + without


async def all_pages(client, tokens, params: dict[str, Any], limit: int = 3) -> list[int]:
    ids: list[int] = []
    cursor = None
    for _ in range(50):
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        r = await client.get("/api/v1/tickets", params=query, headers=tokens["agent"])
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) <= limit
        ids += [t["id"] for t in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids
    raise AssertionError("pagination does not terminate")


@pytest.fixture()
async def tickets(client, tokens, engine) -> list[dict[str, Any]]:
    await put_order(client, tokens)
    return await insert_tickets(engine, SPECS)


@pytest.mark.parametrize("sort", ["sla_due_at", "-sla_due_at"])
@pytest.mark.parametrize(
    "params",
    [{}, {"status": "pending_review", "queue": "general"}, {"queue": "general"}, {"status": "pending_review,approved,awaiting_return"}],
    ids=["all", "queue+status", "queue", "open-statuses"],
)
@pytest.mark.parametrize("limit", [1, 3, 200])
async def test_sla_sort_pages_through_every_ticket_once(client, tokens, tickets, sort, params, limit):
    def keep(t: dict[str, Any]) -> bool:
        statuses = params.get("status", "").split(",") if params.get("status") else None
        return (statuses is None or t["status"] in statuses) and t["queue"] == params.get("queue", t["queue"])

    wanted = [t for t in tickets if keep(t)]
    ids = await all_pages(client, tokens, {**params, "sort": sort}, limit=limit)
    assert len(ids) == len(set(ids)), "a ticket was listed twice"
    assert ids == expected_order(wanted, descending=sort.startswith("-"))


async def test_tickets_without_a_due_time_come_last_in_both_directions(client, tokens, tickets):
    without = {t["id"] for t in tickets if t["due"] is None}
    for sort in ("sla_due_at", "-sla_due_at"):
        r = await client.get("/api/v1/tickets", params={"sort": sort, "limit": 200}, headers=tokens["agent"])
        items = r.json()["items"]
        assert len(items) == len(tickets)
        assert {t["id"] for t in items[-len(without):]} == without, sort
    # Ascending starts with the overdue ticket (due 2 h ago), then the three due in 1 h, by id.
    r = await client.get("/api/v1/tickets", params={"sort": "sla_due_at", "limit": 4}, headers=tokens["agent"])
    overdue = [t["id"] for t in tickets if t["due"] == START - timedelta(hours=2)]
    due_in_1h = sorted(t["id"] for t in tickets if t["due"] == START + timedelta(hours=1))
    assert [t["id"] for t in r.json()["items"]] == overdue + due_in_1h


@pytest.mark.parametrize(
    ("made_for", "used_with"),
    [("sla_due_at", "-requested_at"), ("-requested_at", "sla_due_at"), ("sla_due_at", "-sla_due_at"), ("requested_at", "-requested_at")],
)
async def test_cursor_only_continues_its_own_sort(client, tokens, tickets, made_for, used_with):
    r = await client.get("/api/v1/tickets", params={"sort": made_for, "limit": 2}, headers=tokens["agent"])
    cursor = r.json()["next_cursor"]
    assert cursor
    r = await client.get("/api/v1/tickets", params={"sort": used_with, "cursor": cursor}, headers=tokens["agent"])
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["cursor"]
    assert made_for in r.json()["detail"]


async def test_cursor_inside_the_tickets_without_due_time_continues_there(client, tokens, tickets):
    """A page boundary among the tickets without a due time: its cursor carries no time."""
    ordered = expected_order(tickets, descending=False)
    with_due = sum(1 for t in tickets if t["due"] is not None)
    r = await client.get("/api/v1/tickets", params={"sort": "sla_due_at", "limit": with_due + 1}, headers=tokens["agent"])
    assert [t["id"] for t in r.json()["items"]] == ordered[: with_due + 1]
    r = await client.get("/api/v1/tickets", params={"sort": "sla_due_at", "cursor": r.json()["next_cursor"]}, headers=tokens["agent"])
    assert [t["id"] for t in r.json()["items"]] == ordered[with_due + 1:]


@pytest.mark.parametrize("sort", ["sla", "due", "+sla_due_at", "sla_due_at,id"])
async def test_unknown_sort_is_named(client, tokens, sort):
    r = await client.get("/api/v1/tickets", params={"sort": sort}, headers=tokens["agent"])
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["sort"]
    assert "sla_due_at" in r.json()["detail"]


async def test_sorted_listing_matches_the_database_order(client, tokens, tickets, engine):
    """The order read back from the table and sorted here (an oracle independent of SPECS)."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(Ticket.id, Ticket.sla_due_at).where(Ticket.status == "pending_review"))).all()
    with_due = [i for _, i in sorted((due, i) for i, due in rows if due is not None)]
    expected = with_due + sorted(i for i, due in rows if due is None)
    assert await all_pages(client, tokens, {"sort": "sla_due_at", "status": "pending_review"}, limit=4) == expected
