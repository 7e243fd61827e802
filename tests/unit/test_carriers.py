"""Tests for carrier status normalization.

Expectations are written out explicitly rather than read from the module's
tables, so a wrong mapping in the module cannot make its own test pass.
"""

from __future__ import annotations

import pytest

from aftersales.orders.carriers import (
    CANONICAL_STATUSES,
    KUAIDI100_LABELS,
    SOURCES,
    STATUS_LABELS,
    UnknownCarrierStatus,
    UnknownSource,
    is_terminal,
    normalize_status,
)

KUAIDI100_BASIC = [
    ("0", "in_transit"),
    ("1", "in_transit"),
    ("2", "exception"),
    ("3", "delivered"),
    ("4", "returned_to_sender"),
    ("5", "out_for_delivery"),
    ("6", "returned_to_sender"),
    ("7", "in_transit"),
    ("8", "in_transit"),
    ("10", "in_transit"),
    ("11", "in_transit"),
    ("12", "in_transit"),
    ("13", "exception"),
    ("14", "delivery_failed"),
]

KUAIDI100_ADVANCED = [
    ("101", "info_received"),
    ("102", "info_received"),
    ("103", "in_transit"),
    ("1001", "in_transit"),
    ("1002", "in_transit"),
    ("1003", "in_transit"),
    ("201", "exception"),
    ("202", "exception"),
    ("203", "delivery_failed"),
    ("204", "delivery_failed"),
    ("205", "available_for_pickup"),
    ("206", "exception"),
    ("207", "exception"),
    ("208", "exception"),
    ("209", "exception"),
    ("210", "exception"),
    ("301", "delivered"),
    ("302", "delivered"),
    ("303", "delivered"),
    ("304", "delivered"),
    ("401", "expired"),
    ("501", "available_for_pickup"),
]

AFTERSHIP = [
    ("Pending", "info_received"),
    ("InfoReceived", "info_received"),
    ("InTransit", "in_transit"),
    ("OutForDelivery", "out_for_delivery"),
    ("AttemptFail", "delivery_failed"),
    ("Delivered", "delivered"),
    ("AvailableForPickup", "available_for_pickup"),
    ("Exception", "exception"),
    ("Expired", "expired"),
]

SEVENTEEN_TRACK = [
    ("NotFound", "info_received"),
    ("InfoReceived", "info_received"),
    ("InTransit", "in_transit"),
    ("Expired", "expired"),
    ("AvailableForPickup", "available_for_pickup"),
    ("OutForDelivery", "out_for_delivery"),
    ("DeliveryFailure", "delivery_failed"),
    ("Delivered", "delivered"),
    ("Exception", "exception"),
    ("0", "info_received"),
    ("10", "in_transit"),
    ("20", "expired"),
    ("30", "available_for_pickup"),
    ("35", "delivery_failed"),
    ("40", "delivered"),
    ("50", "exception"),
]


@pytest.mark.parametrize("raw, expected", KUAIDI100_BASIC + KUAIDI100_ADVANCED)
def test_kuaidi100_codes(raw: str, expected: str) -> None:
    assert normalize_status("kuaidi100", raw) == expected


@pytest.mark.parametrize("raw, expected", AFTERSHIP)
def test_aftership_tags(raw: str, expected: str) -> None:
    assert normalize_status("aftership", raw) == expected


@pytest.mark.parametrize("raw, expected", SEVENTEEN_TRACK)
def test_17track_statuses(raw: str, expected: str) -> None:
    assert normalize_status("17track", raw) == expected


@pytest.mark.parametrize("status", CANONICAL_STATUSES)
def test_canonical_maps_to_itself(status: str) -> None:
    assert normalize_status("canonical", status) == status


