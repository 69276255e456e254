"""Datasets for the transfer lab: scikit-learn's handwritten digits (built in, offline), a folder of class
folders, or an uploaded zip of one (checked, then extracted into the job's own temporary folder).
Every image is decoded once up front, so unreadable ones are skipped and listed before anything trains;
small images stay decoded up to KEPT_DECODED_BYTES in all, the others are decoded again when used (memory
bounded by that, not by the number of images: 15,000 solid 256x256 PNGs in a 10 MB zip held 4 GB decoded)."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from zoo import archives, durable, images, paths
from zoo.errors import InvalidDatasetError, InvalidImageError
from zoo.settings import Settings, get_settings

DIGITS = "digits"
MIN_PER_CLASS = 2  # one for training and one for validation at least


KEEP_DECODED = 256 * 256  # pixels: images this small stay decoded in memory, larger ones are decoded when used
KEPT_DECODED_BYTES = 256 * 2**20  # most memory a dataset's decoded images hold (Pillow's RGB: 4 bytes a pixel)


@dataclass(frozen=True)
class Example:
    path: str  # shown in reports: relative to the dataset root
    label: int  # index into Dataset.classes
    source: Image.Image | Path  # a small decoded RGB image, or a checked file decoded again on use

    @property
    def image(self) -> Image.Image:
        """The decoded RGB image."""
        if isinstance(self.source, Image.Image):
            return self.source
        return images.decode(self.source, max_pixels=2**62, max_bytes=2**62)  # checked when the dataset was read


@dataclass
class Dataset:
    name: str
    classes: list[str]
    train: list[Example]
    val: list[Example]
    fingerprint: str  # sha256 over class names, file names and bytes: keys the feature cache
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why it could not be used)

    def counts(self) -> dict[str, tuple[int, int]]:
        """Class name -> (train images, validation images)."""
        out = {c: [0, 0] for c in self.classes}
        for split, examples in ((0, self.train), (1, self.val)):
            for ex in examples:
                out[self.classes[ex.label]][split] += 1
        return {c: (t, v) for c, (t, v) in out.items()}


def stratified_split(labels: list[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val) with each class split in the same proportion, reproducibly for `seed`."""
    if not 0.0 < val_fraction < 1.0:
        raise InvalidDatasetError(f"The validation fraction must be between 0 and 1, not {val_fraction}.")
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted(set(labels)):
        idx = [i for i, lb in enumerate(labels) if lb == label]
        rng.shuffle(idx)
        n_val = min(len(idx) - 1, max(1, round(len(idx) * val_fraction)))
        val += idx[:n_val]
        train += idx[n_val:]
    return sorted(train), sorted(val)


def _build(name: str, classes: list[str], examples: list[Example], digest: hashlib._Hash, skipped,
           val_fraction: float, seed: int) -> Dataset:
    if len(classes) < 2:
        raise InvalidDatasetError(f"{name}: found {len(classes)} class folder(s); a classifier needs at least 2.")
    per_class = [sum(ex.label == i for ex in examples) for i in range(len(classes))]
    thin = [f"{c} ({n})" for c, n in zip(classes, per_class, strict=True) if n < MIN_PER_CLASS]
    if thin:
        raise InvalidDatasetError(f"{name}: every class needs at least {MIN_PER_CLASS} readable images; "
                                  f"too few in: {', '.join(thin)}.")
    train_idx, val_idx = stratified_split([ex.label for ex in examples], val_fraction, seed)
    digest.update(f"split:{val_fraction}:{seed}".encode())
    return Dataset(name, classes, [examples[i] for i in train_idx], [examples[i] for i in val_idx],
                   digest.hexdigest(), skipped)


