"""Shared fixtures: every test runs offline, with its own weight store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zoo import settings

SHARED_DATA = settings.REPO_ROOT.parent / "shared" / "data" / "timm-results"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(autouse=True)
def offline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """No test reaches the network: the Hub endpoint is a closed local port; the store is empty."""
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    settings.get_settings.cache_clear()
    yield
    settings.get_settings.cache_clear()


def few_digits(every: int = 6):
    """Every `every`-th image of the built-in digits, all 10 classes still in each split: for tests that need a
    real stored run and not a good one (a linear probe on all 1,797 images costs several seconds a strategy)."""
    import dataclasses

    from zoo.transfer import data

    full = data.digits()
    few = dataclasses.replace(full, train=full.train[::every], val=full.val[::every],
                              fingerprint=f"{full.fingerprint}-every-{every}")  # its own feature cache key
    assert {e.label for e in few.train} == set(range(10))
    return few


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """timm's published results beside the checkout (always there in CI)."""
    if not (SHARED_DATA / "results-imagenet.csv").exists():
        if IN_CI:
            pytest.fail(f"{SHARED_DATA} is missing: CI must have ../shared/data beside the clone")
        pytest.skip(f"{SHARED_DATA} not found")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def fresh_hub_state():
    """Reachability is remembered per process: start every test from 'unknown'."""
    from zoo import hub

    hub.reachability.reset()
    yield
    hub.reachability.reset()


@pytest.fixture(autouse=True)
def serving_process():
    """A server stopped by an earlier test leaves the process 'shutting down' (`zoo.lifecycle`): not for this one."""
    from zoo import lifecycle

    lifecycle.serve_again()
    yield
    lifecycle.serve_again()


@pytest.fixture(autouse=True)
def close_engines(monkeypatch: pytest.MonkeyPatch):
    """Every inference engine a test makes is closed after it (it holds models)."""
    from zoo import inference

    made = []
    real = inference.Engine.__init__

    def init(self, *args, **kwargs):
        real(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(inference.Engine, "__init__", init)
    yield
    for eng in made:
        eng.close()
    inference._engine = None


@pytest.fixture
def local_hub(monkeypatch: pytest.MonkeyPatch):
    """A local Hub endpoint on 127.0.0.1; HF_ENDPOINT points at it."""
    from tests.localhub import LocalHub

    hub = LocalHub().start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    settings.get_settings.cache_clear()
    yield hub
    hub.stop()


@pytest.fixture(scope="session")
def resnet18_file(tmp_path_factory) -> Path:
    """A real resnet18 state dict (seeded random init) as safetensors: what the Hub would serve."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "resnet18.safetensors"
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), str(path))
    return path


@pytest.fixture(scope="session")
def resnet18_v2_file(resnet18_file: Path, tmp_path_factory) -> Path:
    """Another valid resnet18 checkpoint: `resnet18_file` but for one weight (a second version of a tag)."""
    from safetensors.torch import load_file, save_file

    sd = load_file(str(resnet18_file))
    sd["fc.bias"][0] += 1.0
    path = tmp_path_factory.mktemp("v2") / "resnet18-v2.safetensors"
    save_file(sd, str(path))
    return path


LIVE_TAGS = ("resnet18.a1_in1k", "resnet18.tv_in1k")  # the weights a live zoo has (a seeded resnet18)


@pytest.fixture
def live_zoo(resnet18_file: Path):
    """The whole app served on 127.0.0.1 with `LIVE_TAGS` in its store; yields the server (`.url`)."""
    from app import build_app
    from tests.liveserver import LiveServer
    from zoo import weights

    for tag in LIVE_TAGS:
        weights.import_file(resnet18_file, tag)
    server = LiveServer(build_app()).start()
    yield server
    server.stop()
