"""The Gradio UI's layout: `build_demo()` puts one tab per builder (each tab's module wires its own events to the
services) and the page-wide pieces: the intro, the missing-weights banner and the API guide."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import gradio as gr

from zoo import compare
from zoo.settings import REPO_ROOT, Settings, get_settings
from zoo.ui import apidoc, arch_tab, classify_tab, compare_tab, degradation_tab, transfer_tab, views, zoo_tab
from zoo.ui.wiring import user_errors

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.jpg"))
INTRO = ("# ResNet Zoo\nEvery ResNet and ResNeXt in timm: classify an image, compare depths, see the architecture "
         "as the paper draws it, train a head on your own classes. **Why residual?** shows depth hurting plain "
         "nets and helping residual ones.")


def build_demo(settings: Settings | None = None, rest_routes: Iterable[Any] = ()) -> gr.Blocks:
    """The whole UI. Cheap to build: no model, weight or network access happens here."""
    settings = settings or get_settings()
    choices = views.model_choices()
    examples = [[str(p)] for p in EXAMPLES]
    heavy = {"concurrency_id": "heavy", "concurrency_limit": 1}  # one multi-model job at a time per device

    with gr.Blocks(title="ResNet Zoo", analytics_enabled=False,
                   delete_cache=(settings.upload_ttl_s, settings.upload_ttl_s)) as demo:  # uploads: ZOO_UPLOAD_TTL_S
        gr.Markdown(INTRO, elem_id="intro")
        banner = gr.Markdown(label="Missing weights", elem_id="banner")
        with gr.Tabs(overflow_behavior="wrap"):  # every tab label visible on a phone, none behind a "..."
            with gr.Tab("Classify", id="classify"):
                model = classify_tab.build_tab(demo, settings, choices, examples, heavy)
            with gr.Tab("Why residual?", id="degradation"):
                degradation_tab.build_tab(demo)
            with gr.Tab("Compare", id="compare"):
                cmp_models = compare_tab.build_tab(choices, examples, heavy)
            with gr.Tab("Architecture", id="architecture"):
                arch_tab.build_tab(demo)
            with gr.Tab("Model zoo", id="zoo"):
                zoo_tab.build_tab(demo)
            with gr.Tab("Transfer lab", id="transfer"):
                lab_models = transfer_tab.build_tab(demo, model)
            with gr.Tab("API", id="api"):
                api_doc = gr.Markdown(label="API guide", elem_id="api-doc")

        @user_errors
        def status(request: gr.Request) -> tuple[str, str]:
            """Which default weights are missing, and this API guide for this server."""
            host = request.headers.get("host") or request.url.netloc  # HTTP/1.0 clients may send no Host
            base = f"{request.headers.get('x-forwarded-proto', request.url.scheme)}://{host}"
            return (views.banner(compare.default_tags(), settings),
                    apidoc.render(demo.get_api_info(), rest_routes, base))

        # the page's own housekeeping: callable, but not offered to API clients (they get component updates)
        demo.load(status, None, [banner, api_doc], api_name="status", queue=False, api_visibility="undocumented")
        demo.load(classify_tab.model_choices, None, [model, cmp_models, lab_models], api_name="model_choices",
                  queue=False, api_visibility="undocumented")
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=1)
    return demo


THEME = gr.themes.Soft(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
