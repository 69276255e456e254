"""Gradio's per-session bookkeeping, bounded to ZOO_MAX_SESSIONS sessions and cheap to start.

Every browser tab (and every API client without a session of its own) is a session. Gradio's queue keeps a
message queue per session in an LRU of 2,000 (about 30 KB each, so up to about 60 MB that is never given
back) and a set of event ids per session in a plain dict that only ever grows. Here both hold at most
`max_sessions` sessions besides those with an event queued or running (a training stream, a queued
classification), which are never dropped, however many sessions come after them. Gradio's UI state
(`StateHolder`, the components a session's events updated) keeps its own LRU of `max_sessions`.

Gradio's queue also records every event (up to 10,000) for its monitoring dashboard, and recomputes a pandas
summary of all the records after each event: 3 ms of CPU per event at 1,000 records and 8 ms at 10,000, most
of it holding the GIL that every request needs. With the dashboard off (`build_app` mounts Gradio with
`enable_monitoring=False`), it keeps one record and never recomputes the summary.

A new session's state also builds the configuration of every component on the page (for deep links, which
this app has none of): about 20 ms of the server's event loop per session. Here it is built only if
something asks for it.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import gradio as gr
from gradio.state_holder import SessionState, StateHolder
from gradio.utils import LRUCache


class SessionQueues(LRUCache):
    """`Queue.pending_messages_per_session` holding at most `max_size` sessions besides the active ones.

    Past the cap, sessions go oldest first: first those with nothing left to deliver, then those whose
    finished answers were never collected (an API call nobody read back). A session with an event queued or
    running (`Queue.event_ids_to_events`) is never dropped; there are at most ZOO_QUEUE_SIZE of those."""

    def __init__(self, queue: Any, max_size: int, items: Any = ()):
        super().__init__(max_size)
        self.events: dict[str, Any] = queue.event_ids_to_events
        self.pending_ids: dict[str, set[str]] = queue.pending_event_ids_session
        for key, value in dict(items).items():
            OrderedDict.__setitem__(self, key, value)

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self:
            self.move_to_end(key)
        elif len(self) >= self.max_size:
            self._drop(len(self) + 1 - self.max_size)
        OrderedDict.__setitem__(self, key, value)

    def _drop(self, excess: int) -> None:
        active = {event.session_hash for event in list(self.events.values())}
        for undelivered_too in (False, True):
            for old in [k for k in self if k not in active and (undelivered_too or not self.pending_ids.get(k))]:
                if excess <= 0:
                    return
                OrderedDict.__delitem__(self, old)
                self.pending_ids.pop(old, None)  # Gradio never removes these itself
                excess -= 1


class LazySessionState(SessionState):
    """Gradio's SessionState with each component's configuration built when first needed."""

    def __init__(self, blocks: gr.Blocks):
        super().__init__(SimpleNamespace(default_config=blocks.default_config, blocks={}))  # no config built
        self.page_blocks = blocks

    @property
    def components(self) -> Iterator[dict]:
        for key, block in self.blocks_config.blocks.items():
            if key in self.page_blocks.blocks and key not in self.config_values:
                self.config_values[key] = self.blocks_config.config_for_block(key, [], block)
        return super().components


class LazyStateHolder(StateHolder):
    """Gradio's StateHolder (its LRU of ZOO_MAX_SESSIONS sessions) making LazySessionStates."""

    def __getitem__(self, session_id: str) -> SessionState:
        if session_id not in self.session_data:
            self.session_data[session_id] = LazySessionState(self.blocks)
        return super().__getitem__(session_id)


def install(gradio_app: Any, max_sessions: int) -> None:
    """Bound the mounted Gradio app's per-session queues and make its new sessions cheap (call after
    `gr.mount_gradio_app`, which makes the app's state holder).

    Raises:
        RuntimeError: this Gradio keeps its sessions elsewhere (an upgrade changed its internals).
    """
    blocks, holder = gradio_app.get_blocks(), getattr(gradio_app, "state_holder", None)
    queue = getattr(blocks, "_queue", None)
    require_gradio("keeps its sessions", queue is not None
             and isinstance(getattr(queue, "pending_messages_per_session", None), LRUCache)
             and isinstance(getattr(queue, "pending_event_ids_session", None), dict)
             and type(holder) is StateHolder and blocks.state_holder is holder)
    require_gradio("keeps its events", isinstance(getattr(queue, "event_ids_to_events", None), dict))
    require_gradio("records events", all(isinstance(getattr(queue, a, None), int)
                                   for a in ("ANALYTICS_MAX_EVENTS", "ANAYLTICS_CACHE_FREQUENCY")))
    queue.pending_messages_per_session = SessionQueues(queue, max_sessions, queue.pending_messages_per_session)
    if not blocks.enable_monitoring:  # nothing reads the records
        queue.ANALYTICS_MAX_EVENTS = 1  # the event being recorded
        queue.ANAYLTICS_CACHE_FREQUENCY = sys.maxsize  # (sic): events between two recomputations of the summary
    holder.__class__ = LazyStateHolder


def require_gradio(what: str, holds: bool, module: str = __name__) -> None:
    """Refuse a Gradio whose internals `module` relies on changed (an upgrade): `what` it does differently."""
    if not holds:
        raise RuntimeError(f"Gradio {gr.__version__} {what} differently: {module} needs updating")
