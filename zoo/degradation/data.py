"""The degradation lab's data as tensors: the built-in digits scaled up, a zip or folder of class folders
(checked like the Transfer lab's), or CIFAR-10 from its Hugging Face dataset when the Hub can be reached.

Images are resized to `size` px squares and normalised per channel with the training split's mean and std.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from zoo import images
from zoo.errors import InvalidArgumentError, InvalidDatasetError, WeightsUnavailableError
from zoo.settings import Settings, get_settings

DIGITS = "digits"
CIFAR10 = "cifar10"
CIFAR_REPO = "uoft-cs/cifar10"  # the Hub's CIFAR-10: parquet files with `img` ({bytes, path}) and `label`
CIFAR_FILES = {"train": "plain_text/train-00000-of-00001.parquet", "test": "plain_text/test-00000-of-00001.parquet"}
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MIN_SIZE, MAX_SIZE = 8, 64


@dataclass
class Tensors:
    """A dataset ready to train on: normalised images (N, 3, size, size) and labels."""

    name: str
    classes: list[str]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    fingerprint: str  # what the images are: keys stored results together with the settings
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(self.x_train.shape[-1])


def check_size(size: int) -> int:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise InvalidArgumentError(f"Input size {size} px is outside {MIN_SIZE}-{MAX_SIZE} px (the paper's CIFAR "
                                   "nets use 32; the built-in 8x8 digits train well at 16).")
    return size


def _square(image: Image.Image, size: int) -> np.ndarray:
    """Resize the short side to `size`, centre-crop a square, as uint8 HWC RGB."""
    image = images.trim_aspect(image.convert("RGB"))
    w, h = image.size
    scale = size / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BILINEAR)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _stack(images: list[Image.Image], size: int) -> torch.Tensor:
    arr = np.stack([_square(im, size) for im in images]) if images else np.zeros((0, size, size, 3), np.uint8)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)


def _normalise(x_train: torch.Tensor, x_val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3)
    return ((x_train - mean) / std).contiguous(), ((x_val - mean) / std).contiguous()


def _tensors(name: str, classes: list[str], train: list[tuple[Image.Image, int]], val: list[tuple[Image.Image, int]],
             size: int, fingerprint: str, limit: int | None, skipped=()) -> Tensors:
    if limit is not None:
        if limit < 2:
            raise InvalidArgumentError(f"limit={limit}: keep at least 2 training images.")
        train = train[:limit]
    x_train, x_val = _normalise(_stack([im for im, _ in train], size), _stack([im for im, _ in val], size))
    digest = hashlib.sha256(f"{fingerprint}|{size}|{len(train)}".encode()).hexdigest()
    return Tensors(name, classes, x_train, torch.tensor([lb for _, lb in train]), x_val,
                   torch.tensor([lb for _, lb in val]), digest, list(skipped))


def digits(size: int, limit: int | None = None, seed: int = 0) -> Tensors:
    """scikit-learn's 1,797 8x8 digits, scaled up to `size` px, the Transfer lab's stratified 80/20 split."""
    from zoo.transfer import data

    ds = data.digits(seed=seed)
    return _tensors(DIGITS, ds.classes, [(e.image, e.label) for e in ds.train], [(e.image, e.label) for e in ds.val],
                    check_size(size), ds.fingerprint, limit)


def folder_or_zip(path: Path, size: int, workdir: Path, limit: int | None = None, seed: int = 0,
                  settings: Settings | None = None) -> Tensors:
    """A folder of class folders or a zip of one, with the Transfer lab's checks (`zoo.archives`)."""
    from zoo.transfer import data

    ds = data.load(path, workdir, seed=seed, settings=settings)
    return _tensors(ds.name, ds.classes, [(e.image, e.label) for e in ds.train], [(e.image, e.label) for e in ds.val],
                    check_size(size), ds.fingerprint, limit, ds.skipped)


