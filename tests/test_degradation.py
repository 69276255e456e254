"""The degradation lab: the paper's nets, lockstep training that repeats exactly, measurements, stored results,
data sources (digits, zips, CIFAR-10 through a local Hub), the CLI, and the default experiment's outcome."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import stat
import xml.etree.ElementTree as ET
import zipfile

import pytest
import torch

from zoo import cli
from zoo.degradation import data, experiment, lab, nets, report, results
from zoo.errors import Cancelled, InvalidArgumentError, WeightsUnavailableError

TINY = experiment.Config(depths=(8, 14), epochs=2, size=8, batch_size=64, limit=256)


@pytest.mark.parametrize(("depth", "millions"), [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7)])
def test_nets_have_the_papers_depths_and_parameter_counts(depth, millions):
    plain, res = nets.build(depth, False), nets.build(depth, True)
    assert plain.params() == res.params()  # option A adds no parameters
    assert round(res.params() / 1e6, 2 if depth < 100 else 1) == millions  # Table 6's "# params"
    weighted = [m for m in res.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert len(weighted) == depth and len(res.convs()) == len(res.responses()) == depth - 1
    assert res(torch.randn(2, 3, 16, 16)).shape == (2, 10) and (plain.name, res.name) == (f"plain-{depth}",
                                                                                        f"ResNet-{depth}")


@pytest.mark.parametrize("depth", [7, 9, 0, 13])
def test_depths_that_are_not_6n_plus_2_are_refused_with_the_valid_ones(depth):
    with pytest.raises(InvalidArgumentError, match=r"6n\+2.*20, 32, 44"):
        nets.build(depth, True)


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_plain_and_residual_twins_start_from_the_same_weights(shortcut):
    plain = nets.build(14, False, shortcut=shortcut, seed=3).state_dict()
    res = nets.build(14, True, shortcut=shortcut, seed=3).state_dict()
    shared = [k for k in plain if k in res]
    assert len(shared) == len(plain)
    assert all(torch.equal(plain[k], res[k]) for k in shared)
    assert (len(res) > len(plain)) == (shortcut == "B")  # B adds the two projections
    assert not torch.equal(plain["conv1.weight"], nets.build(14, False, seed=4).state_dict()["conv1.weight"])


def test_option_a_shortcut_subsamples_and_zero_pads_channels():
    block = nets.Block(16, 32, 2, residual=True, shortcut="A").eval()
    for bn in (block.bn1, block.bn2):  # make F(x) = 0, so the block outputs ReLU(shortcut(x))
        torch.nn.init.zeros_(bn.weight)
    x = torch.rand(1, 16, 8, 8)
    out = block(x)
    assert out.shape == (1, 32, 4, 4)
    assert torch.equal(out[:, :16], x[:, :, ::2, ::2]) and not out[:, 16:].any()


def test_learning_rate_warms_up_then_drops_tenfold_at_the_milestones():
    cfg = experiment.Config()
    lrs = [experiment.lr_at(s, 10, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.01) and lrs[5] == pytest.approx(0.055) and lrs[10:50] == [0.1] * 40
    assert lrs[50] == pytest.approx(0.01) and lrs[75] == pytest.approx(0.001) and lrs[-1] == pytest.approx(0.001)


@pytest.fixture(scope="module")
def tiny_run():
    """A small deterministic experiment on 256 digits at 8 px (about a second per epoch on 2 cores)."""
    return experiment.train(data.digits(8, limit=256), TINY, torch.device("cpu"))


def test_lockstep_training_records_every_step_and_repeats_exactly(tiny_run):
    r = tiny_run
    assert [n.name for n in r.networks] == ["plain-8", "plain-14", "ResNet-8", "ResNet-14"]
    assert r.steps_per_epoch == 4 and r.steps == 8 and r.precision == "fp32" and r.device == "cpu"
    for n in r.networks:
        assert len(n.step_error) == len(n.step_loss) == 8 and len(n.epoch_val_error) == 2
        assert all(0 <= e <= 1 for e in n.step_error + n.epoch_val_error)
        assert n.train_error == n.epoch_train_error[-1] == pytest.approx(sum(n.step_error[4:]) / 4, abs=1e-4)
        assert len(n.response_std) == len(n.grad_norm_init) == len(n.grad_norm_trained) == n.depth - 1
        assert all(g > 0 and math.isfinite(g) for g in n.grad_norm_init + n.grad_norm_trained)
        assert n.grad_norm_init != n.grad_norm_trained  # trained weights see other gradients
    again = experiment.train(data.digits(8, limit=256), TINY, torch.device("cpu"))
    assert [n.step_loss for n in again.networks] == [n.step_loss for n in r.networks]
    assert [n.response_std for n in again.networks] == [n.response_std for n in r.networks]
    assert r.networks[0].step_loss != r.networks[2].step_loss  # the shortcuts make a difference
    assert len(experiment.findings(r)) == 4


def test_measuring_gradients_changes_nothing_in_the_network():
    net = nets.build(14, True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    from zoo.degradation import measure

    assert len(measure.gradient_norms(net, x, y)) == 13 and len(measure.response_std(net, x)) == 13
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())


def test_a_result_is_stored_recalled_at_once_listed_and_deleted(tiny_run):
    first = lab.run(TINY)
    assert first.stored and not first.cached and os.path.exists(first.stored)
    assert stat.S_IMODE(os.stat(first.stored).st_mode) == 0o644  # readable by a server running as another user
    assert [n.step_loss for n in first.networks] == [n.step_loss for n in tiny_run.networks]
    again = lab.run(TINY)  # same settings, same data: no training
    assert again.cached and again.key == first.key
    assert [n.to_dict() for n in again.networks] == [n.to_dict() for n in first.networks]
    assert lab.run(dataclasses.replace(TINY, shortcut="B"), store=False).key != first.key
    assert [r.key for r in results.list_results()] == [first.key]
    assert results.delete(first.key) and not results.delete(first.key) and results.list_results() == []
    with pytest.raises(InvalidArgumentError, match="not an experiment key"):
        results.get("../../etc/passwd")


def test_a_store_that_cannot_be_written_still_returns_the_whole_result(tmp_path, monkeypatch):
    blocker = tmp_path / "weights" / "degradation"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the folder should be")
    result = lab.run(dataclasses.replace(TINY, depths=(8,), epochs=1))
    assert result.stored is None and "not stored" in result.store_error
    assert len(result.networks) == 2 and len(result.networks[0].step_error) == 4
    assert not list(tmp_path.glob("weights/**/*.tmp"))


def test_non_finite_numbers_are_stored_as_null(tiny_run, tmp_path):
    diverged = dataclasses.replace(tiny_run.networks[0], train_error=math.nan, step_loss=[None] * 8)
    broken = dataclasses.replace(tiny_run, networks=[diverged, *tiny_run.networks[1:]])
    path = results.save(broken)
    text = path.read_text()
    assert "NaN" not in text and json.loads(text)["networks"][0]["train_error"] is None


def test_cancel_stops_between_steps(monkeypatch):
    import threading

    from zoo import residency

    trims = []
    monkeypatch.setattr(residency, "trim_soon", lambda: trims.append(1))
    stop = threading.Event()
    seen = []

    def callback(report):
        seen.append(report.step)
        if report.step == 2:
            stop.set()

    with pytest.raises(Cancelled):
        lab.run(TINY, callback=callback, cancel=stop)
    assert max(seen) == 2 and results.list_results() == []
    assert trims == [1]  # what training freed goes back to the system, cancelled or not (residency.tune_heap)


def test_settings_outside_the_range_are_refused_with_the_range():
    with pytest.raises(InvalidArgumentError, match="1 to 5 depths"):
        experiment.Config(depths=(8, 14, 20, 32, 44, 56))
    with pytest.raises(InvalidArgumentError, match="outside 8-64 px"):
        experiment.Config(size=4)
    with pytest.raises(InvalidArgumentError, match="not A"):
        experiment.Config(shortcut="C")


def _png(value: int, size=(12, 12)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (value, 255 - value, value // 2)).save(buf, "PNG")
    return buf.getvalue()


def test_a_zip_of_class_folders_trains_with_the_transfer_labs_checks(tmp_path):
    good = tmp_path / "shapes.zip"
    with zipfile.ZipFile(good, "w") as z:
        for c, base in (("dark", 20), ("light", 220)):
            for i in range(6):
                z.writestr(f"{c}/{i}.png", _png(base + i))
        z.writestr("light/notes.txt", b"not an image")
    result = lab.run(dataclasses.replace(TINY, data=str(good), depths=(8,), epochs=1), store=False)
    assert result.dataset["classes"] == ["dark", "light"] and result.dataset["train"] + result.dataset["val"] == 12
    assert not list((tmp_path / "weights" / ".cache" / "jobs").glob("*/*"))  # the job folder is gone
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../escape/0.png", _png(1))
    from zoo.errors import InvalidDatasetError

    with pytest.raises(InvalidDatasetError):
        lab.run(dataclasses.replace(TINY, data=str(evil)))


def _cifar_parquet(n: int, seed: int) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"bytes": _png((seed + 23 * i) % 256, (32, 32)), "path": None} for i in range(n)]
    table = pa.table({"img": rows, "label": [i % 10 for i in range(n)]})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def test_cifar10_comes_through_huggingface_hub_from_its_dataset_repo(local_hub):
    local_hub.add(f"datasets/{data.CIFAR_REPO}", data.CIFAR_FILES["train"], _cifar_parquet(40, 1))
    local_hub.add(f"datasets/{data.CIFAR_REPO}", data.CIFAR_FILES["test"], _cifar_parquet(20, 2))
    t = data.cifar10(16)
    assert t.x_train.shape == (40, 3, 16, 16) and t.x_val.shape == (20, 3, 16, 16)
    assert t.classes == data.CIFAR_CLASSES and t.y_train.tolist()[:11] == [*range(10), 0]
    assert local_hub.gets("datasets/uoft-cs/cifar10/resolve") == 2
    data.cifar10(16)  # the second time it comes from the HF cache
    assert local_hub.gets("datasets/uoft-cs/cifar10/resolve") == 2
    result = lab.run(dataclasses.replace(TINY, data="cifar10", depths=(8,), epochs=1, size=16), store=False)
    assert result.dataset["name"] == "cifar10" and result.dataset["train"] == 40


def test_cifar10_offline_says_what_to_use_instead(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from zoo import settings

    settings.get_settings.cache_clear()
    with pytest.raises(WeightsUnavailableError, match=r"use the built-in digits \(`--data digits`\) or a zip"):
        lab.run(dataclasses.replace(TINY, data="cifar10"))


def test_a_file_that_is_not_cifar10_is_refused(local_hub):
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"img": [{"bytes": b"GIF89a", "path": None}], "label": [3]}), buf)
    local_hub.add(f"datasets/{data.CIFAR_REPO}", data.CIFAR_FILES["train"], buf.getvalue())
    local_hub.add(f"datasets/{data.CIFAR_REPO}", data.CIFAR_FILES["test"], buf.getvalue())
    from PIL import UnidentifiedImageError

    from zoo.errors import InvalidDatasetError

    with pytest.raises((InvalidDatasetError, UnidentifiedImageError)):
        data.cifar10(16)


def test_charts_are_well_formed_svg_in_the_papers_style(tiny_run):
    for svg in (report.result_curves(tiny_run), report.responses(tiny_run),
                report.gradients(tiny_run, "init"), report.gradients(tiny_run, "trained"),
                report.block_diagram()):
        root = ET.fromstring(svg)
        assert root.tag.endswith("svg")
    curves = report.result_curves(tiny_run)
    assert curves.count('stroke-dasharray="6 4"') == 4  # two plain curves and their two legend lines
    assert "plain-14" in curves and "ResNet-14" in curves
    frame = report.table(tiny_run)
    assert list(frame["network"]) == ["plain-8", "plain-14", "ResNet-8", "ResNet-14"]
    assert report.smooth([1, 0, 1, 0], 2) == [1, 0.5, 0.5, 0.5]


def test_cli_prints_one_json_object_with_every_network_and_measurement(capsys, tmp_path):
    plot = tmp_path / "curves.svg"
    argv = ["degradation", "--data", "digits", "--depths", "8,14", "--epochs", "1", "--size", "8", "--limit", "128",
            "--batch-size", "32", "--json", "--plot", str(plot)]
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(n["name"], n["kind"], n["depth"]) for n in out["networks"]] == [
        ("plain-8", "plain", 8), ("plain-14", "plain", 14), ("ResNet-8", "residual", 8), ("ResNet-14", "residual", 14)]
    for n in out["networks"]:
        assert n["params"] > 0 and 0 <= n["train_error"] <= 1 and len(n["history"]["step_error"]) == 4
        assert len(n["response_std"]) == len(n["grad_norm_init"]) == len(n["grad_norm_trained"]) == n["depth"] - 1
    assert out["paper"]["rows"][0] == {"dataset": "ImageNet (top-1 error)", "network": "plain-18", "kind": "plain",
                                       "error %": 27.94, "source": "Table 2"}
    assert len(out["findings"]) == 4 and ET.parse(plot).getroot().tag.endswith("svg")
    assert cli.main(argv) == 0 and json.loads(capsys.readouterr().out)["cached"] is True
    assert cli.main(["degradation", "--list"]) == 0 and out["key"] in capsys.readouterr().out
    assert cli.main(["degradation", "--rm", out["key"]]) == 0 and cli.main(["degradation", "--rm", out["key"]]) == 1


def test_cli_refuses_bad_depths_with_a_one_line_message(capsys):
    assert cli.main(["degradation", "--depths", "21"]) == 2
    assert capsys.readouterr().err.startswith("error: Depth 21 is not 6n+2")


@pytest.mark.slow
@pytest.mark.timeout(1800)  # about 150 s on a quiet 2-core machine; much more when other jobs share the cores
def test_the_default_experiment_shows_the_degradation_problem():
    """The acceptance of the lab: fresh, offline, fixed seed, the default settings on this machine's CPU."""
    r = lab.run(experiment.Config(), device="cpu", store=False)
    p20, p56, r56 = (r.network(n) for n in ("plain-20", "plain-56", "ResNet-56"))
    assert p56.train_error > p20.train_error + 0.2  # deeper plain trains worse
    assert r56.train_error < p56.train_error - 0.2  # the residual twin trains clearly better
    assert all(p56.grad_norm_init[i] > 1e-3 for i in range(len(p56.grad_norm_init)))  # nothing vanishes


