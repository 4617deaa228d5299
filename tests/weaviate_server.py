"""A Weaviate test server (REST + gRPC) that the real ``weaviate-client`` v4 connects to.

It speaks what the client (4.24) sends on connect and for reads, in Weaviate's wire formats,
with the client's own generated protos (``weaviate.proto.v1``: the ``*_pb2`` messages parse the
requests; ``weaviate.v1.Weaviate/Search`` replies are written straight to protobuf's wire
format, ``vector_bytes`` with one ``numpy`` copy, and decoded by the tests with those messages)::

    with WeaviateServer(api_key="secret") as server:
        server.create_collection(
            "Article",
            properties={"title": "text", "meta": ("object", {"year": "int"})},
            references={"author": "Author"},
            vector=VectorIndex(8, "cosine"),                       # the unnamed vector, or
            named_vectors={"body": VectorIndex(8, "dot"),          # several named ones,
                           "colbert": VectorIndex(4, multi=True)}, # ColBERT multi-vectors
        )
        server.seed("Article", [{"uuid": u, "properties": {...}, "vector": [...]}])
        server.seed("Article", uuids=ids, vector=matrix, properties=rows)    # fast path
        client = weaviate.connect_to_custom(**server.connect_params(api_key="secret"))

The client's calls and what this server answers (as the real server, weaviate/weaviate
``adapters/handlers/{rest,grpc}``, released versions up to 1.39):

- Connect: REST ``GET /v1/meta`` (``version`` must be >= 1.27.0 or the client refuses to
  connect; ``grpcMaxMessageSize`` sets the client's gRPC message limit), then, unless
  ``skip_init_checks``, gRPC ``/grpc.health.v1.Health/Check`` (no key needed) and a GET of
  ``https://pypi.org/pypi/weaviate-client/json`` (this server answers that path too, so a test
  can point ``weaviate.connect.v4.PYPI_PACKAGE_URL`` here and stay offline).
  ``/v1/.well-known/ready`` and ``/live`` answer 200 with no body and need no key.
- Schema (REST): ``GET /v1/schema`` (``collections.list_all``), ``GET /v1/schema/{Class}``
  (``config.get``, ``exists``; unknown: 404, empty body), ``GET /v1/schema/{Class}/tenants``.
  A named-vector collection has ``vectorConfig`` and no top-level ``vectorizer`` /
  ``vectorIndexConfig``; a multi-vector has ``vectorIndexConfig.multivector.enabled``.
- Reads (gRPC ``weaviate.v1.Weaviate``): ``Search`` (``fetch_objects``, ``iterator``, whose
  cursor is ``after`` = the last UUID, objects in UUID order, until an empty page;
  ``fetch_object_by_id`` is a ``_id`` filter with ``limit 1``), ``Aggregate`` (counts; servers
  before 1.29 are asked through GraphQL ``POST /v1/graphql`` instead, also served), and
  ``TenantsGet`` (``tenants.get()``; REST tenants are only used for servers before 1.25).
- Vectors: the unnamed vector travels in ``MetadataResult.vector_bytes`` (little-endian float32)
  and again in the deprecated ``vector`` floats (``send_deprecated_vector``); named vectors in
  ``MetadataResult.vectors`` entries ``{name, vector_bytes, type}``, ``VECTOR_TYPE_MULTI_FP32``
  ones as a little-endian uint16 dimension followed by the rows.  ``include_vector=True``
  returns every named vector.  A collection with both kinds gets both, but the client then
  returns ``{"default": ...}`` only (it reads ``vector_bytes`` first).
- Properties: all non-reference, non-blob properties unless some are named (blobs come back
  only when asked for, as base64 text).  A property the object lacks comes back as a null
  value (``None``).  ``int`` values travel as float64 inside the server, so ints beyond 2**53
  come back rounded; ``geoCoordinates`` are float32; ``date`` is re-formatted as Go's RFC 3339
  (``Z`` for UTC, trailing zeros of the fraction dropped).  ``phoneNumber`` is stored as seeded
  (no libphonenumber here: give the parsed fields, or they default to empty / 0 / invalid).
- ``server.delete(collection, uuids, tenant=None)`` removes objects (server-side, as
  ``seed`` adds them).
- ``id_as_bytes`` is the UUID as a minimal big-endian integer (released servers encode it
  through ``big.Int``: leading zero bytes are dropped).

Errors, as Weaviate answers them:

- REST auth: no key: 401 ``{"code":401,"message": "anonymous access not enabled. Please
  authenticate through one of the available methods: [API-keys]" }``; a wrong key: 401
  ``{"code":401,"message":"unauthorized: invalid api key"}``.  The client raises
  ``UnexpectedStatusCodeError`` (``status_code`` 401) from ``connect()``.
- gRPC auth: the key is read from ``authorization: Bearer <key>``; a missing or wrong key fails
  unary calls with ``extract auth: unauthorized: invalid api key``, status **UNKNOWN** (the
  handler returns a plain Go error; only streams map it to UNAUTHENTICATED).  Set
  ``grpc_auth_code`` to answer another code.
- gRPC errors are plain errors too (status UNKNOWN): ``could not find class X in schema``;
  ``explorer: list class: search: object search at index x: class X has multi-tenancy enabled,
  but request was without tenant`` (also ``tenant not found: "t"``, ``tenant not active:
  't'``); ``cursor api: invalid 'after' parameter: where cannot be set with after and limit
  parameters``.
- The client retries only gRPC ``UNAVAILABLE`` (``weaviate.retry._Retry``: sleeps 1, 2, 4, 8,
  16, 32 s, 6 attempts) and raises ``WeaviateQueryError`` for Search/Aggregate failures,
  ``WeaviateTenantGetError`` for TenantsGet, ``InsufficientPermissionsError`` for
  PERMISSION_DENIED.

Fault injection and measurement (settable at any time, thread-safe)::

    server.latency = 0.05                                   # seconds per request, both transports
    server.fail_next(2, grpc.StatusCode.UNAVAILABLE, method="Search")      # gRPC
    server.fail_next(1, grpc.StatusCode.RESOURCE_EXHAUSTED, details="...")
    server.fail_next(1, 429, path="/v1/schema", retry_after=1)             # REST
    server.hang_next(1, seconds=3, method="Search")         # or path=...; neither: any request
    server.count("Search"), server.count("/v1/schema"), server.count()     # requests seen
    server.max_in_flight, server.reset_stats(), server.stats()

``method`` names a gRPC call as ``"Search"``, ``"Weaviate/Search"`` or
``"/weaviate.v1.Weaviate/Search"`` (``"Check"`` is the health check); ``path`` is a substring of
a REST request's path.  Faults come before authentication (they stand for the infrastructure in
front of Weaviate).  Unscoped gRPC faults apply to every gRPC call, the health check included.

Not served: searches (near_*, hybrid, bm25, group_by, generative, rerank, boost) and sort_by
answer UNIMPLEMENTED; filters only on ``_id`` (EQUAL, CONTAINS_ANY, OR), which is what
``fetch_object_by_id`` / ``fetch_objects_by_ids`` send; no writes.  Seeding while serving is
safe.  Speed (2 slow cores): a 1000 x 1024 page encodes in ~15 ms (8 MB with the deprecated
floats); the client, which unpacks every vector into Python floats, iterates ~6k such
objects/s from a server process at 50 ms latency, raw gRPC ~10k/s.

``python tests/weaviate_server.py --port 0 --grpc-port 0 --latency 0.05 --collection C
--records N --dim D [--api-key K] [--no-title] [--also NAME:M ...]`` serves
``synthetic_batches`` data in a process of its own (keeping the server off the client's
GIL), prints ``{"http_port", "grpc_port", "url", ...}`` as one JSON line on stdout, and on
SIGTERM / SIGINT prints its statistics as JSON on stderr.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import collections
import datetime as dt
import importlib.metadata
import json
import math
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import grpc
import numpy as np
from weaviate.proto.v1 import (
    aggregate_pb2,
    base_pb2,
    health_weaviate_pb2,
    search_get_pb2,
    tenants_pb2,
)
from wire_http import Handler, Server

__all__ = [
    "DATA_TYPES",
    "DISTANCES",
    "VectorIndex",
    "WeaviateServer",
    "synthetic_batches",
    "synthetic_uuid",
]

#: The newest released server (weaviate/weaviate v1.39.0); the client needs >= 1.27.0.
DEFAULT_VERSION = "1.39.0"
#: The client refuses servers below this (weaviate/connect/v4.py, ``ConnectionSync.connect``).
MIN_CLIENT_VERSION = (1, 27, 0)
#: GRPC_MAX_MESSAGE_SIZE's default (usecases/config), also the client's own default.
GRPC_MAX_MESSAGE_SIZE = 104_858_000
#: QUERY_DEFAULTS_LIMIT's default: a Search without a limit answers this many objects.
DEFAULT_QUERY_LIMIT = 10
#: QUERY_MAXIMUM_RESULTS's default: offset + limit above it fails (the cursor is exempt).
QUERY_MAXIMUM_RESULTS = 10_000

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
SEARCH = "/weaviate.v1.Weaviate/Search"
AGGREGATE = "/weaviate.v1.Weaviate/Aggregate"
TENANTS_GET = "/weaviate.v1.Weaviate/TenantsGet"

DATA_TYPES = (
    "text",
    "text[]",
    "int",
    "int[]",
    "number",
    "number[]",
    "boolean",
    "boolean[]",
    "date",
    "date[]",
    "uuid",
    "uuid[]",
    "geoCoordinates",
    "phoneNumber",
    "blob",
    "object",
    "object[]",
)
DISTANCES = ("cosine", "dot", "l2-squared", "hamming", "manhattan")
TENANT_STATUSES = ("ACTIVE", "INACTIVE", "OFFLOADED", "OFFLOADING", "ONLOADING")
# The server stores the deprecated names and TenantsGet answers TENANT_ACTIVITY_STATUS_<stored>
# (adapters/handlers/grpc/v1/tenants.go, usecases/schema/tenant.go convertNewTenantNames).
_STORED_STATUS = {
    "ACTIVE": "HOT",
    "INACTIVE": "COLD",
    "OFFLOADED": "FROZEN",
    "OFFLOADING": "FREEZING",
    "ONLOADING": "UNFREEZING",
}

_ANONYMOUS_401 = (
    b'{"code":401,"message": "anonymous access not enabled. Please authenticate through one of'
    b' the available methods: [API-keys]" }'
)
_INVALID_KEY_401 = b'{"code":401,"message":"unauthorized: invalid api key"}'
_GRPC_INVALID_KEY = "extract auth: unauthorized: invalid api key"
_DEFAULT_DETAILS = {
    grpc.StatusCode.UNAVAILABLE: "server is in maintenance mode",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "usage limit exceeded: injected by the test server",
    grpc.StatusCode.UNAUTHENTICATED: "unauthorized: invalid api key",
}
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_HTTP_VERBS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
_F32 = np.dtype("<f4")


@dataclass(frozen=True)
class VectorIndex:
    """One vector space of a collection: its dimension, distance and index as Weaviate reports.

    ``multi``: a ColBERT-style multi-vector (each object holds ``n x dim`` floats).
    """

    dim: int
    distance: str = "cosine"
    multi: bool = False
    index_type: str = "hnsw"

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError("dim must be positive")
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}")
        if self.index_type not in ("hnsw", "flat"):
            raise ValueError("index_type must be 'hnsw' or 'flat'")
        if self.multi and self.index_type != "hnsw":
            raise ValueError("multi-vectors need an hnsw index")

    def config_json(self) -> dict[str, Any]:
        """``vectorIndexConfig`` with the defaults a 1.3x server fills in."""
        quantizers: dict[str, Any] = {
            "pq": {
                "enabled": False,
                "bitCompression": False,
                "segments": 0,
                "centroids": 256,
                "trainingLimit": 100000,
                "encoder": {"type": "kmeans", "distribution": "log-normal"},
            },
            "bq": {"enabled": False},
            "sq": {"enabled": False, "trainingLimit": 100000, "rescoreLimit": 20},
            "rq": {"enabled": False, "bits": 8, "rescoreLimit": 20},
        }
        if self.index_type == "flat":
            return {
                "distance": self.distance,
                "vectorCacheMaxObjects": 1000000000000,
                **quantizers,
            }
        return {
            "skip": False,
            "cleanupIntervalSeconds": 300,
            "maxConnections": 32,
            "efConstruction": 128,
            "ef": -1,
            "dynamicEfMin": 100,
            "dynamicEfMax": 500,
            "dynamicEfFactor": 8,
            "vectorCacheMaxObjects": 1000000000000,
            "flatSearchCutoff": 40000,
            "distance": self.distance,
            **quantizers,
            "filterStrategy": "acorn",
            "multivector": {
                "enabled": self.multi,
                "muvera": {"enabled": False, "ksim": 4, "dprojections": 16, "repetitions": 10},
                "aggregation": "maxSim",
            },
            "skipDefaultQuantization": False,
            "trackDefaultQuantization": False,
        }


class _Status(Exception):
    """A gRPC status to answer with."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _RestError(Exception):
    """A REST answer other than 200 (``body`` None: no body, as go-swagger's NotFound)."""

    def __init__(self, status: int, message: str | None = None) -> None:
        super().__init__(message or str(status))
        self.status = status
        self.body = None if message is None else _dumps({"error": [{"message": message}]})


