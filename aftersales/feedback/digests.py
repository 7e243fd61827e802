"""Team digests per day and week: what went wrong, with which products and sessions, how often
against the previous period, in customers' own words — generated exactly once per team and period."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aftersales.clock import Clock
from aftersales.db import dialect_insert
from aftersales.errors import InvalidInput
from aftersales.feedback.analytics import problem_products
from aftersales.feedback.models import Digest, FeedbackAction, FeedbackItem
from aftersales.feedback.routing import TEAMS
from aftersales.feedback.taxonomy import reason_label
from aftersales.notifications.service import enqueue
from aftersales.orders.models import LiveSession

PERIODS = {"day": timedelta(days=1), "week": timedelta(days=7)}
CLAIM_CATEGORIES = ("description.host_claim_mismatch", "description.not_as_described", "price.promo_dispute")


def period_bounds(period: str, start: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    begin = datetime.combine(start, time.min, tzinfo=tz)
    return begin, begin + PERIODS[period]


def last_complete_period(period: str, now: datetime, tz: ZoneInfo) -> date:
    today = now.astimezone(tz).date()
    if period == "day":
        return today - timedelta(days=1)
    monday = today - timedelta(days=today.weekday())
    return monday - timedelta(days=7)


async def build_digest(session: AsyncSession, team: str, period: str, start: date, tz: ZoneInfo) -> dict[str, Any]:
    begin, end = period_bounds(period, start, tz)
    span = end - begin
    items = list((await session.execute(
        select(FeedbackItem).where(FeedbackItem.team == team, FeedbackItem.created_at >= begin, FeedbackItem.created_at < end)
    )).scalars())
    previous = Counter(dict((await session.execute(
        select(FeedbackItem.category, func.count()).where(
            FeedbackItem.team == team, FeedbackItem.created_at >= begin - span, FeedbackItem.created_at < begin
        ).group_by(FeedbackItem.category)
    )).all()))
    now_counts = Counter(i.category for i in items)
    categories = [
        {"category": c, "label_zh": reason_label(c, "zh_CN"), "label_en": reason_label(c, "en"), "count": n,
         "previous": previous.get(c, 0), "change": n - previous.get(c, 0)}
        for c, n in sorted(now_counts.items(), key=lambda kv: -kv[1])
    ]
    products = Counter((i.product_id, i.product_name) for i in items)
    skus = Counter((i.sku, i.product_name) for i in items)
    content: dict[str, Any] = {
        "team": team, "period": period, "start": begin.isoformat(), "end": end.isoformat(), "items": len(items),
        "categories": categories,
        "products": [{"product_id": p, "product_name": n, "count": c} for (p, n), c in products.most_common(10)],
        "skus": [{"sku": s, "product_name": n, "count": c} for (s, n), c in skus.most_common(10)],
        "quotes": _quotes(items),
    }
    if team == "script":
        content["sessions"] = await _claim_sessions(session, items)
        hosts = Counter(i.host for i in items if i.category in CLAIM_CATEGORIES and i.host)
        content["hosts"] = [{"host": h, "count": c} for h, c in hosts.most_common(10)]
    if team in ("qc", "selection"):
        window_start = end - timedelta(days=30)
        findings = await problem_products(session, window_start, end, reasons=[None, "quality.defect", "quality.damaged"])
        content["problem_products"] = [f for f in findings if f["flagged"]][:10]
    actions = list((await session.execute(
        select(FeedbackAction).where(FeedbackAction.team == team, FeedbackAction.outcome.is_(None)).order_by(FeedbackAction.action_date)
    )).scalars())
    content["open_actions"] = [{"id": a.id, "product_name": a.product_name, "description": a.description,
                                "action_date": a.action_date.isoformat()} for a in actions]
    open_items = dict((await session.execute(
        select(FeedbackItem.status, func.count()).where(FeedbackItem.team == team, FeedbackItem.status.in_(("new", "acknowledged", "reopened")))
        .group_by(FeedbackItem.status)
    )).all())
    content["open_items"] = open_items
    return content


async def _claim_sessions(session: AsyncSession, items: list[FeedbackItem]) -> list[dict[str, Any]]:
    counts = Counter(i.live_session_id for i in items if i.category in CLAIM_CATEGORIES and i.live_session_id)
    if not counts:
        return []
    rows = {row.id: row for row in (await session.execute(select(LiveSession).where(LiveSession.id.in_(list(counts))))).scalars()}
    return [{"session": rows[sid].title, "host": rows[sid].host, "external_id": rows[sid].external_id, "count": c}
            for sid, c in counts.most_common(10) if sid in rows]


def _quotes(items: list[FeedbackItem], per_category: int = 2, total: int = 8) -> list[dict[str, str]]:
    """Representative words: for each frequent category, its most detailed distinct complaints."""
    by_category = Counter(i.category for i in items)
    quotes: list[dict[str, str]] = []
    for category, _ in by_category.most_common():
        seen: set[str] = set()
        candidates = sorted((i for i in items if i.category == category and i.quote), key=lambda i: -len(i.quote))
        for item in candidates:
            if item.quote in seen:
                continue
            seen.add(item.quote)
            quotes.append({"category": category, "product_name": item.product_name, "quote": item.quote[:200]})
            if len(seen) >= per_category:
                break
        if len(quotes) >= total:
            break
    return quotes


async def generate_digest(session: AsyncSession, clock: Clock, team: str, period: str, start: date, tz: ZoneInfo,
                          *, content: dict[str, Any] | None = None) -> tuple[Digest, bool]:
    """Create the digest unless it exists (from `content` when it was built already). Returns
    (digest, created). The insert races safely: the unique (team, period, start) index lets exactly
    one writer create it and notify."""
    if content is None:
        content = await build_digest(session, team, period, start, tz)
    inserted = await session.execute(
        dialect_insert(session, Digest)
        .values(team=team, period=period, period_start=start, generated_at=clock.now(), content=content)
        .on_conflict_do_nothing(index_elements=["team", "period", "period_start"])
        .returning(Digest.id)
    )
    new_id = inserted.scalar()
    digest = await session.scalar(select(Digest).where(Digest.team == team, Digest.period == period, Digest.period_start == start))
    assert digest is not None
    if new_id is not None:
        await enqueue(session, clock, "digest.ready", f"{team}:{period}:{start}", _message(digest))
    return digest, new_id is not None


def _message(digest: Digest) -> dict[str, Any]:
    c = digest.content
    lines = [f"- {x['label_zh']} {x['count']} ({'+' if x['change'] >= 0 else ''}{x['change']})" for x in c["categories"][:6]]
    if c.get("problem_products"):
        lines.append("异常商品: " + "、".join(p["product_name"] for p in c["problem_products"][:5]))
    if c.get("sessions"):
        lines.append("话术投诉最多的场次: " + "、".join(f"{s['session']}({s['count']})" for s in c["sessions"][:3]))
    return {
        "title": f"售后反馈周报 {digest.team} {digest.period_start}" if digest.period == "week" else f"售后反馈日报 {digest.team} {digest.period_start}",
        "text": "\n".join(lines) or "本期无反馈",
        "team": digest.team, "period": digest.period, "start": str(digest.period_start),
        "url": f"/feedback/digests/{digest.team}/{digest.period}/{digest.period_start}",
    }


def period_complete(period: str, start: date, zone: ZoneInfo, now: datetime) -> bool:
    return period_bounds(period, start, zone)[1] <= now


async def find_digest(session: AsyncSession, team: str, period: str, start: date) -> Digest | None:
    return await session.scalar(select(Digest).where(Digest.team == team, Digest.period == period, Digest.period_start == start))


async def get_or_generate(session: AsyncSession, read: async_sessionmaker[AsyncSession], clock: Clock, zone: ZoneInfo,
                          team: str, period: str, start: date) -> tuple[Digest, bool]:
    """The stored digest, or — once its period is over — generate it now (exactly once).

    It is looked up and built in a `read` session and only stored in `session`: built inside the
    write transaction it held SQLite's one write lock (and this process's write gate) for the
    ~0.6 s of its queries, stopping every intake and tracking batch meanwhile (bench F25). Two
    builders of the same digest may both build it; the unique key stores one."""
    async with read() as reading:
        existing = await find_digest(reading, team, period, start)
        if existing is not None:
            return existing, False
        if not period_complete(period, start, zone, clock.now()):
            raise InvalidInput.on("start", "this period is not over yet: its digest is generated once it ends")
        content = await build_digest(reading, team, period, start, zone)
    digest, created = await generate_digest(session, clock, team, period, start, zone, content=content)
    await session.commit()
    return digest, created


async def generate_due_digests(factory: async_sessionmaker[AsyncSession], clock: Clock, tz: ZoneInfo,
                                read: async_sessionmaker[AsyncSession] | None = None) -> int:
    """The worker's pass: yesterday's daily and last week's weekly digest for every team, once
    (`serve` runs it itself on SQLite; `read` gives its deferred readers there)."""
    created = 0
    for period in PERIODS:
        start = last_complete_period(period, clock.now(), tz)
        for team in TEAMS:
            async with factory() as session:
                _, new = await get_or_generate(session, read or factory, clock, tz, team, period, start)
                created += int(new)
    return created
