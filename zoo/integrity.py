"""The rule every served or loaded byte passes: a file is trusted only while its identity (size, mtime_ns,
inode, ctime_ns) is the one it had when its SHA-256 was last checked; any change means a re-hash first.

Writing a file (in place, by copy, by rename, by chmod) changes its ctime, which no user can set back, so
every change made through the filesystem is caught. A change below it (a bit flipped on the medium) leaves
the identity alone: only a full read catches that, which a whole-file download does as it streams and
`zoo verify` (a scrub) does for every file.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from zoo.checkpoint import sha256_file

Identity = tuple[int, int, int, int]  # size, mtime_ns, inode, ctime_ns


def identity(st: os.stat_result) -> Identity:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def as_identity(value: object) -> Identity | None:
    """An identity read back from JSON (a list of four ints), or None."""
    if isinstance(value, list | tuple) and len(value) == 4 and all(isinstance(v, int) for v in value):
        return tuple(value)  # type: ignore[return-value]
    return None


@dataclass(frozen=True)
class Checked:
    """A file whose bytes hashed to `sha256` while it had `ident`."""

    path: Path
    sha256: str
    size: int
    ident: Identity

    @property
    def mtime(self) -> float:
        return self.ident[1] / 1e9


@dataclass(frozen=True)
class Verdict:
    """What `check` found: `checked` when the bytes are the recorded ones; else `actual` is their hash."""

    checked: Checked | None
    actual: str | None = None  # the hash found, when it differs from the recorded one
    rehashed: bool = False  # whether this call read the whole file

    def change(self, sha256: str, size: int) -> str:
        """What changed, for a message: the size, when that alone gave it away, else the hash."""
        if self.actual and self.actual.startswith("size "):
            return f"it is now {self.actual.removeprefix('size ')} bytes, not {size}"
        return f"its bytes hash to {(self.actual or '')[:16]}... instead of sha256 {sha256[:16]}..."


_memo: dict[str, tuple[Identity, str]] = {}  # path -> (identity when hashed, the hash found then)
_locks: dict[str, threading.Lock] = {}
_guard = threading.Lock()


def check(path: Path, sha256: str, size: int, recorded: Identity | None = None) -> Verdict | None:
    """Whether `path` holds the bytes named by `sha256` (and `size`) now; None when there is no such file.

    Free when its identity is `recorded` (what the writer saw) or the one this process last hashed it at;
    otherwise the file is hashed once (one thread per file) and the result remembered for that identity.
    """
    path = Path(path)
    try:
        now = identity(os.stat(path))
    except OSError:
        return None
    if now[0] != size:
        return Verdict(None, actual=f"size {now[0]}")
    key = str(path)
    seen = _memo.get(key)
    if seen is not None and seen[0] == now:  # hashed at this identity already (here, or while being sent)
        if seen[1] != sha256:
            return Verdict(None, actual=seen[1])
        return Verdict(Checked(path, sha256, size, now))
    if now == recorded:
        return Verdict(Checked(path, sha256, size, now))
    with _guard:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:
        seen = _memo.get(key)
        if seen is not None and seen[0] == now:  # another thread hashed it meanwhile
            found, after = seen[1], now
            rehashed = False
        else:
            try:
                found = sha256_file(path)
                after = identity(os.stat(path))
            except OSError:
                return None
            if after == now:
                _memo[key] = (now, found)
            rehashed = True
    if after != now:  # it changed while being read: judge the newest version (with the lock let go: it is no RLock)
        return check(path, sha256, size, recorded)
    if found != sha256:
        return Verdict(None, actual=found, rehashed=rehashed)
    return Verdict(Checked(path, sha256, size, now), rehashed=rehashed)


def condemn(path: Path, actual: str) -> None:
    """Remember that `path`, as it is now, hashed to `actual` (found while sending it): the next `check`
    refuses it without reading it again, whatever its recorded identity says."""
    with contextlib.suppress(OSError):
        _memo[str(path)] = (identity(os.stat(path)), actual)


def forget(path: Path) -> None:
    """Drop what is remembered of `path` (it was moved aside or replaced)."""
    _memo.pop(str(path), None)


def same(path: Path, ident: Identity) -> bool:
    """Whether `path` still has the identity it was checked at (one stat)."""
    try:
        return identity(os.stat(path)) == ident
    except OSError:
        return False
