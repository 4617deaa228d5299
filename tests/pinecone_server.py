"""A Pinecone REST test server that the real ``pinecone`` SDK (10.x) can be driven against.

Speaks the control-plane call an exporter needs (``GET /indexes/{name}`` and ``GET /indexes``)
and the data-plane calls ``POST /describe_index_stats``, ``GET /vectors/list``,
``GET /vectors/fetch`` and ``POST /vectors/upsert`` in Pinecone's JSON wire format (API version
``2026-07``: camelCase data plane, snake_case control plane, ``{"error": {"code", "message"},
"status"}`` error bodies).  Standard library plus numpy (``orjson``, a dependency of the
``pinecone`` SDK, is used when importable to encode vectors ~6x faster; nothing else needed).

Routing: the control plane listens on one port (``server.url``) and every index gets its own
port, as a real index gets its own host.  ``describe`` answers ``host: "http://127.0.0.1:PORT"``
and the SDK keeps the ``http://`` scheme (a bare host would become ``https://``).  Separate ports
also keep the SDK's per-host state (connection pools) per index.  NB: the SDK's process-global
retry budget is keyed by the bare hostname *without port*, so every server in a test process
shares the budget of ``127.0.0.1`` (see ``reset_sdk_retry_budget()``).

Pointing the SDK at it::

    from pinecone import Pinecone
    with PineconeServer(api_key="test-key") as server:
        host = server.create_index("docs", dimension=8, metric="cosine")      # serverless dense
        server.create_index("sparse-only", metric="dotproduct", vector_type="sparse")
        server.create_index("old-pod", dimension=8, deployment="pod")
        pc = Pinecone(api_key="test-key", host=server.url)   # control plane; or set the env
        #   var PINECONE_CONTROLLER_HOST=server.url (read when host= is not given)
        idx = pc.Index(host=host)        # or pc.index(name="docs") via GET /indexes/docs
        idx.upsert(vectors=[{"id": "a", "values": [0.1] * 8}], namespace="ns1")
        server.seed("docs", "ns2", matrix, ids=ids)         # server-side, no HTTP (benchmarks)

Behaviour, chosen to match the real service where known:

* Auth: every request needs ``Api-Key`` equal to the server's key, else 401
  ``{"error":{"code":"UNAUTHENTICATED","message":"Invalid API key."},"status":401}``.
  Auth is checked before injected faults (the gateway authenticates first).
* Unknown index: 404 ``NOT_FOUND`` body.  Bad arguments: 400 ``INVALID_ARGUMENT``.
* The default namespace is stored as ``""``; requests may name it ``""``, omit it, or say
  ``"__default__"``.  ``describe_index_stats`` reports it as ``__default__`` (set
  ``server.default_namespace_name = ""`` to mimic older servers).  Empty namespaces are omitted.
* ``list``: ids in sorted (bytewise) order, ``limit`` 1..100 (default 100) else 400, opaque
  ``paginationToken``, ``pagination`` absent on the last page.  A pod index has no list: see
  ``pod_list`` below.
* ``fetch``: at most 1000 ids (else 400), missing ids absent, duplicates collapsed.
* ``upsert``: at most 1000 records (else 400) and a 2 MB body (``max_upsert_bytes``; None turns
  it off), dimension checked (``Vector dimension 3 does not match the dimension of the index
  8``), sparse values only on sparse or dotproduct indexes, NaN/inf rejected, metadata values
  must be strings, numbers, booleans or lists of strings, at most 40 KB per record.  Values are
  stored as float32 (as Pinecone does) and metadata numbers come back as floats (``2020`` ->
  ``2020.0``), as Pinecone does.
* ``pod_list``: what ``GET /vectors/list`` does on a pod index.  Pinecone documents list as
  "supported only for serverless indexes"; the only public trace of the real answer
  (pinecone-io/python-sdk#331) is an SDK that received a non-JSON *success* body it could not
  parse.  ``"text200"`` (default) mimics that: 200 with a ``text/plain`` body, which SDK 10.x
  turns into ``pinecone.errors.ResponseParsingError``.  ``"error400"`` answers 400
  ``INVALID_ARGUMENT`` "list is only supported for serverless indexes" instead.

Fault injection and measurement (all settable at any time, thread-safe)::

    server.latency = 0.05                       # seconds slept per request (no lock held)
    server.fail_next(2, status=429, retry_after=1, endpoint="fetch")   # or 500/503/...
    server.hang_next(1, seconds=5, endpoint="fetch")   # stall before answering (timeouts)
    server.drop_next(1, endpoint="fetch")       # close the connection without an answer
    server.count("fetch"); server.counts        # requests seen per endpoint (incl. faults)
    server.max_in_flight; server.reset_stats()  # peak concurrent requests observed

Endpoints: ``describe_index``, ``list_indexes``, ``describe_index_stats``, ``list``,
``fetch``, ``upsert`` (``other`` for anything else).

Speed/memory: each record's JSON is encoded once, at upsert/seed time, and a fetch answer is one
``b"".join`` of those fragments (~0.15 ms for 100 x 1024-dim).  A 1024-dim float32 record is ~11 KB
of JSON, so 200k such records hold ~2.3 GB.  ``seed`` of 200k x 1024 takes ~20-30 s with orjson
and ~65 s with the standard-library fallback (``%.9g``, 12.5 KB/record) on a slow 2-core machine.
Clients are the bottleneck: the SDK decodes ~7k such records/s per process here, while plain
httpx reading the raw bodies gets ~19k/s from the same in-process server.  To keep the server
off the client's GIL, run it as a process: ``python tests/pinecone_server.py --help``.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import collections
import json
import math
import socket
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
from wire_http import Faults, Handler, Server

_orjson: Any
try:  # a dependency of the pinecone SDK; optional here
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only without the SDK installed
    _orjson = None

ENDPOINTS = (
    "describe_index",
    "list_indexes",
    "describe_index_stats",
    "list",
    "fetch",
    "upsert",
    "other",
)

_ERROR_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    413: "OUT_OF_RANGE",
    429: "RESOURCE_EXHAUSTED",
    500: "UNKNOWN",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

MAX_FETCH_IDS = 1000
MAX_UPSERT_RECORDS = 1000
MAX_LIST_LIMIT = 100
MAX_METADATA_BYTES = 40 * 1024
MAX_ID_BYTES = 512


class ApiError(Exception):
    """An error answer: status plus Pinecone's error body."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _ERROR_CODES.get(status, "UNKNOWN")

    def body(self) -> bytes:
        return _dumps(
            {"error": {"code": self.code, "message": self.message}, "status": self.status}
        )


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# ---------------------------------------------------------------------------------------------
# Encoding of stored records


