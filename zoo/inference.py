"""Classification: images through one or many models -> top-k labels, probabilities, latency.

A model is whatever `resolver.resolve` names: a registry tag (ImageNet-1k labels, its pretrained preprocessing)
or a stored fine-tuned run (its own classes and preprocessing); both go through the same runners and batching.

`Engine` owns one runner per (model, device), behind a `batching.Slot`: requests for the same model that
queue while it is busy run together as one batch (at most ZOO_MAX_BATCH images, waiting ZOO_BATCH_WAIT_MS
for company), in the thread of one of the callers, so concurrent users share forward passes and an idle
engine adds no thread hand-off.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from zoo import backends, folding, images, loaded, models, paths, registry, residency, resolver, weights
from zoo.batching import Slot
from zoo.errors import InvalidArgumentError, InvalidImageError
from zoo.registry import ModelEntry
from zoo.resolver import Resolved
from zoo.settings import Settings, get_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Label:
    """One ImageNet-1k class as timm's ImageNetInfo names it."""

    index: int
    synset: str  # WordNet id, e.g. n01440764
    name: str  # first synonym, e.g. tench
    description: str  # all synonyms, e.g. "tench, Tinca tinca"


@functools.cache
def imagenet_labels() -> tuple[Label, ...]:
    """The 1000 ImageNet-1k classes in model output order."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    out = []
    for i in range(info.num_classes()):
        description = info.index_to_description(i)
        out.append(Label(i, info.index_to_label_name(i), description.split(",")[0].strip(), description))
    return tuple(out)


@dataclass(frozen=True)
class Scored:
    label: Label
    probability: float


@dataclass(frozen=True)
class Prediction:
    """One model's answer for one image."""

    model: str  # registry tag or run id
    top: tuple[Scored, ...]  # best first
    latency_ms: float  # wall time of the forward pass that computed it (its whole batch)
    batch_size: int  # images in that forward pass
    backend: str  # e.g. onnxruntime-cpu-fp32, eager-cuda-bfloat16
    device: str
    kind: str = "pretrained"  # or "finetuned": a stored run over its own classes (the catalog's kinds)

    def as_dict(self) -> dict:
        return {"model": self.model, "latency_ms": round(self.latency_ms, 3), "batch_size": self.batch_size,
                "backend": self.backend, "device": self.device,
                "top": [{"index": s.label.index, "synset": s.label.synset, "label": s.label.name,
                         "description": s.label.description, "probability": s.probability} for s in self.top]}


