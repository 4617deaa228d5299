"""What every HTTP test server in tests/ does the same way: a thread per connection and a
real server's listen backlog, keep-alive HTTP/1.1, no Nagle delay, quiet logs, every
method sent to one ``_handle``, and (for servers that can cut connections on demand) the
open sockets kept in the owner's ``_sockets``."""

from __future__ import annotations

import http.server
import socket
from typing import Any


class Server(http.server.ThreadingHTTPServer):
    """A thread per connection. socketserver's listen backlog is 5: a run that opens dozens
    of connections at once (vec2pg's probes open 64) then has some reset, which no real
    server does (Qdrant's actix listens with 2,048, nginx 511)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


class Handler(http.server.BaseHTTPRequestHandler):
    """A request handler whose subclass implements ``_handle(method)``.

    ``server.owner``, if the server has one, is the test server object: its ``_lock``
    guards ``_sockets``, the connections open now (so that a test can drop them all)."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # The headers and the body are two writes: with Nagle's algorithm the body's last
        # segment waits for the client's delayed ACK of the headers, 40 ms an answer.
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        owner = getattr(self.server, "owner", None)
        if owner is not None:
            with owner._lock:
                owner._sockets.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            owner = getattr(self.server, "owner", None)
            if owner is not None:
                with owner._lock:
                    owner._sockets.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # keep test output clean

    def _handle(self, method: str) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")
