"""The server's own life: whether it has been asked to stop (SIGTERM or SIGINT).

Requests in flight get ZOO_SHUTDOWN_S to finish; a training run in a lab takes minutes, and when uvicorn then
cut it off its page read Gradio's raw "Cancelled via cancel scope ...". Long jobs watch `stopping()` instead:
they end at once with a sentence that says why, while the connection can still carry it.
"""

from __future__ import annotations

import threading

from zoo.errors import ServerStopping

_stopping = threading.Event()

STOPPED = ("The server is shutting down, so this training was stopped before it finished; nothing of it was kept "
           "(what finished earlier is stored). Start it again once the server is back.")


def begin_shutdown() -> None:
    """The server has stopped taking connections and gives the ones in flight ZOO_SHUTDOWN_S (`serving.Server`)."""
    _stopping.set()


def end_shutdown() -> None:
    """The server's shutdown is over (the process exits, or in tests another server may start)."""
    _stopping.clear()


def stopping() -> bool:
    return _stopping.is_set()


def stopped() -> ServerStopping:
    """The error a long job ends with when the server is shutting down."""
    return ServerStopping(STOPPED)
