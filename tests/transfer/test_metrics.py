"""Scores of a validation split: macro-F1 and the confusion matrix match scikit-learn."""

from __future__ import annotations

import pytest
import torch

from zoo.transfer.metrics import score


def test_scores_match_scikit_learn():
    from sklearn.metrics import confusion_matrix, f1_score

    torch.manual_seed(0)
    logits, labels = torch.randn(200, 4), torch.randint(0, 4, (200,))
    s = score(logits, labels, 4)
    pred = logits.argmax(1).numpy()
    assert s.macro_f1 == pytest.approx(f1_score(labels.numpy(), pred, average="macro"))
    assert s.confusion == confusion_matrix(labels.numpy(), pred, labels=range(4)).tolist()
