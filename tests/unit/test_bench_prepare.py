"""`python -m bench --reuse` reuses only a data set that is really there (bench/run.py prepare)."""

from __future__ import annotations

import json

from bench import run


def test_generating_at_a_url_forgets_other_scales_kept_there(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "DATA", tmp_path)
    made: list[int] = []

    def fake_generate(url: str, *, tickets: int, seed: int) -> dict:
        made.append(tickets)
        return {"url": url, "tickets": tickets, "seed": seed, "seconds_total": 1.0, "rows_total": tickets}

    monkeypatch.setattr("bench.generate.generate", fake_generate)
    pg, other = "postgresql+asyncpg://postgres@127.0.0.1/aftersales_bench", "sqlite+aiosqlite:///elsewhere.db"
    run.prepare(pg, 1_000_000, 7, False, "postgres-1000000")
    run.prepare(other, 1_000_000, 7, False, "sqlite-1000000")
    assert run.prepare(pg, 1_000_000, 7, True, "postgres-1000000")["reused"] is True
    run.prepare(pg, 100_000, 7, True, "postgres-100000")  # the one bench database now holds 100,000
    assert not (tmp_path / "postgres-1000000.json").exists()
    assert json.loads((tmp_path / "sqlite-1000000.json").read_text())["url"] == other  # another URL: kept
    assert run.prepare(pg, 1_000_000, 7, True, "postgres-1000000")["reused"] is False
    assert made == [1_000_000, 1_000_000, 100_000, 1_000_000]
