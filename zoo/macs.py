"""What a model costs, counted on the meta device: multiply-accumulates per module from one forward pass with
hooks (no real tensors), and per-path totals of any per-module figure."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import torch
from torch import nn


def count_macs(model: nn.Module, resolution: int) -> tuple[dict[str, int], dict[str, int]]:
    """Run a meta forward at `resolution`; return MACs and output spatial size per module name."""
    macs: dict[str, int] = {}
    sizes: dict[str, int] = {}

    def hook(name: str):
        def fn(mod: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            if isinstance(out, torch.Tensor) and out.dim() == 4:
                sizes[name] = out.shape[-1]
            macs[name] = _macs(mod, inputs[0], out)

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    # BatchNorm keeps its input's shape, and PyTorch's meta kernel for it costs about 1 ms a call (most of a
    # deep net's meta forward): an identity stands in for it here, its hook still counts it
    norms = [m for m in model.modules() if type(m).forward is nn.BatchNorm2d.forward]
    for m in norms:
        m.forward = _same
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, resolution, resolution, device="meta"))
    finally:
        for h in handles:
            h.remove()
        for m in norms:
            del m.forward
    return macs, sizes


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def _macs(mod: nn.Module, x: torch.Tensor, out: torch.Tensor) -> int:
    if isinstance(mod, nn.Conv2d):
        kh, kw = mod.kernel_size
        return out.numel() * (mod.in_channels // mod.groups) * kh * kw
    if isinstance(mod, nn.Linear):
        return out.numel() * mod.in_features
    if isinstance(mod, nn.BatchNorm2d):
        return x.numel() * (2 if mod.affine else 1)
    if isinstance(mod, nn.AdaptiveAvgPool2d):
        return x.numel()
    return 0


def by_prefix(values: Iterable[tuple[str, int]]) -> defaultdict[str, int]:
    """Totals for every module path: `layer1.0.conv1.weight` counts toward layer1.0.conv1, layer1.0, layer1."""
    totals: defaultdict[str, int] = defaultdict(int)
    for name, value in values:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            totals[".".join(parts[:i])] += value
    return totals
