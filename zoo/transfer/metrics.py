"""Validation scores of a classifier: top-1, macro-F1, the confusion matrix and per-class accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Scores:
    top1: float  # in [0, 1]
    macro_f1: float  # mean F1 over classes, in [0, 1]
    confusion: list[list[int]]  # confusion[true][predicted]
    per_class: list[float]  # accuracy (recall) of each class


def score(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> Scores:
    pred = logits.argmax(1)
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
    cm.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    tp = cm.diag().float()
    support, predicted = cm.sum(1).float(), cm.sum(0).float()
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12),
                     torch.zeros_like(tp))
    return Scores(float((pred == labels).float().mean()), float(f1.mean()), cm.tolist(), recall.tolist())