def _cifar_file(split: str, settings: Settings) -> Path:
    """One CIFAR-10 parquet file through `hf_hub_download` (the HF cache first, then the Hub).

    Raises:
        WeightsUnavailableError: offline and not cached, or the Hub did not answer; says what to do.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache

    from zoo import hub

    filename = CIFAR_FILES[split]
    cached = try_to_load_from_cache(CIFAR_REPO, filename, cache_dir=hub.cache_dir(settings), repo_type="dataset")
    if isinstance(cached, str):
        return Path(cached)
    how = (f"CIFAR-10 comes from the Hub dataset {CIFAR_REPO}; with no Hub here, use the built-in digits "
           "(`--data digits`) or a zip of class folders")
    try:
        hub.reachability.check(settings)
    except WeightsUnavailableError as exc:
        raise WeightsUnavailableError(f"{how} ({exc}).") from None
    url = hf_hub_url(CIFAR_REPO, filename, repo_type="dataset", endpoint=settings.hf_endpoint)
    try:  # one quick question first: the download itself retries a dead endpoint for half a minute
        get_hf_file_metadata(url, timeout=hub.HEAD_TIMEOUT_S, endpoint=settings.hf_endpoint)
    except Exception as exc:  # transport errors differ between huggingface_hub versions
        hub.reachability.down(type(exc).__name__)
        raise WeightsUnavailableError(f"{how}: {settings.hf_endpoint} did not answer ({type(exc).__name__}).") \
            from None
    try:
        return Path(hf_hub_download(CIFAR_REPO, filename, repo_type="dataset", cache_dir=hub.cache_dir(settings),
                                    endpoint=settings.hf_endpoint, etag_timeout=hub.HEAD_TIMEOUT_S))
    except Exception as exc:  # transport errors differ between huggingface_hub versions
        hub.reachability.down(f"{type(exc).__name__}")
        raise WeightsUnavailableError(f"{how}: the download from {settings.hf_endpoint} failed "
                                      f"({type(exc).__name__}: {str(exc)[:200]}).") from None


def _cifar_split(path: Path, limit: int | None) -> tuple[list[tuple[Image.Image, int]], str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["img", "label"])
    except (pa.ArrowException, OSError) as exc:
        raise InvalidDatasetError(f"{path.name} is not a readable CIFAR-10 parquet file ({str(exc)[:120]}); delete "
                                  f"it from the Hugging Face cache ({path}) to fetch it again.") from None
    if limit is not None:
        table = table.slice(0, limit)
    imgs, labels = table.column("img").to_pylist(), table.column("label").to_pylist()
    out = []
    for img, label in zip(imgs, labels, strict=True):
        if not isinstance(img, dict) or not isinstance(img.get("bytes"), bytes) or not 0 <= int(label) < 10:
            raise InvalidDatasetError(f"{path.name} is not CIFAR-10 as {CIFAR_REPO} stores it (img bytes, label 0-9).")
        with Image.open(io.BytesIO(img["bytes"])) as im:
            if im.format != "PNG" or im.size != (32, 32):
                raise InvalidDatasetError(f"{path.name}: expected 32x32 PNG images, found {im.format} {im.size}.")
            out.append((im.convert("RGB"), int(label)))
    return out, f"{path.name}:{path.stat().st_size}"


def cifar10(size: int, limit: int | None = None, settings: Settings | None = None) -> Tensors:
    """CIFAR-10's 50,000 training and 10,000 test images (the test split validates), via the Hub."""
    settings = settings or get_settings()
    if limit is not None and limit < 2:
        raise InvalidArgumentError(f"limit={limit}: keep at least 2 training images.")
    train, fp_train = _cifar_split(_cifar_file("train", settings), limit)
    val, fp_val = _cifar_split(_cifar_file("test", settings), None if limit is None else max(limit // 5, 10))
    return _tensors(CIFAR10, CIFAR_CLASSES, train, val, check_size(size), f"cifar10|{fp_train}|{fp_val}", None)


def load(source: str | Path, size: int, workdir: Path, *, limit: int | None = None, seed: int = 0,
         settings: Settings | None = None) -> Tensors:
    """`digits`, `cifar10`, a folder or a .zip, by what `source` is."""
    if str(source) == DIGITS:
        return digits(size, limit, seed)
    if str(source) == CIFAR10:
        return cifar10(size, limit, settings)
    return folder_or_zip(Path(source), size, workdir, limit, seed, settings)
