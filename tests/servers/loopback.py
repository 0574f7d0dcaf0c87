"""The plumbing the tests' HTTP servers share: a threaded loopback server whose handler hands
every request to its owner's `handle(h)`, the Reply a route raises to answer early, and a drop
that closes a connection without a byte of answer."""
from __future__ import annotations

import contextlib
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Reply(Exception):
    """Stop handling and answer with status and body (the owner's `_answer` encodes it)."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LoopbackServer

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        self.server.owner.handle(self)

    def do_POST(self) -> None:  # noqa: N802
        self.server.owner.handle(self)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, owner: Any):
        super().__init__(("127.0.0.1", 0), Handler)
        self.owner = owner


def drop(h: Handler) -> None:
    """Close the connection without a byte of answer."""
    h.close_connection = True
    h.wfile.flush()
    with contextlib.suppress(OSError):
        h.connection.shutdown(socket.SHUT_RDWR)
