"""Bounded resources for hostile input: extreme images, lying zips, big datasets, the runs quota, shutdown."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import imagecorpus as corpus
from tests.liveserver import free_port
from zoo import archives, evaluate, images, registry, weights
from zoo.errors import InvalidDatasetError
from zoo.settings import REPO_ROOT, get_settings
from zoo.transfer import data, lab, quota


def _env(monkeypatch, **values) -> None:
    for k, v in values.items():
        monkeypatch.setenv(k, str(v))
    get_settings.cache_clear()


@pytest.mark.parametrize("size", [(4000, 1), (1, 40_000), (30_000, 7)])
def test_an_extreme_aspect_ratio_is_cropped_before_the_resize(size):
    im = Image.new("RGB", size, (200, 30, 30))
    trimmed = images.trim_aspect(im, 0.875)
    assert max(trimmed.size) <= 4 * min(trimmed.size) + 16  # not 1,152,000 px long after the resize
    x = images.preprocess(registry.get("resnet50.a1_in1k"), im)
    assert tuple(x.shape) == (3, 288, 288)
    assert images.trim_aspect(Image.new("RGB", (400, 100))).size == (400, 100)  # ordinary shapes untouched


def _noise_png(side: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return corpus.encode(Image.fromarray(pixels), "PNG")


def _zip(path: Path, files: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as z:
        for name, blob in files.items():
            z.writestr(name, blob)
    return path


def _lie(path: Path, declared: int) -> None:
    """Rewrite every header's uncompressed size to `declared` (a zip that lies about its member)."""
    raw = bytearray(path.read_bytes())
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = raw.find(sig)
        raw[at + offset : at + offset + 4] = struct.pack("<I", declared)
    path.write_bytes(bytes(raw))


def test_a_member_that_lies_about_its_size_stops_at_the_declared_size(tmp_path):
    path = _zip(tmp_path / "lie.zip", {"cat/a.png": bytes(4 * 2**20)})  # 4 MiB of zeros, about 4 KiB packed
    _lie(path, 1000)
    with zipfile.ZipFile(path) as z:
        member = archives.members(z, "lie.zip")[0]
        assert member.info.file_size == 1000
        seen = 0
        with pytest.raises(InvalidDatasetError, match=r"lie\.zip"):
            for chunk in archives.chunks(z, member, "lie.zip"):
                seen += len(chunk)
    assert seen <= 1000  # never inflated past what the header declared


def test_a_member_with_damaged_deflate_data_is_named_as_corrupt(tmp_path):
    """zlib's own error (not a CRC mismatch) once came out as 'Something went wrong on the server (error)'."""
    path = _zip(tmp_path / "crc.zip", {"cat/a.png": bytes(range(256)) * 400})
    raw = bytearray(path.read_bytes())
    start = raw.find(b"cat/a.png") + len("cat/a.png")  # the local header's name, then the deflate stream
    raw[start:start + 40] = bytes([0xFF]) * 40  # an invalid block type where the stream begins
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as z, pytest.raises(InvalidDatasetError, match=r"'cat/a\.png' in crc\.zip is corrupt"):
        archives.read(z, archives.members(z, "crc.zip")[0], "crc.zip")


def test_members_over_the_image_limit_are_skipped_unread_and_the_dataset_budget_holds(tmp_path, monkeypatch):
    _env(monkeypatch, ZOO_MAX_IMAGE_MB=1)
    big = os.urandom(2 * 2**20)
    good = {f"{c}/{i}.png": _noise_png(16, i) for c in ("cat", "dog") for i in range(3)}
    path = _zip(tmp_path / "set.zip", {**good, "cat/huge.png": big}, zipfile.ZIP_STORED)
    with data.job_folder() as job:
        ds = data.load(path, job)
        assert not list(job.rglob("huge.png"))  # never written
    assert ds.skipped[0][0] == "cat/huge.png" and "ZOO_MAX_IMAGE_MB" in ds.skipped[0][1]
    _env(monkeypatch, ZOO_MAX_DATASET_MB=1)
    path = _zip(
        tmp_path / "two.zip", {**good, "cat/a.bin.png": big[:900_000], "dog/b.png": big[:900_000]}, zipfile.ZIP_STORED
    )
    with data.job_folder() as job, pytest.raises(InvalidDatasetError, match=r"1\.7 MiB.*ZOO_MAX_DATASET_MB"):
        data.load(path, job)


