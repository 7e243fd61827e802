"""The demo data set: every resting status present, timelines consistent with the tickets,
closure times sane, the same seed and anchor giving the same data, and usable API tokens."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

from sqlalchemy import func, select

from aftersales.auth.models import ApiToken
from aftersales.auth.tokens import hash_token
from aftersales.demo import DEFECT_PRODUCTS, generate_demo
from aftersales.models import Order, OrderItem, Ticket, TicketItem, TimelineEvent
from aftersales.tickets.workflow import STATUSES

ANCHOR = datetime(2026, 11, 25, 4, 0, tzinfo=timezone.utc)
ROLES = ("integration", "agent", "supervisor", "product", "admin")


async def _tickets(engine) -> list[tuple]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(Ticket.number, Ticket.status, Ticket.kind, Ticket.reason_code, Ticket.requested_amount).order_by(Ticket.number)
        )
        return [tuple(r) for r in rows]


async def test_demo_data_set_is_complete_consistent_and_reproducible(settings, engine):
    summary = await generate_demo(settings, orders=300, seed=7, progress=False, now=ANCHOR)

    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Order)) == 300
        tickets = (await conn.execute(select(Ticket))).all()
        by_status = Counter(t.status for t in tickets)
        # Every status a ticket can rest in is there; "requested" is only ever passed through.
        assert set(by_status) == set(STATUSES) - {"requested"}, by_status
        assert 0.2 <= len(tickets) / 300 <= 0.4
        assert by_status["closed"] > len(tickets) / 2  # most of 60 days of tickets are done

        events = (await conn.execute(select(TimelineEvent).order_by(TimelineEvent.ticket_id, TimelineEvent.id))).all()
        timeline: dict[int, list] = {}
        for e in events:
            timeline.setdefault(e.ticket_id, []).append(e)
        for t in tickets:
            moves = [e for e in timeline[t.id] if e.to_status is not None]
            assert moves[0].action == "open" and moves[0].at == t.requested_at
            assert moves[-1].to_status == t.status, (t.number, [(e.action, e.to_status) for e in moves])
            times = [e.at for e in timeline[t.id]]
            assert times == sorted(times) and times[-1] <= ANCHOR, t.number
            if t.status == "closed":
                assert t.closed_at is not None and t.requested_at <= t.closed_at <= ANCHOR, t.number
            if t.status == "cancelled":
                assert t.cancelled_at is not None and t.cancelled_at >= t.requested_at

        # The planted signal: the two problem products fail far more often than the rest.
        per_product = (
            await conn.execute(
                select(OrderItem.product_id, func.count(Ticket.id), func.count(OrderItem.id))
                .outerjoin(TicketItem, TicketItem.order_item_id == OrderItem.id)
                .outerjoin(Ticket, (Ticket.id == TicketItem.ticket_id) & (Ticket.reason_code == "quality.defect"))
                .group_by(OrderItem.product_id)
            )
        ).all()
        counts = {True: [0, 0], False: [0, 0]}
        for product_id, defects, items in per_product:
            counts[product_id in DEFECT_PRODUCTS][0] += defects
            counts[product_id in DEFECT_PRODUCTS][1] += items
        rate = {planted: d / n for planted, (d, n) in counts.items()}
        assert rate[True] > 3 * rate[False], rate

        stored = {(row.role, row.token_hash) for row in (await conn.execute(select(ApiToken))).all()}
    lines = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in summary if line.startswith("token ")}
    assert set(lines) == {f"token {role}" for role in ROLES}
    for role in ROLES:
        value = lines[f"token {role}"]
        assert value.startswith("aft_") and (role, hash_token(value)) in stored
    assert any(line.startswith(f"tickets: {len(tickets)}") for line in summary)
    assert any(line.strip() == f"closed: {by_status['closed']}" for line in summary)

    first = await _tickets(engine)
    # Same seed, same anchor, after a reset: the very same tickets, numbers and statuses.
    await generate_demo(settings, orders=300, seed=7, progress=False, now=ANCHOR)
    assert await _tickets(engine) == first
    # Without a reset the orders already there are left alone: nothing is duplicated.
    await generate_demo(settings, orders=300, seed=7, reset=False, progress=False, now=ANCHOR)
    assert await _tickets(engine) == first
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Order)) == 300
