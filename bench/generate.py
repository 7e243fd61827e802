"""Bulk data generator: millions of tickets with their whole chain, fast and reproducible.

    python -m bench.generate --db sqlite+aiosqlite:///./bench/data/bench-1m.db --tickets 1000000
    python -m bench.generate --db postgresql+asyncpg://postgres@127.0.0.1/aftersales_bench --tickets 100000

It does not go through the HTTP API or the services (that would take hours at a million
tickets); it plans every row in memory from one `random.Random(seed)` and writes them with bulk
paths: `executemany` of an INSERT built from each model's `__table__` on SQLite, and COPY
(`asyncpg.copy_records_to_table`) on PostgreSQL. Secondary indexes are dropped during the load
and recreated (with their exact original DDL) at the end, then the database is ANALYZEd.

The chain is faithful to what the services would have written: every ticket's timeline follows
the transition table (`aftersales.tickets.workflow.transition` validates each path template at
start-up), state-entry timestamps and `version` match the timeline, shipments carry the status
of their latest event, tracking events have the dedupe key the ingestion computes, ticket numbers
are AS-YYYYMMDD-NNNNNN per Asia/Shanghai day of receipt and `ticket_number_counters` holds each
day's last number, so intake after the load continues the sequence. Values are encoded as
SQLAlchemy would store them (integer fen; naive UTC ISO strings on SQLite); `_check_encoding`
asserts this against the column types' own bind processors before anything is written.

Same seed + same --anchor => the same data set.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import os
import random
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import make_url

from aftersales import demo
from aftersales.feedback import classify
from aftersales.feedback.models import FeedbackItem, FeedbackRecord
from aftersales.feedback.routing import DEFAULT_ROUTES
from aftersales.feedback.service import EXTRA_DEFAULT_RULES, REPEAT_WINDOW, _because
from aftersales.feedback.taxonomy import is_quality_reason
from aftersales.models import (
    Customer,
    LiveSession,
    Order,
    OrderItem,
    Shipment,
    Ticket,
    TicketItem,
    TicketNumberCounter,
    TimelineEvent,
    TrackingEvent,
)
from aftersales.orders.service import _event_digest
from aftersales.sla.models import SlaEvent
from aftersales.sla.service import DEFAULT_PAUSE, DEFAULT_WARN
from aftersales.tickets import policy as policy_rules
from aftersales.tickets import workflow
from aftersales.tickets.facts import NO_REASON_EXCLUDED_CATEGORIES, no_reason_window_open
from aftersales.tickets.models import TicketDecision

SHANGHAI = ZoneInfo("Asia/Shanghai")
DAYS = 730
QUEUES = ("general", "quality_review", "high_value", "logistics", "risk", "complaints")
HIGH_VALUE_FEN = 100_000  # ¥1,000
N_AGENTS = 40
CHUNK_TICKETS = 5_000

# Load order respects foreign keys (COPY on PostgreSQL checks them).
TABLES = (Customer, LiveSession, Order, OrderItem, Ticket, TicketItem, TimelineEvent, Shipment, TrackingEvent, TicketNumberCounter,
          TicketDecision, FeedbackRecord, FeedbackItem, SlaEvent)

COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": ("id", "external_id", "name", "created_at"),
    "live_sessions": ("id", "external_id", "host", "title", "started_at", "ended_at"),
    "orders": ("id", "external_id", "shop", "channel", "customer_id", "live_session_id", "paid_amount", "placed_at",
               "paid_at", "delivered_at", "created_at", "updated_at"),
    "order_items": ("id", "order_id", "sku", "product_id", "product_name", "category", "quantity", "unit_price"),
    "tickets": ("id", "number", "external_id", "order_id", "customer_id", "kind", "reason_code", "status",
                "requested_amount", "refunded_amount", "description", "evidence_urls", "queue", "priority",
                "assignee_id", "requested_at", "received_at", "updated_at", "first_response_at", "approved_at",
                "rejected_at", "return_received_at", "refunded_at", "replacement_shipped_at", "closed_at",
                "cancelled_at", "version"),
    "ticket_items": ("id", "ticket_id", "order_item_id", "sku", "quantity"),
    "ticket_events": ("id", "ticket_id", "at", "actor", "action", "from_status", "to_status", "note", "data"),
    "shipments": ("id", "order_id", "ticket_id", "direction", "carrier", "tracking_number", "status", "raw_status",
                  "status_source", "last_event_at", "delivered_at", "created_at"),
    "tracking_events": ("id", "shipment_id", "carrier", "tracking_number", "source", "raw_status", "status",
                        "occurred_at", "location", "description", "event_id", "dedupe_key", "received_at"),
    "ticket_number_counters": ("day", "last"),
    "ticket_decisions": ("ticket_id", "policy_version", "decision", "rule", "queue", "priority", "suggestion", "facts",
                         "trace", "explanation", "decided_at"),
    "feedback_records": ("ticket_id", "category", "source", "suggested_category", "suggestion_confidence",
                         "suggestion_terms", "confirmed_by", "confirmed_at", "corrected", "created_at"),
    "feedback_items": ("id", "ticket_id", "team", "category", "product_id", "product_name", "sku", "product_category",
                       "live_session_id", "host", "quote", "evidence_urls", "stream_offset_seconds", "routed_because",
                       "status", "created_at", "acknowledged_at", "acknowledged_by", "action_id"),
    "sla_events": ("id", "ticket_id", "metric", "event", "at", "cause", "threshold", "dedupe_key", "data"),
}
# The ticket's SLA and policy columns (migrations 0003 and 0004), kept as aftersales.sla.service would.
COLUMNS["tickets"] = (*COLUMNS["tickets"], "sla_due_at", "sla_policy_id", "first_response_due_at", "sla_elapsed_seconds",
                      "sla_running_since", "sla_next_alert_at", "sla_alerts_fired", "resolution_seconds", "resolution_met",
                      "first_response_seconds", "first_response_met", "policy_version")

# What `aftersales migrate` ships (aftersales.cli._ensure_defaults): the default SLA policy (48 h closure,
# 2 h first response, 24/7 calendar, paused while waiting on the customer or a carrier) and policy version 1.
SLA_RESOLUTION = 48 * 3600.0
SLA_FIRST_RESPONSE = 120 * 60.0
SLA_PAUSE = frozenset(DEFAULT_PAUSE)
SLA_THRESHOLDS = tuple(sorted({*DEFAULT_WARN, 1.0}))
POLICY_VERSION = 1
DEFAULT_POLICY = policy_rules.parse(policy_rules.DEFAULT_POLICY)
# Feedback routing as FeedbackService.ensure_defaults writes it: (category, team, min_repeat, note) in id order.
ROUTING_RULES: tuple[tuple[str, str, int, str], ...] = (
    *((category, team, 1, "default") for category, teams in DEFAULT_ROUTES.items() for team in teams),
    *EXTRA_DEFAULT_RULES,
)
RULES_BY_CATEGORY: dict[str, list[tuple[str, str, int, str]]] = {}
for _rule in ROUTING_RULES:
    RULES_BY_CATEGORY.setdefault(_rule[0], []).append(_rule)
BECAUSE = {(c, t, m): _because(SimpleNamespace(category=c, team=t, product_categories=[], min_repeat=m)) for c, t, m, _ in ROUTING_RULES}
# Feedback items older than this were acknowledged by the team (the rest are still new).
ACK_AFTER = timedelta(days=14)

# -- the lifecycle templates -----------------------------------------------------------------

# (action, actor kind, delay range in hours from the previous step)
AGENT, SYSTEM, PLATFORM, FINANCE, CARRIER, WAREHOUSE = "agent", "system", "platform", "finance", "carrier", "warehouse"
STEP_INFO: dict[str, tuple[str, float, float]] = {
    "route_to_review": (SYSTEM, 0.0003, 0.0006),
    "auto_approve": (SYSTEM, 0.0003, 0.0006),
    "fast_refund": (SYSTEM, 0.0003, 0.0006),
    "approve": (AGENT, 0.1, 1.9),
    "reject": (AGENT, 0.1, 1.9),
    "request_info": (AGENT, 0.1, 1.9),
    "customer_reply": (PLATFORM, 2, 48),
    "add_return_tracking": (PLATFORM, 6, 72),
    "return_delivered": (CARRIER, 36, 96),
    "record_inspection": (WAREHOUSE, 2, 24),
    "confirm_refund": (FINANCE, 0.5, 24),
    "ship_replacement": (AGENT, 2, 24),
    "replacement_delivered": (CARRIER, 24, 72),
    "close": (AGENT, 0.1, 12),
    "cancel": (PLATFORM, 0.5, 48),
}
HAPPY: dict[str, tuple[str, ...]] = {
    "refund_only": ("approve", "confirm_refund", "close"),
    "return_refund": ("approve", "add_return_tracking", "return_delivered", "record_inspection", "confirm_refund", "close"),
    "exchange": ("approve", "add_return_tracking", "return_delivered", "record_inspection", "ship_replacement", "replacement_delivered"),
    "reship": ("approve", "ship_replacement", "replacement_delivered"),
    "complaint": ("approve", "close"),
}
# variant -> weight; each is ("route_to_review", ...) and is validated against the transition table.
VARIANTS = (("happy", 78), ("info", 8), ("reject", 8), ("cancel", 6))
NOT_A_RESPONSE = frozenset({"customer_reply", "note"})  # aftersales.tickets.service.NOT_A_RESPONSE
FINAL = workflow.FINAL_STATUSES
STAMPS = {
    "rejected": "rejected_at", "return_received": "return_received_at", "refunded": "refunded_at",
    "replacement_shipped": "replacement_shipped_at", "closed": "closed_at", "cancelled": "cancelled_at",
}


def lifecycle(kind: str, variant: str) -> tuple[tuple[str, str, str], ...]:
    """The (action, from, to) steps after `open`, checked against the real transition table."""
    actions: tuple[str, ...]
    if variant == "auto_approve":  # the policy approved it at intake; the rest of the happy path follows
        actions = ("auto_approve", *HAPPY[kind][1:])
    elif variant == "fast_refund":
        actions = ("fast_refund", "confirm_refund", "close")
    elif variant == "happy":
        actions = ("route_to_review", *HAPPY[kind])
    elif variant == "info":
        actions = ("route_to_review", "request_info", "customer_reply", *HAPPY[kind])
    elif variant == "reject":
        actions = ("route_to_review", "reject", "close")
    else:
        actions = ("route_to_review", "cancel")
    status, out = "requested", []
    for action in actions:
        target = workflow.transition(kind, status, action, inspection_passed=True if action == "record_inspection" else None)
        out.append((action, status, target))
        status = target
    assert status in workflow.FINAL_STATUSES, (kind, variant, status)
    return tuple(out)


PATHS = {(k, v): lifecycle(k, v) for k in workflow.KINDS for v, _ in VARIANTS}
PATHS.update({(k, v): lifecycle(k, v) for k in workflow.KINDS for v in ("auto_approve", "fast_refund")
              if ("requested", v) in workflow.TRANSITIONS[k]})

# -- encoding --------------------------------------------------------------------------------


class Encoder:
    """Python values -> what SQLAlchemy's column types would hand the driver."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        if dialect == "sqlite":
            self.ts = _sqlite_ts
            self.day = lambda d: d.isoformat()
            self.bool = lambda b: None if b is None else int(b)
        else:
            self.ts = lambda dt: None if dt is None else dt.replace(tzinfo=UTC)
            self.day = lambda d: d
            self.bool = lambda b: b

    @staticmethod
    def json(value: Any) -> str:
        return json.dumps(value)