def test_canonical_statuses_are_the_documented_nine() -> None:
    assert CANONICAL_STATUSES == (
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


def test_sources() -> None:
    assert tuple(SOURCES) == ("kuaidi100", "aftership", "17track", "canonical")


@pytest.mark.parametrize(
    "raw", ["Delivered", "delivered", "DELIVERED", "  dElIvErEd  "]
)
def test_aftership_is_case_insensitive(raw: str) -> None:
    assert normalize_status("aftership", raw) == "delivered"


@pytest.mark.parametrize("raw", ["outfordelivery", "OUTFORDELIVERY"])
def test_17track_is_case_insensitive(raw: str) -> None:
    assert normalize_status("17track", raw) == "out_for_delivery"


@pytest.mark.parametrize(
    "source, raw, expected",
    [
        ("kuaidi100", 3, "delivered"),
        ("kuaidi100", "3", "delivered"),
        ("kuaidi100", " 3 ", "delivered"),
        ("kuaidi100", 14, "delivery_failed"),
        ("kuaidi100", 501, "available_for_pickup"),
        ("17track", 40, "delivered"),
        ("17track", "40", "delivered"),
        ("17track", 0, "info_received"),
    ],
)
def test_int_and_str_raw_codes_agree(
    source: str, raw: str | int, expected: str
) -> None:
    assert normalize_status(source, raw) == expected


@pytest.mark.parametrize(
    "source, raw",
    [
        ("kuaidi100", "99"),
        ("kuaidi100", 99),
        ("kuaidi100", ""),
        ("aftership", "Teleported"),
        ("aftership", "in_transit"),
        ("17track", 45),
        ("17track", "Lost"),
        ("canonical", "Delivered"),
        ("canonical", "shipped"),
    ],
)
def test_unknown_code_raises(source: str, raw: str | int) -> None:
    with pytest.raises(UnknownCarrierStatus) as excinfo:
        normalize_status(source, raw)
    err = excinfo.value
    assert err.source == source
    assert err.raw == raw
    assert source in str(err)
    assert repr(raw) in str(err)


def test_unknown_code_message_lists_accepted_codes() -> None:
    with pytest.raises(UnknownCarrierStatus) as excinfo:
        normalize_status("aftership", "Teleported")
    message = str(excinfo.value)
    for tag, _ in AFTERSHIP:
        assert tag in message


def test_unknown_carrier_status_is_value_error() -> None:
    with pytest.raises(ValueError):
        normalize_status("kuaidi100", "nope")


@pytest.mark.parametrize("source", ["ups", "", "Kuaidi100", "AfterShip"])
def test_unknown_source_raises(source: str) -> None:
    with pytest.raises(UnknownSource) as excinfo:
        normalize_status(source, "3")
    assert excinfo.value.source == source
    assert repr(source) in str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)


@pytest.mark.parametrize(
    "status, terminal",
    [
        ("info_received", False),
        ("in_transit", False),
        ("out_for_delivery", False),
        ("delivery_failed", False),
        ("delivered", True),
        ("available_for_pickup", False),
        ("exception", False),
        ("returned_to_sender", True),
        ("expired", True),
    ],
)
def test_is_terminal(status: str, terminal: bool) -> None:
    assert is_terminal(status) is terminal


@pytest.mark.parametrize("status", CANONICAL_STATUSES)
def test_every_canonical_status_has_both_labels(status: str) -> None:
    labels = STATUS_LABELS[status]
    assert labels["zh_CN"].strip()
    assert labels["en"].strip()


def test_status_labels_cover_exactly_the_canonical_statuses() -> None:
    assert set(STATUS_LABELS) == set(CANONICAL_STATUSES)
    assert STATUS_LABELS["delivered"] == {"zh_CN": "已签收", "en": "Delivered"}


@pytest.mark.parametrize("raw, _", KUAIDI100_BASIC + KUAIDI100_ADVANCED)
def test_every_kuaidi100_code_has_a_label(raw: str, _: str) -> None:
    assert KUAIDI100_LABELS[raw].strip()


@pytest.mark.parametrize(
    "code, label",
    [("0", "在途"), ("3", "签收"), ("14", "拒签"), ("203", "拒收"), ("501", "投柜或驿站")],
)
def test_kuaidi100_labels(code: str, label: str) -> None:
    assert KUAIDI100_LABELS[code] == label
