"""Weights for a registry tag: resolve (store -> HF cache -> Hub), verify, store; import.

Every file is checked against the hash the Hub reports before it enters the store, and against the
architecture (keys, shapes, dtypes) before a model uses it. Legacy `.pth`/`.bin` checkpoints are
read only by `import_file`, an explicit user action, through `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from zoo import checkpoint, durable, hub, registry
from zoo.architecture import build_meta
from zoo.errors import (
    InvalidArgumentError,
    StoreError,
    WeightsCorruptError,
    WeightsIntegrityError,
    WeightsUnavailableError,
)
from zoo.registry import ModelEntry
from zoo.settings import Settings, get_settings
from zoo.store import Record, Store

SHA256 = re.compile(r"[0-9a-f]{64}")
SHA1 = re.compile(r"[0-9a-f]{40}")
LEGACY_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def store(settings: Settings | None = None) -> Store:
    return Store((settings or get_settings()).weights_dir).prepare()


def is_local(entry: ModelEntry, settings: Settings | None = None) -> bool:
    return store(settings).has(entry.name)


def where(entry: ModelEntry, settings: Settings | None = None) -> str | None:
    """Where the entry's weights are on this machine: "store", "hf-cache" (e.g. a Space's
    `preload_from_hub`), or None when they would have to be downloaded. Never contacts the Hub."""
    settings = settings or get_settings()
    if store(settings).has(entry.name):
        return "store"
    return "hf-cache" if hub.cached_file(entry, settings) else None


def how_to_get(name: str) -> str:
    return (
        f"Get them with `python -m zoo fetch {name}` where the Hugging Face Hub is reachable, or import a "
        f"file you have (one `python -m zoo info {name}` shows on another machine): "
        f"`python -m zoo import FILE --name {name}`."
    )


def resolve(name: str, *, progress: hub.Progress | None = None, settings: Settings | None = None) -> Path:
    """Path of a verified safetensors file for `name`, fetching it if needed.

    Order: the local store, then the Hugging Face cache, then the Hub (`hf_hub_download`). One
    download per tag however many threads or processes ask at once (a file lock).

    Raises:
        UnknownModelError: not a registry name.
        WeightsUnavailableError: not local and the Hub cannot provide it now; says how to get it.
        WeightsCorruptError: the stored file changed on disk (it was moved aside) and the Hub cannot provide it
            again now; says both, and how to get it.
        WeightsIntegrityError: the Hub's bytes do not match the hash it reports (nothing is stored).
    """
    settings = settings or get_settings()
    entry = registry.get(name)
    st = store(settings)
    found, corrupt = _stored(st, entry.name)
    if found is not None:
        return found
    with _writing(st, entry.name, f"Cannot fetch {entry.name}", corrupt):
        found, _ = _stored(st, entry.name)
        if found is not None:  # another thread or process finished it while we waited
            return found
        cached = hub.cached_file(entry, settings)
        if cached is not None:  # its blob is named by the Hub's ETag: check the bytes against it
            found = _store_cached(st, entry, cached, cached.resolve().name,
                                  ("hf-cache", entry.hf_hub_id, entry.hf_revision or "main"))
            if found is not None:
                return found
        try:
            remote = hub.remote_file(entry, settings)
            # what hf_hub_download would return unread: the store's blob may be its hard link, damaged with it
            found = _store_cached(st, entry, hub.cached_at(remote, settings), remote.etag,
                                  ("hub", remote.repo_id, remote.revision, remote.commit))
            if found is not None:
                return found
            path = hub.download(remote, settings, progress)
        except WeightsUnavailableError as exc:
            if corrupt is not None:  # say first what happened to the file this store had
                said = str(corrupt).removesuffix(" Fetch or import them again.")
                raise WeightsCorruptError(f"{said} Fetching them again failed: {exc}. {how_to_get(entry.name)}") \
                    from None
            raise WeightsUnavailableError(
                f"Weights for {entry.name} are not in the local store ({st.root}) and {exc}. {how_to_get(entry.name)}",
                model=entry.name,
            ) from None
        try:
            sha = _verified_sha256(path, remote.etag, f"{entry.name} from {remote.repo_id}")
        except WeightsIntegrityError:
            hub.evict(path)
            raise
        record = Record(entry.name, sha, path.stat().st_size, "hub", remote.repo_id, remote.revision, remote.commit)
        return st.put(entry.name, path, record, link=True)


def still_verified(name: str, path: Path, settings: Settings | None = None) -> None:
    """After reading `path`, `resolve`'s answer for `name`: that it was not changed or replaced while it was read.

    `resolve` checks the file, and the read comes after: bytes written between the two would be loaded
    unchecked. Free when the file's identity is still the one checked (one stat); a hash otherwise.

    Raises:
        WeightsCorruptError: it changed (moved aside where its bytes are no longer its hash); read it again.
    """
    found = store(settings).checked(name)
    if found is None or found.path != path:
        raise WeightsCorruptError(f"The stored weights of {name} were replaced or removed while they were read; "
                                  "nothing read was used. Try again.")


@contextlib.contextmanager
def _writing(st: Store, name: str, what: str, corrupt: WeightsCorruptError | None = None) -> Iterator[None]:
    """Hold `name`'s writer lock; a store that cannot be written is one StoreError (or, when the file it has
    changed on disk, that error: the more useful one on a read-only mirror)."""
    try:
        lock = st.lock(name)
        lock.acquire()
    except OSError as exc:
        if corrupt is not None:
            raise corrupt from None
        raise (exc if isinstance(exc, StoreError) else StoreError(f"{what}: {durable.why(exc, st.root)}.")) from None
    try:
        yield
    finally:
        lock.release()


def _stored(st: Store, name: str) -> tuple[Path | None, WeightsCorruptError | None]:
    """(path, None) of `name`'s stored file if its bytes are the recorded ones; (None, why) when they changed
    on disk now or earlier (the file was moved aside, so it is fetched again); (None, None) when it is not stored."""
    try:
        found = st.checked(name)
    except WeightsCorruptError as exc:
        return None, exc
    return (found.path, None) if found else (None, st.set_aside(name))


def _store_cached(st: Store, entry: ModelEntry, cached: Path | None, etag: str | None,
                  source: tuple[str, ...]) -> Path | None:
    """Store the Hugging Face cache's copy if its bytes are what `etag` names (`source`: the record's source, repo,
    revision and commit); evict it otherwise, and say None, as when there is none: then it is downloaded.

    Both the copy the cache has for the tag's branch and the one at the commit about to be downloaded go through
    here. `hf_hub_download` returns the latter without reading it, and the store's blob may be the same file (a
    hard link): when that blob changed on disk and was moved aside, its damaged twin stayed in the cache, and the
    download meant to replace it returned it again, refused as "the mirror serves a corrupt file".
    """
    if cached is None:
        return None
    try:
        sha = _verified_sha256(cached, etag, f"{entry.name} in the Hugging Face cache")
    except WeightsIntegrityError:
        hub.evict(cached)  # a damaged cache entry: fetch a fresh copy
        return None
    return st.put(entry.name, cached, Record(entry.name, sha, cached.stat().st_size, *source), link=True)


def _verified_sha256(path: Path, etag: str | None, what: str) -> str | None:
    """SHA-256 of `path` after checking it against the Hub's ETag (sha256, or git's sha1)."""
    etag = (etag or "").strip('"').lower()
    sha, git_sha1 = checkpoint.file_hashes(path, git_sha1=bool(SHA1.fullmatch(etag)))
    if SHA256.fullmatch(etag):
        ok = sha == etag
    elif git_sha1 is not None:
        ok = git_sha1 == etag
    else:
        raise WeightsIntegrityError(f"{what}: the Hub reported no hash to check the file against (ETag {etag!r}).")
    if not ok:
        raise WeightsIntegrityError(
            f"{what}: the downloaded bytes (sha256 {sha[:16]}...) do not match the hash the Hub reports "
            f"({etag[:16]}...); nothing was stored. Try again; if it persists the mirror serves a corrupt file."
        )
    return sha


def expected_for(entry: ModelEntry) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return checkpoint.expected_tensors(build_meta(entry.arch, num_classes=entry.num_classes))


def import_file(path: Path, name: str, *, settings: Settings | None = None) -> Path:
    """Check a local weights file against `name`'s architecture and store it (source "import").

    A `.safetensors` file is checked as it is; a legacy `.pth`/`.pt`/`.bin`/`.ckpt` checkpoint is read
    with `torch.load(weights_only=True)` (no arbitrary code) and converted to safetensors.

    Raises:
        WeightsIntegrityError / WeightsMismatchError: malformed, non-finite, or does not fit.
        InvalidArgumentError: an unsupported file type.
    """
    settings = settings or get_settings()
    path = Path(path)
    entry = registry.get(name)
    if not path.is_file():
        raise InvalidArgumentError(f"{path} is not a file.")
    st = store(settings)
    expected = expected_for(entry)
    suffix = path.suffix.lower()
    with _writing(st, entry.name, f"Cannot import {path.name}"):
        if suffix == ".safetensors":
            checkpoint.load_checked(path, expected, f"{path.name} for {entry.name}")
            sha = checkpoint.sha256_file(path)
            rec = Record(entry.name, sha, path.stat().st_size, "import", extra={"original": str(path.resolve())})
            return st.put(entry.name, path, rec)
        if suffix not in LEGACY_SUFFIXES:
            raise InvalidArgumentError(
                f"{path.name}: import takes .safetensors, or a PyTorch checkpoint ({', '.join(LEGACY_SUFFIXES)})."
            )
        tensors = _legacy_state_dict(path)
        with durable.storing(f"{path.name} was not converted", st.root):
            (st.root / "blobs").mkdir(parents=True, exist_ok=True)
            with durable.TempFile(st.root / "blobs", "convert") as tmp:
                plain = {k: v.contiguous() for k, v in tensors.items()}
                checkpoint.write_to(tmp, plain, {"format": "pt", "converted_from": path.name})
                checkpoint.load_checked(tmp.path, expected, f"{path.name} for {entry.name}")
                rec = Record(entry.name, checkpoint.sha256_file(tmp.path), tmp.size(), "import",
                             extra={"original": str(path.resolve()), "converted_from": suffix})  # fmt: skip
                return st.put(entry.name, tmp.path, rec, link=True)


def _legacy_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses anything but tensors and plain containers
        raise WeightsIntegrityError(
            f"{path.name} could not be read as a plain PyTorch state dict with weights_only=True ({exc}). "
            "Files that need arbitrary code to load are refused."
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):  # common training-checkpoint wrappers
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsIntegrityError(f"{path.name} does not hold a state dict of tensors.")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}
