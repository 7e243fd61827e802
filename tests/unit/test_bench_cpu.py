"""The benchmark's CPU-per-unit figure: the servers' CPU charged to the load driver's measured window."""

from __future__ import annotations

from bench.report import cpu_per_unit
from bench.run import CLOCK_TICKS, RssSampler


def _sampler(postgres: bool) -> RssSampler:
    sampler = RssSampler([])
    sampler._postgres = postgres
    # Warm-up before t=10 burns CPU fast; the measured window 10..20 s uses one core for the app
    # and half a core for PostgreSQL.
    sampler.cpu = [(float(t), {7: (5 * t if t < 10 else 50 + (t - 10)) * CLOCK_TICKS}, {9: (t // 2) * CLOCK_TICKS})
                   for t in range(0, 25)]
    return sampler


def test_only_the_measured_window_counts() -> None:
    result = {"window": [10.0, 20.0], "units": 1000}
    figures = _sampler(postgres=True).cpu_ms_per_unit(result)
    assert figures == {"server_cpu_ms_per_unit": 10.0, "postgres_cpu_ms_per_unit": 5.0}  # 10 s / 1,000; 5 s / 1,000
    assert cpu_per_unit(figures) == "10 + 5"


def test_no_figure_without_units_or_samples() -> None:
    sampler = _sampler(postgres=False)
    assert sampler.cpu_ms_per_unit({"window": [10.0, 20.0], "units": 0}) == {}
    assert sampler.cpu_ms_per_unit({"window": [30.0, 40.0], "units": 5}) == {}
    assert cpu_per_unit({}) == "–"
    assert cpu_per_unit(sampler.cpu_ms_per_unit({"window": [10.0, 20.0], "units": 4000})) == "2.5"


def test_processes_that_start_or_exit_in_the_window_count_for_their_time_in_it() -> None:
    sampler = _sampler(postgres=True)
    for t, _, db in sampler.cpu:
        if t <= 13:  # a backend that had used 100 s before the window, 1 s a second, exits after 13 s
            db[11] = (100 + t) * CLOCK_TICKS
        if t >= 15:  # an autovacuum worker starts at 15 s and runs flat out
            db[12] = (t - 15) * CLOCK_TICKS
    figures = sampler.cpu_ms_per_unit({"window": [10.0, 20.0], "units": 1000})
    # 5 s (the backend that stays) + 3 s (the one that exits) + 5 s (the one that starts) a 1,000 units
    assert figures["postgres_cpu_ms_per_unit"] == 13.0
