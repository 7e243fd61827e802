"""Merchant time (aftersales.sla.calendar): 24/7, and working hours in a zone with holidays.

What they protect (issue 5, items 1 and 7): a business calendar counts only working hours in its
own time zone, skips weekends and holidays both when measuring a span and when finding the
moment a target falls due, and is exact at the edges (before / inside / after hours, empty spans).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from aftersales.sla.calendar import Calendar

SH = ZoneInfo("Asia/Shanghai")
H = 3600.0
WEEKDAYS_9_18 = {d: (time(9), time(18)) for d in range(5)}
# 2026-11-20 is a Friday; 2026-11-23 the Monday after, 2026-11-24 the Tuesday.
FRI, MON, TUE = date(2026, 11, 20), date(2026, 11, 23), date(2026, 11, 24)


def sh(day: date, hour: int, minute: int = 0) -> datetime:
    """A Shanghai wall-clock instant, as UTC (what the service stores)."""
    return datetime.combine(day, time(hour, minute), tzinfo=SH).astimezone(timezone.utc)


def business(*holidays: date, tz: str = "Asia/Shanghai") -> Calendar:
    return Calendar(business=True, tz=ZoneInfo(tz), hours=dict(WEEKDAYS_9_18), holidays=frozenset(holidays))


def test_the_dates_are_what_the_tests_assume() -> None:
    assert (FRI.weekday(), MON.weekday(), TUE.weekday()) == (4, 0, 1)


# -- 24/7 ---------------------------------------------------------------------------------------


def test_24x7_counts_every_second_and_adds_plainly() -> None:
    cal = Calendar()
    start = sh(FRI, 17)
    assert cal.working_seconds(start, start + timedelta(hours=65, seconds=7)) == 65 * H + 7
    # A weekend is merchant time like any other.
    assert cal.working_seconds(sh(FRI, 17), sh(MON, 10)) == 65 * H
    assert cal.add_working(start, 48 * H) == start + timedelta(hours=48)
    assert cal.add_working(start, 0) == start


def test_from_dict_24x7_and_business() -> None:
    assert Calendar.from_dict({"type": "24x7"}).business is False
    assert Calendar.from_dict({}).business is False
    cal = Calendar.from_dict({
        "type": "business", "timezone": "Asia/Shanghai",
        "hours": {str(d): ["09:00", "18:00"] for d in range(5)}, "holidays": ["2026-11-23"],
    })
    assert cal.business and cal.tz == SH
    assert cal.hours == WEEKDAYS_9_18
    assert cal.holidays == frozenset({MON})
    assert cal.working_seconds(sh(FRI, 17), sh(TUE, 10)) == 2 * H


# -- business hours: spans --------------------------------------------------------------------


def test_business_hours_across_a_weekend() -> None:
    # Friday 17:00 → Monday 10:00 Shanghai: one hour on Friday, one on Monday.
    assert business().working_seconds(sh(FRI, 17), sh(MON, 10)) == 2 * H


def test_business_hours_across_a_weekend_and_a_holiday() -> None:
    cal = business(MON)
    assert cal.working_seconds(sh(FRI, 17), sh(MON, 10)) == 1 * H  # Monday is off
    assert cal.working_seconds(sh(FRI, 17), sh(TUE, 10)) == 2 * H
    # The whole holiday counts nothing.
    assert cal.working_seconds(sh(MON, 0), sh(TUE, 0)) == 0


def test_a_holiday_is_a_local_date_not_a_utc_date() -> None:
    # Tuesday 08:00 Shanghai is Tuesday 00:00 UTC; Monday 20:00 UTC is already Tuesday 04:00 Shanghai.
    cal = business(MON)
    assert cal.working_seconds(datetime(2026, 11, 23, 0, 0, tzinfo=timezone.utc),
                               datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)) == 0  # Mon 08:00–18:00 SH: holiday
    assert cal.working_seconds(datetime(2026, 11, 23, 20, 0, tzinfo=timezone.utc),
                               datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)) == 1 * H  # Tue 09:00–10:00 SH


def test_start_inside_before_and_after_working_hours() -> None:
    cal = business()
    assert cal.working_seconds(sh(MON, 10), sh(MON, 12, 30)) == 2.5 * H  # inside
    assert cal.working_seconds(sh(MON, 7), sh(MON, 10)) == 1 * H  # before opening
    assert cal.working_seconds(sh(MON, 20), sh(TUE, 10)) == 1 * H  # after closing
    assert cal.working_seconds(sh(MON, 19), sh(MON, 23)) == 0  # entirely after hours
    assert cal.working_seconds(sh(MON, 8), sh(MON, 20)) == 9 * H  # a whole working day
    # A full week: five days of nine hours.
    assert cal.working_seconds(sh(MON, 0), sh(MON + timedelta(days=7), 0)) == 45 * H


def test_zero_and_negative_spans_count_nothing() -> None:
    for cal in (Calendar(), business()):
        at = sh(MON, 10)
        assert cal.working_seconds(at, at) == 0
        assert cal.working_seconds(at, at - timedelta(hours=5)) == 0


def test_naive_datetimes_are_utc() -> None:
    naive_start = sh(FRI, 17).replace(tzinfo=None)
    assert business().working_seconds(naive_start, sh(MON, 10)) == 2 * H


def test_other_zone_across_a_dst_change() -> None:
    # Europe/Berlin leaves summer time on Sunday 2026-10-25; local working hours stay 09:00–18:00.
    berlin = ZoneInfo("Europe/Berlin")
    cal = business(tz="Europe/Berlin")
    fri = datetime(2026, 10, 23, 17, 0, tzinfo=berlin)
    mon = datetime(2026, 10, 26, 10, 0, tzinfo=berlin)
    assert cal.working_seconds(fri, mon) == 2 * H
    assert cal.add_working(fri, 2 * H) == mon.astimezone(timezone.utc)


# -- business hours: adding merchant time ---------------------------------------------------------


def test_add_working_across_a_weekend() -> None:
    cal = business()
    assert cal.add_working(sh(FRI, 17), 2 * H) == sh(MON, 10)
    # Exactly the rest of Friday ends at closing time, not on Monday.
    assert cal.add_working(sh(FRI, 17), 1 * H) == sh(FRI, 18)
    assert cal.add_working(sh(FRI, 17), 1 * H + 1) == sh(MON, 9) + timedelta(seconds=1)


def test_add_working_across_a_weekend_and_a_holiday() -> None:
    cal = business(MON)
    assert cal.add_working(sh(FRI, 17), 2 * H) == sh(TUE, 10)
    # 16 working hours from Friday evening: Tuesday 9 h, Wednesday 7 h.
    assert cal.add_working(sh(FRI, 20), 16 * H) == sh(TUE + timedelta(days=1), 16)


def test_add_working_from_before_and_after_hours() -> None:
    cal = business()
    assert cal.add_working(sh(MON, 7), 1 * H) == sh(MON, 10)
    assert cal.add_working(sh(MON, 20), 1 * H) == sh(TUE, 10)
    assert cal.add_working(sh(MON, 10), 1.5 * H) == sh(MON, 11, 30)
    # Saturday morning: the clock only starts on Monday.
    assert cal.add_working(sh(FRI + timedelta(days=1), 8), 30 * 60) == sh(MON, 9, 30)


def test_add_working_with_zero_is_the_start() -> None:
    for cal in (Calendar(), business()):
        assert cal.add_working(sh(MON, 10), 0) == sh(MON, 10)


def test_add_working_with_negative_seconds_is_the_start_on_every_calendar() -> None:
    """Regression: 24/7 used to go back in time while business calendars clamped."""
    for cal in (business(), Calendar()):
        assert cal.add_working(sh(MON, 10), -H) == sh(MON, 10)


def test_add_working_and_working_seconds_agree() -> None:
    cal = business(MON)
    start = sh(FRI, 16, 15)
    for hours in (0.25, 1, 1.75, 2, 9, 10.5, 20, 48):
        due = cal.add_working(start, hours * H)
        assert due is not None
        assert cal.working_seconds(start, due) == pytest.approx(hours * H)
        # And nothing earlier reaches it.
        assert cal.working_seconds(start, due - timedelta(seconds=1)) < hours * H


def test_a_calendar_without_working_time_never_falls_due() -> None:
    cal = Calendar(business=True, tz=SH, hours={}, holidays=frozenset())
    assert cal.add_working(sh(MON, 10), H) is None
    assert cal.working_seconds(sh(MON, 10), sh(TUE, 10)) == 0