def _sqlite_ts(dt: datetime | None) -> str | None:
    # SQLAlchemy's SQLite DATETIME storage format always carries microseconds.
    if dt is None:
        return None
    s = dt.isoformat(" ")
    return s if len(s) > 19 else s + ".000000"


def _check_encoding(enc: Encoder) -> None:
    """Fail before writing anything if our fast encoding differs from SQLAlchemy's own."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = sqlite.dialect() if enc.dialect == "sqlite" else postgresql.asyncpg.dialect()
    col = Ticket.__table__.c
    ts_proc = col.requested_at.type._cached_bind_processor(dialect)
    for naive in (datetime(2025, 3, 1, 12, 0, 0), datetime(2025, 3, 1, 12, 0, 0, 5), datetime(2026, 11, 25, 23, 59, 59, 999999)):
        expected = ts_proc(naive.replace(tzinfo=UTC)) if ts_proc else naive.replace(tzinfo=UTC).replace(tzinfo=None if enc.dialect == "sqlite" else UTC)
        got = enc.ts(naive)
        assert got == expected, f"datetime encoding {got!r} != SQLAlchemy {expected!r}"
    money_proc = col.requested_amount.type._cached_bind_processor(dialect)
    for fen in (0, 1, 8900, 123456789):
        value = Decimal(fen) / 100
        expected = money_proc(value) if money_proc else col.requested_amount.type.process_bind_param(value, dialect)
        assert expected == fen, f"money {value} -> {expected!r}, expected {fen}"
    json_proc = col.evidence_urls.type._cached_bind_processor(dialect)
    if json_proc is not None:
        for value in ([], ["https://img.example.com/a.jpg"], {"queue": "general", "n": "丝"}):
            assert json_proc(value) == enc.json(value), "JSON encoding differs"
    day_proc = TicketNumberCounter.__table__.c.day.type._cached_bind_processor(dialect)
    if day_proc is not None:
        assert day_proc(date(2025, 1, 2)) == enc.day(date(2025, 1, 2))
    for model in TABLES:
        table = model.__table__
        unknown = set(COLUMNS[table.name]) - set(table.c.keys())
        assert not unknown, f"{table.name}: columns {unknown} are gone, update bench/generate.py"
        for col in table.c:
            if col.key in COLUMNS[table.name]:
                continue
            # A column added since this generator was written: it must fill itself in.
            assert col.nullable or col.server_default is not None, (
                f"{table.name}.{col.key} is new and NOT NULL without a server default: update bench/generate.py")


# -- the catalogue ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sku:
    sku: str
    product_id: str
    name: str
    category: str
    price_fen: int


def _catalogue() -> dict[str, list[Sku]]:
    out: dict[str, list[Sku]] = {}
    for category, products in demo.CATALOGUE.items():
        skus = out.setdefault(category, [])
        for pid, name, variants, popularity, _sized in products:
            for i, (variant, price) in enumerate(variants):
                sku = Sku(f"{pid}-{i + 1:02d}", pid, f"{name} {variant}", category, int(Decimal(price) * 100))
                skus.extend([sku] * max(1, int(popularity * 2)))
    return out


def _weighted(rng: random.Random, weights: dict[str, int]) -> Callable[[], str]:
    keys = list(weights)
    cum = []
    total = 0
    for k in keys:
        total += weights[k]
        cum.append(total)
    return lambda: keys[bisect.bisect_right(cum, rng.random() * total)]


# -- the plan --------------------------------------------------------------------------------


@dataclass
class Counters:
    customer: int = 0
    session: int = 0
    order: int = 0
    item: int = 0
    ticket: int = 0
    ticket_item: int = 0
    event: int = 0
    shipment: int = 0
    tracking: int = 0
    feedback_item: int = 0
    sla_event: int = 0
    numbers: dict[date, int] = field(default_factory=dict)


class Generator:
    def __init__(self, *, tickets: int, seed: int, anchor: datetime, enc: Encoder, orders_without_ticket: float = 0.1,
                 sla_policy_id: int = 1) -> None:
        self.n = tickets
        self.sla_policy_id = sla_policy_id
        self.rng = random.Random(seed)
        self.anchor = anchor  # naive UTC; nothing happens after it
        self.start = anchor - timedelta(days=DAYS)
        self.enc = enc
        self.extra_orders = orders_without_ticket
        self.c = Counters()
        self.catalogue = _catalogue()
        self.hosts = list(demo.HOSTS.items())
        self.reason = _weighted(self.rng, demo.BASE_REASONS)
        self.kind_for = {r: _weighted(self.rng, w) for r, w in demo.KINDS_BY_REASON.items()}
        self.variant = _weighted(self.rng, dict(VARIANTS))
        self.carrier = _weighted(self.rng, demo.CARRIER_WEIGHTS)
        self.n_customers = max(50, tickets // 3)
        self.sessions_by_day: dict[int, list[tuple[int, str, tuple[str, ...], datetime]]] = {}
        self.agent_actors = [f"user:agent-{i:02d}" for i in range(1, N_AGENTS + 1)]
        self.rows: dict[str, list[tuple[Any, ...]]] = {t: [] for t in COLUMNS}
        self.counts: dict[str, int] = {t: 0 for t in COLUMNS}
        self.status_counts: dict[str, int] = {}
        self.queue_status: dict[tuple[str, str], int] = {}
        self.decision_counts: dict[str, int] = {}
        # Per customer: (requested, refunded_at, rejected_at) of earlier requests, for the policy's history facts.
        self.history: dict[int, list[tuple[datetime, datetime | None, datetime | None]]] = {}
        # Per product: request times of fit.size tickets with items, for the "≥ 3 in 30 days" routing rule.
        self.size_requests: dict[str, list[datetime]] = {}
        self.suggestions: dict[str, tuple[str, float, str]] = {}

    # -- helpers ------------------------------------------------------------------------------

    def _emit(self, table: str, row: tuple[Any, ...]) -> None:
        self.rows[table].append(row)

    def take(self) -> dict[str, list[tuple[Any, ...]]]:
        rows, self.rows = self.rows, {t: [] for t in COLUMNS}
        for t, r in rows.items():
            self.counts[t] += len(r)
        return rows

    def day_counts(self) -> list[int]:
        """Tickets per day: growth over the two years, big sale days, random busy live days."""
        rng = self.rng
        weights = []
        for d in range(DAYS):
            day = (self.start + timedelta(days=d)).date()
            w = 0.6 + 0.8 * d / DAYS
            if (day.month, day.day) in ((11, 11), (11, 12), (6, 18), (6, 19), (12, 12)):
                w *= 3.0
            elif rng.random() < 0.1:
                w *= 1.6
            weights.append(w)
        total = sum(weights)
        exact = [self.n * w / total for w in weights]
        counts = [int(x) for x in exact]
        short = self.n - sum(counts)
        by_rest = sorted(range(DAYS), key=lambda i: exact[i] - counts[i], reverse=True)
        for i in by_rest[:short]:
            counts[i] += 1
        return counts

    # -- reference data -----------------------------------------------------------------------

    def customers(self) -> None:
        ts, rng = self.enc.ts, self.rng
        names = demo.NICKNAMES
        for i in range(1, self.n_customers + 1):
            created = self.start - timedelta(days=30) + timedelta(seconds=rng.randrange(DAYS * 86400))
            name = rng.choice(demo.SURNAMES) + "*" if rng.random() < 0.5 else rng.choice(names)
            self._emit("customers", (i, f"DYU{i:010d}", name, ts(created)))
        self.c.customer = self.n_customers

    def sessions(self) -> None:
        ts, rng = self.enc.ts, self.rng
        for d in range(-15, DAYS + 1):
            day = self.start + timedelta(days=d)
            todays = []
            for h, (host, cats) in enumerate(self.hosts):
                if rng.random() < 0.55:
                    self.c.session += 1
                    sid = self.c.session
                    started = day.replace(hour=11, minute=0, second=0, microsecond=0) + timedelta(minutes=rng.randrange(0, 240))
                    title = rng.choice(demo.TITLES[cats[0]])
                    external = f"LS-{day:%Y%m%d}-{h + 1}"
                    self._emit("live_sessions", (sid, external, host, title, ts(started), ts(started + timedelta(hours=3))))
                    todays.append((sid, host, cats, started, external))
            self.sessions_by_day[d] = todays

    # -- orders and outbound logistics --------------------------------------------------------

    def order(self, requested: datetime, *, delivered_ok: bool) -> tuple[int, int, list[tuple[int, Sku, int]], datetime, datetime | None, Any, int]:
        """One order placed a few days before `requested`; returns (order id, customer id, items, placed, delivered,
        live session or None, paid fen)."""
        rng, ts = self.rng, self.enc.ts
        lag = timedelta(days=rng.uniform(2.0, 9.0))
        target = requested - lag
        d = (target - self.start).days
        todays = self.sessions_by_day.get(d) or []
        session = rng.choice(todays) if todays and rng.random() < 0.85 else None
        if session is not None:
            placed = session[3] + timedelta(seconds=rng.randrange(3 * 3600))
            cats = session[2]
        else:
            placed = target
            cats = (rng.choice(list(self.catalogue)),)
        span = requested - placed
        if delivered_ok:
            delivered: datetime | None = placed + span * rng.uniform(0.3, 0.8)
            shipped = placed + (delivered - placed) * rng.uniform(0.15, 0.4)
        else:
            delivered = None
            shipped = placed + span * rng.uniform(0.05, 0.2)
        # A few loyal customers buy a lot.
        cust = 1 + int(self.n_customers * rng.random() ** 1.6) % self.n_customers
        self.c.order += 1
        oid = self.c.order
        n_items = 1 if rng.random() < 0.6 else (2 if rng.random() < 0.75 else 3)
        items: list[tuple[int, Sku, int]] = []
        seen = set()
        for _ in range(n_items):
            sku = rng.choice(self.catalogue[rng.choice(cats)])
            if sku.sku in seen:
                continue
            seen.add(sku.sku)
            qty = 1 if rng.random() < 0.85 else 2
            self.c.item += 1
            items.append((self.c.item, sku, qty))
        paid = sum(s.price_fen * q for _, s, q in items)
        self._emit("orders", (
            oid, f"DY{5_000_000_000_000 + oid}", demo.SHOP, "douyin", cust, session[0] if session else None, paid,
            ts(placed), ts(placed + timedelta(seconds=rng.randrange(20, 300))), ts(delivered), ts(placed), ts(delivered or shipped),
        ))
        for iid, s, q in items:
            self._emit("order_items", (iid, oid, s.sku, s.product_id, s.name, s.category, q, s.price_fen))
        # Outbound parcel: picked up, in transit, out for delivery, signed for (Kuaidi100 codes).
        events = [("1", "in_transit", shipped), ("0", "in_transit", shipped + (requested - shipped) * 0.2)]
        if delivered is not None:
            events = [("1", "in_transit", shipped), ("0", "in_transit", shipped + (delivered - shipped) * 0.5),
                      ("5", "out_for_delivery", delivered - timedelta(hours=rng.uniform(1, 5))), ("3", "delivered", delivered)]
        self.shipment(oid, None, "outbound", shipped, events, self.anchor)
        return oid, cust, items, placed, delivered, session, paid

    def shipment(self, order_id: int, ticket_id: int | None, direction: str, created: datetime,
                 events: list[tuple[str, str, datetime]], until: datetime) -> None:
        ts, rng = self.enc.ts, self.rng
        self.c.shipment += 1
        sid = self.c.shipment
        carrier = self.carrier()
        number = f"{carrier}{7_000_000_000 + sid * 7 + rng.randrange(7)}"
        happened = [e for e in events if e[2] <= until]
        last = happened[-1] if happened else None
        delivered = next((e[2] for e in happened if e[1] == "delivered"), None)
        self._emit("shipments", (
            sid, order_id, ticket_id, direction, carrier, number, last[1] if last else None, last[0] if last else None,
            "kuaidi100" if last else None, ts(last[2]) if last else None, ts(delivered), ts(created),
        ))
        city = rng.choice(demo.CITIES)
        for raw, status, at in happened:
            self.c.tracking += 1
            aware = at.replace(tzinfo=UTC)
            desc = f"【{city}】{demo.CARRIERS[carrier]} {status}"
            self._emit("tracking_events", (
                self.c.tracking, sid, carrier, number, "kuaidi100", raw, status, ts(at), city, desc, None,
                _event_digest("kuaidi100", raw, aware), ts(at + timedelta(seconds=rng.randrange(5, 600))),
            ))

    # -- tickets ------------------------------------------------------------------------------

    def ticket(self, requested: datetime) -> None:
        rng, ts, js = self.rng, self.enc.ts, self.enc.json
        reason = self.reason()
        kind = self.kind_for[reason]()
        delivered_ok = not reason.startswith("logistics.")
        oid, cust, items, placed, delivered, live, paid = self.order(requested, delivered_ok=delivered_ok)
        received = requested + timedelta(seconds=rng.randrange(1, 300))
        iid, sku, qty = items[0]
        amount = 0 if kind == "complaint" else sku.price_fen
        self.c.ticket += 1
        tid = self.c.ticket
        day = received.replace(tzinfo=UTC).astimezone(SHANGHAI).date()
        seq = self.c.numbers.get(day, 0) + 1
        self.c.numbers[day] = seq
        number = f"AS-{day:%Y%m%d}-{seq:06d}"
        templates = demo.DESCRIPTIONS.get(reason) or ["{p}"]
        description = rng.choice(templates).format(p=sku.name, v=sku.name)
        evidence = [f"https://img.example.com/as/{tid}-{i}.jpg" for i in range(rng.choice((0, 1, 1, 2, 3)))]
        claimed = [(iid, sku)] if kind != "complaint" else [(i, s) for i, s, _ in items]

        # The intake decision: the facts gather_facts would see, evaluated by the real default policy.
        facts = self.facts(kind, reason, amount, paid, claimed, delivered, requested, evidence, live, cust)
        decision = policy_rules.evaluate(DEFAULT_POLICY, facts)
        outcome = decision.outcome
        explanation = decision.explain()
        automatic = outcome.decision in ("approve", "fast_refund")
        if automatic:
            auto_action = "auto_approve" if outcome.decision == "approve" else "fast_refund"
            if ("requested", auto_action) not in workflow.TRANSITIONS[kind]:
                outcome = DEFAULT_POLICY.default
                explanation += f" · {auto_action} is not possible for {kind} → queue {outcome.queue}"
                automatic = False
        queue, priority = outcome.queue, outcome.priority
        self.decision_counts[outcome.decision] = self.decision_counts.get(outcome.decision, 0) + 1
        self._emit("ticket_decisions", (
            tid, POLICY_VERSION, outcome.decision, decision.rule, queue, priority, outcome.suggestion, js(facts),
            js(decision.trace), explanation, ts(received),
        ))
        decided = {"policy_version": POLICY_VERSION, "rule": decision.rule, "suggestion": outcome.suggestion}
        path = PATHS[(kind, auto_action)] if automatic else PATHS[(kind, self.variant())]

        # The timeline: open, then the lifecycle steps as far as they have happened by the anchor.
        agent = self.agent_actors[rng.randrange(N_AGENTS)]
        slow = rng.random() < 0.01  # the backlog: some requests wait days for a person
        stamps: dict[str, datetime | None] = {k: None for k in (
            "first_response_at", "approved_at", "rejected_at", "return_received_at", "refunded_at",
            "replacement_shipped_at", "closed_at", "cancelled_at")}
        events: list[tuple[Any, ...]] = []
        self.c.event += 1
        events.append((self.c.event, tid, ts(requested), "token:douyin-open-platform", "open", None, "requested", description,
                       js({"received_at": received.replace(tzinfo=UTC).isoformat()})))
        sla = SlaClock(self, tid, number, requested)
        at = received
        status = "requested"
        updated = received
        return_ship: list[tuple[str, str, datetime]] | None = None
        return_created = replacement_created = None
        replacement_ship: list[tuple[str, str, datetime]] | None = None
        refunded = 0
        version = 1
        for action, src, dst in path:
            who, lo, hi = STEP_INFO[action]
            hours = rng.uniform(lo, hi)
            if who == AGENT and src == "pending_review" and rng.random() < 0.1:
                hours = rng.uniform(2, 30)
            if slow and src == "pending_review":
                hours = rng.uniform(24, 480)
            at = at + timedelta(hours=hours)
            if at > self.anchor:
                break
            actor = {AGENT: agent, SYSTEM: "system:system", PLATFORM: "token:douyin-open-platform",
                     FINANCE: "token:finance-erp", WAREHOUSE: "user:warehouse-1"}.get(who) or "carrier:SF"
            data: dict[str, Any] = {}
            note = ""
            if action == "route_to_review":
                data = {**decided, "queue": queue}
                note = explanation
            elif action in ("auto_approve", "fast_refund"):
                data = dict(decided)
                note = explanation
            elif action == "approve":
                data = {"approved_amount": f"{amount / 100:.2f}"}
                note = rng.choice(demo.APPROVE_NOTES[kind])
            elif action == "reject":
                note = rng.choice(demo.REJECT_NOTES)
            elif action == "request_info":
                note = rng.choice(demo.REQUEST_INFO)
            elif action == "customer_reply":
                note = rng.choice(demo.CUSTOMER_REPLY)
            elif action == "cancel":
                note = rng.choice(demo.CANCEL_NOTES)
            elif action == "close":
                note = rng.choice(demo.CLOSE_NOTES)
            elif action == "confirm_refund":
                refunded = amount
                data = {"amount": f"{amount / 100:.2f}", "refund_reference": f"FIN-{tid}"}
            elif action == "record_inspection":
                data = {"passed": True}
            elif action == "add_return_tracking":
                return_created = at
                return_ship = [("1", "in_transit", at + timedelta(hours=rng.uniform(2, 12))),
                               ("0", "in_transit", at + timedelta(hours=rng.uniform(14, 30)))]
            elif action == "return_delivered" and return_ship is not None:
                return_ship.append(("3", "delivered", at))
                data = {"raw_status": "3", "source": "kuaidi100", "occurred_at": at.replace(tzinfo=UTC).isoformat()}
            elif action == "ship_replacement":
                replacement_created = at
                replacement_ship = [("1", "in_transit", at + timedelta(hours=rng.uniform(2, 12))),
                                    ("0", "in_transit", at + timedelta(hours=rng.uniform(14, 22)))]
            elif action == "replacement_delivered" and replacement_ship is not None:
                replacement_ship.append(("3", "delivered", at))
            self.c.event += 1
            events.append((self.c.event, tid, ts(at), actor, action, src, dst, note, js(data)))
            # TicketService._move: a person's action (or an automatic decision) is the first response.
            first_response = stamps["first_response_at"] is None and (
                action in ("auto_approve", "fast_refund") or (who in (AGENT, WAREHOUSE) and action not in NOT_A_RESPONSE))
            if first_response:
                stamps["first_response_at"] = at
            if action in ("approve", "auto_approve"):  # TicketService.APPROVALS
                stamps["approved_at"] = at
            if dst != src and dst in STAMPS:
                stamps[STAMPS[dst]] = at
            sla.transition(src, dst, at, first_response)
            status = dst
            updated = at
            version += 1
        sla.finish(status, self.anchor)
        self.status_counts[status] = self.status_counts.get(status, 0) + 1
        self.queue_status[(queue or "-", status)] = self.queue_status.get((queue or "-", status), 0) + 1
        self._emit("tickets", (
            tid, number, f"DYAS{9_000_000_000 + tid}", oid, cust, kind, reason, status,
            amount, refunded, description, js(evidence), queue, min(priority + sla.escalations, 9), None,
            ts(requested), ts(received), ts(updated), ts(stamps["first_response_at"]), ts(stamps["approved_at"]),
            ts(stamps["rejected_at"]), ts(stamps["return_received_at"]), ts(stamps["refunded_at"]),
            ts(stamps["replacement_shipped_at"]), ts(stamps["closed_at"]), ts(stamps["cancelled_at"]), version,
            *sla.columns(), POLICY_VERSION,
        ))
        if kind != "complaint":
            self.c.ticket_item += 1
            self._emit("ticket_items", (self.c.ticket_item, tid, iid, sku.sku, 1))
        self.rows["ticket_events"].extend(events)
        self.rows["sla_events"].extend(sla.rows)
        hist = self.history.setdefault(cust, [])
        hist.append((requested, stamps["refunded_at"], stamps["rejected_at"]))
        self.feedback(tid, reason, description, evidence, received, requested, placed, live, claimed)
        if return_ship is not None and return_created is not None:
            self.shipment(oid, tid, "return", return_created, return_ship, self.anchor)
        if replacement_ship is not None and replacement_created is not None:
            self.shipment(oid, tid, "replacement", replacement_created, replacement_ship, self.anchor)

    def facts(self, kind: str, reason: str, amount: int, paid: int, claimed: list[tuple[int, Sku]], delivered: datetime | None,
              at: datetime, evidence: list[str], live: Any, cust: int) -> dict[str, Any]:
        """aftersales.tickets.facts.gather_facts, from the plan instead of queries (same keys, order and encoding)."""
        d30, d90 = at - timedelta(days=30), at - timedelta(days=90)
        hist = self.history.get(cust)
        r30 = r90 = f30 = f90 = j90 = 0
        if hist:
            while hist and hist[0][0] < d90:
                hist.pop(0)
            for requested, refunded_at, rejected_at in hist:
                r90 += 1
                r30 += requested >= d30
                if refunded_at is not None and refunded_at <= at:
                    f90 += refunded_at >= d90
                    f30 += refunded_at >= d30
                if rejected_at is not None and d90 <= rejected_at <= at:
                    j90 += 1
        money = Decimal(amount) / 100
        share = (money / (Decimal(paid) / 100)).quantize(Decimal("0.0001")) if paid else Decimal("0")
        categories = sorted({s.category for _, s in claimed})
        aware = at.replace(tzinfo=UTC)
        signed = delivered.replace(tzinfo=UTC) if delivered else None
        return {
            "kind": kind,
            "reason": reason,
            "reason_group": reason.split(".")[0],
            "quality": is_quality_reason(reason),
            "amount": f"{money:.2f}",
            "amount_share": str(share),
            "categories": categories,
            "products": sorted({s.product_id for _, s in claimed}),
            "shipped": True,  # every generated order has its outbound parcel before the request
            "delivered": delivered is not None,
            "days_since_signed": round((at - delivered).total_seconds() / 86400, 2) if delivered else None,
            "window_open": no_reason_window_open(signed, aware, SHANGHAI),
            "excluded": bool(NO_REASON_EXCLUDED_CATEGORIES & set(categories)),
            "evidence": bool(evidence),
            "requests_30d": r30, "requests_90d": r90, "refunds_30d": f30, "refunds_90d": f90, "rejections_90d": j90,
            "session": live[4] if live else None,
            "host": live[1] if live else None,
            "customer": f"DYU{cust:010d}",
        }

    def feedback(self, tid: int, reason: str, description: str, evidence: list[str], received: datetime, requested: datetime,
                 placed: datetime, live: Any, claimed: list[tuple[int, Sku]]) -> None:
        """FeedbackService.record_ticket: the record (category from the reason code, text suggestion beside it)
        and one item per claimed product and team under the default routing rules."""
        ts, js, rng = self.enc.ts, self.enc.json, self.rng
        suggestion = self.suggestions.get(description)
        if suggestion is None:
            found = classify.suggest(description)
            suggestion = self.suggestions[description] = (found.category, found.confidence, js(list(found.terms)))
        self._emit("feedback_records", (tid, reason, "reason_code", suggestion[0], suggestion[1], suggestion[2], None, None, None,
                                        ts(received)))
        rules = RULES_BY_CATEGORY.get(reason)
        if not rules:
            return
        if reason == "fit.size" and claimed:
            times = self.size_requests.setdefault(claimed[0][1].product_id, [])
            times.append(requested)
        offset = int((placed - live[3]).total_seconds()) if live else None
        evidence_json = js(evidence)
        seen: set[tuple[str, str]] = set()
        for _, s in claimed:
            for category, team, min_repeat, _note in rules:
                if (team, s.product_id) in seen:
                    continue
                if min_repeat > 1:
                    times = self.size_requests.get(s.product_id, [])
                    since = requested - REPEAT_WINDOW
                    while times and times[0] < since:
                        times.pop(0)
                    if len(times) < min_repeat:
                        continue
                seen.add((team, s.product_id))
                self.c.feedback_item += 1
                status, ack_at, ack_by = "new", None, None
                if received < self.anchor - ACK_AFTER and rng.random() < 0.85:
                    status, ack_at, ack_by = "acknowledged", received + timedelta(hours=rng.uniform(2, 72)), f"user:{team}-lead"
                self._emit("feedback_items", (
                    self.c.feedback_item, tid, team, category, s.product_id, s.name, s.sku, s.category,
                    live[0] if live else None, live[1] if live else None, description, evidence_json,
                    offset if offset and offset >= 0 else None, BECAUSE[(category, team, min_repeat)], status, ts(received),
                    ts(ack_at), ack_by, None,
                ))


    def plan(self) -> Iterator[tuple[int, dict[str, list[tuple[Any, ...]]]]]:
        """Yield (tickets done, rows) chunks in time order."""
        self.customers()
        self.sessions()
        yield 0, self.take()
        rng = self.rng
        done = 0
        pending = 0
        for d, count in enumerate(self.day_counts()):
            day = self.start + timedelta(days=d)
            times = sorted(rng.randrange(86400 * 1_000_000) for _ in range(count))
            for us in times:
                requested = day + timedelta(microseconds=us)
                self.ticket(requested)
                if rng.random() < self.extra_orders:
                    self.order(requested, delivered_ok=True)
            done += count
            pending += count
            if pending >= CHUNK_TICKETS:
                pending = 0
                yield done, self.take()
        enc = self.enc
        for day, last in sorted(self.c.numbers.items()):
            self._emit("ticket_number_counters", (enc.day(day), last))
        yield done, self.take()


class SlaClock:
    """aftersales.sla.service.SlaService (start, on_transition) and sla.tasks.fire_due_alerts replayed for one
    ticket under the default 24/7 policy: the sla_events rows and the ticket's SLA columns at the anchor."""

    def __init__(self, gen: Generator, tid: int, number: str, requested: datetime) -> None:
        self.gen, self.tid, self.requested = gen, tid, requested
        self.rows: list[tuple[Any, ...]] = []
        self.elapsed = 0.0
        self.running: datetime | None = requested
        self.due: datetime | None = requested + timedelta(seconds=SLA_RESOLUTION)
        self.fr_due: datetime | None = requested + timedelta(seconds=SLA_FIRST_RESPONSE)
        self.fr_seconds: float | None = None
        self.fr_met: bool | None = None
        self.res_seconds: float | None = None
        self.res_met: bool | None = None
        self.fired: list[str] = []
        self.escalations = 0
        self.next_alert: datetime | None = None
        for metric in ("resolution", "first_response"):
            self.event(metric, "start", requested, f"request {number}")

    def event(self, metric: str, event: str, at: datetime, cause: str, threshold: float | None = None, key: str | None = None) -> None:
        self.gen.c.sla_event += 1
        self.rows.append((self.gen.c.sla_event, self.tid, metric, event, self.gen.enc.ts(at), cause, threshold, key, "{}"))

    def alerts_until(self, until: datetime) -> None:
        """The worker's warnings that fell due before `until`, each once, in time order (escalating the priority)."""
        due: list[tuple[datetime, str, float]] = []
        if self.fr_seconds is None and self.fr_due is not None:
            for f in SLA_THRESHOLDS:
                moment = self.requested + timedelta(seconds=f * SLA_FIRST_RESPONSE)
                if f"first_response:{f}" not in self.fired and moment <= until:
                    due.append((moment, "first_response", f))
        if self.running is not None:
            for f in SLA_THRESHOLDS:
                moment = self.running + timedelta(seconds=max(f * SLA_RESOLUTION - self.elapsed, 0.0))
                if f"resolution:{f}" not in self.fired and moment <= until:
                    due.append((moment, "resolution", f))
        for moment, metric, f in sorted(due):
            key = f"{metric}:{f}"
            self.fired.append(key)
            self.escalations += 1
            self.event(metric, "breach" if f >= 1.0 else "at_risk", moment, f"{int(f * 100)} % of the {metric} target", f, key)

    def stop_running(self, at: datetime, event: str, cause: str) -> None:
        if self.running is not None:
            self.elapsed += (at - self.running).total_seconds()
            self.running = None
        self.event("resolution", event, at, cause)

    def transition(self, src: str, dst: str, at: datetime, first_response: bool) -> None:
        self.alerts_until(at)
        if first_response and self.fr_seconds is None:
            seconds = (at - self.requested).total_seconds()
            self.event("first_response", "first_response", at, f"first response ({dst})")
            self.fr_seconds, self.fr_met, self.fr_due = seconds, seconds <= SLA_FIRST_RESPONSE, None
        if dst in FINAL and src not in FINAL:
            self.stop_running(at, "stop", f"ticket {dst}")
            self.res_seconds = self.elapsed
            self.res_met = self.elapsed <= SLA_RESOLUTION if dst == "closed" else None
            self.due = None
            if self.fr_seconds is None:
                self.event("first_response", "stop", at, f"ticket {dst}")
                self.fr_due = None
        elif src not in SLA_PAUSE and dst in SLA_PAUSE:
            self.stop_running(at, "pause", f"waiting: {dst}")
            self.due = None
        elif src in SLA_PAUSE and dst not in SLA_PAUSE:
            self.event("resolution", "resume", at, f"back with the merchant: {dst}")
            self.running = at
            self.due = at + timedelta(seconds=max(SLA_RESOLUTION - self.elapsed, 0.0))

    def finish(self, status: str, anchor: datetime) -> None:
        if status not in FINAL:
            self.alerts_until(anchor)
        moments: list[datetime] = []
        if self.running is not None:
            for f in SLA_THRESHOLDS:
                if f"resolution:{f}" not in self.fired:
                    moments.append(self.running + timedelta(seconds=max(f * SLA_RESOLUTION - self.elapsed, 0.0)))
                    break
        if self.fr_seconds is None and self.fr_due is not None and status not in FINAL:
            for f in SLA_THRESHOLDS:
                if f"first_response:{f}" not in self.fired:
                    moments.append(self.requested + timedelta(seconds=f * SLA_FIRST_RESPONSE))
                    break
        self.next_alert = min(moments) if moments else None

    def columns(self) -> tuple[Any, ...]:
        """sla_due_at, sla_policy_id, first_response_due_at, sla_elapsed_seconds, sla_running_since, sla_next_alert_at,
        sla_alerts_fired, resolution_seconds, resolution_met, first_response_seconds, first_response_met."""
        enc = self.gen.enc
        return (enc.ts(self.due), self.gen.sla_policy_id, enc.ts(self.fr_due), self.elapsed, enc.ts(self.running),
                enc.ts(self.next_alert), enc.json(self.fired), self.res_seconds, enc.bool(self.res_met), self.fr_seconds,
                enc.bool(self.fr_met))



