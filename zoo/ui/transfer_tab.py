"""The Transfer lab tab: pick data, tags and strategies; train with live curves; compare; keep or delete
runs. Wiring only: the grid trains in `zoo.transfer.grid` on a worker thread (`zoo.ui.relay`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import gradio as gr
import pandas as pd

from zoo import accel, inference, svgchart
from zoo.errors import InvalidArgumentError
from zoo.transfer import data, grid, lab, quota, runs
from zoo.transfer.fit import FitConfig
from zoo.ui import feedback, transfer_views, views
from zoo.ui.relay import relay
from zoo.ui.wiring import user_errors

DIGITS = "Built-in handwritten digits (1,797 images, 10 classes)"
UPLOAD = "My zip of class folders"
STRATEGY_LABELS = [("Linear probe: new FC only", "linear"), ("MLP head: hidden layer + dropout", "mlp"),
                   ("Last stage: conv5_x + new FC", "last-stage"), ("Full fine-tune: every layer", "full")]
INTRO = """Reuse an ImageNet ResNet on your own classes and compare the usual ways side by side: each replaces
the final 1000-class FC layer with one for your classes, then trains **only that layer** (linear probe, or a
small MLP head), **the last stage and the head**, or **every layer** (the backbone at a tenth of the head's
learning rate). Frozen backbones run once per dataset: their features are cached, so later epochs and
repeated runs cost almost nothing. Runs are kept under `weights/runs/` and appear in Classify and the API."""


PALETTE = ["#2563eb", "#f97316", "#16a34a", "#dc2626", "#9333ea", "#0891b2", "#ca8a04", "#db2777"]


def _lines(curves: list[dict], epochs: int | None = None) -> str:
    """The validation accuracy of each run per epoch, as an SVG chart drawn here (`zoo.svgchart`): gr.LinePlot,
    updated while the job ran, drew the previous update's series, so the last run never appeared."""
    runs = list(dict.fromkeys(c["run"] for c in curves))
    series = [svgchart.Series(run, [c["epoch"] for c in curves if c["run"] == run],
                              [c["val accuracy"] for c in curves if c["run"] == run], PALETTE[i % len(PALETTE)], False)
              for i, run in enumerate(runs)]
    last = max([epochs or 1, *(c["epoch"] for c in curves)])
    return svgchart.chart(series, title="Validation accuracy per epoch", xlabel="epoch", ylabel="val accuracy (%)",
                          y_range=(0, 100), x_range=(1, max(last, 2)), integer_x=True)


@feedback.to_status(7, at=0, file_arg=1)  # a failure in the status line; the charts and tables keep what they had
def train_lab(source: str = DIGITS, upload: str | None = None, tags: list[str] | None = None,
              strategies: list[str] | None = None, epochs: float = 5, size: float = 64,
              progress: gr.Progress = gr.Progress()) -> Iterator[tuple]:
    """Train every (tag, strategy) on the data, streaming curves; the last update has the comparison."""
    grid.check(tags or [], strategies or [])
    if source == UPLOAD and not upload:
        raise InvalidArgumentError("Upload a .zip of class folders first, or choose the built-in digits.")
    yield from _stream(source, upload, tags, strategies, FitConfig(epochs=feedback.whole(epochs, "Epochs")),
                       feedback.whole(size, "Input size in px") or None)


def cancelled() -> str:
    """The status line once Cancel is pressed (the training event is cancelled with it)."""
    return "**Cancelled.** Finished runs are kept in the table and under Stored runs."


def _stream(source: str, upload: str | None, tags: list[str], strategies: list[str], config: FitConfig,
            size: int | None) -> Iterator[tuple]:
    def job(emit, cancel) -> grid.Grid:
        return grid.train(data.DIGITS if source == DIGITS else upload, tags, strategies, config,
                          size=size, cancel=cancel, on_dataset=lambda d: emit("dataset", d),
                          on_report=lambda t, s, r: emit("report", (t, s, r)), on_result=lambda r: emit("result", r))

    curves: list[dict] = []
    results: list[lab.Result] = []
    status, line, shown = "Preparing the data…", "", 0.0
    for kind, payload in relay(job, "zoo-transfer"):
        if kind == "dataset":
            skipped = f" {len(payload.skipped)} unreadable file(s) skipped." if payload.skipped else ""
            status = (f"**{payload.name}**: {len(payload.classes)} classes, {len(payload.train)} training and "
                      f"{len(payload.val)} validation images.{skipped}")
            line = "\n\nWorking: reading the images through the backbone, then training…"
        elif kind == "report":
            tag, strategy, rep = payload
            if rep.kind == "epoch":
                curves.append(transfer_views.curve_row(tag, strategy, rep))
            elif time.monotonic() - shown < 1.0:  # progress in words in the status line, once a second
                continue
            shown = time.monotonic()
            line = (f"\n\nWorking: **{tag} · {strategy}**: epoch {rep.epoch} of {rep.epochs}, step {rep.step} of "
                    f"{rep.steps}, {rep.images_per_s:,.0f} img/s, about {rep.eta_s:.0f} s left")
        elif kind == "result":
            results.append(payload)
        elif kind == "done":
            break
        else:  # a tick: nothing new, an update that changes nothing, where Gradio sees a client that left
            yield feedback.UNCHANGED
            continue
        yield _outputs(status + line, curves, results, final=False)
    yield _outputs(status, curves, results, final=True)


