"""Introspection reproduces, from the real timm models, the facts in ../shared/CONCEPTS.md."""

from __future__ import annotations

import csv

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from zoo import registry
from zoo.architecture import block_conv_weights, build_meta, count_macs, describe
from zoo.errors import InvalidArgumentError, UnknownModelError
from zoo.registry import ARCHITECTURES

LAYOUTS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def test_bottleneck_needs_94_percent_fewer_weights_than_a_basic_block():
    basic, bottleneck = block_conv_weights("basic", 256), block_conv_weights("bottleneck", 256)
    assert basic == 3 * 3 * 256 * 256 * 2 == 1_179_648
    assert bottleneck == 256 * 64 + 3 * 3 * 64 * 64 + 64 * 256 == 69_632
    assert round(100 * (1 - bottleneck / basic)) == 94
    with pytest.raises(InvalidArgumentError):
        block_conv_weights("plain", 256)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_stage_layout_sizes_and_shortcuts(arch: str):
    a = describe(arch)
    depth = int(arch.removeprefix("resnext").removeprefix("resnet").split("_")[0])
    assert a.depth == depth and a.layers == LAYOUTS[depth]
    # stem: 7x7 conv stride 2 then 3x3 max-pool stride 2: 224 -> 112 -> 56
    (conv,) = a.stem.convs
    assert (conv.kernel, conv.stride, conv.out_channels, conv.out_size) == (7, 2, 64, 112)
    assert (a.stem.pool_kernel, a.stem.pool_stride, a.stem.out_size) == (3, 2, 56)
    assert [s.out_size for s in a.stages] == [56, 28, 14, 7]
    expansion = 1 if depth < 50 else 4
    assert [s.out_channels for s in a.stages] == [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
    for i, stage in enumerate(a.stages):
        first, rest = stage.blocks[0], stage.blocks[1:]
        assert {b.kind for b in stage.blocks} == {"basic" if depth < 50 else "bottleneck"}
        if i == 0:  # conv2_x keeps 56x56; only bottleneck nets need a projection there (64 -> 256)
            assert first.stride == 1 and first.out_size == first.in_size == 56
            if depth >= 50:
                sc = first.shortcut
                assert (sc.kind, sc.stride, sc.in_channels, sc.out_channels) == ("projection", 1, 64, 256)
                assert sc.conv.kernel == 1
            else:
                assert first.shortcut.kind == "identity"
        else:  # the first block of conv3_x..conv5_x halves the size through a 1x1 stride-2 projection
            sc = first.shortcut
            assert first.stride == 2 and first.out_size * 2 == first.in_size
            assert (sc.kind, sc.conv.kernel, sc.conv.stride, sc.stride) == ("projection", 1, 2, 2)
            # "ResNet v1.5": the stride sits on the 3x3 conv of a bottleneck (conv1 of a basic block)
            assert first.stride_conv == ("conv2 (3x3)" if depth >= 50 else "conv1 (3x3)")
        for b in rest:  # identity wherever shapes match: no parameters on the shortcut
            assert b.shortcut.kind == "identity" and b.stride == 1 and b.in_channels == b.out_channels
    assert a.head.in_features == a.stages[-1].out_channels and a.head.num_classes == 1000


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_costs_add_up_and_match_the_registry(arch: str):
    a, entry = describe(arch), registry.get(arch)
    assert a.stem.params + sum(s.params for s in a.stages) + a.head.params == a.params == entry.params
    assert a.stem.macs + sum(s.macs for s in a.stages) + a.head.macs == a.macs
    assert round(a.gmacs, 4) == entry.gmacs
    assert round(describe(arch, entry.eval_size).gmacs, 4) == entry.gmacs_eval
    for s in a.stages:
        assert s.params == sum(b.params for b in s.blocks) and s.macs == sum(b.macs for b in s.blocks)


def test_gmacs_match_timms_published_benchmark(shared_data):
    """Our count follows fvcore's convention, the one behind timm's published GMACs."""
    with open(shared_data / "benchmark-infer-amp-nchw-pt291-cu128-4090.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["model"] in ARCHITECTURES]
    assert len(rows) >= 10
    for r in rows:
        size = int(r["infer_img_size"])
        assert round(describe(r["model"], size).gmacs, 2) == float(r["infer_gmacs"]), (r["model"], size)


def test_conv_and_linear_macs_agree_with_torch_flop_counter():
    model = build_meta("resnext50_32x4d")
    macs, _ = count_macs(model, 160)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.empty(1, 3, 160, 160, device="meta"))
    layers = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)}
    assert sum(v for n, v in macs.items() if n in layers) * 2 == counter.get_total_flops()


@pytest.mark.parametrize(("arch", "widths"), [("resnext50_32x4d", 4), ("resnext101_32x8d", 8), ("resnext101_64x4d", 4)])
def test_resnext_group_width_doubles_per_stage(arch: str, widths: int):
    a = describe(arch)
    cardinality = int(arch.split("_")[1].split("x")[0])
    for i, stage in enumerate(a.stages):
        for b in stage.blocks:
            assert b.groups == cardinality and b.group_width == widths * 2**i
            assert b.width == int(64 * 2**i * widths / 64) * cardinality


def test_plain_resnet_3x3_convs_are_ungrouped():
    assert {b.groups for b in describe("resnet152").blocks} == {1}


def test_other_resolutions_and_timm_variants():
    a = describe("resnet50", 288)
    assert [s.out_size for s in a.stages] == [72, 36, 18, 9]
    t = describe("test_resnet", 160)  # timm's tiny ResNet: deep stem, avg-pool shortcuts, mixed blocks
    assert len(t.stem.convs) == 3 and [s.depth for s in t.stages] == [1, 1, 1, 1]
    assert [s.blocks[0].kind for s in t.stages] == ["basic", "basic", "bottleneck", "basic"]
    assert t.stages[1].blocks[0].shortcut.pooled and t.params == sum(
        p.numel() for p in build_meta("test_resnet").parameters()
    )


def test_headless_tag_has_no_classifier():
    a = describe("resnet50.bamboo")
    assert a.head.num_classes == 0 and a.head.params == 0 and a.params == registry.get("resnet50.bamboo").params


@pytest.mark.parametrize(("name", "res", "error"), [
    ("resnet50", 16, InvalidArgumentError), ("resnet50", 4096, InvalidArgumentError),
    ("resnet9000", 224, UnknownModelError), ("mobilenetv3_small_050", 224, InvalidArgumentError),
])  # fmt: skip
def test_bad_requests_raise_clear_errors(name, res, error):
    with pytest.raises(error):
        describe(name, res)
