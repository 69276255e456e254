"""The Gradio UI: every named endpoint called with gradio_client against a live zoo, and its views."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import gradio as gr
import httpx
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.conftest import LIVE_TAGS
from zoo import accel, architecture, compare, inference, registry, ui, weights
from zoo.errors import InvalidArgumentError, WeightsUnavailableError
from zoo.settings import REPO_ROOT
from zoo.ui import apidoc, arch_views, transfer_tab, views
from zoo.ui.wiring import user_errors

CAT = REPO_ROOT / "examples" / "chelsea.jpg"
COFFEE = REPO_ROOT / "examples" / "coffee.jpg"


# -- views: what the tabs show, computed from the services ------------------------------------------
def test_model_choices_are_grouped_by_family_then_depth_with_defaults_first():
    choices = views.model_choices()
    entries = [registry.get(tag) for _, tag in choices]
    assert len(choices) == sum(e.has_imagenet_head for e in registry.load())
    keys = [(e.family != "resnet", e.depth) for e in entries]
    assert keys == sorted(keys)
    firsts = {}
    for e in entries:
        firsts.setdefault(e.arch, e)
    assert all(e.is_default for e in firsts.values())
    label, tag = choices[0]
    assert tag == "resnet18.a1_in1k" and label.startswith("ResNet-18 · a1_in1k ★")
    assert views.arch_title("resnext101_32x8d") == "ResNeXt-101 32x8d"


def test_card_says_what_it_costs_scores_and_where_its_weights_are(resnet18_file):
    entry = registry.get("resnet50")
    text = views.card(entry)
    assert entry.name in text and "25.56 M" in text and f"{entry.top1:.2f}%" in text
    assert "apache-2.0" in text and "centre-crop 288 px" in text and "not on this machine" in text
    weights.import_file(resnet18_file, "resnet18.tv_in1k")
    assert "on this machine (weight store)" in views.card(registry.get("resnet18.tv_in1k"))


def test_banner_names_missing_weights_and_how_to_get_them(resnet18_file, monkeypatch):
    tags = compare.default_tags()
    text = views.banner(tags)
    assert all(f"`{t}`" in text for t in tags) and "download from the Hugging Face Hub" in text
    assert "python -m zoo" not in text and "/tmp" not in text
    weights.import_file(resnet18_file, tags[0])
    assert f"`{tags[0]}`" not in views.banner(tags)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from zoo.settings import Settings

    assert "cannot be reached" in views.banner(tags, Settings.from_env())
    assert views.banner(tags[:1]) == ""


def test_top_label_keeps_classes_that_share_a_name_apart():
    labels = inference.imagenet_labels()
    cranes = [lb for lb in labels if lb.name == "crane"]
    assert len(cranes) == 2
    pred = inference.Prediction("x", tuple(inference.Scored(lb, 0.4) for lb in cranes), 1.0, 1, "b", "cpu")
    assert set(views.top_label(pred)) == {f"crane ({lb.synset})" for lb in cranes}


def test_zoo_table_has_every_tag_and_filters_by_words():
    table = views.zoo_table()
    assert list(table.columns) == views.ZOO_COLUMNS and len(table) == len(registry.load())
    row = table[table["model"] == "resnet50.a1_in1k ★"].iloc[0]
    entry = registry.get("resnet50.a1_in1k")
    assert row["top-1"] == entry.top1 and row["IN-R top-1"] == entry.result("imagenet-r").top1
    assert row["local"] == "no"
    assert set(views.zoo_table("resnext ig1b")["family"]) == {"resnext"}


def test_zoo_table_sorts_by_each_order_it_offers():
    best = views.zoo_table(sort="published top-1, best first")["top-1"].tolist()
    known = [v for v in best if v == v]  # NaN (no published result) sorts last
    assert known == sorted(known, reverse=True) and len(known) > 50 and best[: len(known)] == known
    assert views.zoo_table(sort="GMACs, cheapest first")["GMACs"].is_monotonic_increasing
    assert views.zoo_table(sort="parameters, fewest first")["params (M)"].is_monotonic_increasing
    per = views.zoo_table(sort="top-1 per GMAC, best first").dropna(subset=["top-1"])
    ratio = (per["top-1"] / per["GMACs"]).tolist()
    assert ratio == sorted(ratio, reverse=True)
    assert views.zoo_table(sort=views.ZOO_SORT_DEFAULT)["model"].tolist() == views.zoo_table()["model"].tolist()
    with pytest.raises(InvalidArgumentError, match="Sort by one of"):
        views.zoo_table(sort="colour")


def test_architecture_views_are_computed_from_the_real_models():
    archs = [architecture.describe(a) for a in ("resnet50", "resnext50_32x4d")]
    table = arch_views.stage_table(archs)
    r50 = table[table["network"] == "ResNet-50"]
    assert list(r50[r50["stage"].str.startswith("conv")]["blocks"]) == [3, 4, 6, 3]
    assert r50[r50["stage"] == "total"]["params (M)"].item() == round(archs[0].params / 1e6, 2)
    facts = arch_views.block_facts()
    assert "1,179,648" in facts and "69,632" in facts and "94% fewer" in facts
    shortcuts = arch_views.shortcut_facts(archs[0])
    assert "12 identity" in shortcuts and "4 projection" in shortcuts and "ResNet v1.5" in shortcuts
    groups = arch_views.resnext_facts(archs)
    assert "32 groups" in groups and "conv2_x: 32 × 4 = 128" in groups
    assert "Pick a ResNeXt" in arch_views.resnext_facts(archs[:1])


def test_user_errors_show_the_message_and_hide_the_rest():
    @user_errors
    def zoo_fails():
        raise WeightsUnavailableError("resnet50.a1_in1k is not here; fetch it")

    @user_errors
    def bug():
        raise KeyError("secret internals")

    with pytest.raises(gr.Error, match="fetch it"):
        zoo_fails()
    with pytest.raises(gr.Error) as info:
        bug()
    assert "secret" not in str(info.value) and "server log" in str(info.value)


def test_user_errors_wrap_streaming_handlers_too():
    @user_errors
    def stream():
        yield "first update"
        raise WeightsUnavailableError("resnet50.a1_in1k is not here; fetch it")

    updates = stream()
    assert next(updates) == "first update"  # still a generator: Gradio streams it
    with pytest.raises(gr.Error, match="fetch it"):
        next(updates)


def test_gpu_wrapper_is_spaces_gpu_when_installed_and_a_no_op_off_zerogpu(monkeypatch):
    import spaces  # installed by requirements-dev.txt, as on a Space

    def f(x):
        return x + 1

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert accel.spaces is spaces and accel.gpu(f)(1) == 2  # spaces.GPU off ZeroGPU hands back f
    monkeypatch.setattr(accel, "spaces", None)
    assert accel.gpu(f) is f


# -- the live app through gradio_client ------------------------------------------------------------
def _labelled_zip(tmp_path: Path) -> Path:
    path = tmp_path / "labelled.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("tabby/chelsea.jpg", CAT.read_bytes())
        z.writestr("n07920052/coffee.jpg", COFFEE.read_bytes())  # espresso, by synset
        z.writestr("tabby/broken.jpg", b"not an image")
    return path


@pytest.fixture
def client(live_zoo):
    return Client(live_zoo.url, verbose=False, analytics_enabled=False, download_files=False)


@pytest.mark.slow
def test_every_named_endpoint_answers_with_real_outputs(client, live_zoo, local_hub, tmp_path):
    named = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    expected = {"/classify", "/explain", "/model_card", "/compare", "/evaluate", "/architecture", "/catalog",
                "/zoo_card", "/fetch", "/train", "/runs", "/delete_run", "/degradation",
                "/degradation_result", "/delete_degradation", "/degradation_runs"}
    assert named == expected
    cat = handle_file(str(CAT))
    tag = LIVE_TAGS[0]

    direct = inference.classify([str(CAT)], tag)[0][0]
    label, timing, status = client.predict(cat, tag, api_name="/classify")
    assert status == ""
    assert [c["label"] for c in label["confidences"]] == [s.label.name for s in direct.top]
    probs = [c["confidence"] for c in label["confidences"]]
    assert probs == pytest.approx([s.probability for s in direct.top], abs=1e-5)
    assert "ms** forward pass on cpu" in timing

    explain = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/explain"]
    assert [p["parameter_name"] for p in explain["parameters"]] == ["image", "model"]  # no status line to pass
    overlay, gallery, note, status = client.predict(cat, tag, api_name="/explain")  # the row: no output here
    size = registry.get(tag).eval_size
    assert Image.open(io.BytesIO(httpx.get(overlay["url"], timeout=10).content)).size == (size, size)
    assert len(gallery) == 4 and gallery[0]["caption"].startswith("conv2_x (layer1): 64 channels")
    assert f"Grad-CAM for **{direct.top[0].label.name}**" in note

    assert tag in client.predict(tag, api_name="/model_card")

    table, agree, cost, speed, status = client.predict(cat, list(LIVE_TAGS), api_name="/compare")
    assert [row[0] for row in table["data"]] == list(LIVE_TAGS) and table["headers"] == views.COMPARE_COLUMNS
    assert "of 2" in agree and "Classes in every model's top-5" in agree
    compared = [row for row in cost["data"] if row[-1] == "compared"]
    assert {row[0] for row in compared} == set(LIVE_TAGS) and len(cost["data"]) > 60
    assert {row[0] for row in speed["data"]} == set(LIVE_TAGS)

    zipped = handle_file(str(_labelled_zip(tmp_path)))
    scores, dataset, _ = client.predict(zipped, list(LIVE_TAGS), api_name="/evaluate")
    assert [row[1] for row in scores["data"]] == [2, 2]  # two readable images per model
    assert "2 images in 2 classes" in dataset and "broken.jpg" in dataset

    stages, drawing, shortcuts, groups, _ = client.predict(["resnext50_32x4d", "resnet18"], 224, False,
                                                           api_name="/architecture")
    rows = {(r[0], r[1]): r for r in stages["data"]}
    assert rows[("ResNeXt-50 32x4d", "conv4_x")][2] == 6 and drawing.count('class="network"') == 2
    assert drawing.index("ResNeXt-50") < drawing.index("ResNet-18")  # in the order chosen
    assert client.predict(["resnet34"], 224, True, api_name="/architecture")[1].count('class="network"') == 2
    assert "32 groups" in groups and "3 projection" in shortcuts

    assert len(client.predict(api_name="/catalog")["data"]) == len(registry.load())
    zoo_card, _ = client.predict(tag, api_name="/zoo_card")
    assert "weight store" in zoo_card and f"(/api/models/{tag}/weights)" in zoo_card
    assert httpx.head(f"{live_zoo.url}/api/models/{tag}/weights").status_code == 200  # the link works

    missing = registry.get("resnet34.tv_in1k")
    local_hub.add(missing.hf_hub_id, missing.hf_filename, _resnet_bytes("resnet34"))
    card, catalog, _ = client.predict(missing.name, api_name="/fetch")
    assert weights.where(missing) == "store" and "weight store" in card
    assert next(r for r in catalog["data"] if r[0] == missing.name)[-1] == "store"

    choices, compare_choices, lab_choices = client.predict(api_name="/model_choices")
    assert [list(c) for c in views.model_choices()] == choices["choices"] == compare_choices["choices"]  # no runs
    assert lab_choices["choices"] == compare_choices["choices"]

    # the transfer lab: train on the built-in digits, then use, inspect and delete the run
    status, curves, grid, trade, confusion, per_class, stored = client.predict(
        source=transfer_tab.DIGITS, tags=[tag], strategies=["linear"], epochs=2, size=32, api_name="/train")
    assert "10 classes, 1438 training and 359 validation images" in status and "Best:" in status
    assert [r[:2] for r in grid["data"]] == [[tag, "linear"]] and curves.count("<polyline") == 1  # 2 epochs: a line
    assert tag in curves and curves.startswith("<svg")
    assert [row[2] for row in trade["data"]] == ["linear"]
    run_id = grid["data"][0][-1]
    assert stored["data"][0][0] == run_id and [row[0] for row in per_class["data"]] == [str(d) for d in range(10)]
    assert len(confusion["data"]) == 10 and sum(sum(row[1:]) for row in confusion["data"]) == 359
    picker, _, _ = client.predict(api_name="/model_choices")  # what the page's pickers now offer
    assert any(value == run_id for _, value in picker["choices"])
    label, timing, _ = client.predict(cat, run_id, api_name="/classify")
    assert {c["label"] for c in label["confidences"]} <= {str(d) for d in range(10)} and "fine-tuned" in timing
    assert "Fine-tuned from" in client.predict(run_id, api_name="/model_card")
    assert client.predict(api_name="/runs")["data"][0][0] == run_id
    _, removed = client.predict(run_id, api_name="/delete_run")
    assert run_id in removed and client.predict(api_name="/runs")["data"] == []
    assert "No stored run" in client.predict(run_id, api_name="/delete_run")[1]

    banner, guide = client.predict(api_name="/status")
    assert "resnet50.a1_in1k" in banner and "python -m zoo" not in banner
    assert all(f'api_name="{name}"' in guide for name in expected) and live_zoo.url in guide


@pytest.mark.slow
def test_why_residual_trains_side_by_side_then_recalls_and_deletes_the_result(client):
    from zoo.degradation import results
    from zoo.ui.degradation_tab import DATA_DIGITS

    args = (DATA_DIGITS, None, [20], "A", 1, 8, False)
    status, curves, table, responses, grads, stored, key = client.predict(*args, api_name="/degradation")
    assert "**digits**: 1438 training and 359 validation images at 8 px" in status
    assert "ResNet-20 ends with" in status and "Stored as" in status
    assert ET.fromstring(curves).tag.endswith("svg") and "plain-20" in curves and "stroke-dasharray" in curves
    assert [row[0] for row in table["data"]] == ["plain-20", "ResNet-20"]
    assert "Figure 7" in responses and grads.count("<svg") == 2
    assert stored["data"][0][0] == key and results.get(key) is not None
    again = client.predict(*args, api_name="/degradation")
    assert "stored result" in again[0] and again[-1] == key and again[2] == table
    assert client.predict(key, api_name="/degradation_result")[2] == table
    assert client.predict(api_name="/degradation_runs")["data"][0][0] == key
    remaining, removed = client.predict(key, api_name="/delete_degradation")
    assert key in removed and remaining["data"] == [] and results.get(key) is None
    # a failure is one sentence in the status line, every other output left as it was (no red badge, no toast)
    failed = client.predict(DATA_DIGITS, None, [], "A", 1, 8, False, api_name="/degradation")
    def unchanged(value) -> bool:  # gr.skip() as a client receives it
        return isinstance(value, dict) and value.get("__type__") == "update" and "value" not in value

    assert failed[0] == "⚠️ Pick at least one depth." and all(map(unchanged, failed[1:]))
    remaining, removed = client.predict(key, api_name="/delete_degradation")
    assert removed.startswith("⚠️ No stored experiment") and unchanged(remaining)
    assert "Pick a stored experiment first" in client.predict("", api_name="/degradation_result")[0]


@pytest.mark.slow
def test_errors_reach_the_client_as_one_sentence_in_the_status_output(client, tmp_path):
    assert "Upload an image first" in client.predict(None, LIVE_TAGS[0], api_name="/classify")[-1]
    assert "Did you mean resnet50" in client.predict(handle_file(str(CAT)), "resnet51", api_name="/classify")[-1]
    missing = client.predict(handle_file(str(CAT)), "resnet50", api_name="/classify")[-1]
    assert "resnet50.a1_in1k" in missing and "cannot be reached" in missing and "python -m zoo" not in missing
    fake = tmp_path / "notes.jpg"
    fake.write_text("not a picture")
    refused = client.predict(handle_file(str(fake)), LIVE_TAGS[0], api_name="/classify")[-1]
    assert refused.startswith("⚠️ notes.jpg: ") and "not an image" in refused and "/tmp" not in refused
    assert "Tick at least one network" in client.predict([], 224, False, api_name="/architecture")[-1]
    assert "no model called 'resnt50'" in client.predict("resnt50", api_name="/fetch")[-1]


def _resnet_bytes(arch: str) -> bytes:
    import timm
    import torch
    from safetensors.torch import save

    torch.manual_seed(0)
    return save(timm.create_model(arch, pretrained=False).state_dict())


def test_api_guide_is_generated_from_the_real_routes():
    demo = ui.build_demo()
    from zoo.api import router

    text = apidoc.render(demo.get_api_info(), router.routes, "http://zoo.example:7860/")
    for name in demo.get_api_info()["named_endpoints"]:
        assert f'api_name="{name}"' in text and f"/gradio_api/call{name}" in text
    assert "`/healthz`" in text and "curl -s http://zoo.example:7860/healthz" in text
    assert "pick_row" not in text  # private UI-only events stay out

