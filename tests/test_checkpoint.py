"""A corpus of malformed and mismatched files: each gives a clear error and nothing is used."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from zoo import checkpoint, weights
from zoo.architecture import build_meta
from zoo.errors import WeightsIntegrityError, WeightsMismatchError
from zoo.settings import REPO_ROOT


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return timm.create_model("test_resnet", pretrained=False).state_dict()


@pytest.fixture(scope="module")
def expected():
    return checkpoint.expected_tensors(build_meta("test_resnet"))


def raw(header: dict, data: bytes, length: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def valid_bytes(state, tmp_path: Path) -> bytes:
    p = tmp_path / "ok.safetensors"
    save_file(state, str(p))
    return p.read_bytes()


def split(blob: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def test_a_valid_file_loads(state, expected, tmp_path):
    p = tmp_path / "ok.safetensors"
    p.write_bytes(valid_bytes(state, tmp_path))
    tensors, header = checkpoint.load_checked(p, expected, "ok")
    assert set(tensors) == set(state) and all(torch.equal(tensors[k], state[k]) for k in state)
    assert header.tensors["conv1.0.weight"].shape == tuple(state["conv1.0.weight"].shape)


_OWNED = """
import os, struct, sys, torch
from zoo import checkpoint
path = sys.argv[1]
tensors = checkpoint.read_tensors(path)
before = {k: v.clone() for k, v in tensors.items()}
(n,) = struct.unpack("<Q", open(path, "rb").read(8))
with open(path, "r+b") as f:  # every byte of the data section changed in place, as a disk error or a user might
    f.seek(8 + n)
    f.write(b"\\xff" * (os.path.getsize(path) - 8 - n))
