"""Gradio's per-session bookkeeping, bounded to ZOO_MAX_SESSIONS sessions and cheap to start.

Every browser tab (and every API client without a session of its own) is a session. Gradio's queue keeps a
message queue per session in an LRU of 2,000 (about 30 KB each, so up to about 60 MB that is never given
back) and a set of event ids per session in a plain dict that only ever grows. Here both hold at most
`max_sessions` idle sessions: the oldest idle one goes first, and a session with an event still in flight (a
training stream, a queued classification) is never dropped, however many sessions come after it.

A new session's state also builds the configuration of every component on the page (for deep links, which
this app has none of): about 20 ms of the server's event loop and 0.25 MB per session. Here it is built
only if something asks for it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import gradio as gr
from gradio.state_holder import SessionState, StateHolder
from gradio.utils import LRUCache


class SessionQueues(LRUCache):
    """`Queue.pending_messages_per_session` that evicts only sessions with no event pending."""

    def __init__(self, pending_ids: dict[str, set[str]], max_size: int, items: Any = ()):
        super().__init__(max_size)
        self.pending_ids = pending_ids
        for key, value in dict(items).items():
            OrderedDict.__setitem__(self, key, value)

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self:
            self.move_to_end(key)
        else:
            excess = len(self) + 1 - self.max_size
            idle = [k for k in self if not self.pending_ids.get(k)][: max(0, excess)]
            for old in idle:  # oldest first; a session still waiting for an answer stays
                OrderedDict.__delitem__(self, old)
                self.pending_ids.pop(old, None)
        OrderedDict.__setitem__(self, key, value)


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
    if queue is None or not isinstance(getattr(queue, "pending_messages_per_session", None), LRUCache) \
            or not isinstance(getattr(queue, "pending_event_ids_session", None), dict) \
            or type(holder) is not StateHolder or blocks.state_holder is not holder:
        raise RuntimeError(f"Gradio {gr.__version__} keeps its sessions differently: zoo.ui.sessions needs updating")
    queue.pending_messages_per_session = SessionQueues(queue.pending_event_ids_session, max_sessions,
                                                       queue.pending_messages_per_session)
    holder.__class__ = LazyStateHolder
