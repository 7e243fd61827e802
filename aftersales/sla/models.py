"""SLA policies and the per-ticket clock event log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from aftersales.db import Base, BigId, JSONType, UTCDateTime

METRICS = ("resolution", "first_response")


class SlaPolicy(Base):
    """Targets and calendar for the tickets it matches; the most specific active match governs."""

    __tablename__ = "sla_policies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    # Matching: empty means "any". More specific policies win (kind + queue > queue > kind > any).
    kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    queue: Mapped[str | None] = mapped_column(String(64), nullable=True)
    min_priority: Mapped[int | None] = mapped_column(Integer, nullable=True)
    resolution_minutes: Mapped[int] = mapped_column(Integer, default=48 * 60)
    first_response_minutes: Mapped[int] = mapped_column(Integer, default=120)
    # {"type": "24x7"} or {"type": "business", "timezone": "...", "hours": {"0": ["09:00", "21:00"], ...},
    #  "holidays": ["2026-10-01", ...]} (weekday 0 = Monday).
    calendar: Mapped[dict[str, Any]] = mapped_column(JSONType)
    pause_statuses: Mapped[list[str]] = mapped_column(JSONType)
    warn_at: Mapped[list[float]] = mapped_column(JSONType)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SlaEvent(Base):
    """start / pause / resume / first_response / at_risk / breach / stop / reopen, per ticket and metric.

    Warnings carry a dedupe key (metric:threshold) that is unique per ticket, so each one is
    written — and therefore notified — exactly once however many workers race for it.
    """

    __tablename__ = "sla_events"
    __table_args__ = (
        Index("ix_sla_events_ticket_metric", "ticket_id", "metric", "id"),
        Index("uq_sla_events_ticket_dedupe", "ticket_id", "dedupe_key", unique=True),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    metric: Mapped[str] = mapped_column(String(16))
    event: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    cause: Mapped[str] = mapped_column(Text, default="")
    threshold: Mapped[float | None] = mapped_column(nullable=True)
    dedupe_key: Mapped[str | None] = mapped_column(String(32), nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
