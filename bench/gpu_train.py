"""The training sections of `python -m bench gpu`: transfer strategies, torchrun, the degradation lab."""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.gpu_checks import Failed, Skip, require


def transfer(ctx) -> None:
    """Each strategy a few steps on a digits subset, through `zoo.transfer.lab.train`."""
    from zoo import registry
    from zoo.transfer import data, heads, lab
    from zoo.transfer.fit import FitConfig

    plan, tag = ctx.plan, registry.get(ctx.plan.train_arch).name
    digits = data.digits()
    subset = dataclasses.replace(digits, name="digits-subset", train=digits.train[:plan.train_images],
                                 val=digits.val[:plan.train_images // 2],
                                 fingerprint=hashlib.sha256(f"{digits.fingerprint}:{plan.train_images}".encode())
                                 .hexdigest())
    config = FitConfig(epochs=1, batch_size=plan.train_batch, patience=1)
    trainable = []
    for strategy in heads.STRATEGIES:
        reports, t = [], time.perf_counter()
        result = lab.train(subset, tag, strategy, config, size=plan.train_side, device=ctx.device,
                           callback=reports.append, settings=ctx.settings)
        steps = sum(r.kind == "step" for r in reports)
        loss = result.history.epochs[-1]["loss"]
        print(f"   {strategy:10} {steps} steps, loss {loss:.3f}, val top-1 {100 * result.scores.top1:5.1f}%, "
              f"{result.trainable_params:>10,} trainable, {time.perf_counter() - t:.1f} s", flush=True)
        require(steps >= 1 and math.isfinite(loss), f"{strategy}: {steps} steps, loss {loss}")
        trainable.append(result.trainable_params)
        ctx.record(**{strategy: {"steps": steps, "loss": loss, "val_top1": result.scores.top1,
                                 "trainable": result.trainable_params}})
    require(trainable == sorted(set(trainable)), f"trainable parameters do not grow linear -> full: {trainable}")


def torchrun(ctx) -> None:
    """`torchrun --nproc_per_node=1 -m zoo train`: a DDP world of one (NCCL on CUDA, gloo on the CPU)."""
    from zoo import registry
    from zoo.settings import REPO_ROOT

    tag, plan = registry.get(ctx.plan.train_arch).name, ctx.plan
    env = {**os.environ, "ZOO_WEIGHTS_DIR": str(ctx.settings.weights_dir), "HF_HUB_OFFLINE": "1",
           "NCCL_DEBUG": "INFO", "NCCL_DEBUG_FILE": str(ctx.tmp / "nccl.%p.log"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "zoo",
           "train", "--data", "digits", "--models", tag, "--heads", "full", "--epochs", "1", "--size",
           str(plan.train_side), "--batch-size", str(plan.train_batch), "--val-fraction", "0.9", "--device",
           ctx.device, "--json"]
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240, check=False)
    wall = time.perf_counter() - t
    tail = (done.stderr or done.stdout).strip()[-1500:]
    require(done.returncode == 0, f"exit {done.returncode}: {tail}")
    try:
        run = json.loads(done.stdout)["runs"][0]
    except (ValueError, KeyError, IndexError):
        raise Failed(f"no JSON result on stdout: {done.stdout[-500:]!r}") from None
    nccl = "".join(Path(p).read_text(errors="replace") for p in glob.glob(str(ctx.tmp / "nccl.*.log")))
    print(f"   {tag} / full under torchrun: {run['epochs']} epoch, val top-1 {run['val_top1']:.1f}%, "
          f"{wall:.1f} s in all; NCCL {'used' if 'NCCL INFO' in nccl else 'not used'}", flush=True)
    require(run["epochs"] >= 1 and math.isfinite(run["val_top1"]), f"unexpected run: {run}")
    if ctx.cuda:
        require("NCCL INFO" in nccl, "the DDP run left no NCCL log: NCCL was not used")
    ctx.record(wall_s=wall, nccl="NCCL INFO" in nccl, run=run)


def degradation_run():
    """The degradation lab's `run(config, *, device, store, ...)`, or None while the lab is not there."""
    if importlib.util.find_spec("zoo.degradation") is None:
        return None
    for module in ("zoo.degradation.experiment", "zoo.degradation.lab"):  # the brief's place, then the lab's
        if importlib.util.find_spec(module) and (found := getattr(importlib.import_module(module), "run", None)):
            return found
    return None


def degradation(ctx) -> None:
    """The degradation lab's default experiment (a small one in a dry run)."""
    run = degradation_run()
    if run is None:
        raise Skip("degradation lab not present")
    from zoo.degradation import experiment

    config = experiment.Config()
    if ctx.plan.dry:
        config = dataclasses.replace(config, depths=(8, 14), epochs=1, size=8, limit=256)
    t = time.perf_counter()
    fresh = {"reuse": False} if "reuse" in inspect.signature(run).parameters else {}  # train, never recall
    result = run(config, device=torch.device(ctx.device), store=False, **fresh)
    wall = time.perf_counter() - t
    for n in result.networks:
        print(f"   {n.name:14} {n.kind:8} depth {n.depth:3}  {n.params:>9,} params  "
              f"train error {100 * n.train_error:5.1f}%", flush=True)
    for line in getattr(experiment, "findings", lambda r: [])(result):
        print(f"   {line}", flush=True)
    print(f"   {config.data}, depths {config.depths}, {config.epochs} epochs on {result.device}: {wall:.1f} s "
          f"(the run reports {result.seconds:.1f} s)", flush=True)
    kinds = sorted((n.kind, n.depth) for n in result.networks)
    require(kinds == sorted((k, d) for k in ("plain", "residual") for d in config.depths),
            f"expected a plain and a residual net per depth, got {kinds}")
    require(all(0.0 <= n.train_error <= 1.0 for n in result.networks), "a training error is not in [0, 1]")
    ctx.record(wall_s=wall, device=str(result.device), networks=[
        {"name": n.name, "kind": n.kind, "depth": n.depth, "params": n.params, "train_error": n.train_error}
        for n in result.networks])
    ctx.target("gpu_degradation_default_run_s", wall, "<=", 60.0)
