"""The ticket lifecycle as a table, and the pure function that applies one action.

Nothing here touches the database: the service asks `transition()` where an action leads and
is then the only code that writes the new status.
"""

from __future__ import annotations

from collections.abc import Mapping

KINDS = ("refund_only", "return_refund", "exchange", "reship", "complaint")

STATUSES = (
    "requested",
    "pending_review",
    "awaiting_customer",
    "approved",
    "rejected",
    "awaiting_return",
    "return_in_transit",
    "return_received",
    "refunding",
    "refunded",
    "replacement_shipped",
    "closed",
    "cancelled",
)
FINAL_STATUSES = frozenset({"closed", "cancelled"})

# Actions a person or an integration may ask for through the API.
USER_ACTIONS = (
    "approve",
    "reject",
    "request_info",
    "customer_reply",
    "add_return_tracking",
    "record_inspection",
    "confirm_refund",
    "ship_replacement",
    "cancel",
    "close",
    "reopen",
    "appeal",
    "note",
    "reply",
)
# Actions only the system takes: intake decisions and carrier events.
SYSTEM_ACTIONS = ("auto_approve", "fast_refund", "route_to_review", "return_delivered", "replacement_delivered")

# Actions that only write the timeline and never move the status: an internal note, and a
# customer-facing reply (which, unlike a note, counts as a response to the customer).
TIMELINE_ONLY = frozenset({"note", "reply"})

Table = Mapping[tuple[str, str], str]

# Steps every kind shares: intake, review, asking the customer, rejection and appeal, reopening.
_COMMON: dict[tuple[str, str], str] = {
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

# Approval says what happens next: money back, goods back, or a parcel to send.
_APPROVE_TARGET = {
    "refund_only": "refunding",
    "return_refund": "awaiting_return",
    "exchange": "awaiting_return",
    "reship": "approved",
    "complaint": "approved",
}

# Goods coming back to the warehouse: tracking given, carrier delivers, warehouse inspects.
_RETURN_LEG: dict[tuple[str, str], str] = {
    ("awaiting_return", "add_return_tracking"): "return_in_transit",
    ("awaiting_return", "return_delivered"): "return_received",
    ("awaiting_return", "cancel"): "cancelled",
    ("return_in_transit", "add_return_tracking"): "return_in_transit",
    ("return_in_transit", "return_delivered"): "return_received",
    ("return_in_transit", "cancel"): "cancelled",
    ("return_received", "inspection_failed"): "pending_review",
}

_REFUND_LEG: dict[tuple[str, str], str] = {
    ("refunding", "confirm_refund"): "refunded",
    ("refunded", "close"): "closed",
}

_REPLACEMENT_LEG: dict[tuple[str, str], str] = {
    ("approved", "ship_replacement"): "replacement_shipped",
    ("approved", "cancel"): "cancelled",
    ("replacement_shipped", "replacement_delivered"): "closed",
    ("replacement_shipped", "close"): "closed",
}


def _approvals(kind: str) -> dict[tuple[str, str], str]:
    target = _APPROVE_TARGET[kind]
    return {("requested", "auto_approve"): target, ("pending_review", "approve"): target}


TRANSITIONS: dict[str, dict[tuple[str, str], str]] = {
    "refund_only": {**_COMMON, **_approvals("refund_only"), ("requested", "fast_refund"): "refunding", **_REFUND_LEG},
    "return_refund": {
        **_COMMON,
        **_approvals("return_refund"),
        # A small quality claim with evidence is refunded without asking for the goods back.
        ("requested", "fast_refund"): "refunding",
        **_RETURN_LEG,
        ("return_received", "inspection_passed"): "refunding",
        **_REFUND_LEG,
    },
    "exchange": {
        **_COMMON,
        **_approvals("exchange"),
        **_RETURN_LEG,
        # A passed inspection makes the exchange ready to ship, like an approved reship.
        ("return_received", "inspection_passed"): "approved",
        **_REPLACEMENT_LEG,
    },
    "reship": {**_COMMON, **_approvals("reship"), **_REPLACEMENT_LEG},
    "complaint": {
        **_COMMON,
        **_approvals("complaint"),
        ("approved", "close"): "closed",
        ("pending_review", "close"): "closed",
    },
}


class InvalidTransition(Exception):
    def __init__(self, kind: str, status: str, action: str) -> None:
        self.kind, self.status, self.action = kind, status, action
        self.allowed = allowed_actions(kind, status)
        super().__init__(f"action {action!r} is not allowed for a {kind} ticket in status {status!r}")


class UnknownKind(ValueError):
    pass


def table_key(action: str, *, inspection_passed: bool | None = None) -> str:
    """Inspection is one API action with two outcomes; the table knows them apart."""
    if action == "record_inspection":
        if inspection_passed is None:
            raise ValueError("record_inspection needs passed=true or passed=false")
        return "inspection_passed" if inspection_passed else "inspection_failed"
    return action


def transition(kind: str, status: str, action: str, *, inspection_passed: bool | None = None) -> str:
    """Return the status that `action` leads to from `status`, or raise InvalidTransition."""
    table = TRANSITIONS.get(kind)
    if table is None:
        raise UnknownKind(kind)
    if action == "reply" and status in FINAL_STATUSES:
        raise InvalidTransition(kind, status, action)
    if action in TIMELINE_ONLY:
        return status
    if action == "customer_reply" and status != "awaiting_customer" and status not in FINAL_STATUSES:
        # A customer may write at any time; only an awaited reply moves the ticket.
        return status
    key = table_key(action, inspection_passed=inspection_passed)
    target = table.get((status, key))
    if target is None:
        raise InvalidTransition(kind, status, action)
    return target


def allowed_actions(kind: str, status: str) -> list[str]:
    """The user-facing actions possible from a status, in a stable order."""
    table = TRANSITIONS.get(kind, {})
    keys = {key for (source, key) in table if source == status}
    if "inspection_passed" in keys or "inspection_failed" in keys:
        keys.add("record_inspection")
    allowed = [a for a in USER_ACTIONS if a in keys]
    allowed.append("note")
    if status not in FINAL_STATUSES:
        allowed.append("reply")
        if "customer_reply" not in allowed:
            allowed.append("customer_reply")
    return allowed


def is_open(status: str) -> bool:
    return status not in FINAL_STATUSES
