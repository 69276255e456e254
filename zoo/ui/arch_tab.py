"""The Architecture tab: the paper's Table 1 computed from the real timm models, diagrams, shortcut and
cardinality facts. Wiring only: every handler calls a service."""

from __future__ import annotations

from typing import Any

import gradio as gr

from zoo import architecture, blockdiagram, registry
from zoo.errors import InvalidArgumentError
from zoo.ui import arch_views, feedback, views


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


def build_tab(demo: gr.Blocks) -> None:
    """The tab's components and events (call inside the Blocks, in a gr.Tab)."""
    with gr.Row():
        archs = gr.CheckboxGroup([(views.arch_title(a), a) for a in registry.ARCHITECTURES],
                                 value=["resnet18", "resnet50"], label="Networks (drawn in this order)",
                                 elem_id="arch-networks")
        with gr.Column():
            resolution = gr.Slider(64, 512, value=224, step=32, label="Input size (px)")
            plain = gr.Checkbox(False, label="Draw each network's plain twin (no shortcuts) beside it",
                                elem_id="arch-plain")
    arch_status = feedback.status_line("arch-status")
    drawings = gr.HTML(label="Diagram", elem_id="arch-diagram")
    stage_table = gr.Dataframe(label="Stages (the paper's Table 1, from the real timm models)",
                               interactive=False, wrap=True, elem_id="stage-table",
                               column_widths=arch_views.STAGE_WIDTHS)
    gr.Markdown(arch_views.block_facts())
    with gr.Row():
        shortcuts = gr.Markdown(label="Shortcuts")
        groups = gr.Markdown(label="Cardinality")

    outputs = [stage_table, drawings, shortcuts, groups, arch_status]
    demo.load(architecture_view, [archs, resolution, plain], outputs, api_name="architecture_on_load", queue=False,
              api_visibility="private")
    # a person's ticks are queued, so answers arrive in the order of the ticks (unqueued, a slower earlier answer
    # could land last and leave a stale drawing); a burst of ticks runs the latest only; no limit across visitors
    gr.on([archs.change, resolution.release, plain.change], architecture_view, [archs, resolution, plain], outputs,
          api_name="architecture", trigger_mode="always_last", concurrency_limit=None, show_progress="minimal")
