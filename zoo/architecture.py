"""Introspection of a real timm ResNet/ResNeXt built on the meta device: stages, blocks, shortcuts, cost.

Nothing here loads or downloads weights: the model is built on PyTorch's meta device, where
tensors have shapes but no storage, so even ResNeXt-101 32x32d (468 M parameters) is described in
a fraction of a second. MACs follow fvcore's convention, the one behind timm's published GMACs:
multiply-accumulates of convolutions and linear layers, plus two per element for an eval-mode
BatchNorm and one per input element for global average pooling.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import timm
import torch
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from zoo import registry
from zoo.errors import InvalidArgumentError, UnknownModelError
from zoo.macs import by_prefix as _by_prefix
from zoo.macs import count_macs as count_macs

MIN_RESOLUTION, MAX_RESOLUTION = 32, 1024
STAGE_NAMES = ("conv2_x", "conv3_x", "conv4_x", "conv5_x")  # the paper's names for layer1..layer4


@dataclass(frozen=True)
class Conv:
    """One convolution: what the paper's tables list."""

    name: str  # module path inside the model
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    groups: int
    out_size: int  # spatial size of its output at the described resolution


@dataclass(frozen=True)
class Shortcut:
    """The path that carries x around a block: identity, or a projection when shapes change."""

    kind: Literal["identity", "projection"]
    stride: int  # how much it downsamples (1: keeps the size)
    in_channels: int
    out_channels: int
    conv: Conv | None  # the 1x1 projection conv, None for identity
    pooled: bool  # True when an average pool does the downsampling before a stride-1 conv


@dataclass(frozen=True)
class Block:
    """One residual block."""

    name: str  # module path, e.g. layer2.0
    kind: Literal["basic", "bottleneck"]
    convs: tuple[Conv, ...]  # the residual branch F(x), in order
    shortcut: Shortcut
    stride: int
    stride_conv: str | None  # which conv of the branch downsamples, e.g. "conv2 (3x3)"
    width: int  # channels of the 3x3 conv
    groups: int  # cardinality of the 3x3 conv (ResNeXt); 1 for plain ResNets
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    params: int
    conv_weights: int  # weights of the branch's convs alone
    macs: int

    @property
    def group_width(self) -> int:
        """Channels per group of the 3x3 conv (ResNeXt's `d` times the stage's scale)."""
        return self.width // self.groups


@dataclass(frozen=True)
class Stage:
    """A stage of blocks at one resolution: conv2_x .. conv5_x."""

    name: str  # the paper's name, e.g. conv3_x
    module: str  # timm's name, e.g. layer2
    blocks: tuple[Block, ...]
    params: int
    macs: int

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def in_channels(self) -> int:
        return self.blocks[0].in_channels

    @property
    def out_channels(self) -> int:
        return self.blocks[-1].out_channels

    @property
    def in_size(self) -> int:
        return self.blocks[0].in_size

    @property
    def out_size(self) -> int:
        return self.blocks[-1].out_size


@dataclass(frozen=True)
class Stem:
    convs: tuple[Conv, ...]  # one 7x7 conv for these ResNets; three 3x3 in "deep stem" variants
    pool_kernel: int
    pool_stride: int
    out_channels: int
    out_size: int  # after the max-pool
    params: int
    macs: int


@dataclass(frozen=True)
class Head:
    in_features: int
    num_classes: int  # 0: no classifier (a feature extractor)
    params: int
    macs: int


@dataclass(frozen=True)
class Architecture:
    """The whole network at one input resolution."""

    arch: str
    resolution: int
    stem: Stem
    stages: tuple[Stage, ...]
    head: Head
    params: int
    macs: int

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(s.depth for s in self.stages)

    @property
    def depth(self) -> int:
        """Weighted layers on the main path: the number in the name (stem conv + branch convs + fc)."""
        return len(self.stem.convs) + sum(len(b.convs) for s in self.stages for b in s.blocks) + 1

    @property
    def blocks(self) -> tuple[Block, ...]:
        return tuple(b for s in self.stages for b in s.blocks)


def build_meta(arch: str, *, num_classes: int | None = None) -> ResNet:
    """Build the real timm model with no storage and no download (meta device), in eval mode."""
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False, **kwargs)
    if not isinstance(model, ResNet):
        raise InvalidArgumentError(f"{arch!r} is not a timm ResNet/ResNeXt architecture.")
    return model.eval()


def _conv(name: str, conv: nn.Conv2d, sizes: dict[str, int]) -> Conv:
    return Conv(
        name=name,
        in_channels=conv.in_channels,
        out_channels=conv.out_channels,
        kernel=conv.kernel_size[0],
        stride=conv.stride[0],
        groups=conv.groups,
        out_size=sizes[name],
    )


