"""The Gradio UI: `build_demo()` lays out the tabs and wires every event to a service; no logic lives here."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from zoo import accel, architecture, blockdiagram, compare, evaluate, explain, images, inference, registry, weights
from zoo.errors import InvalidArgumentError, ZooError
from zoo.settings import REPO_ROOT, Settings, get_settings
from zoo.transfer import runs, serve
from zoo.ui import apidoc, arch_views, degradation_tab, feedback, transfer_tab, transfer_views, views

log = logging.getLogger(__name__)
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.jpg"))
IMAGE_TYPES = list(images.ACCEPTED_EXTENSIONS)
UPLOAD_HINT = f"{images.ACCEPTED_TEXT}; other files are refused unread."
INTRO = ("# ResNet Zoo\nEvery ResNet and ResNeXt in timm: classify an image, compare depths, see the architecture "
         "as the paper draws it, train a head on your own classes. **Why residual?** shows depth hurting plain "
         "nets and helping residual ones.")



def user_errors(fn: Callable) -> Callable:
    """Show a ZooError's message as a gr.Error; log anything else and show a short note (no stack trace)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ZooError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception as exc:
            log.exception("UI handler %s failed", fn.__name__)
            raise gr.Error(f"Internal error ({type(exc).__name__}); the server log has the details.",
                           print_exception=False) from None

    return wrapper


def _image(image: str | None) -> str:
    if not image:
        raise InvalidArgumentError("Upload an image first, or pick one of the examples.")
    return image


def _download_bar(progress: gr.Progress, name: str) -> Callable[[int, int | None], None]:
    """A `weights.resolve` progress callback that moves the UI's bar in megabytes."""

    def report(done: int, total: int | None) -> None:
        if total:
            progress(done / total, desc=f"Downloading {name}: {done / 1e6:.0f} of {total / 1e6:.0f} MB")

    return report


def _ready(names: Iterable[str], progress: gr.Progress) -> None:
    """Download (with a byte progress bar) and load each model that is not ready yet."""
    eng = inference.engine()
    todo = [n for n in dict.fromkeys(names) if not eng.is_ready(n)]
    for i, name in enumerate(todo):
        weights.resolve(name, progress=_download_bar(progress, name))
        progress((i, len(todo)), desc=f"Loading {name}", unit="models")
        eng.slot(name)


@feedback.to_status(2, file_arg=0, model_arg=1)
@accel.gpu
def classify(image: str | None, model: str, progress: gr.Progress = gr.Progress()) -> tuple[dict[str, float], str]:
    """Top-5 classes of one image (ImageNet, or a fine-tuned run's own) and the forward pass's latency."""
    if runs.exists(model):
        pred = serve.classify(_image(image), model)
        return dict(pred.top), f"**{pred.latency_ms:.1f} ms** forward pass on {pred.device} (fine-tuned run)."
    _ready([model], progress)
    pred = inference.classify([_image(image)], model)[0][0]
    return views.top_label(pred), views.latency(pred)


@feedback.to_status(4, file_arg=0, model_arg=1)
@accel.gpu
def explain_image(image: str | None, model: str) -> tuple[Any, list, str, Any]:
    """Grad-CAM overlay for the top class and the strongest channels of each stage (ImageNet tags)."""
    if runs.exists(model):
        return (None, [], "Grad-CAM and stage maps are drawn for the ImageNet tags; this is a fine-tuned run.",
                gr.update(visible=False))
    exp = explain.explain(_image(image), model)
    gallery = [(explain.sheet(st, tile=96, columns=4),
                f"{st.stage} ({st.module}): {st.shape[0]} channels at {st.shape[1]}x{st.shape[2]}; "
                f"the {len(st.maps)} strongest") for st in exp.stages]
    note = (f"Grad-CAM for **{exp.target.label.name}** ({exp.target.probability:.1%}): bright where conv5_x "
            "features push that class up. Early stages respond to edges and textures, later ones to parts.")
    return exp.overlay, gallery, note, gr.update(visible=True)


@feedback.to_status(1, file_arg=0)
def preview(image: str | None) -> Any:
    """The upload as the zoo's own decoder reads it (the allow-list and limits first), or nothing."""
    if not image:
        return gr.update(value=None, visible=False)
    return gr.update(value=images.decode(image), visible=True)


