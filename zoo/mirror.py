"""The zoo as a Hugging Face Hub mirror: which repos it serves and what is in them, as the Hub's read API
describes them (model info, tree, paths-info) for `huggingface_hub`, its `hf` CLI and timm.

Repos: `timm/<arch.tag>` for each registry tag whose weights are in the store, and `zoo/<run-id>` for each
fine-tuned transfer run. Each holds `model.safetensors` (an LFS file, as on the Hub), `config.json` (timm's
format; none for an `mlp` run, which timm cannot build) and `README.md` (a model card). A repo has one
revision, `main`, whose commit id is derived from the contents, so it changes exactly when a file does.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from zoo import catalog, checkpoint, durable, hubfiles, integrity, paths, registry, resolver, weights
from zoo.errors import EntryNotFoundError, RepoNotFoundError, RevisionNotFoundError, StoreError, close_matches
from zoo.settings import Settings, get_settings
from zoo.transfer import export, runs

RUNS_ORG = "zoo"
MAIN = "main"
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
MEDIA = {"config.json": "application/json", "README.md": "text/markdown; charset=utf-8"}


def _pointer(sha256: str, size: int) -> bytes:
    return LFS_POINTER.format(sha256=sha256, size=size).encode()


def git_blob_id(data: bytes) -> str:
    """The id git gives a file with these bytes (what the Hub calls its `oid`)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class RepoFile:
    """One file of a mirrored repo and where its bytes are on this machine."""

    rfilename: str  # path in the repo
    path: Path  # the bytes, on disk
    size: int
    sha256: str
    mtime: float
    lfs: bool  # stored with Git LFS on the Hub (the weights)
    blob_id: str  # the git blob id: of the LFS pointer for LFS files, of the bytes otherwise (as on the Hub)
    data: bytes | None = field(default=None, repr=False, compare=False)  # a small file's bytes, to write it again

    @property
    def filename(self) -> str:
        return self.rfilename

    @property
    def pointer_size(self) -> int:
        return len(_pointer(self.sha256, self.size))

    @property
    def etag(self) -> str:
        """The Hub's ETag: the SHA-256 for LFS files, the git blob id otherwise."""
        return f'"{self.sha256 if self.lfs else self.blob_id}"'

    @property
    def media_type(self) -> str:
        return MEDIA.get(self.rfilename, "application/octet-stream")


@dataclass(frozen=True)
class Repo:
    repo_id: str
    kind: str  # "pretrained" (a registry tag) or "finetuned" (a transfer run)
    commit: str
    created: float
    last_modified: float
    files: tuple[RepoFile, ...]
    card_data: dict[str, Any]
    tags: tuple[str, ...]
    parameters: dict[str, int]  # safetensors parameter count per dtype
    missing: tuple[tuple[str, str], ...] = ()  # (file a client may ask for, why this repo has none)

    def file(self, path: str) -> RepoFile | None:
        return next((f for f in self.files if f.rfilename == path), None)


def _cached_blob(data: bytes, sha: str, weights_dir: Path) -> Path:
    """A copy of `data` (whose SHA-256 is `sha`) on disk that holds those bytes now, written again (durably) if it is
    missing or changed. In the store's cache; where that cannot be written (a read-only mirror, a full disk), in
    this process's own folder under the system's temp folder.

    Before, the copy was checked by its size alone: an edit that kept the size was served under the old ETag
    (ranges) or broken off for good (whole files), and a store that could not be written answered every mirror
    request, the weights' too, with a bare 500.

    Raises:
        StoreError: neither folder can be written.
    """
    failed: list[tuple[Path, OSError]] = []
    for folder in (paths.hub_cache(weights_dir), Path(tempfile.gettempdir()) / f"zoo-mirror-{os.getuid()}"):
        path = folder / sha
        verdict = integrity.check(path, sha, len(data))  # one stat while the copy is the one last checked
        if verdict is not None and verdict.checked is not None:
            return path
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with durable.TempFile(folder, "blob") as tmp:
                with open(tmp.fd, "wb", closefd=False) as f:
                    f.write(data)
                tmp.commit(path)
        except OSError as exc:
            failed.append((folder, exc))
            continue
        integrity.forget(path)
        return path
    raise StoreError("Cannot keep a copy of the mirror's small files: "
                     + "; ".join(durable.why(exc, folder) for folder, exc in failed) + ".")


