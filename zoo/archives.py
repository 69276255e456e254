"""Untrusted zip archives of images: every member checked from the central directory before any byte is
inflated (names, links, encryption, counts, sizes, ratios), then read in memory or extracted into one
folder with the limits enforced again while inflating: a member whose header lies about its size stops
at the declared size, in chunks, never inflated whole first."""

from __future__ import annotations

import errno
import stat
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from zoo import durable
from zoo.errors import InvalidDatasetError

MAX_MEMBERS = 100_000  # files in one zip
MAX_UNPACKED = 8 * 1024**3  # bytes all members of a zip decompress to
CHUNK = 1024 * 1024  # bytes inflated at a time
MAX_RATIO = 200  # a member that inflates more than this (and past 1 MiB) is a zip bomb, not a photo
IGNORED = ("__MACOSX",)  # resource-fork folders that macOS adds


@dataclass(frozen=True)
class Member:
    name: str  # the member's path inside the archive (checked: relative, no `..`)
    info: zipfile.ZipInfo


def _unsafe_name(name: str) -> bool:
    pure = PurePosixPath(name)
    return (not name or "\x00" in name or "\\" in name or name.startswith("/") or ".." in pure.parts
            or ":" in name.split("/")[0])


def members(archive: zipfile.ZipFile, label: str, max_total: int | None = None) -> list[Member]:
    """The archive's files that matter (no folders, hidden files or `__MACOSX`), after checking all of them.

    Args:
        max_total: the dataset budget in bytes (ZOO_MAX_DATASET_MB); MAX_UNPACKED applies in any case.

    Raises:
        InvalidDatasetError: an unsafe name, a link, an encrypted member, too many members, too many
            bytes unpacked, or a member that inflates like a zip bomb; names the member.
    """
    infos = [i for i in archive.infolist() if not i.is_dir()]
    if len(infos) > MAX_MEMBERS:
        raise InvalidDatasetError(f"{label} holds {len(infos):,} files; the limit is {MAX_MEMBERS:,}.")
    total = sum(i.file_size for i in infos)
    if total > MAX_UNPACKED:
        raise InvalidDatasetError(f"{label} unpacks to more than {MAX_UNPACKED / 1024**3:.0f} GiB.")
    if max_total is not None and total > max_total:
        raise InvalidDatasetError(f"{label} unpacks to {total / 2**20:,.1f} MiB; this server takes datasets up "
                                  f"to {max_total / 2**20:,.0f} MiB (ZOO_MAX_DATASET_MB).")
    out = []
    for info in infos:
        name = info.filename
        if _unsafe_name(name):
            raise InvalidDatasetError(f"{label} has an unsafe member name {name!r}; refusing the archive.")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise InvalidDatasetError(f"{label} holds a symbolic link {name!r}; refusing the archive.")
        if info.flag_bits & 0x1:
            raise InvalidDatasetError(f"{label} is encrypted ({name!r}); upload an archive without a password.")
        if info.compress_size and info.file_size / info.compress_size > MAX_RATIO and info.file_size > 2**20:
            raise InvalidDatasetError(f"{name!r} in {label} inflates {info.file_size / info.compress_size:.0f}x; "
                                      "refusing a likely zip bomb.")
        if not any(part.startswith(".") or part in IGNORED for part in PurePosixPath(name).parts):
            out.append(Member(name, info))
    return out


def open_zip(path: Path) -> zipfile.ZipFile:
    """Open `path` as a zip, or InvalidDatasetError saying it is not one."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidDatasetError(f"{Path(path).name} is not a readable zip file ({exc}).") from None


def too_big(member: Member, max_bytes: int | None) -> str | None:
    """Why a member is skipped unread for its declared size, or None when it may be inflated."""
    size = member.info.file_size
    if max_bytes is not None and size > max_bytes:
        return (f"the file is {size / 2**20:.1f} MiB; this server takes images up to {max_bytes / 2**20:.0f} MiB "
                "(ZOO_MAX_IMAGE_MB)")
    return None


def chunks(archive: zipfile.ZipFile, member: Member, label: str) -> Iterator[bytes]:
    """A member's bytes in chunks of at most CHUNK, CRC checked, stopped the moment they pass the declared size.

    Raises:
        InvalidDatasetError: the member is corrupt or inflates past its declared size.
    """
    limit, seen = member.info.file_size, 0
    try:
        with archive.open(member.info) as f:
            while chunk := f.read(min(CHUNK, limit + 1 - seen)):
                seen += len(chunk)
                if seen > limit:
                    raise InvalidDatasetError(f"{member.name!r} in {label} inflates past its declared size "
                                              f"({limit:,} bytes); refusing it.")
                yield chunk
    except (zipfile.BadZipFile, zlib.error, OSError, RuntimeError, EOFError) as exc:  # zlib: damaged deflate data
        raise InvalidDatasetError(f"{member.name!r} in {label} is corrupt ({exc}).") from None


def read(archive: zipfile.ZipFile, member: Member, label: str, max_bytes: int | None = None) -> bytes:
    """One member's bytes (CRC checked), never more than its declared size.

    Raises:
        InvalidDatasetError: see `chunks`; or its declared size is over `max_bytes` (nothing inflated).
    """
    if why := too_big(member, max_bytes):
        raise InvalidDatasetError(f"{member.name!r} in {label}: {why}.")
    return b"".join(chunks(archive, member, label))


def extract(path: Path, dest: Path, suffixes: tuple[str, ...], *, max_member: int | None = None,
            max_total: int | None = None, skipped: list[tuple[str, str]] | None = None) -> list[Path]:
    """Extract the checked members whose names end with `suffixes` into `dest`; return their paths.

    Nothing is written outside `dest`; the caller owns `dest` and removes it (a job's temporary folder).
    Members declared larger than `max_member` bytes are not inflated; they are added to `skipped`.

    Raises:
        InvalidDatasetError: see `members` and `chunks`.
    """
    label = Path(path).name
    dest = Path(dest).resolve()
    written: list[Path] = []
    with open_zip(path) as archive:
        for m in members(archive, label, max_total):
            if PurePosixPath(m.name).suffix.lower() not in suffixes:
                continue
            if why := too_big(m, max_member):
                if skipped is not None:
                    skipped.append((m.name, why))
                continue
            target = (dest / m.name).resolve()
            if dest not in target.parents:  # belt and braces after the name checks
                raise InvalidDatasetError(f"{label}: {m.name!r} would land outside the job folder.")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as out:
                    for chunk in chunks(archive, m, label):
                        out.write(chunk)
            except OSError as exc:
                raise InvalidDatasetError(_unpack_error(label, m.name, exc, dest)) from None
            written.append(target)
    return written


def _unpack_error(label: str, name: str, exc: OSError, dest: Path) -> str:
    """Why a member could not be written into the job folder, as one sentence (was "OSError" or "FileExistsError")."""
    if exc.errno == errno.ENAMETOOLONG:
        return (f"{label}: the member name {name[:60]!r}... is too long for this server's disk "
                f"({len(PurePosixPath(name).name.encode())} bytes; at most 255 a name). Rename it and zip again.")
    if exc.errno in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
        return (f"{label}: {name!r} is both a file and a folder in this zip (a member's name is another's folder). "
                "Rename one and zip again.")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{label} could not be unpacked: {durable.why(exc, dest)}, or send a smaller zip."
    return f"{label}: {name!r} could not be unpacked ({exc.strerror or type(exc).__name__})."
