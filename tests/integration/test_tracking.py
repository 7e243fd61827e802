"""Tracking ingestion against a real database: normalization, dedupe, disorder, snapshots,
orphans, and the ticket moves a delivery causes."""

from __future__ import annotations

from datetime import timedelta, timezone, datetime

import msgspec
import pytest
from sqlalchemy import func, select, text

from aftersales.auth.principal import Principal
from aftersales.errors import InvalidInput
from aftersales.models import Order, Shipment, Ticket, TimelineEvent, TrackingEvent
from aftersales.orders.schemas import OrderIn, ShipmentIn, TrackingEventIn
from aftersales.orders.service import OrderService, fold_events
from aftersales.tickets.schemas import ActionIn, TicketIn
from aftersales.tickets.service import TicketService
from tests.conftest import START
from tests.factories import k100_event, order_body, ticket_body

AGENT = Principal(kind="user", id=1, name="alice", role="agent")
FEED = Principal(kind="token", id=2, name="shop", role="integration")
LIMIT = 1000


def events(raw: list[dict]) -> list[TrackingEventIn]:
    return msgspec.convert(raw, list[TrackingEventIn])


async def make_order(session, clock, external_id: str = "O-1") -> Order:
    order, _ = await OrderService(session, clock).upsert_order(external_id, msgspec.convert(order_body(), OrderIn))
    return order


async def register(session, clock, tracking: str, *, direction: str = "outbound", carrier: str = "SF",
                   ticket_id: int | None = None, order: str = "O-1") -> Shipment:
    body = ShipmentIn(order_external_id=order, direction=direction, carrier=carrier, tracking_number=tracking, ticket_id=ticket_id)  # type: ignore[arg-type]
    shipment, _ = await OrderService(session, clock).register_shipment(body)
    return shipment


async def ingest(session, clock, raw: list[dict]) -> dict:
    tickets = TicketService(session, clock)
    result = await OrderService(session, clock).ingest_tracking(events(raw), limit=LIMIT, on_delivered=tickets.apply_carrier_delivery)
    await session.commit()
    return result


async def stored_events(session, tracking: str) -> list[TrackingEvent]:
    rows = (await session.execute(
        select(TrackingEvent).where(TrackingEvent.tracking_number == tracking).order_by(TrackingEvent.occurred_at)
    )).scalars().all()
    return list(rows)


async def count(session, model) -> int:
    return await session.scalar(select(func.count()).select_from(model))


async def fresh_shipment(session, shipment_id: int) -> Shipment:
    return await session.get(Shipment, shipment_id, populate_existing=True)


T0 = START - timedelta(days=4)


def journey(tracking: str, carrier: str = "SF") -> list[dict]:
    """Four Kuaidi100 scans in time order: picked up, in transit, out for delivery, signed."""
    return [k100_event(tracking, s, T0 + timedelta(hours=h), carrier=carrier) for s, h in ((1, 0), (0, 10), (5, 30), (3, 34))]


async def test_three_providers_are_normalized_and_raw_code_kept(session, clock):
    await make_order(session, clock)
    raw = [
        k100_event("K1", 14, T0),
        {"carrier": "UPS", "tracking_number": "A1", "source": "aftership", "status": "OutForDelivery", "occurred_at": T0.isoformat()},
        {"carrier": "UPS", "tracking_number": "A2", "source": "aftership", "status": "AttemptFail", "occurred_at": T0.isoformat()},
        {"carrier": "DHL", "tracking_number": "T1", "source": "17track", "status": 40, "occurred_at": T0.isoformat()},
        {"carrier": "DHL", "tracking_number": "T2", "source": "17track", "status": "InTransit", "occurred_at": T0.isoformat()},
    ]
    result = await ingest(session, clock, raw)
    assert result["stored"] == 5 and result["duplicates"] == 0
    got = {
        e.tracking_number: (e.source, e.raw_status, e.status)
        for e in (await session.execute(select(TrackingEvent))).scalars()
    }
    assert got == {
        "K1": ("kuaidi100", "14", "delivery_failed"),  # 拒签: refused by the customer
        "A1": ("aftership", "OutForDelivery", "out_for_delivery"),
        "A2": ("aftership", "AttemptFail", "delivery_failed"),
        "T1": ("17track", "40", "delivered"),
        "T2": ("17track", "InTransit", "in_transit"),
    }


