"""What the transfer tests share: the small tag they train from, two photos, a tiny transfer model."""

from __future__ import annotations

import torch

from zoo.settings import REPO_ROOT
from zoo.transfer import heads

TAG = "resnet18.tv_in1k"  # a small tag; its weights here are a seeded random init (the Hub is out of reach)
CAT = (REPO_ROOT / "examples" / "chelsea.jpg").read_bytes()
COFFEE = (REPO_ROOT / "examples" / "coffee.jpg").read_bytes()


def tiny(strategy: str, classes: int = 3) -> heads.Transfer:
    import timm

    torch.manual_seed(0)
    return heads.Transfer(timm.create_model("test_resnet"), strategy, classes)
