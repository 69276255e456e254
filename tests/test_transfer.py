"""The transfer lab: strategies train only what they should, digits beat chance, hostile zips are refused,
runs reload in a fresh process and are served by the API, torchrun matches one process."""

from __future__ import annotations

import itertools
import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from zoo import archives, weights
from zoo.errors import InvalidDatasetError
from zoo.settings import REPO_ROOT
from zoo.transfer import data, heads, lab, runs
from zoo.transfer.fit import FitConfig, fit, lr_factor
from zoo.transfer.metrics import score

TAG = "resnet18.tv_in1k"  # a small tag; its weights here are a seeded random init (the Hub is out of reach)
CAT = (REPO_ROOT / "examples" / "chelsea.jpg").read_bytes()
COFFEE = (REPO_ROOT / "examples" / "coffee.jpg").read_bytes()


@pytest.fixture
def stored(resnet18_file):
    weights.import_file(resnet18_file, TAG)


@pytest.fixture(scope="module")
def digits():
    return data.digits()


# -- strategies ------------------------------------------------------------------------------------
def _tiny(strategy: str, classes: int = 3) -> heads.Transfer:
    import timm

    torch.manual_seed(0)
    return heads.Transfer(timm.create_model("test_resnet"), strategy, classes)


def _bn_stats(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: b.clone() for n, b in module.named_buffers() if "running" in n}


@pytest.mark.parametrize("strategy", heads.STRATEGIES)
def test_each_strategy_trains_only_what_it_should(strategy):
    model = _tiny(strategy)
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


def test_lr_schedule_warms_up_then_follows_a_cosine():
    values = [lr_factor(s, 100, 10) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0) and values[55] == pytest.approx(0.5, abs=0.02)
    assert all(a >= b for a, b in itertools.pairwise(values[10:])) and values[-1] < 0.001


def test_scores_match_scikit_learn():
    from sklearn.metrics import confusion_matrix, f1_score

    torch.manual_seed(0)
    logits, labels = torch.randn(200, 4), torch.randint(0, 4, (200,))
    s = score(logits, labels, 4)
    pred = logits.argmax(1).numpy()
    assert s.macro_f1 == pytest.approx(f1_score(labels.numpy(), pred, average="macro"))
    assert s.confusion == confusion_matrix(labels.numpy(), pred, labels=range(4)).tolist()


# -- on the built-in digits --------------------------------------------------------------------------
def test_digits_are_the_real_scikit_learn_digits_split_by_class(digits):
    assert len(digits.train) + len(digits.val) == 1797 and digits.classes == [str(i) for i in range(10)]
    counts = digits.counts()
    assert all(abs(v / (t + v) - 0.2) < 0.02 for t, v in counts.values())
    assert data.digits().fingerprint == digits.fingerprint and data.digits(seed=1).fingerprint != digits.fingerprint


@pytest.mark.slow
def test_linear_probe_and_full_finetune_beat_chance_and_repeat_exactly(stored, digits):
    probe = lab.train(digits, TAG, "linear", FitConfig(epochs=10), size=64)
    assert probe.scores.top1 > 0.5 and not probe.features_cached  # chance is 0.1
    again = lab.train(digits, TAG, "linear", FitConfig(epochs=10), size=64)
    assert again.features_cached and again.feature_seconds == 0.0
    assert again.scores.top1 == probe.scores.top1 and again.history.epochs == probe.history.epochs
    full = lab.train(digits, TAG, "full", FitConfig(epochs=4, lr=3e-3), size=32)
    assert full.scores.top1 > 0.5 and full.trainable_params > 11_000_000


