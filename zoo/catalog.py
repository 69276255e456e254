"""The model catalog as plain data for programs: summaries, full cards, safetensors headers, and the
stored files the download API may serve (looked up by registry name or Hub repo, never by path)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo import checkpoint, images, registry, resolver, weights
from zoo.errors import WeightsCorruptError, WeightsUnavailableError
from zoo.registry import ModelEntry
from zoo.settings import Settings, get_settings
from zoo.transfer import runs
from zoo.transfer.runs import Run


@dataclass(frozen=True)
class StoredFile:
    """A weight file the API may send: a regular file inside the store, with its recorded hash."""

    name: str  # registry tag, or a transfer run's id
    path: Path
    sha256: str
    size: int
    commit: str  # the Hub commit it came from, or a stable id derived from its hash (imports, runs)
    mtime: float

    @property
    def filename(self) -> str:
        return f"{self.name}.safetensors"

    def recheck(self) -> None:
        """Check the file again (after it was seen to differ: it is moved aside)."""
        stored_file(self.name)


def safe_file(path: Path, root: Path, size: int) -> tuple[Path, float] | None:
    """(real path, mtime) of `path` if it is a regular file directly in a real folder of `root` with
    `size` bytes; None for anything else (missing, a symlink anywhere, elsewhere, another size)."""
    if path.is_symlink() or path.parent.is_symlink():
        return None
    try:
        real, top = path.resolve(strict=True), root.resolve(strict=True)
        info = real.stat()
    except OSError:
        return None
    if real.parent.parent != top or not real.is_file() or info.st_size != size:
        return None
    return real, info.st_mtime


def _commit(sha256: str) -> str:
    return hashlib.sha1(f"resnet-zoo:{sha256}".encode()).hexdigest()


def summary(entry: ModelEntry, settings: Settings | None = None) -> dict[str, Any]:
    return {
        "name": entry.name, "architecture": entry.arch, "tag": entry.tag, "family": entry.family,
        "depth": entry.depth, "default": entry.is_default, "params": entry.params, "gmacs": entry.gmacs_eval,
        "eval_size": entry.eval_size, "top1": entry.top1, "top5": entry.top5, "license": entry.license,
        "pretrain": entry.pretrain, "kind": "pretrained",
        "local": weights.where(entry, settings or get_settings()) == "store",
        "url": f"/api/models/{entry.name}",
    }


def search(*, family: str | None = None, depth: int | None = None, license: str | None = None,
           local: bool | None = None, q: str | None = None, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Summaries of the entries matching every given filter (`q`: words in name, license, pretraining data)."""
    settings = settings or get_settings()
    rows = [summary(e, settings) for e in registry.list_models(family=family, depth=depth, license=license, text=q)]
    words = (q or "").lower().split()
    for run in runs.stored(settings):
        row = run_summary(run)
        base = run.base
        text = f"{run.id} {run.tag} {run.strategy} {run.dataset} {' '.join(run.classes)}".lower()
        if (family and base.family != family) or (depth and base.depth != depth) or \
                (license and (base.license or "unknown") != license.lower()) or any(w not in text for w in words):
            continue
        rows.append(row)
    return [r for r in rows if local is None or r["local"] == local]


def run_summary(run: Run) -> dict[str, Any]:
    """A transfer run as a catalog row (kind `finetuned`)."""
    base = run.base
    return {"name": run.id, "kind": resolver.kind(run), "base": run.tag, "architecture": base.arch,
            "family": base.family, "depth": base.depth, "strategy": run.strategy, "classes": list(run.classes),
            "dataset": run.dataset, "val_top1": run.val_top1, "macro_f1": run.macro_f1,
            "license": base.license, "local": bool(run.sha256), "created": run.created, "url": f"/api/models/{run.id}"}


def exact(name: str, settings: Settings | None = None) -> str:
    """The one naming rule of the HTTP API: `name` exactly as the registry or the runs store spell it (a tag,
    a bare architecture meaning its default tag, or a run id); the registry tag or run id it names.

    Raises:
        UnknownModelError: anything else (other case, spaces, a typo), with the close names that do exist.
    """
    return resolver.resolve(name, exact=True, settings=settings).name


def card_for(name: str, settings: Settings | None = None) -> dict[str, Any]:
    """The card of a registry name or of a transfer run (named exactly: `exact`)."""
    settings = settings or get_settings()
    target = resolver.resolve(name, exact=True, settings=settings)
    if isinstance(target, Run):
        run, name = target, target.id
        stored = stored_file(name, settings)
        return {**run_summary(run), "preprocessing": dataclasses.asdict(run.preprocessing), "config": run.config,
                "history": list(run.history), "per_class_acc": list(run.per_class_acc),
                "confusion": [list(row) for row in run.confusion],
                "weights": {"local": stored is not None, "sha256": run.sha256, "size": run.size,
                            "filename": stored.filename if stored else None,
                            "download_url": f"/api/models/{name}/weights" if stored else None,
                            "header_url": f"/api/models/{name}/header" if stored else None,
                            "hub_repo_id": f"zoo/{name}" if stored else None}}
    return card(target, settings)


