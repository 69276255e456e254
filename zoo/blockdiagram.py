"""The network as the paper draws it (its Figures 3 and 5): layers, stage repeats and shortcut arcs, as SVG.

Pure: input is `zoo.architecture.Architecture` (computed from the real timm model), through the typed
description in `zoo.blockview`; output SVG text.
Each network is a column, top to bottom: stem, then per stage its blocks drawn as their layers (a
basic block 3x3 -> 3x3, a bottleneck 1x1 -> 3x3 -> 1x1 with a narrower middle, a ResNeXt 3x3 stacked
to show its groups), identical blocks drawn once with "×n", identity shortcuts as solid arcs and
projections as dashed arcs into the addition ⊕, then the head. `figure` lays the columns out as
HTML that wraps on a phone; `diagram` puts them side by side in one standalone SVG file.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from html import escape

from zoo.architecture import Architecture
from zoo.blockview import Layer, Network, Run, legend_items, networks

SVG_NS = "http://www.w3.org/2000/svg"
FONT = 12  # user units; no text is smaller, and columns never render below MIN_SCALE
MIN_SCALE = 11 / FONT  # so text is never under 11 px, on a phone included
COL_W = 206  # one network's column: repeat marks, layer boxes, shortcut arcs
REP_W, BOX_W, NARROW_W = 40, 144, 128
CX = REP_W + BOX_W // 2  # the main path
ARC_X = REP_W + BOX_W + 12
LEGEND_W = 340
STYLE = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif"
COLOURS = {  # fill, stroke
    "3x3": ("#dbeafe", "#2563eb"),
    "1x1": ("#fef3c7", "#b45309"),
    "other": ("#f1f5f9", "#64748b"),
}
IDENTITY, PROJECTION = "#0f172a", "#b91c1c"
HALO = 'stroke="#fff" stroke-width="4" paint-order="stroke"'  # keeps text readable over the main path
TOP = 62  # the first box, under the title and subtitle


def _text(x: float, y: float, s: str, *, size: int = FONT, anchor: str = "middle", extra: str = "") -> str:
    return f'<text x="{x:g}" y="{y:g}" font-size="{size}" text-anchor="{anchor}"{extra}>{escape(s)}</text>'


def _box(y: float, layer: Layer) -> tuple[str, float]:
    """A layer's box with its top at y; returns the SVG and its height (1x1 convs are drawn thinner)."""
    h = 20 if layer.look == "1x1" else 26
    w = NARROW_W if layer.narrow else BOX_W
    x = CX - w / 2
    fill, stroke = COLOURS[layer.look]
    rect = f'<rect x="{{x:g}}" y="{{y:g}}" width="{w}" height="{h}" rx="3" fill="{fill}" stroke="{stroke}"/>'
    back = "".join(rect.format(x=x + d, y=y - d) for d in (6, 3)) if layer.groups > 1 else ""
    label = _text(CX, y + h / 2 + 4, layer.label, extra=' class="layer"')
    return back + rect.format(x=x, y=y) + label, h


def _layers(y: float, layers: Sequence[Layer], gap: float = 6) -> tuple[list[str], float]:
    parts = []
    for layer in layers:
        svg, h = _box(y, layer)
        parts.append(svg)
        y += h + gap
    return parts, y - gap


