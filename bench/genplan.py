"""The generator's plan: every row of the data set, ticket by ticket in time order, as the services would have written them.

Planning is split in two so that several processes can share the work and still produce one data set:

- the *skeleton* (`Plan.ticket`, `Plan.order`) makes every random draw that another ticket or a row id depends on,
  from one `random.Random(seed)` in time order: the request time, customer, order and items, the facts and the
  policy's decision, the lifecycle path and the time of each step, the SLA replay, which feedback items are routed,
  and every id counter. It is about a third of the planning, and every worker runs it over all the days up to
  its last block;
- the *expansion* (`Plan.expand_ticket`, `Plan.expand_order`) turns a skeleton into encoded rows: descriptions,
  notes, agents, carriers, tracking details, the decision's trace, JSON, timestamps. Its draws come from a
  per-day `random.Random(f"{seed}:day:{d}")`, so only the worker that owns a day expands it.

Days are grouped into blocks of about `BLOCK_TICKETS` tickets and block b goes to worker b % workers: the data set
depends on the seed and the anchor only, not on the number of workers.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import operator
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

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
N_AGENTS = 40
BLOCK_TICKETS = 5_000  # a worker's unit of planning and of one write transaction
SWEEP_DAYS = 30  # how often the per-customer and per-product windows drop what they no longer need

# Load order respects foreign keys (COPY on PostgreSQL checks them when it may not switch them off).
TABLES = (Customer, LiveSession, Order, OrderItem, Ticket, TicketItem, TimelineEvent, Shipment, TrackingEvent, TicketNumberCounter,
          TicketDecision, FeedbackRecord, FeedbackItem, SlaEvent)
REFERENCE_TABLES = ("customers", "live_sessions")  # written once by the main process, before the workers start

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
                "cancelled_at", "version",
                # The SLA and policy columns (migrations 0003, 0004 and 0007), kept as aftersales.sla.service would.
                "sla_due_at", "sla_policy_id", "first_response_due_at", "sla_elapsed_seconds", "sla_running_since",
                "sla_next_alert_at", "sla_alerts_fired", "resolution_seconds", "resolution_met", "first_response_seconds",
                "first_response_met", "resolution_breached", "policy_version"),
    "ticket_items": ("id", "ticket_id", "order_item_id", "sku", "quantity", "product_id", "reason_code", "requested_at"),
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
QUALITY = {reason: is_quality_reason(reason) for reason in demo.BASE_REASONS}
# Facts no rule of the shipped policy reads: only the expansion computes them (PolicyMemo checks).
DEFERRED_FACTS = frozenset({"amount_share", "days_since_signed"})
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
STAMP_COLUMNS = ("first_response_at", "approved_at", "rejected_at", "return_received_at", "refunded_at",
                 "replacement_shipped_at", "closed_at", "cancelled_at")
NOTES = {"reject": demo.REJECT_NOTES, "request_info": demo.REQUEST_INFO, "customer_reply": demo.CUSTOMER_REPLY,
         "cancel": demo.CANCEL_NOTES, "close": demo.CLOSE_NOTES}
FIXED_ACTORS = {SYSTEM: "system:system", PLATFORM: "token:douyin-open-platform", FINANCE: "token:finance-erp",
                WAREHOUSE: "user:warehouse-1", CARRIER: "carrier:SF"}


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
    """Python values -> what SQLAlchemy's column types would hand the driver (generate._check_encoding proves it)."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.json = json.dumps
        if dialect == "sqlite":
            self.ts = _sqlite_ts
            self.day = lambda d: d.isoformat()
            self.bool = lambda b: None if b is None else int(b)
        else:
            self.ts = _pg_ts
            self.day = lambda d: d
            self.bool = lambda b: b


def _sqlite_ts(dt: datetime | None) -> str | None:
    # SQLAlchemy's SQLite DATETIME storage format always carries microseconds.
    if dt is None:
        return None
    return dt.isoformat(" ") if dt.microsecond else dt.isoformat(" ") + ".000000"


def _pg_ts(dt: datetime | None) -> datetime | None:
    return None if dt is None else dt.replace(tzinfo=UTC)


TRACKING_TEXT = {(city, carrier, status): f"【{city}】{name} {status}" for city in demo.CITIES
                 for carrier, name in demo.CARRIERS.items() for status in ("in_transit", "out_for_delivery", "delivered")}


def _digest(raw: str, at: datetime) -> str:
    """aftersales.orders.service._event_digest("kuaidi100", raw, at) of a naive UTC time, without its conversions."""
    return "h:" + hashlib.sha256(f"kuaidi100|{raw}|{at.isoformat()}+00:00".encode()).hexdigest()[:40]


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


def _weighted(weights: dict[str, int]) -> Callable[[random.Random], str]:
    keys = list(weights)
    cum = []
    total = 0
    for k in keys:
        total += weights[k]
        cum.append(total)
    return lambda rng: keys[bisect.bisect_right(cum, rng.random() * total)]


# -- the policy, memoized ----------------------------------------------------------------------


def _facts_read(node: Any) -> list[str]:
    if node is None:
        return []
    if isinstance(node, policy_rules.BoolOp):
        return [f for item in node.items for f in _facts_read(item)]
    return [node.fact]