def test_a_folder_past_the_dataset_budget_is_refused_with_the_limit(tmp_path, monkeypatch):
    _env(monkeypatch, ZOO_MAX_DATASET_MB=1)
    for c in ("cat", "dog"):
        (tmp_path / "set" / c).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "set" / c / f"{i}.png").write_bytes(_noise_png(400, i))  # ~480 KB each
    with pytest.raises(InvalidDatasetError, match=r"1 MiB.*ZOO_MAX_DATASET_MB"):
        data.load(tmp_path / "set", tmp_path)


def test_large_images_are_not_kept_decoded(tmp_path):
    for c in ("cat", "dog"):
        (tmp_path / "set" / c).mkdir(parents=True)
        (tmp_path / "set" / c / "small.png").write_bytes(_noise_png(32))
        (tmp_path / "set" / c / "large.png").write_bytes(_noise_png(300))
    ds = data.load(tmp_path / "set", tmp_path)
    kinds = {ex.path: type(ex.source).__name__ for ex in ds.train + ds.val}
    assert {p: k for p, k in kinds.items() if "large" in p} == {
        "cat/large.png": "PosixPath",
        "dog/large.png": "PosixPath",
    }
    assert all(k == "Image" for p, k in kinds.items() if "small" in p)
    large = next(ex for ex in ds.train + ds.val if ex.path == "cat/large.png")
    assert large.image.size == (300, 300) and large.image.mode == "RGB"


def test_the_runs_quota_refuses_new_runs_and_deletes_nothing(monkeypatch):
    _env(monkeypatch, ZOO_RUNS_MAX_MB=1)
    run = get_settings().weights_dir / "runs" / "20260101-000000-old"
    run.mkdir(parents=True)
    (run / "run.json").write_text("{}")
    (run / "model.safetensors").write_bytes(bytes(2**20))
    assert quota.usage() == (2**20 + 2, 1)
    assert "1 taking 1.0 MiB of 1 MiB (ZOO_RUNS_MAX_MB)" in quota.describe()
    over = r"1\.0 MiB \(1 runs\) over the limit of 1 MiB \(ZOO_RUNS_MAX_MB\)"  # stored before the limit was lowered
    with pytest.raises(quota.QuotaExceededError, match=over):
        lab.train(data.digits(), "resnet18.a1_in1k", "linear")
    assert (run / "model.safetensors").exists()


def test_the_runs_quota_is_a_limit_a_new_run_cannot_pass(monkeypatch):
    _env(monkeypatch, ZOO_RUNS_MAX_MB=70)
    run = get_settings().weights_dir / "runs" / "20260101-000000-old"
    run.mkdir(parents=True)
    (run / "run.json").write_text("{}")
    (run / "model.safetensors").write_bytes(bytes(20 * 2**20))
    need = registry.get("resnet18.a1_in1k").params * 4 / 2**20 + 16  # fp32 weights and the margin: 60.6 MiB
    with pytest.raises(quota.QuotaExceededError, match=rf"about {need:.1f} MiB.*20\.0 MiB \(1 runs\) of the limit of "
                       r"70 MiB \(ZOO_RUNS_MAX_MB\)"):
        lab.train(data.digits(), "resnet18.a1_in1k", "linear")  # refused before any work: no weights are stored
    assert quota.usage()[1] == 1


