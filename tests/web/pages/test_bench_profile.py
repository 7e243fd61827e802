"""`python -m bench.profile --phases` (the in-process timing behind bench F23 and F24) runs the real
app against the database and reports its phases."""

from __future__ import annotations

import argparse
import functools

from bench import profile


async def test_phases_time_a_signed_in_page(settings, engine, users, monkeypatch, capsys):
    monkeypatch.setattr(profile, "_time_phases", functools.partial(profile._time_phases, patch=monkeypatch.setattr))
    monkeypatch.setenv("AFTERSALES_DATABASE_URL", settings.database_url)
    agent = users["agent"]
    args = argparse.Namespace(db=settings.database_url, path="/queue", tracking=False, intake=False, role="agent",
                              sign_in=f"{agent['username']}:{agent['password']}", n=3, sort="cumulative", top=5,
                              time_only=True, statements=False, phases=True, batch=1)
    await profile._main(args)
    out = capsys.readouterr().out
    assert "3 × GET /queue" in out
    for phase in ("app (all of the request's server side)", "TicketRepository.list_page", "tickets.pages.queue_rows",
                  "template render and response"):
        assert f"ms per step  {phase}" in out, out
