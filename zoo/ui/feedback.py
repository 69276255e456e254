"""What a person sees when something fails: one sentence in a tab's status line, the other outputs untouched.

Errors are not raised to Gradio (that paints every output with a red "Error" badge and a toast that fades);
a wrapped handler returns `gr.skip()` for its outputs and the sentence for the status line. The sentence
names the file or model, never a server path, a CLI command or a Python traceback.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from zoo import hub, registry, weights
from zoo.errors import (
    InvalidArgumentError,
    InvalidImageError,
    UnknownModelError,
    WeightsUnavailableError,
    ZooError,
    without_paths,
)
from zoo.settings import get_settings

log = logging.getLogger(__name__)
_CLI = re.compile(r"[^.]*`python -m zoo[^`]*`[^.]*\.\s*")  # a sentence that tells a visitor to run our CLI
_CLI_ASIDE = re.compile(r"\s*\([^()]*`python -m zoo[^`]*`[^()]*\)")  # or an aside in brackets that does


def whole(value: Any, what: str) -> int:
    """A count the page's sliders (and API callers) send as a number, as the int it must be: 1.5 px is refused, not
    taken as 1 px, and neither is NaN or a value that is not a number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{what} must be a whole number, not {str(value)[:40]!r}.") from None
    if not math.isfinite(number) or number != int(number):
        raise InvalidArgumentError(f"{what} must be a whole number, not {value}.")
    return int(number)


def scrub(text: str) -> str:
    """`text` without sentences that need a shell on the server and without server paths (kept: file names)."""
    text = _CLI.sub("", _CLI_ASIDE.sub("", text))
    return without_paths(text).strip()


def weights_missing(name: str) -> str:
    """Why a model's weights cannot be used here, in words a visitor of a Space can act on."""
    settings = get_settings()
    offline = settings.hf_offline or hub.reachability.is_down
    if offline and not weights.store(settings).records():  # no model to pick instead: say who can help
        return (
            f"The weights of {name} are not on this server, and no other model's are either: the Hugging Face "
            "Hub cannot be reached from here to download them. Whoever runs this server can import weight files "
            '(the README\'s "Weights" section); Why residual?, Architecture and Model zoo work without them.'
        )
    if offline:
        return (
            f"The weights of {name} are not on this server, and the Hugging Face Hub cannot be reached from "
            'here, so they cannot be downloaded now. Pick a model not marked "not downloaded", or try again '
            "later."
        )
    return (
        f"The weights of {name} could not be downloaded from the Hugging Face Hub just now. Try again in a "
        'minute, or pick a model not marked "not downloaded".'
    )


def sentence(exc: BaseException, *, file: str | None = None, model: str | None = None) -> str:
    """One sentence for the status line: what went wrong and what to do, naming the file or model."""
    if isinstance(exc, UnknownModelError):
        hint = f" Did you mean {', '.join(exc.suggestions)}?" if exc.suggestions else ""
        return f"There is no model called {exc.name!r} in this zoo.{hint} Pick one from the list."
    if isinstance(exc, WeightsUnavailableError):
        name = getattr(exc, "model", None) or model
        if name is None:  # not a model's weights (a dataset, a run): its own words
            return scrub(str(exc))
        return weights_missing(_model_name(name))
    if isinstance(exc, InvalidImageError):
        if not file:
            return scrub(str(exc))
        name = Path(file).name  # named once, whether or not the message began with the file (spaces and all)
        text = scrub(str(exc).removeprefix(f"{file}: "))
        return f"{name}: " + text.removeprefix(f"`{name}`: ").removeprefix(f"{name}: ")
    if isinstance(exc, ZooError):
        return scrub(str(exc))
    return f"Something went wrong on the server ({type(exc).__name__}); it is logged there. Please try again."


def _model_name(model: str | None) -> str:
    if not model:
        return "this model"
    try:
        return registry.get(model).name
    except ZooError:
        return model


def status_line(elem_id: str) -> gr.Markdown:
    """A tab's status line: empty, or one sentence on what went wrong and what to do."""
    return gr.Markdown(label="Status", elem_id=elem_id, elem_classes=["zoo-status"])


def shown(message: str) -> str:
    """The status line's Markdown for an error message."""
    return f"⚠️ {message}"


UNCHANGED = object()  # what a wrapped streaming handler yields for an update that changes no output (see to_status)


def to_status(outputs: int, *, file_arg: int | None = None, model_arg: int | None = None,
              at: int | None = None) -> Callable:
    """Wrap a handler with `outputs` outputs so it also returns a status line (last output): empty when it
    worked; on failure `gr.skip()` for every other output and one sentence (see `sentence`). Streaming
    (generator) handlers are wrapped alike: a failure is their last update, and an update of `UNCHANGED` skips
    every output. A long job's handler yields one when the job has been silent a while (`relay`'s tick): Gradio
    notices a client that left only when it sends an update, and then cancels the handler and its job.

    `file_arg` / `model_arg`: positions of the uploaded file and the model name among the handler's arguments,
    so the sentence can name them. `at`: the status line is already the handler's own output at this position
    (`outputs` counts it); it is left to the handler when it works and gets the sentence when it fails.
    """

    def wrap(fn: Callable) -> Callable:
        def failed(args: tuple, exc: Exception) -> tuple:
            if not isinstance(exc, ZooError):
                log.exception("UI handler %s failed", fn.__name__)
            file, model = _arg(args, file_arg), _arg(args, model_arg)
            text = shown(sentence(exc, file=file if isinstance(file, str) else None,
                                  model=model if isinstance(model, str) else None))
            if at is None:
                return (*(gr.skip() for _ in range(outputs)), text)
            return tuple(text if i == at else gr.skip() for i in range(outputs))

        def worked(result: Any) -> Any:
            if result is UNCHANGED:
                return tuple(gr.skip() for _ in range(outputs if at is not None else outputs + 1))
            if at is not None:
                return result
            return (*(result if isinstance(result, tuple) else (result,)), "")

        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def stream(*args, **kwargs):
                try:
                    for result in fn(*args, **kwargs):
                        yield worked(result)
                except Exception as exc:  # not GeneratorExit: a page that leaves still stops the stream
                    yield failed(args, exc)

            return stream

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return worked(fn(*args, **kwargs))
            except Exception as exc:
                return failed(args, exc)

        return wrapper

    return wrap


def _arg(args: tuple, index: int | None) -> Any:
    return args[index] if index is not None and index < len(args) else None