# -- writers ---------------------------------------------------------------------------------


class SqliteWriter:
    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=OFF")
        self.conn.execute("PRAGMA cache_size=-400000")
        self.conn.execute("PRAGMA temp_store=MEMORY")
        self.sql = {t: f"INSERT INTO {t} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})" for t, cols in COLUMNS.items()}
        self.indexes: list[tuple[str, str]] = []

    def drop_indexes(self) -> None:
        names = ", ".join(f"'{t}'" for t in COLUMNS)
        self.indexes = list(self.conn.execute(
            f"SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL AND tbl_name IN ({names})"))
        for name, _ in self.indexes:
            self.conn.execute(f'DROP INDEX "{name}"')

    def write(self, rows: dict[str, list[tuple[Any, ...]]]) -> None:
        self.conn.execute("BEGIN")
        for model in TABLES:
            t = model.__tablename__
            if rows.get(t):
                self.conn.executemany(self.sql[t], rows[t])
        self.conn.execute("COMMIT")

    def finish(self, progress: Callable[[str], None]) -> None:
        for name, sql in self.indexes:
            progress(f"index {name}")
            self.conn.execute(sql)
        progress("ANALYZE")
        self.conn.execute("ANALYZE")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()


class PostgresWriter:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: Any = None
        self.indexes: list[tuple[str, str]] = []

    async def open(self) -> None:
        import asyncpg

        self.conn = await asyncpg.connect(self.dsn)
        await self.conn.execute("SET synchronous_commit = off")

    async def drop_indexes(self) -> None:
        rows = await self.conn.fetch(
            """SELECT i.indexname, i.indexdef FROM pg_indexes i
               JOIN pg_class c ON c.relname = i.indexname
               JOIN pg_index x ON x.indexrelid = c.oid
               WHERE i.schemaname = 'public' AND i.tablename = ANY($1::text[])
                 AND NOT x.indisprimary AND NOT x.indisunique""",
            list(COLUMNS),
        )
        self.indexes = [(r[0], r[1]) for r in rows]
        for name, _ in self.indexes:
            await self.conn.execute(f'DROP INDEX "{name}"')

    async def write(self, rows: dict[str, list[tuple[Any, ...]]]) -> None:
        async with self.conn.transaction():
            for model in TABLES:
                t = model.__tablename__
                if rows.get(t):
                    await self.conn.copy_records_to_table(t, records=rows[t], columns=list(COLUMNS[t]))

    async def finish(self, progress: Callable[[str], None]) -> None:
        for name, sql in self.indexes:
            progress(f"index {name}")
            await self.conn.execute(sql)
        for t in COLUMNS:
            if "id" not in COLUMNS[t]:
                continue
            await self.conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), GREATEST((SELECT max(id) FROM {t}), 1))")
        progress("ANALYZE")
        await self.conn.execute("ANALYZE")
        await self.conn.close()


