"""The Compare depths tab: one image through many tags side by side, accuracy against cost, and an evaluation
of the chosen tags on the user's labelled zip. Wiring only: every handler calls a service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from zoo import accel, compare, evaluate
from zoo.errors import InvalidArgumentError
from zoo.ui import feedback, upload, views
from zoo.ui.relay import relay
from zoo.ui.wiring import image as _image
from zoo.ui.wiring import ready


@feedback.to_status(4, file_arg=0)
@accel.gpu
def compare_depths(image: str | None, models: list[str] | None, progress: gr.Progress = gr.Progress()):
    """Side-by-side predictions, costs, agreement, and accuracy-vs-cost points for the chosen tags."""
    tags = models or compare.default_tags()
    path = _image(image)
    ready(tags, progress)
    cmp = compare.compare(path, tags, progress=lambda done, total, what: progress((done, total), desc=what,
                                                                                 unit="models"))
    cost, speed = views.scatter_frames(cmp)
    return views.comparison_table(cmp), views.agreement(cmp), cost, speed


@feedback.to_status(2, file_arg=0)
@accel.gpu
def evaluate_zip(dataset: str | None, models: list[str] | None, progress: gr.Progress = gr.Progress()):
    """Top-1/top-5 of each chosen tag on a zip of class folders."""
    if not dataset:
        raise InvalidArgumentError("Upload a .zip of class folders (named by synset or ImageNet class) first.")
    tags = models or compare.default_tags()
    ready(tags, progress)

    def job(emit, cancel):  # minutes for a big zip: on a worker thread, so a stopping server can say why it ended
        return evaluate.evaluate(Path(dataset), tags, progress=lambda done, total: emit("progress", (done, total)),
                                 cancel=cancel)

    # Progress in words in the note: once a generator has sent an update, Gradio no longer shows its progress bar
    yield gr.skip(), f"Evaluating {len(tags)} model(s): reading the zip…"
    for kind, payload in relay(job, "zoo-evaluate", what="evaluation", kept=False):
        if kind == "done":
            yield views.evaluation_table(payload), views.evaluation_note(payload)
            return
        if kind == "progress":
            progress(payload, desc="Evaluating", unit="images")
            yield gr.skip(), f"Evaluating {len(tags)} model(s): {payload[0]:,} of {payload[1]:,} images done…"
        else:  # a tick: an update that changes nothing, where Gradio notices a client that left
            yield feedback.UNCHANGED


def build_tab(choices: list, examples: list[list[str]], heavy: dict[str, Any]) -> gr.Dropdown:
    """The tab's components and events (call inside the Blocks, in a gr.Tab); returns the models picker."""
    with gr.Row():
        with gr.Column(scale=1):
            cmp_image = upload.image_box(label="Image", height=220, elem_id="compare-image")
            upload.examples(cmp_image, examples, label="Examples", elem_id="compare-examples",
                            api_name="compare_example")
        with gr.Column(scale=2):
            cmp_models = gr.Dropdown(choices, value=compare.default_tags(), multiselect=True, allow_custom_value=True,
                                     elem_id="compare-models", label="Models",
                                     info="Default: the depth ladder and ResNeXt-50.")
            cmp_run = gr.Button("Compare", variant="primary", elem_id="compare-run")
            cmp_status = feedback.status_line("compare-status")
            cmp_agree = gr.Markdown(label="Agreement")
    cmp_table = gr.Dataframe(pd.DataFrame(columns=views.COMPARE_COLUMNS), label="Side by side", interactive=False,
                             wrap=True, elem_id="compare-table", column_widths=views.COMPARE_WIDTHS)
    with gr.Row():
        cost_plot = gr.ScatterPlot(x="GMACs", y="published top-1", color="set", tooltip=["model"],
                                   label="Published top-1 vs GMACs (every tag)")
        speed_plot = gr.ScatterPlot(x="latency (ms)", y="published top-1", color="set",
                                    tooltip=["model"],
                                    label=f"Published top-1 vs warm latency measured here (median of "
                                          f"{compare.WARM_RUNS} passes)")
    with gr.Accordion("Evaluate the chosen models on your labelled images", open=False):
        gr.Markdown("A .zip of class folders, each named by its WordNet synset (`n02123045`) or "
                    "ImageNet class name (`tabby`). Unreadable images are skipped and listed.")
        dataset = gr.File(file_types=[".zip"], label="Labelled zip")
        eval_run = gr.Button("Evaluate")
        eval_table = gr.Dataframe(interactive=False, label="Accuracy here")
        eval_note = gr.Markdown(label="Dataset")

    cmp_image.change(upload.check, cmp_image, cmp_status, api_name="check_compare_image", queue=False,
                     api_visibility="private")
    cmp_run.click(compare_depths, [cmp_image, cmp_models], [cmp_table, cmp_agree, cost_plot, speed_plot, cmp_status],
                  api_name="compare", show_progress_on=[cmp_status], **heavy)
    eval_run.click(evaluate_zip, [dataset, cmp_models], [eval_table, eval_note, cmp_status], api_name="evaluate",
                   show_progress_on=[eval_note], **heavy)
    return cmp_models