class PolicyMemo:
    """DEFAULT_POLICY evaluated rule by rule, each rule's result memoized on the values of the facts it reads.

    A rule's entry in the trace (and, when it matches, the explanation) depends on nothing else, so a ticket's
    trace is the cached entries of the rules up to the first match: what `policy.evaluate` and `json.dumps` give
    (Plan.expand_ticket compares them on a sample), at a fraction of the cost. List facts must be tuples here
    (hashable; JSON and the policy treat them alike)."""

    LIMIT = 50_000  # entries per rule; a rule reading the customer id would otherwise keep one per customer

    def __init__(self, policy: policy_rules.Policy) -> None:
        self.policy = policy
        self.alone = [policy_rules.Policy(rules=[rule], default=policy.default, lists=policy.lists) for rule in policy.rules]
        # The key of a rule: the values of the facts it reads (itemgetter of one name gives the value itself).
        reads = [tuple(dict.fromkeys(_facts_read(rule.condition))) for rule in policy.rules]
        assert not DEFERRED_FACTS & {f for r in reads for f in r}, "a rule reads a fact the skeleton leaves out"
        self.keys = [operator.itemgetter(*r) if r else (lambda facts: None) for r in reads]
        self.held: list[dict[Any, bool]] = [{} for _ in policy.rules]
        self.entries: list[dict[Any, tuple[str, str]]] = [{} for _ in policy.rules]
        self.unmatched = policy_rules.Decision(outcome=policy.default, rule=None, trace=[]).explain()

    def decide(self, facts: dict[str, Any]) -> int | None:
        """The index of the first rule that holds (None: the default)."""
        for i, key_of in enumerate(self.keys):
            key = key_of(facts)
            cache = self.held[i]
            held = cache.get(key)
            if held is None:
                if len(cache) >= self.LIMIT:
                    cache.clear()
                held = cache[key] = policy_rules.decide(self.alone[i], facts)[1] is not None
            if held:
                return i
        return None

    def trace(self, facts: dict[str, Any], matched: int | None) -> tuple[str, str]:
        """(the trace as JSON, the explanation) of policy.evaluate for a ticket whose first matching rule is `matched`."""
        parts = []
        explanation = self.unmatched
        for i in range(len(self.keys) if matched is None else matched + 1):
            key = self.keys[i](facts)
            cache = self.entries[i]
            entry = cache.get(key)
            if entry is None:
                if len(cache) >= self.LIMIT:
                    cache.clear()
                decision = policy_rules.evaluate(self.alone[i], facts)
                entry = cache[key] = (json.dumps(decision.trace[0]), decision.explain())
            parts.append(entry[0])
            if i == matched:
                explanation = entry[1]
        return "[" + ", ".join(parts) + "]", explanation


# -- the skeleton's records --------------------------------------------------------------------


@dataclass(slots=True)
class OrderPlan:
    oid: int
    customer: int
    items: list[tuple[int, Sku, int]]  # (order item id, sku, quantity)
    placed: datetime
    delivered: datetime | None
    session: Any  # (id, host, categories, started, external id) or None
    paid: int
    requested: datetime
    shipment: ShipmentPlan


@dataclass(slots=True)
class ShipmentPlan:
    sid: int
    order_id: int
    ticket_id: int | None
    direction: str
    created: datetime | None  # None: the outbound parcel, whose times the expansion draws
    events: list[tuple[str, str, datetime]]  # (raw status, status, occurred) that happened by the anchor
    first_tracking: int  # id of the first tracking event


@dataclass(slots=True)
class TicketPlan:
    tid: int
    number: str
    order: OrderPlan
    reason: str
    kind: str
    amount: int
    requested: datetime
    received: datetime
    n_evidence: int
    claimed: list[tuple[int, Sku]]
    facts: dict[str, Any]
    matched: int | None  # the policy rule that decided (index), None for the default
    outcome: policy_rules.Outcome
    note: str  # appended to the explanation when an automatic decision is not possible for the kind
    steps: list[tuple[str, str, str, datetime, str]]  # (action, from, to, at, actor kind) that happened by the anchor
    status: str
    refunded: int  # fen
    stamps: dict[str, datetime | None]
    sla: SlaClock
    first_event: int
    first_sla_event: int
    feedback: list[tuple[Sku, str, str, int]]  # (product, category, team, min_repeat) routed
    first_feedback_item: int
    ticket_item: int | None
    shipments: list[ShipmentPlan]  # return and replacement parcels


@dataclass(slots=True)
class Lifecycle:
    steps: list[tuple[str, str, str, datetime, str]]  # (action, from, to, at, actor kind)
    status: str
    stamps: dict[str, datetime | None]  # the ticket's state-entry columns
    sla: SlaClock
    parcels: list[tuple[str, datetime, list[tuple[str, str, datetime]]]]  # (direction, created, events)


@dataclass
class Counters:
    """The last id used per table (the skeleton hands them out in time order)."""

    order: int = 0
    item: int = 0
    ticket: int = 0
    ticket_item: int = 0
    event: int = 0
    shipment: int = 0
    tracking: int = 0
    feedback_item: int = 0
    sla_event: int = 0


# -- the plan --------------------------------------------------------------------------------


