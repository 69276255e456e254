"""The Model zoo tab: every tag with its published results, its card, and fetching its weights. Wiring only:
every handler calls a service."""

from __future__ import annotations

from typing import Any

import gradio as gr

from zoo import registry, resolver
from zoo.errors import InvalidArgumentError
from zoo.ui import feedback, views
from zoo.ui.wiring import download_bar, user_errors


@user_errors
def catalog(sort: str = views.ZOO_SORT_DEFAULT) -> Any:
    """Every registry tag with its published results, license and whether its weights are here, in the order
    `sort` names."""
    return views.zoo_table(sort=sort)


def pick_row(evt: gr.SelectData) -> str:
    return str(evt.row_value[0]).removesuffix(" ★")


def _card(model: str) -> str:
    if not model:
        return "Select a row to see its card."
    entry = registry.get(model)
    return views.card(entry) + "\n\n" + views.download_links(entry)


@feedback.to_status(1)
def zoo_card(model: str) -> str:
    """The card of the tag picked in the Model zoo table."""
    return _card(model)


@feedback.to_status(2, model_arg=0)
def fetch_weights(model: str, sort: str = views.ZOO_SORT_DEFAULT, progress: gr.Progress = gr.Progress()
                  ) -> tuple[str, Any]:
    """Download a tag's weights into the store (from the Hub, with a progress bar) and refresh the views; a
    failure leaves the table as it was and says why in the status line."""
    if not (model or "").strip():
        raise InvalidArgumentError("Click a row of the table (or type a tag) first, then Fetch weights.")
    entry = registry.get(model.strip().removesuffix(" ★"))
    resolver.fetch(entry.name, progress=download_bar(progress, entry.name))
    gr.Info(f"{entry.name} is on this machine.")
    return _card(entry.name), views.zoo_table(sort=sort)


def build_tab(demo: gr.Blocks) -> None:
    """The tab's components and events (call inside the Blocks, in a gr.Tab)."""
    with gr.Row():
        picked = gr.Textbox(label="Model", placeholder="click a row, or type a tag", scale=3, elem_id="zoo-picked")
        fetch = gr.Button("Fetch weights", scale=1, elem_id="zoo-fetch")
    zoo_status = feedback.status_line("zoo-status")
    sort = gr.Dropdown(list(views.ZOO_SORTS), value=views.ZOO_SORT_DEFAULT, label="Sort by", elem_id="zoo-sort",
                       filterable=False)  # a tap opens the list, not a phone's keyboard
    zoo_card_md = gr.Markdown(label="Model card")
    zoo_table = gr.Dataframe(interactive=False, show_search="search", max_height=520,
                             label="Every tag: click a row for its card", elem_id="zoo-table")

    demo.load(catalog, sort, zoo_table, api_name="catalog_on_load", queue=False, api_visibility="private")
    sort.change(catalog, sort, zoo_table, api_name="catalog", trigger_mode="always_last", concurrency_limit=None,
                show_progress="minimal")  # queued: answers land in the order of the picks
    zoo_table.select(pick_row, None, picked, api_name="pick_row", api_visibility="private", queue=False)
    picked.change(zoo_card, picked, [zoo_card_md, zoo_status], api_name="zoo_card", queue=False)
    fetch.click(fetch_weights, [picked, sort], [zoo_card_md, zoo_table, zoo_status], api_name="fetch",
                concurrency_id="fetch", concurrency_limit=2, show_progress_on=[zoo_status])
