"""The paper's CIFAR networks (He et al. 2016, section 4.2): 6n+2 weighted layers, plain or residual.

A 3x3 conv with 16 filters, then three stages of n two-conv blocks at 16, 32 and 64 filters (the first
block of stages 2 and 3 halves the feature map with stride 2), global average pooling and one fully
connected layer. A plain network and its residual twin have the same layers and, built under the same
seed, the same initial weights: the only difference is the shortcut added around every block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import InvalidArgumentError

WIDTHS = (16, 32, 64)
SHORTCUTS = ("A", "B")  # A: identity, zero-padded channels where the width grows; B: 1x1 projections there
KINDS = ("plain", "residual")


def check_depth(depth: int) -> int:
    """`depth` if it is 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...)."""
    if depth < 8 or (depth - 2) % 6:
        raise InvalidArgumentError(f"Depth {depth} is not 6n+2 (the paper's CIFAR nets): use 8, 14, 20, 32, 44, "
                                   "56, 110 or another 6n+2.")
    return depth


class Block(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, then ReLU(F(x) + shortcut(x)) when residual, ReLU(F(x)) when plain.

    `bn1` and `bn2` are the two 3x3 layers' responses (after BN, before the addition and the ReLU): what the
    paper's Figure 7 measures.
    """

    def __init__(self, cin: int, cout: int, stride: int, residual: bool, shortcut: str):
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = cout - cin if residual and shortcut == "A" else 0
        self.stride = stride
        self.project = None
        if residual and shortcut == "B" and (stride != 1 or cin != cout):
            self.project = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if not self.residual:
            return F.relu(out)
        if self.project is not None:
            skip = self.project(x)
        elif self.stride != 1 or self.pad:  # option A: subsample, then zero channels (no parameters)
            skip = F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, 0, self.pad))
        else:
            skip = x
        return F.relu(out + skip)


class CifarNet(nn.Module):
    """A plain or residual 6n+2-layer network; `name` reads as the paper's ("plain-56", "ResNet-56")."""

    def __init__(self, depth: int, residual: bool, *, shortcut: str = "A", num_classes: int = 10,
                 in_channels: int = 3, seed: int = 0):
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise InvalidArgumentError(f"Shortcut option {shortcut!r} is not one of {', '.join(SHORTCUTS)} "
                                       "(A: identity with zero-padding, B: projections where the shape changes).")
        n = (check_depth(depth) - 2) // 6
        self.depth, self.residual, self.shortcut = depth, residual, shortcut
        self.conv1 = nn.Conv2d(in_channels, WIDTHS[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTHS[0])
        blocks, cin = [], WIDTHS[0]
        for stage, width in enumerate(WIDTHS):
            for i in range(n):
                blocks.append(Block(cin, width, 2 if stage and not i else 1, residual, shortcut))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(WIDTHS[-1], num_classes)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._init_weights()

    def _init_weights(self) -> None:
        """He initialisation, as the paper; projections drawn last, so the layers twins share get the same values."""
        projections = [m for b in self.blocks if b.project is not None for m in b.project.modules()]
        ordered = [m for m in self.modules() if all(m is not p for p in projections)] + projections
        for m in ordered:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                m.reset_parameters()

    @property
    def kind(self) -> str:
        return "residual" if self.residual else "plain"

    @property
    def name(self) -> str:
        return f"{'ResNet' if self.residual else 'plain'}-{self.depth}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def responses(self) -> list[nn.BatchNorm2d]:
        """The BN after every 3x3 conv, input to output: the layers whose outputs Figure 7 plots."""
        return [self.bn1] + [bn for b in self.blocks for bn in (b.bn1, b.bn2)]

    def convs(self) -> list[nn.Conv2d]:
        """Every 3x3 conv, input to output (the weighted layers but the FC)."""
        return [self.conv1] + [c for b in self.blocks for c in (b.conv1, b.conv2)]

    def params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build(depth: int, residual: bool, *, shortcut: str = "A", num_classes: int = 10, in_channels: int = 3,
          seed: int = 0) -> CifarNet:
    """A network initialised under `seed`: plain and residual twins of a depth start from the same weights."""
    return CifarNet(depth, residual, shortcut=shortcut, num_classes=num_classes, in_channels=in_channels, seed=seed)
