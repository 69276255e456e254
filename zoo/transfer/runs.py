"""Transfer runs on disk: each run's config, metrics history and model under `weights/runs/<id>/`,
written atomically (temp file + rename), listed, reloaded in a fresh process, and deletable.

`read`/`stored` give a run as a typed, frozen `Run` (what the resolver, the engine, the catalog and the
front ends use); `get`/`list_runs` give the JSON record exactly as stored (what the Hub mirror copies)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open

from zoo import architecture, checkpoint, images, paths, registry
from zoo.errors import InvalidArgumentError, WeightsUnavailableError
from zoo.fsutil import atomic_write_json
from zoo.settings import Settings
from zoo.transfer.heads import Transfer

RUN_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,120}")
RUN_FILE = "run.json"
MODEL_FILE = "model.safetensors"


def root(settings: Settings | None = None) -> Path:
    return paths.runs(settings)


def folder(run_id: str, settings: Settings | None = None) -> Path:
    if not RUN_ID.fullmatch(run_id):
        raise InvalidArgumentError(f"{run_id!r} is not a run id.")
    return root(settings) / run_id


@dataclass(frozen=True)
class Run:
    """A stored fine-tuned run, typed as `registry.ModelEntry` is: what it was trained from and on, how well it
    did, and how its input is prepared. `name` is its id, so a run and a registry tag answer the same questions."""

    id: str  # e.g. 20260101-120000-resnet18.a1_in1k-linear-1a2b3c
    tag: str  # the registry tag it was fine-tuned from
    strategy: str  # heads.STRATEGIES
    dataset: str
    classes: tuple[str, ...]  # output order
    preprocessing: images.Preprocessing
    val_top1: float  # percent, on the validation split
    macro_f1: float  # percent
    created: str  # ISO 8601, UTC
    sha256: str | None  # of model.safetensors
    size: int | None  # bytes of model.safetensors
    epochs: int
    best_epoch: int | None
    train_s: float
    features_s: float
    trainable_params: int
    config: Mapping[str, Any]  # the FitConfig it was trained with
    history: tuple[Mapping[str, Any], ...]  # one record per epoch
    per_class_acc: tuple[float, ...]
    confusion: tuple[tuple[int, ...], ...]  # rows: true class
    skipped: tuple[tuple[str, str], ...]  # (file, why) of unreadable images

    @property
    def name(self) -> str:
        return self.id

    @property
    def base(self) -> registry.ModelEntry:
        return registry.get(self.tag)

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> Run:
        pre = r["preprocessing"]
        return cls(
            id=r["id"], tag=r["tag"], strategy=r["strategy"], dataset=r["dataset"], classes=tuple(r["classes"]),
            preprocessing=images.Preprocessing(**{**pre, "mean": tuple(pre["mean"]), "std": tuple(pre["std"])}),
            val_top1=r["val_top1"], macro_f1=r["macro_f1"], created=r.get("created", ""), sha256=r.get("sha256"),
            size=r.get("size"), epochs=r.get("epochs", len(r.get("history", ()))), best_epoch=r.get("best_epoch"),
            train_s=r.get("train_s", 0.0), features_s=r.get("features_s", 0.0),
            trainable_params=r.get("trainable_params", 0), config=dict(r.get("config", {})),
            history=tuple(r.get("history", ())), per_class_acc=tuple(r.get("per_class_acc", ())),
            confusion=tuple(tuple(row) for row in r.get("confusion", ())),
            skipped=tuple(tuple(x) for x in r.get("skipped", ())),
        )  # fmt: skip


def save(run_id: str, record: dict[str, Any], model: Transfer, settings: Settings | None = None) -> Path:
    """Store a finished run: the model (self-describing safetensors) first, then its record."""
    out = folder(run_id, settings)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": "pt", "zoo.kind": "finetuned", "zoo.base": record["tag"], "zoo.strategy": record["strategy"],
            "zoo.class_names": json.dumps(record["classes"]), "zoo.preprocessing": json.dumps(record["preprocessing"])}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    checkpoint.save_atomic(state, out / MODEL_FILE, meta)
    sha256 = checkpoint.sha256_file(out / MODEL_FILE)
    atomic_write_json(out / RUN_FILE, {**record, "sha256": sha256, "size": (out / MODEL_FILE).stat().st_size})
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


def read(run_id: str, settings: Settings | None = None) -> Run:
    """A stored run as a typed record.

    Raises:
        InvalidArgumentError: not a run id. WeightsUnavailableError: no such run here (or its record is damaged).
    """
    record = get(run_id, settings)
    try:
        return Run.from_record(record)
    except (KeyError, TypeError, ValueError):
        raise WeightsUnavailableError(f"The record of transfer run {run_id!r} is damaged; delete it with "
                                      f"`python -m zoo runs --rm {run_id}` and train it again.") from None


def stored(settings: Settings | None = None) -> list[Run]:
    """Every stored run, newest first (records that do not read as a run are left out)."""
    out = []
    for record in list_runs(settings):
        try:
            out.append(Run.from_record(record))
        except (KeyError, TypeError, ValueError):
            continue
    return out


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
