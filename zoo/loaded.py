"""Loaded models last only as long as the stored file they were built from: `stale`, asked on each use (one
small read and one stat), says when that file was replaced, moved aside or removed by any process."""

from __future__ import annotations

import os
import threading
import weakref

from zoo import integrity, weights
from zoo.settings import Settings

_seen: weakref.WeakKeyDictionary[object, dict[str, object]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def token(name: str, settings: Settings | None = None) -> tuple[str, integrity.Identity] | None:
    """(sha256, identity) of `name`'s stored file now; None when it is not stored."""
    st = weights.store(settings)
    rec = st.record(name)
    if rec is None:
        return None
    try:
        return rec.sha256, integrity.identity(os.stat(st.path_of(rec)))
    except OSError:
        return None


def stale(owner: object, key: str, name: str, settings: Settings | None = None) -> bool:
    """Whether `owner`'s model under `key` (built from `name`'s stored file) must be dropped: the file
    changed since `owner` last asked. The first question only remembers the file (the model is built next), as
    does one after the file was missing (it was fetched for the model being built)."""
    now = token(name, settings)
    with _lock:
        seen = _seen.setdefault(owner, {})
        before = seen.get(key)
        seen[key] = now
    return before is not None and before != now