def digits(val_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 1,797 handwritten digits (8x8, 10 classes), as RGB images: no upload, no network."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    digest = hashlib.sha256(b"sklearn-digits")
    examples = []
    for i, (pixels, target) in enumerate(zip(bunch.images, bunch.target, strict=True)):
        grey = (pixels * (255.0 / 16.0)).round().astype("uint8")
        digest.update(grey.tobytes())
        examples.append(Example(f"digits/{i}", int(target), Image.fromarray(grey, "L").convert("RGB")))
    return _build(DIGITS, [str(c) for c in bunch.target_names], examples, digest, [], val_fraction, seed)


def from_folder(root: Path, val_fraction: float = 0.2, seed: int = 0, settings: Settings | None = None,
                name: str | None = None) -> Dataset:
    """A folder of class folders (`root/<class>/<image>`); hidden files and symbolic links are ignored.

    Raises:
        InvalidDatasetError: not a folder, fewer than 2 classes, or a class with too few readable images.
    """
    settings = settings or get_settings()
    root = Path(root)
    if not root.is_dir():
        raise InvalidDatasetError(f"{root} is not a folder of class folders.")
    folders = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
               and p.name not in archives.IGNORED]
    if len(folders) == 1 and not any(f.is_file() for f in folders[0].iterdir()):
        return from_folder(folders[0], val_fraction, seed, settings, name)  # one wrapping folder
    digest = hashlib.sha256()
    classes, examples, skipped = [], [], []
    max_bytes, budget, total = settings.max_image_mb * 1024 * 1024, settings.max_dataset_mb * 1024 * 1024, 0
    kept = 0  # bytes of the decoded images kept
    for folder in folders:
        label = len(classes)
        classes.append(folder.name)
        digest.update(f"class:{folder.name}".encode())
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_symlink() or not path.is_file() or any(s.startswith(".") for s in path.relative_to(root).parts):
                continue
            if path.suffix.lower() not in images.ACCEPTED_EXTENSIONS:
                skipped.append((rel, f"not an image type this zoo reads ({', '.join(images.ACCEPTED_EXTENSIONS)})"))
                continue
            try:
                data = images.read_limited(path, max_bytes)
                image = images.decode(data, max_pixels=settings.max_image_pixels, max_bytes=max_bytes)
            except InvalidImageError as exc:
                skipped.append((rel, str(exc)))
                continue
            total += len(data)
            if total > budget:
                raise InvalidDatasetError(f"{name or root.name}: its images pass {budget / 2**20:,.0f} MiB at {rel}; "
                                          "this server takes datasets up to that size (ZOO_MAX_DATASET_MB).")
            digest.update(rel.encode() + hashlib.sha256(data).digest())
            pixels = image.width * image.height
            if pixels <= KEEP_DECODED and kept + 4 * pixels <= KEPT_DECODED_BYTES:
                keep, kept = image, kept + 4 * pixels
            else:
                keep = path.resolve()
            examples.append(Example(rel, label, keep))
    return _build(name or root.name, classes, examples, digest, skipped, val_fraction, seed)


JOB_PREFIX = "p"  # a job folder is named p<pid>-<random>-...: removed by the next job once that process is gone
LEGACY_JOB_AGE_S = 24 * 3600  # a job folder named the old way (no owner in its name) is removed after this long


@contextmanager
def job_folder(settings: Settings | None = None, what: str = "Cannot start this job") -> Iterator[Path]:
    """A temporary folder for one job (an upload's extracted files), removed when the job ends. Its name says
    which process owns it (`p<pid>-...`): folders left by a process that died (SIGKILL, out of memory, a power
    cut: up to ZOO_MAX_DATASET_MB each) are removed when the next job starts.

    Raises:
        StoreError: the store is full, read-only or not a folder: '`what`: why and what to do', one line.
    """
    settings = settings or get_settings()
    parent = paths.jobs(settings)
    with durable.storing(what, settings.weights_dir):
        parent.mkdir(parents=True, exist_ok=True)
        _remove_orphans(parent)
        folder = Path(tempfile.mkdtemp(prefix=f"{JOB_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sweep_jobs(settings: Settings | None = None) -> None:
    """Remove the job folders of processes that are gone (a server killed mid-job), as the next job would."""
    parent = paths.jobs(settings or get_settings())
    if parent.is_dir():
        _remove_orphans(parent)


def _remove_orphans(parent: Path) -> None:
    """Job folders whose process is gone (or, named the old way, older than LEGACY_JOB_AGE_S)."""
    for old in parent.iterdir():
        pid = durable.owner(old.name, JOB_PREFIX)
        if pid is not None:
            if durable.alive(pid):
                continue
        else:
            try:
                if time.time() - old.stat().st_mtime < LEGACY_JOB_AGE_S:
                    continue
            except OSError:
                continue
        shutil.rmtree(old, ignore_errors=True)


def from_zip(path: Path, workdir: Path, val_fraction: float = 0.2, seed: int = 0,
             settings: Settings | None = None) -> Dataset:
    """A zip of class folders: checked (see `zoo.archives`), extracted into `workdir`, then read as a folder."""
    data = Path(workdir) / "data"
    data.mkdir(parents=True, exist_ok=True)
    settings = settings or get_settings()
    skipped: list[tuple[str, str]] = []
    archives.extract(Path(path), data, images.ACCEPTED_EXTENSIONS, max_member=settings.max_image_mb * 1024 * 1024,
                     max_total=settings.max_dataset_mb * 1024 * 1024, skipped=skipped)
    ds = from_folder(data, val_fraction, seed, settings, name=Path(path).name)
    ds.skipped[:0] = skipped
    return ds


def load(source: str | Path, workdir: Path, val_fraction: float = 0.2, seed: int = 0,
         settings: Settings | None = None) -> Dataset:
    """`digits`, a folder, or a .zip, by what `source` is."""
    if str(source) == DIGITS:
        return digits(val_fraction, seed)
    path = Path(source)
    if path.is_dir():
        return from_folder(path, val_fraction, seed, settings)
    if path.is_file():
        return from_zip(path, workdir, val_fraction, seed, settings)
    raise InvalidDatasetError(f"{source} is not `digits`, a folder of class folders, or a .zip of one.")
