"""The ticket state machine, checked against a lifecycle written out here by hand.

EXPECTED below is the spec (copied from the documented lifecycle in workflow.py and the design
guide), NOT read from the module: a wrong, missing or extra entry in workflow.TRANSITIONS makes
one of the cartesian-product cases below fail.
"""

from __future__ import annotations

from collections import deque
from itertools import product

import pytest

from aftersales.tickets import workflow
from aftersales.tickets.workflow import (
    FINAL_STATUSES,
    KINDS,
    STATUSES,
    SYSTEM_ACTIONS,
    USER_ACTIONS,
    InvalidTransition,
    UnknownKind,
    allowed_actions,
    is_open,
    transition,
)

# ---- the spec ------------------------------------------------------------------------------
# Keys are (status, action) where record_inspection is split into its two outcomes
# "record_inspection:pass" / "record_inspection:fail".

_COMMON_SPEC = {
    ("requested", "route_to_review"): "pending_review",
    ("requested", "cancel"): "cancelled",
    ("pending_review", "reject"): "rejected",
    ("pending_review", "request_info"): "awaiting_customer",
    ("pending_review", "cancel"): "cancelled",
    ("awaiting_customer", "customer_reply"): "pending_review",
    ("awaiting_customer", "cancel"): "cancelled",
    ("rejected", "close"): "closed",
    ("rejected", "appeal"): "pending_review",
    ("closed", "reopen"): "pending_review",
}

_RETURN_SPEC = {
    ("awaiting_return", "add_return_tracking"): "return_in_transit",
    ("awaiting_return", "return_delivered"): "return_received",
    ("awaiting_return", "cancel"): "cancelled",
    ("return_in_transit", "add_return_tracking"): "return_in_transit",
    ("return_in_transit", "return_delivered"): "return_received",
    ("return_in_transit", "cancel"): "cancelled",
    ("return_received", "record_inspection:fail"): "pending_review",
}

_REFUND_SPEC = {
    ("refunding", "confirm_refund"): "refunded",
    ("refunded", "close"): "closed",
}

_REPLACEMENT_SPEC = {
    ("approved", "ship_replacement"): "replacement_shipped",
    ("approved", "cancel"): "cancelled",
    ("replacement_shipped", "replacement_delivered"): "closed",
    ("replacement_shipped", "close"): "closed",
}

EXPECTED: dict[str, dict[tuple[str, str], str]] = {
    "refund_only": {
        **_COMMON_SPEC,
        ("requested", "auto_approve"): "refunding",
        ("requested", "fast_refund"): "refunding",
        ("pending_review", "approve"): "refunding",
        **_REFUND_SPEC,
    },
    "return_refund": {
        **_COMMON_SPEC,
        ("requested", "auto_approve"): "awaiting_return",
        # a small quality claim with evidence is refunded without asking for the goods back
        ("requested", "fast_refund"): "refunding",
        ("pending_review", "approve"): "awaiting_return",
        **_RETURN_SPEC,
        ("return_received", "record_inspection:pass"): "refunding",
        **_REFUND_SPEC,
    },
    "exchange": {
        **_COMMON_SPEC,
        ("requested", "auto_approve"): "awaiting_return",
        ("pending_review", "approve"): "awaiting_return",
        **_RETURN_SPEC,
        ("return_received", "record_inspection:pass"): "approved",
        **_REPLACEMENT_SPEC,
    },
    "reship": {
        **_COMMON_SPEC,
        ("requested", "auto_approve"): "approved",
        ("pending_review", "approve"): "approved",
        **_REPLACEMENT_SPEC,
    },
    "complaint": {
        **_COMMON_SPEC,
        ("requested", "auto_approve"): "approved",
        ("pending_review", "approve"): "approved",
        ("pending_review", "close"): "closed",
        ("approved", "close"): "closed",
    },
}

SPEC_STATUSES = (
    "requested", "pending_review", "awaiting_customer", "approved", "rejected", "awaiting_return",
    "return_in_transit", "return_received", "refunding", "refunded", "replacement_shipped",
    "closed", "cancelled",
)
SPEC_KINDS = ("refund_only", "return_refund", "exchange", "reship", "complaint")

# Every action name the test drives, with the inspection outcome spelled out.
ACTION_CASES = [
    *(a for a in USER_ACTIONS if a != "record_inspection"),
    "record_inspection:pass",
    "record_inspection:fail",
    *SYSTEM_ACTIONS,
]


def expected_target(kind: str, status: str, case: str) -> str | None:
    """What the spec says: the target status, or None for "refused"."""
    if case == "note":
        return status  # an internal note only writes the timeline, in any status
    if case == "reply":
        # a reply to the customer only writes the timeline, and only on an open ticket
        return None if status in ("closed", "cancelled") else status
    if case == "customer_reply" and status != "awaiting_customer" and status not in ("closed", "cancelled"):
        return status  # a customer may write at any time; only an awaited reply moves the ticket
    return EXPECTED[kind].get((status, case))


def call(kind: str, status: str, case: str) -> str:
    if case.startswith("record_inspection:"):
        return transition(kind, status, "record_inspection", inspection_passed=case.endswith(":pass"))
    return transition(kind, status, case)


def test_vocabulary_matches_spec():
    assert tuple(KINDS) == SPEC_KINDS
    assert set(STATUSES) == set(SPEC_STATUSES) and len(STATUSES) == len(SPEC_STATUSES)
    assert FINAL_STATUSES == {"closed", "cancelled"}
    # Every target in the spec is a known status, so the spec itself has no typos.
    for table in EXPECTED.values():
        assert {s for s, _ in table} | set(table.values()) <= set(SPEC_STATUSES)


