"""Transfer heads: each strategy trains exactly what it should, frozen BatchNorm statistics never move."""

from __future__ import annotations

import pytest
import torch

from tests.transfer.kit import tiny
from zoo.transfer import heads
from zoo.transfer.fit import FitConfig, fit


def _bn_stats(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: b.clone() for n, b in module.named_buffers() if "running" in n}


@pytest.mark.parametrize("strategy", heads.STRATEGIES)
def test_each_strategy_trains_only_what_it_should(strategy):
    model = tiny(strategy)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats = _bn_stats(model.backbone)
    x, y = torch.randn(24, 3, 32, 32), torch.randint(0, 3, (24,))
    fit(model, model.param_groups(0.05, 0.1), (x, y, x[:6], y[:6]), FitConfig(epochs=2, batch_size=8, lr=0.05),
        device=torch.device("cpu"))
    feat = model.backbone.num_features
    head = {"linear": feat * 3 + 3, "mlp": feat * 512 + 512 + 512 * 3 + 3}.get(strategy, feat * 3 + 3)
    layer4 = sum(p.numel() for p in model.backbone.layer4.parameters())
    everything = sum(p.numel() for p in model.parameters())
    assert model.trainable_params() == {"linear": head, "mlp": head, "last-stage": layer4 + head,
                                        "full": everything}[strategy]
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert not changed & frozen  # frozen parameters are bit-identical
    assert any(n.startswith("head.") for n in changed)
    after = _bn_stats(model.backbone)
    for name, value in stats.items():
        trained = strategy == "full" or (strategy == "last-stage" and name.startswith("layer4."))
        assert torch.equal(after[name], value) != trained, name  # frozen BN statistics never move