async def test_repeated_events_are_stored_once(session, clock):
    await make_order(session, clock)
    s = await register(session, clock, "SF1")
    await session.commit()
    first = journey("SF1")
    # A batch that repeats itself, then the same batch again, then one event with another offset
    # (same instant written in +08:00) and an event id repeated with a different description.
    r1 = await ingest(session, clock, first + first[:2])
    assert (r1["received"], r1["stored"], r1["duplicates"]) == (6, 4, 2)
    r2 = await ingest(session, clock, first)
    assert (r2["stored"], r2["duplicates"]) == (0, 4)
    shifted = dict(first[1], occurred_at=(T0 + timedelta(hours=10)).astimezone(timezone(timedelta(hours=8))).isoformat())
    r3 = await ingest(session, clock, [shifted])
    assert r3["stored"] == 0, "the same instant in another offset is the same event"
    with_id = k100_event("SF1", 0, T0 + timedelta(hours=12), event_id="ev-77", desc="a")
    again = k100_event("SF1", 0, T0 + timedelta(hours=12), event_id="ev-77", desc="b")
    assert (await ingest(session, clock, [with_id]))["stored"] == 1
    assert (await ingest(session, clock, [again]))["stored"] == 0
    assert await count(session, TrackingEvent) == 5
    assert (await fresh_shipment(session, s.id)).status == "delivered"


async def test_out_of_order_arrival_gives_same_status(session, clock):
    await make_order(session, clock)
    a = await register(session, clock, "SFA")
    b = await register(session, clock, "SFB")
    await session.commit()
    await ingest(session, clock, journey("SFA"))
    for ev in reversed(journey("SFB")):  # delivered first, pick-up scan last, one per push
        await ingest(session, clock, [ev])
    sa, sb = await fresh_shipment(session, a.id), await fresh_shipment(session, b.id)
    assert sa.status == sb.status == "delivered"
    assert sa.raw_status == sb.raw_status == "3"
    assert sa.last_event_at == sb.last_event_at == T0 + timedelta(hours=34)
    assert sa.delivered_at == sb.delivered_at == T0 + timedelta(hours=34)


async def test_latest_by_occurred_at_wins_not_latest_received(session, clock):
    await make_order(session, clock)
    s = await register(session, clock, "SFX")
    await session.commit()
    await ingest(session, clock, [k100_event("SFX", 5, T0 + timedelta(hours=30))])
    assert (await fresh_shipment(session, s.id)).status == "out_for_delivery"
    # A late-arriving older scan must not roll the status back.
    await ingest(session, clock, [k100_event("SFX", 0, T0 + timedelta(hours=2))])
    shipment = await fresh_shipment(session, s.id)
    assert shipment.status == "out_for_delivery" and shipment.raw_status == "5"


async def test_full_snapshot_repush_stores_only_the_new_event(session, clock):
    await make_order(session, clock)
    s = await register(session, clock, "SFS")
    await session.commit()
    all_four = journey("SFS")
    await ingest(session, clock, all_four[:3])
    result = await ingest(session, clock, all_four)  # the carrier re-sends its whole history
    assert (result["received"], result["stored"], result["duplicates"]) == (4, 1, 3)
    assert len(await stored_events(session, "SFS")) == 4
    assert (await fresh_shipment(session, s.id)).status == "delivered"


async def test_events_before_registration_are_kept_and_linked(session, clock):
    order = await make_order(session, clock)
    await session.commit()
    result = await ingest(session, clock, journey("SFO"))
    assert result["unmatched"] == 4 and result["stored"] == 4 and result["shipments_updated"] == 0
    assert all(e.shipment_id is None for e in await stored_events(session, "SFO"))
    s = await register(session, clock, "SFO")
    await session.commit()
    linked = await stored_events(session, "SFO")
    assert len(linked) == 4 and all(e.shipment_id == s.id for e in linked)
    shipment = await fresh_shipment(session, s.id)
    assert shipment.status == "delivered" and shipment.delivered_at == T0 + timedelta(hours=34)
    # The outbound parcel was signed for, so the order knows its delivery time too.
    refreshed = await session.get(Order, order.id, populate_existing=True)
    assert refreshed.delivered_at == T0 + timedelta(hours=34)


