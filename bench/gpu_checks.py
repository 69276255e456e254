"""The checking and timing sections of `python -m bench gpu` (bench/bench_gpu.py; the training ones are in
gpu_train.py). Each takes the run's `Context`, prints what it measures, and raises `Failed` when a check
does not hold, `Skip` when it cannot run here."""

from __future__ import annotations

import dataclasses
import math
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.gpu_agree import TOL, agree, random_weights

CHECK_ARCHS = ("resnet50", "resnext50_32x4d")  # correctness: the default tag of each
EXAMPLES = ("chelsea", "astronaut", "coffee", "rocket")


def flops_text(flops: float) -> str:
    return f"{flops / 1e12:.1f} TFLOPS" if flops >= 1e12 else f"{flops / 1e9:.0f} GFLOPS"


class Failed(Exception):
    """A check did not hold (the message says which and by how much)."""


class Skip(Exception):
    """The section cannot run here (the message says why)."""


def require(ok: bool, message: str) -> None:
    if not ok:
        raise Failed(message)


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of `fn` over a window of about `seconds` (at least 2 calls)."""
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or n < 2:
        fn()
        n += 1
    return n / elapsed


def environment(ctx) -> None:
    import huggingface_hub
    import safetensors
    import timm

    from zoo import hub, weights
    from zoo.errors import WeightsUnavailableError

    ctx.info.update(python=platform.python_version(), torch=torch.__version__, timm=timm.__version__,
                    huggingface_hub=huggingface_hub.__version__, safetensors=safetensors.__version__,
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version() if ctx.cuda else None)
    if ctx.cuda:
        props = torch.cuda.get_device_properties(0)
        ctx.info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", memory_gb=round(props.total_memory
                        / 2**30, 1), bf16=torch.cuda.is_bf16_supported())
    print("   " + ", ".join(f"{k} {v}" for k, v in ctx.info.items()), flush=True)
    state, detail = hub.status(ctx.settings)
    require(state == "offline", f"the Hub is {state} ({detail}); HF_HUB_OFFLINE=1 should keep it out of reach")
    t = time.perf_counter()
    try:  # a tag that is not stored: must fail at once, not wait on the network
        weights.resolve("resnet18.tv_in1k", settings=ctx.settings)
    except WeightsUnavailableError:
        pass
    else:
        raise Failed("resnet18.tv_in1k resolved with an empty store and HF_HUB_OFFLINE=1")
    waited = time.perf_counter() - t
    require(waited < 2.0, f"resolving a missing weight offline took {waited:.1f} s")
    print(f"   Hub: {detail}; a missing weight fails in {1e3 * waited:.0f} ms without the network", flush=True)


def peak(ctx) -> None:
    """The matmul rate this chip reaches: bf16 8192^3 on CUDA (fp32 on the CPU, which never uses bf16)."""
    n, dtype = ctx.plan.matmul_n, torch.bfloat16 if ctx.cuda else torch.float32
    a, b = (torch.randn(n, n, device=ctx.device, dtype=dtype) for _ in range(2))

    def mm() -> None:
        for _ in range(10):
            torch.mm(a, b)
        if ctx.cuda:
            torch.cuda.synchronize()

    mm()
    ctx.peak_flops = 10 * 2 * n**3 * max(rate(mm, ctx.plan.window_s) for _ in range(3))
    ctx.record(matmul_n=n, dtype=str(dtype), tflops=ctx.peak_flops / 1e12)
    print(f"   {n}^3 {str(dtype).removeprefix('torch.')} matmul: {flops_text(ctx.peak_flops)}", flush=True)


def prepare_weights(ctx) -> None:
    """Random-init weights (bench.gpu_agree.random_weights) for every tag the check runs, imported into the store."""
    from zoo import compare, registry, weights

    tags = list(dict.fromkeys([registry.get(a).name for a in (*CHECK_ARCHS, ctx.plan.train_arch)]
                              + compare.default_tags()[:ctx.plan.compare_tags]))
    for tag in tags:
        t = time.perf_counter()
        src = random_weights(registry.get(tag).arch, ctx.tmp / f"{tag}.safetensors")
        weights.import_file(src, tag, settings=ctx.settings)
        src.unlink()
        print(f"   {tag}: made and imported in {time.perf_counter() - t:.1f} s", flush=True)
    ctx.record(tags=tags)


def _reference(ctx, tag: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(the example images as `tag`'s inputs, fp32 CPU logits of a plain model from the stored file)."""
    if tag not in ctx.references:
        from zoo import images, models, registry

        pre = images.preprocessing(registry.get(tag))
        x = torch.stack([images.preprocess(pre, images.decode(p, min_side=images.draft_side([pre])))
                         for p in ctx.example_paths])
        model = models.create_model(tag, device="cpu", settings=ctx.settings)
        with torch.inference_mode():
            ctx.references[tag] = (x, model(x).float())
    return ctx.references[tag]


