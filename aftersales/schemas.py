"""Shared msgspec building blocks for API bodies."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import msgspec

# Times must carry their offset: a naive time from a platform is ambiguous.
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
ExternalId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[^\s\x00]+$")]
# No NUL characters: PostgreSQL text cannot store them (the pattern rejects them with a 400).
NO_NUL = r"^[^\x00]*$"
ShortText = Annotated[str, msgspec.Meta(max_length=300, pattern=NO_NUL)]
LongText = Annotated[str, msgspec.Meta(max_length=5000, pattern=NO_NUL)]
DbInt = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
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
    # The bound comes before quantize(): quantizing a huge value raises instead of answering.
    if value > Decimal("100000000"):
        raise InvalidInput.on(field, "is larger than any order amount this service accepts")
    if value != value.quantize(Decimal("0.01")):
        raise InvalidInput.on(field, "must have at most 2 decimal places (yuan.fen)")
    return value.quantize(Decimal("0.01"))


MAX_DB_ID = 2**63 - 1


def check_id(value: int, what: str) -> None:
    """Ids beyond the database's integer range cannot exist: answer 404 instead of overflowing."""
    from aftersales.errors import NotFound

    if not 0 < value <= MAX_DB_ID:
        raise NotFound(f"{what} {value} does not exist")


class Page(msgspec.Struct, kw_only=True):
    next_cursor: str | None
