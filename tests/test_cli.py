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
    stored = tmp_path / "weights" / "resnet18.tv_in1k" / "model.safetensors"
    blob = bytearray(stored.read_bytes())
    blob[-1] ^= 1
    stored.unlink()  # break the hard link to the HF cache blob before damaging the copy
    stored.write_bytes(bytes(blob))
    out = run_cli("verify", "resnet18.tv_in1k")
    assert out.returncode == 1 and "CORRUPT" in out.stdout and ".corrupt" in out.stdout
    assert not stored.exists() and len(list((tmp_path / "weights" / ".corrupt").iterdir())) == 1

    out = run_cli("import", str(resnet18_file), "--name", "resnet18.tv_in1k")
    assert out.returncode == 0 and "imported" in out.stdout
    out = run_cli("import", str(resnet18_file), "--name", "resnet50.a1_in1k")
    assert out.returncode == 2 and "does not fit the architecture" in out.stderr
    assert run_cli("rm", "resnet18.tv_in1k").stdout.strip() == "resnet18.tv_in1k: removed"
    assert run_cli("rm", "resnet18.tv_in1k").returncode == 1
