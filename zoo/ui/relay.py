"""Long jobs behind a streaming handler: the job runs on a worker thread and emits events; the handler's thread
receives them in order and turns them into page updates. Shared by the Transfer lab and Why residual? tabs."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from zoo import lifecycle

WATCH_S = 0.25  # how often a job's handler looks whether the server is shutting down
Emit = Callable[[str, Any], None]  # (kind, payload)


def relay(job: Callable[[Emit, threading.Event], Any], name: str) -> Iterator[tuple[str, Any]]:
    """Run `job(emit, cancel)` on a worker thread; yield each (kind, payload) it emits, then ("done", its return).

    The job's exception is raised here, in the handler's thread (so `user_errors` shows it). When the consumer
    stops early (the page left, or Cancel was pressed), `cancel` is set and the job stops at its next step.
    When the server begins to shut down, `lifecycle.stopped()` is raised here within WATCH_S, wherever the job
    is (reading a dataset does not look at `cancel`), so the page gets that sentence before ZOO_SHUTDOWN_S ends.
    """
    events: queue.Queue = queue.Queue()
    cancel = threading.Event()

    def work() -> None:
        try:
            events.put(("done", job(lambda kind, payload: events.put((kind, payload)), cancel)))
        except BaseException as exc:  # reported to the page; the app keeps serving
            events.put(("error", exc))

    threading.Thread(target=work, name=name, daemon=True).start()
    try:
        while True:
            try:
                kind, payload = events.get(timeout=WATCH_S)
            except queue.Empty:
                kind, payload = "idle", None
            if lifecycle.stopping() and kind != "done":
                raise lifecycle.stopped()
            if kind == "error":
                raise payload
            if kind == "idle":
                continue
            yield kind, payload
            if kind == "done":
                return
    finally:
        cancel.set()
