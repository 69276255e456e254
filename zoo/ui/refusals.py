"""Gradio's own refusals, reworded to name the setting behind them and the value met (README "Limits").

- A full queue: Gradio says "Queue is full. Max size is 64 and size is 64."; the browser shows this instead:
  "Queue is full: 64 requests are waiting, the most this server takes (ZOO_QUEUE_SIZE=64). Try again in a
  moment." (it still begins with Gradio's words, which its clients look for).
- An upload over ZOO_MAX_UPLOAD_MB: Gradio answers 413 "File size exceeded maximum allowed size of 1073741824
  bytes." in plain text; it becomes "The file is larger than this server takes: at most 1,024 MiB
  (ZOO_MAX_UPLOAD_MB); this upload is 1,100.0 MiB." (the size when the request said how long it is).
- An upload past ZOO_UPLOADS_MAX_MB (all uploads' disk together, `uploads.DiskBudget`) is refused before its
  body is read: 507, naming the setting and the usage met.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import anyio

from zoo import uploads
from zoo.settings import Settings
from zoo.ui.sessions import require_gradio


def queue_full(max_size: int, waiting: int) -> str:
    return (f"Queue is full: {waiting} requests are waiting, the most this server takes (ZOO_QUEUE_SIZE={max_size}). "
            "Try again in a moment.")


def upload_too_large(gradio_text: str, content_length: str | None) -> str:
    limit = re.search(r"(\d+) bytes", gradio_text)
    most = f"at most {int(limit.group(1)) / 2**20:,.0f} MiB" if limit else "a smaller file"
    met = (f"; this upload is {int(content_length) / 2**20:,.1f} MiB" if content_length and content_length.isdigit()
           else "")
    return f"The file is larger than this server takes: {most} (ZOO_MAX_UPLOAD_MB){met}."


def is_upload(scope: dict) -> bool:
    """Gradio's upload route (POST .../upload)."""
    return scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith("/upload")


class UploadLimitWording:
    """ASGI middleware: Gradio's plain-text 413 for an upload over its limit, reworded (`upload_too_large`)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if not is_upload(scope):
            await self.app(scope, receive, send)
            return
        held: list[dict] = []

        async def reword(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] == 413:
                held.append(message)
                return
            if held and message["type"] == "http.response.body":
                text = message.get("body", b"").decode("utf-8", "replace")
                if text.startswith("File size exceeded") and not message.get("more_body"):
                    length = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
                    body = upload_too_large(text, length).encode()
                    headers = [(k, v) for k, v in held[0]["headers"] if k.lower() != b"content-length"]
                    await send({**held[0], "headers": [*headers, (b"content-length", str(len(body)).encode())]})
                    await send({"type": "http.response.body", "body": body})
                    held.clear()
                    return
                await send(held.pop())
            await send(message)

        await self.app(scope, receive, reword)


def uploads_full(held: int, most: int, size: int) -> str:
    return (f"The server's upload space is full: uploads take {held / 2**20:,.0f} MiB of the {most / 2**20:,.0f} MiB "
            f"they may (ZOO_UPLOADS_MAX_MB), and this one needs {size / 2**20:,.1f} MiB. Try again in a few minutes: "
            "uploads are deleted after ZOO_UPLOAD_TTL_S.")


def disk_full(free: int, size: int) -> str:
    return (f"The server's disk for uploads is nearly full: {free / 2**20:,.1f} MiB can be spared, and this upload "
            f"needs {size / 2**20:,.1f} MiB. Try again in a few minutes (uploads are deleted after ZOO_UPLOAD_TTL_S), "
            "or tell whoever runs this server.")


class UploadDiskBudget:
    """ASGI middleware: each upload reserves its declared length in the uploads' DiskBudget while it runs."""

    def __init__(self, app: Any, budget: uploads.DiskBudget, undeclared: int):
        self.app, self.budget, self.undeclared = app, budget, undeclared

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if not is_upload(scope):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
        size = int(declared) if declared.isdigit() else self.undeclared
        try:
            if self.budget.due():  # the folder is read again: off the event loop
                held = await anyio.to_thread.run_sync(self.budget.reserve, size)
            else:
                held = self.budget.reserve(size)
            refusal = uploads_full(held, self.budget.most, size) if held is not None else None
        except uploads.DiskFullError as full:
            refusal = disk_full(full.free, full.size)
        if refusal is not None:
            body = refusal.encode()
            await send({"type": "http.response.start", "status": 507, "headers": [
                (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.budget.release(size)


def upload_folder() -> Path:
    """Where Gradio keeps uploads: GRADIO_TEMP_DIR (`app.py` gives each server its own), else its default."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


def install(gradio_app: Any, settings: Settings) -> None:
    """Reword the mounted Gradio app's queue-full and upload-size refusals, and keep its uploads within
    ZOO_UPLOADS_MAX_MB (call after `gr.mount_gradio_app`, and after GRADIO_TEMP_DIR is set).

    Raises:
        RuntimeError: this Gradio's queue refuses some other way (an upgrade changed its internals).
    """
    queue = getattr(gradio_app.get_blocks(), "_queue", None)
    push = getattr(queue, "push", None)
    require_gradio("refuses a full queue", push is not None and inspect.iscoroutinefunction(push)
                   and isinstance(getattr(queue, "max_size", None), int | type(None)), __name__)

    @functools.wraps(push)
    async def reworded(*args: Any, **kwargs: Any) -> Any:
        ok, message, kind = await push(*args, **kwargs)
        if kind == "queue_full" and queue.max_size is not None:
            message = queue_full(queue.max_size, len(queue))
        return ok, message, kind

    queue.push = reworded
    gradio_app.add_middleware(UploadLimitWording)
    budget = uploads.DiskBudget(upload_folder(), settings.uploads_max_mb * 2**20)
    gradio_app.add_middleware(UploadDiskBudget, budget=budget, undeclared=settings.max_upload_mb * 2**20)
