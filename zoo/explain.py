"""What a ResNet looks at: per-stage feature maps (conv2_x..conv5_x) and Grad-CAM for the top class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from zoo import images, inference
from zoo.errors import InvalidArgumentError
from zoo.inference import Engine, Scored, top_k_of
from zoo.registry import ModelEntry
from zoo.resolver import Resolved

STAGES = (("conv2_x", "layer1"), ("conv3_x", "layer2"), ("conv4_x", "layer3"), ("conv5_x", "layer4"))
# anchors of a perceptually ordered dark-to-bright colour map (close to matplotlib's "inferno")
_ANCHORS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float32)


@dataclass(frozen=True)
class StageMaps:
    """The strongest channels of one stage's output, as greyscale images."""

    stage: str  # conv2_x ... conv5_x (the paper's names)
    module: str  # layer1 ... layer4 (timm's names)
    shape: tuple[int, int, int]  # channels, height, width
    channels: list[int]  # channel indices shown, strongest mean activation first
    maps: list[np.ndarray]  # uint8 (H, W) each, scaled per map to 0..255


@dataclass(frozen=True)
class Explanation:
    model: str
    target: Scored  # the class Grad-CAM explains
    top: tuple[Scored, ...]
    image: np.ndarray  # uint8 (S, S, 3): what the model saw (after resize and crop), un-normalised
    cam: np.ndarray  # float32 (S, S) in [0, 1]
    overlay: np.ndarray  # uint8 (S, S, 3): the heat map over the image
    stages: list[StageMaps]


def colormap(values: np.ndarray) -> np.ndarray:
    """uint8 RGB for values in [0, 1] (dark = low, bright yellow = high)."""
    x = np.clip(values, 0, 1) * (len(_ANCHORS) - 1)
    lo = np.floor(x).astype(int).clip(0, len(_ANCHORS) - 2)
    t = (x - lo)[..., None]
    return (_ANCHORS[lo] * (1 - t) + _ANCHORS[lo + 1] * t).round().astype(np.uint8)


def _to_uint8(a: torch.Tensor) -> np.ndarray:
    a = a.float()
    lo, hi = float(a.min()), float(a.max())
    return ((a - lo) / (hi - lo) * 255 if hi > lo else torch.zeros_like(a)).round().byte().cpu().numpy()


def explainable(target: Resolved) -> bool:
    """Whether Grad-CAM and stage maps are drawn for it: the ImageNet tags (a run's head is its own)."""
    return isinstance(target, ModelEntry) and target.has_imagenet_head


def explain(source: images.Source, name: str, *, channels: int = 8, target: int | None = None,
            engine: Engine | None = None, device: str | torch.device | None = None) -> Explanation:
    """Feature maps of every stage and a Grad-CAM heat map for `target` (default: the top class).

    Runs eagerly in fp32 (gradients are needed), on the cached model, without touching its
    parameters' gradients.

    Raises:
        InvalidImageError, UnknownModelError, InvalidArgumentError, WeightsUnavailableError, ...
    """
    eng = engine or inference.engine()
    entry = inference.imagenet_entry(name)
    if not 1 <= channels <= 64:
        raise InvalidArgumentError(f"channels={channels} must be between 1 and 64.")
    pre = images.preprocessing(entry)
    image = images.decode(source, min_side=images.draft_side([pre]))
    model = eng.cache.get(entry.name, device or eng.settings.device)
    dev = next(model.parameters()).device
    x = images.preprocess(pre, image)[None].to(dev)
    outs = {}
    with torch.no_grad():
        h = model.maxpool(model.act1(model.bn1(model.conv1(x))))
        for stage, module in STAGES[:3]:
            h = outs[stage] = getattr(model, module)(h)
    with torch.enable_grad():
        h = h.detach().requires_grad_(True)
        last = model.layer4(h)
        logits = model.forward_head(last)
        top = top_k_of(logits.detach().float().cpu(), 5)[0]
        cls = top[0].label.index if target is None else int(target)
        if not 0 <= cls < logits.shape[1]:
            raise InvalidArgumentError(f"target={cls} is not a class index (0..{logits.shape[1] - 1}).")
        (grad,) = torch.autograd.grad(logits[0, cls], last)
    outs["conv5_x"] = last.detach()
    weights = grad.mean(dim=(2, 3), keepdim=True)  # Grad-CAM: channel weight = mean gradient
    cam = F.relu((weights * last.detach()).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = (cam / cam.max() if float(cam.max()) > 0 else cam).float().cpu().numpy()
    mean = torch.tensor(pre.mean, device=dev)[:, None, None]
    std = torch.tensor(pre.std, device=dev)[:, None, None]
    seen = ((x[0] * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    overlay = (0.55 * seen + 0.45 * colormap(cam)).round().astype(np.uint8)
    probs = torch.softmax(logits.detach().float(), 1)[0]
    chosen = Scored(inference.imagenet_labels()[cls], float(probs[cls]))
    stages = []
    for stage, module in STAGES:
        act = outs[stage][0]
        strongest = act.mean(dim=(1, 2)).topk(min(channels, act.shape[0])).indices.tolist()
        stages.append(StageMaps(stage, module, tuple(act.shape), strongest, [_to_uint8(act[c]) for c in strongest]))
    return Explanation(entry.name, chosen, top, seen, cam.astype(np.float32), overlay, stages)


def save(exp: Explanation, folder: str | Path) -> list[str]:
    """Write the overlay, the model's view and each stage's maps as PNGs into `folder`; return the paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fname, arr in (("input.png", exp.image), ("gradcam.png", exp.overlay)):
        Image.fromarray(arr).save(out / fname)
        paths.append(str(out / fname))
    for st in exp.stages:
        sheet(st).save(out / f"{st.stage}.png")
        paths.append(str(out / f"{st.stage}.png"))
    return paths


def sheet(st: StageMaps, tile: int = 112, columns: int | None = None) -> Image.Image:
    """One stage's maps side by side (`columns` per row, default all), each scaled to `tile` px."""
    cols = columns or len(st.maps)
    rows = -(-len(st.maps) // cols)
    out = Image.new("L", (tile * cols, tile * rows))
    for i, m in enumerate(st.maps):
        out.paste(Image.fromarray(m).resize((tile, tile), Image.Resampling.NEAREST),
                  (tile * (i % cols), tile * (i // cols)))
    return out
