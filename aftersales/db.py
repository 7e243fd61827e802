"""Engine and session configuration, the declarative base and shared column types."""

from __future__ import annotations

import functools
import weakref
from contextvars import ContextVar
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeVar

import msgspec
from sqlalchemy import (
    JSON, BigInteger, DateTime, Integer, MetaData, String, bindparam, event, insert, inspect, select, union_all,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

from aftersales.clock import ensure_utc
from aftersales.sqlite_inline import SAFETY_CHECKPOINT_PAGES, Checkpointer, inline_creator

T = TypeVar("T")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY, PostgreSQL wants BIGINT for large tables.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


CENT = Decimal("0.01")


class Money(TypeDecorator[Decimal]):
    """Yuan amounts stored exactly as integer fen on every backend."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Any) -> int | None:
        if value is None:
            return None
        return int((Decimal(value) * 100).to_integral_value(rounding=ROUND_HALF_UP))

    def process_result_value(self, value: int | None, dialect: Any) -> Decimal | None:
        if value is None:
            return None
        return (Decimal(value) / 100).quantize(CENT)


class UTCDateTime(TypeDecorator[datetime]):
    """Always-aware UTC datetimes, including on SQLite which forgets the zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        # SQLite's bound values go through bind_processor below; this serves PostgreSQL and literals.
        return None if value is None else ensure_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else ensure_utc(value)

    # On SQLite a datetime is text. The generic path (zone handling, then the dialect's
    # %-formatting or regular expression) was ~5 ms of every 500-event tracking batch (bench
    # F22); one step each way in C does the same. PostgreSQL keeps the generic path.
    def bind_processor(self, dialect: Any) -> Any:
        return sqlite_datetime_text if dialect.name == "sqlite" else super().bind_processor(dialect)

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        return _sqlite_text_datetime if dialect.name == "sqlite" else super().result_processor(dialect, coltype)


def sqlite_datetime_text(value: datetime | None) -> str | None:
    """UTC in SQLAlchemy's SQLite storage format, 'YYYY-MM-DD HH:MM:SS.ffffff' (always with
    microseconds, so that text order is time order)."""
    return None if value is None else ensure_utc(value).isoformat(" ", "microseconds")[:26]


def _sqlite_text_datetime(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)


JSONType = JSON()


class unindexed(FunctionElement[Any]):
    """The column itself, spelled so that no index on it can serve the condition (`+column` on
    SQLite, `(column || '')`, `(column + 0)` or `(column + interval '0 seconds')` on PostgreSQL): a filter must not drive the query.
    Left alone, the planners picked e.g. an index on kind (every exchange ever, or a bitmap of it) over
    the partial index of open tickets or the period's range, and the cost grows with the history."""

    inherit_cache = True

    def __init__(self, column: Any) -> None:
        super().__init__(column)
        self.type = column.type


@compiles(unindexed)
def _unindexed(element: unindexed, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(unindexed, "sqlite")
def _unindexed_sqlite(element: unindexed, compiler: Any, **kw: Any) -> str:
    return "+" + str(compiler.process(element.clauses, **kw))


@compiles(unindexed, "postgresql")
def _unindexed_postgresql(element: unindexed, compiler: Any, **kw: Any) -> str:
    column = str(compiler.process(element.clauses, **kw))
    kind = getattr(element.type, "impl", element.type)
    if isinstance(kind, String):
        return f"({column} || '')"
    return f"({column} + interval '0 seconds')" if isinstance(kind, DateTime) else f"({column} + 0)"


def _json_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


# JSON columns (facts, traces, timeline data) with msgspec on both databases: the standard library's
# encoder was 3 % of an intake batch (bench F5). Same JSON, compact and with Chinese text unescaped.
JSON_CODECS: dict[str, Any] = {"json_serializer": _json_text, "json_deserializer": msgspec.json.decode}


# Connections a SQLite engine keeps open. SQLAlchemy's default (5) closed every connection beyond it
# when its request ended, so with 16 requests at once most of them opened the file afresh: the
# schema parsed again and an empty page cache for the ticket chain (bench F31). An idle connection
# is a file handle; a used one keeps up to 2 MB of pages.
SQLITE_POOL_SIZE = 32


def create_engine(
    url: str, *, echo: bool = False, pool_size: int = 10, foreign_keys: bool = True, for_writes: bool = True
) -> AsyncEngine:
    """`for_writes=False` gives SQLite readers plain deferred transactions: in WAL mode they never
    wait for the write lock (PostgreSQL needs no such split)."""
    if url.startswith("sqlite"):
        # Statements run on the event loop itself, not on aiosqlite's thread (see aftersales.sqlite_inline);
        # a writer waiting for the write lock waits asynchronously at BEGIN IMMEDIATE.
        database = make_url(url).database
        pool = {"pool_size": SQLITE_POOL_SIZE, "max_overflow": SQLITE_POOL_SIZE} if database and database != ":memory:" else {}
        engine = create_async_engine(url, echo=echo, async_creator=inline_creator(url, timeout=0 if for_writes else 30.0),
                                     **pool, **JSON_CODECS)
        _configure_sqlite(engine, foreign_keys=foreign_keys, immediate=for_writes)
        if for_writes:
            _checkpoint_in_background(engine, url)
        return engine
    # No pool_pre_ping: it costs a round trip on every checkout (bench F7). A connection the server
    # dropped fails one request and is then discarded by the pool; recycling keeps them fresh.
    return create_async_engine(url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800, **JSON_CODECS)


def _configure_sqlite(engine: AsyncEngine, *, foreign_keys: bool = True, immediate: bool = True) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Migrations turn this off: SQLite rebuilds a table to alter it, which would trip the keys.
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        # Writers never sleep in SQLite's busy handler (it would stop the event loop): their
        # BEGIN IMMEDIATE is retried asynchronously instead (aftersales.sqlite_inline).
        cursor.execute(f"PRAGMA busy_timeout={0 if immediate else 30000}")
        if immediate:  # writers leave checkpoints to the background thread (_checkpoint_in_background)
            cursor.execute(f"PRAGMA wal_autocheckpoint={SAFETY_CHECKPOINT_PAGES}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A deferred transaction that reads and then writes can fail with SQLITE_BUSY without
        # waiting; taking the write lock up front makes concurrent writers queue instead.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate and not _READS_ONLY.get() else "BEGIN")


# Set inside reads_only(): a SQLite writer's transaction begun there takes no write lock.
_READS_ONLY: ContextVar[bool] = ContextVar("aftersales.reads_only", default=False)


@contextmanager
def reads_only() -> Iterator[None]:
    """A transaction begun inside only reads, so on SQLite it begins without the write lock (a
    plain deferred BEGIN). It must end (commit) before anything is written. Intake reads and
    decides its batch this way and takes the lock only to write it: otherwise a second process
    waited for the lock through the whole batch (bench F28)."""
    token = _READS_ONLY.set(True)
    try:
        yield
    finally:
        _READS_ONLY.reset(token)


_CHECKPOINTERS: weakref.WeakKeyDictionary[Any, Checkpointer] = weakref.WeakKeyDictionary()


def checkpointer_of(engine: AsyncEngine) -> Checkpointer | None:
    return _CHECKPOINTERS.get(engine.sync_engine)


def _checkpoint_in_background(engine: AsyncEngine, url: str) -> None:
    """Copy the write-ahead log back into the database file on a thread of its own while the
    engine lives (see aftersales.sqlite_inline.Checkpointer)."""
    database = make_url(url).database
    if not database or database == ":memory:":
        return
    checkpointer = _CHECKPOINTERS[engine.sync_engine] = Checkpointer(database).start()
    event.listen(engine.sync_engine, "engine_disposed", lambda _engine: checkpointer.stop())


def reader_engine(writer: AsyncEngine, url: str, *, echo: bool = False) -> AsyncEngine:
    """What only reads uses: SQLite's deferred readers, which never take the write lock, beside
    the writer's engine; on PostgreSQL the writer's engine itself."""
    return create_engine(url, echo=echo, for_writes=False) if make_url(url).get_backend_name() == "sqlite" else writer


def union_of_parts(count: int, part: Callable[[int], Any]) -> Any:
    """UNION ALL of `count` SELECTs built by `part(i)`, each kept whole as a subquery (its own ORDER
    BY and LIMIT: one index range per part), with its values bound under names ending in i (see
    numbered_values). Built once per count and cached by the caller, the statement is compiled once:
    building a union of dozens of subqueries per request cost more than running it (bench F26, F27)."""
    parts = [part(i).subquery() for i in range(count)]
    return union_all(*(select(*sub.c) for sub in parts))


def numbered_values(rows: Iterable[tuple[Any, ...]], names: tuple[str, ...]) -> dict[str, Any]:
    """The bound values of union_of_parts: row i's values under the names suffixed with i."""
    return {f"{name}{i}": value for i, row in enumerate(rows) for name, value in zip(names, row)}


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def session_scope(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with factory() as session:
        yield session


def in_bound(column: Any, name: str) -> Any:
    """`column IN (...)` with the list bound under `name` at execution: a statement built once
    serves every list (building one and its cache key per request cost more than running it)."""
    return column.in_(bindparam(name, expanding=True))


def dialect_insert(session: AsyncSession, model: Any) -> Any:
    """INSERT with the dialect's ON CONFLICT support (both SQLite and PostgreSQL have it)."""
    return insert_for(session.get_bind().dialect.name, model)


def insert_for(dialect: str, model: Any) -> Any:
    """dialect_insert by the dialect's name, for statements built once per dialect."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(model)


# session.info key: the rows add_row keeps while a batch is being built (see collecting_rows).
_COLLECTED = "aftersales.collected_rows"


@contextmanager
def collecting_rows(session: AsyncSession) -> Iterator[None]:
    """Inside, add_row keeps new rows as plain values for insert_pending instead of ORM objects. A
    batch that fails inside leaves nothing collected behind for the session's next use."""
    session.info[_COLLECTED] = {}
    try:
        yield
    except BaseException:
        session.info.pop(_COLLECTED, None)
        raise


def relabel_collected(session: AsyncSession, key: str, labels: dict[Any, Any]) -> None:
    """In the rows collected so far, replace each value of column `key` found in `labels` (a
    batch's provisional ticket ids by the ids taken when it is written)."""
    for rows in session.info.get(_COLLECTED, {}).values():
        for row in rows:
            if row.get(key) in labels:
                row[key] = labels[row[key]]


def add_row(session: AsyncSession, model: type[Any], **values: Any) -> None:
    """Add a new row that nothing in this transaction reads back (timeline, SLA events, ...).
    While a batch collects rows (collecting_rows) they stay plain values until insert_pending writes them: an ORM
    object costs tens of microseconds to build, track and take apart again, and an intake batch
    makes ~9 per ticket (bench F5). Otherwise it is an ORM object as usual."""
    collected = session.info.get(_COLLECTED)
    if collected is None:
        session.add(model(**values))
    else:
        collected.setdefault(model, []).append(values)


async def insert_pending(session: AsyncSession, models: tuple[type[Any], ...]) -> None:
    """Write the session's new objects of `models`, and the rows collected by collecting_rows, as
    one executemany INSERT per table, in the order they were added, without reading their ids
    back. The unit of work inserts such rows one statement each when it must learn their keys
    (bench F5: 500 INSERTs for a 64-ticket intake batch). For rows nothing else in the transaction
    refers to; the objects leave the session."""
    by_model: dict[type[Any], list[Any]] = {}
    for obj in session.new:
        by_model.setdefault(type(obj), []).append(obj)
    collected = session.info.pop(_COLLECTED, None) or {}
    for model in models:
        pending = sorted(by_model.get(model, ()), key=lambda obj: inspect(obj).insert_order)
        if not pending and not collected.get(model):
            continue
        columns = [attr.key for attr in inspect(model).column_attrs]
        rows = []
        for obj in pending:
            state = inspect(obj).dict
            rows.append({key: state[key] for key in columns if key in state})
            session.expunge(obj)
        rows.extend(collected.get(model, ()))
        # A Core INSERT, not the ORM's bulk one: the rows are final, and the ORM's per-row bookkeeping
        # cost more than the INSERT itself (and it split a batch wherever a row had a None).
        await session.execute(_insert_into(model.__table__), _same_keys(model, rows))


@functools.cache
def _insert_into(table: Any) -> Any:
    return insert(table)


def python_default(column: Any) -> Any:
    """The value an INSERT leaving the column out would give it on the Python side (None if none)."""
    default = column.default
    if default is None:
        return None
    return default.arg(None) if default.is_callable else default.arg


def _same_keys(model: type[Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every row the same keys (a missing one gets the column's default) so that the rows go
    out as one executemany: SQLAlchemy starts a new statement whenever the keys change."""
    keys = set().union(*rows)
    fill: dict[str, Any] = {}
    for key in keys:
        column = model.__table__.c[key]
        if column.server_default is not None:
            return rows  # only the database knows this default: leave the rows as they are
        fill[key] = python_default(column)
    return [{**fill, **row} if len(row) < len(keys) else row for row in rows]


# PostgreSQL's "deadlock detected" and "could not serialize": the transaction lost a race and is
# safe to run again from the start.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def is_retryable(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    return (getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)) in RETRYABLE_SQLSTATES


async def run_retrying(session: AsyncSession, work: Callable[[], Awaitable[T]], *, attempts: int = 3) -> T:
    """Run `work` (which commits); roll back and run it again when the database chose it as the
    victim of a deadlock or serialization failure."""
    for attempt in range(1, attempts + 1):
        try:
            return await work()
        except DBAPIError as exc:
            if attempt == attempts or not is_retryable(exc):
                raise
            await session.rollback()
    raise AssertionError("unreachable")

