"""What the UI shows, computed from the services: model choices, cards, tables and plot data (no Gradio here)."""

from __future__ import annotations

from collections import Counter

import pandas as pd

from zoo import catalog, hub, images, registry, weights
from zoo.compare import Comparison
from zoo.errors import InvalidArgumentError
from zoo.evaluate import Evaluation
from zoo.inference import Prediction
from zoo.registry import ModelEntry
from zoo.resolver import Resolved
from zoo.settings import Settings, get_settings
from zoo.transfer.runs import Run

ROBUSTNESS = (("imagenet-real", "ReaL"), ("imagenetv2", "V2"), ("sketch", "Sketch"),
              ("imagenet-r", "IN-R"), ("imagenet-a", "IN-A"))
ZOO_COLUMNS = ["model", "family", "depth", "params (M)", "GMACs", "eval px", "top-1", "top-5",
               *(f"{label} top-1" for _, label in ROBUSTNESS), "license", "pretrained on", "local"]
# The short numbers first (they must show without scrolling on a laptop); the long text last, wrapped.
COMPARE_COLUMNS = ["model", "params (M)", "GMACs", "published top-1", "latency (ms)", "first call (ms)", "run by",
                   "top-1 here", "top-5 here"]
# px, not %: a phone scrolls sideways (model first) instead of breaking words into letters
COMPARE_WIDTHS = ["180px", "80px", "70px", "90px", "90px", "90px", "110px", "170px", "330px"]
MISSING = "not downloaded"  # the pickers' mark for a tag whose weights are not on this machine


def arch_title(arch: str) -> str:
    """resnet50 -> ResNet-50, resnext101_32x8d -> ResNeXt-101 32x8d."""
    for prefix, title in (("resnext", "ResNeXt"), ("resnet", "ResNet")):
        if arch.startswith(prefix):
            depth, _, groups = arch[len(prefix):].partition("_")
            return f"{title}-{depth}" + (f" {groups}" if groups else "")
    return arch


def _order(e: ModelEntry) -> tuple:
    return (e.family != "resnet", e.depth, registry.ARCHITECTURES.index(e.arch), not e.is_default,
            -(e.top1 or 0.0))


def model_choices(entries: list[ModelEntry] | None = None, settings: Settings | None = None) -> list[tuple[str, str]]:
    """(label, tag) for every tag with an ImageNet head, grouped by family then depth, defaults first; a tag
    whose weights are not on this machine is marked `MISSING`."""
    settings = settings or get_settings()
    pool = [e for e in (entries or registry.load()) if e.has_imagenet_head]
    return [(f"{arch_title(e.arch)} · {e.tag}{' ★' if e.is_default else ''}"
             + (f" · {e.top1:.1f}%" if e.top1 is not None else "")
             + ("" if weights.where(e, settings) else f" · {MISSING}"), e.name) for e in sorted(pool, key=_order)]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}%"


def card(entry: ModelEntry, settings: Settings | None = None) -> str:
    """A short Markdown card: what the model is, what it costs, how it scores, where its weights are."""
    settings = settings or get_settings()
    place = {"store": "on this machine (weight store)", "hf-cache": "on this machine (Hugging Face cache)",
             None: "not on this machine yet"}[weights.where(entry, settings)]
    block = "bottleneck" if entry.block == "bottleneck" else "basic"
    data = "ImageNet-1k" if entry.pretrain == "in1k" else f"{entry.pretrain}, then fine-tuned on ImageNet-1k"
    groups = f", {entry.cardinality} groups × {entry.base_width} channels" if entry.cardinality > 1 else ""
    return "\n".join([
        f"### {entry.name}" + (" ★ default" if entry.is_default else ""),
        f"{arch_title(entry.arch)}: {entry.depth} weighted layers, {block} blocks {list(entry.layers)}{groups}.",
        "",
        f"- **Parameters**: {entry.params / 1e6:.2f} M",
        f"- **Compute**: {entry.gmacs_eval:.2f} GMACs at {entry.eval_size} px"
        + (f" ({entry.gmacs:.2f} at 224 px)" if entry.eval_size != 224 else ""),
        f"- **Published ImageNet top-1 / top-5**: {_pct(entry.top1)} / {_pct(entry.top5)} at {entry.eval_size} px",
        f"- **License**: {entry.license or 'not stated by timm'}",
        f"- **Trained on**: {data}",
        f"- **Preprocessing**: {images.preprocessing(entry).describe()}",
        f"- **Weights**: {place}; Hub repo `{entry.hf_hub_id}`",
    ])