def test_a_labelled_zip_to_evaluate_has_the_dataset_budget(monkeypatch, tmp_path):
    _env(monkeypatch, ZOO_MAX_DATASET_MB=2)
    zpath = tmp_path / "labelled.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(3):
            z.writestr(f"cat/{i}.png", os.urandom(2**20))  # 3 MiB unpacked, over the 2 MiB budget
    with pytest.raises(InvalidDatasetError, match=r"unpacks to 3\.0 MiB.*up to 2 MiB \(ZOO_MAX_DATASET_MB\)"):
        evaluate.read_labelled(zpath)


def test_a_run_training_in_another_process_holds_its_part_of_the_quota(monkeypatch):
    """Two trainings started together each passed the check and both stored (128 MiB against 104): now the
    first holds its model's size until it is stored, and a holder killed with -9 holds nothing."""
    _env(monkeypatch, ZOO_RUNS_MAX_MB=100)
    need = registry.get("resnet18.a1_in1k").params * 4 + 16 * 2**20  # 60.6 MiB: one fits, two do not
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom zoo.transfer import quota\n"
         f"with quota.reserved(need={need}):\n    print('held', flush=True)\n    sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        assert holder.stdout.readline() == "held\n"
        assert "(ZOO_RUNS_MAX_MB). 1 run training now holds 60.6 MiB of it." in quota.describe()
        with pytest.raises(quota.QuotaExceededError, match=r"about 60\.6 MiB, and stored runs take 0\.0 MiB "
                           r"\(0 runs\), and 1 run\(s\) training now hold 60\.6 MiB, of the limit of 100 MiB"):
            lab.train(data.digits(), "resnet18.a1_in1k", "linear")
    finally:
        holder.kill()
        holder.wait()
    assert quota.held() == (0, 0)  # a dead holder's file holds nothing, and goes at the next sweep
    with quota.reserved(need=need):
        assert quota.held() == (need, 1)
    assert quota.held() == (0, 0)


def test_shutdown_is_bounded_with_a_slow_client(tmp_path, resnet18_file):
    weights.import_file(resnet18_file, "resnet18.a1_in1k")
    port = free_port()
    env = {**os.environ, "ZOO_PORT": str(port), "ZOO_SHUTDOWN_S": "1", "PYTHONPATH": str(REPO_ROOT)}
    server = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "app.py")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    slow = None
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                slow = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the app did not start"
                time.sleep(0.3)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.sendall(b"GET /api/models/resnet18.a1_in1k/weights HTTP/1.1\r\nHost: x\r\n\r\n")
        assert slow.recv(12) == b"HTTP/1.1 200"  # the download has started; this client now reads nothing
        time.sleep(1)
        start = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        assert time.monotonic() - start < 10  # ZOO_SHUTDOWN_S=1, then the connection is closed
    finally:
        if server.poll() is None:
            server.kill()
        if slow is not None:
            slow.close()


def test_every_setting_is_in_the_readme_table():
    import dataclasses
    import re

    from zoo.settings import Settings

    source = (REPO_ROOT / "zoo" / "settings.py").read_text()
    table = (REPO_ROOT / "README.md").read_text().split("## Settings", 1)[1].split("\n## ", 1)[0]
    for f in dataclasses.fields(Settings):
        variable = re.search(rf"{f.name}: .*#\s*([A-Z_]+):", source).group(1)
        assert f"| `{variable}` |" in table, variable


def test_evaluation_skips_an_image_declared_over_the_limit_unread(tmp_path, monkeypatch):
    from zoo import evaluate

    _env(monkeypatch, ZOO_MAX_IMAGE_MB=1)
    path = _zip(
        tmp_path / "eval.zip",
        {"tench/a.png": _noise_png(16), "tench/huge.png": os.urandom(2 * 2**20)},
        zipfile.ZIP_STORED,
    )
    items = {it.path: it for it in evaluate.read_labelled(path)}
    assert items["tench/a.png"].read()[:4] == b"\x89PNG"
    with pytest.raises(evaluate.InvalidImageError, match=r"2\.0 MiB.*ZOO_MAX_IMAGE_MB"):
        items["tench/huge.png"].read()
    (tmp_path / "dir" / "tench").mkdir(parents=True)
    (tmp_path / "dir" / "tench" / "huge.png").write_bytes(os.urandom(2 * 2**20))
    with pytest.raises(evaluate.InvalidImageError, match="ZOO_MAX_IMAGE_MB"):
        evaluate.read_labelled(tmp_path / "dir")[0].read()


