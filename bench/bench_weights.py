"""Time until a model is ready from the local store, and the memory it takes to get there.

Ours: meta-device build + checked safetensors load + `load_state_dict(assign=True)`. Baseline: timm's
own `timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=...))` on the same
file. Targets: ready >= 2.5x faster (resnet50, resnext101_32x8d); peak RSS growth while loading
resnet50 <= 1.3x the file size (measured in a fresh process, peak reset via /proc/self/clear_refs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

from bench import Target, median_time
from zoo import settings
from zoo.settings import REPO_ROOT

TAGS = ("resnet50.a1_in1k", "resnext101_32x8d.tv2_in1k")

RSS_PROBE = """
import json, sys, timm, torch
from zoo import models
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
torch.set_num_threads(1)
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
before = status("VmRSS")
model = models.create_model(sys.argv[1], device="cpu")
print(json.dumps({"before": before, "peak": status("VmHWM")}))
"""


def run() -> list[Target]:
    targets = []
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as tmp:
        os.environ.update(ZOO_WEIGHTS_DIR=tmp, HF_HUB_OFFLINE="1")
        settings.get_settings.cache_clear()
        from zoo import models, weights

        for tag in TAGS:
            arch = tag.split(".")[0]
            src = Path(tmp) / f"{arch}.safetensors"
            save_file(timm.create_model(arch, pretrained=False).state_dict(), str(src))
            path = weights.import_file(src, tag)
            src.unlink()
            ours = median_time(lambda t=tag: models.create_model(t, device="cpu"), repeat=5)
            named = Path(tmp) / f"{arch}-same-file.safetensors"  # timm picks its loader by the file's suffix;
            named.symlink_to(path)  # the store names blobs by their hash alone
            overlay = {"file": str(named)}
            theirs = median_time(
                lambda t=tag, o=overlay: timm.create_model(t, pretrained=True, pretrained_cfg_overlay=o).eval(),
                repeat=5,
            )
            print(f"{tag}: ready in {ours * 1e3:.0f} ms (zoo) vs {theirs * 1e3:.0f} ms (timm, same file)")
            targets.append(Target(f"weights_ready_{arch}_vs_timm", theirs / ours, ">=", 2.5))

        tag = TAGS[0]
        size = weights.store().weights_path(tag).stat().st_size
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        cmd = [sys.executable, "-c", RSS_PROBE, tag]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        rss = json.loads(out.stdout)
        growth = rss["peak"] - rss["before"]
        print(f"{tag}: peak RSS growth {growth / 1e6:.1f} MB for a {size / 1e6:.1f} MB file")
        targets.append(Target("weights_load_peak_rss_vs_file_resnet50", growth / size, "<=", 1.3))
    torch.set_num_threads(torch.get_num_threads())
    return targets