async def test_orphan_events_of_same_number_other_carrier_are_not_adopted(session, clock):
    await make_order(session, clock)
    await session.commit()
    await ingest(session, clock, journey("N1", carrier="YTO"))
    s = await register(session, clock, "N1", carrier="SF")
    await session.commit()
    assert (await fresh_shipment(session, s.id)).status is None
    assert all(e.shipment_id is None for e in await stored_events(session, "N1"))


async def test_outbound_delivered_sets_order_delivered_at(session, clock):
    order = await make_order(session, clock)
    await register(session, clock, "SF100")
    await session.commit()
    await ingest(session, clock, journey("SF100")[:3])
    assert (await session.get(Order, order.id, populate_existing=True)).delivered_at is None
    await ingest(session, clock, journey("SF100")[3:])
    assert (await session.get(Order, order.id, populate_existing=True)).delivered_at == T0 + timedelta(hours=34)


async def open_ticket(session, clock, kind: str) -> Ticket:
    body = ticket_body(kind=kind, requested_amount="89.00")
    ticket, _ = await TicketService(session, clock).open_ticket(msgspec.convert(body, TicketIn), FEED)
    await session.commit()
    return ticket


async def act(session, clock, ticket: Ticket, action: str, **fields) -> Ticket:
    fresh = await TicketService(session, clock).get(ticket.id)
    result = await TicketService(session, clock).act(ticket.id, action, ActionIn(version=fresh.version, **fields), AGENT)
    await session.commit()
    return result


async def timeline(session, ticket_id: int) -> list[TimelineEvent]:
    query = select(TimelineEvent).where(TimelineEvent.ticket_id == ticket_id).order_by(TimelineEvent.id)
    return list((await session.execute(query)).scalars())


@pytest.mark.parametrize("kind", ["reship", "exchange"])
async def test_replacement_delivered_closes_ticket(session, clock, kind):
    await make_order(session, clock)
    await session.commit()
    ticket = await open_ticket(session, clock, kind)
    ticket = await act(session, clock, ticket, "approve")
    if kind == "exchange":
        ticket = await act(session, clock, ticket, "add_return_tracking", carrier="YTO", tracking_number="RET1")
        await ingest(session, clock, [k100_event("RET1", 3, START + timedelta(hours=3), carrier="YTO")])
        ticket = await TicketService(session, clock).get(ticket.id)
        assert ticket.status == "return_received"
        ticket = await act(session, clock, ticket, "record_inspection", passed=True)
    assert ticket.status == "approved"
    ticket = await act(session, clock, ticket, "ship_replacement", carrier="ZTO", tracking_number="REP1")
    assert ticket.status == "replacement_shipped"
    clock.advance(hours=20)
    result = await ingest(session, clock, [
        k100_event("REP1", 0, START + timedelta(hours=10), carrier="ZTO"),
        k100_event("REP1", 3, START + timedelta(hours=19), carrier="ZTO"),
    ])
    assert result["tickets_moved"] == [ticket.number]
    ticket = await TicketService(session, clock).get(ticket.id)
    assert ticket.status == "closed" and ticket.closed_at == clock.now()
    last = (await timeline(session, ticket.id))[-1]
    delivered_event = next(e for e in await stored_events(session, "REP1") if e.status == "delivered")
    assert (last.action, last.actor, last.from_status, last.to_status) == ("replacement_delivered", "carrier:ZTO", "replacement_shipped", "closed")
    assert last.data["tracking_event_id"] == delivered_event.id
    # A repeat of the delivery push moves nothing and writes nothing.
    before = len(await timeline(session, ticket.id))
    again = await ingest(session, clock, [k100_event("REP1", 3, START + timedelta(hours=19), carrier="ZTO")])
    assert again["tickets_moved"] == [] and len(await timeline(session, ticket.id)) == before


async def test_return_delivered_for_cancelled_ticket_moves_nothing(session, clock):
    await make_order(session, clock)
    await session.commit()
    ticket = await open_ticket(session, clock, "return_refund")
    ticket = await act(session, clock, ticket, "approve")
    ticket = await act(session, clock, ticket, "add_return_tracking", carrier="YTO", tracking_number="RET9")
    ticket = await act(session, clock, ticket, "cancel")
    version = ticket.version
    result = await ingest(session, clock, [k100_event("RET9", 3, START + timedelta(hours=2), carrier="YTO")])
    assert result["tickets_moved"] == [] and result["stored"] == 1
    ticket = await TicketService(session, clock).get(ticket.id)
    assert ticket.status == "cancelled" and ticket.version == version and ticket.return_received_at is None
    last = (await timeline(session, ticket.id))[-1]
    assert last.actor == "carrier:YTO" and last.from_status == last.to_status == "cancelled"