@dataclass
class _Rule:
    remaining: int
    kind: str  # "fail" | "hang"
    method: str | None = None
    path: str | None = None
    grpc_code: grpc.StatusCode | None = None
    http_status: int | None = None
    details: str | None = None
    retry_after: float | str | None = None
    seconds: float = 0.0

    def matches(self, transport: str, name: str) -> bool:
        if self.remaining <= 0:
            return False
        if transport == "grpc":
            if self.path is not None or self.http_status is not None:
                return False
            return method_matches(self.method, name)
        if self.method is not None or self.grpc_code is not None:
            return False
        return self.path is None or self.path in name


def method_matches(method: str | None, path: str) -> bool:
    """Whether ``method`` (``Search``, ``Weaviate/Search``, ``/weaviate.v1.Weaviate/Search``)
    names the gRPC call at ``path``; ``None`` names every call."""
    if method is None:
        return True
    service, name = path.lstrip("/").split("/", 1)
    return method in (name, f"{service.rsplit('.', 1)[-1]}/{name}", f"{service}/{name}", path)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# ---------------------------------------------------------------------------------- schema
@dataclass(frozen=True)
class _Prop:
    name: str
    data_type: str
    nested: tuple[_Prop, ...] = ()

    @property
    def is_object(self) -> bool:
        return self.data_type in ("object", "object[]")

    def json(self, top_level: bool) -> dict[str, Any]:
        text = self.data_type in ("text", "text[]")
        out: dict[str, Any] = {
            "dataType": [self.data_type],
            "indexFilterable": self.data_type != "blob",
        }
        if top_level:
            out["indexRangeFilters"] = False
        out["indexSearchable"] = text
        out["name"] = self.name
        if text:
            out["tokenization"] = "word"
        if self.nested:
            out["nestedProperties"] = [p.json(False) for p in self.nested]
        return out


def _parse_props(spec: Mapping[str, Any] | Sequence[tuple[str, Any]]) -> tuple[_Prop, ...]:
    items = spec.items() if isinstance(spec, Mapping) else spec
    props = []
    for name, kind in items:
        if isinstance(kind, str):
            data_type, nested_spec = kind, None
        else:
            data_type, nested_spec = kind
        if data_type not in DATA_TYPES:
            raise ValueError(f"property {name!r}: data type must be one of {DATA_TYPES}")
        if data_type in ("object", "object[]"):
            if not nested_spec:
                raise ValueError(f"property {name!r}: an object needs nested properties")
            props.append(_Prop(name, data_type, _parse_props(nested_spec)))
        elif nested_spec:
            raise ValueError(f"property {name!r}: only objects have nested properties")
        else:
            props.append(_Prop(name, data_type))
    return tuple(props)


class _DenseColumn:
    """One vector per row in a growable float32 matrix (rows without a vector are absent)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.matrix = np.zeros((0, dim), dtype=_F32)
        self.present = np.zeros(0, dtype=bool)

    def reserve(self, rows: int) -> None:
        if rows <= self.matrix.shape[0]:
            return
        capacity = max(rows, 2 * self.matrix.shape[0], 64)
        matrix = np.zeros((capacity, self.dim), dtype=_F32)
        matrix[: self.matrix.shape[0]] = self.matrix
        present = np.zeros(capacity, dtype=bool)
        present[: self.present.shape[0]] = self.present
        self.matrix, self.present = matrix, present

    def put(self, rows: np.ndarray, values: np.ndarray) -> None:
        self.matrix[rows] = values
        self.present[rows] = True

    def get(self, row: int) -> list[float] | None:
        return self.matrix[row].tolist() if self.present[row] else None


class _MultiColumn:
    """Multi-vectors, kept as their wire bytes: uint16 dimension, then the float32 rows."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.blobs: list[bytes | None] = []
        self._prefix = struct.pack("<H", dim)

    def reserve(self, rows: int) -> None:
        if rows > len(self.blobs):
            self.blobs.extend([None] * (rows - len(self.blobs)))

    def put_one(self, row: int, value: np.ndarray) -> None:
        self.blobs[row] = self._prefix + value.tobytes() if value.size else None

    def get(self, row: int) -> list[list[float]] | None:
        blob = self.blobs[row]
        if blob is None:
            return None
        return np.frombuffer(blob, dtype=_F32, offset=2).reshape(-1, self.dim).tolist()


class _Shard:
    """The objects of one collection, or of one tenant of a multi-tenant collection."""

    def __init__(self, vectors: Mapping[str, VectorIndex]) -> None:
        self.lock = threading.Lock()
        self.row_of: dict[int, int] = {}
        self.ids: list[int] = []
        self.props: list[dict[str, Any]] = []
        self.refs: list[dict[str, list[tuple[str, int]]]] = []
        self.created: list[int] = []
        self.updated: list[int] = []
        self.columns: dict[str, _DenseColumn | _MultiColumn] = {
            name: _MultiColumn(ix.dim) if ix.multi else _DenseColumn(ix.dim)
            for name, ix in vectors.items()
        }
        self._sorted: tuple[list[int], list[int]] | None = None

    def __len__(self) -> int:
        return len(self.row_of)  # deleted objects keep their (unused) rows

    def rows_for(self, ids: Sequence[int]) -> np.ndarray:
        """Rows for ``ids`` (new ones appended, existing ones overwritten, as an upsert)."""
        rows = np.empty(len(ids), dtype=np.int64)
        for i, key in enumerate(ids):
            row = self.row_of.get(key)
            if row is None:
                row = self.row_of[key] = len(self.ids)
                self.ids.append(key)
                self.props.append({})
                self.refs.append({})
                self.created.append(0)
                self.updated.append(0)
            rows[i] = row
        for column in self.columns.values():
            column.reserve(len(self.ids))
        self._sorted = None
        return rows

    def delete(self, ids: Sequence[int]) -> int:
        """Forget ``ids`` (their rows stay, unused); returns how many were present."""
        gone = [key for key in ids if self.row_of.pop(key, None) is not None]
        self._sorted = None
        return len(gone)

    def ordered(self) -> tuple[list[int], list[int]]:
        """UUIDs (as ints) in ascending order and their rows: the cursor's order."""
        if self._sorted is None:
            keys = sorted(self.row_of)
            self._sorted = (keys, [self.row_of[k] for k in keys])
        return self._sorted


