"""The server's connection rule: the kernel aborts a connection whose client stops taking data (serving.py)."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from fastapi import FastAPI, Request
from starlette.requests import ClientDisconnect

from tests.liveserver import LiveServer, free_port
from zoo import httpfiles, serving
from zoo.settings import REPO_ROOT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_USER_TIMEOUT is Linux's")


def _app(path) -> FastAPI:
    app = FastAPI()
    sha = hashlib.sha256(path.read_bytes()).hexdigest()

    @app.get("/file")
    def file():
        return httpfiles.WeightFileResponse(path, stat_result=os.stat(path), sha256=sha)

    return app


def test_listening_sockets_carry_the_connection_timeout(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"x" * 1024)
    server = LiveServer(_app(path)).start()
    try:
        sockets = [s for srv in server._server.servers for s in srv.sockets]
        assert sockets and all(
            s.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == serving.CONNECTION_TIMEOUT_S * 1000
            for s in sockets
        )
    finally:
        server.stop()
    assert serving.CONNECTION_TIMEOUT_S > httpfiles.STALL_S  # the app drops first, with its log line


def test_a_client_that_stops_reading_is_aborted_and_frees_its_place(tmp_path, monkeypatch):
    """Before: the connection, and its place among ZOO_MAX_DOWNLOADS, stayed until STALL_S (60 s), and the
    socket for as long as the client kept it open."""
    monkeypatch.setattr(serving, "CONNECTION_TIMEOUT_S", 1.5)
    path = tmp_path / "w.bin"
    path.write_bytes(os.urandom(48 << 20))  # far more than the kernel buffers on both ends hold
    server = LiveServer(_app(path)).start()
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        stalled.connect(("127.0.0.1", server.port))
        stalled.sendall(b"GET /file HTTP/1.1\r\nHost: zoo\r\n\r\n")
        assert stalled.recv(1 << 10).startswith(b"HTTP/1.1 200")
        deadline = time.monotonic() + 2
        while httpfiles._SENDING != [1] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpfiles._SENDING == [1]  # the body is in flight, the client takes nothing more
        deadline = time.monotonic() + 20
        while httpfiles._SENDING != [0] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert httpfiles._SENDING == [0], "the stalled download still holds its place"
        with pytest.raises(ConnectionResetError):  # the kernel aborted it: the client gets an RST, not the rest
            while stalled.recv(1 << 20):
                pass
    finally:
        stalled.close()
        server.stop()


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    answer = b""
    while chunk := sock.recv(1 << 16):
        answer += chunk
    return answer


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes `sock` within `seconds` (what it sends meanwhile is read and dropped)."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if sock.recv(1 << 16) == b"":
                return True
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True
    return False


def test_connections_that_send_no_request_are_closed_after_headers_s(tmp_path, monkeypatch):
    """Before: uvicorn kept a connection that sent nothing, or headers a line at a time, for ever (slowloris)."""
    monkeypatch.setattr(serving, "HEADERS_S", 1.0)
    path = tmp_path / "w.bin"
    path.write_bytes(os.urandom(3 << 20))
    server = LiveServer(_app(path)).start()
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
    try:
        silent, partial, second, downloading = socks
        partial.sendall(b"GET /file HTTP/1.1\r\nHost: zoo\r\n")  # and never the blank line
        second.sendall(b"GET /file HTTP/1.1\r\nHost: zoo\r\nRange: bytes=0-9\r\n\r\n")
        assert second.recv(1 << 12).startswith(b"HTTP/1.1 206")
        second.sendall(b"GET /file HTTP/1.1\r\n")  # a keep-alive connection's next request, never finished
        # a request whose headers came in time is not timed: a download slower than HEADERS_S completes
        downloading.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        downloading.sendall(b"GET /file HTTP/1.1\r\nHost: zoo\r\n\r\n")
        started, got = time.monotonic(), b""
        while len(got) < path.stat().st_size or b"\r\n\r\n" not in got[:4096]:
            got += downloading.recv(1 << 16)
            time.sleep(0.02)  # about 3 MB/s: takes longer than HEADERS_S
        assert time.monotonic() - started > 1.0 and got.endswith(path.read_bytes()[-1000:])
        for sock in (silent, partial, second):
            assert _closed_within(sock, 3.0)
    finally:
        for sock in socks:
            sock.close()
        server.stop()


def _body_server(monkeypatch, got: list, credit_max_s: float = 180.0) -> LiveServer:
    """A live `_body_reader(got)` with body timing scaled down: BODY_IDLE_S = 1 s, BODY_MIN_BPS = 100."""
    monkeypatch.setattr(serving, "BODY_IDLE_S", 1.0)
    monkeypatch.setattr(serving, "BODY_MIN_BPS", 100.0)
    monkeypatch.setattr(serving, "BODY_CREDIT_MAX_S", credit_max_s)
    return LiveServer(_body_reader(got)).start()


def _upload_head(length: int) -> bytes:
    return b"POST /upload HTTP/1.1\r\nHost: zoo\r\nContent-Length: %d\r\n\r\n" % length


def _json_answer(sock: socket.socket) -> bytes:
    """One HTTP 200 answer with a JSON object body, read whole (its head and body may come apart)."""
    sock.settimeout(5)
    answer = sock.recv(1 << 12)
    while answer and not answer.endswith(b"}"):
        answer += sock.recv(1 << 12)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    return answer


def _handled(got: list, n: int) -> list:
    """`got` once it holds `n` entries (within 5 s): a handler sees a disconnect a moment after the close."""
    deadline = time.monotonic() + 5
    while len(got) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


def _body_reader(got: list) -> FastAPI:
    """An app whose POST /upload reads the whole body: `got` receives its length, or "disconnected"."""
    app = FastAPI()

    @app.post("/upload")
    async def upload(request: Request):
        try:
            got.append(len(await request.body()))
        except ClientDisconnect:
            got.append("disconnected")
        return {"bytes": got[-1]}

    @app.get("/ping")
    async def ping():
        return {}

    return app


def test_a_request_body_that_stops_arriving_ends_its_connection(tmp_path, monkeypatch):
    """Before: an upload that sent part of its body and then nothing held its connection and its task for ever."""
    got: list = []
    server = _body_server(monkeypatch, got)  # the trickle below comes at 333 bytes/s
    head = _upload_head(1000)
    stalled, trickling = (socket.create_connection(("127.0.0.1", server.port)) for _ in range(2))
    try:
        stalled.sendall(head + b"x" * 100)  # then nothing
        trickling.sendall(head)
        for _ in range(10):  # 100 bytes every 0.3 s: slow, but it keeps coming
            trickling.sendall(b"y" * 100)
            time.sleep(0.3)
        answer = trickling.recv(1 << 12)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"bytes":1000}')
        assert _closed_within(stalled, 3.0)
        assert sorted(got, key=str) == [1000, "disconnected"]  # the stalled one's handler saw the disconnect
    finally:
        stalled.close()
        trickling.close()
        server.stop()


def test_a_request_body_that_comes_too_slowly_to_end_is_cut(monkeypatch):
    """Before: a body sent a few bytes at a time, never BODY_IDLE_S apart ("slow POST": a byte a minute), held its
    connection for as long as the client liked. Now a body has BODY_IDLE_S plus a second per BODY_MIN_BPS bytes
    (the trickle in the test above, faster than that rate, completes)."""
    got: list = []
    server = _body_server(monkeypatch, got)
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(_upload_head(1000))
            sock.settimeout(0.25)
            start, closed = time.monotonic(), False
            while not closed and time.monotonic() - start < 6:  # 10 bytes every 0.25 s: never idle for 1 s
                try:
                    sock.sendall(b"z" * 10)
                    closed = sock.recv(1 << 12) == b""
                except TimeoutError:
                    continue
                except OSError:
                    closed = True
            elapsed = time.monotonic() - start
        assert closed and elapsed < 3.0, elapsed  # deadline: 1 s + 1 s per 100 bytes, at 40 bytes/s about 1.7 s
        assert _handled(got, 1) == ["disconnected"]
    finally:
        server.stop()


def test_a_pipelined_body_that_never_comes_is_cut_and_a_body_sent_with_its_headers_counts(monkeypatch):
    """Found by an adversarial round: (1) a request pipelined behind another, its body cut short, then silence,
    held its connection for ever (h11 parses it when the first response ends, and no byte came to start its
    body's clock); (2) body bytes in the read that carried the headers earned no time, so a client that sends
    both in one write (http.client does) was cut at BODY_IDLE_S although its rate was well above BODY_MIN_BPS."""
    got: list = []
    server = _body_server(monkeypatch, got)
    head = _upload_head(400)
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: zoo\r\n\r\n" + head + b"x" * 10)  # then nothing
            assert _closed_within(sock, 4.0)
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(head + b"y" * 300)  # 3 s of credit: then a byte every 0.5 s, never idle for 1 s
            for _ in range(5):
                time.sleep(0.5)
                sock.sendall(b"y")
            sock.sendall(b"y" * 95)
            assert _json_answer(sock).endswith(b'{"bytes":400}')
        assert got == ["disconnected", 400]
    finally:
        server.stop()


def test_a_body_sent_in_blocks_may_pause_on_its_credit_up_to_a_cap(monkeypatch):
    """Found by an adversarial round: curl --limit-rate 1k sends an upload in 64 KiB blocks, sleeping 64 s
    between them, and was cut by a separate "no byte for 60 s" rule although it averaged twice BODY_MIN_BPS.
    Now the seconds a body's bytes earn carry over a pause, banked up to BODY_CREDIT_MAX_S ahead, so a body that
    stops after a fast start is still cut within that."""
    got: list = []
    server = _body_server(monkeypatch, got, credit_max_s=3.0)
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(_upload_head(600) + b"b" * 200)
            for _ in range(2):  # blocks of 200 bytes 1.5 s apart: 133 bytes/s, pauses longer than BODY_IDLE_S
                time.sleep(1.5)
                sock.sendall(b"b" * 200)
            assert _json_answer(sock).endswith(b'{"bytes":600}')
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            start = time.monotonic()  # 10,000 bytes earn 100 s, but no more than 3 s bank
            sock.sendall(_upload_head(20000) + b"c" * 10_000)
            assert _closed_within(sock, 6.0)
            assert 2.5 < time.monotonic() - start < 5.0
        assert _handled(got, 2) == [600, "disconnected"]
    finally:
        server.stop()


def test_a_later_body_on_a_connection_keeps_its_own_deadline(monkeypatch):
    """The check for an earlier body on a keep-alive connection may lie far ahead (its bytes banked credit); a
    later body that stops must still be cut on its own deadline, not at that check."""
    got: list = []
    server = _body_server(monkeypatch, got, credit_max_s=8.0)
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(_upload_head(2000) + b"d" * 1000)
            time.sleep(1.3)  # its first check (at 1 s) finds it coming and looks again at its deadline, 8 s ahead
            sock.sendall(b"d" * 1000)
            assert _json_answer(sock).endswith(b'{"bytes":2000}')
            start = time.monotonic()
            sock.sendall(_upload_head(2000) + b"e" * 10)
            assert _closed_within(sock, 10.0)
            assert time.monotonic() - start < 4.0  # its own deadline: 1 s + about 0.7 s
        assert _handled(got, 2) == [2000, "disconnected"]
    finally:
        server.stop()


def test_the_open_files_limit_is_raised_to_the_hard_limit():
    """Every connection holds a descriptor: a server started under a soft limit of 256 (many systems start at
    1,024) raises it to the hard limit."""
    import resource
    import subprocess

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit here is {hard}")
    code = "from zoo import serving; print(*serving.raise_open_files_limit())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)),
    ).stdout.split()
    expected = 256 if hard == resource.RLIM_INFINITY else hard
    assert [int(v) for v in out] == [expected, hard]


def test_a_range_with_a_latin_1_digit_is_ignored_not_a_500(tmp_path):
    """(zoo.httpfiles) Header values are Latin-1: "²" (0xB2) passed str.isdigit, then failed int() (a 500 and a
    traceback), and `bytes=²-` got Starlette's plain-text 400. RFC 9110 §14.2: a Range that does not parse is
    ignored. A live server: the test client re-encodes such a byte as UTF-8."""
    path = tmp_path / "w.bin"
    path.write_bytes(os.urandom(5000))
    server = LiveServer(_app(path)).start()
    try:
        for value in (b"bytes=0-\xb2", b"bytes=\xb2-", b"bytes=\xb3-\xb9", b"bytes=0-9,\xb9-"):
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(b"GET /file HTTP/1.1\r\nHost: zoo\r\nConnection: close\r\nRange: " + value + b"\r\n\r\n")
                answer = _read_all(sock)
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(path.read_bytes()), value
    finally:
        server.stop()


def test_an_upload_cut_off_leaves_a_file_that_the_sweeper_removes(tmp_path, monkeypatch, caplog):
    """(zoo.uploads) Gradio streams an upload into a top-level tmp* file and moves it into its cache only when the
    body is complete; an upload whose client stopped left that file for ever (300 cut-off uploads, 300 files,
    still there after twice ZOO_UPLOAD_TTL_S). build_app starts a sweeper for the upload folder."""
    from pathlib import Path

    from app import build_app
    from zoo import uploads

    monkeypatch.setattr(serving, "BODY_IDLE_S", 1.0)
    monkeypatch.setattr(serving, "BODY_CREDIT_MAX_S", 1.0)  # the 5 KB sent earn no more
    server = LiveServer(build_app()).start()
    folder = Path(os.environ["GRADIO_TEMP_DIR"])
    assert folder in uploads._SWEEPERS and uploads._SWEEPERS[folder].is_alive()
    before = set(folder.glob("tmp*"))
    sock = socket.create_connection(("127.0.0.1", server.port))
    try:
        boundary = b"zooboundary"
        part = (
            b"--" + boundary + b'\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + b"\x89PNG" + b"x" * 5000
        )
        sock.sendall(
            b"POST /gradio_api/upload HTTP/1.1\r\nHost: zoo\r\nContent-Length: 1000000\r\n"
            b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n\r\n" + part
        )
        errors = logging.getLogger("uvicorn.error")  # does not propagate to the root logger caplog listens on
        errors.addHandler(caplog.handler)
        try:
            assert _closed_within(sock, 5.0)  # its body's deadline ended it
            deadline = time.monotonic() + 3
            while not caplog.records and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            errors.removeHandler(caplog.handler)
        # Gradio's upload route does not catch the disconnect: one line, not a 60-line error traceback
        assert [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records if r.name == "uvicorn.error"] == [
            ("WARNING", serving.CUT_OFF, None)
        ]
        left = set(folder.glob("tmp*")) - before
        assert len(left) == 1 and next(iter(left)).stat().st_size >= 5000  # the partial file, left behind
        assert uploads.sweep_abandoned(folder, older_than_s=3600) == 0  # too new: could be an upload going on
        time.sleep(1.1)
        assert uploads.sweep_abandoned(folder, older_than_s=1.0) >= 1 and not set(folder.glob("tmp*")) & left
    finally:
        sock.close()
        server.stop()


def test_the_sweeper_keeps_what_is_not_an_abandoned_upload(tmp_path):
    from zoo import uploads

    old = time.time() - 100
    for name in ("tmpold", "tmpnew", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "abc123").mkdir()
    (tmp_path / "abc123" / "tmpcached.png").write_bytes(b"x")  # a completed upload in Gradio's cache
    (tmp_path / "tmpdir").mkdir()
    for path in (tmp_path / "tmpold", tmp_path / "notes.txt", tmp_path / "abc123" / "tmpcached.png"):
        os.utime(path, (old, old))
    assert uploads.sweep_abandoned(tmp_path, older_than_s=50) == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["abc123", "notes.txt", "tmpcached.png", "tmpdir", "tmpnew"]
    assert uploads.sweep_abandoned(tmp_path / "missing", older_than_s=1) == 0
    # a slow upload in progress: Gradio writes through a 4 KiB buffer, so its file's mtime can be old while it is open
    with open(tmp_path / "tmpslow", "wb") as going_on:
        going_on.write(b"x")
        going_on.flush()
        os.utime(tmp_path / "tmpslow", (old, old))
        if sys.platform.startswith("linux"):
            assert uploads.sweep_abandoned(tmp_path, older_than_s=50) == 0 and (tmp_path / "tmpslow").exists()
    assert uploads.sweep_abandoned(tmp_path, older_than_s=50) == 1  # closed (and abandoned): swept


def test_the_page_status_call_without_a_host_header_is_not_a_500():
    """HTTP/1.0 clients may send no Host: the page's status call read request.headers["host"] (KeyError, a 500)."""
    from app import build_app

    server = LiveServer(build_app()).start()
    try:
        body = b'{"data": []}'
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                b"POST /gradio_api/run/status HTTP/1.0\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            answer = _read_all(sock)
        assert answer.startswith(b"HTTP/1.1 200") and b"127.0.0.1" in answer, answer[:300]
    finally:
        server.stop()


def test_ctrl_c_ends_the_server_within_its_grace_while_a_handler_still_runs(tmp_path):
    """uvicorn raises Ctrl-C again once its graceful shutdown is over; the interpreter then waited for the
    worker threads still inside a handler (a 60 s one here) before it exited."""
    port = free_port()
    code = (
        "import time\nfrom fastapi import FastAPI\nfrom zoo import serving\napp = FastAPI()\n"
        "@app.get('/slow')\ndef slow():\n    print('handling', flush=True)\n    time.sleep(60)\n"
        f"serving.run(app, host='127.0.0.1', port={port}, shutdown_s=1)\n"
    )
    script = tmp_path / "serve.py"
    script.write_text(code)
    server = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        for _ in range(200):
            try:
                client = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        client.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert server.stdout.readline() == "handling\n"
        server.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        assert server.wait(timeout=30) == 128 + signal.SIGINT
        assert time.monotonic() - t0 < 10  # the 1 s grace, then at once: not the handler's 60 s
    finally:
        server.kill()
        server.wait()


def test_a_download_broken_off_for_a_changed_file_is_not_logged_again_with_a_traceback():
    """uvicorn logged the deliberate DigestMismatch as 'Exception in ASGI application' with ~70 lines of
    traceback, after httpfiles' own one-line error (found by an adversarial pass)."""
    def record(exc: BaseException) -> logging.LogRecord:
        try:
            raise exc
        except BaseException:
            info = sys.exc_info()
        return logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application", (), info)

    keep = serving._OneLineForCutOffBodies()
    assert keep.filter(record(httpfiles.DigestMismatch("x.safetensors: the bytes do not match the ETag"))) is False
    other = record(RuntimeError("a real bug"))
    assert keep.filter(other) is True and other.exc_info is not None and other.levelname == "ERROR"
