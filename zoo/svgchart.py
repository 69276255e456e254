"""Line charts as standalone SVG, drawn on the server: the degradation lab's and the transfer lab's curves.

Drawn here rather than by the browser's plot component: a gr.LinePlot updated while a job runs drew the previous
update's series (the transfer lab's last run never appeared), and an SVG string is the same on every client.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

W, H, LEFT, RIGHT, TOP, BOTTOM = 480, 300, 54, 14, 30, 48  # the plot's frame; the legend's rows go below H
LEGEND_ROW = 22


@dataclass(frozen=True)
class Series:
    label: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    colour: str
    dashed: bool


def _ticks(low: float, high: float, n: int = 5) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if m * step >= raw)
    start = math.ceil(low / step) * step
    return [round(start + i * step, 10) for i in range(int((high - start) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")
    return f"{v:g}"


def chart(series: Sequence[Series], *, title: str, xlabel: str, ylabel: str, y_range: tuple[float, float] | None = None,
          x_range: tuple[float, float] | None = None, log_y: bool = False, integer_x: bool = False) -> str:
    """A line chart as standalone SVG: it scales with its container, and its legend sits below the plot (two
    columns where the labels fit), so the plot has the whole width and the text stays readable on a phone
    (about 10 px in a 340 px column; with the legend at the side, the degradation lab's came out at 5-6 px)."""
    pts = [(x, y) for s in series for x, y in zip(s.xs, s.ys, strict=True) if y is not None and math.isfinite(y)]
    if log_y:
        pts = [(x, y) for x, y in pts if y > 0]
    xs = [p[0] for p in pts] or [0.0, 1.0]
    ys = [p[1] for p in pts] or ([1.0, 10.0] if log_y else [0.0, 1.0])  # nothing finite to draw: an empty frame
    x0, x1 = x_range or (min(xs), max(max(xs), min(xs) + 1))
    if log_y:
        y0, y1 = 10 ** math.floor(math.log10(min(ys))), 10 ** math.ceil(math.log10(max(ys)))
        y1 = y1 * 10 if y1 == y0 else y1
    else:
        y0, y1 = y_range or (min(0.0, min(ys)), max(ys) * 1.05 or 1.0)
    columns = 2 if all(len(s.label) * 7.8 + 40 <= (W - LEFT - RIGHT) / 2 for s in series) else 1  # 14 px text
    rows = (len(series) + columns - 1) // columns
    height = H + LEGEND_ROW * rows
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        f = (math.log10(y) - math.log10(y0)) / (math.log10(y1) - math.log10(y0)) if log_y else (y - y0) / (y1 - y0)
        return TOP + (1 - f) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height}" width="100%" role="img" '
           f'style="max-width:{W * 1.25:.0f}px;font-family:system-ui,sans-serif;font-size:14px;background:#fff">',
           f"<title>{html.escape(title)}</title>",
           f'<text x="{LEFT}" y="18" font-size="15" font-weight="600" fill="#111">{html.escape(title)}</text>']
    yticks = [10.0 ** e for e in range(round(math.log10(y0)), round(math.log10(y1)) + 1)] if log_y \
        else _ticks(y0, y1)
    for t in yticks:
        y = py(t)
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
                   f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#374151">{_fmt(t)}</text>')
    xticks = [t for t in _ticks(x0, x1) if not integer_x or float(t).is_integer()]
    for t in xticks:
        x = px(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{TOP + ph}" stroke="#f3f4f6"/>'
                   f'<text x="{x:.1f}" y="{TOP + ph + 16}" text-anchor="middle" fill="#374151">{_fmt(t)}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#9ca3af"/>'
               f'<text x="{LEFT + pw / 2}" y="{H - 12}" text-anchor="middle" fill="#111">{html.escape(xlabel)}</text>'
               f'<text transform="translate(14 {TOP + ph / 2}) rotate(-90)" text-anchor="middle" fill="#111">'
               f"{html.escape(ylabel)}</text>")
    for i, s in enumerate(series):
        segs, cur = [], []
        for x, y in zip(s.xs, s.ys, strict=True):
            if y is None or not math.isfinite(y) or (log_y and y <= 0):
                if cur:
                    segs.append(cur)
                cur = []
                continue
            cur.append(f"{px(x):.1f},{py(min(max(y, y0), y1)):.1f}")
        if cur:
            segs.append(cur)
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        for seg in segs:
            if len(seg) == 1:
                cx, cy = seg[0].split(",")
                out.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{s.colour}"/>')
            else:
                out.append(f'<polyline points="{" ".join(seg)}" fill="none" stroke="{s.colour}" '
                           f'stroke-width="{1.6 if s.dashed else 2.2}"{dash}/>')
        lx, ly = LEFT + (i % columns) * pw / 2, H + LEGEND_ROW * (i // columns) + 4
        out.append(f'<line x1="{lx:.1f}" x2="{lx + 26:.1f}" y1="{ly}" y2="{ly}" stroke="{s.colour}" '
                   f'stroke-width="2.5"{dash}/><text x="{lx + 32:.1f}" y="{ly + 5}" fill="#111">'
                   f"{html.escape(s.label)}</text>")
    out.append("</svg>")
    return "".join(out)
