"""Normalize carrier tracking statuses from several providers to one vocabulary.

Each tracking provider (Kuaidi100, AfterShip, 17TRACK) reports shipment state
in its own code system. The rest of the service only reasons about the small
canonical set below, so every raw code is mapped here, in one place, and an
unknown code fails loudly instead of being silently guessed.
"""

from __future__ import annotations

from typing import Mapping

CANONICAL_STATUSES: tuple[str, ...] = (
    "info_received",
    "in_transit",
    "out_for_delivery",
    "delivery_failed",
    "delivered",
    "available_for_pickup",
    "exception",
    "returned_to_sender",
    "expired",
)

SOURCES: tuple[str, ...] = ("kuaidi100", "aftership", "17track", "canonical")

# Statuses after which the carrier will report nothing more for the parcel.
TERMINAL_STATUSES: frozenset[str] = frozenset(
    {"delivered", "returned_to_sender", "expired"}
)

# Kuaidi100 `state` codes: (Chinese label for display, canonical status).
# Includes the basic states (0-14) and the advanced sub-status codes that
# Kuaidi100 returns when "resultv2" is enabled.
_KUAIDI100: dict[str, tuple[str, str]] = {
    # Basic states.
    "0": ("在途", "in_transit"),
    "1": ("揽收", "in_transit"),
    "2": ("疑难", "exception"),
    "3": ("签收", "delivered"),
    "4": ("退签", "returned_to_sender"),
    "5": ("派件", "out_for_delivery"),
    "6": ("退回", "returned_to_sender"),
    "7": ("转投", "in_transit"),
    "8": ("清关", "in_transit"),
    "10": ("待清关", "in_transit"),
    "11": ("清关中", "in_transit"),
    "12": ("已清关", "in_transit"),
    "13": ("清关异常", "exception"),
    # A refused parcel is a failed delivery attempt, not a carrier fault.
    "14": ("拒签", "delivery_failed"),
    # Advanced sub-states: ordering / pickup.
    "101": ("已下单", "info_received"),
    "102": ("待揽收", "info_received"),
    "103": ("已揽收", "in_transit"),
    # Advanced sub-states: in transit.
    "1001": ("到达派件城市", "in_transit"),
    "1002": ("干线", "in_transit"),
    "1003": ("转递", "in_transit"),
    # Advanced sub-states: problem parcels. Most are carrier-side exceptions,
    # but refusals and failed delivery attempts are customer-facing failures,
    # and an uncollected locker parcel is still waiting for pickup.
    "201": ("超时未签收", "exception"),
    "202": ("超时未更新", "exception"),
    "203": ("拒收", "delivery_failed"),
    "204": ("派件异常", "delivery_failed"),
    "205": ("柜或驿站超时未取", "available_for_pickup"),
    "206": ("无法联系", "exception"),
    "207": ("超区", "exception"),
    "208": ("滞留", "exception"),
    "209": ("破损", "exception"),
    "210": ("销单", "exception"),
    # Advanced sub-states: signed for. A parcel signed at a locker/station
    # counts as delivered: the carrier's obligation is over.
    "301": ("本人签收", "delivered"),
    "302": ("派件异常后签收", "delivered"),
    "303": ("代签", "delivered"),
    "304": ("投柜或站签收", "delivered"),
    # Advanced sub-states: cancelled order, parcel in a locker/station.
    "401": ("已销单", "expired"),
    "501": ("投柜或驿站", "available_for_pickup"),
}

# Chinese label per Kuaidi100 code, for showing the carrier's own wording.
KUAIDI100_LABELS: dict[str, str] = {
    code: label for code, (label, _) in _KUAIDI100.items()
}

# AfterShip tags, keyed lower-case because matching is case-insensitive.
_AFTERSHIP: dict[str, str] = {
    "pending": "info_received",
    "inforeceived": "info_received",
    "intransit": "in_transit",
    "outfordelivery": "out_for_delivery",
    "attemptfail": "delivery_failed",
    "delivered": "delivered",
    "availableforpickup": "available_for_pickup",
    "exception": "exception",
    "expired": "expired",
}

