"""The transfer lab's linear probe on resnet50: what caching backbone features buys.

256 handwritten digits (a folder of class folders, 224 px input), resnet50.tv_in1k:
1. a linear probe trained for 10 epochs, from cold (features computed and cached) to a stored run,
   against one forward pass of the backbone over the same 256 images: target total <= 1.3x;
2. the same probe again with the features cached: target >= 10x faster than the first.
Weights are random (the Hub is out of reach here); speed does not depend on their values.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench import Target

TAG = "resnet50.tv_in1k"
IMAGES = 256


def run() -> list[Target]:
    import timm
    import torch
    from safetensors.torch import save_file

    tmp = Path(tempfile.mkdtemp(prefix="bench-transfer-"))
    os.environ.update({"ZOO_WEIGHTS_DIR": str(tmp / "weights"), "HF_HUB_OFFLINE": "1"})
    from zoo import settings, weights
    from zoo.transfer import data, lab
    from zoo.transfer.fit import FitConfig, predict

    settings.get_settings.cache_clear()
    torch.manual_seed(0)
    save_file(timm.create_model("resnet50").state_dict(), str(tmp / "r50.safetensors"))
    weights.import_file(tmp / "r50.safetensors", TAG)
    digits = data.digits()
    folder = tmp / "digits"
    for i, ex in enumerate((digits.train + digits.val)[:IMAGES]):
        (folder / digits.classes[ex.label]).mkdir(parents=True, exist_ok=True)
        ex.image.save(folder / digits.classes[ex.label] / f"{i}.png")
    dataset = data.from_folder(folder)
    config = FitConfig(epochs=10, patience=10)

    t = time.perf_counter()
    first = lab.train(dataset, TAG, "linear", config)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    second = lab.train(dataset, TAG, "linear", config)
    warm = time.perf_counter() - t

    model = lab.heads.Transfer(lab.models.create_model(TAG), "linear", len(dataset.classes))
    x = torch.cat(lab._pixels(dataset, lab._pre(TAG, None), settings.get_settings()))
    predict(model.backbone, x[:8], 128, torch.device("cpu"))  # warm-up
    t = time.perf_counter()
    predict(model.backbone, x, 128, torch.device("cpu"))
    backbone = time.perf_counter() - t

    print(f"{len(x)} images at {x.shape[-1]} px on {TAG}: one backbone pass {backbone:.2f} s")
    print(f"linear probe, 10 epochs, cold cache: {cold:.2f} s in all (features {first.feature_seconds:.2f} s, "
          f"head training {first.train_seconds:.2f} s); val top-1 {100 * first.scores.top1:.1f}%")
    print(f"the same probe again, warm cache: {warm:.2f} s (features cached: {second.features_cached}, "
          f"head training {second.train_seconds:.2f} s)")
    return [Target("transfer_probe_total_vs_backbone_pass", cold / backbone, "<=", 1.3),
            Target("transfer_probe_warm_cache_speedup", cold / warm, ">=", 10.0)]
