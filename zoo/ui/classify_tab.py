"""The Classify tab: one image through one model (an ImageNet tag or a fine-tuned run), its Grad-CAM and stage
maps, and the model's card. Wiring only: every handler calls a service."""

from __future__ import annotations

from typing import Any

import gradio as gr

from zoo import accel, explain, inference, registry, resolver
from zoo.settings import Settings
from zoo.ui import transfer_tab, views
from zoo.ui.wiring import image as _image
from zoo.ui.wiring import ready, user_errors

IMAGE_SOURCES = ["upload", "clipboard", "webcam"]


@user_errors
@accel.gpu
def classify(image: str | None, model: str, progress: gr.Progress = gr.Progress()) -> tuple[dict[str, float], str]:
    """Top-5 classes of one image (ImageNet, or a fine-tuned run's own) and the forward pass's latency."""
    ready([model], progress)
    pred = inference.classify([_image(image)], model)[0][0]
    return views.top_label(pred), views.latency(pred)


@user_errors
@accel.gpu
def explain_image(image: str | None, model: str) -> tuple[Any, list, str]:
    """Grad-CAM overlay for the top class and the strongest channels of each stage (ImageNet tags)."""
    if not explain.explainable(resolver.resolve(model)):
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
    return views.card_of(resolver.resolve(model))


@user_errors
def model_choices() -> Any:
    """The Classify tab's models: ImageNet tags, then the fine-tuned runs stored here."""
    return gr.update(choices=transfer_tab.picker_choices())


def build_tab(demo: gr.Blocks, settings: Settings, choices: list, examples: list[list[str]],
              heavy: dict[str, Any]) -> gr.Dropdown:
    """The tab's components and events (call inside the Blocks, in a gr.Tab); returns the model picker."""
    with gr.Row():
        with gr.Column():
            image = gr.Image(type="filepath", image_mode=None, sources=IMAGE_SOURCES, label="Image",
                             height=320, elem_id="classify-image")
            model = gr.Dropdown(choices, value=registry.get("resnet50").name, label="Model", allow_custom_value=True,
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

    run.click(classify, [image, model], [top5, timing], api_name="classify",
              concurrency_id="classify", concurrency_limit=settings.max_batch).success(
        explain_image, [image, model], [cam, stages, cam_note], api_name="explain", **heavy)
    gr.on([demo.load, model.change], model_card, model, card, api_name="model_card", queue=False)
    demo.load(model_choices, None, model, api_name="model_choices", queue=False)
    return model
