"""The tags x strategies grid: load the data once, train every (tag, strategy) pair, report through callbacks,
stop on cancel. One service for the UI's Transfer lab and `python -m zoo train`; neither runs the loop itself."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from zoo import registry, residency
from zoo.errors import Cancelled, InvalidArgumentError
from zoo.settings import Settings
from zoo.transfer import data, heads, lab, runs
from zoo.transfer.data import Dataset
from zoo.transfer.fit import FitConfig, Report


@dataclass(frozen=True)
class Grid:
    dataset: Dataset
    results: list[lab.Result]  # in training order: tags outermost

    def best(self) -> lab.Result:
        return max(self.results, key=lambda r: r.scores.top1)


def check(tags: Sequence[str], strategies: Sequence[str]) -> tuple[list[str], list[str]]:
    """The registry tags and the strategies, checked before any work starts.

    Raises:
        InvalidArgumentError: none of one of them, or an unknown strategy. UnknownModelError: an unknown tag.
    """
    strategies = [heads.check(s.strip()) for s in strategies if s and s.strip()]
    if not tags or not strategies:
        raise InvalidArgumentError("Pick at least one model and one strategy.")
    return [registry.get(t).name for t in tags], strategies


def train(source: str | Path, tags: Sequence[str], strategies: Sequence[str], config: FitConfig | None = None, *,
          size: int | None = None, val_fraction: float = 0.2, seed: int = 0,
          device: str | torch.device | None = None, cancel: threading.Event | None = None,
          on_dataset: Callable[[Dataset], None] | None = None,
          on_start: Callable[[str, str], None] | None = None,
          on_report: Callable[[str, str, Report], None] | None = None,
          on_result: Callable[[lab.Result], None] | None = None,
          settings: Settings | None = None) -> Grid:
    """Train every (tag, strategy) pair on `source` (`digits`, a folder or a zip of class folders), tags outermost
    so a tag's cached backbone features serve all its frozen-backbone strategies. Each run is stored.

    Callbacks, all on the calling thread: `on_dataset` once the data is read, `on_start(tag, strategy)` before a
    run, `on_report(tag, strategy, report)` per step and epoch, `on_result(result)` after it.

    Raises:
        InvalidArgumentError, UnknownModelError, InvalidDatasetError, WeightsUnavailableError, Cancelled,
        OutOfMemoryError.
    """
    tags, strategies = check(tags, strategies)
    runs.check_space(tags, settings, each=len(strategies))  # a full or read-only store refuses before unpacking
    what = "Cannot start training" if str(source) == data.DIGITS else f"Cannot unpack {Path(str(source)).name}"
    # an upload's extracted files live as long as the grid; what training freed goes back to the system after it
    with residency.trimmed_after(), data.job_folder(settings, what) as job:
        dataset = data.load(source, job, val_fraction=val_fraction, seed=seed, settings=settings)
        if on_dataset:
            on_dataset(dataset)
        results = []
        for tag in tags:
            for strategy in strategies:
                if cancel is not None and cancel.is_set():
                    raise Cancelled("The training grid was cancelled; the runs finished before it are kept.")
                if on_start:
                    on_start(tag, strategy)
                callback = (lambda r, t=tag, s=strategy: on_report(t, s, r)) if on_report else None
                result = lab.train(dataset, tag, strategy, config, size=size, device=device, callback=callback,
                                   cancel=cancel, settings=settings)
                results.append(result)
                if on_result:
                    on_result(result)
    return Grid(dataset, results)
