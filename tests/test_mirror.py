"""The zoo as a Hub mirror, driven by the real clients against a live zoo on 127.0.0.1: huggingface_hub's
snapshot_download and HfApi, the `hf` CLI, and timm's `hf-hub:` loader for a tag, a bare name and
fine-tuned runs (logits equal to the zoo's own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import LIVE_TAGS, few_digits
from zoo import hubfiles, mirror
from zoo.errors import EntryNotFoundError, RepoNotFoundError, RevisionNotFoundError
from zoo.transfer import export, runs

TAG = LIVE_TAGS[0]
REPO = f"timm/{TAG}"
FILES = ["README.md", "config.json", "model.safetensors"]
pytestmark = pytest.mark.slow


def _env(live_zoo, tmp_path: Path) -> dict[str, str]:
    """A client machine: only HF_ENDPOINT says where the Hub is."""
    return {**os.environ, "HF_ENDPOINT": live_zoo.url, "HF_HOME": str(tmp_path / "client-hf"), "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def test_snapshot_download_whole_repo_and_with_allow_patterns(live_zoo, resnet18_file, tmp_path):
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(REPO, endpoint=live_zoo.url, cache_dir=tmp_path / "hf"))
    assert sorted(p.name for p in folder.iterdir()) == FILES
    assert (folder / "model.safetensors").read_bytes() == resnet18_file.read_bytes()
    assert (folder / "config.json").read_bytes() == hubfiles.config_json(TAG)
    assert (folder / "README.md").read_bytes() == hubfiles.readme(TAG)
    only = Path(snapshot_download(REPO, endpoint=live_zoo.url, cache_dir=tmp_path / "hf2", allow_patterns="*.json"))
    assert sorted(p.name for p in only.iterdir()) == ["config.json"]


def test_hf_api_reads_model_info_tree_paths_and_files(live_zoo, resnet18_file):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    api = HfApi(endpoint=live_zoo.url)
    info = api.model_info(REPO, files_metadata=True)
    assert info.id == REPO and len(info.sha) == 40 and info.library_name == "timm"
    assert info.pipeline_tag == "image-classification" and "timm" in info.tags and info.last_modified is not None
    assert info.card_data.license == "apache-2.0" and info.card_data.library_name == "timm"
    assert info.card_data.eval_results  # the published results, in the card's YAML
    siblings = {s.rfilename: s for s in info.siblings}
    assert sorted(siblings) == FILES
    weights = siblings["model.safetensors"]
    import hashlib

    data = resnet18_file.read_bytes()
    assert weights.size == len(data) and weights.lfs.sha256 == hashlib.sha256(data).hexdigest()
    assert siblings["config.json"].size == len(hubfiles.config_json(TAG)) and siblings["config.json"].lfs is None
    assert info.safetensors.total == sum(info.safetensors.parameters.values()) > 11_000_000
    assert api.model_info(REPO, revision=info.sha).sha == info.sha  # the commit id resolves too
    assert api.model_info(REPO, expand=["sha", "tags"]).sha == info.sha
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="v1.0")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("timm/resnet50.a1_in1k")  # a registry tag whose weights this zoo does not hold

    assert api.list_repo_files(REPO) == FILES
    tree = {f.path: f for f in api.list_repo_tree(REPO, expand=True)}
    assert tree["model.safetensors"].lfs.sha256 == weights.lfs.sha256 and tree["config.json"].blob_id
    assert tree["README.md"].last_commit.oid == info.sha
    found = api.get_paths_info(REPO, ["config.json", "nothing.bin"], revision=info.sha)
    assert [f.path for f in found] == ["config.json"] and found[0].blob_id == siblings["config.json"].blob_id
    assert api.file_exists(REPO, "config.json") and api.file_exists(REPO, "README.md")
    assert not api.file_exists(REPO, "pytorch_model.bin") and not api.file_exists("timm/nothing", "config.json")
    assert api.repo_exists(REPO) and not api.repo_exists("timm/resnet50.a1_in1k")


def test_hf_cli_downloads_a_whole_repo_and_shows_its_info(live_zoo, resnet18_file, tmp_path):
    hf = Path(sys.executable).parent / "hf"
    env = _env(live_zoo, tmp_path)
    out = subprocess.run([str(hf), "download", REPO, "--cache-dir", str(tmp_path / "cache"), "--quiet"], env=env,
                         capture_output=True, text=True, timeout=300, check=True).stdout.strip().splitlines()[-1]
    folder = Path(out)
    assert sorted(p.name for p in folder.iterdir()) == FILES
    assert (folder / "model.safetensors").read_bytes() == resnet18_file.read_bytes()
    info = subprocess.run([str(hf), "models", "info", REPO, "--json"], env=env, capture_output=True, text=True,
                          timeout=300, check=True).stdout
    assert json.loads(info)["id"] == REPO and json.loads(info)["pipeline_tag"] == "image-classification"
    missing = subprocess.run([str(hf), "download", "timm/resnet51.a1_in1k", "--cache-dir", str(tmp_path / "c2")],
                             env=env, capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "timm/resnet51.a1_in1k" in missing.stdout + missing.stderr


@pytest.fixture
def trained_runs(live_zoo):
    """Three real transfer runs on a sixth of the built-in digits (1 epoch, 32 px): linear, full and mlp heads.
    What is served does not depend on how many images trained them."""
    from zoo.transfer import lab
    from zoo.transfer.fit import FitConfig

    digits = few_digits()
    return {s: lab.train(digits, LIVE_TAGS[1], s, FitConfig(epochs=1), size=32).run_id
            for s in ("linear", "full", "mlp")}


SCRIPT = """
import json, sys, numpy, timm, torch
from huggingface_hub.errors import EntryNotFoundError
x = torch.load(sys.argv[1], weights_only=True)
spec = json.loads(sys.argv[2])
out, meta = {}, {}
for key, name in spec.items():
    try:
        m = timm.create_model(name, pretrained=True).eval()
    except EntryNotFoundError as exc:
        meta[key] = {"error": str(exc)}
        continue
    with torch.no_grad():
        out[key] = m(x).numpy()
    meta[key] = {"num_classes": m.num_classes, "labels": m.pretrained_cfg.get("label_names")}
