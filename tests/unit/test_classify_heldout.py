"""Held-out measurement of the phrase-based reason classifier.

``tests/data/complaints_heldout.tsv`` was written blind to the classifier and
to the set it was tuned on, so the figures printed here (run with ``pytest -s``)
are the honest estimate of how it does on new text. The assertions are only a
sanity floor; the measured numbers are the point.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from aftersales.feedback.classify import suggest

DATA = Path(__file__).resolve().parents[1] / "data" / "complaints_heldout.tsv"

MIN_ROWS = 140
MIN_PER_LABEL = 10
ACCURACY_FLOOR = 0.40


def _load() -> list[dict[str, str]]:
    with DATA.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _accuracy(pairs: list[tuple[str, str]]) -> float:
    return sum(gold == got for gold, got in pairs) / len(pairs) if pairs else 0.0


def test_heldout_accuracy() -> None:
    rows = _load()
    assert len(rows) >= MIN_ROWS
    per_label = Counter(r["label"] for r in rows)
    thin = {label: n for label, n in per_label.items() if n < MIN_PER_LABEL}
    assert not thin, f"labels with fewer than {MIN_PER_LABEL} rows: {thin}"

    results = [(r["label"], r["lang"], r["text"], suggest(r["text"]).category) for r in rows]
    overall = _accuracy([(g, p) for g, _, _, p in results])
    by_lang = {
        lang: _accuracy([(g, p) for g, l, _, p in results if l == lang])
        for lang in sorted({r[1] for r in results})
    }

    print()
    print(f"held-out accuracy: {overall:.3f} ({len(results)} rows)")
    for lang, acc in by_lang.items():
        n = sum(1 for r in results if r[1] == lang)
        print(f"  {lang}: {acc:.3f} ({n} rows)")
    print("per-label recall:")
    for label in sorted(per_label):
        mine = [(g, p) for g, _, _, p in results if g == label]
        print(f"  {label:32s} {_accuracy(mine):.2f} ({sum(g == p for g, p in mine)}/{len(mine)})")
    misses = [(g, p, l, t) for g, l, t, p in results if g != p]
    print(f"misses ({len(misses)}):")
    for gold, got, lang, text in misses:
        print(f"  [{lang}] {gold} -> {got}: {text}")
    confusions = Counter((g, p) for g, p, _, _ in misses)
    print("most common confusions:")
    for (gold, got), n in confusions.most_common(10):
        print(f"  {n}  {gold} -> {got}")

    assert overall > ACCURACY_FLOOR, f"held-out accuracy {overall:.3f} below sanity floor"
