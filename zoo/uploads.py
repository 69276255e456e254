"""Abandoned upload files: what Gradio's own cache cleaning never sees.

Gradio streams an upload into a `tmp*` file at the top of its upload folder (GRADIO_TEMP_DIR) and, once the body
is complete, moves it into a folder named by its hash; `Blocks(delete_cache=...)` deletes those after
ZOO_UPLOAD_TTL_S. An upload whose client leaves or stops sending (the server ends such a body after
`serving.BODY_IDLE_S`) leaves its `tmp*` file where it was, for ever: 300 cut-off uploads left 300 files. A
sweeper deletes top-level `tmp*` files not written to for longer than the age given and not open in this process
(Gradio writes through a 4 KiB buffer, so a slow upload in progress can leave its file's mtime old).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

_SWEEPERS: dict[Path, threading.Thread] = {}
_LOCK = threading.Lock()


def sweep_abandoned(folder: Path, older_than_s: float) -> int:
    """Delete the `tmp*` files at the top of `folder` last written over `older_than_s` ago; returns how many."""
    cutoff, removed = time.time() - older_than_s, 0
    try:
        entries = list(folder.glob("tmp*"))
    except OSError:
        return 0
    in_use = _open_files() if entries else set()
    for path in entries:
        try:
            if path.is_file() and not path.is_symlink() and path.stat().st_mtime < cutoff and str(path) not in in_use:
                path.unlink()
                removed += 1
        except OSError:  # gone meanwhile (moved into the cache by its completed upload), or not ours to delete
            continue
    if removed:
        log.info("removed %d abandoned partial upload(s) from %s", removed, folder)
    return removed


def _open_files() -> set[str]:
    """The paths this process has open (Linux's /proc/self/fd; empty elsewhere, where mtime alone decides)."""
    fds, paths = Path("/proc/self/fd"), set()
    try:
        names = os.listdir(fds)
    except OSError:
        return paths
    for name in names:
        with contextlib.suppress(OSError):
            paths.add(os.readlink(fds / name))
    return paths


def start_sweeper(folder: Path, older_than_s: float) -> threading.Thread:
    """Sweep `folder` every older_than_s / 2 (5 s to 5 min) in a daemon thread; one per folder and process."""
    folder = Path(folder)
    every_s = min(max(older_than_s / 2, 5.0), 300.0)

    def loop() -> None:
        while True:
            time.sleep(every_s)
            sweep_abandoned(folder, older_than_s)

    with _LOCK:
        thread = _SWEEPERS.get(folder)
        if thread is None:
            thread = _SWEEPERS[folder] = threading.Thread(target=loop, name="zoo-upload-sweeper", daemon=True)
            thread.start()
    return thread


class DiskFullError(Exception):
    """The uploads' disk has `free` bytes to spare, fewer than an upload of `size` bytes needs."""

    def __init__(self, free: int, size: int):
        super().__init__(free, size)
        self.free, self.size = free, size


class DiskBudget:
    """The bytes the upload folder may hold, stored and in flight together (ZOO_UPLOADS_MAX_MB).

    An upload reserves its declared length (its Content-Length; the per-file limit when it declares none) before
    its body is read; when its request ends the reservation moves to the folder's usage (what it may have stored),
    which is read from the disk again at most every USAGE_EVERY_S, or every WALK_SHARE times as long as the last
    reading took (a folder of many files is not walked on every upload). 120 uploads cut off at 10 MB each left
    1.2 GB for the sweeper to find 60-90 s later; with the budget, uploads past it are refused at once.
    """

    USAGE_EVERY_S = 1.0
    WALK_SHARE = 50

    def __init__(self, folder: Path, most: int):
        self.folder, self.most = folder, most
        self._lock = threading.Lock()
        self._reserved = 0
        self._usage, self._read_at, self._every = 0, float("-inf"), self.USAGE_EVERY_S

    def due(self) -> bool:
        """Whether the next `usage` reads the folder (else it answers from memory)."""
        return time.monotonic() - self._read_at >= self._every

    def usage(self) -> int:
        """Bytes of the files under the folder now (cached for USAGE_EVERY_S)."""
        now = time.monotonic()
        if now - self._read_at >= self._every:
            total = 0
            for root, _, files in os.walk(self.folder):
                for name in files:
                    with contextlib.suppress(OSError):
                        total += os.lstat(os.path.join(root, name)).st_size
            self._usage, self._read_at = total, time.monotonic()
            self._every = max(self.USAGE_EVERY_S, self.WALK_SHARE * (self._read_at - now))
        return self._usage

    DISK_MARGIN = 16 * 2**20  # bytes left free on the uploads' disk for everything else that writes there

    def reserve(self, size: int) -> int | None:
        """Reserve `size` bytes: None when granted, else the bytes the folder holds and has promised now.

        Raises:
            DiskFullError: the folder's disk has no room for it (beside what other uploads have promised),
                whatever the budget says: Gradio answered a bare 500 to an upload that filled the disk, kept its
                partial file open (so no sweep could delete it) and answered 500 to every upload after it.
        """
        with self._lock:
            held = self.usage() + self._reserved
            if held + size > self.most:
                return held
            try:
                free = shutil.disk_usage(self.folder).free
            except OSError:
                free = None  # no folder yet: Gradio makes it
            if free is not None and free - self._reserved < size + self.DISK_MARGIN:
                raise DiskFullError(max(free - self._reserved - self.DISK_MARGIN, 0), size)
            self._reserved += size
            return None

    def release(self, size: int) -> None:
        """The upload's request ended: what it reserved counts as stored until the next reading of the disk."""
        with self._lock:
            self._reserved -= size
            self._usage += size
