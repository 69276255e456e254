"""The lab's one entry point: load the data, reuse a stored result with the same settings and data, or
train and store a new one."""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from zoo import models, residency
from zoo.degradation import results
from zoo.degradation.data import load
from zoo.degradation.experiment import Callback, Config, Result, train
from zoo.errors import StoreError
from zoo.settings import Settings, get_settings


def run(config: Config | None = None, *, device: str | torch.device | None = None, callback: Callback | None = None,
        cancel: threading.Event | None = None, store: bool = True, reuse: bool = True,
        settings: Settings | None = None) -> Result:
    """Run (or recall) one experiment.

    Args:
        device: overrides ZOO_DEVICE (auto: CUDA with mixed precision when present, else the CPU).
        store: save the result under `weights/degradation/` (a failed save is reported in `Result.stored`,
            and the result is still returned: nothing trained is lost to a full or read-only disk).
        reuse: return a stored result of the same settings and data at once instead of training again.

    Raises:
        InvalidArgumentError, InvalidDatasetError, WeightsUnavailableError (CIFAR-10 offline), Cancelled.
    """
    settings = settings or get_settings()
    config = config or Config()
    dev = models.resolve_device(device or settings.device)
    from zoo.transfer.data import job_folder

    if config.data in ("digits", "cifar10") or Path(config.data).is_dir():
        tensors = load(config.data, config.size, Path("."), limit=config.limit, seed=config.seed, settings=settings)
    else:
        with job_folder(settings, f"Cannot unpack {Path(config.data).name}") as work:  # removed after reading
            tensors = load(config.data, config.size, work, limit=config.limit, seed=config.seed, settings=settings)
    if reuse and (found := results.get(config.key(tensors.fingerprint), settings)) is not None:
        return found
    with residency.trimmed_after():  # what training freed goes back to the system, cancelled or not
        result = train(tensors, config, dev, callback=callback, cancel=cancel)
    if store and not (cancel is not None and cancel.is_set()):
        try:
            result.stored = str(results.save(result, settings))
        except StoreError as exc:
            result.store_error = str(exc)
    return result
