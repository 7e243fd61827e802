"""Feedback: each ticket's categorized record, the items routed to teams, routing rules,
team actions that close the loop, and generated digests."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from aftersales.db import Base, BigId, JSONType, UTCDateTime

ITEM_STATUSES = ("new", "acknowledged", "actioned", "verified", "reopened")


class ReasonCategory(Base):
    """The reason taxonomy as data (seeded from aftersales.feedback.taxonomy), editable by admins."""

    __tablename__ = "reason_categories"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    parent: Mapped[str] = mapped_column(String(32))
    quality: Mapped[bool] = mapped_column(default=False)
    name_zh: Mapped[str] = mapped_column(String(100))
    name_en: Mapped[str] = mapped_column(String(100))
    active: Mapped[bool] = mapped_column(default=True)


class FeedbackRecord(Base):
    """What a ticket says about its cause: the category, how it was reached, and the text suggestion."""

    __tablename__ = "feedback_records"

    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    category: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(16))  # reason_code | agent
    suggested_category: Mapped[str] = mapped_column(String(64))
    suggestion_confidence: Mapped[float]
    suggestion_terms: Mapped[list[str]] = mapped_column(JSONType, default=list)
    confirmed_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # True when the agent chose another category than the suggestion: the accuracy signal.
    corrected: Mapped[bool | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RoutingRule(Base):
    """Category (a code, or a group like 'quality') → team, optionally only for some product
    categories or once a product has at least `min_repeat` such tickets in 30 days."""

    __tablename__ = "routing_rules"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    category: Mapped[str] = mapped_column(String(64))
    team: Mapped[str] = mapped_column(String(16))
    product_categories: Mapped[list[str]] = mapped_column(JSONType, default=list)
    min_repeat: Mapped[int] = mapped_column(Integer, default=1)
    active: Mapped[bool] = mapped_column(default=True)
    note: Mapped[str] = mapped_column(Text, default="")


class FeedbackAction(Base):
    """What a team did about a product (and reason): the loop is closed when the rate falls."""

    __tablename__ = "feedback_actions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team: Mapped[str] = mapped_column(String(16), index=True)
    product_id: Mapped[str] = mapped_column(String(64), index=True)
    product_name: Mapped[str] = mapped_column(String(300))
    reason_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    description: Mapped[str] = mapped_column(Text)
    action_date: Mapped[date] = mapped_column(Date)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)  # verified | reopened
    outcome_data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class FeedbackItem(Base):
    """One ticket's feedback routed to one team, carrying everything the team needs to act."""

    __tablename__ = "feedback_items"
    __table_args__ = (
        UniqueConstraint("ticket_id", "team", "product_id"),
        Index("ix_feedback_items_team_status_created", "team", "status", "created_at"),
        Index("ix_feedback_items_team_created", "team", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    team: Mapped[str] = mapped_column(String(16))
    category: Mapped[str] = mapped_column(String(64))
    product_id: Mapped[str] = mapped_column(String(64), index=True)
    product_name: Mapped[str] = mapped_column(String(300))
    sku: Mapped[str] = mapped_column(String(64))
    product_category: Mapped[str] = mapped_column(String(64))
    live_session_id: Mapped[int | None] = mapped_column(ForeignKey("live_sessions.id"), nullable=True, index=True)
    host: Mapped[str | None] = mapped_column(String(100), nullable=True)
    quote: Mapped[str] = mapped_column(Text, default="")
    evidence_urls: Mapped[list[str]] = mapped_column(JSONType, default=list)
    # Seconds from the start of the live session to the order: roughly when it was sold on stream.
    stream_offset_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    routed_because: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="new")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    action_id: Mapped[int | None] = mapped_column(ForeignKey("feedback_actions.id"), nullable=True)


class Digest(Base):
    """A team's digest for one period, generated exactly once (unique team, period, start)."""

    __tablename__ = "digests"
    __table_args__ = (UniqueConstraint("team", "period", "period_start"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team: Mapped[str] = mapped_column(String(16))
    period: Mapped[str] = mapped_column(String(8))  # day | week
    period_start: Mapped[date] = mapped_column(Date)
    generated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    content: Mapped[dict[str, Any]] = mapped_column(JSONType)
