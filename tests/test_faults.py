"""Fault injection with real processes: `python -m zoo import` killed (-9) at every step of the store's write
protocol (ZOO_FAULT_PAUSE stops it at a named point, so no timing is involved), bytes flipped under a running
server, a small full filesystem (tmpfs) and a read-only one (a read-only bind mount).

After every step: the store lists only complete, verified versions; every byte served hashes to the ETag sent
with it; nothing partial is left after the next operation. Mounting needs root (or a user namespace): where
`mount` fails those tests skip, and test_store's ZOO_FAULT_ENOSPC test still covers a full disk in-process.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.liveserver import free_port
from zoo import weights
from zoo.checkpoint import sha256_file
from zoo.settings import REPO_ROOT

pytestmark = pytest.mark.slow
TAG = "resnet18.tv_in1k"
POINTS = ("blob-copying", "blob-written", "blob-durable", "record-written", "record-durable")
SERVER = ("import sys, uvicorn; from fastapi import FastAPI; from zoo import api; app = FastAPI(); api.install(app); "
          "uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[1]), log_level='critical')")


def zoo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo", *args], cwd=REPO_ROOT, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=300)


def wait_for(marker: Path, proc: subprocess.Popen) -> None:
    """Until the process reports it reached its pause point (it fails the test if it ends first)."""
    deadline = time.monotonic() + 300  # a hung child fails the test instead of hanging it
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{marker.name} never appeared"
        time.sleep(0.02)


def store_state(root: Path) -> dict[str, str]:
    """tag -> sha256 of every record, after checking each names a blob whose bytes are that hash."""
    found = {}
    for record in root.glob("*/record.json"):
        rec = json.loads(record.read_text())
        blob = root / "blobs" / rec["sha256"]
        assert blob.is_file() and sha256_file(blob) == rec["sha256"] and blob.stat().st_size == rec["size"], rec
        found[rec["name"]] = rec["sha256"]
    return found


def assert_nothing_partial(root: Path) -> None:
    leftovers = [p for p in root.rglob("*") if p.name.startswith(".tmp.")]
    assert not leftovers, leftovers
    named = set(store_state(root).values())
    assert {p.name for p in (root / "blobs").iterdir()} == named  # no blob without a record
    assert all(any(d.iterdir()) for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


@pytest.mark.parametrize("point", POINTS)
def test_import_killed_at_each_step_leaves_one_complete_version(point, resnet18_file, resnet18_v2_file, tmp_path):
    weights.import_file(resnet18_file, TAG)
    root = weights.store().root
    faults = tmp_path / "faults"
    faults.mkdir()
    env = {**os.environ, "ZOO_FAULT_PAUSE": point, "ZOO_FAULT_DIR": str(faults)}
    args = [sys.executable, "-m", "zoo", "import", str(resnet18_v2_file), "--name", TAG]
    proc = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(faults / f"{point}.paused", proc)
    proc.kill()  # SIGKILL: no cleanup of any kind runs
    proc.wait()
    # before the record's rename the old version is the one, untouched; from it on, the new one
    expected = resnet18_v2_file if point == "record-durable" else resnet18_file
    assert store_state(root) == {TAG: sha256_file(expected)}
    assert weights.store().verify(TAG)[0]  # the next operation (in this process: the dead one's locks are free)...
    assert_nothing_partial(root)  # ...leaves nothing of the dead writer
    weights.import_file(resnet18_v2_file, TAG)  # and a retry works
    assert store_state(root) == {TAG: sha256_file(resnet18_v2_file)}
    assert_nothing_partial(root)


@pytest.fixture
def mounts(tmp_path):
    """mount(kind, ...) -> a mounted folder, unmounted after the test; skips where mounting is not allowed."""
    made: list[Path] = []

    def mount(name: str, *args: str) -> Path:
        target = tmp_path / name
        target.mkdir()
        out = subprocess.run(["mount", *args, str(target)], capture_output=True, text=True)
        if out.returncode:
            pytest.skip(f"cannot mount here ({out.stderr.strip()[:100]}); test_store covers ENOSPC via a hook")
        made.append(target)
        return target

    yield mount
    for target in reversed(made):
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_a_full_disk_is_one_line_and_keeps_the_previous_version(mounts, resnet18_file, resnet18_v2_file):
    small = mounts("small", "-t", "tmpfs", "-o", "size=60m", "tmpfs")  # room for one resnet18, not two
    env = {"ZOO_WEIGHTS_DIR": str(small / "weights")}
    assert zoo("import", str(resnet18_file), "--name", TAG, env=env).returncode == 0
    out = zoo("import", str(resnet18_v2_file), "--name", TAG, env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "no space left on the device holding" in out.stderr and "free some space" in out.stderr
    assert store_state(small / "weights") == {TAG: sha256_file(resnet18_file)}
    assert_nothing_partial(small / "weights")
    out = zoo("import", str(resnet18_v2_file), "--name", "resnet18.a1_in1k", env=env)
    assert out.returncode == 2 and not (small / "weights" / "resnet18.a1_in1k").exists()  # no empty tag folder


class Server:
    """The REST API (zoo.api) in its own process."""

    def __init__(self, env: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(self.port)], cwd=REPO_ROOT,
                                     env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=60, **kw)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def sound(r: httpx.Response) -> bool:
    """A 200 whose body hashes to its ETag."""
    return r.status_code == 200 and f'"{hashlib.sha256(r.content).hexdigest()}"' == r.headers["etag"]


def flip(path: Path, offset: int = -1) -> None:
    with open(path, "r+b") as f:
        f.seek(offset, os.SEEK_END)
        byte = f.read(1)[0]
        f.seek(offset, os.SEEK_END)
        f.write(bytes([byte ^ 0x40]))


def test_bytes_flipped_under_a_running_server_are_never_served(resnet18_file, tmp_path):
    path = weights.import_file(resnet18_file, TAG)
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "serve-opened.resume").touch()  # whole-file GETs pass the pause point until the last step
    server = Server({"ZOO_FAULT_PAUSE": "serve-opened", "ZOO_FAULT_DIR": str(faults)})
    try:
        first = server.get(f"/api/models/{TAG}/weights")
        assert sound(first)
        etag = first.headers["etag"]
        flip(path)  # at rest, server running: the file's identity changes with it
        assert server.get(f"/api/models/{TAG}/weights", headers={"If-None-Match": etag}).status_code == 503
        assert not path.exists()  # moved aside
        for headers in ({}, {"If-None-Match": etag}, {"Range": "bytes=0-99"}):  # each says it was moved aside
            r = server.get(f"/api/models/{TAG}/weights", headers=headers)
            assert r.status_code == 503 and "failed their SHA-256 check" in r.json()["error"]["message"]
        assert server.get(f"/api/models/{TAG}").json()["weights"]["local"] is False

        assert zoo("import", str(resnet18_file), "--name", TAG).returncode == 0  # another process repairs it
        assert sound(server.get(f"/api/models/{TAG}/weights"))
        ranged = server.get(f"/api/models/{TAG}/weights", headers={"Range": "bytes=8-15"})
        assert ranged.status_code == 206 and ranged.content == resnet18_file.read_bytes()[8:16]

        # a change the identity check cannot see (here: made after the check, while the body is sent)
        (faults / "serve-opened.resume").unlink()
        (faults / "serve-opened.paused").unlink()
        outcome: list[object] = []

        def download() -> None:
            try:
                outcome.append(server.get(f"/api/models/{TAG}/weights"))
            except httpx.HTTPError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=download)
        thread.start()
        wait_for(faults / "serve-opened.paused", server.proc)
        flip(path, -1000)
        (faults / "serve-opened.resume").touch()
        thread.join(120)
        assert isinstance(outcome[0], httpx.RemoteProtocolError), outcome  # broken off, not a clean finish
        assert server.get(f"/api/models/{TAG}/weights").status_code in (404, 503) and not path.exists()
    finally:
        server.stop()


def test_a_read_only_store_is_a_ready_read_only_mirror(mounts, resnet18_file, tmp_path):
    weights.import_file(resnet18_file, TAG)
    source = weights.store().root
    mirror = mounts("ro", "--bind", str(source))
    subprocess.run(["mount", "-o", "remount,ro,bind", str(mirror)], check=True)
    env = {"ZOO_WEIGHTS_DIR": str(mirror)}
    server = Server(env)
    try:
        ready = server.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["store"]["mode"] == "read-only"
        assert sound(server.get(f"/api/models/{TAG}/weights"))
    finally:
        server.stop()
    for args in (("import", str(resnet18_file), "--name", "resnet18.a1_in1k"), ("rm", TAG)):
        out = zoo(*args, env=env)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and "read-only" in out.stderr and str(mirror) in out.stderr
    out = zoo("train", "--data", "digits", "--models", TAG, "--heads", "linear", "--epochs", "1", env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Not starting" in out.stderr and "read-only" in out.stderr
    assert zoo("verify", env=env).returncode == 0
