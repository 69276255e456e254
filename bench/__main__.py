"""`python -m bench [NAME...]`: run the benchmarks, then one BENCH line per target (exit 1 on a FAIL)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import torch


def main(argv: list[str]) -> int:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    if argv:
        names = [n for n in names if any(a in n for a in argv)]
    targets = []
    for name in names:
        print(f"== {name}", flush=True)
        targets += importlib.import_module(f"bench.{name}").run()
    print()
    for t in targets:
        print(t.line())
    return 0 if all(t.passed for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
