"""Replay a ticket's SLA events into elapsed merchant time, due time and met / breached. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from aftersales.sla.calendar import Calendar

RUNNING_EVENTS = frozenset({"start", "resume", "reopen"})
STOPPING_EVENTS = frozenset({"pause", "stop", "first_response"})


@dataclass
class ClockState:
    elapsed: float  # merchant seconds up to `running_since` (or in total when stopped / paused)
    running_since: datetime | None
    stopped: bool
    started: bool

    def elapsed_at(self, calendar: Calendar, now: datetime) -> float:
        if self.running_since is None:
            return self.elapsed
        return self.elapsed + calendar.working_seconds(self.running_since, now)

    def due_at(self, calendar: Calendar, target_seconds: float) -> datetime | None:
        """When the target is reached if the clock keeps running; None while paused or stopped."""
        if self.running_since is None:
            return None
        return calendar.add_working(self.running_since, max(target_seconds - self.elapsed, 0.0))


def replay(events: list[tuple[datetime, str]], calendar: Calendar) -> ClockState:
    """Events are (time, name) in the order they were recorded."""
    state = ClockState(elapsed=0.0, running_since=None, stopped=False, started=False)
    for at, name in events:
        if name in RUNNING_EVENTS and state.running_since is None:
            state.running_since = at
            state.started = True
            state.stopped = False
        elif name in STOPPING_EVENTS:
            # A stop can come while paused (e.g. cancelled while awaiting the return): it still ends the clock.
            if state.running_since is not None:
                state.elapsed += calendar.working_seconds(state.running_since, at)
                state.running_since = None
            if name in ("stop", "first_response"):
                state.stopped = True
    return state