assert all(torch.equal(tensors[k], before[k]) for k in before), "a loaded tensor changed with its file"
os.truncate(path, 8)  # a mapped tensor read after this would kill the process with SIGBUS
print(sum(float(t.float().sum()) for t in tensors.values()) == sum(float(t.float().sum()) for t in before.values()))
"""


def test_loaded_tensors_are_the_process_s_own_not_pages_of_the_file(state, tmp_path):
    """A file changed or truncated after loading changes nothing that was loaded, and crashes nothing (safetensors'
    default maps the file: the first tensor then read the new bytes, and the second read killed the process)."""
    p = tmp_path / "ok.safetensors"
    p.write_bytes(valid_bytes(state, tmp_path))
    out = subprocess.run([sys.executable, "-c", _OWNED, str(p)], capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stdout.strip()) == (0, "True"), out.stderr[-800:]


def _overlap(h: dict, d: bytes) -> tuple[dict, bytes]:
    names = sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0])
    a, b = h[names[1]], h[names[2]]
    size_b = b["data_offsets"][1] - b["data_offsets"][0]
    if size_b <= a["data_offsets"][1] - a["data_offsets"][0]:
        b["data_offsets"] = [a["data_offsets"][0], a["data_offsets"][0] + size_b]
    return h, d


def _duplicate(blob: bytes) -> bytes:
    h, d = split(blob)
    text = json.dumps(h)
    first = next(k for k in h if k != "__metadata__")
    dup = text[:-1] + f', "{first}": ' + json.dumps(h[first]) + "}"
    return struct.pack("<Q", len(dup)) + dup.encode() + d


CORPUS = {
    "truncated": (lambda b: b[:-100], "truncated"),
    "header length beyond the file": (lambda b: struct.pack("<Q", len(b) * 2) + b[8:], "past the end"),
    "tiny": (lambda b: b[:5], "too short"),
    "invalid JSON header": (lambda b: raw({}, b"")[:8].replace(b"\x02", b"\x05") + b"{nope", "not valid JSON"),
    "overlapping offsets": (lambda b: raw(*_overlap(*split(b))), "overlaps"),
    "duplicate keys": (_duplicate, "duplicate key"),
    "offsets that disagree with the shape": (
        lambda b: raw(*(lambda h, d: (h | {k: {**h[k], "shape": [3]} for k in ["bn1.bias"]}, d))(*split(b))),
        "do not hold",
    ),
}


@pytest.mark.parametrize("case", list(CORPUS))
def test_malformed_files_are_refused(case, state, expected, tmp_path):
    make, needle = CORPUS[case]
    p = tmp_path / "bad.safetensors"
    p.write_bytes(make(valid_bytes(state, tmp_path)))
    with pytest.raises(WeightsIntegrityError, match=needle) as info:
        checkpoint.load_checked(p, expected, "bad")
    assert "bad.safetensors is not a valid safetensors file" in str(info.value)


def test_a_pickle_renamed_to_safetensors_is_refused_with_a_hint(state, expected, tmp_path):
    p = tmp_path / "model.safetensors"
    torch.save(state, p)
    with pytest.raises(WeightsIntegrityError, match=r"looks like a pickle.*python -m zoo import"):
        checkpoint.load_checked(p, expected, "renamed")


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda s: {k: v for k, v in s.items() if not k.startswith("fc.")}, "2 missing: fc.weight, fc.bias"),
        (lambda s: {**s, "head.extra": torch.zeros(3)}, "1 unexpected: head.extra"),
        (lambda s: {**s, "fc.bias": torch.zeros(7)}, r"1 with the wrong shape: fc.bias \(file \[7\], model \[1000\]\)"),
        (lambda s: {**s, "fc.weight": s["fc.weight"].double()}, r"wrong dtype: fc.weight \(file F64, model F32\)"),
    ],
    ids=["missing", "extra", "shape", "dtype"],
)
def test_files_that_do_not_fit_name_the_first_mismatches(change, needle, state, expected, tmp_path):
    p = tmp_path / "m.safetensors"
    save_file(change(dict(state)), str(p))
    with pytest.raises(WeightsMismatchError, match=needle):
        checkpoint.load_checked(p, expected, "m")


def test_nan_and_inf_weights_are_rejected(state, expected, tmp_path):
    for bad in (float("nan"), float("inf")):
        s = dict(state)
        s["layer1.0.conv1.weight"] = s["layer1.0.conv1.weight"].clone()
        s["layer1.0.conv1.weight"][0, 0, 0, 0] = bad
        p = tmp_path / "nan.safetensors"
        save_file(s, str(p))
        with pytest.raises(WeightsIntegrityError, match=r"'layer1\.0\.conv1\.weight' contains NaN or Inf"):
            checkpoint.load_checked(p, expected, "nan")


def test_missing_batchnorm_counters_are_accepted(state, expected, tmp_path):
    p = tmp_path / "nbt.safetensors"
    save_file({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, str(p))
    checkpoint.load_checked(p, expected, "nbt")


def test_import_refuses_files_that_do_not_fit_and_stores_nothing(state, tmp_path):
    p = tmp_path / "test_resnet.safetensors"
    save_file(state, str(p))
    with pytest.raises(WeightsMismatchError, match="does not fit the architecture"):
        weights.import_file(p, "resnet18.tv_in1k")
    renamed = tmp_path / "renamed.safetensors"
    torch.save(state, renamed)
    with pytest.raises(WeightsIntegrityError, match="pickle"):
        weights.import_file(renamed, "resnet18.tv_in1k")
    assert not weights.store().has("resnet18.tv_in1k")
    assert not list(weights.store().root.glob("resnet18.tv_in1k/*.safetensors"))


def test_legacy_checkpoints_convert_only_through_weights_only_load(resnet18_file, tmp_path):
    from safetensors.torch import load_file

    sd = load_file(str(resnet18_file))
    p = tmp_path / "legacy.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, p)
    stored = weights.import_file(p, "resnet18.tv_in1k")
    rec = weights.store().record("resnet18.tv_in1k")
    assert rec.source == "import" and rec.extra["converted_from"] == ".pth"
    back = load_file(str(stored))
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pth"
    torch.save({"fc.weight": Evil()}, evil)
    with pytest.raises(WeightsIntegrityError, match="weights_only=True"):
        weights.import_file(evil, "resnet18.a1_in1k")
    assert not weights.store().has("resnet18.a1_in1k")


def test_the_finite_screen_has_no_false_alarm_on_overflowing_sums():
    huge = {"a": torch.full((4,), 3e38), "b": torch.zeros(2), "n": torch.tensor([1.0, float("-inf")])}
    assert torch.isinf(huge["a"].sum())  # the fast screen trips, the exact check clears it
    assert checkpoint.first_non_finite({"a": huge["a"], "b": huge["b"]}) is None
    assert checkpoint.first_non_finite(huge) == "n"
    assert checkpoint.first_non_finite({"i": torch.arange(3)}) is None


def test_file_hashes_match_sha256_and_git_object_ids(tmp_path):
    import hashlib
    import subprocess

    p = tmp_path / "f.bin"
    p.write_bytes(b"residual" * 100_000)
    sha256, sha1 = checkpoint.file_hashes(p, git_sha1=True)
    assert sha256 == hashlib.sha256(p.read_bytes()).hexdigest() == checkpoint.sha256_file(p)
    assert sha1 == subprocess.run(["git", "hash-object", str(p)], capture_output=True, text=True).stdout.strip()
    assert checkpoint.file_hashes(p)[1] is None


def test_the_same_tensors_and_metadata_give_the_same_bytes_in_every_process(tmp_path):
    """safetensors writes the metadata's keys in a random order per process: one `.pth` converted twice gave two
    SHA-256s, and with them two ETags (found by an adversarial pass)."""
    script = ("import sys, torch; from pathlib import Path; from zoo import checkpoint\n"
              "checkpoint.save_atomic({'w': torch.arange(6.0), 'b': torch.ones(2)}, Path(sys.argv[1]),\n"
              "    {k: str(i) for i, k in enumerate(['zoo.b', 'format', 'zoo.a', 'x', 'zoo.c', 'y', 'z'])})\n")
    outs = []
    for i in range(4):
        out = tmp_path / f"{i}.safetensors"
        subprocess.run([sys.executable, "-c", script, str(out)], check=True, cwd=REPO_ROOT, timeout=120)
        outs.append(out.read_bytes())
    assert len(set(outs)) == 1
    n = int.from_bytes(outs[0][:8], "little")
    meta = json.loads(outs[0][8:8 + n])["__metadata__"]  # json keeps the file's order
    assert list(meta) == sorted(meta) and meta["zoo.c"] == "4"
    assert torch.equal(checkpoint.read_tensors(tmp_path / "0.safetensors")["w"], torch.arange(6.0))