def download_links(entry: ModelEntry, settings: Settings | None = None) -> str:
    """Markdown links to the REST API's file, header and card for `entry`, if this server has its weights."""
    stored = catalog.stored_file(entry.name, settings or get_settings())
    base = f"/api/models/{entry.name}"
    if stored is None:
        return f"Not on this server yet: **Fetch weights** downloads it. [Card as JSON]({base})"
    return (f"[⬇ Download `{stored.filename}`]({base}/weights) ({stored.size / 1e6:.1f} MB, SHA-256 "
            f"`{stored.sha256[:16]}…`) · [safetensors header]({base}/header) · [card as JSON]({base}) · "
            f"Hub mirror: `/{entry.hf_hub_id}/resolve/main/{entry.hf_filename}`")


def card_of(target: Resolved) -> str:
    """The card of whatever a name resolved to: a registry tag's, or a fine-tuned run's."""
    return run_card(target) if isinstance(target, Run) else card(target)


def run_card(run: Run) -> str:
    classes = ", ".join(run.classes[:20]) + (" …" if len(run.classes) > 20 else "")
    pre = run.preprocessing
    return "\n".join([
        f"### {run.id}",
        f"Fine-tuned from **{run.tag}** ({arch_title(run.base.arch)}) with the **{run.strategy}** strategy "
        f"on {run.dataset}.",
        "",
        f"- **Classes** ({len(run.classes)}): {classes}",
        f"- **Validation**: top-1 {run.val_top1:.2f}%, macro-F1 {run.macro_f1:.2f}% "
        f"(best of {run.epochs} epochs: {run.best_epoch})",
        f"- **Trained**: {run.trainable_params:,} parameters in {run.train_s:.1f} s",
        f"- **Input**: {pre.size} px, mean {tuple(pre.mean)} std {tuple(pre.std)}",
        f"- **Download**: [`{run.id}.safetensors`](/api/models/{run.id}/weights) · "
        f"[card as JSON](/api/models/{run.id})",
    ])


def top_label(pred: Prediction) -> dict[str, float]:
    """{class name: probability} for gr.Label; a name two classes share gets its synset."""
    counts = Counter(s.label.name for s in pred.top)
    return {(s.label.name if counts[s.label.name] == 1 else f"{s.label.name} ({s.label.synset})"): s.probability
            for s in pred.top}


def latency(pred: Prediction) -> str:
    run = " (a fine-tuned run)" if pred.kind == "finetuned" else ""
    return (f"**{pred.latency_ms:.1f} ms** forward pass on {pred.device} ({pred.backend}, "
            f"batch of {pred.batch_size}){run}.")


def comparison_table(cmp: Comparison) -> pd.DataFrame:
    rows = []
    for r in cmp.rows:
        best = r.prediction.top[0]
        rows.append({
            "model": r.entry.name, "params (M)": round(r.entry.params / 1e6, 1),
            "GMACs": round(r.entry.gmacs_eval, 2), "published top-1": r.entry.top1,
            "latency (ms)": round(r.latency_ms, 1), "first call (ms)": round(r.first_ms, 1),
            "run by": backend_name(r.backend),
            "top-1 here": f"{best.label.name} ({best.probability:.1%})",
            "top-5 here": ", ".join(s.label.name for s in r.prediction.top[:5]),
        })
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def backend_name(backend: str) -> str:
    """A backend's name for a table cell: latencies of ONNX Runtime and eager PyTorch are not comparable."""
    if backend.startswith("onnxruntime"):
        return "ONNX Runtime"
    return "PyTorch, GPU" if "cuda" in backend else "PyTorch"


def agreement(cmp: Comparison) -> str:
    a = cmp.agreement
    n = len(cmp.rows)
    votes = "; ".join(f"**{name}**: {len(models)} of {n}" for name, models in a.top1_votes.items())
    common = ", ".join(lbl.name for lbl in a.common_top5) or "none"
    head = "All models agree on the top-1 class." if a.all_same_top1 else "The models disagree on the top-1 class."
    return f"{head} Top-1 votes: {votes}. Classes in every model's top-5: {common}."


