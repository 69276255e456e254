"""A short, reproducible training loop over tensors that reports through callbacks: AdamW or SGD, a
cosine schedule with linear warmup (a pure function of the step), early stopping on validation loss
(the best epoch's weights are kept), and cancellation between steps."""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from zoo.errors import Cancelled as Cancelled
from zoo.errors import InvalidArgumentError
from zoo.transfer.distributed import World, shard, wrap

OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float | None = None  # the new head's (None: heads.DEFAULT_LR of the strategy); a fully fine-tuned
    # backbone gets lr * backbone_lr_scale
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.1  # of all steps
    patience: int = 3  # epochs without a lower validation loss before stopping
    backbone_lr_scale: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise InvalidArgumentError(f"optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}.")
        if self.epochs < 1 or self.batch_size < 1 or (self.lr is not None and self.lr <= 0) or self.patience < 1:
            raise InvalidArgumentError("epochs, batch size, learning rate and patience must be positive.")


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Multiplier of the base learning rate at `step` (0-based) of `total`: linear warmup, then cosine to 0."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


@dataclass(frozen=True)
class Report:
    """What a callback hears after each step ("step") and each epoch ("epoch")."""

    kind: str
    epoch: int  # 1-based
    epochs: int
    step: int  # steps done in all
    steps: int  # steps planned in all
    loss: float  # the step's loss, or the epoch's mean training loss
    train_acc: float | None = None  # epoch reports only, in [0, 1]
    val_loss: float | None = None
    val_acc: float | None = None
    images_per_s: float = 0.0
    eta_s: float = 0.0


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)  # one row per epoch: loss, train_acc, val_loss, val_acc, lr
    best_epoch: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    batch_size: int = 0


Callback = Callable[[Report], None]


def stop_if_cancelled(cancel: threading.Event | None) -> None:
    """Raise Cancelled if `cancel` is set: checked between a run's batches, of features or of training steps."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("The run was cancelled; nothing was kept.")


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Logits for every row of `x`, in eval mode, batch by batch, with no autograd graph: with one, every batch's
    activations stayed alive (the results hold their graphs) until the last batch was done, for a fine-tuned
    model's validation pass after each epoch."""
    model.eval()
    return torch.cat([model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])


def fit(model: nn.Module, groups: list[dict], data: tuple[torch.Tensor, ...], config: FitConfig, *,
        device: torch.device, callback: Callback | None = None, cancel: threading.Event | None = None,
        world: World | None = None) -> History:
    """Train `model` (its trainable parameters are in `groups`) on (x_train, y_train, x_val, y_val).

    Under torchrun each process trains on its share of every epoch's shuffled order with
    `batch_size / world size` images per step, so the global batch, and the result, match one process.

    Raises:
        Cancelled: `cancel` was set; the model is left as it was before the run.
    """
    x_train, y_train, x_val, y_val = data
    world = world or World()
    torch.manual_seed(config.seed)
    order = torch.Generator().manual_seed(config.seed)
    kwargs = {"weight_decay": config.weight_decay}
    opt = (torch.optim.AdamW(groups, **kwargs) if config.optimizer == "adamw"
           else torch.optim.SGD(groups, momentum=0.9, nesterov=True, **kwargs))
    base = [g["lr"] for g in opt.param_groups]
    batch = max(1, config.batch_size // world.size)
    net = wrap(model, world, device)
    per_epoch = math.ceil(len(shard(torch.arange(len(x_train)), world)) / batch)
    total = per_epoch * config.epochs
    warmup = int(total * config.warmup_fraction)
    loss_fn = nn.CrossEntropyLoss()
    start_state = copy.deepcopy(model.state_dict())
    best_state, best_loss = start_state, math.inf
    history = History(batch_size=config.batch_size)
    step, seen, t0 = 0, 0, time.perf_counter()

    def rate() -> float:  # images per second, all processes together
        return seen * world.size / (time.perf_counter() - t0)

    try:
        for epoch in range(1, config.epochs + 1):
            model.train()
            perm = shard(torch.randperm(len(x_train), generator=order), world)
            epoch_loss = hits = 0.0
            for i in range(0, len(perm), batch):
                stop_if_cancelled(cancel)
                idx = perm[i:i + batch]
                xb, yb = x_train[idx].to(device), y_train[idx].to(device)
                for g, lr in zip(opt.param_groups, base, strict=True):
                    g["lr"] = lr * lr_factor(step, total, warmup)
                logits = net(xb)
                loss = loss_fn(logits.float(), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                seen += len(idx)
                epoch_loss += float(loss.detach()) * len(idx)
                hits += float((logits.argmax(1) == yb).sum())
                if callback:
                    speed = rate()
                    callback(Report("step", epoch, config.epochs, step, total, float(loss.detach()), images_per_s=speed,
                                    eta_s=(total - step) * config.batch_size / speed))
            val_logits = predict(model, x_val, config.batch_size * 2, device)
            val_loss = float(loss_fn(val_logits, y_val))
            row = {"epoch": epoch, "loss": epoch_loss / len(perm), "train_acc": hits / len(perm),
                   "val_loss": val_loss, "val_acc": float((val_logits.argmax(1) == y_val).float().mean()),
                   "lr": opt.param_groups[0]["lr"]}
            history.epochs.append(row)
            if val_loss < best_loss - 1e-6:
                best_loss, history.best_epoch = val_loss, epoch
                best_state = copy.deepcopy(model.state_dict())
            if callback:
                speed = rate()
                callback(Report("epoch", epoch, config.epochs, step, total, row["loss"], row["train_acc"], val_loss,
                                row["val_acc"], speed, (total - step) * config.batch_size / speed))
            if epoch - history.best_epoch >= config.patience:
                history.stopped_early = True
                break
    except BaseException:  # cancelled or failed (e.g. out of memory): leave the model as it was
        model.load_state_dict(start_state)
        raise
    model.load_state_dict(best_state)
    history.seconds = time.perf_counter() - t0
    return history
