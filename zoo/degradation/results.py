"""Stored experiments: one JSON file per (settings, data) key under `weights/degradation/`, written
atomically and readable by every user (0644), so a second visit with the same settings shows the result
at once. Listed newest first and deletable."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from zoo import durable, paths
from zoo.degradation.experiment import Result
from zoo.durable import why
from zoo.errors import InvalidArgumentError, StoreError
from zoo.settings import Settings

KEY = re.compile(r"[0-9a-f]{24}")


def root(settings: Settings | None = None) -> Path:
    return paths.degradation(settings)


def path(key: str, settings: Settings | None = None) -> Path:
    if not KEY.fullmatch(key):
        raise InvalidArgumentError(f"{key!r} is not an experiment key (24 hex digits; `python -m zoo degradation "
                                   "--list` shows them).")
    return root(settings) / f"{key}.json"


def save(result: Result, settings: Settings | None = None) -> Path:
    """Write the result (temp file, fsync, rename, fsync the folder); a failed write leaves nothing behind.

    Raises:
        StoreError: the store is full, read-only or not permitted.
    """
    out = path(result.key, settings)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        durable.sweep(out.parent)  # the temp file of a writer that died
        durable.write_json(out, json_safe(result.to_dict()), compact=True, allow_nan=False)
    except OSError as exc:
        raise StoreError(f"The experiment's result was not stored: {why(exc, out.parent)}.") from None
    return out


def json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity (a diverged network's numbers): store them as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _read(p: Path) -> Result | None:
    try:
        result = Result.from_dict(json.loads(p.read_text()))
        shaped = isinstance(result.created, str) and isinstance(result.dataset["name"], str) and all(
            isinstance(n.name, str) and isinstance(n.step_error, list) for n in result.networks)
        if not shaped:
            raise TypeError("not a stored result")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # a damaged or foreign file: not a result (never trusted, never fatal)
    result.cached, result.stored = True, str(p)
    return result


def get(key: str, settings: Settings | None = None) -> Result | None:
    """The stored result for `key`, or None."""
    return _read(path(key, settings))


def list_results(settings: Settings | None = None) -> list[Result]:
    """Every stored result, newest first."""
    base = root(settings)
    found = [r for p in sorted(base.glob("*.json")) if KEY.fullmatch(p.stem) and (r := _read(p))] \
        if base.is_dir() else []
    return sorted(found, key=lambda r: r.created, reverse=True)


def delete(key: str, settings: Settings | None = None) -> bool:
    """Remove a stored result; False if there was none.

    Raises:
        StoreError: the store is read-only or not permitted.
    """
    p = path(key, settings)
    try:
        p.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StoreError(f"Could not delete {p.name}: {why(exc, p.parent)}.") from None
    return True