def test_uploads_expire_and_session_state_is_bounded(monkeypatch):
    from app import build_app

    _env(monkeypatch, ZOO_UPLOAD_TTL_S=30, ZOO_MAX_SESSIONS=5)
    monkeypatch.setenv("GRADIO_TEMP_DIR", "")  # unset for build_app, and restored after the test
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = Path(tempfile.mkdtemp(prefix=f"resnet-zoo-uploads-{gone.pid}-"))  # a server that was SIGKILLed
    live = Path(tempfile.mkdtemp(prefix=f"resnet-zoo-uploads-{os.getppid()}-"))  # a server still serving
    job = get_settings().weights_dir / ".cache" / "jobs" / f"p{gone.pid}-0123abcd-x"  # a job of a killed server
    job.mkdir(parents=True)
    (job / "data.png").write_bytes(b"unpacked")
    half_saved = get_settings().weights_dir / "runs" / f".tmp.run.{gone.pid}.x1y2z3"  # killed saving a run
    half_saved.mkdir(parents=True)
    gradio_app = build_app().routes[-1].app
    assert not dead.exists() and live.is_dir()
    assert not job.exists() and not half_saved.exists()  # at the start, not only when the next job comes
    live.rmdir()
    blocks = gradio_app.get_blocks()
    assert blocks.delete_cache == (30, 30)  # Gradio deletes uploads older than 30 s, every 30 s
    assert blocks.state_session_capacity == 5 and blocks.state_holder.capacity == 5
    own = os.environ["GRADIO_TEMP_DIR"]  # not the machine-wide /tmp/gradio that other Gradio processes share
    assert Path(own).name.startswith(f"resnet-zoo-uploads-{os.getpid()}-") and Path(own).is_dir()
    assert gradio_app.uploaded_file_dir == own and own == blocks.GRADIO_CACHE
    from zoo.ui import sessions

    assert isinstance(gradio_app.state_holder, sessions.LazyStateHolder) and gradio_app.state_holder.capacity == 5
    assert isinstance(blocks._queue.pending_messages_per_session, sessions.SessionQueues)
    state = gradio_app.state_holder["a-visitor"]  # a new session builds no component configuration ...
    assert state.config_values == {} and len(list(state.components)) > 50  # ... until something asks for it


