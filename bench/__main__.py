"""`python -m bench [NAME...]`: run the benchmarks, then one BENCH line per target (exit 1 on a FAIL)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback
from pathlib import Path

import torch

from bench import Target


def main(argv: list[str]) -> int:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    if argv:
        names = [n for n in names if any(a in n for a in argv)]
    targets = []
    for name in names:
        print(f"== {name}", flush=True)
        try:
            targets += importlib.import_module(f"bench.{name}").run()
        except Exception:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            print(f"FAIL {name}: it stopped with the error above", flush=True)
            targets.append(Target(f"{name}_ran", 0.0, ">=", 1.0))
    print()
    for t in targets:
        print(t.line())
    return 0 if all(t.passed for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
