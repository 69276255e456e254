"""The experiment: plain and residual networks of each depth trained in lockstep on the same batches.

Every network starts from weights drawn under the same seed (a plain net and its residual twin start
identical), sees the same batches in the same order, and follows the same recipe: SGD with momentum 0.9,
weight decay 1e-4, learning rate 0.1 after a linear warm-up, divided by 10 at half and three quarters of
training (the paper's schedule, shortened). Training error is recorded every step for every network,
validation error every epoch; the measurements of `zoo.degradation.measure` close the run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import torch
from torch import nn

from zoo.degradation import measure, paper
from zoo.degradation.data import Tensors, check_size
from zoo.degradation.nets import SHORTCUTS, CifarNet, build, check_depth
from zoo.errors import Cancelled, InvalidArgumentError

MAX_NETWORKS = 10  # five depths, each plain and residual
MAX_DEPTH = 1202  # the deepest net of the paper
MAX_EPOCHS = 200


@dataclass(frozen=True)
class Config:
    """One experiment's settings; the defaults are the lab's default run (minutes on two CPU cores)."""

    data: str = "digits"  # digits, cifar10, or a folder / .zip of class folders
    depths: tuple[int, ...] = (20, 56)  # 6n+2 each; a plain and a residual network per depth
    shortcut: str = "A"  # A: identity + zero-padding where the width grows (the paper's CIFAR runs); B: projections
    epochs: int = 8
    size: int = 16  # input side in px (digits are 8x8, scaled up)
    batch_size: int = 32  # the paper's 128 gives only 11 steps an epoch on 1,438 digits: see the README
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0  # linear warm-up from lr/10 over this many epochs, for every network
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of training where the learning rate drops 10x
    seed: int = 0
    limit: int | None = None  # use only the first `limit` training images (quick runs)

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(sorted({check_depth(int(d)) for d in self.depths})))
        if not self.depths or 2 * len(self.depths) > MAX_NETWORKS:
            raise InvalidArgumentError(f"Pick 1 to {MAX_NETWORKS // 2} depths (each trains a plain and a residual "
                                       "network).")
        if self.shortcut not in SHORTCUTS:
            raise InvalidArgumentError(f"Shortcut option {self.shortcut!r} is not A (identity, zero-padded) or B "
                                       "(projections).")
        if not 1 <= self.epochs <= MAX_EPOCHS:
            raise InvalidArgumentError(f"epochs={self.epochs} must be between 1 and {MAX_EPOCHS}.")
        if self.depths[-1] > MAX_DEPTH:
            raise InvalidArgumentError(f"Depth {self.depths[-1]} is deeper than the paper's deepest ({MAX_DEPTH}).")
        check_size(self.size)
        if self.batch_size < 2:
            raise InvalidArgumentError(f"batch size {self.batch_size}: it must be at least 2 (BatchNorm needs it).")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InvalidArgumentError(f"learning rate {self.lr}: it must be a positive number, e.g. 0.1.")
        if not (math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0 and math.isfinite(self.momentum)
                and 0 <= self.momentum < 1 and math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise InvalidArgumentError("warm-up and weight decay must not be negative, momentum in [0, 1).")
        if not 0 <= self.seed < 2**63:
            raise InvalidArgumentError(f"seed {self.seed}: use a whole number from 0 to 2**63 - 1.")
        if self.limit is not None and self.limit < 2:
            raise InvalidArgumentError(f"limit={self.limit}: keep at least 2 training images.")

    def key(self, fingerprint: str) -> str:
        """What a result depends on: every setting but the data's path, and what the data is."""
        settings = {k: v for k, v in dataclasses.asdict(self).items() if k != "data"}
        text = json.dumps({"settings": settings, "data": fingerprint, "v": 1}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]


