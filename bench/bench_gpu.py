"""GPU check (`python -m bench gpu`): does the zoo give the right answers on CUDA, and how fast, in 8 minutes.

Offline (HF_HUB_OFFLINE=1, weights made here: random-init timm nets imported into a temporary store).
Sections, in order (bench/gpu_checks.py, gpu_train.py); each prints PASS, FAIL with the reason, or SKIP with why:
- environment: versions; the Hub is out of reach and a missing weight fails at once instead of hanging;
- peak: a bf16 8192^3 matmul, the yardstick for the throughput figures;
- weights: the six default tags of the depth comparison;
- correctness-eager / correctness-compiled: the engine on CUDA (autocast, channels_last; then ZOO_COMPILE=1)
  gives the fp32 CPU top-5 for resnet50 and resnext50_32x4d on examples/*.jpg (criterion: bench/gpu_agree.py);
- throughput-eager / throughput-compiled: ResNet-50, batch 256, 224 px, bf16: >= 10,000 and >= 20,000 images/s;
- latency: one photo through `Engine.classify` (<= 20 ms); compare: the six-model comparison warm (<= 100 ms);
- transfer: linear, mlp, last-stage and full a few steps each; torchrun: `python -m zoo train` as a DDP
  world of one over NCCL; degradation: the lab's default experiment (< 60 s).
Sections are skipped once the budget cannot fit them. Without CUDA this prints SKIP and returns nothing;
ZOO_GPU_CHECK_DRY=1 runs every section on the CPU at tiny sizes (speed figures then inform, not judge).
ZOO_GPU_CHECK_OUT=FILE also writes a JSON summary there, rewritten after every section;
ZOO_GPU_CHECK_BUDGET_S overrides the 480 s budget.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import Target
from bench import gpu_checks as checks
from bench import gpu_train as train

WEB_STACK = ("gradio", "gradio_client", "fastapi", "uvicorn", "starlette")  # absent on the GPU machine
ENV = ("ZOO_WEIGHTS_DIR", "HF_HUB_OFFLINE", "HF_HOME", "ZOO_CPU_BACKEND", "ZOO_DEVICE", "ZOO_COMPILE")


@dataclass(frozen=True)
class Plan:
    """Sizes of one check: the real one on CUDA, or a dry run of the same code on the CPU."""

    dry: bool
    budget_s: float  # the whole check; a section starts only if its estimate fits in what is left
    matmul_n: int  # side of the square matmul that measures the peak
    batch: int  # throughput batch
    side: int  # throughput input side, px
    windows: int  # timed windows per throughput figure (the median counts)
    window_s: float
    rounds: int  # timed repeats of the latency and comparison figures
    examples: int  # example photos the correctness sections classify
    compare_tags: int  # how many of the six default tags the comparison runs
    train_images: int  # digits used for training by the transfer section (half as many for validation)
    train_batch: int
    train_side: int  # px
    train_arch: str  # the net the transfer and torchrun sections fine-tune (its default tag)


GPU = Plan(dry=False, budget_s=480, matmul_n=8192, batch=256, side=224, windows=3, window_s=2.0, rounds=20,
           examples=4, compare_tags=6, train_images=256, train_batch=64, train_side=64, train_arch="resnet50")
DRY = Plan(dry=True, budget_s=480, matmul_n=512, batch=2, side=64, windows=2, window_s=0.3, rounds=2,
           examples=1, compare_tags=2, train_images=64, train_batch=32, train_side=32, train_arch="resnet18")

# (name, section, typical seconds on an H100/H200-class machine); cheap and important first, compiles last
SECTIONS: tuple[tuple[str, Callable, float], ...] = (
    ("environment", checks.environment, 5),
    ("peak", checks.peak, 10),
    ("weights", checks.prepare_weights, 40),
    ("correctness-eager", checks.correctness_eager, 20),
    ("throughput-eager", functools.partial(checks.throughput, compile=False), 15),
    ("latency", checks.latency, 5),
    ("compare", checks.depth_comparison, 15),
    ("memory-budget", checks.memory_budget, 20),
    ("transfer", train.transfer, 30),
    ("torchrun", train.torchrun, 45),
    ("degradation", train.degradation, 60),
    ("correctness-compiled", checks.correctness_compiled, 90),
    ("throughput-compiled", functools.partial(checks.throughput, compile=True), 60),
)


class Context:
    """What the sections share: the plan, a store of weights, one engine, the reference logits, the report."""

    def __init__(self, plan: Plan, tmp: Path, device: str):
        from zoo.settings import REPO_ROOT, get_settings

        self.plan, self.tmp, self.device, self.cuda = plan, tmp, device, device == "cuda"
        self.settings = get_settings()
        self.example_paths = [str(REPO_ROOT / "examples" / f"{n}.jpg") for n in checks.EXAMPLES[:plan.examples]]
        self.references: dict = {}
        self.peak_flops: float | None = None
        self.info: dict = {}
        self.targets: list[Target] = []
        self.report: dict = {"mode": "dry" if plan.dry else "gpu", "device": device, "budget_s": plan.budget_s,
                             "info": self.info, "sections": {}, "targets": []}
        self.section = ""

    @functools.cached_property
    def engine(self):
        """The engine most sections share (eager on the CPU, so no ONNX export runs beside the check)."""
        from zoo.inference import Engine

        return Engine(self.settings, backend="eager")

    def record(self, **data) -> None:
        self.report["sections"][self.section]["data"].update(data)

    def target(self, name: str, value: float, op: str, goal: float) -> None:
        t = Target(name, value, op, goal)
        self.report["targets"].append({"name": name, "value": value, "op": op, "target": goal,
                                       "judged": not self.plan.dry, "passed": t.passed})
        if self.plan.dry:
            print(f"   INFO {name} = {value:,.2f} (GPU target {op} {goal:,.0f}; not judged in a dry run)", flush=True)
        else:
            self.targets.append(t)
            print(f"   {t.line()}", flush=True)

    def write(self) -> None:
        out = os.environ.get("ZOO_GPU_CHECK_OUT")
        if not out:
            return
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.report, indent=1, default=str))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _run_section(ctx: Context, name: str, fn: Callable, estimate: float, t0: float) -> str:
    import torch

    elapsed = time.monotonic() - t0
    left = ctx.plan.budget_s - elapsed
    ctx.section = name
    entry = ctx.report["sections"][name] = {"status": "skip", "reason": "", "seconds": 0.0, "data": {}}
    if left < estimate:
        entry["reason"] = f"{left:.0f} s of the {ctx.plan.budget_s:.0f} s budget left; it needs about {estimate:.0f} s"
    else:
        print(f"-- {name}  [{elapsed:.0f} s in, {left:.0f} s left]", flush=True)
        t = time.monotonic()
        try:
            fn(ctx)
            entry["status"] = "pass"
        except checks.Skip as exc:
            entry["reason"] = str(exc)
        except checks.Failed as exc:
            entry.update(status="fail", reason=str(exc))
        except Exception as exc:  # a broken section must not stop the others
            entry.update(status="fail", reason=f"{type(exc).__name__}: {exc}"[:2000])
            print("   " + traceback.format_exc()[-3000:].replace("\n", "\n   "), flush=True)
        entry["seconds"] = time.monotonic() - t
        if ctx.cuda:
            torch.cuda.empty_cache()
    status = entry["status"]
    if status == "pass":
        print(f"PASS {name} ({entry['seconds']:.1f} s)", flush=True)
    else:
        print(f"{status.upper()} {name}: {entry['reason']}", flush=True)
    ctx.write()
    return status


def _web_stack(before: set[str]):
    def no_web_stack(ctx: Context) -> None:
        loaded = [m for m in WEB_STACK if m in sys.modules and m not in before]
        checks.require(not loaded, f"imported {', '.join(loaded)}, which the GPU machine does not have")
        print(f"   none of {', '.join(WEB_STACK)} was imported", flush=True)

    return no_web_stack


def run() -> list[Target]:
    import torch

    dry = os.environ.get("ZOO_GPU_CHECK_DRY", "").strip().lower() in {"1", "true", "yes", "on"}
    if not dry and not torch.cuda.is_available():
        print(f"SKIP gpu: no CUDA device (torch {torch.__version__} sees none); ZOO_GPU_CHECK_DRY=1 runs the same "
              "checks on the CPU at tiny sizes", flush=True)
        return []
    plan, device, t0 = (DRY, "cpu", time.monotonic()) if dry else (GPU, "cuda", time.monotonic())
    if os.environ.get("ZOO_GPU_CHECK_BUDGET_S"):  # a shorter lease: sections that cannot fit are skipped, said so
        plan = dataclasses.replace(plan, budget_s=float(os.environ["ZOO_GPU_CHECK_BUDGET_S"]))
    before = set(sys.modules)
    tmp = Path(tempfile.mkdtemp(prefix="zoo-gpu-check-"))
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ZOO_WEIGHTS_DIR=str(tmp / "weights"), HF_HUB_OFFLINE="1", HF_HOME=str(tmp / "hf-home"),
                      ZOO_CPU_BACKEND="eager", ZOO_DEVICE=device, ZOO_COMPILE="0")
    from zoo import settings

    settings.get_settings.cache_clear()
    print(f"GPU check ({'dry run on the CPU, tiny sizes' if dry else 'CUDA'}): budget {plan.budget_s:.0f} s, "
          f"work in {tmp}", flush=True)
    ctx = None
    try:
        ctx = Context(plan, tmp, device)
        statuses = {name: _run_section(ctx, name, fn, est, t0) for name, fn, est in SECTIONS}
        statuses["no-web-stack"] = _run_section(ctx, "no-web-stack", _web_stack(before), 0, t0)
        wall = time.monotonic() - t0
        counts = {s: sum(v == s for v in statuses.values()) for s in ("pass", "fail", "skip")}
        ctx.report.update(wall_s=wall, summary=counts)
        ctx.write()
        where = ctx.info.get("gpu", device)
        print(f"== GPU check summary ({where}): {counts['pass']} pass, {counts['fail']} fail, {counts['skip']} skip "
              f"in {wall:.0f} s of the {plan.budget_s:.0f} s budget", flush=True)
        for name, entry in ctx.report["sections"].items():
            if entry["status"] != "pass":
                print(f"   {entry['status'].upper()} {name}: {entry['reason'][:300]}", flush=True)
        if os.environ.get("ZOO_GPU_CHECK_OUT"):
            print(f"   JSON summary: {os.environ['ZOO_GPU_CHECK_OUT']}", flush=True)
        checked = [Target(f"gpu_check_{n.replace('-', '_')}", float(s == "pass"), ">=", 1.0)
                   for n, s in statuses.items() if s != "skip"]
        return checked + ctx.targets
    finally:
        if ctx is not None and "engine" in ctx.__dict__:
            ctx.engine.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        settings.get_settings.cache_clear()
        shutil.rmtree(tmp, ignore_errors=True)
