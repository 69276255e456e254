"""Measured accuracy on the user's labelled images: a folder or zip of class folders -> top-1/top-5 per tag.

Class folders are named by ImageNet synset (`n01440764`) or class name (`tench`, `golden_retriever`,
any synonym timm's ImageNetInfo lists). Zips are read in memory, never extracted, after `archives`
has checked every member.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import torch

from zoo import archives, images, inference
from zoo.errors import Cancelled, InvalidDatasetError, InvalidImageError, close_matches
from zoo.inference import Engine
from zoo.settings import get_settings

SYNSET = re.compile(r"n\d{8}")
AMBIGUOUS = -1

Progress = Callable[[int, int], None]  # (images done, images in all)


@dataclass(frozen=True)
class Item:
    path: str  # shown in messages: relative to the folder or inside the zip
    label: int  # ImageNet-1k index
    read: Callable[[], bytes]


def class_index() -> dict[str, int]:
    """Folder name (lower case, `_` for spaces) -> ImageNet index: synsets, then every synonym.

    A synonym two classes share (`crane` the bird and the machine) maps to AMBIGUOUS.
    """
    names: dict[str, int] = {}
    for lb in inference.imagenet_labels():
        names[lb.synset] = lb.index
    for lb in inference.imagenet_labels():
        for synonym in _synonyms(lb):
            names[synonym] = AMBIGUOUS if synonym in names else lb.index
    return names


def _key(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _synonyms(label: inference.Label) -> set[str]:
    """Every name of a class as a folder key: `golden retriever` -> `golden_retriever`."""
    return {_key(s) for s in label.description.split(",")}


def read_labelled(source: Path) -> list[Item]:
    """Every accepted image under `source` (folder or .zip), with its class from the first folder level.

    A zip (or folder) that wraps everything in one folder that is not itself a class is unwrapped.

    Raises:
        InvalidDatasetError: no such path, an unsafe zip, unknown class folders, or no images.
    """
    source = Path(source)
    if not source.exists():
        raise InvalidDatasetError(f"{source} does not exist; give a folder of class folders or a .zip of one.")
    files = list(_zip_files(source) if source.is_file() else _dir_files(source))
    index = class_index()
    parts = [PurePosixPath(p).parts for p, _ in files]
    while parts and all(len(p) > 2 for p in parts) and len({p[0] for p in parts}) == 1 and _key(parts[0][0]) \
            not in index:
        parts = [p[1:] for p in parts]  # one wrapping folder (e.g. val/n01440764/x.jpg)
    items, unknown = [], set()
    for (path, read), p in zip(files, parts, strict=True):
        if len(p) < 2:
            continue  # loose files at the top have no class
        label = index.get(p[0]) if SYNSET.fullmatch(p[0]) else index.get(_key(p[0]))
        if label is None:
            unknown.add(p[0])
        elif label == AMBIGUOUS:
            synsets = [lb.synset for lb in inference.imagenet_labels() if _key(p[0]) in _synonyms(lb)]
            raise InvalidDatasetError(f"Class folder {p[0]!r} names more than one ImageNet class "
                                      f"({', '.join(synsets)}); rename it to the synset you mean.")
        else:
            items.append(Item(path, label, read))
    if unknown:
        shown = sorted(unknown)[:5]
        hints = "; ".join(f"{u!r}" + (f" (did you mean {', '.join(close_matches(_key(u), index, 3))}?)"
                                       if close_matches(_key(u), index, 3) else "") for u in shown)
        raise InvalidDatasetError(f"{len(unknown)} class folder(s) are not ImageNet-1k classes: {hints}. Name "
                                  "folders by synset (n01440764) or class name (tench, golden_retriever).")
    if not items:
        raise InvalidDatasetError(f"No images in class folders under {source.name} (accepted: "
                                  f"{', '.join(images.ACCEPTED_EXTENSIONS)}, one folder per class).")
    return items


def _dir_files(root: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    if not root.is_dir():
        raise InvalidDatasetError(f"{root} is neither a folder nor a .zip file.")
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not any(s.startswith(".") for s in rel.parts) \
                and path.suffix.lower() in images.ACCEPTED_EXTENSIONS and not path.is_symlink():
            yield rel.as_posix(), (lambda path=path: images.read_limited(path, _max_image_bytes()))


def _zip_files(path: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    archive = archives.open_zip(path)
    for m in archives.members(archive, path.name, get_settings().max_dataset_mb * 2**20):
        if PurePosixPath(m.name).suffix.lower() in images.ACCEPTED_EXTENSIONS:
            yield m.name, (lambda m=m: _member(archive, m, path.name))


def _max_image_bytes() -> int:
    return get_settings().max_image_mb * 1024 * 1024


def _member(archive, member: archives.Member, label: str) -> bytes:
    """A member's bytes, or InvalidImageError (a skipped image) when it is declared over ZOO_MAX_IMAGE_MB."""
    if why := archives.too_big(member, _max_image_bytes()):
        raise InvalidImageError(why[0].upper() + why[1:] + ".")
    return archives.read(archive, member, label)


