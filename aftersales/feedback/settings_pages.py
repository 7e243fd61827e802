"""The feedback settings page (supervisors and admins): the reason taxonomy — editable by admins
only — and the routing rules, which supervisors add, edit and deactivate.

Every form posts plainly (→ 303 back to the page) or through htmx (→ the `feedback_settings`
block); a refused form comes back with the error naming the field and what was typed kept.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Controller, Request, get, post
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales import i18n
from aftersales.auth.guards import requires
from aftersales.clock import Clock
from aftersales.errors import DomainError, InvalidInput
from aftersales.feedback.routing import TEAMS
from aftersales.feedback.settings import (
    MAX_REPEAT, MIN_REPEAT, FeedbackSettings, ReasonCategoryIn, RoutingRuleIn, split_product_categories,
)
from aftersales.feedback.taxonomy import PARENTS
from aftersales.labels import label
from aftersales.pages import PAGE_ERRORS, is_htmx, render

PAGE = "/feedback/settings"
TEMPLATE = "feedback/settings.html"
BLOCK = "feedback_settings"
EDIT_RULES = ("supervisor", "admin")
EDIT_TAXONOMY = ("admin",)
RULE_FIELDS = ("category", "team", "product_categories", "min_repeat", "note")


class FeedbackSettingsPages(Controller):
    include_in_schema = False
    guards = [requires(*EDIT_RULES)]
    exception_handlers = PAGE_ERRORS

    @get(PAGE)
    async def page(self, request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock) -> Template:
        """The taxonomy and the routing rules; `feedback_settings` is the htmx block."""
        context = await _context(request, db_session, clock)
        return render(request, TEMPLATE, context, blocks=(BLOCK,))

    @post(f"{PAGE}/taxonomy", guards=[requires(*EDIT_TAXONOMY)])
    async def save_category(self, request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock) -> Template | Redirect:
        """Admins: add a category (code group.name) or edit one's names, quality flag and active."""
        form = await request.form()
        code = str(form.get("code", "")).strip()
        typed = {"code": code, "name_zh": str(form.get("name_zh", "")), "name_en": str(form.get("name_en", "")),
                 "quality": form.get("quality") == "on", "active": form.get("active") == "on"}

        async def save(service: FeedbackSettings) -> str:
            if not code:
                raise InvalidInput.on("code", "is required")
            data = ReasonCategoryIn(name_zh=typed["name_zh"], name_en=typed["name_en"], quality=typed["quality"], active=typed["active"])
            row, created = await service.save_category(code, data)
            return (i18n.gettext("Category %(code)s added.", code=row.code) if created
                    else i18n.gettext("Category %(code)s saved.", code=row.code))

        return await _submit(request, db_session, clock, save, {"category_form": typed, "category_error_code": code or "new"})

    @post(f"{PAGE}/rules")
    async def create_rule(self, request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock) -> Template | Redirect:
        form = await request.form()
        typed = _typed_rule(form)

        async def save(service: FeedbackSettings) -> str:
            row = await service.create_rule(_rule_in(typed))
            return i18n.gettext("Rule %(id)s added: %(category)s → %(team)s.", id=row.id, category=row.category, team=label("team", row.team))

        return await _submit(request, db_session, clock, save, {"rule_form": typed, "rule_error_id": "new"})

    @post(PAGE + "/rules/{rule_id:int}")
    async def update_rule(self, request: Request[Any, Any, Any], rule_id: int, db_session: AsyncSession, clock: Clock) -> Template | Redirect:
        form = await request.form()
        typed = _typed_rule(form)

        async def save(service: FeedbackSettings) -> str:
            await service.update_rule(rule_id, _rule_in(typed))
            return i18n.gettext("Rule %(id)s saved.", id=rule_id)

        return await _submit(request, db_session, clock, save, {"rule_form": typed, "rule_error_id": rule_id})

    @post(PAGE + "/rules/{rule_id:int}/deactivate")
    async def deactivate_rule(self, request: Request[Any, Any, Any], rule_id: int, db_session: AsyncSession, clock: Clock) -> Template | Redirect:
        async def save(service: FeedbackSettings) -> str:
            await service.deactivate_rule(rule_id)
            return i18n.gettext("Rule %(id)s deactivated: new tickets are no longer routed by it.", id=rule_id)

        return await _submit(request, db_session, clock, save, {"rule_error_id": rule_id})


async def _submit(request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock,
                  save: Callable[[FeedbackSettings], Awaitable[str]], on_error: dict[str, Any]) -> Template | Redirect:
    """Run one change in its own transaction; answer 303 (plain), the block (htmx) or the error."""
    try:
        notice = await save(FeedbackSettings(db_session, clock))
        await db_session.commit()
    except DomainError as exc:
        await db_session.rollback()
        context = {**await _context(request, db_session, clock), **on_error, "error": exc.detail,
                   "error_field": exc.errors[0].field if exc.errors else None}
        return render(request, TEMPLATE, context, blocks=(BLOCK,), status_code=exc.status_code, block=BLOCK if is_htmx(request) else None)
    if not is_htmx(request):
        return Redirect(PAGE, status_code=303)
    context = {**await _context(request, db_session, clock), "notice": notice}
    return render(request, TEMPLATE, context, block=BLOCK)


def _typed_rule(form: Any) -> dict[str, Any]:
    typed = {name: str(form.get(name, "")) for name in RULE_FIELDS}
    typed["active"] = form.get("active") == "on"
    return typed


def _rule_in(typed: dict[str, Any]) -> RoutingRuleIn:
    raw = typed["min_repeat"].strip() or "1"
    try:
        min_repeat = int(raw)
    except ValueError as exc:
        raise InvalidInput.on("min_repeat", f"must be a whole number between {MIN_REPEAT} and {MAX_REPEAT}") from exc
    return RoutingRuleIn(category=typed["category"], team=typed["team"], product_categories=split_product_categories(typed["product_categories"]),
                         min_repeat=min_repeat, active=typed["active"], note=typed["note"])


async def _context(request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock) -> dict[str, Any]:
    service = FeedbackSettings(db_session, clock)
    categories = await service.categories()
    groups = await service.groups()
    locale = "zh_CN" if i18n.get_locale() == "zh_CN" else "en"
    group_names = {g: PARENTS.get(g, {}).get(locale, g) for g in groups}
    principal = request.scope.get("state", {}).get("principal")

    return {
        "categories": categories, "groups": groups, "group_names": group_names, "rules": await service.rules(),
        "teams": list(TEAMS), "min_repeat": MIN_REPEAT, "max_repeat": MAX_REPEAT,
        "can_edit_taxonomy": principal is not None and principal.role in EDIT_TAXONOMY,
        "error": None, "error_field": None, "notice": None, "category_form": None, "category_error_code": None,
        "rule_form": None, "rule_error_id": None,
    }


__all__ = ["FeedbackSettingsPages"]