def _run(y: float, run: Run, stage: str) -> tuple[str, float]:
    """One run of blocks: its layers, the shortcut arc into ⊕, and "×n" when repeated."""
    top = y + 12
    boxes, bottom = _layers(top, run.layers)
    parts = [
        f'<g class="block" data-stage="{stage}" data-first="{run.first}" data-repeat="{run.repeat}" '
        f'data-shortcut="{run.shortcut}">',
        *boxes,
    ]
    if run.repeat > 1:
        bx = REP_W - 5
        parts.append(f'<path d="M{bx + 4} {top} H{bx} V{bottom} H{bx + 4}" fill="none" stroke="#475569"/>')
        parts.append(
            _text(
                bx - 3,
                (top + bottom) / 2 + 5,
                f"×{run.repeat}",
                size=14,
                anchor="end",
                extra=' font-weight="700" class="repeat"',
            )
        )
    plus, r = bottom + 14, 6
    end = plus + r + 4  # the same with or without a shortcut, so a plain twin lines up with its residual net
    if run.shortcut != "none":
        tap = y + 5
        dash, colour = (' stroke-dasharray="6 4"', PROJECTION) if run.shortcut == "projection" else ("", IDENTITY)
        parts.append(
            f'<path class="shortcut {run.shortcut}" data-blocks="{run.repeat}" '
            f'd="M{CX} {tap} H{ARC_X - r} Q{ARC_X} {tap} {ARC_X} {tap + r} V{plus - r} '
            f'Q{ARC_X} {plus} {ARC_X - r} {plus} H{CX + 7}" fill="none" stroke="{colour}" '
            f'stroke-width="1.75"{dash}><title>{escape(run.shortcut_label)}</title></path>'
        )
        parts.append(
            f'<circle class="add" cx="{CX}" cy="{plus}" r="{r}" fill="#fff" stroke="{IDENTITY}"/>'
            f'<path d="M{CX - 4} {plus} H{CX + 4} M{CX} {plus - 4} V{plus + 4}" stroke="{IDENTITY}"/>'
        )
    parts.append("</g>")
    return "".join(parts), end


def _column(net: Network) -> tuple[str, float]:
    """The inside of one network's column and its height."""
    parts = [
        _text(4, 18, net.title, size=15, anchor="start", extra=' font-weight="700" class="title"'),
        *(_text(4, 35 + 15 * i, line, anchor="start", extra=' fill="#475569"') for i, line in enumerate(net.subtitle)),
    ]
    body: list[str] = []
    boxes, y = _layers(TOP, net.stem)
    body += boxes
    for s in net.stages:
        y += 22
        body.append(f'<line x1="4" x2="{COL_W - 4}" y1="{y - 14}" y2="{y - 14}" stroke="#cbd5e1"/>')
        body.append(
            _text(
                4,
                y,
                f"{s.name} · {s.size}x{s.size} px · {s.channels}-d",
                anchor="start",
                extra=f' fill="#334155" class="stage" {HALO}',
            )
        )
        for run in s.runs:
            svg, y = _run(y, run, s.name)
            body.append(svg)
    boxes, y = _layers(y + 12, net.head)
    body += boxes
    spine = f'<line x1="{CX}" x2="{CX}" y1="{TOP}" y2="{y - 10}" stroke="#475569" stroke-width="1.5"/>'
    return "".join([*parts, spine, *body]), y + 8


def _svg(inner: str, width: float, height: float, label: str, style: str, extra: str = "") -> str:
    return (
        f'<svg xmlns="{SVG_NS}" viewBox="0 0 {width:g} {height:g}" role="img" aria-label="{escape(label)}" '
        f'style="{style}"{extra}><title>{escape(label)}</title>{inner}</svg>'
    )


def column_svg(net: Network, scale: float = 1.25) -> str:
    """One network as its own SVG: `scale` px per unit where there is room, never below 11 px text."""
    inner, height = _column(net)
    style = f"{STYLE};width:{COL_W * scale:g}px;max-width:100%;min-width:{COL_W * MIN_SCALE:.0f}px;height:auto"
    return _svg(inner, COL_W, height, net.summary, style, ' class="network"')


