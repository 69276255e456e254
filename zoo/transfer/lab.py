"""One transfer run (`zoo.transfer.grid` trains many): load a pretrained tag, replace its head, train what the
strategy trains (frozen-backbone strategies on cached features), measure it on the validation split, store it."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from zoo import checkpoint, images, models, paths, registry, weights
from zoo.errors import InvalidDatasetError, OutOfMemoryError
from zoo.settings import Settings, get_settings
from zoo.transfer import distributed, heads, quota, runs
from zoo.transfer.data import Dataset, Example
from zoo.transfer.fit import Callback, FitConfig, History, fit, predict, stop_if_cancelled
from zoo.transfer.metrics import Scores, score

log = logging.getLogger(__name__)


@dataclass
class Result:
    run_id: str
    tag: str
    strategy: str
    classes: list[str]
    scores: Scores
    history: History
    trainable_params: int
    train_seconds: float  # the training loop
    feature_seconds: float  # preparing its inputs: the backbone pass (0 with a warm feature cache)
    features_cached: bool  # the backbone features came from the cache
    size: int  # input side in pixels

    def row(self) -> dict[str, Any]:
        return {"run": self.run_id, "model": self.tag, "strategy": self.strategy,
                "val_top1": round(100 * self.scores.top1, 2), "macro_f1": round(100 * self.scores.macro_f1, 2),
                "train_s": round(self.train_seconds, 2), "features_s": round(self.feature_seconds, 2),
                "trainable_params": self.trainable_params, "epochs": len(self.history.epochs),
                "best_epoch": self.history.best_epoch}


def _pre(tag: str, size: int | None) -> images.Preprocessing:
    pre = images.preprocessing(registry.get(tag))
    return dataclasses.replace(pre, size=size) if size else pre


def _pixels(dataset: Dataset, pre: images.Preprocessing, settings: Settings) -> tuple[torch.Tensor, torch.Tensor]:
    """The train and validation images as model inputs, decoded one at a time into one tensor per split (training
    the whole network goes over them every epoch).

    Raises:
        InvalidDatasetError: they would take more than ZOO_TRAIN_MEMORY_MB.
    """
    n = len(dataset.train) + len(dataset.val)
    need = n * 3 * pre.size * pre.size * 4
    if need > settings.train_memory_mb * 2**20:
        raise InvalidDatasetError(
            f"Training the whole network keeps every image in memory as a tensor: {n:,} images at {pre.size} px "
            f"take {need / 2**20:,.0f} MiB, more than this server gives one run ({settings.train_memory_mb:,} MiB, "
            "ZOO_TRAIN_MEMORY_MB). Choose a smaller input size, fewer images, or a strategy that keeps the "
            "backbone frozen (those read the images a batch at a time).")
    return _tensor(dataset.train, pre), _tensor(dataset.val, pre)


def _tensor(examples: Sequence[Example], pre: images.Preprocessing) -> torch.Tensor:
    x = torch.empty(len(examples), 3, pre.size, pre.size)
    for i, ex in enumerate(examples):
        x[i] = images.preprocess(pre, ex.image)
    return x


def _labels(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.tensor([ex.label for ex in split]) for split in (dataset.train, dataset.val))


def feature_key(tag: str, dataset: Dataset, pre: images.Preprocessing, settings: Settings) -> str:
    """What backbone features depend on: the weights (by SHA-256), the data, the preprocessing."""
    record = weights.store(settings).record(registry.get(tag).name)
    parts = [tag, record.sha256 if record else "unstored", dataset.fingerprint, repr(pre), torch.__version__]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def _features(model: heads.Transfer, dataset: Dataset, pre: images.Preprocessing, key: str, device: torch.device,
              batch: int, settings: Settings, write: bool = True,
              cancel: threading.Event | None = None) -> tuple[tuple[torch.Tensor, ...], float, bool]:
    """(train features, labels, val features, labels), seconds spent, whether the cache had them.

    With the cache warm, no image is even preprocessed. `cancel` is checked between batches: the backbone's pass
    over every image takes minutes at 224 px on a CPU, before the head trains a single step.

    Raises:
        Cancelled: `cancel` was set; nothing is cached.
    """
    y_train, y_val = _labels(dataset)
    path = paths.feature_cache(settings) / f"{key}.safetensors"
    if path.is_file():
        try:
            t = checkpoint.read_tensors(path)
            with contextlib.suppress(OSError):
                os.utime(path)  # used now: the last to go when the cache is over ZOO_FEATURE_CACHE_MB
            return (t["train"], y_train, t["val"], y_val), 0.0, True
        except Exception:  # a damaged cache entry: compute again and replace it
            path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    backbone = model.backbone.eval()
    feats = []
    for split in (dataset.train, dataset.val):
        parts = []
        for i in range(0, len(split), batch):  # a batch of pixels at a time: never every image as one tensor
            stop_if_cancelled(cancel)
            parts.append(predict(backbone, _tensor(split[i:i + batch], pre), batch, device))
        feats.append(torch.cat(parts))
    size = sum(f.numel() * f.element_size() for f in feats)
    if write and size <= settings.feature_cache_mb * 2**20:  # under torchrun only the main process writes the cache
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            checkpoint.save_atomic({"train": feats[0], "val": feats[1]}, path, {"format": "pt"})
            bound_cache(path.parent, settings.feature_cache_mb * 2**20, keep=path)
        except OSError as exc:  # a cache only saves time: a full or read-only disk must not end the run
            log.warning("features not cached (%s): %s", path.parent, exc.strerror or exc)
    return (feats[0], y_train, feats[1], y_val), time.perf_counter() - t0, False


def bound_cache(folder: Path, most: int, keep: Path) -> None:
    """Remove the least recently used `*.safetensors` of `folder` (by modification time: a hit touches its file)
    until they take at most `most` bytes; `keep` (the one just written) stays."""
    entries = []
    for f in folder.glob("*.safetensors"):
        with contextlib.suppress(OSError):
            st = f.stat()
            entries.append((st.st_mtime, st.st_size, f))
    total = sum(size for _, size, _ in entries)
    for _, size, f in sorted(entries, key=lambda e: e[0]):
        if total <= most:
            break
        if f != keep:
            f.unlink(missing_ok=True)
            total -= size


def train(dataset: Dataset, tag: str, strategy: str, config: FitConfig | None = None, *, size: int | None = None,
          device: str | torch.device | None = None, callback: Callback | None = None,
          cancel: threading.Event | None = None, settings: Settings | None = None) -> Result:
    """Train one (tag, strategy) on `dataset` and store the run.

    Raises:
        UnknownModelError, WeightsUnavailableError, InvalidArgumentError, Cancelled, OutOfMemoryError,
        QuotaExceededError (the stored runs take ZOO_RUNS_MAX_MB).
    """
    settings = settings or get_settings()
    entry = registry.get(tag)
    if not distributed.stores():  # under torchrun, rank 0 alone stores the run, so it alone holds the quota
        return _train(dataset, entry, strategy, config, size, device, callback, cancel, settings)
    with quota.reserved(settings, runs.model_bytes(entry.name)):  # before any work, held until stored
        return _train(dataset, entry, strategy, config, size, device, callback, cancel, settings)


def _train(dataset: Dataset, entry: registry.ModelEntry, strategy: str, config: FitConfig | None, size: int | None,
           device: str | torch.device | None, callback: Callback | None, cancel: threading.Event | None,
           settings: Settings) -> Result:
    config = config or FitConfig()
    if config.lr is None:
        config = dataclasses.replace(config, lr=heads.DEFAULT_LR[heads.check(strategy)])
    runs.check_space(entry.name, settings)  # before the work, not after it
    world = distributed.init(device)
    dev = models.resolve_device(distributed.device_for(world, device) or settings.device)
    torch.manual_seed(config.seed)
    model = heads.Transfer(models.create_model(entry.name, device=dev, settings=settings), strategy,
                           len(dataset.classes)).to(dev)
    pre = _pre(entry.name, size)
    if strategy in heads.FROZEN_BACKBONE:
        data, feature_s, cached = _features(model, dataset, pre, feature_key(entry.name, dataset, pre, settings), dev,
                                            config.batch_size * 2, settings, write=world.is_main, cancel=cancel)
        target = model.head
    else:
        t0 = time.perf_counter()
        (x_train, x_val), (y_train, y_val) = _pixels(dataset, pre, settings), _labels(dataset)
        data, feature_s, cached, target = (x_train, y_train, x_val, y_val), time.perf_counter() - t0, False, model
    history = _fit_with_retry(target, model, data, config, dev, callback, cancel, world)
    logits = predict(target, data[2], config.batch_size * 2, dev)
    scores = score(logits, data[3], len(dataset.classes))
    run_id = f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{entry.name}-{strategy}-{uuid.uuid4().hex[:6]}"
    result = Result(run_id, entry.name, strategy, dataset.classes, scores, history, model.trainable_params(),
                    history.seconds, feature_s, cached, pre.size)
    record = {**result.row(), "id": run_id, "tag": entry.name, "classes": dataset.classes, "dataset": dataset.name,
              "dataset_fingerprint": dataset.fingerprint, "config": dataclasses.asdict(config),
              "preprocessing": dataclasses.asdict(pre), "history": history.epochs, "confusion": scores.confusion,
              "per_class_acc": scores.per_class, "created": datetime.now(UTC).isoformat(timespec="seconds"),
              "skipped": dataset.skipped}
    if world.is_main:
        runs.save(run_id, record, model, settings)
    return result


def _fit_with_retry(target, model, data, config: FitConfig, dev: torch.device, callback, cancel,
                    world: distributed.World) -> History:
    """`fit`; on CUDA out of memory, once more at half the batch size, then a clear error."""
    groups = (model.param_groups(config.lr, config.backbone_lr_scale) if target is model
              else [{"params": list(target.parameters()), "lr": config.lr}])
    try:
        return fit(target, groups, data, config, device=dev, callback=callback, cancel=cancel, world=world)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
    smaller = dataclasses.replace(config, batch_size=max(1, config.batch_size // 2))
    try:
        return fit(target, groups, data, smaller, device=dev, callback=callback, cancel=cancel, world=world)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        raise OutOfMemoryError(f"Out of GPU memory at batch size {config.batch_size} and again at "
                               f"{smaller.batch_size}: use a smaller --batch-size or --size, or a lighter "
                               "strategy.") from None
