"""AutoApprovalJudge, the simulation's shortcut for "does this draft approve these stored facts
automatically?", against decide() on the same facts, without a database.

What they protect: the judge's answer is decide()'s for every document — including values of the
wrong JSON type (1 where true is expected, "1" or 1.0 where 1 is), missing facts, nulls and lists —
because it memoizes on each value's JSON text, never on Python equality (True == 1 == 1.0); a
value a comparison cannot read fails exactly where decide() fails and nowhere else; only the facts
the rules up to the last automatic one compare are read; documents msgspec refuses are still judged.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from aftersales.tickets.policy import AUTOMATIC, DEFAULT_POLICY, FACTS, AutoApprovalJudge, decide, parse

DRAFTS = [
    DEFAULT_POLICY,
    DEFAULT_POLICY.replace("list blocked_customers = []", "list blocked_customers = [C-1, 1, True]"),
    """\
rule a: requests_30d = 1 and not shipped = true -> approve
rule b: quality != false and amount >= 50 and amount < 100.5 -> fast_refund
rule c: categories in [美妆, 1] or products = P-1 -> queue general
rule d: customer not in [C-2] and days_since_signed <= 2.5 and kind in [refund_only, True] -> approve
default -> queue general
""",
]

# Values of every JSON type for every fact, so that the same Python-equal values (True, 1, 1.0)
# and texts of numbers meet the same comparisons.
ODD_VALUES: list[Any] = [None, True, False, 0, 1, 1.0, 2, "1", "true", "C-1", "C-2", "P-1", "美妆", "refund_only",
                         "return_refund", "preference.changed_mind", "89.00", "100.5", "50", ["P-1"], ["美妆", "食品"], [],
                         [1], {"a": 1}]


USUAL_VALUES: dict[str, list[Any]] = {
    "kind": ["refund_only", "return_refund", "complaint"], "reason": ["preference.changed_mind", "quality.defect"],
    "quality": [True, False], "amount": ["9.90", "50.00", "89.00", "100.50", "250.00", "1500.00"],
    "categories": [["美妆"], ["食品"]], "products": [["P-1"], ["P-2"]], "shipped": [True, False], "window_open": [True, False],
    "excluded": [False], "evidence": [True, False], "requests_30d": [0, 1, 3], "rejections_90d": [0, 2],
    "days_since_signed": [None, 1.5, 2.5, 6.0], "customer": ["C-1", "C-2", "C-3"],
}


def random_facts(rng: random.Random) -> dict[str, Any]:
    """Mostly usual values (so that both answers come up), often an odd one, sometimes none."""
    facts = {}
    for name in FACTS:
        if rng.random() < 0.05:
            continue  # missing
        odd = rng.random() < 0.15 or name not in USUAL_VALUES
        facts[name] = rng.choice(ODD_VALUES if odd else USUAL_VALUES[name])
    return facts


def outcome_of(function: Any) -> Any:
    try:
        return function()
    except Exception as exc:  # noqa: BLE001 - the kind of failure is what is compared
        return type(exc)


@pytest.mark.parametrize("draft", range(len(DRAFTS)))
def test_the_judge_answers_what_decide_answers_for_odd_documents(draft):
    policy = parse(DRAFTS[draft])
    judge = AutoApprovalJudge(policy)
    rng = random.Random(draft)
    answers = {True: 0, False: 0}
    for _ in range(4000):
        document = json.dumps(random_facts(rng), ensure_ascii=rng.random() < 0.5)
        expected = outcome_of(lambda: decide(policy, json.loads(document))[0].decision in AUTOMATIC)
        got = outcome_of(lambda: judge.automatic(document))
        if isinstance(expected, type) and got is False:
            # decide() failed in a rule after the last automatic one, which the judge does not read:
            # no later rule can approve, so "not automatic" is the answer decide() would have led to.
            assert outcome_of(lambda: decide(judge.policy, json.loads(document))) is not expected
            continue
        assert got == expected, document
        if isinstance(got, bool):
            answers[got] += 1
    assert answers[True] > 50 and answers[False] > 50, answers  # both answers were exercised


def test_equal_python_values_with_different_json_are_judged_apart():
    policy = parse("rule one: requests_30d in [1] -> approve\ndefault -> queue general\n")
    judge = AutoApprovalJudge(policy)
    # str(True) is "True", str(1.0) is "1.0": only the integer 1 is in [1].
    assert [judge.automatic(json.dumps({"requests_30d": v})) for v in (1, True, 1.0, 1, True)] == [True, False, False, True, False]


def test_a_value_a_comparison_cannot_read_fails_only_where_decide_reaches_it():
    policy = parse("rule cheap: kind = refund_only and amount < 10 -> approve\ndefault -> queue general\n")
    judge = AutoApprovalJudge(policy)
    # The amount is never compared for a complaint: no error, as with decide().
    assert judge.automatic(json.dumps({"kind": "complaint", "amount": "n/a"})) is False
    with pytest.raises(ArithmeticError):
        decide(policy, {"kind": "refund_only", "amount": "n/a"})
    with pytest.raises(ArithmeticError):
        judge.automatic(json.dumps({"kind": "refund_only", "amount": "n/a"}))


def test_only_facts_compared_up_to_the_last_automatic_rule_are_read():
    judge = AutoApprovalJudge(parse(DEFAULT_POLICY))
    # The blocked lists are empty (no customer or product is ever in them) and the queue rules after
    # fast_quality_refund cannot approve: customer, products, host … are never decoded.
    assert judge.facts == ("amount", "evidence", "excluded", "kind", "quality", "reason", "rejections_90d",
                           "requests_30d", "shipped", "window_open")
    nothing = AutoApprovalJudge(parse("rule big: amount > 100 -> queue high_value\ndefault -> queue general\n"))
    assert nothing.facts == () and nothing.automatic('{"amount": "5000.00"}') is False


def test_documents_msgspec_refuses_are_judged_the_plain_way():
    policy = parse("rule late: days_since_signed > 3 -> approve\ndefault -> queue general\n")
    judge = AutoApprovalJudge(policy)
    assert judge.automatic('{"days_since_signed": 2, "session": NaN}') is False
    assert judge.automatic('{"days_since_signed": 5, "session": NaN}') is True
    assert judge.automatic('{"days_since_signed": Infinity}') is True