class Engine:
    """Classifies images with registry tags and fine-tuned runs; one per process is enough (see `engine()`)."""

    def __init__(self, settings: Settings | None = None, cache: models.ModelCache | None = None,
                 backend: str | None = None, background_export: bool = True):
        """
        Args:
            backend: CPU backend, overriding ZOO_CPU_BACKEND: `auto` serves eager until the ONNX export
                is ready, `onnx` waits for it, `eager` never exports.
            background_export: in `auto`, export missing ONNX graphs in the background (a server);
                False only uses graphs already exported (a one-shot CLI command).
        """
        self.settings = settings or get_settings()
        self.backend = backend or self.settings.cpu_backend
        self.background_export = background_export
        self.cache = cache or models.ModelCache(
            self.settings.model_memory_mb * 1024 * 1024,
            loader=functools.partial(inference_model, settings=self.settings),
            canonical=lambda name: resolver.resolve(name, settings=self.settings).name)
        self._slots: dict[str, Slot] = {}
        self._making: dict[str, threading.Lock] = {}  # one lock per (tag, device) being built
        self._lock = threading.Lock()
        self._exports: dict[str, threading.Thread] = {}
        self.resident = residency.Residency(self.settings.model_memory_mb * 1024 * 1024)

    # -- runners -------------------------------------------------------------------------------
    def slot(self, name: str, device: str | torch.device | None = None) -> Slot:
        target = self.check(name)
        dev = models.resolve_device(device or self.settings.device)
        key = f"{target.name}@{dev}"
        if loaded.stale(self, key, target.name, self.settings):  # its file was replaced or removed (#13)
            self._slots.pop(key, None), self.cache.clear()
        with self._lock:
            slot = self._slots.get(key)
            making = self._making.setdefault(key, threading.Lock())
        if slot is not None:
            return self._reuse(slot)
        with making:  # only callers of this (tag, device) wait while it is built, warmed up and exported
            with self._lock:
                slot = self._slots.get(key)
            if slot is not None:
                return self._reuse(slot)
            self.resident.make_room(self._stored_size(target))  # release before loading, not after
            model = self.cache.get(target.name, dev)
            family, size = resolver.entry(target).family, resolver.preprocessing(target).size
            runner = backends.EagerRunner(model, channels_last=backends.prefers_channels_last(family),
                                          compile=self.settings.compile)
            runner(torch.zeros(1, 3, size, size))  # warm-up: first-call costs not timed
            slot = Slot(key, str(dev), runner, self.settings.max_batch, self.settings.batch_wait_ms / 1000)
            if dev.type == "cpu" and self.backend != "eager" and isinstance(target, ModelEntry):
                self._start_fast_path(target, model, slot)  # ONNX graphs are exported for registry tags
            with self._lock:
                self._slots[key] = slot
            nbytes = slot.runner.path.stat().st_size if isinstance(slot.runner, backends.OnnxRunner) \
                else models.model_bytes(model)
            del model
            self.resident.admit(key, nbytes, functools.partial(self._release, key, target.name, dev))
        return slot

    def _reuse(self, slot: Slot) -> Slot:
        """Count a use of a ready slot; its second use starts the deferred ONNX export."""
        self.resident.touch(slot.key)
        with self._lock:
            slot.uses += 1
            export, slot.export = slot.export, None
        if export is not None:
            export.start()
        return slot

    def _release(self, key: str, name: str, dev: torch.device) -> None:
        """Drop a slot and its model for the memory budget (requests in flight still complete)."""
        with self._lock:
            slot = self._slots.pop(key, None)
            if slot is not None:
                slot.export = None
                slot.stop.set()  # an export still running would keep the eager model alive
            if key in self._exports and self._exports[key].ident is None:  # never started: it holds the model
                del self._exports[key]
        self.cache.discard(name, dev)

    def busy(self) -> bool:
        """Whether any request is running or queued (a background export waits meanwhile, and whole-file
        downloads are paced: `zoo.httpfiles`)."""
        with self._lock:
            return any(s.busy for s in self._slots.values())

    def _stored_size(self, target: Resolved) -> int:
        """Bytes of the file a model is built from (0 when unknown): what loading it will need."""
        if isinstance(target, ModelEntry):
            record = weights.store(self.settings).record(target.name)
            return record.size if record else 0
        return target.size or 0

    def _start_fast_path(self, entry: ModelEntry, model: torch.nn.Module, slot: Slot) -> None:
        if not backends.onnx_available():
            if self.backend == "onnx":
                raise InvalidArgumentError("ZOO_CPU_BACKEND=onnx needs onnxruntime and onnxscript "
                                           "(pip install -r requirements.txt).")
            return
        record = weights.store(self.settings).record(entry.name)
        if record is None:
            return
        path = backends.onnx_path(paths.onnx_cache(self.settings), entry.name, record.sha256,
                                  entry.eval_size)

        def build() -> None:
            try:
                backends.export_in_subprocess(entry.name, path, entry.eval_size, self.settings.weights_dir,
                                              pause=self.busy, stop=slot.stop)
                try:
                    fast = backends.OnnxRunner(path)
                except Exception as exc:  # a damaged cache file: drop it so the next start exports afresh
                    path.unlink(missing_ok=True)
                    raise backends.FastPathError(f"the cached ONNX graph {path.name} could not be loaded "
                                                 f"({str(exc)[:120]}); removed it, serving with eager PyTorch.") \
                        from exc
                worst = backends.check_against_eager(fast, model, entry.eval_size)
            except Exception as exc:  # the eager runner keeps serving; say why once
                log.warning("%s: %s", entry.name, str(exc))  # a string: a kept record must not pin the model
                return
            log.info("%s: ONNX Runtime ready (max |logit diff| vs eager %.1e)", entry.name, worst)
            slot.runner = fast
            self.cache.discard(entry.name, slot.device)  # the eager weights are no longer needed
            self.resident.resize(slot.key, path.stat().st_size)

        if path.exists() or self.backend == "onnx":
            build()  # a cached graph loads in a fraction of a second: use it from the first request
        elif self.background_export:  # serve eager meanwhile; export once the model is used again
            slot.export = self._exports[slot.key] = threading.Thread(target=build, name=f"zoo-export-{entry.name}",
                                                                     daemon=True)

    def close(self) -> None:
        """End background exports; drop the runners and models (requests in flight still complete)."""
        with self._lock:
            for slot in self._slots.values():
                slot.stop.set()
        self.wait_ready()
        with self._lock:
            self._slots = {}
        self.resident.clear()
        self.cache.clear()
        residency.return_memory()

    def forget(self, name: str) -> None:
        """Drop a model's runners and cached copies (a run that was deleted); requests in flight still complete."""
        with self._lock:
            self._slots = {k: s for k, s in self._slots.items() if k.rpartition("@")[0] != name}
        self.cache.forget(name)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait for background exports that have started to finish (tests, benchmarks, warm-up)."""
        for thread in list(self._exports.values()):
            if thread.ident is not None:
                thread.join(timeout)

    def is_ready(self, name: str, device: str | torch.device | None = None) -> bool:
        """Whether `name` is loaded and warmed up on `device` (its next request starts at once)."""
        key = f"{self.check(name).name}@{models.resolve_device(device or self.settings.device)}"
        with self._lock:
            return key in self._slots

    def runner_name(self, name: str, device: str | torch.device | None = None) -> str:
        return self.slot(name, device).runner.name

    def check(self, name: str) -> Resolved:
        """The resolved model, if it can classify (a run always can; a tag needs its ImageNet head)."""
        target = resolver.resolve(name, settings=self.settings)
        return imagenet_entry(target.name) if isinstance(target, ModelEntry) else target

    # -- classification ------------------------------------------------------------------------
    def logits(self, name: str, batch: torch.Tensor, device: str | torch.device | None = None):
        """(logits, latency_ms, batch_size, backend) for a preprocessed batch, batched with other callers."""
        return self.slot(name, device).submit(batch).result()

    def classify(self, sources: Sequence[images.Source] | images.Source, models_: Sequence[str] | str, *,
                 top_k: int = 5, device: str | torch.device | None = None) -> list[list[Prediction]]:
        """Predictions indexed [image][model].

        Raises:
            InvalidImageError, UnknownModelError, InvalidArgumentError, WeightsUnavailableError, ...
        """
        srcs = [sources] if isinstance(sources, str | bytes | Image.Image) or not isinstance(sources, Sequence) \
            else list(sources)
        tags = [models_] if isinstance(models_, str) else list(models_)
        if not srcs or not tags:
            raise InvalidArgumentError("Give at least one image and one model.")
        if not 1 <= top_k <= 1000:
            raise InvalidArgumentError(f"top_k={top_k} must be between 1 and 1000.")
        entries = [self.check(t) for t in tags]
        pres = [resolver.preprocessing(e) for e in entries]
        decoded = [_decode_named(s, images.draft_side(pres)) for s in srcs]
        out: list[list[Prediction]] = [[] for _ in decoded]
        batches: dict[images.Preprocessing, torch.Tensor] = {}
        for entry, pre in zip(entries, pres, strict=True):
            if pre not in batches:  # tags that share a preprocessing share the tensors
                batches[pre] = torch.stack([images.preprocess(pre, im) for im in decoded])
            slot = self.slot(entry.name, device)
            chunks = batches[pre].split(self.settings.max_batch)
            futures = [slot.submit(c) for c in chunks]
            row, labels, kind = 0, labels_of(entry), resolver.kind(entry)
            for fut in futures:
                logits, ms, n, backend = fut.result()
                for scored in top_k_of(logits, min(top_k, len(labels)), labels):
                    out[row].append(Prediction(entry.name, scored, ms, n, backend, slot.device, kind))
                    row += 1
        return out


def inference_model(name: str, *, device: str | torch.device | None = None, settings: Settings | None = None):
    """`resolver.build`, for inference only: on the CPU its batch norms are folded into the convolutions before
    them (`folding`: about 10% faster at batch 8, the same outputs within fp32 rounding, checked on a probe).
    A model that cannot be folded is served as it is; one whose check fails is rebuilt and served unfolded."""
    model = resolver.build(name, device=device, settings=settings)
    if next(model.parameters()).device.type != "cpu":
        return model  # CUDA runs under autocast with cuDNN's fused kernels; not measured folded yet
    try:
        folding.fold_checked(model)
        return model
    except folding.FoldMismatchError as exc:
        why = str(exc)
    except Exception as exc:  # the recorded pass failed: nothing was changed
        log.warning("%s: batch norms left unfolded (%s: %s)", name, type(exc).__name__, str(exc)[:200])
        return model
    del model  # the changed copy goes before the fresh one is built
    log.warning("%s: %s; serving it unfolded", name, why)
    return resolver.build(name, device=device, settings=settings)


def imagenet_entry(name: str) -> ModelEntry:
    """A registry tag with an ImageNet-1k head (what Grad-CAM and labelled evaluation need).

    Raises:
        UnknownModelError, InvalidArgumentError: a feature extractor with no classifier.
    """
    entry = registry.get(name)
    if not entry.has_imagenet_head:
        raise InvalidArgumentError(f"{entry.name} has no ImageNet classifier (it is a feature extractor with "
                                   f"{entry.num_classes} outputs); classify with another {entry.arch} tag, or "
                                   "train a head for it in the transfer lab.")
    return entry


def _decode_named(source: images.Source, min_side: int) -> Image.Image:
    """`images.decode`, with the file's name in the error when the source is a path."""
    try:
        return images.decode(source, min_side=min_side)
    except InvalidImageError as exc:
        if isinstance(source, str | Path):
            raise InvalidImageError(f"{source}: {exc}") from None
        raise


