"""Merchant time: 24/7, or working hours in a zone with holidays. Pure, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aftersales.clock import ensure_utc

DAY = timedelta(days=1)
# A calendar with no working time at all would never reach a due time; stop looking after this.
MAX_SEARCH_DAYS = 3 * 366


@dataclass(frozen=True)
class Calendar:
    business: bool = False
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    # weekday (0 = Monday) -> (open, close) local times
    hours: dict[int, tuple[time, time]] = field(default_factory=dict)
    holidays: frozenset[date] = frozenset()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Calendar":
        if data.get("type", "24x7") == "24x7":
            return cls()
        hours = {
            int(day): (time.fromisoformat(span[0]), time.fromisoformat(span[1]))
            for day, span in (data.get("hours") or {}).items()
        }
        holidays = frozenset(date.fromisoformat(d) for d in data.get("holidays", []))
        return cls(business=True, tz=ZoneInfo(data.get("timezone", "Asia/Shanghai")), hours=hours, holidays=holidays)

    def working_seconds(self, start: datetime, end: datetime) -> float:
        """Merchant seconds between two instants."""
        start, end = ensure_utc(start), ensure_utc(end)
        if end <= start:
            return 0.0
        if not self.business:
            return (end - start).total_seconds()
        total = 0.0
        for open_at, close_at in self._windows(start, end):
            total += (min(close_at, end) - max(open_at, start)).total_seconds()
        return total

    def add_working(self, start: datetime, seconds: float) -> datetime | None:
        """The instant at which `seconds` of merchant time have passed since `start`."""
        start = ensure_utc(start)
        if not self.business:
            return start + timedelta(seconds=max(seconds, 0.0))
        remaining = seconds
        if remaining <= 0:
            return start
        for open_at, close_at in self._windows(start, start + timedelta(days=MAX_SEARCH_DAYS)):
            begin = max(open_at, start)
            span = (close_at - begin).total_seconds()
            if span >= remaining:
                return begin + timedelta(seconds=remaining)
            remaining -= span
        return None

    def _windows(self, start: datetime, end: datetime):
        """Working windows (UTC) overlapping [start, end), in order."""
        day = start.astimezone(self.tz).date() - DAY
        last = end.astimezone(self.tz).date() + DAY
        while day <= last:
            span = self.hours.get(day.weekday())
            if span and day not in self.holidays:
                open_at = datetime.combine(day, span[0], tzinfo=self.tz).astimezone(ZoneInfo("UTC"))
                close_at = datetime.combine(day, span[1], tzinfo=self.tz).astimezone(ZoneInfo("UTC"))
                if close_at > start and open_at < end:
                    yield open_at, close_at
            day += DAY
