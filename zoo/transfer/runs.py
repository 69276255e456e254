"""Transfer runs on disk: each run's config, metrics history and model under `weights/runs/<id>/`, written
as one folder renamed into place (durable, 0644, the model's hash and identity recorded), listed, checked,
reloaded in a fresh process, and deletable.

`read`/`stored` give a run as a typed, frozen `Run` (what the resolver, the engine, the catalog and the
front ends use); `get`/`list_runs` give the JSON record exactly as stored (what the Hub mirror copies)."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open

from zoo import architecture, checkpoint, durable, images, integrity, paths, registry
from zoo.errors import InvalidArgumentError, StoreError, WeightsCorruptError, WeightsUnavailableError
from zoo.settings import Settings, get_settings
from zoo.transfer.heads import Transfer

RUN_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,120}")
RUN_FILE = "run.json"
MODEL_FILE = "model.safetensors"
MARGIN = 16 * 1024 * 1024


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


def model_bytes(tag: str) -> int:
    """About what one stored run of `tag` takes on disk: its fp32 weights, plus a margin for the head and record."""
    return registry.get(tag).params * 4 + MARGIN


def check_space(tags: str | Sequence[str], settings: Settings | None = None, *, each: int = 1) -> None:
    """Refuse to start training when the runs' models (`each` per tag) could not be saved afterwards.

    Raises:
        StoreError: where runs are stored is read-only, not permitted or not a folder, or has less free space
            than the model needs (with a margin).
    """
    base = (settings or get_settings()).weights_dir
    tags = [tags] if isinstance(tags, str) else list(tags)
    need = each * sum(model_bytes(t) for t in tags)
    where = next((p for p in (root(settings), base, *base.parents) if p.exists()), base)
    if not where.is_dir() or not os.access(where, os.W_OK):
        raise StoreError(f"Not starting: the run could not be saved afterwards, because "
                         f"{durable.why(OSError(errno.EROFS if where.is_dir() else errno.ENOTDIR, ''), where)}.")
    free = shutil.disk_usage(where).free
    if free < need:
        raise StoreError(f"Not starting: the runs' models need about {need / 1e6:.0f} MB but {where} has "
                         f"{free / 1e6:.0f} MB free; free some space (`python -m zoo runs --rm RUN` deletes old runs).")


def save(run_id: str, record: dict[str, Any], model: Transfer, settings: Settings | None = None) -> Path:
    """Store a finished run: model and record are written in a locked temp folder renamed to `runs/<id>/`, so
    a run is complete or absent. When the model cannot be written, the record alone is kept (its scores and
    history, `sha256` null) and the StoreError says so; when nothing can be written, it says that.

    Raises:
        StoreError: the disk is full, read-only or not permitted.
    """
    out = folder(run_id, settings)
    meta = {"format": "pt", "zoo.kind": "finetuned", "zoo.base": record["tag"], "zoo.strategy": record["strategy"],
            "zoo.class_names": json.dumps(record["classes"]), "zoo.preprocessing": json.dumps(record["preprocessing"])}
    with durable.storing(f"Run {run_id} was not saved (nothing was kept)", out.parent):
        out.parent.mkdir(parents=True, exist_ok=True)
        durable.sweep(out.parent)
        with durable.TempDir(out.parent, "run") as tmp:
            try:
                durable.fault("run-model")
                checkpoint.save_atomic(model.state_dict(), tmp.path / MODEL_FILE, meta)
                file = tmp.path / MODEL_FILE
                st = os.stat(file)
                sha = {"sha256": checkpoint.sha256_file(file), "size": st.st_size,
                       "verified": list(integrity.identity(st))}
                lost = None
            except OSError as exc:
                (tmp.path / MODEL_FILE).unlink(missing_ok=True)
                sha, lost = {"sha256": None, "size": None}, durable.why(exc, out.parent)
            durable.write_json(tmp.path / RUN_FILE, {**record, **sha, "weights_lost": lost}, "run")
            tmp.commit(out)
    if lost:
        raise StoreError(f"Run {run_id}'s model was not saved ({lost}); its scores and history were kept in {out}.")
    return out


def checked(run_id: str, settings: Settings | None = None) -> integrity.Checked | None:
    """The run's model file if its bytes are the recorded ones now (zoo.integrity's rule), else None.

    Raises:
        WeightsCorruptError: it changed on disk since it was saved.
    """
    record = get(run_id, settings)
    if not record.get("sha256"):
        return None
    path = folder(run_id, settings) / MODEL_FILE
    verdict = integrity.check(path, record["sha256"], record["size"], integrity.as_identity(record.get("verified")))
    if verdict is None or verdict.checked is not None:
        return verdict.checked if verdict else None
    raise WeightsCorruptError(f"The model of run {run_id} changed on disk "
                              f"({verdict.change(record['sha256'], record['size'])}); it is not served or loaded. "
                              f"Delete the run (`python -m zoo runs --rm {run_id}`) and train it again.")


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
        if sub.name.startswith("."):
            continue  # a run being written (durable.TempDir)
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
    found = checked(run_id, settings)
    if found is None:
        raise WeightsUnavailableError(f"Run {run_id} kept only its scores: its model was not saved "
                                      f"({get(run_id, settings).get('weights_lost') or 'missing'}).")
    record, path = get(run_id, settings), found.path
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    entry = registry.get(meta["zoo.base"])
    classes = json.loads(meta["zoo.class_names"])
    model = Transfer(architecture.build_meta(entry.arch), meta["zoo.strategy"], len(classes))
    tensors, _ = checkpoint.load_checked(path, checkpoint.expected_tensors(model), f"run {run_id}")
    if not integrity.same(path, found.ident):  # written while it was read: what was read is not what was checked
        checked(run_id, settings)  # says how, if its bytes are no longer its hash
        raise WeightsCorruptError(f"The model of run {run_id} was replaced while it was read; nothing read was "
                                  "used. Try again.")
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval(), record


def delete(run_id: str, settings: Settings | None = None) -> bool:
    out = folder(run_id, settings)
    if not out.is_dir():
        return False
    with durable.storing(f"Run {run_id} was not deleted", out.parent):
        (out / RUN_FILE).unlink(missing_ok=True)  # no longer a run from here on, whatever is left
        shutil.rmtree(out)
    return True