@pytest.mark.parametrize(
    ("kind", "status", "case"),
    list(product(SPEC_KINDS, SPEC_STATUSES, ACTION_CASES)),
)
def test_transition_matches_spec(kind: str, status: str, case: str):
    want = expected_target(kind, status, case)
    if want is None:
        with pytest.raises(InvalidTransition) as info:
            call(kind, status, case)
        err = info.value
        assert (err.kind, err.status) == (kind, status)
        assert err.allowed == allowed_actions(kind, status)
    else:
        assert call(kind, status, case) == want


def test_spec_covers_exactly_the_module_table():
    """Belt and braces: no table entry exists that the cartesian product could not reach."""
    for kind in SPEC_KINDS:
        spec_keys = {(s, a.replace("record_inspection:pass", "inspection_passed").replace("record_inspection:fail", "inspection_failed"))
                     for s, a in EXPECTED[kind]}
        assert set(workflow.TRANSITIONS[kind]) == spec_keys, kind


@pytest.mark.parametrize(("kind", "status"), list(product(SPEC_KINDS, SPEC_STATUSES)))
def test_allowed_actions_agree_with_transition(kind: str, status: str):
    allowed = allowed_actions(kind, status)
    assert len(allowed) == len(set(allowed)), "no duplicates"
    assert set(allowed) <= set(USER_ACTIONS), "system actions are never offered to users"
    assert "note" in allowed
    for action in USER_ACTIONS:
        if action in ("note", "reply", "customer_reply"):
            continue
        if action == "record_inspection":
            leads = any(
                _leads(kind, status, action, passed) for passed in (True, False)
            )
        else:
            leads = _leads(kind, status, action, None)
        assert (action in allowed) == leads, (kind, status, action)
    # The customer and the agent can write on every open ticket, never on a finished one.
    assert ("customer_reply" in allowed) == (status not in ("closed", "cancelled"))
    assert ("reply" in allowed) == (status not in ("closed", "cancelled"))


def _leads(kind: str, status: str, action: str, passed: bool | None) -> bool:
    try:
        transition(kind, status, action, inspection_passed=passed)
    except InvalidTransition:
        return False
    return True


@pytest.mark.parametrize("kind", SPEC_KINDS)
def test_final_statuses(kind: str):
    assert not is_open("closed") and not is_open("cancelled")
    assert all(is_open(s) for s in SPEC_STATUSES if s not in ("closed", "cancelled"))
    # Cancelled is the end: only a note is possible.
    assert allowed_actions(kind, "cancelled") == ["note"]
    # Closed can only be reopened (or annotated).
    assert allowed_actions(kind, "closed") == ["reopen", "note"]
    for action in (*USER_ACTIONS, *SYSTEM_ACTIONS):
        if action in ("note", "record_inspection"):
            continue
        with pytest.raises(InvalidTransition):
            transition(kind, "cancelled", action)
    with pytest.raises(InvalidTransition):
        transition(kind, "closed", "reply")


@pytest.mark.parametrize(("kind", "status"), list(product(SPEC_KINDS, SPEC_STATUSES)))
def test_record_inspection_without_outcome_is_a_value_error(kind: str, status: str):
    with pytest.raises(ValueError) as info:
        transition(kind, status, "record_inspection")
    assert not isinstance(info.value, InvalidTransition)
    assert "passed" in str(info.value)


@pytest.mark.parametrize("kind", ["", "refund", "RETURN_REFUND", "gift"])
def test_unknown_kind(kind: str):
    with pytest.raises(UnknownKind):
        transition(kind, "pending_review", "approve")
    # note and customer_reply must not bypass the kind check either
    with pytest.raises(UnknownKind):
        transition(kind, "pending_review", "note")


@pytest.mark.parametrize(("kind", "status"), list(product(SPEC_KINDS, SPEC_STATUSES)))
def test_note_never_changes_status(kind: str, status: str):
    assert transition(kind, status, "note") == status


@pytest.mark.parametrize(("kind", "status"), list(product(SPEC_KINDS, SPEC_STATUSES)))
def test_reply_never_changes_status_of_an_open_ticket(kind: str, status: str):
    if status in ("closed", "cancelled"):
        with pytest.raises(InvalidTransition):
            transition(kind, status, "reply")
    else:
        assert transition(kind, status, "reply") == status


@pytest.mark.parametrize(("kind", "status"), list(product(SPEC_KINDS, SPEC_STATUSES)))
def test_customer_reply_only_moves_awaiting_customer(kind: str, status: str):
    if status in ("closed", "cancelled"):
        with pytest.raises(InvalidTransition):
            transition(kind, status, "customer_reply")
    elif status == "awaiting_customer":
        assert transition(kind, status, "customer_reply") == "pending_review"
    else:
        assert transition(kind, status, "customer_reply") == status


@pytest.mark.parametrize("action", ["", "APPROVE", "refund", "inspection"])
def test_unknown_action_is_refused(action: str):
    with pytest.raises(InvalidTransition):
        transition("return_refund", "pending_review", action)


@pytest.mark.parametrize("kind", SPEC_KINDS)
def test_every_status_of_a_kind_can_still_finish(kind: str):
    """No dead ends: from every status reachable from `requested`, a final status is reachable."""
    edges: dict[str, set[str]] = {}
    for status in SPEC_STATUSES:
        for case in ACTION_CASES:
            try:
                edges.setdefault(status, set()).add(call(kind, status, case))
            except InvalidTransition:
                pass

    def reach(start: str) -> set[str]:
        seen, todo = {start}, deque([start])
        while todo:
            for nxt in edges.get(todo.popleft(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reachable = reach("requested")
    assert "closed" in reachable and "cancelled" in reachable
    for status in reachable:
        assert reach(status) & {"closed", "cancelled"}, (kind, status)
