"""`python -m bench [NAME...]`: run the benchmarks, then one BENCH line per target (exit 1 on a FAIL)."""

from __future__ import annotations

import importlib
import os
import pkgutil
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

import torch

from bench import Target


def main(argv: list[str]) -> int:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    if argv:
        names = [n for n in names if any(a in n for a in argv)]
    targets, scratches = [], []
    for name in names:
        print(f"== {name}", flush=True)
        scratch = _scratch(name)
        scratches.append(scratch)
        try:
            targets += importlib.import_module(f"bench.{name}").run()
        except Exception:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            print(f"FAIL {name}: it stopped with the error above", flush=True)
            targets.append(Target(f"{name}_ran", 0.0, ">=", 1.0))
        finally:  # weight stores of hundreds of MB: a benchmark leaves nothing in the temp folder
            shutil.rmtree(scratch, ignore_errors=True)
    for scratch in scratches:  # again: a library may cache a benchmark's temp folder and make it anew later
        shutil.rmtree(scratch, ignore_errors=True)  # (torch's inductor did, for bench_api's, in a later benchmark)
    print()
    for t in targets:
        print(t.line())
    return 0 if all(t.passed for t in targets) else 1


def _scratch(name: str) -> Path:
    """A temp folder for one benchmark and every process it starts (TMPDIR), removed after it."""
    scratch = Path(tempfile.mkdtemp(prefix=f"zoo-{name}-", dir=_SYSTEM_TMP))
    os.chmod(scratch, 0o755)  # nginx's workers (another user) must reach the files bench_api serves
    tempfile.tempdir = os.environ["TMPDIR"] = str(scratch)
    return scratch


_SYSTEM_TMP = tempfile.gettempdir()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
