"""Ready models: built on the meta device, filled from checked safetensors (assign=True), cached.

Building on the meta device and assigning the loaded tensors skips timm's random initialisation
and any second copy of the weights; a strict check of keys, shapes and dtypes runs before a tensor
is used. A thread-safe LRU cache bounded by ZOO_MODEL_MEMORY_MB loads each tag once, however many
requests race for it. The engine (`inference.Engine`) owns the process's one cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future

import timm
import torch
from torch import nn

from zoo import checkpoint, registry, weights
from zoo.architecture import build_meta
from zoo.errors import ConfigError, WeightsIntegrityError
from zoo.hub import Progress
from zoo.settings import Settings, get_settings


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`device`, or ZOO_DEVICE: `auto` is CUDA when present, else the CPU.

    Raises:
        ConfigError: CUDA was asked for but there is none.
    """
    want = str(device or get_settings().device)
    if want == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"Device {want!r} was asked for but PyTorch sees no CUDA GPU; use ZOO_DEVICE=cpu or auto.")
    try:
        return torch.device(want)
    except RuntimeError:
        raise ConfigError(f"{want!r} is not a device: use auto, cpu, cuda or cuda:N.") from None


def create_model(
    name: str,
    *,
    pretrained: bool = True,
    num_classes: int | None = None,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    settings: Settings | None = None,
) -> nn.Module:
    """A timm model for a registry tag, in eval mode on `device` (channels_last on CUDA).

    Args:
        name: `arch.tag` or a bare architecture (its default tag).
        pretrained: load the tag's weights (resolving them from the store, the HF cache or the Hub);
            False gives timm's random initialisation.
        num_classes: a new classifier of this size (freshly initialised) on top of the pretrained
            backbone; None keeps the tag's own head.
        device: overrides ZOO_DEVICE.
        progress: download progress callback (bytes done, total).

    Raises:
        UnknownModelError, WeightsUnavailableError, WeightsIntegrityError, WeightsMismatchError, ConfigError.
    """
    entry = registry.get(name)
    dev = resolve_device(device)
    if not pretrained:
        model = timm.create_model(entry.arch, pretrained=False, num_classes=entry.num_classes)
    else:
        path = weights.resolve(entry.name, progress=progress, settings=settings)
        model = build_meta(entry.arch, num_classes=entry.num_classes)
        tensors, _ = checkpoint.load_checked(path, checkpoint.expected_tensors(model), f"{entry.name} ({path})")
        weights.still_verified(entry.name, path, settings)  # what was read is what was checked
        model.load_state_dict(tensors, strict=True, assign=True)
        left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
        if left:
            raise WeightsIntegrityError(f"{entry.name}: the file left {', '.join(left[:5])} without values.")
    if num_classes is not None and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    model.eval()
    if dev.type == "cuda":
        return model.to(dev, memory_format=torch.channels_last)
    return model.to(dev)


def model_bytes(model: nn.Module) -> int:
    """Bytes held by a model's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


class ModelCache:
    """Ready models by (tag, device), least recently used evicted beyond a byte budget.

    A model larger than the whole budget is still served (and kept alone), so a small budget slows
    things down rather than failing them.
    """

    def __init__(self, budget_bytes: int, loader: Callable[..., nn.Module] = create_model,
                 canonical: Callable[[str], str] = lambda name: registry.get(name).name):
        """`loader(name, device=...)` builds a model; `canonical(name)` is the one key of the names it accepts."""
        self.budget_bytes = budget_bytes
        self._loader = loader
        self._canonical = canonical
        self._lock = threading.Lock()
        self._models: OrderedDict[tuple[str, str], tuple[nn.Module, int]] = OrderedDict()
        self._loading: dict[tuple[str, str], Future[nn.Module]] = {}
        self.loads = 0  # how many times the loader ran (tests and stats)

    def get(self, name: str, device: str | torch.device | None = None) -> nn.Module:
        canonical = self._canonical(name)
        dev = resolve_device(device)
        key = (canonical, str(dev))
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key][0]
            future = self._loading.get(key)
            owner = future is None
            if owner:
                future = self._loading[key] = Future()
        if not owner:
            return future.result()
        try:
            model = self._loader(canonical, device=dev)
        except BaseException as exc:
            with self._lock:
                del self._loading[key]
            future.set_exception(exc)
            raise
        with self._lock:
            self.loads += 1
            self._models[key] = (model, model_bytes(model))
            del self._loading[key]
            self._evict(keep=key)
        future.set_result(model)
        return model

    def _evict(self, keep: tuple[str, str]) -> None:
        while self.used_bytes > self.budget_bytes and len(self._models) > 1:
            oldest = next(k for k in self._models if k != keep)
            del self._models[oldest]

    @property
    def used_bytes(self) -> int:
        return sum(size for _, size in self._models.values())

    def cached(self) -> list[str]:
        """Cached (tag, device) keys, least recently used first."""
        with self._lock:
            return [f"{n}@{d}" for n, d in self._models]

    def forget(self, name: str) -> None:
        """Drop every device's copy of a model (a deleted run); takes the canonical name, as stored."""
        with self._lock:
            for key in [k for k in self._models if k[0] == name]:
                del self._models[key]

    def discard(self, name: str, device: str | torch.device | None = None) -> None:
        """Forget one cached model (the engine released it, or no longer needs its eager form)."""
        key = (self._canonical(name), str(resolve_device(device)))
        with self._lock:
            self._models.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
