"""What every tab's handlers share: errors shown as one sentence, the image check, download progress bars, and
getting models ready. No layout and no logic of its own."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import Callable, Iterable, Iterator

import gradio as gr

from zoo import inference, resolver
from zoo.errors import InvalidArgumentError, ZooError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _shown(name: str) -> Iterator[None]:
    try:
        yield
    except gr.Error:
        raise
    except ZooError as exc:
        raise gr.Error(str(exc), print_exception=False) from None
    except Exception as exc:
        log.exception("UI handler %s failed", name)
        raise gr.Error(f"Internal error ({type(exc).__name__}); the server log has the details.",
                       print_exception=False) from None


def user_errors(fn: Callable) -> Callable:
    """Show a ZooError's message as a gr.Error; log anything else and show a short note (no stack trace).
    Wraps plain handlers and streaming (generator) handlers alike; a page that leaves still stops a stream."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def stream(*args, **kwargs):
            with _shown(fn.__name__):
                yield from fn(*args, **kwargs)

        return stream

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _shown(fn.__name__):
            return fn(*args, **kwargs)

    return wrapper


def image(image: str | None) -> str:
    if not image:
        raise InvalidArgumentError("Upload an image first, or pick one of the examples.")
    return image


def download_bar(progress: gr.Progress, name: str) -> Callable[[int, int | None], None]:
    """A `weights.resolve` progress callback that moves the UI's bar in megabytes."""

    def report(done: int, total: int | None) -> None:
        if total:
            progress(done / total, desc=f"Downloading {name}: {done / 1e6:.0f} of {total / 1e6:.0f} MB")

    return report


def ready(names: Iterable[str], progress: gr.Progress) -> None:
    """Download (with a byte progress bar) and load each model that is not ready yet."""
    eng = inference.engine()
    todo = [n for n in dict.fromkeys(names) if not eng.is_ready(n)]
    for i, name in enumerate(todo):
        resolver.fetch(name, progress=download_bar(progress, name))
        progress((i, len(todo)), desc=f"Loading {name}", unit="models")
        eng.slot(name)
