"""The server's connection rule: the kernel aborts a connection whose client stops taking data (serving.py)."""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time

import pytest
from fastapi import FastAPI

from tests.liveserver import LiveServer
from zoo import httpfiles, serving

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
