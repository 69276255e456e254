"""Stored runs: reloaded in a fresh process, typed as `Run`, listed, downloadable through the API, deletable."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from fastapi.testclient import TestClient

from tests.transfer.kit import TAG
from zoo.settings import REPO_ROOT
from zoo.transfer import lab, runs
from zoo.transfer.fit import FitConfig


@pytest.mark.slow
def test_a_run_reloads_in_a_new_process_and_is_listed_and_downloadable(stored, digits, tmp_path):
    result = lab.train(digits, TAG, "mlp", FitConfig(epochs=3), size=32)
    model, record = runs.load_model(result.run_id)
    x = torch.stack([lab.images.preprocess(lab._pre(TAG, 32), ex.image) for ex in digits.val[:16]])
    with torch.no_grad():
        here = model(x)
    torch.save(x, tmp_path / "x.pt")
    script = ("import sys, torch; from zoo.transfer import runs\n"
              "m, _ = runs.load_model(sys.argv[1]); x = torch.load(sys.argv[2], weights_only=True)\n"
              "with torch.no_grad(): torch.save(m(x), sys.argv[3])\n")
    subprocess.run([sys.executable, "-c", script, result.run_id, str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                   check=True, cwd=REPO_ROOT, env=os.environ, timeout=120)
    assert torch.equal(torch.load(tmp_path / "y.pt", weights_only=True), here)
    assert record["val_top1"] == result.row()["val_top1"] and record["classes"] == digits.classes
    run = runs.read(result.run_id)  # the typed record: what the resolver, engine, catalog and front ends use
    assert (run.name, run.tag, run.strategy, run.classes) == (result.run_id, TAG, "mlp", tuple(digits.classes))
    assert run.preprocessing.size == 32 and run.sha256 == record["sha256"] and run.epochs == 3
    assert [r.id for r in runs.stored()] == [result.run_id]

    from app import build_app

    with TestClient(build_app()) as client:
        listed = client.get("/api/models", params={"q": result.run_id}).json()["models"]
        assert [(m["name"], m["kind"], m["base"]) for m in listed] == [(result.run_id, "finetuned", TAG)]
        card = client.get(f"/api/models/{result.run_id}").json()
        assert card["classes"] == digits.classes and card["strategy"] == "mlp"
        body = client.get(card["weights"]["download_url"])
        assert body.status_code == 200 and body.content == (runs.folder(result.run_id) / runs.MODEL_FILE).read_bytes()
        header = client.get(f"/api/models/{result.run_id}/header").json()
        assert json.loads(header["metadata"]["zoo.class_names"]) == digits.classes
    assert runs.delete(result.run_id) and not runs.exists(result.run_id)


def test_a_run_file_changed_between_its_check_and_its_read_is_not_loaded(stored, digits, monkeypatch):
    """The run's file is checked, and read after: bytes written in between were loaded unchecked."""
    from zoo import checkpoint
    from zoo.errors import WeightsCorruptError

    result = lab.train(digits, TAG, "linear", FitConfig(epochs=1), size=32)
    read = checkpoint.read_tensors

    def read_then_changed(path):
        tensors = read(path)
        with open(path, "r+b") as f:  # as if written just before the read
            f.seek(-1, 2)
            last = f.read(1)
            f.seek(-1, 2)
            f.write(bytes([last[0] ^ 0x01]))
        return tensors

    monkeypatch.setattr(checkpoint, "read_tensors", read_then_changed)
    with pytest.raises(WeightsCorruptError, match=f"run {result.run_id} changed on disk"):
        runs.load_model(result.run_id)