numpy.savez(sys.argv[3], **out)
print(json.dumps(meta))
"""


def test_timm_hf_hub_builds_tags_bare_names_and_fine_tuned_runs(live_zoo, resnet18_file, trained_runs, tmp_path):
    import timm
    from safetensors.torch import load_file

    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    spec = {"tag": f"hf-hub:{REPO}", "bare": "resnet18",
            **{s: f"hf-hub:{mirror.RUNS_ORG}/{run}" for s, run in trained_runs.items()}}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "x.pt"), json.dumps(spec),
                           str(tmp_path / "out.npz")], env=_env(live_zoo, tmp_path), capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta, got = json.loads(proc.stdout.strip().splitlines()[-1]), np.load(tmp_path / "out.npz")

    reference = timm.create_model("resnet18", pretrained=False)
    reference.load_state_dict(load_file(str(resnet18_file)))
    with torch.no_grad():
        expected = reference.eval()(x).numpy()
    np.testing.assert_array_equal(got["tag"], expected)
    np.testing.assert_array_equal(got["bare"], expected)  # timm's default resnet18 tag, from the zoo
    assert meta["tag"]["num_classes"] == 1000 and len(meta["tag"]["labels"]) == 1000

    for strategy in ("full", "linear"):
        model, record = runs.load_model(trained_runs[strategy])
        with torch.no_grad():
            zoo_logits = model(x).numpy()
        assert meta[strategy] == {"num_classes": 10, "labels": record["classes"]}
        if strategy == "full":  # the same layers, renamed: the same numbers
            np.testing.assert_array_equal(got[strategy], zoo_logits)
        else:  # the BatchNorm folded into the Linear layer: equal to float32 rounding
            np.testing.assert_allclose(got[strategy], zoo_logits, rtol=1e-4, atol=1e-4)
    assert "not a timm classifier" in meta["mlp"]["error"]  # its README.md says how to load it instead


def test_a_run_repo_serves_its_timm_file_and_an_mlp_run_its_own(live_zoo, trained_runs, tmp_path):
    from huggingface_hub import HfApi, snapshot_download

    api = HfApi(endpoint=live_zoo.url)
    linear = f"{mirror.RUNS_ORG}/{trained_runs['linear']}"
    assert api.list_repo_files(linear) == FILES
    made = export.timm_file(trained_runs["linear"])
    assert made is not None and api.model_info(linear, files_metadata=True).siblings[2].lfs.sha256 == made[1]["sha256"]
    config = json.loads(hubfiles.run_config_json(runs.get(trained_runs["linear"])))
    assert config["architecture"] == "resnet18" and config["num_classes"] == 10
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32] and len(config["label_names"]) == 10

    mlp = f"{mirror.RUNS_ORG}/{trained_runs['mlp']}"
    folder = Path(snapshot_download(mlp, endpoint=live_zoo.url, cache_dir=tmp_path / "hf"))
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "model.safetensors"]
    assert (folder / "model.safetensors").read_bytes() == (runs.folder(trained_runs["mlp"]) /
                                                            runs.MODEL_FILE).read_bytes()
    assert "not a timm classifier" in (folder / "README.md").read_text()


def test_mirror_lookups_are_exact_and_say_what_exists(live_zoo):
    repo = mirror.repo(REPO)
    assert [f.rfilename for f in repo.files] == FILES and mirror.at(REPO, repo.commit) == repo
    assert set(mirror.served()) >= {f"timm/{t}" for t in LIVE_TAGS}
    with pytest.raises(RepoNotFoundError) as err:
        mirror.repo(REPO.upper())
    assert err.value.suggestions[0] == REPO
    with pytest.raises(RevisionNotFoundError):
        mirror.at(REPO, "0" * 40)
    with pytest.raises(EntryNotFoundError) as err:
        mirror.file_at(REPO, "main", "model.safetensor")
    assert err.value.suggestions == ["model.safetensors"] and err.value.commit == repo.commit



def test_hf_hub_download_waits_out_a_429_for_too_many_downloads(live_zoo, resnet18_file, tmp_path, monkeypatch):
    """With ZOO_MAX_DOWNLOADS=1 and a slow client holding the one place, a download is answered 429 with
    Retry-After; huggingface_hub waits it out and gets the file once the place is free."""
    import socket
    import threading

    import httpx
    from huggingface_hub import hf_hub_download

    from zoo import httpfiles
    from zoo.settings import get_settings

    monkeypatch.setenv("ZOO_MAX_DOWNLOADS", "1")
    get_settings.cache_clear()
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)  # a small window: the body stays in flight
    try:
        slow.connect(("127.0.0.1", live_zoo.port))
        slow.sendall(f"GET /{REPO}/resolve/main/model.safetensors HTTP/1.1\r\nHost: zoo\r\n\r\n".encode())
        assert slow.recv(1 << 12).startswith(b"HTTP/1.1 200")
        with httpx.Client(base_url=live_zoo.url, timeout=30) as http:
            refused = http.get(f"/api/models/{TAG}/weights")
            assert refused.status_code == 429 and refused.headers["retry-after"] == "5"
            assert "ZOO_MAX_DOWNLOADS=1" in refused.json()["error"]["message"]
            assert http.head(f"/api/models/{TAG}/weights").status_code == 200  # HEAD is never refused
        got: list = []
        client = threading.Thread(target=lambda: got.append(hf_hub_download(
            REPO, "model.safetensors", endpoint=live_zoo.url, cache_dir=tmp_path / "hf")))
        client.start()
        client.join(2)  # its first GET is refused meanwhile; it waits Retry-After + 1 s
        assert client.is_alive() and httpfiles._SENDING == [1]
        slow.close()  # the slow client leaves
        client.join(60)
        assert got and Path(got[0]).read_bytes() == resnet18_file.read_bytes()
    finally:
        slow.close()
        monkeypatch.delenv("ZOO_MAX_DOWNLOADS")
        get_settings.cache_clear()


def test_a_small_files_copy_is_checked_written_again_and_kept_elsewhere_if_it_must(live_zoo):
    """Found by an adversarial pass: an edit that kept the copy's size was served under the old ETag (a range)
    or broken off for good (the whole file), and a store that could not be written answered every mirror
    request, the weights' too, with a bare 500."""
    import shutil

    import httpx

    url = f"{live_zoo.url}/{REPO}/resolve/main/config.json"
    data = httpx.get(url).raise_for_status().content
    copy = mirror.file_at(REPO, "main", "config.json")[1].path
    at = data.index(b'"') + 1
    copy.write_bytes(data[:at] + bytes([data[at] ^ 0x20]) + data[at + 1:])  # the same size
    for headers in ({"Range": "bytes=0-40"}, {}):
        r = httpx.get(url, headers=headers)
        assert r.status_code in (200, 206) and r.content == data[:len(r.content)] and len(r.content) > 40
    assert copy.read_bytes() == data  # written again
    shutil.rmtree(copy.parent)
    copy.parent.write_bytes(b"")  # the cache cannot be written (as on a read-only or full disk)
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == data
    assert mirror.file_at(REPO, "main", "config.json")[1].path.parent != copy.parent  # kept elsewhere
    assert httpx.get(f"{live_zoo.url}/{REPO}/resolve/main/model.safetensors").status_code == 200
