"""Classifying with a stored transfer run (a fine-tuned model over the user's own classes)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import torch

from zoo import images, models
from zoo.settings import get_settings
from zoo.transfer import runs
from zoo.transfer.heads import Transfer

CACHED_RUNS = 4  # fine-tuned models kept loaded, least recently used dropped first

_lock = threading.Lock()
_loaded: OrderedDict[tuple[str, str], tuple[Transfer, images.Preprocessing, list[str]]] = OrderedDict()


@dataclass(frozen=True)
class RunPrediction:
    run: str
    top: list[tuple[str, float]]  # (class name, probability), best first
    latency_ms: float
    device: str


def _model(run_id: str, device: torch.device) -> tuple[Transfer, images.Preprocessing, list[str]]:
    key = (run_id, str(device))
    with _lock:
        if key in _loaded:
            _loaded.move_to_end(key)
            return _loaded[key]
    model, record = runs.load_model(run_id)
    pre = record["preprocessing"]
    item = (model.to(device).eval(), images.Preprocessing(**{**pre, "mean": tuple(pre["mean"]),
                                                               "std": tuple(pre["std"])}), record["classes"])
    with _lock:
        _loaded[key] = item
        while len(_loaded) > CACHED_RUNS:
            _loaded.popitem(last=False)
    return item


def forget(run_id: str) -> None:
    """Drop a run's loaded model (after it is deleted)."""
    with _lock:
        for key in [k for k in _loaded if k[0] == run_id]:
            del _loaded[key]


def classify(source: images.Source, run_id: str, top_k: int = 5, device: str | None = None) -> RunPrediction:
    """Top classes of one image under a stored run's model, with its preprocessing.

    Raises:
        WeightsUnavailableError (no such run), InvalidImageError.
    """
    dev = models.resolve_device(device or get_settings().device)
    model, pre, classes = _model(run_id, dev)
    x = images.preprocess(pre, images.decode(source, min_side=images.draft_side([pre])))[None].to(dev)
    t0 = time.perf_counter()
    with torch.no_grad():
        probs = torch.softmax(model(x).float(), 1)[0].cpu()
    ms = (time.perf_counter() - t0) * 1000
    values, idx = probs.topk(min(top_k, len(classes)))
    return RunPrediction(run_id, [(classes[i], float(p)) for p, i in zip(values.tolist(), idx.tolist(), strict=True)],
                         ms, str(dev))
