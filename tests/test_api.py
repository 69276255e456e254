"""The REST API: catalog, cards, weight files to the letter of HTTP, the Hub-compatible mirror, safety."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors import safe_open

from app import build_app
from tests.conftest import LIVE_TAGS
from zoo import catalog, registry, weights
from zoo.settings import REPO_ROOT

TAG = LIVE_TAGS[0]
URL = f"/api/models/{TAG}/weights"


@pytest.fixture
def stored(resnet18_file: Path) -> bytes:
    """resnet18.a1_in1k imported into the test's store; returns the file's bytes."""
    weights.import_file(resnet18_file, TAG)
    return resnet18_file.read_bytes()


@pytest.fixture
def client(stored) -> TestClient:
    with TestClient(build_app()) as c:
        yield c


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- catalog and cards ----------------------------------------------------------------------------
def test_catalog_filters_by_family_depth_license_local_and_words(client):
    every = client.get("/api/models").json()
    assert every["count"] == len(registry.load()) == len(every["models"])
    resnext50 = client.get("/api/models", params={"family": "resnext", "depth": 50}).json()["models"]
    assert resnext50 and all(m["family"] == "resnext" and m["depth"] == 50 for m in resnext50)
    nc = client.get("/api/models", params={"license": "cc-by-nc-4.0"}).json()["models"]
    assert nc and all(m["license"] == "cc-by-nc-4.0" for m in nc)
    assert [m["name"] for m in client.get("/api/models", params={"local": True}).json()["models"]] == [TAG]
    assert all("ig1b" in m["pretrain"] for m in client.get("/api/models", params={"q": "ig1b"}).json()["models"])
    bad = client.get("/api/models", params={"depth": "deep"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"


def test_card_has_the_registry_facts_preprocessing_and_the_stored_file(client, stored):
    card = client.get("/api/models/resnet18").json()  # a bare architecture means its default tag
    assert card["name"] == TAG and card["facts"]["layers"] == [2, 2, 2, 2] and card["license"] == "apache-2.0"
    pre = card["preprocessing"]
    assert pre["size"] == registry.get(TAG).eval_size and "centre-crop" in pre["description"]
    w = card["weights"]
    assert w == {**w, "local": True, "sha256": sha(stored), "size": len(stored), "download_url": URL,
                 "filename": f"{TAG}.safetensors"}
    missing = client.get("/api/models/resnet50").json()["weights"]
    assert missing["local"] is False and missing["download_url"] is None
    assert "python -m zoo fetch" in missing["how_to_get"]


def test_unknown_names_and_missing_weights_are_json_errors_with_a_way_forward(client):
    r = client.get("/api/models/resnet51")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_model"
    assert "resnet50" in r.json()["error"]["suggestions"]
    r = client.get("/api/models/resnet50/weights")
    body = r.json()["error"]
    assert r.status_code == 404 and body["code"] == "weights_not_local"
    assert "python -m zoo fetch resnet50.a1_in1k" in body["message"]
    assert client.head("/api/models/resnet50/weights").status_code == 404
    r = client.get("/api/nothing/here")
    assert r.status_code == 404 and set(r.json()["error"]) == {"status", "code", "message", "suggestions"}


def test_a_file_changed_on_disk_is_refused_without_naming_server_paths_and_counted_nowhere(client, stored):
    """The 503 named the quarantine folder's absolute path (found by an adversarial pass); the file name stays."""
    blob = weights.store().weights_path(TAG)
    with open(blob, "r+b") as f:  # one byte of the data section, changed in place
        f.seek(len(stored) - 1)
        f.write(bytes([stored[-1] ^ 0x40]))
    r = client.get(URL)
    body = r.json()["error"]
    assert (r.status_code, body["code"]) == (503, "weights_changed_on_disk")
    assert "changed on disk" in body["message"] and str(weights.store().root) not in body["message"]
    assert "/" + blob.parent.name not in body["message"] and ".safetensors" in body["message"], body["message"]
    listed = client.get("/api/models", params={"local": True}).json()["count"]
    assert listed == client.get("/readyz").json()["local_weights"] == 0  # the moved-aside file counts nowhere


