"""Problem-product detection (aftersales.feedback.stats), pure and seeded.

What it protects:
- the exact binomial tail is exact (against a direct sum of binomial terms);
- small samples are never tested, and an excess below 1.5× the baseline is never flagged;
- on planted data a real excess is flagged and noise at the baseline is not;
- the family-wise false-alarm rate under the null stays at or below the stated 5 %, and the
  test has useful power at 3× the baseline.

Run as a script for the figures quoted in docs/feedback.md (500 runs × 200 null products):
    .venv/bin/python -m tests.unit.test_feedback_stats
"""

from __future__ import annotations

import math
import random

import pytest

from aftersales.feedback.stats import ALPHA, MIN_RATIO, MIN_RETURNS, MIN_UNITS, Candidate, binomial_sf, detect


def exact_sf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


@pytest.mark.parametrize(("k", "n", "p"), [(0, 10, 0.3), (1, 10, 0.3), (3, 20, 0.05), (10, 20, 0.05), (20, 20, 0.5),
                                           (7, 150, 0.06), (25, 150, 0.06), (60, 400, 0.1), (5, 5, 0.999)])
def test_binomial_tail_is_exact(k, n, p):
    assert binomial_sf(k, n, p) == pytest.approx(exact_sf(k, n, p), rel=1e-9, abs=1e-300)


def test_binomial_tail_edges():
    assert binomial_sf(0, 5, 0.2) == 1.0
    assert binomial_sf(6, 5, 0.2) == 0.0
    assert binomial_sf(1, 5, 0.0) == 0.0
    assert binomial_sf(5, 5, 1.0) == 1.0


def _sample(rng: random.Random, n: int, p: float) -> int:
    """Binomial(n, p) by jumping from success to success (geometric gaps): O(n·p) draws."""
    if p <= 0:
        return 0
    if p >= 1:
        return n
    log_q = math.log1p(-p)
    count, position = 0, -1
    while True:
        position += int(math.log(1.0 - rng.random()) / log_q) + 1
        if position >= n:
            return count
        count += 1


def null_run(rng: random.Random, products: int, *, p: float = 0.06, categories: int = 4,
             planted: tuple[int, float] | None = None) -> list[Candidate]:
    """`products` products at their category's rate (categories differ: p, 1.5p, 2p, 0.5p), and
    optionally one planted product (units, rate) in the first category. Returns the candidates."""
    rates = [p * f for f in (1.0, 1.5, 2.0, 0.5)][:categories]
    sold: list[tuple[str, int, int, int]] = []
    for i in range(products):
        c = i % categories
        units = rng.randint(20, 300)
        sold.append((f"N{i}", c, units, _sample(rng, units, rates[c])))
    if planted:
        units, rate = planted
        sold.append(("PLANTED", 0, units, _sample(rng, units, rate)))
    totals = [(sum(u for _, cc, u, _ in sold if cc == c), sum(r for _, cc, _, r in sold if cc == c)) for c in range(categories)]
    return [Candidate(key, u, r, totals[c][0] - u, totals[c][1] - r) for key, c, u, r in sold]


def false_alarm_rate(runs: int, products: int, seed: int) -> float:
    rng = random.Random(seed)
    return sum(any(f.flagged for f in detect(null_run(rng, products))) for _ in range(runs)) / runs


def power(runs: int, products: int, units: int, factor: float, seed: int, p: float = 0.06) -> float:
    rng = random.Random(seed)
    hits = 0
    for _ in range(runs):
        findings = detect(null_run(rng, products, p=p, planted=(units, p * factor)))
        hits += any(f.key == "PLANTED" and f.flagged for f in findings)
    return hits / runs


def test_small_samples_are_not_tested():
    few_units = Candidate("few", MIN_UNITS - 1, MIN_UNITS - 1, 10_000, 100)
    few_returns = Candidate("rare", 500, MIN_RETURNS - 1, 10_000, 1)
    assert detect([few_units, few_returns]) == []


def test_a_significant_but_small_excess_is_not_flagged():
    # 1.3× a 10 % baseline on 20 000 units is overwhelming statistically, but not worth an alarm.
    big = Candidate("big", 20_000, 2_600, 200_000, 20_000)
    (finding,) = detect([big])
    assert finding.p_value < finding.threshold and finding.ratio < MIN_RATIO
    assert not finding.flagged


def test_planted_excess_is_flagged_and_noise_is_not():
    rng = random.Random(7)
    candidates = null_run(rng, 100, planted=(150, 0.18))
    findings = detect(candidates)
    assert [f.key for f in findings if f.flagged] == ["PLANTED"]
    planted = next(f for f in findings if f.key == "PLANTED")
    # Bonferroni over every product large enough to be considered (chosen on units, not on returns).
    assert planted.threshold == pytest.approx(ALPHA / sum(c.units >= MIN_UNITS for c in candidates))
    assert len(findings) < len(candidates)  # those with fewer than MIN_RETURNS returns are not tested
    assert "p = " in planted.why and "×" in planted.why


def test_sampler_is_binomial():
    rng = random.Random(3)
    draws = [_sample(rng, 200, 0.06) for _ in range(20_000)]
    mean = sum(draws) / len(draws)
    var = sum((d - mean) ** 2 for d in draws) / len(draws)
    assert mean == pytest.approx(12.0, abs=0.1) and var == pytest.approx(200 * 0.06 * 0.94, rel=0.05)


def test_false_alarm_rate_under_the_null_is_at_most_alpha():
    # Family-wise: the share of runs (each 100 products at their category's rate) with any flag.
    assert false_alarm_rate(runs=2000, products=100, seed=11) <= ALPHA


def test_power_at_three_times_the_baseline():
    assert power(runs=60, products=100, units=200, factor=3.0, seed=5) >= 0.8


if __name__ == "__main__":  # the figures for docs/feedback.md
    print(f"false alarms: 500 runs x 200 null products: {false_alarm_rate(500, 200, seed=2026):.1%} of runs with any flag")
    print(f"false alarms: 5000 runs x 200 null products: {false_alarm_rate(5000, 200, seed=2027):.2%} of runs with any flag")
    for units in (100, 150, 200):
        for factor in (2.0, 3.0):
            print(f"power: {units} units at {factor:.0f}x a 6% baseline (200 other products): "
                  f"{power(1000, 200, units, factor, seed=units):.1%}")
