"""Shared msgspec building blocks for API bodies."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import msgspec

# Times must carry their offset: a naive time from a platform is ambiguous.
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
ExternalId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^\S+$")]
ShortText = Annotated[str, msgspec.Meta(max_length=300)]
LongText = Annotated[str, msgspec.Meta(max_length=5000)]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=100_000)]
# Money travels as a decimal string in yuan ("89.00"); rules on sign and scale are checked by
# money_field() so that the error can name the field.
Amount = Decimal


def money_field(value: Decimal, field: str, *, allow_zero: bool = True) -> Decimal:
    from aftersales.errors import InvalidInput

    if not value.is_finite():
        raise InvalidInput.on(field, "must be a finite amount")
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidInput.on(field, "must be positive" if not allow_zero else "must not be negative")
    if value != value.quantize(Decimal("0.01")):
        raise InvalidInput.on(field, "must have at most 2 decimal places (yuan.fen)")
    if value > Decimal("100000000"):
        raise InvalidInput.on(field, "is larger than any order amount this service accepts")
    return value.quantize(Decimal("0.01"))


class Page(msgspec.Struct, kw_only=True):
    next_cursor: str | None
