"""Translated names of statuses, kinds, actions and chain steps, for pages and messages.

The msgids are English; aftersales/locale/*/messages.po carries the translations.
"""

from __future__ import annotations

from aftersales.i18n import gettext


def N_(message: str) -> str:
    """Marks a string for extraction; it is translated when shown."""
    return message


STATUS = {
    "requested": N_("Requested"),
    "pending_review": N_("Pending review"),
    "awaiting_customer": N_("Awaiting customer"),
    "approved": N_("Approved"),
    "rejected": N_("Rejected"),
    "awaiting_return": N_("Awaiting return"),
    "return_in_transit": N_("Return in transit"),
    "return_received": N_("Return received"),
    "refunding": N_("Refunding"),
    "refunded": N_("Refunded"),
    "replacement_shipped": N_("Replacement shipped"),
    "closed": N_("Closed"),
    "cancelled": N_("Cancelled"),
}

KIND = {
    "refund_only": N_("Refund only"),
    "return_refund": N_("Return and refund"),
    "exchange": N_("Exchange"),
    "reship": N_("Reship"),
    "complaint": N_("Complaint"),
}

ACTION = {
    "open": N_("Request opened"),
    "route_to_review": N_("Sent to manual review"),
    "auto_approve": N_("Approved automatically"),
    "approve": N_("Approve"),
    "reject": N_("Reject"),
    "request_info": N_("Ask customer for info"),
    "customer_reply": N_("Customer replied"),
    "add_return_tracking": N_("Return tracking added"),
    "record_inspection": N_("Record inspection"),
    "confirm_refund": N_("Confirm refund"),
    "ship_replacement": N_("Ship replacement"),
    "cancel": N_("Cancel"),
    "close": N_("Close"),
    "reopen": N_("Reopen"),
    "appeal": N_("Appeal"),
    "note": N_("Internal note"),
    "reply": N_("Reply to customer"),
    "return_delivered": N_("Return parcel delivered"),
    "replacement_delivered": N_("Replacement delivered"),
    "carrier_event": N_("Carrier event"),
    "fast_refund": N_("Refunded at once"),
    "claim": N_("Claimed"),
    "release": N_("Released"),
    "assign": N_("Assigned"),
    "assign_next": N_("Taken as next ticket"),
    "auto_assign": N_("Assigned automatically"),
    "order_placed": N_("Order placed"),
    "order_paid": N_("Order paid"),
}

CHAIN_KIND = {
    "order": N_("Order"),
    "outbound_tracking": N_("Outbound parcel"),
    "return_tracking": N_("Return parcel"),
    "replacement_tracking": N_("Replacement parcel"),
    "ticket": N_("Ticket"),
}

DIRECTION = {"outbound": N_("Outbound"), "return": N_("Return"), "replacement": N_("Replacement")}

ROLE = {
    "agent": N_("Agent"),
    "supervisor": N_("Supervisor"),
    "product": N_("Product team"),
    "admin": N_("Admin"),
}

TEAM = {
    "qc": N_("Quality control"),
    "script": N_("Live-stream script"),
    "selection": N_("Product selection"),
    "logistics": N_("Logistics"),
}

FACT = {
    "kind": N_("kind"), "reason": N_("reason"), "reason_group": N_("reason group"), "quality": N_("quality claim"),
    "amount": N_("amount"), "amount_share": N_("share of paid"), "categories": N_("categories"), "products": N_("products"),
    "shipped": N_("shipped"), "delivered": N_("delivered"), "days_since_signed": N_("days since sign-for"),
    "window_open": N_("7-day window open"), "excluded": N_("excluded from 7-day return"), "evidence": N_("evidence attached"),
    "requests_30d": N_("requests in 30 days"), "requests_90d": N_("requests in 90 days"), "refunds_30d": N_("refunds in 30 days"),
    "refunds_90d": N_("refunds in 90 days"), "rejections_90d": N_("rejections in 90 days"), "session": N_("live session"),
    "host": N_("host"), "customer": N_("customer"),
}

DECISION = {"approve": N_("approved automatically"), "fast_refund": N_("refunded at once"), "queue": N_("sent to queue")}

TABLES = {"fact": FACT, "decision": DECISION, "team": TEAM, "role": ROLE, "status": STATUS, "kind": KIND, "action": ACTION, "chain": CHAIN_KIND, "direction": DIRECTION}


def label(table: str, key: str | None) -> str:
    if key is None:
        return ""
    text = TABLES[table].get(key)
    return gettext(text) if text else key
