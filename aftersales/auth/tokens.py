"""API tokens: created on the command line, shown once, stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets
import time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aftersales.auth.models import ROLES, ApiToken, User
from aftersales.auth.principal import Principal
from aftersales.clock import Clock

TOKEN_PREFIX = "aft_"
# Looking a token up on every request would cost a query; revocation takes effect within this.
CACHE_SECONDS = 30.0


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(session: AsyncSession, clock: Clock, *, name: str, role: str, user_id: int | None = None) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, role=role, user_id=user_id, token_hash=hash_token(token), created_at=clock.now()))
    await session.flush()
    return token


class TokenCache:
    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Principal | None]] = {}

    async def principal(self, factory: async_sessionmaker[AsyncSession], token: str) -> Principal | None:
        digest = hash_token(token)
        cached = self._entries.get(digest)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        async with factory() as session:
            row = await session.scalar(select(ApiToken).where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None)))
            user = await session.get(User, row.user_id) if row is not None and row.user_id else None
        principal: Principal | None = None
        if user is not None and user.active:
            principal = Principal(kind="user", id=user.id, name=user.username, role=user.role, teams=tuple(user.teams or ()))
        elif row is not None and row.user_id is None:
            principal = Principal(kind="token", id=row.id, name=row.name, role=row.role)
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[digest] = (time.monotonic() + CACHE_SECONDS, principal)
        return principal