def test_a_diverging_network_is_recorded_stored_and_shown_without_breaking_anything(capsys):
    argv = ["degradation", "--depths", "8", "--epochs", "1", "--size", "8", "--limit", "128", "--batch-size", "32",
            "--lr", "1e20"]
    assert cli.main(argv) == 0  # the table prints even with NaN losses
    printed = capsys.readouterr().out
    assert "plain-8" in printed and "ResNet-8" in printed
    assert cli.main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert out["networks"][0]["grad_norm_trained"][0] is None
    stored = results.list_results()[0]
    assert any(v is None for n in stored.networks for v in n.step_loss)  # diverged: losses stored as null
    report.table(stored)
    ET.fromstring(report.result_curves(stored))
    ET.fromstring(report.responses(stored))
    ET.fromstring(report.gradients(stored, "trained"))


def test_a_cancel_at_the_last_step_keeps_nothing():
    import threading

    stop = threading.Event()

    def callback(report):
        if report.step == report.steps:
            stop.set()

    with pytest.raises(Cancelled):
        lab.run(dataclasses.replace(TINY, depths=(8,), epochs=1), callback=callback, cancel=stop)
    assert results.list_results() == []


def test_stored_files_of_the_wrong_shape_are_skipped_not_fatal(tiny_run, capsys):
    good = results.save(tiny_run)
    record = json.loads(good.read_text())
    for i, damage in enumerate(({"created": 5}, {"dataset": {}}, {"networks": [{"name": 3}]}, {"config": []})):
        (good.parent / f"{i:024x}.json").write_text(json.dumps({**record, **damage}))
    (good.parent / ("f" * 24 + ".json")).write_text("[]")
    assert [r.key for r in results.list_results()] == [tiny_run.key]
    assert cli.main(["degradation", "--list"]) == 0 and tiny_run.key in capsys.readouterr().out