async def test_return_delivered_before_tracking_was_given(session, clock):
    """The carrier reported the parcel signed for before the agent entered its number."""
    await make_order(session, clock)
    await session.commit()
    ticket = await open_ticket(session, clock, "return_refund")
    ticket = await act(session, clock, ticket, "approve")
    await ingest(session, clock, [k100_event("RET5", 3, START + timedelta(hours=2), carrier="YTO")])
    ticket = await act(session, clock, ticket, "add_return_tracking", carrier="YTO", tracking_number="RET5")
    ticket = await TicketService(session, clock).get(ticket.id)
    assert ticket.status == "return_received"
    actions = [e.action for e in await timeline(session, ticket.id)]
    assert actions[-2:] == ["add_return_tracking", "return_delivered"]


async def _counts(session) -> tuple[int, int]:
    out = (await count(session, TrackingEvent), await count(session, Shipment))
    await session.rollback()
    return out


async def test_batch_over_limit_is_refused_whole(client, tokens, session, clock):
    too_many = [k100_event("BIG", 0, T0 + timedelta(minutes=i)) for i in range(1001)]
    before = await _counts(session)
    response = await client.post("/api/v1/tracking-events", json={"events": too_many}, headers=tokens["integration"])
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in response.json()["errors"]] == ["events"]
    assert await _counts(session) == before
    # Exactly 1000 is fine.
    ok = await client.post("/api/v1/tracking-events", json={"events": too_many[:1000]}, headers=tokens["integration"])
    assert ok.status_code == 200 and ok.json()["stored"] == 1000


async def test_unknown_raw_status_names_the_event_and_stores_nothing(client, tokens, session, clock):
    batch = [
        k100_event("BAD1", 0, T0),
        {"carrier": "UPS", "tracking_number": "BAD2", "source": "aftership", "status": "Teleported", "occurred_at": T0.isoformat()},
        k100_event("BAD1", 3, T0 + timedelta(hours=5)),
    ]
    before = await _counts(session)
    response = await client.post("/api/v1/tracking-events", json={"events": batch}, headers=tokens["integration"])
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["events[1].status"]
    assert await _counts(session) == before


def test_normalize_batch_rejects_empty_and_oversized(clock):
    service = OrderService(None, clock)  # type: ignore[arg-type]  (validation touches no database)
    with pytest.raises(InvalidInput) as info:
        service.normalize_batch([], LIMIT)
    assert info.value.errors[0].field == "events"
    with pytest.raises(InvalidInput) as info:
        service.normalize_batch(events([k100_event("X", 0, T0)] * 3), 2)
    assert info.value.errors[0].field == "events"


async def test_same_timestamp_scans_give_same_status_in_any_arrival_order(session, clock):
    await make_order(session, clock)
    a = await register(session, clock, "TIE-A")
    b = await register(session, clock, "TIE-B")
    await session.commit()
    same = T0 + timedelta(hours=30)  # carriers often report to the minute: both scans share it
    await ingest(session, clock, [k100_event("TIE-A", 5, same), k100_event("TIE-A", 3, same)])
    await ingest(session, clock, [k100_event("TIE-B", 3, same)])
    await ingest(session, clock, [k100_event("TIE-B", 5, same)])
    sa, sb = await fresh_shipment(session, a.id), await fresh_shipment(session, b.id)
    assert sa.delivered_at == sb.delivered_at == same
    assert sa.status == sb.status == "delivered"


