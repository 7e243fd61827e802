"""Feedback settings as data: the reason taxonomy (admins edit it) and the routing rules
(supervisors edit them). The API and the settings page both go through this module, so one set
of rules decides what is valid and every refusal names its field.

Built-in reasons (aftersales.feedback.taxonomy) are part of the platform contract: intake always
accepts them. Categories an admin adds are accepted at intake while they are active.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.clock import Clock
from aftersales.errors import InvalidInput, NotFound
from aftersales.feedback.models import ReasonCategory, RoutingRule
from aftersales.feedback.routing import TEAMS
from aftersales.feedback.service import FeedbackService
from aftersales.feedback.taxonomy import PARENTS, REASONS

# A new code is "group.name", lowercase: the group before the dot is the parent reports roll up by.
CODE = re.compile(r"^[a-z][a-z0-9_]{0,31}\.[a-z][a-z0-9_]{0,30}$")
MAX_NAME = 100
MAX_NOTE = 500
MAX_PRODUCT_CATEGORIES = 50
MAX_PRODUCT_CATEGORY = 64
MIN_REPEAT, MAX_REPEAT = 1, 100


async def reason_exists(session: AsyncSession, code: str) -> bool:
    """Intake's check: a built-in reason code, or an active category an admin added."""
    return code in await existing_reasons(session, {code})


async def existing_reasons(session: AsyncSession, codes: set[str]) -> set[str]:
    """Which of `codes` are built-in reason codes or active categories an admin added."""
    known = {code for code in codes if code in REASONS}
    others = sorted(codes - known)
    if others:
        known.update((await session.execute(
            select(ReasonCategory.code).where(ReasonCategory.code.in_(others), ReasonCategory.active.is_(True))
        )).scalars())
    return known


# -- shapes -------------------------------------------------------------------------------------------


class ReasonCategoryIn(msgspec.Struct, kw_only=True):
    """Create or edit a category. The parent is the part of the code before the dot. `quality`
    left out keeps the current flag (a new category: true in the 'quality' group)."""

    name_zh: str
    name_en: str
    quality: bool | None = None
    active: bool = True


class ReasonCategoryOut(msgspec.Struct, kw_only=True):
    code: str
    parent: str
    quality: bool
    name_zh: str
    name_en: str
    active: bool
    builtin: bool


class RoutingRuleIn(msgspec.Struct, kw_only=True):
    """Category (a reason code, or a group such as 'quality') → team; optionally only for some
    product categories, or once a product has at least `min_repeat` such tickets in 30 days."""

    category: str
    team: str
    product_categories: list[str] = []
    min_repeat: int = 1
    active: bool = True
    note: str = ""


class RoutingRuleOut(msgspec.Struct, kw_only=True):
    id: int
    category: str
    team: str
    product_categories: list[str]
    min_repeat: int
    active: bool
    note: str


def category_out(row: ReasonCategory) -> ReasonCategoryOut:
    return ReasonCategoryOut(code=row.code, parent=row.parent, quality=bool(row.quality), name_zh=row.name_zh,
                             name_en=row.name_en, active=bool(row.active), builtin=row.code in REASONS)


def rule_out(row: RoutingRule) -> RoutingRuleOut:
    return RoutingRuleOut(id=row.id, category=row.category, team=row.team, product_categories=list(row.product_categories or []),
                          min_repeat=row.min_repeat, active=bool(row.active), note=row.note or "")


# -- the service ----------------------------------------------------------------------------------------


