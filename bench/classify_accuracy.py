"""Accuracy of the complaint classifier against a hand-labelled set.

Loads ``tests/data/complaints_labelled.tsv`` (``label<TAB>lang<TAB>text``), runs
``aftersales.feedback.classify.suggest`` on every text and prints overall accuracy,
accuracy per language, per-label precision / recall, the misses and the accuracy of the
confident suggestions (confidence >= threshold) with their coverage.

    python bench/classify_accuracy.py [--data PATH] [--threshold 0.5] [--json PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # runnable as a plain script from anywhere
    sys.path.insert(0, str(ROOT))

from aftersales.feedback.classify import suggest  # noqa: E402

DEFAULT_DATA = ROOT / "tests" / "data" / "complaints_labelled.tsv"


@dataclass(frozen=True)
class Row:
    label: str
    lang: str
    text: str


@dataclass(frozen=True)
class Result:
    row: Row
    got: str
    confidence: float
    terms: tuple[str, ...]

    @property
    def hit(self) -> bool:
        return self.got == self.row.label


def load(path: Path = DEFAULT_DATA) -> list[Row]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [Row(r["label"], r["lang"], r["text"]) for r in reader]


def run(rows: list[Row]) -> list[Result]:
    out = []
    for row in rows:
        s = suggest(row.text)
        out.append(Result(row, s.category, float(s.confidence), tuple(s.terms)))
    return out


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def figures(results: list[Result], threshold: float = 0.5) -> dict:
    n = len(results)
    hits = sum(r.hit for r in results)

    by_lang: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        by_lang[r.row.lang].append(r)
    per_lang = {
        lang: {"n": len(rs), "accuracy": _ratio(sum(r.hit for r in rs), len(rs))}
        for lang, rs in sorted(by_lang.items())
    }

    labels = sorted({r.row.label for r in results} | {r.got for r in results})
    tp = Counter(r.row.label for r in results if r.hit)
    gold = Counter(r.row.label for r in results)
    pred = Counter(r.got for r in results)
    per_label = {}
    for lab in labels:
        p = _ratio(tp[lab], pred[lab])
        rc = _ratio(tp[lab], gold[lab])
        f1 = 2 * p * rc / (p + rc) if p and rc else 0.0
        per_label[lab] = {
            "support": gold[lab],
            "predicted": pred[lab],
            "precision": p,
            "recall": rc,
            "f1": f1,
        }

    confident = [r for r in results if r.confidence >= threshold]
    misses = [
        {
            "text": r.row.text,
            "lang": r.row.lang,
            "expected": r.row.label,
            "got": r.got,
            "confidence": round(r.confidence, 3),
            "terms": list(r.terms),
        }
        for r in results
        if not r.hit
    ]
    pairs = Counter((m["expected"], m["got"]) for m in misses)
    return {
        "n": n,
        "accuracy": _ratio(hits, n),
        "per_lang": per_lang,
        "per_label": per_label,
        "threshold": threshold,
        "confident": {
            "n": len(confident),
            "coverage": _ratio(len(confident), n),
            "accuracy": _ratio(sum(r.hit for r in confident), len(confident)),
        },
        "confusions": [
            {"expected": e, "got": g, "count": c} for (e, g), c in pairs.most_common()
        ],
        "misses": misses,
    }


def _pct(x: float | None) -> str:
    return "   n/a" if x is None else f"{100 * x:5.1f}%"


def render(f: dict) -> str:
    lines = [f"complaints: {f['n']}", f"overall accuracy: {_pct(f['accuracy'])}"]
    for lang, d in f["per_lang"].items():
        lines.append(f"  {lang}: {_pct(d['accuracy'])}  (n={d['n']})")
    c = f["confident"]
    lines.append(
        f"confidence >= {f['threshold']}: accuracy {_pct(c['accuracy'])}, "
        f"coverage {_pct(c['coverage'])} ({c['n']}/{f['n']})"
    )
    lines.append("")
    lines.append(f"{'label':34} {'sup':>4} {'pred':>4} {'prec':>7} {'recall':>7} {'f1':>7}")
    for lab, d in f["per_label"].items():
        lines.append(
            f"{lab:34} {d['support']:4d} {d['predicted']:4d} {_pct(d['precision']):>7} "
            f"{_pct(d['recall']):>7} {_pct(d['f1']):>7}"
        )
    lines.append("")
    lines.append("most frequent confusions (expected -> got):")
    for cf in f["confusions"][:15]:
        lines.append(f"  {cf['count']:3d}  {cf['expected']} -> {cf['got']}")
    lines.append("")
    lines.append(f"misses ({len(f['misses'])}):")
    for m in sorted(f["misses"], key=lambda m: (m["expected"], m["got"])):
        terms = ",".join(m["terms"]) or "-"
        lines.append(
            f"  [{m['lang']}] {m['text']}\n"
            f"        expected {m['expected']}, got {m['got']} "
            f"(conf {m['confidence']:.2f}, terms {terms})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON")
    args = ap.parse_args(argv)

    f = figures(run(load(args.data)), args.threshold)
    print(render(f))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(f, ensure_ascii=False, indent=2), encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
