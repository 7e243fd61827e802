"""Server-rendered pages: the Jinja environment, `render()` and the page-side auth plumbing.

Every swappable region is a `{% block %}` whose name equals its DOM id. One handler serves the
whole page to a plain request and only the targeted block to an htmx request.
"""

from __future__ import annotations

import html
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2_fragments.litestar import HTMXBlockTemplate
from markupsafe import Markup, escape
from litestar import Request, Response
from litestar.contrib.jinja import JinjaTemplateEngine
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.response import Redirect
from litestar.template import TemplateConfig

from aftersales import i18n
from aftersales.clock import ensure_utc
from aftersales.feedback.taxonomy import reason_label
from aftersales.orders.carriers import STATUS_LABELS
from aftersales.template_i18n import compile_per_locale, localized

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
STATIC = Path(__file__).resolve().parent / "static"
VARY = "HX-Request, HX-Target"


def is_htmx(request: Request[Any, Any, Any]) -> bool:
    return request.headers.get("hx-request") == "true"


def render(
    request: Request[Any, Any, Any],
    template: str,
    context: dict[str, Any],
    *,
    blocks: tuple[str, ...] = (),
    status_code: int = 200,
    block: str | None = None,
    block_names: list[str] | None = None,
) -> HTMXBlockTemplate:
    """The full page, or — for htmx asking for one of `blocks` — only that block; `block` or
    `block_names` (a block with out-of-band swaps riding along) decide it instead."""
    target = request.headers.get("hx-target") if is_htmx(request) else None
    chosen = block if block else (target if target in blocks else None)
    return HTMXBlockTemplate(
        template_name=localized(template),
        context={**base_context(request), **context},
        block_name=None if block_names else chosen,
        block_names=block_names,
        status_code=status_code,
        headers={"Vary": VARY},
    )


def base_context(request: Request[Any, Any, Any]) -> dict[str, Any]:
    principal = request.scope.get("state", {}).get("principal")
    return {
        "principal": principal,
        "user_name": request.scope.get("state", {}).get("display_name") or (principal.name if principal else ""),
        "locale": i18n.get_locale(),
        "locales": i18n.LOCALES,
        "current_path": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
    }


# -- template filters ------------------------------------------------------------------------


def make_filters(zone: Any) -> dict[str, Any]:
    return {
        "localtime": lambda value, fmt=MINUTES: localtime(value, zone, fmt),
        "money": money,
        "urlquote": lambda s: quote(str(s), safe=""),
    }


MINUTES = "%Y-%m-%d %H:%M"


def localtime(value: datetime | None, zone: Any, fmt: str = MINUTES) -> str:
    if value is None:
        return ""
    local = ensure_utc(value).astimezone(zone)
    # The common format from isoformat: the same text at half of strftime's cost.
    return local.isoformat(" ", "minutes")[:16] if fmt == MINUTES else local.strftime(fmt)


def money(value: Decimal | None) -> str:
    return "" if value is None else f"¥{value:,.2f}"


def escape_text(value: str) -> str:
    """`value` made safe to print between tags or in a quoted attribute, as plain text: for
    values that a template prints without autoescape (see QueueRow)."""
    return html.escape(value, quote=True)


def duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return i18n.gettext("%(d)sd %(h)sh", d=days, h=hours)
    if hours:
        return i18n.gettext("%(h)sh %(m)sm", h=hours, m=minutes)
    return i18n.gettext("%(m)sm", m=minutes)


def carrier_status_label(status: str | None) -> str:
    if not status:
        return ""
    labels = STATUS_LABELS.get(status, {})
    return labels.get(i18n.get_locale(), labels.get("en", status))


def status_badge(status: str) -> Markup:
    text = escape(labels.label("status", status))
    return Markup(f'<span class="badge status-{escape(status)}" data-status="{escape(status)}">{text}</span>')


def condition_text(c: dict[str, Any]) -> str:
    """One checked condition in plain words: 'amount ¥89 ≤ ¥200 ✓'."""
    from aftersales.tickets.policy import SYMBOLS, _show

    money = c["fact"] == "amount"
    actual = f"¥{c['actual']}" if money and c["actual"] is not None else _show(c["actual"])
    expected = f"¥{c['expected']}" if money else _show(c["expected"])
    return f"{labels.label('fact', c['fact'])} {actual} {SYMBOLS[c['op']]} {expected} {'✓' if c['held'] else '✗'}"


def template_config(zone: Any) -> TemplateConfig[JinjaTemplateEngine]:
    def configure(engine: JinjaTemplateEngine) -> None:
        env = engine.engine
        env.add_extension("jinja2.ext.i18n")
        env.install_gettext_callables(i18n.gettext, i18n.ngettext, newstyle=True)  # type: ignore[attr-defined]
        compile_per_locale(env)
        env.filters.update(make_filters(zone))
        env.globals.update(
            duration=duration,
            reason_label=lambda code: reason_label(code, i18n.get_locale()),
            carrier_status=carrier_status_label,
            label=labels.label,
            status_badge=status_badge,
            condition_text=condition_text,
        )
        env.trim_blocks = True
        env.lstrip_blocks = True

    return TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine, engine_callback=configure)


# -- auth for pages ----------------------------------------------------------------------------

LANG_COOKIE = "lang"


def page_auth_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Pages answer a missing sign-in with the sign-in page and a refusal with a 403 page."""
    if isinstance(exc, NotAuthorizedException):
        next_url = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""), safe="")
        if is_htmx(request):
            return Response(content="", status_code=401, headers={"HX-Redirect": f"/login?next={next_url}"})
        return Redirect(f"/login?next={next_url}", status_code=303)
    assert isinstance(exc, PermissionDeniedException)
    return render(request, "errors/forbidden.html", {"detail": exc.detail}, status_code=403)


# Every page controller answers auth failures the page way (sign-in redirect, 403 page).
PAGE_ERRORS = {NotAuthorizedException: page_auth_error, PermissionDeniedException: page_auth_error}

from aftersales import labels  # noqa: E402
