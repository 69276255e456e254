"""Batch norms folded into the convolutions before them, in place, for a model that only infers.

In eval mode a BatchNorm is a fixed per-channel affine map, y = (x - mean) / sqrt(var + eps) * gamma + beta, so
a convolution followed by one equals a single convolution with scaled weights and a bias. Folding removes one
pass over every activation map: resnet18 at batch 8 runs about 10% faster on our CPUs (bench/bench_inference.py).
The model keeps its module tree, names and Python forward, so hooks on its blocks (Grad-CAM's on `layer4`) still
fire; each folded BatchNorm becomes an `nn.Identity` (a hook on the BatchNorm itself would be lost).

Which convolution feeds which BatchNorm is read from what one forward pass of a small probe actually computes,
not guessed from module names: every torch function it calls is recorded by a function mode, which PyTorch keeps
per thread. (torch.fx's tracer patches `nn.Module.__call__` for the whole process while it traces, which breaks
forward passes running in other threads of a server.) A pair is folded only where the conv's output goes to that
BatchNorm and nowhere else, each is called once, and none of their tensors is used by any other call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

PROBE_SIZE = 32  # a small probe (a ResNet takes 32 px down to 1x1): its pass costs little time and memory
TOLERANCE = 1e-4  # largest |difference| allowed, relative to the largest |logit| (fp32 rounding: ~1e-6 measured)
_CONVS = (F.conv2d, torch.conv2d)
# calls that read a tensor's metadata, not its values (BatchNorm2d checks `input.dim()` before normalising)
_METADATA = {"dim", "ndimension", "size", "numel", "nelement", "stride", "is_contiguous", "__len__", "__get__"}


class FoldMismatchError(RuntimeError):
    """The model was changed by folding and then failed its check: do not use it (rebuild it)."""


class _Record(TorchFunctionMode):
    """Every torch function called in this thread while active: (function, ids of the tensors it got, ids of the
    tensors it returned, its arguments). Every tensor seen is kept alive, so no id is reused during the pass."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[object, list[int], list[int], tuple]] = []
        self._keep: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        given = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        made = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if not made and getattr(func, "__name__", None) in _METADATA:  # .shape, .dtype, .dim(): values unread
            return out
        self._keep += given + made
        self.calls.append((func, [id(t) for t in given], [id(t) for t in made], args))
        return out


def recorded_pass(model: nn.Module, probe: torch.Tensor) -> tuple[torch.Tensor, list[tuple[str, str]]]:
    """`model(probe)`, and the (conv, batch norm) module names that pass shows can be folded."""
    with _Record() as record:
        out = model(probe)
    return out, _pairs(model, record.calls, {id(t) for t in tree_leaves(out) if isinstance(t, torch.Tensor)})


def _pairs(model: nn.Module, calls: list, returned: set[int]) -> list[tuple[str, str]]:
    modules = dict(model.named_modules())
    convs = {id(m.weight): name for name, m in modules.items() if type(m) is nn.Conv2d}  # exactly: not timm's
    bns = {id(m.running_mean): name for name, m in modules.items()  # StdConv2d nor its BatchNormAct2d, which
           if type(m) is nn.BatchNorm2d and m.running_mean is not None and not m.training}  # applies an activation
    uses: dict[int, int] = {}  # tensor id -> how many calls took it (a parameter's too)
    for _, given, _, _ in calls:
        for t in set(given):
            uses[t] = uses.get(t, 0) + 1
    made_by: dict[int, str] = {}  # conv output id -> conv module name
    pairs = []
    for func, _, made, args in calls:
        if func in _CONVS and len(args) > 1 and id(args[1]) in convs and len(made) == 1:
            made_by[made[0]] = convs[id(args[1])]
        elif func is F.batch_norm and len(args) > 1 and id(args[1]) in bns and isinstance(args[0], torch.Tensor):
            conv = made_by.get(id(args[0]))
            if conv is not None and uses.get(id(args[0])) == 1 and id(args[0]) not in returned:
                pairs.append((conv, bns[id(args[1])]))
    if not pairs:
        return []
    # each module called once, and its tensors taken by its own call only (no weight shared with another use)
    tensors = {}
    for conv, bn in pairs:
        c, b = modules[conv], modules[bn]
        tensors[conv] = [c.weight] + ([c.bias] if c.bias is not None else [])
        tensors[bn] = [b.running_mean, b.running_var] + ([b.weight, b.bias] if b.affine else [])
    return [(c, b) for c, b in pairs if all(uses.get(id(t)) == 1 for t in tensors[c] + tensors[b])]


@torch.no_grad()
def fold_batch_norms(model: nn.Module, pairs: list[tuple[str, str]]) -> int:
    """Fold each (conv, batch norm) pair of `recorded_pass` into its conv, in place; the number folded.

    `model` must be in eval mode and only infer from now on: its BatchNorms stop existing, and training it
    afterwards would train different parameters.

    Raises:
        ValueError: the model is in training mode.
    """
    if model.training:
        raise ValueError("batch norms are folded only into a model in eval mode")
    storages: dict[int, int] = {}  # storage address -> how many of the model's tensors live in it
    for t in (*model.parameters(), *model.buffers()):
        storages[t.untyped_storage().data_ptr()] = storages.get(t.untyped_storage().data_ptr(), 0) + 1
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        scale = torch.rsqrt(bn.running_var + bn.eps)
        shift = -bn.running_mean * scale
        if bn.affine:
            scale, shift = scale * bn.weight, shift * bn.weight + bn.bias
        factor = scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
        bias = shift if conv.bias is None else conv.bias * scale + shift
        grad = conv.weight.requires_grad
        if storages[conv.weight.untyped_storage().data_ptr()] == 1:
            conv.weight.mul_(factor)  # in place: a big model never holds two copies of its weights, even briefly
        else:  # its storage holds other tensors too: they must not change
            weight = (conv.weight * factor).contiguous(memory_format=_format(conv.weight))
            conv.weight = nn.Parameter(weight, requires_grad=grad)
        conv.bias = nn.Parameter(bias, requires_grad=grad)
        parent, _, child = bn_name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
    return len(pairs)


@torch.no_grad()
def fold_checked(model: nn.Module) -> int:
    """Record a probe's pass, fold what it shows can be folded, and check the probe's outputs did not move.

    Raises:
        ValueError: the model is in training mode (nothing was changed).
        FoldMismatchError: the model was changed and its outputs moved by more than TOLERANCE, or its
            forward pass failed after folding: do not use it.
        Exception: the recorded pass failed (nothing was changed).
    """
    if model.training:
        raise ValueError("batch norms are folded only into a model in eval mode")
    param = next(model.parameters())
    probe = torch.randn(1, 3, PROBE_SIZE, PROBE_SIZE, generator=torch.Generator().manual_seed(0))
    before, pairs = recorded_pass(model, probe.to(param.device, param.dtype))
    folded = fold_batch_norms(model, pairs)
    if not folded:
        return 0
    try:
        after = model(probe.to(param.device, param.dtype))
        worst = float((after.float() - before.float()).abs().max())
    except Exception as exc:
        raise FoldMismatchError(f"after folding {folded} batch norms the forward pass failed "
                                f"({type(exc).__name__}: {str(exc)[:200]})") from exc
    scale = max(1.0, float(before.float().abs().max()))
    if not worst <= TOLERANCE * scale:
        raise FoldMismatchError(f"folding {folded} batch norms moved the outputs by {worst:.2e} "
                                f"(> {TOLERANCE:g} x {scale:.3g})")
    return folded


def _format(t: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) \
        and not t.is_contiguous() else torch.contiguous_format
