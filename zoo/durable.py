"""The write protocol's parts: temp files that say whether their writer is alive, fsync of files and folders,
atomic replace, one-line errors for a full, read-only or forbidden disk, and the test-only fault hook.

A temp file is named `.tmp.<what>.<pid>.<random>` and held under an exclusive `flock` by its writer for as
long as it exists; the kernel drops the lock when the writer dies (even by kill -9), so `sweep` removes
exactly the temp files of dead writers and never one being written.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zoo.errors import StoreError

TMP = ".tmp."
LINKED = ".link"  # suffix of a hard link that a temp file's writer owns (removed with it)
MODE = 0o644  # records and files readable by a server running as another user


def why(exc: OSError, where: Path) -> str:
    """What went wrong with `where` and what to do, in a few words."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device holding {where}: free some space"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"{where} is not a folder: set ZOO_WEIGHTS_DIR to a writable folder"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{where} is not writable here (read-only or not permitted): set ZOO_WEIGHTS_DIR to a writable folder"
    return f"{where}: {exc.strerror or exc}"


@contextlib.contextmanager
def storing(what: str, where: Path) -> Iterator[None]:
    """Turn an OSError inside into a one-line StoreError: '`what` failed: why'."""
    try:
        yield
    except StoreError:
        raise
    except OSError as exc:
        raise StoreError(f"{what}: {why(exc, where)}.") from None


def fault(point: str) -> None:
    """Test-only hook. ZOO_FAULT_PAUSE=<point> writes `<point>.paused` in ZOO_FAULT_DIR and waits there until
    `<point>.resume` appears (a test kills the process or lets it go on); ZOO_FAULT_ENOSPC=<point> raises a
    'no space left' error there (where no small filesystem can be mounted). Points are named by the callers."""
    if os.environ.get("ZOO_FAULT_ENOSPC") == point:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if os.environ.get("ZOO_FAULT_PAUSE") != point:
        return
    folder = Path(os.environ.get("ZOO_FAULT_DIR") or tempfile.gettempdir())
    (folder / f"{point}.paused").write_text(str(os.getpid()))
    while not (folder / f"{point}.resume").exists():
        time.sleep(0.01)


