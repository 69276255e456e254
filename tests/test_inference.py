"""Classification through the engine: labels, batching, the ONNX fast path, awkward images."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file

from tests import imagecorpus as corpus
from zoo import backends, images, inference, registry, weights
from zoo.errors import InvalidArgumentError, InvalidImageError
from zoo.settings import Settings, get_settings

TAG = "resnet18.tv_in1k"  # 224 px, bilinear, crop 0.875
TAG_288 = "resnet18.a1_in1k"  # 288 px at test time, bicubic, crop 1.0


@pytest.fixture
def stored(resnet18_file):
    weights.import_file(resnet18_file, TAG)
    weights.import_file(resnet18_file, TAG_288)
    return resnet18_file


def eager_engine(**kw) -> inference.Engine:
    return inference.Engine(backend="eager", **kw)


def reference_logits(path, tag: str, image) -> torch.Tensor:
    """timm's own model, loaded from the same file, on timm's own eval transform."""
    from timm.data import create_transform, resolve_data_config
    from timm.models import get_pretrained_cfg

    model = timm.create_model(registry.get(tag).arch, pretrained=False)
    model.load_state_dict(load_file(str(path)))
    model.eval()
    cfg = resolve_data_config(pretrained_cfg=get_pretrained_cfg(tag).to_dict(), use_test_size=True)
    with torch.inference_mode():
        return model(create_transform(**cfg)(images.decode(image))[None])


def test_labels_are_timms_imagenet_info():
    from timm.data import ImageNetInfo

    labels = inference.imagenet_labels()
    info = ImageNetInfo()
    assert len(labels) == 1000
    assert (labels[0].synset, labels[0].name) == ("n01440764", "tench")
    assert labels[207].name == "golden retriever"
    assert all(lb.synset == info.index_to_label_name(lb.index) for lb in labels)


def test_predictions_match_timm_end_to_end(stored):
    png = corpus.encode(corpus.scene(300, 200), "PNG")
    preds = eager_engine().classify([png], [TAG, TAG_288], top_k=5)
    assert [p.model for p in preds[0]] == [TAG, TAG_288]
    for p in preds[0]:
        probs = torch.softmax(reference_logits(stored, p.model, png), 1)[0]
        best = probs.topk(5)
        assert [s.label.index for s in p.top] == best.indices.tolist()
        assert np.allclose([s.probability for s in p.top], best.values.tolist(), atol=1e-6)
        assert p.top[0].label == inference.imagenet_labels()[p.top[0].label.index]
        assert p.device == "cpu" and p.backend == "eager-cpu-fp32" and p.latency_ms > 0
    assert [s.probability for s in preds[0][0].top] == sorted((s.probability for s in preds[0][0].top), reverse=True)


def test_a_batch_equals_images_one_by_one(stored):
    pics = [corpus.encode(corpus.scene(96 + 10 * i, 64 + 7 * i), "PNG") for i in range(5)]
    eng = eager_engine()
    together = eng.classify(pics, [TAG])
    assert {p[0].batch_size for p in together} == {5}
    for pic, batched in zip(pics, together, strict=True):
        alone = eng.classify([pic], [TAG])[0][0]
        assert alone.batch_size == 1
        assert [s.label.index for s in alone.top] == [s.label.index for s in batched[0].top]
        assert np.allclose([s.probability for s in alone.top], [s.probability for s in batched[0].top], atol=1e-6)


def test_batches_are_bounded_by_max_batch(stored, monkeypatch):
    monkeypatch.setenv("ZOO_MAX_BATCH", "2")
    get_settings.cache_clear()
    preds = eager_engine().classify([corpus.encode(corpus.scene(), "PNG")] * 5, [TAG])
    assert [p[0].batch_size for p in preds] == [2, 2, 2, 2, 1]


def test_concurrent_requests_share_forward_passes(stored):
    settings = Settings.from_env({"ZOO_WEIGHTS_DIR": str(get_settings().weights_dir), "ZOO_BATCH_WAIT_MS": "200",
                                  "HF_HUB_OFFLINE": "1"})
    eng = inference.Engine(settings, backend="eager")
    pics = [corpus.encode(corpus.scene(96 + 10 * i, 64), "PNG") for i in range(6)]
    alone = [eng.classify([p], [TAG])[0][0] for p in pics]
    results: dict[int, inference.Prediction] = {}
    start = threading.Barrier(len(pics))

    def ask(i: int) -> None:
        start.wait()
        results[i] = eng.classify([pics[i]], [TAG])[0][0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(pics))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert max(r.batch_size for r in results.values()) > 1  # they waited for each other (200 ms window)
    for i, r in results.items():
        assert [s.label.index for s in r.top] == [s.label.index for s in alone[i].top]
        assert np.allclose([s.probability for s in r.top], [s.probability for s in alone[i].top], atol=1e-6)


def test_every_awkward_image_classifies_deterministically_or_is_refused(stored):
    eng = eager_engine()
    for name, data in corpus.valid_corpus().items():
        first, again = eng.classify([data], [TAG])[0][0], eng.classify([data], [TAG])[0][0]
        assert first.top == again.top, name
    for name, data in corpus.invalid_corpus().items():
        with pytest.raises(InvalidImageError):
            eng.classify([data], [TAG])
        assert name


def test_exif_rotated_images_classify_like_the_upright_image(stored):
    upright = corpus.scene()
    eng = eager_engine()
    expect = eng.classify([corpus.encode(upright, "PNG")], [TAG])[0][0]
    for orientation in (3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        png = corpus.encode(corpus.as_stored(upright, orientation), "PNG", exif=exif.tobytes())
        got = eng.classify([png], [TAG])[0][0]
        assert got.top == expect.top, orientation  # lossless: exactly the same answer
    for orientation in (3, 6, 8):  # JPEG: the same picture up to re-encoding
        a = images.preprocess(registry.get(TAG), images.decode(corpus.encode(upright, "JPEG", quality=95)))
        b = images.preprocess(registry.get(TAG), images.decode(corpus.exif_jpeg(upright, orientation)))
        assert (a - b).abs().mean() < 0.05


def test_feature_extractors_and_bad_arguments_are_refused_clearly(stored):
    eng = eager_engine()
    with pytest.raises(InvalidArgumentError, match=r"no ImageNet classifier.*transfer lab"):
        eng.classify([corpus.encode(corpus.scene(), "PNG")], [_headless_tag()])
    with pytest.raises(InvalidArgumentError, match="top_k"):
        eng.classify([corpus.encode(corpus.scene(), "PNG")], [TAG], top_k=0)
    with pytest.raises(InvalidArgumentError, match="at least one image"):
        eng.classify([], [TAG])


def _headless_tag() -> str:
    return next(e.name for e in registry.list_models() if not e.has_imagenet_head)


@pytest.mark.slow
def test_onnx_fast_path_equals_eager_and_is_cached_by_weights_hash(stored):
    png = corpus.encode(corpus.scene(300, 200), "PNG")
    eng = inference.Engine(backend="onnx")
    assert eng.runner_name(TAG) == backends.OnnxRunner.name
    sha = weights.store().record(TAG).sha256
    cached = list((get_settings().weights_dir / ".cache" / "onnx").glob("*.onnx"))
    assert [p.name.split("-")[1] for p in cached] == [sha[:16]]
    pre = images.preprocessing(registry.get(TAG))
    batch = torch.stack([images.preprocess(pre, images.decode(png)), torch.zeros(3, 224, 224)])
    fast, _, n, backend = eng.logits(TAG, batch)
    assert backend == backends.OnnxRunner.name and n == 2
    eager, *_ = eager_engine().logits(TAG, batch)
    assert float((fast - eager).abs().max()) <= 1e-4
    # a new process (engine) loads the cached graph at once instead of exporting again
    mtime = cached[0].stat().st_mtime_ns
    again = inference.Engine(backend="auto", background_export=False)
    assert again.runner_name(TAG) == backends.OnnxRunner.name
    assert cached[0].stat().st_mtime_ns == mtime
    # other weights under the same tag mean another hash, so never the stale graph
    assert backends.onnx_path(cached[0].parent, TAG, "0" * 64, 224) != cached[0]


@pytest.mark.slow
def test_auto_serves_eager_until_the_background_export_is_ready(stored):
    eng = inference.Engine(backend="auto")
    png = corpus.encode(corpus.scene(), "PNG")
    first = eng.classify([png], [TAG])[0][0]
    eng.classify([png], [TAG])  # the export starts for a model used again
    eng.wait_ready(timeout=300)
    later = eng.classify([png], [TAG])[0][0]
    assert first.backend in ("eager-cpu-fp32", backends.OnnxRunner.name)
    assert later.backend == backends.OnnxRunner.name
    assert [s.label.index for s in later.top] == [s.label.index for s in first.top]


def test_a_corrupt_cached_graph_falls_back_to_eager_and_is_removed(stored, caplog):
    sha = weights.store().record(TAG).sha256
    path = backends.onnx_path(get_settings().weights_dir / ".cache" / "onnx", TAG, sha, 224)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an onnx graph")
    with caplog.at_level(logging.WARNING, logger="zoo.inference"):
        eng = inference.Engine(backend="auto", background_export=False)
        assert eng.runner_name(TAG) == "eager-cpu-fp32"
    assert TAG in caplog.text and not path.exists()
    assert eng.classify([corpus.encode(corpus.scene(), "PNG")], [TAG])[0][0].backend == "eager-cpu-fp32"


def test_the_onnx_check_rejects_a_runner_that_disagrees_with_eager(stored):
    model = eager_engine().cache.get(TAG, "cpu")

    class Off:
        name = "off-by-a-bit"

        def __call__(self, batch):
            with torch.inference_mode():
                return model(batch) + 1e-3

    with pytest.raises(backends.FastPathError, match="differs from eager"):
        backends.check_against_eager(Off(), model, 64)


def test_a_failed_export_child_is_explained_once():
    from zoo import backends

    last = ("zoo.errors.FastPathError: ONNX export failed (OSError: [Errno 28] No space left on device); "
            "serving with eager PyTorch instead.")
    assert backends._child_error(["Traceback (most recent call last):", last], 1) == \
        "OSError: [Errno 28] No space left on device"  # was the whole line, "serving with eager" said twice
    assert backends._child_error(["RuntimeError: boom"], 1) == "RuntimeError: boom"
    assert backends._child_error([], -9) == "exit status -9"
