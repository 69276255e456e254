"""The four ways to reuse an ImageNet ResNet, built with timm's own head API (`reset_classifier`,
`forward_head(pre_logits=True)`): what is trained, what stays frozen, and at which learning rate.

- linear: frozen backbone, a new fully connected layer (a linear probe);
- mlp: frozen backbone, a new hidden layer with dropout, then the output layer;
- last-stage: conv5_x (timm's layer4) and a new fully connected layer;
- full: every layer, the backbone at a lower learning rate than the new layer.
Frozen parts keep BatchNorm in eval mode, so their running statistics never move.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.errors import InvalidArgumentError

STRATEGIES = ("linear", "mlp", "last-stage", "full")
FROZEN_BACKBONE = ("linear", "mlp")  # these train on cached features
MLP_HIDDEN = 512
MLP_DROPOUT = 0.2


def check(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise InvalidArgumentError(f"Unknown head strategy {strategy!r}: use one of {', '.join(STRATEGIES)}.")
    return strategy


DEFAULT_LR = {"linear": 1e-2, "mlp": 1e-2, "last-stage": 3e-3, "full": 1e-3}  # AdamW, tuned on digits


def make_head(strategy: str, in_features: int, num_classes: int) -> nn.Module:
    """The new head: one Linear, or Linear-ReLU-Dropout-Linear for `mlp`. On a frozen backbone the pooled
    features are first standardised by a BatchNorm without learned parameters (the usual linear-probe
    recipe): frozen features come in whatever scale the backbone gives, and this makes one learning
    rate fit every backbone."""
    if check(strategy) == "mlp":
        layers = [nn.Linear(in_features, MLP_HIDDEN), nn.ReLU(inplace=True), nn.Dropout(MLP_DROPOUT),
                  nn.Linear(MLP_HIDDEN, num_classes)]
    else:
        layers = [nn.Linear(in_features, num_classes)]
    if strategy in FROZEN_BACKBONE:
        layers.insert(0, nn.BatchNorm1d(in_features, affine=False))
    return nn.Sequential(*layers)


class Transfer(nn.Module):
    """A backbone (a timm ResNet whose classifier was reset to nothing) and a new head."""

    def __init__(self, backbone: nn.Module, strategy: str, num_classes: int):
        super().__init__()
        self.strategy = check(strategy)
        backbone.reset_classifier(0)  # timm: pooled features out, no classifier
        self.backbone = backbone
        self.head = make_head(strategy, backbone.num_features, num_classes)
        for name, p in backbone.named_parameters():
            p.requires_grad = self.trains_backbone_param(name)

    def trains_backbone_param(self, name: str) -> bool:
        return self.strategy == "full" or (self.strategy == "last-stage" and name.startswith("layer4."))

    def frozen_modules(self) -> list[nn.Module]:
        if self.strategy == "full":
            return []
        if self.strategy == "last-stage":
            return [m for n, m in self.backbone.named_children() if n != "layer4"]
        return [self.backbone]

    def train(self, mode: bool = True) -> Transfer:
        """Train mode for the trained parts only: frozen BatchNorm layers keep their running statistics."""
        super().train(mode)
        for m in self.frozen_modules():
            m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))  # with no classifier, timm's forward gives the pooled features

    def param_groups(self, lr: float, backbone_lr_scale: float) -> list[dict]:
        """The optimizer's groups: the head at `lr`, trained backbone parameters at `lr * backbone_lr_scale`."""
        groups = [{"params": list(self.head.parameters()), "lr": lr, "name": "head"}]
        trained = [p for p in self.backbone.parameters() if p.requires_grad]
        if trained:
            scale = backbone_lr_scale if self.strategy == "full" else 1.0
            groups.append({"params": trained, "lr": lr * scale, "name": "backbone"})
        return groups

    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
