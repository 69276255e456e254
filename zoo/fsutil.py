"""Small file-system helpers the stores share: an atomic JSON write (temp file, fsync, rename, fsync the folder).
A failed write leaves nothing behind and the old file, if any, untouched."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_json(path: Path, data: Any, *, indent: int | None = 1, compact: bool = False,
                      allow_nan: bool = True) -> None:
    """Write `data` as JSON to `path` atomically; readers see the old file or the new one, never a part.

    Raises:
        OSError: the folder is full, read-only or not permitted (nothing was written).
        ValueError: `allow_nan` is False and `data` holds NaN or infinity.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o644)
            json.dump(data, f, indent=None if compact else indent, allow_nan=allow_nan,
                      separators=(",", ":") if compact else None)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        dirfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
