"""The typed description behind the block diagram, derived from the real timm models."""

from __future__ import annotations

import pytest

from zoo.architecture import describe
from zoo.blockview import legend_items, network, networks, title


@pytest.mark.parametrize(
    ("arch", "residual", "plain"),
    [("resnet18", "ResNet-18", "plain-18"), ("resnet152", "ResNet-152", "plain-152"),
     ("resnext50_32x4d", "ResNeXt-50 32x4d", "plain-50 32x4d"),
     ("resnext101_64x4d", "ResNeXt-101 64x4d", "plain-101 64x4d")],
)  # fmt: skip
def test_titles_come_from_the_models_depth_and_groups(arch: str, residual: str, plain: str):
    a = describe(arch)
    assert (title(a), title(a, plain=True)) == (residual, plain)


def test_a_bottleneck_stage_is_its_projection_block_then_the_rest_repeated():
    conv4 = network(describe("resnet101")).stages[2]
    assert (conv4.name, conv4.size, conv4.channels) == ("conv4_x", 14, 1024)
    first, rest = conv4.runs
    assert (first.repeat, first.shortcut, first.first) == (1, "projection", "layer3.0")
    assert first.shortcut_label == "projection: 1x1, 1024, /2"
    assert (rest.repeat, rest.shortcut, rest.first, rest.shortcut_label) == (
        22, "identity", "layer3.1", "identity: adds x unchanged")  # fmt: skip
    assert [(x.look, x.narrow) for x in rest.layers] == [("1x1", True), ("3x3", True), ("1x1", False)]


def test_stem_head_and_the_pooled_projections_of_timms_tiny_resnet():
    t = network(describe("test_resnet", 160))
    assert [x.label for x in t.stem] == ["3x3, 16, /2", "3x3, 16", "3x3, 32", "3x3 max pool, /2"]
    assert [x.label for x in t.head] == ["global avg pool", "fc, 1000"]
    assert t.stages[1].runs[0].shortcut_label == "projection: 2x2 avg pool, 1x1, 48"
    headless = network(describe("resnet50.bamboo"))
    assert headless.head[-1].label == "no fc: features" and "no fc: features" in headless.summary


def test_the_legend_names_only_the_marks_in_use():
    def kinds(names: list[str], plain: bool = False) -> set[str]:
        return {k for k, _ in legend_items(networks([describe(n) for n in names], plain_twins=plain))}

    assert kinds(["resnet34"]) == {"3x3", "other", "identity", "projection", "add", "repeat", "stride"}
    assert kinds(["resnet50"]) == kinds(["resnet34"]) | {"1x1"}
    assert kinds(["resnext50_32x4d"]) == kinds(["resnet50"]) | {"grouped"}
    plain_only = {k for k, _ in legend_items([network(describe("resnet34"), plain=True)])}
    assert plain_only == {"3x3", "other", "repeat", "stride"}
