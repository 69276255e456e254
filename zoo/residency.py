"""The model memory budget (ZOO_MODEL_MEMORY_MB): ready models by their bytes, least recently used released first.

What counts is what a ready model holds for as long as it stays ready: an eager model's parameters and
buffers, or an ONNX Runtime session's graph file (its weights); activations of a running batch, ONNX
Runtime's arena and pre-packed weight copies, and the process's own libraries are not counted. A model
larger than the whole budget is still served, alone. Releasing a model drops every reference the engine
holds and hands the freed pages back to the system (`return_memory`), so the process's resident memory
falls, not only the engine's bookkeeping.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


class Residency:
    """Least-recently-used accounting of resident models against a byte budget.

    Each model is admitted with its size and a `release` callback that drops the owner's references;
    the callbacks run outside the lock, oldest first, until the total fits (the newest is always kept).
    """

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self._lock = threading.Lock()
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self._release: dict[str, Callable[[], None]] = {}
        self.released = 0  # how many models were released for the budget (tests and stats)

    def touch(self, key: str) -> None:
        """Mark `key` as just used."""
        with self._lock:
            if key in self._sizes:
                self._sizes.move_to_end(key)

    def admit(self, key: str, nbytes: int, release: Callable[[], None]) -> list[str]:
        """Count `key` at `nbytes` (most recently used) and release others beyond the budget; their keys."""
        with self._lock:
            self._sizes[key] = nbytes
            self._sizes.move_to_end(key)
            self._release[key] = release
        return self._fit(keep=key)

    def make_room(self, nbytes: int) -> list[str]:
        """Release least recently used models until `nbytes` more fit (all of them if need be), before a load."""
        return self._fit(keep=None, extra=nbytes)

    def resize(self, key: str, nbytes: int) -> list[str]:
        """`key` now holds `nbytes` (an eager model replaced by its ONNX graph); release others if needed."""
        with self._lock:
            if key not in self._sizes:
                return []
            self._sizes[key] = nbytes
        return self._fit(keep=key)

    def discard(self, key: str) -> None:
        """Forget `key` without calling its release (its owner dropped it already)."""
        with self._lock:
            self._sizes.pop(key, None)
            self._release.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._sizes.clear()
            self._release.clear()

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def resident(self) -> list[str]:
        """Resident keys, least recently used first."""
        with self._lock:
            return list(self._sizes)

    def _fit(self, keep: str | None, extra: int = 0) -> list[str]:
        gone: list[tuple[str, Callable[[], None]]] = []
        with self._lock:
            while sum(self._sizes.values()) + extra > self.budget_bytes and any(k != keep for k in self._sizes):
                oldest = next(k for k in self._sizes if k != keep)
                del self._sizes[oldest]
                gone.append((oldest, self._release.pop(oldest)))
            self.released += len(gone)
        for key, release in gone:
            log.info("released %s to stay within ZOO_MODEL_MEMORY_MB=%d", key, self.budget_bytes // 2**20)
            release()
        if gone:
            return_memory()
        return [k for k, _ in gone]


TRIM_EVERY_S = 5.0
_trim_wanted = threading.Event()
_trimmer: list[threading.Thread] = []
_trimmer_lock = threading.Lock()


def trim_soon() -> None:
    """Ask for the heap's free pages to be handed back to the system (glibc `malloc_trim`, no garbage
    collection): called when a model goes idle. A background thread does it, off every request's path, at most
    once every TRIM_EVERY_S (a request asking meanwhile is served by the next trim). Batches of every size free
    activations of every size, and the heap keeps what they leave (about 100 MB per 1,000 classifications
    under 8 clients without this, measured with bench_load)."""
    if _malloc_trim() is None:
        return
    with _trimmer_lock:
        if not _trimmer:
            _trimmer.append(threading.Thread(target=_trim_loop, name="zoo-malloc-trim", daemon=True))
            _trimmer[0].start()
    _trim_wanted.set()


@contextmanager
def trimmed_after() -> Iterator[None]:
    """`trim_soon` when the block ends, however it ends: for jobs outside the engine (training) whose freed
    memory the heap would otherwise keep for passes that are not coming (`tune_heap`)."""
    try:
        yield
    finally:
        trim_soon()


def _trim_loop() -> None:
    trim = _malloc_trim()
    while True:
        _trim_wanted.wait()
        _trim_wanted.clear()
        trim(0)
        time.sleep(TRIM_EVERY_S)


def return_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system (glibc `malloc_trim`; CUDA's cache)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


# glibc's heap for serving (`tune_heap`): what a forward pass frees is kept for the next one
HEAP_ARENAS = 2
MMAP_THRESHOLD = 256 << 20  # allocations below this come from the heap, not a fresh mapping each time
TRIM_THRESHOLD = 512 << 20  # free memory at a heap's top kept for reuse, up to this, until the next trim
TOP_PAD = 64 << 20  # free memory a thread's arena keeps at its top (glibc's heaps for threads are 64 MiB at most)


def tune_heap() -> None:
    """Set glibc's heap up for serving (call before the server starts its threads).

    - At most HEAP_ARENAS arenas: by default glibc gives each thread that meets contention its own, up to 8 per
      core, and every arena keeps the memory it freed: under 8 classify clients and 4 downloads the server grew
      by 570 MB in 60 s, against 41 MB (then flat) with two arenas, measured with bench_load.
    - Fixed mmap and trim thresholds (MMAP_THRESHOLD, TRIM_THRESHOLD). glibc's own adapt to the largest block
      freed so far and stop at 32 MB: a forward pass's activations of batches over 1 then came from fresh
      mappings, or from heap pages handed back when the last pass freed them, and every pass faulted them in
      again, zero-filled (at 288 px in a worker thread: resnet18 at batch 6, 15,500 page faults a pass;
      resnet50 at batch 16, 382,000, 1.5 GB; with these, none). Under bench_load's 8 classify clients, switched
      on and off every 5 s in one server (with both thresholds doubled): 11.7 against 11.0 images/s. What the
      heap keeps this way is bounded by TRIM_THRESHOLD per arena and handed back by `trim_soon` once the model
      goes idle or a training job ends, and by `return_memory` when a model is released.
    - A top pad of TOP_PAD. The trim threshold holds for the main arena only: an arena of other threads is made
      of heaps of at most 64 MiB, and glibc unmaps such a heap as soon as everything in it is free, keeping only
      the top pad (128 KiB by default). A forward pass run by a thread of that arena (the leader of a batch is
      whichever request thread came first) mapped its activations afresh and faulted them in again, zero-filled,
      every other pass: ~20,000 page faults a second under bench_load's 8 classify clients in the runs whose
      leaders used it, and their slowest requests met them (in one run, pad switched on and off every 10 s:
      p99 432 against 480 ms, 585 against 21,000 faults a second). With the pad, a heap keeps what a pass
      frees: up to TOP_PAD more resident in that arena while it serves (`malloc_trim` hands back the free
      blocks inside its heaps but not its top).
    """
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(-8, HEAP_ARENAS)  # M_ARENA_MAX
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, TRIM_THRESHOLD)  # M_TRIM_THRESHOLD
        libc.mallopt(-2, TOP_PAD)  # M_TOP_PAD


@functools.cache
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    return getattr(_libc(), "malloc_trim", None)  # musl and other libcs have none


def freeze_startup_objects() -> None:
    """Collect start-up's garbage, then move every object left to the collector's permanent generation
    (`gc.freeze`) so that full collections no longer walk them: the UI, the registry and the libraries live as
    long as the server. A full collection over the built app's ~530,000 objects took about 300 ms here, with
    every thread stopped; once they are frozen it takes a few ms. Full collections also come sooner, since the
    collector counts only the objects made since: the reference cycles each request leaves behind are freed
    sooner (bench_load's RSS growth over 90 s: 25 MB per 1,000 classifications without this in one run, 0.1-5
    with it in four of five)."""
    gc.collect()
    gc.freeze()
