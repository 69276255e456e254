"""`python -m zoo` as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from zoo import registry
from zoo.cli import main
from zoo.settings import REPO_ROOT


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zoo", *args], cwd=REPO_ROOT, capture_output=True, text=True)


def test_info_shows_the_card_and_stage_table():
    out = run_cli("info", "resnet50.a1_in1k")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for needle in ["[3, 4, 6, 3]", "25.56 M", "4.11 at 224 px", "6.80 at 288 px", "top-1 80.382", "at 224 px",
                   "top-1 81.240", "at 288 px", "apache-2.0", "(default for resnet50)"]:  # fmt: skip
        assert needle in text, needle
    stage_rows = [line.split()[0] for line in text.splitlines() if line.startswith(("stem", "conv", "head"))]
    assert stage_rows == ["stem", "conv2_x", "conv3_x", "conv4_x", "conv5_x", "head"]
    assert "projection 1x1/1 (64->256)" in text and "stride 2 on conv2 (3x3)" in text


def test_unknown_name_exits_non_zero_with_suggestions():
    out = run_cli("info", "resnt50")
    assert out.returncode != 0
    assert "Did you mean: resnet50" in out.stderr and out.stdout == ""


def test_list_table_marks_defaults_and_local_weights(tmp_path: Path, capsys, resnet18_file):
    stray = tmp_path / "weights" / "resnet18.a1_in1k"
    stray.mkdir(parents=True)
    (stray / "model.safetensors").write_bytes(b"x")  # no record: not a complete, verified weight
    assert main(["import", str(resnet18_file), "--name", "resnet18.tv_in1k"]) == 0
    capsys.readouterr()
    assert main(["list", "--depth", "18"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header[:2] == ["name", "depth"] and header[-1] == "local"
    rows = {line.split()[0]: line for line in lines[2:] if line.startswith("resnet18.")}
    assert len(rows) == len(registry.list_models(depth=18))
    assert rows["resnet18.a1_in1k"].split()[1] == "*"  # the default
    assert rows["resnet18.tv_in1k"].endswith("yes") and rows["resnet18.a1_in1k"].endswith("-")


def test_list_json_is_machine_readable(capsys):
    assert main(["list", "--json", "--family", "resnext", "--pretrain", "in1k", "gluon"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in data] == [
        "resnext50_32x4d.gluon_in1k", "resnext101_32x4d.gluon_in1k", "resnext101_64x4d.gluon_in1k",
    ]  # fmt: skip
    assert all(d["local"] is False and isinstance(d["top1"], float) for d in data)


def test_info_json_includes_the_architecture(capsys):
    assert main(["info", "resnext50_32x4d", "--json", "--resolution", "160"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == "resnext50_32x4d.a1h_in1k" and data["architecture"]["resolution"] == 160
    assert [s["name"] for s in data["architecture"]["stages"]] == ["conv2_x", "conv3_x", "conv4_x", "conv5_x"]


def test_bad_resolution_is_a_clear_error(capsys):
    assert main(["info", "resnet18", "--resolution", "8"]) == 2
    assert "out of range" in capsys.readouterr().err


@pytest.mark.slow
def test_fetch_verify_import_rm_as_a_user_runs_them(local_hub, resnet18_file, tmp_path):
    served = local_hub.add("timm/resnet18.tv_in1k", "model.safetensors", resnet18_file.read_bytes())
    out = run_cli("fetch", "resnet18.tv_in1k", "resnet34.tv_in1k")
    assert out.returncode == 1  # the second tag is not on this Hub: reported, the first still fetched
    assert f"resnet18.tv_in1k: 46.8 MB, sha256 {served.sha256[:16]}, from hub" in out.stdout
    assert "resnet34.tv_in1k: FAILED" in out.stderr and "python -m zoo import FILE" in out.stderr

    assert run_cli("verify").stdout.startswith("resnet18.tv_in1k: ok (46,807,448 bytes")
    stored = tmp_path / "weights" / "blobs" / served.sha256
    blob = bytearray(stored.read_bytes())
    blob[-1] ^= 1
    stored.unlink()  # break the hard link to the HF cache blob before damaging the copy
    stored.write_bytes(bytes(blob))
    out = run_cli("verify", "resnet18.tv_in1k")
    assert out.returncode == 1 and "CORRUPT" in out.stdout and ".corrupt" in out.stdout
    assert not stored.exists() and len(list((tmp_path / "weights" / ".corrupt").glob("*.safetensors"))) == 1

    out = run_cli("import", str(resnet18_file), "--name", "resnet18.tv_in1k")
    assert out.returncode == 0 and "imported" in out.stdout
    out = run_cli("import", str(resnet18_file), "--name", "resnet50.a1_in1k")
    assert out.returncode == 2 and "does not fit the architecture" in out.stderr
    assert run_cli("rm", "resnet18.tv_in1k").stdout.strip() == "resnet18.tv_in1k: removed"
    assert run_cli("rm", "resnet18.tv_in1k").returncode == 1


@pytest.fixture
def r18_stored(resnet18_file):
    from zoo import weights

    weights.import_file(resnet18_file, "resnet18.tv_in1k")
    weights.import_file(resnet18_file, "resnet18.a1_in1k")


def test_predict_compare_eval_explain_from_the_command_line(r18_stored, tmp_path, capsys):
    from tests import imagecorpus as corpus

    img = tmp_path / "photo.jpg"
    corpus.scene(320, 240).save(img, quality=95)
    assert main(["predict", str(img), "-m", "resnet18.tv_in1k", "-k", "3", "--json", "--backend", "eager"]) == 0
    out = json.loads(capsys.readouterr().out)
    top = out[0]["predictions"][0]["top"]
    assert out[0]["image"] == str(img) and len(top) == 3 and top[0]["synset"].startswith("n")
    assert main(["predict", str(img), "-m", "resnet18.tv_in1k", "--backend", "eager"]) == 0
    text = capsys.readouterr().out
    assert top[0]["label"] in text and "eager-cpu-fp32" in text

    assert main(["compare", str(img), "--models", "resnet18.tv_in1k", "resnet18.a1_in1k", "--backend", "eager"]) == 0
    text = capsys.readouterr().out
    assert "resnet18.a1_in1k" in text and "pub. top-1" in text and "in every top-5" in text
    assert main(["compare", str(img), "--models", "resnet18.tv_in1k", "--json", "--backend", "eager"]) == 0
    assert json.loads(capsys.readouterr().out)["scatter"][0]["model"] == "resnet18.tv_in1k"

    folder = tmp_path / "set" / top[0]["synset"]
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes(img.read_bytes())
    assert main(["eval", str(tmp_path / "set"), "--models", "resnet18.tv_in1k", "--json", "--backend", "eager"]) == 0
    score = json.loads(capsys.readouterr().out)["scores"][0]
    assert (score["images"], score["top1"], score["top5"]) == (1, 100.0, 100.0)

    assert main(["explain", str(img), "-m", "resnet18.tv_in1k", "--out", str(tmp_path / "x"), "--channels", "2"]) == 0
    assert (tmp_path / "x" / "gradcam.png").exists() and "Grad-CAM" in capsys.readouterr().out


def test_inference_commands_fail_with_a_clear_message(r18_stored, tmp_path, capsys):
    from tests import imagecorpus as corpus

    bad = tmp_path / "fake.jpg"
    bad.write_bytes(b"not really a jpeg")
    assert main(["predict", str(bad), "-m", "resnet18.tv_in1k", "--backend", "eager"]) == 2
    assert f"{bad}: This file is not an image in an accepted format" in capsys.readouterr().err
    good = tmp_path / "good.png"
    good.write_bytes(corpus.encode(corpus.scene(), "PNG"))
    assert main(["predict", str(good), "-m", "resnet34.tv_in1k"]) == 2
    assert "python -m zoo fetch resnet34.tv_in1k" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing"), "--models", "resnet18.tv_in1k"]) == 2
    assert "does not exist" in capsys.readouterr().err
