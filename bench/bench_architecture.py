"""Architecture tab cost: describing a network on the meta device vs building it in CPU memory first.

Introspection (stages, shortcuts, params, GMACs) needs only shapes; building on the meta device
skips allocating and initialising hundreds of MB of weights. Target: >= 2.5x faster for the deepest
nets, where a learner waits for the table. (PyTorch's meta kernel for BatchNorm costs ~1 ms a call, most of
the shape-propagating forward; `zoo.macs` lets an identity stand in for each BatchNorm2d there.)
"""

from __future__ import annotations

import timm

from bench import Target, median_time
from zoo.architecture import build_meta, describe_model

ARCHES = ("resnet152", "resnext101_32x8d")


def run() -> list[Target]:
    targets = []
    for arch in ARCHES:
        meta = median_time(lambda a=arch: describe_model(build_meta(a), a, 224), repeat=5)

        def on_cpu(a: str = arch) -> None:
            model = timm.create_model(a, pretrained=False).eval()  # allocates and initialises weights
            describe_model(model.to("meta"), a, 224)  # then the same introspection

        cpu = median_time(on_cpu, repeat=3)
        print(f"{arch}: meta build + describe {meta * 1e3:.0f} ms, CPU build + describe {cpu * 1e3:.0f} ms")
        targets.append(Target(f"architecture_meta_vs_cpu_{arch}", cpu / meta, ">=", 2.5))
    return targets