def test_header_lists_tensors_without_sending_the_file(client, stored, resnet18_file):
    head = client.get(f"/api/models/{TAG}/header").json()
    with safe_open(str(resnet18_file), "pt") as f:
        names = sorted(f.keys())
        assert sorted(head["tensors"]) == names
        assert head["tensors"]["fc.weight"]["shape"] == list(f.get_slice("fc.weight").get_shape())
    assert head["tensors"]["fc.weight"]["dtype"] == "F32" and head["sha256"] == sha(stored)
    assert head["parameters"] == sum(int(np.prod(t["shape"])) for t in head["tensors"].values())


# -- the weight file, to the letter of HTTP ----------------------------------------------------------
def test_get_and_head_send_the_file_with_strong_etag_and_checksum(client, stored):
    r = client.get(URL)
    assert r.status_code == 200 and r.content == stored
    h = r.headers
    assert h["etag"] == f'"{sha(stored)}"' and h["x-checksum-sha256"] == sha(stored)
    assert h["content-length"] == str(len(stored)) and h["accept-ranges"] == "bytes"
    assert h["content-disposition"] == f'attachment; filename="{TAG}.safetensors"'
    assert h["content-type"] == "application/octet-stream" and h["repr-digest"].startswith("sha-256=:")
    head = client.head(URL)
    assert head.status_code == 200 and head.content == b"" and dict(head.headers) == dict(h)


@pytest.mark.parametrize(("spec", "start", "end"), [
    ("bytes=0-99", 0, 100),  # first bytes
    ("bytes=1000-1999", 1000, 2000),  # middle
    ("bytes=-500", -500, None),  # suffix
    ("bytes=46000000-", 46000000, None),  # open-ended
    ("bytes=46807000-99999999", 46807000, None),  # an end past the file is clipped
])
def test_single_ranges_are_byte_exact(client, stored, spec, start, end):
    r = client.get(URL, headers={"Range": spec})
    want = stored[start:end]
    first = start % len(stored)
    assert r.status_code == 206 and r.content == want
    assert r.headers["content-range"] == f"bytes {first}-{first + len(want) - 1}/{len(stored)}"
    assert r.headers["content-length"] == str(len(want)) and r.headers["etag"] == f'"{sha(stored)}"'
    head = client.head(URL, headers={"Range": spec})
    assert head.status_code == 206 and head.headers["content-range"] == r.headers["content-range"]


