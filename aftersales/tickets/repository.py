"""Queries over tickets: the filtered keyset listing and the whole chain of one ticket.

Both are hot reads (the agent's queue and ticket screens), so they select plain columns with Core
instead of loading ORM entities, and the chain comes back from the database as ONE JSON document
(one statement instead of eleven: on SQLite every statement is several thread hops of aiosqlite).
"""

from __future__ import annotations

import base64
import functools
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import JSON, Boolean, Select, String, Text, bindparam, case, cast, func, literal_column, select, text, tuple_, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from aftersales.auth.models import User
from aftersales.clock import ensure_utc
from aftersales.db import Money, UTCDateTime, in_bound
from aftersales.errors import InvalidInput, NotFound
from aftersales.feedback.models import FeedbackRecord
from aftersales.orders.models import Customer, LiveSession, Order, OrderItem, Shipment, TrackingEvent
from aftersales.orders.schemas import CustomerOut, LiveSessionOut, OrderItemOut, OrderOut, ShipmentOut, TrackingEventOut
from aftersales.schemas import MAX_DB_ID, check_id
from aftersales.sqlite_inline import OFFLOAD_MARK
from aftersales.tickets import workflow
from aftersales.tickets.models import OPEN_TICKET_SQL, Queue, Ticket, TicketDecision, TicketItem, TimelineEvent
from aftersales.tickets.schemas import (
    ChainDoc, ChainEntry, ClaimedItem, DecisionDoc, FeedbackDoc, HistoryDoc, PersonDoc, QueueDoc, TicketDoc, TimelineEventOut,
)

# sort parameter -> (column, descending). Tickets without an SLA due time (clock paused, or no SLA)
# come after all others in both directions of the SLA sort.
SORTS = {
    "-requested_at": ("requested_at", True),
    "requested_at": ("requested_at", False),
    "sla_due_at": ("sla_due_at", False),
    "-sla_due_at": ("sla_due_at", True),
}
DEFAULT_SORT = "-requested_at"
NOT_FINAL = frozenset(workflow.STATUSES) - workflow.FINAL_STATUSES


@dataclass
class TicketFilter:
    statuses: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    reason_codes: list[str] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)
    assignee_id: int | None = None
    unassigned: bool = False
    order_external_id: str | None = None
    customer_id: int | None = None
    requested_from: datetime | None = None
    requested_to: datetime | None = None
    sort: str = DEFAULT_SORT


# -- cursors ---------------------------------------------------------------------------------------