async def test_a_batch_folding_parcels_read_before_another_batch_never_moves_them_back(session, clock):
    """On SQLite a batch reads its parcels before it takes the write lock (bench F30): another
    batch may move them on meanwhile. Its UPDATEs compare with the rows as they are then, and
    a delivery someone else recorded first is not this batch's to report."""
    order = await make_order(session, clock)
    s = await register(session, clock, "STALE")
    await session.commit()
    await ingest(session, clock, journey("STALE")[:2])
    service = OrderService(session, clock)
    stale = await service._shipments_for({("SF", "STALE")})  # as this batch read it: in transit, not delivered
    await session.commit()
    signed = T0 + timedelta(hours=34)
    await ingest(session, clock, [k100_event("STALE", 3, signed)])  # another batch: delivered
    # This batch: an out-for-delivery scan before the sign-for, and a second delivery scan after it.
    late = [{**row, "shipment_id": s.id} for row in service.normalize_batch(events([
        k100_event("STALE", 5, T0 + timedelta(hours=30)), k100_event("STALE", 3, signed + timedelta(hours=1))]), LIMIT)]
    newly_delivered = await service._move_parcels(fold_events({s.id: stale[("SF", "STALE")]}, {s.id: late}))
    await session.commit()
    shipment = await fresh_shipment(session, s.id)
    assert newly_delivered == set()  # the other batch delivered it
    assert (shipment.status, shipment.raw_status) == ("delivered", "3")
    assert shipment.last_event_at == signed + timedelta(hours=1)  # later than what was there: moved on
    assert shipment.delivered_at == signed  # the earliest sign-for stays
    assert (await session.get(Order, order.id, populate_existing=True)).delivered_at == signed


async def test_a_stale_read_never_rolls_a_parcel_back_to_an_older_scan(session, clock):
    await make_order(session, clock)
    s = await register(session, clock, "STALE2")
    await session.commit()
    service = OrderService(session, clock)
    stale = await service._shipments_for({("SF", "STALE2")})  # no scan yet
    await session.commit()
    await ingest(session, clock, [k100_event("STALE2", 5, T0 + timedelta(hours=30))])
    older = [{**row, "shipment_id": s.id} for row in service.normalize_batch(events([k100_event("STALE2", 0, T0 + timedelta(hours=10))]), LIMIT)]
    await service._move_parcels(fold_events({s.id: stale[("SF", "STALE2")]}, {s.id: older}))
    await session.commit()
    shipment = await fresh_shipment(session, s.id)
    assert (shipment.status, shipment.raw_status, shipment.last_event_at) == ("out_for_delivery", "5", T0 + timedelta(hours=30))


def aftership_event(tracking: str, tag: str, at: datetime) -> dict:
    return {"carrier": "SF", "tracking_number": tracking, "source": "aftership", "status": tag,
            "occurred_at": at.isoformat(), "location": "杭州", "description": tag}


async def test_same_second_raw_statuses_compare_by_code_point_whatever_the_collation(session, clock):
    """AfterShip's "InTransit" and "exception" are both progress 1; at the same second the fold
    keeps the greater raw status by code point ("exception"). The conditional UPDATE must agree
    even where the column sorts by a language's rules, which put "exception" first."""
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("SQLite compares text by code point (BINARY) unless told otherwise")
    for table in ("shipments", "tracking_events"):
        await session.execute(text(f'ALTER TABLE {table} ALTER COLUMN raw_status TYPE VARCHAR(64) COLLATE "en-x-icu"'))
    await session.commit()
    try:
        await make_order(session, clock)
        a = await register(session, clock, "COLL-A")
        b = await register(session, clock, "COLL-B")
        await session.commit()
        same = T0 + timedelta(hours=12)
        await ingest(session, clock, [aftership_event("COLL-A", "InTransit", same)])
        await ingest(session, clock, [aftership_event("COLL-A", "exception", same)])
        await ingest(session, clock, [aftership_event("COLL-B", "exception", same)])
        await ingest(session, clock, [aftership_event("COLL-B", "InTransit", same)])
        # Both scans before the parcel is registered: registration picks the latest from the stored events.
        await ingest(session, clock, [aftership_event("COLL-C", "exception", same), aftership_event("COLL-C", "InTransit", same)])
        c = await register(session, clock, "COLL-C")
        await session.commit()
        shipments = [await fresh_shipment(session, s.id) for s in (a, b, c)]
        assert [s.raw_status for s in shipments] == ["exception"] * 3
        assert [s.status for s in shipments] == ["exception"] * 3
    finally:
        await session.rollback()
        for table in ("shipments", "tracking_events"):
            await session.execute(text(f'ALTER TABLE {table} ALTER COLUMN raw_status TYPE VARCHAR(64) COLLATE "default"'))
        await session.commit()