def test_unsatisfiable_ignored_and_multiple_ranges(client, stored):
    r = client.get(URL, headers={"Range": f"bytes={len(stored)}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(stored)}"
    long = "9" * 4301  # int() refuses over 4,300 digits: a 500, or Starlette's text 400 for one-sided ranges
    for ignored in ("items=0-10", "bytes=abc", "bytes=10-5", f"bytes=0-{long}", f"bytes={long}-", f"bytes=-{long}",
                    f"bytes=1-{long[:19]}"):  # RFC 9110 §14.2: not understood → whole file
        r = client.get(URL, headers={"Range": ignored})
        assert r.status_code == 200 and len(r.content) == len(stored), ignored
    r = client.get(URL, headers={"Range": "bytes=0-9,100-109"})
    assert r.status_code == 206 and r.headers["content-type"].startswith("multipart/byteranges")
    assert stored[0:10] in r.content and stored[100:110] in r.content


def test_conditional_requests(client, stored):
    tag = f'"{sha(stored)}"'
    for match in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        r = client.get(URL, headers={"If-None-Match": match})
        assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == tag, match
    assert client.head(URL, headers={"If-None-Match": tag}).status_code == 304
    assert client.get(URL, headers={"If-None-Match": '"stale"'}).status_code == 200
    fresh = client.get(URL, headers={"Range": "bytes=10-19", "If-Range": tag})
    assert fresh.status_code == 206 and fresh.content == stored[10:20]
    stale = client.get(URL, headers={"Range": "bytes=10-19", "If-Range": '"an-old-version"'})
    assert stale.status_code == 200 and stale.content == stored  # changed since: the whole new file


# -- live server: resume, huggingface_hub and timm against the zoo as HF_ENDPOINT ---------------------
@pytest.mark.slow
def test_a_download_cut_off_and_resumed_has_the_right_sha256(live_zoo):
    url = f"{live_zoo.url}{URL}"
    got = bytearray()
    with httpx.stream("GET", url, timeout=30) as r:
        etag = r.headers["etag"]
        for chunk in r.iter_bytes():
            got += chunk
            if len(got) > 10_000_000:
                break  # the connection drops here
    rest = httpx.get(url, headers={"Range": f"bytes={len(got)}-", "If-Range": etag}, timeout=30)
    assert rest.status_code == 206
    assert hashlib.sha256(bytes(got) + rest.content).hexdigest() == rest.headers["x-checksum-sha256"] == etag.strip('"')


@pytest.mark.slow
def test_huggingface_hub_and_timm_download_from_the_zoo(live_zoo, resnet18_file, tmp_path):
    from huggingface_hub import hf_hub_download

    entry = registry.get(TAG)
    path = hf_hub_download(entry.hf_hub_id, entry.hf_filename, endpoint=live_zoo.url, cache_dir=tmp_path / "hf")
    assert Path(path).read_bytes() == resnet18_file.read_bytes()

    # timm in a fresh process, configured only by HF_ENDPOINT, as a user on an air-gapped box would
    out = tmp_path / "logits.npy"
    script = ("import sys, numpy, timm, torch\n"
              "torch.manual_seed(1); x = torch.randn(2, 3, 64, 64)\n"
              f"m = timm.create_model({TAG!r}, pretrained=True).eval()\n"
              "with torch.no_grad(): numpy.save(sys.argv[1], m(x).numpy())\n")
    env = {**os.environ, "HF_ENDPOINT": live_zoo.url, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "0"}
    subprocess.run([sys.executable, "-c", script, str(out)], env=env, check=True, timeout=300, cwd=tmp_path)

    import timm
    import torch
    from safetensors.torch import load_file

    model = timm.create_model("resnet18", pretrained=False)
    model.load_state_dict(load_file(str(resnet18_file)))
    torch.manual_seed(1)
    with torch.no_grad():
        expected = model.eval()(torch.randn(2, 3, 64, 64)).numpy()
    np.testing.assert_array_equal(np.load(out), expected)


def test_hub_mirror_answers_like_the_hub(client, stored):
    entry = registry.get(TAG)
    url = f"/{entry.hf_hub_id}/resolve/main/{entry.hf_filename}"
    head = client.head(url)
    assert head.status_code == 200 and head.headers["x-linked-etag"] == f'"{sha(stored)}"'
    assert head.headers["x-linked-size"] == str(len(stored)) and len(head.headers["x-repo-commit"]) == 40
    commit = head.headers["x-repo-commit"]
    assert client.get(f"/{entry.hf_hub_id}/resolve/{commit}/{entry.hf_filename}").content == stored
    for path, code in ((f"/{entry.hf_hub_id}/resolve/0123abc/{entry.hf_filename}", "RevisionNotFound"),
                       (f"/{entry.hf_hub_id}/resolve/main/pytorch_model.bin", "EntryNotFound"),
                       ("/someone/else/resolve/main/model.safetensors", "RepoNotFound"),
                       (f"/{entry.hf_hub_id.upper()}/resolve/main/model.safetensors", "RepoNotFound"),  # exact ids
                       (f"/{registry.get('resnet50').hf_hub_id}/resolve/main/model.safetensors", "RepoNotFound")):
        r = client.get(path)
        assert r.status_code == 404 and r.headers["x-error-code"] == code == r.json()["error"]["code"], path
        assert r.headers["x-error-message"] and set(r.json()["error"]) == {"status", "code", "message", "suggestions"}
    missing = client.get(f"/{entry.hf_hub_id}/resolve/main/pytorch_model.bin")
    assert missing.headers["x-repo-commit"] == commit  # the Hub sends it, so clients cache the miss
    assert "python -m zoo fetch resnet50" in client.get(f"/{registry.get('resnet50').hf_hub_id}/resolve/main/x").text
    assert client.get(f"/{entry.hf_hub_id.upper()}/resolve/main/x").json()["error"]["suggestions"][0] == entry.hf_hub_id


# -- health and safety ---------------------------------------------------------------------------------
def test_readyz_is_degraded_without_the_hub_and_not_ready_without_a_store(client, monkeypatch, tmp_path):
    r = client.get("/readyz")  # HF_ENDPOINT is a closed local port in tests
    assert r.status_code == 200 and r.json()["status"] == "degraded"
    assert r.json()["checks"]["hub"]["state"] == "unreachable"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(blocker / "weights"))
    from zoo import settings

    settings.get_settings.cache_clear()
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["status"] == "not-ready"


TRAVERSAL = [
    "/api/models/../../etc/passwd/weights", "/api/models/..%2F..%2Fetc%2Fpasswd/weights",
    "/api/models/%2e%2e%2f%2e%2e%2fetc%2fpasswd/weights", "/api/models/%252e%252e%252fsecret/weights",
    "/api/models/%2Fetc%2Fpasswd/weights", "/api/models/..%5C..%5Csecret/weights", "/api/models/..\\secret/weights",
    f"/api/models/{TAG}%00/weights", f"/api/models/{TAG}%2500.txt/weights", "/api/models/%2e%2e/weights",
    "/api/models/outside/weights", "/api/models/outside/header",
    "/timm/..%2F..%2Fsecret/resolve/main/model.safetensors",
    "/timm/resnet18.a1_in1k/resolve/main/..%2F..%2Fsecret", "/timm/resnet18.a1_in1k/resolve/main/%2Fetc%2Fpasswd",
    "/weights/", "/weights/.", f"/weights/{TAG}/model.safetensors", "/weights/outside/model.safetensors",
]


def test_traversal_attempts_answer_404_and_read_nothing(client, stored, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"TOP-SECRET")
    store = weights.store()
    outside = store.root / "outside"  # a store folder whose file is a symlink to a file outside the store
    outside.mkdir()
    (outside / "model.safetensors").symlink_to(secret)
    linked = registry.get("resnet18.tv_in1k")  # a real tag whose store entry is a symlink to outside
    store.folder(linked.name).symlink_to(outside, target_is_directory=True)
    (outside / "record.json").write_text(json.dumps({"name": linked.name, "sha256": sha(b"TOP-SECRET"), "size": 10,
                                                      "source": "import"}))
    assert catalog.stored_file(linked.name) is None
    for path in [*TRAVERSAL, f"/api/models/{linked.name}/weights", f"/api/models/{linked.name}/header",
                 f"/{linked.hf_hub_id}/resolve/main/{linked.hf_filename}"]:
        for method in ("GET", "HEAD"):
            r = client.request(method, path)
            assert r.status_code == 404, (method, path, r.status_code)
            assert b"TOP-SECRET" not in r.content and b"root:" not in r.content
    assert client.get("/api/models").status_code == 200  # no listing of the store either way


def test_the_api_guide_lists_the_rest_routes():
    from zoo import hubapi
    from zoo.api import router
    from zoo.ui import apidoc

    text = apidoc.rest_section([*router.routes, *hubapi.router.routes], "http://zoo:7860")
    for path in ("/api/models", "/api/models/{name}", "/api/models/{name}/weights", "/readyz",
                 "/api/models/{org}/{repo}/revision/{revision}", "/{org}/{repo}/resolve/{revision}/{filename}"):
        assert f"`{path}`" in text
    assert "HF_ENDPOINT" in text and 'hf_hub_download("timm/' in text and 'snapshot_download("timm/' in text
    assert REPO_ROOT.exists()


def test_weights_behind_a_symlinked_folder_are_refused_saying_why_and_not_counted(client, stored, tmp_path):
    """blobs/ moved to a bigger disk and linked back: /readyz counted the tag, and the download said only that
    the weights were not on this server (found by an adversarial pass)."""
    blobs = weights.store().root / "blobs"
    elsewhere = tmp_path / "bigger-disk"
    blobs.rename(elsewhere)
    blobs.symlink_to(elsewhere)
    r = client.get(URL)
    assert r.status_code == 404 and "symbolic link" in r.json()["error"]["message"]
    assert str(elsewhere) not in r.json()["error"]["message"]
    assert client.get("/readyz").json()["local_weights"] == 0
