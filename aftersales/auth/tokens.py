"""API tokens: created on the command line, shown once, stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aftersales.auth.models import ROLES, ApiToken, User, WebSession
from aftersales.auth.principal import Principal
from aftersales.clock import Clock, ensure_utc

TOKEN_PREFIX = "aft_"
# Looking a token up on every request would cost a query; revocation takes effect within this.
CACHE_SECONDS = 30.0


def principal_for(user: User) -> Principal:
    return Principal(kind="user", id=user.id, name=user.username, role=user.role, teams=tuple(user.teams or ()))


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
            principal = principal_for(user)
        elif row is not None and row.user_id is None:
            principal = Principal(kind="token", id=row.id, name=row.name, role=row.role)
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[digest] = (time.monotonic() + CACHE_SECONDS, principal)
        return principal


class SessionCache:
    """Signed-in page users by session cookie, so that a page request does not cost a query.
    Sign-out and a language switch forget the entry at once; a deactivated user or changed role
    takes effect within CACHE_SECONDS, as for API tokens."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, datetime, SignedIn]] = {}

    async def signed_in(self, factory: async_sessionmaker[AsyncSession], clock: Clock, cookie: str) -> SignedIn | None:
        digest = hash_token(cookie)
        cached = self._entries.get(digest)
        if cached and cached[0] > time.monotonic() and cached[1] > clock.now():
            return cached[2]
        async with factory() as session:
            row = (await session.execute(
                select(User, WebSession.expires_at).join(WebSession, WebSession.user_id == User.id)
                .where(WebSession.token_hash == digest, WebSession.expires_at > clock.now(), User.active.is_(True))
            )).first()
        if row is None:
            self._entries.pop(digest, None)
            return None
        user, expires_at = row
        found = SignedIn(principal=principal_for(user), display_name=user.display_name, locale=user.locale)
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[digest] = (time.monotonic() + CACHE_SECONDS, ensure_utc(expires_at), found)
        return found

    def forget(self, cookie: str) -> None:
        self._entries.pop(hash_token(cookie), None)


@dataclass(frozen=True)
class SignedIn:
    principal: Principal
    display_name: str
    locale: str | None
