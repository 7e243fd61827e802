"""Sign-in, sign-out, language switch and the role-based home page."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import Cookie
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales import i18n
from aftersales.auth.guards import SESSION_COOKIE, resolve_principal
from aftersales.auth.service import SESSION_LIFETIME, AuthService, TooManyAttempts, WrongCredentials
from aftersales.clock import Clock
from aftersales.pages import LANG_COOKIE, render

HOME_BY_ROLE = {"agent": "/queue", "supervisor": "/queue", "admin": "/queue", "product": "/feedback"}


def safe_next(value: str | None, default: str = "/") -> str:
    """Only same-site paths: an open redirect would let a phishing link bounce through us."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


class AuthController(Controller):
    include_in_schema = False

    @get("/")
    async def home(self, request: Request[Any, Any, Any]) -> Redirect:
        principal = await resolve_principal(request)
        if principal is None:
            return Redirect("/login", status_code=303)
        return Redirect(HOME_BY_ROLE.get(principal.role, "/queue"), status_code=303)

    @get("/login")
    async def login_page(self, request: Request[Any, Any, Any], next: str | None = None) -> Template:
        return render(request, "auth/login.html", {"next_url": safe_next(next), "error": None, "username": ""})

    @post("/login")
    async def login(self, request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock) -> Any:
        form = await request.form()
        username = str(form.get("username", "")).strip()
        password = str(form.get("password", ""))
        next_url = safe_next(str(form.get("next", "")))
        address = request.client.host if request.client else "unknown"
        try:
            user, token = await AuthService(db_session, clock).sign_in(username, password, address)
        except (WrongCredentials, TooManyAttempts) as exc:
            context = {"next_url": next_url, "error": _login_error(exc), "username": username}
            return render(request, "auth/login.html", context, status_code=exc.status_code)
        if next_url == "/":
            next_url = HOME_BY_ROLE.get(user.role, "/queue")
        cookies = [
            Cookie(key=SESSION_COOKIE, value=token, httponly=True, samesite="lax", max_age=int(SESSION_LIFETIME.total_seconds()), path="/"),
        ]
        if user.locale:
            cookies.append(Cookie(key=LANG_COOKIE, value=user.locale, samesite="lax", path="/", max_age=365 * 86400))
        return Redirect(next_url, status_code=303, cookies=cookies)

    @post("/logout")
    async def logout(self, request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock) -> Redirect:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            await AuthService(db_session, clock).sign_out(token)
            request.app.state.session_cache.forget(token)
        response = Redirect("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @post("/lang")
    async def switch_language(self, request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock) -> Redirect:
        form = await request.form()
        locale = str(form.get("locale", ""))
        if locale not in i18n.LOCALES:
            locale = i18n.LOCALES[0]
        principal = await resolve_principal(request)
        if principal is not None and principal.id is not None:
            await AuthService(db_session, clock).set_locale(principal.id, locale)
            if token := request.cookies.get(SESSION_COOKIE):
                request.app.state.session_cache.forget(token)
        cookie = Cookie(key=LANG_COOKIE, value=locale, samesite="lax", path="/", max_age=365 * 86400)
        return Redirect(safe_next(str(form.get("next", ""))), status_code=303, cookies=[cookie])


def _login_error(exc: Exception) -> str:
    if isinstance(exc, TooManyAttempts):
        return i18n.gettext("Too many failed sign-ins. Wait 15 minutes and try again.")
    return i18n.gettext("Wrong username or password.")
