"""The runs quota (ZOO_RUNS_MAX_MB): stored transfer runs may take this much disk; past it, new runs are
refused with the usage and the limit, and nothing is ever deleted for the user."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from zoo import durable
from zoo.errors import ZooError
from zoo.settings import Settings, get_settings
from zoo.transfer import runs


class QuotaExceededError(ZooError, OSError):
    """Stored runs have reached ZOO_RUNS_MAX_MB; delete some to train new ones."""


LOCK = ".quota.lock"  # in the runs folder: checking the quota and holding part of it are one step
HOLD = "hold"  # `.tmp.hold.<pid>.<random>` in the runs folder: the bytes a run training now holds


def usage(settings: Settings | None = None) -> tuple[int, int]:
    """(bytes, runs) that the stored runs take on disk."""
    base = runs.root(settings)
    if not base.is_dir():
        return 0, 0
    total, count = 0, 0
    for sub in base.iterdir():
        if not sub.is_dir() or sub.is_symlink() or sub.name.startswith(durable.TMP):
            continue  # a run being saved counts by what it holds (`held`); a dead writer's is swept
        count += (sub / runs.RUN_FILE).is_file()
        total += sum(_size(p) for p in sub.rglob("*"))
    return total, count


def _size(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() and not path.is_symlink() else 0
    except OSError:  # removed while counting
        return 0


def held(settings: Settings | None = None) -> tuple[int, int]:
    """(bytes, runs) held by runs training now, in this process or another (`reserved`). A holder that died
    (its lock is free) holds nothing; its file is removed by the next save or server start (`durable.sweep`)."""
    base = runs.root(settings)
    total, count = 0, 0
    try:
        names = [n for n in os.listdir(base) if n.startswith(f"{durable.TMP}{HOLD}.")]
    except OSError:
        return 0, 0
    for name in names:
        try:
            fd = os.open(base / name, os.O_RDONLY)
        except OSError:
            continue  # released meanwhile
        try:
            if not durable.writer_alive(fd):
                continue  # its holder is gone (or has not locked it yet: it holds the quota lock until it has)
            text = os.read(fd, 32).decode("ascii", "replace")
            total, count = total + (int(text) if text.isdigit() else 0), count + 1
        finally:
            os.close(fd)
    return total, count


def describe(settings: Settings | None = None) -> str:
    """One line for the lab: the runs' disk use against the quota."""
    settings = settings or get_settings()
    used, count = usage(settings)
    line = f"Stored runs: {count} taking {used / 2**20:,.1f} MiB of {settings.runs_max_mb:,} MiB (ZOO_RUNS_MAX_MB)."
    holding, training = held(settings)
    if training:
        line += (f" {training} run{'s' if training > 1 else ''} training now hold{'' if training > 1 else 's'} "
                 f"{holding / 2**20:,.1f} MiB of it.")
    return line


@contextlib.contextmanager
def reserved(settings: Settings | None = None, need: int = 0) -> Iterator[None]:
    """Hold `need` bytes of the quota for a run while it trains, or refuse it at once when the stored runs and
    the runs training now (in any process) leave less. Checking and holding happen under one lock across
    processes, so two runs started together cannot both pass a quota that has room for one; the hold ends
    when the run is stored (its files then count) or fails.

    Raises:
        QuotaExceededError: names the usage, what the run needs and the limit, and how to make room.
    """
    settings = settings or get_settings()
    base = runs.root(settings)
    with durable.storing("Not starting: the runs quota could not be checked", base):
        base.mkdir(parents=True, exist_ok=True)
        lock = os.open(base / LOCK, os.O_RDWR | os.O_CREAT, durable.MODE)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (used, count), (holding, training) = usage(settings), held(settings)
        limit = settings.runs_max_mb * 2**20
        if used + holding + need > limit:
            raise QuotaExceededError(_refusal(used, count, holding, training, need, settings.runs_max_mb))
        with durable.storing("Not starting: the runs quota could not be held", base):
            hold = durable.TempFile(base, HOLD)
            try:
                os.write(hold.fd, str(need).encode())
            except OSError:
                hold.close()
                raise
    finally:
        os.close(lock)  # drops the lock
    with hold:
        yield


def _refusal(used: int, count: int, holding: int, training: int, need: int, limit_mb: int) -> str:
    mib = 2**20
    others = f", and {training} run(s) training now hold {holding / mib:,.1f} MiB," if training else ""
    where = "at" if used + holding == limit_mb * mib else "over"  # a lowered limit leaves runs over it
    start = (f"Stored runs take {used / mib:,.1f} MiB ({count} runs){others} {where} the limit"
             if used + holding >= limit_mb * mib else
             f"Not starting: this run's model takes about {need / mib:,.1f} MiB, and stored runs take "
             f"{used / mib:,.1f} MiB ({count} runs){others} of the limit")
    return (f"{start} of {limit_mb:,} MiB (ZOO_RUNS_MAX_MB): delete runs you no longer need "
            "(Transfer lab, Stored runs) or raise the limit; no run is deleted for you.")
