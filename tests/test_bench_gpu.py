"""bench/bench_gpu.py: its agreement criterion can fail; without CUDA it skips; its dry run passes on the CPU
with the web stack (absent on the GPU machine) made unimportable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import bench_gpu
from bench.gpu_agree import TOL, agree
from bench.gpu_train import degradation_run
from zoo.settings import REPO_ROOT

BLOCKED = ("gradio", "gradio_client", "fastapi", "uvicorn", "starlette", "spaces", "onnx", "onnxscript")
BLOCKER = f"""
import sys
import time

BLOCKED = {BLOCKED!r}


class _Absent:
    \"\"\"Wraps an import finder so the blocked packages look not installed (find_spec gives None, import fails).\"\"\"

    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.finder, attr)


sys.meta_path[:] = [_Absent(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
"""


def _logits(*top: float) -> torch.Tensor:
    """1000 logits with sigma about 1 and the given values on classes 0, 1, 2, ..."""
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0)).clamp(-2.5, 2.5)
    x[:len(top)] = torch.tensor(top)
    return x


def test_agree_exact_and_near_ties():
    ref = _logits(5.0, 4.0, 3.5, 3.0, 2.9, 2.8)
    assert agree(ref, [0, 1, 2, 3, 4], ref).exact
    near = ref.clone()
    near[4], near[5] = 2.9, 2.9 + 0.5 * TOL * float(ref.std())  # classes 4 and 5 within TOL of each other
    swapped = agree(near, [0, 1, 2, 3, 4])  # the reference ranks 5 above 4
    assert swapped.ok and not swapped.exact


def test_agree_fails_on_a_clear_swap_a_large_error_or_too_few_picks():
    ref = _logits(5.0, 4.0, 3.5, 3.0, 2.9, 2.8)
    assert not agree(ref, [1, 0, 2, 3, 4]).ok  # a gap of about 1 sigma swapped
    assert not agree(ref, [0, 1, 2, 3, 900]).ok  # a class far below the top-5
    off = ref + torch.linspace(0, 0.5, 1000) * float(ref.std())  # same top-5, but logits 0.5 sigma off
    assert agree(ref, [0, 1, 2, 3, 4], off).exact and not agree(ref, [0, 1, 2, 3, 4], off).ok
    assert not agree(ref, [0, 1, 2, 3]).ok


def test_without_cuda_it_skips(monkeypatch, capsys):
    monkeypatch.delenv("ZOO_GPU_CHECK_DRY", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_gpu.run() == []
    assert "SKIP gpu: no CUDA device" in capsys.readouterr().out


def test_bench_api_skips_without_nginx(monkeypatch, capsys):
    from bench import bench_api

    monkeypatch.setattr(bench_api, "_nginx", lambda: None)
    assert bench_api.run() == []
    out = capsys.readouterr().out
    assert "SKIP api_download_vs_nginx: nginx" in out and "not installed (apt-get install nginx-light" in out


@pytest.mark.slow
def test_dry_run_passes_without_the_web_stack(tmp_path: Path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)  # children (torchrun's) inherit it
    out = tmp_path / "summary.json"
    env = {**os.environ, "ZOO_GPU_CHECK_DRY": "1", "ZOO_GPU_CHECK_OUT": str(out), "OMP_NUM_THREADS": "2",
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(REPO_ROOT)])}
    probe = "import importlib.util as u; assert u.find_spec('fastapi') is None, 'visible'; import gradio"
    blocked = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert blocked.returncode == 1 and blocked.stderr.endswith("No module named 'gradio'\n")  # the blocker works

    done = subprocess.run([sys.executable, "-m", "bench", "gpu"], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=540)
    log = done.stdout + done.stderr[-3000:]
    assert done.returncode == 0, log[-5000:]
    assert "FAIL" not in done.stdout, log[-5000:]
    report = json.loads(out.read_text())
    sections = report["sections"]
    assert list(sections) == [name for name, *_ in bench_gpu.SECTIONS] + ["no-web-stack"]
    expected_skips = set() if degradation_run() else {"degradation"}
    assert {n for n, s in sections.items() if s["status"] == "skip"} == expected_skips, sections
    assert all(s["status"] == "pass" for n, s in sections.items() if n not in expected_skips)
    for name in ("correctness-eager", "correctness-compiled"):
        checked = {tag: d for tag, d in sections[name]["data"].items() if isinstance(d, dict)}
        assert len(checked) == 2 and all(img["ok"] and img["max_err"] in (None, pytest.approx(0.0, abs=1e-3))
                                         for d in checked.values() for img in d["images"])
        assert f"PASS {name}" in done.stdout
    assert "top-5 exact" in done.stdout and "classify(): 1/1 agree" in done.stdout
    assert sections["transfer"]["data"].keys() == {"linear", "mlp", "last-stage", "full"}
    assert sections["torchrun"]["data"]["run"]["epochs"] == 1
    assert report["summary"]["fail"] == 0 and report["mode"] == "dry"
    assert all(not t["judged"] for t in report["targets"]) and len(report["targets"]) == 7 - len(expected_skips)
    assert "none of gradio" in done.stdout and "GPU check summary" in done.stdout


def test_steal_monitor_shares_and_bursts():
    from bench import StealMonitor

    monitor = StealMonitor()
    # (time, steal ticks, all ticks): 0-1 s calm (1 of 100), 1-2 s a burst (30 of 100), 2-3 s calm again
    monitor.samples = [(0.0, 0, 0), (1.0, 1, 100), (2.0, 31, 200), (3.0, 32, 300)]
    assert monitor.share(0.0, 1.0) == pytest.approx(0.01)
    assert monitor.share(0.0, 3.0) == pytest.approx(32 / 300)
    assert monitor.share(5.0, 6.0) != monitor.share(5.0, 6.0)  # NaN: no samples there
    assert monitor.bursts(0.10) == [(1.0, 2.0)]
    with StealMonitor(every_s=0.05) as live:  # this machine's /proc/stat, read for real
        time.sleep(0.3)
    if sys.platform.startswith("linux"):
        assert len(live.samples) >= 2 and 0.0 <= live.share(0.0, float("inf")) <= 1.0
