"""The image box of Classify and Compare: Gradio's image component in the browser (drop, click, paste, webcam;
the browser draws the preview) whose server side never opens the file.

`gr.Image` would open every upload with Pillow (any of its plugins) and re-save it before a handler runs; this
one hands the handler the uploaded file's path, unread, so the zoo's decoder (its allow-list and size limits
first) is the only code that parses it."""

from __future__ import annotations

from typing import Any

import gradio as gr
from gradio.data_classes import ImageData

from zoo import images
from zoo.errors import ZooError
from zoo.ui import feedback

SOURCES = ["upload", "clipboard", "webcam"]  # the webcam needs https or localhost (browsers' rule)


def image_box(**kwargs: Any) -> gr.Image:
    """`gr.Image` in the browser (upload, paste, webcam) whose handlers get the uploaded file's path, unread."""
    box = gr.Image(type="filepath", sources=SOURCES, **kwargs)
    # on the instance, not in a subclass: Gradio calls `block.preprocess(payload)`, and a subclass of a component
    # would make Gradio write a .pyi stub beside this module and send the browser the subclass's arguments
    box.preprocess = _path_unread
    return box


def _path_unread(payload: ImageData | None) -> str | None:
    return payload.path if payload is not None else None


def examples(box: gr.Image, paths: list[list[str]], *, label: str, elem_id: str, api_name: str) -> gr.Dataset:
    """Example photos under `box`: a click puts the photo's path in the box as a plain value.

    Not `gr.Examples`: it loads an example with a component update, and Gradio answers an update by building a
    fresh `gr.Image` for the session, which would bring back Gradio's own preprocessing (Pillow, every plugin)
    for every later upload in that session."""
    shown = gr.Dataset(components=[box], samples=paths, label=label, elem_id=elem_id, samples_per_page=8)
    shown.click(lambda sample: sample[0], shown, box, api_name=api_name, api_visibility="private", queue=False,
                show_progress="hidden")
    return shown


def check(image: str | None) -> str:
    """The status line right after an upload: empty when the zoo's decoder reads it, else the sentence why
    (before anyone presses a button)."""
    if not image:
        return ""
    try:
        images.decode(image, min_side=512)  # a large JPEG is checked at a fraction of its size
    except ZooError as exc:
        return feedback.shown(feedback.sentence(exc, file=image))
    return ""
