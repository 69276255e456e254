"""The local weight store: content-addressed blobs (`blobs/<sha256>`) and one record per tag
(`<name>/record.json`) that names its blob by hash.

The write protocol (`put`): the bytes go to a locked temp file while they are hashed, are fsynced and renamed
to `blobs/<sha256>` (folder fsynced), then the tag's record is replaced the same way. Until that last rename
the previous version (record and blob) is untouched; after it the new one is durable. Blobs no record names
and temp files whose writer died are removed by the next write or `verify` (`tidy`). A record therefore
always names a complete file whose bytes were hashed on the way in; `checked` re-hashes whenever the file's
identity changed since (`zoo.integrity`). Files and records are 0644.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from zoo import durable, integrity, paths, storemigrate
from zoo.checkpoint import HASH_CHUNK, sha256_file
from zoo.errors import InvalidArgumentError, WeightsCorruptError, WeightsIntegrityError
from zoo.paths import BLOBS, NAME, QUARANTINE, RECORD_FILE, RESERVED, WEIGHTS_FILE, is_tag_folder

log = logging.getLogger(__name__)
SHA256 = re.compile(r"[0-9a-f]{64}")
FULL_BYTES = 1 << 20  # a store's disk with less free than this is reported full (`Store.state`)
SOURCES = ("hub", "hf-cache", "import", "fine-tune")


@dataclass(frozen=True)
class Record:
    """Where a stored weight came from and how to check it."""

    name: str
    sha256: str  # also the name of its blob
    size: int
    source: str  # one of SOURCES
    repo: str | None = None  # Hub repo id it came from
    revision: str | None = None  # the revision asked for
    commit: str | None = None  # the commit it resolved to
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the original file of an import
    verified: list[int] | None = None  # the blob's identity when its hash was last checked (zoo.integrity)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


_tidied: set[str] = set()  # roots tidied (and migrated) by this process


class Store:
    """One folder of weights (ZOO_WEIGHTS_DIR)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def prepare(self) -> Store:
        """`tidy` once per process: a store of the first layout is migrated on first use."""
        if str(self.root) not in _tidied:
            _tidied.add(str(self.root))
            self.tidy()
        return self

    def folder(self, name: str) -> Path:
        """The folder of `name`, which must be a plain `arch.tag`-style name (never a path)."""
        if not NAME.fullmatch(name) or len(name) > 160:
            raise InvalidArgumentError(f"{name!r} is not a valid model name for the weight store.")
        if name in RESERVED:
            raise InvalidArgumentError(f"{name!r} is the name of one of the weight store's own folders; choose "
                                       "another model name.")
        return self.root / name

    def blob(self, sha256: str) -> Path:
        return self.root / BLOBS / sha256

    def path_of(self, record: Record) -> Path:
        """The file a record describes: its blob, or the first layout's file in a store not yet migrated."""
        blob = self.blob(record.sha256)
        legacy = self.folder(record.name) / WEIGHTS_FILE
        return legacy if not blob.exists() and legacy.is_file() else blob

    def weights_path(self, name: str) -> Path:
        rec = self.record(name)
        return self.path_of(rec) if rec else self.folder(name) / WEIGHTS_FILE

    def record(self, name: str) -> Record | None:
        try:
            return _parse_record((self.folder(name) / RECORD_FILE).read_text(), name)
        except (OSError, ValueError):
            return None

    def has(self, name: str) -> bool:
        """True when the record and the file it names are both there and agree on the size."""
        rec = self.record(name)
        try:
            return rec is not None and self.path_of(rec).stat().st_size == rec.size
        except OSError:
            return False

    def records(self) -> list[Record]:
        if not self.root.is_dir():
            return []
        return self._scan()[0]

    def unreadable_records(self) -> list[tuple[str, str]]:
        """(tag, why) for each tag folder whose record file is there but cannot be used (unreadable, not JSON,
        or not a record of that tag). Such a tag is not listed as stored, and no blob is collected while one is
        left: a typo in a hand-edited record.json deleted its 100 MB blob on the next `verify`."""
        return self._scan()[1]

    def _scan(self) -> tuple[list[Record], list[tuple[str, str]]]:
        """(the records, the unreadable ones as (tag, why)) of every tag folder, each record file read once."""
        found: list[Record] = []
        unreadable: list[tuple[str, str]] = []
        for sub in sorted(self.root.iterdir()) if self.root.is_dir() else ():
            if not is_tag_folder(sub):
                continue
            try:
                text = (sub / RECORD_FILE).read_text()
            except FileNotFoundError:
                continue
            except OSError as exc:
                unreadable.append((sub.name, f"{RECORD_FILE} cannot be read: {exc.strerror or exc}"))
                continue
            try:
                rec = _parse_record(text, sub.name)
            except ValueError as exc:
                unreadable.append((sub.name, f"{RECORD_FILE} is not valid JSON ({exc})"))
                continue
            if rec is None:
                unreadable.append((sub.name, f"{RECORD_FILE} is not a record of {sub.name}"))
            else:
                found.append(rec)
        return found, unreadable

    def state(self) -> tuple[str, str]:
        """("writable" | "full" | "read-only" | "unusable", why): a read-only or full store still serves what it
        holds. Full: under FULL_BYTES free on its disk (its probe, an empty file, still succeeds there)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if not self.root.is_dir():
                return "unusable", durable.why(exc, self.root)
        if not self.root.is_dir() or not os.access(self.root, os.R_OK | os.X_OK):
            return "unusable", f"{self.root} is not a readable folder"
        try:
            durable.TempFile(self.root, "probe").close()
        except OSError as exc:
            return "read-only", f"{self.root} is read-only here ({exc.strerror or exc}): serving what it holds"
        try:
            disk = os.statvfs(self.root)
        except OSError:
            return "writable", f"{self.root} is writable"
        free = disk.f_bavail * disk.f_frsize
        if free < FULL_BYTES:
            return "full", (f"the disk holding {self.root} is full ({free // 1024} KiB free): serving what it holds; "
                            "imports, fetches and training runs fail until space is freed")
        return "writable", f"{self.root} is writable"

    def writable(self) -> tuple[bool, str]:
        """Whether files can be written in the store now, and why not."""
        state, detail = self.state()
        return state == "writable", detail

    def lock(self, name: str) -> FileLock:
        """Serialises the writers of `name` across threads and processes (re-entrant in one thread)."""
        return self._lock_file(f"{self.folder(name).name}.lock", f"Cannot write {name}")

    def _store_lock(self) -> FileLock:
        """Held while blobs are renamed in or collected and records replaced."""
        return self._lock_file(".store.lock", "Cannot write the weight store")

    def _lock_file(self, filename: str, what: str) -> FileLock:
        locks = self.root / ".locks"
        with durable.storing(what, self.root):
            locks.mkdir(parents=True, exist_ok=True)
        return FileLock(str(locks / filename), mode=0o644, is_singleton=True)

    def put(self, name: str, src: Path, record: Record, *, link: bool = False) -> Path:
        """Store the bytes of `src` as `name`'s new version, then point its record at them (module docstring).

        `link=True` hard-links immutable sources (Hugging Face cache blobs) instead of copying them.

        Raises:
            StoreError: the store is full, read-only or not permitted (nothing partial is left).
            WeightsIntegrityError: `src` changed while it was being stored.
        """
        folder = self.folder(name)
        with durable.storing(f"{name} was not stored", self.root):
            self.tidy()
            (self.root / BLOBS).mkdir(parents=True, exist_ok=True)
            with durable.TempFile(self.root / BLOBS, "blob") as tmp:
                # a linked Hugging Face blob is immutable and was hashed by the caller; a copy is hashed here
                sha = None if link and tmp.link_from(src) else _copy_hashing(Path(src), tmp)
                if (sha or record.sha256) != record.sha256 or tmp.size() != record.size:
                    raise WeightsIntegrityError(
                        f"{Path(src).name} changed while it was being stored as {name}; nothing was stored. Try again."
                    )
                durable.fault("blob-written")
                with self._store_lock():
                    target = self.blob(record.sha256)
                    tmp.commit(target)
                    durable.fault("blob-durable")
                    new_folder = not folder.exists()
                    try:
                        folder.mkdir(exist_ok=True)
                        verified = list(integrity.identity(os.stat(target)))
                        durable.write_json(folder / RECORD_FILE, asdict(replace(record, verified=verified)), "record")
                        durable.fault("record-durable")
                    except BaseException:
                        if new_folder:
                            shutil.rmtree(folder, ignore_errors=True)
                        raise
                    finally:
                        self._collect()
        return target

    def remove(self, name: str) -> bool:
        folder = self.folder(name)
        if not folder.exists():
            return False
        with durable.storing(f"{name} was not removed", self.root), self.lock(name), self._store_lock():
            (folder / RECORD_FILE).unlink(missing_ok=True)
            durable.fsync_dir(folder)
            shutil.rmtree(folder)
            self._collect()
        return True

    def tidy(self) -> None:
        """Migrate a store of the first layout; remove dead writers' temp files, folders without a record and
        blobs no record names. Does nothing where the store cannot be written."""
        try:
            with self._store_lock():
                for note in storemigrate.migrate(self):
                    log.warning("%s", note)
                durable.sweep(self.root / BLOBS)
                durable.sweep(self.root / "runs")
                durable.sweep(paths.hub_cache(self.root))  # the mirror's copies of small files (zoo.mirror)
                for sub in self.root.iterdir():  # never runs/ or the others: a writer may have just made one
                    if is_tag_folder(sub):
                        durable.sweep(sub)
                        if not any(sub.iterdir()):
                            sub.rmdir()
                self._collect()
        except OSError:  # read-only (StoreError is an OSError too)
            pass

    def _collect(self) -> None:
        """Remove blobs that no record names (under the store lock)."""
        blobs = self.root / BLOBS
        if not blobs.is_dir():
            return
        records, unreadable = self._scan()
        if unreadable:  # the blob such a record names cannot be told apart from garbage: keep every one
            log.warning("kept every blob: the record of %s cannot be read (%s)", unreadable[0][0], unreadable[0][1])
            return
        named = {r.sha256 for r in records}
        for path in blobs.iterdir():
            if SHA256.fullmatch(path.name) and path.name not in named:
                path.unlink(missing_ok=True)
                integrity.forget(path)

    def checked(self, name: str) -> integrity.Checked | None:
        """`name`'s file if its bytes are the recorded ones now (zoo.integrity's rule); None if not stored.

        Raises:
            WeightsCorruptError: the file changed on disk; it was moved aside (where the store is writable).
        """
        rec = self.record(name)
        if rec is None:
            return None
        path = self.path_of(rec)
        verdict = integrity.check(path, rec.sha256, rec.size, integrity.as_identity(rec.verified))
        if verdict is None:
            return None
        if verdict.checked is not None:
            if verdict.rehashed:
                self._remember(rec, verdict.checked.ident)
            return verdict.checked
        aside = self._quarantine(path, name, rec.sha256, verdict.actual)
        raise WeightsCorruptError(
            f"The stored weights of {name} changed on disk ({verdict.change(rec.sha256, rec.size)}) and were "
            f"{aside}. Fetch or import them again."
        )

    def set_aside(self, name: str) -> WeightsCorruptError | None:
        """Why `name` has a record but no file, when that file was moved aside for failing its hash (`checked`,
        `verify`): the error saying when and where to, for every later use to raise or pass on; else None.

        Without it, every use after the first said only that the weights were not here.
        """
        rec = self.record(name)
        if rec is None or self.path_of(rec).exists():
            return None
        shape = re.compile(rf"{re.escape(name)}-(\d+)-{rec.sha256[:12]}\.safetensors")
        try:
            copies = [(int(m[1]), p) for p in (self.root / QUARANTINE).iterdir() if (m := shape.fullmatch(p.name))]
        except OSError:
            return None
        if not copies:
            return None
        ns, newest = max(copies)
        when = datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M UTC")
        return WeightsCorruptError(
            f"The stored weights of {name} failed their SHA-256 check on {when} (they had changed on disk) and "
            f"were moved to {newest}. Fetch or import them again."
        )

    def _remember(self, rec: Record, ident: integrity.Identity) -> None:
        """Write the identity a re-hash vouched for into the record, so a restart need not hash again."""
        try:
            with self.lock(rec.name), self._store_lock():
                now = self.record(rec.name)
                if now is not None and now.sha256 == rec.sha256 and integrity.same(self.path_of(now), ident):
                    durable.write_json(self.folder(rec.name) / RECORD_FILE, asdict(replace(now, verified=list(ident))))
        except OSError:  # a read-only mirror: this process remembers it anyway
            pass

    def _quarantine(self, path: Path, name: str, expected: str, actual: str) -> str:
        """Move a file whose bytes are not its hash aside, with a note beside it; says where (or why it could not)."""
        aside = self.root / QUARANTINE / f"{name}-{time.time_ns()}-{expected[:12]}.safetensors"
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        note = (
            f"{aside.name} was moved here from the ResNet Zoo store on {when}: it was the stored file of {name}, "
            f"but its bytes no longer hash to the sha256 its record names.\n"
            f"  recorded: {expected}\n  actual:   {actual}\n"
            f"Nothing reads it from here and nothing deletes it. To get {name} back:\n"
            f"  python -m zoo fetch {name}            (where the Hugging Face Hub is reachable)\n"
            f"  python -m zoo import FILE --name {name}   (a copy you trust)\n"
            f"Delete this file and this note when you no longer need them.\n"
        )
        try:
            durable.move_aside(path, aside, note)
        except OSError as exc:
            return f"left in place ({durable.why(exc, self.root)})"
        integrity.forget(path)
        log.warning("%s: its stored file no longer hashes to its record (recorded %s, actual %s); moved it to %s",
                    name, expected, actual, aside)
        return f"moved to {aside}"

    def verify(self, name: str) -> tuple[bool, str]:
        """Hash `name`'s file (a scrub): a blob whose bytes are not its hash is moved aside; a record that
        disagrees with a file is reported and left as it is.

        Returns:
            (ok, message) where message says what was found and, if moved, where to.
        """
        self.tidy()
        rec = self.record(name)
        if rec is None:
            why = dict(self.unreadable_records()).get(name)
            if why is not None:
                return False, (f"UNREADABLE: {why}; no stored file is deleted while it is so. Fix the record, or "
                               f"`python -m zoo rm {name}` and import the file again")
            return False, "no record (not stored)"
        path = self.path_of(rec)
        if not path.is_file():
            aside = self.set_aside(name)
            if aside is not None:
                return False, f"MISSING: {str(aside).removesuffix(' Fetch or import them again.')} Fetch or " \
                              f"import {name} again"
            return False, (
                f"MISSING: the record names sha256 {rec.sha256[:12]} but that file is not in the store; "
                f"fetch or import {name} again"
            )
        integrity.forget(path)
        actual = sha256_file(path)
        if actual == rec.sha256 and path.stat().st_size == rec.size:
            self._remember(rec, integrity.identity(path.stat()))
            return True, f"ok ({rec.size:,} bytes, sha256 {actual[:12]})"
        if path.parent.name == BLOBS:  # its bytes are not its name: no record can be right about them
            aside = self._quarantine(path, name, rec.sha256, actual)
            return False, f"CORRUPT: sha256 {actual[:12]} != recorded {rec.sha256[:12]}; {aside}"
        return False, (
            f"MISMATCH: the file hashes to {actual[:12]} but its record says {rec.sha256[:12]}; left as it "
            f"is: import the file again, or `python -m zoo rm {name}`"
        )


def _parse_record(text: str, name: str) -> Record | None:
    """The record of tag `name` in a record file's text; None when it is another tag's or not a record.

    Raises:
        ValueError: not JSON.
    """
    data = json.loads(text)
    try:
        rec = Record.from_dict(data)
    except (TypeError, ValueError, AttributeError):
        return None
    return rec if SHA256.fullmatch(str(rec.sha256)) and rec.name == name else None


def _copy_hashing(src: Path, tmp: durable.TempFile) -> str:
    """Copy `src` into the temp file, hashing the bytes written; their SHA-256."""
    digest = hashlib.sha256()
    with open(src, "rb") as f, open(tmp.fd, "wb", closefd=False) as out:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            durable.fault("blob-copying")
    return digest.hexdigest()
