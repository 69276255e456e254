"""The Architecture tab: the paper's Table 1 computed from the real timm models, diagrams, shortcut and
cardinality facts. Wiring only: every handler calls a service."""

from __future__ import annotations

from typing import Any

import gradio as gr

from zoo import architecture, registry
from zoo.errors import InvalidArgumentError
from zoo.ui import arch_views, views
from zoo.ui.wiring import user_errors


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


def build_tab(demo: gr.Blocks) -> None:
    """The tab's components and events (call inside the Blocks, in a gr.Tab)."""
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

    gr.on([demo.load, archs.change, resolution.release], architecture_view, [archs, resolution],
          [stage_table, drawings, shortcuts, groups], api_name="architecture", queue=False)
