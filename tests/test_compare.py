"""Depth comparison, evaluation on labelled folders/zips, and explanations."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from tests import imagecorpus as corpus
from zoo import compare, evaluate, explain, inference, registry, weights
from zoo.errors import InvalidArgumentError, InvalidDatasetError

TAGS = ["resnet18.tv_in1k", "resnet18.a1_in1k", "resnet18.gluon_in1k"]


@pytest.fixture
def stored(resnet18_file):
    for tag in TAGS:
        weights.import_file(resnet18_file, tag)


@pytest.fixture
def engine(stored):
    return inference.Engine(backend="eager")


def test_without_warm_runs_the_first_pass_is_the_latency(engine):
    comp = compare.compare(corpus.encode(corpus.scene(64, 64), "PNG"), TAGS[:1], engine=engine, warm_runs=0)
    (row,) = comp.rows
    assert row.warm_ms == () and row.latency_ms == row.first_ms > 0 and row.as_dict()["warm_runs"] == 0


def test_default_comparison_is_the_default_tag_of_each_depth():
    tags = compare.default_tags()
    assert [registry.get(t).arch for t in tags] == list(compare.DEFAULT_ARCHS)
    assert all(registry.get(t).is_default for t in tags)


def test_comparison_rows_agreement_and_scatter(engine):
    comp = compare.compare(corpus.encode(corpus.scene(200, 150), "PNG"), [*TAGS, "resnet18.tv_in1k"], engine=engine)
    assert [r.entry.name for r in comp.rows] == TAGS  # a repeated tag is compared once
    for r in comp.rows:
        assert len(r.prediction.top) == 5 and r.prediction.batch_size == 1 and r.latency_ms > 0
    a, b, c = (r.prediction for r in comp.rows)
    ag = comp.agreement
    assert [ag.overlap[i][i] for i in range(3)] == [5, 5, 5]
    assert ag.overlap[0][1] == len({s.label.index for s in a.top} & {s.label.index for s in b.top})
    assert ag.overlap == [list(r) for r in zip(*ag.overlap, strict=True)]  # symmetric
    assert ag.all_same_top1 == (a.top[0].label == b.top[0].label == c.top[0].label)
    assert sum(len(v) for v in ag.top1_votes.values()) == 3
    assert {lb.index for lb in ag.common_top5} == set.intersection(*({s.label.index for s in p.top} for p in (a, b, c)))
    points = comp.scatter()
    assert [p["model"] for p in points] == TAGS
    for r, p in zip(comp.rows, points, strict=True):  # the latency reported is the warm median, the first apart
        assert len(r.warm_ms) == compare.WARM_RUNS and all(ms > 0 for ms in r.warm_ms)
        assert r.latency_ms == sorted(r.warm_ms)[compare.WARM_RUNS // 2] and r.first_ms == r.prediction.latency_ms
        assert p["latency_ms"] == round(r.latency_ms, 3)
        d = r.as_dict()
        assert (d["latency_ms"], d["first_call_ms"], d["warm_runs"]) == (
            round(r.latency_ms, 3), round(r.first_ms, 3), compare.WARM_RUNS)
    assert points[0]["gmacs"] == registry.get(TAGS[0]).gmacs_eval
    assert points[1]["published_top1"] == registry.get(TAGS[1]).top1
    d = comp.as_dict()
    assert d["models"][0]["top"][0]["synset"].startswith("n") and "agreement" in d


def test_comparison_names_missing_weights_and_unknown_models(engine):
    from zoo.errors import UnknownModelError, WeightsUnavailableError

    png = corpus.encode(corpus.scene(), "PNG")
    with pytest.raises(UnknownModelError, match="resnet50"):
        compare.compare(png, ["resnet500"], engine=engine)
    with pytest.raises(WeightsUnavailableError, match="python -m zoo fetch resnet34"):
        compare.compare(png, ["resnet34.tv_in1k"], engine=engine)


def _labelled(engine) -> dict[str, bytes]:
    """Images filed under the class the model itself predicts (so accuracies are known exactly)."""
    pics = [corpus.encode(corpus.scene(80 + 17 * i, 60 + 5 * i), "PNG") for i in range(6)]
    preds = engine.classify(pics, [TAGS[0]])
    files = {}
    for i, (pic, p) in enumerate(zip(pics, preds, strict=True)):
        if i < 3:
            folder = p[0].top[0].label.synset  # top-1 right
        elif i < 5:
            folder = p[0].top[3].label.description.split(",")[-1].strip().replace(" ", "_")  # top-5 only
        else:
            folder = next(lb.synset for lb in inference.imagenet_labels()
                          if lb.index not in {s.label.index for s in p[0].top})  # wrong
        files[f"{folder}/img{i}.png"] = pic
    return files


def test_evaluate_a_folder_and_the_same_zip(engine, tmp_path):
    files = _labelled(engine)
    for rel, data in files.items():
        (tmp_path / "set" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "set" / rel).write_bytes(data)
    (tmp_path / "set" / next(iter(files)).split("/")[0] / "notes.txt").write_text("ignored")
    (tmp_path / "set" / "n01440764").mkdir(exist_ok=True)
    (tmp_path / "set" / "n01440764" / "broken.jpg").write_bytes(b"not a jpeg")
    seen = []
    ev = evaluate.evaluate(tmp_path / "set", [TAGS[0]], engine=engine, progress=lambda d, t: seen.append((d, t)))
    s = ev.scores[0]
    assert (s.n, s.top1_hits, s.top5_hits) == (6, 3, 5)
    assert s.top1 == pytest.approx(50.0) and s.published_top1 == registry.get(TAGS[0]).top1
    assert [f for f, _ in ev.skipped] == ["n01440764/broken.jpg"] and "not an image" in ev.skipped[0][1]
    assert seen[-1] == (7, 7)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for rel, data in files.items():
            z.writestr(f"val/{rel}", data)  # wrapped in one top-level folder
        z.writestr("__MACOSX/val/._x.png", b"junk")
    (tmp_path / "set.zip").write_bytes(buf.getvalue())
    ev_zip = evaluate.evaluate(tmp_path / "set.zip", [TAGS[0]], engine=engine)
    assert (ev_zip.scores[0].top1_hits, ev_zip.scores[0].top5_hits, ev_zip.scores[0].n) == (3, 5, 6)


def _zip(tmp_path, members: dict[str, bytes], name="x.zip"):
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for k, v in members.items():
            z.writestr(k, v)
    return path


def test_datasets_are_checked_before_anything_runs(tmp_path):
    png = corpus.encode(corpus.scene(), "PNG")
    with pytest.raises(InvalidDatasetError, match="does not exist"):
        evaluate.read_labelled(tmp_path / "nope")
    with pytest.raises(InvalidDatasetError, match=r"'golden_retreiver' \(did you mean golden_retriever"):
        evaluate.read_labelled(_zip(tmp_path, {"golden_retreiver/a.png": png}))
    with pytest.raises(InvalidDatasetError, match="n02012849, n03126707"):
        evaluate.read_labelled(_zip(tmp_path, {"crane/a.png": png}))
    with pytest.raises(InvalidDatasetError, match="unsafe member name"):
        evaluate.read_labelled(_zip(tmp_path, {"../tench/a.png": png}))
    with pytest.raises(InvalidDatasetError, match="zip bomb"):
        evaluate.read_labelled(_zip(tmp_path, {"tench/a.png": b"\0" * (20 * 2**20)}))
    with pytest.raises(InvalidDatasetError, match="No images"):
        evaluate.read_labelled(_zip(tmp_path, {"tench/a.txt": b"x"}))
    (tmp_path / "bad.zip").write_bytes(b"PK not really")
    with pytest.raises(InvalidDatasetError, match="not a readable zip"):
        evaluate.read_labelled(tmp_path / "bad.zip")
    items = evaluate.read_labelled(_zip(tmp_path, {"Golden Retriever/a.png": png, "n01440764/b.PNG": png}))
    assert sorted(i.label for i in items) == [0, 207]


def test_explain_gives_stage_maps_and_a_gradcam_for_the_top_class(engine, tmp_path):
    png = corpus.encode(corpus.scene(200, 150), "PNG")
    exp = explain.explain(png, TAGS[0], engine=engine, channels=4)
    pred = engine.classify([png], [TAGS[0]])[0][0]
    assert exp.target.label == pred.top[0].label
    assert abs(exp.target.probability - pred.top[0].probability) < 1e-5
    assert [s.stage for s in exp.stages] == ["conv2_x", "conv3_x", "conv4_x", "conv5_x"]
    assert [s.shape for s in exp.stages] == [(64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
    assert all(len(s.maps) == 4 and s.maps[0].dtype == np.uint8 for s in exp.stages)
    assert exp.image.shape == exp.overlay.shape == (224, 224, 3) and exp.cam.shape == (224, 224)
    assert exp.cam.min() >= 0 and exp.cam.max() <= 1
    # the model's parameters collect no gradients (the cached model is shared with inference)
    model = engine.cache.get(TAGS[0], "cpu")
    assert all(p.grad is None for p in model.parameters())
    other = explain.explain(png, TAGS[0], engine=engine, target=exp.top[-1].label.index)
    assert other.target.label == exp.top[-1].label
    paths = explain.save(exp, tmp_path / "out")
    assert {p.rsplit("/", 1)[1] for p in paths} == {"input.png", "gradcam.png", "conv2_x.png", "conv3_x.png",
                                                   "conv4_x.png", "conv5_x.png"}
    with pytest.raises(InvalidArgumentError, match="target"):
        explain.explain(png, TAGS[0], engine=engine, target=1000)


def test_colormap_runs_dark_to_bright():
    cm = explain.colormap(np.linspace(0, 1, 5))
    brightness = cm.astype(int).sum(1)
    assert list(brightness) == sorted(brightness) and tuple(cm[0]) == (0, 0, 4)


def test_a_comparison_says_which_step_it_is_on(engine):
    """The UI showed "Loading <last model> 80%" for the ~30 s the first passes and timings took."""
    steps = []
    comp = compare.compare(corpus.encode(corpus.scene(64, 64), "PNG"), TAGS[:2], engine=engine, warm_runs=1,
                           progress=lambda done, total, what: steps.append((done, total, what)))
    assert steps == [(0, 2, "First pass of 2 models"), (0, 2, f"Timing {TAGS[0]} (1 pass)"),
                     (1, 2, f"Timing {TAGS[1]} (1 pass)")]
    # each row says what ran its timed passes (ONNX Runtime and eager PyTorch latencies sat side by side unnamed)
    assert [r.backend for r in comp.rows] == [r.warm_backend for r in comp.rows] and comp.rows[0].backend
    from zoo.ui import views

    assert set(views.comparison_table(comp)["run by"]) <= {"PyTorch", "ONNX Runtime"}
    assert comp.rows[0].as_dict()["latency_backend"] == comp.rows[0].backend