@dataclass
class _Collection:
    name: str
    props: tuple[_Prop, ...]
    references: dict[str, tuple[str, ...]]
    vector: VectorIndex | None
    named_vectors: dict[str, VectorIndex]
    multi_tenancy: bool
    description: str | None = None
    #: multiTenancyConfig.autoTenantActivation: a read of an INACTIVE tenant activates it.
    auto_tenant_activation: bool = False
    shards: dict[str, _Shard] = field(default_factory=dict)
    tenant_status: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.prop_by_name = {p.name: p for p in self.props}
        spaces: dict[str, VectorIndex] = dict(self.named_vectors)
        if self.vector is not None:
            spaces[""] = self.vector  # the unnamed (legacy) vector
        self.spaces = spaces
        if not self.multi_tenancy:
            self.shards[""] = _Shard(spaces)

    def schema_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"class": self.name}
        if self.description is not None:
            out["description"] = self.description
        out["invertedIndexConfig"] = {
            "bm25": {"b": 0.75, "k1": 1.2},
            "cleanupIntervalSeconds": 60,
            "stopwords": {"additions": None, "preset": "en", "removals": None},
            "usingBlockMaxWAND": True,
        }
        out["multiTenancyConfig"] = {
            "autoTenantActivation": self.auto_tenant_activation,
            "autoTenantCreation": False,
            "enabled": self.multi_tenancy,
        }
        properties = [p.json(True) for p in self.props]
        for name, targets in self.references.items():
            properties.append(
                {
                    "dataType": list(targets),
                    "indexFilterable": True,
                    "indexRangeFilters": False,
                    "indexSearchable": False,
                    "name": name,
                }
            )
        out["properties"] = properties
        out["replicationConfig"] = {
            "asyncEnabled": False,
            "deletionStrategy": "NoAutomatedResolution",
            "factor": 1,
        }
        sharded = not self.multi_tenancy
        out["shardingConfig"] = {
            "actualCount": 1 if sharded else 0,
            "actualVirtualCount": 128 if sharded else 0,
            "desiredCount": 1 if sharded else 0,
            "desiredVirtualCount": 128 if sharded else 0,
            "function": "murmur3" if sharded else "",
            "key": "_id" if sharded else "",
            "strategy": "hash" if sharded else "",
            "virtualPerPhysical": 128 if sharded else 0,
        }
        if self.named_vectors:
            out["vectorConfig"] = {
                name: {
                    "vectorIndexConfig": ix.config_json(),
                    "vectorIndexType": ix.index_type,
                    "vectorizer": {"none": {}},
                }
                for name, ix in self.named_vectors.items()
            }
        if self.vector is not None or not self.named_vectors:
            legacy = self.vector or VectorIndex(1)
            out["vectorIndexConfig"] = legacy.config_json()
            out["vectorIndexType"] = legacy.index_type
            out["vectorizer"] = "none"
        return out


# ------------------------------------------------------------- property values (seed side)
_DATE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


