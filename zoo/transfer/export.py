"""A fine-tuned run as timm itself would save it: the `Transfer` wrapper's state dict renamed to the keys of
timm's model with a `len(classes)` head, so `timm.create_model("hf-hub:zoo/<run>", pretrained=True)` loads
it. Made once per run, atomically, beside the run's own file.

- `last-stage`, `full`: the new head is one Linear layer, timm's `fc`: keys renamed, tensors unchanged.
- `linear`: a parameter-free BatchNorm then a Linear layer; the BatchNorm's running statistics are folded
  into the Linear (W' = W / s, b' = b - W' mean, s = sqrt(var + eps)), in float64, so timm's `fc` computes
  the same function (equal to float32 rounding).
- `mlp`: a hidden layer, ReLU and dropout are not a timm ResNet classifier: no timm file (None).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from zoo import checkpoint, durable, integrity
from zoo.errors import InvalidArgumentError
from zoo.settings import Settings
from zoo.transfer import heads, runs

TIMM_FILE = "timm-model.safetensors"
TIMM_RECORD = "timm-model.json"
TIMM_HEADS = ("linear", "last-stage", "full")


def timm_loadable(strategy: str) -> bool:
    """Whether a run of this strategy has a timm-native form (every strategy but `mlp`)."""
    return strategy in TIMM_HEADS


def timm_state_dict(tensors: dict[str, torch.Tensor], strategy: str) -> dict[str, torch.Tensor]:
    """The run's tensors under timm's ResNet keys (`conv1.weight` … `fc.bias`).

    Raises:
        InvalidArgumentError: an `mlp` head, which timm's ResNet cannot hold.
    """
    if not timm_loadable(strategy):
        raise InvalidArgumentError(f"A {strategy!r} head is not a timm classifier; only {', '.join(TIMM_HEADS)} are.")
    out = {k.removeprefix("backbone."): v for k, v in tensors.items() if k.startswith("backbone.")}
    if strategy == "linear":
        eps = heads.make_head("linear", 1, 1)[0].eps  # the parameter-free BatchNorm1d of heads.make_head
        mean, var = tensors["head.0.running_mean"].double(), tensors["head.0.running_var"].double()
        weight = tensors["head.1.weight"].double() / torch.sqrt(var + eps)
        out["fc.weight"] = weight.float().contiguous()
        out["fc.bias"] = (tensors["head.1.bias"].double() - weight @ mean).float().contiguous()
    else:
        out["fc.weight"], out["fc.bias"] = tensors["head.0.weight"], tensors["head.0.bias"]
    return out


def timm_file(run_id: str, settings: Settings | None = None) -> tuple[Path, dict[str, Any]] | None:
    """(path, record with sha256 and size) of the run's timm-native weights, made now if missing or made
    from an older file; None for an `mlp` run.

    Raises:
        WeightsUnavailableError: no such run.
    """
    record = runs.get(run_id, settings)
    if not timm_loadable(record["strategy"]):
        return None
    folder = runs.folder(run_id, settings)
    found = _current(folder, record["sha256"])
    if found:
        return found
    with FileLock(str(folder / ".timm-model.lock")):
        found = _current(folder, record["sha256"])
        if found:
            return found
        tensors = timm_state_dict(checkpoint.read_tensors(folder / runs.MODEL_FILE), record["strategy"])
        meta = {"format": "pt", "zoo.kind": "finetuned", "zoo.run": run_id, "zoo.base": record["tag"],
                "zoo.strategy": record["strategy"], "zoo.class_names": json.dumps(record["classes"])}
        checkpoint.save_atomic(tensors, folder / TIMM_FILE, meta)
        made = {"source_sha256": record["sha256"], "sha256": checkpoint.sha256_file(folder / TIMM_FILE),
                "size": (folder / TIMM_FILE).stat().st_size}
        durable.write_json(folder / TIMM_RECORD, made)
    return folder / TIMM_FILE, made


def _current(folder: Path, source_sha256: str) -> tuple[Path, dict[str, Any]] | None:
    try:
        made = json.loads((folder / TIMM_RECORD).read_text())
        ok = made["source_sha256"] == source_sha256 and (folder / TIMM_FILE).stat().st_size == made["size"]
        verdict = ok and integrity.check(folder / TIMM_FILE, made["sha256"], made["size"])  # else: made again
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ok = ok and verdict is not None and verdict.checked is not None
    return (folder / TIMM_FILE, made) if ok else None
