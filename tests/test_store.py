"""The weight store's rules in one process: blobs and records, dead writers' leftovers, the identity-or-hash
rule, `verify` as a scrub that reports, the first layout migrated, 0644 files, clear errors, loaded models
dropped when their file goes. Crashes of real processes are in test_faults.py."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from zoo import catalog, durable, inference, integrity, weights
from zoo.checkpoint import sha256_file
from zoo.errors import StoreError, WeightsCorruptError, WeightsUnavailableError
from zoo.store import Record, Store
from zoo.transfer import runs

TAG = "resnet18.tv_in1k"


def flip_last_byte(path: Path) -> None:
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))


def test_a_tag_is_a_record_naming_a_content_addressed_blob_readable_by_all(resnet18_file):
    path = weights.import_file(resnet18_file, TAG)
    st = weights.store()
    sha = sha256_file(resnet18_file)
    assert path == st.root / "blobs" / sha and st.weights_path(TAG) == path
    record = json.loads((st.root / TAG / "record.json").read_text())
    assert record["sha256"] == sha and record["verified"] == list(integrity.identity(path.stat()))
    for p in (path, st.root / TAG / "record.json"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644
    weights.import_file(resnet18_file, "resnet18.a1_in1k")  # the same bytes: one blob, two records
    assert [p.name for p in (st.root / "blobs").iterdir()] == [sha]


def test_a_new_version_replaces_the_old_blob_only_once_its_record_is_in_place(resnet18_file, resnet18_v2_file):
    weights.import_file(resnet18_file, TAG)
    new = weights.import_file(resnet18_v2_file, TAG)
    st = weights.store()
    assert st.record(TAG).sha256 == sha256_file(resnet18_v2_file) == new.name
    assert [p.name for p in (st.root / "blobs").iterdir()] == [new.name]  # the old blob, no longer named, is gone
    assert st.remove(TAG) and not (st.root / TAG).exists() and not any((st.root / "blobs").iterdir())


def test_temp_files_of_dead_writers_go_and_live_ones_stay(resnet18_file, tmp_path):
    st = weights.store()
    weights.import_file(resnet18_file, TAG)
    blobs = st.root / "blobs"
    dead = [blobs / ".tmp.blob.99999.abc", st.root / TAG / ".tmp.record.99999.def", blobs / ".tmp.blob.1.x.link"]
    for p in dead:
        p.write_bytes(b"partial")  # nobody holds their locks: their writers are dead
    (st.root / "resnet50.a1_in1k").mkdir()  # a tag folder whose record never came
    with durable.TempFile(blobs, "blob") as live:
        st.tidy()
        assert live.path.exists()
    assert not any(p.exists() for p in dead) and not (st.root / "resnet50.a1_in1k").exists()
    assert st.verify(TAG)[0]


def test_a_file_changed_in_place_is_never_served_or_loaded(resnet18_file):
    path = weights.import_file(resnet18_file, TAG)
    st = weights.store()
    assert catalog.stored_file(TAG).sha256 == sha256_file(path)
    flip_last_byte(path)
    with pytest.raises(WeightsCorruptError, match=rf"{TAG} changed on disk.*moved to .*\.corrupt"):
        catalog.require_stored(TAG)
    [aside] = (st.root / ".corrupt").glob("*.safetensors")
    assert not path.exists() and sha256_file(aside) != path.name
    note = aside.with_name(aside.name + ".txt").read_text()  # beside it: what happened and what to do
    assert f"stored file of {TAG}" in note and path.name in note and sha256_file(aside) in note
    assert f"python -m zoo fetch {TAG}" in note and f"python -m zoo import FILE --name {TAG}" in note
    assert catalog.stored_file(TAG) is None  # the record stays: `verify` names what is missing
    assert catalog.card_for(TAG)["local"] is False and catalog.card_for(TAG)["weights"]["local"] is False
    ok, message = st.verify(TAG)
    assert not ok and message.startswith("MISSING") and f"import {TAG} again" in message
    assert "failed their SHA-256 check" in message and ".corrupt" in message  # was: "not in the store" only


def test_a_truncated_file_is_named_by_its_sizes_and_its_quarantine_is_logged(resnet18_file, caplog):
    path = weights.import_file(resnet18_file, TAG)
    size = path.stat().st_size
    os.truncate(path, 20_000)
    with caplog.at_level("WARNING", logger="zoo.store"), pytest.raises(WeightsCorruptError) as err:
        catalog.require_stored(TAG)
    assert f"changed on disk (it is now 20000 bytes, not {size})" in str(err.value)  # was "size 20000... instead
    assert any(TAG in r.getMessage() and "moved it to" in r.getMessage() for r in caplog.records)  # of sha256 ..."


def test_a_changed_identity_with_the_same_bytes_is_rehashed_and_trusted_again(resnet18_file):
    path = weights.import_file(resnet18_file, TAG)
    st = weights.store()
    os.chmod(path, 0o644)  # a new ctime, the same bytes
    before = st.record(TAG).verified
    assert st.checked(TAG).sha256 == path.name
    assert st.record(TAG).verified != before  # the re-hash is written down: the next process need not repeat it
    assert st.record(TAG).verified == list(integrity.identity(path.stat()))


def test_a_file_written_while_it_is_hashed_is_judged_again_without_deadlocking(tmp_path, monkeypatch):
    """The retry after a change mid-read ran with the file's lock still held (not reentrant): the checking
    thread, and every later check of that file (classify, the card, downloads), waited forever."""
    path = tmp_path / "blob"
    path.write_bytes(b"a" * 4096)
    first = sha256_file(path)
    hashes = []

    def hash_then_write(p):
        hashes.append(sha256_file(p))
        if len(hashes) == 1:  # a writer lands between the read and the second stat
            with open(p, "r+b") as f:
                f.write(b"b")
        return hashes[-1]

    monkeypatch.setattr(integrity, "sha256_file", hash_then_write)
    out = []
    worker = threading.Thread(target=lambda: out.append(integrity.check(path, first, 4096)), daemon=True)
    worker.start()
    worker.join(20)
    second = sha256_file(path)
    assert not worker.is_alive(), "integrity.check deadlocked on its own lock"
    assert len(hashes) == 2 and hashes[1] == second  # the newest bytes were judged
    assert out[0].checked is None and out[0].actual == second
    assert integrity.check(path, second, 4096).checked is not None  # and the file's lock is free again


def test_verify_quarantines_only_a_blob_whose_bytes_are_not_its_name(resnet18_file, resnet18_v2_file):
    st = weights.store()
    path = weights.import_file(resnet18_file, TAG)
    assert st.verify(TAG) == (True, f"ok ({path.stat().st_size:,} bytes, sha256 {path.name[:12]})")
    flip_last_byte(path)
    ok, message = st.verify(TAG)
    assert not ok and message.startswith("CORRUPT") and ".corrupt" in message
    assert st.record(TAG) is not None  # reported, not deleted


def test_a_store_of_the_first_layout_is_migrated_on_first_use_losing_nothing(resnet18_file, resnet18_v2_file, tmp_path):
    root = tmp_path / "weights"
    good, bad = root / TAG, root / "resnet18.a1_in1k"
    old = tmp_path / "old-version"  # `bad` was killed after its new file's rename, before its record's
    old.write_bytes(b"the version its record still describes")
    for folder, data, recorded in ((good, resnet18_file, resnet18_file), (bad, resnet18_v2_file, old)):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(data.read_bytes())
        rec = Record(folder.name, sha256_file(recorded), recorded.stat().st_size, "import")
        (folder / "record.json").write_text(json.dumps(rec.__dict__))
        os.chmod(folder / "record.json", 0o600)  # as the first layout wrote them
    (good / ".incoming.abc.tmp").write_bytes(b"partial")
    (bad / ".record.def.tmp").write_text("{")
    st = weights.store()  # first use
    sha = sha256_file(resnet18_file)
    assert st.checked(TAG).path == root / "blobs" / sha and not (good / "model.safetensors").exists()
    assert sorted(p.name for p in good.iterdir()) == ["record.json"]
    assert stat.S_IMODE((good / "record.json").stat().st_mode) == 0o644
    kept = list((root / ".corrupt").glob("*.safetensors"))  # the file that disagreed with its record: kept
    assert len(kept) == 1 and sha256_file(kept[0]) == sha256_file(resnet18_v2_file)
    note = kept[0].with_name(kept[0].name + ".txt").read_text()
    assert f"python -m zoo import {kept[0]} --name resnet18.a1_in1k" in note
    assert not st.has("resnet18.a1_in1k") and st.verify("resnet18.a1_in1k")[1].startswith("MISSING")
    assert [p.name for p in (root / "blobs").iterdir()] == [sha]


def test_a_read_only_store_of_the_first_layout_is_still_served(resnet18_file, tmp_path):
    folder = tmp_path / "weights" / TAG
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(resnet18_file.read_bytes())
    rec = Record(TAG, sha256_file(resnet18_file), resnet18_file.stat().st_size, "import")
    (folder / "record.json").write_text(json.dumps(rec.__dict__))
    st = Store(tmp_path / "weights")  # not `prepare`d: as a read-only mirror would be
    assert st.checked(TAG).path == folder / "model.safetensors"


def test_a_disk_error_is_one_line_that_names_the_store_and_leaves_nothing(resnet18_file, monkeypatch):
    monkeypatch.setenv("ZOO_FAULT_ENOSPC", "blob-copying")
    with pytest.raises(StoreError) as info:
        weights.import_file(resnet18_file, TAG)
    message = str(info.value)
    assert "\n" not in message and "no space left on the device holding" in message and "free some space" in message
    root = weights.store().root
    assert not (root / TAG).exists() and not any((root / "blobs").iterdir())


def test_engine_drops_a_model_whose_file_was_replaced_or_removed(resnet18_file, resnet18_v2_file):
    from tests import imagecorpus as corpus

    png = corpus.encode(corpus.scene(64, 64), "PNG")
    weights.import_file(resnet18_file, TAG)
    engine = inference.Engine(backend="eager")
    first = engine.classify(png, TAG)[0][0]
    assert engine.classify(png, TAG)[0][0].top == first.top and engine.cache.loads == 1
    weights.import_file(resnet18_v2_file, TAG)  # as `zoo import` in another process would
    engine.classify(png, TAG)
    assert engine.cache.loads == 2
    weights.store().remove(TAG)
    with pytest.raises(WeightsUnavailableError):
        engine.classify(png, TAG)


def test_a_run_whose_model_cannot_be_saved_keeps_its_scores(monkeypatch):
    import torch

    from zoo.architecture import build_meta
    from zoo.transfer.heads import Transfer

    model = Transfer(build_meta("resnet18"), "linear", 2).to_empty(device="cpu")
    with torch.no_grad():
        for t in model.state_dict().values():
            t.zero_()
    record = {"id": "r1", "tag": TAG, "strategy": "linear", "classes": ["a", "b"], "preprocessing": {},
              "history": [{"epoch": 1, "val_acc": 0.5}], "val_top1": 50.0}
    monkeypatch.setenv("ZOO_FAULT_ENOSPC", "run-model")
    with pytest.raises(StoreError, match="its scores and history were kept"):
        runs.save("r1", record, model)
    kept = runs.get("r1")
    assert kept["history"] == record["history"] and kept["sha256"] is None
    with pytest.raises(WeightsUnavailableError, match="kept only its scores"):
        runs.load_model("r1")
    monkeypatch.delenv("ZOO_FAULT_ENOSPC")
    out = runs.save("r2", {**record, "id": "r2"}, model)
    assert runs.checked("r2").path == out / "model.safetensors"
    assert not [p for p in runs.root().iterdir() if p.name.startswith(".")]  # no temp folder left


def test_training_refuses_to_start_without_room_for_its_model(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(StoreError, match="Not starting: the runs' models need about"):
        runs.check_space(TAG)


def test_training_on_a_store_it_cannot_write_refuses_before_unpacking_anything(tmp_path, monkeypatch):
    from zoo import settings
    from zoo.transfer import data, grid

    blocked = tmp_path / "store-is-a-file"
    blocked.write_text("x")
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(blocked))
    settings.get_settings.cache_clear()
    with pytest.raises(StoreError, match=r"Not starting: .*store-is-a-file is not a folder: set ZOO_WEIGHTS_DIR"):
        grid.train(str(tmp_path / "labelled.zip"), [TAG], ["linear"])
    refused = r"^Cannot unpack labelled\.zip: .*is not a folder"  # one line, no OSError
    with pytest.raises(StoreError, match=refused), data.job_folder(what="Cannot unpack labelled.zip"):
        pass


def test_a_file_changed_on_disk_says_so_when_it_cannot_be_fetched_again(resnet18_file, monkeypatch):
    path = weights.import_file(resnet18_file, TAG)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from zoo import settings

    settings.get_settings.cache_clear()
    flip_last_byte(path)
    with pytest.raises(WeightsCorruptError, match=rf"{TAG} changed on disk.*Fetching them again failed"):
        weights.resolve(TAG)
    # every later call says what happened to it too, not only that it is not here (was: "not in the local store")
    said = rf"{TAG} failed their SHA-256 check on 20\d\d-\d\d-\d\d \d\d:\d\d UTC .*moved to .*\.corrupt"
    for _ in range(2):
        with pytest.raises(WeightsCorruptError, match=said + ".*Fetching them again failed"):
            weights.resolve(TAG)
    with pytest.raises(WeightsCorruptError, match=said):
        catalog.require_stored(TAG)


def test_tidying_leaves_the_stores_own_folders_even_empty_and_no_tag_takes_their_names(resnet18_file, tmp_path):
    """Before: `tidy` took runs/ for an empty tag folder and removed it just after a training's save had made it
    (CI: "Run … was not saved (nothing was kept): No such file or directory")."""
    from zoo.errors import InvalidArgumentError

    st = weights.store()
    own = [st.root / name for name in ("runs", "degradation", "blobs")]
    for folder in own:
        folder.mkdir(exist_ok=True)
    (st.root / "some-tag.v1").mkdir()  # an empty tag folder: a failed import's, say
    st.tidy()
    assert all(folder.is_dir() for folder in own) and not (st.root / "some-tag.v1").exists()
    for name in ("runs", "degradation", "blobs"):  # (imports take registry tags; the store refuses these too)
        with pytest.raises(InvalidArgumentError, match="weight store's own folders"):
            st.folder(name)


def test_a_file_changed_between_its_check_and_its_read_is_not_loaded(resnet18_file, monkeypatch):
    """The store checks a file, and the model reads it after: bytes written in between were loaded unchecked."""
    from zoo import checkpoint, models

    path = weights.import_file(resnet18_file, TAG)
    read = checkpoint.read_tensors

    def read_then_changed(p):
        tensors = read(p)
        flip_last_byte(Path(p))  # as if written just before the read: what was read is not what was checked
        return tensors

    monkeypatch.setattr(checkpoint, "read_tensors", read_then_changed)
    with pytest.raises(WeightsCorruptError, match=f"{TAG} changed on disk"):
        models.create_model(TAG, device="cpu")
    assert not path.exists() and weights.store().set_aside(TAG) is not None


def test_an_unreadable_record_keeps_every_blob_and_verify_names_it(resnet18_file, caplog):
    """A typo in a hand-edited record.json made its tag unlisted, and the next `verify` deleted its blob."""
    path = weights.import_file(resnet18_file, TAG)
    st = weights.store()
    record = st.folder(TAG) / "record.json"
    record.write_text(record.read_text().replace('"source":', '"source":,'))
    with caplog.at_level("WARNING", logger="zoo.store"):
        ok, message = st.verify(TAG)
        st.tidy()
    assert not ok and message.startswith("UNREADABLE: record.json is not valid JSON") and f"zoo rm {TAG}" in message
    assert path.is_file() and any("kept every blob" in r.getMessage() for r in caplog.records)
    assert st.unreadable_records() == [(TAG, message.removeprefix("UNREADABLE: ").split(";")[0])]
    assert st.remove(TAG) and not path.exists()  # removed on purpose: collected with it


def test_a_store_on_a_full_disk_is_reported_full_not_writable(resnet18_file, monkeypatch):
    """/readyz said `mode: writable` on a 100% full disk: its probe only creates an empty file (a helper's pass)."""
    from types import SimpleNamespace

    from zoo import store as store_module

    weights.import_file(resnet18_file, TAG)
    st = weights.store()
    assert st.state()[0] == "writable"
    monkeypatch.setattr(store_module.os, "statvfs", lambda path: SimpleNamespace(f_bavail=12, f_frsize=4096))
    mode, why = st.state()
    assert mode == "full" and "48 KiB free" in why and "serving what it holds" in why
    assert st.writable() == (False, why) and st.checked(TAG) is not None  # it still serves what it holds