def _check_tag(ctx, engine, tag: str, per_image: bool) -> dict:
    from zoo.inference import top_k_of

    x, ref = _reference(ctx, tag)
    if per_image:  # batch 1 throughout: a compiled runner keeps the one graph its warm-up traced
        logits = torch.cat([engine.logits(tag, x[i:i + 1], ctx.device)[0] for i in range(len(x))])
    else:
        logits = engine.logits(tag, x, ctx.device)[0]
    runner = engine.runner_name(tag, ctx.device)
    picks = [[s.label.index for s in top] for top in top_k_of(logits, 5)]
    rows = [agree(r, p, lg) for r, p, lg in zip(ref, picks, logits, strict=True)]
    print(f"   {tag} on {ctx.device} ({runner}):", flush=True)
    names = [Path(p).stem for p in ctx.example_paths]
    for name, a in zip(names, rows, strict=True):
        print(f"     {name}: {a.line()}", flush=True)
    if not per_image:  # the public API too: classify() from the files, top-5 labels only
        preds = engine.classify(ctx.example_paths, tag, device=ctx.device)
        via_api = [agree(r, [s.label.index for s in p[0].top]) for r, p in zip(ref, preds, strict=True)]
        print(f"     classify(): {sum(a.ok for a in via_api)}/{len(via_api)} agree "
              f"({sum(a.exact for a in via_api)} exact)", flush=True)
        rows += via_api
    bad = [f"{names[i % len(names)]}: {a.line()}" for i, a in enumerate(rows) if not a.ok]
    require(not bad, f"{tag} on {runner} disagrees with fp32 CPU: " + "; ".join(bad))
    return {"runner": runner, "images": [dataclasses.asdict(a) for a in rows]}


def correctness_eager(ctx) -> None:
    from zoo import registry

    for arch in CHECK_ARCHS:
        tag = registry.get(arch).name
        ctx.record(**{tag: _check_tag(ctx, ctx.engine, tag, per_image=False)})
    ctx.record(tolerance_sigma=TOL)


def correctness_compiled(ctx) -> None:
    from zoo import registry
    from zoo.inference import Engine

    engine = Engine(dataclasses.replace(ctx.settings, compile=True), backend="eager")
    try:
        for arch in CHECK_ARCHS:
            tag = registry.get(arch).name
            t = time.perf_counter()
            runner = engine.runner_name(tag, ctx.device)  # builds, compiles and warms up
            print(f"   {tag}: {runner} ready in {time.perf_counter() - t:.1f} s", flush=True)
            if ctx.cuda:
                require(runner.endswith("-compiled"), f"ZOO_COMPILE=1 gave runner {runner}, not a compiled one")
            else:
                print("   (the engine compiles on CUDA only: on the CPU this exercises the same calls eagerly)",
                      flush=True)
            ctx.record(**{tag: _check_tag(ctx, engine, tag, per_image=True)})
    finally:
        engine.close()


def throughput(ctx, compile: bool) -> None:
    """ResNet-50 at the plan's batch, AMP + channels_last through the engine's own runner."""
    from zoo import backends, models, registry

    entry = registry.get("resnet50")
    plan, kind = ctx.plan, "compiled" if compile else "eager"
    model = models.create_model(entry.name, device=ctx.device, settings=ctx.settings)
    runner = backends.EagerRunner(model, channels_last=True, compile=compile)
    x = torch.randn(plan.batch, 3, plan.side, plan.side, device=ctx.device).contiguous(
        memory_format=torch.channels_last)
    t = time.perf_counter()
    runner(x)
    first = time.perf_counter() - t
    for _ in range(2):  # cudnn.benchmark's autotuning, the allocator's warm-up
        runner(x)
    per_s = plan.batch * statistics.median(rate(lambda: runner(x), plan.window_s) for _ in range(plan.windows))
    flops = 2 * entry.gmacs * 1e9 * (plan.side / 224) ** 2  # registry GMACs are at 224 px
    share = per_s * flops / ctx.peak_flops if ctx.peak_flops else math.nan
    print(f"   {runner.name}: first call {first:.1f} s; {per_s:,.0f} images/s at batch {plan.batch}, "
          f"{plan.side} px = {flops_text(per_s * flops)}, {100 * share:.1f}% of the measured matmul peak",
          flush=True)
    ctx.record(runner=runner.name, images_per_s=per_s, first_call_s=first, tflops=per_s * flops / 1e12,
               fraction_of_matmul_peak=share)
    ctx.target(f"gpu_resnet50_bs256_{kind}_images_per_s", per_s, ">=", 20_000.0 if compile else 10_000.0)


