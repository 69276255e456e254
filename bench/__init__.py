"""Benchmarks: each `bench/bench_*.py` measures ratios in one run and returns its targets."""

from __future__ import annotations

import itertools
import operator
import socket
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

OPS = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True)
class Target:
    """One benchmark target: `ratio <op> target` passes."""

    name: str
    ratio: float
    op: str  # ">=" or "<="
    target: float

    @property
    def passed(self) -> bool:
        return OPS[self.op](self.ratio, self.target)

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return f"BENCH {self.name} ratio={self.ratio:.2f} target={self.op}{self.target:.2f} {verdict}"


def median_time(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of `fn()` in seconds over `repeat` runs, after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for the servers a benchmark starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StealMonitor:
    """The share of CPU time the hypervisor gave to other machines ("steal" in /proc/stat), every `every_s`.

    On a shared virtual machine that share comes in bursts (here 15-25% for ten seconds or so, with a mean of
    about 4%), and a burst during one phase of a benchmark and not the other moves a ratio that is meant to
    cancel the machine's speed: bench_load's slowest requests were those of a burst. Linux only; elsewhere it
    records nothing and every figure is NaN.
    """

    def __init__(self, every_s: float = 0.5):
        self.every_s = every_s
        self.samples: list[tuple[float, int, int]] = []  # (perf_counter, steal ticks, all ticks)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="steal-monitor", daemon=True)

    @staticmethod
    def _read() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:9]]  # user .. steal (guest time is in user)
        except (OSError, ValueError):
            return None
        return (fields[7], sum(fields)) if len(fields) == 8 else None

    def _loop(self) -> None:
        while not self._stop.is_set():
            ticks = self._read()
            if ticks is not None:
                self.samples.append((time.perf_counter(), *ticks))
            self._stop.wait(self.every_s)

    def __enter__(self) -> StealMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def share(self, start: float, end: float) -> float:
        """Steal over all CPU time between two perf_counter times (to the nearest samples)."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2 or inside[-1][2] == inside[0][2]:
            return float("nan")
        return (inside[-1][1] - inside[0][1]) / (inside[-1][2] - inside[0][2])

    def bursts(self, above: float) -> list[tuple[float, float]]:
        """The sampling intervals whose steal share was over `above`, as (start, end) perf_counter times."""
        pairs = itertools.pairwise(self.samples)
        return [(a[0], b[0]) for a, b in pairs if b[2] > a[2] and (b[1] - a[1]) / (b[2] - a[2]) > above]