def encode_cursor(row: Any, sort: str = DEFAULT_SORT) -> str:
    """The position after `row` in the listing sorted by `sort`; the sort is part of the cursor."""
    column, _ = SORTS[sort]
    key = getattr(row, column)
    payload = [sort, ensure_utc(key).isoformat() if key is not None else None, row.id]
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str = DEFAULT_SORT) -> tuple[datetime | None, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        made_for, key, ticket_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if made_for not in SORTS or type(ticket_id) is not int or not 0 < ticket_id <= MAX_DB_ID:
            raise ValueError(made_for)
        if key is None and SORTS[made_for][0] != "sla_due_at":  # only the SLA sort has rows without a key
            raise ValueError(made_for)
        at = ensure_utc(datetime.fromisoformat(key)) if key is not None else None
    except (ValueError, TypeError) as exc:
        raise InvalidInput.on("cursor", "is not a cursor this service handed out") from exc
    if made_for != sort:
        raise InvalidInput.on("cursor", f"belongs to sort={made_for}, not sort={sort}; start again from the first page")
    return at, ticket_id


# -- the listing -----------------------------------------------------------------------------------


class TicketRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def list_page(
        self, flt: TicketFilter, *, limit: int, cursor: str | None, queue_names: bool = False
    ) -> tuple[list[Any], str | None]:
        """One page of rows (LIST_COLUMNS, and with `queue_names` the queue's queue_name_zh and
        queue_name_en) and the cursor of the next page, if there is one."""
        after = decode_cursor(cursor, flt.sort) if cursor else None
        key, descending = SORTS[flt.sort]
        conditions, params = _filter(flt)
        if key == "requested_at":
            rows = await self._keyset(conditions, params, key, descending, after, limit + 1, queue_names)
        else:
            rows = await self._sla_keyset(conditions, params, descending, after, limit + 1, queue_names)
        next_cursor = encode_cursor(rows[limit - 1], flt.sort) if len(rows) > limit else None
        return rows[:limit], next_cursor

    async def _keyset(
        self, conditions: tuple[str, ...], params: dict[str, Any], key: str, descending: bool,
        after: tuple[Any, int] | None, n: int, names: bool,
    ) -> list[Any]:
        statement = _listing_statement(conditions, key, descending, after is not None, names)
        values = {**params, "limit": n}
        if after is not None:
            values["after_id"] = after[1]
            if after[0] is not None:
                values["after_key"] = after[0]
        return list((await self.session.execute(statement, values)).all())

    async def _sla_keyset(
        self, conditions: tuple[str, ...], params: dict[str, Any], descending: bool, after: tuple[Any, int] | None,
        n: int, names: bool,
    ) -> list[Any]:
        """Tickets with a due time by (sla_due_at, id), then those without one by id.

        Each part is its own keyset scan (a NULLS LAST order cannot be read from an index the same
        way on both databases). When one queue and one status are chosen -- an agent's queue --
        both parts are short range scans of ix_tickets_queue_status_due and run as one statement;
        otherwise each part is a sort, and the second only runs once the first runs out."""
        if after is not None and after[0] is None:  # the cursor is already among those without one
            return await self._keyset((*conditions, "no_due"), params, "sla_due_at", descending, after, n, names)
        if len(params.get("queues", ())) == 1 and len(params.get("statuses", ())) == 1:
            values = {**params, "limit": n}
            if after is not None:
                values.update(after_key=after[0], after_id=after[1])
            statement = _sla_statement(conditions, descending, after is not None, names)
            return list((await self.session.execute(statement, values)).all())
        rows = await self._keyset((*conditions, "due"), params, "sla_due_at", descending, after, n, names)
        if len(rows) < n:
            rows += await self._keyset((*conditions, "no_due"), params, "sla_due_at", descending, None, n - len(rows), names)
        return rows

    async def load_chain(self, ticket_id: int, *, page: bool = False, people: bool = False) -> "TicketChain":
        """The ticket with its whole chain in one statement. `page` adds what the ticket page shows
        beside it (customer history, owner, feedback, queue names), `people` the assignable users."""
        check_id(ticket_id, "ticket")
        variant = "people" if people else "page" if page else "api"
        statement = _chain_statement(self.session.get_bind().dialect.name, variant)
        raw = (await self.session.execute(statement, {"ticket_id": ticket_id})).scalar_one_or_none()
        if raw is None:
            raise NotFound(f"ticket {ticket_id} does not exist")
        return TicketChain(_decode_chain(raw))

    async def load_chains(self, ticket_ids: list[int]) -> dict[int, "TicketChain"]:
        """The API's chain of several tickets, from one statement (set-wise intake answers)."""
        if not ticket_ids:
            return {}
        statement = _chain_statement(self.session.get_bind().dialect.name, "api", many=True)
        rows = await self.session.execute(statement, {"ticket_ids": sorted(set(ticket_ids))})
        return {ticket_id: TicketChain(_decode_chain(raw)) for ticket_id, raw in rows}


# The listing's statements are built once per shape (which conditions apply, the sort, whether a
# cursor continues it) with every value a bound parameter: building and compiling a statement per
# request cost more than running it.
_T = Ticket.__table__
LIST_COLUMNS = tuple(_T.c[name] for name in (
    "id", "number", "status", "version", "kind", "reason_code", "order_id", "requested_amount", "refunded_amount",
    "queue", "priority", "assignee_id", "requested_at", "updated_at", "closed_at", "sla_due_at",
))


# Condition name -> the clause; a condition's values are bound under the same name.
_CONDITIONS: dict[str, Any] = {
    "statuses": lambda: in_bound(_T.c.status, "statuses"),
    # Literal SQL, as the partial indexes over open tickets spell it (see _status_filter).
    "open": lambda: text(OPEN_TICKET_SQL),
    "left_out": lambda: _T.c.status.not_in(bindparam("left_out", expanding=True)),
    "kinds": lambda: in_bound(_T.c.kind, "kinds"),
    "reason_codes": lambda: in_bound(_T.c.reason_code, "reason_codes"),
    "queues": lambda: in_bound(_T.c.queue, "queues"),
    "assignee_id": lambda: _T.c.assignee_id == bindparam("assignee_id"),
    "unassigned": lambda: _T.c.assignee_id.is_(None),
    "customer_id": lambda: _T.c.customer_id == bindparam("customer_id"),
    # An unknown order gives NULL, which matches no ticket.
    "order_external_id": lambda: _T.c.order_id == (
        select(Order.__table__.c.id).where(Order.__table__.c.external_id == bindparam("order_external_id")).scalar_subquery()
    ),
    "requested_from": lambda: _T.c.requested_at >= bindparam("requested_from"),
    "requested_to": lambda: _T.c.requested_at < bindparam("requested_to"),
    "due": lambda: _T.c.sla_due_at.is_not(None),
    "no_due": lambda: _T.c.sla_due_at.is_(None),
}


def _filter(flt: TicketFilter) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The filter as condition names and their bound values."""
    names, params = _status_filter(flt.statuses) if flt.statuses else ([], {})
    for name in ("kinds", "reason_codes", "queues", "assignee_id", "customer_id", "order_external_id",
                 "requested_from", "requested_to"):
        value = getattr(flt, name)
        if value not in (None, [], ""):
            names.append(name)
            params[name] = value
    if flt.unassigned:
        names.append("unassigned")
    return tuple(names), params


def _status_filter(statuses: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Several open statuses (the queue page's default is all of them) read the partial indexes
    over open tickets: the condition is spelled with literals, as the indexes are (a bound
    parameter defeats SQLite's partial-index matching), and the statuses left out are excluded
    rather than the chosen ones listed (an IN list sends PostgreSQL to a bitmap scan and a sort)."""
    chosen = set(statuses)
    if len(chosen) < 2 or not chosen <= NOT_FINAL:
        return ["statuses"], {"statuses": statuses}
    left_out = sorted(NOT_FINAL - chosen)
    return (["open", "left_out"], {"left_out": left_out}) if left_out else (["open"], {})


@functools.lru_cache(maxsize=256)
def _listing_statement(conditions: tuple[str, ...], key: str, descending: bool, after: bool, names: bool = False) -> Select[Any]:
    column, ticket_id = _T.c[key], _T.c.id
    query = select(*LIST_COLUMNS).where(*(_CONDITIONS[name]() for name in conditions))
    if names:  # the queue page shows queue names: joined here rather than read by another statement
        queues = Queue.__table__
        query = query.outerjoin(queues, queues.c.key == _T.c.queue).add_columns(
            queues.c.name_zh.label("queue_name_zh"), queues.c.name_en.label("queue_name_en"))
    if after:
        if "no_due" in conditions:  # all keys are NULL: the position is the id alone
            pair, position = ticket_id, bindparam("after_id", type_=ticket_id.type)
        else:
            pair = tuple_(column, ticket_id)
            position = tuple_(bindparam("after_key", type_=column.type), bindparam("after_id", type_=ticket_id.type))
        query = query.where(pair < position if descending else pair > position)
    order = (column.desc(), ticket_id.desc()) if descending else (column.asc(), ticket_id.asc())
    return query.order_by(*order).limit(bindparam("limit"))


@functools.lru_cache(maxsize=64)
def _sla_statement(conditions: tuple[str, ...], descending: bool, after: bool, names: bool) -> Select[Any]:
    """Both parts of the SLA order in one statement, each limited, then the few rows put in order:
    the part, the due time, the id."""
    parts = [
        _listing_statement((*conditions, name), "sla_due_at", descending, after and name == "due", names)
        .add_columns(literal_column(str(rank)).label("part")).subquery(name)
        for rank, name in enumerate(("due", "no_due"))
    ]
    both = union_all(*(select(part) for part in parts)).subquery("both")
    key, ticket_id = both.c.sla_due_at, both.c.id
    order = (key.desc(), ticket_id.desc()) if descending else (key.asc(), ticket_id.asc())
    columns = [column for column in both.c if column.key != "part"]
    return select(*columns).order_by(both.c.part, *order).limit(bindparam("limit"))


# -- the chain as one JSON document --------------------------------------------------------------


class _Json:
    """JSON built by the database, written once for SQLite and PostgreSQL.

    Values are formatted so that msgspec decodes them straight into the API's structs: times as
    RFC 3339 UTC, money as exact decimal strings, JSON columns and booleans as JSON."""

    def __init__(self, dialect: str) -> None:
        self.pg = dialect == "postgresql"

    def value(self, col: Any) -> Any:
        kind = col.type
        if isinstance(kind, UTCDateTime):
            if self.pg:
                return func.to_char(func.timezone(_sql("'UTC'"), col), _sql("""'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'"""))
            # SQLite keeps naive UTC text ('2026-11-10 13:02:00.548007'): mark it as UTC.
            return cast(col, String).op("||")(_sql("'Z'"))
        if isinstance(kind, Money):  # integer fen -> "89.00"
            yuan = col.op("/")(_sql("100.0"))
            return cast(func.round(yuan, _sql("2")), Text) if self.pg else func.printf(_sql("'%.2f'"), yuan)
        if self.pg:
            return col
        if isinstance(kind, JSON):  # SQLite stores JSON as text: embed it as JSON, not as a string
            return func.json(col)
        if isinstance(kind, Boolean):  # SQLite stores 0 / 1
            return func.json(case((col.is_(None), _sql("'null'")), (col == _sql("0"), _sql("'false'")), else_=_sql("'true'")))
        return col

    def obj(self, fields: dict[str, Any]) -> ColumnElement[Any]:
        args = [part for key, value in fields.items() for part in (_sql(f"'{key}'"), value)]
        return (func.json_build_object if self.pg else func.json_object)(*args)

    def columns(self, struct: type[msgspec.Struct], table: Any, omit: tuple[str, ...] = (), **extra: Any) -> ColumnElement[Any]:
        """An object with the struct's fields, read from the table's columns of the same name
        (`extra` gives the others; fields with a default may be omitted)."""
        fields = {}
        for f in msgspec.structs.fields(struct):
            if f.name in omit:
                continue
            if f.name in extra:
                fields[f.name] = extra[f.name]
            elif f.name in table.c:
                fields[f.name] = self.value(table.c[f.name])
            elif f.required:
                raise KeyError(f"{struct.__name__}.{f.name} has no column in {table.name}")
        return self.obj(fields)

    def array(self, query: Select[Any], item: ColumnElement[Any]) -> ColumnElement[Any]:
        """A JSON array of `item` over the rows of `query` (empty array, never NULL)."""
        if self.pg:
            return query.with_only_columns(func.coalesce(func.json_agg(item), _sql("'[]'::json"))).scalar_subquery()
        return query.with_only_columns(func.json_group_array(item)).scalar_subquery()

    def one(self, query: Select[Any], item: ColumnElement[Any]) -> ColumnElement[Any]:
        return query.with_only_columns(item).scalar_subquery()


def _sql(literal: str) -> Any:
    """SQL text inlined in the statement (keys, formats): no parameter, same on both databases."""
    return literal_column(literal)


@functools.cache
def _chain_statement(dialect: str, variant: str, many: bool = False) -> Select[Any]:
    """Built once per dialect and variant; only the ticket id (with `many`: the ids, and each row
    starts with its ticket's id) is a parameter."""
    j = _Json(dialect)
    t = Ticket.__table__
    o, c, ls = Order.__table__, Customer.__table__, LiveSession.__table__
    oi, ti, ev, d = OrderItem.__table__, TicketItem.__table__, TimelineEvent.__table__, TicketDecision.__table__
    s, te = Shipment.__table__, TrackingEvent.__table__
    order = j.columns(
        OrderOut, o,
        customer=j.one(select(c).where(c.c.id == o.c.customer_id), j.columns(CustomerOut, c)),
        live_session=j.one(select(ls).where(ls.c.id == o.c.live_session_id), j.columns(LiveSessionOut, ls)),
        items=j.array(select(oi).where(oi.c.order_id == o.c.id), j.columns(OrderItemOut, oi)),
    )
    tracking = j.array(select(te).where(te.c.shipment_id == s.c.id), j.columns(TrackingEventOut, te))
    # The order's outbound parcels and this ticket's own return / replacement parcels.
    shipments_q = select(s).where(s.c.order_id == t.c.order_id, (s.c.direction == "outbound") | (s.c.ticket_id == t.c.id))
    claimed = select(ti).join(oi, oi.c.id == ti.c.order_item_id).where(ti.c.ticket_id == t.c.id)
    doc: dict[str, Any] = {
        "ticket": j.columns(TicketDoc, t),
        "items": j.array(claimed, j.columns(ClaimedItem, ti, product_name=oi.c.product_name, category=oi.c.category)),
        "events": j.array(select(ev).where(ev.c.ticket_id == t.c.id), j.columns(TimelineEventOut, ev)),
        "order": j.one(select(o).where(o.c.id == t.c.order_id), order),
        "shipments": j.array(shipments_q, j.obj({"created_at": j.value(s.c.created_at), "shipment": j.columns(ShipmentOut, s, events=tracking)})),
        # The API does not show the decision's trace; the page does.
        "decision": j.one(select(d).where(d.c.ticket_id == t.c.id), j.columns(DecisionDoc, d, omit=("trace",) if variant == "api" else ())),
    }
    if variant != "api":
        doc.update(_page_parts(j, t))
    if variant == "people":
        u = User.__table__
        assignable = select(u).where(u.c.role.in_(("agent", "supervisor")), u.c.active.is_(True))
        doc["people"] = j.array(assignable, j.columns(PersonDoc, u))
    body = j.obj(doc)
    document = cast(body, Text) if j.pg else body
    if many:
        return select(t.c.id, document).where(in_bound(t.c.id, "ticket_ids"))
    # Several milliseconds of SQLite work: run it off the event loop (see aftersales.sqlite_inline).
    return select(document).where(t.c.id == bindparam("ticket_id")).prefix_with(OFFLOAD_MARK)


def _page_parts(j: _Json, t: Any) -> dict[str, Any]:
    """What the ticket page shows beside the chain."""
    h = Ticket.__table__.alias("h")
    u, f, q = User.__table__, FeedbackRecord.__table__, Queue.__table__
    recent = (
        select(h.c.id, h.c.number, h.c.status, h.c.reason_code, h.c.requested_amount, h.c.requested_at)
        .where(h.c.customer_id == t.c.customer_id, h.c.id != t.c.id)
        .order_by(h.c.requested_at.desc(), h.c.id.desc())
        .limit(20)
        .correlate(t)
        .subquery("recent")
    )
    return {
        "history": j.array(select(recent), j.columns(HistoryDoc, recent)),
        "assignee": j.one(select(u).where(u.c.id == t.c.assignee_id), j.columns(PersonDoc, u)),
        "feedback": j.one(select(f).where(f.c.ticket_id == t.c.id), j.columns(FeedbackDoc, f)),
        "queues": j.array(select(q), j.columns(QueueDoc, q)),
    }


_chain_decoder = msgspec.json.Decoder(ChainDoc)


def _decode_chain(raw: str | bytes) -> ChainDoc:
    doc = _chain_decoder.decode(raw)
    # JSON arrays built by aggregates have no defined order: put each list in its display order.
    doc.items.sort(key=lambda i: i.id)
    doc.events.sort(key=lambda e: e.id)
    doc.order.items.sort(key=lambda i: i.id)
    doc.shipments.sort(key=lambda s: (s.created_at, s.shipment.id))
    for entry in doc.shipments:
        entry.shipment.events.sort(key=lambda e: (e.occurred_at, e.id))
    doc.history.sort(key=lambda h: (h.requested_at, h.id), reverse=True)
    doc.people.sort(key=lambda p: p.username)
    return doc


class TicketChain:
    """One ticket with everything around it, as decoded from the chain document."""

    def __init__(self, doc: ChainDoc) -> None:
        self.doc = doc
        self.ticket = doc.ticket
        self.order = doc.order
        self.shipments = [entry.shipment for entry in doc.shipments]
        self.decision = doc.decision

    def ticket_items(self) -> list[ClaimedItem]:
        """The claimed items, each with its order item's name and category."""
        return self.doc.items

    def timeline(self) -> list[TimelineEventOut]:
        return sorted(self.doc.events, key=lambda e: (e.at, e.id))

    def chain(self) -> list[ChainEntry]:
        """Order, logistics and ticket steps merged into one time-ordered list."""
        order = self.order
        entries = [ChainEntry(at=order.placed_at, kind="order", title="order_placed", detail=order.external_id, ref=order.external_id)]
        if order.paid_at:
            entries.append(ChainEntry(at=order.paid_at, kind="order", title="order_paid", detail=str(order.paid_amount), ref=order.external_id))
        for shipment in self.shipments:
            kind, ref = f"{shipment.direction}_tracking", f"{shipment.carrier} {shipment.tracking_number}"
            for ev in shipment.events:
                detail = " · ".join(x for x in (ev.location, ev.description) if x)
                entries.append(ChainEntry(at=ev.occurred_at, kind=kind, title=ev.status, detail=detail, status=ev.status, ref=ref))
        for ev in self.doc.events:
            entries.append(ChainEntry(at=ev.at, kind="ticket", title=ev.action, detail=ev.note, status=ev.to_status, ref=ev.actor))
        # Stable sort: equal times keep order → logistics → ticket, and ticket events their id order.
        # Every time is decoded as aware UTC, so they compare directly.
        return sorted(entries, key=lambda e: e.at)


__all__ = ["DEFAULT_SORT", "SORTS", "TicketChain", "TicketFilter", "TicketRepository", "decode_cursor", "encode_cursor"]
