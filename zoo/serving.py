"""uvicorn's server, with a kernel-enforced end for connections whose client stops taking data.

A download whose client takes nothing is dropped by the app after `httpfiles.STALL_S`, but ASGI gives the app
no way to abort a connection: uvicorn's close first sends what is queued (a few MB in the kernel), so the
socket stayed open for as long as the client kept it. TCP_USER_TIMEOUT on the listening socket, which every
accepted connection inherits (Linux), has the kernel abort a connection whose sent data stays unacknowledged,
or whose client's receive window stays shut, for CONNECTION_TIMEOUT_S: a reader that stopped, or a peer that
vanished without a FIN or an RST (by default the kernel retransmits for about 15 minutes). Idle keep-alive
connections and slow readers that take data now and then are not affected.
"""

from __future__ import annotations

import contextlib
import socket
import sys

import uvicorn
from uvicorn.server import STARTUP_FAILURE

from zoo import httpfiles

CONNECTION_TIMEOUT_S = httpfiles.STALL_S + 15  # after the app's own drop, which logs why


class Server(uvicorn.Server):
    """`uvicorn.Server` whose listening TCP sockets carry TCP_USER_TIMEOUT (see the module's docstring)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        for server in getattr(self, "servers", []):
            for sock in server.sockets or ():
                limit_unacknowledged(sock, CONNECTION_TIMEOUT_S)


def limit_unacknowledged(sock, seconds: float) -> bool:
    """Set TCP_USER_TIMEOUT on a TCP socket; False where the platform or the socket has none (e.g. a Unix
    socket, macOS)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not hasattr(socket, "TCP_USER_TIMEOUT"):
        return False
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(seconds * 1000))
    return True


def run(app, *, host: str, port: int, shutdown_s: float) -> None:
    """Serve `app` until SIGINT/SIGTERM, as `uvicorn.run` does (it exits with status 3 when it cannot start,
    e.g. a port in use, which uvicorn logs), with `Server`'s connection rule."""
    config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=shutdown_s)
    server = Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