@user_errors
def model_card(model: str) -> str:
    """A tag's card (size, cost, published accuracy, license, preprocessing, its weights), or a run's."""
    if runs.exists(model):
        return transfer_views.run_card(runs.get(model))
    return views.card(registry.get(model))


@feedback.to_status(4, file_arg=0)
@accel.gpu
def compare_depths(image: str | None, models: list[str] | None, progress: gr.Progress = gr.Progress()):
    """Side-by-side predictions, costs, agreement, and accuracy-vs-cost points for the chosen tags."""
    tags = models or compare.default_tags()
    path = _image(image)
    _ready(tags, progress)
    cmp = compare.compare(path, tags)
    cost, speed = views.scatter_frames(cmp)
    return views.comparison_table(cmp), views.agreement(cmp), cost, speed


@feedback.to_status(2, file_arg=0)
@accel.gpu
def evaluate_zip(dataset: str | None, models: list[str] | None, progress: gr.Progress = gr.Progress()):
    """Top-1/top-5 of each chosen tag on a zip of class folders."""
    if not dataset:
        raise InvalidArgumentError("Upload a .zip of class folders (named by synset or ImageNet class) first.")
    tags = models or compare.default_tags()
    _ready(tags, progress)
    ev = evaluate.evaluate(Path(dataset), tags,
                           progress=lambda done, total: progress((done, total), desc="Evaluating", unit="images"))
    return views.evaluation_table(ev), views.evaluation_note(ev)


@feedback.to_status(4)
def architecture_view(archs: list[str] | None, resolution: float, plain: bool = False) -> tuple[Any, str, str, str]:
    """Stage table, block diagrams (in the order chosen, with plain twins if asked), shortcut and cardinality
    facts of the chosen networks."""
    if not archs:
        raise InvalidArgumentError("Tick at least one network to see its stages and diagram.")
    described = [architecture.describe(a, int(resolution)) for a in archs]
    drawings = blockdiagram.figure(described, plain_twins=bool(plain))
    return (arch_views.stage_table(described), drawings,
            "\n\n".join(arch_views.shortcut_facts(a) for a in described),
            arch_views.resnext_facts(described))


def model_choices() -> tuple[Any, Any]:
    """The pickers' models, each marked when its weights are not here: Classify's (ImageNet tags, then the
    fine-tuned runs stored here) and Compare's."""
    return gr.update(choices=transfer_tab.picker_choices()), gr.update(choices=views.model_choices())


@user_errors
def catalog() -> Any:
    """Every registry tag with its published results, license and whether its weights are here."""
    return views.zoo_table()


def pick_row(evt: gr.SelectData) -> str:
    return str(evt.row_value[0]).removesuffix(" ★")


@feedback.to_status(1)
def zoo_card(model: str) -> str:
    """The card of the tag picked in the Model zoo table."""
    if not model:
        return "Select a row to see its card."
    entry = registry.get(model)
    return views.card(entry) + "\n\n" + views.download_links(entry)


@feedback.to_status(2, model_arg=0)
def fetch_weights(model: str, progress: gr.Progress = gr.Progress()) -> tuple[str, Any]:
    """Download a tag's weights into the store (from the Hub, with a progress bar) and refresh the views."""
    if not (model or "").strip():
        raise InvalidArgumentError("Click a row of the table (or type a tag) first, then Fetch weights.")
    entry = registry.get(model.strip().removesuffix(" ★"))
    weights.resolve(entry.name, progress=_download_bar(progress, entry.name))
    gr.Info(f"{entry.name} is on this machine.")
    return zoo_card.__wrapped__(entry.name), views.zoo_table()


def _status(elem_id: str) -> gr.Markdown:
    """A tab's status line: empty, or one sentence on what went wrong and what to do."""
    return gr.Markdown(label="Status", elem_id=elem_id, elem_classes=["zoo-status"])


