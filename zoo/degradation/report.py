"""What the degradation lab shows, drawn from its results with no Gradio: SVG charts in the paper's style
(plain dashed, residual solid, one colour per depth), the results table, and the plain/residual block diagram.
The same SVG serves the browser tab, `python -m zoo degradation --plot`, and the README's picture."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from zoo.degradation import paper
from zoo.degradation.experiment import Network, Result
from zoo.svgchart import Series, chart

COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea"]  # by depth, shallow first


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over `window` steps (per-step batch error is noisy; the paper draws smoothed curves)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out  # step errors are always finite (a diverged net predicts one class: about 90% wrong)


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