def _date_text(value: Any) -> str:
    """A date as the server formats it: Go's RFC 3339 (fraction without trailing zeros)."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        text = value.isoformat(timespec="microseconds")
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError(f"a date must be an RFC 3339 string or a datetime, not {value!r}")
    match = _DATE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not an RFC 3339 date")
    base, fraction, zone = match.groups()
    fraction = (fraction or "").rstrip("0")
    if zone in ("+00:00", "-00:00"):
        zone = "Z"
    return base + (f".{fraction}" if fraction else "") + zone


def _int_value(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"an int property needs an integer, not {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"an int property needs an integer, not {value!r}")
    return int(float(value))  # stored as a float64 (storobj keeps properties as JSON)


def _number_value(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"a number property needs a number, not {value!r}")
    if not math.isfinite(value):
        raise ValueError("a number property must be finite")
    return float(value)


def _list(value: Any, convert: Callable[[Any], Any]) -> list[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"an array property needs a list, not {value!r}")
    return [convert(v) for v in value]


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"a text property needs a str, not {value!r}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"a boolean property needs a bool, not {value!r}")
    return value


def _uuid_text(value: Any) -> str:
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


def _geo(value: Any) -> tuple[float, float]:
    if isinstance(value, Mapping):
        lat, lon = value["latitude"], value["longitude"]
    else:
        lat, lon = value.latitude, value.longitude
    # models.GeoCoordinates holds float32 latitude / longitude.
    return float(np.float32(lat)), float(np.float32(lon))


def _phone(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = {"input": value}
    if not isinstance(value, Mapping) or "input" not in value:
        raise ValueError("a phoneNumber needs at least {'input': ...}")
    return {
        "input": str(value["input"]),
        "defaultCountry": str(value.get("defaultCountry", "")),
        "countryCode": int(value.get("countryCode", 0)),
        "internationalFormatted": str(value.get("internationalFormatted", "")),
        "national": int(value.get("national", 0)),
        "nationalFormatted": str(value.get("nationalFormatted", "")),
        "valid": bool(value.get("valid", False)),
    }


def _blob(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, str):
        base64.b64decode(value, validate=True)
        return value
    raise ValueError(f"a blob needs bytes or base64 text, not {value!r}")


_SCALAR: dict[str, Callable[[Any], Any]] = {
    "text": _text,
    "int": _int_value,
    "number": _number_value,
    "boolean": _bool,
    "date": _date_text,
    "uuid": _uuid_text,
    "geoCoordinates": _geo,
    "phoneNumber": _phone,
    "blob": _blob,
}


def _normalise(props: Sequence[_Prop], values: Mapping[str, Any], where: str) -> dict[str, Any]:
    by_name = {p.name: p for p in props}
    out: dict[str, Any] = {}
    for name, value in values.items():
        prop = by_name.get(name)
        if prop is None:
            raise ValueError(f"{where}: no such property {name!r} in the schema")
        if value is None:
            continue  # stored as absent: answered as a null value
        try:
            out[name] = _value(prop, value, f"{where}.{name}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{where}.{name}: {exc}") from None
    return out


def _value(prop: _Prop, value: Any, where: str) -> Any:
    kind = prop.data_type
    if kind == "object":
        if not isinstance(value, Mapping):
            raise ValueError("an object property needs a mapping")
        return _normalise(prop.nested, value, where)
    if kind == "object[]":
        return [_normalise(prop.nested, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if kind.endswith("[]"):
        return _list(value, _SCALAR[kind[:-2]])
    return _SCALAR[kind](value)


# -------------------------------------------------------------- protobuf wire format
# https://protobuf.dev/programming-guides/encoding/: a field is a varint tag
# (number << 3 | wire type) and, for wire type 2 (LEN), a varint length and the bytes.
def _varint(value: int) -> bytes:
    if value < 0:
        value &= (1 << 64) - 1  # int64: two's complement, ten bytes
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _field(number: int, payload: bytes) -> bytes:
    return _tag(number, 2) + _varint(len(payload)) + payload


def _text_field(number: int, text: str) -> bytes:
    return _field(number, text.encode("utf-8"))


_NULL_VALUE = _tag(12, 0) + b"\x00"  # Value.null_value = NULL_VALUE (a oneof: always written)


def _encode_value(prop: _Prop, value: Any, nested: Sequence[Any] | None) -> bytes:
    """A ``weaviate.v1.Value`` for a stored property value (adapters/handlers/grpc/v1/mapping.go)."""
    kind = prop.data_type
    if kind == "text":
        return _text_field(13, value)
    if kind == "int":
        return _tag(8, 0) + _varint(value)
    if kind == "number":
        return _tag(1, 1) + struct.pack("<d", value)
    if kind == "boolean":
        return _tag(3, 0) + (b"\x01" if value else b"\x00")
    if kind == "date":
        return _text_field(6, value)
    if kind == "uuid":
        return _text_field(7, value)
    if kind == "blob":
        return _text_field(10, value)
    if kind == "geoCoordinates":
        lat, lon = value  # GeoCoordinate: longitude = 1, latitude = 2 (float32)
        return _field(9, _tag(1, 5) + struct.pack("<f", lon) + _tag(2, 5) + struct.pack("<f", lat))
    if kind == "phoneNumber":
        phone = b"".join(
            (
                _tag(1, 0) + _varint(value["countryCode"]),
                _text_field(2, value["defaultCountry"]),
                _text_field(3, value["input"]),
                _text_field(4, value["internationalFormatted"]),
                _tag(5, 0) + _varint(value["national"]),
                _text_field(6, value["nationalFormatted"]),
                _tag(7, 0) + (b"\x01" if value["valid"] else b"\x00"),
            )
        )
        return _field(11, phone)
    if kind == "object":
        return _field(4, _encode_properties(prop.nested, value, nested))
    if kind == "object[]":  # ListValue.object_values = 4 {repeated Properties values = 1}
        items = b"".join(_field(1, _encode_properties(prop.nested, v, nested)) for v in value)
        return _field(5, _field(4, items))
    inner = kind[:-2]
    if inner in ("text", "date", "uuid"):  # ListValue text = 8, date = 5, uuid = 6
        number = {"text": 8, "date": 5, "uuid": 6}[inner]
        strings = b"".join(_text_field(1, v) for v in value)
        return _field(5, _field(number, strings))
    if inner == "int":  # IntValues.values: little-endian int64 bytes
        return _field(5, _field(7, _field(1, np.asarray(value, dtype="<i8").tobytes())))
    if inner == "number":  # NumberValues.values: little-endian float64 bytes
        return _field(5, _field(2, _field(1, np.asarray(value, dtype="<f8").tobytes())))
    if inner == "boolean":  # BoolValues.values: packed bools
        packed = bytes(1 if v else 0 for v in value)
        return _field(5, _field(3, _field(1, packed) if value else b""))
    raise AssertionError(kind)


def _encode_properties(
    props: Sequence[_Prop], values: Mapping[str, Any], nested: Sequence[Any] | None
) -> bytes:
    """Properties (map<string, Value> fields = 1) of a nested object: only the values present."""
    selection = nested if nested is not None else _all_selection(props)
    parts = []
    for prop, sub in selection:
        value = values.get(prop.name)
        if value is None:
            continue  # mapping.go newObject: a missing nested value is left out
        entry = _text_field(1, prop.name) + _field(2, _encode_value(prop, value, sub))
        parts.append(_field(1, entry))
    return b"".join(parts)


def _all_selection(props: Sequence[_Prop]) -> list[tuple[_Prop, Any]]:
    """Every non-blob property, objects with all their non-blob nested properties."""
    return [
        (p, _all_selection(p.nested) if p.is_object else None)
        for p in props
        if p.data_type != "blob"
    ]


def _id_as_bytes(key: int) -> bytes:
    # Released servers encode the id through big.Int: big-endian, leading zero bytes dropped.
    return key.to_bytes((key.bit_length() + 7) // 8, "big")


# --------------------------------------------------------------------------- requests
@dataclass
class _Selection:
    """What a Search asked for, resolved against the schema."""

    props: list[tuple[_Prop, Any]]
    refs: list[tuple[str, _Collection, _Selection]]  # (link, target, what to return)
    legacy_vector: bool
    vector_names: list[str]
    uuid: bool
    creation_time: bool
    update_time: bool
    refs_requested: bool


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


class WeaviateServer:
    """Weaviate's REST API and gRPC API on ``host`` (ports 0: any free port)."""

    def __init__(
        self,
        api_key: str | None = "test-key",
        *,
        version: str = DEFAULT_VERSION,
        host: str = "127.0.0.1",
        http_port: int = 0,
        grpc_port: int = 0,
        latency: float = 0.0,
        max_workers: int = 16,
        grpc_max_message_size: int = GRPC_MAX_MESSAGE_SIZE,
        send_deprecated_vector: bool = True,
    ) -> None:
        self.api_key = api_key
        self.version = version
        self.latency = latency
        #: The status a missing / wrong key gets on gRPC (Weaviate answers UNKNOWN).
        self.grpc_auth_code = grpc.StatusCode.UNKNOWN
        #: Whether the unnamed vector also travels as the deprecated ``vector`` floats.
        self.send_deprecated_vector = send_deprecated_vector
        self.grpc_max_message_size = grpc_max_message_size
        try:
            self.pypi_version = importlib.metadata.version("weaviate-client")
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            self.pypi_version = "0.0.0"
        self._host = host
        self._http_port = http_port
        self._grpc_port = grpc_port
        self._max_workers = max_workers
        self._collections: dict[str, _Collection] = {}
        self._lock = threading.Lock()  # rules, statistics and the collection table
        self._stop = threading.Event()
        self._rules: list[_Rule] = []
        self.requests: collections.Counter[str] = collections.Counter()
        self.log: list[tuple[str, str]] = []  # (request, answer: HTTP status or gRPC code name)
        self.in_flight = 0
        self.max_in_flight = 0
        self._httpd: _HTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._grpc: grpc.Server | None = None
        self._bound_grpc_port = 0
        self._sockets: set[socket.socket] = set()

    # ------------------------------------------------------------------- lifecycle
    def start(self) -> WeaviateServer:
        if self._httpd is not None:
            return self
        self._stop.clear()
        httpd = _HTTPServer((self._host, self._http_port), _Handler)
        httpd.owner = self
        thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="weaviate-rest",
            daemon=True,
        )
        thread.start()
        server = grpc.server(
            futures.ThreadPoolExecutor(self._max_workers, thread_name_prefix="weaviate-grpc"),
            handlers=self._grpc_handlers(),
            options=[
                ("grpc.max_send_message_length", self.grpc_max_message_size),
                ("grpc.max_receive_message_length", self.grpc_max_message_size),
            ],
        )
        self._bound_grpc_port = server.add_insecure_port(f"{self._host}:{self._grpc_port}")
        server.start()
        self._httpd, self._http_thread, self._grpc = httpd, thread, server
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes stalled requests
        if self._grpc is not None:
            self._grpc.stop(grace=None).wait(5)
            self._grpc = None
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            if self._http_thread is not None:
                self._http_thread.join(timeout=5)
            self._httpd = self._http_thread = None
        with self._lock:
            sockets = list(self._sockets)
            self._sockets.clear()
        for sock in sockets:  # wake keep-alive handler threads blocked in recv
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    close = stop

    def __enter__(self) -> WeaviateServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def http_port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def grpc_port(self) -> int:
        if self._grpc is None:
            raise RuntimeError("server not started")
        return self._bound_grpc_port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.http_port}"

    @property
    def pypi_url(self) -> str:
        """Where this server answers the client's PyPI version probe."""
        return f"{self.url}/pypi/weaviate-client/json"

    def connect_params(self, api_key: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """Keyword arguments for ``weaviate.connect_to_custom`` that reach this server."""
        from weaviate.classes.init import Auth

        params: dict[str, Any] = {
            "http_host": self._host,
            "http_port": self.http_port,
            "http_secure": False,
            "grpc_host": self._host,
            "grpc_port": self.grpc_port,
            "grpc_secure": False,
            "auth_credentials": Auth.api_key(api_key) if api_key is not None else None,
        }
        params.update(kwargs)
        return params

    # ----------------------------------------------------------------- collections
    def create_collection(
        self,
        name: str,
        *,
        properties: Mapping[str, Any] | Sequence[tuple[str, Any]] = (),
        references: Mapping[str, str | Sequence[str]] | None = None,
        vector: VectorIndex | int | None = None,
        named_vectors: Mapping[str, VectorIndex | int] | None = None,
        multi_tenancy: bool = False,
        auto_tenant_activation: bool = False,
        description: str | None = None,
    ) -> None:
        """Add a collection (class).  ``properties`` maps names to a type of ``DATA_TYPES``, or
        to ``("object", {nested...})``; ``references`` maps names to the target collection(s);
        ``vector`` is the unnamed vector, ``named_vectors`` the named ones (an int is a
        dimension with cosine distance); ``auto_tenant_activation``: reading an INACTIVE
        tenant activates it (OFFLOADED ones must still be onloaded first)."""
        if not name or not name[0].isupper():
            raise ValueError("a collection name starts with an upper-case letter")
        props = _parse_props(properties)
        refs = {
            ref: (targets,) if isinstance(targets, str) else tuple(targets)
            for ref, targets in (references or {}).items()
        }
        clash = {p.name for p in props} & set(refs)
        if clash:
            raise ValueError(f"properties and references share names: {sorted(clash)}")
        spaces = {
            k: v if isinstance(v, VectorIndex) else VectorIndex(v)
            for k, v in (named_vectors or {}).items()
        }
        if "" in spaces:
            raise ValueError("a named vector needs a name")
        legacy = (
            vector if isinstance(vector, VectorIndex) or vector is None else VectorIndex(vector)
        )
        if legacy is not None and legacy.multi:
            raise ValueError("the unnamed vector cannot be a multi-vector")
        collection = _Collection(
            name,
            props,
            refs,
            legacy,
            spaces,
            multi_tenancy,
            description=description,
            auto_tenant_activation=auto_tenant_activation,
        )
        with self._lock:
            if name in self._collections:
                raise ValueError(f"collection {name!r} already exists")
            self._collections[name] = collection

    def delete_collection(self, name: str) -> None:
        with self._lock:
            del self._collections[name]

    def add_tenants(self, collection: str, tenants: Iterable[str] | Mapping[str, str]) -> None:
        """Add tenants (``{name: status}``, status one of ``TENANT_STATUSES``; default ACTIVE)."""
        coll = self._collection(collection)
        if not coll.multi_tenancy:
            raise ValueError(f"collection {collection!r} is not multi-tenant")
        items = (
            tenants.items() if isinstance(tenants, Mapping) else ((t, "ACTIVE") for t in tenants)
        )
        with self._lock:
            for tenant, status in items:
                if status not in TENANT_STATUSES:
                    raise ValueError(f"tenant status must be one of {TENANT_STATUSES}")
                coll.tenant_status[tenant] = status
                coll.shards.setdefault(tenant, _Shard(coll.spaces))

    def set_tenant_status(self, collection: str, tenant: str, status: str) -> None:
        coll = self._collection(collection)
        if tenant not in coll.tenant_status:
            raise KeyError(tenant)
        if status not in TENANT_STATUSES:
            raise ValueError(f"tenant status must be one of {TENANT_STATUSES}")
        with self._lock:
            coll.tenant_status[tenant] = status

    def tenants(self, collection: str) -> dict[str, str]:
        coll = self._collection(collection)  # takes the lock itself
        with self._lock:
            return dict(coll.tenant_status)

    def _collection(self, name: str) -> _Collection:
        with self._lock:
            coll = self._collections.get(name)
        if coll is None:
            raise KeyError(f"no collection {name!r}")
        return coll

    def _shard(self, coll: _Collection, tenant: str | None) -> _Shard:
        if coll.multi_tenancy:
            if not tenant:
                raise ValueError(f"collection {coll.name!r} is multi-tenant: give a tenant")
            shard = coll.shards.get(tenant)
            if shard is None:
                raise KeyError(f"no tenant {tenant!r} in {coll.name!r}")
            return shard
        if tenant:
            raise ValueError(f"collection {coll.name!r} is not multi-tenant")
        return coll.shards[""]

    # ------------------------------------------------------------------------ data
    def seed(
        self,
        collection: str,
        objects: Iterable[Mapping[str, Any]] | None = None,
        *,
        tenant: str | None = None,
        uuids: Sequence[Any] | None = None,
        vector: Any = None,
        vectors: Mapping[str, Any] | None = None,
        properties: Sequence[Mapping[str, Any] | None] | None = None,
        references: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> int:
        """Store objects server-side (no network); returns how many.  Same UUID: replaced.

        Either ``objects``, dicts of ``uuid`` and optional ``properties``, ``vector`` (the
        unnamed one), ``vectors`` (``{name: vector}``, a multi-vector as ``n x dim``),
        ``references`` (``{link: uuid | [uuid...] | [(collection, uuid)...]}``) and
        ``creation_time`` / ``last_update_time`` (ms since the epoch, or datetimes); or the
        fast path: ``uuids`` with ``vector`` (an ``n x dim`` matrix), ``vectors`` (``{name:
        matrix}``, or ``{name: [n_i x dim arrays]}`` for a multi-vector), ``properties`` and
        ``references`` (one entry per uuid).
        """
        coll = self._collection(collection)
        shard = self._shard(coll, tenant)
        if objects is not None:
            if uuids is not None or vector is not None or vectors or properties or references:
                raise ValueError("give objects, or uuids with columns, not both")
            rows = list(objects)
            uuids = [o["uuid"] for o in rows]
            n = len(rows)
            columns: dict[str, list[Any]] = {name: [None] * n for name in coll.spaces}
            for i, obj in enumerate(rows):
                if obj.get("vector") is not None:
                    columns.setdefault("", [None] * n)[i] = obj["vector"]
                for name, value in (obj.get("vectors") or {}).items():
                    columns.setdefault(name, [None] * n)[i] = value
            props = [o.get("properties") for o in rows]
            refs = [o.get("references") for o in rows]
            times = [(o.get("creation_time"), o.get("last_update_time")) for o in rows]
        else:
            if uuids is None:
                raise ValueError("give objects, or uuids with columns")
            n = len(uuids)
            columns = {}
            if vector is not None:
                columns[""] = vector
            columns.update(vectors or {})
            props = list(properties) if properties is not None else [None] * n
            refs = list(references) if references is not None else [None] * n
            times = [(None, None)] * n
            if len(props) != n or len(refs) != n:
                raise ValueError("properties and references need one entry per uuid")
        keys = [uuid.UUID(str(u)).int if not isinstance(u, uuid.UUID) else u.int for u in uuids]
        if len(set(keys)) != n:
            raise ValueError("uuids must be unique within one seed call")
        checked_props = [
            _normalise(coll.props, p or {}, f"{coll.name}[{i}]") for i, p in enumerate(props)
        ]
        checked_refs = [self._check_refs(coll, r or {}) for r in refs]
        checked_vectors = {
            name: self._check_vectors(coll, name, values, n) for name, values in columns.items()
        }
        now = int(time.time() * 1000)
        with shard.lock:
            row_index = shard.rows_for(keys)
            for i, row in enumerate(row_index.tolist()):
                shard.props[row] = checked_props[i]
                shard.refs[row] = checked_refs[i]
                created, updated = (_millis(t, now) for t in times[i])
                shard.created[row] = created
                shard.updated[row] = updated if times[i][1] is not None else created
            for name, checked in checked_vectors.items():
                column = shard.columns[name]
                if isinstance(column, _DenseColumn):
                    matrix, mask = checked
                    column.put(row_index[mask], matrix[mask])
                    column.present[row_index[~mask]] = False
                else:
                    for i, row in enumerate(row_index.tolist()):
                        column.put_one(row, checked[i])
        return n

    def _check_vectors(self, coll: _Collection, name: str, values: Any, n: int) -> Any:
        space = coll.spaces.get(name)
        if space is None:
            label = f"named vector {name!r}" if name else "the unnamed vector"
            raise ValueError(f"collection {coll.name!r} has no {label}")
        if space.multi:
            out = []
            for value in values:
                arr = np.asarray(value if value is not None else [], dtype=_F32)
                if arr.size and (arr.ndim != 2 or arr.shape[1] != space.dim):
                    raise ValueError(f"multi-vector {name!r} needs n x {space.dim} values")
                out.append(np.ascontiguousarray(arr.reshape(-1, space.dim)))
            if len(out) != n:
                raise ValueError(f"{name!r}: one multi-vector per object")
            return out
        if isinstance(values, np.ndarray) and values.ndim == 2:
            matrix, mask = values.astype(_F32, copy=False), np.ones(n, dtype=bool)
        else:
            matrix, mask = np.zeros((n, space.dim), dtype=_F32), np.zeros(n, dtype=bool)
            for i, value in enumerate(values):
                if value is not None and len(value):
                    matrix[i], mask[i] = np.asarray(value, dtype=_F32), True
        if matrix.shape != (n, space.dim):
            label = repr(name) if name else "unnamed"
            raise ValueError(f"{label} vectors need {n} x {space.dim} values, got {matrix.shape}")
        if not np.isfinite(matrix[mask]).all():
            raise ValueError("vectors must be finite")
        return matrix, mask

    def _check_refs(
        self, coll: _Collection, refs: Mapping[str, Any]
    ) -> dict[str, list[tuple[str, int]]]:
        out: dict[str, list[tuple[str, int]]] = {}
        for link, value in refs.items():
            targets = coll.references.get(link)
            if targets is None:
                raise ValueError(f"{coll.name} has no reference property {link!r}")
            items = value if isinstance(value, (list, tuple)) else [value]
            beacons = []
            for item in items:
                if isinstance(item, tuple):
                    target, ref = item
                elif len(targets) == 1:
                    target, ref = targets[0], item
                else:
                    raise ValueError(f"{link!r} is multi-target: give (collection, uuid)")
                if target not in targets:
                    raise ValueError(f"{link!r} cannot point to {target!r}")
                beacons.append((target, uuid.UUID(str(ref)).int))
            if beacons:
                out[link] = beacons
        return out

    def delete(self, collection: str, object_ids: Iterable[Any], tenant: str | None = None) -> int:
        """Delete objects server-side (no network); returns how many existed."""
        shard = self._shard(self._collection(collection), tenant)
        keys = [
            uuid.UUID(str(u)).int if not isinstance(u, uuid.UUID) else u.int for u in object_ids
        ]
        with shard.lock:
            return shard.delete(keys)

    def get(self, collection: str, object_id: Any, tenant: str | None = None) -> dict[str, Any]:
        """The stored object (normalised properties, vectors as lists), for assertions."""
        coll = self._collection(collection)
        shard = self._shard(coll, tenant)
        key = uuid.UUID(str(object_id)).int
        with shard.lock:
            row = shard.row_of[key]
            vectors = {name: column.get(row) for name, column in shard.columns.items()}
            return {
                "uuid": uuid.UUID(int=key),
                "properties": dict(shard.props[row]),
                "vectors": {k: v for k, v in vectors.items() if v is not None},
                "references": {
                    link: [(t, uuid.UUID(int=k)) for t, k in beacons]
                    for link, beacons in shard.refs[row].items()
                },
            }

    def object_count(self, collection: str, tenant: str | None = None) -> int:
        return len(self._shard(self._collection(collection), tenant))

    # --------------------------------------------------------- faults and statistics
    def fail_next(
        self,
        n: int = 1,
        status: grpc.StatusCode | int = grpc.StatusCode.UNAVAILABLE,
        *,
        method: str | None = None,
        path: str | None = None,
        details: str | None = None,
        retry_after: float | str | None = None,
    ) -> None:
        """Answer the next ``n`` matching requests with ``status``: a ``grpc.StatusCode`` fails
        gRPC calls (``method`` narrows them), an HTTP status fails REST requests (``path``
        narrows them; ``retry_after`` adds the header)."""
        if isinstance(status, grpc.StatusCode):
            if path is not None:
                raise ValueError("a gRPC status takes method=, not path=")
            rule = _Rule(n, "fail", method=method, grpc_code=status, details=details)
        else:
            if method is not None:
                raise ValueError("an HTTP status takes path=, not method=")
            rule = _Rule(
                n,
                "fail",
                path=path,
                http_status=int(status),
                details=details,
                retry_after=retry_after,
            )
        self._add_rule(rule)

    def hang_next(
        self,
        n: int = 1,
        seconds: float = 10.0,
        *,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Stall the next ``n`` matching requests ``seconds`` before answering them (``method``:
        gRPC only, ``path``: REST only, neither: any); the wait ends early when the server
        stops.  Past the client's deadline it sees DEADLINE_EXCEEDED / a read timeout."""
        if method is not None and path is not None:
            raise ValueError("give method= or path=, not both")
        self._add_rule(_Rule(n, "hang", method=method, path=path, seconds=seconds))

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()
        self.latency = 0.0

    def _add_rule(self, rule: _Rule) -> None:
        if rule.remaining < 1:
            raise ValueError("n must be >= 1")
        with self._lock:
            self._rules.append(rule)

    def _take(self, kind: str, transport: str, name: str) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.kind == kind and rule.matches(transport, name):
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._rules.remove(rule)
                    return rule
        return None

    def count(self, name: str | None = None) -> int:
        """Requests received (faulted and refused ones included).  ``name``: a gRPC method as
        ``fail_next`` takes it, or a substring of ``"GET /v1/..."`` for REST; None: all."""
        rest = name is not None and (name.startswith("/") or name.split(" ")[0] in _HTTP_VERBS)
        with self._lock:
            total = 0
            for key, seen in self.requests.items():
                if name is None:
                    total += seen
                elif key.split(" ")[0] in _HTTP_VERBS:
                    total += seen if rest and name in key else 0
                elif method_matches(name, key):
                    total += seen
            return total

    def reset_stats(self) -> None:
        with self._lock:
            self.requests.clear()
            self.log.clear()
            self.max_in_flight = self.in_flight

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": dict(self.requests), "max_in_flight": self.max_in_flight}

    def _enter(self, key: str) -> None:
        with self._lock:
            self.requests[key] += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self, key: str, answer: str) -> None:
        with self._lock:
            self.in_flight -= 1
            self.log.append((key, answer))

    # ---------------------------------------------------------------------- REST
    def _rest(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, bytes | None, dict[str, str]]:
        """Answer one REST request: (status, body or None, extra headers)."""
        if path in ("/v1/.well-known/ready", "/v1/.well-known/live"):
            return 200, None, {}
        if path == "/v1/.well-known/openid-configuration":
            return 404, None, {}  # no OIDC configured
        if path == "/pypi/weaviate-client/json":
            return 200, _dumps({"info": {"version": self.pypi_version}}), {}
        if self.api_key is not None:
            authorization = headers.get("Authorization") or ""
            token = authorization[len("Bearer ") :] if authorization.startswith("Bearer ") else ""
            if not token:
                return 401, _ANONYMOUS_401, {}
            if token != self.api_key:
                return 401, _INVALID_KEY_401, {}
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:1] != ["v1"]:
            raise _RestError(404)
        parts = parts[1:]
        if method == "GET" and parts == ["meta"]:
            return 200, _dumps(self._meta()), {}
        if method == "GET" and parts == ["schema"]:
            with self._lock:
                classes = [c.schema_json() for c in self._collections.values()]
            return 200, _dumps({"classes": classes}), {}
        if method == "GET" and len(parts) in (2, 3) and parts[0] == "schema":
            name = parts[1][:1].upper() + parts[1][1:]  # the server upper-cases class names
            with self._lock:
                coll = self._collections.get(name)
            if len(parts) == 2:
                if coll is None:
                    raise _RestError(404)
                return 200, _dumps(coll.schema_json()), {}
            if parts[2] == "tenants":
                if coll is None:
                    raise _RestError(422, "class not found")
                if not coll.multi_tenancy:
                    raise _RestError(422, f'multi-tenancy is not enabled for class "{name}"')
                with self._lock:
                    tenants = [
                        {"activityStatus": status, "name": tenant}
                        for tenant, status in coll.tenant_status.items()
                    ]
                return 200, _dumps(tenants), {}
        if method == "POST" and parts == ["graphql"]:
            return 200, _dumps(self._graphql(body)), {}
        raise _RestError(404)

    def _meta(self) -> dict[str, Any]:
        return {
            "grpcMaxMessageSize": self.grpc_max_message_size,
            "hostname": "http://[::]:8080",
            "modules": {},
            "version": self.version,
        }

    _AGGREGATE = re.compile(
        r"^\s*\{\s*Aggregate\s*\{\s*(\w+)\s*(?:\(([^)]*)\))?\s*\{(.*)\}\s*\}\s*\}\s*$", re.S
    )

    def _graphql(self, body: bytes) -> dict[str, Any]:
        """GraphQL ``{Aggregate{Class(tenant: "t"){meta{count}}}}``, as servers before 1.29
        are asked for counts.  Other queries answer a GraphQL error."""
        try:
            query = json.loads(body)["query"]
        except (ValueError, KeyError, TypeError):
            raise _RestError(422, "invalid GraphQL request body") from None
        match = self._AGGREGATE.match(query)
        if match is None or re.sub(r"\s", "", match.group(3)) != "meta{count}":
            return _gql_error("test server: only {Aggregate{C{meta{count}}}} is served")
        name, args = match.group(1), match.group(2) or ""
        with self._lock:
            coll = self._collections.get(name)
        if coll is None:
            return _gql_error(f'Cannot query field "{name}" on type "AggregateObjectsObj".')
        tenant_match = re.search(r'tenant\s*:\s*"([^"]*)"', args)
        try:
            shard = self._read_shard(coll, tenant_match.group(1) if tenant_match else "")
        except _Status as exc:
            return {
                "data": {"Aggregate": {name: None}},
                "errors": [{"message": exc.details, "path": ["Aggregate", name]}],
            }
        return {"data": {"Aggregate": {name: [{"meta": {"count": len(shard)}}]}}}

    # ---------------------------------------------------------------------- gRPC
    def _grpc_handlers(self) -> list[grpc.GenericRpcHandler]:
        # Behaviours return serialized bytes (response_serializer=None): Search replies are
        # written straight to the wire format; the generated WeaviateServicer /
        # add_WeaviateServicer_to_server would serialize a message built field by field.
        def unary(path: str, request_type: Any, behaviour: Callable[[Any], bytes]) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                self._serve(path, behaviour),
                request_deserializer=request_type.FromString,
                response_serializer=None,
            )

        weaviate_service = grpc.method_handlers_generic_handler(
            "weaviate.v1.Weaviate",
            {
                "Search": unary(SEARCH, search_get_pb2.SearchRequest, self._search),
                "Aggregate": unary(AGGREGATE, aggregate_pb2.AggregateRequest, self._aggregate),
                "TenantsGet": unary(TENANTS_GET, tenants_pb2.TenantsGetRequest, self._tenants_get),
            },
        )
        health = grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health",
            {
                "Check": unary(
                    HEALTH_CHECK, health_weaviate_pb2.WeaviateHealthCheckRequest, self._health
                )
            },
        )
        return [weaviate_service, health]

    def _serve(
        self, path: str, behaviour: Callable[[Any], bytes]
    ) -> Callable[[Any, grpc.ServicerContext], bytes]:
        def handle(request: Any, context: grpc.ServicerContext) -> bytes:
            self._enter(path)
            answer = grpc.StatusCode.OK.name
            try:
                if self.latency:
                    self._stop.wait(self.latency)
                hang = self._take("hang", "grpc", path)
                if hang is not None:
                    self._stop.wait(hang.seconds)
                fail = self._take("fail", "grpc", path)
                if fail is not None:
                    assert fail.grpc_code is not None
                    raise _Status(
                        fail.grpc_code,
                        fail.details or _DEFAULT_DETAILS.get(fail.grpc_code, "injected failure"),
                    )
                if path != HEALTH_CHECK and not self._grpc_authorized(
                    context.invocation_metadata()
                ):
                    raise _Status(self.grpc_auth_code, _GRPC_INVALID_KEY)
                return behaviour(request)
            except _Status as exc:
                answer = exc.code.name
                context.abort(exc.code, exc.details)
            except Exception as exc:  # a bug of this server: say so instead of hanging
                answer = grpc.StatusCode.INTERNAL.name
                context.abort(grpc.StatusCode.INTERNAL, f"test server error: {exc!r}")
            finally:
                self._leave(path, answer)
            raise AssertionError("unreachable")  # pragma: no cover - abort raises

        return handle

    def _grpc_authorized(self, metadata: Iterable[tuple[str, Any]] | None) -> bool:
        if self.api_key is None:
            return True
        headers = dict(metadata or ())  # keys arrive lower-cased
        authorization = str(headers.get("authorization", ""))
        # adapters/handlers/grpc/v1/auth/auth.go: "Bearer " is case-sensitive; anything else
        # is anonymous, which a key-protected server refuses the same way as a wrong key.
        return authorization.startswith("Bearer ") and authorization[7:] == self.api_key

    def _health(self, request: Any) -> bytes:
        reply = health_weaviate_pb2.WeaviateHealthCheckResponse(
            status=health_weaviate_pb2.WeaviateHealthCheckResponse.SERVING
        )
        return reply.SerializeToString()

    def _grpc_collection(self, name: str) -> _Collection:
        with self._lock:
            coll = self._collections.get(name)
        if coll is None:
            raise _Status(grpc.StatusCode.UNKNOWN, f"could not find class {name} in schema")
        return coll

    def _read_shard(self, coll: _Collection, tenant: str, prefix: str = "") -> _Shard:
        """The shard a read names (adapters/repos/db/multitenancy/validator.go errors)."""
        if coll.multi_tenancy:
            if not tenant:
                raise _Status(
                    grpc.StatusCode.UNKNOWN,
                    f"{prefix}class {coll.name} has multi-tenancy enabled, but request was"
                    " without tenant",
                )
            with self._lock:
                status = coll.tenant_status.get(tenant)
                if status == "INACTIVE" and coll.auto_tenant_activation:
                    status = coll.tenant_status[tenant] = "ACTIVE"
            if status is None:
                raise _Status(grpc.StatusCode.UNKNOWN, f'{prefix}tenant not found: "{tenant}"')
            if status != "ACTIVE":
                raise _Status(grpc.StatusCode.UNKNOWN, f"{prefix}tenant not active: '{tenant}'")
            return coll.shards[tenant]
        if tenant:
            raise _Status(
                grpc.StatusCode.UNKNOWN,
                f"{prefix}class {coll.name} has multi-tenancy disabled, but request was with"
                " tenant",
            )
        return coll.shards[""]

    def _tenants_get(self, request: Any) -> bytes:
        with self._lock:
            coll = self._collections.get(request.collection)
        if coll is None:
            raise _Status(grpc.StatusCode.UNKNOWN, "get tenants: class not found")
        if not coll.multi_tenancy:
            raise _Status(
                grpc.StatusCode.UNKNOWN,
                f'get tenants: multi-tenancy is not enabled for class "{coll.name}"',
            )
        with self._lock:
            statuses = dict(coll.tenant_status)
        if request.HasField("names"):
            if not request.names.values:
                raise _Status(
                    grpc.StatusCode.UNKNOWN, "get tenants: must specify at least one tenant name"
                )
            statuses = {t: statuses[t] for t in request.names.values if t in statuses}
        reply = tenants_pb2.TenantsGetReply(
            tenants=[
                tenants_pb2.Tenant(
                    name=tenant,
                    activity_status=tenants_pb2.TenantActivityStatus.Value(
                        f"TENANT_ACTIVITY_STATUS_{_STORED_STATUS[status]}"
                    ),
                )
                for tenant, status in statuses.items()
            ]
        )
        return reply.SerializeToString()

    def _aggregate(self, request: Any) -> bytes:
        started = time.perf_counter()
        with self._lock:
            coll = self._collections.get(request.collection)
        if coll is None:
            raise _Status(
                grpc.StatusCode.UNKNOWN,
                f"parse params: could not find class {request.collection} in schema",
            )
        unsupported = [
            f.name
            for f, _ in request.ListFields()
            if f.name not in ("collection", "tenant", "objects_count", "filters")
        ]
        if unsupported:
            raise _Status(
                grpc.StatusCode.UNIMPLEMENTED, f"test server: Aggregate with {unsupported}"
            )
        shard = self._read_shard(coll, request.tenant, "aggregate: ")
        with shard.lock:
            if request.HasField("filters"):
                wanted = _id_filter(request.filters)
                count = sum(1 for key in wanted if key in shard.row_of)
            else:
                count = len(shard)
        single = aggregate_pb2.AggregateReply.Single()
        if request.objects_count:
            single.objects_count = count
        reply = aggregate_pb2.AggregateReply(
            took=time.perf_counter() - started, single_result=single
        )
        return reply.SerializeToString()

    def _search(self, request: Any) -> bytes:
        started = time.perf_counter()
        coll = self._grpc_collection(request.collection)
        searches = [
            f.name
            for f, _ in request.ListFields()
            if f.name.startswith("near_")
            or f.name
            in ("hybrid_search", "bm25_search", "group_by", "generative", "rerank", "boost")
        ]
        if searches:
            raise _Status(grpc.StatusCode.UNIMPLEMENTED, f"test server: no {searches[0]}")
        selection = self._selection(
            coll,
            request.properties if request.HasField("properties") else None,
            request.metadata if request.HasField("metadata") else None,
        )
        limit = request.limit or DEFAULT_QUERY_LIMIT
        wanted: set[int] | None = None
        if request.HasField("filters"):
            wanted = _id_filter(request.filters)
        if request.after:
            invalid = [
                name
                for name, present in (
                    ("offset", request.offset > 0),
                    ("where", wanted is not None),
                    ("sort", len(request.sort_by) > 0),
                )
                if present
            ]
            if invalid:
                raise _Status(
                    grpc.StatusCode.UNKNOWN,
                    "cursor api: invalid 'after' parameter: "
                    f"{','.join(invalid)} cannot be set with after and limit parameters",
                )
            try:
                after = uuid.UUID(request.after).int
            except ValueError:
                raise _Status(
                    grpc.StatusCode.UNKNOWN,
                    "cursor api: invalid 'after' parameter: after parameter "
                    f"'{request.after}' is not a valid uuid: invalid UUID format",
                ) from None
        elif request.offset + limit > QUERY_MAXIMUM_RESULTS:
            raise _Status(
                grpc.StatusCode.UNKNOWN,
                "explorer: list class: search: invalid pagination params: query maximum "
                "results exceeded",
            )
        if len(request.sort_by):
            raise _Status(grpc.StatusCode.UNIMPLEMENTED, "test server: no sort_by")
        prefix = f"explorer: list class: search: object search at index {coll.name.lower()}: "
        shard = self._read_shard(coll, request.tenant, prefix)
        with shard.lock:
            keys, rows = shard.ordered()
            if request.after:
                start = bisect.bisect_right(keys, after)
                page = rows[start : start + limit]
            elif wanted is not None:
                matched = sorted(k for k in wanted if k in shard.row_of)
                page = [shard.row_of[k] for k in matched][request.offset : request.offset + limit]
            else:
                page = rows[request.offset : request.offset + limit]
            body = self._encode_results(coll, shard, page, selection, request.tenant)
        took = struct.pack("<f", time.perf_counter() - started)
        # SearchReply: took = 1 (float), results = 2, generative_grouped_result = 3 ("" is set).
        return _tag(1, 5) + took + body + _tag(3, 2) + b"\x00"

    def _selection(self, coll: _Collection, props_req: Any, meta_req: Any) -> _Selection:
        """Resolve a request's properties and metadata (parse_search_request.go)."""
        refs: list[tuple[str, _Collection, _Selection]] = []
        if props_req is None:
            props = _all_selection(coll.props)
        else:
            props = _all_selection(coll.props) if props_req.return_all_nonref_properties else []
            for name in props_req.non_ref_properties:
                prop = coll.prop_by_name.get(_lower_first(name))
                if prop is None:
                    raise _Status(
                        grpc.StatusCode.UNKNOWN,
                        f"extract properties request: get property by name {_lower_first(name)} "
                        f"for class {coll.name}: no such prop with name '{_lower_first(name)}' "
                        f"found in class '{coll.name}' in the schema. Check your schema files "
                        "for which properties in this class are available",
                    )
                props.append((prop, _all_selection(prop.nested) if prop.is_object else None))
            for nested_req in props_req.object_properties:
                props.append(self._nested_selection(coll.prop_by_name, nested_req, coll.name))
            for ref_req in props_req.ref_properties:
                link = _lower_first(ref_req.reference_property)
                targets = coll.references.get(link)
                if targets is None:
                    raise _Status(
                        grpc.StatusCode.UNKNOWN,
                        f"extract properties request: no such prop with name '{link}' found in "
                        f"class '{coll.name}' in the schema",
                    )
                target_name = ref_req.target_collection or targets[0]
                if len(targets) > 1 and not ref_req.target_collection:
                    raise _Status(
                        grpc.StatusCode.UNKNOWN,
                        f"multi target references from collection {coll.name} and property "
                        f"{link} with need an explicitlinked collection. Available linked "
                        f"collections are {list(targets)}",
                    )
                target = self._grpc_collection(target_name)
                ref_sel = self._selection(
                    target,
                    ref_req.properties if ref_req.HasField("properties") else None,
                    ref_req.metadata if ref_req.HasField("metadata") else None,
                )
                refs.append((link, target, ref_sel))
        wants_vector = meta_req is not None and meta_req.vector
        if wants_vector:
            names = list(coll.named_vectors)  # vector=True returns every named vector
        else:
            names = list(meta_req.vectors) if meta_req is not None else []
        return _Selection(
            props=props,
            refs=refs,
            legacy_vector=wants_vector and coll.vector is not None,
            vector_names=[n for n in names if n in coll.named_vectors],
            uuid=meta_req is not None and meta_req.uuid,
            creation_time=meta_req is not None and meta_req.creation_time_unix,
            update_time=meta_req is not None and meta_req.last_update_time_unix,
            refs_requested=bool(refs),
        )

    def _nested_selection(
        self, props: Mapping[str, _Prop], request: Any, where: str
    ) -> tuple[_Prop, Any]:
        prop = props.get(_lower_first(request.prop_name))
        if prop is None or not prop.is_object:
            raise _Status(
                grpc.StatusCode.UNKNOWN,
                f"extract properties request: no such nested prop '{request.prop_name}' in {where}",
            )
        nested = {p.name: p for p in prop.nested}
        sub: list[tuple[_Prop, Any]] = []
        for name in request.primitive_properties:
            child = nested.get(_lower_first(name))
            if child is None:
                raise _Status(
                    grpc.StatusCode.UNKNOWN,
                    f"extract properties request: no such nested prop '{name}' in {prop.name}",
                )
            sub.append((child, _all_selection(child.nested) if child.is_object else None))
        for child_req in request.object_properties:
            sub.append(self._nested_selection(nested, child_req, prop.name))
        return prop, sub

    def _encode_results(
        self,
        coll: _Collection,
        shard: _Shard,
        rows: Sequence[int],
        sel: _Selection,
        tenant: str,
    ) -> bytes:
        """SearchReply.results (field 2) for ``rows``, as one join of pre-sized parts."""
        if not rows:
            return b""
        index = np.asarray(rows, dtype=np.int64)
        dense: dict[str, tuple[memoryview, np.ndarray, int]] = {}
        names = ([""] if sel.legacy_vector else []) + sel.vector_names
        for name in names:
            column = shard.columns[name]
            if isinstance(column, _DenseColumn):
                block = np.ascontiguousarray(column.matrix[index])
                dense[name] = (memoryview(block).cast("B"), column.present[index], 4 * column.dim)
        target = _text_field(3, coll.name)
        refs_flag = _tag(12, 0) + b"\x01" if sel.refs_requested else b""
        parts: list[bytes | memoryview] = []
        for i, row in enumerate(rows):
            props = self._encode_props_result(coll, shard, row, sel, tenant) + target + refs_flag
            meta: list[bytes | memoryview] = []
            key = shard.ids[row]
            if sel.uuid:
                meta.append(b"\x0a\x24" + str(uuid.UUID(int=key)).encode("ascii"))
            vector_bytes: memoryview | None = None
            if sel.legacy_vector:
                view, present, stride = dense[""]
                if present[i]:
                    vector_bytes = view[i * stride : (i + 1) * stride]
                    if self.send_deprecated_vector:  # MetadataResult.vector = 2, packed floats
                        meta += [b"\x12" + _varint(stride), vector_bytes]
            if sel.creation_time:
                meta.append(_tag(3, 0) + _varint(shard.created[row]) + b"\x20\x01")
            if sel.update_time:
                meta.append(_tag(5, 0) + _varint(shard.updated[row]) + b"\x30\x01")
            if vector_bytes is not None:  # vector_bytes = 19
                meta += [b"\x9a\x01" + _varint(len(vector_bytes)), vector_bytes]
            if sel.uuid:
                id_bytes = _id_as_bytes(key)
                meta.append(b"\xa2\x01" + _varint(len(id_bytes)) + id_bytes)
            for name in sel.vector_names:  # vectors = 23: {name = 1, vector_bytes = 3, type = 4}
                column = shard.columns[name]
                payload: bytes | memoryview | None
                if isinstance(column, _DenseColumn):
                    view, present, stride = dense[name]
                    payload = view[i * stride : (i + 1) * stride] if present[i] else None
                    kind = 1  # VECTOR_TYPE_SINGLE_FP32
                else:
                    payload = column.blobs[row]
                    kind = 2  # VECTOR_TYPE_MULTI_FP32
                if payload is None:
                    continue  # prepare_reply.go skips empty vectors
                head = _text_field(1, name) + b"\x1a" + _varint(len(payload))
                tail = b"\x20" + bytes((kind,))
                meta += [b"\xba\x01" + _varint(len(head) + len(payload) + len(tail)), head]
                meta += [payload, tail]
            meta_len = sum(len(m) for m in meta)
            # SearchResult {properties = 1, metadata = 2}, framed as SearchReply.results = 2.
            props_field = b"\x0a" + _varint(len(props)) + props
            meta_head = b"\x12" + _varint(meta_len)
            result_len = len(props_field) + len(meta_head) + meta_len
            parts += [b"\x12" + _varint(result_len) + props_field, meta_head]
            parts.extend(meta)
        return b"".join(parts)

    def _encode_props_result(
        self, coll: _Collection, shard: _Shard, row: int, sel: _Selection, tenant: str
    ) -> bytes:
        """PropertiesResult fields but target_collection: non_ref_props = 11, ref_props = 2."""
        values = shard.props[row]
        entries = []
        for prop, nested in sel.props:
            value = values.get(prop.name)
            encoded = _NULL_VALUE if value is None else _encode_value(prop, value, nested)
            entries.append(_field(1, _text_field(1, prop.name) + _field(2, encoded)))
        out = [
            self._encode_refs(link, target, ref_sel, beacons, tenant)
            for link, target, ref_sel in sel.refs
            if (beacons := shard.refs[row].get(link))
        ]
        if entries:
            out.append(_field(11, b"".join(entries)))
        return b"".join(out)

    def _encode_refs(
        self,
        link: str,
        target: _Collection,
        sel: _Selection,
        beacons: Sequence[tuple[str, int]],
        tenant: str,
    ) -> bytes:
        """RefPropertiesResult {properties = 1 [PropertiesResult + metadata = 4], prop_name = 2}."""
        # The origin shard's lock is held; the target's is not taken (a collection may refer to
        # itself), so a seed racing this read may or may not be seen, as on a live server.
        try:
            shard = self._read_shard(target, tenant if target.multi_tenancy else "")
        except _Status:
            return _field(2, _text_field(2, link))
        found = []
        for target_name, key in beacons:
            if target_name != target.name:
                continue
            row = shard.row_of.get(key)
            if row is None:
                continue  # a dangling reference resolves to nothing
            props = self._encode_props_result(target, shard, row, sel, tenant)
            meta = b""
            if sel.uuid:
                meta = _text_field(1, str(uuid.UUID(int=key))) + _field(20, _id_as_bytes(key))
            flag = _tag(12, 0) + b"\x01" if sel.refs_requested else b""
            result = props + _text_field(3, target.name) + _field(4, meta) + flag
            found.append(_field(1, result))
        return _field(2, b"".join(found) + _text_field(2, link))


