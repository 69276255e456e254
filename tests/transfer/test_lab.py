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


def test_the_feature_cache_keeps_the_most_recently_used_files_within_its_budget(tmp_path):
    import os

    files = []
    for i, size in enumerate((400, 300, 200, 100)):
        f = tmp_path / f"{i}.safetensors"
        f.write_bytes(b"x" * size)
        os.utime(f, (1000 + i, 1000 + i))  # 0 is the least recently used
        files.append(f)
    os.utime(files[0], (2000, 2000))  # ...until a hit touches it
    lab.bound_cache(tmp_path, 650, keep=files[3])
    assert [f.exists() for f in files] == [True, False, False, True]  # 400 + 100 kept; 300 and 200 went
    lab.bound_cache(tmp_path, 50, keep=files[3])
    assert [f.exists() for f in files] == [False, False, False, True]  # the one just written always stays


def test_a_zero_feature_cache_budget_caches_nothing(stored, digits, monkeypatch):
    from zoo import paths, settings

    monkeypatch.setenv("ZOO_FEATURE_CACHE_MB", "0")
    settings.get_settings.cache_clear()
    first = lab.train(digits, TAG, "linear", FitConfig(epochs=1), size=32)
    again = lab.train(digits, TAG, "linear", FitConfig(epochs=1), size=32)
    assert not first.features_cached and not again.features_cached
    assert not list(paths.feature_cache().glob("*.safetensors"))


def test_backbone_features_come_a_batch_of_pixels_at_a_time_and_match_the_whole_tensor(digits, tmp_path,
                                                                                        monkeypatch):
    """A 13 MB zip of 20,000 small PNGs made one 3 GB pixel tensor before any feature was computed (5.5 GiB at
    the peak for a linear probe at 128 px)."""
    from zoo import settings as zs

    monkeypatch.setenv("ZOO_FEATURE_CACHE_MB", "0")
    zs.get_settings.cache_clear()
    model, pre = tiny("linear", classes=10), lab._pre(TAG, 32)
    made = []
    real = lab._tensor
    monkeypatch.setattr(lab, "_tensor", lambda examples, p: made.append(len(examples)) or real(examples, p))
    (f_train, _, f_val, _), _, _ = lab._features(model, digits, pre, "k", torch.device("cpu"), 64,
                                                 zs.get_settings(), write=False)
    assert max(made) == 64 and sum(made) == len(digits.train) + len(digits.val)
    backbone = model.backbone.eval()
    whole = lab.predict(backbone, real(digits.train, pre), 64, torch.device("cpu"))
    assert torch.equal(f_train, whole) and f_val.shape[0] == len(digits.val)


def test_a_full_finetune_whose_pixels_would_pass_the_memory_limit_is_refused_before_it_trains(stored, digits,
                                                                                            monkeypatch):
    from zoo import settings as zs
    from zoo.errors import InvalidDatasetError

    monkeypatch.setenv("ZOO_TRAIN_MEMORY_MB", "64")
    zs.get_settings.cache_clear()
    with pytest.raises(InvalidDatasetError, match=r"1,797 images at 64 px take 84 MiB, more than this server gives "
                                                  r"one run \(64 MiB, ZOO_TRAIN_MEMORY_MB\)"):
        lab.train(digits, TAG, "full", FitConfig(epochs=1), size=64)
    # at 32 px (21 MiB) it passes and trains: stopped after its first step, which is all this test needs to see
    import threading

    from zoo.errors import Cancelled

    stop, steps = threading.Event(), []
    with pytest.raises(Cancelled):
        lab.train(digits, TAG, "full", FitConfig(epochs=1), size=32, cancel=stop,
                  callback=lambda r: (steps.append(r), stop.set()))
    assert steps[0].kind == "step" and steps[0].step == 1


def test_a_probe_cancelled_during_its_feature_pass_stops_at_the_next_batch(stored, digits, monkeypatch):
    """The backbone's pass over every image comes before the head's first step (minutes at 224 px on a CPU):
    a cancel there stops it at the next batch, and nothing is cached or stored."""
    import threading

    from zoo import paths
    from zoo.errors import Cancelled
    from zoo.transfer import runs

    stop, batches, real = threading.Event(), [], lab.predict

    def predict(*args, **kwargs):
        batches.append(1)
        stop.set()  # the page's Cancel, pressed while the first batch runs
        return real(*args, **kwargs)

    monkeypatch.setattr(lab, "predict", predict)
    with pytest.raises(Cancelled):
        lab.train(digits, TAG, "linear", FitConfig(epochs=1), size=32, cancel=stop)
    assert len(batches) == 1  # of 15 in the whole pass
    assert not any(paths.feature_cache().glob("*.safetensors")) and runs.list_runs() == []
