"""The model catalog as plain data for programs: summaries, full cards, safetensors headers, and the
stored files the download API may serve (looked up by registry name or Hub repo, never by path)."""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo import images, registry, weights
from zoo.errors import InvalidArgumentError, WeightsUnavailableError
from zoo.registry import ModelEntry
from zoo.settings import Settings, get_settings

MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit for the JSON header


@dataclass(frozen=True)
class StoredFile:
    """A weight file the API may send: a regular file inside the store, with its recorded hash."""

    entry: ModelEntry
    path: Path
    sha256: str
    size: int
    commit: str  # the Hub commit it came from, or a stable id derived from its hash (imports)
    mtime: float

    @property
    def filename(self) -> str:
        return f"{self.entry.name}.safetensors"


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
    return [r for r in rows if local is None or r["local"] == local]


def card(entry: ModelEntry, settings: Settings | None = None) -> dict[str, Any]:
    """Everything known about a tag: registry facts, preprocessing, and its stored file if there is one."""
    settings = settings or get_settings()
    facts = entry.to_dict()
    facts.pop("name")
    stored = stored_file(entry.name, settings)
    return {
        **summary(entry, settings),
        "facts": facts,
        "preprocessing": {**images.preprocessing(entry).__dict__, "resize": images.preprocessing(entry).resize,
                          "description": images.preprocessing(entry).describe()},
        "weights": {
            "local": stored is not None, "sha256": stored.sha256 if stored else None,
            "size": stored.size if stored else None, "filename": stored.filename if stored else None,
            "download_url": f"/api/models/{entry.name}/weights" if stored else None,
            "header_url": f"/api/models/{entry.name}/header" if stored else None,
            "hub_mirror_url": f"/{entry.hf_hub_id}/resolve/main/{entry.hf_filename}" if stored else None,
            "how_to_get": None if stored else weights.how_to_get(entry.name),
        },
    }


def stored_file(name: str, settings: Settings | None = None) -> StoredFile | None:
    """The store's file for registry name `name` if it is complete and safe to serve, else None.

    Safe: a regular file (not a symlink) in a real folder of the store, whose size matches its record.
    """
    settings = settings or get_settings()
    entry = registry.get(name)
    st = weights.store(settings)
    record = st.record(entry.name)
    path = st.weights_path(entry.name)
    if record is None or path.is_symlink() or path.parent.is_symlink():
        return None
    try:
        real, root = path.resolve(strict=True), st.root.resolve(strict=True)
        info = real.stat()
    except OSError:
        return None
    if real.parent.parent != root or not real.is_file() or info.st_size != record.size:
        return None
    commit = record.commit or hashlib.sha1(f"resnet-zoo:{record.sha256}".encode()).hexdigest()
    return StoredFile(entry, real, record.sha256, record.size, commit, info.st_mtime)


def require_stored(name: str, settings: Settings | None = None) -> StoredFile:
    """`stored_file`, or WeightsUnavailableError saying how to get the weights."""
    found = stored_file(name, settings)
    if found is None:
        entry = registry.get(name)
        raise WeightsUnavailableError(f"The weights of {entry.name} are not on this server. "
                                      f"{weights.how_to_get(entry.name)}")
    return found


def by_hub_path(repo_id: str, filename: str) -> ModelEntry | None:
    """The registry entry whose Hub repo and file these are (`timm/resnet50.a1_in1k`, `model.safetensors`)."""
    for entry in registry.load():
        if entry.hf_hub_id == repo_id and entry.hf_filename == filename:
            return entry
    return None


def header(stored: StoredFile) -> dict[str, Any]:
    """The safetensors header: tensors (dtype, shape, byte offsets) and metadata, without reading the data."""
    with stored.path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise InvalidArgumentError(f"{stored.entry.name}: the stored file is not safetensors.")
        (length,) = struct.unpack("<Q", raw)
        if length > min(MAX_HEADER_BYTES, stored.size - 8):
            raise InvalidArgumentError(f"{stored.entry.name}: the stored file's header is malformed.")
        data = json.loads(f.read(length))
    metadata = data.pop("__metadata__", {}) or {}
    tensors = {k: {"dtype": v["dtype"], "shape": v["shape"], "data_offsets": v["data_offsets"]}
               for k, v in sorted(data.items())}
    return {"name": stored.entry.name, "sha256": stored.sha256, "size": stored.size, "header_bytes": length,
            "tensor_count": len(tensors), "parameters": sum(_numel(v["shape"]) for v in tensors.values()),
            "metadata": metadata, "tensors": tensors}


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