def _parameters(path: Path) -> dict[str, int]:
    head = checkpoint.read_header(path)
    counts: Counter[str] = Counter()
    for t in head.tensors.values():
        counts[t.dtype] += math.prod(t.shape)
    return dict(counts)


@functools.lru_cache(maxsize=256)
def _files(weights_file: tuple[str, int, str, float], small: tuple[tuple[str, bytes], ...],
           weights_dir: Path) -> tuple[tuple[RepoFile, ...], str, dict[str, int]]:
    """(files, commit, parameters per dtype) of a repo: the weights where they are, the small files in the
    cache. Cached: this runs once per repo content, not once per request."""
    path, size, sha256, mtime = weights_file
    files = [RepoFile("model.safetensors", Path(path), size, sha256, mtime, True, git_blob_id(_pointer(sha256, size)))]
    for rfilename, data in small:
        sha = hashlib.sha256(data).hexdigest()
        blob = paths.hub_cache(weights_dir) / sha  # where its copy goes: written (and checked) when it is sent
        files.append(RepoFile(rfilename, blob, len(data), sha, mtime, False, git_blob_id(data), data))
    files.sort(key=lambda f: f.rfilename)
    commit = hashlib.sha1("".join(f"{f.rfilename} {f.blob_id}\n" for f in files).encode()).hexdigest()
    return tuple(files), commit, _parameters(Path(path))


def _build(repo_id: str, kind: str, weights_file: tuple[str, int, str, float], small: tuple[tuple[str, bytes], ...],
           created: float, card_data: dict[str, Any], tags: tuple[str, ...], settings: Settings,
           missing: tuple[tuple[str, str], ...] = ()) -> Repo:
    files, commit, parameters = _files(weights_file, small, settings.weights_dir)
    return Repo(repo_id, kind, commit, created, weights_file[3], files, card_data, tags, parameters, missing)


def _tag_repo(entry: registry.ModelEntry, stored: catalog.StoredFile, settings: Settings) -> Repo:
    card = hubfiles.card_data(entry).to_dict()
    tags = ("timm", "pytorch", "safetensors", hubfiles.PIPELINE, *(f"dataset:{d}" for d in card["datasets"]),
            *([f"arxiv:{entry.paper_ids.removeprefix('arXiv:')}"] if entry.paper_ids else []),
            f"license:{entry.license or 'unknown'}")
    small = (("config.json", hubfiles.config_json(entry.name)), ("README.md", hubfiles.readme(entry.name)))
    weights_file = (str(stored.path), stored.size, stored.sha256, stored.mtime)
    return _build(entry.hf_hub_id, "pretrained", weights_file, small, stored.mtime, card, tags, settings)


@functools.lru_cache(maxsize=64)
def _run_small_files(run_id: str, sha256: str, loadable: bool, settings: Settings) -> tuple[tuple[str, bytes], ...]:
    """A run's README.md and config.json (a run never changes once stored: keyed by its file's hash)."""
    run = runs.get(run_id, settings)
    small = (("README.md", hubfiles.run_readme(run, f"{RUNS_ORG}/{run_id}", loadable)),)
    return small + ((("config.json", hubfiles.run_config_json(run)),) if loadable else ())


