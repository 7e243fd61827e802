"""The SLA board's trend chart (drawn by aftersales.charts)."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup

from aftersales.charts import Point, pct, rate_over_volume
from aftersales.i18n import gettext
from aftersales.sla.reports import TrendDay


def closure_trend(days: Sequence[TrendDay], *, target: float = 0.95, width: int = 720, height: int = 220) -> Markup:
    """Daily 48-hour closure rate as a line (gaps on days without closures) over bars of the number
    of tickets closed, with the target as a dashed line."""
    with_closures = [d for d in days if d.closed]
    below = sum(1 for d in with_closures if d.rate is not None and d.rate < target)
    points = [
        Point(
            label=d.day.strftime("%m-%d"), volume=d.closed, rate=d.rate,
            bar_tip=gettext("%(day)s: %(n)s closed", day=d.day.isoformat(), n=d.closed),
            point_tip=gettext("%(day)s: %(met)s of %(n)s closed within 48 h (%(rate)s)", day=d.day.isoformat(), met=d.met,
                              n=d.closed, rate=pct(d.rate)) if d.rate is not None else "",
            below=d.rate is not None and d.rate < target,
        )
        for d in days
    ]
    return rate_over_volume(
        points, target=target, labels=5, width=width, height=height,
        title=gettext("48-hour closure rate per day, last %(n)s days", n=len(days)),
        desc=gettext("Target %(target)s. %(days)s days with closures, %(below)s of them below target.",
                     target=pct(target), days=len(with_closures), below=below),
    )