# -- the command -----------------------------------------------------------------------------


def _sqlite_path(url: str) -> str:
    return make_url(url).database or ""


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _recreate_pg_database(url: str) -> None:
    import asyncpg

    u = make_url(url)
    admin = await asyncpg.connect(asyncpg_dsn(str(u.set(database="postgres"))))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{u.database}"')
    finally:
        await admin.close()


def prepare_database(url: str) -> None:
    """An empty database at the latest schema (the real migrations)."""
    from aftersales.cli import run_migrations

    if url.startswith("sqlite"):
        path = Path(_sqlite_path(url))
        path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    else:
        asyncio.run(_recreate_pg_database(url))
    run_migrations(url)


async def _defaults(url: str, since: datetime) -> int:
    """Check the defaults `aftersales migrate` wrote match what the plan assumes, date them before the data
    (they were there first), and return the default SLA policy's id."""
    from sqlalchemy import select, update

    from aftersales.db import create_engine
    from aftersales.feedback.models import RoutingRule
    from aftersales.sla.models import SlaPolicy
    from aftersales.tickets.models import PolicyVersion

    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            policies = (await conn.execute(select(SlaPolicy.id, SlaPolicy.resolution_minutes, SlaPolicy.first_response_minutes,
                                                  SlaPolicy.calendar, SlaPolicy.pause_statuses, SlaPolicy.warn_at))).all()
            assert len(policies) == 1, f"expected the one default SLA policy, found {len(policies)}"
            pid, res, first, calendar, pause, warn = policies[0]
            assert (res * 60.0, first * 60.0, calendar.get("type"), set(pause), tuple(sorted({*warn, 1.0}))) == (
                SLA_RESOLUTION, SLA_FIRST_RESPONSE, "24x7", set(SLA_PAUSE), SLA_THRESHOLDS), "the default SLA policy changed: update bench/generate.py"
            versions = (await conn.execute(select(PolicyVersion.version, PolicyVersion.text))).all()
            assert versions == [(POLICY_VERSION, policy_rules.DEFAULT_POLICY)], "the shipped policy changed: update bench/generate.py"
            rules = (await conn.execute(select(RoutingRule.category, RoutingRule.team, RoutingRule.min_repeat, RoutingRule.note)
                                        .order_by(RoutingRule.id))).all()
            assert [tuple(r) for r in rules] == list(ROUTING_RULES), "the default routing rules changed: update bench/generate.py"
            at = since.replace(tzinfo=UTC)
            await conn.execute(update(SlaPolicy).values(created_at=at))
            await conn.execute(update(PolicyVersion).values(created_at=at, published_at=at))
    finally:
        await engine.dispose()
    return pid


