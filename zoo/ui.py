"""The Gradio UI: `build_demo()` lays out the tabs and wires every event to a service; no logic lives here."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import gradio as gr

from zoo import (
    accel,
    apidoc,
    arch_views,
    architecture,
    compare,
    evaluate,
    explain,
    inference,
    registry,
    ui_degradation,
    ui_transfer,
    views,
    views_transfer,
    weights,
)
from zoo.errors import InvalidArgumentError, ZooError
from zoo.settings import REPO_ROOT, Settings, get_settings
from zoo.transfer import runs, serve

log = logging.getLogger(__name__)
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.jpg"))
IMAGE_SOURCES = ["upload", "clipboard", "webcam"]
INTRO = ("# ResNet Zoo\nClassify images with every ResNet and ResNeXt in timm, compare depths on the same image, "
         "and see the architecture computed from the real models. Residual blocks learn F(x) = H(x) − x and "
         "output ReLU(F(x) + x), so depth helps instead of hurting: **Why residual?** shows it happen.")



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
        raise InvalidArgumentError("Upload, paste or capture an image first, or pick one of the examples.")
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


@user_errors
@accel.gpu
def classify(image: str | None, model: str, progress: gr.Progress = gr.Progress()) -> tuple[dict[str, float], str]:
    """Top-5 classes of one image (ImageNet, or a fine-tuned run's own) and the forward pass's latency."""
    if runs.exists(model):
        pred = serve.classify(_image(image), model)
        return dict(pred.top), f"**{pred.latency_ms:.1f} ms** forward pass on {pred.device} (fine-tuned run)."
    _ready([model], progress)
    pred = inference.classify([_image(image)], model)[0][0]
    return views.top_label(pred), views.latency(pred)


@user_errors
@accel.gpu
def explain_image(image: str | None, model: str) -> tuple[Any, list, str]:
    """Grad-CAM overlay for the top class and the strongest channels of each stage (ImageNet tags)."""
    if runs.exists(model):
        return None, [], "Grad-CAM and stage maps are drawn for the ImageNet tags; this is a fine-tuned run."
    exp = explain.explain(_image(image), model)
    gallery = [(explain.sheet(st, tile=96, columns=4),
                f"{st.stage} ({st.module}): {st.shape[0]} channels at {st.shape[1]}x{st.shape[2]}; "
                f"the {len(st.maps)} strongest") for st in exp.stages]
    note = (f"Grad-CAM for **{exp.target.label.name}** ({exp.target.probability:.1%}): bright where conv5_x "
            "features push that class up. Early stages respond to edges and textures, later ones to parts.")
    return exp.overlay, gallery, note


@user_errors
def model_card(model: str) -> str:
    """A tag's card (size, cost, published accuracy, license, preprocessing, its weights), or a run's."""
    if runs.exists(model):
        return views_transfer.run_card(runs.get(model))
    return views.card(registry.get(model))


@user_errors
@accel.gpu
def compare_depths(image: str | None, models: list[str] | None, progress: gr.Progress = gr.Progress()):
    """Side-by-side predictions, costs, agreement, and accuracy-vs-cost points for the chosen tags."""
    tags = models or compare.default_tags()
    path = _image(image)
    _ready(tags, progress)
    cmp = compare.compare(path, tags)
    cost, speed = views.scatter_frames(cmp)
    return views.comparison_table(cmp), views.agreement(cmp), cost, speed


@user_errors
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


@user_errors
def architecture_view(archs: list[str] | None, resolution: float) -> tuple[Any, str, str, str]:
    """Stage table, diagrams, shortcut and cardinality facts of the chosen networks."""
    if not archs:
        raise InvalidArgumentError("Pick at least one network.")
    described = [architecture.describe(a, int(resolution)) for a in archs]
    drawings = "".join(f"<h4>{views.arch_title(a.arch)}</h4>{arch_views.diagram(a)}" for a in described)
    return (arch_views.stage_table(described), drawings,
            "\n\n".join(arch_views.shortcut_facts(a) for a in described),
            arch_views.resnext_facts(described))


def model_choices() -> Any:
    """The Classify tab's models: ImageNet tags, then the fine-tuned runs stored here."""
    return gr.update(choices=ui_transfer.picker_choices())


@user_errors
def catalog() -> Any:
    """Every registry tag with its published results, license and whether its weights are here."""
    return views.zoo_table()


def pick_row(evt: gr.SelectData) -> str:
    return str(evt.row_value[0]).removesuffix(" ★")


@user_errors
def zoo_card(model: str) -> str:
    """The card of the tag picked in the Model zoo table."""
    if not model:
        return "Select a row to see its card."
    entry = registry.get(model)
    return views.card(entry) + "\n\n" + views.download_links(entry)


@user_errors
def fetch_weights(model: str, progress: gr.Progress = gr.Progress()) -> tuple[str, Any]:
    """Download a tag's weights into the store (from the Hub, with a progress bar) and refresh the views."""
    entry = registry.get(model)
    weights.resolve(entry.name, progress=_download_bar(progress, entry.name))
    gr.Info(f"{entry.name} is on this machine.")
    return zoo_card(entry.name), views.zoo_table()


def build_demo(settings: Settings | None = None, rest_routes: Iterable[Any] = ()) -> gr.Blocks:
    """The whole UI. Cheap to build: no model, weight or network access happens here."""
    settings = settings or get_settings()
    choices = views.model_choices()
    default = registry.get("resnet50").name
    examples = [[str(p)] for p in EXAMPLES]
    heavy = {"concurrency_id": "heavy", "concurrency_limit": 1}  # one multi-model job at a time per device

    with gr.Blocks(title="ResNet Zoo", analytics_enabled=False,
                   delete_cache=(settings.upload_ttl_s, settings.upload_ttl_s)) as demo:  # uploads: ZOO_UPLOAD_TTL_S
        gr.Markdown(INTRO)
        banner = gr.Markdown(label="Missing weights", elem_id="banner")
        with gr.Tabs():
            with gr.Tab("Classify", id="classify"):
                with gr.Row():
                    with gr.Column():
                        image = gr.Image(type="filepath", image_mode=None, sources=IMAGE_SOURCES, label="Image",
                                         height=320, elem_id="classify-image")
                        model = gr.Dropdown(choices, value=default, label="Model", allow_custom_value=True,
                                            elem_id="classify-model",
                                            info="By family and depth; ★ marks each architecture's default tag, "
                                                 "% its published ImageNet top-1.")
                        run = gr.Button("Classify", variant="primary", elem_id="classify-run")
                        gr.Examples(examples, [image], label="Examples (CC0 and public domain, from scikit-image)",
                                    cache_examples=False, api_name="classify_example")
                    with gr.Column():
                        top5 = gr.Label(num_top_classes=5, label="Top-5", elem_id="classify-top5")
                        timing = gr.Markdown(label="Latency")
                        card = gr.Markdown(label="Model card")
                with gr.Row():
                    cam = gr.Image(label="Grad-CAM", interactive=False, height=300, elem_id="gradcam")
                    with gr.Column():
                        cam_note = gr.Markdown(label="What Grad-CAM shows")
                        stages = gr.Gallery(label="Strongest channels of each stage", columns=2, height="auto")
            with gr.Tab("Why residual?", id="degradation"):
                degradation_runs = ui_degradation.build_tab()
            with gr.Tab("Compare depths", id="compare"):
                with gr.Row():
                    with gr.Column(scale=1):
                        cmp_image = gr.Image(type="filepath", image_mode=None, sources=IMAGE_SOURCES, label="Image",
                                             height=260)
                        gr.Examples(examples, [cmp_image], cache_examples=False, api_name="compare_example")
                    with gr.Column(scale=2):
                        cmp_models = gr.Dropdown(choices, value=compare.default_tags(), multiselect=True,
                                                 allow_custom_value=True,
                                                 label="Models", info="Default: the depth ladder and ResNeXt-50.")
                        cmp_run = gr.Button("Compare", variant="primary", elem_id="compare-run")
                        cmp_agree = gr.Markdown(label="Agreement")
                cmp_table = gr.Dataframe(label="Side by side", interactive=False, elem_id="compare-table")
                with gr.Row():
                    cost_plot = gr.ScatterPlot(x="GMACs", y="published top-1", color="set", tooltip=["model"],
                                               label="Published top-1 vs GMACs (every tag)")
                    speed_plot = gr.ScatterPlot(x="latency (ms)", y="published top-1", color="set",
                                                tooltip=["model"], label="Published top-1 vs latency measured here")
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
                                             value=["resnet18", "resnet50"], label="Networks")
                    resolution = gr.Slider(64, 512, value=224, step=32, label="Input size (px)")
                stage_table = gr.Dataframe(label="Stages (the paper's Table 1, from the real timm models)",
                                           interactive=False, wrap=True, elem_id="stage-table")
                drawings = gr.HTML(label="Diagram")
                gr.Markdown(arch_views.block_facts())
                with gr.Row():
                    shortcuts = gr.Markdown(label="Shortcuts")
                    groups = gr.Markdown(label="Cardinality")
            with gr.Tab("Model zoo", id="zoo"):
                zoo_table = gr.Dataframe(interactive=False, show_search="search", max_height=520,
                                         label="Every tag: click a row for its card", elem_id="zoo-table")
                with gr.Row():
                    picked = gr.Textbox(label="Model", placeholder="click a row, or type a tag", scale=3,
                                        elem_id="zoo-picked")
                    fetch = gr.Button("Fetch weights", scale=1)
                zoo_card_md = gr.Markdown(label="Model card")
            with gr.Tab("Transfer lab", id="transfer"):
                stored_runs = ui_transfer.build_tab(model)
            with gr.Tab("API", id="api"):
                api_doc = gr.Markdown(label="API guide", elem_id="api-doc")

        run.click(classify, [image, model], [top5, timing], api_name="classify",
                  concurrency_id="classify", concurrency_limit=settings.max_batch).success(
            explain_image, [image, model], [cam, stages, cam_note], api_name="explain", **heavy)
        gr.on([demo.load, model.change], model_card, model, card, api_name="model_card", queue=False)
        cmp_run.click(compare_depths, [cmp_image, cmp_models], [cmp_table, cmp_agree, cost_plot, speed_plot],
                      api_name="compare", **heavy)
        eval_run.click(evaluate_zip, [dataset, cmp_models], [eval_table, eval_note], api_name="evaluate", **heavy)
        gr.on([demo.load, archs.change, resolution.release], architecture_view, [archs, resolution],
              [stage_table, drawings, shortcuts, groups], api_name="architecture", queue=False)
        demo.load(catalog, None, zoo_table, api_name="catalog", queue=False)
        demo.load(user_errors(ui_transfer.stored_runs), None, stored_runs, api_name="runs", queue=False)
        demo.load(user_errors(ui_degradation.stored_table), None, degradation_runs, api_name="degradation_runs",
                  queue=False)
        demo.load(user_errors(model_choices), None, model, api_name="model_choices", queue=False)
        zoo_table.select(pick_row, None, picked, api_name="pick_row", api_visibility="private", queue=False)
        picked.change(zoo_card, picked, zoo_card_md, api_name="zoo_card", queue=False)
        fetch.click(fetch_weights, picked, [zoo_card_md, zoo_table], api_name="fetch", concurrency_id="fetch",
                    concurrency_limit=2)

        def status(request: gr.Request) -> tuple[str, str]:
            """Which default weights are missing (and how to get them), and this API guide for this server."""
            base = f"{request.headers.get('x-forwarded-proto', request.url.scheme)}://{request.headers['host']}"
            return (views.banner(compare.default_tags(), settings),
                    apidoc.render(demo.get_api_info(), rest_routes, base))

        demo.load(user_errors(status), None, [banner, api_doc], api_name="status", queue=False)
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=1)
    return demo


THEME = gr.themes.Soft(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
