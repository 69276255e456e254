"""What the block diagram shows, derived from a real model's Architecture: layers, runs of alike blocks, shortcuts.

A typed description, no drawing: each network as its stem, stages of runs (consecutive blocks with the
same layers and shortcut, drawn once with "×n") and head; `zoo.blockdiagram` turns it into SVG.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from zoo.architecture import Architecture, Block, Conv


@dataclass(frozen=True)
class Layer:
    """One box: a conv, pooling or fully connected layer, labelled as the paper does ("3x3, 128, /2")."""

    label: str
    look: Literal["3x3", "1x1", "other"]
    groups: int = 1  # > 1 draws the box stacked: a grouped conv (ResNeXt)
    narrow: bool = False  # fewer channels than the block's output: a bottleneck's reduced layers


@dataclass(frozen=True)
class Run:
    """Consecutive blocks with the same layers and shortcut, drawn once with "×repeat"."""

    layers: tuple[Layer, ...]
    repeat: int
    shortcut: Literal["identity", "projection", "none"]  # none: the plain twin
    shortcut_label: str  # what the residual net's shortcut computes, e.g. "projection: 1x1, 512, /2"
    first: str  # module path of the first block, e.g. layer2.0


@dataclass(frozen=True)
class StageView:
    name: str  # conv2_x .. conv5_x
    size: int  # output px
    channels: int
    runs: tuple[Run, ...]


@dataclass(frozen=True)
class Network:
    """What one column shows; `network()` derives it from a real model's Architecture."""

    title: str
    subtitle: tuple[str, str]  # two short lines under the title
    stem: tuple[Layer, ...]
    stages: tuple[StageView, ...]
    head: tuple[Layer, ...]
    summary: str  # the column's text alternative


def title(a: Architecture, *, plain: bool = False) -> str:
    """ResNet-50, ResNeXt-101 32x8d, plain-34, plain-50 32x4d: from the model's own depth, groups and group width."""
    first = a.stages[0].blocks[0]
    if first.groups > 1:
        return f"{'plain' if plain else 'ResNeXt'}-{a.depth} {first.groups}x{first.group_width}d"
    return f"plain-{a.depth}" if plain else f"ResNet-{a.depth}"


def _conv_layer(c: Conv, block_out: int) -> Layer:
    label = f"{c.kernel}x{c.kernel}, {c.out_channels}"
    label += f", g={c.groups}" if c.groups > 1 else ""
    label += f", /{c.stride}" if c.stride > 1 else ""
    look = "1x1" if c.kernel == 1 else "3x3" if c.kernel == 3 else "other"
    return Layer(label, look, c.groups, c.out_channels < block_out)


def _shortcut_label(b: Block) -> str:
    sc = b.shortcut
    if sc.conv is None:
        return "identity: adds x unchanged"
    pool = f"{sc.stride}x{sc.stride} avg pool, " if sc.pooled else ""
    stride = f", /{sc.conv.stride}" if sc.conv.stride > 1 else ""
    return f"projection: {pool}1x1, {sc.out_channels}{stride}"


def _runs(blocks: Sequence[Block], plain: bool) -> tuple[Run, ...]:
    """Consecutive alike blocks merged; a plain twin is split where its residual net is, so the two line up."""
    runs: list[Run] = []
    for b in blocks:
        layers = tuple(_conv_layer(c, b.out_channels) for c in b.convs)
        label = _shortcut_label(b)
        last = runs[-1] if runs else None
        if last and (last.layers, last.shortcut_label) == (layers, label):
            runs[-1] = Run(layers, last.repeat + 1, last.shortcut, label, last.first)
        else:
            runs.append(Run(layers, 1, "none" if plain else b.shortcut.kind, label, b.name))
    return tuple(runs)


def network(a: Architecture, *, plain: bool = False) -> Network:
    """The column for `a`; `plain=True` draws its plain twin: the same layers with no shortcuts."""
    stem = tuple(_conv_layer(c, c.out_channels) for c in a.stem.convs)
    stem += (Layer(f"{a.stem.pool_kernel}x{a.stem.pool_kernel} max pool, /{a.stem.pool_stride}", "other"),)
    stages = tuple(StageView(s.name, s.out_size, s.out_channels, _runs(s.blocks, plain)) for s in a.stages)
    fc = f"fc, {a.head.num_classes}" if a.head.num_classes else "no fc: features"
    head = (Layer("global avg pool", "other"), Layer(fc, "other"))
    kinds = {b.kind for b in a.blocks}
    n_id = sum(b.shortcut.kind == "identity" for b in a.blocks)
    shortcuts = "no shortcuts" if plain else f"{n_id} identity and {len(a.blocks) - n_id} projection shortcuts"
    summary = (
        f"{title(a, plain=plain)}: stem, {len(a.blocks)} {' and '.join(sorted(kinds))} blocks in stages of "
        f"{', '.join(str(d) for d in a.layers)}, {shortcuts}, {fc}."
    )
    subtitle = (
        "same layers, no shortcuts" if plain else f"{a.depth} weighted layers",
        f"{a.params / 1e6:.1f} M params · {a.gmacs:.1f} GMACs",
    )
    return Network(title(a, plain=plain), subtitle, stem, stages, head, summary)


def networks(archs: Sequence[Architecture], *, plain_twins: bool = False) -> list[Network]:
    """The columns in the order given; with `plain_twins`, each residual network followed by its plain twin."""
    return [n for a in archs for n in ([network(a), network(a, plain=True)] if plain_twins else [network(a)])]


def legend_items(nets: Sequence[Network]) -> list[tuple[str, str]]:
    """The marks these networks use, each with what it means."""
    runs = [r for n in nets for s in n.stages for r in s.runs]
    layers = [layer for r in runs for layer in r.layers]
    used = {layer.look for layer in layers} | {r.shortcut for r in runs} | {"other", "stride"}
    used |= {"grouped"} if any(layer.groups > 1 for layer in layers) else set()
    used |= {"repeat"} if any(r.repeat > 1 for r in runs) else set()
    used |= {"add"} if used & {"identity", "projection"} else set()
    meaning = [
        ("3x3", "3x3 conv, output channels"),
        ("1x1", "1x1 conv: a bottleneck's reduce or expand"),
        ("grouped", "3x3 conv in g groups (ResNeXt)"),
        ("other", "stem, pooling, fully connected"),
        ("identity", "identity shortcut: adds x, no weights"),
        ("projection", "projection shortcut: 1x1 conv, shape changes"),
        ("add", "F(x) + x, then ReLU"),
        ("repeat", "block repeated n times"),
        ("stride", "stride 2: halves the feature map"),
    ]
    return [(kind, text) for kind, text in meaning if kind in used]
