"""Resolve -> download -> verify -> store, against a local Hub endpoint (never the network)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download

from zoo import catalog, hub, weights
from zoo.errors import WeightsCorruptError, WeightsIntegrityError, WeightsUnavailableError
from zoo.settings import REPO_ROOT, get_settings

TAG = "resnet18.tv_in1k"
REPO = f"timm/{TAG}"


@pytest.fixture
def served(local_hub, resnet18_file):
    """resnet18.tv_in1k's file on the local Hub."""
    return local_hub.add(REPO, "model.safetensors", resnet18_file.read_bytes())


def cache_files() -> list[Path]:
    root = get_settings().hf_home / "hub"
    return [p for p in root.rglob("*") if p.is_file() and ".locks" not in p.parts] if root.exists() else []


def test_first_resolve_downloads_and_verifies_then_no_more_requests(local_hub, served):
    done: list[tuple[int, int | None]] = []
    path = weights.resolve(TAG, progress=lambda n, total: done.append((n, total)))
    assert path == get_settings().weights_dir / "blobs" / served.sha256  # content-addressed
    assert hashlib.sha256(path.read_bytes()).hexdigest() == served.sha256
    rec = weights.store().record(TAG)
    assert (rec.source, rec.repo, rec.revision, rec.commit) == ("hub", REPO, "main", served.commit)
    assert (rec.sha256, rec.size) == (served.sha256, len(served.data))
    assert done and done[-1] == (len(served.data), len(served.data))  # the UI's progress callback
    assert local_hub.gets("model.safetensors") == 1
    before = len(local_hub.requests)
    assert weights.resolve(TAG) == path and weights.resolve("resnet18.tv_in1k") == path
    assert len(local_hub.requests) == before  # the store answers: no request at all


def test_weights_moved_aside_are_fetched_again_where_the_hub_has_them(local_hub, served):
    path = weights.resolve(TAG)
    with open(path, "r+b") as f:  # one byte changed in place
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0x01]))
    with pytest.raises(WeightsCorruptError, match="changed on disk"):
        catalog.require_stored(TAG)
    assert weights.store().set_aside(TAG) is not None  # until it is fetched again, every use says what happened
    assert hashlib.sha256(weights.resolve(TAG).read_bytes()).hexdigest() == served.sha256
    assert weights.store().set_aside(TAG) is None and catalog.require_stored(TAG).sha256 == served.sha256


def test_bytes_that_do_not_match_the_reported_hash_are_refused(local_hub, served):
    bad = bytearray(served.data)
    bad[len(bad) // 2] ^= 0xFF
    served.served = bytes(bad)
    with pytest.raises(WeightsIntegrityError, match="do not match the hash the Hub reports"):
        weights.resolve(TAG)
    assert not weights.store().has(TAG) and not (get_settings().weights_dir / TAG / "model.safetensors").exists()
    assert not any(p.stat().st_size == len(served.data) for p in cache_files())  # evicted from the HF cache too
    served.served = None
    assert weights.resolve(TAG).is_file()


def test_a_transfer_cut_off_midway_resumes(local_hub, served):
    local_hub.cut_next_get_after = len(served.data) // 3
    path = weights.resolve(TAG)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == served.sha256
    first, second = [r for m, p, r in local_hub.requests if m == "GET"]
    assert first is None and second.startswith("bytes=")  # huggingface_hub resumed with a Range...
    assert 0 < int(second[6:-1]) <= len(served.data) // 3  # ...from what it had written


def test_a_transfer_cut_off_for_good_leaves_nothing_and_the_next_resolve_succeeds(local_hub, served):
    local_hub.cut_next_get_after = len(served.data) // 2
    local_hub.fail_gets = True
    with pytest.raises(WeightsUnavailableError, match=r"download .* failed"):
        weights.resolve(TAG)
    assert not (get_settings().weights_dir / TAG).exists() or not any((get_settings().weights_dir / TAG).iterdir())
    assert not any("incomplete" in p.name or p.stat().st_size == len(served.data) for p in cache_files())
    local_hub.fail_gets = False
    assert hashlib.sha256(weights.resolve(TAG).read_bytes()).hexdigest() == served.sha256


def test_two_threads_resolving_one_tag_download_once(local_hub, served):
    local_hub.delay_s = 0.3
    results, errors = [], []

    def work():
        try:
            results.append(weights.resolve(TAG))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(set(results)) == 1 and len(results) == 4
    assert local_hub.gets("model.safetensors") == 1


@pytest.mark.slow
def test_two_processes_resolving_one_tag_download_once(local_hub, served, monkeypatch):
    local_hub.delay_s = 1.0
    code = f"from zoo import weights; print(weights.resolve({TAG!r}))"
    env = dict(os.environ)
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, **pipes) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert {o.strip() for o, _ in outs} == {str(get_settings().weights_dir / "blobs" / served.sha256)}
    assert local_hub.gets("model.safetensors") == 1


def test_the_hugging_face_cache_is_used_before_the_hub(local_hub, served):
    # what a Space's `preload_from_hub` leaves behind
    hf_hub_download(REPO, "model.safetensors", cache_dir=get_settings().hf_home / "hub", endpoint=local_hub.url)
    local_hub.stop()
    path = weights.resolve(TAG)
    assert weights.store().record(TAG).source == "hf-cache"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == served.sha256


def test_a_file_the_hub_lacks_says_so(local_hub):
    with pytest.raises(WeightsUnavailableError, match=r"has no model\.safetensors in timm/resnet34\.tv_in1k") as info:
        weights.resolve("resnet34.tv_in1k")
    assert "python -m zoo import FILE --name resnet34.tv_in1k" in str(info.value)


def test_offline_mode_sends_nothing(local_hub, served, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    get_settings.cache_clear()
    with pytest.raises(WeightsUnavailableError, match="HF_HUB_OFFLINE") as info:
        weights.resolve(TAG)
    assert f"python -m zoo fetch {TAG}" in str(info.value) and local_hub.requests == []


def test_an_unreachable_hub_fails_fast_once_per_process():
    # conftest points HF_ENDPOINT at a closed local port
    t = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        weights.resolve("resnet50")
    assert time.monotonic() - t < 10
    msg = str(info.value)
    assert "python -m zoo fetch resnet50.a1_in1k" in msg and "python -m zoo import FILE --name resnet50.a1_in1k" in msg
    assert hub.reachability.is_down
    with pytest.raises(WeightsUnavailableError, match="did not answer"):
        weights.resolve("resnet101")  # remembered: no second attempt


def test_a_hub_that_never_answers_times_out(monkeypatch):
    with socket.socket() as silent:  # accepts connections, never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        get_settings.cache_clear()
        t = time.monotonic()
        with pytest.raises(WeightsUnavailableError, match="did not answer"):
            weights.resolve("resnet50")
        assert time.monotonic() - t < 10
        t = time.monotonic()
        with pytest.raises(WeightsUnavailableError):
            weights.resolve("resnet152")
        assert time.monotonic() - t < 1


def test_weights_in_the_store_still_load_offline(resnet18_file, monkeypatch):
    from zoo.models import create_model

    weights.import_file(resnet18_file, TAG)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    get_settings.cache_clear()
    assert weights.resolve(TAG).is_file()
    assert create_model(TAG).fc.out_features == 1000
