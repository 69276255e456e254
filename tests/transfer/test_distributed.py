"""torchrun on two CPU processes (gloo) trains what one process trains; only the main process stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.transfer.kit import TAG
from zoo.settings import REPO_ROOT
from zoo.transfer import runs


@pytest.mark.slow
def test_torchrun_on_two_cpu_processes_matches_one_process(stored, tmp_path):
    args = ["-m", "zoo", "train", "--data", "digits", "--models", TAG, "--heads", "last-stage", "--epochs", "3",
            "--size", "32", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                         timeout=600, check=True)
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", *args], capture_output=True,
                         text=True, env=env, cwd=REPO_ROOT, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    single, ddp = json.loads(one.stdout)["runs"][0], json.loads(two.stdout)["runs"][0]
    assert single["val_top1"] > 50 and abs(single["val_top1"] - ddp["val_top1"]) <= 3.0
    assert len(runs.list_runs()) == 2  # one stored run per command: only the main process writes
