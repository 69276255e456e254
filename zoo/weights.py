"""The local weight store: where each tag's safetensors file lives under `ZOO_WEIGHTS_DIR`."""

from __future__ import annotations

from pathlib import Path

from zoo.registry import ModelEntry
from zoo.settings import get_settings

WEIGHTS_FILE = "model.safetensors"


def store_path(entry: ModelEntry, weights_dir: Path | None = None) -> Path:
    """Path of `entry`'s weights in the store: `<weights_dir>/<arch.tag>/model.safetensors`."""
    root = get_settings().weights_dir if weights_dir is None else weights_dir
    return root / entry.name / WEIGHTS_FILE


def is_local(entry: ModelEntry, weights_dir: Path | None = None) -> bool:
    """True when the store holds a weights file for `entry`."""
    return store_path(entry, weights_dir).is_file()
