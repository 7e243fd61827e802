"""Server-side SVG charts: no script, no CDN, readable by screen readers (<title> and <desc>).

One shape serves every trend in the product: a rate as a line (broken where there is no data)
over bars of the volume behind it, with an optional dashed target line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import count

from markupsafe import Markup, escape

_ids = count(1)


@dataclass(frozen=True)
class Point:
    label: str  # x-axis text, e.g. "11-03"
    volume: int  # bar height (right-hand scale)
    rate: float | None  # line value, 0..ceiling; None leaves a gap
    bar_tip: str
    point_tip: str
    below: bool = False  # drawn as a warning point
    attrs: str = ""  # extra attributes on the point, e.g. data-* for tests and scripts


def pct(value: float) -> str:
    return f"{value * 100:.1f}".rstrip("0").rstrip(".") + " %"


def rate_over_volume(
    points: Sequence[Point], *, title: str, desc: str, ceiling: float = 1.0, target: float | None = None,
    data_name: str = "", labels: int = 6, width: int = 720, height: int = 220,
) -> Markup:
    chart_id = f"chart-{next(_ids)}"
    left, right, top, bottom = 48, 40, 12, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(points), 1)
    slot = plot_w / n
    most = max((p.volume for p in points), default=0) or 1

    def x_mid(i: int) -> float:
        return left + (i + 0.5) * slot

    def y(rate: float) -> float:
        return top + plot_h * (1 - rate / ceiling)

    data = f' data-chart="{escape(data_name)}"' if data_name else ""
    parts: list[str] = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" xmlns="http://www.w3.org/2000/svg"{data}>',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>',
    ]
    for tick in (0.0, ceiling / 2, ceiling):
        parts.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>')
        parts.append(f'<text class="axis" x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{pct(tick)}</text>')
    for i, p in enumerate(points):
        if p.volume:
            bar_h = plot_h * 0.4 * p.volume / most
            parts.append(f'<rect class="bar" x="{left + i * slot + slot * 0.2:.1f}" y="{top + plot_h - bar_h:.1f}" '
                         f'width="{slot * 0.6:.1f}" height="{bar_h:.1f}"><title>{escape(p.bar_tip)}</title></rect>')
    parts.append(f'<text class="axis" x="{left + plot_w + 4}" y="{top + plot_h * 0.6 + 4:.1f}">{most}</text>')
    if target is not None:
        parts.append(f'<line class="target" x1="{left}" x2="{left + plot_w}" y1="{y(target):.1f}" y2="{y(target):.1f}" '
                     f'stroke-dasharray="6 4"/>')
        parts.append(f'<text class="axis target-label" x="{left + plot_w + 4}" y="{y(target) + 4:.1f}">{pct(target)}</text>')
    path: list[str] = []
    pen_down = False
    for i, p in enumerate(points):
        if p.rate is None:
            pen_down = False
            continue
        path.append(f'{"L" if pen_down else "M"}{x_mid(i):.1f},{y(p.rate):.1f}')
        pen_down = True
    if path:
        parts.append(f'<path class="line" d="{" ".join(path)}" fill="none"/>')
    for i, p in enumerate(points):
        if p.rate is not None:
            css = "point below" if p.below else "point"
            extra = f" {p.attrs}" if p.attrs else ""
            parts.append(f'<circle class="{css}" cx="{x_mid(i):.1f}" cy="{y(p.rate):.1f}" r="3"{extra}>'
                         f'<title>{escape(p.point_tip)}</title></circle>')
    step = max(n // labels, 1)
    for i, p in enumerate(points):
        if i % step == 0 or i == n - 1:
            parts.append(f'<text class="axis" x="{x_mid(i):.1f}" y="{height - 9}" text-anchor="middle">{escape(p.label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
