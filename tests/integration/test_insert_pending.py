"""db.insert_pending writes a batch's collected rows as one executemany per table: each value
converted by its column's type, the rows in the order they were added (their ids are e.g. the
timeline's order) and the columns a row leaves out given their defaults, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import msgspec
from sqlalchemy import select

from aftersales.db import add_row, collecting_rows, create_sessionmaker, insert_pending
from aftersales.orders.schemas import OrderIn
from aftersales.orders.service import OrderService
from aftersales.tickets.models import Ticket, TimelineEvent
from tests.conftest import START
from tests.factories import order_body


async def test_collected_rows_are_written_converted_in_order_with_their_defaults(engine, clock) -> None:
    sessionmaker = create_sessionmaker(engine)
    async with sessionmaker() as session:
        order, _ = await OrderService(session, clock).upsert_order("O-1", msgspec.convert(order_body(), OrderIn))
        await session.commit()
    requested = START - timedelta(hours=3)
    async with sessionmaker() as session:
        with collecting_rows(session):
            add_row(session, Ticket, id=7001, number="AS-X-1", external_id=None, order_id=order.id,
                    customer_id=order.customer_id, kind="return_refund", reason_code="quality.defect", status="requested",
                    requested_amount=Decimal("89.05"), refunded_amount=Decimal("0"), description="坏了 · broken",
                    evidence_urls=["https://img.example/1.jpg"], requested_at=requested, received_at=START,
                    updated_at=START, priority=2, version=1, queue="quality_review")
            # Rows with different columns, interleaved: the missing ones take the column's default,
            # and the rows keep the order they were added in (their ids are the timeline's order).
            add_row(session, TimelineEvent, ticket_id=7001, at=requested, actor="platform", action="open",
                    from_status=None, to_status="requested", note="first", data={"k": [1, "二"]})
            add_row(session, TimelineEvent, ticket_id=7001, at=requested, actor="system", action="route",
                    from_status="requested", to_status="pending_review")
            add_row(session, TimelineEvent, ticket_id=7001, at=START, actor="system", action="remark",
                    from_status=None, to_status=None, note="third", data={})
            await insert_pending(session, (Ticket, TimelineEvent))
        await session.commit()

    async with sessionmaker() as session:
        ticket = await session.get(Ticket, 7001)
        events = (await session.execute(select(TimelineEvent).where(TimelineEvent.ticket_id == 7001)
                                        .order_by(TimelineEvent.id))).scalars().all()
    assert ticket is not None
    assert ticket.requested_amount == Decimal("89.05") and ticket.refunded_amount == Decimal("0.00")
    assert ticket.requested_at == requested and ticket.requested_at.tzinfo is not None
    assert ticket.evidence_urls == ["https://img.example/1.jpg"]
    assert ticket.description == "坏了 · broken"
    assert ticket.resolution_breached is False  # left out: the column's default
    assert (ticket.queue, ticket.priority) == ("quality_review", 2)
    assert [e.action for e in events] == ["open", "route", "remark"]
    assert [e.note for e in events] == ["first", "", "third"]
    assert [e.data for e in events] == [{"k": [1, "二"]}, {}, {}]
    assert events[0].at == requested and events[2].at == START
