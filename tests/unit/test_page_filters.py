"""The page filters' shortcuts print what the plain formatting would (bench F24)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from aftersales.pages import escape_text, localtime


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "UTC", "America/New_York", "Asia/Kolkata"])
def test_localtime_minutes_match_strftime(zone):
    tz = ZoneInfo(zone)
    rng = random.Random(zone)
    start = datetime(1990, 1, 1, tzinfo=UTC)
    for _ in range(5000):
        value = start + timedelta(seconds=rng.randrange(60 * 365 * 86400), microseconds=rng.randrange(10**6))
        assert localtime(value, tz) == value.astimezone(tz).strftime("%Y-%m-%d %H:%M")
    # A naive value is UTC, as everywhere in the service; other formats still go through strftime.
    assert localtime(datetime(2026, 3, 1, 16, 30), ZoneInfo("Asia/Shanghai")) == "2026-03-02 00:30"
    assert localtime(datetime(2026, 3, 1, 16, 30, tzinfo=UTC), ZoneInfo("Asia/Shanghai"), "%m/%d") == "03/02"
    assert localtime(None, tz) == ""


def test_escape_text_leaves_no_markup_and_round_trips():
    import html

    for text in ['<b onclick="x()">VIP & \'friends\'</b>', "退货 & 换货", "plain"]:
        escaped = escape_text(text)
        assert not set("<>\"'") & set(escaped)
        assert html.unescape(escaped) == text