def latency(ctx) -> None:
    """One decoded photo to top-5 through `Engine.classify` (preprocessing, queue, forward, softmax)."""
    from zoo import images, registry

    tag, image = registry.get("resnet50").name, images.decode(ctx.example_paths[0])
    for _ in range(min(3, ctx.plan.rounds)):
        ctx.engine.classify([image], tag, device=ctx.device)
    walls, forwards = [], []
    for _ in range(ctx.plan.rounds):
        t = time.perf_counter()
        pred = ctx.engine.classify([image], tag, device=ctx.device)[0][0]
        walls.append(1e3 * (time.perf_counter() - t))
        forwards.append(pred.latency_ms)
    wall, fwd = statistics.median(walls), statistics.median(forwards)
    print(f"   {tag} ({pred.backend}), one image: {wall:.2f} ms median of {len(walls)} "
          f"(forward {fwd:.2f} ms, the rest preprocessing and top-5)", flush=True)
    ctx.record(wall_ms=wall, forward_ms=fwd, backend=pred.backend)
    ctx.target("gpu_engine_latency_ms_resnet50_bs1", wall, "<=", 20.0)


def depth_comparison(ctx) -> None:
    from zoo import compare, images

    tags, image = compare.default_tags()[:ctx.plan.compare_tags], images.decode(ctx.example_paths[0])
    t = time.perf_counter()
    cold = compare.compare(image, tags, engine=ctx.engine, device=ctx.device)
    print(f"   first comparison (loads {len(tags)} models): {time.perf_counter() - t:.1f} s", flush=True)
    walls = []
    for _ in range(ctx.plan.rounds):
        t = time.perf_counter()
        warm = compare.compare(image, tags, engine=ctx.engine, device=ctx.device)
        walls.append(1e3 * (time.perf_counter() - t))
    for r in warm.rows:
        print(f"     {r.entry.name:32} depth {r.entry.depth:3}  {r.latency_ms:6.2f} ms  {r.prediction.backend}  "
              f"top-1 {r.prediction.top[0].label.name}", flush=True)
    require(len(cold.rows) == len(warm.rows) == len(tags) and all(r.prediction.device.startswith(ctx.device)
                                                                  for r in warm.rows), "not every model on the device")
    wall = statistics.median(walls)
    print(f"   warm {len(tags)}-model comparison: {wall:.1f} ms median of {len(walls)} "
          f"(forwards {sum(r.latency_ms for r in warm.rows):.1f} ms summed)", flush=True)
    ctx.record(wall_ms=wall, models={r.entry.name: r.latency_ms for r in warm.rows})
    ctx.target("gpu_compare_6_models_ms", wall, "<=", 100.0)


def memory_budget(ctx) -> None:
    """ZOO_MODEL_MEMORY_MB on the device: the default tags classified round robin by an engine with a budget
    smaller than all of them together; the device memory in use stays within the budget plus a margin for one
    batch's activations, and released models give their memory back (the issue's round-robin target, on CUDA)."""
    from zoo import compare
    from zoo.inference import Engine

    tags = compare.default_tags()[:ctx.plan.compare_tags]
    budget_mb = BUDGET_MB if ctx.cuda else 64
    engine = Engine(dataclasses.replace(ctx.settings, model_memory_mb=budget_mb), backend="eager")
    sync = torch.cuda.synchronize if ctx.cuda else (lambda: None)
    used = (lambda: torch.cuda.memory_allocated() / 2**20) if ctx.cuda else (lambda: 0.0)
    try:
        sync()
        base = used()
        if ctx.cuda:
            torch.cuda.reset_peak_memory_stats()
        after = []
        for _ in range(ROUNDS):
            for tag in tags:
                preds = engine.classify(ctx.example_paths, tag, device=ctx.device)
                require(len(preds) == len(ctx.example_paths), f"{tag}: no prediction")
                sync()
                after.append(used() - base)
        peak = (torch.cuda.max_memory_allocated() / 2**20 - base) if ctx.cuda else 0.0
        models_mb = engine.resident.used_bytes / 2**20
        print(f"   {len(tags)} tags round robin x{ROUNDS}, budget {budget_mb} MiB: {engine.resident.released} models "
              f"released; device memory over the start: peak {peak:,.0f} MiB, after each call at most "
              f"{max(after):,.0f} MiB, counted models at the end {models_mb:,.0f} MiB", flush=True)
    finally:
        engine.close()
    sync()
    if ctx.cuda:
        torch.cuda.empty_cache()
    left, reserved = used() - base, torch.cuda.memory_reserved() / 2**20 if ctx.cuda else 0.0
    print(f"   after the engine closed: {left:,.0f} MiB over the start, {reserved:,.0f} MiB reserved by the allocator",
          flush=True)
    ctx.record(budget_mb=budget_mb, tags=tags, peak_mb=peak, after_call_mb=after, released=engine.resident.released,
               left_mb=left)
    require(engine.resident.released > 0, "no model was released: the budget was not reached")
    ctx.target("gpu_budget_peak_over_budget_mb", peak - budget_mb, "<=", 300.0)
    ctx.target("gpu_budget_left_after_close_mb", left, "<=", 16.0)


BUDGET_MB = 400  # the round-robin budget
ROUNDS = 2