def scatter_frames(cmp: Comparison) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Published top-1 against GMACs (every tag with a result, the chosen ones highlighted) and
    against the warm latency measured here (the chosen ones; the first call, with its one-off set-up, left out)."""
    chosen = {r.entry.name for r in cmp.rows}
    cost = pd.DataFrame([{"model": e.name, "GMACs": e.gmacs_eval, "published top-1": e.top1,
                          "set": "compared" if e.name in chosen else "other tags"}
                         for e in registry.load() if e.top1 is not None])
    speed = pd.DataFrame([{"model": p["model"], "latency (ms)": p["latency_ms"], "published top-1": p["published_top1"],
                           "set": "compared"} for p in cmp.scatter() if p["published_top1"] is not None])
    return cost, speed


def evaluation_table(ev: Evaluation) -> pd.DataFrame:
    return pd.DataFrame([{"model": s.model, "images": s.n, "top-1 here": round(s.top1, 2),
                          "top-5 here": round(s.top5, 2), "published top-1": s.published_top1,
                          "ms / image": round(s.latency_ms / max(s.n, 1), 2)} for s in ev.scores])


def evaluation_note(ev: Evaluation) -> str:
    n = max((s.n for s in ev.scores), default=0)
    text = f"{n} images in {ev.classes} classes."
    if ev.skipped:
        listed = "; ".join(f"`{f}`: {why}" for f, why in ev.skipped[:10])
        more = f" (and {len(ev.skipped) - 10} more)" if len(ev.skipped) > 10 else ""
        text += f" Skipped {len(ev.skipped)} file(s) that could not be read: {listed}{more}."
    return text


def _missing_last(value: float | None, sign: float = 1.0) -> tuple:
    return (value is None, sign * (value or 0.0))


# the Model zoo's orders (a picker above the table: one tap on a phone, where a header's sort menu is hard to hit)
ZOO_SORTS: dict[str, object] = {
    "family, then depth": _order,
    "published top-1, best first": lambda e: (_missing_last(e.top1, -1.0), _order(e)),
    "GMACs, cheapest first": lambda e: (e.gmacs_eval, _order(e)),
    "parameters, fewest first": lambda e: (e.params, _order(e)),
    "top-1 per GMAC, best first": lambda e: (_missing_last(e.top1 and e.top1 / max(e.gmacs_eval, 1e-9), -1.0),
                                             _order(e)),
}
ZOO_SORT_DEFAULT = next(iter(ZOO_SORTS))


def zoo_table(query: str = "", settings: Settings | None = None, sort: str = ZOO_SORT_DEFAULT) -> pd.DataFrame:
    """Every tag matching `query` (words in name, family, license, pretraining data), one row each, in the order
    `sort` names (a key of ZOO_SORTS; empty: the default)."""
    settings, sort = settings or get_settings(), sort or ZOO_SORT_DEFAULT
    if sort not in ZOO_SORTS:
        raise InvalidArgumentError(f"Sort by one of: {', '.join(ZOO_SORTS)} (not {sort!r}).")
    rows = []
    for e in sorted(registry.list_models(text=query or None), key=ZOO_SORTS[sort]):
        rows.append([
            e.name + (" ★" if e.is_default else ""), e.family, e.depth, round(e.params / 1e6, 2),
            round(e.gmacs_eval, 2), e.eval_size, e.top1, e.top5,
            *((r.top1 if (r := e.result(ds)) else None) for ds, _ in ROBUSTNESS),
            e.license or "unknown", e.pretrain, weights.where(e, settings) or "no",
        ])
    return pd.DataFrame(rows, columns=ZOO_COLUMNS)


def banner(tags: list[str], settings: Settings | None = None) -> str:
    """Markdown note naming the weights in `tags` this machine lacks and what a visitor can do; "" if none."""
    settings = settings or get_settings()
    missing = [e.name for e in map(registry.get, tags) if weights.where(e, settings) is None]
    if not missing:
        return ""
    offline = settings.hf_offline or hub.reachability.is_down
    if offline and not weights.store(settings).records():
        why = ("the Hugging Face Hub cannot be reached from this server and no model's weights are on it, so "
               "whoever runs it has to import weight files (the README's \"Weights\" section)")
    elif offline:
        why = (f"the Hugging Face Hub cannot be reached from this server, so use the models not marked "
               f"\"{MISSING}\"")
    else:
        why = "they download from the Hugging Face Hub on first use, with a progress bar"
    several = f"{len(missing)} of the default models are" if len(missing) > 1 else "A default model is"
    return (f"<details><summary>⚠️ <b>{several} not on this machine yet</b>: {why}.</summary>\n\n"
            f"{', '.join(f'`{t}`' for t in missing)}. Why residual?, Architecture and Model zoo work without "
            "them.\n</details>")
