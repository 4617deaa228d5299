"""A Qdrant gRPC server for tests and benchmarks: the gRPC twin of ``qdrant_server.py``.

It speaks enough of Qdrant's gRPC API (services ``qdrant.Qdrant``, ``qdrant.Collections``,
``qdrant.Points``, with qdrant-client's own generated messages) for the real
``QdrantClient(..., prefer_grpc=True)`` to run ``info``, ``get_collections``,
``collection_exists``, ``get_collection``, ``count``, ``scroll`` and ``retrieve`` over gRPC
alone. The data comes from a local-mode client the test seeds (converted with qdrant-client's
``RestToGrpc``), or from ``QdrantStore``s (``qdrant_store.py``), which stay fast at 200k
points and are encoded straight to the wire::

    with QdrantGrpcServer(local, api_key="secret") as server:      # or QdrantGrpcServer(store)
        client = server.client(api_key="secret")    # QdrantClient(url=..., grpc_port=server.port,
                                                    #   prefer_grpc=True, check_compatibility=False)
        server.fail_next(2, grpc.StatusCode.UNAVAILABLE, method="Scroll")
        server.fail_next(1, grpc.StatusCode.RESOURCE_EXHAUSTED, retry_after=7)
        server.hang_next(1, seconds=3)              # the next call stalls 3 s, then answers
        server.latency = 0.05                       # added to every call
        server.count("Scroll"), server.max_in_flight, server.cpu_seconds["/qdrant.Points/Scroll"]

``method`` names a call as ``"Scroll"``, ``"Points/Get"`` or ``"/qdrant.Points/Get"``
(``"Get"`` alone is both ``Points/Get`` and ``Collections/Get``); without it a fault applies to
every call. The client's version check (``check_compatibility=True``) is a REST ``GET /``,
not gRPC, so it stays off.

As the real server (qdrant/qdrant):

- Authentication (``src/tonic/auth.rs``, ``src/common/auth/mod.rs``): the key comes from the
  ``api-key`` metadata, else ``authorization: Bearer <key>``; none answers ``UNAUTHENTICATED``
  ``Must provide an API key or an Authorization bearer token``, a wrong one ``UNAUTHENTICATED``
  ``Invalid API key or JWT``. ``/qdrant.Qdrant/HealthCheck`` needs no key.
- Errors (``lib/storage/src/content_manager/conversions.rs``, ``errors.rs``): a missing
  collection is ``NOT_FOUND`` ``Not found: Collection `x` doesn't exist!``; a rate limit is
  ``RESOURCE_EXHAUSTED`` with a ``retry-after`` trailer of whole seconds (rounded up).
- Vectors (``lib/api/src/conversions/vectors.rs``, ``From<VectorInternal> for
  grpc::VectorOutput``): servers from 1.17 fill only the ``dense`` / ``sparse`` /
  ``multi_dense`` oneof of ``VectorOutput``; servers up to 1.16 filled only the deprecated
  ``data`` (+ ``indices`` for sparse, + ``vectors_count`` for multivectors). ``version``
  (qdrant-client's own by default) decides which this server sends.
- ``ScrollPoints.limit`` must be at least 1 (``lib/api/build.rs``); unset it is 10.

``python tests/qdrant_grpc_server.py --grpc-port 0 --latency 0.05 --collection C --records N
--dim D [--api-key K]`` serves a synthetic store in a process of its own, prints its port on
stdout, and on SIGTERM / SIGINT prints its statistics as one JSON line on stderr.
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata
import json
import os
import signal
import struct
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from qdrant_client import QdrantClient
from qdrant_client import grpc as pb
from qdrant_client.conversions.conversion import GrpcToRest, RestToGrpc
from qdrant_client.http import models

try:
    from qdrant_store import DenseColumn, MultiColumn, QdrantStore, SparseColumn
except ImportError:  # tests/ imported as a package
    from tests.qdrant_store import DenseColumn, MultiColumn, QdrantStore, SparseColumn

__all__ = ["QdrantGrpcServer", "encode_point"]

HEALTH_CHECK = "/qdrant.Qdrant/HealthCheck"
_TITLE = "qdrant - vector search engine"
#: The first server version that sends vectors in VectorOutput's oneof (qdrant/qdrant v1.17.0).
_ONEOF_VECTORS_SINCE = (1, 17)
_DEFAULT_DETAILS = {
    grpc.StatusCode.UNAVAILABLE: "Service unavailable: injected by the test server",
    grpc.StatusCode.INTERNAL: "Service internal error: injected by the test server",
    grpc.StatusCode.DEADLINE_EXCEEDED: "Timeout: injected by the test server",
    grpc.StatusCode.NOT_FOUND: "Not found: injected by the test server",
    grpc.StatusCode.INVALID_ARGUMENT: "Wrong input: injected by the test server",
    grpc.StatusCode.PERMISSION_DENIED: "Forbidden: injected by the test server",
}


@dataclass
class _Rule:
    remaining: int
    method: str | None
    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    retry_after: int | float | str | None = None
    details: str | None = None
    seconds: float = 0.0

    def matches(self, path: str) -> bool:
        return self.remaining > 0 and method_matches(self.method, path)


class _Status(Exception):
    """A gRPC status to answer with (raised by the backends)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def method_matches(method: str | None, path: str) -> bool:
    """Whether ``method`` (``Scroll``, ``Points/Scroll``, ``/qdrant.Points/Scroll``) names
    the call at ``path``; ``None`` names every call."""
    if method is None:
        return True
    service, name = path.lstrip("/").split("/", 1)
    return method in (name, f"{service.rsplit('.', 1)[-1]}/{name}", f"{service}/{name}", path)


