"""The after-sales reason taxonomy.

Reasons are two-level codes ("parent.leaf") so reports can roll up by parent
while tickets keep the precise leaf. The quality flag marks reasons that point
at the product itself, which is what supplier quality reporting counts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reason:
    """One leaf reason code with its display labels."""

    code: str
    parent: str
    quality: bool
    zh_CN: str
    en: str


def _reason(code: str, zh_cn: str, en: str) -> Reason:
    # Parent is derived from the code so the two can never disagree; "other"
    # has no dot and is its own parent.
    parent = code.split(".", 1)[0]
    return Reason(code, parent, parent == "quality", zh_cn, en)


_ALL: tuple[Reason, ...] = (
    _reason("quality.defect", "质量问题", "Defect"),
    _reason("quality.damaged", "破损", "Damaged"),
    _reason("quality.counterfeit_suspected", "疑似假货", "Suspected counterfeit"),
    _reason("fulfillment.wrong_item", "发错货", "Wrong item"),
    _reason("fulfillment.missing_item", "少件漏发", "Missing item"),
    _reason("description.not_as_described", "与描述不符", "Not as described"),
    _reason(
        "description.host_claim_mismatch",
        "与主播介绍不符",
        "Doesn't match host's claims",
    ),
    _reason("fit.size", "尺码不合适", "Size doesn't fit"),
    _reason("preference.style", "款式不喜欢", "Don't like the style"),
    _reason(
        "preference.changed_mind", "七天无理由", "Changed mind (7-day no-reason)"
    ),
    _reason("price.promo_dispute", "价格/优惠争议", "Price / promotion dispute"),
    _reason("logistics.delay", "物流太慢", "Delivery too slow"),
    _reason("logistics.lost", "丢件", "Lost in transit"),
    _reason("other", "其他", "Other"),
)

REASONS: dict[str, Reason] = {reason.code: reason for reason in _ALL}

PARENTS: dict[str, dict[str, str]] = {
    "quality": {"zh_CN": "质量", "en": "Quality"},
    "fulfillment": {"zh_CN": "履约", "en": "Fulfillment"},
    "description": {"zh_CN": "描述", "en": "Description"},
    "fit": {"zh_CN": "尺码", "en": "Fit"},
    "preference": {"zh_CN": "偏好", "en": "Preference"},
    "price": {"zh_CN": "价格", "en": "Price"},
    "logistics": {"zh_CN": "物流", "en": "Logistics"},
    "other": {"zh_CN": "其他", "en": "Other"},
}


def is_known_reason(code: str) -> bool:
    """True if `code` is one of the leaf reason codes."""
    return code in REASONS


def is_quality_reason(code: str) -> bool:
    """True if `code` is a product-quality reason; unknown codes are not."""
    reason = REASONS.get(code)
    return reason is not None and reason.quality


def reason_label(code: str, locale: str) -> str:
    """Display label for `code`; the raw code if unknown, English by default."""
    reason = REASONS.get(code)
    if reason is None:
        # Showing the code keeps legacy/foreign codes visible rather than blank.
        return code
    return reason.zh_CN if locale == "zh_CN" else reason.en