def lr_at(step: int, steps_per_epoch: int, total: int, config: Config) -> float:
    """The learning rate at `step` (0-based): linear warm-up from lr/10, then drops by 10x at the milestones."""
    warmup = round(config.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return config.lr * (0.1 + 0.9 * step / warmup)
    return config.lr * 0.1 ** sum(step >= m * total for m in config.milestones)


@dataclass(frozen=True)
class Report:
    """What a callback hears after each step ("step") and each epoch ("epoch"), for every network."""

    kind: str
    epoch: int  # 1-based
    epochs: int
    step: int  # steps done
    steps: int  # steps planned
    names: tuple[str, ...]
    loss: tuple[float | None, ...]  # the step's (or the epoch's mean) training loss; None once it is not finite
    error: tuple[float, ...]  # the step's batch (or the epoch's mean) training error, in [0, 1]
    val_error: tuple[float, ...] | None = None  # epoch reports
    images_per_s: float = 0.0  # per network
    eta_s: float = 0.0


Callback = Callable[[Report], None]


@dataclass
class Network:
    """One network's run: its curves, final errors and measurements."""

    name: str
    kind: str  # plain or residual
    depth: int
    params: int
    step_loss: list[float | None] = field(default_factory=list)
    step_error: list[float] = field(default_factory=list)
    epoch_train_error: list[float] = field(default_factory=list)  # mean over each epoch's steps
    epoch_val_error: list[float] = field(default_factory=list)
    train_error: float = math.nan  # the last epoch's mean training error (the curves' end)
    val_error: float = math.nan
    response_std: list[float] = field(default_factory=list)  # per 3x3 layer, trained, eval mode (Figure 7)
    grad_norm_init: list[float] = field(default_factory=list)  # per 3x3 layer
    grad_norm_trained: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["history"] = {"step_loss": out.pop("step_loss"), "step_error": out.pop("step_error"),
                          "epoch_train_error": out.pop("epoch_train_error"),
                          "epoch_val_error": out.pop("epoch_val_error")}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Network:
        fields = {f.name for f in dataclasses.fields(cls)}
        kept = {k: (math.nan if v is None and k in ("train_error", "val_error") else v) for k, v in data.items()
                if k in fields}  # NaN is stored as null
        return cls(**kept, **data["history"])


@dataclass
class Result:
    key: str
    config: Config
    dataset: dict[str, Any]  # name, classes, train and validation counts, size
    networks: list[Network]
    device: str
    precision: str
    seconds: float
    steps: int
    steps_per_epoch: int
    images_per_s: float  # per network
    created: str
    torch_version: str = torch.__version__
    cached: bool = False  # came from the result store, not trained now
    stored: str | None = None  # the file it was saved in
    store_error: str | None = None  # why it could not be saved (the result itself is still whole)

    def network(self, name: str) -> Network:
        return next(n for n in self.networks if n.name == name)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("key", "dataset", "device", "precision", "seconds", "steps",
                                             "steps_per_epoch", "images_per_s", "created", "torch_version")}
        return {**out, "config": dataclasses.asdict(self.config), "networks": [n.to_dict() for n in self.networks],
                "findings": findings(self), "paper": {"citation": paper.CITATION, "rows": paper.rows()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        cfg = {**data["config"], "depths": tuple(data["config"]["depths"]),
               "milestones": tuple(data["config"]["milestones"])}
        keep = {k: data[k] for k in ("key", "dataset", "device", "precision", "seconds", "steps", "steps_per_epoch",
                                     "images_per_s", "created", "torch_version")}
        return cls(**keep, config=Config(**cfg), networks=[Network.from_dict(n) for n in data["networks"]])


def findings(result: Result) -> list[str]:
    """What the final training errors show, stated as measured (no outcome is assumed)."""
    out = []
    by = {(n.kind, n.depth): n for n in result.networks}
    depths = sorted({n.depth for n in result.networks})
    for shallow, deep in itertools.pairwise(depths):
        for kind in ("plain", "residual"):
            a, b = by.get((kind, shallow)), by.get((kind, deep))
            if a is None or b is None:
                continue
            out.append(f"{b.name} ends with {_compared(b.train_error, a.train_error)} {a.name}: "
                       f"{100 * b.train_error:.1f}% vs {100 * a.train_error:.1f}%.")
    for d in depths:
        p, r = by.get(("plain", d)), by.get(("residual", d))
        if p is None or r is None:
            continue
        out.append(f"{r.name} ends with {_compared(r.train_error, p.train_error)} {p.name}: "
                   f"{100 * r.train_error:.1f}% vs {100 * p.train_error:.1f}%.")
    return out


def _compared(a: float, b: float) -> str:
    """How training error a compares with b, as the findings say it (to the 0.1% they print)."""
    if round(100 * a, 1) == round(100 * b, 1):
        return "the same training error as"
    return "a higher training error than" if a > b else "a lower training error than"


def _precision(device: torch.device) -> tuple[str, Any]:
    """(name, autocast context factory): bf16 (or fp16) autocast on CUDA, fp32 on the CPU."""
    if device.type != "cuda":
        return "fp32", nullcontext
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return str(dtype).removeprefix("torch."), lambda: torch.autocast("cuda", dtype=dtype)


@torch.no_grad()
def _error(net: nn.Module, x: torch.Tensor, y: torch.Tensor, autocast, batch: int = 1024) -> float:
    if not len(x):
        return math.nan
    net.eval()
    wrong = torch.zeros((), device=x.device)
    for i in range(0, len(x), batch):
        with autocast():
            wrong += (net(x[i:i + batch]).argmax(1) != y[i:i + batch]).sum()
    net.train()
    return float(wrong) / len(x)


def train(data: Tensors, config: Config, device: torch.device, *, callback: Callback | None = None,
          cancel: threading.Event | None = None) -> Result:
    """Train every network of `config` on `data` in lockstep; see the module docstring.

    Raises:
        Cancelled: `cancel` was set; nothing is kept.
    """
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    precision, autocast = _precision(device)
    scaler = torch.amp.GradScaler("cuda") if precision == "float16" else None
    fmt = torch.channels_last if cuda else torch.contiguous_format
    nets: list[CifarNet] = [build(d, residual, shortcut=config.shortcut, num_classes=len(data.classes),
                                  seed=config.seed).to(device, memory_format=fmt)
                            for residual in (False, True) for d in config.depths]
    opts = [torch.optim.SGD(n.parameters(), lr=config.lr, momentum=config.momentum,
                            weight_decay=config.weight_decay) for n in nets]
    runs = [Network(n.name, n.kind, n.depth, n.params()) for n in nets]
    x_train, y_train = data.x_train.to(device, memory_format=fmt), data.y_train.to(device)
    x_val, y_val = data.x_val.to(device, memory_format=fmt), data.y_val.to(device)
    n_train = len(x_train)
    batch = min(config.batch_size, n_train)
    per_epoch = n_train // batch  # the tail that does not fill a batch waits for the next epoch's shuffle
    total = per_epoch * config.epochs
    probe = torch.arange(min(256, n_train))  # a fixed batch for the gradient measurements
    for net, run in zip(nets, runs, strict=True):
        run.grad_norm_init = measure.gradient_norms(net, x_train[probe], y_train[probe])
    order = torch.Generator().manual_seed(config.seed)
    names = tuple(r.name for r in runs)
    loss_fn = nn.CrossEntropyLoss()
    step, t0 = 0, time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        perm = torch.randperm(n_train, generator=order)[:per_epoch * batch].to(device)
        sums = torch.zeros(len(nets), 2, dtype=torch.float64)
        for i in range(per_epoch):
            if cancel is not None and cancel.is_set():
                raise Cancelled("The experiment was cancelled; nothing was kept.")
            idx = perm[i * batch:(i + 1) * batch]
            xb, yb = x_train[idx], y_train[idx]
            lr = lr_at(step, per_epoch, total, config)
            stats = []
            for net, opt in zip(nets, opts, strict=True):
                for g in opt.param_groups:
                    g["lr"] = lr
                with autocast():
                    logits = net(xb)
                loss = loss_fn(logits.float(), yb)
                opt.zero_grad(set_to_none=True)
                if scaler is None:
                    loss.backward()
                    opt.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                stats.append(torch.stack([loss.detach(), (logits.argmax(1) != yb).float().mean()]))
            values = torch.stack(stats).double().cpu()  # one device sync per step for every network
            sums += values
            step += 1
            for run, (loss_v, err_v) in zip(runs, values.tolist(), strict=True):
                run.step_loss.append(round(loss_v, 5) if math.isfinite(loss_v) else None)
                run.step_error.append(round(err_v, 5))
            if callback:
                speed = step * batch / (time.perf_counter() - t0)
                callback(Report("step", epoch, config.epochs, step, total, names,
                                tuple(r.step_loss[-1] for r in runs), tuple(r.step_error[-1] for r in runs),
                                images_per_s=speed, eta_s=(total - step) * batch / speed))
        means = (sums / per_epoch).tolist()
        val = [_error(net, x_val, y_val, autocast) for net in nets]
        for run, (_, err), v in zip(runs, means, val, strict=True):
            run.epoch_train_error.append(round(err, 5))
            run.epoch_val_error.append(round(v, 5))
        if callback:
            speed = step * batch / (time.perf_counter() - t0)
            callback(Report("epoch", epoch, config.epochs, step, total, names,
                            tuple(m[0] if math.isfinite(m[0]) else None for m in means),
                            tuple(r.epoch_train_error[-1] for r in runs), tuple(r.epoch_val_error[-1] for r in runs),
                            speed, (total - step) * batch / speed))
    seconds = time.perf_counter() - t0
    if cancel is not None and cancel.is_set():  # cancelled at the last step: nothing is kept either
        raise Cancelled("The experiment was cancelled; nothing was kept.")
    for net, run in zip(nets, runs, strict=True):
        run.train_error, run.val_error = run.epoch_train_error[-1], run.epoch_val_error[-1]
        run.response_std = measure.response_std(net, x_val[:256] if len(x_val) else x_train[probe])
        run.grad_norm_trained = measure.gradient_norms(net, x_train[probe], y_train[probe])
    dataset = {"name": data.name, "classes": data.classes, "train": n_train, "val": len(x_val), "size": data.size,
               "skipped": data.skipped}
    return Result(config.key(data.fingerprint), config, dataset, runs, str(device), precision, round(seconds, 3),
                  total, per_epoch, round(total * batch / seconds, 1),
                  datetime.now(UTC).isoformat(timespec="seconds"))