def default_anchor() -> datetime:
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day)


def generate(url: str, *, tickets: int, seed: int, anchor: datetime | None = None, quiet: bool = False) -> dict[str, Any]:
    """Create the database from scratch and fill it. Returns a summary (row counts, seconds)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    anchor = anchor or default_anchor()
    t0 = time.perf_counter()
    prepare_database(url)
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    enc = Encoder(dialect)
    _check_encoding(enc)
    sla_policy_id = asyncio.run(_defaults(url, anchor - timedelta(days=DAYS + 30)))
    gen = Generator(tickets=tickets, seed=seed, anchor=anchor, enc=enc, sla_policy_id=sla_policy_id)
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("tickets"),
        TimeElapsedColumn(), TimeRemainingColumn(), disable=quiet, transient=False,
    )
    t_load = time.perf_counter()
    with progress:
        task = progress.add_task(f"generating ({dialect})", total=tickets)
        if dialect == "sqlite":
            writer = SqliteWriter(_sqlite_path(url))
            writer.drop_indexes()
            for done, rows in gen.plan():
                writer.write(rows)
                progress.update(task, completed=done)
            t_index = time.perf_counter()
            writer.finish(lambda m: progress.update(task, description=m))
        else:
            async def run_pg() -> float:
                w = PostgresWriter(asyncpg_dsn(url))
                await w.open()
                await w.drop_indexes()
                for done, rows in gen.plan():
                    await w.write(rows)
                    progress.update(task, completed=done)
                t = time.perf_counter()
                await w.finish(lambda m: progress.update(task, description=m))
                return t

            t_index = asyncio.run(run_pg())
        progress.update(task, description="done")
    t_end = time.perf_counter()
    return {
        "url": make_url(url).render_as_string(hide_password=True),
        "dialect": dialect,
        "tickets": tickets,
        "seed": seed,
        "anchor": anchor.isoformat(),
        "rows": gen.counts,
        "rows_total": sum(gen.counts.values()),
        "status_counts": dict(sorted(gen.status_counts.items(), key=lambda kv: -kv[1])),
        "decision_counts": dict(sorted(gen.decision_counts.items(), key=lambda kv: -kv[1])),
        "pending_review_general": gen.queue_status.get(("general", "pending_review"), 0),
        "seconds_total": round(t_end - t0, 1),
        "seconds_load": round(t_index - t_load, 1),
        "seconds_index_analyze": round(t_end - t_index, 1),
        "size_bytes": os.path.getsize(_sqlite_path(url)) if dialect == "sqlite" else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--db", default="sqlite+aiosqlite:///./bench/data/bench.db", help="SQLAlchemy URL (the database is recreated)")
    p.add_argument("--tickets", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--anchor", default=None, help="UTC day the data ends (YYYY-MM-DD; default today)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    anchor = datetime.fromisoformat(args.anchor) if args.anchor else None
    summary = generate(args.db, tickets=args.tickets, seed=args.seed, anchor=anchor, quiet=args.quiet)
    json.dump(summary, sys.stdout, indent=2, ensure_ascii=False)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
