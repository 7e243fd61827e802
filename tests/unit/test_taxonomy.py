"""Tests for the after-sales reason taxonomy."""

from __future__ import annotations

import dataclasses

import pytest

from aftersales.feedback.taxonomy import (
    PARENTS,
    REASONS,
    Reason,
    is_known_reason,
    is_quality_reason,
    reason_label,
)

# (code, parent, quality, zh_CN, en) written out explicitly as the contract.
EXPECTED = [
    ("quality.defect", "quality", True, "质量问题", "Defect"),
    ("quality.damaged", "quality", True, "破损", "Damaged"),
    (
        "quality.counterfeit_suspected",
        "quality",
        True,
        "疑似假货",
        "Suspected counterfeit",
    ),
    ("fulfillment.wrong_item", "fulfillment", False, "发错货", "Wrong item"),
    ("fulfillment.missing_item", "fulfillment", False, "少件漏发", "Missing item"),
    (
        "description.not_as_described",
        "description",
        False,
        "与描述不符",
        "Not as described",
    ),
    (
        "description.host_claim_mismatch",
        "description",
        False,
        "与主播介绍不符",
        "Doesn't match host's claims",
    ),
    ("fit.size", "fit", False, "尺码不合适", "Size doesn't fit"),
    ("preference.style", "preference", False, "款式不喜欢", "Don't like the style"),
    (
        "preference.changed_mind",
        "preference",
        False,
        "七天无理由",
        "Changed mind (7-day no-reason)",
    ),
    (
        "price.promo_dispute",
        "price",
        False,
        "价格/优惠争议",
        "Price / promotion dispute",
    ),
    ("logistics.delay", "logistics", False, "物流太慢", "Delivery too slow"),
    ("logistics.lost", "logistics", False, "丢件", "Lost in transit"),
    ("other", "other", False, "其他", "Other"),
]

EXPECTED_PARENTS = {
    "quality": "质量",
    "fulfillment": "履约",
    "description": "描述",
    "fit": "尺码",
    "preference": "偏好",
    "price": "价格",
    "logistics": "物流",
    "other": "其他",
}


def test_exactly_fourteen_codes() -> None:
    assert len(REASONS) == 14
    assert set(REASONS) == {row[0] for row in EXPECTED}


@pytest.mark.parametrize("code, parent, quality, zh_cn, en", EXPECTED)
def test_reason_fields(
    code: str, parent: str, quality: bool, zh_cn: str, en: str
) -> None:
    assert REASONS[code] == Reason(code, parent, quality, zh_cn, en)


@pytest.mark.parametrize("code, parent, quality, zh_cn, en", EXPECTED)
def test_labels(code: str, parent: str, quality: bool, zh_cn: str, en: str) -> None:
    assert reason_label(code, "zh_CN") == zh_cn
    assert reason_label(code, "en") == en


@pytest.mark.parametrize("code, parent, quality, zh_cn, en", EXPECTED)
def test_quality_flag(
    code: str, parent: str, quality: bool, zh_cn: str, en: str
) -> None:
    assert is_quality_reason(code) is quality
    assert is_known_reason(code) is True


def test_only_quality_parent_is_quality() -> None:
    quality_codes = {code for code, r in REASONS.items() if r.quality}
    assert quality_codes == {
        "quality.defect",
        "quality.damaged",
        "quality.counterfeit_suspected",
    }


def test_every_reason_parent_is_a_known_parent() -> None:
    assert {r.parent for r in REASONS.values()} == set(PARENTS)


@pytest.mark.parametrize("parent, zh_cn", sorted(EXPECTED_PARENTS.items()))
def test_parent_labels(parent: str, zh_cn: str) -> None:
    assert PARENTS[parent]["zh_CN"] == zh_cn
    assert PARENTS[parent]["en"].strip()


def test_parents_are_exactly_eight() -> None:
    assert set(PARENTS) == set(EXPECTED_PARENTS)


def test_reason_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        REASONS["other"].quality = True  # type: ignore[misc]


@pytest.mark.parametrize(
    "code", ["quality", "quality.unknown", "", "Other", "fit.size ", "refund"]
)
def test_unknown_codes(code: str) -> None:
    assert is_known_reason(code) is False
    assert is_quality_reason(code) is False
    assert reason_label(code, "zh_CN") == code
    assert reason_label(code, "en") == code


@pytest.mark.parametrize("locale", ["fr", "", "zh_TW", "zh-CN", "EN"])
def test_other_locales_fall_back_to_english(locale: str) -> None:
    assert reason_label("logistics.lost", locale) == "Lost in transit"