def _run_repo(run_id: str, stored: catalog.StoredFile, settings: Settings) -> Repo:
    run = runs.get(run_id, settings)
    repo_id = f"{RUNS_ORG}/{run_id}"
    made = export.timm_file(run_id, settings)
    loadable = made is not None
    if made is not None:
        found = catalog.safe_file(made[0], runs.root(settings), made[1]["size"])
        if found is None:
            raise RepoNotFoundError(f"{repo_id}: its timm-format weights are not a regular file in the store.")
        weights_file = (str(found[0]), made[1]["size"], made[1]["sha256"], found[1])
    else:
        weights_file = (str(stored.path), stored.size, stored.sha256, stored.mtime)
    small = _run_small_files(run_id, stored.sha256, loadable, settings)
    card = hubfiles.run_card_data(run, loadable).to_dict()
    base = registry.get(run["tag"]).hf_hub_id
    tags = ("timm" if loadable else "resnet-zoo", "safetensors", hubfiles.PIPELINE, f"base_model:{base}",
            f"base_model:finetune:{base}", f"license:{card['license']}")
    try:
        created = datetime.fromisoformat(run["created"]).timestamp()
    except (KeyError, TypeError, ValueError):
        created = stored.mtime
    missing = () if loadable else (("config.json", f"Its {run['strategy']!r} head is not a timm classifier, so timm "
                                     "cannot build it (README.md says how to load model.safetensors)."),)
    return _build(repo_id, "finetuned", weights_file, small, created, card, tags, settings, missing)


def served(settings: Settings | None = None) -> list[str]:
    """The ids of every repo served now."""
    settings = settings or get_settings()
    ids = [e.hf_hub_id for e in registry.load() if catalog.stored_file(e.name, settings)]
    return ids + [f"{RUNS_ORG}/{r['id']}" for r in runs.list_runs(settings) if r.get("sha256")]  # not scores only


def repo(repo_id: str, settings: Settings | None = None) -> Repo:
    """The repo with exactly this id.

    Raises:
        RepoNotFoundError: no such repo here (with close ids that exist), or a registry tag whose weights are
            not in the store (with how to get them).
    """
    settings = settings or get_settings()
    org, _, name = repo_id.partition("/")
    entry = next((e for e in registry.load() if e.hf_hub_id == repo_id), None)
    if entry is not None:
        stored = catalog.stored_file(entry.name, settings)
        if stored is None:
            raise RepoNotFoundError(f"{repo_id} is a registry tag, but its weights are not in this zoo's store. "
                                    f"{weights.how_to_get(entry.name)}")
        return _tag_repo(entry, stored, settings)
    if org == RUNS_ORG and resolver.run(name, settings) is not None:
        stored = catalog.stored_file(name, settings)
        if stored is not None:
            return _run_repo(name, stored, settings)
    candidates = [*served(settings), *(e.hf_hub_id for e in registry.load())]
    found = close_matches(repo_id, candidates)
    hint = f" Did you mean: {', '.join(found)}?" if found else ""
    raise RepoNotFoundError(f"Repository {repo_id!r} is not served here.{hint} Repo ids are exact: timm/<arch.tag> "
                            f"for stored tags, {RUNS_ORG}/<run-id> for fine-tuned runs.", suggestions=found)


def at(repo_id: str, revision: str, settings: Settings | None = None) -> Repo:
    """The repo at `revision`: `main` or its commit id.

    Raises:
        RepoNotFoundError, RevisionNotFoundError.
    """
    found = repo(repo_id, settings)
    if revision not in (MAIN, found.commit):
        raise RevisionNotFoundError(f"Invalid rev id: {revision[:100]}. {repo_id} is served here at {MAIN} "
                                    f"(commit {found.commit}) only.")
    return found


def file_at(repo_id: str, revision: str, path: str, settings: Settings | None = None) -> tuple[Repo, RepoFile]:
    """A file of the repo at `revision`, its bytes on disk.

    Raises:
        RepoNotFoundError, RevisionNotFoundError, EntryNotFoundError.
    """
    settings = settings or get_settings()
    found = at(repo_id, revision, settings)
    f = found.file(path)
    if f is None:
        names = ", ".join(x.rfilename for x in found.files)
        why = dict(found.missing).get(path, "")
        raise EntryNotFoundError(f"{repo_id} has no file {path[:200]!r}; it has {names}. {why}".strip(),
                                 suggestions=close_matches(path, [x.rfilename for x in found.files]),
                                 commit=found.commit)
    if f.data is not None:  # a small file: its copy checked, and written again if it changed or went
        f = replace(f, path=_cached_blob(f.data, f.sha256, settings.weights_dir))
    return found, f
