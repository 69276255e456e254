"""What the degradation lab shows, drawn from its results with no Gradio: SVG charts in the paper's style
(plain dashed, residual solid, one colour per depth), the results table, and the plain/residual block diagram.
The same SVG serves the browser tab, `python -m zoo degradation --plot`, and the README's picture."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from zoo.degradation import paper
from zoo.degradation.experiment import Network, Result

COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea"]  # by depth, shallow first
W, H, LEFT, RIGHT, TOP, BOTTOM = 620, 330, 58, 136, 30, 44


@dataclass(frozen=True)
class Series:
    label: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    colour: str
    dashed: bool


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over `window` steps (per-step batch error is noisy; the paper draws smoothed curves)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out  # step errors are always finite (a diverged net predicts one class: about 90% wrong)


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
    """A line chart as standalone SVG (scales with its container; readable on a phone)."""
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
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        f = (math.log10(y) - math.log10(y0)) / (math.log10(y1) - math.log10(y0)) if log_y else (y - y0) / (y1 - y0)
        return TOP + (1 - f) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="100%" role="img" '
           f'style="max-width:{W}px;font-family:system-ui,sans-serif;font-size:13px;background:#fff">',
           f"<title>{html.escape(title)}</title>",
           f'<text x="{LEFT}" y="18" font-size="14" font-weight="600" fill="#111">{html.escape(title)}</text>']
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
               f'<text x="{LEFT + pw / 2}" y="{H - 8}" text-anchor="middle" fill="#111">{html.escape(xlabel)}</text>'
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
        ly = TOP + 10 + 18 * i
        out.append(f'<line x1="{W - RIGHT + 12}" x2="{W - RIGHT + 40}" y1="{ly}" y2="{ly}" stroke="{s.colour}" '
                   f'stroke-width="2"{dash}/><text x="{W - RIGHT + 46}" y="{ly + 4}" fill="#111">'
                   f"{html.escape(s.label)}</text>")
    out.append("</svg>")
    return "".join(out)


def _colour(depth: int, depths: Sequence[int]) -> str:
    return COLOURS[sorted(set(depths)).index(depth) % len(COLOURS)]


def training_curves(names: Sequence[str], kinds: Sequence[str], depths: Sequence[int],
                    step_errors: Sequence[Sequence[float]], steps_per_epoch: int, total_steps: int | None = None,
                    title: str = "Training error") -> str:
    """Training error (%) against epochs, smoothed over one epoch of steps: plain dashed, residual solid."""
    series = []
    for name, kind, depth, errs in zip(names, kinds, depths, step_errors, strict=True):
        ys = [100 * v for v in smooth(list(errs), max(1, steps_per_epoch))]
        series.append(Series(name, [(i + 1) / steps_per_epoch for i in range(len(ys))], ys, _colour(depth, depths),
                             kind == "plain"))
    end = (total_steps or max((len(e) for e in step_errors), default=1)) / steps_per_epoch
    return chart(series, title=title, xlabel="epoch", ylabel="training error (%)", y_range=(0, 100),
                 x_range=(0, max(end, 1 / steps_per_epoch)))  # fixed while live: the curves grow into a still frame


def result_curves(result: Result) -> str:
    n = result.networks
    return training_curves([x.name for x in n], [x.kind for x in n], [x.depth for x in n],
                           [x.step_error for x in n], result.steps_per_epoch,
                           title=f"Training error on {result.dataset['name']} ({_setting(result)})")


def _setting(result: Result) -> str:
    c = result.config
    return f"{c.size} px, option {c.shortcut}, {c.epochs} epoch{'' if c.epochs == 1 else 's'}, {result.device}"


def _per_layer(networks: Sequence[Network], attr: str, title: str, ylabel: str, log_y: bool) -> str:
    depths = [n.depth for n in networks]
    series = [Series(f"{n.name}", list(range(1, len(getattr(n, attr)) + 1)), getattr(n, attr),
                     _colour(n.depth, depths), n.kind == "plain") for n in networks]
    return chart(series, title=title, xlabel="3x3 layer (input to output)", ylabel=ylabel, log_y=log_y,
                 integer_x=True)


def responses(result: Result) -> str:
    """The paper's Figure 7: std of each 3x3 layer's response (after BN, before addition), trained nets."""
    return _per_layer(result.networks, "response_std", "Layer responses after training (std, Figure 7)",
                      "std of response", log_y=False)


def gradients(result: Result, when: str = "init") -> str:
    """Gradient norm reaching each 3x3 layer's weights, at initialisation or after training (log scale)."""
    attr, label = ("grad_norm_init", "at initialisation") if when == "init" else ("grad_norm_trained",
                                                                                  "after training")
    return _per_layer(result.networks, attr, f"Gradient norm per layer, {label}", "‖∂loss/∂W‖ (log)", log_y=True)


