"""The "Why residual?" tab: train plain and residual networks side by side and watch the degradation
problem happen. Wiring only: the experiment runs in `zoo.degradation.lab` on a worker thread (`zoo.ui.relay`);
what is drawn comes from `zoo.degradation.report`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import gradio as gr
import pandas as pd

from zoo import accel
from zoo.degradation import lab, report, results
from zoo.degradation.data import DIGITS
from zoo.degradation.experiment import Config, Result
from zoo.errors import InvalidArgumentError
from zoo.ui import feedback
from zoo.ui.relay import relay
from zoo.ui.wiring import user_errors

DATA_DIGITS = "Built-in handwritten digits (1,797 images, offline)"
DATA_CIFAR = "CIFAR-10 (from the Hugging Face Hub)"
DATA_UPLOAD = "My zip of class folders"
DEPTHS = [("20 layers (n=3)", 20), ("32 layers (n=5)", 32), ("44 layers (n=7)", 44), ("56 layers (n=9)", 56),
          ("110 layers (n=18)", 110)]
REDRAW_S = 0.5  # at most two chart updates a second reach the browser

INTRO = """### Why residual? The degradation problem, live
Stack more plain layers (conv → BatchNorm → ReLU) and *training* error gets **worse**, not better. It is not
overfitting (the training set itself is fitted worse) and not vanishing gradients (BatchNorm keeps them
healthy: see the gradient plot below). Deeper plain networks are simply harder to optimise: a deeper net could
copy a shallower one by making its extra layers identities, but the solver does not find that. A residual block
learns **F(x) = H(x) − x** and outputs **ReLU(F(x) + x)**; to be an identity it only has to push F towards 0,
which is easy. Here the paper's CIFAR networks (6n+2 layers: a 3x3 conv, three stages of 16, 32 and 64
filters, average pooling, one FC) train in lockstep on the same batches from the same initial weights, plain
and residual twins differing only in their shortcuts. Plain is dashed, residual solid, as in the paper."""

EXPLAIN = """**Reading the plots.** *Training error* is what degradation is about: a deeper plain net ends higher
than a shallower one. *Layer responses* (the paper's Figure 7) are the std of each 3x3 layer's output after
BatchNorm, before the addition: residual layers respond less, because they only nudge an identity that the
shortcut already carries. *Gradient norms* at initialisation show that plain nets' gradients do not vanish
(with BatchNorm they are, if anything, large): the difficulty is optimisation, not a lost signal. Shortcut
option **A** pads the channels with zeros where the width grows (no parameters, the paper's CIFAR runs);
**B** uses 1x1 projections there. On the small digits a 20-layer residual net already fits the training set, so
deeper residual nets have nothing left to win there; the paper's "deeper residual nets do better" needs harder
data, such as CIFAR-10 (best on a GPU)."""


def _config(source: str, upload: str | None, depths: list[int] | None, shortcut: str, epochs: float,
            size: float) -> Config:
    if not depths:
        raise InvalidArgumentError("Pick at least one depth.")
    if source == DATA_UPLOAD and not upload:
        raise InvalidArgumentError("Upload a .zip of class folders first, or choose the built-in digits.")
    data = {DATA_DIGITS: DIGITS, DATA_CIFAR: "cifar10"}.get(source, upload)
    return Config(data=data, depths=tuple(feedback.whole(d, "A depth") for d in depths), shortcut=shortcut,
                  epochs=feedback.whole(epochs, "Epochs"), size=feedback.whole(size, "Input size in px"))


@feedback.to_status(7, at=0, file_arg=1)
def run_experiment(source: str, upload: str | None, depths: list[int] | None, shortcut: str, epochs: float,
                   size: float, retrain: bool) -> Iterator[tuple]:
    """Train (or recall) the experiment, streaming the training-error curves; the last update has everything."""
    config = _config(source, upload, depths, shortcut, epochs, size)

    def job(emit, cancel) -> Result:
        return lab.run(config, callback=lambda r: emit("report", r), cancel=cancel, reuse=not retrain)

    errors: list[list[float]] = []
    last = 0.0
    for kind, rep in relay(job, "zoo-degradation"):
        if kind == "done":
            yield show(rep)
            return
        if kind == "tick":  # nothing new: an update that changes nothing, where Gradio sees a client that left
            yield feedback.UNCHANGED
            continue
        if not errors:
            errors = [[] for _ in rep.names]
        if rep.kind == "step":
            for series, e in zip(errors, rep.error, strict=True):
                series.append(e)
        if time.monotonic() - last < REDRAW_S and rep.step < rep.steps:
            continue
        last = time.monotonic()
        names = list(rep.names)
        kinds = ["residual" if n.startswith("ResNet") else "plain" for n in names]
        per_epoch = max(1, rep.steps // rep.epochs)
        chart = report.training_curves(names, kinds, [int(n.split("-")[1]) for n in names],
                                       errors, per_epoch, rep.steps, "Training error (live)")
        cells = ", ".join(f"{n} {100 * e:.1f}%" for n, e in zip(names, rep.error, strict=True))
        status = (f"Epoch {rep.epoch} of {rep.epochs}, step {rep.step} of {rep.steps} · "
                  f"{rep.images_per_s:,.0f} images/s per network · about {rep.eta_s:.0f} s left\n\n"
                  f"Last batch's training error: {cells}")
        yield status, chart, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()


def show(result: Result) -> tuple:
    """Every output of the tab for a finished (or stored) result."""
    return (report.summary(result), report.result_curves(result),
            report.table(result), report.responses(result),
            report.gradients(result, "init") + report.gradients(result, "trained"),
            stored_table(), result.key)


def stored_table() -> Any:
    """Every stored experiment, newest first."""
    rows = [[r.key, r.created, r.dataset["name"], ", ".join(map(str, r.config.depths)), r.config.shortcut,
             r.config.epochs, r.config.size, r.device] for r in results.list_results()]
    return pd.DataFrame(rows, columns=["key", "created", "data", "depths", "shortcut", "epochs", "px", "device"])


@feedback.to_status(7, at=0)
def open_stored(key: str) -> tuple:
    """Show a stored experiment."""
    key = (key or "").strip()
    if not results.KEY.fullmatch(key):
        raise InvalidArgumentError("Pick a stored experiment first: open Stored experiments and click its row.")
    found = results.get(key)
    if found is None:
        raise InvalidArgumentError(f"No stored experiment {key!r}; pick one from the table.")
    return show(found)


@feedback.to_status(2, at=1)
def delete_stored(key: str) -> tuple[Any, str]:
    """Delete a stored experiment."""
    key = (key or "").strip()
    if not results.KEY.fullmatch(key):
        raise InvalidArgumentError("Pick a stored experiment first: open Stored experiments and click its row.")
    if not results.delete(key):
        raise InvalidArgumentError(f"No stored experiment {key!r}; pick one from the table.")
    return stored_table(), f"Deleted {key}."


def pick_stored(evt: gr.SelectData) -> str:
    return str(evt.row_value[0])


def build_tab(demo: gr.Blocks) -> None:
    """The tab's components and events (call inside the Blocks, in a gr.Tab)."""
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=2):
            source = gr.Radio([DATA_DIGITS, DATA_CIFAR, DATA_UPLOAD], value=DATA_DIGITS, label="Data")
            upload = gr.File(file_types=[".zip"], label="Zip of class folders (one folder per class)", visible=False)
            depths = gr.CheckboxGroup(DEPTHS, value=[20, 56], label="Depths (each trains a plain and a residual net)")
            shortcut = gr.Radio([("A: identity, zero-padded channels", "A"), ("B: 1x1 projections", "B")],
                                value="A", label="Shortcut where the shape changes")
            with gr.Row():
                epochs = gr.Slider(1, 60, value=8, step=1, label="Epochs", elem_id="deg-epochs")
                size = gr.Slider(8, 32, value=16, step=8, label="Input size (px)")
            retrain = gr.Checkbox(False, label="Train again even if this exact experiment is stored")
            with gr.Row():
                go = gr.Button("Train side by side", variant="primary", elem_id="deg-train")
                stop = gr.Button("Cancel", variant="stop")
            gr.HTML(report.block_diagram(), label="Plain block and residual block")
        with gr.Column(scale=3):
            status = gr.Markdown("Press **Train side by side**: the default run takes a few minutes on a CPU; a "
                                 "stored run with the same settings appears at once.", label="Status",
                                 elem_id="deg-status")
            curves = gr.HTML(label="Training error per epoch", elem_id="deg-curves")
    table = gr.Dataframe(pd.DataFrame(columns=report.TABLE_COLUMNS), wrap=True, interactive=False,
                         label="Final numbers (training error: mean over the last epoch)", elem_id="deg-table")
    with gr.Row():  # side by side on a laptop, one under the other on a phone
        with gr.Column(min_width=360):
            responses = gr.HTML(label="Layer responses", elem_id="deg-responses")
        with gr.Column(min_width=360):
            grads = gr.HTML(label="Gradients", elem_id="deg-grads")
    gr.Markdown(EXPLAIN)
    with gr.Accordion("The paper's numbers", open=False):
        gr.Dataframe(report.paper_table(), interactive=False, label=report.paper.CITATION)
    with gr.Accordion("Stored experiments", open=False):
        stored = gr.Dataframe(interactive=False, label="Click a row to pick it")
        with gr.Row():
            chosen = gr.Textbox(label="Experiment key", scale=3)
            show_btn = gr.Button("Show", scale=1)
            remove = gr.Button("Delete", variant="stop", scale=1)
        removed = gr.Markdown(label="Deleted")

    outputs = [status, curves, table, responses, grads, stored, chosen]
    source.change(lambda s: gr.update(visible=s == DATA_UPLOAD), source, upload, api_name="degradation_source",
                  api_visibility="private", queue=False)
    event = go.click(accel.gpu(run_experiment, duration=300),
                     [source, upload, depths, shortcut, epochs, size, retrain], outputs,
                     api_name="degradation", concurrency_id="heavy", concurrency_limit=1, show_progress_on=[status])
    stop.click(lambda: "**Cancelled.** A run in progress stops at its next step and nothing from it is kept; "
               "press Train to start again.", None, status,
               cancels=[event], api_name="cancel_degradation", api_visibility="private", queue=False)
    stored.select(pick_stored, None, chosen, api_name="pick_degradation", api_visibility="private", queue=False)
    show_btn.click(open_stored, chosen, outputs, api_name="degradation_result")
    remove.click(delete_stored, chosen, [stored, removed], api_name="delete_degradation")
    demo.load(user_errors(stored_table), None, stored, api_name="degradation_runs", queue=False)
