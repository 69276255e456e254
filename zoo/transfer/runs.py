"""Transfer runs on disk: each run's config, metrics history and model under `weights/runs/<id>/`,
written atomically (temp file + rename), listed, reloaded in a fresh process, and deletable."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from safetensors import safe_open

from zoo import architecture, checkpoint, registry
from zoo.errors import InvalidArgumentError, WeightsUnavailableError
from zoo.settings import Settings, get_settings
from zoo.transfer.heads import Transfer

RUN_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,120}")
RUN_FILE = "run.json"
MODEL_FILE = "model.safetensors"


def root(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).weights_dir / "runs"


def folder(run_id: str, settings: Settings | None = None) -> Path:
    if not RUN_ID.fullmatch(run_id):
        raise InvalidArgumentError(f"{run_id!r} is not a run id.")
    return root(settings) / run_id


def _write_json(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".run.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def save(run_id: str, record: dict[str, Any], model: Transfer, settings: Settings | None = None) -> Path:
    """Store a finished run: the model (self-describing safetensors) first, then its record."""
    out = folder(run_id, settings)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": "pt", "zoo.kind": "finetuned", "zoo.base": record["tag"], "zoo.strategy": record["strategy"],
            "zoo.class_names": json.dumps(record["classes"]), "zoo.preprocessing": json.dumps(record["preprocessing"])}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    checkpoint.save_atomic(state, out / MODEL_FILE, meta)
    sha256 = checkpoint.sha256_file(out / MODEL_FILE)
    _write_json(out / RUN_FILE, {**record, "sha256": sha256, "size": (out / MODEL_FILE).stat().st_size})
    return out


def exists(name: str, settings: Settings | None = None) -> bool:
    """Whether `name` is a stored run's id (registry names never look like run ids: those start with a date)."""
    return bool(RUN_ID.fullmatch(name)) and (folder(name, settings) / RUN_FILE).is_file()


def list_runs(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every stored run's record, newest first."""
    base = root(settings)
    if not base.is_dir():
        return []
    out = []
    for sub in base.iterdir():
        try:
            out.append(json.loads((sub / RUN_FILE).read_text()))
        except (OSError, ValueError):
            continue  # a run still being written, or not a run
    return sorted(out, key=lambda r: r.get("created", ""), reverse=True)


def get(run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    try:
        return json.loads((folder(run_id, settings) / RUN_FILE).read_text())
    except (OSError, ValueError):
        raise WeightsUnavailableError(f"No transfer run {run_id!r} here; `python -m zoo train` makes one.") from None


def load_model(run_id: str, settings: Settings | None = None) -> tuple[Transfer, dict[str, Any]]:
    """Rebuild a run's model from its file alone (architecture from the registry, no pretrained download)."""
    record = get(run_id, settings)
    path = folder(run_id, settings) / MODEL_FILE
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    entry = registry.get(meta["zoo.base"])
    classes = json.loads(meta["zoo.class_names"])
    model = Transfer(architecture.build_meta(entry.arch), meta["zoo.strategy"], len(classes))
    tensors, _ = checkpoint.load_checked(path, checkpoint.expected_tensors(model), f"run {run_id}")
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval(), record


def delete(run_id: str, settings: Settings | None = None) -> bool:
    out = folder(run_id, settings)
    if not out.is_dir():
        return False
    shutil.rmtree(out)
    return True
