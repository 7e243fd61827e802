"""The auto-approval policy: a small line-based rule language, its parser and a pure evaluator.

A policy is an ordered list of rules; the first rule whose condition holds decides. Every
evaluation returns a trace (each rule, each comparison with the value it saw and whether it
held) so that a decision explains itself and a supervisor can audit it.

    # comment
    list vip = [C-1, C-2]
    rule refund_before_shipment: kind = refund_only and shipped = false -> approve
    rule high_value: amount > 1000 -> queue high_value priority 2 suggest reject
    default -> queue general
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from decimal import Decimal, InvalidOperation
from operator import attrgetter, eq, ge, gt, le, lt, ne
from typing import Any

import msgspec

# Every fact a rule may test, with its type: number, bool, text or list (of text).
FACTS: dict[str, str] = {
    "kind": "text",
    "reason": "text",
    "reason_group": "text",
    "quality": "bool",
    "amount": "number",
    "amount_share": "number",
    "categories": "list",
    "products": "list",
    "shipped": "bool",
    "delivered": "bool",
    "days_since_signed": "number",
    "window_open": "bool",
    "excluded": "bool",
    "evidence": "bool",
    "requests_30d": "number",
    "requests_90d": "number",
    "refunds_30d": "number",
    "refunds_90d": "number",
    "rejections_90d": "number",
    "session": "text",
    "host": "text",
    "customer": "text",
}
OPERATORS = ("<=", ">=", "!=", "=", "<", ">", "not in", "in")
SYMBOLS = {"<=": "≤", ">=": "≥", "!=": "≠", "=": "=", "<": "<", ">": ">", "in": "∈", "not in": "∉"}
DECISIONS = ("approve", "fast_refund", "queue")
SUGGESTIONS = ("approve", "reject", "request_info")


class PolicyError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        self.line = line
        self.message = message
        super().__init__(f"line {line}: {message}")


# -- the parsed form ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    fact: str
    op: str
    value: Any  # Decimal, bool, str, or tuple[str, ...]
    list_name: str | None = None

    def describe(self) -> str:
        shown = self.list_name or _show(self.value)
        return f"{self.fact} {SYMBOLS[self.op]} {shown}"

    # Derived once per parsed policy, not per ticket: every intake evaluates every comparison of the
    # rules up to the one that matches, and rebuilding these was a third of that (bench F22).
    @cached_property
    def text(self) -> str:
        return self.describe()

    @cached_property
    def expected(self) -> Any:
        return _jsonable(self.value)

    @cached_property
    def value_texts(self) -> frozenset[str]:
        return frozenset(str(v) for v in self.value) if self.op in ("in", "not in") else frozenset()


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and", "or", "not"
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Outcome:
    decision: str
    queue: str | None = None
    priority: int = 0
    suggestion: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "queue": self.queue, "priority": self.priority, "suggestion": self.suggestion}


@dataclass(frozen=True)
class Rule:
    name: str
    condition: Any  # Comparison | BoolOp | None (always)
    outcome: Outcome
    line: int


@dataclass
class Policy:
    rules: list[Rule]
    default: Outcome
    lists: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def queues(self) -> set[str]:
        names = {r.outcome.queue for r in self.rules if r.outcome.queue}
        if self.default.queue:
            names.add(self.default.queue)
        return names


# -- parsing ----------------------------------------------------------------------------------

_TOKEN = re.compile(r'\s*(\(|\)|\[|\]|,|<=|>=|!=|=|<|>|"[^"]*"|[^\s()\[\],=<>!"]+)')
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse(text: str) -> Policy:
    """Parse policy text; raises PolicyError naming the line and the problem."""
    rules: list[Rule] = []
    lists: dict[str, tuple[str, ...]] = {}
    default: Outcome | None = None
    default_line = 0
    names: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("list "):
            name, values = _parse_list(line[5:], number)
            lists[name] = values
        elif line.startswith("rule "):
            rule = _parse_rule(line[5:], number, lists)
            if rule.name in names:
                raise PolicyError(number, f"rule {rule.name!r} is defined twice")
            names.add(rule.name)
            rules.append(rule)
        elif line.startswith("default"):
            if default is not None:
                raise PolicyError(number, "a policy has one default line")
            rest = line[len("default"):].strip()
            if not rest.startswith("->"):
                raise PolicyError(number, "expected 'default -> queue NAME'")
            default = _parse_outcome(rest[2:].strip(), number)
            default_line = number
        else:
            word = line.split()[0]
            raise PolicyError(number, f"a line starts with 'rule', 'list', 'default' or '#', not {word!r}")
    if default is None:
        raise PolicyError(len(text.splitlines()) + 1, "the policy needs a 'default -> queue NAME' line")
    if default.decision != "queue":
        raise PolicyError(default_line, "the default must route to a queue, never approve")
    return Policy(rules=rules, default=default, lists=lists)


def _parse_list(body: str, line: int) -> tuple[str, tuple[str, ...]]:
    if "=" not in body:
        raise PolicyError(line, "expected 'list NAME = [a, b]'")
    name, _, rest = body.partition("=")
    name = name.strip()
    if not _NAME.match(name):
        raise PolicyError(line, f"{name!r} is not a valid list name")
    tokens = _tokenize(rest, line)
    values, pos = _parse_bracket(tokens, 0, line)
    if pos != len(tokens):
        raise PolicyError(line, f"unexpected {tokens[pos]!r} after the list")
    return name, tuple(str(v) for v in values)


def _parse_rule(body: str, line: int, lists: dict[str, tuple[str, ...]]) -> Rule:
    name, colon, rest = body.partition(":")
    name = name.strip()
    if not colon or not _NAME.match(name):
        raise PolicyError(line, "expected 'rule NAME: CONDITION -> OUTCOME'")
    if "->" not in rest:
        raise PolicyError(line, "missing '->' and the outcome")
    cond_text, _, outcome_text = rest.rpartition("->")
    tokens = _tokenize(cond_text, line)
    if not tokens:
        raise PolicyError(line, "the condition is empty (write 'always' for a rule that always applies)")
    if tokens == ["always"]:
        condition = None
    else:
        parser = _ConditionParser(tokens, line, lists)
        condition = parser.parse()
    return Rule(name=name, condition=condition, outcome=_parse_outcome(outcome_text.strip(), line), line=line)


def _parse_outcome(text: str, line: int) -> Outcome:
    words = text.split()
    if not words:
        raise PolicyError(line, "missing outcome after '->'")
    if words[0] in ("approve", "fast_refund"):
        if len(words) > 1:
            raise PolicyError(line, f"unexpected {words[1]!r} after {words[0]!r}")
        return Outcome(decision=words[0])
    if words[0] != "queue":
        raise PolicyError(line, f"outcome must be 'approve', 'fast_refund' or 'queue NAME', not {words[0]!r}")
    if len(words) < 2 or not _NAME.match(words[1]):
        raise PolicyError(line, "expected a queue name after 'queue'")
    priority, suggestion = 0, None
    rest = words[2:]
    while rest:
        key = rest.pop(0)
        if not rest:
            raise PolicyError(line, f"{key!r} needs a value")
        value = rest.pop(0)
        if key == "priority":
            if not value.isdigit() or int(value) > 9:
                raise PolicyError(line, f"priority must be a whole number 0-9, not {value!r}")
            priority = int(value)
        elif key == "suggest":
            if value not in SUGGESTIONS:
                raise PolicyError(line, f"suggest must be one of {', '.join(SUGGESTIONS)}")
            suggestion = value
        else:
            raise PolicyError(line, f"unknown outcome option {key!r} (use priority or suggest)")
    return Outcome(decision="queue", queue=words[1], priority=priority, suggestion=suggestion)


def _tokenize(text: str, line: int) -> list[str]:
    tokens: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise PolicyError(line, f"cannot read {text[pos:].strip()!r}")
        tokens.append(match.group(1))
        pos = match.end()
    # "not in" is one operator.
    merged: list[str] = []
    for token in tokens:
        if token == "in" and merged and merged[-1] == "not" and len(merged) >= 2 and merged[-2] in FACTS:
            merged[-1] = "not in"
        else:
            merged.append(token)
    return merged


def _parse_bracket(tokens: list[str], pos: int, line: int) -> tuple[list[str], int]:
    if pos >= len(tokens) or tokens[pos] != "[":
        raise PolicyError(line, "expected '[' to start a list")
    values: list[str] = []
    pos += 1
    while pos < len(tokens) and tokens[pos] != "]":
        if tokens[pos] != ",":
            values.append(tokens[pos].strip('"'))
        pos += 1
    if pos >= len(tokens):
        raise PolicyError(line, "missing ']'")
    return values, pos + 1


class _ConditionParser:
    """or < and < not < (…) | comparison, the usual precedence."""

    def __init__(self, tokens: list[str], line: int, lists: dict[str, tuple[str, ...]]) -> None:
        self.tokens, self.pos, self.line, self.lists = tokens, 0, line, lists

    def parse(self) -> Any:
        node = self._or()
        if self.pos != len(self.tokens):
            raise PolicyError(self.line, f"unexpected {self.tokens[self.pos]!r}")
        return node

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> str:
        token = self._peek()
        if token is None:
            raise PolicyError(self.line, "the condition ends too early")
        self.pos += 1
        return token

    def _or(self) -> Any:
        items = [self._and()]
        while self._peek() == "or":
            self.pos += 1
            items.append(self._and())
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def _and(self) -> Any:
        items = [self._not()]
        while self._peek() == "and":
            self.pos += 1
            items.append(self._not())
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def _not(self) -> Any:
        if self._peek() == "not":
            self.pos += 1
            return BoolOp("not", (self._not(),))
        if self._peek() == "(":
            self.pos += 1
            node = self._or()
            if self._peek() != ")":
                raise PolicyError(self.line, "missing ')'")
            self.pos += 1
            return node
        return self._comparison()

    def _comparison(self) -> Comparison:
        fact = self._take()
        if fact not in FACTS:
            hint = difflib.get_close_matches(fact, FACTS, n=1)
            raise PolicyError(self.line, f"unknown fact {fact!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        op = self._take()
        if op not in OPERATORS:
            raise PolicyError(self.line, f"expected an operator ({', '.join(OPERATORS)}) after {fact!r}, not {op!r}")
        kind = FACTS[fact]
        if op in ("in", "not in"):
            if self._peek() == "[":
                values, self.pos = _parse_bracket(self.tokens, self.pos, self.line)
                return Comparison(fact, op, tuple(_typed(v, "text" if kind == "list" else kind, self.line, fact) for v in values))
            name = self._take()
            if name not in self.lists:
                raise PolicyError(self.line, f"unknown list {name!r}; define it with 'list {name} = [...]' above")
            return Comparison(fact, op, self.lists[name], list_name=name)
        if kind == "list":
            if op not in ("=", "!="):
                raise PolicyError(self.line, f"{fact!r} is a list: use =, !=, in or not in")
            return Comparison(fact, op, str(self._take()).strip('"'))
        if kind in ("text", "bool") and op not in ("=", "!="):
            raise PolicyError(self.line, f"{fact!r} is {kind}: use = or != (or in / not in)")
        return Comparison(fact, op, _typed(self._take(), kind, self.line, fact))


def _typed(token: str, kind: str, line: int, fact: str) -> Any:
    token = token.strip('"')
    if kind == "number":
        try:
            return Decimal(token)
        except InvalidOperation as exc:
            raise PolicyError(line, f"{fact!r} is a number; {token!r} is not") from exc
    if kind == "bool":
        if token not in ("true", "false"):
            raise PolicyError(line, f"{fact!r} is true or false, not {token!r}")
        return token == "true"
    return token


# -- evaluation -------------------------------------------------------------------------------


@dataclass
class Decision:
    outcome: Outcome
    rule: str | None
    trace: list[dict[str, Any]]

    def explain(self) -> str:
        """'amount ¥89 ≤ 200 ✓ · requests_30d 2 < 3 ✓ → approve'"""
        matched = next((r for r in self.trace if r["matched"]), None)
        target = self.outcome.decision if self.outcome.decision != "queue" else f"queue {self.outcome.queue}"
        if matched is None:
            return f"no rule matched → {target}"
        parts = [f"{describe_condition(c)} {'✓' if c['held'] else '✗'}" for c in matched["conditions"]]
        return (" · ".join(parts) or f"rule {matched['rule']} (always)") + f" → {target}"


def describe_condition(c: dict[str, Any]) -> str:
    """'amount ¥89 ≤ ¥200', 'requests_30d 2 < 3', 'categories [美妆] ∉ [食品]'."""
    money = c["fact"] == "amount"
    actual = f"¥{c['actual']}" if money and c["actual"] is not None else _show(c["actual"])
    expected = f"¥{c['expected']}" if money else _show(c["expected"])
    return f"{c['fact']} {actual} {SYMBOLS[c['op']]} {expected}"


def evaluate(policy: Policy, facts: dict[str, Any]) -> Decision:
    trace: list[dict[str, Any]] = []
    for rule in policy.rules:
        conditions: list[dict[str, Any]] = []
        held = True if rule.condition is None else _holds(rule.condition, facts, conditions)
        trace.append({"rule": rule.name, "line": rule.line, "matched": held, "conditions": conditions})
        if held:
            return Decision(outcome=rule.outcome, rule=rule.name, trace=trace)
    return Decision(outcome=policy.default, rule=None, trace=trace)


def decide(policy: Policy, facts: dict[str, Any]) -> tuple[Outcome, str | None]:
    """The outcome alone, short-circuiting and without a trace: for simulating many tickets."""
    for rule in policy.rules:
        if rule.condition is None or _holds_fast(rule.condition, facts):
            return rule.outcome, rule.name
    return policy.default, None


AUTOMATIC = frozenset({"approve", "fast_refund"})


class AutoApprovalJudge:
    """Whether a policy approves a stored facts document automatically, for many documents at a time.

    The answer is the one `decide` gives, but cheaper: it depends only on the result of each
    comparison, and a comparison only on its fact's value. So each fact's value (its JSON text) is
    reduced once to a class, a number standing for the tuple of its comparisons' results, and the
    decision is memoized on the tuple of classes: the thousands of distinct customers or amounts fall
    into a handful of classes. Only rules up to the last automatic one are read: the later rules and
    the default all queue.
    """

    def __init__(self, policy: Policy) -> None:
        last = max((i for i, r in enumerate(policy.rules) if r.outcome.decision in AUTOMATIC), default=-1)
        self.policy = Policy(rules=policy.rules[: last + 1], default=policy.default, lists=policy.lists)
        by_fact: dict[str, list[Comparison]] = {}
        for rule in self.policy.rules:
            _collect_comparisons(rule.condition, by_fact)
        self.facts = tuple(sorted(by_fact))
        self._comparisons = [tuple(by_fact[name]) for name in self.facts]
        self._classes: list[dict[bytes, int]] = [{} for _ in self.facts]  # per fact: value's JSON -> class
        self._results: list[dict[tuple[bool | None, ...], int]] = [{} for _ in self.facts]  # results -> class
        self._decisions: dict[tuple[int, ...], bool] = {}
        # Only the facts read, each as the raw JSON text of its value (a missing fact reads as null).
        read = msgspec.defstruct("ReadFacts", [(name, msgspec.Raw, msgspec.Raw(b"null")) for name in self.facts])
        self._decode = msgspec.json.Decoder(read).decode
        self._values = _getter(self.facts)

    def automatic(self, document: str) -> bool:
        try:
            values = self._decode(document)
        except msgspec.DecodeError:  # JSON msgspec refuses (NaN, …): decide it the plain way
            return decide(self.policy, json.loads(document))[0].decision in AUTOMATIC
        # map() keeps the per-row work in C: it runs 100,000 times per simulation.
        texts = tuple(map(bytes, self._values(values)))
        key = tuple(map(dict.get, self._classes, texts))
        if None in key:  # a value not seen before (a new customer, amount, …)
            key = tuple(self._class_of(i, text) if found is None else found
                        for i, (found, text) in enumerate(zip(key, texts)))
        automatic = self._decisions.get(key)
        if automatic is None:
            facts = {name: json.loads(text) for name, text in zip(self.facts, texts)}
            automatic = self._decisions[key] = decide(self.policy, facts)[0].decision in AUTOMATIC
        return automatic

    def _class_of(self, index: int, text: bytes) -> int:
        found = self._classes[index].get(text)
        if found is None:
            value = json.loads(text)  # the decoder the whole document is read with elsewhere
            results = tuple(_compare_or_none(c, value) for c in self._comparisons[index])
            found = self._classes[index][text] = self._results[index].setdefault(results, len(self._results[index]))
        return found


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    if len(names) > 1:
        return attrgetter(*names)
    if names:
        one = attrgetter(names[0])
        return lambda values: (one(values),)
    return lambda values: ()


def _collect_comparisons(node: Any, out: dict[str, list[Comparison]]) -> None:
    if isinstance(node, BoolOp):
        for item in node.items:
            _collect_comparisons(item, out)
    elif isinstance(node, Comparison) and not (node.op in ("in", "not in") and not node.value):
        # Membership in an empty list (the shipped blocked lists) is false whatever the fact's value,
        # even a missing one (and `not in` true): such a comparison needs no fact read.
        out.setdefault(node.fact, []).append(node)


def _compare_or_none(c: Comparison, actual: Any) -> bool | None:
    # A value a comparison cannot read (text where a number belongs) gets its own class, None:
    # decide() then meets the same error, or never reaches that comparison, exactly as before.
    try:
        return _compare(c, actual)
    except (ArithmeticError, TypeError, ValueError):
        return None


def _holds_fast(node: Any, facts: dict[str, Any]) -> bool:
    if isinstance(node, BoolOp):
        if node.op == "and":
            return all(_holds_fast(item, facts) for item in node.items)
        if node.op == "or":
            return any(_holds_fast(item, facts) for item in node.items)
        return not _holds_fast(node.items[0], facts)
    return _compare(node, facts.get(node.fact))


def _holds(node: Any, facts: dict[str, Any], out: list[dict[str, Any]]) -> bool:
    # Every comparison is evaluated (no short-circuit) so the trace shows all values seen.
    if isinstance(node, BoolOp):
        results = [_holds(item, facts, out) for item in node.items]
        if node.op == "and":
            return all(results)
        if node.op == "or":
            return any(results)
        return not results[0]
    actual = facts.get(node.fact)
    held = _compare(node, actual)
    out.append({"fact": node.fact, "op": node.op, "expected": node.expected, "actual": _jsonable(actual),
                "held": held, "text": node.text})
    return held


_NUMBER_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": lt, "<=": le, ">": gt, ">=": ge, "=": eq, "!=": ne,
}


def _compare(c: Comparison, actual: Any) -> bool:
    if actual is None:
        return c.op == "!=" or c.op == "not in"
    if isinstance(actual, (list, tuple, set)):
        present = {str(a) for a in actual}
        if c.op in ("in", "not in"):
            hit = not present.isdisjoint(c.value_texts)
            return hit if c.op == "in" else not hit
        return (str(c.value) in present) == (c.op == "=")
    if c.op in ("in", "not in"):
        hit = str(actual) in c.value_texts
        return hit if c.op == "in" else not hit
    if isinstance(c.value, Decimal):
        number = Decimal(str(actual))
        if number.is_nan():  # NaN orders with nothing: an error, as for text where a number belongs
            raise InvalidOperation(f"{c.fact} is not a number")
        return _NUMBER_OPS[c.op](number, c.value)
    return (actual == c.value) if c.op == "=" else (actual != c.value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (tuple, set)):
        return [_jsonable(v) for v in value]
    return value


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "—"
    return str(value)


DEFAULT_POLICY = """\
# aftersales default policy. First matching rule decides; 'default' catches the rest.
# Lists: add customer or product ids to hold their requests for a person.
list blocked_customers = []
list blocked_products = []

# Risk first: nothing on these lists or with these signals is ever approved automatically.
rule blocked_customer: customer in blocked_customers -> queue risk priority 3
rule blocked_product: products in blocked_products -> queue risk priority 2
rule counterfeit_claim: reason = quality.counterfeit_suspected -> queue risk priority 3 suggest request_info
rule repeat_requester: requests_30d >= 3 or rejections_90d >= 2 -> queue risk priority 2

# The standard cases.
rule refund_before_shipment: kind = refund_only and shipped = false -> approve
rule seven_day_no_reason: kind = return_refund and reason = preference.changed_mind and window_open = true and excluded = false and amount <= 200 and requests_30d < 3 -> approve
rule fast_quality_refund: quality = true and evidence = true and amount <= 100 and kind in [refund_only, return_refund] -> fast_refund

# Everything else goes to the queue that can judge it.
rule high_value: amount > 1000 -> queue high_value priority 2
rule logistics_problem: reason in [logistics.lost, logistics.delay] -> queue logistics priority 1
rule complaint: kind = complaint -> queue complaints priority 1
rule quality_claim: quality = true -> queue quality_review priority 1 suggest approve
default -> queue general
"""
