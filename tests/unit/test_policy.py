"""The policy language (parse / evaluate / explain) and the 7-day window, without a database.

What they protect: the shipped default policy parses; every kind of mistake in a draft is
reported with its line and a readable problem (a supervisor fixes drafts from that message);
and/or/not precedence, list facts and `always` mean what they say; evaluation is
first-match-wins and the trace lists every rule tried with the values it saw; the explanation
reads as plain words; the no-reason window closes at local midnight of the 7th day after sign-for.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from aftersales.tickets.facts import no_reason_window_open
from aftersales.tickets.policy import DEFAULT_POLICY, PolicyError, evaluate, parse

SH = ZoneInfo("Asia/Shanghai")
TAIL = "\ndefault -> queue general\n"


def facts(**overrides):
    """Facts of a cheap 7-day no-reason return from a first-time customer."""
    base = {
        "kind": "return_refund", "reason": "preference.changed_mind", "reason_group": "preference", "quality": False,
        "amount": "89.00", "amount_share": "0.4279", "categories": ["美妆"], "products": ["P-LIP"], "shipped": True,
        "delivered": True, "days_since_signed": 3.0, "window_open": True, "excluded": False, "evidence": False,
        "requests_30d": 0, "requests_90d": 0, "refunds_30d": 0, "refunds_90d": 0, "rejections_90d": 0,
        "session": "LS-1", "host": "小雅", "customer": "C-1",
    }
    base.update(overrides)
    return base


def error_of(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse(text)
    return info.value


# -- parsing ------------------------------------------------------------------------------------


def test_default_policy_parses_with_every_rule_and_queue():
    policy = parse(DEFAULT_POLICY)
    names = [r.name for r in policy.rules]
    assert names[:4] == ["blocked_customer", "blocked_product", "counterfeit_claim", "repeat_requester"]
    assert {"refund_before_shipment", "seven_day_no_reason", "fast_quality_refund"} <= set(names)
    assert policy.default.decision == "queue" and policy.default.queue == "general"
    assert policy.queues() == {"risk", "high_value", "logistics", "complaints", "quality_review", "general"}
    assert policy.lists == {"blocked_customers": (), "blocked_products": ()}
    # Rules remember their own line, so a trace can point at the text.
    lines = DEFAULT_POLICY.splitlines()
    for rule in policy.rules:
        assert lines[rule.line - 1].startswith(f"rule {rule.name}:")


def test_unknown_fact_names_the_line_and_suggests_the_right_one():
    err = error_of("# header\n\nrule cheap: amout <= 200 -> approve" + TAIL)
    assert err.line == 3
    assert "unknown fact 'amout'" in err.message and "did you mean 'amount'" in err.message
    assert str(err).startswith("line 3:")


def test_a_value_of_the_wrong_type_is_named():
    err = error_of("rule a: kind = refund_only\nrule b: amount <= cheap -> approve" + TAIL)
    # line 1 lacks '->' and is reported first
    assert err.line == 1 and "'->'" in err.message
    err = error_of("rule b: amount <= cheap -> approve" + TAIL)
    assert err.line == 1 and "'amount' is a number" in err.message and "'cheap'" in err.message
    err = error_of("rule b: shipped = maybe -> approve" + TAIL)
    assert err.line == 1 and "'shipped' is true or false" in err.message


def test_a_policy_without_default_is_refused():
    err = error_of("rule a: amount <= 1 -> approve\n")
    assert err.line == 2 and "default" in err.message


def test_text_and_bool_facts_only_take_equality():
    err = error_of("rule a: amount < 5 -> approve\nrule b: kind > refund_only -> approve" + TAIL)
    assert err.line == 2 and "'kind' is text" in err.message and "use = or !=" in err.message
    err = error_of("rule b: evidence >= true -> approve" + TAIL)
    assert err.line == 1 and "'evidence' is bool" in err.message
    err = error_of("rule b: categories < x -> approve" + TAIL)
    assert err.line == 1 and "'categories' is a list" in err.message


def test_an_unknown_list_is_named_with_how_to_define_it():
    err = error_of("list vip = [C-1]\nrule a: customer in vips -> approve" + TAIL)
    assert err.line == 2 and "unknown list 'vips'" in err.message and "list vips = [" in err.message


def test_an_extra_closing_parenthesis_is_named():
    err = error_of("rule a: (amount > 1) and shipped = true) -> approve" + TAIL)
    assert err.line == 1 and "unexpected ')'" in err.message


def test_a_missing_closing_parenthesis_is_named():
    err = error_of("rule ok: amount > 1 -> approve\nrule a: (amount > 1 and shipped = true -> approve" + TAIL)
    assert err.line == 2 and "missing ')'" in err.message


def test_a_missing_closing_parenthesis_is_an_error_on_its_line():
    # Whatever the wording, the draft is refused and the line is right.
    err = error_of("rule ok: amount > 1 -> approve\nrule a: (amount > 1 and (shipped = true) -> approve" + TAIL)
    assert err.line == 2


def test_duplicate_rule_names_are_refused_on_the_second_definition():
    err = error_of("rule cheap: amount <= 1 -> approve\n# comment\nrule cheap: amount <= 2 -> approve" + TAIL)
    assert err.line == 3 and "'cheap' is defined twice" in err.message


def test_a_default_that_approves_is_refused():
    err = error_of("rule a: amount <= 1 -> queue general\ndefault -> approve\n")
    assert err.line == 2 and "never approve" in err.message
    err = error_of("rule a: amount <= 1 -> queue general\ndefault -> fast_refund")
    assert err.line == 2 and "never approve" in err.message


def test_a_default_that_approves_names_its_own_line():
    err = error_of("rule a: amount <= 1 -> queue general\ndefault -> approve\nrule b: amount > 5 -> queue general\n\n# end\n")
    assert err.line == 2 and "never approve" in err.message


def test_other_mistakes_name_the_line():
    assert error_of("rule a: amount > 1 -> queue" + TAIL).line == 1
    assert "priority" in error_of("rule a: amount > 1 -> queue risk priority 12" + TAIL).message
    assert "suggest" in error_of("rule a: amount > 1 -> queue risk suggest maybe" + TAIL).message
    assert "not 'when'" in error_of("when amount > 1 -> approve" + TAIL).message
    assert "one default" in error_of("default -> queue general" + TAIL).message
    assert "empty" in error_of("rule a: -> approve" + TAIL).message


# -- evaluation -------------------------------------------------------------------------------


def test_and_binds_tighter_than_or_and_parentheses_override():
    loose = parse("rule r: kind = complaint or amount > 100 and shipped = true -> approve" + TAIL)
    tight = parse("rule r: (kind = complaint or amount > 100) and shipped = true -> approve" + TAIL)
    complaint_unshipped = facts(kind="complaint", shipped=False, amount="10")
    # complaint or (amount > 100 and shipped): the complaint alone suffices.
    assert evaluate(loose, complaint_unshipped).rule == "r"
    # (complaint or amount > 100) and shipped: not shipped, so no.
    assert evaluate(tight, complaint_unshipped).rule is None
    assert evaluate(loose, facts(amount="150", shipped=True)).rule == "r"
    assert evaluate(loose, facts(amount="150", shipped=False)).rule is None


def test_not_applies_to_the_next_term_only():
    policy = parse("rule r: not shipped = true and amount < 100 -> approve" + TAIL)
    assert evaluate(policy, facts(shipped=False, amount="50")).rule == "r"
    assert evaluate(policy, facts(shipped=True, amount="50")).rule is None
    # (not shipped) and amount < 100, not: not (shipped and amount < 100)
    assert evaluate(policy, facts(shipped=False, amount="500")).rule is None
    grouped = parse("rule r: not (shipped = true and amount < 100) -> approve" + TAIL)
    assert evaluate(grouped, facts(shipped=False, amount="500")).rule == "r"


def test_list_facts_with_equals_in_and_not_in():
    text = (
        "list fresh = [生鲜, 水果]\n"
        "rule has_beauty: categories = 美妆 -> queue a\n"
        "rule any_fresh: categories in fresh -> queue b\n"
        "rule no_clothes: categories not in [服饰, 鞋] -> queue c\n"
    ) + TAIL
    policy = parse(text)
    assert evaluate(policy, facts(categories=["服饰", "美妆"])).outcome.queue == "a"
    assert evaluate(policy, facts(categories=["服饰", "水果"])).outcome.queue == "b"
    assert evaluate(policy, facts(categories=["家居"])).outcome.queue == "c"
    assert evaluate(policy, facts(categories=["家居", "鞋"])).outcome.queue == "general"
    # != on a list: the value is not among them.
    other = parse("rule r: products != P-LIP -> queue x" + TAIL)
    assert evaluate(other, facts(products=["P-TEE"])).rule == "r"
    assert evaluate(other, facts(products=["P-TEE", "P-LIP"])).rule is None


def test_text_facts_in_a_named_list():
    policy = parse("list vip = [C-7, \"C 8\"]\nrule vip: customer in vip -> queue risk priority 3" + TAIL)
    assert evaluate(policy, facts(customer="C 8")).outcome.queue == "risk"
    assert evaluate(policy, facts(customer="C-1")).outcome.queue == "general"
    decision = evaluate(policy, facts(customer="C-7"))
    assert decision.outcome.priority == 3
    assert decision.trace[0]["conditions"][0]["text"] == "customer ∈ vip"


def test_always_matches_with_no_conditions():
    policy = parse("rule never: amount > 100000 -> approve\nrule catch: always -> queue risk suggest reject" + TAIL)
    decision = evaluate(policy, facts())
    assert decision.rule == "catch"
    assert decision.outcome.queue == "risk" and decision.outcome.suggestion == "reject"
    assert decision.trace[1] == {"rule": "catch", "line": 2, "matched": True, "conditions": []}


def test_first_matching_rule_decides_and_the_trace_stops_there():
    policy = parse(DEFAULT_POLICY)
    decision = evaluate(policy, facts())
    assert decision.rule == "seven_day_no_reason" and decision.outcome.decision == "approve"
    names = [r["rule"] for r in decision.trace]
    assert names == ["blocked_customer", "blocked_product", "counterfeit_claim", "repeat_requester",
                     "refund_before_shipment", "seven_day_no_reason"]
    assert [r["matched"] for r in decision.trace] == [False] * 5 + [True]
    repeat = decision.trace[3]
    # Both sides of an 'or' are evaluated and shown, with the value each saw.
    assert [(c["fact"], c["op"], c["expected"], c["actual"], c["held"]) for c in repeat["conditions"]] == [
        ("requests_30d", ">=", "3", 0, False), ("rejections_90d", ">=", "2", 0, False),
    ]
    refund = decision.trace[4]["conditions"]
    # No short-circuit: the second comparison is shown even though the first failed.
    assert [(c["fact"], c["actual"], c["held"]) for c in refund] == [("kind", "return_refund", False), ("shipped", True, False)]
    seven = {c["fact"]: (c["actual"], c["held"]) for c in decision.trace[5]["conditions"]}
    assert seven == {
        "kind": ("return_refund", True), "reason": ("preference.changed_mind", True), "window_open": (True, True),
        "excluded": (False, True), "amount": ("89.00", True), "requests_30d": (0, True),
    }


def test_no_matching_rule_falls_to_the_default_with_the_whole_trace():
    policy = parse(DEFAULT_POLICY)
    decision = evaluate(policy, facts(reason="fit.size", reason_group="fit"))
    assert decision.rule is None and decision.outcome.queue == "general"
    assert len(decision.trace) == len(policy.rules) and not any(r["matched"] for r in decision.trace)
    assert decision.explain() == "no rule matched → queue general"


def test_earlier_rules_win_over_later_ones():
    policy = parse(DEFAULT_POLICY)
    # A cheap no-reason return from a repeat requester: the risk rule comes first.
    decision = evaluate(policy, facts(requests_30d=3))
    assert decision.rule == "repeat_requester" and decision.outcome.queue == "risk" and decision.outcome.priority == 2
    assert evaluate(policy, facts(amount="200")).outcome.decision == "approve"
    assert evaluate(policy, facts(amount="200.01")).outcome.queue == "general"
    assert evaluate(policy, facts(window_open=False)).outcome.queue == "general"
    assert evaluate(policy, facts(excluded=True)).outcome.queue == "general"


def test_a_missing_fact_never_satisfies_an_ordering():
    policy = parse("rule a: days_since_signed <= 7 -> approve\nrule b: session != LS-9 -> queue b" + TAIL)
    decision = evaluate(policy, facts(days_since_signed=None, session=None))
    assert decision.rule == "b"
    assert decision.trace[0]["conditions"][0]["actual"] is None and decision.trace[0]["conditions"][0]["held"] is False


def test_explain_reads_as_plain_words():
    policy = parse(DEFAULT_POLICY)
    text = evaluate(policy, facts(requests_30d=2)).explain()
    assert "amount ¥89.00 ≤ ¥200 ✓" in text
    assert "requests_30d 2 < 3 ✓" in text
    assert "excluded false = false ✓" in text
    assert text.endswith("→ approve")
    assert text.count(" · ") == 5
    routed = evaluate(parse("rule big: amount > 1000 and categories not in [食品] -> queue high_value" + TAIL),
                      facts(amount="1299.00")).explain()
    assert routed == "amount ¥1299.00 > ¥1000 ✓ · categories [美妆] ∉ [食品] ✓ → queue high_value"
    fast = evaluate(policy, facts(kind="refund_only", reason="quality.defect", quality=True, evidence=True, amount="59.50",
                                  shipped=True))
    assert fast.outcome.decision == "fast_refund" and fast.explain().endswith("→ fast_refund")
    assert "evidence true = true ✓" in fast.explain()


def test_numbers_compare_as_decimals_not_text():
    policy = parse("rule a: amount_share >= 0.5 -> queue big" + TAIL)
    assert evaluate(policy, facts(amount_share="0.75")).rule == "a"
    assert evaluate(policy, facts(amount_share="0.4999")).rule is None
    assert evaluate(parse("rule a: amount < 100 -> approve" + TAIL), facts(amount="99.99")).rule == "a"
    assert evaluate(parse("rule a: amount < 100 -> approve" + TAIL), facts(amount="1000")).rule is None
    assert parse("rule a: amount < 100.5 -> approve" + TAIL).rules[0].condition.value == Decimal("100.5")


# -- the 7-day no-reason window ------------------------------------------------------------------


def test_window_counts_seven_days_from_the_day_after_sign_for_in_local_time():
    signed = datetime(2026, 11, 10, 23, 30, tzinfo=SH)  # 15:30 UTC: the UTC date is the same day here
    assert no_reason_window_open(signed, datetime(2026, 11, 17, 23, 59, tzinfo=SH), SH)
    assert no_reason_window_open(signed, datetime(2026, 11, 17, 23, 59, 59, tzinfo=SH), SH)
    assert not no_reason_window_open(signed, datetime(2026, 11, 18, 0, 0, tzinfo=SH), SH)
    assert not no_reason_window_open(signed, datetime(2026, 11, 25, tzinfo=SH), SH)


def test_window_uses_the_local_day_not_the_utc_day():
    # Signed 00:30 on 11-11 in Shanghai is still 11-10 in UTC: the window runs to 11-18 24:00 local.
    signed = datetime(2026, 11, 11, 0, 30, tzinfo=SH)
    assert no_reason_window_open(signed, datetime(2026, 11, 18, 23, 59, tzinfo=SH), SH)
    assert not no_reason_window_open(signed, datetime(2026, 11, 19, 0, 0, tzinfo=SH), SH)
    # Same instants given in UTC.
    assert no_reason_window_open(signed.astimezone(ZoneInfo("UTC")), datetime(2026, 11, 18, 15, 59, tzinfo=ZoneInfo("UTC")), SH)
    assert not no_reason_window_open(signed.astimezone(ZoneInfo("UTC")), datetime(2026, 11, 18, 16, 0, tzinfo=ZoneInfo("UTC")), SH)


def test_window_is_open_before_sign_for():
    assert no_reason_window_open(None, datetime(2027, 1, 1, tzinfo=SH), SH)


def test_a_nan_amount_is_an_error_for_every_comparison_as_before():
    """Ordering a NaN is an error; the comparison used to evaluate every operator at once, so even '='
    raised. The faster comparison keeps that (the simulation treats such a value as unreadable)."""
    from decimal import InvalidOperation

    for op in ("=", "!=", "<", ">="):
        policy = parse(f"rule a: amount {op} 5 -> approve" + TAIL)
        with pytest.raises(InvalidOperation):
            evaluate(policy, facts(amount="NaN"))
    policy = parse("rule a: amount = 5 -> approve" + TAIL)
    assert evaluate(policy, facts(amount="5.00")).rule == "a"
    assert evaluate(policy, facts(amount="5.01")).rule is None  # the cached parts of a comparison stay per comparison
