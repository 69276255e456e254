"""uvicorn's server, with an end for connections that hold a socket without making progress.

Requests that never come: a connection must send each request's headers within HEADERS_S of opening (or of
its last response). uvicorn waits for them for ever, so clients that open connections and send nothing, or a
header line now and then (slowloris), could hold every file descriptor the process may open. Likewise a
request body that stops arriving ends its connection, and so does one that keeps coming too slowly to ever end
(a byte a minute: "slow POST"). As Apache's mod_reqtimeout does, a body has BODY_IDLE_S from when the server
starts reading it, plus one second for each BODY_MIN_BPS bytes received, banked up to BODY_CREDIT_MAX_S ahead:
a client that keeps that rate on average may pause between blocks (curl --limit-rate sends 64 KiB, then sleeps),
and one that stops after a fast start is cut within BODY_CREDIT_MAX_S.

Readers that stop: a download whose client takes nothing is dropped by the app after `httpfiles.STALL_S`,
but ASGI gives the app no way to abort a connection: uvicorn's close first sends what is queued (a few MB in
the kernel), so the socket stayed open for as long as the client kept it. TCP_USER_TIMEOUT on the listening
socket, which every accepted connection inherits (Linux), has the kernel abort a connection whose sent data
stays unacknowledged, or whose client's receive window stays shut, for CONNECTION_TIMEOUT_S: a reader that
stopped, or a peer that vanished without a FIN or an RST (by default the kernel retransmits for about 15
minutes). Idle keep-alive connections and slow readers that take data now and then are not affected.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from uvicorn.server import STARTUP_FAILURE

from zoo import httpfiles, lifecycle

CONNECTION_TIMEOUT_S = httpfiles.STALL_S + 15  # after the app's own drop, which logs why
HEADERS_S = 20.0  # nginx's client_header_timeout is 60 s; a request's headers travel in one packet or a few
BODY_IDLE_S = 60.0  # a body's first allowance (nginx's client_body_timeout is 60 s between two reads)
BODY_MIN_BPS = 500.0  # mod_reqtimeout's MinRate: each 500 bytes of a body give it one more second
BODY_CREDIT_MAX_S = 180.0  # the furthest ahead those seconds bank: above a 64 KiB block at 500 B/s (131 s)
CUT_OFF = "a request was cut off: its client left, or sent its body too slowly or not at all"


class Server(uvicorn.Server):
    """`uvicorn.Server` with the header deadline and, on its listening TCP sockets, TCP_USER_TIMEOUT (see the
    module's docstring); while it shuts down, `lifecycle.stopping()` is true."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        lifecycle.serve_again()
        self.config.http_protocol_class = _with_header_deadline(self.config.http_protocol_class)
        errors = logging.getLogger("uvicorn.error")
        if not any(isinstance(f, _OneLineForCutOffBodies) for f in errors.filters):
            errors.addFilter(_OneLineForCutOffBodies())
        await super().startup(sockets)
        for server in getattr(self, "servers", []):
            for sock in server.sockets or ():
                limit_unacknowledged(sock, CONNECTION_TIMEOUT_S)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # long jobs end now, saying why; the flag stays set (a job queued behind a request that outlived its
        # connection must still see it) until a server starts again in this process (tests)
        lifecycle.begin_shutdown(self.config.timeout_graceful_shutdown)
        await super().shutdown(sockets)


class _OneLineForCutOffBodies(logging.Filter):
    """A route reading a body its client cut off (it left, or sent the body too slowly: BODY_IDLE_S, BODY_MIN_BPS)
    raises Starlette's ClientDisconnect, which uvicorn logged as an error with a 60-line traceback (Gradio's
    upload route does not catch it): one warning line instead, so hostile uploads cannot flood the log. A
    download broken off because the file's bytes no longer hash to its ETag (`httpfiles.DigestMismatch`, raised
    on purpose: ASGI has no other way to end a response short) is not logged again: its one error line, naming
    the file and both hashes, was written when it was found."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, httpfiles.DigestMismatch):
            return False
        if isinstance(exc, ClientDisconnect):
            record.msg, record.args = CUT_OFF, ()
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _with_header_deadline(protocol_class: type) -> type:
    """uvicorn's HTTP protocol (h11 or httptools), closing a connection that has not started a request within
    HEADERS_S of opening or of its last response, or whose request body falls behind its deadline: BODY_IDLE_S
    after the server starts reading it, one second later for each BODY_MIN_BPS bytes, never more than
    BODY_CREDIT_MAX_S ahead (time the app is not reading does not count). A request has started when the
    protocol made a new cycle for it; how long the request then takes (an upload that keeps up that rate, a long
    download) is not limited here."""
    if getattr(protocol_class, "headers_s_applied", False):
        return protocol_class

    class Protocol(protocol_class):
        headers_s_applied = True

        headers_timer = None  # armed while the connection waits for a request
        body_timer = None  # armed while a request's body is coming in
        body_of = None  # the cycle whose body `body_deadline` is for
        body_deadline = 0.0

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._await_headers()

        def connection_lost(self, exc) -> None:
            super().connection_lost(exc)
            for timer in (self.headers_timer, self.body_timer):  # a pending timer would keep this object alive
                if timer is not None:
                    timer.cancel()
            self.headers_timer = self.body_timer = self.body_of = None

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._time_body(len(data))

        def _time_body(self, received: int) -> None:
            """Start or extend the clock of the body being read, if one is: `received` bytes just came (the
            read that starts a body may hold its headers too, and counts whole)."""
            if not self._body_incoming():
                return
            now = self.loop.time()
            if self.body_of is not self.cycle:  # a new request's body: its own deadline
                self.body_of, self.body_deadline = self.cycle, now + BODY_IDLE_S
                if self.body_timer is not None:  # the last body's check may lie further ahead than this one's
                    self.body_timer.cancel()
                    self.body_timer = None
            self.body_deadline = min(self.body_deadline + received / BODY_MIN_BPS, now + BODY_CREDIT_MAX_S)
            if self.body_timer is None:  # the deadline only moves on from here: the check reschedules itself
                self._check_body_at_deadline(now)

        def _check_body_at_deadline(self, now: float) -> None:
            self.body_timer = self.loop.call_later(self.body_deadline - now, self._body_due)

        def _body_incoming(self) -> bool:
            cycle = self.cycle
            return (
                cycle is not None
                and cycle.more_body
                and not cycle.response_complete
                and not self.transport.is_closing()
            )

        def _body_due(self) -> None:
            self.body_timer = None
            if not self._body_incoming():
                return
            now = self.loop.time()
            if self.flow.read_paused:  # the app has not taken what came: not the client's delay
                self.body_deadline = max(self.body_deadline, now + BODY_IDLE_S)
            if now >= self.body_deadline:
                self.transport.close()  # the app's next receive() gets http.disconnect
            else:
                self._check_body_at_deadline(now)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # a pipelined request, started from what was already read: its body's clock starts now, though no
            # byte may ever come again to start it in data_received (for any other request this changes nothing)
            self._time_body(0)
            self._await_headers()

        def _waiting(self) -> bool:  # for a request: none yet, or the last one answered (not upgraded away)
            return (
                not self.transport.is_closing()
                and self.transport.get_protocol() is self
                and (self.cycle is None or self.cycle.response_complete)
            )

        def _await_headers(self) -> None:
            if self.headers_timer is not None:  # one timer per connection, however many requests it makes
                self.headers_timer.cancel()
                self.headers_timer = None
            if self._waiting():  # (a pipelined request may have started already)
                self.headers_timer = self.loop.call_later(HEADERS_S, self._headers_due, self.cycle)

        def _headers_due(self, waited_on) -> None:
            self.headers_timer = None
            if self.cycle is waited_on and self._waiting():
                self.transport.close()

    Protocol.__name__ = Protocol.__qualname__ = protocol_class.__name__
    return Protocol


BODY_MAX = 1024 * 1024  # a request body other than an upload: a queue call is a few hundred bytes of JSON


class _TooLarge(HTTPException):
    """Raised while a body is read: an HTTPException, so a framework that parses the body (FastAPI answers 400
    to any other error there) answers it with its 413 and this message, and otherwise `BodyLimit` does."""

    def __init__(self, message: str):
        super().__init__(status_code=413, detail=message)


class BodyLimit:
    """ASGI middleware: a request body other than the routes `exempt` picks (Gradio's upload route, which has
    ZOO_MAX_UPLOAD_MB and ZOO_UPLOADS_MAX_MB) is at most `most` bytes. A body declared longer is answered 413
    before it is read; one that comes without a length (chunked) is cut, with the same 413, when it passes
    `most`. Without this, a queue call carrying 200 MiB of JSON was read whole, kept, and written to the log."""

    def __init__(self, app: Any, most: int = BODY_MAX, exempt: Callable[[dict], bool] = lambda scope: False):
        self.app, self.most, self.exempt = app, most, exempt

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.exempt(scope):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > self.most:
            await self._refuse(send, int(declared))
            return
        received, started = 0, False

        async def limited() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.most:
                    raise _TooLarge(self._message(None))
            return message

        async def watched(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, watched)
        except _TooLarge:
            if started:
                raise
            await self._refuse(send, None)

    def _message(self, size: int | None) -> str:
        met = f"; this one is {size / 2**20:,.1f} MiB" if size is not None else ""
        return (f"The request body is larger than this server takes: at most {self.most // 1024:,} KiB for "
                f"anything but a file upload{met}. Files go through the upload route (ZOO_MAX_UPLOAD_MB).")

    async def _refuse(self, send: Any, size: int | None) -> None:
        body = json.dumps({"detail": self._message(size)}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def limit_unacknowledged(sock, seconds: float) -> bool:
    """Set TCP_USER_TIMEOUT on a TCP socket; False where the platform or the socket has none (e.g. a Unix
    socket, macOS)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not hasattr(socket, "TCP_USER_TIMEOUT"):
        return False
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(seconds * 1000))
    return True


