"""Sending a file over HTTP to the letter of RFC 9110: a strong ETag, Last-Modified, the conditional
requests (If-Match and If-Unmodified-Since → 412; If-None-Match and If-Modified-Since → 304), single and
multiple byte ranges (206; 416 as a JSON error with `Content-Range: bytes */N`; If-Range), HEAD with
GET's headers, 1 MiB chunks."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import email.utils
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from pathlib import Path
from typing import Protocol

from starlette.datastructures import Headers
from starlette.responses import FileResponse, MalformedRangeHeader, RangeNotSatisfiable, Response
from starlette.types import Receive, Scope, Send

from zoo import durable, inference, integrity
from zoo.apierrors import error
from zoo.settings import get_settings

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024  # Starlette's 64 KiB default streams ~5x slower over loopback (PERF-NOTES)
AHEAD = 3  # chunks read and hashed ahead of the one being sent: the hash (the slowest step) never waits
# a paced download sends its chunks in pieces: with N downloads sharing the pace, each waits N x 2.6 ms between
# pieces at 25 MB/s, not N x 42 ms per MiB (and never more than _SharedPace.MAX_WAIT_S)
PACED_PIECE = 64 * 1024
# what a download refused for ZOO_MAX_DOWNLOADS is told to wait (Hub clients retry on 429, five times): when the
# bodies in flight have moved for long enough, the time until the first of them should end, within these bounds
RETRY_AFTER_S = 5  # when no estimate can be made yet
RETRY_AFTER_MAX_S = 60
ESTIMATE_AFTER_S = 2.0  # a body's rate over its first seconds says little (kernel buffers fill at once)
REFUSALS_LOGGED_EVERY_S = 10.0  # a flood of refused downloads logs a line this often, not one per request
# a download whose client has not taken one message (a 1 MiB chunk, or a 64 KiB piece while paced) after this long is
# dropped and its place freed: a floor of about 17 KB/s. uvicorn's send waits for its write buffer to drain, so this
# is a rate, not "nothing taken" (a steady 13 KB/s reader is dropped too). ASGI gives no way to abort the
# connection itself: the kernel does, by `serving.CONNECTION_TIMEOUT_S` (TCP_USER_TIMEOUT), if the client still
# takes nothing.
STALL_S = 60
_SENDING = [0]  # file bodies being sent now, whole or ranges (touched on the event loop only)
_IN_FLIGHT: dict[int, list[float]] = {}  # id -> [started at, bytes to send, bytes sent, last sent at], each body
_REFUSED = {"count": 0, "logged_at": float("-inf")}


# whole-file downloads read and hash in these lanes, one thread each; a download keeps to one lane, so its reads
# (and its digest's updates) stay in order however far ahead they run
_LANES = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"zoo-download-{i}") for i in range(4)]
_LANE_LOAD = [0] * len(_LANES)  # downloads in each lane now (touched on the event loop only)


def _take_lane() -> int:
    """The lane with the fewest downloads in it (one slow disk read holds up only its own lane's downloads)."""
    lane = min(range(len(_LANES)), key=_LANE_LOAD.__getitem__)
    _LANE_LOAD[lane] += 1
    return lane


async def _disconnect(receive: Receive) -> None:
    """Returns when the client has gone (ASGI `http.disconnect`, or the server cannot tell any more)."""
    with contextlib.suppress(Exception):
        while (await receive())["type"] != "http.disconnect":
            pass
_pause = asyncio.sleep  # a download's pace while classifications run (its own name: tests count the pauses)
_clock = time.monotonic


class _SharedPace:
    """One budget for every whole-file download of the process while classifications run: a chunk sent takes
    the next len / rate seconds of it, so N downloads share ZOO_BUSY_DOWNLOAD_MBPS between them instead of
    taking N times it (the CPU that reading, hashing and sending them costs stays bounded however many clients
    download). At most SLACK_S of credit is kept (what timer overshoot and the sends themselves cost, so one
    download alone still gets the whole pace); no wait is longer than MAX_WAIT_S, so with very many downloads each
    still moves (64 KiB a second at least) and no client times out. Used on the event loop only."""

    SLACK_S = 0.02
    MAX_WAIT_S = 1.0

    def __init__(self) -> None:
        self.free_at = 0.0

    def wait_after(self, nbytes: int, mbps: float) -> float:
        """Seconds to wait after sending `nbytes`, for all paced downloads together to keep to `mbps` MB/s."""
        now = _clock()
        self.free_at = max(now - self.SLACK_S, self.free_at) + nbytes / (mbps * 1e6)
        self.free_at = min(self.free_at, now + self.MAX_WAIT_S)  # beyond the cap, no debt for later downloads
        return max(self.free_at - now, 0.0)


_PACE = _SharedPace()


class Servable(Protocol):
    """A regular file on disk with a known SHA-256 (a stored weight, or a file of a mirrored repo)."""

    path: Path
    sha256: str
    size: int
    mtime: float

    @property
    def filename(self) -> str: ...


class _Stalled(Exception):
    """One message was not taken within STALL_S."""


def _patient(send: Send, progress: list[float]) -> Send:
    """`send`, giving up (`_Stalled`) when one message waits STALL_S for the client to take what is queued, and
    counting into `progress` ([started at, bytes to send, bytes sent, last sent at]) the body and what has gone."""

    async def patient(message: dict) -> None:
        if message["type"] == "http.response.start":
            length = Headers(raw=message.get("headers", [])).get("content-length", "")
            progress[1] = int(length) if length.isdigit() else 0
        try:
            async with asyncio.timeout(STALL_S):
                await send(message)
        except TimeoutError:
            raise _Stalled from None
        progress[2] += len(message.get("body", b""))
        progress[3] = _clock()

    return patient


def _retry_after() -> int:
    """Seconds until a place among ZOO_MAX_DOWNLOADS should free: the soonest end of a body in flight, at the
    rate it has gone so far or when it is dropped for stalling (STALL_S after it last moved), whichever comes
    first; bodies under ESTIMATE_AFTER_S old or with nothing sent give no estimate. Between 1 and
    RETRY_AFTER_MAX_S; RETRY_AFTER_S when there is no estimate."""
    now, ends = _clock(), []
    for started, total, sent, moved in _IN_FLIGHT.values():
        if now - started >= ESTIMATE_AFTER_S and 0 < sent <= total:
            ends.append(min((total - sent) / (sent / (now - started)), STALL_S - (now - moved)))
    if not ends:
        return RETRY_AFTER_S
    return max(1, min(RETRY_AFTER_MAX_S, math.ceil(min(ends))))


class DigestMismatch(RuntimeError):
    """The bytes just streamed do not hash to the ETag sent before them: the connection is broken off."""


class WeightFileResponse(FileResponse):
    """Starlette's FileResponse (ranges, If-Range) with large chunks; a Range in a unit other than bytes, or
    one that does not parse, ignored (RFC 9110 §14.2) instead of a 400; no satisfiable range → our 416.

    A whole-file body is hashed as it is sent (the next `AHEAD` chunks are read and hashed in a thread while
    this one is written) and its last chunk is sent only when the digest is `sha256`; otherwise the connection is
    broken off short of Content-Length, so no client takes a corrupted body for a complete one, and
    `condemn` runs."""

    chunk_size = CHUNK

    def __init__(self, *args, sha256: str, condemn: Callable[[str], None] | None = None, busy_mbps: float = 0.0,
                 max_sending: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.sha256, self.condemn, self.busy_mbps, self.max_sending = sha256, condemn, busy_mbps, max_sending

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The 416 for a range outside the file; HEAD; else the body, unless `max_sending` bodies are being sent
        already (then 429 with Retry-After, which `huggingface_hub` honours: each body in flight holds up to
        AHEAD + 1 chunks of memory). A client that does not take a chunk within STALL_S is dropped, so stalled
        connections cannot hold every place for ever."""
        self._receive = receive
        request = Headers(scope=scope)
        value = request.get("range")
        if value is not None and not _parses(value):
            scope = _without_range(scope)
        elif value is not None and self.stat_result is not None:
            if_range = request.get("if-range")
            try:
                if if_range is None or self._should_use_range(if_range):
                    self._parse_range_header(value, self.stat_result.st_size)
            except RangeNotSatisfiable:
                size = self.stat_result.st_size
                keep = {k: v for k, v in self.headers.items() if k in ("etag", "last-modified", "accept-ranges")}
                response = error(416, "range_not_satisfiable",
                                 f"No requested range ({value[:100]}) starts inside the file's {size} bytes.",
                                 headers={**keep, "Content-Range": f"bytes */{size}"})
                return await response(scope, receive, send)
            except MalformedRangeHeader:  # ignored (RFC 9110 §14.2): Starlette would answer a text 400
                scope = _without_range(scope)
        if scope.get("method") == "HEAD":
            return await super().__call__(scope, receive, send)
        if self.max_sending and _SENDING[0] >= self.max_sending:
            return await self._refuse(scope, receive, send)
        _SENDING[0] += 1
        progress = _IN_FLIGHT[id(self)] = [_clock(), 0, 0, _clock()]
        try:
            await super().__call__(scope, receive, _patient(send, progress))
        except _Stalled:
            log.warning("download of %s dropped: the client did not take a chunk within %g s", self.name, STALL_S)
        except asyncio.CancelledError:  # only uvicorn cancels a request, when ZOO_SHUTDOWN_S has run out
            log.warning("download of %s cut off: the server is shutting down", self.name)  # not a traceback
        finally:
            _SENDING[0] -= 1
            del _IN_FLIGHT[id(self)]

    @property
    def name(self) -> str:
        return self.filename or self.path.name

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        """Starlette's parser, except that a range starting past the end is dropped when another one in the set
        is satisfiable (RFC 9110 §14.1.2: the set is satisfiable if any of its ranges is); Starlette answered
        416 for `bytes=0-9,999999999-`. Only a set with no satisfiable range raises RangeNotSatisfiable."""
        try:
            return super()._parse_range_header(http_range, file_size)
        except RangeNotSatisfiable:
            units, _, spec = http_range.partition("=")
            parts = spec.split(",")
            kept = [part for part in parts if any(0 <= start < file_size
                                                  for start, _ in cls._parse_ranges(part, file_size))]
            if not kept or len(kept) == len(parts):
                raise
            return super()._parse_range_header(f"{units}={','.join(kept)}", file_size)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        """429 for ZOO_MAX_DOWNLOADS; logged at most every REFUSALS_LOGGED_EVERY_S, with the count since."""
        limit, now, wait = self.max_sending, _clock(), _retry_after()
        _REFUSED["count"] += 1
        if now - _REFUSED["logged_at"] >= REFUSALS_LOGGED_EVERY_S:
            log.warning("%d download(s) refused since the last such line, %s the latest: %d files are being sent "
                        "(ZOO_MAX_DOWNLOADS=%d)", _REFUSED["count"], self.name, _SENDING[0], limit)
            _REFUSED.update(count=0, logged_at=now)
        response = error(429, "too_many_downloads", f"The server is sending {_SENDING[0]} files already, the most "
                         f"it sends at once (ZOO_MAX_DOWNLOADS={limit}); try again in {wait} s.",
                         headers={"Retry-After": str(wait)})
        await response(scope, receive, send)

    async def _handle_simple(self, send: Send, send_header_only: bool, send_pathsend: bool) -> None:
        if send_header_only:
            return await super()._handle_simple(send, True, False)
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        loop = asyncio.get_running_loop()
        digest = hashlib.sha256()
        gone = asyncio.create_task(_disconnect(self._receive))  # a client that leaves stops the reading too
        lane = _take_lane()
        executor = _LANES[lane]
        try:
            with open(self.path, "rb", buffering=0) as f:
                durable.fault("serve-opened")

                def step() -> bytes:
                    chunk = f.read(self.chunk_size)
                    digest.update(chunk)
                    return chunk

                size, sent = os.fstat(f.fileno()).st_size, 0
                ahead = collections.deque(loop.run_in_executor(executor, step) for _ in range(AHEAD))
                try:
                    while True:
                        chunk = await ahead.popleft()
                        sent += len(chunk)
                        if not chunk or sent >= size:  # the last chunk waits for the digest
                            break
                        paced = bool(self.busy_mbps) and inference.busy()
                        while len(ahead) < (1 if paced else AHEAD):  # a paced download holds 2 chunks, not 4
                            ahead.append(loop.run_in_executor(executor, step))
                        # paced (people waiting for a classification come first): in pieces, so that many paced
                        # downloads still each move; unpaced: the chunk whole (a full slice of bytes is no copy)
                        width = PACED_PIECE if paced else len(chunk)
                        for at in range(0, len(chunk), width):
                            piece = chunk[at:at + width]
                            await send({"type": "http.response.body", "body": piece, "more_body": True})
                            if gone.done():
                                return
                            if paced:
                                await _pause(_PACE.wait_after(len(piece), self.busy_mbps))
                finally:  # the reads already queued finish before the file closes
                    beyond = await asyncio.gather(*ahead, return_exceptions=True)
                for extra in beyond:
                    if isinstance(extra, BaseException):
                        raise extra
                if chunk and (beyond[0] if beyond else await loop.run_in_executor(executor, step)):
                    digest.update(b"grew")  # the file grew: not the bytes of the ETag
        finally:
            _LANE_LOAD[lane] -= 1
            gone.cancel()
        actual = digest.hexdigest()
        if actual != self.sha256:
            log.error("%s: the bytes read hash to %s, not %s; connection broken off before the end", self.path,
                      actual[:16], self.sha256[:16])
            if self.condemn is not None:
                self.condemn(actual)
            raise DigestMismatch(f"{self.path.name}: the bytes do not match the ETag")
        await send({"type": "http.response.body", "body": chunk, "more_body": False})


MAX_RANGE_DIGITS = 18


def _without_range(scope: Scope) -> Scope:
    """The request without its Range header: one that is not understood is ignored (RFC 9110 §14.2)."""
    return {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"range"]}


def _parses(value: str) -> bool:
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        return False
    for part in spec.split(","):
        first, dash, last = (p.strip() for p in part.partition("-"))
        # ASCII digits only: str.isdigit() takes "²" (a Latin-1 header byte), which int() then refuses (a 500); and
        # at most MAX_RANGE_DIGITS of them: int() refuses over 4,300 digits (a 500), and no file is 10**18 bytes
        if not dash or not (first or last) or not all(
                p == "" or (p.isascii() and p.isdigit() and len(p) <= MAX_RANGE_DIGITS) for p in (first, last)):
            return False
        if first and last and int(first) > int(last):
            return False
    return True


def etag(stored: Servable) -> str:
    return f'"{stored.sha256}"'


def headers(stored: Servable, tag: str | None = None) -> dict[str, str]:
    """What every answer about this file carries (200, 206, 304, 412 and HEAD alike)."""
    return {
        "ETag": tag or etag(stored),
        "Last-Modified": email.utils.formatdate(stored.mtime, usegmt=True),
        "Repr-Digest": f"sha-256=:{base64.b64encode(bytes.fromhex(stored.sha256)).decode()}:",  # RFC 9530
        "X-Checksum-SHA256": stored.sha256,
        "Cache-Control": "public, max-age=0, must-revalidate",
        "X-Content-Type-Options": "nosniff",
    }


def _tags(value: str) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()]


def _date(value: str | None) -> float | None:
    """An HTTP-date as a POSIX time; None when absent or not a date (RFC 9110 says: ignore it then)."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def precondition(request_headers: Headers, tag: str, mtime: float) -> int | None:
    """RFC 9110 §13.2.2 for GET and HEAD: 412 (a precondition failed), 304 (the client's copy is
    current) or None (send the file). Last-Modified has one-second resolution, so the comparisons do too."""
    modified = int(mtime)
    if (value := request_headers.get("if-match")) is not None:
        if not any(t == "*" or (t == tag and not t.startswith("W/")) for t in _tags(value)):  # strong comparison
            return 412
    elif (since := _date(request_headers.get("if-unmodified-since"))) is not None and modified > since:
        return 412
    if (value := request_headers.get("if-none-match")) is not None:
        if any(t == "*" or t.removeprefix("W/") == tag.removeprefix("W/") for t in _tags(value)):  # weak
            return 304
    elif (since := _date(request_headers.get("if-modified-since"))) is not None and modified <= since:
        return 304
    return None


def send(stored: Servable, request_headers: Headers, extra: dict[str, str] | None = None, *,
         tag: str | None = None, media_type: str = "application/octet-stream") -> Response:
    """The response for GET or HEAD of `stored` (ETag `tag`, by default its SHA-256): 412 or 304 as the
    conditional headers say, else the file or the requested ranges of it. `stored` was checked against its
    hash just before (`zoo.integrity`); a whole-file body is hashed again as it is sent."""
    tag = tag or etag(stored)
    settings = get_settings()
    common = {**headers(stored, tag), **(extra or {})}
    verdict = precondition(request_headers, tag, stored.mtime)
    if verdict == 412:
        return error(412, "precondition_failed", f"The file's current version is {tag} (Last-Modified "
                     f"{common['Last-Modified']}); a precondition of the request does not hold.", headers=common)
    if verdict == 304:
        return Response(status_code=304, headers=common)
    return WeightFileResponse(stored.path, headers=common, media_type=media_type, filename=stored.filename,
                              stat_result=os.stat(stored.path), sha256=stored.sha256,
                              condemn=lambda actual: _condemn(stored, actual),
                              busy_mbps=settings.busy_download_mbps, max_sending=settings.max_downloads)


def _condemn(stored: Servable, actual: str) -> None:
    """Remember the bad hash; a file that knows how to check itself again (`recheck`) is moved aside now."""
    integrity.condemn(stored.path, actual)
    recheck = getattr(stored, "recheck", None)
    if recheck is not None:
        with contextlib.suppress(Exception):
            recheck()


def openapi(errors: dict[int | str, dict]) -> dict:
    """The route arguments that document what `send` answers, plus `errors`."""
    return {"response_class": Response, "responses": {
        200: {"content": {"application/octet-stream": {}}, "description": "The whole file"},
        206: {"content": {"application/octet-stream": {}, "multipart/byteranges": {}}, "description": "Ranges of it"},
        304: {"description": "The client's copy is current (If-None-Match, If-Modified-Since)"},
        412: {"description": "If-Match or If-Unmodified-Since does not hold"},
        416: {"description": "No requested range lies in the file; Content-Range: bytes */size"},
        429: {"description": "ZOO_MAX_DOWNLOADS files are being sent already; Retry-After says when to try again"},
        **errors}}
