"""What the Transfer lab tab shows, from the lab's results and stored runs (no Gradio here)."""

from __future__ import annotations

import pandas as pd

from zoo.transfer import runs
from zoo.transfer.fit import Report
from zoo.transfer.lab import Result

GRID_COLUMNS = ["model", "strategy", "val top-1", "macro-F1", "train s", "features s", "trainable params",
                "epochs", "run"]


def run_label(run: runs.Run) -> str:
    return f"Fine-tuned · {run.tag} · {run.strategy} on {run.dataset} · {run.val_top1:.1f}%"


def run_choices() -> list[tuple[str, str]]:
    """(label, run id) of every stored run, newest first, for the Classify model picker."""
    return [(run_label(r), r.id) for r in runs.stored()]


def grid(results: list[Result]) -> pd.DataFrame:
    return pd.DataFrame([[r.tag, r.strategy, round(100 * r.scores.top1, 2), round(100 * r.scores.macro_f1, 2),
                          round(r.train_seconds, 2), round(r.feature_seconds, 2), r.trainable_params,
                          len(r.history.epochs), r.run_id] for r in results], columns=GRID_COLUMNS)


def curve_row(tag: str, strategy: str, report: Report) -> dict:
    return {"epoch": report.epoch, "val accuracy": round(100 * (report.val_acc or 0.0), 2),
            "train accuracy": round(100 * (report.train_acc or 0.0), 2), "run": f"{tag} · {strategy}"}


def tradeoff(results: list[Result]) -> pd.DataFrame:
    return pd.DataFrame([{"train s": round(r.train_seconds + r.feature_seconds, 2),
                          "val top-1": round(100 * r.scores.top1, 2), "strategy": r.strategy,
                          "run": f"{r.tag} · {r.strategy}"} for r in results])


def confusion(result: Result) -> pd.DataFrame:
    """Rows: true class; columns: predicted class."""
    return pd.DataFrame(result.scores.confusion, columns=[f"→ {c}" for c in result.classes]).assign(
        **{"true class": result.classes})[["true class", *[f"→ {c}" for c in result.classes]]]


def per_class(result: Result) -> pd.DataFrame:
    return pd.DataFrame({"class": result.classes, "accuracy": [round(100 * a, 1) for a in result.scores.per_class]})


def stored(rows: list[dict] | None = None) -> pd.DataFrame:
    rows = runs.list_runs() if rows is None else rows
    return pd.DataFrame([[r["id"], r["tag"], r["strategy"], r["dataset"], len(r["classes"]), r["val_top1"],
                          r["macro_f1"], r["created"]] for r in rows],
                        columns=["run", "model", "strategy", "dataset", "classes", "val top-1", "macro-F1", "created"])