def raise_open_files_limit() -> tuple[int, int] | None:
    """Raise the soft limit on open files to the hard one, as nginx's worker_rlimit_nofile and Go's runtime do:
    each connection, download and upload holds a descriptor, and many systems start processes at 1,024 (a few
    hundred browser tabs, each keeping two or three connections). Returns (soft, hard) now; None where the
    platform has no such limit."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft >= hard:
        return soft, hard
    with contextlib.suppress(ValueError, OSError):  # a hard limit above what the kernel allows (macOS): keep it
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def run(app, *, host: str, port: int, shutdown_s: float) -> None:
    """Serve `app` until SIGINT/SIGTERM, as `uvicorn.run` does (it exits with status 3 when it cannot start,
    e.g. a port in use, which uvicorn logs), with `Server`'s connection rules and the open-files limit raised."""
    raise_open_files_limit()
    config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=shutdown_s)
    server = Server(config)
    try:
        server.run()
    except KeyboardInterrupt:  # Ctrl-C: uvicorn raises it again once its graceful shutdown is over
        if server.started:
            end_now(INTERRUPTED)
    if not server.started:
        sys.exit(STARTUP_FAILURE)


INTERRUPTED = 128 + signal.SIGINT  # the shell's status for a program ended by Ctrl-C


def end_now(code: int) -> None:
    """End the process at once, as SIGTERM's default action does after uvicorn's shutdown. Returning would
    leave the interpreter waiting for threads still inside a request handler (anyio's workers are not
    daemons), past ZOO_SHUTDOWN_S. The exit handlers run first: they end any ONNX export child."""
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
