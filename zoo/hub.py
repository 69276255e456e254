"""Talking to the Hugging Face Hub: file metadata, downloads into the HF cache, and reachability.

Reachability is decided once and remembered: with `HF_HUB_OFFLINE=1` nothing is sent; when the
Hub does not answer within HEAD_TIMEOUT_S, every resolve in this process skips it at once for
RECHECK_S seconds instead of waiting again (no retry storm across models).
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import HfHubHTTPError
from tqdm import tqdm

from zoo import registry
from zoo.errors import HubUnreachableError as HubUnreachableError
from zoo.errors import WeightsUnavailableError
from zoo.registry import ModelEntry
from zoo.settings import Settings

HEAD_TIMEOUT_S = 3.0
RECHECK_S = 60.0
Progress = Callable[[int, int | None], None]  # (bytes done, bytes total or None)


def _transport_errors() -> tuple[type[Exception], ...]:
    """Connection-level errors of the HTTP client huggingface_hub uses: httpx2 from 2.0, httpx in 1.x."""
    found = []
    for module in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            found.append(importlib.import_module(module).TransportError)
    return tuple(found)


TRANSPORT_ERRORS = _transport_errors()


@dataclass(frozen=True)
class RemoteFile:
    """What the Hub says of a file before it is downloaded."""

    repo_id: str
    filename: str
    revision: str  # what was asked for (a branch or a commit)
    commit: str | None  # the commit it resolved to
    etag: str | None  # sha256 for LFS files, git's blob sha1 otherwise
    size: int | None


class _Reachability:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._up_until = 0.0  # the Hub answered recently: no need to ask again before this
        self._reason = ""

    def check(self, settings: Settings) -> None:
        if settings.hf_offline:
            raise HubUnreachableError("HF_HUB_OFFLINE is set, so the Hub is not contacted")
        with self._lock:
            if time.monotonic() < self._down_until:
                raise HubUnreachableError(f"the Hub at {settings.hf_endpoint} did not answer ({self._reason})")

    def down(self, reason: str) -> None:
        with self._lock:
            self._down_until = time.monotonic() + RECHECK_S
            self._reason = reason

    def up(self) -> None:
        with self._lock:
            self._down_until = 0.0
            self._up_until = time.monotonic() + RECHECK_S

    def reset(self) -> None:
        """Forget what is known: the next question goes to the Hub."""
        with self._lock:
            self._down_until = self._up_until = 0.0

    @property
    def reason(self) -> str:
        return self._reason

    @property
    def recently_up(self) -> bool:
        return time.monotonic() < self._up_until

    @property
    def is_down(self) -> bool:
        return time.monotonic() < self._down_until


reachability = _Reachability()


def status(settings: Settings) -> tuple[str, str]:
    """("offline" | "unreachable" | "reachable", detail); asks the Hub (one HEAD) at most once per RECHECK_S."""
    if settings.hf_offline:
        return "offline", "HF_HUB_OFFLINE is set, so the Hub is not contacted"
    if reachability.is_down:
        return "unreachable", f"{settings.hf_endpoint} did not answer ({reachability.reason})"
    if not reachability.recently_up:
        try:
            remote_file(registry.load().defaults()[0], settings)
        except HubUnreachableError as exc:
            return "unreachable", str(exc)
        except WeightsUnavailableError:
            pass  # it answered: reachable, even if that file is missing there
    return "reachable", f"{settings.hf_endpoint} answers"


def cache_dir(settings: Settings) -> Path:
    """The Hugging Face cache used here (HF_HOME/hub, read from our settings, not at import time)."""
    return settings.hf_home / "hub" if settings.hf_home else Path(constants.HF_HUB_CACHE)


def cached_file(entry: ModelEntry, settings: Settings) -> Path | None:
    """The entry's file in the Hugging Face cache (e.g. a Space's `preload_from_hub`), if there."""
    found = try_to_load_from_cache(
        entry.hf_hub_id, entry.hf_filename, cache_dir=cache_dir(settings), revision=entry.hf_revision or "main"
    )
    return Path(found) if isinstance(found, str) else None


def cached_at(remote: RemoteFile, settings: Settings) -> Path | None:
    """The file `download` would return for `remote` without a request: the cache's copy at its commit, if any."""
    found = try_to_load_from_cache(remote.repo_id, remote.filename, cache_dir=cache_dir(settings),
                                   revision=remote.commit or remote.revision)
    return Path(found) if isinstance(found, str) else None


def remote_file(entry: ModelEntry, settings: Settings) -> RemoteFile:
    """Ask the Hub (one HEAD request, no retries) where the file is and what its hash is.

    Raises:
        HubUnreachableError: offline, or no answer in time (remembered for RECHECK_S seconds).
        WeightsUnavailableError: the Hub answered that it does not have the file.
    """
    reachability.check(settings)
    revision = entry.hf_revision or "main"
    url = hf_hub_url(entry.hf_hub_id, entry.hf_filename, revision=revision, endpoint=settings.hf_endpoint)
    try:
        meta = get_hf_file_metadata(url, timeout=HEAD_TIMEOUT_S, endpoint=settings.hf_endpoint)
    except TRANSPORT_ERRORS as exc:
        reachability.down(f"{type(exc).__name__}: {exc}")
        raise HubUnreachableError(f"the Hub at {settings.hf_endpoint} did not answer ({exc})") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status is not None and status >= 500:
            reachability.down(f"HTTP {status}")
            raise HubUnreachableError(f"the Hub at {settings.hf_endpoint} answered HTTP {status}") from None
        raise WeightsUnavailableError(
            f"the Hub has no {entry.hf_filename} in {entry.hf_hub_id} at {revision} (HTTP {status})"
        ) from None
    reachability.up()
    return RemoteFile(entry.hf_hub_id, entry.hf_filename, revision, meta.commit_hash, meta.etag, meta.size)


def download(remote: RemoteFile, settings: Settings, progress: Progress | None = None) -> Path:
    """Download into the Hugging Face cache with `hf_hub_download`, at the commit `remote` resolved to.

    Raises:
        HubUnreachableError: the transfer failed (the cache keeps no partial file).
    """
    try:
        path = hf_hub_download(
            remote.repo_id,
            remote.filename,
            revision=remote.commit or remote.revision,
            cache_dir=cache_dir(settings),
            endpoint=settings.hf_endpoint,
            etag_timeout=HEAD_TIMEOUT_S,
            tqdm_class=_callback_bar(progress) if progress else None,
        )
    except (*TRANSPORT_ERRORS, HfHubHTTPError, OSError) as exc:
        raise HubUnreachableError(f"the download from {settings.hf_endpoint} failed ({exc})") from None
    return Path(path)


def evict(path: Path) -> None:
    """Remove a cached file that failed verification: the snapshot link and the blob it points to."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    if blob != path and blob.parent.name == "blobs":
        blob.unlink(missing_ok=True)


def _callback_bar(progress: Progress) -> type[tqdm]:
    """A silent tqdm class that forwards byte counts to `progress` (what the UI's progress bar uses)."""

    class CallbackBar(tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "disable": True})
            self.done = kwargs.get("initial", 0)

        def update(self, n: float | None = 1) -> bool | None:
            self.done += int(n or 0)
            progress(self.done, self.total)
            return None

    return CallbackBar
