"""The local weight store: `<ZOO_WEIGHTS_DIR>/<name>/model.safetensors` plus a JSON record.

A file appears only through a rename after it was verified, and its record is written after it,
so a folder with both is complete; anything else (an interrupted copy, a stray temp file) is
ignored. A per-name file lock serialises writers across threads and processes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from zoo.checkpoint import sha256_file
from zoo.errors import InvalidArgumentError

WEIGHTS_FILE = "model.safetensors"
RECORD_FILE = "record.json"
NAME = re.compile(r"[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)?")
SOURCES = ("hub", "hf-cache", "import", "fine-tune")


@dataclass(frozen=True)
class Record:
    """Where a stored weight came from and how to check it."""

    name: str
    sha256: str
    size: int
    source: str  # one of SOURCES
    repo: str | None = None  # Hub repo id it came from
    revision: str | None = None  # the revision asked for
    commit: str | None = None  # the commit it resolved to
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the original file of an import

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class Store:
    """One folder of weights (ZOO_WEIGHTS_DIR)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def folder(self, name: str) -> Path:
        """The folder of `name`, which must be a plain `arch.tag`-style name (never a path)."""
        if not NAME.fullmatch(name) or len(name) > 160:
            raise InvalidArgumentError(f"{name!r} is not a valid model name for the weight store.")
        return self.root / name

    def weights_path(self, name: str) -> Path:
        return self.folder(name) / WEIGHTS_FILE

    def record(self, name: str) -> Record | None:
        try:
            return Record.from_dict(json.loads((self.folder(name) / RECORD_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def has(self, name: str) -> bool:
        """True when the file and its record are both there and agree on the size."""
        rec = self.record(name)
        try:
            return rec is not None and self.weights_path(name).stat().st_size == rec.size
        except OSError:
            return False

    def records(self) -> list[Record]:
        if not self.root.is_dir():
            return []
        recs = (self.record(p.name) for p in sorted(self.root.iterdir()) if p.is_dir() and NAME.fullmatch(p.name))
        return [r for r in recs if r is not None]

    def writable(self) -> tuple[bool, str]:
        """Whether files can be written in the store now (creates it if missing), and why not."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".probe.", dir=self.root)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            return False, f"{self.root} is not writable ({exc.strerror or exc})"
        return True, f"{self.root} is writable"

    def lock(self, name: str) -> FileLock:
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        return FileLock(str(locks / f"{self.folder(name).name}.lock"))

    def put(self, name: str, src: Path, record: Record, *, link: bool = False) -> Path:
        """Place a verified file in the store atomically, then its record.

        `link=True` hard-links immutable sources (Hugging Face cache blobs) instead of copying them.
        """
        folder = self.folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / WEIGHTS_FILE
        fd, tmp = tempfile.mkstemp(prefix=".incoming.", suffix=".tmp", dir=folder)
        os.close(fd)
        try:
            os.unlink(tmp)
            _link_or_copy(src, tmp, link)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
        self.write_record(record)
        return target

    def write_record(self, record: Record) -> None:
        folder = self.folder(record.name)
        fd, tmp = tempfile.mkstemp(prefix=".record.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(record), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / RECORD_FILE)

    def remove(self, name: str) -> bool:
        folder = self.folder(name)
        if not folder.exists():
            return False
        with self.lock(name):
            shutil.rmtree(folder)
        return True

    def verify(self, name: str) -> tuple[bool, str]:
        """Recompute the SHA-256; a file that does not match is moved aside and its record removed.

        Returns:
            (ok, message) where message says what was found and, if moved, where to.
        """
        rec = self.record(name)
        path = self.weights_path(name)
        if rec is None or not path.is_file():
            return False, "no complete record and file"
        actual = sha256_file(path)
        if actual == rec.sha256 and path.stat().st_size == rec.size:
            return True, f"ok ({rec.size:,} bytes, sha256 {actual[:12]})"
        aside = self.root / ".corrupt" / f"{name}-{int(time.time())}.safetensors"
        aside.parent.mkdir(parents=True, exist_ok=True)
        with self.lock(name):
            os.replace(path, aside)
            (self.folder(name) / RECORD_FILE).unlink(missing_ok=True)
        return False, f"CORRUPT: sha256 {actual[:12]} != recorded {rec.sha256[:12]}; moved to {aside}"


def _link_or_copy(src: Path, dst: str, link: bool) -> None:
    if link:
        try:
            os.link(Path(src).resolve(), dst)  # the blob, not a snapshot symlink
            return
        except OSError:  # another filesystem, or links not allowed: copy instead
            pass
    shutil.copyfile(src, dst)