@pytest.mark.parametrize(("option", "message"), [
    (["--lr", "nan"], "learning rate nan"), (["--lr", "inf"], "learning rate inf"),
    (["--seed", str(2**70)], "seed"), (["--limit", "1"], "keep at least 2"), (["--depths", "1208"], "deepest"),
    (["--batch-size", "1"], "batch size 1")])
def test_cli_refuses_values_that_cannot_train(option, message, capsys):
    assert cli.main(["degradation", "--depths", "8", *option]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_an_unwritable_plot_path_or_store_is_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    argv = ["degradation", "--depths", "8", "--epochs", "1", "--size", "8", "--limit", "64", "--batch-size", "32"]
    assert cli.main([*argv, "--plot", str(tmp_path / "no" / "such" / "dir.svg")]) == 2
    assert "could not write the plot" in capsys.readouterr().err
    good = tmp_path / "two.zip"
    with zipfile.ZipFile(good, "w") as z:
        for c in ("a", "b"):
            for i in range(3):
                z.writestr(f"{c}/{i}.png", _png(40 * i + (c == "b") * 120))
    blocked = tmp_path / "store-is-a-file"
    blocked.write_text("x")
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(blocked))
    from zoo import settings

    settings.get_settings.cache_clear()
    assert cli.main([*argv, "--data", str(good)]) == 2
    err = capsys.readouterr().err
    assert "error: Cannot unpack two.zip" in err and "set ZOO_WEIGHTS_DIR" in err and "Traceback" not in err


def test_cifar10_refuses_a_tiny_limit_and_a_damaged_cached_file(local_hub):
    with pytest.raises(InvalidArgumentError, match="keep at least 2"):
        data.cifar10(16, limit=1)
    local_hub.add(f"datasets/{data.CIFAR_REPO}", data.CIFAR_FILES["train"], b"PAR1 not really parquet PAR1")
    local_hub.add(f"datasets/{data.CIFAR_REPO}", data.CIFAR_FILES["test"], _cifar_parquet(20, 2))
    from zoo.errors import InvalidDatasetError

    with pytest.raises(InvalidDatasetError, match="not a readable CIFAR-10 parquet file"):
        data.cifar10(16)


def test_a_closed_hub_port_fails_at_once(monkeypatch):
    import time

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    from zoo import settings

    settings.get_settings.cache_clear()
    t = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="did not answer"):
        data.cifar10(16)
    assert time.perf_counter() - t < 10  # one quick question, not huggingface_hub's retries (30 s and more)
