"""Queries behind the team inbox and the supervisors' overview (read only)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales.feedback.actions import OPEN_STATUSES
from aftersales.feedback.models import ITEM_STATUSES, FeedbackAction, FeedbackItem
from aftersales.orders.models import LiveSession
from aftersales.tickets.models import Ticket

GROUPS = ("product", "category", "session", "host")
STATUS_CHOICES = ("open", "all", *ITEM_STATUSES)


@dataclass
class InboxFilter:
    team: str
    status: str = "open"  # open (new, acknowledged, reopened) | all | one status
    category: str = ""
    product: str = ""
    session: int | None = None
    host: str = ""
    created_from: datetime | None = None
    created_to: datetime | None = None
    q: str = ""

    def conditions(self) -> list[Any]:
        out: list[Any] = [FeedbackItem.team == self.team]
        if self.status == "open":
            out.append(FeedbackItem.status.in_(OPEN_STATUSES))
        elif self.status in ITEM_STATUSES:
            out.append(FeedbackItem.status == self.status)
        if self.category:
            out.append(FeedbackItem.category == self.category)
        if self.product:
            out.append(FeedbackItem.product_id == self.product)
        if self.session is not None:
            out.append(FeedbackItem.live_session_id == self.session)
        if self.host:
            out.append(FeedbackItem.host == self.host)
        if self.created_from is not None:
            out.append(FeedbackItem.created_at >= self.created_from)
        if self.created_to is not None:
            out.append(FeedbackItem.created_at < self.created_to)
        if self.q:
            escaped = self.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            out.append(or_(FeedbackItem.quote.ilike(f"%{escaped}%", escape="\\"),
                           FeedbackItem.product_name.ilike(f"%{escaped}%", escape="\\")))
        return out


@dataclass(frozen=True)
class InboxRow:
    item: FeedbackItem
    ticket_number: str
    session_external_id: str | None
    session_title: str | None


async def list_items(session: AsyncSession, flt: InboxFilter, *, limit: int, offset: int) -> tuple[list[InboxRow], int]:
    """A page of the team's items, newest first, and how many match in all."""
    where = and_(*flt.conditions())
    total = int(await session.scalar(select(func.count()).select_from(FeedbackItem).where(where)) or 0)
    query: Select[Any] = (
        select(FeedbackItem, Ticket.number, LiveSession.external_id, LiveSession.title)
        .join(Ticket, Ticket.id == FeedbackItem.ticket_id)
        .outerjoin(LiveSession, LiveSession.id == FeedbackItem.live_session_id)
        .where(where)
        .order_by(FeedbackItem.created_at.desc(), FeedbackItem.id.desc())
        .limit(limit).offset(offset)
    )
    rows = [InboxRow(item, number, ext, title) for item, number, ext, title in (await session.execute(query)).all()]
    return rows, total


async def group_counts(session: AsyncSession, flt: InboxFilter, group: str, *, limit: int = 30) -> list[dict[str, Any]]:
    """Counts of the filtered items per product, category, live session or host."""
    new = func.sum(case((FeedbackItem.status == "new", 1), else_=0))
    if group == "product":
        cols: list[Any] = [FeedbackItem.product_id, func.min(FeedbackItem.product_name)]
        keys: list[Any] = [FeedbackItem.product_id]
    elif group == "category":
        cols, keys = [FeedbackItem.category, FeedbackItem.category], [FeedbackItem.category]
    elif group == "session":
        cols = [FeedbackItem.live_session_id, func.min(LiveSession.title), func.min(LiveSession.external_id), func.min(LiveSession.host)]
        keys = [FeedbackItem.live_session_id]
    elif group == "host":
        cols, keys = [FeedbackItem.host, FeedbackItem.host], [FeedbackItem.host]
    else:
        raise ValueError(group)
    query = (
        select(*cols, func.count().label("n"), new.label("new"), func.min(FeedbackItem.created_at).label("oldest"))
        .outerjoin(LiveSession, LiveSession.id == FeedbackItem.live_session_id)
        .where(*flt.conditions())
        .group_by(*keys)
        .order_by(func.count().desc(), *keys)
        .limit(limit)
    )
    out = []
    for row in (await session.execute(query)).all():
        entry = {"key": row[0], "label": row[1], "count": int(row.n), "new": int(row.new or 0), "oldest": row.oldest}
        if group == "session":
            entry.update(external_id=row[2], host=row[3])
        out.append(entry)
    return out


