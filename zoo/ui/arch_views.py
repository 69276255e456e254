"""The Architecture tab's content, computed from the real timm models: stage tables, block and
shortcut facts, ResNeXt groups (no Gradio here; the block diagram is `zoo.blockdiagram`)."""

from __future__ import annotations

import pandas as pd

from zoo import architecture
from zoo.architecture import Architecture, Block
from zoo.ui.views import arch_title

STAGE_COLUMNS = ["network", "stage", "blocks", "block", "channels", "out px", "first block", "params (M)",
                 "GMACs"]
# px: no header wraps mid-word at 1440 px; a phone scrolls sideways
STAGE_WIDTHS = ["130px", "84px", "76px", "220px", "124px", "70px", "340px", "90px", "76px"]


def _first(block: Block) -> str:
    sc = block.shortcut
    if sc.kind == "identity":
        return "identity shortcut"
    what = f"projection {sc.in_channels}→{sc.out_channels}"
    if sc.stride > 1:
        return f"stride {sc.stride} on {block.stride_conv}, {what} (1x1 stride {sc.stride})"
    return f"{what} (1x1, same size)"


def stage_table(archs: list[Architecture]) -> pd.DataFrame:
    """One row per stem, stage and head of each network: the paper's Table 1, from the real models."""
    rows = []
    for a in archs:
        name = arch_title(a.arch)
        stem = a.stem
        conv = stem.convs[0]
        rows.append([name, "stem", "–", f"{conv.kernel}x{conv.kernel} conv /{conv.stride}, "
                     f"{stem.pool_kernel}x{stem.pool_kernel} max-pool /{stem.pool_stride}",
                     f"3 → {stem.out_channels}", stem.out_size, "–", round(stem.params / 1e6, 3),
                     round(stem.macs / 1e9, 3)])
        for s in a.stages:
            b = s.blocks[0]
            kind = b.kind + (f", {b.groups} groups × {b.group_width} ch" if b.groups > 1 else "")
            rows.append([name, s.name, s.depth, kind, f"{s.in_channels} → {s.out_channels}", s.out_size,
                         _first(b), round(s.params / 1e6, 3), round(s.macs / 1e9, 3)])
        rows.append([name, "head", "–", f"global avg pool + fc {a.head.in_features} → {a.head.num_classes}",
                     f"{a.head.in_features} → {a.head.num_classes}", 1, "–", round(a.head.params / 1e6, 3),
                     round(a.head.macs / 1e9, 4)])
        rows.append([name, "total", sum(a.layers), f"{a.depth} weighted layers", "", "", "",
                     round(a.params / 1e6, 2), round(a.gmacs, 2)])
    return pd.DataFrame(rows, columns=STAGE_COLUMNS)


def block_facts(channels: int = 256) -> str:
    """Basic block vs bottleneck at `channels` in and out, counted on real timm blocks."""
    basic = architecture.block_conv_weights("basic", channels)
    neck = architecture.block_conv_weights("bottleneck", channels)
    mid = channels // 4
    return (
        f"**Two block types at {channels} channels in and out** (counted on timm's own blocks):\n\n"
        f"- *Basic* (ResNet-18/34): 3x3 → 3x3 = 3·3·{channels}·{channels}·2 = **{basic:,}** conv weights.\n"
        f"- *Bottleneck* (ResNet-50/101/152): 1x1 {channels}→{mid}, 3x3 {mid}→{mid}, 1x1 {mid}→{channels} = "
        f"**{neck:,}** conv weights, {1 - neck / basic:.0%} fewer — what makes 50+ layers affordable.\n\n"
        "Either way the block outputs ReLU(F(x) + x): it learns only the residual F(x) = H(x) − x, "
        "and the shortcut adds no parameters when shapes match."
    )


def shortcut_facts(a: Architecture) -> str:
    """Where the chosen network uses identity and projection shortcuts, and where it downsamples."""
    ident = sum(b.shortcut.kind == "identity" for b in a.blocks)
    proj = [b for b in a.blocks if b.shortcut.kind == "projection"]
    lines = [f"**Shortcuts in {arch_title(a.arch)}**: {ident} identity (no parameters), "
             f"{len(proj)} projection (a 1x1 conv + BatchNorm where the shape changes):", ""]
    for b in proj:
        sc = b.shortcut
        params = sum(c.in_channels // c.groups * c.out_channels * c.kernel**2 for c in (sc.conv,) if c)
        where = (f"halves the size {b.in_size}→{b.out_size} px with stride {b.stride} on {b.stride_conv}"
                 if b.stride > 1 else f"keeps {b.out_size} px, only widens the channels")
        lines.append(f"- `{b.name}`: {sc.in_channels}→{sc.out_channels} channels, {where}; "
                     f"the projection has {params:,} weights.")
    if any(b.kind == "bottleneck" and b.stride > 1 and b.stride_conv and "3x3" in b.stride_conv for b in proj):
        lines += ["", "The stride sits on the 3x3 conv (\"ResNet v1.5\", as torchvision and timm build it); "
                  "the paper put it on the first 1x1 conv."]
    return "\n".join(lines)


def resnext_facts(archs: list[Architecture]) -> str:
    """Cardinality and group widths per stage of each ResNeXt in `archs` (a pointer if there is none)."""
    facts = [_groups(a) for a in archs if a.stages[0].blocks[0].groups > 1]
    return "\n\n".join(facts) or ("Plain ResNets have one group per 3x3 conv. Pick a ResNeXt to see cardinality: "
                                  "the same bottleneck with its 3x3 conv split into groups.")


def _groups(a: Architecture) -> str:
    first = a.stages[0].blocks[0]
    per_stage = ", ".join(f"{s.name}: {s.blocks[0].groups} × {s.blocks[0].group_width} = {s.blocks[0].width}"
                          for s in a.stages)
    return (f"**ResNeXt cardinality in {arch_title(a.arch)}**: the 3x3 conv of every bottleneck is split into "
            f"{first.groups} groups. Groups × channels per group = width, per stage: {per_stage}. "
            "At equal cost, more groups beat more depth or width.")