TABLE_COLUMNS = ["network", "kind", "layers", "params", "train error %", "val error %", "mean response std",
                 "grad norm, first layer (init → trained)"]


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _pct(v: float | None) -> float | str:
    return round(100 * v, 2) if _finite(v) else "-"


def _num(vs: Sequence[float | None]) -> str:
    return f"{vs[0]:.3g}" if vs and _finite(vs[0]) else "-"


def table(result: Result) -> pd.DataFrame:
    rows = []
    for n in result.networks:  # a diverged network's numbers are NaN (null once stored): shown as "-"
        stds = [v for v in n.response_std if _finite(v)]
        std = round(sum(stds) / len(stds), 3) if stds else "-"
        g0 = f"{_num(n.grad_norm_init[:1])} → {_num(n.grad_norm_trained[:1])}" if n.grad_norm_init else "-"
        rows.append([n.name, n.kind, n.depth, f"{n.params:,}", _pct(n.train_error), _pct(n.val_error), std, g0])
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def paper_table() -> pd.DataFrame:
    return pd.DataFrame(paper.rows())


def summary(result: Result) -> str:
    """Markdown: what was run, what it shows (as measured), and where it came from."""
    cached = " (stored result: same settings and data as before, shown at once)" if result.cached else ""
    where = f"\n\nStored as `{result.key}`." if result.stored and not result.cached else ""
    if result.store_error:
        where = f"\n\n**{result.store_error}**"
    d = result.dataset
    skipped = f" {len(d['skipped'])} unreadable or oversized image(s) skipped." if d.get("skipped") else ""
    batch = min(result.config.batch_size, d["train"])
    steps = f"{result.steps} step{'' if result.steps == 1 else 's'}"
    lines = [f"**{d['name']}**: {d['train']} training and {d['val']} validation images at {d['size']} px;{skipped} "
             f"{steps} of {batch} in {result.seconds:.0f} s on {result.device} "
             f"({result.precision}), {result.images_per_s:,.0f} images/s per network{cached}.", ""]
    lines += [f"- {f}" for f in result.to_dict()["findings"]]
    return "\n".join(lines) + where


def block_diagram() -> str:
    """A plain block beside a residual block (the paper's Figure 2), as SVG."""

    def box(x: float, y: float, text: str, fill: str) -> str:
        return (f'<rect x="{x}" y="{y}" width="120" height="26" rx="5" fill="{fill}" stroke="#6b7280"/>'
                f'<text x="{x + 60}" y="{y + 17}" text-anchor="middle">{text}</text>')

    def arrow(x: float, y1: float, y2: float) -> str:
        return f'<line x1="{x}" x2="{x}" y1="{y1}" y2="{y2}" stroke="#374151" marker-end="url(#a)"/>'

    parts = ['<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 500 250" width="100%" role="img" '
             'style="max-width:500px;font-family:system-ui,sans-serif;font-size:13px;background:#fff">'
             '<title>A plain block and a residual block</title><defs><marker id="a" viewBox="0 0 10 10" refX="9" '
             'refY="5" markerWidth="6" markerHeight="6" orient="auto"><path d="M0,0L10,5L0,10z" fill="#374151"/>'
             "</marker></defs>"]
    for x, title, residual in ((40, "plain block: learns H(x)", False), (250, "residual block: learns F(x)", True)):
        parts.append(f'<text x="{x + 60}" y="16" text-anchor="middle" font-weight="600">{title}</text>'
                     f'<text x="{x + 60}" y="38" text-anchor="middle">x</text>')
        parts += [arrow(x + 60, 42, 56), box(x, 58, "3x3 conv, BN", "#eef2ff"), arrow(x + 60, 84, 98),
                  box(x, 100, "ReLU", "#f9fafb"), arrow(x + 60, 126, 140), box(x, 142, "3x3 conv, BN", "#eef2ff")]
        if residual:
            parts.append(f'<path d="M{x + 60},46 H{x + 150} V192 H{x + 72}" fill="none" stroke="#16a34a" '
                         f'stroke-width="2" marker-end="url(#a)"/><text x="{x + 154}" y="120" fill="#16a34a">'
                         f"identity x</text>"
                         f'<circle cx="{x + 60}" cy="192" r="11" fill="#fff" stroke="#16a34a"/>'
                         f'<text x="{x + 60}" y="197" text-anchor="middle" font-size="15">+</text>'
                         + arrow(x + 60, 168, 180) + arrow(x + 60, 203, 214)
                         + f'<text x="{x + 60}" y="230" text-anchor="middle">ReLU(F(x) + x)</text>')
        else:
            parts.append(arrow(x + 60, 168, 214) + f'<text x="{x + 60}" y="230" text-anchor="middle">ReLU(H(x))'
                         "</text>")
    parts.append("</svg>")
    return "".join(parts)
