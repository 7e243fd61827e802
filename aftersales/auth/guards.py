"""Role checks. Every route names the roles it admits; the check is the same for lists and items."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from aftersales.auth.principal import Principal

SESSION_COOKIE = "as_session"

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]

# Who may do what through the API and on pages.
WORK_TICKETS = ("agent", "supervisor", "admin")
FEED = ("integration", "admin")
READ_TICKETS = ("integration", "agent", "supervisor", "admin")
ACT_ON_TICKETS = ("agent", "supervisor", "admin")
# Finance confirms refunds and the platform relays customer messages and cancellations.
INTEGRATION_ACTIONS = frozenset({"confirm_refund", "customer_reply", "cancel", "add_return_tracking"})


async def resolve_principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    """A bearer token for the API; the session cookie for pages (the API never takes cookies,
    so it needs no CSRF protection)."""
    scope_state = connection.scope.setdefault("state", {})
    if "principal" in scope_state:
        return scope_state["principal"]
    principal: Principal | None = None
    state = connection.app.state
    header = connection.headers.get("authorization", "")
    if connection.url.path.startswith("/api/"):
        if header.lower().startswith("bearer "):
            principal = await state.token_cache.principal(state.read_sessionmaker, header[7:].strip())
    elif cookie := connection.cookies.get(SESSION_COOKIE):
        signed_in = await state.session_cache.signed_in(state.read_sessionmaker, state.clock, cookie)
        if signed_in is not None:
            principal = signed_in.principal
            scope_state["display_name"] = signed_in.display_name
            scope_state["user_locale"] = signed_in.locale
    scope_state["principal"] = principal
    return principal


def requires(*roles: str) -> Guard:
    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = await resolve_principal(connection)
        if principal is None:
            raise NotAuthorizedException("a valid 'Authorization: Bearer <token>' header is required")
        if principal.role not in roles:
            raise PermissionDeniedException(f"role {principal.role!r} may not do this; allowed: {', '.join(roles)}")

    return guard


def current_principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    principal = connection.scope.get("state", {}).get("principal")
    if principal is None:
        raise NotAuthorizedException("not signed in")
    return principal