def _id_filter(filters: Any) -> set[int]:
    """The UUIDs an ``_id`` filter (EQUAL, CONTAINS_ANY, OR of those) selects."""
    op = filters.operator
    if op == base_pb2.Filters.OPERATOR_OR:
        out: set[int] = set()
        for sub in filters.filters:
            out |= _id_filter(sub)
        return out
    target = filters.target.property if filters.HasField("target") else (filters.on or [""])[0]
    if target != "_id":
        raise _Status(grpc.StatusCode.UNIMPLEMENTED, "test server: only _id filters are served")
    try:
        if op == base_pb2.Filters.OPERATOR_EQUAL:
            return {uuid.UUID(filters.value_text).int}
        if op == base_pb2.Filters.OPERATOR_CONTAINS_ANY:
            return {uuid.UUID(v).int for v in filters.value_text_array.values}
    except ValueError:
        raise _Status(grpc.StatusCode.UNKNOWN, "invalid filter: not a uuid") from None
    raise _Status(grpc.StatusCode.UNIMPLEMENTED, "test server: only _id EQUAL / CONTAINS_ANY")


def _gql_error(message: str) -> dict[str, Any]:
    return {"data": None, "errors": [{"locations": [{"column": 2, "line": 1}], "message": message}]}


def _millis(value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    return int(value)


# ------------------------------------------------------------------------ REST plumbing
class _HTTPServer(Server):
    owner: WeaviateServer


class _Handler(Handler):
    server: _HTTPServer

    def _handle(self, method: str) -> None:
        owner = self.server.owner
        path = urlsplit(self.path).path
        key = f"{method} {path}"
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        owner._enter(key)
        answer = "0"
        try:
            if owner.latency:
                owner._stop.wait(owner.latency)
            hang = owner._take("hang", "rest", path)
            if hang is not None:
                owner._stop.wait(hang.seconds)
            fail = owner._take("fail", "rest", path)
            if fail is not None:
                assert fail.http_status is not None
                status = fail.http_status
                message = fail.details or _REASONS.get(status, "injected failure")
                extra = {} if fail.retry_after is None else {"Retry-After": str(fail.retry_after)}
                payload: bytes | None = _dumps({"error": [{"message": message}]})
            else:
                try:
                    status, payload, extra = owner._rest(method, path, self.headers, body)
                except _RestError as exc:
                    status, payload, extra = exc.status, exc.body, {}
            answer = str(status)
            self._send(status, payload, extra, owner, key)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # pragma: no cover - a server bug; answer 500 and go on
            answer = "500"
            self._send(
                500, _dumps({"error": [{"message": f"test server: {exc!r}"}]}), {}, owner, key
            )
        finally:
            if answer == "0":
                owner._leave(key, answer)

    def _send(
        self,
        status: int,
        body: bytes | None,
        extra: Mapping[str, str],
        owner: WeaviateServer,
        key: str,
    ) -> None:
        data = body or b""
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"]
        if body is not None:
            head.append("Content-Type: application/json")
        head.append(f"Content-Length: {len(data)}")
        head += [f"{k}: {v}" for k, v in extra.items()]
        # Accounted before the client can see the answer, so a test reading the statistics
        # right after its call returns never races this thread.
        owner._leave(key, str(status))
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)


