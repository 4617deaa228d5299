"""An Amazon S3 Vectors wire-format server for tests, also serving Supabase's vector API.

Two wires over one store, on one port:

* **AWS** (``POST /<Operation>``): what ``boto3.client("s3vectors", endpoint_url=server.url,
  region_name="us-east-1", aws_access_key_id=..., aws_secret_access_key=...)`` sends.  The
  operations, camelCase shapes, limits and error statuses are those of botocore's service model
  ``botocore/data/s3vectors/2025-07-15/service-2.json`` (rest-json, every operation ``POST``).
* **Supabase** (``POST /storage/v1/vector/<Operation>``, enabled by ``supabase_key=``): the
  same bodies with ``apikey: <key>`` and ``Authorization: Bearer <key>`` (the service-role key),
  answered the way supabase/storage's ``src/http/routes/vector/*.ts`` answer them.

Standard library plus numpy (orjson, when importable, encodes ~6x faster).  Operations:
CreateVectorBucket, GetVectorBucket, ListVectorBuckets, DeleteVectorBucket, CreateIndex,
GetIndex, ListIndexes, DeleteIndex, PutVectors, GetVectors, DeleteVectors, ListVectors.  The
model's other operations (QueryVectors, policies, tags, index modes) answer 501
``NotImplemented``; unknown paths 404 ``UnknownOperationException``.

Pointing clients at it::

    with S3VectorsServer(supabase_key="service-key") as server:
        s3v = boto3.client("s3vectors", endpoint_url=server.url, region_name="us-east-1",
                           aws_access_key_id="AKIDTEST", aws_secret_access_key="secret")
        server.seed("bucket", "docs", keys, matrix, metadata=[{"n": i} for i in ...])
        s3v.list_vectors(vectorBucketName="bucket", indexName="docs", returnData=True)
        urllib3.request("POST", server.supabase_url + "/ListVectors", json={...},
                        headers={"apikey": "service-key", "Authorization": "Bearer service-key"})

Behaviour, chosen to match the real services where known (unverified choices say so):

* Errors (AWS wire): the status from the model (ValidationException 400, AccessDenied 403,
  NotFound 404, Conflict 409, ServiceQuotaExceeded 402, RequestTimeout 408, TooManyRequests 429,
  InternalServer 500, ServiceUnavailable 503), the code in the ``x-amzn-ErrorType`` header and a
  body ``{"message": ...}`` (ValidationException adds ``fieldList: [{path, message}]``).
  botocore's ``RestJSONParser`` takes the code from that header first, then a body ``code`` /
  ``Code``, then ``__type``, then the HTTP status (botocore/parsers.py ``_inject_error_code``).
  Messages follow the "1 validation error detected. Value at '/maxResults' failed to satisfy
  constraint: ..." style moto also uses; their exact wording is not verified against AWS.
* Auth (AWS wire): a SigV4 ``Authorization`` header is required (else 403
  ``MissingAuthenticationTokenException``) whose credential scope names service ``s3vectors``
  and the server's region (else 403 ``InvalidSignatureException``).  The signature itself is
  not checked.  ``credentials={access_key_id: actions}`` restricts callers to those keys (others
  get 403 ``UnrecognizedClientException``); without it any key id has every action.
* Permissions: each principal (access key id, or Supabase key) has a set of actions
  (``s3vectors:ListVectors``...).  ``deny(principal, "s3vectors:GetVectors")`` and ListVectors
  with ``returnData`` or ``returnMetadata`` answers 403 AccessDeniedException, as AWS documents,
  while a keys-only ListVectors still works.  CreateIndex/CreateVectorBucket with tags also
  need ``s3vectors:TagResource``.
* Limits: bucket and index names 3..63 ``[a-z0-9][a-z0-9.-]*[a-z0-9]`` (the model's ARN
  pattern); keys 1..1024 characters of any UTF-8; dimension 1..4096; dataType ``float32``;
  distanceMetric ``cosine``|``euclidean``; PutVectors and DeleteVectors at most 500, GetVectors
  at most 100; metadata a JSON object of at most 50 keys and 40 KB, of which the filterable part
  (keys not in ``nonFilterableMetadataKeys``, at most 10) at most 2 KB, sizes measured as compact
  UTF-8 JSON (as Supabase measures them); NaN/inf rejected (also values that overflow float32);
  cosine rejects all-zero vectors; a body over 20 MiB is rejected.  Metadata of any JSON type
  (nested objects, arrays, null) is stored on the AWS wire (the model's ``document`` type; AWS
  documents filterable metadata as string, number, boolean and list); the Supabase wire accepts
  only primitives and lists of primitives, as its route schema does.
* Values are stored as float32 and answered as the float64 text of each float32
  (``0.4000000059604645`` for 0.4, as in the AWS user guide's ListVectors example), so a client
  casting to float32 gets the stored value exactly.  ``float_repr="float32"`` answers the
  shortest float32 text instead (smaller bodies).
* ListVectors: ``maxResults`` 1..1000 (default 500); ``returnData`` / ``returnMetadata``;
  ``segmentCount`` 1..16 and ``segmentIndex`` 0..segmentCount-1 always together.  Vectors are
  listed in the order of a 128-bit hash of their key (not by key: do not rely on an order), and
  segment *i* of *n* is the *i*-th of *n* equal ranges of that hash, so segments are disjoint
  and together hold every vector.  ``nextToken`` is opaque (HMAC-sealed), absent on the last
  page, and bound to its query: replayed against another bucket, index (even a re-created one
  of the same name) or segment it answers ValidationException.  A page also stops once its
  answer passes ``list_page_bytes`` (1 MiB), counting per vector the key's UTF-8 bytes, 4 bytes
  per dimension when ``returnData`` and the metadata JSON when ``returnMetadata`` (AWS says
  "processed dataset size exceeds 1 MB"; how it counts is not public), so pages can be short.
  ListIndexes and ListVectorBuckets page by name, ``maxResults`` 1..500 (default 500).

Supabase wire (supabase/storage, ``src/http/routes/vector``, ``src/http/plugins/jwt.ts`` and
``signature-v4.ts``, ``src/internal/errors``, ``src/storage/protocols/vector``):

* Keys: first the hosted API gateway's ``apikey`` check (not in the storage repository; bodies
  as clients report them): missing answers 401 ``{"message":"No API key found in request",
  "hint":...}``, unknown 401 ``{"message":"Invalid API key","hint":...}``
  (``supabase_gateway=False`` skips it, like self-hosted storage reached directly).  Then
  storage's own check of ``Authorization``: the service key passes; ``supabase_anon_key``
  answers 403 ``Access denied: Invalid role``; a JWT-shaped unknown token 403 ``signature
  verification failed``; anything else (or nothing) is taken for SigV4 and answers 403 ``Missing
  signature``.  Bodies are storage's ``{"statusCode": "403", "code": "AccessDenied", "error":
  "Unauthorized", "message": ...}``.  A SigV4 ``Authorization`` (storage accepts one for
  ``s3vectors``) is treated as on the AWS wire.
* Errors are storage's ``{"statusCode": "<status>", "code", "error", "message"}``: schema
  failures 400 ``InvalidRequest`` (``body/maxResults must be <= 1000``; the ``error`` field of
  those is a guess), semantic ones 400 ``InvalidParameter``, unknown resources 404
  ``NotFoundException`` (``resource "x" not found``), duplicates 409 ``ConflictException``, a
  non-empty bucket 400 ``VectorBucketNotEmpty``, AWS's AccessDenied 403 ``AccessDenied``.
* Index names 3..45 characters (storage prefixes them with the tenant id before AWS sees
  them); keys at most 1024 UTF-16 code units (``key.length`` in limits.ts); duplicate keys in one
  PutVectors rejected; no ARNs in answers; creation times in whole seconds; Create*, Delete*
  and PutVectors answer 200 with an empty body.  ListIndexes and ListVectorBuckets: nextToken
  is the last name, plain (storage's metadata database pages them itself).
* ``halfvec=True`` mimics storage's self-hosted pgvector backend (adapter/pgvector/index.ts):
  values are stored as ``halfvec`` (float16, read back as the shortest float32 text of the
  rounded value: 0.1 -> 0.099975586), dimension at most 4000, ListVectors keyset by key (``key >
  nextToken ORDER BY key``: the token is the last key, plain, bound to nothing), segments are
  ``mod(abs(hashtext(key)), segmentCount)`` (Postgres' ``hashtext``, reimplemented here), no
  1 MB page cut, and ``metadata`` reads back ``{}`` for a vector without any.  As pgvector
  does, zero vectors are accepted, a value beyond float16 (65504) and a dimension mismatch fail
  as unmapped database errors (500 ``InternalError``).  Applies to both wires.

Fault injection and measurement (settable at any time, thread-safe)::

    server.latency = 0.05                          # seconds slept per request (no lock held)
    server.fail_next(2, status=429, retry_after=1, operation="ListVectors")
    server.fail_next(1, status=503)                # code from the status (ServiceUnavailable...)
    server.hang_next(1, seconds=5, operation="GetVectors")   # stall, then answer normally
    server.drop_next(1, operation="ListVectors")   # close the connection without an answer
    server.count("ListVectors"); server.counts; server.status_counts
    server.max_in_flight; server.reset_stats()

``retry_after`` sends ``Retry-After`` (seconds) and ``x-amz-retry-after`` (milliseconds; what
botocore's standard retry mode reads).  Faults on the Supabase wire answer in storage's shape
(429 as storage's own ``SlowDown`` body).  Auth is checked before faults, latency before both.

``seed(bucket, index, keys, matrix, metadata=None)`` loads vectors server-side without HTTP
(creating the bucket and index when missing), encoding each vector's JSON once, so an answer is
a ``b"".join`` of fragments (a 1 MiB page of 1024-dim vectors, ~5 MB of JSON, takes ~0.5 ms).
Measured on a slow 2-core machine: a 1024-dim vector holds ~26 KB with float64 text and seeds at
~4-7k/s, so 200k take ~5 GB and 30-50 s; ``float_repr="float32"`` ~15 KB and ~9k/s.
``seed_synthetic`` / ``synthetic_matrix`` give deterministic data a client can regenerate.  To
keep the server off a benchmark client's GIL, run it as its own process:
``python tests/s3vectors_server.py --help``.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import collections
import hashlib
import hmac
import json
import math
import re
import secrets
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from wire_http import Faults, Handler, Server

_orjson: Any
try:  # optional: ~6x faster encoding of float arrays
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only without orjson installed
    _orjson = None

__all__ = [
    "ALL_ACTIONS",
    "OPERATIONS",
    "S3VectorsServer",
    "postgres_hashtext",
    "seed_synthetic",
    "synthetic_keys",
    "synthetic_matrix",
    "synthetic_metadata",
]

OPERATIONS = (
    "CreateVectorBucket",
    "GetVectorBucket",
    "ListVectorBuckets",
    "DeleteVectorBucket",
    "CreateIndex",
    "GetIndex",
    "ListIndexes",
    "DeleteIndex",
    "PutVectors",
    "GetVectors",
    "DeleteVectors",
    "ListVectors",
)
# In botocore's model but not served here: they answer 501 NotImplemented.
UNIMPLEMENTED = (
    "QueryVectors",
    "GetVectorBucketPolicy",
    "PutVectorBucketPolicy",
    "DeleteVectorBucketPolicy",
    "ListTagsForResource",
    "TagResource",
    "UntagResource",
    "PutVectorBucketDefaultIndexMode",
    "UpdateIndexMode",
    "UpdateMetadataConfiguration",
)
ALL_ACTIONS = frozenset(f"s3vectors:{op}" for op in OPERATIONS + UNIMPLEMENTED)

# Error shapes and their httpStatusCode in botocore's model (ValidationException has none:
# 400, the rest-json default).
ERROR_STATUS = {
    "ValidationException": 400,
    "ServiceQuotaExceededException": 402,
    "AccessDeniedException": 403,
    "NotFoundException": 404,
    "RequestTimeoutException": 408,
    "ConflictException": 409,
    "TooManyRequestsException": 429,
    "InternalServerException": 500,
    "ServiceUnavailableException": 503,
}
_CODE_FOR_STATUS = {status: code for code, status in ERROR_STATUS.items()}

# Limits: botocore's model (shape min/max) and the S3 Vectors user guide's "Limitations and
# restrictions" page.
MAX_NAME = 63  # VectorBucketName, IndexName
MAX_SUPABASE_INDEX_NAME = 45  # storage's route schema (room for its tenant-id prefix)
MAX_KEY_CHARS = 1024  # VectorKey
MAX_DIMENSION = 4096  # Dimension
MAX_HALFVEC_DIMENSION = 4000  # storage's pgvector backend: halfvec HNSW opclasses stop there
MAX_LIST_VECTORS = 1000  # ListVectorsMaxResults
DEFAULT_LIST_VECTORS = 500
MAX_LIST_NAMES = 500  # ListIndexesMaxResults, ListVectorBucketsMaxResults (and their default)
MAX_SEGMENTS = 16  # ListVectorsSegmentCount
MAX_PUT_VECTORS = 500  # PutVectorsInputList
MAX_GET_KEYS = 100  # GetVectorsInputList
MAX_DELETE_KEYS = 500  # DeleteVectorsInputList
MAX_METADATA_BYTES = 40 * 1024
MAX_FILTERABLE_METADATA_BYTES = 2048
MAX_METADATA_KEYS = 50
MAX_NON_FILTERABLE_KEYS = 10  # NonFilterableMetadataKeys
MAX_REQUEST_BYTES = 20 * 1024 * 1024  # "Request payload size: Up to 20 MiB"
LIST_PAGE_BYTES = 1 << 20  # ListVectors stops a page once it passes 1 MB

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # the model's ARN patterns
_SUPABASE_INDEX_PATTERN = "^[a-z0-9](?:[a-z0-9.-]{1,61})?[a-z0-9]$"
_SUPABASE_INDEX_RE = re.compile(_SUPABASE_INDEX_PATTERN)
_JWT_SHAPE = re.compile(  # storage's isJwtToken (src/internal/auth/jwt.ts)
    r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)?$"
)
_SIGV4_RE = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request"
)
_SUPABASE_PREFIX = "/storage/v1/vector/"

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


# ---------------------------------------------------------------------------------------------
# Errors


class ApiError(Exception):
    """An error answer; the wire that asked renders it (AWS or Supabase shape).

    ``supabase`` overrides ``(status, code, message, error)`` for the Supabase wire; without
    it ValidationException becomes storage's 400 ``InvalidParameter`` with the same message.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        fields: Sequence[Mapping[str, str]] | None = None,
        supabase: tuple[int, str, str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or ERROR_STATUS.get(code, 400)
        self.fields = fields
        self.supabase = supabase

    def aws_answer(self) -> tuple[int, bytes, dict[str, str]]:
        body: dict[str, Any] = {"message": self.message}
        if self.fields is not None:
            body["fieldList"] = list(self.fields)
        return self.status, _dumps(body), {"x-amzn-ErrorType": self.code}

    def supabase_answer(self) -> tuple[int, bytes, dict[str, str]]:
        if self.supabase is not None:
            status, code, message, error = self.supabase
        elif self.code == "ValidationException":
            status, code, message, error = 400, "InvalidParameter", self.message, "InvalidParameter"
        elif self.code == "AccessDeniedException":
            # storage's S3 adapter (adapter/s3-vector.ts handleError) replaces AWS's message.
            status, code, error = 403, "AccessDenied", "Unauthorized"
            message = "Access denied to S3 Vector service. Please check your permissions."
        elif self.code in ("NotFoundException", "ConflictException"):
            status, code, message, error = self.status, self.code, self.message, self.code
        else:  # anything else from AWS is not renderable there: a bare 500
            status, code, message, error = 500, "InternalError", "Internal Server Error", "Internal"
        return status, _storage_body(status, code, message, error), {}


def _storage_body(status: int, code: str, message: str, error: str | None = None) -> bytes:
    # storage's error handler: {statusCode (a string), code, error, message}
    return _dumps(
        {"statusCode": str(status), "code": code, "error": error or code, "message": message}
    )


class _Answer(Exception):
    """A finished answer raised from deep inside (gateway and auth refusals)."""

    def __init__(self, status: int, body: bytes, headers: Mapping[str, str] | None = None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def _constraint(
    path: str,
    constraint: str,
    schema_message: str,
    *,
    length: int | None = None,
    value: str | None = None,
) -> ApiError:
    """A model constraint failure: Smithy's message on AWS, fastify/ajv's on Supabase."""
    subject = "Value" if value is None else f"Value {value}"
    if length is not None:
        subject = f"Value with length {length}"
    detail = f"{subject} at '/{path}' failed to satisfy constraint: Member must {constraint}"
    return ApiError(
        "ValidationException",
        f"1 validation error detected. {detail}",
        fields=[{"path": f"/{path}", "message": detail}],
        supabase=(400, "InvalidRequest", schema_message, "FastifyError"),
    )


def _invalid(message: str, supabase_message: str | None = None) -> ApiError:
    """A semantic ValidationException (storage: InvalidParameter, same or its own message)."""
    return ApiError(
        "ValidationException",
        message,
        supabase=(400, "InvalidParameter", supabase_message or message, "InvalidParameter"),
    )


def _not_found(kind: str, name: str) -> ApiError:
    what = "vector bucket" if kind == "bucket" else "index"
    return ApiError(
        "NotFoundException",
        f"The specified {what} could not be found",
        supabase=(404, "NotFoundException", f'resource "{name}" not found', "NotFoundException"),
    )


def _pg_error(message: str) -> ApiError:
    # An error storage's pgvector adapter does not map (adapter/pgvector/errors.ts): the error
    # handler answers a bare 500.
    return ApiError(
        "InternalServerException",
        message,
        supabase=(500, "InternalError", "Internal Server Error", "Internal"),
    )


# ---------------------------------------------------------------------------------------------
# Encoding


def _dumps(obj: Any) -> bytes:
    if _orjson is not None:
        try:
            out: bytes = _orjson.dumps(obj)
            return out
        except (TypeError, _orjson.JSONEncodeError):  # ints beyond 64 bits, deep nesting
            pass
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads(body: bytes, *, allow_nan: bool = True) -> Any:
    """Parse JSON; ``allow_nan`` also takes the NaN/Infinity botocore's json.dumps can send."""
    if _orjson is not None:
        try:
            return _orjson.loads(body)
        except _orjson.JSONDecodeError:
            if not allow_nan:
                raise
    if allow_nan:
        return json.loads(body)
    return json.loads(body, parse_constant=_reject_constant)


_FMT_CACHE: dict[tuple[int, str], str] = {}


def _encode_values(vec: np.ndarray, float_repr: str) -> bytes:
    """JSON array text of a float32 vector, as float64 text (AWS) or shortest float32 text."""
    if float_repr == "float64":
        wide = np.ascontiguousarray(vec, dtype=np.float64)
        if _orjson is not None:
            out: bytes = _orjson.dumps(wide, option=_orjson.OPT_SERIALIZE_NUMPY)
            return out
        return json.dumps(wide.tolist(), separators=(",", ":")).encode("ascii")
    if _orjson is not None:
        out = _orjson.dumps(
            np.ascontiguousarray(vec, dtype=np.float32), option=_orjson.OPT_SERIALIZE_NUMPY
        )
        return out
    n = vec.shape[0]
    fmt = _FMT_CACHE.get((n, float_repr))
    if fmt is None:
        fmt = _FMT_CACHE[(n, float_repr)] = "[" + ",".join(["%.9g"] * n) + "]"
    return (fmt % tuple(vec.astype(np.float64).tolist())).encode("ascii")


def _order_hash(key: str) -> int:
    """The 128-bit position of a key in the AWS-style listing order."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest(), "big")


_NUMBER_TYPES = (float, int)
_FLOAT_WORDS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_U32 = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _U32


def postgres_hashtext(text: str) -> int:
    """PostgreSQL's ``hashtext(text)`` (``hash_bytes`` in src/common/hashfn.c), as an int4.

    Checked against PostgreSQL 18 for ASCII, multi-byte and 1024-character keys.  Storage's
    pgvector backend puts a key in segment ``abs(hashtext(key)) % segmentCount``.
    """
    k = text.encode("utf-8")
    length = len(k)
    a = b = c = (0x9E3779B9 + length + 3923095) & _U32
    i = 0
    while length - i >= 12:
        a = (a + int.from_bytes(k[i : i + 4], "little")) & _U32
        b = (b + int.from_bytes(k[i + 4 : i + 8], "little")) & _U32
        c = (c + int.from_bytes(k[i + 8 : i + 12], "little")) & _U32
        a = (a - c) & _U32
        a ^= _rot(c, 4)
        c = (c + b) & _U32
        b = (b - a) & _U32
        b ^= _rot(a, 6)
        a = (a + c) & _U32
        c = (c - b) & _U32
        c ^= _rot(b, 8)
        b = (b + a) & _U32
        a = (a - c) & _U32
        a ^= _rot(c, 16)
        c = (c + b) & _U32
        b = (b - a) & _U32
        b ^= _rot(a, 19)
        a = (a + c) & _U32
        c = (c - b) & _U32
        c ^= _rot(b, 4)
        b = (b + a) & _U32
        i += 12
    tail = k[i:]
    a = (a + int.from_bytes(tail[0:4], "little")) & _U32
    b = (b + int.from_bytes(tail[4:8], "little")) & _U32
    c = (c + (int.from_bytes(tail[8:11], "little") << 8)) & _U32  # c's low byte is reserved
    c ^= b
    c = (c - _rot(b, 14)) & _U32
    a ^= c
    a = (a - _rot(c, 11)) & _U32
    b ^= a
    b = (b - _rot(a, 25)) & _U32
    c ^= b
    c = (c - _rot(b, 16)) & _U32
    a ^= c
    a = (a - _rot(c, 4)) & _U32
    b ^= a
    b = (b - _rot(a, 14)) & _U32
    c ^= b
    c = (c - _rot(b, 24)) & _U32
    return c - (1 << 32) if c & 0x80000000 else c


# ---------------------------------------------------------------------------------------------
# The store


class _Vector:
    """One stored vector with its answer fragments, encoded once."""

    __slots__ = ("key", "order", "segment_hash", "key_json", "data_json", "meta_json", "key_size")

    def __init__(
        self, key: str, data_json: bytes, meta_json: bytes | None, segment_hash: int
    ) -> None:
        self.key = key
        self.order = _order_hash(key)
        self.segment_hash = segment_hash  # abs(hashtext(key)) under halfvec, else 0
        self.key_json = b'{"key":' + _dumps(key)
        self.data_json = data_json  # b',"data":{"float32":[...]}'
        self.meta_json = meta_json  # b',"metadata":{...}' or None
        self.key_size = len(key.encode("utf-8"))


@dataclass
class _Index:
    bucket: str
    name: str
    arn: str
    dimension: int
    metric: str
    non_filterable: tuple[str, ...]
    created: float = field(default_factory=time.time)
    uid: int = field(default_factory=lambda: secrets.randbits(64))
    vectors: dict[str, _Vector] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _by_order: list[int] | None = None  # sorted order hashes
    _order_map: dict[int, _Vector] = field(default_factory=dict)
    _by_key: list[str] | None = None  # sorted keys (halfvec listing)

    def store(self, items: Sequence[_Vector]) -> None:
        with self.lock:
            for v in items:
                old = self.vectors.get(v.key)
                if old is not None:
                    self._order_map.pop(old.order, None)
                self.vectors[v.key] = v
                self._order_map[v.order] = v
            self._by_order = None
            self._by_key = None

    def remove(self, keys: Iterable[str]) -> None:
        with self.lock:
            for key in keys:
                old = self.vectors.pop(key, None)
                if old is not None:
                    self._order_map.pop(old.order, None)
            self._by_order = None
            self._by_key = None

    def sorted_orders(self) -> tuple[list[int], dict[int, _Vector]]:
        with self.lock:
            if self._by_order is None:
                self._by_order = sorted(self._order_map)
            return self._by_order, self._order_map

    def sorted_keys(self) -> list[str]:
        with self.lock:
            if self._by_key is None:
                # Python orders str by code point, which is UTF-8 byte order ("C" collation).
                self._by_key = sorted(self.vectors)
            return self._by_key

    def summary(self, supabase: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"vectorBucketName": self.bucket, "indexName": self.name}
        if not supabase:
            out["indexArn"] = self.arn
        out["creationTime"] = int(self.created) if supabase else self.created
        return out


@dataclass
class _Bucket:
    name: str
    arn: str
    created: float = field(default_factory=time.time)
    indexes: dict[str, _Index] = field(default_factory=dict)

    def summary(self, supabase: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"vectorBucketName": self.name}
        if not supabase:
            out["vectorBucketArn"] = self.arn
        out["creationTime"] = int(self.created) if supabase else self.created
        return out


@dataclass
class _Rule:
    remaining: int
    kind: str  # "fail" | "hang" | "drop"
    operation: str | None
    status: int = 429
    code: str | None = None
    retry_after: float | None = None
    seconds: float = 0.0
    message: str | None = None


@dataclass
class _Call:
    """Who asked, over which wire."""

    wire: str  # "aws" | "supabase"
    principal: str
    actions: frozenset[str]

    @property
    def supabase(self) -> bool:
        return self.wire == "supabase"


# ---------------------------------------------------------------------------------------------
# Request arguments


_MISSING = object()


class _Args:
    """A request body with typed getters raising the wire's validation errors."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        self.body = body

    def _present(self, name: str, required: bool) -> Any:
        value = self.body.get(name, _MISSING)
        if value is None:
            value = _MISSING  # botocore never sends null; treat it as absent
        if value is _MISSING and required:
            raise _constraint(
                name, "not be null", f"body must have required property '{name}'", value="null"
            )
        return value

    def integer(self, name: str, lo: int, hi: int, *, required: bool = False) -> int | None:
        value = self._present(name, required)
        if value is _MISSING:
            return None
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not whole:
            raise _constraint(name, "be an integer", f"body/{name} must be integer")
        value = int(value)
        if value < lo:
            raise _constraint(
                name, f"be between {lo} and {hi}, inclusive", f"body/{name} must be >= {lo}"
            )
        if value > hi:
            raise _constraint(
                name, f"be between {lo} and {hi}, inclusive", f"body/{name} must be <= {hi}"
            )
        return value

    def boolean(self, name: str) -> bool:
        value = self._present(name, False)
        if value is _MISSING:
            return False
        if not isinstance(value, bool):
            raise _constraint(name, "be a boolean", f"body/{name} must be boolean")
        return value

    def string(
        self,
        name: str,
        lo: int = 1,
        hi: int | None = None,
        *,
        required: bool = False,
        pattern: re.Pattern[str] | None = None,
        pattern_text: str | None = None,
    ) -> str | None:
        value = self._present(name, required)
        if value is _MISSING:
            return None
        if not isinstance(value, str):
            raise _constraint(name, "be a string", f"body/{name} must be string")
        if len(value) < lo or (hi is not None and len(value) > hi):
            bound = f"{lo} and {hi}" if hi is not None else f"{lo} and 2147483647"
            ajv = (
                f"body/{name} must NOT have fewer than {lo} characters"
                if len(value) < lo
                else f"body/{name} must NOT have more than {hi} characters"
            )
            raise _constraint(
                name, f"have length between {bound}, inclusive", ajv, length=len(value)
            )
        if pattern is not None and not pattern.fullmatch(value):
            text = pattern_text or pattern.pattern
            raise _constraint(
                name,
                f"satisfy regular expression pattern: {text}",
                f'body/{name} must match pattern "{text}"',
            )
        return value

    def array(self, name: str, lo: int, hi: int, *, required: bool = False) -> list[Any] | None:
        value = self._present(name, required)
        if value is _MISSING:
            return None
        if not isinstance(value, list):
            raise _constraint(name, "be a list", f"body/{name} must be array")
        if len(value) < lo:
            raise _constraint(
                name,
                f"have length between {lo} and {hi}, inclusive",
                f"body/{name} must NOT have fewer than {lo} items",
                length=len(value),
            )
        if len(value) > hi:
            raise _constraint(
                name,
                f"have length between {lo} and {hi}, inclusive",
                f"body/{name} must NOT have more than {hi} items",
                length=len(value),
            )
        return value


def _key_length_ok(key: str, supabase: bool) -> bool:
    if supabase:  # limits.ts validateVectorKey checks JavaScript's key.length (UTF-16 units)
        return 1 <= len(key.encode("utf-16-le")) // 2 <= MAX_KEY_CHARS
    return 1 <= len(key) <= MAX_KEY_CHARS


# ---------------------------------------------------------------------------------------------
# The server


class S3VectorsServer(Faults["_Rule"]):
    """S3 Vectors (AWS wire) and Supabase's vector API on one port of 127.0.0.1."""

    def __init__(
        self,
        *,
        supabase_key: str | None = None,
        supabase_anon_key: str | None = None,
        supabase_gateway: bool = True,
        credentials: Mapping[str, Iterable[str]] | None = None,
        halfvec: bool = False,
        float_repr: str | None = None,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        bind: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        list_page_bytes: int | None = LIST_PAGE_BYTES,
    ) -> None:
        if float_repr is None:
            float_repr = "float32" if halfvec else "float64"
        if float_repr not in ("float64", "float32"):
            raise ValueError("float_repr must be 'float64' or 'float32'")
        self.supabase_key = supabase_key
        self.supabase_anon_key = supabase_anon_key
        self.supabase_gateway = supabase_gateway
        self.halfvec = halfvec
        self.float_repr = float_repr
        self.region = region
        self.account_id = account_id
        self.bind = bind
        self.port = port
        self.latency = latency
        # Pages stop once past this many bytes; None: only maxResults ends a page.
        self.list_page_bytes = None if halfvec else list_page_bytes
        self._lock = threading.Lock()  # buckets, permissions, counts; never held asleep
        self._buckets: dict[str, _Bucket] = {}
        self._known_only = credentials is not None
        self._actions: dict[str, frozenset[str]] = {
            k: frozenset(v) for k, v in (credentials or {}).items()
        }
        self._token_key = secrets.token_bytes(32)
        super().__init__()
        self._counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> S3VectorsServer:
        if self._httpd is not None:
            return self
        httpd = _HTTPServer((self.bind, self.port), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="s3vectors-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            socks = list(self._sockets)
            self._sockets.clear()
        for s in socks:  # wake keep-alive handler threads blocked in recv
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> S3VectorsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL of the AWS wire, for ``boto3.client("s3vectors", endpoint_url=...)``."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://{self.bind}:{self._httpd.server_address[1]}"

    @property
    def supabase_url(self) -> str:
        """``{url}/storage/v1/vector``: POST ``/<Operation>`` under it."""
        return self.url + _SUPABASE_PREFIX.rstrip("/")

    # -- permissions ------------------------------------------------------------------------

    def set_actions(self, principal: str, actions: Iterable[str]) -> None:
        """Give an access key id or Supabase key exactly these actions (``s3vectors:X``)."""
        actions = frozenset(actions)
        unknown = actions - ALL_ACTIONS
        if unknown:
            raise ValueError(f"unknown actions {sorted(unknown)}")
        with self._lock:
            self._actions[principal] = actions

    def deny(self, principal: str, *actions: str) -> None:
        """Take actions away from a principal (which starts with every action)."""
        with self._lock:
            current = self._actions.get(principal, ALL_ACTIONS)
        self.set_actions(principal, current - frozenset(actions))

    def allow(self, principal: str, *actions: str) -> None:
        with self._lock:
            current = self._actions.get(principal, ALL_ACTIONS)
        self.set_actions(principal, current | frozenset(actions))

    def _actions_of(self, principal: str) -> frozenset[str] | None:
        with self._lock:
            actions = self._actions.get(principal)
        if actions is None and not self._known_only:
            return ALL_ACTIONS
        return actions

    # -- server-side data -------------------------------------------------------------------

    def create_bucket(self, name: str) -> None:
        _check_name("bucket", name)
        with self._lock:
            if name in self._buckets:
                raise ValueError(f"vector bucket {name!r} already exists")
            self._buckets[name] = _Bucket(name, self._bucket_arn(name))

    def create_index(
        self,
        bucket: str,
        name: str,
        dimension: int,
        distance_metric: str = "cosine",
        *,
        non_filterable_metadata_keys: Sequence[str] = (),
    ) -> None:
        """Create an index (and its bucket when missing) server-side."""
        _check_name("bucket", bucket)
        _check_name("index", name)
        if distance_metric not in ("cosine", "euclidean"):
            raise ValueError("distance_metric must be 'cosine' or 'euclidean'")
        limit = MAX_HALFVEC_DIMENSION if self.halfvec else MAX_DIMENSION
        if not 1 <= int(dimension) <= limit:
            raise ValueError(f"dimension must be 1..{limit}")
        with self._lock:
            b = self._buckets.get(bucket)
            if b is None:
                b = self._buckets[bucket] = _Bucket(bucket, self._bucket_arn(bucket))
            if name in b.indexes:
                raise ValueError(f"index {name!r} already exists in {bucket!r}")
            b.indexes[name] = _Index(
                bucket,
                name,
                f"{b.arn}/index/{name}",
                int(dimension),
                distance_metric,
                tuple(non_filterable_metadata_keys),
            )

    def seed(
        self,
        bucket: str,
        index: str,
        keys: Sequence[str],
        matrix: Any,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        distance_metric: str = "cosine",
        non_filterable_metadata_keys: Sequence[str] = (),
    ) -> int:
        """Store vectors server-side (no HTTP); returns how many.  Creates what is missing.

        ``matrix`` is n x dim; the index gets ``dim`` and ``distance_metric`` when created.
        Validated as PutVectors validates (AWS wire), without its 500-a-call limit.
        """
        mat = np.asarray(matrix, dtype=np.float64)
        if mat.ndim != 2 or mat.shape[0] != len(keys):
            raise ValueError("matrix must be 2-D with one row per key")
        if metadata is not None and len(metadata) != len(keys):
            raise ValueError("metadata must have one entry per key")
        with self._lock:
            b = self._buckets.get(bucket)
            exists = b is not None and index in b.indexes
        if not exists:
            self.create_index(
                bucket,
                index,
                mat.shape[1],
                distance_metric,
                non_filterable_metadata_keys=non_filterable_metadata_keys,
            )
        ix = self._buckets[bucket].indexes[index]
        if mat.shape[1] != ix.dimension:
            raise ValueError(f"matrix has {mat.shape[1]} columns, index has {ix.dimension}")
        try:
            for key in keys:
                self._check_key(key, supabase=False)
            values = self._stored_values(ix, keys, mat)
            items = self._vectors(ix, keys, values, metadata, supabase=False)
        except ApiError as exc:
            raise ValueError(exc.message) from None
        ix.store(items)
        return len(items)

    def get(self, bucket: str, index: str, key: str) -> dict[str, Any] | None:
        """A stored vector as ListVectors answers it (``key``, ``data``, ``metadata``)."""
        v = self._buckets[bucket].indexes[index].vectors.get(key)
        if v is None:
            return None
        record: dict[str, Any] = _loads(v.key_json + v.data_json + (v.meta_json or b"") + b"}")
        return record

    def keys(self, bucket: str, index: str) -> list[str]:
        return self._buckets[bucket].indexes[index].sorted_keys()

    def vector_count(self, bucket: str, index: str) -> int:
        return len(self._buckets[bucket].indexes[index].vectors)

    def _bucket_arn(self, name: str) -> str:
        return f"arn:aws:s3vectors:{self.region}:{self.account_id}:bucket/{name}"

    # -- faults and stats -------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 429,
        code: str | None = None,
        retry_after: float | None = None,
        operation: str | None = None,
        *,
        message: str | None = None,
    ) -> None:
        """Answer the next ``n`` matching requests with an error.

        ``code`` defaults from the status (429 TooManyRequestsException, 503
        ServiceUnavailableException, 500 InternalServerException, 408 RequestTimeoutException
        ...); a status without a modeled code sends none, so botocore reports the status.
        """
        self._add_rule(_Rule(n, "fail", operation, status, code, retry_after, message=message))

    def hang_next(self, n: int = 1, seconds: float = 10.0, operation: str | None = None) -> None:
        """Stall the next ``n`` matching requests for ``seconds``, then answer normally."""
        self._add_rule(_Rule(n, "hang", operation, seconds=seconds))

    def drop_next(self, n: int = 1, operation: str | None = None) -> None:
        """Close the connection of the next ``n`` matching requests without answering."""
        self._add_rule(_Rule(n, "drop", operation))

    def _add_rule(self, rule: _Rule) -> None:
        if rule.operation is not None and rule.operation not in OPERATIONS:
            raise ValueError(f"operation must be one of {OPERATIONS}")
        super()._add_rule(rule)

    def _take_rule(self, operation: str) -> _Rule | None:
        return self._take_rule_where(lambda rule: rule.operation in (None, operation))

    def count(self, operation: str | None = None, *, wire: str | None = None) -> int:
        """Requests received (including ones refused or answered with faults)."""
        with self._lock:
            return sum(
                c
                for (w, op), c in self._counts.items()
                if operation in (None, op) and wire in (None, w)
            )

    @property
    def counts(self) -> dict[str, int]:
        out: collections.Counter[str] = collections.Counter()
        with self._lock:
            for (_, op), c in self._counts.items():
                out[op] += c
        return dict(out)

    def reset_stats(self) -> None:
        with self._lock:
            self._counts.clear()
        self._reset_traffic()

    def _enter(self, wire: str, operation: str) -> None:
        with self._lock:
            self._counts[(wire, operation)] += 1
        self._entered()

    # -- authentication ---------------------------------------------------------------------

    def _authenticate(self, wire: str, headers: Any) -> _Call:
        authorization = headers.get("Authorization") or ""
        if wire == "supabase" and not authorization.startswith("AWS4-HMAC-SHA256 "):
            if self.supabase_gateway:
                self._gateway_check(headers.get("apikey"))
            return self._supabase_bearer(authorization)
        return self._sigv4(wire, authorization)

    def _gateway_check(self, apikey: str | None) -> None:
        # The hosted API gateway's answers (not part of supabase/storage; as clients see them).
        if not apikey:
            raise _Answer(
                401,
                _dumps(
                    {
                        "message": "No API key found in request",
                        "hint": "No `apikey` request header or url param was found.",
                    }
                ),
            )
        if apikey not in (self.supabase_key, self.supabase_anon_key):
            raise _Answer(
                401,
                _dumps(
                    {
                        "message": "Invalid API key",
                        "hint": "Double check your Supabase `anon` or `service_role` API key.",
                    }
                ),
            )

    def _supabase_bearer(self, authorization: str) -> _Call:
        token = re.sub(r"^Bearer\s+", "", authorization, flags=re.IGNORECASE)

        def denied(message: str) -> _Answer:
            return _Answer(403, _storage_body(403, "AccessDenied", message, "Unauthorized"))

        if token and token == self.supabase_key:
            actions = self._actions_of(token)
            return _Call("supabase", token, actions if actions is not None else ALL_ACTIONS)
        if token and token == self.supabase_anon_key:
            raise denied("Access denied: Invalid role")  # plugins/jwt.ts enforceJwtRole
        if _JWT_SHAPE.match(token):
            raise denied("signature verification failed")  # jose's verify error, re-thrown
        # Not a JWT: storage takes the request for SigV4 (plugins/signature-v4.ts).
        raise denied("Missing signature")

    def _sigv4(self, wire: str, authorization: str) -> _Call:
        def refuse(code: str, message: str) -> _Answer:
            if wire == "supabase":  # storage's SigV4 refusals are AccessDenied/SignatureDoesNot…
                return _Answer(403, _storage_body(403, "AccessDenied", message, "Unauthorized"))
            return _Answer(403, _dumps({"message": message}), {"x-amzn-ErrorType": code})

        if not authorization:
            raise refuse("MissingAuthenticationTokenException", "Missing Authentication Token")
        m = _SIGV4_RE.match(authorization)
        if m is None:
            raise refuse(
                "IncompleteSignatureException",
                "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' "
                "parameters of an AWS4-HMAC-SHA256 signature.",
            )
        access_key, _date, region, service = m.groups()
        if service != "s3vectors":
            raise refuse(
                "InvalidSignatureException",
                "Credential should be scoped to correct service: 's3vectors'.",
            )
        if region != self.region:
            raise refuse(
                "InvalidSignatureException",
                f"Credential should be scoped to a valid region, not '{region}'.",
            )
        actions = self._actions_of(access_key)
        if actions is None:
            raise refuse(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        return _Call(wire, access_key, actions)

    def _require(self, call: _Call, operation: str, resource: str) -> None:
        action = f"s3vectors:{operation}"
        if action not in call.actions:
            raise ApiError(
                "AccessDeniedException",
                f"User: arn:aws:iam::{self.account_id}:user/{call.principal} is not authorized "
                f"to perform: {action} on resource: {resource} because no identity-based policy "
                f"allows the {action} action",
            )

    # -- request dispatch -------------------------------------------------------------------

    def _dispatch(self, call: _Call, operation: str, body: bytes) -> bytes:
        if len(body) > MAX_REQUEST_BYTES:
            raise _invalid(f"Request payload size exceeds the limit of {MAX_REQUEST_BYTES} bytes")
        try:
            parsed = _loads(body, allow_nan=not call.supabase) if body.strip() else {}
        except (ValueError, UnicodeDecodeError):
            raise ApiError(
                "SerializationException",
                "Could not parse the request body as JSON",
                supabase=(
                    400,
                    "InvalidRequest",
                    "Body is not valid JSON but content-type is set to 'application/json'",
                    "FastifyError",
                ),
            ) from None
        if not isinstance(parsed, dict):
            raise _invalid("The request body must be a JSON object")
        handler = getattr(self, f"_op_{operation}")
        result: bytes = handler(call, _Args(parsed))
        return result

    # Buckets ------------------------------------------------------------------------------

    def _bucket_name(self, call: _Call, args: _Args) -> str:
        if call.supabase:  # storage's schemas: vectorBucketName is any string
            name = args.string("vectorBucketName", 1)
        else:
            name = args.string("vectorBucketName", 3, MAX_NAME)
        arn = None if call.supabase else args.string("vectorBucketArn")
        if name is None and arn is not None:
            prefix = f"arn:aws:s3vectors:{self.region}:{self.account_id}:bucket/"
            if not arn.startswith(prefix) or "/" in arn[len(prefix) :]:
                raise _invalid("Invalid vector bucket ARN")
            name = arn[len(prefix) :]
        elif name is not None and arn is not None:
            raise _invalid("Must specify either vectorBucketArn or vectorBucketName, not both")
        if name is None:
            raise _constraint(
                "vectorBucketName",
                "not be null",
                "body must have required property 'vectorBucketName'",
                value="null",
            )
        return name

    def _bucket(self, name: str) -> _Bucket:
        with self._lock:
            b = self._buckets.get(name)
        if b is None:
            raise _not_found("bucket", name)
        return b

    def _op_CreateVectorBucket(self, call: _Call, args: _Args) -> bytes:  # noqa: N802
        lo, hi = (1, None) if call.supabase else (3, MAX_NAME)
        name = args.string("vectorBucketName", lo, hi, required=True)
        assert name is not None
        arn = self._bucket_arn(name)
        self._require(call, "CreateVectorBucket", arn)
        if args.body.get("tags"):
            self._require(call, "TagResource", arn)
        if not call.supabase and not _NAME_RE.fullmatch(name):
            raise _invalid("Invalid vector bucket name")
        with self._lock:
            if name in self._buckets:
                raise ApiError(
                    "ConflictException",
                    "A vector bucket with the specified name already exists",
                    supabase=(
                        409,
                        "ConflictException",
                        f'vector bucket "{name}" already exists',
                        "ConflictException",
                    ),
                )
            self._buckets[name] = _Bucket(name, arn)
        return b"" if call.supabase else _dumps({"vectorBucketArn": arn})

    def _op_GetVectorBucket(self, call: _Call, args: _Args) -> bytes:  # noqa: N802
        name = self._bucket_name(call, args)
        self._require(call, "GetVectorBucket", self._bucket_arn(name))
        b = self._bucket(name)
        out = b.summary(call.supabase)
        if not call.supabase:
            out["encryptionConfiguration"] = {"sseType": "AES256"}
        return _dumps({"vectorBucket": out})

    def _op_ListVectorBuckets(self, call: _Call, args: _Args) -> bytes:  # noqa: N802
        self._require(call, "ListVectorBuckets", "*")
        max_results = args.integer("maxResults", 1, MAX_LIST_NAMES) or MAX_LIST_NAMES
        prefix = args.string("prefix", 1, None if call.supabase else MAX_NAME) or ""
        token = args.string("nextToken", 1)
        after = self._name_cursor(call, token, "buckets", prefix) if token else None
        with self._lock:
            names = sorted(n for n in self._buckets if n.startswith(prefix))
            buckets = [self._buckets[n] for n in names]
        start = bisect.bisect_right(names, after) if after is not None else 0
        page = buckets[start : start + max_results]
        out: dict[str, Any] = {"vectorBuckets": [b.summary(call.supabase) for b in page]}
        if start + max_results < len(buckets) and page:
            out["nextToken"] = self._name_token(call, "buckets", prefix, page[-1].name)
        return _dumps(out)

    def _op_DeleteVectorBucket(self, call: _Call, args: _Args) -> bytes:  # noqa: N802
        name = self._bucket_name(call, args)
        self._require(call, "DeleteVectorBucket", self._bucket_arn(name))
        with self._lock:
            b = self._buckets.get(name)
            if b is None:
                raise _not_found("bucket", name)
            if b.indexes:
                raise ApiError(
                    "ConflictException",
                    "The specified vector bucket is not empty",
                    supabase=(
                        400,
                        "VectorBucketNotEmpty",
                        f'Vector Bucket "{name}" not empty',
                        "VectorBucketNotEmpty",
                    ),
                )
            del self._buckets[name]
        return b"" if call.supabase else b"{}"

    # Indexes ------------------------------------------------------------------------------

    def _index_ref(self, call: _Call, args: _Args) -> tuple[str, str]:
        if call.supabase:
            bucket = args.string("vectorBucketName", 1, required=True)
            index = args.string("indexName", 1, required=True)
            assert bucket is not None and index is not None
            return bucket, index
        bucket = args.string("vectorBucketName", 3, MAX_NAME)
        index = args.string("indexName", 3, MAX_NAME)
        arn = args.string("indexArn")
        if arn is not None:
            if bucket is not None or index is not None:
                raise _invalid(
                    "Must specify either indexArn or both vectorBucketName and indexName"
                )
            prefix = f"arn:aws:s3vectors:{self.region}:{self.account_id}:bucket/"
            parts = arn[len(prefix) :].split("/") if arn.startswith(prefix) else []
            if len(parts) != 3 or parts[1] != "index":
                raise _invalid("Invalid index ARN")
            return parts[0], parts[2]
        if bucket is None or index is None:
            raise _invalid("Must specify either indexArn or both vectorBucketName and indexName")
        return bucket, index

    def _index(self, bucket: str, name: str) -> _Index:
        b = self._bucket(bucket)
        with self._lock:
            ix = b.indexes.get(name)
        if ix is None:
            raise _not_found("index", name)
        return ix

    def _index_arn(self, bucket: str, index: str) -> str:
        return f"{self._bucket_arn(bucket)}/index/{index}"

    def _supabase_index_name(self, args: _Args) -> None:
        # storage's route schemas for CreateIndex, GetIndex, PutVectors and ListVectors
        args.string(
            "indexName",
            3,
            MAX_SUPABASE_INDEX_NAME,
            pattern=_SUPABASE_INDEX_RE,
            pattern_text=_SUPABASE_INDEX_PATTERN,
        )

    def _op_CreateIndex(self, call: _Call, args: _Args) -> bytes:  # noqa: N802
        if call.supabase:
            self._supabase_index_name(args)
        bucket = self._bucket_name(call, args)
        name = args.string("indexName", 3, MAX_NAME, required=True)
        assert name is not None
        arn = self._index_arn(bucket, name)
        self._require(call, "CreateIndex", arn)
        if args.body.get("tags"):
            self._require(call, "TagResource", arn)
        if not call.supabase and not _NAME_RE.fullmatch(name):
            raise _invalid("Invalid index name")
        data_type = args.string("dataType", required=True)
        if data_type != "float32":
            raise _constraint(
                "dataType",
                "satisfy enum value set: [float32]",
                "body/dataType must be equal to one of the allowed values",
            )
        dimension = args.integer("dimension", 1, MAX_DIMENSION, required=True)
        assert dimension is not None
        if self.halfvec and dimension > MAX_HALFVEC_DIMENSION:
            raise _invalid(
                f"dimension must be an integer in [1, {MAX_HALFVEC_DIMENSION}] for this vector "
                f"backend, got: {dimension}"
            )
        metric = args.string("distanceMetric", required=True)
        if metric not in ("cosine", "euclidean"):
            raise _constraint(
                "distanceMetric",
                "satisfy enum value set: [euclidean, cosine]",
                "body/distanceMetric must be equal to one of the allowed values",
            )
        config = args.body.get("metadataConfiguration") or {}
        non_filterable = _Args(config).array(
            "nonFilterableMetadataKeys", 0, MAX_NON_FILTERABLE_KEYS
        )
        keys = tuple(non_filterable or ())
        if not all(isinstance(k, str) and 1 <= len(k) <= MAX_NAME for k in keys):
            raise _invalid("nonFilterableMetadataKeys must be strings of 1 to 63 characters")
        b = self._bucket(bucket)
        with self._lock:
            if name in b.indexes:
                raise ApiError(
                    "ConflictException",
                    "An index with the specified name already exists",
                    supabase=(
                        409,
                        "ConflictException",
                        f'vector index "{name}" already exists',
                        "ConflictException",
                    ),
                )
            b.indexes[name] = _Index(bucket, name, arn, dimension, metric, keys)
        return b"" if call.supabase else _dumps({"indexArn": arn})

    def _op_GetIndex(self, call: _Call, args: _Args) -> bytes:  # noqa: N802
        if call.supabase:
            self._supabase_index_name(args)
        bucket, name = self._index_ref(call, args)
        self._require(call, "GetIndex", self._index_arn(bucket, name))
        ix = self._index(bucket, name)
        out = ix.summary(call.supabase)
        out.update(dataType="float32", dimension=ix.dimension, distanceMetric=ix.metric)
        if ix.non_filterable:
            out["metadataConfiguration"] = {"nonFilterableMetadataKeys": list(ix.non_filterable)}
        if not call.supabase:
            out["encryptionConfiguration"] = {"sseType": "AES256"}
        return _dumps({"index": out})

    def _op_ListIndexes(self, call: _Call, args: _Args) -> bytes:  # noqa: N802
        bucket = self._bucket_name(call, args)
        self._require(call, "ListIndexes", self._bucket_arn(bucket))
        max_results = args.integer("maxResults", 1, MAX_LIST_NAMES) or MAX_LIST_NAMES
        prefix = args.string("prefix", 1, None if call.supabase else MAX_NAME) or ""
        token = args.string("nextToken", 1)
        b = self._bucket(bucket)
        after = self._name_cursor(call, token, f"indexes:{bucket}", prefix) if token else None
        with self._lock:
            names = sorted(n for n in b.indexes if n.startswith(prefix))
            indexes = [b.indexes[n] for n in names]
        start = bisect.bisect_right(names, after) if after is not None else 0
        page = indexes[start : start + max_results]
        out: dict[str, Any] = {"indexes": [ix.summary(call.supabase) for ix in page]}
        if start + max_results < len(indexes) and page:
            out["nextToken"] = self._name_token(call, f"indexes:{bucket}", prefix, page[-1].name)
        return _dumps(out)

    def _op_DeleteIndex(self, call: _Call, args: _Args) -> bytes:  # noqa: N802
        bucket, name = self._index_ref(call, args)
        self._require(call, "DeleteIndex", self._index_arn(bucket, name))
        b = self._bucket(bucket)
        with self._lock:
            if b.indexes.pop(name, None) is None:
                raise _not_found("index", name)
        return b"" if call.supabase else b"{}"

    # Vectors ------------------------------------------------------------------------------

    def _check_key(self, key: Any, supabase: bool) -> str:
        if not isinstance(key, str) or not _key_length_ok(key, supabase):
            raise _invalid(
                f"Invalid record for key '{key}': key must be between 1 and {MAX_KEY_CHARS} "
                "characters",
                f"vectors.key must be between 1 and {MAX_KEY_CHARS} characters",
            )
        return key

    def _row(self, ix: _Index, key: str, values: Any, supabase: bool) -> list[float]:
        """One PutVectors ``data.float32``, checked for type and length."""
        if not all(type(x) in _NUMBER_TYPES for x in values):
            # botocore, as Smithy's JSON protocols do, sends NaN and infinities as the strings
            # "NaN", "Infinity", "-Infinity"; other strings (and booleans) are no numbers,
            # though numpy would take "1.0" and True as ones.
            if supabase or not all(type(x) in _NUMBER_TYPES or x in _FLOAT_WORDS for x in values):
                raise _invalid(
                    f"Invalid record for key '{key}': vector data must be numbers",
                    "body/vectors/data/float32 must be number",
                )
            values = [_FLOAT_WORDS.get(x, x) if type(x) is str else x for x in values]
        if len(values) != ix.dimension:
            if self.halfvec:  # pgvector: "expected 8 dimensions, not 3"
                raise _pg_error(f"expected {ix.dimension} dimensions, not {len(values)}")
            raise _invalid(
                f"Invalid record for key '{key}': vector must have length {ix.dimension}, "
                f"but has length {len(values)}"
            )
        return list(values)

    def _stored_values(self, ix: _Index, keys: Sequence[str], mat64: np.ndarray) -> np.ndarray:
        """Validate an n x dim matrix for ``ix``; the float32 values as they are stored."""
        with np.errstate(over="ignore", invalid="ignore"):
            vec = mat64.astype(np.float32)
            if self.halfvec:  # halfvec_in: strtof, then the nearest float16
                vec = vec.astype(np.float16).astype(np.float32)
        finite = np.isfinite(vec).all(axis=1)
        if not finite.all():
            i = int(np.argmin(finite))
            if self.halfvec:
                bad = mat64[i][~np.isfinite(vec[i])][0]
                raise _pg_error(
                    "NaN not allowed in halfvec"
                    if math.isnan(bad)
                    else f'"{bad:g}" is out of range for type halfvec'
                )
            raise _invalid(
                f"Invalid record for key '{keys[i]}': vector data must contain only finite "
                "float32 values (no NaN, no infinity)"
            )
        if ix.metric == "cosine" and not self.halfvec:  # pgvector takes zero vectors
            zero = ~vec.any(axis=1)
            if zero.any():
                raise _invalid(
                    f"Invalid record for key '{keys[int(np.argmax(zero))]}': zero vectors are "
                    "not allowed with the cosine distance metric"
                )
        return vec

    def _vectors(
        self,
        ix: _Index,
        keys: Sequence[str],
        values: np.ndarray,
        metadata: Sequence[Any] | None,
        supabase: bool,
    ) -> list[_Vector]:
        """Encode each vector's answer fragments once (``values`` from ``_stored_values``)."""
        text = values.astype(np.float64) if self.float_repr == "float64" else values
        out: list[_Vector] = []
        for i, key in enumerate(keys):
            data_json = b',"data":{"float32":' + _encode_values(text[i], self.float_repr) + b"}"
            md = None if metadata is None else metadata[i]
            if md is not None:
                meta_json: bytes | None = b',"metadata":' + self._check_metadata(
                    ix, key, md, supabase
                )
            else:  # pgvector: metadata jsonb NOT NULL DEFAULT '{}'
                meta_json = b',"metadata":{}' if self.halfvec else None
            segment_hash = abs(postgres_hashtext(key)) if self.halfvec else 0
            out.append(_Vector(key, data_json, meta_json, segment_hash))
        return out

    def _check_metadata(self, ix: _Index, key: str, metadata: Any, supabase: bool) -> bytes:
        if not isinstance(metadata, Mapping):
            raise _invalid(
                f"Invalid record for key '{key}': metadata must be a JSON object",
                "body/vectors/metadata must be object",
            )
        if supabase:  # put-vectors.ts: values are primitives or lists of primitives
            for name, value in metadata.items():
                items = value if isinstance(value, list) else [value]
                if not all(isinstance(x, (str, bool, int, float)) for x in items):
                    raise _constraint(
                        "vectors/metadata",
                        "be a string, number, boolean or list of those",
                        f"body/vectors/metadata/{name} must match a schema in anyOf",
                    )
        if not _finite_json(metadata):
            raise _invalid(f"Invalid record for key '{key}': metadata numbers must be finite")
        encoded = _dumps(dict(metadata))
        if len(metadata) > MAX_METADATA_KEYS:
            raise _invalid(
                f"Invalid record for key '{key}': Metadata must have at most "
                f"{MAX_METADATA_KEYS} keys"
            )
        if len(encoded) > MAX_METADATA_BYTES:
            raise _invalid(
                f"Invalid record for key '{key}': Total metadata must have at most "
                f"{MAX_METADATA_BYTES} bytes"
            )
        filterable = (
            _dumps({k: v for k, v in metadata.items() if k not in ix.non_filterable})
            if ix.non_filterable
            else encoded
        )
        if len(filterable) > MAX_FILTERABLE_METADATA_BYTES:
            raise _invalid(
                f"Invalid record for key '{key}': Filterable metadata must have at most "
                f"{MAX_FILTERABLE_METADATA_BYTES} bytes"
            )
        return encoded

    def _vector_index(self, call: _Call, args: _Args, operation: str) -> tuple[_Index, str]:
        if call.supabase and operation in ("PutVectors", "ListVectors"):
            self._supabase_index_name(args)
        bucket, name = self._index_ref(call, args)
        arn = self._index_arn(bucket, name)
        self._require(call, operation, arn)
        return self._index(bucket, name), arn

    def _op_PutVectors(self, call: _Call, args: _Args) -> bytes:  # noqa: N802
        items = args.array("vectors", 1, MAX_PUT_VECTORS, required=True)
        assert items is not None
        ix, _ = self._vector_index(call, args, "PutVectors")
        keys: list[str] = []
        rows: list[list[float]] = []
        for item in items:
            if not isinstance(item, Mapping) or "key" not in item:
                raise _constraint(
                    "vectors/key",
                    "not be null",
                    "body/vectors/0 must have required property 'key'",
                    value="null",
                )
            data = item.get("data")
            if not isinstance(data, Mapping) or not isinstance(data.get("float32"), list):
                raise _constraint(
                    "vectors/data",
                    "have the float32 member set",
                    "body/vectors/0/data must have required property 'float32'",
                )
            key = self._check_key(item["key"], call.supabase)
            rows.append(self._row(ix, key, data["float32"], call.supabase))
            keys.append(key)
        if call.supabase and len(set(keys)) != len(keys):  # limits.ts validatePutVectors
            raise _invalid("Request must not contain duplicate keys")
        values = self._stored_values(ix, keys, np.asarray(rows, dtype=np.float64))
        metadata = [item.get("metadata") for item in items]
        encoded = self._vectors(ix, keys, values, metadata, call.supabase)
        ix.store(encoded)  # all or nothing: nothing is stored when one vector is invalid
        return b"" if call.supabase else b"{}"

    def _op_GetVectors(self, call: _Call, args: _Args) -> bytes:  # noqa: N802
        keys = args.array("keys", 1, MAX_GET_KEYS, required=True)
        assert keys is not None
        ix, _ = self._vector_index(call, args, "GetVectors")
        return_data, return_meta = args.boolean("returnData"), args.boolean("returnMetadata")
        self._check_keys(keys, call.supabase)
        found: list[_Vector] = []
        seen: set[str] = set()
        for key in keys:
            v = ix.vectors.get(key)
            if v is not None and key not in seen:
                seen.add(key)
                found.append(v)
        return self._vectors_answer(found, return_data, return_meta, None)

    def _op_DeleteVectors(self, call: _Call, args: _Args) -> bytes:  # noqa: N802
        keys = args.array("keys", 1, MAX_DELETE_KEYS, required=True)
        assert keys is not None
        ix, _ = self._vector_index(call, args, "DeleteVectors")
        self._check_keys(keys, call.supabase)
        ix.remove(keys)
        return b"" if call.supabase else b"{}"

    def _check_keys(self, keys: Sequence[Any], supabase: bool) -> None:
        for key in keys:
            if not isinstance(key, str) or not _key_length_ok(key, supabase):
                raise _constraint(
                    "keys",
                    f"have length between 1 and {MAX_KEY_CHARS}, inclusive",
                    f"body/keys must contain strings of 1 to {MAX_KEY_CHARS} characters",
                )

    def _op_ListVectors(self, call: _Call, args: _Args) -> bytes:  # noqa: N802
        max_results = args.integer("maxResults", 1, MAX_LIST_VECTORS)
        max_results = DEFAULT_LIST_VECTORS if max_results is None else max_results
        seg_count = args.integer("segmentCount", 1, MAX_SEGMENTS)
        seg_index = args.integer("segmentIndex", 0, MAX_SEGMENTS - 1)
        return_data, return_meta = args.boolean("returnData"), args.boolean("returnMetadata")
        token = args.string("nextToken", 1)
        if (seg_count is None) != (seg_index is None):
            raise _invalid("segmentCount and segmentIndex must be provided together")
        if seg_count is not None and seg_index is not None and seg_index >= seg_count:
            raise _invalid("segmentIndex must be less than segmentCount")
        ix, arn = self._vector_index(call, args, "ListVectors")
        if return_data or return_meta:  # AWS: "you must have both ... and s3vectors:GetVectors"
            self._require(call, "GetVectors", arn)
        count, index = (seg_count or 1), (seg_index or 0)
        if self.halfvec:
            page, more = self._list_by_key(ix, token, max_results, count, index)
            next_token = page[-1].key if more and page else None
        else:
            page, more = self._list_by_hash(
                ix, token, max_results, count, index, return_data, return_meta
            )
            next_token = (
                self._seal(struct.pack(">QBB", ix.uid, count, index) + _u128(page[-1].order))
                if more and page
                else None
            )
        return self._vectors_answer(page, return_data, return_meta, next_token)

    def _list_by_hash(
        self,
        ix: _Index,
        token: str | None,
        max_results: int,
        count: int,
        index: int,
        return_data: bool,
        return_meta: bool,
    ) -> tuple[list[_Vector], bool]:
        lo = (index << 128) // count
        hi = ((index + 1) << 128) // count
        orders, by_order = ix.sorted_orders()
        if token is not None:
            payload = self._unseal(token)
            if len(payload) != 26 or struct.unpack(">QBB", payload[:10]) != (ix.uid, count, index):
                raise _invalid(
                    "The provided nextToken is not valid for this request: a nextToken can only "
                    "be used with the bucket, index and segment of the request that returned it"
                )
            start = bisect.bisect_right(orders, int.from_bytes(payload[10:], "big"))
        else:
            start = bisect.bisect_left(orders, lo)
        budget = self.list_page_bytes
        per_vector = 4 * ix.dimension if return_data else 0
        page: list[_Vector] = []
        size = 0
        i = start
        while i < len(orders) and orders[i] < hi and len(page) < max_results:
            v = by_order.get(orders[i])
            i += 1
            if v is None:  # deleted after this snapshot of the order
                continue
            page.append(v)
            size += v.key_size + per_vector + (len(v.meta_json or b"") if return_meta else 0)
            if budget is not None and size > budget:
                break
        return page, i < len(orders) and orders[i] < hi

    def _list_by_key(
        self, ix: _Index, token: str | None, max_results: int, count: int, index: int
    ) -> tuple[list[_Vector], bool]:
        # adapter/pgvector/index.ts: WHERE key > $token [AND mod(abs(hashtext(key)), n) = i]
        # ORDER BY key LIMIT maxResults + 1
        keys = ix.sorted_keys()
        i = bisect.bisect_right(keys, token) if token is not None else 0
        page: list[_Vector] = []
        while i < len(keys):
            v = ix.vectors.get(keys[i])
            i += 1
            if v is None or v.segment_hash % count != index:
                continue
            if len(page) == max_results:
                return page, True
            page.append(v)
        return page, False

    def _vectors_answer(
        self,
        vectors: Sequence[_Vector],
        return_data: bool,
        return_meta: bool,
        next_token: str | None,
    ) -> bytes:
        parts: list[bytes] = [b'{"vectors":[']
        for j, v in enumerate(vectors):
            if j:
                parts.append(b",")
            parts.append(v.key_json)
            if return_data:
                parts.append(v.data_json)
            if return_meta and v.meta_json is not None:
                parts.append(v.meta_json)
            parts.append(b"}")
        parts.append(b"]")
        if next_token is not None:
            parts += [b',"nextToken":', _dumps(next_token)]
        parts.append(b"}")
        return b"".join(parts)

    # Tokens -------------------------------------------------------------------------------

    def _seal(self, payload: bytes) -> str:
        tag = hmac.new(self._token_key, payload, hashlib.sha256).digest()[:12]
        return base64.urlsafe_b64encode(payload + tag).decode("ascii").rstrip("=")

    def _unseal(self, token: str) -> bytes:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raw = b""
        payload, tag = raw[:-12], raw[-12:]
        good = hmac.new(self._token_key, payload, hashlib.sha256).digest()[:12]
        if len(raw) <= 12 or not hmac.compare_digest(tag, good):
            raise _invalid("The provided nextToken is not valid")
        return payload

    def _name_token(self, call: _Call, scope: str, prefix: str, last: str) -> str:
        if call.supabase:  # vector/pg.ts: nextToken is the last id / name
            return last
        return self._seal(_dumps([scope, prefix, last]))

    def _name_cursor(self, call: _Call, token: str | None, scope: str, prefix: str) -> str:
        assert token is not None
        if call.supabase:
            return token
        try:
            got_scope, got_prefix, last = _loads(self._unseal(token))
        except (ValueError, TypeError):
            raise _invalid("The provided nextToken is not valid") from None
        if (got_scope, got_prefix) != (scope, prefix) or not isinstance(last, str):
            raise _invalid("The provided nextToken is not valid for this request")
        return last


def _check_name(kind: str, name: str) -> None:
    # botocore refuses names under 3 characters before sending anything (shape min 3).
    if not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"{kind} name {name!r} must be 3-63 characters of [a-z0-9.-], starting and ending "
            "with a letter or digit (botocore refuses shorter names client-side)"
        )


def _u128(value: int) -> bytes:
    return value.to_bytes(16, "big")


def _finite_json(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(_finite_json(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite_json(v) for v in value)
    return True


# ---------------------------------------------------------------------------------------------
# HTTP


def _route(path: str) -> tuple[str, str]:
    """``(wire, operation)``; operation ``"other"`` when the path names none."""
    if path.startswith(_SUPABASE_PREFIX):
        wire, name = "supabase", path[len(_SUPABASE_PREFIX) :]
    else:
        wire, name = "aws", path.lstrip("/")
    if name in OPERATIONS or name in UNIMPLEMENTED:
        return wire, name
    return wire, "other"


class _HTTPServer(Server):
    owner: S3VectorsServer


class _Handler(Handler):
    server: _HTTPServer
    _accounted: bool = True
    _operation: str = "other"

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            f"x-amzn-RequestId: {uuid.uuid4()}",
        ]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if self.close_connection:
            head.append("Connection: close")
        head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        # Account before the client can see the answer, so a test reading the stats right
        # after its call returns never races this thread.
        self._account(status)
        if len(body) < 65536:
            self.wfile.write(head_bytes + body)
        else:  # no extra copy of a large body
            self.wfile.write(head_bytes)
            self.wfile.write(body)

    def _account(self, status: int) -> None:
        if not self._accounted:
            self._accounted = True
            self.server.owner._left(self._operation, status)

    def _handle(self, method: str) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        wire, operation = _route(path)
        self._operation = operation
        self._accounted = False
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        owner._enter(wire, operation)
        try:
            if owner.latency > 0:
                time.sleep(owner.latency)  # no lock held: concurrent requests overlap
            status, payload, headers = self._answer(owner, wire, operation, method, body)
            if status >= 0:
                self._send(status, payload, headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # pragma: no cover - a server bug; answer 500 and keep going
            try:
                self._send(500, _dumps({"message": f"test server error: {exc!r}"}))
            except OSError:
                self.close_connection = True
        finally:
            self._account(0)

    def _answer(
        self, owner: S3VectorsServer, wire: str, operation: str, method: str, body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        """``(status, body, headers)``; status -1 when the connection was dropped."""
        supabase = wire == "supabase"
        if (supabase and owner.supabase_key is None) or operation == "other" or method != "POST":
            if supabase:
                route = "/vector/" + self.path.split(_SUPABASE_PREFIX, 1)[-1]
                return (
                    404,
                    _storage_body(
                        404, "InvalidRequest", f"Route {method}:{route} not found", "Not Found"
                    ),
                    {},
                )
            return (
                404,
                _dumps({"message": "Unknown operation"}),
                {"x-amzn-ErrorType": "UnknownOperationException"},
            )
        try:
            call = owner._authenticate(wire, self.headers)
            rule = owner._take_rule(operation)
            if rule is not None:
                if rule.kind == "drop":
                    self.close_connection = True
                    self._account(0)
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return -1, b"", {}
                if rule.kind == "hang":
                    time.sleep(rule.seconds)
                else:
                    return self._fault(rule, supabase)
            if operation in UNIMPLEMENTED:
                raise ApiError(
                    "NotImplemented",
                    f"{operation} is not implemented by this test server",
                    status=501,
                    supabase=(501, "NotImplemented", f"{operation} is not implemented", "Error"),
                )
            return 200, owner._dispatch(call, operation, body), {}
        except _Answer as ans:
            return ans.status, ans.body, ans.headers
        except ApiError as err:
            return err.supabase_answer() if supabase else err.aws_answer()

    def _fault(self, rule: _Rule, supabase: bool) -> tuple[int, bytes, dict[str, str]]:
        status = rule.status
        headers: dict[str, str] = {}
        if rule.retry_after is not None:
            headers["Retry-After"] = f"{rule.retry_after:g}"
            headers["x-amz-retry-after"] = str(int(rule.retry_after * 1000))
        if supabase:
            if status == 429 and rule.code is None:  # storage's own 429 (error-handler.ts)
                body = _storage_body(
                    429,
                    "SlowDown",
                    rule.message or "Too many connections issued to the database",
                    "too_many_connections",
                )
            elif status == 500 and rule.code is None:
                body = _storage_body(500, "InternalError", "Internal Server Error", "Internal")
            else:
                code = rule.code or "InternalError"
                body = _storage_body(status, code, rule.message or "Injected failure.")
            return status, body, headers
        code = rule.code or _CODE_FOR_STATUS.get(status)
        if code is not None:
            headers["x-amzn-ErrorType"] = code
        default = "Too many requests. Slow down." if status == 429 else "Injected failure."
        return status, _dumps({"message": rule.message or default}), headers


# ---------------------------------------------------------------------------------------------
# Deterministic data and the command line


def synthetic_keys(start: int, stop: int) -> list[str]:
    return [f"vec-{i:07d}" for i in range(start, stop)]


def synthetic_matrix(count: int, dim: int, seed: int = 0) -> np.ndarray:
    """The ``count`` x ``dim`` float32 matrix ``--records``/``--seed`` serve (row i: key i).

    ``numpy.random.default_rng(seed).standard_normal`` draws the same rows whether asked for
    at once or in consecutive chunks, so a benchmark can regenerate what the server holds.
    """
    return np.random.default_rng(seed).standard_normal((count, dim), dtype=np.float32)


def synthetic_metadata(i: int) -> dict[str, Any]:
    return {"n": i, "group": f"g{i % 10}"}


def seed_synthetic(
    server: S3VectorsServer,
    bucket: str,
    index: str,
    records: int,
    dim: int,
    seed: int = 0,
    *,
    chunk: int = 10_000,
) -> None:
    """Seed ``synthetic_keys``/``synthetic_matrix``/``synthetic_metadata`` in chunks."""
    rng = np.random.default_rng(seed)
    for start in range(0, records, chunk):
        stop = min(records, start + chunk)
        server.seed(
            bucket,
            index,
            synthetic_keys(start, stop),
            rng.standard_normal((stop - start, dim), dtype=np.float32),
            [synthetic_metadata(i) for i in range(start, stop)],
        )


def _main(argv: Sequence[str] | None = None) -> None:
    """Serve S3 Vectors (and Supabase's vector API) in its own process until killed.

    Example::

        python tests/s3vectors_server.py --port 0 --latency 0.05 --bucket b --index i \\
            --records 200000 --dim 1024 --supabase-key service-key

    Seeds keys ``vec-0000000``... with rows of ``synthetic_matrix(records, dim, seed)`` and
    metadata ``{"n": i, "group": "g<i % 10>"}``, then prints its URL on stdout (one line).
    """
    import argparse

    ap = argparse.ArgumentParser(description=_main.__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    ap.add_argument("--bucket", default=None)
    ap.add_argument("--index", default=None)
    ap.add_argument("--records", type=int, default=0)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--metric", default="cosine", choices=("cosine", "euclidean"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--supabase-key", default=None, help="enables /storage/v1/vector/")
    ap.add_argument("--halfvec", action="store_true", help="Supabase's pgvector backend")
    ap.add_argument("--float-repr", default=None, choices=("float64", "float32"))
    args = ap.parse_args(argv)
    server = S3VectorsServer(
        supabase_key=args.supabase_key,
        halfvec=args.halfvec,
        float_repr=args.float_repr,
        bind=args.host,
        port=args.port,
    )
    if args.bucket and args.index:
        server.create_index(args.bucket, args.index, args.dim, args.metric)
        seed_synthetic(server, args.bucket, args.index, args.records, args.dim, args.seed)
    server.latency = args.latency
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    _main()
