"""The server's own life: whether it has been asked to stop (SIGTERM or SIGINT).

Requests in flight get ZOO_SHUTDOWN_S to finish; a training run in a lab takes minutes, and when uvicorn then
cut it off its page read Gradio's raw "Cancelled via cancel scope ...". Long jobs watch `stopping()` instead:
they end at once with a sentence that says why, while the connection can still carry it.
"""

from __future__ import annotations

import threading
import time

from zoo.errors import ServerStopping

_stopping = threading.Event()
_deadline = [0.0]  # time.monotonic() when the requests still in flight are cut off


def begin_shutdown(grace_s: float | None = None) -> None:
    """The server has stopped taking connections and gives the ones in flight `grace_s` (ZOO_SHUTDOWN_S; None:
    as long as they take) before it cuts them (`serving.Server`)."""
    _deadline[0] = time.monotonic() + (grace_s if grace_s is not None else float("inf"))
    _stopping.set()


def serve_again() -> None:
    """A server starts (again, in tests): jobs run as usual. A server that shut down leaves the flag set."""
    _stopping.clear()


def stopping() -> bool:
    return _stopping.is_set()


def grace_left() -> float:
    """Seconds until requests still in flight are cut off (0 when the server is not shutting down)."""
    return max(0.0, _deadline[0] - time.monotonic()) if _stopping.is_set() else 0.0


def stopped(what: str = "training", kept: bool = True) -> ServerStopping:
    """The error a long job ends with when the server is shutting down."""
    lost = "; nothing of it was kept (what finished earlier is stored)" if kept else ""
    return ServerStopping(f"The server is shutting down, so this {what} was stopped before it finished{lost}. "
                          "Start it again once the server is back.")
