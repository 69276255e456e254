"""GPU work on Hugging Face ZeroGPU Spaces: `gpu(fn)` wraps `fn` with `spaces.GPU` when the `spaces`
package is installed (it is on Spaces); elsewhere, and off ZeroGPU, `fn` runs as it is."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

try:  # Spaces install it; ZeroGPU needs it imported before CUDA is first touched (app.py imports us early)
    import spaces
except ImportError:
    spaces = None

F = TypeVar("F", bound=Callable)


def gpu(fn: F, *, duration: int = 60) -> F:
    """`spaces.GPU(fn, duration=...)` where `spaces` is importable (a no-op off ZeroGPU), else `fn`."""
    if spaces is None:
        return fn
    return spaces.GPU(fn, duration=duration)
