"""Closing the loop: a team acknowledges items, records the action taken on a product, and later
verifies (the return rate fell) or reopens it. The only code that moves a feedback item's status
after routing; every move is a conditional UPDATE so two people cannot move the same item twice."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.auth.principal import Principal
from aftersales.clock import Clock, ensure_utc
from aftersales.errors import Conflict, Forbidden, InvalidInput, NotFound
from aftersales.feedback.analytics import rate_before_after
from aftersales.feedback.models import FeedbackAction, FeedbackItem
from aftersales.feedback.routing import TEAMS
from aftersales.feedback.taxonomy import is_known_reason

OPEN_STATUSES = ("new", "acknowledged", "reopened")
ACKNOWLEDGEABLE = ("new", "reopened")
ACTIONABLE = ("new", "acknowledged", "reopened")
OUTCOMES = ("verified", "reopened")
EVALUATION_DAYS = 30  # equal windows before and after the action date
MAX_DESCRIPTION = 2000


def allowed_teams(principal: Principal) -> list[str]:
    """Supervisors and admins see every team; a product-team member only their own."""
    if principal.role in ("supervisor", "admin"):
        return list(TEAMS)
    if principal.role == "product":
        return [t for t in TEAMS if t in principal.teams]
    return []


def require_team(principal: Principal, team: str) -> None:
    if team not in TEAMS:
        raise NotFound(f"no team {team!r}")
    if team not in allowed_teams(principal):
        raise Forbidden(f"not a member of team {team!r}")


def day_start(day: date, zone: ZoneInfo) -> datetime:
    return ensure_utc(datetime.combine(day, time.min, tzinfo=zone))


class FeedbackActions:
    def __init__(self, session: AsyncSession, clock: Clock, zone: ZoneInfo) -> None:
        self.session = session
        self.clock = clock
        self.zone = zone

    async def acknowledge(self, item_ids: Iterable[int], principal: Principal) -> int:
        """new / reopened → acknowledged. Items already further along are left alone; asking for
        another team's items is refused as a whole. Returns how many moved."""
        ids = sorted({int(i) for i in item_ids})
        if not ids:
            raise InvalidInput.on("item", "select at least one item")
        teams = set((await self.session.execute(select(FeedbackItem.team).where(FeedbackItem.id.in_(ids)))).scalars())
        if not teams:
            raise NotFound("no such feedback items")
        outside = sorted(teams - set(allowed_teams(principal)))
        if outside:
            raise Forbidden(f"not a member of team {', '.join(outside)}")
        result = await self.session.execute(
            update(FeedbackItem)
            .where(FeedbackItem.id.in_(ids), FeedbackItem.status.in_(ACKNOWLEDGEABLE))
            .values(status="acknowledged", acknowledged_at=self.clock.now(), acknowledged_by=principal.actor)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)

    async def record_action(self, *, team: str, product_id: str, reason: str | None, description: str, action_date: date,
                            principal: Principal) -> tuple[FeedbackAction, int]:
        """Record what the team did about a product (for one reason, or all of its reasons): the
        team's open items of that product (and reason) move to actioned and point at the action."""
        require_team(principal, team)
        description = description.strip()
        if not description:
            raise InvalidInput.on("description", "say what was done")
        if len(description) > MAX_DESCRIPTION:
            raise InvalidInput.on("description", f"at most {MAX_DESCRIPTION} characters")
        if reason is not None and not is_known_reason(reason):
            raise InvalidInput.on("reason", f"unknown reason {reason!r}")
        today = self.clock.now().astimezone(self.zone).date()
        if action_date > today:
            raise InvalidInput.on("action_date", "an action is recorded once it is taken: the date cannot be in the future")
        name = await self.session.scalar(
            select(FeedbackItem.product_name).where(FeedbackItem.team == team, FeedbackItem.product_id == product_id)
            .order_by(FeedbackItem.created_at.desc()).limit(1)
        )
        if name is None:
            raise InvalidInput.on("product_id", f"team {team} has no feedback on product {product_id!r}")
        action = FeedbackAction(team=team, product_id=product_id, product_name=name, reason_code=reason, description=description,
                                action_date=action_date, created_by=principal.actor, created_at=self.clock.now(), outcome_data={})
        self.session.add(action)
        await self.session.flush()
        conditions = [FeedbackItem.team == team, FeedbackItem.product_id == product_id, FeedbackItem.status.in_(ACTIONABLE)]
        if reason is not None:
            conditions.append(FeedbackItem.category == reason)
        result = await self.session.execute(
            update(FeedbackItem).where(*conditions).values(status="actioned", action_id=action.id)
            .execution_options(synchronize_session=False)
        )
        return action, int(result.rowcount or 0)

    async def get(self, action_id: int, principal: Principal) -> FeedbackAction:
        action = await self.session.get(FeedbackAction, action_id)
        if action is None:
            raise NotFound(f"no action {action_id}")
        require_team(principal, action.team)
        return action

    async def evaluate(self, action: FeedbackAction) -> dict[str, Any]:
        """The product's return rate (for the action's reason) over orders placed in the 30 days
        before the action date and the 30 days from it, and the outcome the figures suggest."""
        pivot = day_start(action.action_date, self.zone)
        figures = await rate_before_after(self.session, action.product_id, action.reason_code, pivot, window_days=EVALUATION_DAYS)
        now = self.clock.now()
        elapsed = max(min(now, pivot + timedelta(days=EVALUATION_DAYS)) - pivot, timedelta())
        before, after = figures["before"]["rate"], figures["after"]["rate"]
        if before is None or after is None:
            suggestion = None
        else:
            suggestion = "verified" if after < before else "reopened"
        return {
            "product_id": action.product_id, "reason": action.reason_code, "pivot": pivot.isoformat(),
            "window_days": EVALUATION_DAYS, "after_days_elapsed": round(elapsed.total_seconds() / 86400, 1),
            "before": figures["before"], "after": figures["after"], "suggestion": suggestion,
        }

    async def decide(self, action_id: int, outcome: str, principal: Principal, note: str = "") -> tuple[FeedbackAction, int]:
        """The team confirms: verified (only when the rate after is lower) or reopened. The action's
        items follow; the figures the decision was based on are stored with it."""
        if outcome not in OUTCOMES:
            raise InvalidInput.on("outcome", "must be verified or reopened")
        action = await self.get(action_id, principal)
        if action.outcome is not None:
            raise Conflict(f"action {action_id} was already decided: {action.outcome}")
        figures = await self.evaluate(action)
        if outcome == "verified" and figures["suggestion"] != "verified":
            raise Conflict("the return rate did not fall after the action (or there are no orders to compare yet): it cannot be verified")
        now = self.clock.now()
        data = {**figures, "decided_by": principal.actor, "decided_at": now.isoformat(), "note": note.strip()[:MAX_DESCRIPTION],
                "followed_suggestion": outcome == figures["suggestion"]}
        result = await self.session.execute(
            update(FeedbackAction).where(FeedbackAction.id == action_id, FeedbackAction.outcome.is_(None))
            .values(outcome=outcome, verified_at=now, outcome_data=data).execution_options(synchronize_session=False)
        )
        if not result.rowcount:
            raise Conflict(f"action {action_id} was decided by someone else meanwhile")
        moved = await self.session.execute(
            update(FeedbackItem).where(FeedbackItem.action_id == action_id, FeedbackItem.status == "actioned")
            .values(status=outcome).execution_options(synchronize_session=False)
        )
        await self.session.refresh(action)
        return action, int(moved.rowcount or 0)
