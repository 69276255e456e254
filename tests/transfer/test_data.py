"""Transfer datasets: the built-in digits, and hostile zips refused with nothing written outside the job."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from tests.transfer.kit import CAT, COFFEE
from zoo import archives
from zoo.errors import InvalidDatasetError
from zoo.transfer import data


def test_digits_are_the_real_scikit_learn_digits_split_by_class(digits):
    assert len(digits.train) + len(digits.val) == 1797 and digits.classes == [str(i) for i in range(10)]
    counts = digits.counts()
    assert all(abs(v / (t + v) - 0.2) < 0.02 for t, v in counts.values())
    assert data.digits().fingerprint == digits.fingerprint and data.digits(seed=1).fingerprint != digits.fingerprint


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



def test_small_images_stay_decoded_only_up_to_a_memory_budget(tmp_path, monkeypatch):
    from PIL import Image

    for c, colour in (("red", (250, 10, 10)), ("blue", (10, 10, 250))):
        (tmp_path / c).mkdir()
        for i in range(6):
            Image.new("RGB", (64, 64), tuple(v // (i + 1) for v in colour)).save(tmp_path / c / f"{i}.png")
    monkeypatch.setattr(data, "KEPT_DECODED_BYTES", 5 * 4 * 64 * 64)  # room for five of the twelve
    ds = data.from_folder(tmp_path)
    examples = ds.train + ds.val
    assert sum(isinstance(ex.source, Image.Image) for ex in examples) == 5
    assert sum(isinstance(ex.source, Path) for ex in examples) == 7
    for ex in examples:  # decoded again on use, the same pixels
        c = ex.path.split("/")[0]
        i = int(ex.path.split("/")[1].split(".")[0])
        want = tuple(v // (i + 1) for v in ((250, 10, 10) if c == "red" else (10, 10, 250)))
        assert ex.image.mode == "RGB" and ex.image.getpixel((5, 5)) == want


def test_job_folders_of_processes_that_died_are_removed_when_the_next_job_starts(tmp_path):
    import os
    import subprocess
    import sys
    import time

    from zoo import paths

    jobs = paths.jobs()
    jobs.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = jobs / f"p{int(dead.stdout)}-0badc0de-x1"  # left by a process killed mid-job
    live = jobs / f"p{os.getppid()}-00c0ffee-x2"  # another process's job, running now
    stale, fresh = jobs / "1234abcd-old", jobs / "5678abcd-new"  # named the old way
    for folder in (orphan, live, stale, fresh):
        (folder / "data").mkdir(parents=True)
        (folder / "data" / "x.png").write_bytes(b"x" * 100)
    day_ago = time.time() - data.LEGACY_JOB_AGE_S - 60
    os.utime(stale, (day_ago, day_ago))
    with data.job_folder() as job:
        assert job.name.startswith(f"p{os.getpid()}-")
        assert not orphan.exists() and not stale.exists()
        assert live.exists() and fresh.exists()
    assert not job.exists()
