"""The Classify tab: one image through one model (an ImageNet tag or a fine-tuned run), its Grad-CAM and stage
maps, and the model's card. Wiring only: every handler calls a service.

The image box is `upload.image_box`: drop, paste or webcam in the browser, and Gradio never opens the file, so
the zoo's own decoder (its allow-list and size limits first) is the only one that reads it."""

from __future__ import annotations

from typing import Any

import gradio as gr

from zoo import accel, explain, images, inference, registry, resolver
from zoo.settings import Settings
from zoo.ui import feedback, transfer_tab, upload, views
from zoo.ui.wiring import image as _image
from zoo.ui.wiring import ready, user_errors

UPLOAD_HINT = f"{images.ACCEPTED_TEXT}; other files are refused unread."


@feedback.to_status(2, file_arg=0, model_arg=1)
@accel.gpu
def classify(image: str | None, model: str, progress: gr.Progress = gr.Progress()) -> tuple[dict[str, float], str]:
    """Top-5 classes of one image (ImageNet, or a fine-tuned run's own) and the forward pass's latency."""
    path = _image(image)
    ready([model], progress)
    pred = inference.classify([path], model)[0][0]
    return views.top_label(pred), views.latency(pred)


@feedback.to_status(4, file_arg=0, model_arg=1)
@accel.gpu
def explain_image(image: str | None, model: str) -> tuple[Any, list, str, Any]:
    """Grad-CAM overlay for the top class and the strongest channels of each stage (ImageNet tags)."""
    if not explain.explainable(resolver.resolve(model)):
        return (None, [], "Grad-CAM and stage maps are drawn for the ImageNet tags; this is a fine-tuned run.",
                gr.update(visible=False))
    exp = explain.explain(_image(image), model)
    gallery = [(explain.sheet(st, tile=96, columns=4),
                f"{st.stage} ({st.module}): {st.shape[0]} channels at {st.shape[1]}x{st.shape[2]}; "
                f"the {len(st.maps)} strongest") for st in exp.stages]
    note = (f"Grad-CAM for **{exp.target.label.name}** ({exp.target.probability:.1%}): bright where conv5_x "
            "features push that class up. Early stages respond to edges and textures, later ones to parts.")
    return exp.overlay, gallery, note, gr.update(visible=True)


def explain_after(image: str | None, model: str, status: str | None = None) -> tuple:
    """`explain_image` once `classify` worked; after a failure its sentence stays alone in the status line."""
    if status:
        return tuple(gr.skip() for _ in range(5))
    return explain_image(image, model)


@user_errors
def model_card(model: str) -> str:
    """A tag's card (size, cost, published accuracy, license, preprocessing, its weights), or a run's."""
    return views.card_of(resolver.resolve(model))


@user_errors
def model_choices() -> tuple[Any, Any, Any]:
    """The pickers' models, each marked when its weights are not here: Classify's (ImageNet tags, then the
    fine-tuned runs stored here), Compare's and the transfer lab's."""
    tags = views.model_choices()
    return (gr.update(choices=transfer_tab.picker_choices()), gr.update(choices=tags), gr.update(choices=tags))


def build_tab(demo: gr.Blocks, settings: Settings, choices: list, examples: list[list[str]],
              heavy: dict[str, Any]) -> gr.Dropdown:
    """The tab's components and events (call inside the Blocks, in a gr.Tab); returns the model picker."""
    with gr.Row(equal_height=False):
        with gr.Column():
            image = upload.image_box(label="Image", height=220, elem_id="classify-image")
            model = gr.Dropdown(choices, value=registry.get("resnet50").name, label="Model", allow_custom_value=True,
                                elem_id="classify-model",
                                info="★ each architecture's default tag, % its published ImageNet top-1; "
                                     "\"not downloaded\": fetched from the Hub on first use.")
            run = gr.Button("Classify", variant="primary", elem_id="classify-run")
            status = feedback.status_line("classify-status")
            upload.examples(image, examples, label=f"Examples (CC0 and public domain). {UPLOAD_HINT}",
                            elem_id="classify-examples", api_name="classify_example")
        with gr.Column():
            top5 = gr.Label(num_top_classes=5, label="Top-5", elem_id="classify-top5")
            timing = gr.Markdown(label="Latency")
            card = gr.Markdown(label="Model card")
    with gr.Row(visible=False, elem_id="explain-row") as explain_row:
        cam = gr.Image(label="Grad-CAM", interactive=False, height=300, elem_id="gradcam")
        with gr.Column():
            cam_note = gr.Markdown(label="What Grad-CAM shows")
            stages = gr.Gallery(label="Strongest channels of each stage", columns=2, height="auto")

    image.change(upload.check, image, status, api_name="check_image", queue=False, api_visibility="private")
    explained = [cam, stages, cam_note, explain_row, status]
    run.click(classify, [image, model], [top5, timing, status], api_name="classify",
              concurrency_id="classify", concurrency_limit=settings.max_batch).success(
        explain_after, [image, model, status], explained, api_name="explain_after", api_visibility="private", **heavy)
    # /explain for API clients: the image and the model only (the browser's step above also reads the status line,
    # to stay quiet after a failed classification)
    gr.Button(visible=False).click(explain_image, [image, model], explained, api_name="explain", **heavy)
    gr.on([demo.load, model.change], model_card, model, card, api_name="model_card", queue=False)
    return model
