"""Gradio's queue woken by what it waits for, not by a timer.

Gradio's queue looks for work to start every `Queue.sleep_when_free` = 1 ms while it has none, and for progress
updates to send every 10 ms: an idle server spent about 8% of a core on it (81 CPU ticks in 10 s) and woke its
event loop about 860 times a second, on a machine that may be a 2-vCPU Space shared with the model.

Here those waits end when something changes what the queue could do: an event joins it (`Queue.push`), or a job
starts or ends (`Queue.process_events`), which is when Gradio's own loops would have found work; while a job
runs, the progress loop keeps its 10 ms between updates. Gradio's loops themselves are unchanged: inside
`gradio.queueing`, `asyncio.sleep(delay)` for one of the queue's idle delays (an `IdleDelay`) waits on the
queue's `Wake` instead, and every other use of `asyncio` there is asyncio's own. Should a Gradio path change the
queue some other way, the wait still ends after FALLBACK_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable
from typing import Any

from gradio import queueing

from zoo.ui.sessions import require_gradio

_SLEEP = asyncio.sleep  # asyncio's own, whatever `gradio.queueing` is given
FALLBACK_S = 0.25  # the longest an idle wait lasts if no change is signalled (Gradio's own delay is 1 ms)


class Wake:
    """The changes to one queue that its idle loops wait for; each waiting loop has its own flag."""

    def __init__(self) -> None:
        self.flags: list[asyncio.Event] = []

    def notify(self) -> None:
        for flag in self.flags:
            flag.set()


class IdleDelay(float):
    """A Gradio queue's idle delay (the float Gradio sleeps for), and what the wait may end on instead.

    `busy()` true means the loop has work in hand and sleeps the plain delay (the progress loop's 10 ms between
    updates while a job runs)."""

    def __new__(cls, delay: float, wake: Wake, busy: Callable[[], bool] = lambda: False) -> IdleDelay:
        self = super().__new__(cls, delay)
        self.wake, self.busy, self.flag = wake, busy, None
        return self

    async def wait(self) -> None:
        if self.busy():
            await _SLEEP(float(self))
            return
        if self.flag is None:  # made on the queue's own event loop
            self.flag = asyncio.Event()
            self.wake.flags.append(self.flag)
        # the loop checked the queue and called sleep with no await between: a change after that check sets
        # the flag after this clear
        self.flag.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flag.wait(), FALLBACK_S)


class _Asyncio:
    """`asyncio` as `gradio.queueing` sees it: `sleep` of an `IdleDelay` waits for its queue's next change."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    async def sleep(delay: float, result: Any = None) -> Any:
        if isinstance(delay, IdleDelay):
            await delay.wait()
            return result
        return await _SLEEP(delay, result)


def install(gradio_app: Any) -> Wake:
    """Make the mounted Gradio app's queue loops wait for changes (call before the server starts: Gradio starts
    the loops then). Returns the queue's `Wake`.

    Raises:
        RuntimeError: this Gradio's queue waits differently (an upgrade changed its internals).
    """
    queue = getattr(gradio_app.get_blocks(), "_queue", None)
    loops = (getattr(queueing.Queue, "start_processing", None), getattr(queueing.Queue, "start_progress_updates", None))
    require_gradio(
        "queue waits",
        queue is not None
        and all(inspect.iscoroutinefunction(f) for f in loops)
        and "asyncio.sleep(self.sleep_when_free)" in inspect.getsource(loops[0])
        and "asyncio.sleep(self.progress_update_sleep_when_free)" in inspect.getsource(loops[1])
        and inspect.iscoroutinefunction(getattr(queue, "push", None))
        and inspect.iscoroutinefunction(getattr(queue, "process_events", None))
        and isinstance(getattr(queue, "active_jobs", None), list),
        __name__,
    )
    if isinstance(queue.sleep_when_free, IdleDelay):
        return queue.sleep_when_free.wake
    wake = Wake()
    push, process_events = queue.push, queue.process_events

    async def woken_push(*args: Any, **kwargs: Any) -> Any:
        try:
            return await push(*args, **kwargs)
        finally:
            wake.notify()  # an event may have joined

    async def woken_process_events(*args: Any, **kwargs: Any) -> Any:
        wake.notify()  # a job runs: its progress updates are due
        try:
            return await process_events(*args, **kwargs)
        finally:
            wake.notify()  # a job's place (and its concurrency) is free

    queue.push, queue.process_events = woken_push, woken_process_events
    queue.sleep_when_free = IdleDelay(queue.sleep_when_free, wake)
    queue.progress_update_sleep_when_free = IdleDelay(
        queue.progress_update_sleep_when_free, wake, busy=lambda: any(job is not None for job in queue.active_jobs)
    )
    queueing.asyncio = _Asyncio()
    return wake
