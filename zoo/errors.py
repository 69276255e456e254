"""The ZooError hierarchy: every error a user can meet, each also a builtin, each saying how to fix it."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import PurePath

# an absolute path on the server, without the full stop of a sentence that ends with it
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[\w.@+~-]+){2,}/?(?<!\.)")


def without_paths(text: str) -> str:
    """`text` with every absolute server path replaced by its last name in backticks (a folder's with a slash):
    what a remote client or a page visitor may read. The server's log keeps the whole message. (A folder's path
    used to go without a trace: "and were left in place ( is not writable here".)"""

    def name(m: re.Match) -> str:
        last = PurePath(m.group(0)).name
        return f"`{last}`" if "." in last or not last else f"`{last}/`"

    return _PATH.sub(name, text)


class ZooError(Exception):
    """Base class of every error ResNet Zoo raises on purpose."""


class ConfigError(ZooError, ValueError):
    """A setting (environment variable or option) has a value we cannot use."""


class UnknownModelError(ZooError, KeyError):
    """A model name that is neither a registered `arch.tag` nor a bare architecture.

    Attributes:
        name: the name that was asked for.
        suggestions: the closest registered names, best first.
    """

    def __init__(self, name: str, candidates: Iterable[str] = ()):
        self.name = name
        self.suggestions = close_matches(name, candidates)
        hint = f" Did you mean: {', '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"Unknown model {name!r}.{hint} Run `python -m zoo list` to see every model.")

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return str(self.args[0])


def close_matches(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Return up to `n` candidates that look like `name` (bare architectures count as candidates)."""
    pool = sorted(set(candidates))
    key = name.strip().lower()
    # Tags of an architecture typed bare come first, then names that look alike (resnt50 -> resnet50).
    found = [c for c in pool if c.startswith(key + ".")]
    found += [c for c in difflib.get_close_matches(key, pool, n=n, cutoff=0.6) if c not in found]
    return found[:n]


class InvalidArgumentError(ZooError, ValueError):
    """An argument is outside what the operation accepts; the message gives the accepted range."""


class WeightsUnavailableError(ZooError, FileNotFoundError):
    """The weights of a model are not local and cannot be fetched now; the message says how to get them.

    `model`: the tag whose weights are missing, where one is (the UI names it; a dataset or a run is not one).
    """

    def __init__(self, *args: object, model: str | None = None):
        super().__init__(*args)
        self.model = model


class WeightsIntegrityError(ZooError, ValueError):
    """A weights file is malformed, truncated, corrupt, or not what the Hub said it is; it was not used."""


class WeightsCorruptError(WeightsIntegrityError):
    """A stored file no longer hashes to its record (changed on disk); it was not served or loaded."""


class StoreError(ZooError, OSError):
    """The store (weights, runs, results) could not be written (disk full, read-only, not permitted); the message
    says what to do."""


class WeightsMismatchError(WeightsIntegrityError):
    """A well-formed weights file whose tensors do not fit the architecture (keys, shapes, dtypes)."""


class InvalidImageError(ZooError, ValueError):
    """An image could not be used: unreadable, not an accepted format, too large, or truncated."""


class InvalidDatasetError(ZooError, ValueError):
    """A labelled folder or zip could not be used: unknown class folders, no images, unsafe archive."""


class HubUnreachableError(WeightsUnavailableError):
    """The Hub cannot be asked now (offline mode, or it did not answer)."""


class FastPathError(ZooError, RuntimeError):
    """A fast path could not be built or disagreed with eager; the eager path keeps serving."""


class OutOfMemoryError(ZooError, MemoryError):
    """The device ran out of memory even after a retry at a smaller batch; the message says what to shrink.
    The REST API answers it with 503 (try again later, or with less), not 500."""


class Cancelled(ZooError):
    """A training run was cancelled; nothing it trained is kept."""


class ServerStopping(ZooError):
    """The server is shutting down: a long job was stopped before it finished; nothing it trained is kept."""


class HubLookupError(ZooError, FileNotFoundError):
    """The Hub mirror has no such repo, revision or file. `code` is what the Hub sends as X-Error-Code.

    Attributes:
        suggestions: close names that do exist here, best first.
        commit: the repo's commit when the repo exists (the Hub sends it, so clients cache the miss).
    """

    code = "EntryNotFound"

    def __init__(self, message: str, *, suggestions: Iterable[str] = (), commit: str | None = None):
        super().__init__(message)
        self.suggestions = list(suggestions)
        self.commit = commit


class RepoNotFoundError(HubLookupError):
    """No repo with that exact id is served here (a tag whose weights are not stored, or no such name)."""

    code = "RepoNotFound"


class RevisionNotFoundError(HubLookupError):
    """The repo exists here, but not at that revision: only `main` and its commit id are served."""

    code = "RevisionNotFound"


class EntryNotFoundError(HubLookupError):
    """The repo exists here at that revision, but has no such file or folder."""

    code = "EntryNotFound"