def _swatch(kind: str, y: float) -> str:
    if kind in COLOURS or kind == "grouped":
        fill, stroke = COLOURS.get(kind, COLOURS["3x3"])
        h = 10 if kind == "1x1" else 14
        rect = f'<rect x="{{x}}" y="{{y:g}}" width="34" height="{h}" rx="2" fill="{fill}" stroke="{stroke}"/>'
        back = rect.format(x=10, y=y - h / 2 - 4) + rect.format(x=7, y=y - h / 2 - 2) if kind == "grouped" else ""
        return back + rect.format(x=4, y=y - h / 2)
    if kind in ("identity", "projection"):
        dash, colour = (' stroke-dasharray="6 4"', PROJECTION) if kind == "projection" else ("", IDENTITY)
        return f'<path d="M4 {y:g} H38" stroke="{colour}" stroke-width="1.75"{dash}/>'
    if kind == "add":
        return (
            f'<circle cx="21" cy="{y:g}" r="6" fill="#fff" stroke="{IDENTITY}"/>'
            f'<path d="M17 {y:g} H25 M21 {y - 4:g} V{y + 4:g}" stroke="{IDENTITY}"/>'
        )
    return _text(21, y + 5, {"repeat": "×n", "stride": "/2"}[kind], size=14, extra=' font-weight="700"')


def _legend(nets: Sequence[Network]) -> tuple[str, float, str]:
    """The legend's inside, its height and its text alternative."""
    items = legend_items(nets)
    rows = "".join(
        _swatch(kind, 20 + 24 * i) + _text(48, 24 + 24 * i, text, anchor="start")
        for i, (kind, text) in enumerate(items)
    )
    return rows, 24 * len(items) + 10, "Legend: " + "; ".join(text for _, text in items)


def legend_svg(nets: Sequence[Network]) -> str:
    """What every mark means, in real text (only the marks these networks use)."""
    rows, height, label = _legend(nets)
    style = f"{STYLE};width:{LEGEND_W:g}px;max-width:100%;min-width:{LEGEND_W * MIN_SCALE:.0f}px;height:auto"
    return _svg(rows, LEGEND_W, height, label, style, ' class="legend"')


def figure(archs: Sequence[Architecture], *, plain_twins: bool = False) -> str:
    """HTML for the app: the legend, then one SVG per network side by side in the order given, wrapping on a
    narrow screen (the legend sits left of the networks on a laptop and above them on a phone)."""
    nets = networks(archs, plain_twins=plain_twins)
    cols = "".join(column_svg(n) for n in nets)
    return (
        f'<div class="zoo-blockdiagram" style="display:flex;flex-wrap:wrap;gap:12px 20px;align-items:flex-start">'
        f"{legend_svg(nets)}{cols}</div>"
    )


def diagram(archs: Sequence[Architecture], *, plain_twins: bool = False) -> str:
    """One standalone SVG (for a file): the columns side by side in the order given, the legend below."""
    nets = networks(archs, plain_twins=plain_twins)
    inner, heights = [], []
    for i, n in enumerate(nets):
        body, h = _column(n)
        heights.append(h)
        inner.append(
            f'<svg x="{i * (COL_W + 16)}" y="0" width="{COL_W}" height="{h:g}" role="img" '
            f'aria-label="{escape(n.summary)}"><title>{escape(n.summary)}</title>{body}</svg>'
        )
    rows, legend_h, legend_label = _legend(nets)
    top = max(heights) + 8
    legend = (
        f'<svg x="0" y="{top:g}" width="{LEGEND_W}" height="{legend_h}" role="img" '
        f'aria-label="{escape(legend_label)}" class="legend"><title>{escape(legend_label)}</title>{rows}</svg>'
    )
    width, height = max(len(nets) * (COL_W + 16) - 16, LEGEND_W), top + legend_h
    label = "; ".join(n.title for n in nets) + ": block diagrams"
    return _svg("".join(inner) + legend, width, height, label, f"{STYLE};width:100%;max-width:{width * 1.25:g}px")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m zoo.blockdiagram resnet34,resnet50 [--plain] > out.svg`."""
    from zoo.architecture import describe
    from zoo.errors import ZooError

    args = list(sys.argv[1:] if argv is None else argv)
    plain = "--plain" in args
    names = [n for a in args if a != "--plain" for n in a.split(",") if n]
    if not names:
        print("Name one or more networks, e.g. python -m zoo.blockdiagram resnet34,resnet50 --plain", file=sys.stderr)
        return 2
    try:
        print(diagram([describe(n) for n in names], plain_twins=plain))
    except ZooError as e:
        print(e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
