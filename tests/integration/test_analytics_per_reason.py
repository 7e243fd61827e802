"""Problem-product detection reads rates for several reasons from one sold and one returned query;
the figures must equal return_rates asked once per reason."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from aftersales.db import create_sessionmaker
from aftersales.demo import generate_demo
from aftersales.feedback import analytics

ANCHOR = datetime(2026, 11, 25, 4, 0, tzinfo=timezone.utc)
REASONS = [None, "quality.defect", "quality.damaged", "fit.size"]


async def test_rates_per_reason_equal_one_query_per_reason(settings, engine):
    await generate_demo(settings, orders=300, seed=11, progress=False, now=ANCHOR)
    start, end = ANCHOR - timedelta(days=60), ANCHOR
    async with create_sessionmaker(engine)() as session:
        together = await analytics._rates_per_reason(session, start, end, REASONS)
        for reason in REASONS:
            alone = await analytics.return_rates(session, start, end, "product", reason=reason, limit=100_000)
            key = lambda r: tuple(r["key"])  # noqa: E731
            assert sorted(together[reason], key=key) == sorted(alone, key=key), reason
        assert any(r["returned_units"] for r in together["quality.defect"])  # the comparison is not of empty lists
