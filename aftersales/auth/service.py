"""People: creating users, signing in (argon2, rate-limited), sessions and sign-out."""

from __future__ import annotations

import secrets
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.auth.models import PERSON_ROLES, TEAMS, LoginAttempt, User, WebSession
from aftersales.auth.tokens import hash_token, principal_for
from aftersales.clock import Clock
from aftersales.errors import DomainError, InvalidInput

SESSION_LIFETIME = timedelta(hours=12)
# At most this many failed sign-ins per username or per address within the window.
MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)

_hasher = PasswordHasher()


class TooManyAttempts(DomainError):
    status_code = 429
    title = "Too many sign-in attempts"
    type_slug = "too-many-attempts"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


class AuthService:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self.session = session
        self.clock = clock

    async def create_user(
        self, *, username: str, password: str, role: str, display_name: str = "", teams: list[str] | None = None
    ) -> User:
        if role not in PERSON_ROLES:
            raise InvalidInput.on("role", f"must be one of {', '.join(PERSON_ROLES)}")
        teams = teams or []
        for team in teams:
            if team not in TEAMS:
                raise InvalidInput.on("teams", f"unknown team {team!r}; teams are {', '.join(TEAMS)}")
        if role == "product" and not teams:
            raise InvalidInput.on("teams", "a product-team member belongs to at least one team")
        if len(password) < 8:
            raise InvalidInput.on("password", "must be at least 8 characters")
        if await self.session.scalar(select(User.id).where(User.username == username)):
            raise InvalidInput.on("username", f"{username!r} is taken")
        user = User(
            username=username, display_name=display_name or username, password_hash=hash_password(password),
            role=role, teams=teams, active=True, created_at=self.clock.now(),
        )
        self.session.add(user)
        await self.session.flush()
        return user

    async def sign_in(self, username: str, password: str, address: str) -> tuple[User, str]:
        """Returns the user and a new session token, or raises (401 wrong, 429 too many)."""
        await self._check_rate(username, address)
        user = await self.session.scalar(select(User).where(User.username == username, User.active.is_(True)))
        if user is None or not verify_password(user.password_hash, password):
            self.session.add(LoginAttempt(username=username[:64], address=address[:64], at=self.clock.now()))
            await self.session.commit()
            raise WrongCredentials("wrong username or password")
        await self.session.execute(delete(LoginAttempt).where(LoginAttempt.username == username))
        token = secrets.token_urlsafe(32)
        now = self.clock.now()
        self.session.add(WebSession(token_hash=hash_token(token), user_id=user.id, created_at=now, expires_at=now + SESSION_LIFETIME))
        await self.session.commit()
        return user, token

    async def _check_rate(self, username: str, address: str) -> None:
        since = self.clock.now() - FAILURE_WINDOW
        query = select(func.count()).select_from(LoginAttempt).where(LoginAttempt.at >= since)
        by_user = await self.session.scalar(query.where(LoginAttempt.username == username))
        by_address = await self.session.scalar(query.where(LoginAttempt.address == address))
        if (by_user or 0) >= MAX_FAILURES or (by_address or 0) >= MAX_FAILURES * 4:
            raise TooManyAttempts("too many failed sign-ins; wait 15 minutes and try again")

    async def sign_out(self, token: str) -> None:
        await self.session.execute(delete(WebSession).where(WebSession.token_hash == hash_token(token)))
        await self.session.commit()

    async def set_locale(self, user_id: int, locale: str) -> None:
        user = await self.session.get(User, user_id)
        if user is not None:
            user.locale = locale
            await self.session.commit()


class WrongCredentials(DomainError):
    status_code = 401
    title = "Sign-in failed"
    type_slug = "wrong-credentials"