class FeedbackSettings:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self.session = session
        self.clock = clock

    # taxonomy

    async def categories(self) -> list[ReasonCategoryOut]:
        """Every category, built-in ones included even where `migrate` has not stored them yet
        (a read never writes), grouped by parent in taxonomy order."""
        rows = {row.code: category_out(row) for row in (await self.session.execute(select(ReasonCategory))).scalars()}
        for code, reason in REASONS.items():
            rows.setdefault(code, ReasonCategoryOut(code=code, parent=reason.parent, quality=reason.quality,
                                                    name_zh=reason.zh_CN, name_en=reason.en, active=True, builtin=True))
        order = {parent: i for i, parent in enumerate(PARENTS)}
        builtin_order = {code: i for i, code in enumerate(REASONS)}
        return sorted(rows.values(), key=lambda c: (order.get(c.parent, len(order)), c.parent,
                                                     builtin_order.get(c.code, len(builtin_order)), c.code))

    async def save_category(self, code: str, data: ReasonCategoryIn) -> tuple[ReasonCategoryOut, bool]:
        """Create or edit one category; True when it was created."""
        code = code.strip()
        await FeedbackService(self.session, self.clock).ensure_defaults()
        row = await self.session.get(ReasonCategory, code)
        if row is None and not CODE.match(code):
            raise InvalidInput.on("code", "must look like group.name: lowercase letters, digits and _, "
                                          "starting with a letter, at most 64 characters")
        name_zh, name_en = _name(data.name_zh, "name_zh"), _name(data.name_en, "name_en")
        created = row is None
        if row is None:
            parent = code.split(".", 1)[0]
            quality = data.quality if data.quality is not None else parent == "quality"
            row = ReasonCategory(code=code, parent=parent, quality=quality, name_zh=name_zh, name_en=name_en, active=data.active)
            self.session.add(row)
        else:
            row.name_zh, row.name_en, row.active = name_zh, name_en, data.active
            if data.quality is not None:
                row.quality = data.quality
        await self.session.flush()
        return category_out(row), created

    async def groups(self) -> list[str]:
        stored = set((await self.session.execute(select(ReasonCategory.parent).distinct())).scalars())
        known = list(PARENTS)
        return known + sorted(stored - set(known))

    # routing rules

    async def rules(self) -> list[RoutingRuleOut]:
        query = select(RoutingRule).order_by(RoutingRule.active.desc(), RoutingRule.category, RoutingRule.team, RoutingRule.id)
        return [rule_out(row) for row in (await self.session.execute(query)).scalars()]

    async def create_rule(self, data: RoutingRuleIn) -> RoutingRuleOut:
        # Seed the defaults first: the router only falls back to them while the table is empty.
        await FeedbackService(self.session, self.clock).ensure_defaults()
        fields = await self._check_rule(data)
        row = RoutingRule(**fields)
        self.session.add(row)
        await self.session.flush()
        return rule_out(row)

    async def update_rule(self, rule_id: int, data: RoutingRuleIn) -> RoutingRuleOut:
        row = await self._rule(rule_id)
        for name, value in (await self._check_rule(data)).items():
            setattr(row, name, value)
        await self.session.flush()
        return rule_out(row)

    async def deactivate_rule(self, rule_id: int) -> RoutingRuleOut:
        """Stop routing new tickets by this rule; items already routed stay where they are."""
        row = await self._rule(rule_id)
        row.active = False
        await self.session.flush()
        return rule_out(row)

    async def _rule(self, rule_id: int) -> RoutingRule:
        row = await self.session.get(RoutingRule, rule_id)
        if row is None:
            raise NotFound(f"no routing rule {rule_id}")
        return row

    async def _check_rule(self, data: RoutingRuleIn) -> dict[str, Any]:
        category = data.category.strip()
        if not category:
            raise InvalidInput.on("category", "is required: a reason code such as quality.defect, or a group such as quality")
        if not await self._known_category_or_group(category):
            raise InvalidInput.on("category", f"unknown reason code or group {category!r}")
        team = data.team.strip()
        if team not in TEAMS:
            raise InvalidInput.on("team", f"unknown team {team!r}; one of {', '.join(TEAMS)}")
        if not MIN_REPEAT <= data.min_repeat <= MAX_REPEAT:
            raise InvalidInput.on("min_repeat", f"must be between {MIN_REPEAT} and {MAX_REPEAT}")
        note = data.note.strip()
        if len(note) > MAX_NOTE:
            raise InvalidInput.on("note", f"at most {MAX_NOTE} characters")
        return {"category": category, "team": team, "product_categories": _product_categories(data.product_categories),
                "min_repeat": data.min_repeat, "active": data.active, "note": note}

    async def _known_category_or_group(self, value: str) -> bool:
        if value in REASONS or any(reason.parent == value for reason in REASONS.values()):
            return True
        found = await self.session.scalar(
            select(ReasonCategory.code).where((ReasonCategory.code == value) | (ReasonCategory.parent == value)).limit(1)
        )
        return found is not None


def _name(value: str, field: str) -> str:
    text = value.strip()
    if not text:
        raise InvalidInput.on(field, "is required")
    if len(text) > MAX_NAME:
        raise InvalidInput.on(field, f"at most {MAX_NAME} characters")
    return text


def _product_categories(values: Iterable[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        text = value.strip()
        if not text or text in out:
            continue
        if len(text) > MAX_PRODUCT_CATEGORY:
            raise InvalidInput.on("product_categories", f"{text[:20]!r}… is longer than {MAX_PRODUCT_CATEGORY} characters")
        out.append(text)
    if len(out) > MAX_PRODUCT_CATEGORIES:
        raise InvalidInput.on("product_categories", f"at most {MAX_PRODUCT_CATEGORIES} product categories")
    return out


def split_product_categories(raw: str) -> list[str]:
    """The page's text field: comma-, 、- or line-separated product categories."""
    return [part for part in re.split(r"[,，、;；\n]+", raw) if part.strip()]


__all__ = [
    "FeedbackSettings", "ReasonCategoryIn", "ReasonCategoryOut", "RoutingRuleIn", "RoutingRuleOut", "reason_exists",
    "split_product_categories",
]
