"""The runs quota (ZOO_RUNS_MAX_MB): stored transfer runs may take this much disk; past it, new runs are
refused with the usage and the limit, and nothing is ever deleted for the user."""

from __future__ import annotations

from pathlib import Path

from zoo.errors import ZooError
from zoo.settings import Settings, get_settings
from zoo.transfer import runs


class QuotaExceededError(ZooError, OSError):
    """Stored runs have reached ZOO_RUNS_MAX_MB; delete some to train new ones."""


def usage(settings: Settings | None = None) -> tuple[int, int]:
    """(bytes, runs) that the stored runs take on disk."""
    base = runs.root(settings)
    if not base.is_dir():
        return 0, 0
    total, count = 0, 0
    for sub in base.iterdir():
        if not sub.is_dir() or sub.is_symlink():
            continue
        count += (sub / runs.RUN_FILE).is_file()
        total += sum(_size(p) for p in sub.rglob("*"))
    return total, count


def _size(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() and not path.is_symlink() else 0
    except OSError:  # removed while counting
        return 0


def describe(settings: Settings | None = None) -> str:
    """One line for the lab: the runs' disk use against the quota."""
    settings = settings or get_settings()
    used, count = usage(settings)
    return f"Stored runs: {count} taking {used / 2**20:,.1f} MiB of {settings.runs_max_mb:,} MiB (ZOO_RUNS_MAX_MB)."


def check(settings: Settings | None = None, need: int = 0) -> None:
    """Refuse a new run whose model (about `need` bytes) would take the stored runs past the quota, so the quota
    holds as a limit instead of being passed by the run that reaches it.

    Raises:
        QuotaExceededError: names the usage, what the run needs and the limit, and how to make room.
    """
    settings = settings or get_settings()
    used, count = usage(settings)
    limit = settings.runs_max_mb * 2**20
    if used >= limit:
        raise QuotaExceededError(
            f"Stored runs take {used / 2**20:,.1f} MiB ({count} runs), at the limit of "
            f"{settings.runs_max_mb:,} MiB (ZOO_RUNS_MAX_MB): delete runs you no longer need "
            "(Transfer lab, Stored runs) or raise the limit; no run is deleted for you."
        )
    if used + need > limit:
        raise QuotaExceededError(
            f"Not starting: this run's model takes about {need / 2**20:,.1f} MiB, and stored runs take "
            f"{used / 2**20:,.1f} MiB ({count} runs) of the limit of {settings.runs_max_mb:,} MiB "
            "(ZOO_RUNS_MAX_MB): delete runs you no longer need (Transfer lab, Stored runs) or raise the limit; "
            "no run is deleted for you."
        )
