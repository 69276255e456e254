"""One resolution: a tag, a bare architecture or a stored run's id resolves to a typed record, and the engine
classifies a fine-tuned run through the very call that classifies a registry tag."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import few_digits
from zoo import images, inference, registry, resolver, weights
from zoo.errors import UnknownModelError
from zoo.registry import ModelEntry
from zoo.settings import REPO_ROOT
from zoo.transfer import lab, runs
from zoo.transfer.fit import FitConfig
from zoo.transfer.runs import Run

TAG = "resnet18.tv_in1k"  # its weights here are a seeded random init (the Hub is out of reach)
CAT = REPO_ROOT / "examples" / "chelsea.jpg"


@pytest.fixture
def run_id(resnet18_file) -> str:
    weights.import_file(resnet18_file, TAG)
    return lab.train(few_digits(), TAG, "linear", FitConfig(epochs=1), size=32).run_id


def test_tags_and_bare_architectures_resolve_to_registry_entries():
    assert resolver.resolve(TAG) == registry.get(TAG)
    bare = resolver.resolve("resnet18", exact=True)
    assert isinstance(bare, ModelEntry) and bare.name == registry.get("resnet18").name
    with pytest.raises(UnknownModelError, match="Did you mean"):
        resolver.resolve("ResNet18", exact=True)  # the HTTP API's rule: names exactly as spelled
    assert resolver.run(TAG) is None


def test_a_fine_tuned_run_is_classified_by_the_same_engine_call_as_a_tag(run_id):
    run = resolver.resolve(run_id)
    assert isinstance(run, Run) and run.name == run_id and run.tag == TAG and len(run.classes) == 10
    assert resolver.preprocessing(run).size == 32 and resolver.entry(run) == registry.get(TAG)
    with inference.Engine(backend="eager") as eng:
        tag_pred, run_pred = eng.classify(str(CAT), [TAG, run_id], top_k=5)[0]
        assert tag_pred.model == TAG and tag_pred.top[0].label.synset.startswith("n")  # ImageNet-1k labels
        assert run_pred.model == run_id and {s.label.name for s in run_pred.top} <= set(run.classes)
        # what the run's own model says, computed by hand: the engine adds nothing and loses nothing
        model, _ = runs.load_model(run_id)
        x = images.preprocess(run.preprocessing, images.decode(str(CAT)))[None]
        with torch.no_grad():
            probs = torch.softmax(model(x), 1)[0]
        best = int(probs.argmax())
        assert run_pred.top[0].label.name == run.classes[best]
        assert run_pred.top[0].probability == pytest.approx(float(probs[best]), abs=1e-5)
        # a deleted run is forgotten and no longer resolves
        assert runs.delete(run_id)
        eng.forget(run_id)
        with pytest.raises(UnknownModelError):
            eng.classify(str(CAT), run_id)
