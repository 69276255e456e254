"""Benchmarks: each `bench/bench_*.py` measures ratios in one run and returns its targets."""

from __future__ import annotations

import operator
import socket
import statistics
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
