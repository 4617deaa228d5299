"""What every HTTP test server in tests/ does the same way: a thread per connection and a
real server's listen backlog, keep-alive HTTP/1.1, no Nagle delay, quiet logs, every
method sent to one ``_handle``, (for servers that can cut connections on demand) the open
sockets kept in the owner's ``_sockets``, and the faults a test asks for with the traffic
they met (:class:`Faults`)."""

from __future__ import annotations

import collections
import http.server
import socket
import threading
from collections.abc import Callable, Hashable
from typing import Any, Generic, Protocol, TypeVar


class Rule(Protocol):
    remaining: int  # the requests it still applies to


R = TypeVar("R", bound=Rule)


class Faults(Generic[R]):
    """A test server's faults and traffic: the rules a test added (``fail_next``,
    ``hang_next``, ...), each taken by the first matching requests, first come first served;
    the requests in flight and their peak; the status of every answer (0: dropped)."""

    def __init__(self) -> None:
        self._faults_lock = threading.Lock()  # never held while a handler sleeps
        self._rules: list[R] = []
        self._status_counts: collections.Counter[tuple[Hashable, int]] = collections.Counter()
        self._in_flight = 0
        self._max_in_flight = 0

    def clear_faults(self) -> None:
        with self._faults_lock:
            self._rules.clear()

    @property
    def status_counts(self) -> dict[tuple[Any, int], int]:
        """``{(endpoint, status): n}`` for every answer sent (drops are status 0)."""
        with self._faults_lock:
            return dict(self._status_counts)

    @property
    def in_flight(self) -> int:
        with self._faults_lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """Peak number of requests being served at the same time since the last reset."""
        with self._faults_lock:
            return self._max_in_flight

    def _add_rule(self, rule: R) -> None:
        if rule.remaining < 1:
            raise ValueError("n must be >= 1")
        with self._faults_lock:
            self._rules.append(rule)

    def _take_rule_where(self, matches: Callable[[R], bool]) -> R | None:
        """The first rule that ``matches``, one of its requests used up."""
        with self._faults_lock:
            for rule in self._rules:
                if rule.remaining > 0 and matches(rule):
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._rules.remove(rule)
                    return rule
        return None

    def _entered(self) -> None:
        with self._faults_lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _left(self, endpoint: Hashable, status: int) -> None:
        with self._faults_lock:
            self._in_flight -= 1
            self._status_counts[(endpoint, status)] += 1

    def _reset_traffic(self) -> None:
        with self._faults_lock:
            self._status_counts.clear()
            self._max_in_flight = self._in_flight


class Server(http.server.ThreadingHTTPServer):
    """A thread per connection. socketserver's listen backlog is 5: a run that opens dozens
    of connections at once (vec2pg's probes open 64) then has some reset, which no real
    server does (Qdrant's actix listens with 2,048, nginx 511). ThreadingHTTPServer's threads
    are daemons and it reuses its address already."""

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
