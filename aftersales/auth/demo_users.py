"""One user per role for the demo data set. The passwords are documented in the README and are
for the embedded demo only."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.auth.models import User
from aftersales.auth.service import AuthService
from aftersales.clock import Clock

DEMO_USERS = (
    # username, password, role, display name, teams
    ("agent", "agent-demo-1", "agent", "客服小王", []),
    ("agent2", "agent-demo-2", "agent", "客服小李", []),
    ("lead", "lead-demo-1", "supervisor", "主管陈姐", []),
    ("qc", "qc-demo-1", "product", "质检老周", ["qc"]),
    ("script", "script-demo-1", "product", "运营小美", ["script"]),
    ("selection", "selection-demo-1", "product", "选品阿杰", ["selection"]),
    ("admin", "admin-demo-1", "admin", "管理员", []),
)


async def create_demo_users(session: AsyncSession, clock: Clock) -> list[str]:
    service = AuthService(session, clock)
    created = []
    for username, password, role, name, teams in DEMO_USERS:
        if await session.scalar(select(User.id).where(User.username == username)):
            continue
        await service.create_user(username=username, password=password, role=role, display_name=name, teams=teams)
        created.append(f"user {username} / {password} ({role}{', ' + ', '.join(teams) if teams else ''})")
    await session.commit()
    return created