def test_a_bad_setting_stops_the_app_in_one_line():
    env = {**os.environ, "ZOO_SHUTDOWN_S": "abc", "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, str(REPO_ROOT / "app.py")], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and out.stderr.strip() == "error: ZOO_SHUTDOWN_S='abc' is not a number.", out.stderr


def test_gradio_keeps_a_bounded_number_of_sessions_and_never_drops_an_active_one():
    from types import SimpleNamespace

    from zoo.ui.sessions import SessionQueues

    running = SimpleNamespace(session_hash="s0")
    queue = SimpleNamespace(event_ids_to_events={"event-0": running}, pending_event_ids_session={})
    queues = SessionQueues(queue, 3)
    for i in range(6):
        queue.pending_event_ids_session[f"s{i}"] = {f"event-{i}"} if i in (0, 1) else set()
        queues[f"s{i}"] = f"queue {i}"
    # s0 runs (kept); s1's answer was never collected (kept while idle ones can go); s2, s3 went first
    assert list(queues) == ["s0", "s1", "s5"] and set(queue.pending_event_ids_session) == {"s0", "s1", "s5"}
    queue.pending_event_ids_session["s5"] = {"event-5"}  # s5 calls again; its answer is not collected yet
    queues["s5"] = "s5 again"  # a session seen again is the newest
    queues["s6"] = "queue 6"  # nothing idle left: the oldest uncollected answer goes, never the running one
    assert list(queues) == ["s0", "s5", "s6"]
    del queue.event_ids_to_events["event-0"]  # s0's event ended and its answer was delivered
    queue.pending_event_ids_session["s0"] = set()
    queues["s7"] = "queue 7"
    assert list(queues) == ["s5", "s6", "s7"]


def test_the_heap_is_trimmed_off_the_request_path_at_most_every_few_seconds(monkeypatch):
    import threading

    from zoo import residency

    trimmed = threading.Event()
    calls = []
    monkeypatch.setattr(residency, "_malloc_trim", lambda: lambda pad: (calls.append(pad), trimmed.set()))
    monkeypatch.setattr(residency, "_trimmer", [])
    monkeypatch.setattr(residency, "_trim_wanted", threading.Event())
    monkeypatch.setattr(residency, "TRIM_EVERY_S", 3600.0)
    residency.trim_soon()
    assert trimmed.wait(10) and calls == [0]
    residency.trim_soon()  # within TRIM_EVERY_S: it waits for the next round
    residency.trim_soon()
    assert calls == [0] and residency._trim_wanted.is_set() and residency._trimmer[0].name == "zoo-malloc-trim"


def test_gradio_keeps_no_per_event_records_and_never_recomputes_their_summary(live_zoo, monkeypatch):
    """Gradio's monitoring records (10,000 kept, a pandas summary of all of them recomputed after every event)
    serve its dashboard, which is off: every /monitoring route refuses, one record at most, and no summary."""
    import httpx
    from gradio import queueing

    summaries, get_df = [], queueing.Queue._get_df
    monkeypatch.setattr(queueing.Queue, "_get_df",
                        staticmethod(lambda records: (summaries.append(len(records)), get_df(records))[1]))
    queue = live_zoo._server.config.app.routes[-1].app.get_blocks()._queue
    with httpx.Client(base_url=live_zoo.url, timeout=60) as http:
        for route in ("/monitoring", "/monitoring/summary", "/monitoring/any-key"):
            assert http.get(route).status_code == 403, route  # the dashboard is off
        for order in ("published top-1, best first", "GMACs, cheapest first", "parameters, fewest first"):
            r = http.post("/gradio_api/call/catalog", json={"data": [order]})
            assert r.status_code == 200, r.text
            body = http.get(f"/gradio_api/call/catalog/{r.json()['event_id']}").text
            assert "event: complete" in body, body[-300:]
    assert queue.events_recorded >= 3 and len(queue.event_analytics) <= 1 and summaries == []


def test_members_that_cannot_be_written_are_refused_in_one_sentence_each(tmp_path, monkeypatch):
    """A name too long for the disk, a name that is another member's folder, a full disk: each said "OSError"."""
    png = corpus.encode(Image.new("RGB", (4, 4)), "PNG")

    def zipped(*names: str) -> Path:
        path = tmp_path / f"z{len(list(tmp_path.glob('z*.zip')))}.zip"
        with zipfile.ZipFile(path, "w") as z:
            for name in names:
                z.writestr(name, png)
        return path

    dest = tmp_path / "job"
    with pytest.raises(InvalidDatasetError, match=r"too long for this server's disk \(300 bytes; at most 255"):
        archives.extract(zipped("cat/" + "a" * 296 + ".png"), dest / "1", (".png",))
    with pytest.raises(InvalidDatasetError, match=r"'cat/x\.png/y\.png' is both a file and a folder"):
        archives.extract(zipped("cat/x.png", "cat/x.png/y.png"), dest / "2", (".png",))

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(archives, "open", full, raising=False)
    with pytest.raises(InvalidDatasetError, match=r"could not be unpacked: no space left on the device"):
        archives.extract(zipped("cat/y.png"), dest / "3", (".png",))
