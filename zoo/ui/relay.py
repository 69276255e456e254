"""Long jobs behind a handler: the job runs on a worker thread and emits events; the handler's thread receives
them in order and turns them into page updates. Shared by the Transfer lab, Why residual? and the Compare tab's
evaluation of a labelled zip."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from zoo import lifecycle

WATCH_S = 0.25  # how often a job's handler looks whether the server is shutting down
CLEANUP_S = 5.0  # how long a stopping server lets a cancelled job clean up (its job folder, temp files)
TICK_S = 2.0  # the longest a job's handler goes without an update: Gradio stops a job whose client left only there
Emit = Callable[[str, Any], None]  # (kind, payload)


def relay(job: Callable[[Emit, threading.Event], Any], name: str, what: str = "training",
          kept: bool = True) -> Iterator[tuple[str, Any]]:
    """Run `job(emit, cancel)` on a worker thread; yield each (kind, payload) it emits, then ("done", its return).

    The job's exception is raised here, in the handler's thread (so `user_errors` shows it). When the consumer
    stops early (the page left, Cancel was pressed, or an API client dropped its stream), `cancel` is set and
    the job stops at its next step. Gradio notices a client that left only when the handler yields, so when
    the job has emitted nothing for TICK_S, ("tick", None) comes: the handler yields an update that changes
    nothing (a consumer that skips events must still yield on ticks).
    A job whose turn comes while the server shuts down is not started. When the server begins to shut down,
    `cancel` is set, the job gets up to CLEANUP_S (within ZOO_SHUTDOWN_S, one
    second kept for the answer) to stop and clean up, and `lifecycle.stopped(what, kept)` is raised here, wherever
    the job is (reading a dataset does not look at `cancel`), so the page gets that sentence before the server
    cuts its connection.
    """
    if lifecycle.stopping():  # queued before the server began to stop: not started at all
        raise lifecycle.stopped(what, kept)
    events: queue.Queue = queue.Queue()
    cancel = threading.Event()

    def work() -> None:
        try:
            events.put(("done", job(lambda kind, payload: events.put((kind, payload)), cancel)))
        except BaseException as exc:  # reported to the page; the app keeps serving
            events.put(("error", exc))

    worker = threading.Thread(target=work, name=name, daemon=True)
    worker.start()
    last = time.monotonic()
    try:
        while True:
            try:
                kind, payload = events.get(timeout=WATCH_S)
            except queue.Empty:
                kind, payload = "idle", None
            if lifecycle.stopping() and kind != "done":
                cancel.set()
                worker.join(max(0.0, min(CLEANUP_S, lifecycle.grace_left() - 1.0)))
                rest = [(kind, payload), *_drain(events)]
                if rest[-1][0] != "done":  # a job that finished meanwhile (saving its run, say) is answered whole
                    raise lifecycle.stopped(what, kept)
                yield from (e for e in rest if e[0] not in ("idle", "error"))
                return
            if kind == "error":
                raise payload
            if kind == "idle" and time.monotonic() - last < TICK_S:
                continue
            last = time.monotonic()
            yield ("tick", None) if kind == "idle" else (kind, payload)
            if kind == "done":
                return
    finally:
        cancel.set()


def _drain(events: queue.Queue) -> list[tuple[str, Any]]:
    out = []
    while True:
        try:
            out.append(events.get_nowait())
        except queue.Empty:
            return out
