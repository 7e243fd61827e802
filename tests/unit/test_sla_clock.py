"""Replaying a ticket's SLA event log (aftersales.sla.clock.replay) into elapsed time and due times.

What they protect (issue 5, item 2): start / pause / resume / stop / reopen / first_response give
the elapsed merchant time, whether the clock runs, and when it falls due; a paused clock has no
due time; events that make no difference (pause while paused, resume while running) change nothing.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from aftersales.sla.calendar import Calendar
from aftersales.sla.clock import replay

T0 = datetime(2026, 11, 20, 2, 0, tzinfo=timezone.utc)  # Friday 10:00 Shanghai
H = 3600.0
TARGET = 48 * H
CAL = Calendar()


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def test_nothing_recorded_is_not_started() -> None:
    state = replay([], CAL)
    assert (state.started, state.stopped, state.running_since, state.elapsed) == (False, False, None, 0.0)
    assert state.due_at(CAL, TARGET) is None


def test_running_clock_elapsed_and_due() -> None:
    state = replay([(at(0), "start")], CAL)
    assert state.started and not state.stopped and state.running_since == at(0)
    assert state.elapsed_at(CAL, at(10)) == 10 * H
    assert state.elapsed_at(CAL, at(50)) == 50 * H
    assert state.due_at(CAL, TARGET) == at(48)


def test_pause_and_resume() -> None:
    events = [(at(0), "start"), (at(2), "pause"), (at(32), "resume")]
    state = replay(events[:2], CAL)
    assert state.running_since is None and not state.stopped
    assert state.elapsed == 2 * H
    # While paused the time stands still and there is no due time.
    assert state.elapsed_at(CAL, at(30)) == 2 * H
    assert state.due_at(CAL, TARGET) is None
    state = replay(events, CAL)
    assert state.running_since == at(32)
    assert state.elapsed_at(CAL, at(40)) == 10 * H
    # 46 h left from the resume.
    assert state.due_at(CAL, TARGET) == at(32 + 46)


def test_stop_then_reopen_continues_the_clock() -> None:
    events = [(at(0), "start"), (at(2), "pause"), (at(12), "resume"), (at(20), "stop")]
    state = replay(events, CAL)
    assert state.stopped and state.running_since is None
    assert state.elapsed == 10 * H
    assert state.elapsed_at(CAL, at(200)) == 10 * H
    assert state.due_at(CAL, TARGET) is None
    state = replay(events + [(at(100), "reopen")], CAL)
    assert not state.stopped and state.running_since == at(100)
    assert state.elapsed_at(CAL, at(105)) == 15 * H
    assert state.due_at(CAL, TARGET) == at(100 + 38)
    state = replay(events + [(at(100), "reopen"), (at(110), "stop")], CAL)
    assert state.stopped and state.elapsed == 20 * H


def test_first_response_stops_its_clock() -> None:
    state = replay([(at(0), "start"), (at(1.5), "first_response")], CAL)
    assert state.stopped and state.running_since is None
    assert state.elapsed == 1.5 * H
    assert state.elapsed_at(CAL, at(9)) == 1.5 * H


def test_events_that_change_nothing_are_ignored() -> None:
    events = [
        (at(0), "start"),
        (at(1), "resume"),  # already running: does not restart the count
        (at(2), "pause"),
        (at(3), "pause"),  # already paused
        (at(5), "resume"),
        (at(6), "start"),  # already running
    ]
    state = replay(events, CAL)
    assert state.running_since == at(5)
    assert state.elapsed_at(CAL, at(7)) == 4 * H


def test_replay_on_a_business_calendar() -> None:
    sh = ZoneInfo("Asia/Shanghai")
    cal = Calendar(business=True, tz=sh, hours={d: (time(9), time(18)) for d in range(5)},
                   holidays=frozenset({date(2026, 11, 23)}))

    def local(day: int, hour: int) -> datetime:
        return datetime(2026, 11, day, hour, tzinfo=sh).astimezone(timezone.utc)

    # Opened Friday 17:00, paused Tuesday 10:00 (Monday a holiday): 2 working hours.
    state = replay([(local(20, 17), "start"), (local(24, 10), "pause")], cal)
    assert state.elapsed == 2 * H
    state = replay([(local(20, 17), "start"), (local(24, 10), "pause"), (local(24, 14), "resume")], cal)
    # 16 h target, 14 h left from Tuesday 14:00: 4 h Tuesday, 9 h Wednesday, 1 h Thursday.
    assert state.due_at(cal, 16 * H) == local(26, 10)
    assert state.elapsed_at(cal, local(25, 9)) == 6 * H


def test_due_at_when_already_past_target_is_now_on_the_clock() -> None:
    state = replay([(at(0), "start"), (at(10), "pause"), (at(20), "resume")], CAL)
    assert state.due_at(CAL, 5 * H) == at(20)


def test_stop_while_paused_stops_the_clock() -> None:
    """Regression: a reship closed from replacement_shipped, or a ticket cancelled while waiting."""
    state = replay([(at(0), "start"), (at(4), "pause"), (at(30), "stop")], CAL)
    assert state.elapsed == 4 * H
    assert state.stopped
