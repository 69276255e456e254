"""Classification: images through one or many tags -> top-k ImageNet-1k labels, probabilities, latency.

`Engine` owns one runner per (tag, device). Requests for the same model that queue while it is busy
run together as one batch (at most ZOO_MAX_BATCH images, waiting ZOO_BATCH_WAIT_MS for company), in
the thread of one of the callers, so concurrent users share forward passes and an idle engine adds
no thread hand-off.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from zoo import backends, images, models, registry, residency, weights
from zoo.errors import InvalidArgumentError, InvalidImageError
from zoo.registry import ModelEntry
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

    model: str  # registry tag
    top: tuple[Scored, ...]  # best first
    latency_ms: float  # wall time of the forward pass that computed it (its whole batch)
    batch_size: int  # images in that forward pass
    backend: str  # e.g. onnxruntime-cpu-fp32, eager-cuda-bfloat16
    device: str

    def as_dict(self) -> dict:
        return {"model": self.model, "latency_ms": round(self.latency_ms, 3), "batch_size": self.batch_size,
                "backend": self.backend, "device": self.device,
                "top": [{"index": s.label.index, "synset": s.label.synset, "label": s.label.name,
                         "description": s.label.description, "probability": s.probability} for s in self.top]}


@dataclass
class _Request:
    batch: torch.Tensor
    future: Future


_LEAD = object()  # a request's future resolves to this when its thread must run the next batch


class _Slot:
    """A runner for one (tag, device), and leader/follower batching of the requests for it.

    The first request to find the runner idle runs it in its own thread (no hand-off to a worker
    thread, so an idle server adds no latency). Requests that arrive meanwhile queue up; when the
    running batch ends, the oldest queued request's thread becomes the leader and runs everything
    queued (up to max_batch images, waiting at most wait_s for company) as one batch.
    """

    def __init__(self, key: str, device: str, runner: backends.Runner, max_batch: int, wait_s: float):
        self.key, self.device, self.runner, self.max_batch, self.wait_s = key, device, runner, max_batch, wait_s
        self._lock = threading.Lock()
        self._queue: list[_Request] = []
        self._busy = False
        self.uses = 1  # requests that asked for this slot
        self.export: threading.Thread | None = None  # a deferred ONNX export, started on the second use
        self.stop = threading.Event()  # set when the slot is released or the engine closes: its export ends

    @property
    def busy(self) -> bool:
        """A batch is running or requests are queued."""
        return self._busy

    def submit(self, batch: torch.Tensor) -> Future:
        """Queue a batch; the returned future holds (logits, latency_ms, batch_size, backend).

        The caller's thread may run the model (and other callers' batches) before this returns.
        """
        request = _Request(batch, Future())
        with self._lock:
            self._queue.append(request)
            lead = not self._busy
            self._busy = True
        if lead:
            self._lead()
        elif request.future.result() is _LEAD:  # waits for another thread, possibly to hand the lead over
            request.future = Future()
            self._lead()
        return request.future

    def _lead(self) -> None:
        if self.wait_s > 0:
            time.sleep(self.wait_s)  # let concurrent requests join this batch
        with self._lock:
            taken, n = [], 0
            for r in self._queue:
                if taken and n + r.batch.shape[0] > self.max_batch:
                    break
                taken.append(r)
                n += r.batch.shape[0]
            del self._queue[:len(taken)]
        self._run(taken)
        with self._lock:
            if self._queue:
                heir = self._queue[0]
            else:
                heir = None
                self._busy = False
        if heir is not None:
            heir.future.set_result(_LEAD)

    def _run(self, taken: list[_Request]) -> None:
        runner = self.runner  # read once: a faster runner may be swapped in between batches
        try:
            x = taken[0].batch if len(taken) == 1 else torch.cat([r.batch for r in taken])
            start = time.perf_counter()
            logits = runner(x)
            ms = (time.perf_counter() - start) * 1000
        except BaseException as exc:  # every caller in the batch gets the error; the slot stays usable
            for r in taken:
                r.future.set_exception(exc)
            return
        i = 0
        for r in taken:
            n = r.batch.shape[0]
            r.future.set_result((logits[i:i + n], ms, x.shape[0], runner.name))
            i += n


class Engine:
    """Classifies images with registry tags; one per process is enough (see `engine()`)."""

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
        self.cache = cache or models.ModelCache(self.settings.model_memory_mb * 1024 * 1024,
                                                loader=functools.partial(models.create_model, settings=self.settings))
        self._slots: dict[str, _Slot] = {}
        self._making: dict[str, threading.Lock] = {}  # one lock per (tag, device) being built
        self._lock = threading.Lock()
        self._exports: dict[str, threading.Thread] = {}
        self.resident = residency.Residency(self.settings.model_memory_mb * 1024 * 1024)

    # -- runners -------------------------------------------------------------------------------
    def slot(self, name: str, device: str | torch.device | None = None) -> _Slot:
        entry = self.check(name)
        dev = models.resolve_device(device or self.settings.device)
        key = f"{entry.name}@{dev}"
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
            record = weights.store(self.settings).record(entry.name)
            self.resident.make_room(record.size if record else 0)  # release before loading, not after
            model = self.cache.get(entry.name, dev)
            runner = backends.EagerRunner(model, channels_last=backends.prefers_channels_last(entry.family),
                                          compile=self.settings.compile)
            runner(torch.zeros(1, 3, entry.eval_size, entry.eval_size))  # warm-up: first-call costs not timed
            slot = _Slot(key, str(dev), runner, self.settings.max_batch, self.settings.batch_wait_ms / 1000)
            if dev.type == "cpu" and self.backend != "eager":
                self._start_fast_path(entry, model, slot)
            with self._lock:
                self._slots[key] = slot
            size = slot.runner.path.stat().st_size if isinstance(slot.runner, backends.OnnxRunner) \
                else models.model_bytes(model)
            del model
            self.resident.admit(key, size, functools.partial(self._release, key, entry.name, dev))
        return slot

    def _reuse(self, slot: _Slot) -> _Slot:
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

    def _busy(self) -> bool:
        """Whether any request is running or queued (a background export waits meanwhile)."""
        with self._lock:
            return any(s.busy for s in self._slots.values())

    def _start_fast_path(self, entry: ModelEntry, model: torch.nn.Module, slot: _Slot) -> None:
        if not backends.onnx_available():
            if self.backend == "onnx":
                raise InvalidArgumentError("ZOO_CPU_BACKEND=onnx needs onnxruntime and onnxscript "
                                           "(pip install -r requirements.txt).")
            return
        record = weights.store(self.settings).record(entry.name)
        if record is None:
            return
        path = backends.onnx_path(self.settings.weights_dir / ".cache" / "onnx", entry.name, record.sha256,
                                  entry.eval_size)

        def build() -> None:
            try:
                backends.export_in_subprocess(entry.name, path, entry.eval_size, self.settings.weights_dir,
                                              pause=self._busy, stop=slot.stop)
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

    @staticmethod
    def check(name: str) -> ModelEntry:
        entry = registry.get(name)
        if not entry.has_imagenet_head:
            raise InvalidArgumentError(f"{entry.name} has no ImageNet classifier (it is a feature extractor with "
                                       f"{entry.num_classes} outputs); classify with another {entry.arch} tag, or "
                                       "train a head for it in the transfer lab.")
        return entry

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
        pres = [images.preprocessing(e) for e in entries]
        decoded = [_decode_named(s, images.draft_side(pres)) for s in srcs]
        out: list[list[Prediction]] = [[] for _ in decoded]
        batches: dict[images.Preprocessing, torch.Tensor] = {}
        for entry, pre in zip(entries, pres, strict=True):
            if pre not in batches:  # tags that share a preprocessing share the tensors
                batches[pre] = torch.stack([images.preprocess(pre, im) for im in decoded])
            slot = self.slot(entry.name, device)
            chunks = batches[pre].split(self.settings.max_batch)
            futures = [slot.submit(c) for c in chunks]
            row = 0
            for fut in futures:
                logits, ms, n, backend = fut.result()
                for scored in top_k_of(logits, top_k):
                    out[row].append(Prediction(entry.name, scored, ms, n, backend, slot.device))
                    row += 1
        return out


def _decode_named(source: images.Source, min_side: int) -> Image.Image:
    """`images.decode`, with the file's name in the error when the source is a path."""
    try:
        return images.decode(source, min_side=min_side)
    except InvalidImageError as exc:
        if isinstance(source, str | Path):
            raise InvalidImageError(f"{source}: {exc}") from None
        raise


def top_k_of(logits: torch.Tensor, k: int) -> list[tuple[Scored, ...]]:
    """Softmax over classes, then the k best per row with their labels."""
    labels = imagenet_labels()
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


def classify(sources, models_: Sequence[str] | str, *, top_k: int = 5, device=None) -> list[list[Prediction]]:
    """`Engine.classify` on the process-wide engine."""
    return engine().classify(sources, models_, top_k=top_k, device=device)
