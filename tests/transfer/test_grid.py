"""The tags x strategies grid: one service with callbacks and cancel, behind `zoo train` and the Transfer lab."""

from __future__ import annotations

import json
import threading

import pytest

from tests.transfer.kit import TAG
from zoo.errors import Cancelled, InvalidArgumentError
from zoo.transfer import grid, runs
from zoo.transfer.fit import FitConfig


def test_cli_trains_lists_and_deletes_runs(stored, capsys):
    from zoo.cli import main

    assert main(["train", "--data", "digits", "--models", TAG, "--heads", "linear,mlp", "--epochs", "2",
                 "--size", "32", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["strategy"] for r in out["runs"]] == ["linear", "mlp"] and out["classes"] == [str(d) for d in range(10)]
    assert out["runs"][1]["features_s"] == 0.0  # the mlp reused the linear probe's cached features
    assert main(["runs", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {r["id"] for r in listed} == {r["run"] for r in out["runs"]}
    assert main(["runs", "--rm", out["runs"][0]["run"]]) == 0 and len(runs.list_runs()) == 1
    assert main(["train", "--data", "digits", "--models", TAG, "--heads", "nonsense"]) == 2
    assert "Unknown head strategy" in capsys.readouterr().err


def test_the_grid_trains_every_pair_and_reports_through_its_callbacks(stored):
    seen = []
    trained = grid.train("digits", [TAG], ["linear", "mlp"], FitConfig(epochs=1), size=32,
                         on_dataset=lambda d: seen.append(("dataset", len(d.classes))),
                         on_start=lambda t, s: seen.append(("start", s)),
                         on_report=lambda t, s, r: r.kind == "epoch" and seen.append(("epoch", s)),
                         on_result=lambda r: seen.append(("result", r.strategy)))
    assert [(r.tag, r.strategy) for r in trained.results] == [(TAG, "linear"), (TAG, "mlp")]
    assert trained.best() in trained.results and len(trained.dataset.classes) == 10
    assert seen == [("dataset", 10), ("start", "linear"), ("epoch", "linear"), ("result", "linear"),
                    ("start", "mlp"), ("epoch", "mlp"), ("result", "mlp")]


def test_a_cancelled_grid_stops_and_keeps_only_the_runs_it_finished(stored, monkeypatch):
    from zoo import residency

    trims = []
    monkeypatch.setattr(residency, "trim_soon", lambda: trims.append(1))
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        grid.train("digits", [TAG], ["linear", "mlp"], FitConfig(epochs=1), size=32, cancel=cancel,
                   on_result=lambda r: cancel.set())  # Cancel pressed while the first run ends
    assert [r.strategy for r in runs.stored()] == ["linear"]
    assert trims == [1]  # what training freed goes back to the system, cancelled or not (residency.tune_heap)
    with pytest.raises(InvalidArgumentError, match="at least one model and one strategy"):
        grid.train("digits", [TAG], [])