def card(entry: ModelEntry, settings: Settings | None = None) -> dict[str, Any]:
    """Everything known about a tag: registry facts, preprocessing, and its stored file if there is one."""
    settings = settings or get_settings()
    facts = entry.to_dict()
    facts.pop("name")
    stored = stored_file(entry.name, settings)
    pre = images.preprocessing(entry)
    return {
        **summary(entry, settings),
        "local": stored is not None,  # the strict answer: a file that changed on disk is not served, so not local
        "facts": facts,
        "preprocessing": {**pre.__dict__, "resize": pre.resize, "description": pre.describe()},
        "weights": {
            "local": stored is not None, "sha256": stored.sha256 if stored else None,
            "size": stored.size if stored else None, "filename": stored.filename if stored else None,
            "download_url": f"/api/models/{entry.name}/weights" if stored else None,
            "header_url": f"/api/models/{entry.name}/header" if stored else None,
            "hub_mirror_url": f"/{entry.hf_hub_id}/resolve/main/{entry.hf_filename}" if stored else None,
            "hub_repo_id": entry.hf_hub_id if stored else None,
            "how_to_get": None if stored else weights.how_to_get(entry.name),
        },
    }


def stored_file(name: str, settings: Settings | None = None, *, strict: bool = False) -> StoredFile | None:
    """The file for a registry name or a transfer run's id if it is complete and safe to serve, else None.

    Safe: a regular file (not a symlink) in a real folder of the store, whose bytes are the recorded ones
    now (`zoo.integrity`: re-hashed whenever the file changed since it was last checked).

    Raises:
        WeightsCorruptError: with `strict`, when the file changed on disk (it was moved aside where the store
            is writable); without, that is None like any file not here.
    """
    try:
        return _stored_file(name, settings or get_settings())
    except WeightsCorruptError:
        if strict:
            raise
        return None


def _stored_file(name: str, settings: Settings) -> StoredFile | None:
    target = resolver.resolve(name, settings=settings)
    if isinstance(target, Run):
        checked = runs.checked(target.id, settings)
        found = checked and safe_file(checked.path, runs.root(settings), checked.size)
        return StoredFile(target.id, found[0], checked.sha256, checked.size, _commit(checked.sha256),
                          checked.mtime) if found else None
    entry = target
    st = weights.store(settings)
    record, checked = st.record(entry.name), st.checked(entry.name)
    found = checked and safe_file(checked.path, st.root, checked.size)
    if record is None or not found:
        return None
    return StoredFile(entry.name, found[0], checked.sha256, checked.size,
                      record.commit or _commit(checked.sha256), checked.mtime)


def require_stored(name: str, settings: Settings | None = None) -> StoredFile:
    """`stored_file` of the exactly named model (`exact`), or WeightsUnavailableError saying how to get it
    (WeightsCorruptError, saying when and where to, if the file it had was moved aside for failing its hash)."""
    name = exact(name, settings)
    found = stored_file(name, settings, strict=True)
    if found is None:
        entry = registry.get(name)
        st = weights.store(settings)
        set_aside = st.set_aside(entry.name)
        if set_aside is not None:  # say what happened to the file this store had, not just that it is missing
            raise set_aside
        record = st.record(entry.name)
        if record is not None and st.path_of(record).is_file():  # there, but refused by `safe_file`
            raise WeightsUnavailableError(
                f"The weights of {entry.name} are in the store, but reached through a symbolic link (or outside "
                "its folders), and this server serves no file that way: a link can lead anywhere on the machine. "
                "Set ZOO_WEIGHTS_DIR to the real folder, or move the files back into it.", model=entry.name)
        raise WeightsUnavailableError(f"The weights of {entry.name} are not on this server. "
                                      f"{weights.how_to_get(entry.name)}", model=entry.name)
    return found


def header(stored: StoredFile) -> dict[str, Any]:
    """The safetensors header: tensors (dtype, shape, byte offsets) and metadata, without reading the data.

    Raises:
        WeightsIntegrityError: the stored file is not well-formed safetensors.
    """
    head = checkpoint.read_header(stored.path)
    tensors = {k: {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [t.begin, t.end]}
               for k, t in sorted(head.tensors.items())}
    return {"name": stored.name, "sha256": stored.sha256, "size": stored.size, "header_bytes": head.header_size,
            "tensor_count": len(tensors), "parameters": sum(math.prod(t.shape) for t in head.tensors.values()),
            "metadata": head.metadata, "tensors": tensors}