# 17TRACK: v2 main status names (lower-case) plus v1 numeric package states;
# both API versions are still seen in webhooks, so accept either.
_17TRACK: dict[str, str] = {
    "notfound": "info_received",
    "inforeceived": "info_received",
    "intransit": "in_transit",
    "expired": "expired",
    "availableforpickup": "available_for_pickup",
    "outfordelivery": "out_for_delivery",
    "deliveryfailure": "delivery_failed",
    "delivered": "delivered",
    "exception": "exception",
    "0": "info_received",
    "10": "in_transit",
    "20": "expired",
    "30": "available_for_pickup",
    "35": "delivery_failed",
    "40": "delivered",
    "50": "exception",
}

_CANONICAL: dict[str, str] = {status: status for status in CANONICAL_STATUSES}

_TABLES: dict[str, Mapping[str, str]] = {
    "kuaidi100": {code: status for code, (_, status) in _KUAIDI100.items()},
    "aftership": _AFTERSHIP,
    "17track": _17TRACK,
    "canonical": _CANONICAL,
}

# Sources whose textual codes are compared case-insensitively. Kuaidi100 codes
# are numeric and canonical names are our own, so those stay exact.
_CASE_INSENSITIVE: frozenset[str] = frozenset({"aftership", "17track"})

# Display spellings of accepted codes, used only in error messages so that the
# operator sees the provider's documented casing rather than our lookup keys.
_ACCEPTED_DISPLAY: dict[str, tuple[str, ...]] = {
    "kuaidi100": tuple(_KUAIDI100),
    "aftership": (
        "Pending", "InfoReceived", "InTransit", "OutForDelivery",
        "AttemptFail", "Delivered", "AvailableForPickup", "Exception",
        "Expired",
    ),
    "17track": (
        "NotFound", "InfoReceived", "InTransit", "Expired",
        "AvailableForPickup", "OutForDelivery", "DeliveryFailure",
        "Delivered", "Exception", "0", "10", "20", "30", "35", "40", "50",
    ),
    "canonical": CANONICAL_STATUSES,
}

STATUS_LABELS: dict[str, dict[str, str]] = {
    "info_received": {"zh_CN": "已下单", "en": "Info received"},
    "in_transit": {"zh_CN": "运输中", "en": "In transit"},
    "out_for_delivery": {"zh_CN": "派送中", "en": "Out for delivery"},
    "delivery_failed": {"zh_CN": "投递失败", "en": "Delivery failed"},
    "delivered": {"zh_CN": "已签收", "en": "Delivered"},
    "available_for_pickup": {"zh_CN": "待取件", "en": "Available for pickup"},
    "exception": {"zh_CN": "异常", "en": "Exception"},
    "returned_to_sender": {"zh_CN": "已退回", "en": "Returned to sender"},
    "expired": {"zh_CN": "已失效", "en": "Expired"},
}


class UnknownSource(ValueError):
    """Raised when a status comes from a provider we have no mapping for."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__(
            f"unknown carrier status source {source!r}; "
            f"accepted sources: {', '.join(SOURCES)}"
        )


class UnknownCarrierStatus(ValueError):
    """Raised when a provider reports a code we have no mapping for.

    Failing loudly is deliberate: guessing would put tickets into the wrong
    after-sales flow (e.g. treating a refusal as in transit).
    """

    def __init__(self, source: str, raw: str | int) -> None:
        self.source = source
        self.raw = raw
        accepted = ", ".join(_ACCEPTED_DISPLAY[source])
        super().__init__(
            f"unknown {source} carrier status {raw!r}; "
            f"accepted {source} codes: {accepted}"
        )


def _lookup_key(source: str, raw: str | int) -> str:
    """Turn a raw code into the key used in the source's table."""
    # Webhooks deliver numeric codes both as ints and as padded strings.
    key = str(raw).strip()
    return key.lower() if source in _CASE_INSENSITIVE else key


def normalize_status(source: str, raw: str | int) -> str:
    """Return the canonical status for `raw` as reported by `source`."""
    table = _TABLES.get(source)
    if table is None:
        raise UnknownSource(source)
    status = table.get(_lookup_key(source, raw))
    if status is None:
        raise UnknownCarrierStatus(source, raw)
    return status


def is_terminal(status: str) -> bool:
    """True if no further tracking updates are expected for `status`."""
    return status in TERMINAL_STATUSES


# How far along a parcel is: when two scans share a timestamp, the further one is the status.
PROGRESS: dict[str, int] = {
    "info_received": 0, "in_transit": 1, "exception": 1, "delivery_failed": 2, "out_for_delivery": 2,
    "available_for_pickup": 3, "delivered": 4, "returned_to_sender": 5, "expired": 5,
}
