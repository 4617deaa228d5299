"""A small Qdrant REST server for tests, backed by qdrant-client's local mode.

No Qdrant server binary can be installed here, so this speaks enough of Qdrant's REST wire
format for the real ``qdrant_client.QdrantClient(url=..., api_key=...)`` (REST, not gRPC) to
run ``get_collection``, ``get_collections``, ``collection_exists``, ``count``, ``scroll`` and
``retrieve`` against it, plus the ``GET /`` version probe the client sends on construction.

The data and its semantics (id order, ``next_page_offset``, named / sparse / multi vectors,
payloads) are those of a local-mode client the test seeds directly::

    local = QdrantClient(":memory:")          # or QdrantClient(path=...), or path= below
    local.create_collection(...); local.upsert(...)
    with QdrantServer(local, api_key="secret") as server:
        client = QdrantClient(url=server.url, api_key="secret", timeout=5)
        server.fail_next(2, status=503)       # next two requests answer 503
        server.hang_next(1, seconds=3)        # next request stalls 3 s before answering
        server.latency = 0.05                 # added to every request
        server.count("/points/scroll")        # requests seen whose path contains this

Fault injection is settable at any time from the test thread.  Faults without
``path_contains`` apply to every path except the root version probe ``GET /`` (which the
client sends from a background thread on construction, racing the test's first request);
give ``path_contains`` to target a path, e.g. ``path_contains="/points/scroll"``.

Authentication mimics Qdrant >= 1.9: ``/``, ``/healthz``, ``/livez``, ``/readyz`` need no key;
otherwise a missing key answers 401 ``Must provide an API key or an Authorization bearer
token`` and a wrong key 401 ``Invalid API key or JWT`` (plain text bodies).  Set
``auth_status = 403`` to mimic older servers, which answered 403 Forbidden instead.  A
``read_only_api_key`` may read; writes with it would get 403 ``Write access denied`` (this
server only implements reads).

The data can instead come from ``QdrantStore``s (``qdrant_store.py``: one read-only
collection each, fast at 200,000 points), answered as a Qdrant server writes them: float32
vectors in their shortest text (local mode's answers hold float64 text, 1.7 times as
long)::

    with QdrantServer(QdrantStore.bench("docs", 20_000, 1024)) as server: ...

``python tests/qdrant_server.py --collection bench:20000 --dim 1024 --latency 0.05
[--grpc-port 0] [--api-key K]`` serves stores (``--bench``: the benchmark's records, else
``QdrantStore.synthetic``'s) in a process of its own, over REST and, with ``--grpc-port``,
over gRPC too (``qdrant_grpc_server.py``, from the same stores); it prints one JSON line,
``{"url": ..., "port": ..., "grpc_port": ...}``, and on SIGTERM or SIGINT its statistics as
one JSON line on stderr.

Standard library, qdrant-client and orjson only.
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
from qdrant_client import QdrantClient
from qdrant_client.http import models
from wire_http import Handler, Server

try:
    from qdrant_store import QdrantStore
except ImportError:  # tests/ imported as a package
    from tests.qdrant_store import QdrantStore

__all__ = ["QdrantServer"]

_UNAUTHENTICATED_PATHS = ("/", "/healthz", "/livez", "/readyz")
_READ_ONLY_POST_SUFFIXES = (
    "/points",
    "/points/count",
    "/points/scroll",
    "/points/search",
    "/points/search/batch",
    "/points/query",
    "/points/query/batch",
)

_REASONS = {
    400: "Bad request",
    404: "Not found",
    408: "Timeout",
    429: "Too many requests",
    500: "Service internal error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


@dataclass
class _Rule:
    remaining: int
    path_contains: str | None
    status: int = 503
    retry_after: Any = None
    body: bytes | str | dict[str, Any] | None = None
    seconds: float = 0.0

    def matches(self, path: str) -> bool:
        if self.remaining <= 0:
            return False
        if self.path_contains is None:
            return path != "/"
        return self.path_contains in path


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class QdrantServer:
    """Qdrant REST API on 127.0.0.1 backed by a local-mode ``QdrantClient`` or stores.

    ``local``: a ``QdrantClient(":memory:")`` / ``QdrantClient(path=...)`` seeded by the test
    (not closed by the server), or one ``QdrantStore`` or several (one collection each).
    Or ``path``: a local-mode directory the server opens itself (and closes on stop; the
    seeding client must be closed first, local mode locks the path). Neither: an empty
    in-memory store, reachable as ``server.local``.
    """

    def __init__(
        self,
        local: QdrantClient | QdrantStore | Iterable[QdrantStore] | None = None,
        api_key: str | None = None,
        *,
        path: str | None = None,
        read_only_api_key: str | None = None,
        latency: float = 0.0,
        version: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if local is not None and path is not None:
            raise ValueError("give either local or path, not both")
        #: The collections, when the server answers from stores (then ``local`` is None).
        self.stores: dict[str, QdrantStore] = {}
        if isinstance(local, QdrantStore):
            local = [local]
        if local is not None and not isinstance(local, QdrantClient):
            self.stores = {store.name: store for store in local}
            local = None
            self._owns_local = False
            self.local: QdrantClient = None  # type: ignore[assignment]
        else:
            self._owns_local = local is None
            self.local = local if local is not None else QdrantClient(path=path or ":memory:")
        self.api_key = api_key
        self.read_only_api_key = read_only_api_key
        self.auth_status = 401
        self.latency = latency
        #: Answer a scroll's offset as its next_page_offset (a cursor that repeats).
        self.repeat_next_offset = False
        #: Change the points of each scroll answer (as JSON-ready dicts) before they are sent:
        #: answers a real server would not give, written by the test.
        self.rewrite_points: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None
        self.version = version or importlib.metadata.version("qdrant-client")
        self._host = host
        self._port = port
        self._lock = threading.Lock()  # guards rules, counters and the local client
        self._stop = threading.Event()
        self._fail_rules: list[_Rule] = []
        self._hang_rules: list[_Rule] = []
        self._drop_rules: list[_Rule] = []
        self.requests: collections.Counter[str] = collections.Counter()
        self.log: list[tuple[str, str, int]] = []  # (method, path, status); 0 = dropped
        self._httpd: Server | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> QdrantServer:
        if self._httpd is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"qdrant": self})
        httpd = Server((self._host, self._port), handler)
        self._httpd = httpd
        self._stop.clear()
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes stalled handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._owns_local and self.local is not None:
            self.local.close()

    close = stop

    def __enter__(self) -> QdrantServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    # ----------------------------------------------------------- fault injection
    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        retry_after: int | float | str | None = None,
        path_contains: str | None = None,
        body: bytes | str | dict[str, Any] | None = None,
    ) -> None:
        """Answer the next ``n`` matching requests with ``status`` (Qdrant-style JSON error
        body unless ``body`` is given; a ``Retry-After`` header when ``retry_after`` is)."""
        with self._lock:
            self._fail_rules.append(_Rule(n, path_contains, status, retry_after, body))

    def hang_next(
        self, n: int = 1, seconds: float = 10.0, path_contains: str | None = None
    ) -> None:
        """Stall the next ``n`` matching requests ``seconds`` before answering them normally
        (the wait ends early when the server stops)."""
        with self._lock:
            self._hang_rules.append(_Rule(n, path_contains, seconds=seconds))

    def drop_next(self, n: int = 1, path_contains: str | None = None) -> None:
        """Close the connection of the next ``n`` matching requests without any response."""
        with self._lock:
            self._drop_rules.append(_Rule(n, path_contains))

    def clear_faults(self) -> None:
        with self._lock:
            self._fail_rules.clear()
            self._hang_rules.clear()
            self._drop_rules.clear()
        self.latency = 0.0

    def count(self, path_contains: str = "", method: str | None = None) -> int:
        """Requests received (faulted ones included) whose path contains ``path_contains``."""
        with self._lock:
            return sum(
                c
                for key, c in self.requests.items()
                if path_contains in key.split(" ", 1)[1]
                and (method is None or key.split(" ", 1)[0] == method.upper())
            )

    def reset_counters(self) -> None:
        with self._lock:
            self.requests.clear()
            self.log.clear()

    def _take(self, rules: list[_Rule], path: str) -> _Rule | None:
        with self._lock:
            for rule in rules:
                if rule.matches(path):
                    rule.remaining -= 1
                    return rule
        return None

    # ------------------------------------------------------------------- routes
    def _authenticate(self, method: str, path: str, headers: Any) -> tuple[int, str] | None:
        if path in _UNAUTHENTICATED_PATHS or (
            self.api_key is None and self.read_only_api_key is None
        ):
            return None
        key = headers.get("api-key")
        if key is None:
            auth = headers.get("Authorization") or ""
            if auth[:7].lower() == "bearer ":
                key = auth[7:].strip()
        if key is None:
            return self.auth_status, "Must provide an API key or an Authorization bearer token"
        if self.api_key is not None and key == self.api_key:
            return None
        if self.read_only_api_key is not None and key == self.read_only_api_key:
            read_only = method == "GET" or (
                method == "POST" and path.endswith(_READ_ONLY_POST_SUFFIXES)
            )
            return None if read_only else (403, "Write access denied")
        return self.auth_status, "Invalid API key or JWT"

    def _route(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        """Returns (status, result) for a success, raises _ApiError otherwise."""
        parts = [unquote(p) for p in path.strip("/").split("/")] if path != "/" else []
        if method == "GET" and not parts:
            return 200, {
                "title": "qdrant - vector search engine",
                "version": self.version,
                "commit": "0" * 40,
            }
        if not parts or parts[0] != "collections":
            raise _ApiError(404, "")
        if self.stores:
            return self._route_store(method, parts, body)
        if len(parts) == 1 and method == "GET":
            names = self.local.get_collections().collections
            return 200, {"collections": [{"name": c.name} for c in names]}
        name = parts[1]
        rest = parts[2:]
        request = _json_body(body) if method == "POST" else None
        if method == "GET" and rest == ["exists"]:
            return 200, {"exists": self.local.collection_exists(name)}
        if not self.local.collection_exists(name):
            if (method == "GET" and rest == []) or (
                method == "POST" and rest in (["points", "scroll"], ["points", "count"], ["points"])
            ):
                raise _ApiError(404, f"Not found: Collection `{name}` doesn't exist!")
            raise _ApiError(404, "")
        if method == "GET" and rest == []:
            return 200, _dump(self.local.get_collection(name))
        if method == "POST" and rest == ["points", "scroll"]:
            req = _parse(models.ScrollRequest, request)
            points, next_offset = self.local.scroll(
                name,
                scroll_filter=req.filter,
                limit=req.limit if req.limit is not None else 10,
                order_by=req.order_by,
                offset=req.offset,
                with_payload=req.with_payload if req.with_payload is not None else True,
                with_vectors=req.with_vector if req.with_vector is not None else False,
            )
            if self.repeat_next_offset and req.offset is not None and next_offset is not None:
                next_offset = req.offset  # a caching proxy's bug: the same page again
            dumped = [_dump(p) for p in points]
            if self.rewrite_points is not None:
                dumped = self.rewrite_points(dumped)
            return 200, {"points": dumped, "next_page_offset": next_offset}
        if method == "POST" and rest == ["points", "count"]:
            req = _parse(models.CountRequest, request)
            result = self.local.count(
                name, count_filter=req.filter, exact=req.exact if req.exact is not None else True
            )
            return 200, _dump(result)
        if method == "POST" and rest == ["points"]:
            req = _parse(models.PointRequest, request)
            points = self.local.retrieve(
                name,
                ids=req.ids,
                with_payload=req.with_payload if req.with_payload is not None else True,
                with_vectors=req.with_vector if req.with_vector is not None else False,
            )
            return 200, [_dump(p) for p in points]
        raise _ApiError(404, "")

    def _route_store(self, method: str, parts: list[str], body: bytes) -> tuple[int, Any]:
        """``_route`` for stores: answers as a Qdrant server writes them (``_Body``)."""
        if len(parts) == 1 and method == "GET":
            return 200, {"collections": [{"name": name} for name in self.stores]}
        name, rest = parts[1], parts[2:]
        if method == "GET" and rest == ["exists"]:
            return 200, {"exists": name in self.stores}
        store = self.stores.get(name)
        if store is None:
            if (method == "GET" and rest == []) or (
                method == "POST" and rest in (["points", "scroll"], ["points", "count"], ["points"])
            ):
                raise _ApiError(404, f"Not found: Collection `{name}` doesn't exist!")
            raise _ApiError(404, "")
        request = _json_body(body) if method == "POST" else None
        if method == "GET" and rest == []:
            return 200, _dump(store.collection_info())
        if method == "POST" and rest == ["points", "scroll"]:
            req = _parse(models.ScrollRequest, request)
            if req.filter is not None or req.order_by is not None:
                raise _ApiError(400, "Bad request: QdrantStore does not filter or order")
            try:
                page = store.scroll(req.offset, req.limit if req.limit is not None else 10)
            except ValueError as exc:
                raise _ApiError(400, f"Validation error in JSON body: {exc}") from exc
            points = store.rest_points(
                page.rows,
                req.with_payload if req.with_payload is not None else True,
                req.with_vector if req.with_vector is not None else False,
            )
            next_offset = page.next_page_offset
            if self.repeat_next_offset and req.offset is not None and next_offset is not None:
                next_offset = req.offset
            if self.rewrite_points is not None:
                points = self.rewrite_points(points)
            return 200, _Body({"points": points, "next_page_offset": next_offset})
        if method == "POST" and rest == ["points", "count"]:
            req = _parse(models.CountRequest, request)
            if req.filter is not None:
                raise _ApiError(400, "Bad request: QdrantStore does not filter")
            return 200, {"count": store.count()}
        if method == "POST" and rest == ["points"]:
            req = _parse(models.PointRequest, request)
            rows = store.rows_for(req.ids)
            points = store.rest_points(
                rows,
                req.with_payload if req.with_payload is not None else True,
                req.with_vector if req.with_vector is not None else False,
            )
            return 200, _Body(points)
        raise _ApiError(404, "")

    def stats(self) -> dict[str, Any]:
        """Requests per method and path."""
        with self._lock:
            return {"requests": dict(self.requests)}


@dataclass(frozen=True)
class _Body:
    """A result to write as a Qdrant server does: numpy float32 arrays in their shortest
    text (orjson writes the shortest text that reads back as the same float32, as serde)."""

    result: Any


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body) if body else {}
    except ValueError as exc:
        raise _ApiError(400, f"Format error in JSON body: {exc}") from exc


def _parse(model: Any, data: Any) -> Any:
    try:
        return model.model_validate(data)
    except Exception as exc:  # pydantic.ValidationError
        raise _ApiError(400, f"Format error in JSON body: {exc}") from exc


def _dump(obj: Any) -> Any:
    # Drops unset (None) model fields, as Qdrant's serde output mostly does; None values
    # inside payload dicts are kept (exclude_none only applies to model fields).
    return obj.model_dump(mode="json", exclude_none=True)


def _encode(obj: Any) -> bytes:
    # Qdrant writes UTF-8 JSON without escaping non-ASCII characters.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class _Handler(Handler):
    qdrant: QdrantServer  # set on the bound subclass
    server_version = "qdrant-test"
    sys_version = ""

    def _handle(self, method: str) -> None:
        q = self.qdrant
        started = time.perf_counter()
        path = urlsplit(self.path).path or "/"
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with q._lock:
            q.requests[f"{method} {path}"] += 1
        try:
            if q.latency:
                q._stop.wait(q.latency)
            hang = q._take(q._hang_rules, path)
            if hang is not None:
                q._stop.wait(hang.seconds)
            if q._take(q._drop_rules, path) is not None:
                with q._lock:
                    q.log.append((method, path, 0))
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            fail = q._take(q._fail_rules, path)
            if fail is not None:
                self._send_fault(method, path, fail, started)
                return
            denied = q._authenticate(method, path, self.headers)
            if denied is not None:
                status, message = denied
                self._send(method, path, status, message.encode(), "text/plain; charset=utf-8")
                return
            try:
                if q.stores:  # read-only and thread-safe: answered side by side
                    status, result = q._route(method, path, body)
                else:
                    with q._lock:
                        status, result = q._route(method, path, body)
            except _ApiError:
                raise
            except ValueError as exc:  # local mode rejects the request
                raise _ApiError(400, f"Bad request: {exc}") from exc
            except Exception as exc:
                raise _ApiError(500, f"Service internal error: {exc}") from exc
            if method == "GET" and path == "/":
                payload = _encode(result)
            elif isinstance(result, _Body):
                answer = {
                    "result": result.result,
                    "status": "ok",
                    "time": time.perf_counter() - started,
                }
                payload = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
            else:
                payload = _encode(
                    {"result": result, "status": "ok", "time": time.perf_counter() - started}
                )
            self._send(method, path, status, payload, "application/json")
        except _ApiError as err:
            if err.message:
                payload = _encode(
                    {"status": {"error": err.message}, "time": time.perf_counter() - started}
                )
                self._send(method, path, err.status, payload, "application/json")
            else:  # actix answers unknown routes with an empty 404
                self._send(method, path, err.status, b"", None)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. timed out)

    def _send_fault(self, method: str, path: str, rule: _Rule, started: float) -> None:
        headers = {}
        if rule.retry_after is not None:
            headers["Retry-After"] = str(rule.retry_after)
        if isinstance(rule.body, bytes):
            payload, ctype = rule.body, "application/octet-stream"
        elif isinstance(rule.body, str):
            payload, ctype = rule.body.encode(), "text/plain; charset=utf-8"
        else:
            reason = _REASONS.get(rule.status, "Error")
            obj = rule.body or {
                "status": {"error": f"{reason}: injected by the test server"},
                "time": time.perf_counter() - started,
            }
            payload, ctype = _encode(obj), "application/json"
        self._send(method, path, rule.status, payload, ctype, headers)

    def _send(
        self,
        method: str,
        path: str,
        status: int,
        payload: bytes,
        content_type: str | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        with self.qdrant._lock:  # logged before the client can see the answer
            self.qdrant.log.append((method, path, status))
        try:
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--grpc-port", type=int, help="also serve gRPC here (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each request")
    parser.add_argument(
        "--collection",
        action="append",
        required=True,
        metavar="NAME:RECORDS",
        help="a collection of so many points (repeatable)",
    )
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument(
        "--bench", action="store_true", help="the benchmark's records (QdrantStore.bench)"
    )
    parser.add_argument("--ids", choices=("int", "uuid", "mixed"), default="int")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-key")
    args = parser.parse_args(argv)

    stores = []
    for spec in args.collection:
        name, _, records = spec.rpartition(":")
        if args.bench:
            stores.append(QdrantStore.bench(name, int(records), args.dim, seed=args.seed))
        else:
            stores.append(
                QdrantStore.synthetic(name, int(records), args.dim, ids=args.ids, seed=args.seed)
            )
    rest = QdrantServer(
        stores, api_key=args.api_key, latency=args.latency, host=args.host, port=args.port
    )
    rest.start()
    grpc_server = None
    if args.grpc_port is not None:
        try:
            from qdrant_grpc_server import QdrantGrpcServer
        except ImportError:
            from tests.qdrant_grpc_server import QdrantGrpcServer
        grpc_server = QdrantGrpcServer(
            stores, api_key=args.api_key, latency=args.latency, host=args.host, port=args.grpc_port
        ).start()
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    ready = {"url": rest.url, "port": rest.port, "grpc_port": grpc_server and grpc_server.port}
    print(json.dumps(ready), flush=True)
    done.wait()
    stats: dict[str, Any] = {"rest": rest.stats()}
    if grpc_server is not None:
        stats["grpc"] = grpc_server.stats()
        grpc_server.stop()
    rest.stop()
    times = os.times()
    stats["process_cpu_seconds"] = times.user + times.system
    print(json.dumps(stats), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
