"""The process-wide cache of SLA policies must survive a request whose transaction rolls back."""

from __future__ import annotations

from aftersales.db import create_sessionmaker
from aftersales.sla import service as sla_service
from aftersales.sla.service import SlaService


async def test_a_rolled_back_request_leaves_the_cached_policy_usable(engine, clock) -> None:
    sessionmaker = create_sessionmaker(engine)
    async with sessionmaker() as session:
        policy_id = (await SlaService(session, clock).ensure_default_policy()).id
        await session.commit()
    sla_service._policies.clear()
    async with sessionmaker() as session:  # fills the cache, then fails (say, a 4xx) and rolls back
        await SlaService(session, clock).targets(policy_id)
        await session.rollback()
    async with sessionmaker() as session:
        targets = await SlaService(session, clock).targets(policy_id)
    assert targets.resolution == 48 * 3600 and targets.policy.id == policy_id


async def test_a_policy_made_by_a_rolled_back_transaction_is_not_cached(engine, clock) -> None:
    sessionmaker = create_sessionmaker(engine)
    async with sessionmaker() as session:
        service = SlaService(session, clock)
        made = await service.ensure_default_policy()  # none existed: made in this transaction
        await service.targets(made.id)
        await session.rollback()
    assert made.id not in sla_service._policies