def labels_of(target: Resolved) -> tuple[Label, ...]:
    """The output classes: a run's own (named as it was trained), else ImageNet-1k's."""
    names = resolver.class_names(target)
    if names is None:
        return imagenet_labels()
    return tuple(Label(i, "", name, name) for i, name in enumerate(names))


def top_k_of(logits: torch.Tensor, k: int, labels: Sequence[Label] | None = None) -> list[tuple[Scored, ...]]:
    """Softmax over classes, then the k best per row with their labels (default: ImageNet-1k's)."""
    labels = labels or imagenet_labels()
    probs = torch.softmax(logits.float(), dim=1)
    values, indices = probs.topk(k, dim=1)
    return [tuple(Scored(labels[i], float(p)) for p, i in zip(vs.tolist(), ix.tolist(), strict=True))
            for vs, ix in zip(values, indices, strict=True)]


_engine: Engine | None = None
_engine_lock = threading.Lock()


def engine() -> Engine:
    """The process-wide engine (settings from the environment)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = Engine()
        return _engine


def busy() -> bool:
    """Whether the process-wide engine (if any has been made) is running or queueing a classification."""
    current = _engine
    return current is not None and current.busy()


def classify(sources, models_: Sequence[str] | str, *, top_k: int = 5, device=None) -> list[list[Prediction]]:
    """`Engine.classify` on the process-wide engine."""
    return engine().classify(sources, models_, top_k=top_k, device=device)