def _outputs(status: str, curves: list[dict], results: list[lab.Result], final: bool) -> tuple:
    table = transfer_views.grid(results)
    if not final or not results:
        return status, _lines(curves), table, gr.skip(), gr.skip(), gr.skip(), gr.skip()
    best = max(results, key=lambda r: r.scores.top1)
    done = f"{status}\n\nBest: **{best.tag} · {best.strategy}**, {100 * best.scores.top1:.1f}% validation top-1."
    return (done, _lines(curves), table, transfer_views.tradeoff(results), transfer_views.confusion(best),
            transfer_views.per_class(best), transfer_views.stored())


def picker_choices() -> list[tuple[str, str]]:
    """The Classify tab's models: every ImageNet tag, then the stored fine-tuned runs."""
    return views.model_choices() + transfer_views.run_choices()


def stored_runs() -> Any:
    """Every stored transfer run, newest first."""
    return transfer_views.stored()


def delete_run(run_id: str) -> tuple[Any, str]:
    """Delete a stored run (its model file and record)."""
    run_id = (run_id or "").strip()
    if not runs.RUN_ID.fullmatch(run_id) or not runs.delete(run_id):
        return gr.skip(), feedback.shown(f"No stored run {run_id!r}; pick one from the table.")
    inference.engine().forget(run_id)
    return transfer_views.stored(), f"Deleted {run_id}. {quota.describe()}"


def classify_picker() -> Any:
    """The Classify tab's picker, refreshed after runs came or went (a browser-only step: API clients get data)."""
    return gr.update(choices=picker_choices())


def pick_run(evt: gr.SelectData) -> str:
    return str(evt.row_value[0])


def build_tab(demo: gr.Blocks, classify_model: gr.Dropdown) -> gr.Dropdown:
    """The tab's components and events (call inside the Blocks, in a gr.Tab); `classify_model` is the Classify
    tab's picker, refreshed when runs come and go. Returns the lab's own model picker (its "not downloaded"
    marks are refreshed on every page load, with the other pickers')."""
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column():
            source = gr.Radio([DIGITS, UPLOAD], value=DIGITS, label="Data")
            upload = gr.File(file_types=[".zip"], label="Zip of class folders (one folder per class)", visible=False,
                             elem_id="lab-zip")
            tags = gr.Dropdown(views.model_choices(), value=["resnet18.a1_in1k"], multiselect=True,
                               allow_custom_value=True, label="Start from", elem_id="lab-models")
            strategies = gr.CheckboxGroup(STRATEGY_LABELS, value=["linear", "full"], label="Strategies")
            with gr.Row():
                epochs = gr.Slider(1, 30, value=5, step=1, label="Epochs (early stopping on validation loss)")
                size = gr.Slider(0, 320, value=64, step=32,
                                 label="Input size in px (0: the tag's own; small is fast for small images)")
            with gr.Row():
                go = gr.Button("Train and compare", variant="primary", elem_id="lab-train")
                stop = gr.Button("Cancel", variant="stop", elem_id="lab-cancel")
        with gr.Column():
            status = gr.Markdown(label="Status", elem_id="lab-status", elem_classes=["zoo-status"])
            curves = gr.HTML(_lines([]), label="Validation accuracy per epoch", elem_id="lab-curves")
            trade = gr.ScatterPlot(x="train s", y="val top-1", color="strategy", tooltip=["run"],
                                   label="Validation top-1 against training time")
    grid_table = gr.Dataframe(pd.DataFrame(columns=transfer_views.GRID_COLUMNS), label="Comparison (validation split)",
                              interactive=False, elem_id="lab-grid")
    with gr.Row():
        confusion = gr.Dataframe(pd.DataFrame(columns=["true class"]), interactive=False,
                                 label="Confusion matrix of the best run (rows: true class)")
        per_class = gr.BarPlot(x="class", y="accuracy", label="Per-class accuracy of the best run", y_lim=[0, 100])
    with gr.Accordion("Stored runs", open=False):
        stored = gr.Dataframe(transfer_views.stored([]), interactive=False, label="Click a row to pick it")
        with gr.Row():
            chosen = gr.Textbox(label="Run", scale=3)
            remove = gr.Button("Delete run", variant="stop", scale=1)
        removed = gr.Markdown(label="Deleted")

    train_event = go.click(accel.gpu(train_lab, duration=300), [source, upload, tags, strategies, epochs, size],
                           [status, curves, grid_table, trade, confusion, per_class, stored],
                           api_name="train", concurrency_id="heavy", concurrency_limit=1, show_progress_on=[status])
    def refresh_picker(event: Any) -> None:  # after runs came or went (on Cancel too: finished runs are kept)
        event.then(user_errors(classify_picker), None, classify_model, api_visibility="private", queue=False)

    refresh_picker(train_event)
    refresh_picker(stop.click(cancelled, None, status, cancels=[train_event], api_name="cancel_training",
                              api_visibility="private", queue=False))
    source.change(lambda s: gr.update(visible=s == UPLOAD), source, upload, queue=False, api_visibility="private")
    stored.select(pick_run, None, chosen, api_name="pick_run", api_visibility="private", queue=False)
    refresh_picker(remove.click(user_errors(delete_run), chosen, [stored, removed], api_name="delete_run"))
    demo.load(user_errors(stored_runs), None, stored, api_name="runs", queue=False)
    demo.load(quota.describe, None, removed, api_name="runs_quota", api_visibility="private", queue=False)  # disk use
    return tags
