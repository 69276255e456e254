"""Sending a stored weight file over HTTP: strong ETag = SHA-256, conditional requests (304), single
and multiple byte ranges (206/416, If-Range), HEAD with GET's headers, 1 MiB chunks."""

from __future__ import annotations

import base64
import email.utils
import os

from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response
from starlette.types import Receive, Scope, Send

from zoo.catalog import StoredFile

CHUNK = 1024 * 1024  # Starlette's 64 KiB default streams ~5x slower over loopback (PERF-NOTES)


class WeightFileResponse(FileResponse):
    """Starlette's FileResponse (ranges, If-Range, 416 with `bytes */N`) with large chunks, and a Range
    in a unit other than bytes, or one that does not parse, ignored (RFC 9110 §14.2) instead of a 400."""

    chunk_size = CHUNK

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        value = Headers(scope=scope).get("range")
        if value is not None and not _parses(value):
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"range"]}
        await super().__call__(scope, receive, send)


def _parses(value: str) -> bool:
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        return False
    for part in spec.split(","):
        first, dash, last = (p.strip() for p in part.partition("-"))
        if not dash or not (first or last) or not all(p == "" or p.isdigit() for p in (first, last)):
            return False
        if first and last and int(first) > int(last):
            return False
    return True


def etag(stored: StoredFile) -> str:
    return f'"{stored.sha256}"'


def headers(stored: StoredFile) -> dict[str, str]:
    """What every answer about this file carries (200, 206, 304 and HEAD alike)."""
    return {
        "ETag": etag(stored),
        "Last-Modified": email.utils.formatdate(stored.mtime, usegmt=True),
        "Repr-Digest": f"sha-256=:{base64.b64encode(bytes.fromhex(stored.sha256)).decode()}:",  # RFC 9530
        "X-Checksum-SHA256": stored.sha256,
        "Cache-Control": "public, max-age=0, must-revalidate",
        "X-Content-Type-Options": "nosniff",
    }


def not_modified(request_headers: Headers, stored: StoredFile) -> bool:
    """If-None-Match (weak comparison, `*` included) matches: the client's copy is current."""
    value = request_headers.get("if-none-match")
    if value is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in value.split(",")]
    return "*" in tags or etag(stored) in tags


def send(stored: StoredFile, request_headers: Headers, extra: dict[str, str] | None = None) -> Response:
    """The response for GET or HEAD of `stored`: 304 when the client's ETag matches, else the file
    (or the requested ranges of it)."""
    common = {**headers(stored), **(extra or {})}
    if not_modified(request_headers, stored):
        return Response(status_code=304, headers=common)
    return WeightFileResponse(stored.path, headers=common, media_type="application/octet-stream",
                              filename=stored.filename, stat_result=os.stat(stored.path))
