"""Depth comparison: one image through many tags, side by side, with agreement and cost figures."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from zoo import images, inference, registry
from zoo.inference import Engine, Label, Prediction
from zoo.registry import ModelEntry

DEFAULT_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d")
WARM_RUNS = 3  # timed passes after the first, per model; their median is the latency a comparison reports


def default_tags() -> list[str]:
    """The default tag of ResNet-18/34/50/101/152 and ResNeXt-50 32x4d (registry.DEFAULT_POLICY)."""
    return [registry.get(a).name for a in DEFAULT_ARCHS]


@dataclass(frozen=True)
class Row:
    """One model in a comparison: its answer and what it costs."""

    entry: ModelEntry
    prediction: Prediction
    warm_ms: tuple[float, ...] = ()  # the passes timed after the first one, on the same batch
    warm_backend: str | None = None  # what ran them (ONNX Runtime may take over from eager between passes)

    @property
    def backend(self) -> str:
        """What ran the passes `latency_ms` reports."""
        return self.warm_backend or self.prediction.backend

    @property
    def first_ms(self) -> float:
        """The first forward pass of this comparison: it may include one-off set-up (kernels, caches)."""
        return self.prediction.latency_ms

    @property
    def latency_ms(self) -> float:
        """The median of the warm passes (the first pass when none were timed)."""
        return statistics.median(self.warm_ms) if self.warm_ms else self.first_ms

    def as_dict(self) -> dict:
        e = self.entry
        return {"model": e.name, "architecture": e.arch, "depth": e.depth, "family": e.family,
                "params_m": round(e.params / 1e6, 2), "gmacs": e.gmacs_eval, "eval_size": e.eval_size,
                "published_top1": e.top1, "published_top5": e.top5, **self.prediction.as_dict(),
                "latency_ms": round(self.latency_ms, 3), "first_call_ms": round(self.first_ms, 3),
                "warm_runs": len(self.warm_ms), "latency_backend": self.backend}


@dataclass(frozen=True)
class Agreement:
    """How far the models agree on one image."""

    all_same_top1: bool
    top1_votes: dict[str, list[str]]  # class name -> models whose top-1 it is, most votes first
    common_top5: list[Label]  # classes in every model's top-5
    overlap: list[list[int]]  # overlap[i][j]: classes shared by the top-5 of model i and model j


@dataclass(frozen=True)
class Comparison:
    rows: list[Row]
    agreement: Agreement

    def scatter(self) -> list[dict]:
        """Points for accuracy-vs-cost plots: published top-1 against GMACs and measured latency."""
        return [{"model": r.entry.name, "arch": r.entry.arch, "gmacs": r.entry.gmacs_eval,
                 "latency_ms": round(r.latency_ms, 3), "published_top1": r.entry.top1,
                 "params_m": round(r.entry.params / 1e6, 2)} for r in self.rows]

    def as_dict(self) -> dict:
        a = self.agreement
        return {"models": [r.as_dict() for r in self.rows],
                "agreement": {"all_same_top1": a.all_same_top1, "top1_votes": a.top1_votes,
                              "common_top5": [lb.name for lb in a.common_top5], "top5_overlap": a.overlap},
                "scatter": self.scatter()}


def agreement(preds: list[Prediction]) -> Agreement:
    votes: dict[str, list[str]] = defaultdict(list)
    for p in preds:
        votes[p.top[0].label.name].append(p.model)
    tops = [[s.label for s in p.top[:5]] for p in preds]
    sets = [{lb.index for lb in t} for t in tops]
    common = [lb for lb in tops[0] if all(lb.index in s for s in sets)] if tops else []
    return Agreement(all_same_top1=len(votes) == 1,
                     top1_votes=dict(sorted(votes.items(), key=lambda kv: -len(kv[1]))),
                     common_top5=common,
                     overlap=[[len(a & b) for b in sets] for a in sets])


def compare(image: images.Source, tags: list[str] | None = None, *, engine: Engine | None = None,
            top_k: int = 5, device: str | torch.device | None = None, warm_runs: int = WARM_RUNS,
            progress: Callable[[int, int, str], None] | None = None) -> Comparison:
    """One image through `tags` (default: `default_tags()`), each as a batch of one, timed on this device.

    Each model's first pass is kept apart (`Row.first_ms`: on a fresh process it includes one-off set-up and
    says nothing about the architecture); `warm_runs` more passes on the same batch give the latency reported.
    `progress(done, total, what)` is told of each step (the first passes of all models, then each one's timing).

    Raises:
        InvalidImageError, UnknownModelError, InvalidArgumentError, WeightsUnavailableError, ...
    """
    eng = engine or inference.engine()
    names = [registry.get(t).name for t in (tags or default_tags())]
    names = list(dict.fromkeys(names))  # a tag asked twice is compared once
    tell = progress or (lambda done, total, what: None)
    tell(0, len(names), f"First pass of {len(names)} model{'s' if len(names) > 1 else ''}")
    preds = eng.classify([image], names, top_k=max(top_k, 5), device=device)[0]  # checks and names the image
    entries = [registry.get(p.model) for p in preds]
    decoded = images.decode(image, min_side=images.draft_side([images.preprocessing(e) for e in entries])) \
        if warm_runs > 0 else None
    rows = []
    for i, (e, p) in enumerate(zip(entries, preds, strict=True)):
        if warm_runs > 0:
            tell(i, len(entries), f"Timing {e.name} ({warm_runs} pass{'es' if warm_runs > 1 else ''})")
        rows.append(Row(e, p, *_warm(eng, e, decoded, warm_runs, device)))
    return Comparison(rows, agreement(preds))


def _warm(eng: Engine, entry: ModelEntry, image, runs: int, device) -> tuple[tuple[float, ...], str | None]:
    """(milliseconds of `runs` further forward passes of `entry` on the image, each a batch of one; the backend
    that ran the last of them)."""
    if image is None or runs <= 0:
        return (), None
    batch = images.preprocess(images.preprocessing(entry), image).unsqueeze(0)
    passes = [eng.logits(entry.name, batch, device) for _ in range(runs)]
    return tuple(p[1] for p in passes), passes[-1][3]
