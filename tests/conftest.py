"""Shared fixtures: a migrated real database (SQLite, or PostgreSQL when
AFTERSALES_TEST_DATABASE_URL is set), emptied before each test, and API clients per role."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.app import create_app
from aftersales.auth.tokens import create_token
from aftersales.cli import run_migrations
from aftersales.clock import FrozenClock
from aftersales.db import Base, create_engine, create_sessionmaker
from aftersales.settings import Settings

import aftersales.models  # noqa: F401
from aftersales.sla import service as sla_service

START = datetime(2026, 11, 20, 2, 0, tzinfo=timezone.utc)


def _test_database_url(tmp_dir: Path) -> str:
    url = os.environ.get("AFTERSALES_TEST_DATABASE_URL")
    return url or f"sqlite+aiosqlite:///{tmp_dir / 'test.db'}"


async def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await engine.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = _test_database_url(tmp_path_factory.mktemp("db"))
    if url.startswith("postgresql"):
        asyncio.run(_reset_postgres(url))
    run_migrations(url)
    return url


@pytest.fixture(scope="session")
def backend(database_url: str) -> str:
    return "postgresql" if database_url.startswith("postgresql") else "sqlite"


@pytest.fixture()
def settings(database_url: str) -> Settings:
    # The periodic worker is driven explicitly by the tests that need it.
    return Settings(database_url=database_url, db_pool_size=5, run_worker="off")


@pytest.fixture()
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture()
async def engine(settings: Settings) -> AsyncIterator:
    engine = create_engine(settings.database_url, pool_size=5)
    await _empty_tables(engine, settings.database_url)
    # Emptied tables reuse ids: process-level caches keyed by id must not outlive them.
    sla_service._policies.clear()
    yield engine
    await engine.dispose()


async def _empty_tables(engine, url: str) -> None:
    names = [t.name for t in reversed(Base.metadata.sorted_tables)]
    async with engine.begin() as conn:
        if url.startswith("postgresql"):
            await conn.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE"))
        else:
            for name in names:
                await conn.execute(text(f"DELETE FROM {name}"))


@pytest.fixture()
async def session(engine) -> AsyncIterator[AsyncSession]:
    async with create_sessionmaker(engine)() as session:
        yield session


@pytest.fixture()
async def app(settings: Settings, clock: FrozenClock, engine):
    return create_app(settings, clock=clock)


@pytest.fixture()
async def client(app) -> AsyncIterator[AsyncTestClient]:
    async with AsyncTestClient(app=app) as client:
        yield client


@pytest.fixture()
async def tokens(engine, clock: FrozenClock) -> dict[str, dict[str, str]]:
    """Authorization headers for one token per role."""
    headers: dict[str, dict[str, str]] = {}
    async with create_sessionmaker(engine)() as session:
        for role in ("integration", "agent", "supervisor", "product", "admin"):
            value = await create_token(session, clock, name=f"test-{role}", role=role)
            headers[role] = {"Authorization": f"Bearer {value}"}
        await session.commit()
    return headers
