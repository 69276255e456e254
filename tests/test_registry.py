"""The registry as data: its names are timm's, its facts agree with the real models and the CSVs."""

from __future__ import annotations

import dataclasses
import json

import pytest
import timm

from zoo import registry
from zoo.architecture import build_meta
from zoo.errors import UnknownModelError
from zoo.registry import ARCHITECTURES, DATASETS, ModelEntry, Registry, choose_default

REG = registry.load()
ENTRIES = list(REG)
IDS = [e.name for e in ENTRIES]


def test_names_equal_timms_pretrained_tags():
    expected = {t for arch in ARCHITECTURES for t in timm.list_pretrained(f"{arch}.*")}
    assert set(REG.names) == expected
    assert len(REG) == len(expected) >= 70


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_entry_matches_the_real_timm_model(entry: ModelEntry):
    cfg = timm.models.get_pretrained_cfg(entry.name)
    model = build_meta(entry.arch, num_classes=entry.num_classes)
    assert entry.params == sum(p.numel() for p in model.parameters())
    assert entry.layers == tuple(len(getattr(model, f"layer{i}")) for i in range(1, 5))
    assert entry.hf_hub_id == cfg.hf_hub_id == f"timm/{entry.name}"
    assert (entry.input_size, entry.interpolation, entry.mean, entry.std) == (
        tuple(cfg.input_size), cfg.interpolation, tuple(cfg.mean), tuple(cfg.std)
    )  # fmt: skip
    assert entry.test_input_size == tuple(cfg.test_input_size or cfg.input_size)
    assert entry.license == cfg.license and entry.num_classes == cfg.num_classes


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_entry_schema(entry: ModelEntry):
    for field in dataclasses.fields(ModelEntry):
        value = getattr(entry, field.name)
        if field.name in {"license", "hf_revision", "paper_ids", "origin_url"}:
            assert value is None or isinstance(value, str)
    assert entry.name == f"{entry.arch}.{entry.tag}"
    assert entry.family == ("resnext" if entry.arch.startswith("resnext") else "resnet")
    assert str(entry.depth) in entry.arch
    assert entry.block == ("basic" if entry.depth < 50 else "bottleneck")
    if entry.family == "resnext":  # resnext101_32x8d: cardinality 32, width 8
        assert f"_{entry.cardinality}x{entry.base_width}d" in entry.arch
    else:
        assert (entry.cardinality, entry.base_width) == (1, 64)
    assert 0 < entry.crop_pct <= 1 and 0 < entry.test_crop_pct <= 1
    assert entry.gmacs > 0 and entry.gmacs_eval >= entry.gmacs
    assert all(r.dataset in DATASETS and 0 < r.top1 <= r.top5 <= 100 for r in entry.results)
    if entry.has_imagenet_head:  # timm publishes every 1000-class tag (a few miss one variant set)
        assert len({r.dataset for r in entry.results}) >= len(DATASETS) - 1
        assert entry.result().img_size == entry.eval_size
    else:
        assert entry.results == () and entry.top1 is None


def test_pretraining_data_values():
    assert {e.pretrain for e in ENTRIES} == {"in1k", "yfcc100m-ssl", "ig1b-swsl", "ig1b-wsl", "bamboo"}
    assert REG.get("resnet50.fb_swsl_ig1b_ft_in1k").pretrain == "ig1b-swsl"
    assert REG.get("resnet50.tv_in1k").pretrain == "in1k"
    assert sum(e.pretrain_source.startswith("model_metadata-in1k.csv") for e in ENTRIES) >= 25


def test_resnet50_a1_published_rows_at_two_sizes():
    e = REG.get("resnet50.a1_in1k")
    assert [(r.img_size, r.top1, r.top5) for r in e.rows("imagenet")] == [(224, 80.382, 94.598), (288, 81.24, 95.112)]
    assert e.top1 == 81.24 and e.eval_size == 288
    assert round(e.gmacs, 2) == 4.11 and round(e.gmacs_eval, 2) == 6.80


def test_one_default_per_architecture_chosen_by_the_policy():
    assert [d.arch for d in REG.defaults()] == list(ARCHITECTURES)
    for arch in ARCHITECTURES:
        tags = [e for e in ENTRIES if e.arch == arch]
        default = REG.get(arch)
        assert default.is_default and default is choose_default(tags)
        eligible = [e for e in tags if e.permissive and e.pretrain == "in1k" and e.has_imagenet_head]
        if eligible:
            assert default in eligible and default.top1 == max(e.top1 for e in eligible)
        else:  # only non-commercial weights exist for the largest WSL ResNeXts
            assert default.top1 == max(e.top1 for e in tags if e.top1 is not None)
    assert REG.get("resnet50").name == "resnet50.a1_in1k"


def test_lookup_by_name_bare_arch_and_hub_id():
    assert REG.get("RESNET50.A1_IN1K").name == "resnet50.a1_in1k"
    assert REG.get("timm/resnet18.tv_in1k").name == "resnet18.tv_in1k"
    assert "resnet50" in REG and "resnet50.nope" not in REG


def test_unknown_names_suggest_close_matches():
    with pytest.raises(UnknownModelError) as info:
        REG.get("resnt50")
    assert "resnet50" in info.value.suggestions
    with pytest.raises(UnknownModelError, match="resnext50_32x4d"):
        REG.get("resnext50_32x4")


def test_list_filters_combine():
    assert {e.arch for e in REG.list(family="resnext")} == {a for a in ARCHITECTURES if a.startswith("resnext")}
    assert all(e.depth == 101 for e in REG.list(depth=101))
    nc = REG.list(license="cc-by-nc-4.0")
    assert nc and all(e.license == "cc-by-nc-4.0" for e in nc)
    assert [e.name for e in REG.list(license="unknown")] == ["resnet50.bamboo"]
    assert {e.name for e in REG.list(pretrain="ig1b-wsl")} == {
        "resnext101_32x8d.fb_wsl_ig1b_ft_in1k", "resnext101_32x16d.fb_wsl_ig1b_ft_in1k",
        "resnext101_32x32d.fb_wsl_ig1b_ft_in1k",
    }  # fmt: skip
    assert [e.name for e in REG.list(text="resnet18 torchvision")] == []
    assert [e.name for e in REG.list(text="resnet18 tv_in1k")] == ["resnet18.tv_in1k"]
    assert len(REG.list(defaults_only=True)) == len(ARCHITECTURES)
    assert REG.list(family="resnet", depth=50, text="gluon")[0].name == "resnet50.gluon_in1k"


def test_registration_fails_loudly():
    e = REG.get("resnet18")
    with pytest.raises(ValueError, match="already registered"):
        Registry([e, e])
    with pytest.raises(ValueError, match="No default tag"):
        Registry([dataclasses.replace(e, is_default=False)])


def test_data_file_cites_its_sources():
    doc = json.loads(registry.DATA_FILE.read_text())
    assert doc["generated_by"] == "python -m zoo.registry_build"
    assert timm.__version__ in doc["sources"]["timm"]
    assert "results-imagenet.csv" in doc["sources"]["results"]
    assert doc["default_policy"] == registry.DEFAULT_POLICY


@pytest.mark.slow
def test_data_file_is_up_to_date(shared_data):
    """Regenerating from timm and the CSVs gives the committed file byte for byte."""
    from zoo import registry_build

    assert registry_build.render(registry_build.build_entries(shared_data), shared_data) == (
        registry.DATA_FILE.read_text()
    ), "zoo/data/registry.json is stale: run `make registry`"
