"""The generated files of a mirrored repo: timm's config.json (its own writer, byte-stable, loadable by
timm's hub parser) and the README.md model card with YAML metadata."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from huggingface_hub import ModelCard

from zoo import hubfiles, mirror, registry
from zoo.settings import REPO_ROOT


@pytest.mark.parametrize("name", ["resnet50.a1_in1k", "resnext101_32x16d.fb_wsl_ig1b_ft_in1k", "resnet50.bamboo"])
def test_config_json_is_timms_format_from_the_registry(name):
    from timm.models._hub import _parse_model_cfg

    entry = registry.get(name)
    config = json.loads(hubfiles.config_json(name))
    assert config["architecture"] == entry.arch and config["num_classes"] == entry.num_classes
    assert config["num_features"] == (512 if entry.block == "basic" else 2048) and config["global_pool"] == "avg"
    pre = config["pretrained_cfg"]
    assert pre["tag"] == entry.tag and tuple(pre["input_size"]) == entry.input_size and pre["mean"] == list(entry.mean)
    assert pre.get("test_input_size", pre["input_size"]) == list(entry.test_input_size)
    if entry.num_classes == 1000:
        assert len(config["label_names"]) == 1000 and config["label_names"][0] == "n01440764"
        assert config["label_descriptions"]["n01440764"].startswith("tench")
    else:
        assert "label_names" not in config
    parsed, arch, _ = _parse_model_cfg(json.loads(hubfiles.config_json(name)), {"source": "hf-hub"})
    assert arch == entry.arch and parsed["num_classes"] == entry.num_classes


def test_config_json_is_byte_stable_across_processes():
    name = "resnet18.a1_in1k"
    here = hubfiles.config_json(name)
    code = f"import sys; from zoo import hubfiles; sys.stdout.buffer.write(hubfiles.config_json({name!r}))"
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, cwd=REPO_ROOT).stdout
    assert there == here and mirror.git_blob_id(there) == mirror.git_blob_id(here)


def test_readme_is_a_model_card_with_metadata_and_published_results():
    entry = registry.get("resnet50.a1_in1k")
    card = ModelCard(hubfiles.readme(entry.name).decode())
    data = card.data
    assert data.library_name == "timm" and data.license == "apache-2.0" and data.pipeline_tag == "image-classification"
    assert "imagenet-1k" in data.datasets and "timm" in data.tags
    top1 = [r.metric_value for r in data.eval_results
            if r.dataset_type == "imagenet-1k" and r.metric_type == "accuracy"]
    assert sorted(top1) == sorted(r.top1 for r in entry.rows("imagenet"))
    assert "hf-hub:timm/resnet50.a1_in1k" in card.text and "| ImageNet-1k | 288 |" in card.text
    assert hubfiles.readme(entry.name) == hubfiles.readme(entry.name)
