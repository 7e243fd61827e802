"""The classifier tries only the phrases whose first two characters occur in the complaint
(bench F29). That must lose nothing: every phrase that matches a text is among its candidates,
and the candidates keep the lexicon's order, which decides ties between categories."""

from __future__ import annotations

import csv
from pathlib import Path

from aftersales.feedback import classify

DATA = Path(__file__).resolve().parents[1] / "data" / "complaints_labelled.tsv"


def _texts() -> list[str]:
    with DATA.open(encoding="utf-8") as f:
        rows = [row for row in csv.reader(f, delimiter="\t") if row and not row[0].startswith("#")]
    texts = [cell for row in rows for cell in row if len(cell) > 3]
    # And every phrase as a complaint of its own, alone and negated, in both languages.
    phrases = [phrase for listed in classify.LEXICON.values() for phrase, _ in listed]
    return texts + phrases + [f"不是{p}" for p in phrases] + [f"it was not {p} at all" for p in phrases]


def test_every_matching_phrase_is_a_candidate_in_lexicon_order() -> None:
    keyed = classify._LEXICON_KEYED
    order = {entry: i for i, entry in enumerate(keyed.flat)}
    texts = _texts()
    assert len(texts) > 1000
    tried = 0
    for text in texts:
        lowered = text.lower()
        padded = " " + " ".join(classify._WORDS.findall(lowered)) + " "
        present = set(lowered) | {lowered[i:i + 2] for i in range(len(lowered) - 1)}
        candidates = keyed.candidates(present)
        matching = [entry for entry in keyed.flat if classify._matches(entry[1], lowered, padded)]
        assert set(matching) <= set(candidates), text
        assert [order[c] for c in candidates] == sorted(order[c] for c in candidates)
        tried += len(candidates)
    # The point of it: far fewer phrases tried than the whole lexicon for each text.
    assert tried < len(texts) * len(keyed.flat) / 5