@dataclass
class Score:
    """Measured accuracy of one tag on the user's images."""

    model: str
    n: int = 0
    top1_hits: int = 0
    top5_hits: int = 0
    published_top1: float | None = None
    latency_ms: float = 0.0  # summed forward time
    backend: str = ""

    @property
    def top1(self) -> float:
        return 100.0 * self.top1_hits / self.n if self.n else 0.0

    @property
    def top5(self) -> float:
        return 100.0 * self.top5_hits / self.n if self.n else 0.0

    def as_dict(self) -> dict:
        return {"model": self.model, "images": self.n, "top1": round(self.top1, 3), "top5": round(self.top5, 3),
                "published_top1": self.published_top1, "ms_per_image": round(self.latency_ms / max(self.n, 1), 3),
                "backend": self.backend}


@dataclass
class Evaluation:
    scores: list[Score]
    classes: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)

    def as_dict(self) -> dict:
        return {"classes": self.classes, "scores": [s.as_dict() for s in self.scores],
                "skipped": [{"file": f, "reason": r} for f, r in self.skipped]}


def evaluate(source: Path, tags: list[str], *, engine: Engine | None = None, progress: Progress | None = None,
             device: str | torch.device | None = None, cancel: threading.Event | None = None) -> Evaluation:
    """Top-1/top-5 of each tag on a labelled folder or zip; images that cannot be decoded are skipped and listed.
    Stops before its next batch once `cancel` is set.

    Raises:
        InvalidDatasetError, UnknownModelError, InvalidArgumentError, WeightsUnavailableError, Cancelled, ...
    """
    eng = engine or inference.engine()
    entries = [inference.imagenet_entry(t) for t in dict.fromkeys(tags)]
    items = read_labelled(source)
    pres = [images.preprocessing(e) for e in entries]
    scores = [Score(e.name, published_top1=e.top1) for e in entries]
    result = Evaluation(scores, classes=len({it.label for it in items}))
    chunk = eng.settings.max_batch
    min_side = images.draft_side(pres)
    for start in range(0, len(items), chunk):
        if cancel is not None and cancel.is_set():
            raise Cancelled("The evaluation was cancelled.")
        decoded, labels = [], []
        for it in items[start:start + chunk]:
            try:
                decoded.append(images.decode(it.read(), min_side=min_side))
                labels.append(it.label)
            except InvalidImageError as exc:
                result.skipped.append((it.path, str(exc)))
        if decoded:
            truth = torch.tensor(labels)
            batches: dict[images.Preprocessing, torch.Tensor] = {}  # tags that share a preprocessing share it
            for entry, pre, score in zip(entries, pres, scores, strict=True):
                if pre not in batches:
                    batches[pre] = torch.stack([images.preprocess(pre, im) for im in decoded])
                batch = batches[pre]
                logits, ms, _, backend = eng.logits(entry.name, batch, device)
                best = logits.topk(5, dim=1).indices
                score.n += len(labels)
                score.top1_hits += int((best[:, 0] == truth).sum())
                score.top5_hits += int((best == truth[:, None]).any(1).sum())
                score.latency_ms += ms
                score.backend = backend
        if progress:
            progress(min(start + chunk, len(items)), len(items))
    return result

