"""The model memory budget: least recently used models released for real; the ONNX export's limits."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest
from filelock import FileLock

from tests import imagecorpus as corpus
from zoo import backends, inference, residency, weights
from zoo.settings import get_settings

TAG, OTHER = "resnet18.tv_in1k", "resnet18.a1_in1k"


@pytest.fixture
def stored(resnet18_file):
    weights.import_file(resnet18_file, TAG)
    weights.import_file(resnet18_file, OTHER)
    return resnet18_file


def test_least_recently_used_released_first_and_the_newest_always_kept():
    released = []
    r = residency.Residency(100)
    r.admit("a", 40, lambda: released.append("a"))
    r.admit("b", 40, lambda: released.append("b"))
    r.touch("a")
    assert r.admit("c", 40, lambda: released.append("c")) == ["b"] and released == ["b"]
    assert r.resident() == ["a", "c"] and r.used_bytes == 80
    assert r.admit("huge", 500, lambda: released.append("huge")) == ["a", "c"]  # bigger than the budget: alone
    assert r.resident() == ["huge"] and r.released == 3
    r.resize("huge", 10)
    assert r.used_bytes == 10


def _png() -> bytes:
    return corpus.encode(corpus.scene(), "PNG")


@pytest.mark.parametrize("backend", ["eager", "auto"])  # auto: a deferred export must not keep the model either
def test_the_engine_releases_models_beyond_the_budget_for_real(stored, monkeypatch, backend):
    monkeypatch.setenv("ZOO_MODEL_MEMORY_MB", "60")  # one resnet18 (46 MB) fits, two do not
    get_settings.cache_clear()
    eng = inference.Engine(backend=backend)
    eng.classify([_png()], [TAG])
    eng.classify([_png()], [TAG])  # used again: with auto, its export starts
    first = weakref.ref(eng._slots[f"{TAG}@cpu"].runner.model)
    eng.classify([_png()], [OTHER])
    eng.wait_ready(timeout=60)  # the released model's export is cancelled
    gc.collect()
    assert first() is None  # no reference is left anywhere: its memory is free
    assert eng.resident.resident() == [f"{OTHER}@cpu"] and not eng.is_ready(TAG)
    assert eng.cache.cached() == [f"{OTHER}@cpu"]
    assert eng.classify([_png()], [TAG])[0][0].model == TAG  # served again, loaded afresh


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_a_served_model_maps_no_page_of_its_weights_file(stored):
    """The budget counts a model's parameters once: none of them is still a page of the file (a mapped file stayed
    resident beside the channels_last copies, 2x the model; and a byte written into it changed the served model)."""
    eng = inference.Engine(backend="eager")
    eng.classify([_png()], [TAG])
    st = os.stat(weights.store().weights_path(TAG))
    mapped = [line for line in Path("/proc/self/maps").read_text().splitlines()
              if len(f := line.split()) > 5 and f[4] == str(st.st_ino) and f[3].endswith(f":{os.minor(st.st_dev):02x}")]
    assert eng.is_ready(TAG) and mapped == []


def test_a_model_bigger_than_the_budget_still_serves_alone(stored, monkeypatch):
    monkeypatch.setenv("ZOO_MODEL_MEMORY_MB", "1")
    get_settings.cache_clear()
    eng = inference.Engine(backend="eager")
    preds = eng.classify([_png()], [TAG, OTHER])[0]
    assert [p.model for p in preds] == [TAG, OTHER]
    assert eng.resident.resident() == [f"{OTHER}@cpu"]


def test_the_onnx_export_waits_for_a_second_use(stored):
    if not backends.onnx_available():
        pytest.skip("onnxruntime/onnxscript not installed")
    eng = inference.Engine(backend="auto")
    eng.classify([_png()], [TAG])
    thread = eng._exports[f"{TAG}@cpu"]
    assert thread.ident is None  # one use: no export
    eng.classify([_png()], [TAG])
    assert thread.ident is not None  # used again: the export started
    eng.close()  # ends it: nothing is left running or written
    assert not thread.is_alive() and not backends._children
    assert not list((get_settings().weights_dir / ".cache" / "onnx").glob("*.onnx"))


def test_one_export_at_a_time_per_machine_and_cancel_while_waiting(tmp_path):
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    # another process's export holds the machine's lock: this one waits, and can be cancelled meanwhile
    with FileLock(str(backends.EXPORT_LOCK)), pytest.raises(backends.FastPathError, match="cancelled"):
        backends.export_in_subprocess(TAG, tmp_path / "g.onnx", 224, tmp_path, stop=stop)
    assert not backends._children


def test_a_paused_export_is_stopped_and_killed_on_stop(tmp_path, monkeypatch):
    seen = {}
    real = backends._supervise

    def supervise(child, name, timeout_s, pause, stop):
        threading.Timer(1.0, lambda: (seen.setdefault("state", _state(child.pid)), stop.set())).start()
        try:
            return real(child, name, timeout_s, pause, stop)
        finally:
            seen["alive"] = child.poll() is None

    monkeypatch.setattr(backends, "_supervise", supervise)
    with pytest.raises(backends.FastPathError, match="cancelled"):
        backends.export_in_subprocess(TAG, tmp_path / "g.onnx", 224, tmp_path, pause=lambda: True)
    assert seen == {"state": "T", "alive": False}  # stopped (SIGSTOP) while requests waited, then killed
    assert not (tmp_path / "g.onnx").exists()


def _state(pid: int) -> str:
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]


def _export_left_by_a_parent_that_exits(tmp_path, after_s: float, kwargs: str = "", **env: str) -> int:
    """Start an export in a child python, which exits (os._exit) `after_s` later: the export child's pid."""
    code = (
        f"import threading, time, os, pathlib\nfrom zoo import backends\n"
        f"backends.EXPORT_LOCK = pathlib.Path(r'{tmp_path}/export.lock')  # not waiting on another test's export\n"
        f"threading.Thread(target=backends.export_in_subprocess, args=('{TAG}', pathlib.Path(r'{tmp_path}/g.onnx'),"
        f" 224, pathlib.Path(r'{tmp_path}')), kwargs={{{kwargs}}}, daemon=True).start()\n"
        f"time.sleep({after_s})\nprint(next(iter(backends._children)).pid, flush=True)\nos._exit(0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                         env={**os.environ, **env})
    return int(out.stdout.split()[0])


def _gone_within(pid: int, seconds: float) -> bool:
    """Whether process `pid` ends (or is a zombie) within `seconds`; killed afterwards in any case."""
    try:
        for _ in range(int(seconds * 10)):
            try:
                if _state(pid) == "Z":
                    return True
            except FileNotFoundError:
                return True
            time.sleep(0.1)
        return False
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_the_export_child_dies_with_its_parent(tmp_path):
    pid = _export_left_by_a_parent_that_exits(tmp_path, 1.5)
    assert _gone_within(pid, 5), f"export child {pid} outlived its parent"


def test_an_export_child_is_not_paused_before_it_can_die_with_its_parent(tmp_path):
    """A child stopped (SIGSTOP, requests waiting) before it armed its parent-death signal was left stopped,
    with parent 1, when the server died: here its start is slowed by a second and requests wait all along."""
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text("import time\ntime.sleep(1.0)\n")  # before the child's first line
    pid = _export_left_by_a_parent_that_exits(tmp_path, 0.5, "'pause': lambda: True", PYTHONPATH=str(slow))
    assert _gone_within(pid, 10), f"export child {pid} outlived its parent"


def test_the_server_freezes_its_start_up_objects_and_still_collects_what_requests_leave(monkeypatch):
    """Full collections skip the app built at start-up (300 ms each over it), and garbage made later is freed."""
    import app
    from zoo import serving

    built, served, build_app = [], [], app.build_app
    monkeypatch.setattr(app, "build_app", lambda *a: (built.append(gc.get_freeze_count()), build_app(*a))[1])
    monkeypatch.setattr(serving, "run", lambda asgi, **kw: served.append(gc.get_freeze_count()))
    monkeypatch.setattr(residency, "tune_heap", lambda *a: None)  # process-wide malloc settings
    monkeypatch.setenv("GRADIO_TEMP_DIR", "")  # build_app sets its own; restored after the test
    try:
        app.serve()
        assert built == [0] and served[0] > built[0] + 100_000  # frozen after the app was built, before serving

        class Node:
            pass

        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle, as a request's objects can leave: only the collector frees it
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()


_HEAP_PROBE = """
import sys, threading
from zoo import residency
if sys.argv[1] == "tuned":
    residency.tune_heap()

def minor_faults():
    stat = open("/proc/self/stat").read()
    return int(stat[stat.rindex(")") + 2:].split()[7])

def passes(out):  # what a forward pass does to its activations: 96 MB made, written, freed, again
    for _ in range(6):
        before = minor_faults()
        blocks = [bytearray(24 << 20) for _ in range(4)]  # zero-filled: every page is touched
        del blocks
        out.append(minor_faults() - before)

out = []
worker = threading.Thread(target=passes, args=(out,))  # a request thread, as in the server
worker.start()
worker.join()
print(max(out[1:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or residency._malloc_trim() is None,
                    reason="glibc's heap settings and /proc")
def test_the_tuned_heap_reuses_a_pass_s_freed_blocks_instead_of_faulting_them_in_again():
    """Without `tune_heap` every 24 MB block is a fresh mapping (6,144 pages faulted in each). With its thresholds
    but glibc's default top pad, the thread's arena unmapped the heaps beyond its first (each at most 64 MiB) when
    their blocks were freed, and every pass faulted 12,289 pages in again."""
    faults = {mode: int(subprocess.run([sys.executable, "-c", _HEAP_PROBE, mode], capture_output=True, text=True,
                                       timeout=60, check=True).stdout) for mode in ("default", "tuned")}
    assert faults["default"] >= 10_000, faults
    assert faults["tuned"] < 500, faults
