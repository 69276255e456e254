"""The weights folder's layout, in one place. Everything the zoo writes lives under `ZOO_WEIGHTS_DIR`:

    <weights>/blobs/<sha256>     the weight store's files, named by their SHA-256 (`store.Store`)
    <weights>/<tag>/record.json  each tag's record, naming its blob (swapped atomically)
    <weights>/.corrupt/          files moved aside because their bytes no longer match their name
    <weights>/runs/<id>/         fine-tuned transfer runs: run.json + model.safetensors (`transfer.runs`)
    <weights>/degradation/       the degradation lab's stored results (`degradation.results`)
    <weights>/.cache/onnx/       ONNX graphs exported for the CPU fast path (`backends`, `inference`)
    <weights>/.cache/features/   backbone features of frozen-backbone transfer runs (`transfer.lab`)
    <weights>/.cache/jobs/       one temporary folder per job, e.g. an extracted upload (`transfer.data`)
    <weights>/.cache/hub/        the Hub mirror's generated files (`mirror`)

Caches can be deleted at any time; runs and results are what users made.
"""

from __future__ import annotations

import re
from pathlib import Path

from zoo.settings import Settings, get_settings

# the weight store's names (`store`, `storemigrate`)
WEIGHTS_FILE = "model.safetensors"  # the file of the store's first layout (`<name>/model.safetensors`)
RECORD_FILE = "record.json"
BLOBS = "blobs"
QUARANTINE = ".corrupt"
NAME = re.compile(r"[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)?")  # a tag, as a folder name
RESERVED = frozenset({BLOBS, "runs", "degradation"})  # folders of the store's own that a tag's name could look like


def is_tag_folder(path: Path) -> bool:
    """Whether `path` (directly under the weights folder) is a tag's folder, not one of the store's own."""
    return path.name not in RESERVED and NAME.fullmatch(path.name) is not None and path.is_dir()


def _root(settings: Settings | None) -> Path:
    return (settings or get_settings()).weights_dir


def runs(settings: Settings | None = None) -> Path:
    return _root(settings) / "runs"


def degradation(settings: Settings | None = None) -> Path:
    return _root(settings) / "degradation"


def onnx_cache(settings: Settings | None = None) -> Path:
    return _root(settings) / ".cache" / "onnx"


def feature_cache(settings: Settings | None = None) -> Path:
    return _root(settings) / ".cache" / "features"


def jobs(settings: Settings | None = None) -> Path:
    return _root(settings) / ".cache" / "jobs"


def hub_cache(weights_dir: Path) -> Path:
    return weights_dir / ".cache" / "hub"