def build_demo(settings: Settings | None = None, rest_routes: Iterable[Any] = ()) -> gr.Blocks:
    """The whole UI. Cheap to build: no model, weight or network access happens here."""
    settings = settings or get_settings()
    choices = views.model_choices()
    default = registry.get("resnet50").name
    examples = [[str(p)] for p in EXAMPLES]
    heavy = {"concurrency_id": "heavy", "concurrency_limit": 1}  # one multi-model job at a time per device
    quiet = {"queue": False, "api_visibility": "private"}

    with gr.Blocks(title="ResNet Zoo", analytics_enabled=False) as demo:
        gr.Markdown(INTRO, elem_id="intro")
        banner = gr.Markdown(label="Missing weights", elem_id="banner")
        with gr.Tabs(overflow_behavior="wrap"):
            with gr.Tab("Classify", id="classify"):
                with gr.Row(equal_height=False):
                    with gr.Column():
                        image = gr.File(type="filepath", label="Image", height=120, elem_id="classify-image")
                        shown = gr.Image(label="As the model reads it", interactive=False, visible=False,
                                         height=240, elem_id="classify-preview", buttons=[])
                        model = gr.Dropdown(choices, value=default, label="Model", allow_custom_value=True,
                                            elem_id="classify-model",
                                            info="★ each architecture's default tag, % its published ImageNet "
                                                 "top-1; \"not downloaded\": fetched from the Hub on first use.")
                        run = gr.Button("Classify", variant="primary", elem_id="classify-run")
                        status = _status("classify-status")
                        gr.Examples(examples, [image], label=f"Examples (CC0 and public domain). {UPLOAD_HINT}",
                                    cache_examples=False, api_name="classify_example", examples_per_page=8)
                    with gr.Column():
                        top5 = gr.Label(num_top_classes=5, label="Top-5", elem_id="classify-top5")
                        timing = gr.Markdown(label="Latency")
                        card = gr.Markdown(label="Model card")
                with gr.Row(visible=False, elem_id="explain-row") as explain_row:
                    cam = gr.Image(label="Grad-CAM", interactive=False, height=300, elem_id="gradcam")
                    with gr.Column():
                        cam_note = gr.Markdown(label="What Grad-CAM shows")
                        stages = gr.Gallery(label="Strongest channels of each stage", columns=2, height="auto")
            with gr.Tab("Why residual?", id="degradation"):
                degradation_runs = degradation_tab.build_tab()
            with gr.Tab("Compare", id="compare"):
                with gr.Row():
                    with gr.Column(scale=1):
                        cmp_image = gr.File(type="filepath", label="Image", height=120, elem_id="compare-image")
                        gr.Examples(examples, [cmp_image], cache_examples=False, api_name="compare_example",
                                    examples_per_page=8)
                    with gr.Column(scale=2):
                        cmp_models = gr.Dropdown(choices, value=compare.default_tags(), multiselect=True,
                                                 allow_custom_value=True, elem_id="compare-models",
                                                 label="Models", info="Default: the depth ladder and ResNeXt-50.")
                        cmp_run = gr.Button("Compare", variant="primary", elem_id="compare-run")
                        cmp_status = _status("compare-status")
                        cmp_agree = gr.Markdown(label="Agreement")
                cmp_table = gr.Dataframe(pd.DataFrame(columns=views.COMPARE_COLUMNS), label="Side by side",
                                         interactive=False, wrap=True, elem_id="compare-table",
                                         column_widths=views.COMPARE_WIDTHS)
                with gr.Row():
                    cost_plot = gr.ScatterPlot(x="GMACs", y="published top-1", color="set", tooltip=["model"],
                                               label="Published top-1 vs GMACs (every tag)")
                    speed_plot = gr.ScatterPlot(x="latency (ms)", y="published top-1", color="set",
                                                tooltip=["model"],
                                                label="Published top-1 vs warm latency here (median, first call "
                                                      "apart)")
                with gr.Accordion("Evaluate the chosen models on your labelled images", open=False):
                    gr.Markdown("A .zip of class folders, each named by its WordNet synset (`n02123045`) or "
                                "ImageNet class name (`tabby`). Unreadable images are skipped and listed.")
                    dataset = gr.File(file_types=[".zip"], label="Labelled zip")
                    eval_run = gr.Button("Evaluate")
                    eval_table = gr.Dataframe(interactive=False, label="Accuracy here")
                    eval_note = gr.Markdown(label="Dataset")
            with gr.Tab("Architecture", id="architecture"):
                with gr.Row():
                    archs = gr.CheckboxGroup([(views.arch_title(a), a) for a in registry.ARCHITECTURES],
                                             value=["resnet18", "resnet50"], label="Networks (drawn in this order)",
                                             elem_id="arch-networks")
                    with gr.Column():
                        resolution = gr.Slider(64, 512, value=224, step=32, label="Input size (px)")
                        plain = gr.Checkbox(False, label="Draw each network's plain twin (no shortcuts) beside it",
                                            elem_id="arch-plain")
                arch_status = _status("arch-status")
                drawings = gr.HTML(label="Diagram", elem_id="arch-diagram")
                stage_table = gr.Dataframe(label="Stages (the paper's Table 1, from the real timm models)",
                                           interactive=False, wrap=True, elem_id="stage-table",
                                           column_widths=arch_views.STAGE_WIDTHS)
                gr.Markdown(arch_views.block_facts())
                with gr.Row():
                    shortcuts = gr.Markdown(label="Shortcuts")
                    groups = gr.Markdown(label="Cardinality")
            with gr.Tab("Model zoo", id="zoo"):
                with gr.Row():
                    picked = gr.Textbox(label="Model", placeholder="click a row, or type a tag", scale=3,
                                        elem_id="zoo-picked")
                    fetch = gr.Button("Fetch weights", scale=1, elem_id="zoo-fetch")
                zoo_status = _status("zoo-status")
                zoo_card_md = gr.Markdown(label="Model card")
                zoo_table = gr.Dataframe(interactive=False, show_search="search", max_height=520,
                                         label="Every tag: click a row for its card (click a header to sort)",
                                         elem_id="zoo-table")
            with gr.Tab("Transfer lab", id="transfer"):
                stored_runs = transfer_tab.build_tab(model)
            with gr.Tab("API", id="api"):
                api_doc = gr.Markdown(label="API guide", elem_id="api-doc")

        image.change(preview, image, [shown, status], api_name="preview", **quiet)
        run.click(classify, [image, model], [top5, timing, status], api_name="classify",
                  concurrency_id="classify", concurrency_limit=settings.max_batch).success(
            explain_image, [image, model], [cam, stages, cam_note, explain_row, status], api_name="explain",
            **heavy)
        gr.on([demo.load, model.change], model_card, model, card, api_name="model_card", queue=False)
        cmp_run.click(compare_depths, [cmp_image, cmp_models],
                      [cmp_table, cmp_agree, cost_plot, speed_plot, cmp_status], api_name="compare",
                      show_progress_on=[cmp_status], **heavy)
        eval_run.click(evaluate_zip, [dataset, cmp_models], [eval_table, eval_note, cmp_status], api_name="evaluate",
                       show_progress_on=[eval_note], **heavy)
        gr.on([demo.load, archs.change, resolution.release, plain.change], architecture_view,
              [archs, resolution, plain], [stage_table, drawings, shortcuts, groups, arch_status],
              api_name="architecture", queue=False)
        demo.load(catalog, None, zoo_table, api_name="catalog", queue=False)
        demo.load(user_errors(transfer_tab.stored_runs), None, stored_runs, api_name="runs", queue=False)
        demo.load(user_errors(degradation_tab.stored_table), None, degradation_runs, api_name="degradation_runs",
                  queue=False)
        demo.load(user_errors(model_choices), None, [model, cmp_models], api_name="model_choices", queue=False)
        zoo_table.select(pick_row, None, picked, api_name="pick_row", **quiet)
        picked.change(zoo_card, picked, [zoo_card_md, zoo_status], api_name="zoo_card", queue=False)
        fetch.click(fetch_weights, picked, [zoo_card_md, zoo_table, zoo_status], api_name="fetch",
                    concurrency_id="fetch", concurrency_limit=2, show_progress_on=[zoo_status])

        def status_and_guide(request: gr.Request) -> tuple[str, str]:
            """Which default weights are missing, and this API guide for this server."""
            base = f"{request.headers.get('x-forwarded-proto', request.url.scheme)}://{request.headers['host']}"
            return (views.banner(compare.default_tags(), settings),
                    apidoc.render(demo.get_api_info(), rest_routes, base))

        demo.load(user_errors(status_and_guide), None, [banner, api_doc], api_name="status", queue=False)
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=1)
    return demo


THEME = gr.themes.Soft(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
