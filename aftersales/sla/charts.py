"""Server-side SVG charts: no script, no CDN, readable by screen readers (<title> and <desc>)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import count

from markupsafe import Markup, escape

from aftersales.i18n import gettext
from aftersales.sla.reports import TrendDay

_ids = count(1)


def _pct(value: float) -> str:
    return f"{value * 100:.1f}".rstrip("0").rstrip(".") + " %"


def closure_trend(days: Sequence[TrendDay], *, target: float = 0.95, width: int = 720, height: int = 220) -> Markup:
    """Daily 48-hour closure rate as a line (gaps on days without closures) over bars of the number
    of tickets closed, with the target as a dashed line."""
    chart_id = f"chart-{next(_ids)}"
    left, right, top, bottom = 44, 36, 12, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(days), 1)
    slot = plot_w / n
    most = max((d.closed for d in days), default=0) or 1

    def y(rate: float) -> float:
        return top + plot_h * (1 - rate)

    title = gettext("48-hour closure rate per day, last %(n)s days", n=len(days))
    with_closures = [d for d in days if d.closed]
    below = sum(1 for d in with_closures if d.rate is not None and d.rate < target)
    desc = gettext("Target %(target)s. %(days)s days with closures, %(below)s of them below target.",
                   target=_pct(target), days=len(with_closures), below=below)
    parts: list[str] = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>',
    ]
    # Grid and y axis (rate).
    for tick in (0.0, 0.5, 1.0):
        parts.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>')
        parts.append(f'<text class="axis" x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{_pct(tick)}</text>')
    # Bars: tickets closed per day (scale on the right).
    for i, d in enumerate(days):
        if d.closed:
            bar_h = plot_h * 0.4 * d.closed / most
            x = left + i * slot + slot * 0.2
            tip = gettext("%(day)s: %(n)s closed", day=d.day.isoformat(), n=d.closed)
            parts.append(f'<rect class="bar" x="{x:.1f}" y="{top + plot_h - bar_h:.1f}" width="{slot * 0.6:.1f}" '
                         f'height="{bar_h:.1f}"><title>{escape(tip)}</title></rect>')
    parts.append(f'<text class="axis" x="{left + plot_w + 4}" y="{top + plot_h * 0.6 + 4:.1f}">{most}</text>')
    # Target line.
    parts.append(f'<line class="target" x1="{left}" x2="{left + plot_w}" y1="{y(target):.1f}" y2="{y(target):.1f}" '
                 f'stroke-dasharray="6 4"/>')
    parts.append(f'<text class="axis target-label" x="{left + plot_w + 4}" y="{y(target) + 4:.1f}">{_pct(target)}</text>')
    # Rate line, broken on days without closures.
    path: list[str] = []
    pen_down = False
    for i, d in enumerate(days):
        if d.rate is None:
            pen_down = False
            continue
        x, yy = left + (i + 0.5) * slot, y(d.rate)
        path.append(f'{"L" if pen_down else "M"}{x:.1f},{yy:.1f}')
        pen_down = True
    if path:
        parts.append(f'<path class="line" d="{" ".join(path)}" fill="none"/>')
    for i, d in enumerate(days):
        if d.rate is not None:
            x, yy = left + (i + 0.5) * slot, y(d.rate)
            tip = gettext("%(day)s: %(met)s of %(n)s closed within 48 h (%(rate)s)", day=d.day.isoformat(), met=d.met,
                          n=d.closed, rate=_pct(d.rate))
            css = "point below" if d.rate < target else "point"
            parts.append(f'<circle class="{css}" cx="{x:.1f}" cy="{yy:.1f}" r="3"><title>{escape(tip)}</title></circle>')
    # X axis labels: about every week, and the last day.
    step = max(n // 5, 1)
    for i, d in enumerate(days):
        if i % step == 0 or i == n - 1:
            x = left + (i + 0.5) * slot
            parts.append(f'<text class="axis" x="{x:.1f}" y="{height - 10}" text-anchor="middle">{d.day.strftime("%m-%d")}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
