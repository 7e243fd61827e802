"""The feedback loop against a real database (SQLite, or PostgreSQL when
AFTERSALES_TEST_DATABASE_URL is set).

What it protects:
- routing defaults: a ticket reaches exactly the teams of its reason; repeated size trouble on one
  product reaches selection only from the third ticket in 30 days; refining re-routes unread items;
- each team's digest lists only the items routed to it, with counts equal to an independent count
  from the planned tickets, and is generated exactly once even by two concurrent writers (one row,
  one outbox message per subscribed endpoint);
- the return / exchange / refund figures equal an independent count over the planned orders and
  tickets, for every grouping;
- detection on planted data: a product with a real excess is flagged, 100 noise products at the
  baseline are not;
- closing the loop: an action's before / after figures, verify only when the rate fell, reopen.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from sqlalchemy import func, insert, select

from aftersales.auth.principal import Principal
from aftersales.db import create_sessionmaker
from aftersales.errors import Conflict, Forbidden, InvalidInput
from aftersales.feedback.actions import FeedbackActions
from aftersales.feedback.analytics import problem_products, return_rates
from aftersales.feedback.charts import return_rate_trend, weekly_return_rates
from aftersales.feedback.digests import CLAIM_CATEGORIES, generate_digest
from aftersales.feedback.models import Digest, FeedbackItem, FeedbackRecord, RoutingRule
from aftersales.feedback.routing import DEFAULT_ROUTES, TEAMS
from aftersales.feedback.service import FeedbackService
from aftersales.notifications.models import OutboxMessage, WebhookEndpoint
from aftersales.orders.models import Customer, LiveSession, Order, OrderItem
from aftersales.orders.schemas import OrderIn
from aftersales.orders.service import OrderService
from aftersales.tickets.models import Ticket, TicketItem
from aftersales.tickets.schemas import ActionIn, TicketIn
from aftersales.tickets.service import TicketService
from tests.conftest import START

ZONE = ZoneInfo("Asia/Shanghai")
FEED = Principal(kind="token", id=1, name="shop", role="integration")
SUPERVISOR = Principal(kind="user", id=2, name="sue", role="supervisor")
QC_MEMBER = Principal(kind="user", id=3, name="quinn", role="product", teams=("qc",))
SCRIPT_MEMBER = Principal(kind="user", id=4, name="sam", role="product", teams=("script",))


def item(sku: str, product: str, *, qty: int = 1, price: str = "50.00", category: str = "服饰", name: str | None = None) -> dict[str, Any]:
    return {"sku": sku, "product_id": product, "product_name": name or f"商品{product}", "category": category,
            "quantity": qty, "unit_price": price}


async def put_order(session, clock, ext: str, items: list[dict[str, Any]], *, placed_at: datetime, live: str | None = "LS-1",
                    host: str = "小雅") -> None:
    total = sum(Decimal(i["unit_price"]) * i["quantity"] for i in items)
    body: dict[str, Any] = {"customer": {"external_id": f"C-{ext}"}, "placed_at": placed_at.isoformat(), "paid_amount": f"{total:.2f}",
                            "items": items}
    if live:
        body["live_session"] = {"external_id": live, "host": host, "title": f"{host}的专场", "started_at": (placed_at - timedelta(hours=1)).isoformat()}
    await OrderService(session, clock).upsert_order(ext, msgspec.convert(body, OrderIn))
    await session.commit()


async def open_ticket(session, clock, order: str, reason: str, claims: list[tuple[str, int]], *, kind: str = "return_refund",
                      amount: str = "1.00", description: str = "", requested_at: datetime | None = None) -> Ticket:
    body = {"order_external_id": order, "kind": kind, "reason_code": reason, "requested_amount": amount,
            "items": [{"sku": s, "quantity": q} for s, q in claims], "description": description,
            "requested_at": (requested_at or clock.now()).isoformat()}
    ticket, _ = await TicketService(session, clock, ZONE).open_ticket(msgspec.convert(body, TicketIn), FEED)
    await session.commit()
    return ticket


async def routed(session, ticket_id: int) -> dict[str, FeedbackItem]:
    rows = (await session.execute(select(FeedbackItem).where(FeedbackItem.ticket_id == ticket_id))).scalars()
    return {i.team: i for i in rows}


@pytest.fixture(autouse=True)
def fresh_process_caches() -> None:
    """Intake policies and SLA policies are cached per process by id / version, and every test's
    emptied database hands out the same ids again: forget what an earlier test cached."""
    from aftersales.sla import service as sla_service
    from aftersales.tickets import policy_service

    getattr(sla_service, "_policies", {}).clear()
    getattr(policy_service, "_parsed", {}).clear()


@pytest.fixture()
async def defaults(session, clock):
    await FeedbackService(session, clock).ensure_defaults()
    await session.commit()


# -- routing ---------------------------------------------------------------------------------------


async def test_default_rules_are_the_design_guide_routes(session, defaults):
    rules = list((await session.execute(select(RoutingRule))).scalars())
    one_to_one = {(r.category, r.team) for r in rules if r.min_repeat == 1}
    assert one_to_one == {(c, t) for c, teams in DEFAULT_ROUTES.items() for t in teams}
    assert [(r.category, r.team, r.min_repeat) for r in rules if r.min_repeat > 1] == [("fit.size", "selection", 3)]


async def test_a_defect_reaches_qc_and_selection_with_its_context(session, clock, defaults):
    await put_order(session, clock, "O-1", [item("SKU-A", "P-A")], placed_at=START - timedelta(days=3))
    ticket = await open_ticket(session, clock, "O-1", "quality.defect", [("SKU-A", 1)], description="用了两天就坏了")
    items = await routed(session, ticket.id)
    assert set(items) == {"qc", "selection"}
    qc = items["qc"]
    assert (qc.category, qc.product_id, qc.sku, qc.host, qc.quote, qc.status) == ("quality.defect", "P-A", "SKU-A", "小雅", "用了两天就坏了", "new")
    assert qc.stream_offset_seconds == 3600
    assert "quality.defect → qc" in qc.routed_because


async def test_size_trouble_reaches_selection_from_the_third_ticket_in_30_days(session, clock, defaults):
    # An old one (40 days ago) does not count toward the repeat.
    clock.set(START - timedelta(days=40))
    await put_order(session, clock, "O-0", [item("SKU-T", "P-T")], placed_at=START - timedelta(days=42))
    old = await open_ticket(session, clock, "O-0", "fit.size", [("SKU-T", 1)], description="尺码偏小")
    clock.set(START)
    teams = [set(await routed(session, old.id))]
    for n in range(1, 4):
        await put_order(session, clock, f"O-{n}", [item("SKU-T", "P-T"), item("SKU-U", "P-U")], placed_at=START - timedelta(days=5))
        clock.advance(hours=1)
        ticket = await open_ticket(session, clock, f"O-{n}", "fit.size", [("SKU-T", 1)], description="偏小一码")
        teams.append(set(await routed(session, ticket.id)))
    assert teams == [{"script"}, {"script"}, {"script"}, {"script", "selection"}]
    # Another product's first size ticket goes to script only.
    other = await open_ticket(session, clock, "O-3", "fit.size", [("SKU-U", 1)])
    assert set(await routed(session, other.id)) == {"script"}


async def test_refine_reroutes_only_unread_items(session, clock, defaults):
    await put_order(session, clock, "O-1", [item("SKU-A", "P-A")], placed_at=START - timedelta(days=3))
    ticket = await open_ticket(session, clock, "O-1", "quality.defect", [("SKU-A", 1)], description="主播说是纯棉的收到是化纤")
    record = await session.get(FeedbackRecord, ticket.id)
    assert record.suggested_category == "description.host_claim_mismatch"
    qc_item = (await routed(session, ticket.id))["qc"]
    assert await FeedbackActions(session, clock, ZONE).acknowledge([qc_item.id], QC_MEMBER) == 1
    await session.commit()

    ticket_id = ticket.id
    await FeedbackService(session, clock).refine(ticket_id, "description.host_claim_mismatch", "user:agent1")
    await session.commit()
    session.expire_all()
    items = await routed(session, ticket_id)
    # The acknowledged QC item stays as it was read; the unread selection item is gone; script gets it.
    assert set(items) == {"qc", "script"}
    assert (items["qc"].status, items["qc"].category) == ("acknowledged", "quality.defect")
    assert (items["script"].status, items["script"].category) == ("new", "description.host_claim_mismatch")
    record = await session.get(FeedbackRecord, ticket_id)
    assert (record.category, record.source, record.corrected, record.confirmed_by) == (
        "description.host_claim_mismatch", "agent", False, "user:agent1")
    with pytest.raises(InvalidInput):
        await FeedbackService(session, clock).refine(ticket_id, "no.such", "user:agent1")


# -- digests -----------------------------------------------------------------------------------------

DAY = (START.astimezone(ZONE)).date()  # the local day of START


def at_local(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, 0, tzinfo=ZONE).astimezone(timezone.utc)


PLAN = [
    # (local day offset, hour, reason, product)
    (-1, 10, "quality.defect", "P-A"), (-1, 11, "description.host_claim_mismatch", "P-B"),
    (0, 9, "quality.defect", "P-A"), (0, 10, "quality.defect", "P-A"), (0, 11, "quality.damaged", "P-B"),
    (0, 12, "description.host_claim_mismatch", "P-B"), (0, 13, "description.host_claim_mismatch", "P-C"),
    (0, 14, "description.not_as_described", "P-C"), (0, 15, "preference.style", "P-A"), (0, 16, "price.promo_dispute", "P-B"),
    (0, 17, "logistics.delay", "P-C"), (0, 18, "fulfillment.missing_item", "P-A"), (0, 23, "quality.counterfeit_suspected", "P-C"),
    (1, 1, "quality.defect", "P-A"),  # the next day: not in the digest
]


async def _plant_digest_data(session, clock) -> None:
    for n, (offset, hour, reason, product) in enumerate(PLAN):
        when = at_local(DAY + timedelta(days=offset), hour)
        clock.set(when)
        await put_order(session, clock, f"O-{n}", [item(f"SKU-{product}", product)], placed_at=when - timedelta(days=2),
                        live=f"LS-{n % 3}", host=("小雅", "阿强", "琳琳")[n % 3])
        await open_ticket(session, clock, f"O-{n}", reason, [(f"SKU-{product}", 1)], description=f"第{n}个问题 {reason}")


async def test_each_team_digest_lists_only_its_items_with_independent_counts(session, clock, defaults):
    await _plant_digest_data(session, clock)
    clock.set(at_local(DAY + timedelta(days=2), 8))
    expected: dict[str, Counter[str]] = defaultdict(Counter)
    previous: dict[str, Counter[str]] = defaultdict(Counter)
    for offset, _, reason, _ in PLAN:
        for team in DEFAULT_ROUTES.get(reason, ()):
            if offset == 0:
                expected[team][reason] += 1
            elif offset == -1:
                previous[team][reason] += 1
    for team in TEAMS:
        digest, created = await generate_digest(session, clock, team, "day", DAY, ZONE)
        await session.commit()
        assert created
        content = digest.content
        got = {c["category"]: c["count"] for c in content["categories"]}
        assert got == dict(expected[team]), team
        assert content["items"] == sum(expected[team].values())
        for c in content["categories"]:
            assert c["previous"] == previous[team][c["category"]]
            assert c["change"] == c["count"] - c["previous"]
        # Only items routed here: every category shown routes to this team.
        assert all(team in DEFAULT_ROUTES[c] for c in got)
        assert all(team in DEFAULT_ROUTES[q["category"]] for q in content["quotes"])
    script = (await session.scalar(select(Digest).where(Digest.team == "script"))).content
    claims = [n for n, (offset, _, reason, _) in enumerate(PLAN) if offset == 0 and reason in CLAIM_CATEGORIES]
    assert {s["external_id"]: s["count"] for s in script["sessions"]} == dict(Counter(f"LS-{n % 3}" for n in claims))
    qc = (await session.scalar(select(Digest).where(Digest.team == "qc"))).content
    assert {p["product_id"]: p["count"] for p in qc["products"]} == {"P-A": 3, "P-B": 1, "P-C": 1}


async def test_digest_is_generated_exactly_once_by_concurrent_writers(engine, session, clock, defaults):
    now = clock.now()
    session.add_all([
        WebhookEndpoint(name="wecom", url="https://example.invalid/a", format="wecom", secret="s1", events=["digest.ready"], active=True, created_at=now),
        WebhookEndpoint(name="all", url="https://example.invalid/b", format="json", secret="s2", events=[], active=True, created_at=now),
        WebhookEndpoint(name="sla only", url="https://example.invalid/c", format="json", secret="s3", events=["sla.breach"], active=True, created_at=now),
    ])
    await session.commit()
    await _plant_digest_data(session, clock)
    clock.set(at_local(DAY + timedelta(days=2), 8))
    factory = create_sessionmaker(engine)

    async def generate() -> tuple[int, bool]:
        async with factory() as s:
            digest, created = await generate_digest(s, clock, "qc", "day", DAY, ZONE)
            await s.commit()
            return digest.id, created

    results = await asyncio.gather(generate(), generate())
    assert len({digest_id for digest_id, _ in results}) == 1
    assert sorted(created for _, created in results) == [False, True]
    assert await session.scalar(select(func.count()).select_from(Digest)) == 1
    messages = list((await session.execute(select(OutboxMessage).where(OutboxMessage.event_type == "digest.ready"))).scalars())
    assert len(messages) == 2 and len({m.endpoint_id for m in messages}) == 2
    assert {m.event_key for m in messages} == {f"qc:day:{DAY}"}
    await session.commit()  # SQLite: every transaction holds the write lock, even a read
    # A later call (the worker's next pass) changes nothing.
    _, again = await generate()
    assert again is False
    assert await session.scalar(select(func.count()).select_from(OutboxMessage)) == 2


# -- analytics against an independent count -----------------------------------------------------------

ORDERS = [
    # ext, session, host, day offset, [(sku, product, category, qty, price)]
    ("A1", "LS-1", "小雅", -20, [("S-TEE-M", "P-TEE", "服饰", 2, "59.50"), ("S-LIP", "P-LIP", "美妆", 1, "89.00")]),
    ("A2", "LS-1", "小雅", -20, [("S-TEE-L", "P-TEE", "服饰", 1, "59.50")]),
    ("A3", "LS-2", "小雅", -10, [("S-TEE-M", "P-TEE", "服饰", 3, "55.00"), ("S-CUP", "P-CUP", "母婴", 1, "129.00")]),
    ("A4", "LS-3", "阿强", -8, [("S-LIP", "P-LIP", "美妆", 2, "85.00")]),
    ("A5", "LS-3", "阿强", -8, [("S-CUP", "P-CUP", "母婴", 2, "129.00"), ("S-TEE-L", "P-TEE", "服饰", 1, "59.50")]),
    ("A6", None, None, -5, [("S-LIP", "P-LIP", "美妆", 1, "89.00")]),
    ("A7", "LS-3", "阿强", -3, [("S-CUP", "P-CUP", "母婴", 1, "129.00")]),
    ("OLD", "LS-0", "小雅", -200, [("S-LIP", "P-LIP", "美妆", 5, "89.00")]),  # outside the period
]
TICKETS = [
    # order, kind, reason, [(sku, qty)], cancelled
    ("A1", "return_refund", "quality.defect", [("S-TEE-M", 1)], False),
    ("A1", "exchange", "fit.size", [("S-LIP", 1)], False),
    ("A3", "return_refund", "fit.size", [("S-TEE-M", 2), ("S-CUP", 1)], False),
    ("A4", "refund_only", "quality.damaged", [("S-LIP", 2)], False),
    ("A5", "return_refund", "quality.defect", [("S-CUP", 1)], True),  # cancelled: not a return
    ("A5", "exchange", "fit.size", [("S-TEE-L", 1)], False),
    ("A6", "return_refund", "preference.changed_mind", [("S-LIP", 1)], False),
    ("OLD", "return_refund", "quality.defect", [("S-LIP", 5)], False),
]


async def _plant_sales(session, clock) -> None:
    for ext, live, host, offset, lines in ORDERS:
        await put_order(session, clock, ext, [item(s, p, category=c, qty=q, price=pr) for s, p, c, q, pr in lines],
                        placed_at=START + timedelta(days=offset), live=live, host=host or "")
    for order, kind, reason, claims, cancelled in TICKETS:
        offset = next(o for e, _, _, o, _ in ORDERS if e == order)
        ticket = await open_ticket(session, clock, order, reason, claims, kind=kind, requested_at=START + timedelta(days=offset + 2))
        if cancelled:
            current = await TicketService(session, clock, ZONE).get(ticket.id)
            await TicketService(session, clock, ZONE).act(ticket.id, "cancel", ActionIn(version=current.version), FEED)
            await session.commit()


def _expected(group: str, reason: str | None = None) -> dict[tuple[Any, ...], dict[str, Any]]:
    def key(ext: str, sku: str, product: str, category: str) -> tuple[Any, ...]:
        _, live, host, _, _ = next(o for o in ORDERS if o[0] == ext)
        return {"category": (category,), "product": (product, category), "sku": (sku, category), "session": (live,),
                "host": (host,)}[group]

    out: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(lambda: {"units": 0, "amount": Decimal(0), "returned": 0, "exchanged": 0,
                                                                      "returned_amount": Decimal(0), "tickets": set()})
    prices: dict[tuple[str, str], Decimal] = {}
    for ext, _, _, offset, lines in ORDERS:
        if offset < -90:
            continue
        for sku, product, category, qty, price in lines:
            e = out[key(ext, sku, product, category)]
            e["units"] += qty
            e["amount"] += Decimal(price) * qty
            prices[(ext, sku)] = Decimal(price)
    for n, (order, kind, why, claims, cancelled) in enumerate(TICKETS):
        if (order, claims[0][0]) not in prices:
            continue
        for sku, qty in claims:
            line = next(ln for o in ORDERS if o[0] == order for ln in o[4] if ln[0] == sku)
            e = out[key(order, sku, line[1], line[2])]
            e["tickets"].add(n)
            if cancelled or (reason and why != reason):
                continue
            if kind in ("return_refund", "refund_only"):
                e["returned"] += qty
                e["returned_amount"] += prices[(order, sku)] * qty
            elif kind == "exchange":
                e["exchanged"] += qty
    return out


@pytest.mark.parametrize("group", ["category", "product", "sku", "session", "host"])
async def test_return_rates_equal_an_independent_count(session, clock, defaults, group):
    await _plant_sales(session, clock)
    start, end = START - timedelta(days=90), START + timedelta(days=1)
    for reason in (None, "fit.size"):
        rows = await return_rates(session, start, end, group, reason=reason)
        expected = _expected(group, reason)
        width = {"category": 1, "product": 2, "sku": 1, "session": 1, "host": 1}[group]
        got = {tuple(r["key"][:width]) if group != "sku" else (r["key"][0], r["key"][2]): r for r in rows}
        if group == "sku":
            expected_keys = set(expected)
        else:
            expected_keys = {k[:width] for k in expected}
        assert set(got) == expected_keys, (group, reason)
        for k, e in expected.items():
            r = got[k[:width] if group != "sku" else k]
            assert r["units"] == e["units"], (group, k)
            assert Decimal(r["amount"]) == e["amount"], (group, k)
            assert r["returned_units"] == e["returned"], (group, k, reason)
            assert r["exchanged_units"] == e["exchanged"], (group, k, reason)
            assert Decimal(r["returned_amount"]) == e["returned_amount"], (group, k, reason)
            assert r["return_rate"] == round(e["returned"] / e["units"], 4)
            assert r["refund_rate_amount"] == round(float(e["returned_amount"] / e["amount"]), 4)
            if reason is None:
                assert r["tickets"] == len(e["tickets"]), (group, k)


async def test_weekly_trend_equals_the_rates_of_each_week(session, clock, defaults):
    await _plant_sales(session, clock)
    start, end = START - timedelta(days=30), START + timedelta(days=1)
    for reason in (None, "fit.size"):
        points = await weekly_return_rates(session, start, end, reason=reason)
        assert len(points) == 5 and points[0].start == start and points[-1].end == end
        for p in points:
            rows = await return_rates(session, p.start, p.end, "category", reason=reason)
            assert (p.units, p.returned) == (sum(r["units"] for r in rows), sum(r["returned_units"] for r in rows))
        assert sum(p.units for p in points) == 15 and sum(p.returned for p in points) == (7 if reason is None else 3)
    svg = str(return_rate_trend(points, ZONE))
    assert svg.startswith("<svg") and svg.count("<circle") == sum(1 for p in points if p.units)


# -- detection on planted data --------------------------------------------------------------------------


async def _bulk_sales(session, products: dict[str, tuple[int, int]], category: str = "家居") -> None:
    """product -> (units sold, units returned for quality.defect), one unit per order, written in bulk."""
    now = START
    customer = Customer(external_id="C-BULK", name="", created_at=now)
    live = LiveSession(external_id="LS-BULK", host="大可", title="", started_at=now - timedelta(days=40))
    session.add_all([customer, live])
    await session.flush()
    orders, order_items, tickets, ticket_items = [], [], [], []
    n = 0
    for product, (units, returns) in products.items():
        for u in range(units):
            n += 1
            placed = now - timedelta(days=20, minutes=n)
            orders.append({"id": n, "external_id": f"B-{n}", "customer_id": customer.id, "live_session_id": live.id,
                           "paid_amount": Decimal("10.00"), "placed_at": placed, "created_at": placed, "updated_at": placed, "shop": "", "channel": ""})
            order_items.append({"id": n, "order_id": n, "sku": f"{product}-S", "product_id": product, "product_name": product,
                                "category": category, "quantity": 1, "unit_price": Decimal("10.00")})
            if u < returns:
                tickets.append({"id": n, "number": f"T-{n}", "order_id": n, "customer_id": customer.id, "kind": "return_refund",
                                "reason_code": "quality.defect", "status": "refunded", "requested_amount": Decimal("10.00"),
                                "refunded_amount": Decimal("10.00"), "description": "", "evidence_urls": [], "priority": 0,
                                "requested_at": placed + timedelta(days=3), "received_at": placed + timedelta(days=3),
                                "updated_at": placed + timedelta(days=3), "version": 1, "sla_alerts_fired": []})
                ticket_items.append({"id": n, "ticket_id": n, "order_item_id": n, "sku": f"{product}-S", "quantity": 1,
                                     "product_id": product, "reason_code": "quality.defect", "requested_at": placed + timedelta(days=3)})
    for model, rows in ((Order, orders), (OrderItem, order_items), (Ticket, tickets), (TicketItem, ticket_items)):
        for i in range(0, len(rows), 2000):
            await session.execute(insert(model), rows[i:i + 2000])
    await session.commit()


async def test_detection_flags_a_real_excess_and_not_noise(session, backend):
    rng = random.Random(20261120)
    baseline = 0.06
    products = {f"N-{i:03d}": (units := rng.randint(40, 120), sum(rng.random() < baseline for _ in range(units))) for i in range(100)}
    products["BAD"] = (150, sum(rng.random() < baseline * 3 for _ in range(150)))  # 3× the baseline
    await _bulk_sales(session, products)
    findings = await problem_products(session, START - timedelta(days=60), START + timedelta(days=1), reasons=[None, "quality.defect"])
    flagged = {(f["product_id"], f["reason"]) for f in findings if f["flagged"]}
    assert flagged == {("BAD", None), ("BAD", "quality.defect")}
    bad = next(f for f in findings if f["flagged"])
    assert bad["units"] == 150 and bad["returns"] == products["BAD"][1]
    assert "p = " in bad["why"] and bad["p_value"] < bad["threshold"]
    # Bonferroni over every product × reason of the run with enough units (all 101 here, × 2 reasons).
    assert bad["threshold"] == pytest.approx(0.05 / (101 * 2))


# -- closing the loop -------------------------------------------------------------------------------------

ACTION_DAY = (START - timedelta(days=31)).astimezone(ZONE).date()


async def _sales_around_action(session, clock, product: str, before: tuple[int, int], after: tuple[int, int]) -> None:
    """`before` / `after`: (units, defect returns) of orders placed in the 30 days before / after ACTION_DAY."""
    pivot = datetime(ACTION_DAY.year, ACTION_DAY.month, ACTION_DAY.day, tzinfo=ZONE).astimezone(timezone.utc)
    for side, (units, returns) in (("b", before), ("a", after)):
        for n in range(units):
            placed = pivot + (timedelta(days=-25, hours=n) if side == "b" else timedelta(days=2, hours=n))
            ext = f"{product}-{side}{n}"
            clock.set(placed)
            await put_order(session, clock, ext, [item(f"{product}-S", product)], placed_at=placed)
            if n < returns:
                clock.set(placed + timedelta(days=2))
                await open_ticket(session, clock, ext, "quality.defect", [(f"{product}-S", 1)], description="坏了")
    clock.set(START)


async def test_action_before_after_figures_and_verify(session, clock, defaults):
    await _sales_around_action(session, clock, "P-FIX", before=(40, 8), after=(30, 2))
    service = FeedbackActions(session, clock, ZONE)
    with pytest.raises(Forbidden):
        await service.record_action(team="qc", product_id="P-FIX", reason="quality.defect", description="换了供应商",
                                    action_date=ACTION_DAY, principal=SCRIPT_MEMBER)
    action, moved = await service.record_action(team="qc", product_id="P-FIX", reason="quality.defect", description="换了供应商",
                                                action_date=ACTION_DAY, principal=QC_MEMBER)
    await session.commit()
    assert moved == 10
    statuses = Counter((i.team, i.status, i.action_id) for i in (await session.execute(select(FeedbackItem))).scalars())
    assert statuses == {("qc", "actioned", action.id): 10, ("selection", "new", None): 10}

    figures = await service.evaluate(action)
    assert figures["before"] == {"units": 40, "returned": 8, "rate": 0.2}
    assert figures["after"] == {"units": 30, "returned": 2, "rate": round(2 / 30, 4)}
    assert figures["suggestion"] == "verified"

    action_id = action.id
    decided, items = await service.decide(action_id, "verified", QC_MEMBER, note="降到 6.7 %")
    await session.commit()
    assert (decided.outcome, items) == ("verified", 10)
    assert decided.outcome_data["before"]["rate"] == 0.2 and decided.outcome_data["after"]["returned"] == 2
    assert decided.outcome_data["decided_by"] == "user:quinn" and decided.outcome_data["followed_suggestion"] is True
    session.expire_all()
    assert {i.status for i in (await session.execute(select(FeedbackItem).where(FeedbackItem.team == "qc"))).scalars()} == {"verified"}
    with pytest.raises(Conflict):
        await service.decide(action_id, "reopened", QC_MEMBER)


async def test_an_action_whose_rate_did_not_fall_is_reopened(session, clock, defaults):
    await _sales_around_action(session, clock, "P-NOPE", before=(30, 3), after=(30, 6))
    service = FeedbackActions(session, clock, ZONE)
    action, moved = await service.record_action(team="selection", product_id="P-NOPE", reason=None, description="换款",
                                                action_date=ACTION_DAY, principal=SUPERVISOR)
    await session.commit()
    assert moved == 9
    figures = await service.evaluate(action)
    assert (figures["before"]["rate"], figures["after"]["rate"], figures["suggestion"]) == (0.1, 0.2, "reopened")
    action_id = action.id
    with pytest.raises(Conflict):
        await service.decide(action_id, "verified", SUPERVISOR)
    await session.rollback()
    decided, items = await service.decide(action_id, "reopened", SUPERVISOR)
    await session.commit()
    assert (decided.outcome, items) == ("reopened", 9)
    reopened = [i.id for i in (await session.execute(select(FeedbackItem).where(FeedbackItem.status == "reopened"))).scalars()]
    assert len(reopened) == 9
    # Reopened items can be acknowledged again, and a new action picks them up.
    assert await service.acknowledge(reopened, SUPERVISOR) == 9
    await session.commit()
    second, moved = await service.record_action(team="selection", product_id="P-NOPE", reason=None, description="下架",
                                                action_date=START.astimezone(ZONE).date(), principal=SUPERVISOR)
    assert moved == 9 and second.id != action_id


async def test_actions_refuse_bad_input(session, clock, defaults):
    await put_order(session, clock, "O-1", [item("SKU-A", "P-A")], placed_at=START - timedelta(days=3))
    await open_ticket(session, clock, "O-1", "quality.defect", [("SKU-A", 1)])
    service = FeedbackActions(session, clock, ZONE)
    today = START.astimezone(ZONE).date()
    for kwargs in ({"description": " "}, {"action_date": today + timedelta(days=1)}, {"product_id": "P-ZZZ"}, {"reason": "bogus"}):
        args = {"team": "qc", "product_id": "P-A", "reason": None, "description": "加检", "action_date": today, "principal": QC_MEMBER, **kwargs}
        with pytest.raises(InvalidInput):
            await service.record_action(**args)
    qc_items = [i.id for i in (await session.execute(select(FeedbackItem))).scalars()]
    with pytest.raises(Forbidden):  # one of them is a selection item
        await service.acknowledge(qc_items, QC_MEMBER)
    assert await session.scalar(select(func.count()).select_from(FeedbackItem).where(FeedbackItem.status != "new")) == 0
