"""One transfer run: a linear probe and a full fine-tune beat chance on the digits and repeat exactly; out of
memory retries once at half the batch, then says what to do."""

from __future__ import annotations

import pytest
import torch

from tests.transfer.kit import TAG, tiny
from zoo.errors import OutOfMemoryError
from zoo.transfer import lab
from zoo.transfer.fit import FitConfig


@pytest.mark.slow
def test_linear_probe_and_full_finetune_beat_chance_and_repeat_exactly(stored, digits):
    probe = lab.train(digits, TAG, "linear", FitConfig(epochs=10), size=64)
    assert probe.scores.top1 > 0.5 and not probe.features_cached  # chance is 0.1
    again = lab.train(digits, TAG, "linear", FitConfig(epochs=10), size=64)
    assert again.features_cached and again.feature_seconds == 0.0
    assert again.scores.top1 == probe.scores.top1 and again.history.epochs == probe.history.epochs
    full = lab.train(digits, TAG, "full", FitConfig(epochs=4, lr=3e-3), size=32)
    assert full.scores.top1 > 0.5 and full.trainable_params > 11_000_000



def test_out_of_memory_retries_once_at_half_the_batch_then_says_what_to_do(monkeypatch):
    seen = []

    def fake_fit(target, groups, data, config, **kwargs):  # what torch raises when CUDA runs out of memory
        seen.append(config.batch_size)
        if len(seen) < limit:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return "trained"

    monkeypatch.setattr(lab, "fit", fake_fit)
    model = tiny("linear")
    limit = 2
    assert lab._fit_with_retry(model.head, model, None, FitConfig(batch_size=64, lr=0.1), torch.device("cpu"),
                               None, None, lab.distributed.World()) == "trained"
    assert seen == [64, 32]
    seen.clear()
    limit = 3
    with pytest.raises(OutOfMemoryError, match="Out of GPU memory at batch size 64 and again at 32"):
        lab._fit_with_retry(model.head, model, None, FitConfig(batch_size=64, lr=0.1), torch.device("cpu"),
                            None, None, lab.distributed.World())


def test_a_feature_cache_that_cannot_be_written_does_not_end_the_run(stored, digits):
    from zoo import paths

    cache = paths.feature_cache()
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("a file where the cache folder would be: writing fails as on a full or read-only disk")
    probe = lab.train(digits, TAG, "linear", FitConfig(epochs=2), size=32)
    assert probe.scores.top1 > 0.1 and not probe.features_cached and cache.is_file()
