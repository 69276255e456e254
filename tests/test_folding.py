"""Batch norms folded into convolutions for inference: same outputs, same modules, only where it is exact, and
never in the way of forward passes running in other threads."""

from __future__ import annotations

import logging
import threading

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from zoo import folding, inference, weights

TAG = "resnet18.tv_in1k"


def _with_real_statistics(model: nn.Module) -> nn.Module:
    """Running statistics and affine parameters away from their initial 0/1 (a trained network's are)."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model.eval()


def _pairs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, str]]:
    with torch.no_grad():
        return folding.recorded_pass(model, x)[1]


@pytest.mark.parametrize("arch", ["test_resnet", "resnet18", "resnext50_32x4d"])
def test_a_folded_network_computes_the_same_function_without_batch_norms(arch):
    torch.manual_seed(0)
    model = _with_real_statistics(timm.create_model(arch))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        before = model(x)
        names = {n for n, _ in model.named_modules()}
        bns = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        folded = folding.fold_checked(model)
        after = model(x)
    assert folded == bns > 0  # every batch norm in a ResNet follows a conv, the downsample paths' too
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert {n for n, _ in model.named_modules()} == names  # the same module tree: hooks on blocks still fire
    assert (after - before).abs().max() <= 1e-5 * before.abs().max()
    assert folding.fold_checked(model) == 0  # nothing left to fold


@pytest.mark.parametrize("groups,dilation,padding_mode,bias,affine", [
    (1, 1, "zeros", False, True), (4, 2, "reflect", True, True), (2, 1, "zeros", True, False)])
def test_every_kind_of_conv_and_batch_norm_folds_exactly(groups, dilation, padding_mode, bias, affine):
    model = _with_real_statistics(nn.Sequential(
        nn.Conv2d(3, 8, 1),  # an image model: 3 channels in
        nn.Conv2d(8, 16, 3, padding=dilation, dilation=dilation, groups=groups, padding_mode=padding_mode,
                  bias=bias),
        nn.BatchNorm2d(16, affine=affine), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)))
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        before = model(x)
        assert _pairs(model, torch.randn(1, 3, 12, 12)) == [("1", "2")]
        assert folding.fold_checked(model) == 1
        assert (model(x) - before).abs().max() <= 1e-5 * before.abs().max()
    assert isinstance(model[2], nn.Identity)


def test_a_conv_whose_output_goes_elsewhere_too_keeps_its_batch_norm():
    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
            self.conv2, self.bn2 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            z = self.conv2(y)
            return self.bn(y) + self.bn2(z) + z  # conv's output also feeds conv2; conv2's also the sum

    model = _with_real_statistics(Both())
    x = torch.randn(1, 3, 8, 8)
    assert _pairs(model, x) == []
    with torch.no_grad():
        before = model(x)
        assert folding.fold_checked(model) == 0
        assert torch.equal(model(x), before)
    assert isinstance(model.bn, nn.BatchNorm2d) and isinstance(model.bn2, nn.BatchNorm2d)


def test_modules_called_twice_or_tensors_used_elsewhere_are_left_alone():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.bn = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)  # bn called twice
            self.c, self.bn_c = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)  # c's weight also used on its own
            self.d, self.bn_d = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)  # bn_d's scale also read by the forward
            self.e, self.bn_e = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)  # the one pair that folds

        def forward(self, x):
            y = self.bn(self.a(x)) + self.bn(self.b(x)) + self.bn_c(self.c(x)) + self.c.weight.mean()
            return y + self.bn_d(self.d(x)) * self.bn_d.weight.mean() + self.bn_e(self.e(x))

    model = _with_real_statistics(Shared())
    x = torch.randn(1, 3, 4, 4)
    assert _pairs(model, x) == [("e", "bn_e")]
    with torch.no_grad():
        before = model(x)
        assert folding.fold_checked(model) == 1
        assert (model(x) - before).abs().max() <= 1e-5 * before.abs().max()


def test_weights_are_scaled_in_place_unless_their_storage_holds_other_tensors():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.bn_a = nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4)
            self.b, self.c = nn.Conv2d(3, 4, 1, bias=False), nn.Conv2d(3, 4, 1, bias=False)
            self.bn_b = nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn_a(self.a(x)) + self.bn_b(self.b(x)) + self.c(x)

    model = _with_real_statistics(Two())
    both = torch.randn(2, 4, 3, 1, 1)
    model.b.weight, model.c.weight = nn.Parameter(both[0]), nn.Parameter(both[1])  # one storage, two tensors
    a_at, c_before = model.a.weight.data_ptr(), model.c.weight.detach().clone()
    x = torch.randn(1, 3, 4, 4)
    with torch.no_grad():
        before = model(x)
        assert folding.fold_checked(model) == 2
        assert (model(x) - before).abs().max() <= 1e-5 * before.abs().max()
    assert model.a.weight.data_ptr() == a_at  # scaled where it lies: no second copy of a big model's weights
    assert model.b.weight.data_ptr() != both.data_ptr() and torch.equal(model.c.weight, c_before)


def test_batch_norms_that_are_not_plain_or_still_training_are_left_alone():
    model = timm.create_model("resnext26ts").eval()  # timm's ConvNormAct: BatchNormAct2d (norm, then ReLU)
    assert _pairs(model, torch.randn(1, 3, 64, 64)) == []
    model = _with_real_statistics(timm.create_model("test_resnet"))
    model.get_submodule("layer1.0.bn1").train()  # an eval model with one batch norm left in training mode
    pairs = _pairs(model, torch.randn(1, 3, 64, 64))
    assert pairs and ("layer1.0.conv1", "layer1.0.bn1") not in pairs


def test_only_a_model_in_eval_mode_is_folded():
    model = timm.create_model("test_resnet").train()
    with pytest.raises(ValueError, match="eval mode"):
        folding.fold_checked(model)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_the_check_catches_a_fold_that_moved_the_outputs(monkeypatch):
    model = _with_real_statistics(timm.create_model("test_resnet"))
    real = folding.fold_batch_norms

    def wrong(m: nn.Module, pairs) -> int:
        n = real(m, pairs)
        conv = next(c for c in m.modules() if isinstance(c, nn.Conv2d) and c.bias is not None)
        conv.bias.data += 0.5  # a mis-folded shift
        return n

    monkeypatch.setattr(folding, "fold_batch_norms", wrong)
    with pytest.raises(folding.FoldMismatchError, match="moved the outputs"):
        folding.fold_checked(model)


def test_a_forward_that_fails_once_folded_is_reported_as_changed():
    class ReadsItsNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x)).reshape(-1, self.bn.num_features)  # an attribute, not a tensor

    with pytest.raises(folding.FoldMismatchError, match="forward pass failed"):
        folding.fold_checked(_with_real_statistics(ReadsItsNorm()))


def test_folding_never_disturbs_forward_passes_in_other_threads():
    """torch.fx's tracer (the first version of this) patched nn.Module.__call__ for the whole process while it
    traced: forward passes in other threads failed with NameError, and two traces at once could leave every later
    forward broken."""
    serving = timm.create_model("test_resnet").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = serving(x)
    stop, errors, done = threading.Event(), [], [0]

    def serve():
        while not stop.is_set():
            try:
                with torch.no_grad():
                    assert torch.equal(serving(x), expected)
                done[0] += 1
            except Exception as exc:  # counted: the figure is the error count
                errors.append(repr(exc))

    def fold():
        for _ in range(10):
            folding.fold_checked(_with_real_statistics(timm.create_model("test_resnet")))

    threads = [threading.Thread(target=serve)] + [threading.Thread(target=fold) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join(120)
    stop.set()
    threads[0].join(60)
    assert errors == [] and done[0] > 0
    with torch.no_grad():
        assert torch.equal(serving(x), expected)


def test_the_engine_serves_folded_models_with_timms_answers(tmp_path):
    torch.manual_seed(0)
    reference = _with_real_statistics(timm.create_model("resnet18"))
    save_file(reference.state_dict(), str(tmp_path / "r18.safetensors"))
    weights.import_file(tmp_path / "r18.safetensors", TAG)
    eng = inference.Engine(backend="eager")
    model = eng.cache.get(TAG, "cpu")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        expected = reference(x)
    logits, _, n, backend = eng.logits(TAG, x)
    assert n == 3 and backend == "eager-cpu-fp32"
    assert (logits - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_a_model_whose_fold_fails_its_check_is_served_unfolded(resnet18_file, monkeypatch, caplog):
    weights.import_file(resnet18_file, TAG)
    real = folding.fold_checked

    def broken(model: nn.Module) -> int:
        real(model)
        raise folding.FoldMismatchError("folding 20 batch norms moved the outputs by 1.00e+00")

    monkeypatch.setattr(folding, "fold_checked", broken)
    with caplog.at_level(logging.WARNING, logger="zoo.inference"):
        model = inference.inference_model(TAG, device="cpu")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 20  # rebuilt from the file
    assert "serving it unfolded" in caplog.text


def test_a_model_whose_recorded_pass_fails_is_served_as_it_is(resnet18_file, monkeypatch, caplog):
    weights.import_file(resnet18_file, TAG)

    def fails(model: nn.Module) -> int:
        raise RuntimeError("an op the probe cannot take")

    monkeypatch.setattr(folding, "fold_checked", fails)
    with caplog.at_level(logging.WARNING, logger="zoo.inference"):
        model = inference.inference_model(TAG, device="cpu")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 20
    assert "left unfolded (RuntimeError" in caplog.text
