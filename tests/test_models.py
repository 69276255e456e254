"""Ready models from the store: meta build + checked assign, devices, the LRU cache."""

from __future__ import annotations

import threading

import pytest
import timm
import torch
from safetensors.torch import load_file
from torch import nn

from zoo import models, weights
from zoo.checkpoint import sha256_file
from zoo.errors import ConfigError, WeightsIntegrityError
from zoo.store import Record

TAG = "resnet18.tv_in1k"


@pytest.fixture
def stored(resnet18_file):
    weights.import_file(resnet18_file, TAG)
    return resnet18_file


def test_ready_model_equals_timm_loading_the_same_file(stored):
    model = models.create_model(TAG, device="cpu")
    reference = timm.create_model("resnet18", pretrained=False)
    reference.load_state_dict(load_file(str(stored)))
    reference.eval()
    assert not model.training
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(model(x), reference(x))


def test_assign_shares_the_loaded_tensors_instead_of_copying(stored, monkeypatch):
    from zoo import checkpoint

    seen = {}
    real = checkpoint.load_checked

    def spy(*args, **kwargs):
        tensors, header = real(*args, **kwargs)
        seen.update(tensors)
        return tensors, header

    monkeypatch.setattr(checkpoint, "load_checked", spy)
    model = models.create_model(TAG, device="cpu")
    assert model.conv1.weight.data_ptr() == seen["conv1.weight"].data_ptr()


def test_a_new_head_on_the_pretrained_backbone(stored):
    model = models.create_model(TAG, num_classes=5, device="cpu")
    sd = load_file(str(stored))
    assert model.fc.out_features == 5 and not model.fc.weight.is_meta
    assert torch.equal(model.layer4[1].conv2.weight, sd["layer4.1.conv2.weight"])


def test_random_init_needs_no_weights():
    model = models.create_model("resnet50", pretrained=False, device="cpu")
    assert sum(p.numel() for p in model.parameters()) == 25_557_032


def test_nan_weights_in_the_store_are_refused(resnet18_file, tmp_path):
    sd = load_file(str(resnet18_file))
    sd["fc.bias"][3] = float("nan")
    st = weights.store()
    path = tmp_path / "nan.safetensors"
    from safetensors.torch import save_file

    save_file(sd, str(path))  # stored as it is (bypassing import's checks): loading must still refuse it
    st.put(TAG, path, Record(TAG, sha256_file(path), path.stat().st_size, "import"))
    with pytest.raises(WeightsIntegrityError, match=r"fc\.bias"):
        models.create_model(TAG, device="cpu")


def test_devices(monkeypatch):
    assert models.resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert models.resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            models.resolve_device("cuda")
    with pytest.raises(ConfigError):
        models.resolve_device("tpu:0")


def test_racing_requests_load_a_tag_once(stored):
    cache = models.ModelCache(budget_bytes=10**9)
    got, barrier = [], threading.Barrier(6)

    def work():
        barrier.wait()
        got.append(cache.get(TAG, "cpu"))

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(got) == 6 and all(m is got[0] for m in got) and cache.loads == 1


def test_the_cache_evicts_least_recently_used_beyond_its_budget():
    sizes = {"resnet18.a1_in1k": 100, "resnet34.a1_in1k": 100, "resnet50.a1_in1k": 100}

    def loader(name, device):  # real modules of known byte size; loading cost is not what is tested
        return nn.Linear(sizes[name] // 4 - 1, 1)

    cache = models.ModelCache(budget_bytes=250, loader=loader)
    a = cache.get("resnet18.a1_in1k", "cpu")
    cache.get("resnet34.a1_in1k", "cpu")
    assert cache.get("resnet18.a1_in1k", "cpu") is a  # a hit refreshes it
    cache.get("resnet50.a1_in1k", "cpu")
    assert cache.cached() == ["resnet18.a1_in1k@cpu", "resnet50.a1_in1k@cpu"] and cache.used_bytes == 200
    tiny = models.ModelCache(budget_bytes=10, loader=loader)
    tiny.get("resnet18.a1_in1k", "cpu")
    tiny.get("resnet34.a1_in1k", "cpu")
    assert tiny.cached() == ["resnet34.a1_in1k@cpu"]  # larger than the budget: served, kept alone


def test_a_failed_load_is_reported_to_every_waiter_and_retried_later():
    calls = []

    def loader(name, device):
        calls.append(name)
        if len(calls) == 1:
            raise WeightsIntegrityError("boom")
        return nn.Linear(1, 1)

    cache = models.ModelCache(budget_bytes=10**6, loader=loader)
    with pytest.raises(WeightsIntegrityError):
        cache.get("resnet18", "cpu")
    assert isinstance(cache.get("resnet18", "cpu"), nn.Linear) and len(calls) == 2