# ----------------------------------------------------------------------- synthetic data
def synthetic_uuid(collection: str, i: int, seed: int = 0) -> uuid.UUID:
    """The UUID of synthetic object ``i`` (uuid5: deterministic, unordered like real ids)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"vec2pg-synthetic/{collection}/{seed}/{i}")


def synthetic_batches(
    collection: str, records: int, dim: int, seed: int = 0, batch: int = 10_000
) -> Iterator[tuple[list[uuid.UUID], np.ndarray, list[dict[str, Any]]]]:
    """Batches of (uuids, float32 vectors, properties) of the synthetic data ``main`` serves:
    vectors from ``numpy.random.default_rng(seed).standard_normal``, properties
    ``{"n": i, "title": "object i"}``; a client regenerates them to verify what it read."""
    rng = np.random.default_rng(seed)
    for start in range(0, records, batch):
        stop = min(records, start + batch)
        ids = [synthetic_uuid(collection, i, seed) for i in range(start, stop)]
        matrix = rng.standard_normal((stop - start, dim), dtype=np.float32)
        props = [{"n": i, "title": f"object {i}"} for i in range(start, stop)]
        yield ids, matrix, props


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="REST port (0: any free port)")
    parser.add_argument("--grpc-port", type=int, default=0, help="gRPC port (0: any free port)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each request")
    parser.add_argument("--collection", default="Bench")
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--distance", default="cosine", choices=DISTANCES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-key")
    parser.add_argument("--version", default=DEFAULT_VERSION)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument(
        "--no-title",
        action="store_true",
        help='properties {"n": i} only (scripts/bench_common.py\'s metadata)',
    )
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="NAME:RECORDS",
        help="another collection (repeatable) holding the first RECORDS objects of --collection's "
        "data, with the same UUIDs",
    )
    args = parser.parse_args(argv)
    collections = {args.collection: args.records}
    for also in args.also:
        name, _, count = also.rpartition(":")
        collections[name] = int(count)

    server = WeaviateServer(
        api_key=args.api_key,
        version=args.version,
        host=args.host,
        http_port=args.port,
        grpc_port=args.grpc_port,
        latency=args.latency,
        max_workers=args.workers,
    )
    for name in collections:
        server.create_collection(
            name,
            properties={"n": "int"} if args.no_title else {"n": "int", "title": "text"},
            vector=VectorIndex(args.dim, args.distance),
        )
    largest = max(collections.values())
    for ids, matrix, props in synthetic_batches(args.collection, largest, args.dim, args.seed):
        if args.no_title:
            props = [{"n": p["n"]} for p in props]
        first = props[0]["n"]
        for name, count in collections.items():
            if first < count:
                end = count - first
                server.seed(name, uuids=ids[:end], vector=matrix[:end], properties=props[:end])
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    with server:
        print(
            json.dumps(
                {
                    "http_port": server.http_port,
                    "grpc_port": server.grpc_port,
                    "url": server.url,
                    "collection": args.collection,
                    "records": args.records,
                    "collections": collections,
                    "dim": args.dim,
                    "seed": args.seed,
                }
            ),
            flush=True,
        )
        done.wait()
        stats = server.stats()
    times = os.times()
    stats["process_cpu_seconds"] = times.user + times.system
    print(json.dumps(stats), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
