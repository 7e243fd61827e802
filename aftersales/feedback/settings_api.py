"""Feedback settings API: the reason taxonomy (admins edit it) and the routing rules
(supervisors and admins edit them)."""

from __future__ import annotations

from litestar import Controller, Response, delete, get, post, put
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.clock import Clock
from aftersales.auth.guards import requires
from aftersales.feedback.settings import FeedbackSettings, ReasonCategoryIn, ReasonCategoryOut, RoutingRuleIn, RoutingRuleOut

EVERYONE = ("integration", "agent", "supervisor", "product", "admin")
READ_RULES = ("product", "supervisor", "admin")
EDIT_RULES = ("supervisor", "admin")
EDIT_TAXONOMY = ("admin",)


class FeedbackSettingsController(Controller):
    path = "/api/v1/feedback"
    tags = ["feedback settings"]

    @get("/taxonomy", guards=[requires(*EVERYONE)])
    async def taxonomy(self, db_session: AsyncSession, clock: Clock) -> list[ReasonCategoryOut]:
        """Every reason category (built-in and added), inactive ones included, by group."""
        return await FeedbackSettings(db_session, clock).categories()

    @put("/taxonomy/{code:str}", guards=[requires(*EDIT_TAXONOMY)])
    async def put_category(self, code: str, data: ReasonCategoryIn, db_session: AsyncSession, clock: Clock) -> Response[ReasonCategoryOut]:
        """Create (201) or edit (200) a category: names, quality flag, active. A new code is
        `group.name` in lowercase; its group is an existing one or a new one."""
        row, created = await FeedbackSettings(db_session, clock).save_category(code, data)
        await db_session.commit()
        return Response(content=row, status_code=201 if created else 200)

    @get("/routing-rules", guards=[requires(*READ_RULES)])
    async def rules(self, db_session: AsyncSession, clock: Clock) -> list[RoutingRuleOut]:
        """Every routing rule, active ones first."""
        return await FeedbackSettings(db_session, clock).rules()

    @post("/routing-rules", guards=[requires(*EDIT_RULES)], status_code=201)
    async def create_rule(self, data: RoutingRuleIn, db_session: AsyncSession, clock: Clock) -> RoutingRuleOut:
        """Add a rule; it routes the tickets that arrive (or are re-categorized) from now on."""
        row = await FeedbackSettings(db_session, clock).create_rule(data)
        await db_session.commit()
        return row

    @put("/routing-rules/{rule_id:int}", guards=[requires(*EDIT_RULES)])
    async def update_rule(self, rule_id: int, data: RoutingRuleIn, db_session: AsyncSession, clock: Clock) -> RoutingRuleOut:
        row = await FeedbackSettings(db_session, clock).update_rule(rule_id, data)
        await db_session.commit()
        return row

    @delete("/routing-rules/{rule_id:int}", guards=[requires(*EDIT_RULES)], status_code=200)
    async def deactivate_rule(self, rule_id: int, db_session: AsyncSession, clock: Clock) -> RoutingRuleOut:
        """Deactivate (rules are kept: routed items name the rule that sent them)."""
        row = await FeedbackSettings(db_session, clock).deactivate_rule(rule_id)
        await db_session.commit()
        return row


__all__ = ["FeedbackSettingsController"]
