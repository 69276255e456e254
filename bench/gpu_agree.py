"""What "the same answer" means for the GPU check: weights that exercise every layer, and a top-5 criterion.

Weights: timm's random init zeroes the last BatchNorm of every residual block, so the residual branches
(the grouped 3x3 convs of ResNeXt included) would not reach the logits at all and a wrong kernel there
could not change an answer. `random_weights` sets those scales to 0.1 instead and calibrates the
BatchNorm statistics on one batch of noise, so activations stay normalised as in a trained net.

Criterion: per image, logit errors are measured in units of sigma, the standard deviation of that
image's 1000 reference logits (fp32, CPU). On these weights CPU bf16 autocast (the rounding CUDA
autocast does: bf16 operands, fp32 accumulation) gave largest errors of 0.015-0.021 sigma over 16
image x net pairs (resnet50 and resnext50_32x4d, the four example photos, two seeds); fp32 paths stay
below 1e-4 sigma. TOL = 0.06 sigma is about 3x the worst bf16 error seen, and zeroing just one of the
32 groups of one grouped conv (layer3.2 of resnext50_32x4d) already moves the logits by 0.08-0.09
sigma. A device agrees with the reference when
- every logit is within TOL of the reference (when its logits are at hand), and
- its k-th pick scores, in the reference, within 2 * TOL of the reference's k-th best logit: if every
  logit moves by at most TOL, only classes closer than 2 * TOL can swap places.
So top-5 lists must be equal except among near-ties, and a wrong kernel, layout or weight (errors of
order sigma) fails both parts. Random nets pack their top logits densely (adjacent top-6 gaps of
0.0015-0.033 sigma on these weights), which is why near-ties are allowed at all; the margins are printed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

TOL = 0.06  # largest logit error a device may have against fp32 CPU, in sigmas of the reference logits
BRANCH_SCALE = 0.1  # the last BatchNorm's weight in each residual block (timm: 0)


@dataclass(frozen=True)
class Agreement:
    """How one device's top-5 for one image compares with the fp32 reference."""

    exact: bool  # the same five classes in the same order
    ok: bool  # exact, or different only among near-ties, with every logit within TOL
    slot_err: float  # largest |ref[pick k] - ref's k-th best| over k, in sigmas (0 when exact)
    max_err: float | None  # largest |device logit - reference logit| in sigmas; None when only picks were given
    min_gap: float  # smallest gap between adjacent reference top-6 logits, in sigmas

    def line(self) -> str:
        verdict = "exact" if self.exact else "near-ties only" if self.ok else "DIFFERENT"
        err = "" if self.max_err is None else f", max logit error {self.max_err:.4f} sigma (<= {TOL})"
        return (f"top-5 {verdict} (worst pick {self.slot_err:.4f} sigma off, <= {2 * TOL:.2f}){err}; "
                f"smallest reference top-6 gap {self.min_gap:.4f} sigma")


def agree(reference: torch.Tensor, picks: Sequence[int], logits: torch.Tensor | None = None,
          tol: float = TOL) -> Agreement:
    """Compare a device's top-5 `picks` (best first; and its `logits`, if known) with fp32 `reference` logits."""
    ref = reference.double().flatten()
    sigma = float(ref.std())
    values, order = ref.sort(descending=True)
    picks = [int(c) for c in picks[:5]]
    slot = max(abs(float(ref[c] - values[k])) for k, c in enumerate(picks)) / sigma
    max_err = None if logits is None else float((logits.double().flatten() - ref).abs().max()) / sigma
    ok = len(picks) == 5 and slot <= 2 * tol and (max_err is None or max_err <= tol)
    gaps = (values[:5] - values[1:6]) / sigma
    return Agreement(picks == order[:5].tolist(), ok, slot, max_err, float(gaps.min()))


def random_weights(arch: str, path: Path, seed: int = 0) -> Path:
    """Save a random-init timm `arch` whose every layer reaches the logits (see the module docstring)."""
    import timm
    from safetensors.torch import save_file
    from timm.models.resnet import BasicBlock, Bottleneck
    from torch import nn

    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False)
    for m in model.modules():
        if isinstance(m, Bottleneck | BasicBlock):
            nn.init.constant_((m.bn3 if isinstance(m, Bottleneck) else m.bn2).weight, BRANCH_SCALE)
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # a cumulative average: one batch sets the statistics
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 160, 160, generator=torch.Generator().manual_seed(seed)))
    save_file(model.state_dict(), str(path))
    return path