_FMT_CACHE: dict[int, str] = {}


def _encode_values(vec: np.ndarray) -> bytes:
    """JSON array text for a 1-D float32 vector; every value round-trips to the same float32."""
    if _orjson is not None:
        out: bytes = _orjson.dumps(
            np.ascontiguousarray(vec, dtype=np.float32), option=_orjson.OPT_SERIALIZE_NUMPY
        )
        return out
    n = vec.shape[0]
    if n == 0:
        return b"[]"
    fmt = _FMT_CACHE.get(n)
    if fmt is None:
        fmt = _FMT_CACHE[n] = "[" + ",".join(["%.9g"] * n) + "]"
    return (fmt % tuple(vec.astype(np.float64).tolist())).encode("ascii")


def _encode_indices(indices: np.ndarray) -> bytes:
    return ("[" + ",".join(map(str, indices.tolist())) + "]").encode("ascii")


def _normalise_metadata_value(value: Any) -> Any:
    # Pinecone stores numbers as 64-bit floats: an int comes back as 2020.0.
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, int):
        return float(value)
    return value


def _check_metadata(metadata: Any, rid: str) -> dict[str, Any]:
    if not isinstance(metadata, Mapping):
        raise ApiError(400, f"Metadata for vector {rid} must be a JSON object")
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise ApiError(400, f"Metadata keys must be strings (vector {rid})")
        if isinstance(value, (bool, str)):
            out[key] = value
        elif isinstance(value, (int, float)):
            if isinstance(value, float) and not math.isfinite(value):
                raise ApiError(
                    400, f"Metadata value for field {key} of vector {rid} must be finite"
                )
            out[key] = _normalise_metadata_value(value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            out[key] = list(value)
        else:
            raise ApiError(
                400,
                f"Metadata value for field {key} of vector {rid} must be a string, number, "
                "boolean or list of strings",
            )
    return out


@dataclass
class _Index:
    name: str
    dimension: int | None
    metric: str
    vector_type: str  # "dense" | "sparse"
    deployment: str  # "managed" | "pod"
    port: int = 0
    ready: bool = True
    namespaces: dict[str, dict[str, bytes]] = field(default_factory=dict)
    sorted_ids: dict[str, list[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    httpd: Any = None
    thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def encode_record(
        self,
        rid: Any,
        values: Any,
        sparse: Any,
        metadata: Any,
    ) -> bytes:
        """Validate one record and return ``"id":{...}`` as bytes (the fetch-map entry)."""
        if not isinstance(rid, str) or not rid:
            raise ApiError(400, "Vector ID must be a non-empty string")
        if len(rid.encode("utf-8")) > MAX_ID_BYTES:
            raise ApiError(400, f"Vector ID exceeds the maximum length of {MAX_ID_BYTES} bytes")
        dense: np.ndarray
        if values is None:
            dense = np.empty(0, dtype=np.float32)
        else:
            try:
                dense = np.asarray(values, dtype=np.float32).reshape(-1)
            except (TypeError, ValueError):
                raise ApiError(400, f"Values of vector {rid} must be a list of numbers") from None
        if dense.size and not np.isfinite(dense).all():
            raise ApiError(400, f"Vector {rid} contains NaN or infinite values")
        if self.vector_type == "sparse":
            if dense.size:
                raise ApiError(
                    400, "Sparse vector indexes do not accept dense values; send only sparseValues"
                )
            if sparse is None:
                raise ApiError(400, f"Sparse vector {rid} must have sparse values")
        else:
            if dense.size != self.dimension:
                raise ApiError(
                    400,
                    f"Vector dimension {dense.size} does not match the dimension of the index "
                    f"{self.dimension}",
                )
        parts = [b'{"id":', _dumps(rid), b',"values":', _encode_values(dense)]
        if sparse is not None:
            if self.vector_type != "sparse" and self.metric != "dotproduct":
                raise ApiError(
                    400,
                    "Index configuration does not support sparse values - only indexes that are "
                    "sparse or using dotproduct are supported",
                )
            if isinstance(sparse, Mapping):
                s_idx, s_val = sparse.get("indices"), sparse.get("values")
            else:
                s_idx, s_val = getattr(sparse, "indices", None), getattr(sparse, "values", None)
            try:
                ind = np.asarray(s_idx, dtype=np.int64).reshape(-1)
                val = np.asarray(s_val, dtype=np.float32).reshape(-1)
            except (TypeError, ValueError):
                raise ApiError(400, f"Sparse values of vector {rid} are malformed") from None
            if ind.size != val.size:
                raise ApiError(
                    400,
                    f"Sparse vector {rid}: indices and values must have the same length "
                    f"({ind.size} != {val.size})",
                )
            if ind.size and (ind.min() < 0 or ind.max() > 0xFFFFFFFF):
                raise ApiError(400, f"Sparse indices of vector {rid} must be unsigned 32-bit")
            if ind.size != np.unique(ind).size:
                raise ApiError(400, f"Sparse indices of vector {rid} must be unique")
            if val.size and not np.isfinite(val).all():
                raise ApiError(400, f"Sparse vector {rid} contains NaN or infinite values")
            if self.vector_type == "sparse" and ind.size == 0:
                raise ApiError(400, f"Sparse vector {rid} must have at least one non-zero value")
            parts += [
                b',"sparseValues":{"indices":',
                _encode_indices(ind),
                b',"values":',
                _encode_values(val),
                b"}",
            ]
        if metadata is not None:
            md = _check_metadata(metadata, rid)
            md_bytes = _dumps(md)
            if len(md_bytes) > MAX_METADATA_BYTES:
                raise ApiError(
                    400,
                    f"Metadata size is {len(md_bytes)} bytes, which exceeds the limit of "
                    f"{MAX_METADATA_BYTES} bytes per vector",
                )
            parts += [b',"metadata":', md_bytes]
        parts.append(b"}")
        return _dumps(rid) + b":" + b"".join(parts)

    def store(self, namespace: str, encoded: Sequence[tuple[str, bytes]]) -> None:
        with self.lock:
            ns = self.namespaces.setdefault(namespace, {})
            for rid, frag in encoded:
                ns[rid] = frag
            self.sorted_ids.pop(namespace, None)

    def remove(self, namespace: str, ids: Sequence[str]) -> None:
        with self.lock:
            ns = self.namespaces.get(namespace, {})
            for rid in ids:
                ns.pop(rid, None)
            self.sorted_ids.pop(namespace, None)

    def ids_sorted(self, namespace: str) -> list[str]:
        with self.lock:
            cached = self.sorted_ids.get(namespace)
            if cached is None:
                # Python orders str by code point, which is UTF-8 byte order ("C" collation).
                cached = sorted(self.namespaces.get(namespace, {}))
                self.sorted_ids[namespace] = cached
            return cached


@dataclass
class _Rule:
    remaining: int
    kind: str  # "fail" | "hang" | "drop" | "truncate"
    status: int = 429
    retry_after: float | str | None = None
    endpoint: str | None = None
    index: str | None = None
    seconds: float = 0.0
    message: str | None = None

    def matches(self, endpoint: str, index: str | None) -> bool:
        if self.endpoint is not None and self.endpoint != endpoint:
            return False
        return self.index is None or self.index == index


def _ns_from_wire(value: str | None) -> str:
    if value is None or value == "__default__":
        return ""
    return value


def reset_sdk_retry_budget() -> None:
    """Refill the pinecone SDK's process-global retry budget (keyed by bare hostname).

    SDK 10.x spends one token per retryable answer (408/429/5xx/transport error) and earns
    0.1 back per success; below half of its 100 tokens it stops retrying for that host
    name.  Every server here is ``127.0.0.1``, so tests that inject many faults should call
    this between tests.  Uses a private SDK API; a no-op if it is missing.
    """
    try:
        from pinecone._internal.http_client import get_budget_registry
    except ImportError:  # pragma: no cover
        return
    get_budget_registry()._reset()


class PineconeServer(Faults["_Rule"]):
    """In-process Pinecone REST server (control plane + one port per index)."""

    def __init__(
        self,
        api_key: str = "test-key",
        *,
        bind: str = "127.0.0.1",
        default_namespace_name: str = "__default__",
        pod_list: str = "text200",
        max_upsert_bytes: int | None = 2 * 1024 * 1024,
    ) -> None:
        if pod_list not in ("text200", "error400"):
            raise ValueError("pod_list must be 'text200' or 'error400'")
        self.api_key = api_key
        self.bind = bind
        self.default_namespace_name = default_namespace_name
        self.pod_list = pod_list
        self.max_upsert_bytes = max_upsert_bytes
        self.latency: float = 0.0
        #: Answer a list request's paginationToken as its next one (a cursor that repeats).
        self.repeat_list_token = False
        self._indexes: dict[str, _Index] = {}
        self._lock = threading.Lock()  # counts and index table; never held while sleeping
        super().__init__()
        self._counts: collections.Counter[str] = collections.Counter()
        self._index_counts: collections.Counter[tuple[str | None, str]] = collections.Counter()
        self.api_versions: set[str] = set()
        self._control: Any = None
        self._control_thread: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()
        self._started = False

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> PineconeServer:
        if self._started:
            return self
        self._control, self._control_thread = self._listen(None)
        self._started = True
        for ix in self._indexes.values():
            if ix.httpd is None:
                self._open_index_port(ix)
        return self

    def stop(self) -> None:
        if not self._started:
            return
        servers = [(self._control, self._control_thread)]
        servers += [(ix.httpd, ix.thread) for ix in self._indexes.values() if ix.httpd is not None]
        for httpd, _ in servers:
            httpd.shutdown()
        for httpd, thread in servers:
            httpd.server_close()
            if thread is not None:
                thread.join(timeout=5)
        with self._lock:
            socks = list(self._sockets)
            self._sockets.clear()
        for s in socks:  # wake keep-alive handler threads blocked in recv
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for ix in self._indexes.values():
            ix.httpd = None
            ix.thread = None
        self._started = False

    def __enter__(self) -> PineconeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Control-plane URL, for ``Pinecone(host=...)`` or ``PINECONE_CONTROLLER_HOST``."""
        if self._control is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self._control.server_address[1]}"

    def _listen(self, index: str | None) -> tuple[Any, threading.Thread]:
        httpd = _HTTPServer((self.bind, 0), _Handler)
        httpd.owner = self
        httpd.index_name = index
        thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"pinecone-server-{index or 'control'}",
            daemon=True,
        )
        thread.start()
        return httpd, thread

    def _open_index_port(self, ix: _Index) -> None:
        ix.httpd, ix.thread = self._listen(ix.name)
        ix.port = ix.httpd.server_address[1]

    # -- indexes ----------------------------------------------------------------------------

    def create_index(
        self,
        name: str,
        dimension: int | None = None,
        metric: str = "cosine",
        *,
        vector_type: str = "dense",
        deployment: str = "serverless",
        ready: bool = True,
    ) -> str:
        """Create an index and return its data-plane host ``http://127.0.0.1:PORT``.

        ``deployment``: ``"serverless"`` (alias ``"managed"``) or ``"pod"``.
        ``vector_type="sparse"`` needs no dimension and forces metric ``dotproduct``.
        """
        if deployment == "serverless":
            deployment = "managed"
        if deployment not in ("managed", "pod"):
            raise ValueError("deployment must be 'serverless'/'managed' or 'pod'")
        if vector_type not in ("dense", "sparse"):
            raise ValueError("vector_type must be 'dense' or 'sparse'")
        if metric not in ("cosine", "euclidean", "dotproduct"):
            raise ValueError("metric must be cosine, euclidean or dotproduct")
        if vector_type == "sparse":
            if dimension is not None:
                raise ValueError("a sparse index has no dimension")
            if deployment == "pod":
                raise ValueError("sparse indexes are serverless only")
            metric = "dotproduct"
        elif not isinstance(dimension, int) or dimension < 1:
            raise ValueError("a dense index needs a positive integer dimension")
        with self._lock:
            if name in self._indexes:
                raise ValueError(f"index {name!r} already exists")
            ix = _Index(name, dimension, metric, vector_type, deployment, ready=ready)
            self._indexes[name] = ix
        if self._started:
            self._open_index_port(ix)
        return ix.host

    def delete_index(self, name: str) -> None:
        with self._lock:
            ix = self._indexes.pop(name)
        if ix.httpd is not None:
            ix.httpd.shutdown()
            ix.httpd.server_close()

    def host(self, name: str) -> str:
        return self._indexes[name].host

    def describe(self, name: str) -> dict[str, Any]:
        """The control-plane JSON for an index (API 2026-07 shape)."""
        ix = self._indexes[name]
        if ix.vector_type == "sparse":
            fields: dict[str, Any] = {"_sparse_values": {"type": "sparse_vector"}}
        else:
            fields = {
                "_values": {"type": "dense_vector", "dimension": ix.dimension, "metric": ix.metric}
            }
        if ix.deployment == "pod":
            deployment: dict[str, Any] = {
                "deployment_type": "pod",
                "environment": "us-east-1-aws",
                "pod_type": "p1.x1",
                "replicas": 1,
                "shards": 1,
            }
        else:
            deployment = {"deployment_type": "managed", "cloud": "aws", "region": "us-east-1"}
        out: dict[str, Any] = {
            "name": ix.name,
            "host": ix.host if ix.ready else None,
            "status": {"ready": ix.ready, "state": "Ready" if ix.ready else "Initializing"},
            "schema": {"fields": fields},
            "deployment": deployment,
            "deletion_protection": "disabled",
            "tags": None,
        }
        if ix.deployment == "managed":
            out["read_capacity"] = {"mode": "OnDemand", "status": {"state": "Ready"}}
        return out

    # -- data -------------------------------------------------------------------------------

    def seed(
        self,
        index: str,
        namespace: str,
        records: Any = None,
        *,
        ids: Sequence[str] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        sparse: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> int:
        """Load records server-side (no HTTP); returns how many were stored.

        Either ``records`` is an iterable of dicts ``{id, values, sparse_values (or
        sparseValues) {indices, values}, metadata}``, or ``records`` is a 2-D numpy matrix
        (n x dim) with ``ids`` (and optional per-row ``metadata`` / ``sparse`` lists).  For a
        sparse index pass ``records=None`` with ``ids`` and ``sparse``.  Validated like an
        upsert (dimension etc.) but without the per-request limits.  ``namespace`` ``""`` or
        ``"__default__"`` is the default namespace.
        """
        ix = self._indexes[index]
        ns = _ns_from_wire(namespace)
        encoded: list[tuple[str, bytes]] = []
        if isinstance(records, np.ndarray) or (records is None and ids is not None):
            if ids is None:
                raise ValueError("a matrix needs ids=")
            n = len(ids)
            if records is not None:
                mat = np.asarray(records, dtype=np.float32)
                if mat.ndim != 2 or mat.shape[0] != n:
                    raise ValueError("matrix must be 2-D with one row per id")
            else:
                mat = None
            for name, seq in (("metadata", metadata), ("sparse", sparse)):
                if seq is not None and len(seq) != n:
                    raise ValueError(f"{name} must have one entry per id")
            for i, rid in enumerate(ids):
                try:
                    frag = ix.encode_record(
                        rid,
                        mat[i] if mat is not None else None,
                        sparse[i] if sparse is not None else None,
                        metadata[i] if metadata is not None else None,
                    )
                except ApiError as exc:
                    raise ValueError(exc.message) from None
                encoded.append((rid, frag))
        else:
            if records is None:
                raise ValueError("give records (dicts or a matrix with ids=)")
            for rec in records:
                try:
                    frag = ix.encode_record(
                        rec["id"],
                        rec.get("values"),
                        rec.get("sparse_values", rec.get("sparseValues")),
                        rec.get("metadata"),
                    )
                except ApiError as exc:
                    raise ValueError(exc.message) from None
                encoded.append((rec["id"], frag))
        ix.store(ns, encoded)
        return len(encoded)

    def get(self, index: str, namespace: str, rid: str) -> dict[str, Any] | None:
        """The stored record as Pinecone returns it on fetch (camelCase), or None."""
        frag = self._indexes[index].namespaces.get(_ns_from_wire(namespace), {}).get(rid)
        if frag is None:
            return None
        record: dict[str, Any] = json.loads(b"{" + frag + b"}")[rid]
        return record

    def delete(self, index: str, namespace: str, ids: Sequence[str]) -> None:
        """Delete records server-side (as Pinecone's delete by id would)."""
        self._indexes[index].remove(_ns_from_wire(namespace), ids)

    def vector_count(self, index: str, namespace: str | None = None) -> int:
        ix = self._indexes[index]
        if namespace is None:
            return sum(len(v) for v in ix.namespaces.values())
        return len(ix.namespaces.get(_ns_from_wire(namespace), {}))

    def namespaces(self, index: str) -> list[str]:
        return sorted(k for k, v in self._indexes[index].namespaces.items() if v)

    # -- faults and stats -------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 429,
        retry_after: float | str | None = None,
        endpoint: str | None = None,
        *,
        index: str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``n`` matching requests with ``status`` and Pinecone's error body.

        ``retry_after`` adds a ``Retry-After`` header.  ``endpoint`` (see ``ENDPOINTS``) and
        ``index`` narrow the match; rules are consumed first-come first-served.
        """
        self._add_rule(
            _Rule(
                n,
                "fail",
                status=status,
                retry_after=retry_after,
                endpoint=endpoint,
                index=index,
                message=message,
            )
        )

    def hang_next(
        self,
        n: int = 1,
        seconds: float = 10.0,
        endpoint: str | None = None,
        *,
        index: str | None = None,
    ) -> None:
        """Stall the next ``n`` matching requests for ``seconds`` before answering normally."""
        self._add_rule(_Rule(n, "hang", endpoint=endpoint, index=index, seconds=seconds))

    def drop_next(
        self, n: int = 1, endpoint: str | None = None, *, index: str | None = None
    ) -> None:
        """Close the connection of the next ``n`` matching requests without answering."""
        self._add_rule(_Rule(n, "drop", endpoint=endpoint, index=index))

    def truncate_next(
        self, n: int = 1, endpoint: str | None = None, *, index: str | None = None
    ) -> None:
        """Answer the next ``n`` matching requests 200 with the first half of their body, as
        an answer cut short by a proxy or a dropped connection arrives."""
        self._add_rule(_Rule(n, "truncate", endpoint=endpoint, index=index))

    def store_json(self, index: str, namespace: str, rid: str, record: bytes) -> None:
        """Store a record as the JSON text ``record`` of its fetch answer, written by the
        test as it likes: JSON that a Python dict cannot hold (a lone surrogate escape, an
        integer of 2**70) reaches the client exactly as given."""
        self._indexes[index].store(
            _ns_from_wire(namespace), [(rid, json.dumps(rid).encode() + b":" + record)]
        )

    def _add_rule(self, rule: _Rule) -> None:
        if rule.endpoint is not None and rule.endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {ENDPOINTS}")
        super()._add_rule(rule)

    def _take_rule(self, endpoint: str, index: str | None) -> _Rule | None:
        return self._take_rule_where(lambda rule: rule.matches(endpoint, index))

    def count(self, endpoint: str | None = None, *, index: str | None = None) -> int:
        """Requests received (including ones answered with faults or 401)."""
        with self._lock:
            if index is None:
                if endpoint is None:
                    return sum(self._counts.values())
                return self._counts[endpoint]
            return sum(
                c
                for (ix, ep), c in self._index_counts.items()
                if ix == index and (endpoint is None or ep == endpoint)
            )

    @property
    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    max_concurrency = Faults.max_in_flight

    def reset_stats(self) -> None:
        with self._lock:
            self._counts.clear()
            self._index_counts.clear()
        self._reset_traffic()

    # -- request handling (called from handler threads) -------------------------------------

    def _enter(self, endpoint: str, index: str | None) -> None:
        with self._lock:
            self._counts[endpoint] += 1
            self._index_counts[(index, endpoint)] += 1
        self._entered()

    def _index(self, name: str | None) -> _Index:
        with self._lock:
            ix = self._indexes.get(name or "")
        if ix is None:
            raise ApiError(404, f"Resource {name} not found")
        return ix

    def _control_route(self, method: str, path: str) -> tuple[int, bytes]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if method == "GET" and parts == ["indexes"]:
            with self._lock:
                names = list(self._indexes)
            return 200, _dumps({"indexes": [self.describe(n) for n in names]})
        if method == "GET" and len(parts) == 2 and parts[0] == "indexes":
            name = parts[1]
            with self._lock:
                known = name in self._indexes
            if not known:
                raise ApiError(404, f"Resource {name} not found")
            return 200, _dumps(self.describe(name))
        raise ApiError(404, f"No route for {method} {path}")

    def _data_route(
        self, ix: _Index, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, bytes, str]:
        if path == "/describe_index_stats" and method == "POST":
            return 200, self._stats(ix, body), "application/json"
        if path == "/vectors/fetch" and method == "GET":
            return 200, self._fetch(ix, query), "application/json"
        if path == "/vectors/list" and method == "GET":
            if ix.deployment == "pod":
                if self.pod_list == "error400":
                    raise ApiError(400, "list is only supported for serverless indexes")
                return 200, b"list is not supported for pod-based indexes", "text/plain"
            return 200, self._list(ix, query), "application/json"
        if path == "/vectors/upsert" and method == "POST":
            return 200, self._upsert(ix, body), "application/json"
        raise ApiError(404, f"No route for {method} {path}")

    def _stats(self, ix: _Index, body: bytes) -> bytes:
        req = _parse_json(body) if body.strip() else {}
        if not isinstance(req, dict):
            raise ApiError(400, "Request body must be a JSON object")
        if req.get("filter"):
            raise ApiError(400, "describe_index_stats does not support a filter on this index")
        with ix.lock:
            counts = {ns: len(recs) for ns, recs in ix.namespaces.items() if recs}
        namespaces = {
            (self.default_namespace_name if ns == "" else ns): {"vectorCount": c}
            for ns, c in sorted(counts.items())
        }
        out: dict[str, Any] = {"namespaces": namespaces}
        if ix.dimension is not None:
            out["dimension"] = ix.dimension
        out.update(
            indexFullness=0.0,
            totalVectorCount=sum(counts.values()),
            metric=ix.metric,
            vectorType=ix.vector_type,
        )
        return _dumps(out)

    def _fetch(self, ix: _Index, query: dict[str, list[str]]) -> bytes:
        ids = query.get("ids", [])
        if not ids:
            raise ApiError(400, "ids must contain at least one id")
        if len(ids) > MAX_FETCH_IDS:
            raise ApiError(
                400, f"Cannot fetch more than {MAX_FETCH_IDS} ids at once, got {len(ids)}"
            )
        ns_wire = query.get("namespace", [""])[-1]
        ns = _ns_from_wire(ns_wire)
        records = ix.namespaces.get(ns, {})
        seen: set[str] = set()
        parts: list[bytes] = [b'{"vectors":{']
        found = 0
        for rid in ids:
            if rid in seen:
                continue
            seen.add(rid)
            frag = records.get(rid)
            if frag is not None:
                if found:
                    parts.append(b",")
                parts.append(frag)
                found += 1
        read_units = max(1, -(-found // 10))  # Pinecone: 1 read unit per 10 records fetched
        parts += [
            b'},"namespace":',
            _dumps(ns_wire),
            b',"usage":{"readUnits":',
            str(read_units).encode(),
            b"}}",
        ]
        return b"".join(parts)  # one copy of the pre-encoded fragments

    def _list(self, ix: _Index, query: dict[str, list[str]]) -> bytes:
        ns_wire = query.get("namespace", [""])[-1]
        ns = _ns_from_wire(ns_wire)
        prefix = query.get("prefix", [""])[-1]
        raw_limit = query.get("limit", [str(MAX_LIST_LIMIT)])[-1]
        try:
            limit = int(raw_limit)
        except ValueError:
            raise ApiError(400, f"limit must be an integer, got {raw_limit!r}") from None
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise ApiError(400, f"limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}")
        ids = ix.ids_sorted(ns)
        token = query.get("paginationToken", [None])[-1]
        if token:
            try:
                after = _decode_token(token, ns)
            except ValueError:
                raise ApiError(400, "Invalid pagination token") from None
            start = bisect.bisect_right(ids, after)
        else:
            start = bisect.bisect_left(ids, prefix)
        page: list[str] = []
        i = start
        while i < len(ids) and len(page) < limit:
            rid = ids[i]
            if not rid.startswith(prefix):
                break
            page.append(rid)
            i += 1
        more = i < len(ids) and ids[i].startswith(prefix)
        out: dict[str, Any] = {"vectors": [{"id": r} for r in page]}
        if more and page:
            out["pagination"] = {"next": _encode_token(page[-1], ns)}
        if self.repeat_list_token and token:  # a caching proxy's bug: the same page again
            out["pagination"] = {"next": token}
        out["namespace"] = ns_wire
        out["usage"] = {"readUnits": 1}
        return _dumps(out)

    def _upsert(self, ix: _Index, body: bytes) -> bytes:
        if self.max_upsert_bytes is not None and len(body) > self.max_upsert_bytes:
            raise ApiError(
                400,
                f"Request size {len(body)} bytes exceeds the maximum supported size of "
                f"{self.max_upsert_bytes} bytes",
            )
        req = _parse_json(body)
        if not isinstance(req, dict) or not isinstance(req.get("vectors"), list):
            raise ApiError(400, "Request body must be an object with a 'vectors' list")
        vectors = req["vectors"]
        if not vectors:
            raise ApiError(400, "vectors must contain at least one vector")
        if len(vectors) > MAX_UPSERT_RECORDS:
            raise ApiError(
                400,
                f"Upsert request contains {len(vectors)} vectors; the maximum is "
                f"{MAX_UPSERT_RECORDS} per request",
            )
        ns = _ns_from_wire(req.get("namespace"))
        encoded: list[tuple[str, bytes]] = []
        for v in vectors:
            if not isinstance(v, dict):
                raise ApiError(400, "Each vector must be an object")
            frag = ix.encode_record(
                v.get("id"),
                v.get("values"),
                v.get("sparseValues", v.get("sparse_values")),
                v.get("metadata"),
            )
            encoded.append((v["id"], frag))
        ix.store(ns, encoded)
        return _dumps({"upsertedCount": len(encoded)})


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "Request body is not valid JSON") from None


def _encode_token(last_id: str, namespace: str) -> str:
    raw = json.dumps([namespace, last_id], separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_token(token: str, namespace: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        ns, last = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError("bad token") from None
    if ns != namespace or not isinstance(last, str):
        raise ValueError("token for another namespace")
    return last


def _endpoint_for(index: str | None, method: str, path: str) -> str:
    if index is None:
        if path.rstrip("/") == "/indexes":
            return "list_indexes"
        return "describe_index" if path.startswith("/indexes/") else "other"
    return {
        "/describe_index_stats": "describe_index_stats",
        "/vectors/list": "list",
        "/vectors/fetch": "fetch",
        "/vectors/upsert": "upsert",
    }.get(path, "other")


class _HTTPServer(Server):
    owner: PineconeServer
    index_name: str | None


class _Handler(Handler):
    server: _HTTPServer
    _accounted: bool = True
    _endpoint: str = "other"

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        extra: Mapping[str, str] | None = None,
    ) -> None:
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            f"x-pinecone-request-id: {uuid.uuid4().int & (1 << 63) - 1}",
        ]
        for k, v in (extra or {}).items():
            head.append(f"{k}: {v}")
        if self.close_connection:
            head.append("Connection: close")
        head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        # Account for the answer before the client can see it, so that a test reading the
        # stats right after its call returns never races this thread.
        self._account(status)
        if len(body) < 65536:  # one write for small answers (TCP_NODELAY is set anyway)
            self.wfile.write(head_bytes + body)
        else:  # no extra copy of a large body
            self.wfile.write(head_bytes)
            self.wfile.write(body)

    def _account(self, status: int) -> None:
        if not self._accounted:
            self._accounted = True
            self.server.owner._left(self._endpoint, status)

    def _handle(self, method: str) -> None:
        owner = self.server.owner
        index = self.server.index_name
        split = urlsplit(self.path)
        path = split.path
        endpoint = self._endpoint = _endpoint_for(index, method, path)
        self._accounted = False
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        owner._enter(endpoint, index)
        try:
            version = self.headers.get("X-Pinecone-Api-Version")
            if version:
                owner.api_versions.add(version)
            latency = owner.latency
            if latency > 0:
                time.sleep(latency)  # no lock held: concurrent requests overlap
            if self.headers.get("Api-Key") != owner.api_key:
                self._send(401, ApiError(401, "Invalid API key.").body())
                return
            rule = owner._take_rule(endpoint, index)
            truncate = rule is not None and rule.kind == "truncate"
            if truncate:
                rule = None
            if rule is not None:
                if rule.kind == "drop":
                    self.close_connection = True
                    self._account(0)
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                if rule.kind == "hang":
                    time.sleep(rule.seconds)
                else:
                    status = rule.status
                    msg = rule.message or (
                        "Too many requests. Please retry shortly."
                        if status == 429
                        else "Injected failure."
                    )
                    extra = (
                        {} if rule.retry_after is None else {"Retry-After": str(rule.retry_after)}
                    )
                    self._send(status, ApiError(status, msg).body(), extra=extra)
                    return
            try:
                if index is None:
                    status, payload = owner._control_route(method, path)
                    ctype = "application/json"
                else:
                    ix = owner._index(index)
                    query = parse_qs(split.query, keep_blank_values=True)
                    status, payload, ctype = owner._data_route(ix, method, path, query, body)
            except ApiError as exc:
                self._send(exc.status, exc.body())
                return
            if truncate:
                payload = payload[: len(payload) // 2]
            self._send(status, payload, ctype)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # pragma: no cover - a server bug; answer 500 and keep going
            try:
                self._send(500, ApiError(500, f"test server error: {exc!r}").body())
            except OSError:
                self.close_connection = True
        finally:
            self._account(0)


def _main(argv: Sequence[str] | None = None) -> None:
    """Run a server in its own process (keeps the server off the client's GIL in benchmarks).

    Example::

        python tests/pinecone_server.py --api-key k --index bench:1024:cosine \\
            --synthetic bench:ns:200000:0

    ``--synthetic INDEX:NAMESPACE:COUNT:SEED`` seeds ids ``doc-0000000``... with
    ``numpy.random.default_rng(SEED).standard_normal((COUNT, DIM), dtype=numpy.float32)`` and
    metadata ``{"n": i}``, so a client can regenerate the same data to verify it.  Prints one
    JSON line ``{"url": ..., "hosts": {...}}`` once ready, then serves until stdin closes.
    """
    import argparse
    import sys

    ap = argparse.ArgumentParser(description=_main.__doc__)
    ap.add_argument("--api-key", default="test-key")
    ap.add_argument(
        "--index",
        action="append",
        default=[],
        help="NAME:DIM:METRIC[:pod] (DIM 0 with METRIC sparse for a sparse index)",
    )
    ap.add_argument("--synthetic", action="append", default=[], help="INDEX:NAMESPACE:COUNT:SEED")
    ap.add_argument("--latency", type=float, default=0.0)
    args = ap.parse_args(argv)
    server = PineconeServer(api_key=args.api_key).start()
    server.latency = args.latency
    dims: dict[str, int] = {}
    for spec in args.index:
        name, dim, metric, *rest = spec.split(":")
        if metric == "sparse":
            server.create_index(name, vector_type="sparse")
        else:
            server.create_index(
                name, int(dim), metric, deployment=rest[0] if rest else "serverless"
            )
            dims[name] = int(dim)
    for spec in args.synthetic:
        name, ns, count, seed = spec.split(":")
        n = int(count)
        rng = np.random.default_rng(int(seed))
        chunk = 10_000
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            mat = rng.standard_normal((stop - start, dims[name]), dtype=np.float32)
            server.seed(
                name,
                ns,
                mat,
                ids=[f"doc-{i:07d}" for i in range(start, stop)],
                metadata=[{"n": i} for i in range(start, stop)],
            )
    hosts = {name: server.host(name) for name in server._indexes}
    print(json.dumps({"url": server.url, "hosts": hosts}), flush=True)
    try:
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    _main()