class QdrantGrpcServer:
    """Qdrant's gRPC API on ``host:port`` (0: any free port) over local mode or stores.

    ``source``: a local-mode ``QdrantClient`` seeded by the test (not closed by the server;
    calls to it are serialised, local mode is not thread-safe), or one ``QdrantStore`` or
    several (one collection each), or nothing (an empty in-memory local mode).
    """

    def __init__(
        self,
        source: QdrantClient | QdrantStore | Iterable[QdrantStore] | None = None,
        api_key: str | None = None,
        *,
        read_only_api_key: str | None = None,
        latency: float = 0.0,
        version: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_workers: int = 16,
    ) -> None:
        self._owned: QdrantClient | None = None
        if source is None:
            source = self._owned = QdrantClient(":memory:")
        self._backend: _LocalBackend | _StoreBackend = (
            _LocalBackend(source)
            if isinstance(source, QdrantClient)
            else _StoreBackend([source] if isinstance(source, QdrantStore) else list(source))
        )
        self.api_key = api_key
        self.read_only_api_key = read_only_api_key
        self.latency = latency
        self.version = version or importlib.metadata.version("qdrant-client")
        self._host = host
        self._port = port
        self._max_workers = max_workers
        self._lock = threading.Lock()  # guards rules and statistics
        self._stop = threading.Event()
        self._fail_rules: list[_Rule] = []
        self._hang_rules: list[_Rule] = []
        self.requests: collections.Counter[str] = collections.Counter()
        self.cpu_seconds: collections.Counter[str] = collections.Counter()
        self.log: list[tuple[str, str]] = []  # (method path, status code name)
        self.in_flight = 0
        self.max_in_flight = 0
        self._server: grpc.Server | None = None
        self._bound_port = 0

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> QdrantGrpcServer:
        if self._server is not None:
            return self
        self._stop.clear()
        server = grpc.server(
            futures.ThreadPoolExecutor(self._max_workers, thread_name_prefix="qdrant-grpc"),
            handlers=self._handlers(),
            # Pages of 1024-dim vectors are megabytes; gRPC's default receive limit is 4 MB.
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
        )
        self._bound_port = server.add_insecure_port(f"{self._host}:{self._port}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes stalled calls
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    close = stop

    def __enter__(self) -> QdrantGrpcServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        return self._bound_port

    @property
    def address(self) -> str:
        return f"{self._host}:{self.port}"

    @property
    def legacy_vectors(self) -> bool:
        """Whether vectors travel in VectorOutput's deprecated fields (servers before 1.17)."""
        major, minor = (int(part) for part in self.version.split(".")[:2])
        return (major, minor) < _ONEOF_VECTORS_SINCE

    def client(self, api_key: str | None = None, **kwargs: Any) -> QdrantClient:
        """A qdrant-client that reaches this server over gRPC only.

        The URL's port would serve REST calls; it is this gRPC port, so a call that fell back
        to REST would fail instead of passing unnoticed. ``check_compatibility`` is off: the
        version check is a REST request."""
        kwargs.setdefault("timeout", 5)
        with warnings.catch_warnings():
            # "Api key is used with an insecure connection": a test server has no TLS.
            warnings.filterwarnings("ignore", "Api key is used with an insecure connection")
            return QdrantClient(
                url=f"http://{self.address}",
                grpc_port=self.port,
                prefer_grpc=True,
                api_key=api_key,
                check_compatibility=False,
                **kwargs,
            )

    # ----------------------------------------------------------- fault injection
    def fail_next(
        self,
        n: int = 1,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        *,
        method: str | None = None,
        retry_after: int | float | str | None = None,
        details: str | None = None,
    ) -> None:
        """Answer the next ``n`` matching calls with ``code`` (and a ``retry-after`` trailer
        when ``retry_after`` is given, as Qdrant's rate limiter sends)."""
        with self._lock:
            self._fail_rules.append(_Rule(n, method, code, retry_after, details))

    def hang_next(self, n: int = 1, seconds: float = 10.0, *, method: str | None = None) -> None:
        """Stall the next ``n`` matching calls ``seconds`` before answering them normally (the
        wait ends early when the server stops); past the client's deadline it sees
        ``DEADLINE_EXCEEDED``."""
        with self._lock:
            self._hang_rules.append(_Rule(n, method, seconds=seconds))

    def clear_faults(self) -> None:
        with self._lock:
            self._fail_rules.clear()
            self._hang_rules.clear()
        self.latency = 0.0

    def count(self, method: str | None = None) -> int:
        """Calls received (faulted ones included) that ``method`` names (all when None)."""
        with self._lock:
            return sum(c for path, c in self.requests.items() if method_matches(method, path))

    def reset_stats(self) -> None:
        with self._lock:
            self.requests.clear()
            self.cpu_seconds.clear()
            self.log.clear()
            self.max_in_flight = self.in_flight

    def stats(self) -> dict[str, Any]:
        """Calls and handler CPU seconds (encoding included) per method, peak concurrency."""
        with self._lock:
            return {
                "requests": dict(self.requests),
                "cpu_seconds": dict(self.cpu_seconds),
                "max_in_flight": self.max_in_flight,
            }

    def _take(self, rules: list[_Rule], path: str) -> _Rule | None:
        with self._lock:
            for rule in rules:
                if rule.matches(path):
                    rule.remaining -= 1
                    return rule
        return None

    # ------------------------------------------------------------------ serving
    def _handlers(self) -> list[grpc.GenericRpcHandler]:
        backend = self._backend
        services: dict[str, dict[str, tuple[Any, Callable[[Any, float], bytes]]]] = {
            "qdrant.Qdrant": {"HealthCheck": (pb.HealthCheckRequest, self._health_check)},
            "qdrant.Collections": {
                "List": (pb.ListCollectionsRequest, self._list_collections),
                "Get": (pb.GetCollectionInfoRequest, self._get_collection),
                "CollectionExists": (pb.CollectionExistsRequest, self._collection_exists),
            },
            "qdrant.Points": {
                "Count": (pb.CountPoints, self._count_points),
                "Scroll": (pb.ScrollPoints, lambda r, t: backend.scroll(r, self.legacy_vectors, t)),
                "Get": (pb.GetPoints, lambda r, t: backend.get(r, self.legacy_vectors, t)),
            },
        }
        handlers: list[grpc.GenericRpcHandler] = []
        for service, methods in services.items():
            handlers.append(
                grpc.method_handlers_generic_handler(
                    service,
                    {
                        name: grpc.unary_unary_rpc_method_handler(
                            self._serve(f"/{service}/{name}", behavior),
                            request_deserializer=request_type.FromString,
                            # Behaviours answer serialized bytes: encoding counts as their CPU.
                            response_serializer=None,
                        )
                        for name, (request_type, behavior) in methods.items()
                    },
                )
            )
        return handlers

    def _serve(
        self, path: str, behavior: Callable[[Any, float], bytes]
    ) -> Callable[[Any, grpc.ServicerContext], bytes]:
        def handle(request: Any, context: grpc.ServicerContext) -> bytes:
            started = time.perf_counter()
            with self._lock:
                self.requests[path] += 1
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return self._answer(path, behavior, request, context, started)
            finally:
                with self._lock:
                    self.in_flight -= 1

        return handle

    def _answer(
        self,
        path: str,
        behavior: Callable[[Any, float], bytes],
        request: Any,
        context: grpc.ServicerContext,
        started: float,
    ) -> bytes:
        if self.latency:
            self._stop.wait(self.latency)
        hang = self._take(self._hang_rules, path)
        if hang is not None:
            self._stop.wait(hang.seconds)
        fail = self._take(self._fail_rules, path)
        if fail is not None:
            if fail.retry_after is not None:
                context.set_trailing_metadata((("retry-after", str(fail.retry_after)),))
            self._abort(context, path, fail.code, fail.details or _fault_details(fail))
        denied = self._authenticate(path, context.invocation_metadata())
        if denied is not None:
            self._abort(context, path, grpc.StatusCode.UNAUTHENTICATED, denied)
        error: _Status | None = None
        cpu = time.thread_time()
        try:
            body = behavior(request, started)
        except _Status as exc:
            error = exc
        except ValueError as exc:  # local mode or the store rejects the request
            error = _Status(grpc.StatusCode.INVALID_ARGUMENT, f"Wrong input: {exc}")
        except Exception as exc:
            error = _Status(grpc.StatusCode.INTERNAL, f"Service internal error: {exc}")
        finally:
            spent = time.thread_time() - cpu
            with self._lock:
                self.cpu_seconds[path] += spent
        if error is not None:
            self._abort(context, path, error.code, error.details)
        with self._lock:  # logged before the client can see the answer
            self.log.append((path, grpc.StatusCode.OK.name))
        return body

    def _abort(
        self, context: grpc.ServicerContext, path: str, code: grpc.StatusCode, details: str
    ) -> None:
        with self._lock:
            self.log.append((path, code.name))
        context.abort(code, details)  # raises

    def _authenticate(self, path: str, metadata: Iterable[tuple[str, Any]]) -> str | None:
        if path == HEALTH_CHECK or (self.api_key is None and self.read_only_api_key is None):
            return None
        headers = dict(metadata)  # gRPC metadata keys arrive lowercase
        key = headers.get("api-key")
        if key is None:
            authorization = str(headers.get("authorization", ""))
            if authorization.startswith("Bearer "):  # case-sensitive, as the server's
                key = authorization[len("Bearer ") :]
        if key is None:
            return "Must provide an API key or an Authorization bearer token"
        if key in (self.api_key, self.read_only_api_key):
            return None  # this server only reads: a read-only key may do all of it
        return "Invalid API key or JWT"

    def _health_check(self, request: Any, started: float) -> bytes:
        reply = pb.HealthCheckReply(title=_TITLE, version=self.version, commit="0" * 40)
        return reply.SerializeToString()

    def _list_collections(self, request: Any, started: float) -> bytes:
        names = self._backend.collection_names()
        return pb.ListCollectionsResponse(
            collections=[pb.CollectionDescription(name=n) for n in names],
            time=time.perf_counter() - started,
        ).SerializeToString()

    def _get_collection(self, request: Any, started: float) -> bytes:
        info = self._backend.collection_info(request.collection_name)
        return pb.GetCollectionInfoResponse(
            result=RestToGrpc.convert_collection_info(info), time=time.perf_counter() - started
        ).SerializeToString()

    def _collection_exists(self, request: Any, started: float) -> bytes:
        exists = self._backend.exists(request.collection_name)
        return pb.CollectionExistsResponse(
            result=pb.CollectionExists(exists=exists), time=time.perf_counter() - started
        ).SerializeToString()

    def _count_points(self, request: Any, started: float) -> bytes:
        count = self._backend.count(request)
        return pb.CountResponse(
            result=pb.CountResult(count=count), time=time.perf_counter() - started
        ).SerializeToString()


# ---------------------------------------------------------------------- backends
def _missing(name: str) -> _Status:
    return _Status(grpc.StatusCode.NOT_FOUND, f"Not found: Collection `{name}` doesn't exist!")


def _limit(request: Any) -> int:
    limit = request.limit if request.HasField("limit") else 10
    if limit < 1:
        raise _Status(
            grpc.StatusCode.INVALID_ARGUMENT,
            "Validation error in body: [limit: value 0 invalid, must be 1 or larger]",
        )
    return int(limit)


def _selectors(request: Any, payload_default: bool) -> tuple[Any, Any]:
    with_payload = (
        GrpcToRest.convert_with_payload_selector(request.with_payload)
        if request.HasField("with_payload")
        else payload_default
    )
    with_vectors = (
        GrpcToRest.convert_with_vectors_selector(request.with_vectors)
        if request.HasField("with_vectors")
        else False
    )
    return with_payload, with_vectors


def _time_field(field: int, started: float) -> bytes:
    """A response's ``double time`` field, appended to its other fields' bytes."""
    return _tag(field, 1) + struct.pack("<d", time.perf_counter() - started)


class _LocalBackend:
    """Answers from a local-mode client, through qdrant-client's converters."""

    def __init__(self, client: QdrantClient) -> None:
        self.client = client
        self._lock = threading.Lock()

    def collection_names(self) -> list[str]:
        with self._lock:
            return [c.name for c in self.client.get_collections().collections]

    def exists(self, name: str) -> bool:
        with self._lock:
            return self.client.collection_exists(name)

    def collection_info(self, name: str) -> models.CollectionInfo:
        with self._lock:
            self._check(name)
            return self.client.get_collection(name)

    def count(self, request: Any) -> int:
        count_filter = (
            GrpcToRest.convert_filter(request.filter) if request.HasField("filter") else None
        )
        with self._lock:
            self._check(request.collection_name)
            result = self.client.count(
                request.collection_name,
                count_filter=count_filter,
                exact=request.exact if request.HasField("exact") else True,
            )
        return result.count

    def scroll(self, request: Any, legacy: bool, started: float) -> bytes:
        with_payload, with_vectors = _selectors(request, payload_default=True)
        with self._lock:
            self._check(request.collection_name)
            points, next_offset = self.client.scroll(
                request.collection_name,
                scroll_filter=(
                    GrpcToRest.convert_filter(request.filter)
                    if request.HasField("filter")
                    else None
                ),
                limit=_limit(request),
                offset=(
                    GrpcToRest.convert_point_id(request.offset)
                    if request.HasField("offset")
                    else None
                ),
                with_payload=with_payload,
                with_vectors=with_vectors,
            )
        response = pb.ScrollResponse(
            result=[_local_point(p, legacy) for p in points],
            next_page_offset=(
                RestToGrpc.convert_extended_point_id(next_offset)
                if next_offset is not None
                else None
            ),
        )
        return response.SerializeToString() + _time_field(3, started)

    def get(self, request: Any, legacy: bool, started: float) -> bytes:
        with_payload, with_vectors = _selectors(request, payload_default=False)
        with self._lock:
            self._check(request.collection_name)
            points = self.client.retrieve(
                request.collection_name,
                ids=[GrpcToRest.convert_point_id(i) for i in request.ids],
                with_payload=with_payload,
                with_vectors=with_vectors,
            )
        response = pb.GetResponse(result=[_local_point(p, legacy) for p in points])
        return response.SerializeToString() + _time_field(2, started)

    def _check(self, name: str) -> None:
        if not self.client.collection_exists(name):
            raise _missing(name)


def _local_point(record: models.Record, legacy: bool) -> Any:
    if record.payload is None:  # not asked for: the server sends an empty map
        record = record.model_copy(update={"payload": {}})
    point = RestToGrpc.convert_record(record)
    if legacy and point.HasField("vectors"):
        vectors = point.vectors
        if vectors.HasField("vector"):
            _to_legacy(vectors.vector)
        else:
            for output in vectors.vectors.vectors.values():
                _to_legacy(output)
    return point


def _to_legacy(output: Any) -> None:
    """Move a VectorOutput's oneof into the deprecated fields servers before 1.17 filled."""
    kind = output.WhichOneof("vector")
    if kind == "dense":
        data = list(output.dense.data)
        output.ClearField("dense")
        output.data.extend(data)
    elif kind == "sparse":
        values, indices = list(output.sparse.values), list(output.sparse.indices)
        output.ClearField("sparse")
        output.data.extend(values)
        output.indices.data.extend(indices)
    elif kind == "multi_dense":
        rows = [list(v.data) for v in output.multi_dense.vectors]
        output.ClearField("multi_dense")
        output.data.extend(x for row in rows for x in row)
        output.vectors_count = len(rows)


class _StoreBackend:
    """Answers from ``QdrantStore``s, points encoded straight to protobuf's wire format."""

    def __init__(self, stores: list[QdrantStore]) -> None:
        self.stores = {store.name: store for store in stores}
        # Encoded payloads (field 2 of RetrievedPoint) per collection and row, made once.
        self._payloads: dict[str, dict[int, bytes]] = {name: {} for name in self.stores}

    def collection_names(self) -> list[str]:
        return list(self.stores)

    def exists(self, name: str) -> bool:
        return name in self.stores

    def collection_info(self, name: str) -> models.CollectionInfo:
        return self._store(name).collection_info()

    def count(self, request: Any) -> int:
        store = self._store(request.collection_name)
        if request.HasField("filter"):
            raise _Status(grpc.StatusCode.UNIMPLEMENTED, "QdrantStore does not filter")
        return store.count()

    def scroll(self, request: Any, legacy: bool, started: float) -> bytes:
        store = self._store(request.collection_name)
        if request.HasField("filter") or request.HasField("order_by"):
            raise _Status(grpc.StatusCode.UNIMPLEMENTED, "QdrantStore does not filter or order")
        with_payload, with_vectors = _selectors(request, payload_default=True)
        offset = GrpcToRest.convert_point_id(request.offset) if request.HasField("offset") else None
        page = store.scroll(offset, _limit(request))
        parts = []
        if page.next_page_offset is not None:
            parts.append(_field(1, _point_id(page.next_page_offset)))
        cache = self._payloads[store.name]
        for row in page.rows:
            point = encode_point(store, row, with_payload, with_vectors, legacy, cache)
            parts.append(_field(2, point))
        parts.append(_time_field(3, started))
        return b"".join(parts)

    def get(self, request: Any, legacy: bool, started: float) -> bytes:
        store = self._store(request.collection_name)
        with_payload, with_vectors = _selectors(request, payload_default=False)
        rows = store.rows_for(GrpcToRest.convert_point_id(i) for i in request.ids)
        cache = self._payloads[store.name]
        parts = [
            _field(1, encode_point(store, row, with_payload, with_vectors, legacy, cache))
            for row in rows
        ]
        parts.append(_time_field(2, started))
        return b"".join(parts)

    def _store(self, name: str) -> QdrantStore:
        store = self.stores.get(name)
        if store is None:
            raise _missing(name)
        return store


# -------------------------------------------------------------- protobuf wire format
# https://protobuf.dev/programming-guides/encoding/: a field is a varint tag
# (number << 3 | wire type) and, for wire type 2 (LEN), a varint length and the bytes.
def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _field(field: int, payload: bytes) -> bytes:
    return _tag(field, 2) + _varint(len(payload)) + payload


def _point_id(point_id: int | str) -> bytes:
    """A PointId message: ``uint64 num = 1`` or ``string uuid = 2``."""
    if isinstance(point_id, int):
        return _tag(1, 0) + _varint(point_id)
    return _field(2, point_id.encode())


def _floats(values: Any) -> bytes:
    # Packed fixed32 floats are little-endian on the wire.
    return values.astype("<f4", copy=False).tobytes()


def encode_point(
    store: QdrantStore,
    row: int,
    with_payload: Any,
    with_vectors: Any,
    legacy: bool,
    payload_cache: dict[int, bytes] | None = None,
) -> bytes:
    """A RetrievedPoint (``id = 1``, ``payload = 2``, ``vectors = 4``) of a store's row, as
    the server's prost encoder writes it; ``legacy``: vectors in the deprecated fields."""
    parts = [_field(1, _point_id(store.ids[row]))]
    if with_payload is True and payload_cache is not None:
        payload = payload_cache.get(row)
        if payload is None:
            payload = payload_cache[row] = _payload(store.payload(row, True))
        parts.append(payload)
    else:
        parts.append(_payload(store.payload(row, with_payload)))
    names = store.vector_names(row, with_vectors)
    if with_vectors is not False:
        outputs = {name: _vector_output(store.columns[name], row, legacy) for name in names}
        if names == [""]:  # the server's VectorStructInternal::Single
            vectors = _field(1, outputs[""])
        else:  # map<string, VectorOutput> entries: key = 1, value = 2
            entries = b"".join(
                _field(1, _field(1, name.encode()) + _field(2, output))
                for name, output in outputs.items()
            )
            vectors = _field(2, entries)
        parts.append(_field(4, vectors))
    return b"".join(parts)


def _payload(payload: Mapping[str, Any] | None) -> bytes:
    """RetrievedPoint's ``map<string, Value> payload = 2`` entries, by the generated code."""
    if not payload:
        return b""
    return pb.RetrievedPoint(payload=RestToGrpc.convert_payload(dict(payload))).SerializeToString()


def _vector_output(column: Any, row: int, legacy: bool) -> bytes:
    """A VectorOutput: ``dense = 101 {data = 1}``, ``sparse = 102 {values = 1, indices = 2}``,
    ``multi_dense = 103 {vectors = 1 [DenseVector]}``; or, before 1.17, ``data = 1`` (floats,
    flattened), ``indices = 2 {data = 1}`` and ``vectors_count = 3``."""
    if isinstance(column, DenseColumn):
        data = _floats(column.matrix[row])
        return _field(1, data) if legacy else _field(101, _field(1, data))
    if isinstance(column, MultiColumn):
        rows = column.rows(row)
        if legacy:
            return _field(1, _floats(rows)) + _tag(3, 0) + _varint(len(rows))
        return _field(103, b"".join(_field(1, _field(1, _floats(r))) for r in rows))
    if isinstance(column, SparseColumn):
        indices, values = column.pair(row)
        if legacy:
            return pb.VectorOutput(
                data=values.tolist(), indices=pb.SparseIndices(data=indices.tolist())
            ).SerializeToString()
        sparse = pb.SparseVector(values=values.tolist(), indices=indices.tolist())
        return _field(102, sparse.SerializeToString())
    raise TypeError(f"unknown column {type(column).__name__}")


def _fault_details(rule: _Rule) -> str:
    if rule.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        # The rate limiter's words (lib/collection/src/operations/types.rs).
        wait = f" Retry after {rule.retry_after}s" if rule.retry_after is not None else ""
        return (
            "Rate limiting exceeded: Read rate limit exceeded: Operation requires 1 tokens "
            f"but only 0.0 were available.{wait}"
        )
    return _DEFAULT_DETAILS.get(rule.code, f"{rule.code.name}: injected by the test server")


# ------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grpc-port", type=int, default=0, help="0: any free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each call")
    parser.add_argument("--collection", default="bench")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--ids", choices=("int", "uuid", "mixed"), default="int")
    parser.add_argument("--distance", default="Cosine", choices=[d.value for d in models.Distance])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-key")
    parser.add_argument("--version", help="the Qdrant version to claim (before 1.17: legacy)")
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args(argv)

    store = QdrantStore.synthetic(
        args.collection,
        args.records,
        args.dim,
        ids=args.ids,
        distance=models.Distance(args.distance),
        seed=args.seed,
    )
    server = QdrantGrpcServer(
        store,
        api_key=args.api_key,
        latency=args.latency,
        version=args.version,
        host=args.host,
        port=args.grpc_port,
        max_workers=args.workers,
    )
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    with server:
        print(server.port, flush=True)
        done.wait()
        stats = server.stats()
    times = os.times()
    stats["process_cpu_seconds"] = times.user + times.system
    print(json.dumps(stats), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
