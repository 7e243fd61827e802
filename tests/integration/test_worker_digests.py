"""The worker's digest pass builds each digest in a read session and only stores it in a write
transaction (bench F25): while it builds, other writers of the same process go on."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from zoneinfo import ZoneInfo

from aftersales.auth.tokens import create_token
from aftersales.db import create_sessionmaker, reader_engine
from aftersales.feedback import digests
from aftersales.feedback.models import Digest
from aftersales.feedback.routing import TEAMS
from sqlalchemy import func, select
from tests.conftest import START

ZONE = ZoneInfo("Asia/Shanghai")


async def test_digest_pass_lets_other_writers_commit_while_it_builds(settings, engine, clock, monkeypatch):
    factory = create_sessionmaker(engine)
    read_engine = reader_engine(engine, settings.database_url)
    real_build = digests.build_digest
    written: list[int] = []

    async def build_while_someone_writes(session, *args, **kwargs):
        async def write() -> None:
            async with factory() as other:
                await create_token(other, clock, name=f"during-build-{len(written)}", role="integration")
                await other.commit()
                written.append(1)

        await asyncio.wait_for(write(), timeout=5)
        return await real_build(session, *args, **kwargs)

    monkeypatch.setattr(digests, "build_digest", build_while_someone_writes)
    clock.set(START + timedelta(days=8))
    try:
        created = await digests.generate_due_digests(factory, clock, ZONE, read=create_sessionmaker(read_engine))
        assert created == 2 * len(TEAMS) == len(written)
        # A second pass finds them all and builds nothing.
        assert await digests.generate_due_digests(factory, clock, ZONE, read=create_sessionmaker(read_engine)) == 0
        assert len(written) == 2 * len(TEAMS)
        async with factory() as session:
            assert await session.scalar(select(func.count()).select_from(Digest)) == 2 * len(TEAMS)
    finally:
        if read_engine is not engine:
            await read_engine.dispose()