def _fsync_path(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class TempFile:
    """A temp file in `folder`, locked by this process until it is committed (renamed) or discarded."""

    def __init__(self, folder: Path, what: str):
        self.folder = Path(folder)
        fd, name = tempfile.mkstemp(prefix=f"{TMP}{what}.{os.getpid()}.", dir=self.folder)
        self.path = Path(name)
        self.fd = fd
        self.linked: Path | None = None  # a hard link to an immutable source, used instead of the temp file
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.fchmod(fd, MODE)

    def link_from(self, src: Path) -> bool:
        """Use a hard link to `src` instead of the temp file's own bytes; False where links cannot be made
        (another filesystem, or not allowed): then the caller copies."""
        linked = Path(f"{self.path}{LINKED}")
        try:
            os.link(Path(src).resolve(), linked)  # the blob, not a snapshot symlink
        except OSError:
            return False
        self.linked = linked
        os.chmod(linked, MODE)
        return True

    def size(self) -> int:
        return os.stat(self.linked).st_size if self.linked else os.fstat(self.fd).st_size

    def commit(self, target: Path) -> None:
        """fsync the bytes, rename over `target`, fsync the folder: durable once this returns."""
        if self.linked is not None:
            _fsync_path(self.linked)
            os.replace(self.linked, target)
            self.linked = None
        else:
            os.fsync(self.fd)
            os.replace(self.path, target)
            self.path = None
        fsync_dir(Path(target).parent)

    def close(self) -> None:
        for path in (self.linked, self.path):
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink()
        self.path = self.linked = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> TempFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TempDir:
    """A temp folder in `folder`, locked by this process until it is renamed into place or removed."""

    def __init__(self, folder: Path, what: str):
        self.path: Path | None = Path(tempfile.mkdtemp(prefix=f"{TMP}{what}.{os.getpid()}.", dir=folder))
        os.chmod(self.path, 0o755)
        self.fd = os.open(self.path, os.O_RDONLY)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def commit(self, target: Path) -> None:
        """fsync the folder, rename it to `target` (which must not exist), fsync the parent."""
        os.fsync(self.fd)
        os.rename(self.path, target)
        self.path = None
        fsync_dir(Path(target).parent)

    def __enter__(self) -> TempDir:
        return self

    def __exit__(self, *exc) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None
        os.close(self.fd)


def write_json(path: Path, data: dict[str, Any], point: str = "", *, compact: bool = False,
               allow_nan: bool = True) -> None:
    """Replace `path` with `data` as JSON, durably (temp, fsync, rename, fsync the folder): readers see the old
    file or the new one, never a part, and a failed write leaves nothing behind.

    Raises:
        OSError: the folder is full, read-only or not permitted (nothing was written).
        ValueError: `allow_nan` is False and `data` holds NaN or infinity.
    """
    with TempFile(path.parent, path.stem) as tmp:
        with open(tmp.fd, "w", closefd=False) as f:
            json.dump(data, f, indent=None if compact else 1, allow_nan=allow_nan,
                      separators=(",", ":") if compact else None)
        if point:
            fault(f"{point}-written")
        tmp.commit(path)


def sweep(folder: Path) -> list[str]:
    """Remove the temp files and folders in `folder` whose writer is dead (its lock is free); their names."""
    gone: list[str] = []
    try:
        names = sorted((n for n in os.listdir(folder) if n.startswith(TMP)), key=lambda n: n.endswith(LINKED))
    except OSError:
        return gone
    for name in names:
        path = Path(folder) / name
        if name.endswith(LINKED):  # its owner's temp file goes first; while that lives, so does this
            if not path.with_name(name.removesuffix(LINKED)).exists():
                with contextlib.suppress(OSError):
                    path.unlink()
                    gone.append(name)
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        if writer_alive(fd):
            os.close(fd)
            continue
        if _maybe_unlocked_yet(name, path):
            os.close(fd)
            continue
        try:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            gone.append(name)
        except OSError:
            pass
        finally:
            os.close(fd)
    return gone


def writer_alive(fd: int) -> bool:
    """Whether the writer of the temp file or folder open at `fd` is alive: `TempFile` and `TempDir` hold an
    exclusive lock on theirs for their whole life, and a process's locks go when it dies, even by SIGKILL. When
    it is not, `fd` now holds a shared lock, until it is closed: a writer that has just created the file and not
    yet locked it waits for that (see `_maybe_unlocked_yet`). Any error other than the lock being taken counts
    as alive: nothing is removed on a doubt."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    return False


def alive(pid: int) -> bool:
    """Whether process `pid` exists (this user's or another's)."""
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def owner(name: str, prefix: str) -> int | None:
    """The process id in a name made as `f"{prefix}{os.getpid()}-..."`, or None for a name not made so. Folders
    named after their process (job folders, the server's upload folder) are removed by the next process that
    finds their owner gone (`alive`), which a SIGKILL or an out-of-memory kill never lets clean up itself."""
    pid = name.removeprefix(prefix).split("-", 1)[0] if name.startswith(prefix) else ""
    return int(pid) if pid.isdigit() else None


def _maybe_unlocked_yet(name: str, path: Path) -> bool:
    """A temp file is created, then locked: for that instant a live writer's file is unlocked. One whose
    writer (the pid in its name) is alive and that is only seconds old is left alone."""
    try:
        pid = int(name.split(".")[-2])
    except (ValueError, IndexError):
        return False  # no pid in the name
    if not alive(pid):
        return False
    try:
        return time.time() - os.stat(path).st_mtime < 10
    except OSError:
        return False


def move_aside(src: Path, aside: Path, note: str) -> None:
    """Move `src` to `aside` (a quarantine: nothing reads it there, nothing deletes it) and write `note`
    beside it as `<aside>.txt`, saying what happened and what to do. The note is best effort: the move is
    what matters.

    Raises:
        OSError: the file could not be moved (it is left where it was).
    """
    aside.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, aside)
    try:
        text = aside.with_name(aside.name + ".txt")
        text.write_text(note.rstrip() + "\n", encoding="utf-8")
        os.chmod(text, MODE)
    except OSError:
        pass
