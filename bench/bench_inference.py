"""CPU inference: the engine against timm eager, its own overhead, and a 6-model depth comparison.

1. resnet50 (224 px, 8.2 GFLOPs), batch 1, a decoded image to top-5 through the engine (ONNX Runtime path) against timm
   eager NCHW fp32 on the same preprocessed tensor: target >= 1.8x throughput. Achieved GFLOPS are
   reported against a matmul peak measured in the same run (the better of PyTorch's and ONNX
   Runtime's 4096x4096 fp32 matmul: on AMD CPUs MKL may not use AVX-512 where MLAS does).
2. Engine overhead (preprocessing from a decoded image, queueing, post-processing) over the runner's
   own forward time for resnet50: target <= 10%.
3. Depth comparison of the 6 default tags, warm: wall time against the forwards it runs (each model's runner
   on its preprocessed tensor, 1 + compare.WARM_RUNS times: the first pass, then the timed ones whose median
   the comparison reports): target <= 1.15x.
4. Eager PyTorch with its batch norms folded into the convolutions (what the engine serves on a CPU before an ONNX
   graph is ready, and always with ZOO_CPU_BACKEND=eager) against the same network unfolded, resnet18 at batch 8:
   target >= 1.05x.
Weights are random (the Hub is out of reach here); speed does not depend on their values.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from bench import Target
from zoo import settings

ROUND_S = 1.5  # seconds per timed window; windows of the two sides alternate


def rate(fn, seconds: float = ROUND_S) -> float:
    """Calls per second of `fn` over a window of about `seconds`."""
    fn()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        n += 1
    return n / elapsed


def interleaved(a, b, rounds: int = 5) -> tuple[float, float]:
    """Median rates of `a` and `b`, measured in alternating windows (drift hits both alike)."""
    ra, rb = [], []
    for _ in range(rounds):
        ra.append(rate(a))
        rb.append(rate(b))
    return statistics.median(ra), statistics.median(rb)


def matmul_peak() -> tuple[float, float]:
    """GFLOPS of a 4096^2 fp32 matmul in PyTorch and in ONNX Runtime."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = 4096
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch_gflops = rate(lambda: torch.mm(a, b), 2.0) * 2 * n**3 / 1e9
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                              [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(model.SerializeToString(),
                                opts, providers=["CPUExecutionProvider"])
    feeds = {"a": a.numpy(), "b": b.numpy()}
    ort_gflops = rate(lambda: sess.run(None, feeds), 2.0) * 2 * n**3 / 1e9
    return torch_gflops, ort_gflops


def photo(w: int = 500, h: int = 375) -> Image.Image:
    """A decoded photo-sized image (ImageNet's typical 500x375)."""
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def run() -> list[Target]:
    absent = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
    if absent:
        print(f"SKIP inference: {', '.join(absent)} not installed (pip install -r requirements.txt); the engine's "
              "CPU fast path needs them", flush=True)
        return []
    targets = []
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as tmp:
        os.environ.update(ZOO_WEIGHTS_DIR=tmp, HF_HUB_OFFLINE="1", ZOO_CPU_BACKEND="onnx")
        settings.get_settings.cache_clear()
        from zoo import compare, images, inference, registry, weights

        torch.manual_seed(0)
        tags = compare.default_tags()
        for tag in tags:
            arch = registry.get(tag).arch
            src = Path(tmp) / f"{arch}.safetensors"
            save_file(timm.create_model(arch, pretrained=False).state_dict(), str(src))
            weights.import_file(src, tag)
            src.unlink()

        torch_peak, ort_peak = matmul_peak()
        peak = max(torch_peak, ort_peak)
        print(f"matmul 4096^2 fp32 peak: {torch_peak:.0f} GFLOPS (PyTorch), {ort_peak:.0f} GFLOPS (ONNX Runtime)")

        eng = inference.Engine(backend="onnx")
        tag = "resnet50.tv_in1k"  # 224 px: the 8.2 GFLOPs per image the target is stated for
        same = Path(tmp) / "resnet50.safetensors"  # the default tag's file (store blobs have no suffix)
        same.symlink_to(weights.store().weights_path(registry.get("resnet50").name))
        weights.import_file(same, tag)
        entry = registry.get(tag)
        t0 = time.perf_counter()
        slot = eng.slot(tag, "cpu")
        print(f"{tag}: runner {slot.runner.name} ready in {time.perf_counter() - t0:.1f} s (export + load + check)")
        pre = images.preprocessing(entry)
        image = photo()
        x = images.preprocess(pre, image)[None]
        baseline = timm_from_store(tag).to(memory_format=torch.contiguous_format)

        def timm_eager():
            with torch.inference_mode():
                baseline(x).topk(5)

        def engine_path():
            batch = images.preprocess(pre, image)[None]
            logits, *_ = slot.submit(batch).result()
            inference.top_k_of(logits, 5)

        ours, theirs = interleaved(engine_path, timm_eager)
        flops = 2 * entry.gmacs_eval * 1e9
        print(f"resnet50 bs1 at {entry.eval_size}px: engine {ours:.1f} img/s ({ours * flops / 1e9:.0f} GFLOPS, "
              f"{100 * ours * flops / 1e9 / peak:.0f}% of peak); timm eager NCHW {theirs:.1f} img/s "
              f"({theirs * flops / 1e9:.0f} GFLOPS); at peak {peak * 1e9 / flops:.1f} img/s, so no backend can "
              f"beat eager by more than {peak * 1e9 / flops / theirs:.2f}x on this CPU")
        targets.append(Target("inference_resnet50_bs1_engine_vs_timm_eager", ours / theirs, ">=", 1.8))

        runner = slot.runner
        model_rate, path_rate = interleaved(lambda: runner(x), engine_path)
        overhead = model_rate / path_rate - 1
        print(f"resnet50: runner alone {1e3 / model_rate:.2f} ms, engine path {1e3 / path_rate:.2f} ms "
              f"(overhead {100 * overhead:.1f}%)")
        targets.append(Target("inference_engine_overhead_resnet50", overhead, "<=", 0.10))

        for t in tags:
            eng.slot(t, "cpu")
        singles = []
        for t in tags:
            p = images.preprocessing(registry.get(t))
            xt = images.preprocess(p, image)[None]
            r = eng.slot(t, "cpu").runner
            singles.append(statistics.median(1 / rate(lambda r=r, xt=xt: r(xt), 0.5) for _ in range(3)))
        comp = statistics.median(1 / rate(lambda: compare.compare(image, tags, engine=eng), 3.0) for _ in range(3))
        print("single forwards: " + ", ".join(f"{t.split('.')[0]} {1e3 * s:.1f} ms" for t, s in
                                              zip(tags, singles, strict=True)))
        passes = 1 + compare.WARM_RUNS  # a first pass, then the warm ones whose median is reported
        print(f"6-model comparison: {1e3 * comp:.1f} ms vs {1e3 * sum(singles):.1f} ms summed for one forward "
              f"each; it runs {passes} per model ({1e3 * passes * sum(singles):.1f} ms)")
        targets.append(Target("compare_6_models_vs_its_forwards", comp / (passes * sum(singles)), "<=", 1.15))
        eng.close()
        targets.append(folded_vs_unfolded(tags[0]))
    for k in ("ZOO_WEIGHTS_DIR", "HF_HUB_OFFLINE", "ZOO_CPU_BACKEND"):
        os.environ.pop(k, None)
    settings.get_settings.cache_clear()
    return targets


def timm_from_store(tag: str) -> torch.nn.Module:
    """timm's own model of `tag` (unfolded, eval) from the stored file."""
    from zoo import registry, weights

    model = timm.create_model(registry.get(tag).arch, pretrained=False)
    model.load_state_dict(load_file(str(weights.store().weights_path(tag))))
    return model.eval()


def folded_vs_unfolded(tag: str, batch: int = 8) -> Target:
    """The engine's eager CPU model (batch norms folded into the convs) against timm's, unfolded, from the same
    file: both channels_last, fp32, at the tag's eval size and a batch the load benchmark's batches reach."""
    from zoo import inference, registry

    entry = registry.get(tag)
    folded = inference.inference_model(tag, device="cpu").to(memory_format=torch.channels_last)
    plain = timm_from_store(tag).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, entry.eval_size, entry.eval_size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        worst = float((folded(x) - plain(x)).abs().max())
        ours, theirs = interleaved(lambda: folded(x), lambda: plain(x))
    print(f"{tag} batch {batch} at {entry.eval_size}px: batch norms folded {batch * ours:.1f} img/s, unfolded "
          f"{batch * theirs:.1f} img/s (max |logit diff| {worst:.1e})", flush=True)
    return Target(f"inference_folded_vs_unfolded_{entry.arch}_bs{batch}", ours / theirs, ">=", 1.05)