class Plan:
    def __init__(self, *, tickets: int, seed: int, anchor: datetime, enc: Encoder, orders_without_ticket: float = 0.1,
                 sla_policy_id: int = 1, block_tickets: int = BLOCK_TICKETS) -> None:
        self.n = tickets
        self.block_tickets = block_tickets
        self.seed = seed
        self.sla_policy_id = sla_policy_id
        self.rng = random.Random(seed)  # the skeleton's draws, in time order
        self.anchor = anchor  # naive UTC; nothing happens after it
        self.start = anchor - timedelta(days=DAYS)
        self.enc = enc
        self.extra_orders = orders_without_ticket
        self.c = Counters()
        self.numbers: dict[date, int] = {}  # last ticket number per Asia/Shanghai day
        self.number_prefix: dict[date, str] = {}
        self.local_day: dict[tuple[int, int, int, int], date] = {}  # UTC hour -> Asia/Shanghai day
        self.encoded: dict[datetime, Any] = {}  # per ticket: its times, encoded once (tsm)
        self.catalogue = _catalogue()
        self.categories = list(self.catalogue)
        self.hosts = list(demo.HOSTS.items())
        self.reason = _weighted(demo.BASE_REASONS)
        self.kind_for = {r: _weighted(w) for r, w in demo.KINDS_BY_REASON.items()}
        self.variant = _weighted(dict(VARIANTS))
        self.carrier = _weighted(demo.CARRIER_WEIGHTS)
        self.policy = PolicyMemo(DEFAULT_POLICY)
        self.n_customers = max(50, tickets // 3)
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
        self.day_counts = self._day_counts()
        self.blocks = self._blocks()
        self.sessions = self._sessions()
        # What order() picks from: (id, host, categories, started, external id) per day.
        self.sessions_by_day: dict[int, list[tuple[int, str, tuple[str, ...], datetime, str]]] = {}
        for s in self.sessions:
            self.sessions_by_day.setdefault(s[6], []).append(s[:5])

    # -- the calendar ---------------------------------------------------------------------------

    def _day_counts(self) -> list[int]:
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

    def _blocks(self) -> list[range]:
        """Consecutive days of about `block_tickets` tickets each (the data does not depend on it)."""
        blocks: list[range] = []
        first, tickets = 0, 0
        for d, count in enumerate(self.day_counts):
            tickets += count
            if tickets >= self.block_tickets or d == DAYS - 1:
                blocks.append(range(first, d + 1))
                first, tickets = d + 1, 0
        return blocks

    # -- reference data (each from its own generator: the skeleton does not depend on writing it) -------

    def _sessions(self) -> list[tuple[int, str, tuple[str, ...], datetime, str, str, int]]:
        """(id, host, categories, started, external id, title, day) of every live session, from 15 days before the start."""
        rng = random.Random(f"{self.seed}:sessions")
        out = []
        for d in range(-15, DAYS + 1):
            day = self.start + timedelta(days=d)
            for h, (host, cats) in enumerate(self.hosts):
                if rng.random() < 0.55:
                    started = day.replace(hour=11, minute=0, second=0, microsecond=0) + timedelta(minutes=rng.randrange(0, 240))
                    title = rng.choice(demo.TITLES[cats[0]])
                    out.append((len(out) + 1, host, cats, started, f"LS-{day:%Y%m%d}-{h + 1}", title, d))
        return out

    def reference_rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """customers and live_sessions."""
        ts, rng = self.enc.ts, random.Random(f"{self.seed}:customers")
        customers = []
        for i in range(1, self.n_customers + 1):
            created = self.start - timedelta(days=30) + timedelta(seconds=rng.randrange(DAYS * 86400))
            name = rng.choice(demo.SURNAMES) + "*" if rng.random() < 0.5 else rng.choice(demo.NICKNAMES)
            customers.append((i, f"DYU{i:010d}", name, ts(created)))
        sessions = [(sid, external, host, title, ts(started), ts(started + timedelta(hours=3)))
                    for sid, host, _cats, started, external, title, _day in self.sessions]
        return {"customers": customers, "live_sessions": sessions}

    # -- the walk -------------------------------------------------------------------------------

    def walk(self, owned: set[int]) -> Iterator[tuple[int, int, dict[str, list[tuple[Any, ...]]]]]:
        """Run the skeleton over every day up to the last owned block and yield (block, tickets in it, rows) for
        each owned block. The owner of the last block also writes ticket_number_counters."""
        rng = self.rng
        last = max(owned, default=-1)
        swept = 0
        for b, days in enumerate(self.blocks):
            if b > last:
                break
            own = b in owned
            for d in days:
                day = self.start + timedelta(days=d)
                xr = random.Random(f"{self.seed}:day:{d}") if own else None
                times = sorted(rng.randrange(86400 * 1_000_000) for _ in range(self.day_counts[d]))
                for us in times:
                    requested = day + timedelta(microseconds=us)
                    t = self.ticket(requested)
                    extra = self.order(requested, delivered_ok=True) if rng.random() < self.extra_orders else None
                    if xr is not None:
                        self.expand_ticket(t, xr)
                        if extra is not None:
                            self.expand_order(extra, xr)
                if d - swept >= SWEEP_DAYS:
                    self._sweep(day)
                    swept = d
            if own:
                if b == len(self.blocks) - 1:
                    for day_, last_number in sorted(self.numbers.items()):
                        self.rows["ticket_number_counters"].append((self.enc.day(day_), last_number))
                yield b, sum(self.day_counts[d] for d in days), self.take()

    def take(self) -> dict[str, list[tuple[Any, ...]]]:
        rows, self.rows = self.rows, {t: [] for t in COLUMNS}
        for t, r in rows.items():
            self.counts[t] += len(r)
        return rows

    def _sweep(self, now: datetime) -> None:
        """Forget history no fact can read any more (bounded memory at a million tickets)."""
        d90 = now - timedelta(days=91)
        for cust in [c for c, hist in self.history.items() if not hist or hist[-1][0] < d90]:
            del self.history[cust]
        d30 = now - REPEAT_WINDOW - timedelta(days=1)
        for pid in [p for p, times in self.size_requests.items() if times and times[-1] < d30]:
            del self.size_requests[pid]

    # -- the skeleton ---------------------------------------------------------------------------

    def order(self, requested: datetime, *, delivered_ok: bool) -> OrderPlan:
        """One order placed a few days before `requested`, with its outbound parcel."""
        rng, c = self.rng, self.c
        rnd = rng.random
        lag = timedelta(0, (2.0 + 7.0 * rnd()) * 86400.0)
        target = requested - lag
        todays = self.sessions_by_day.get((target - self.start).days) or []
        session = rng.choice(todays) if todays and rng.random() < 0.85 else None
        if session is not None:
            placed = session[3] + timedelta(seconds=rng.randrange(3 * 3600))
            cats = session[2]
        else:
            placed = target
            cats = (rng.choice(self.categories),)
        delivered = placed + (requested - placed) * (0.3 + 0.5 * rnd()) if delivered_ok else None
        # A few loyal customers buy a lot.
        cust = 1 + int(self.n_customers * rng.random() ** 1.6) % self.n_customers
        c.order += 1
        oid = c.order
        n_items = 1 if rng.random() < 0.6 else (2 if rng.random() < 0.75 else 3)
        items: list[tuple[int, Sku, int]] = []
        seen = set()
        for _ in range(n_items):
            sku = rng.choice(self.catalogue[rng.choice(cats)])
            if sku.sku in seen:
                continue
            seen.add(sku.sku)
            qty = 1 if rng.random() < 0.85 else 2
            c.item += 1
            items.append((c.item, sku, qty))
        paid = sum(s.price_fen * q for _, s, q in items)
        # Outbound parcel: picked up, in transit (, out for delivery, signed for), all before the request. The
        # expansion draws the times; the skeleton only needs how many events there are.
        n_events = 4 if delivered is not None else 2
        outbound = ShipmentPlan(self._next_shipment(), oid, None, "outbound", None, [], c.tracking + 1)
        c.tracking += n_events
        return OrderPlan(oid, cust, items, placed, delivered, session, paid, requested, outbound)

    def _next_shipment(self) -> int:
        self.c.shipment += 1
        return self.c.shipment

    def _parcel(self, order_id: int, ticket_id: int, direction: str, created: datetime,
                events: list[tuple[str, str, datetime]]) -> ShipmentPlan:
        happened = [e for e in events if e[2] <= self.anchor]
        plan = ShipmentPlan(self._next_shipment(), order_id, ticket_id, direction, created, happened, self.c.tracking + 1)
        self.c.tracking += len(happened)
        return plan

    def ticket(self, requested: datetime) -> TicketPlan:
        rng, c = self.rng, self.c
        reason = self.reason(rng)
        kind = self.kind_for[reason](rng)
        order = self.order(requested, delivered_ok=not reason.startswith("logistics."))
        received = requested + timedelta(seconds=rng.randrange(1, 300))
        c.ticket += 1
        tid = c.ticket
        number = self._number(received)
        n_evidence = rng.choice((0, 1, 1, 2, 3))
        iid, sku, _qty = order.items[0]
        amount = 0 if kind == "complaint" else sku.price_fen
        claimed = [(iid, sku)] if kind != "complaint" else [(i, s) for i, s, _ in order.items]
        # The intake decision: the facts gather_facts would see, evaluated by the real default policy.
        facts = self.facts(kind, reason, amount, order, claimed, requested, n_evidence > 0)
        matched, outcome, note, path = self._decide(kind, facts)
        life = self._lifecycle(path, requested, received, number)
        stamps = life.stamps
        self.history.setdefault(order.customer, []).append((requested, stamps["refunded_at"], stamps["rejected_at"]))

        first_event = c.event + 1
        c.event += 1 + len(life.steps)  # open, then the steps
        first_sla_event = c.sla_event + 1
        c.sla_event += len(life.sla.rows)
        feedback = self.routed(reason, requested, claimed)
        first_feedback_item = c.feedback_item + 1
        c.feedback_item += len(feedback)
        ticket_item = None
        if kind != "complaint":
            c.ticket_item += 1
            ticket_item = c.ticket_item
        shipments = [self._parcel(order.oid, tid, direction, created, events) for direction, created, events in life.parcels]
        refunded = amount if any(step[0] == "confirm_refund" for step in life.steps) else 0
        return TicketPlan(tid, number, order, reason, kind, amount, requested, received, n_evidence, claimed, facts, matched,
                          outcome, note, life.steps, life.status, refunded, stamps, life.sla, first_event, first_sla_event,
                          feedback, first_feedback_item, ticket_item, shipments)

    def _number(self, received: datetime) -> str:
        """AS-YYYYMMDD-NNNNNN, numbered per Asia/Shanghai day of receipt."""
        hour = (received.year, received.month, received.day, received.hour)
        day = self.local_day.get(hour)
        if day is None:  # one zone conversion per hour: offsets only change on the hour
            day = self.local_day[hour] = received.replace(tzinfo=UTC).astimezone(SHANGHAI).date()
        seq = self.numbers[day] = self.numbers.get(day, 0) + 1
        prefix = self.number_prefix.get(day)
        if prefix is None:
            prefix = self.number_prefix[day] = f"AS-{day:%Y%m%d}-"
        return f"{prefix}{seq:06d}"

    def _decide(self, kind: str, facts: dict[str, Any]) -> tuple[int | None, policy_rules.Outcome, str, tuple[tuple[str, str, str], ...]]:
        """(matched rule, outcome, note on the explanation, lifecycle path): the policy's decision, and the path an
        automatic decision takes, or a person's (drawn) when the ticket goes to a queue."""
        matched = self.policy.decide(facts)
        outcome = DEFAULT_POLICY.default if matched is None else DEFAULT_POLICY.rules[matched].outcome
        if outcome.decision in ("approve", "fast_refund"):
            auto_action = "auto_approve" if outcome.decision == "approve" else "fast_refund"
            if ("requested", auto_action) in workflow.TRANSITIONS[kind]:
                return matched, outcome, "", PATHS[(kind, auto_action)]
            outcome = DEFAULT_POLICY.default
            note = f" · {auto_action} is not possible for {kind} → queue {outcome.queue}"
            return matched, outcome, note, PATHS[(kind, self.variant(self.rng))]
        return matched, outcome, "", PATHS[(kind, self.variant(self.rng))]

    def _lifecycle(self, path: tuple[tuple[str, str, str], ...], requested: datetime, received: datetime,
                   number: str) -> Lifecycle:
        """The steps of `path` as far as they have happened by the anchor, their stamps, the SLA replay, and the
        return / replacement parcels they created."""
        rnd, anchor = self.rng.random, self.anchor
        slow = rnd() < 0.01  # the backlog: some requests wait days for a person
        life = Lifecycle([], "requested", dict.fromkeys(STAMP_COLUMNS), SlaClock(requested, number), [])
        stamps, sla = life.stamps, life.sla
        at = received
        parcel: list[tuple[str, str, datetime]] = []
        responded = False
        for action, src, dst in path:
            who, lo, hi = STEP_INFO[action]
            hours = lo + (hi - lo) * rnd()  # rng.uniform(lo, hi), inlined: this loop is the skeleton's hottest
            if src == "pending_review":
                if who == AGENT and rnd() < 0.1:
                    hours = 2 + 28 * rnd()
                if slow:
                    hours = 24 + 456 * rnd()
            at = at + timedelta(0, hours * 3600.0)  # timedelta(hours=...) is twice as slow
            if at > anchor:
                break
            if action == "add_return_tracking" or action == "ship_replacement":
                # The parcel is picked up and scanned in transit; its delivery is the step that follows.
                parcel = [("1", "in_transit", at + timedelta(0, (2 + 10 * rnd()) * 3600.0)),
                          ("0", "in_transit", at + timedelta(0, (14 + (16 if action == "add_return_tracking" else 8) * rnd()) * 3600.0))]
                life.parcels.append(("return" if action == "add_return_tracking" else "replacement", at, parcel))
            elif action == "return_delivered" or action == "replacement_delivered":
                parcel.append(("3", "delivered", at))
            life.steps.append((action, src, dst, at, who))
            # TicketService._move: a person's action (or an automatic decision) is the first response.
            first_response = not responded and (
                action in ("auto_approve", "fast_refund") or (who in (AGENT, WAREHOUSE) and action not in NOT_A_RESPONSE))
            if first_response:
                stamps["first_response_at"] = at
                responded = True
            if action in ("approve", "auto_approve"):  # TicketService.APPROVALS
                stamps["approved_at"] = at
            if dst != src and dst in STAMPS:
                stamps[STAMPS[dst]] = at
            sla.transition(src, dst, at, first_response)
            life.status = dst
        sla.finish(life.status, anchor)
        return life

    def facts(self, kind: str, reason: str, amount: int, order: OrderPlan, claimed: list[tuple[int, Sku]], at: datetime,
              evidence: bool) -> dict[str, Any]:
        """aftersales.tickets.facts.gather_facts, from the plan instead of queries (same keys, order and encoding)."""
        d30, d90 = at - timedelta(days=30), at - timedelta(days=90)
        hist = self.history.get(order.customer)
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
        categories = tuple(sorted({s.category for _, s in claimed}))
        delivered = order.delivered
        live = order.session
        return {
            "kind": kind,
            "reason": reason,
            "reason_group": reason.split(".")[0],
            "quality": QUALITY[reason],
            "amount": f"{amount // 100}.{amount % 100:02d}",  # str(Decimal fen / 100) of a money column
            "amount_share": None,  # DEFERRED_FACTS: set by complete_facts for the tickets this worker writes
            "categories": categories,
            "products": tuple(sorted({s.product_id for _, s in claimed})),
            "shipped": True,  # every generated order has its outbound parcel before the request
            "delivered": delivered is not None,
            "days_since_signed": None,
            "window_open": no_reason_window_open(delivered.replace(tzinfo=UTC) if delivered else None, at.replace(tzinfo=UTC), SHANGHAI),
            "excluded": bool(NO_REASON_EXCLUDED_CATEGORIES & set(categories)),
            "evidence": evidence,
            "requests_30d": r30, "requests_90d": r90, "refunds_30d": f30, "refunds_90d": f90, "rejections_90d": j90,
            "session": live[4] if live else None,
            "host": live[1] if live else None,
            "customer": f"DYU{order.customer:010d}",
        }

    @staticmethod
    def complete_facts(t: TicketPlan) -> dict[str, Any]:
        """Fill in the DEFERRED_FACTS (no rule reads them; only the stored document shows them)."""
        facts, paid, delivered = t.facts, t.order.paid, t.order.delivered
        facts["amount_share"] = str((Decimal(t.amount) / Decimal(paid)).quantize(Decimal("0.0001")) if paid else Decimal("0"))
        facts["days_since_signed"] = round((t.requested - delivered).total_seconds() / 86400, 2) if delivered else None
        return facts

    def routed(self, reason: str, requested: datetime, claimed: list[tuple[int, Sku]]) -> list[tuple[Sku, str, str, int]]:
        """FeedbackService.record_ticket's routing under the default rules: one item per claimed product and team."""
        rules = RULES_BY_CATEGORY.get(reason)
        if not rules:
            return []
        if reason == "fit.size" and claimed:
            self.size_requests.setdefault(claimed[0][1].product_id, []).append(requested)
        out = []
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
                out.append((s, category, team, min_repeat))
        return out

    # -- the expansion --------------------------------------------------------------------------

    def expand_order(self, o: OrderPlan, xr: random.Random) -> None:
        ts = self.enc.ts
        placed, delivered, requested = o.placed, o.delivered, o.requested
        paid_at = placed + timedelta(seconds=xr.randrange(20, 300))
        if delivered is not None:
            shipped = placed + (delivered - placed) * xr.uniform(0.15, 0.4)
            events = [("1", "in_transit", shipped), ("0", "in_transit", shipped + (delivered - shipped) * 0.5),
                      ("5", "out_for_delivery", delivered - timedelta(0, xr.uniform(1, 5) * 3600.0)), ("3", "delivered", delivered)]
        else:
            shipped = placed + (requested - placed) * xr.uniform(0.05, 0.2)
            events = [("1", "in_transit", shipped), ("0", "in_transit", shipped + (requested - shipped) * 0.2)]
        placed_at = ts(placed)
        self.rows["orders"].append((
            o.oid, f"DY{5_000_000_000_000 + o.oid}", demo.SHOP, "douyin", o.customer, o.session[0] if o.session else None,
            o.paid, placed_at, ts(paid_at), ts(delivered), placed_at, ts(delivered or shipped),
        ))
        items = self.rows["order_items"]
        for iid, s, q in o.items:
            items.append((iid, o.oid, s.sku, s.product_id, s.name, s.category, q, s.price_fen))
        assert all(e[2] <= self.anchor for e in events)  # the skeleton counted them all
        o.shipment.events = events
        o.shipment.created = shipped
        self.expand_shipment(o.shipment, xr)

    def expand_shipment(self, p: ShipmentPlan, xr: random.Random) -> None:
        ts = self.enc.ts
        carrier = self.carrier(xr)
        number = f"{carrier}{7_000_000_000 + p.sid * 7 + xr.randrange(7)}"
        last = p.events[-1] if p.events else None
        delivered = next((e[2] for e in p.events if e[1] == "delivered"), None)
        self.rows["shipments"].append((
            p.sid, p.order_id, p.ticket_id, p.direction, carrier, number, last[1] if last else None, last[0] if last else None,
            "kuaidi100" if last else None, ts(last[2]) if last else None, ts(delivered), ts(p.created),
        ))
        city = xr.choice(demo.CITIES)
        rows = self.rows["tracking_events"]
        for k, (raw, status, at) in enumerate(p.events):
            rows.append((
                p.first_tracking + k, p.sid, carrier, number, "kuaidi100", raw, status, ts(at), city,
                TRACKING_TEXT[(city, carrier, status)], None, _digest(raw, at),
                ts(at + timedelta(0, xr.randrange(5, 600))),
            ))
        if p.sid % 997 == 1 and p.events:  # the inlined digest is the ingestion's own, checked on a sample
            raw, _status, at = p.events[0]
            assert _digest(raw, at) == _event_digest("kuaidi100", raw, at.replace(tzinfo=UTC)), "tracking dedupe key differs"

    def tsm(self, dt: datetime | None) -> Any:
        """enc.ts through the current ticket's memo: its times recur (timeline, state stamps, SLA events)."""
        if dt is None:
            return None
        encoded = self.encoded.get(dt)
        if encoded is None:
            encoded = self.encoded[dt] = self.enc.ts(dt)
        return encoded

    def expand_ticket(self, t: TicketPlan, xr: random.Random) -> None:
        self.encoded.clear()
        ts, rows = self.tsm, self.rows
        tid, kind, outcome, stamps, sla = t.tid, t.kind, t.outcome, t.stamps, t.sla
        self.expand_order(t.order, xr)
        sku = t.order.items[0][1]
        description = xr.choice(demo.DESCRIPTIONS.get(t.reason) or ["{p}"]).format(p=sku.name, v=sku.name)
        evidence = [f"https://img.example.com/as/{tid}-{i}.jpg" for i in range(t.n_evidence)]
        evidence_json = '["' + '", "'.join(evidence) + '"]' if evidence else "[]"  # json.dumps of plain ASCII URLs
        rule, explanation = self.expand_decision(t)
        self.expand_timeline(t, description, rule, explanation, xr)
        self.status_counts[t.status] = self.status_counts.get(t.status, 0) + 1
        queue_status = (outcome.queue or "-", t.status)
        self.queue_status[queue_status] = self.queue_status.get(queue_status, 0) + 1
        order = t.order
        rows["tickets"].append((
            tid, t.number, f"DYAS{9_000_000_000 + tid}", order.oid, order.customer, kind, t.reason, t.status,
            t.amount, t.refunded, description, evidence_json, outcome.queue,
            min(outcome.priority + sla.escalations, 9), None,
            ts(t.requested), ts(t.received), ts(t.steps[-1][3] if t.steps else t.received), ts(stamps["first_response_at"]),
            ts(stamps["approved_at"]), ts(stamps["rejected_at"]), ts(stamps["return_received_at"]), ts(stamps["refunded_at"]),
            ts(stamps["replacement_shipped_at"]), ts(stamps["closed_at"]), ts(stamps["cancelled_at"]), 1 + len(t.steps),
            *sla.columns(self.enc, ts, self.sla_policy_id), POLICY_VERSION,
        ))
        if kind != "complaint":
            rows["ticket_items"].append((t.ticket_item, tid, order.items[0][0], sku.sku, 1, sku.product_id, t.reason, ts(t.requested)))
        sla_rows = rows["sla_events"]
        for k, (metric, event, at, cause, threshold, key) in enumerate(sla.rows):
            sla_rows.append((t.first_sla_event + k, tid, metric, event, ts(at), cause, threshold, key, "{}"))
        self.expand_feedback(t, description, evidence_json, xr)
        for parcel in t.shipments:
            self.expand_shipment(parcel, xr)

    def expand_decision(self, t: TicketPlan) -> tuple[str | None, str]:
        """The ticket_decisions row; returns (rule, explanation) for the timeline."""
        outcome = t.outcome
        facts = self.complete_facts(t)
        trace, explanation = self.policy.trace(facts, t.matched)
        explanation += t.note
        rule = None if t.matched is None else DEFAULT_POLICY.rules[t.matched].name
        if t.tid % 997 == 1:
            self._check_decision(t, rule, trace, explanation)
        self.decision_counts[outcome.decision] = self.decision_counts.get(outcome.decision, 0) + 1
        self.rows["ticket_decisions"].append((
            t.tid, POLICY_VERSION, outcome.decision, rule, outcome.queue, outcome.priority, outcome.suggestion,
            self.enc.json(facts), trace, explanation, self.tsm(t.received),
        ))
        return rule, explanation

    def expand_timeline(self, t: TicketPlan, description: str, rule: str | None, explanation: str, xr: random.Random) -> None:
        """ticket_events: open, then the lifecycle steps with their actors, notes and data."""
        ts, js, tid, kind = self.tsm, self.enc.json, t.tid, t.kind
        decided = {"policy_version": POLICY_VERSION, "rule": rule, "suggestion": t.outcome.suggestion}
        money = f"{t.amount // 100}.{t.amount % 100:02d}"
        agent = self.agent_actors[xr.randrange(N_AGENTS)]
        events = self.rows["ticket_events"]
        eid = t.first_event
        events.append((eid, tid, ts(t.requested), "token:douyin-open-platform", "open", None, "requested", description,
                       f'{{"received_at": "{t.received.isoformat()}+00:00"}}'))  # json.dumps of the aware ISO time
        returning = False
        for action, src, dst, at, who in t.steps:
            data = "{}"
            note = ""
            if action == "route_to_review":
                data = js({**decided, "queue": t.outcome.queue})
                note = explanation
            elif action in ("auto_approve", "fast_refund"):
                data = js(decided)
                note = explanation
            elif action == "approve":
                data = js({"approved_amount": money})
                note = xr.choice(demo.APPROVE_NOTES[kind])
            elif action in NOTES:
                note = xr.choice(NOTES[action])
            elif action == "confirm_refund":
                data = js({"amount": money, "refund_reference": f"FIN-{tid}"})
            elif action == "record_inspection":
                data = '{"passed": true}'
            elif action == "add_return_tracking":
                returning = True
            elif action == "return_delivered" and returning:
                data = js({"raw_status": "3", "source": "kuaidi100", "occurred_at": at.replace(tzinfo=UTC).isoformat()})
            eid += 1
            events.append((eid, tid, ts(at), agent if who == AGENT else FIXED_ACTORS[who], action, src, dst, note, data))

    def _check_decision(self, t: TicketPlan, rule: str | None, trace: str, explanation: str) -> None:
        """The memoized policy must give exactly what policy.evaluate gives (checked on every 997th ticket)."""
        decision = policy_rules.evaluate(DEFAULT_POLICY, t.facts)
        expected = decision.explain() + t.note
        assert (rule, trace, explanation) == (decision.rule, json.dumps(decision.trace), expected), (
            f"ticket {t.tid}: the memoized policy evaluation differs from policy.evaluate")
        assert t.note or decision.outcome == t.outcome

    def expand_feedback(self, t: TicketPlan, description: str, evidence_json: str, xr: random.Random) -> None:
        """FeedbackService.record_ticket: the record (category from the reason code, text suggestion beside it)
        and the items the skeleton routed."""
        ts, js = self.tsm, self.enc.json
        received = t.received
        suggestion = self.suggestions.get(description)
        if suggestion is None:
            found = classify.suggest(description)
            suggestion = self.suggestions[description] = (found.category, found.confidence, js(list(found.terms)))
        self.rows["feedback_records"].append((t.tid, t.reason, "reason_code", suggestion[0], suggestion[1], suggestion[2],
                                              None, None, None, ts(received)))
        if not t.feedback:
            return
        live = t.order.session
        offset = int((t.order.placed - live[3]).total_seconds()) if live else None
        rows = self.rows["feedback_items"]
        old = received < self.anchor - ACK_AFTER
        for k, (s, category, team, min_repeat) in enumerate(t.feedback):
            status, ack_at, ack_by = "new", None, None
            if old and xr.random() < 0.85:
                status, ack_at, ack_by = "acknowledged", received + timedelta(0, xr.uniform(2, 72) * 3600.0), f"user:{team}-lead"
            rows.append((
                t.first_feedback_item + k, t.tid, team, category, s.product_id, s.name, s.sku, s.category,
                live[0] if live else None, live[1] if live else None, description, evidence_json,
                offset if offset and offset >= 0 else None, BECAUSE[(category, team, min_repeat)], status, ts(received),
                ts(ack_at), ack_by, None,
            ))


# The warnings of one metric fire in threshold order (their moments ascend): what has fired is a prefix.
FR_ALERTS = tuple((timedelta(seconds=f * SLA_FIRST_RESPONSE), f, f"first_response:{f}",
                   "breach" if f >= 1.0 else "at_risk", f"{int(f * 100)} % of the first_response target") for f in SLA_THRESHOLDS)
RES_ALERTS = tuple((f * SLA_RESOLUTION, f, f"resolution:{f}",
                    "breach" if f >= 1.0 else "at_risk", f"{int(f * 100)} % of the resolution target") for f in SLA_THRESHOLDS)
SLA_RESOLUTION_DELTA = timedelta(seconds=SLA_RESOLUTION)
UNKNOWN = object()
FIRED_JSON: dict[tuple[str, ...], str] = {}  # a handful of distinct sla_alerts_fired lists
SLA_FIRST_RESPONSE_DELTA = timedelta(seconds=SLA_FIRST_RESPONSE)


class SlaClock:
    """aftersales.sla.service.SlaService (start, on_transition) and sla.tasks.fire_due_alerts replayed for one
    ticket under the default 24/7 policy: the sla_events (metric, event, at, cause, threshold, dedupe key) and
    the ticket's SLA columns at the anchor."""

    __slots__ = ("requested", "rows", "elapsed", "running", "due", "fr_due", "fr_seconds", "fr_met", "res_seconds",
                 "res_met", "fired", "fr_next", "res_next", "next_alert", "breached", "pending")

    def __init__(self, requested: datetime, number: str) -> None:
        self.requested = requested
        self.elapsed = 0.0
        self.running: datetime | None = requested
        self.due: datetime | None = requested + SLA_RESOLUTION_DELTA
        self.fr_due: datetime | None = requested + SLA_FIRST_RESPONSE_DELTA
        self.fr_seconds: float | None = None
        self.fr_met: bool | None = None
        self.res_seconds: float | None = None
        self.res_met: bool | None = None
        self.fired: list[str] = []
        self.fr_next = self.res_next = 0  # index of the next warning per metric
        self.next_alert: datetime | None = None
        self.breached = False  # the resolution breach warning fired (tickets.resolution_breached)
        self.pending: Any = UNKNOWN  # when the next warning falls due (None: never), recomputed after each change
        cause = f"request {number}"
        self.rows: list[tuple[str, str, datetime, str, float | None, str | None]] = [
            ("resolution", "start", requested, cause, None, None), ("first_response", "start", requested, cause, None, None)]

    @property
    def escalations(self) -> int:
        """Each warning raised the priority by one (sla.tasks._escalate)."""
        return len(self.fired)

    def event(self, metric: str, event: str, at: datetime, cause: str) -> None:
        self.rows.append((metric, event, at, cause, None, None))

    def _res_moment(self, i: int) -> datetime:
        assert self.running is not None
        return self.running + timedelta(0, max(RES_ALERTS[i][0] - self.elapsed, 0.0))

    def _next_warning(self) -> datetime | None:
        moments = []
        if self.fr_seconds is None and self.fr_due is not None and self.fr_next < len(FR_ALERTS):
            moments.append(self.requested + FR_ALERTS[self.fr_next][0])
        if self.running is not None and self.res_next < len(RES_ALERTS):
            moments.append(self._res_moment(self.res_next))
        return min(moments) if moments else None

    def alerts_until(self, until: datetime) -> None:
        """The worker's warnings that fell due before `until`, each once, in time order (escalating the priority)."""
        if self.pending is UNKNOWN:
            self.pending = self._next_warning()
        if self.pending is None or self.pending > until:
            return  # most transitions: nothing due
        due: list[tuple[datetime, str, int]] = []
        if self.fr_seconds is None and self.fr_due is not None:
            i = self.fr_next
            while i < len(FR_ALERTS) and self.requested + FR_ALERTS[i][0] <= until:
                due.append((self.requested + FR_ALERTS[i][0], "first_response", i))
                i += 1
        if self.running is not None:
            i = self.res_next
            while i < len(RES_ALERTS) and self._res_moment(i) <= until:
                due.append((self._res_moment(i), "resolution", i))
                i += 1
        for moment, metric, i in sorted(due):
            _delay, f, key, event, cause = (FR_ALERTS if metric == "first_response" else RES_ALERTS)[i]
            if metric == "first_response":
                self.fr_next = i + 1
            else:
                self.res_next = i + 1
                self.breached = self.breached or event == "breach"
            self.fired.append(key)
            self.rows.append((metric, event, moment, cause, f, key))
        self.pending = UNKNOWN

    def stop_running(self, at: datetime, event: str, cause: str) -> None:
        if self.running is not None:
            self.elapsed += (at - self.running).total_seconds()
            self.running = None
        self.event("resolution", event, at, cause)

    def transition(self, src: str, dst: str, at: datetime, first_response: bool) -> None:
        self.alerts_until(at)
        if first_response and self.fr_seconds is None:
            self.pending = UNKNOWN  # every branch that starts or stops a clock moves the next warning
            seconds = (at - self.requested).total_seconds()
            self.event("first_response", "first_response", at, f"first response ({dst})")
            self.fr_seconds, self.fr_met, self.fr_due = seconds, seconds <= SLA_FIRST_RESPONSE, None
        if dst in FINAL and src not in FINAL:
            self.pending = UNKNOWN
            self.stop_running(at, "stop", f"ticket {dst}")
            self.res_seconds = self.elapsed
            self.res_met = self.elapsed <= SLA_RESOLUTION if dst == "closed" else None
            self.due = None
            if self.fr_seconds is None:
                self.event("first_response", "stop", at, f"ticket {dst}")
                self.fr_due = None
        elif src not in SLA_PAUSE and dst in SLA_PAUSE:
            self.pending = UNKNOWN
            self.stop_running(at, "pause", f"waiting: {dst}")
            self.due = None
        elif src in SLA_PAUSE and dst not in SLA_PAUSE:
            self.pending = UNKNOWN
            self.event("resolution", "resume", at, f"back with the merchant: {dst}")
            self.running = at
            self.due = at + timedelta(seconds=max(SLA_RESOLUTION - self.elapsed, 0.0))

    def finish(self, status: str, anchor: datetime) -> None:
        if status not in FINAL:
            self.alerts_until(anchor)
        self.next_alert = self._next_warning()  # None once final: both clocks are stopped

    def columns(self, enc: Encoder, ts: Callable[[datetime | None], Any], policy_id: int) -> tuple[Any, ...]:
        """sla_due_at, sla_policy_id, first_response_due_at, sla_elapsed_seconds, sla_running_since, sla_next_alert_at,
        sla_alerts_fired, resolution_seconds, resolution_met, first_response_seconds, first_response_met,
        resolution_breached."""
        fired = FIRED_JSON.get(tuple(self.fired))
        if fired is None:
            fired = FIRED_JSON[tuple(self.fired)] = enc.json(self.fired)
        return (ts(self.due), policy_id, ts(self.fr_due), self.elapsed, ts(self.running), ts(self.next_alert), fired,
                self.res_seconds, enc.bool(self.res_met), self.fr_seconds, enc.bool(self.fr_met), enc.bool(self.breached))