async def filter_options(session: AsyncSession, team: str) -> dict[str, Any]:
    """What the filters can offer: the categories, products, sessions and hosts of the team's items."""
    base = FeedbackItem.team == team
    categories = list((await session.execute(select(FeedbackItem.category).where(base).distinct().order_by(FeedbackItem.category))).scalars())
    products = [(p, n) for p, n in (await session.execute(
        select(FeedbackItem.product_id, func.min(FeedbackItem.product_name)).where(base).group_by(FeedbackItem.product_id)
        .order_by(func.min(FeedbackItem.product_name))
    )).all()]
    sessions = [(i, ext, title) for i, ext, title in (await session.execute(
        select(LiveSession.id, LiveSession.external_id, LiveSession.title)
        .where(LiveSession.id.in_(select(FeedbackItem.live_session_id).where(base))).order_by(LiveSession.external_id.desc())
    )).all()]
    hosts = [h for h in (await session.execute(
        select(FeedbackItem.host).where(base, FeedbackItem.host.is_not(None)).distinct().order_by(FeedbackItem.host)
    )).scalars()]
    return {"categories": categories, "products": products, "sessions": sessions, "hosts": hosts}


async def team_status(session: AsyncSession, teams: list[str], now: datetime) -> list[dict[str, Any]]:
    """Per team: items per status, and how long the open ones wait (oldest new / acknowledged)."""
    counts: dict[str, dict[str, int]] = {t: dict.fromkeys(ITEM_STATUSES, 0) for t in teams}
    for team, status, n in (await session.execute(
        select(FeedbackItem.team, FeedbackItem.status, func.count()).where(FeedbackItem.team.in_(teams))
        .group_by(FeedbackItem.team, FeedbackItem.status)
    )).all():
        counts[team][status] = int(n)
    oldest: dict[tuple[str, str], datetime] = {}
    for team, status, at in (await session.execute(
        select(FeedbackItem.team, FeedbackItem.status, func.min(FeedbackItem.created_at))
        .where(FeedbackItem.team.in_(teams), FeedbackItem.status.in_(OPEN_STATUSES))
        .group_by(FeedbackItem.team, FeedbackItem.status)
    )).all():
        oldest[(team, status)] = _aware(at)
    open_actions = dict((await session.execute(
        select(FeedbackAction.team, func.count()).where(FeedbackAction.team.in_(teams), FeedbackAction.outcome.is_(None))
        .group_by(FeedbackAction.team)
    )).all())
    out = []
    for team in teams:
        c = counts[team]
        oldest_new = oldest.get((team, "new"))
        oldest_open = min((v for (t, _), v in oldest.items() if t == team), default=None)
        out.append({
            "team": team, "counts": c, "open": sum(c[s] for s in OPEN_STATUSES),
            "oldest_new": oldest_new, "new_wait_seconds": (now - oldest_new).total_seconds() if oldest_new else None,
            "oldest_open": oldest_open, "open_wait_seconds": (now - oldest_open).total_seconds() if oldest_open else None,
            "open_actions": int(open_actions.get(team, 0)),
        })
    return out


async def team_actions(session: AsyncSession, team: str, *, limit: int = 20) -> list[FeedbackAction]:
    query = select(FeedbackAction).where(FeedbackAction.team == team).order_by(
        FeedbackAction.outcome.is_not(None), FeedbackAction.action_date.desc(), FeedbackAction.id.desc()
    ).limit(limit)
    return list((await session.execute(query)).scalars())


def _aware(value: datetime) -> datetime:
    from aftersales.clock import ensure_utc

    return ensure_utc(value)


__all__ = ["GROUPS", "STATUS_CHOICES", "InboxFilter", "filter_options", "group_counts", "list_items", "team_status"]
