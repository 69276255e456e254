"""One resolution of a model name, for the engine, the catalog, the REST API, the Hub mirror, the UI and the CLI.

A name is a registry tag (`resnet50.a1_in1k`), a bare architecture (its default tag), or a stored fine-tuned run's
id. `resolve` gives the registry's `ModelEntry` or the runs store's `Run`; both are frozen records with a `name`,
and the functions below answer what the engine needs of either (classes, preprocessing, family, the model), so no
caller asks "is this a run?" itself: this module is the one place that does.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo import images, models, registry, weights
from zoo.errors import UnknownModelError
from zoo.hub import Progress
from zoo.registry import ModelEntry
from zoo.settings import Settings, get_settings
from zoo.transfer import runs
from zoo.transfer.runs import Run

Resolved = ModelEntry | Run


def resolve(name: str, *, exact: bool = False, settings: Settings | None = None) -> Resolved:
    """The registry entry or the stored run that `name` names.

    Args:
        exact: the HTTP API's naming rule: a tag, a bare architecture or a run id exactly as spelled (no other
            case, no spaces, no `timm/` prefix); otherwise the registry's lenient lookup applies to tags.

    Raises:
        UnknownModelError: neither, with the close names (tags and run ids) that do exist.
    """
    found = run(name, settings)
    if found is not None:
        return found
    reg = registry.load()
    try:
        if exact and name not in reg.names and name not in reg.architectures:
            raise KeyError(name)
        return reg.get(name)
    except (KeyError, UnknownModelError):
        ids = [r.id for r in runs.stored(settings)]
        raise UnknownModelError(name, [*reg.names, *reg.architectures, *ids]) from None


def run(name: str, settings: Settings | None = None) -> Run | None:
    """The stored fine-tuned run with exactly this id, or None (registry names never look like run ids: those
    start with a date). The one place that asks whether a name is a run."""
    return runs.read(name, settings) if runs.exists(name, settings) else None


def kind(target: Resolved) -> str:
    """`pretrained` (a registry tag) or `finetuned` (a stored run), as the catalog and the API name them."""
    return "finetuned" if isinstance(target, Run) else "pretrained"


def class_names(target: Resolved) -> tuple[str, ...] | None:
    """A run's own classes in output order; None for a registry tag (its head is ImageNet-1k's, or none)."""
    return target.classes if isinstance(target, Run) else None


def preprocessing(target: Resolved) -> images.Preprocessing:
    """How the model expects its input: the tag's pretrained config, or what the run was trained with."""
    return target.preprocessing if isinstance(target, Run) else images.preprocessing(target)


def entry(target: Resolved) -> ModelEntry:
    """The registry entry behind it: the tag itself, or the tag a run was fine-tuned from."""
    return target.base if isinstance(target, Run) else target


def fetch(name: str, *, progress: Progress | None = None, settings: Settings | None = None) -> None:
    """Make sure the model's weights are on this machine: a tag's are resolved (store, HF cache, then the Hub,
    reporting bytes to `progress`); a run's file is always local.

    Raises:
        UnknownModelError, WeightsUnavailableError, WeightsIntegrityError.
    """
    target = resolve(name, settings=settings)
    if isinstance(target, ModelEntry):
        weights.resolve(target.name, progress=progress, settings=settings)


def build(name: str, *, device: str | torch.device | None = None, settings: Settings | None = None) -> nn.Module:
    """A ready model in eval mode on `device`: a tag's pretrained weights (`models.create_model`), or a run's
    own file (architecture from the registry, no pretrained download).

    Raises:
        UnknownModelError, WeightsUnavailableError, WeightsIntegrityError, WeightsMismatchError, ConfigError.
    """
    settings = settings or get_settings()
    target = resolve(name, settings=settings)
    if not isinstance(target, Run):
        return models.create_model(target.name, device=device, settings=settings)
    dev = models.resolve_device(device or settings.device)
    model, _ = runs.load_model(target.id, settings)
    if dev.type == "cuda":
        return model.to(dev, memory_format=torch.channels_last)
    return model.to(dev)
