"""The paper's own numbers, cited beside the live ones (He, Zhang, Ren, Sun: "Deep Residual Learning for
Image Recognition", CVPR 2016, arXiv:1512.03385)."""

from __future__ import annotations

CITATION = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016 (arXiv:1512.03385)"

# Table 2: ImageNet top-1 error (%, 10-crop testing) of plain and residual 18- and 34-layer nets
IMAGENET_TOP1_ERROR = {"plain-18": 27.94, "plain-34": 28.54, "ResNet-18": 27.88, "ResNet-34": 25.03}

# Table 6: CIFAR-10 test error (%) of the 6n+2-layer residual nets (best of 5 runs for 110 layers)
CIFAR10_TEST_ERROR = {"ResNet-20": 8.75, "ResNet-32": 7.51, "ResNet-44": 7.17, "ResNet-56": 6.97,
                      "ResNet-110": 6.43, "ResNet-1202": 7.93}

# The recipe of section 4.2: 64k iterations of batch 128 (about 164 epochs of 45k images), lr 0.1 divided by
# 10 at 32k and 48k, SGD momentum 0.9, weight decay 1e-4; ResNet-110 warmed up at 0.01 for about 400 steps.
RECIPE = {"iterations": 64_000, "batch_size": 128, "lr": 0.1, "lr_steps_at": (32_000, 48_000), "momentum": 0.9,
          "weight_decay": 1e-4}


def rows() -> list[dict]:
    """The cited numbers as table rows: dataset, network, kind, error (%), source."""
    out = [{"dataset": "ImageNet (top-1 error)", "network": n, "kind": "plain" if n.startswith("plain") else
            "residual", "error %": e, "source": "Table 2"} for n, e in IMAGENET_TOP1_ERROR.items()]
    out += [{"dataset": "CIFAR-10 (test error)", "network": n, "kind": "residual", "error %": e, "source": "Table 6"}
            for n, e in CIFAR10_TEST_ERROR.items()]
    return out