def _block(name: str, block: nn.Module, in_size: int, params: dict, macs: dict, sizes: dict) -> Block:
    kind = "bottleneck" if isinstance(block, Bottleneck) else "basic"
    names = ("conv1", "conv2", "conv3") if kind == "bottleneck" else ("conv1", "conv2")
    convs = tuple(_conv(f"{name}.{n}", getattr(block, n), sizes) for n in names)
    spatial = [c for c in convs if c.kernel > 1]
    strided = [c for c in convs if c.stride > 1]
    stride = strided[0].stride if strided else 1
    if block.downsample is None:
        shortcut = Shortcut("identity", 1, convs[0].in_channels, convs[-1].out_channels, None, False)
    else:
        idx, proj = next((i, m) for i, m in enumerate(block.downsample) if isinstance(m, nn.Conv2d))
        conv = _conv(f"{name}.downsample.{idx}", proj, sizes)
        pooled = any(isinstance(m, nn.AvgPool2d) for m in block.downsample)
        shortcut = Shortcut("projection", stride, conv.in_channels, conv.out_channels, conv, pooled)
    leaf = strided[0].name.rsplit(".", 1)[-1] if strided else None
    return Block(
        name=name,
        kind=kind,
        convs=convs,
        shortcut=shortcut,
        stride=stride,
        stride_conv=f"{leaf} ({strided[0].kernel}x{strided[0].kernel})" if strided else None,
        width=spatial[0].out_channels,
        groups=spatial[0].groups,
        in_channels=convs[0].in_channels,
        out_channels=convs[-1].out_channels,
        in_size=in_size,
        out_size=sizes[name],
        params=params[name],
        conv_weights=sum(c.in_channels // c.groups * c.out_channels * c.kernel**2 for c in convs),
        macs=macs[name],
    )


def resolve_arch(name: str) -> tuple[str, int | None]:
    """Map a registry name, a bare registry architecture or another timm ResNet to (arch, classes)."""
    reg = registry.load()
    if name in reg:
        entry = reg.get(name)
        return entry.arch, entry.num_classes
    if "." not in name and timm.is_model(name):
        return name, None
    raise UnknownModelError(name, [*reg.names, *reg.architectures])


@functools.lru_cache(maxsize=64)
def describe(name: str, resolution: int = 224) -> Architecture:
    """Describe a network at `resolution` px from the real timm model (meta device, no weights).

    Args:
        name: a registry name (`resnet50.a1_in1k`), a bare architecture (`resnet50`), or any timm
            ResNet such as `test_resnet`.
        resolution: square input size in pixels.

    Raises:
        UnknownModelError: the name is not a known model.
        InvalidArgumentError: the resolution is out of range, or the model is not a ResNet.
    """
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise InvalidArgumentError(
            f"Resolution {resolution} px is out of range: use {MIN_RESOLUTION} to {MAX_RESOLUTION}."
        )
    arch, num_classes = resolve_arch(name)
    return describe_model(build_meta(arch, num_classes=num_classes), arch, resolution)


def describe_model(model: ResNet, arch: str, resolution: int) -> Architecture:
    """Describe an already built timm ResNet (on any device) at `resolution` px."""
    leaf_macs, sizes = count_macs(model, resolution)
    macs = _by_prefix(leaf_macs.items())
    params = _by_prefix((n, p.numel()) for n, p in model.named_parameters())
    stem_convs = tuple(
        _conv(f"conv1.{n}" if n else "conv1", m, sizes)
        for n, m in model.conv1.named_modules()
        if isinstance(m, nn.Conv2d)
    )
    stem_names = ("conv1", "bn1", "maxpool")
    stem = Stem(
        convs=stem_convs,
        pool_kernel=_int(model.maxpool.kernel_size),
        pool_stride=_int(model.maxpool.stride),
        out_channels=model.bn1.num_features,
        out_size=sizes["maxpool"],
        params=sum(params[n] for n in stem_names),
        macs=sum(macs[n] for n in stem_names),
    )
    stages = []
    size = stem.out_size
    for i, stage_name in enumerate(STAGE_NAMES):
        module = f"layer{i + 1}"
        blocks = []
        for j, block in enumerate(getattr(model, module)):
            blocks.append(_block(f"{module}.{j}", block, size, params, macs, sizes))
            size = blocks[-1].out_size
        stages.append(Stage(stage_name, module, tuple(blocks), params[module], macs[module]))
    head = Head(
        in_features=model.num_features,
        num_classes=model.num_classes,
        params=params["fc"],
        macs=macs["global_pool"] + macs["fc"],
    )
    return Architecture(
        arch=arch,
        resolution=resolution,
        stem=stem,
        stages=tuple(stages),
        head=head,
        params=sum(p.numel() for p in model.parameters()),
        macs=sum(leaf_macs.values()),
    )


def _int(v: int | tuple[int, ...]) -> int:
    return v if isinstance(v, int) else v[0]


def block_conv_weights(kind: Literal["basic", "bottleneck"], channels: int = 256) -> int:
    """Conv weights of one real timm block with `channels` in and out (no shortcut conv needed).

    At 256 channels a basic block (two 3x3 convs) has 3*3*256*256*2 = 1,179,648 weights and a
    bottleneck (1x1 256->64, 3x3 64->64, 1x1 64->256) has 69,632: why 50+ layers are affordable.
    """
    with torch.device("meta"):
        if kind == "basic":
            block = BasicBlock(inplanes=channels, planes=channels)
        elif kind == "bottleneck":
            block = Bottleneck(inplanes=channels, planes=channels // Bottleneck.expansion)
        else:
            raise InvalidArgumentError(f"Block kind {kind!r} is not 'basic' or 'bottleneck'.")
    return sum(m.weight.numel() for m in block.modules() if isinstance(m, nn.Conv2d))