# -- hostile uploads ---------------------------------------------------------------------------------
def _zip(path: Path, members: dict[str, bytes], tweak=None, method=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as z:
        for name, payload in members.items():
            info = zipfile.ZipInfo(name)
            if tweak:
                tweak(info)
            z.writestr(info, payload, method)
    return path


def _good() -> dict[str, bytes]:
    return {"cat/a.jpg": CAT, "cat/b.jpg": CAT, "cup/a.jpg": COFFEE, "cup/b.jpg": COFFEE}


def _encrypted(path: Path) -> Path:
    """Mark every member as encrypted (bit 0 of the flags, in local and central headers), as a password tool does."""
    raw = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.find(signature)
        while at != -1:
            raw[at + offset] |= 0x1
            at = raw.find(signature, at + 4)
    path.write_bytes(bytes(raw))
    return path


def _hostile(tmp: Path) -> dict[str, tuple[Path, str]]:
    def symlink(info):
        info.external_attr = (stat.S_IFLNK | 0o777) << 16

    bomb = _zip(tmp / "bomb.zip", {**_good(), "cat/bomb.png": b"\0" * (50 * 2**20)})
    truncated = tmp / "truncated.zip"
    truncated.write_bytes(_zip(tmp / "whole.zip", _good()).read_bytes()[:300])
    crc = _zip(tmp / "crc.zip", _good(), method=zipfile.ZIP_STORED)
    raw = bytearray(crc.read_bytes())
    raw[raw.find(COFFEE[2000:2016]) + 5] ^= 0xFF  # one flipped bit of stored data: its CRC-32 no longer matches
    crc.write_bytes(bytes(raw))
    return {
        "zip slip": (_zip(tmp / "slip.zip", {**_good(), "../evil.jpg": CAT}), "unsafe member name"),
        "absolute": (_zip(tmp / "abs.zip", {**_good(), "/tmp/evil.jpg": CAT}), "unsafe member name"),
        "drive letter": (_zip(tmp / "drive.zip", {**_good(), "C:/evil.jpg": CAT}), "unsafe member name"),
        "backslashes": (_zip(tmp / "bs.zip", {**_good(), "..\\..\\evil.jpg": CAT}), "unsafe member name"),
        "symlink": (_zip(tmp / "link.zip", {"cat/a.jpg": b"/etc/passwd"}, symlink), "symbolic link"),
        "encrypted": (_encrypted(_zip(tmp / "enc.zip", _good())), "encrypted"),
        "bomb": (bomb, "zip bomb"),
        "truncated": (truncated, "not a readable zip"),
        "corrupt member": (crc, "corrupt"),
        "one class": (_zip(tmp / "one.zip", {"cat/a.jpg": CAT, "cat/b.jpg": CAT}), "at least 2"),
        "empty class": (_zip(tmp / "thin.zip", {**_good(), "dog/broken.jpg": b"not an image"}), "too few"),
    }


def test_hostile_zips_are_refused_and_nothing_is_written_outside_the_job(tmp_path, monkeypatch):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    cases = _hostile(uploads)
    with data.job_folder():  # the parent of job folders exists from now on
        pass
    watched = tmp_path.parent  # everything the test could touch, but the job folders
    before = {p for p in watched.rglob("*") if "jobs" not in p.parts}
    for label, (path, message) in cases.items():
        with data.job_folder() as job, pytest.raises(InvalidDatasetError, match=message):
            data.load(path, job)
        assert not job.exists(), label  # the job's folder is gone afterwards
    after = {p for p in watched.rglob("*") if "jobs" not in p.parts}
    assert after == before
    assert not (tmp_path.parent / "evil.jpg").exists() and not Path("/tmp/evil.jpg").exists()

    monkeypatch.setattr(archives, "MAX_MEMBERS", 3)
    with data.job_folder() as job, pytest.raises(InvalidDatasetError, match="limit is 3"):
        data.load(_zip(uploads / "many.zip", _good()), job)
    monkeypatch.setattr(archives, "MAX_MEMBERS", 100_000)
    monkeypatch.setattr(archives, "MAX_UNPACKED", 1000)
    with data.job_folder() as job, pytest.raises(InvalidDatasetError, match="unpacks to more than"):
        data.load(_zip(uploads / "big.zip", _good()), job)


def test_a_good_zip_ignores_macos_and_hidden_files_and_lists_bad_images(tmp_path):
    path = _zip(tmp_path / "set.zip", {**{f"photos/{k}": v for k, v in _good().items()},
                                       "__MACOSX/photos/cat/._a.jpg": b"junk", "photos/cat/.hidden.jpg": b"junk",
                                       "photos/cup/broken.jpg": b"not a jpeg", "photos/cup/c.jpg": COFFEE})
    with data.job_folder() as job:
        ds = data.load(path, job)
    assert ds.classes == ["cat", "cup"] and ds.counts() == {"cat": (1, 1), "cup": (2, 1)}
    assert [p for p, _ in ds.skipped] == ["cup/broken.jpg"]


# -- runs: stored, reloaded, served ----------------------------------------------------------------
@pytest.mark.slow
def test_a_run_reloads_in_a_new_process_and_is_listed_and_downloadable(stored, digits, tmp_path):
    result = lab.train(digits, TAG, "mlp", FitConfig(epochs=3), size=32)
    model, record = runs.load_model(result.run_id)
    x = torch.stack([lab.images.preprocess(lab._pre(TAG, 32), ex.image) for ex in digits.val[:16]])
    with torch.no_grad():
        here = model(x)
    torch.save(x, tmp_path / "x.pt")
    script = ("import sys, torch; from zoo.transfer import runs\n"
              "m, _ = runs.load_model(sys.argv[1]); x = torch.load(sys.argv[2], weights_only=True)\n"
              "with torch.no_grad(): torch.save(m(x), sys.argv[3])\n")
    subprocess.run([sys.executable, "-c", script, result.run_id, str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                   check=True, cwd=REPO_ROOT, env=os.environ, timeout=120)
    assert torch.equal(torch.load(tmp_path / "y.pt", weights_only=True), here)
    assert record["val_top1"] == result.row()["val_top1"] and record["classes"] == digits.classes

    from app import build_app

    with TestClient(build_app()) as client:
        listed = client.get("/api/models", params={"q": result.run_id}).json()["models"]
        assert [(m["name"], m["kind"], m["base"]) for m in listed] == [(result.run_id, "finetuned", TAG)]
        card = client.get(f"/api/models/{result.run_id}").json()
        assert card["classes"] == digits.classes and card["strategy"] == "mlp"
        body = client.get(card["weights"]["download_url"])
        assert body.status_code == 200 and body.content == (runs.folder(result.run_id) / runs.MODEL_FILE).read_bytes()
        header = client.get(f"/api/models/{result.run_id}/header").json()
        assert json.loads(header["metadata"]["zoo.class_names"]) == digits.classes
    assert runs.delete(result.run_id) and not runs.exists(result.run_id)


@pytest.mark.slow
def test_torchrun_on_two_cpu_processes_matches_one_process(stored, tmp_path):
    args = ["-m", "zoo", "train", "--data", "digits", "--models", TAG, "--heads", "last-stage", "--epochs", "3",
            "--size", "32", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                         timeout=600, check=True)
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", *args], capture_output=True,
                         text=True, env=env, cwd=REPO_ROOT, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    single, ddp = json.loads(one.stdout)["runs"][0], json.loads(two.stdout)["runs"][0]
    assert single["val_top1"] > 50 and abs(single["val_top1"] - ddp["val_top1"]) <= 3.0
    assert len(runs.list_runs()) == 2  # one stored run per command: only the main process writes


def test_cli_trains_lists_and_deletes_runs(stored, capsys):
    from zoo.cli import main

    assert main(["train", "--data", "digits", "--models", TAG, "--heads", "linear,mlp", "--epochs", "2",
                 "--size", "32", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["strategy"] for r in out["runs"]] == ["linear", "mlp"] and out["classes"] == [str(d) for d in range(10)]
    assert out["runs"][1]["features_s"] == 0.0  # the mlp reused the linear probe's cached features
    assert main(["runs", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {r["id"] for r in listed} == {r["run"] for r in out["runs"]}
    assert main(["runs", "--rm", out["runs"][0]["run"]]) == 0 and len(runs.list_runs()) == 1
    assert main(["train", "--data", "digits", "--models", TAG, "--heads", "nonsense"]) == 2
    assert "Unknown head strategy" in capsys.readouterr().err


def test_a_cancelled_run_stops_and_leaves_the_model_as_it_was():
    import threading

    from zoo.transfer.fit import Cancelled

    model = _tiny("full")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cancel = threading.Event()
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 3, (32,))
    steps = []

    def on_step(report):
        steps.append(report)
        if report.step == 2:
            cancel.set()

    with pytest.raises(Cancelled):
        fit(model, model.param_groups(0.05, 0.1), (x, y, x[:4], y[:4]), FitConfig(epochs=3, batch_size=8, lr=0.05),
            device=torch.device("cpu"), callback=on_step, cancel=cancel)
    assert len(steps) == 2 and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_out_of_memory_retries_once_at_half_the_batch_then_says_what_to_do(monkeypatch):
    from zoo.errors import ZooError

    seen = []

    def fake_fit(target, groups, data, config, **kwargs):  # what torch raises when CUDA runs out of memory
        seen.append(config.batch_size)
        if len(seen) < limit:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return "trained"

    monkeypatch.setattr(lab, "fit", fake_fit)
    model = _tiny("linear")
    limit = 2
    assert lab._fit_with_retry(model.head, model, None, FitConfig(batch_size=64, lr=0.1), torch.device("cpu"),
                               None, None, lab.distributed.World()) == "trained"
    assert seen == [64, 32]
    seen.clear()
    limit = 3
    with pytest.raises(ZooError, match="Out of GPU memory at batch size 64 and again at 32"):
        lab._fit_with_retry(model.head, model, None, FitConfig(batch_size=64, lr=0.1), torch.device("cpu"),
                            None, None, lab.distributed.World())
