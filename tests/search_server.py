"""An Elasticsearch- and OpenSearch-compatible REST server for tests.

One class, ``SearchServer(flavor="elasticsearch"|"opensearch", version=...)``, speaks the part
of the REST API an exporter needs, in the wire format the real ``elasticsearch`` (9.x) and
``opensearch-py`` clients expect.  Standard library plus numpy; orjson (a dependency of the
benchmarks, optional here) encodes answers ~6x faster.

Pointing the clients at it::

    with SearchServer("elasticsearch", version="9.2.0", api_key=("id", "secret")) as server:
        server.seed("docs", mapping={"properties": {"v": {"type": "dense_vector", "dims": 4}}},
                    ids=ids, vectors=matrix, vector_field="v", fields=[{"n": i} for i in ...])
        es = Elasticsearch(server.url, api_key=("id", "secret"))
        pit = es.open_point_in_time(index="docs", keep_alive="1m")["id"]
        es.search(pit={"id": pit, "keep_alive": "1m"}, sort=["_shard_doc"], size=500,
                  slice={"id": 0, "max": 2}, source={"exclude_vectors": False},
                  track_total_hits=False, search_after=last_hit_sort)

    with SearchServer("opensearch", version="2.19.0", basic_auth=("admin", "pw")) as server:
        client = OpenSearch(server.url, http_auth=("admin", "pw"))
        pit = client.create_pit(index="docs", params={"keep_alive": "1m"})["pit_id"]

Endpoints (``ENDPOINTS`` names them for ``fail_next``/``count``): ``GET|HEAD /`` (info),
``HEAD|GET|PUT|DELETE /{index}``, ``GET /{index}/_mapping`` (and ``/_mapping``),
``GET /{index}/_settings``, ``GET /_cat/indices?format=json``, ``GET /_alias`` (and
``/{index}/_alias``), ``GET|POST /{index}/_count``, ``GET|POST /_search`` and
``/{index}/_search`` (``pit``, ``sort``, ``search_after``, ``slice``, ``_source``, ``fields``,
``from``/``size``, ``track_total_hits``, ``query`` of match_all, match_none, ids, term, terms,
range, exists and bool), scroll (``?scroll=1m``, ``POST /_search/scroll``,
``DELETE /_search/scroll``), ``PUT|POST /_bulk`` (index, create, delete), ``POST /_refresh``,
``GET|PUT|DELETE /{index}/_doc/{id}`` (and ``POST /{index}/_doc``).  Point in time: Elasticsearch ``POST /{index}/_pit?keep_alive=1m``
(answers ``id``) and ``DELETE /_pit``; OpenSearch ``POST /{index}/_search/point_in_time``
(answers ``pit_id``), ``DELETE /_search/point_in_time`` and ``GET|DELETE
/_search/point_in_time/_all``.

Behaviour, chosen to match the real servers (sources in the comments next to each rule):

* Product and media type.  Elasticsearch mode sends ``X-Elastic-Product: Elasticsearch`` on
  every answer; the 9.x client raises ``UnsupportedProductError`` on the first 2xx answer
  without it (elasticsearch/_sync/client/_base.py).  The client sends ``Accept`` (and, with a
  body, ``Content-Type``) ``application/vnd.elasticsearch+json; compatible-with=9`` and gets
  ``application/vnd.elasticsearch+json;compatible-with=9`` back.  A server of major M accepts
  compatible-with M and M-1 only: ``version="8.17.0"`` answers the 9.x client 400
  ``media_type_header_exception`` "Accept version must be either version 8 or 7, but found
  9", as a real 8.x server does.  OpenSearch mode answers ``application/json;
  charset=UTF-8``, no product header, and 406 to an ``application/vnd.elasticsearch`` body.
* Point in time.  Elasticsearch adds the ``_shard_doc`` tiebreaker (``shard << 32 | doc``) to
  any sorted PIT search whose ``search_after`` is absent or one value longer than ``sort``
  (SearchRequest.rewrite); unsorted PIT searches get none and no ``sort`` in hits.
  OpenSearch adds no tiebreaker; ``_shard_doc`` exists from 3.3 (explicit, PIT only), and
  earlier versions answer "No mapping found for [_shard_doc] in order to sort on".
  ``search_after`` is strict: documents whose sort values equal it are skipped, so a sort
  without a unique tiebreaker loses documents across pages, as Lucene's ``FieldDoc`` does.
  ``rotate_pit_ids=True`` answers every PIT search with a fresh id (older ids keep working),
  which real servers may do.  Closing an unknown PIT or scroll answers Elasticsearch's 404
  ``{"succeeded": true, "num_freed": 0}`` (ClearScrollResponse.status()); OpenSearch answers
  200 with ``successful: false``.  Contexts expire after their keep-alive (404
  ``search_context_missing_exception``); keep-alive above 24h is refused.
* Slices.  ``max`` must be > 1 and > ``id`` (SliceBuilder).  Shards are assigned to slices as
  SliceBuilder.toFilter does; inside a shard an Elasticsearch PIT slice is a contiguous range
  of doc ids (DocIdSliceQuery), scroll and OpenSearch slices hash ``_id`` (crc32 here, not
  Lucene's murmur3).  Slices are disjoint and cover every document.
* Sequence numbers.  Each shard numbers the operations it indexes (an update takes a new
  number, a delete uses one up), as ``_seq_no``: sortable (``"sort": [{"_seq_no": "asc"}]``,
  a long with doc values) and queried by ``range``, so that an exporter can page a shard by
  it and resume in another point in time.  A search of one whole shard sorted by it is
  answered by bisection (``_seq_no_plan``), not by sorting every document.
* Settings.  ``GET /{index}/_settings/{name,...}`` answers only those settings;
  ``flat_settings=true`` dotted keys; ``include_defaults=true`` adds ``defaults``, here the
  version-dependent ``index.mapping.exclude_source_vectors``.
* Vectors.  ``dense_vector`` (element_type float, byte, bit, and bfloat16 from 9.3),
  ``sparse_vector`` and ``rank_vectors`` in Elasticsearch mode, ``knn_vector`` (data_type
  float, byte, binary; space_type l2, cosinesimil, innerproduct, l1, linf, hamming) in
  OpenSearch mode; each flavour answers the other's types with "No handler for type".
  ``exclude_vectors`` (default: True from 9.2, the default of the index setting
  ``index.mapping.exclude_source_vectors``) leaves vectors out of ``_source`` unless the
  search asks ``"_source": {"exclude_vectors": false}`` (accepted from 8.19/9.1) or includes
  the field by name.  Vectors then come back rehydrated as Elasticsearch stores them
  (DenseVectorFieldMapper): float32; cosine vectors denormalised as
  ``float32(float32(v / |v|) * |v|)``, which differs from the input in ~1.5% of the values;
  bfloat16 rounded to nearest even; byte and bit as signed ints (bit vectors as dims/8 ints,
  even if indexed as hex); sparse values truncated to 9 mantissa bits (Lucene FeatureField),
  keys sorted.  ``rehydrate_dense()`` computes what a client receives.  With the setting off
  ``_source`` is returned as indexed.
* Auth.  ``api_key`` (the encoded string or ``(id, key)``) and/or ``basic_auth`` (``(user,
  password)``); without either, security is off.  Elasticsearch answers 401
  ``security_exception`` with its ``WWW-Authenticate`` headers ("missing authentication
  credentials for REST request [/]", "unable to authenticate user [u] ...", "unable to
  authenticate with provided credentials and anonymous access is not allowed for this
  request"); OpenSearch answers 401 ``text/plain`` ``Unauthorized`` with ``WWW-Authenticate:
  Basic realm="OpenSearch Security"`` (security plugin HTTPBasicAuthenticator).
  Authentication runs before injected faults.
* Errors use Elasticsearch's ``{"error": {"root_cause", "type", "reason", ...}, "status"}``
  shape in both modes (OpenSearch kept it): unknown index 404 ``index_not_found_exception``;
  shard-level failures wrapped in ``search_phase_execution_exception``.  Sorting on ``_id`` is
  refused by Elasticsearch ("Fielddata access on the _id field is disallowed") and allowed by
  OpenSearch with its deprecation ``Warning`` header (opensearch-py turns it into
  ``OpenSearchWarning``).
* Documents are visible as soon as they are indexed (no refresh interval), routed to
  ``crc32(_id) % number_of_shards`` (not murmur3), and ``_doc`` sort values are positions in a
  shard.

Fault injection and measurement (settable at any time, thread-safe)::

    server.latency = 0.05                       # seconds slept per request (no lock held)
    server.fail_next(2, status=429, retry_after=1, endpoint="search")   # or 503, 500, ...
    server.hang_next(1, seconds=5, endpoint="search")   # stall before answering (timeouts)
    server.drop_next(1, endpoint="search")      # close the connection without an answer
    server.count("search"); server.counts       # requests seen per endpoint (incl. faults)
    server.max_in_flight; server.reset_stats()  # peak concurrent requests observed

Server-side API (no HTTP): ``create_index(name, mappings, settings)``, ``seed(...)``,
``delete_index(name)``, ``doc_count(index)``, ``get_source(index, id, vectors=True)``,
``mapping(index)``, ``open_contexts`` (``{"pit": n, "scroll": n}``), ``requests`` (``(method,
path, status)`` answered), ``accept_headers`` (every ``Accept`` received), and the settable
``latency``, ``rotate_pit_ids``, ``api_key``, ``basic_auth``.

Speed: each document's ``_source`` JSON is encoded once, at seed/bulk time, with and without
its vectors, and a page is one ``b"".join`` of those fragments.  A 1024-dim float32 document is
~11 KB, so 100k of them hold ~1.1 GB.  Run the server as its own process to keep it off the
client's GIL: ``python tests/search_server.py --help``.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import collections
import fnmatch
import functools
import json
import math
import re
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
from wire_http import Faults, Handler, Server

_orjson: Any
try:  # optional: ~6x faster encoding of float32 arrays
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only without orjson
    _orjson = None

__all__ = ["ENDPOINTS", "SearchServer", "rehydrate_dense", "rehydrate_sparse"]

FLAVORS = ("elasticsearch", "opensearch")
DEFAULT_VERSIONS = {"elasticsearch": "9.3.0", "opensearch": "2.19.0"}

ENDPOINTS = (
    "info",
    "index_exists",
    "get_index",
    "create_index",
    "delete_index",
    "mapping",
    "cat_indices",
    "alias",
    "count",
    "open_pit",
    "close_pit",
    "search",
    "scroll",
    "clear_scroll",
    "bulk",
    "refresh",
    "get_doc",
    "index_doc",
    "other",
)

_REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    409: "Conflict",
    413: "Request Entity Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

MAX_RESULT_WINDOW = 10_000  # index.max_result_window
MAX_KEEP_ALIVE_MS = 24 * 3600 * 1000  # search.max_keep_alive
DEFAULT_TRACK_TOTAL_HITS = 10_000
ES_MAX_DIMS = 4096  # DenseVectorFieldMapper.MAX_DIMS_COUNT
OS_MAX_DIMS = 16_000  # k-NN plugin KNNVectorFieldMapper
UNIT_EPS = 1e-3  # DenseVectorFieldMapper.EPS: |squared magnitude - 1| allowed for dot_product
SPARSE_DROPPED_BITS = 15  # Lucene FeatureField keeps 9 of float32's 23 mantissa bits
ID_FIELDDATA_DEPRECATION = (
    "Loading the fielddata on the _id field is deprecated and will be removed in future "
    "versions. If you require sorting or aggregating on this field you should also include "
    "the id in the body of your documents, and map this field as a keyword field that has "
    "[doc_values] enabled"
)
ES_WWW_AUTHENTICATE = (
    'Basic realm="security", charset="UTF-8"',
    'Bearer realm="security"',
    "ApiKey",
)

# ---------------------------------------------------------------------------------------------
# JSON


def _dumps(obj: Any) -> bytes:
    if _orjson is not None:
        out: bytes = _orjson.dumps(obj, option=_orjson.OPT_SERIALIZE_NUMPY)
        return out
    return json.dumps(_plain(obj), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _dumps_stored(obj: Any) -> bytes:
    """_dumps for fragments kept for the server's lifetime.  orjson's output keeps its
    over-allocated buffer (at least 4 KB, ~3x for a 1024-dim vector); an exact-size copy
    keeps 100k such documents at ~1.2 GB instead of ~3.8 GB."""
    return bytes(memoryview(_dumps(obj)))


def _plain(obj: Any) -> Any:
    """numpy values to Python ones for the stdlib fallback.  A float32 becomes the float64
    nearest its shortest decimal (numpy's repr), so json prints ``0.1``, not
    ``0.10000000149011612``, as orjson and the engines do."""
    if isinstance(obj, np.ndarray):
        if obj.dtype == np.float32:
            return [float(text) for text in obj.astype(str).tolist()]
        return obj.tolist()
    if isinstance(obj, np.floating):
        return float(str(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _loads(body: bytes) -> Any:
    try:
        return _orjson.loads(body) if _orjson is not None else json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(
            400, "x_content_parse_exception", f"[1:1] Failed to parse request body: {exc}"
        ) from None


# ---------------------------------------------------------------------------------------------
# Errors


class ApiError(Exception):
    """An error answer: status plus Elasticsearch's error body (``raw`` replaces the body)."""

    def __init__(
        self,
        status: int,
        type_: str,
        reason: str,
        *,
        extra: Mapping[str, Any] | None = None,
        caused_by: Mapping[str, Any] | None = None,
        root_cause: Mapping[str, Any] | None = None,
        headers: Sequence[tuple[str, str]] = (),
        raw: bytes | None = None,
        content_type: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.type = type_
        self.reason = reason
        self.extra = dict(extra or {})
        self.caused_by = dict(caused_by) if caused_by else None
        self.root_cause = dict(root_cause) if root_cause else None
        self.headers = list(headers)
        self.raw = raw
        self.content_type = content_type

    def cause(self) -> dict[str, Any]:
        return {"type": self.type, "reason": self.reason, **self.extra}

    def body(self) -> bytes:
        if self.raw is not None:
            return self.raw
        error: dict[str, Any] = self.cause()
        root = self.root_cause or error
        error = {"root_cause": [root], **error}
        if self.caused_by:
            error["caused_by"] = self.caused_by
        return _dumps({"error": error, "status": self.status})


def _index_not_found(name: str) -> ApiError:
    return ApiError(
        404,
        "index_not_found_exception",
        f"no such index [{name}]",
        extra={
            "resource.type": "index_or_alias",
            "resource.id": name,
            "index_uuid": "_na_",
            "index": name,
        },
    )


def _bad_request(reason: str, type_: str = "illegal_argument_exception") -> ApiError:
    return ApiError(400, type_, reason)


def _validation(*problems: str) -> ApiError:
    numbered = "".join(f"{i}: {p};" for i, p in enumerate(problems, 1))
    return ApiError(400, "action_request_validation_exception", f"Validation Failed: {numbered}")


def _shard_failure(status: int, inner: Mapping[str, Any], index: str) -> ApiError:
    """A shard-level failure, wrapped as Elasticsearch wraps them for search requests."""
    return ApiError(
        status,
        "search_phase_execution_exception",
        "all shards failed",
        extra={
            "phase": "query",
            "grouped": True,
            "failed_shards": [
                {"shard": 0, "index": index, "node": "test-node-id", "reason": dict(inner)}
            ],
        },
        root_cause=inner,
        caused_by=inner,
    )


def _context_missing(what: str, index: str = "") -> ApiError:
    inner = {
        "type": "search_context_missing_exception",
        "reason": f"No search context found for id [{what}]",
    }
    return _shard_failure(404, inner, index)


# ---------------------------------------------------------------------------------------------
# Versions and time values


def _parse_version(text: str) -> tuple[int, int, int]:
    match = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        raise ValueError(f"version must look like 9.2.0, got {text!r}")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


_TIME_UNITS = {"nanos": 1e-6, "micros": 1e-3, "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_TIME_UNITS["d"] = 86_400_000


def _parse_time_ms(value: Any, setting: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(nanos|micros|ms|s|m|h|d)\s*", str(value))
    if not match:
        raise ApiError(
            400,
            "parse_exception",
            f"failed to parse setting [{setting}] with value [{value}] as a time value: "
            "unit is missing or unrecognized",
        )
    ms = int(float(match.group(1)) * _TIME_UNITS[match.group(2)])
    if ms > MAX_KEEP_ALIVE_MS:
        raise _bad_request(
            f"Keep alive for request ({value}) is too large. It must be less than (1d). This "
            "limit can be set by changing the [search.max_keep_alive] cluster level setting."
        )
    return ms


# ---------------------------------------------------------------------------------------------
# Vector encoding, as the engines store and rehydrate vectors


def _bfloat16_round(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 (round to nearest even) -> float32, as ES BFloat16.floatToBFloat16."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return (bits & 0xFFFFFFFF).astype(np.uint32).view(np.float32)


def _squared_magnitude(matrix: np.ndarray) -> np.ndarray:
    """Sum of squares accumulated left to right in float32, as the Java parser does."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported, not warned
        squares = (matrix * matrix).astype(np.float32)
        return np.cumsum(squares, axis=-1, dtype=np.float32)[..., -1]


def rehydrate_dense(
    values: Any, *, similarity: str = "cosine", element_type: str = "float"
) -> np.ndarray:
    """The vector(s) Elasticsearch 9.2+ returns in ``_source`` for vectors it keeps only in
    the index (``index.mapping.exclude_source_vectors``), for a 1-D vector or a 2-D matrix.

    float: float32; cosine vectors not of unit length (|squared magnitude - 1| > 1e-3) are
    stored normalised with their magnitude and returned as ``v / |v| * |v|`` in float32.
    bfloat16: the same, rounded to bfloat16.  byte and bit: int8 (bit: dims/8 values).
    """
    if element_type in ("byte", "bit"):
        return np.asarray(values, dtype=np.int8)
    matrix = np.asarray(values, dtype=np.float64).astype(np.float32)
    if similarity != "cosine":
        return _bfloat16_round(matrix) if element_type == "bfloat16" else matrix
    squared = _squared_magnitude(matrix)
    length = np.sqrt(squared.astype(np.float64)).astype(np.float32)[..., None]
    normalise = (np.abs(squared - np.float32(1.0)) > np.float32(UNIT_EPS))[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        normalised = (matrix / length).astype(np.float32)
    if element_type == "bfloat16":
        normalised = _bfloat16_round(normalised)
        matrix = _bfloat16_round(matrix)
    restored = (normalised * length).astype(np.float32)
    return np.where(normalise, restored, matrix).astype(np.float32)


def rehydrate_sparse(features: Mapping[str, float]) -> dict[str, float]:
    """A sparse_vector as Elasticsearch 9.2+ rehydrates it: keys in term (UTF-8) order,
    values truncated to the 9 mantissa bits Lucene's FeatureField keeps."""
    keys = sorted(features, key=lambda k: k.encode("utf-8"))
    values = np.asarray([features[k] for k in keys], dtype=np.float64).astype(np.float32)
    bits = values.view(np.uint32) >> SPARSE_DROPPED_BITS << SPARSE_DROPPED_BITS
    return dict(zip(keys, bits.astype(np.uint32).view(np.float32).tolist(), strict=True))


class _DocError(Exception):
    """A document the mapping refuses (an item error in _bulk, ValueError in seed)."""

    def __init__(self, reason: str, field_name: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.field_name = field_name


@dataclass
class _VectorField:
    path: tuple[str, ...]
    kind: str  # "dense_vector" | "sparse_vector" | "rank_vectors" | "knn_vector"
    element: str = "float"  # float | byte | bit | bfloat16 | binary
    dims: int | None = None
    similarity: str | None = None
    nested_lists: bool = False  # under a nested/object array: values may be many

    @property
    def name(self) -> str:
        return ".".join(self.path)


def _preview(values: Any) -> str:
    return str(list(values)[:10] if isinstance(values, (list, tuple)) else values)


def _to_float32(raw: Any, vf: _VectorField) -> np.ndarray:
    if not isinstance(raw, (list, tuple, np.ndarray)):
        raise _DocError(f"Unsupported type for provided value [{raw}] of field [{vf.name}]")
    try:
        arr = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise _DocError(f"failed to parse field [{vf.name}]: values must be numbers") from None
    if arr.ndim != 1:
        raise _DocError(f"field [{vf.name}] must be a flat array of numbers")
    if not np.isfinite(arr).all():
        raise _DocError(f"[{vf.kind}] field [{vf.name}] must not contain NaN or Infinity")
    return arr.astype(np.float32)


def _to_int8(raw: Any, vf: _VectorField, expected: int | None) -> np.ndarray:
    if isinstance(raw, str):  # byte and bit vectors may be indexed as hex
        try:
            arr = np.frombuffer(bytes.fromhex(raw), dtype=np.int8).copy()
        except ValueError:
            raise _DocError(f"failed to parse hex vector [{raw}] of field [{vf.name}]") from None
    else:
        floats = _to_float32(raw, vf).astype(np.float64)
        if (floats % 1 != 0).any():
            bad = float(floats[(floats % 1 != 0)][0])
            raise _DocError(
                f"element_type [{vf.element}] vectors only support non-decimal values but "
                f"found decimal value [{bad}] at dim [{int(np.argmax(floats % 1 != 0))}];"
            )
        if ((floats < -128) | (floats > 127)).any():
            i = int(np.argmax((floats < -128) | (floats > 127)))
            raise _DocError(
                f"element_type [{vf.element}] vectors only support integers between [-128, "
                f"127] but found [{floats[i]}] at dim [{i}];"
            )
        arr = floats.astype(np.int8)
    if expected is not None and arr.size != expected:
        _dims_mismatch(vf, arr.size * (8 if vf.element in ("bit", "binary") else 1))
    return arr


def _dims_mismatch(vf: _VectorField, got: int) -> None:
    if vf.kind == "knn_vector":
        raise _DocError(f"Vector dimension mismatch. Expected: {vf.dims}, Given: {got}")
    raise _DocError(
        f"The [{vf.kind}] field [{vf.name}] in doc has a different number of dimensions [{got}]"
        f" than defined in the mapping [{vf.dims}]"
    )


def _encode_vector(raw: Any, vf: _VectorField, *, rehydrate: bool) -> Any:
    """Validate one vector value and return what ``_source`` should hold for it."""
    if vf.kind == "sparse_vector":
        if not isinstance(raw, Mapping):
            raise _DocError(
                "[sparse_vector] fields must be json objects, expected a START_OBJECT but got: "
                + type(raw).__name__
            )
        for token, weight in raw.items():
            if not isinstance(weight, (int, float)) or isinstance(weight, bool):
                raise _DocError(
                    "[sparse_vector] fields take hashes that map a feature to a strictly "
                    f"positive float, but got unexpected token {weight!r}"
                )
            if not math.isfinite(weight) or weight <= 0:
                raise _DocError(f"[sparse_vector] feature [{token}] must be a positive float")
        return rehydrate_sparse(raw) if rehydrate else raw
    if vf.kind == "rank_vectors":
        if not isinstance(raw, (list, tuple)) or not all(
            isinstance(v, (list, tuple, str, np.ndarray)) for v in raw
        ):
            raise _DocError(f"[rank_vectors] field [{vf.name}] must be an array of vectors")
        one = _VectorField(vf.path, "dense_vector", vf.element, vf.dims, None)
        rows = [_encode_vector(v, one, rehydrate=True) for v in raw]
        return rows if rehydrate else raw
    expected = vf.dims
    if vf.element in ("byte", "bit", "binary"):
        per = None if expected is None else (expected // 8 if vf.element != "byte" else expected)
        arr = _to_int8(raw, vf, per)
        return arr if rehydrate else raw
    arr = _to_float32(raw, vf)
    if expected is not None and arr.size != expected:
        _dims_mismatch(vf, arr.size)
    if vf.kind == "dense_vector":  # checkVectorMagnitude runs for every similarity
        squared = float(_squared_magnitude(arr))
        if not math.isfinite(squared):
            raise _DocError(
                "NaN or Infinite magnitude detected, this usually means the vector values are "
                "too extreme to fit within a float."
            )
        if (
            vf.similarity == "dot_product"
            and abs(squared - 1.0) > UNIT_EPS
            and (vf.element != "bit")
        ):
            raise _DocError(
                "The [dot_product] similarity can only be used with unit-length vectors. "
                f"Preview of invalid vector: {_preview(raw)}"
            )
        if vf.similarity == "cosine" and squared == 0.0:
            raise _DocError(
                "The [cosine] similarity does not support vectors with zero magnitude. "
                f"Preview of invalid vector: {_preview(raw)}"
            )
    if not rehydrate:
        return raw
    if vf.kind == "dense_vector":
        return rehydrate_dense(arr, similarity=vf.similarity or "", element_type=vf.element)
    return arr


# ---------------------------------------------------------------------------------------------
# Mappings

_ES_SIMILARITIES = ("l2_norm", "dot_product", "cosine", "max_inner_product")
_OS_SPACE_TYPES = ("l2", "cosinesimil", "innerproduct", "l1", "linf", "hamming", "hammingbit")
_SCALAR_TYPES = {
    "text",
    "keyword",
    "constant_keyword",
    "wildcard",
    "match_only_text",
    "long",
    "integer",
    "short",
    "byte",
    "double",
    "float",
    "half_float",
    "scaled_float",
    "unsigned_long",
    "boolean",
    "date",
    "date_nanos",
    "ip",
    "binary",
    "geo_point",
    "geo_shape",
    "flattened",
    "version",
    "semantic_text",
}
_INT_TYPES = {"long", "integer", "short", "byte", "unsigned_long"}
_FLOAT_TYPES = {"double", "float", "half_float", "scaled_float"}


def _sorted_properties(props: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for name in sorted(props):
        spec = dict(props[name])
        if isinstance(spec.get("properties"), Mapping):
            spec["properties"] = _sorted_properties(spec["properties"])
        out[name] = spec
    return out


def _mapper_error(reason: str) -> ApiError:
    inner = {"type": "mapper_parsing_exception", "reason": reason}
    return ApiError(
        400, "mapper_parsing_exception", f"Failed to parse mapping: {reason}", caused_by=inner
    )


class _Mapping:
    """An index mapping: the JSON GET answers, its vector fields and scalar field types."""

    def __init__(self, flavor: str, version: tuple[int, int, int]) -> None:
        self.flavor = flavor
        self.version = version
        self.properties: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}  # dynamic, _source, _meta ...
        self.vectors: list[_VectorField] = []
        self.types: dict[str, str] = {}  # dotted path -> type
        self.nested: set[str] = set()

    def as_json(self) -> dict[str, Any]:
        """The mapping as GET _mapping answers it: fields sorted by name (as the engines do)."""
        out = dict(self.extra)
        if self.properties:
            out["properties"] = _sorted_properties(self.properties)
        return out

    def merge(self, mapping: Mapping[str, Any]) -> None:
        if not isinstance(mapping, Mapping):
            raise _mapper_error("mapping must be an object")
        for key, value in mapping.items():
            if key == "properties":
                self._merge_properties(self.properties, value, ())
            elif key in ("dynamic", "_source", "_meta", "dynamic_templates", "_routing"):
                self.extra[key] = value
            else:
                raise _mapper_error(f"Root mapping definition has unsupported parameters:  [{key}]")
        self._index_fields()

    def _merge_properties(
        self, target: dict[str, Any], props: Any, prefix: tuple[str, ...]
    ) -> None:
        if not isinstance(props, Mapping):
            raise _mapper_error("[properties] must be an object")
        for name, spec in props.items():
            if not isinstance(spec, Mapping):
                raise _mapper_error(f"Expected map for property [fields] on field [{name}]")
            spec = dict(spec)
            ftype = spec.get("type", "object" if "properties" in spec else None)
            path = (*prefix, name)
            if ftype in ("object", "nested"):
                inner = dict(target.get(name, {}).get("properties", {}))
                self._merge_properties(inner, spec.get("properties", {}), path)
                out = {k: v for k, v in spec.items() if k != "properties"}
                if ftype == "object":
                    out.pop("type", None)
                out["properties"] = inner
                target[name] = out
                continue
            target[name] = self._normalise_field(".".join(path), ftype, spec)

    def _normalise_field(self, name: str, ftype: Any, spec: dict[str, Any]) -> dict[str, Any]:
        es_vectors = ("dense_vector", "sparse_vector", "rank_vectors")
        if (
            self.flavor == "elasticsearch"
            and ftype == "knn_vector"
            or (self.flavor == "opensearch" and ftype in es_vectors)
        ):
            raise _mapper_error(f"No handler for type [{ftype}] declared on field [{name}]")
        if ftype == "dense_vector":
            return self._dense(name, spec)
        if ftype == "rank_vectors":
            element = spec.get("element_type", "float")
            if element not in self._element_types():
                raise _mapper_error(self._bad_element(element))
            return spec
        if ftype == "knn_vector":
            return self._knn(name, spec)
        if ftype == "sparse_vector" or ftype in _SCALAR_TYPES:
            return spec
        raise _mapper_error(f"No handler for type [{ftype}] declared on field [{name}]")

    def _element_types(self) -> list[str]:
        types = ["float", "byte", "bit"]
        if self.version >= (9, 3, 0):  # bfloat16: "stack: ga 9.3" (dense-vector.md)
            types.append("bfloat16")
        return types

    def _bad_element(self, element: Any) -> str:
        return f"invalid element_type [{element}]; available types are {self._element_types()}"

    def _dense(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        element = spec.get("element_type", "float")
        if element not in self._element_types():
            raise _mapper_error(self._bad_element(element))
        dims = spec.get("dims")
        if dims is not None:
            if not isinstance(dims, int) or isinstance(dims, bool):
                raise _mapper_error(
                    f"Property [dims] on field [{name}] must be an integer but got [{dims}]"
                )
            if not 1 <= dims <= ES_MAX_DIMS:
                raise _mapper_error(
                    f"The number of dimensions for field [{name}] should be in the range [1, "
                    f"{ES_MAX_DIMS}] but was [{dims}]"
                )
            if element == "bit" and dims % 8:
                raise _mapper_error(
                    f"The number of dimensions for field [{name}] should be a multiple of 8 "
                    f"for [bit] vectors but was [{dims}]"
                )
        indexed = spec.get("index", True)
        similarity = spec.get("similarity")
        if similarity is not None and similarity not in _ES_SIMILARITIES:
            raise _mapper_error(
                f"Unknown value [{similarity}] for field [similarity] - accepted values are "
                f"{list(_ES_SIMILARITIES)}"
            )
        if not indexed and (similarity is not None or "index_options" in spec):
            raise _mapper_error(
                "Field [similarity] can only be specified for a field of type [dense_vector] "
                "when it is indexed"
            )
        if element == "bit" and similarity not in (None, "l2_norm"):
            raise _mapper_error(
                f"The [{similarity}] similarity is not supported for [bit] vectors; "
                "bit vectors only support [l2_norm]"
            )
        # GET _mapping shows the defaults an index gets (DenseVectorFieldMapper.Builder).
        out: dict[str, Any] = {"type": "dense_vector"}
        if element != "float":
            out["element_type"] = element
        if dims is not None:
            out["dims"] = dims
        out["index"] = bool(indexed)
        if indexed:
            out["similarity"] = similarity or ("l2_norm" if element == "bit" else "cosine")
            out["index_options"] = spec.get("index_options") or self._default_options(element, dims)
        for key in ("meta",):
            if key in spec:
                out[key] = spec[key]
        return out

    def _default_options(self, element: str, dims: int | None) -> dict[str, Any]:
        if element in ("byte", "bit"):
            return {"type": "hnsw", "m": 16, "ef_construction": 100}
        # "indexed as bbq_hnsw if dimensions are greater than or equal to 384, otherwise
        # int8_hnsw" from 9.1; "In 9.0, dense vector fields are always indexed as int8_hnsw".
        if self.version >= (9, 1, 0) and (dims or 0) >= 384:
            return {
                "type": "bbq_hnsw",
                "m": 16,
                "ef_construction": 100,
                "rescore_vector": {"oversample": 3.0},
            }
        return {"type": "int8_hnsw", "m": 16, "ef_construction": 100}

    def _knn(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        dims = spec.get("dimension")
        if not isinstance(dims, int) or isinstance(dims, bool):
            raise _mapper_error(f"Dimension value missing for vector: {name}")
        if not 1 <= dims <= OS_MAX_DIMS:
            raise _mapper_error(
                f"Dimension value cannot be greater than {OS_MAX_DIMS} for vector: {name}"
            )
        data_type = spec.get("data_type", "float")
        if data_type not in ("float", "byte", "binary"):
            raise _mapper_error(
                f"Invalid value provided for [data_type] field. Supported values are [float, "
                f"byte, binary] but got [{data_type}]"
            )
        if data_type == "binary" and dims % 8:
            raise _mapper_error(
                f"Dimension should be multiply of 8 for binary vector data type but got [{dims}]"
            )
        method = spec.get("method") or {}
        space = method.get("space_type", spec.get("space_type"))
        if space is not None and space not in _OS_SPACE_TYPES:
            raise _mapper_error(f"Unable to find space: {space}")
        return spec

    def _index_fields(self) -> None:
        self.vectors = []
        self.types = {}
        self.nested = set()

        def walk(props: Mapping[str, Any], prefix: tuple[str, ...], in_array: bool) -> None:
            for name, spec in props.items():
                path = (*prefix, name)
                ftype = spec.get("type", "object" if "properties" in spec else None)
                if ftype in ("object", "nested") or "properties" in spec:
                    if ftype == "nested":
                        self.nested.add(".".join(path))
                    walk(spec.get("properties", {}), path, in_array or ftype == "nested")
                    continue
                self.types[".".join(path)] = ftype
                if ftype == "dense_vector":
                    vf = _VectorField(
                        path,
                        ftype,
                        spec.get("element_type", "float"),
                        spec.get("dims"),
                        spec.get("similarity"),
                    )
                elif ftype == "rank_vectors":
                    vf = _VectorField(
                        path, ftype, spec.get("element_type", "float"), spec.get("dims")
                    )
                elif ftype == "sparse_vector":
                    vf = _VectorField(path, ftype)
                elif ftype == "knn_vector":
                    vf = _VectorField(
                        path,
                        ftype,
                        spec.get("data_type", "float"),
                        spec.get("dimension"),
                        (spec.get("method") or {}).get("space_type", spec.get("space_type")),
                    )
                else:
                    continue
                vf.nested_lists = in_array
                self.vectors.append(vf)

        walk(self.properties, (), False)

    def set_dims(self, vf: _VectorField, dims: int) -> None:
        """A dense_vector without dims takes the length of its first vector (dynamic update)."""
        node: dict[str, Any] = {"properties": self.properties}
        for part in vf.path:
            node = node["properties"][part]
        node["dims"] = dims
        vf.dims = dims

    def add_dynamic(self, source: Mapping[str, Any]) -> bool:
        """Map unmapped fields the way dynamic mapping does; True if the mapping grew."""
        grew = False

        def walk(obj: Mapping[str, Any], props: dict[str, Any], prefix: str) -> None:
            nonlocal grew
            for key, value in obj.items():
                path = f"{prefix}{key}"
                spec = props.get(key)
                if isinstance(value, Mapping):
                    if spec is None:
                        spec = props[key] = {"properties": {}}
                        grew = True
                    if "properties" in spec:
                        walk(value, spec["properties"], path + ".")
                    continue
                if spec is not None or value is None:
                    continue
                sample = value[0] if isinstance(value, list) and value else value
                new = self._dynamic_type(value, sample)
                if new is not None:
                    props[key] = new
                    grew = True

        walk(source, self.properties, "")
        if grew:
            self._index_fields()
        return grew

    def _dynamic_type(self, value: Any, sample: Any) -> dict[str, Any] | None:
        if isinstance(sample, bool):
            return {"type": "boolean"}
        if isinstance(sample, int):
            return {"type": "long"}
        if isinstance(sample, float):
            # "Unmapped array fields of float elements with size between 128 and 4096 are
            # dynamically mapped as dense_vector with a default similarity of cosine."
            if (
                self.flavor == "elasticsearch"
                and self.version >= (8, 11, 0)
                and isinstance(value, list)
                and 128 <= len(value) <= ES_MAX_DIMS
                and all(isinstance(v, float) for v in value)
            ):
                return self._dense("", {"dims": len(value)})
            return {"type": "float"}
        if isinstance(sample, str):
            if re.match(r"^\d{4}-\d{2}-\d{2}(?:[T ][\d:.]+(?:Z|[+-]\d{2}:?\d{2})?)?$", sample):
                return {"type": "date"}
            return {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
        return None


# ---------------------------------------------------------------------------------------------
# Documents and indexes


def _walk_values(obj: Any, path: tuple[str, ...]) -> Iterator[Any]:
    """Every value at ``path`` in a source document, descending through arrays of objects."""
    if not path:
        yield obj
        return
    if isinstance(obj, list):
        for item in obj:
            yield from _walk_values(item, path)
        return
    if isinstance(obj, Mapping):
        head = path[0]
        if head in obj:
            yield from _walk_values(obj[head], path[1:])
        else:  # a dotted key such as {"a.b": 1}
            for n in range(2, len(path) + 1):
                dotted = ".".join(path[:n])
                if dotted in obj:
                    yield from _walk_values(obj[dotted], path[n:])


def _replace_values(obj: Any, path: tuple[str, ...], fn: Any) -> Any:
    """A copy of ``obj`` with the values at ``path`` replaced by ``fn(value)`` (or removed
    when ``fn`` returns ``_REMOVE``)."""
    if isinstance(obj, list):
        return [_replace_values(item, path, fn) for item in obj]
    if not isinstance(obj, Mapping) or not path:
        return obj
    head, rest = path[0], path[1:]
    if head not in obj:
        return obj
    out = dict(obj)
    if rest:
        out[head] = _replace_values(obj[head], rest, fn)
    else:
        new = fn(obj[head])
        if new is _REMOVE:
            del out[head]
        else:
            out[head] = new
    return out


_REMOVE = object()


@dataclass(slots=True)
class _Doc:
    id: str
    head: bytes  # '{"_index":"docs","_id":"..."' (no closing brace)
    full: bytes  # _source with vectors (rehydrated when the index excludes source vectors)
    novec: bytes  # _source without vector fields
    values: dict[str, Any]  # novec, parsed: for queries, sorts and _source filtering
    vectors: frozenset[str]  # vector fields present
    version: int = 1
    #: The shard's sequence number of the operation that indexed this version: unique among
    #: a shard's live documents, and a new one for every update (SeqNoFieldMapper).
    seq_no: int = -1


@dataclass
class _Index:
    name: str
    mapping: _Mapping
    settings: dict[str, Any]
    shards: int
    exclude_source_vectors: bool
    uuid: str = field(
        default_factory=lambda: base64.urlsafe_b64encode(uuid.uuid4().bytes)[:22].decode()
    )
    created_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    docs: list[dict[str, _Doc]] = field(default_factory=list)  # per shard, insertion order
    lock: threading.Lock = field(default_factory=threading.Lock)
    generation: int = 0
    seq_no: int = 0
    cache: dict[Any, Any] = field(default_factory=dict)
    #: Each shard's next sequence number (indexing and deleting both take one).
    shard_seq: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.docs:
            self.docs = [{} for _ in range(self.shards)]
        if not self.shard_seq:
            self.shard_seq = [0] * self.shards

    def shard_of(self, doc_id: str) -> int:
        return zlib.crc32(doc_id.encode("utf-8")) % self.shards

    def count(self) -> int:
        return sum(len(s) for s in self.docs)

    def snapshot(self) -> list[tuple[_Doc, ...]]:
        with self.lock:
            return [tuple(s.values()) for s in self.docs]

    def get(self, doc_id: str) -> _Doc | None:
        return self.docs[self.shard_of(doc_id)].get(doc_id)

    def encode(self, doc_id: Any, source: Any) -> _Doc:
        """Validate a document against the mapping and pre-encode its answers."""
        if not isinstance(doc_id, str) or not doc_id:
            raise _DocError("if _id is specified it must not be empty")
        if len(doc_id.encode("utf-8")) > 512:
            raise _DocError(f"id [{doc_id}] is too long, must be no longer than 512 bytes")
        if not isinstance(source, Mapping):
            raise _DocError("the document source must be a JSON object")
        mapping = self.mapping
        dynamic = mapping.extra.get("dynamic", True)
        if dynamic in (True, "true"):
            with self.lock:  # concurrent bulk requests may both grow the mapping
                if mapping.add_dynamic(source):
                    self.generation += 1
        elif dynamic == "strict":
            _check_strict(source, mapping)
        full: Any = source
        novec: Any = source
        present: set[str] = set()
        for vf in mapping.vectors:
            raw_values = list(_walk_values(source, vf.path))
            raw_values = [v for v in raw_values if v is not None]
            if not raw_values:
                continue
            if vf.dims is None and vf.kind == "dense_vector":
                with self.lock:
                    if vf.dims is None:
                        mapping.set_dims(vf, _vector_dims(raw_values[0], vf))
            present.add(vf.name)
            if len(raw_values) > 1 and not vf.nested_lists and vf.kind != "rank_vectors":
                raise _DocError(
                    f"Field [{vf.name}] of type [{vf.kind}] doesn't support indexing multiple "
                    "values for the same field in the same document"
                )
            rehydrate = self.exclude_source_vectors
            full = _replace_values(
                full,
                vf.path,
                lambda v, vf=vf, r=rehydrate: (
                    _encode_vector(v, vf, rehydrate=r) if v is not None else None
                ),
            )
            novec = _replace_values(novec, vf.path, lambda v: _REMOVE)
        head = b'{"_index":' + _dumps(self.name) + b',"_id":' + _dumps(doc_id)
        novec_bytes = _dumps_stored(novec)
        full_bytes = novec_bytes if full is source and novec is source else _dumps_stored(full)
        values = _loads(novec_bytes)  # a private, plain copy (no numpy, no caller aliasing)
        return _Doc(doc_id, head, full_bytes, novec_bytes, values, frozenset(present))

    def put(self, doc: _Doc, *, create: bool = False) -> str:
        with self.lock:
            shard_index = self.shard_of(doc.id)
            shard = self.docs[shard_index]
            old = shard.get(doc.id)
            if old is not None and create:
                raise _DocError(
                    f"[{doc.id}]: version conflict, document already exists (current version "
                    f"[{old.version}])"
                )
            shard.pop(doc.id, None)
            doc.version = 1 if old is None else old.version + 1
            doc.seq_no = self.shard_seq[shard_index]
            self.shard_seq[shard_index] += 1
            shard[doc.id] = doc  # an update is a delete plus an add at the end (as in Lucene)
            self.generation += 1
            self.seq_no += 1
            return "created" if old is None else "updated"

    def delete(self, doc_id: str) -> _Doc | None:
        with self.lock:
            shard_index = self.shard_of(doc_id)
            old = self.docs[shard_index].pop(doc_id, None)
            if old is not None:
                self.generation += 1
                self.seq_no += 1
                self.shard_seq[shard_index] += 1
            return old


def _vector_dims(first: Any, vf: _VectorField) -> int:
    """The dims a dense_vector without ``dims`` takes from its first value."""
    per_value = 8 if vf.element == "bit" else 1
    if isinstance(first, str):
        return len(bytes.fromhex(first)) * per_value
    return len(first) * per_value


def _check_strict(source: Mapping[str, Any], mapping: _Mapping) -> None:
    def walk(obj: Mapping[str, Any], props: Mapping[str, Any], prefix: str) -> None:
        for key, value in obj.items():
            spec = props.get(key)
            if spec is None:
                raise _DocError(
                    f"[1:1] mapping set to strict, dynamic introduction of [{key}] within "
                    f"[{prefix.rstrip('.') or '_doc'}] is not allowed",
                    "strict_dynamic_mapping_exception",
                )
            if isinstance(value, Mapping) and "properties" in spec:
                walk(value, spec["properties"], f"{prefix}{key}.")

    walk(source, mapping.properties, "")


# ---------------------------------------------------------------------------------------------
# Search: queries, sorts, slices, _source


def _field_values(values: Mapping[str, Any], name: str) -> list[Any]:
    """The values of a field in a source; ``title.keyword`` (a multi-field) reads ``title``."""
    path = tuple(name.split("."))
    while path:
        found: list[Any] = []
        for v in _walk_values(values, path):
            if isinstance(v, list):
                found.extend(x for x in v if x is not None)
            elif v is not None:
                found.append(v)
        if found or len(path) == 1:
            return found
        path = path[:-1]
    return []


def _compile_query(query: Any) -> Any:
    """A predicate over ``_Doc`` (None for match_all)."""
    if query is None:
        return None
    if not isinstance(query, Mapping) or len(query) != 1:
        raise ApiError(
            400, "parsing_exception", "[_na] query malformed, no start_object after query name"
        )
    ((kind, spec),) = query.items()
    if kind == "match_all":
        return None
    if kind == "match_none":
        return lambda doc: False
    if kind == "ids":
        wanted = set(map(str, (spec or {}).get("values", [])))
        return lambda doc: doc.id in wanted
    if kind in ("term", "terms"):
        ((fname, target),) = spec.items()
        if kind == "term":
            target = target.get("value") if isinstance(target, Mapping) else target
            targets = {json.dumps(target)}
        else:
            targets = {json.dumps(t) for t in target}
        if fname == "_id":
            ids = {json.loads(t) for t in targets}
            return lambda doc: doc.id in ids
        return lambda doc: any(json.dumps(v) in targets for v in _field_values(doc.values, fname))
    if kind == "exists":
        fname = spec["field"]
        return lambda doc: fname in doc.vectors or bool(_field_values(doc.values, fname))
    if kind == "range":
        ((fname, bounds),) = spec.items()
        ops = {
            "gt": lambda a, b: a > b,
            "gte": lambda a, b: a >= b,
            "lt": lambda a, b: a < b,
            "lte": lambda a, b: a <= b,
        }

        def in_range(doc: _Doc) -> bool:
            values = [doc.seq_no] if fname == "_seq_no" else _field_values(doc.values, fname)
            for v in values:
                try:
                    if all(ops[op](v, bound) for op, bound in bounds.items() if op in ops):
                        return True
                except TypeError:
                    continue
            return False

        return in_range
    if kind == "bool":
        must = [
            _compile_query(q) for q in _as_list(spec.get("must")) + _as_list(spec.get("filter"))
        ]
        should = [_compile_query(q) for q in _as_list(spec.get("should"))]
        must_not = [_compile_query(q) for q in _as_list(spec.get("must_not"))]

        def matches(doc: _Doc) -> bool:
            if any(p is not None and not p(doc) for p in must):
                return False
            if any(p is None or p(doc) for p in must_not):
                return False
            if should and not must:
                return any(p is None or p(doc) for p in should)
            return True

        return matches
    raise ApiError(400, "parsing_exception", f"unknown query [{kind}]", extra={"line": 1, "col": 1})


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


@functools.total_ordering
class _Rev:
    """Reverses the order of a value inside sort keys (descending sorts)."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Rev) and self.v == other.v

    def __lt__(self, other: _Rev) -> bool:
        return bool(other.v < self.v)

    def __hash__(self) -> int:  # pragma: no cover - keys are never hashed
        return hash(self.v)


@dataclass(frozen=True)
class _SortField:
    name: str
    desc: bool
    missing_first: bool
    kind: str  # "_score" | "_doc" | "_shard_doc" | "_seq_no" | "_id" | "keyword" | "int" | "float" | "date" | "bool" | "unmapped"


def _parse_date_ms(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+", text):
            return int(text)
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return int(parsed.timestamp() * 1000)
    return None


def _sort_value(sf: _SortField, doc: _Doc, shard_index: int, pos: int) -> Any:
    if sf.kind == "_shard_doc":
        return (shard_index << 32) | pos
    if sf.kind == "_doc":
        return pos
    if sf.kind == "_score":
        return 1.0
    if sf.kind == "_id":
        return doc.id
    if sf.kind == "_seq_no":
        return doc.seq_no
    raw = _field_values(doc.values, sf.name)
    if not raw:
        return None
    if sf.kind == "keyword":
        vals: list[Any] = [str(v) for v in raw]
    elif sf.kind == "int":
        vals = [int(v) for v in raw if isinstance(v, (int, float, str)) and _is_number(v)]
    elif sf.kind == "float":
        vals = [float(v) for v in raw if isinstance(v, (int, float, str)) and _is_number(v)]
    elif sf.kind == "date":
        vals = [d for d in (_parse_date_ms(v) for v in raw) if d is not None]
    elif sf.kind == "bool":
        vals = [1 if v in (True, "true") else 0 for v in raw]
    else:
        return None
    if not vals:
        return None
    return max(vals) if sf.desc else min(vals)  # the default sort mode: min asc, max desc


def _is_number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _key_part(sf: _SortField, value: Any) -> tuple[Any, ...]:
    if value is None:
        return (-1,) if sf.missing_first else (1,)
    return (0, _Rev(value) if sf.desc else value)


def _coerce_after(sf: _SortField, value: Any) -> Any:
    if value is None:
        return None
    try:
        if sf.kind in ("_shard_doc", "_doc", "_seq_no", "int", "bool"):
            return int(value)
        if sf.kind in ("_score", "float"):
            return float(value)
        if sf.kind == "date":
            parsed = _parse_date_ms(value)
            if parsed is None:
                raise ValueError(value)
            return parsed
    except (TypeError, ValueError):
        raise _bad_request(f"Failed to parse search_after value for field [{sf.name}].") from None
    return str(value)


@dataclass
class _Plan:
    """The matching documents of one search, in sort order, with their sort keys."""

    keys: list[tuple[Any, ...]]
    entries: list[tuple[_Doc, int, int]]  # doc, shard index, position


@dataclass
class _Context:
    """A point in time or a scroll: a frozen view of the shards it was opened on."""

    kind: str  # "pit" | "scroll"
    ids: set[str]
    shards: list[tuple[_Index, tuple[_Doc, ...]]]
    keep_alive_ms: int
    expires: float
    created_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    plans: dict[str, _Plan] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # scroll only
    plan: _Plan | None = None
    position: int = 0
    size: int = 10
    request: dict[str, Any] = field(default_factory=dict)

    def touch(self, keep_alive_ms: int | None) -> None:
        if keep_alive_ms is not None:
            self.keep_alive_ms = keep_alive_ms
            self.expires = time.monotonic() + keep_alive_ms / 1000


def _match_source(path: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, p) or path.startswith(p + ".") for p in patterns)


def _could_contain(path: str, patterns: Sequence[str]) -> bool:
    """Whether an include pattern may match something below ``path``."""
    prefix = path + "."
    return any(p.startswith(prefix) or "*" in p for p in patterns)


def _filter_source(
    obj: Any, includes: Sequence[str], excludes: Sequence[str], prefix: str = ""
) -> Any:
    """``_source`` filtering: dotted paths, ``*`` wildcards, an object included whole."""
    if isinstance(obj, list):
        kept = [_filter_source(v, includes, excludes, prefix) for v in obj]
        return [v for v in kept if v != {} or not isinstance(v, dict)]
    if not isinstance(obj, Mapping):
        return obj
    out: dict[str, Any] = {}
    for key, value in obj.items():
        path = prefix + key
        if excludes and _match_source(path, excludes):
            continue
        if not includes or _match_source(path, includes):
            out[key] = _filter_source(value, (), excludes, path + ".")
        elif isinstance(value, (Mapping, list)) and _could_contain(path, includes):
            inner = _filter_source(value, includes, excludes, path + ".")
            if inner not in ({}, []):
                out[key] = inner
    return out


@dataclass
class _SourceSpec:
    enabled: bool = True
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    exclude_vectors: bool | None = None


# ---------------------------------------------------------------------------------------------
# Fault rules


@dataclass
class _Rule:
    remaining: int
    kind: str  # "fail" | "hang" | "drop"
    status: int = 429
    retry_after: float | str | None = None
    endpoint: str | None = None
    index: str | None = None
    seconds: float = 0.0
    message: str | None = None
    body: bytes | str | dict[str, Any] | None = None

    def matches(self, endpoint: str, indices: Sequence[str]) -> bool:
        if self.endpoint is not None and self.endpoint != endpoint:
            return False
        return self.index is None or self.index in indices


# ---------------------------------------------------------------------------------------------
# The server


class SearchServer(Faults["_Rule"]):
    """In-process Elasticsearch/OpenSearch REST server on 127.0.0.1."""

    def __init__(
        self,
        flavor: str = "elasticsearch",
        version: str | None = None,
        *,
        api_key: str | tuple[str, str] | None = None,
        basic_auth: tuple[str, str] | None = None,
        exclude_vectors: bool | None = None,
        rotate_pit_ids: bool = False,
        bind: str = "127.0.0.1",
        port: int = 0,
        cluster_name: str | None = None,
    ) -> None:
        if flavor not in FLAVORS:
            raise ValueError(f"flavor must be one of {FLAVORS}")
        self.flavor = flavor
        self.version = version or DEFAULT_VERSIONS[flavor]
        self.version_tuple = _parse_version(self.version)
        if exclude_vectors is None:
            # index.mapping.exclude_source_vectors is on for indexes created from 9.2
            exclude_vectors = flavor == "elasticsearch" and self.version_tuple >= (9, 2, 0)
        if exclude_vectors and flavor == "opensearch":
            raise ValueError("OpenSearch keeps vectors in _source; exclude_vectors is ES 9.2+")
        self.exclude_vectors = exclude_vectors
        if isinstance(api_key, tuple):
            api_key = base64.b64encode(f"{api_key[0]}:{api_key[1]}".encode()).decode()
        self.api_key = api_key
        self.basic_auth = basic_auth
        self.rotate_pit_ids = rotate_pit_ids
        self.bind = bind
        self.port = port
        self.cluster_name = cluster_name or (
            "elasticsearch" if flavor == "elasticsearch" else "opensearch-cluster"
        )
        self.cluster_uuid = base64.urlsafe_b64encode(uuid.uuid4().bytes)[:22].decode()
        self.latency: float = 0.0
        self._indexes: dict[str, _Index] = {}
        self._contexts: dict[str, _Context] = {}
        self._lock = threading.Lock()  # counts, index and context tables; never slept in
        super().__init__()
        self._counts: collections.Counter[str] = collections.Counter()
        self._context_seq = 0
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status); 0 = dropped
        self.accept_headers: set[str] = set()
        self._httpd: Any = None
        self._thread: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()
        self._stop = threading.Event()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> SearchServer:
        if self._httpd is not None:
            return self
        httpd = _HTTPServer((self.bind, self.port), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._stop.clear()
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"search-server-{self.flavor}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stop.set()  # wakes hung handlers
        self._httpd.shutdown()
        self._httpd.server_close()
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
        self._httpd = None
        self._thread = None

    def __enter__(self) -> SearchServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # -- indexes and data -------------------------------------------------------------------

    def create_index(
        self,
        name: str,
        mappings: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        """Create an index as ``PUT /{name}`` would (raises ValueError on a bad request)."""
        try:
            self._create_index(name, mappings, settings)
        except ApiError as exc:
            raise ValueError(exc.reason) from None

    def delete_index(self, name: str) -> None:
        with self._lock:
            del self._indexes[name]

    def seed(
        self,
        index: str,
        docs: Iterable[Mapping[str, Any] | tuple[str, Mapping[str, Any]]] | None = None,
        mapping: Mapping[str, Any] | None = None,
        *,
        settings: Mapping[str, Any] | None = None,
        ids: Sequence[str] | None = None,
        vectors: Any = None,
        vector_field: str = "embedding",
        fields: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        """Store documents server-side, without HTTP (fast, for benchmarks); returns how many.

        ``docs``: dicts with an ``_id`` key (the rest is ``_source``) or ``(id, source)``
        pairs.  Or ``ids`` with a 2-D ``vectors`` matrix stored at ``vector_field`` (and
        optional per-document ``fields``).  The index is created with ``mapping`` and
        ``settings`` if it does not exist.  Documents are validated against the mapping as an
        index request would be (ValueError on the first refusal).
        """
        if index not in self._indexes:
            self.create_index(index, mapping, settings)
        elif mapping is not None:
            raise ValueError(f"index [{index}] exists; seed it without a mapping")
        ix = self._indexes[index]
        stored = 0

        def store(doc_id: Any, source: Any) -> None:
            nonlocal stored
            try:
                ix.put(ix.encode(doc_id, source))
            except _DocError as exc:
                raise ValueError(f"document [{doc_id}]: {exc.reason}") from None
            stored += 1

        if vectors is not None or ids is not None:
            if ids is None or vectors is None:
                raise ValueError("give ids= and vectors= together")
            matrix = np.asarray(vectors)
            if matrix.ndim != 2 or matrix.shape[0] != len(ids):
                raise ValueError("vectors must be 2-D with one row per id")
            if fields is not None and len(fields) != len(ids):
                raise ValueError("fields must have one entry per id")
            if matrix.dtype.kind == "f":
                matrix = matrix.astype(np.float32)
            for i, doc_id in enumerate(ids):
                source = dict(fields[i]) if fields is not None else {}
                source[vector_field] = matrix[i]
                store(doc_id, source)
        for item in docs or ():
            if isinstance(item, tuple):
                doc_id, source = item
            else:
                source = dict(item)
                doc_id = source.pop("_id", None)
            store(doc_id, source)
        return stored

    def doc_count(self, index: str) -> int:
        return self._indexes[index].count()

    def get_source(self, index: str, doc_id: str, *, vectors: bool = True) -> Any:
        """A document's ``_source`` as a search answers it (vectors as rehydrated)."""
        doc = self._indexes[index].get(doc_id)
        if doc is None:
            return None
        return _loads(doc.full if vectors else doc.novec)

    def mapping(self, index: str) -> dict[str, Any]:
        return self._indexes[index].mapping.as_json()

    @property
    def open_contexts(self) -> dict[str, int]:
        """Open (unexpired) point-in-time and scroll contexts, by kind."""
        self._expire()
        with self._lock:
            kinds = collections.Counter(
                c.kind for c in {id(c): c for c in self._contexts.values()}.values()
            )
        return {"pit": kinds["pit"], "scroll": kinds["scroll"]}

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
        body: bytes | str | dict[str, Any] | None = None,
    ) -> None:
        """Answer the next ``n`` matching requests with ``status`` and the engine's error body
        (``es_rejected_execution_exception`` for 429, ``search_phase_execution_exception`` for
        503, ...; ``body`` replaces it).  ``retry_after`` adds a ``Retry-After`` header;
        ``endpoint`` (see ``ENDPOINTS``) and ``index`` narrow the match."""
        self._add_rule(
            _Rule(
                n,
                "fail",
                status=status,
                retry_after=retry_after,
                endpoint=endpoint,
                index=index,
                message=message,
                body=body,
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

    def _add_rule(self, rule: _Rule) -> None:
        if rule.endpoint is not None and rule.endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {ENDPOINTS}")
        super()._add_rule(rule)

    def _take_rule(self, endpoint: str, indices: Sequence[str]) -> _Rule | None:
        return self._take_rule_where(lambda rule: rule.matches(endpoint, indices))

    def count(self, endpoint: str | None = None) -> int:
        """Requests received for ``endpoint`` (all when None), faulted and refused ones too."""
        with self._lock:
            if endpoint is None:
                return sum(self._counts.values())
            return self._counts[endpoint]

    @property
    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset_stats(self) -> None:
        with self._lock:
            self._counts.clear()
            self.requests.clear()
        self._reset_traffic()

    def _enter(self, endpoint: str) -> None:
        with self._lock:
            self._counts[endpoint] += 1
        self._entered()

    def _leave(self, endpoint: str, method: str, path: str, status: int) -> None:
        with self._lock:
            self.requests.append((method, path, status))
        self._left(endpoint, status)

    # -- wire details -----------------------------------------------------------------------

    @property
    def _is_es(self) -> bool:
        return self.flavor == "elasticsearch"

    def _json_type(self, accept: str | None) -> str:
        if not self._is_es:
            return "application/json; charset=UTF-8"
        version = _compat_version(accept)
        if version is not None:
            return f"application/vnd.elasticsearch+json;compatible-with={version}"
        return "application/json"

    def _check_media_types(self, headers: Any, has_body: bool) -> None:
        """RestCompatibleVersionHelper: compatible-with must be the server's major or the one
        before, and the same on Accept and Content-Type."""
        accept = headers.get("Accept")
        ctype = headers.get("Content-Type")
        if not self._is_es:
            if has_body and ctype and "vnd.elasticsearch" in ctype:
                raise ApiError(
                    406,
                    "",
                    "",
                    raw=_dumps(
                        {"error": f"Content-Type header [{ctype}] is not supported", "status": 406}
                    ),
                )
            return
        major = self.version_tuple[0]
        # An absent (or plain application/json) header means the server's own major.
        a_version = _compat_version(accept) or major
        c_version = (_compat_version(ctype) or major) if has_body else major
        present = [
            h for h, v in (("Content-Type", ctype if has_body else None), ("Accept", accept)) if v
        ]
        label = f"Invalid media-type value on headers [{', '.join(present)}]"

        def refuse(reason: str) -> ApiError:
            inner = {"type": "status_exception", "reason": reason}
            return ApiError(400, "media_type_header_exception", label, caused_by=inner)

        if not major - 1 <= a_version <= major:
            raise refuse(
                f"Accept version must be either version {major} or {major - 1}, but found "
                f"{a_version}. Accept={accept}"
            )
        if not major - 1 <= c_version <= major:
            raise refuse(
                f"Content-Type version must be either version {major} or {major - 1}, but "
                f"found {c_version}. Content-Type={ctype}"
            )
        if a_version != c_version:
            raise refuse(
                "A compatible version is required on both Content-Type and Accept headers if "
                "either one has requested a compatible version and the compatible versions "
                f"must match. Accept={accept}, Content-Type={ctype}"
            )

    def _authenticate(self, headers: Any, uri: str) -> None:
        if self.api_key is None and self.basic_auth is None:
            return
        auth = headers.get("Authorization") or ""
        scheme, _, credentials = auth.partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        principal, _, secret = decoded.partition(":")
        if scheme == "apikey" and self.api_key is not None and credentials == self.api_key:
            return
        if scheme == "basic" and self.basic_auth is not None:
            if (principal, secret) == tuple(self.basic_auth):
                return
        if not self._is_es:
            raise ApiError(
                401,
                "",
                "",
                raw=b"Unauthorized",
                content_type="text/plain; charset=UTF-8",
                headers=[("WWW-Authenticate", 'Basic realm="OpenSearch Security"')],
            )
        headers_out = [("WWW-Authenticate", h) for h in ES_WWW_AUTHENTICATE]
        challenge = {"header": {"WWW-Authenticate": list(ES_WWW_AUTHENTICATE)}}
        if scheme == "basic":
            reason = f"unable to authenticate user [{principal}] for REST request [{uri}]"
            raise ApiError(401, "security_exception", reason, extra=challenge, headers=headers_out)
        if scheme == "apikey":
            reason = (
                "unable to authenticate with provided credentials and anonymous access is not "
                "allowed for this request"
            )
            extra = {
                "additional_unsuccessful_credentials": (
                    f"API key: unable to find apikey with id {principal or credentials}"
                ),
                **challenge,
            }
            raise ApiError(401, "security_exception", reason, extra=extra, headers=headers_out)
        reason = f"missing authentication credentials for REST request [{uri}]"
        raise ApiError(401, "security_exception", reason, extra=challenge, headers=headers_out)

    def _fault_error(self, rule: _Rule) -> ApiError:
        headers = [] if rule.retry_after is None else [("Retry-After", str(rule.retry_after))]
        if rule.body is not None:
            raw = (
                rule.body
                if isinstance(rule.body, bytes)
                else (rule.body.encode() if isinstance(rule.body, str) else _dumps(rule.body))
            )
            ctype = "application/json" if isinstance(rule.body, dict) else "text/plain"
            return ApiError(rule.status, "", "", raw=raw, content_type=ctype, headers=headers)
        status = rule.status
        if status == 429:
            # OpenSearch renamed EsRejectedExecutionException (type names drop the product).
            type_ = (
                "es_rejected_execution_exception" if self._is_es else "rejected_execution_exception"
            )
            pool = "EsThreadPoolExecutor" if self._is_es else "OpenSearchThreadPoolExecutor"
            reason = rule.message or (
                f"rejected execution of TimedRunnable on {pool}[name = test-node/search, "
                "queue capacity = 1000, active threads = 13, queued tasks = 1000]"
            )
            return ApiError(status, type_, reason, headers=headers)
        if status == 503:
            inner = {
                "type": "no_shard_available_action_exception",
                "reason": rule.message or "No shard available (injected by the test server)",
            }
            err = _shard_failure(503, inner, "")
            err.headers = headers
            return err
        return ApiError(
            status,
            "status_exception",
            rule.message or f"injected failure {status} (test server)",
            headers=headers,
        )

    # -- routing ----------------------------------------------------------------------------

    def _route(
        self, method: str, parts: list[str], query: dict[str, str], body: bytes, headers: Any
    ) -> tuple[int, bytes, list[tuple[str, str]]]:
        """Returns (status, JSON body, extra headers); raises ApiError for error answers."""
        n = len(parts)
        head = parts[0] if parts else ""
        if n == 0:
            if method in ("GET", "HEAD"):
                return 200, self._info(), []
            raise self._bad_method(method, "/")
        if head == "_bulk" and n == 1 or (n == 2 and parts[1] == "_bulk"):
            return self._bulk(parts[0] if n == 2 else None, body, query)
        if head == "_search":
            if n == 1:
                return self._search(None, method, body, query, headers)
            if parts[1] == "scroll":
                if method == "DELETE":
                    return self._clear_scroll(parts[2] if n > 2 else None, body)
                return self._scroll(parts[2] if n > 2 else None, body, query)
            if parts[1] == "point_in_time" and not self._is_es:
                if n == 3 and parts[2] == "_all":
                    if method == "GET":
                        return 200, self._list_pits(), []
                    if method == "DELETE":
                        return self._delete_pits(None)
                if n == 2 and method == "DELETE":
                    return self._delete_pits(body)
        if head == "_pit" and n == 1 and method == "DELETE" and self._is_es:
            return self._close_pit(body)
        if head == "_cat" and n >= 2 and parts[1] == "indices":
            return 200, self._cat_indices(parts[2] if n > 2 else "*", query), []
        if head in ("_alias", "_aliases") and n == 1:
            return 200, _dumps({name: {"aliases": {}} for name in self._resolve("*")}), []
        if head == "_mapping" and n == 1:
            return 200, self._mappings("*"), []
        if head == "_settings" and n == 1:
            return 200, self._settings("*", query), []
        if head == "_count" and n == 1:
            return self._count(None, body)
        if head == "_refresh" and n == 1:
            return 200, _dumps({"_shards": self._shards_json(len(self._resolve("*")))}), []
        if head.startswith("_") and head != "_all":
            raise ApiError(
                400,
                "invalid_index_name_exception",
                f"Invalid index name [{head}], must not start with '_'.",
            )
        name = head
        if n == 1:
            if method == "HEAD":
                self._resolve(name)
                return 200, b"", []
            if method == "GET":
                return 200, self._get_index(name), []
            if method == "PUT":
                spec = _loads(body) if body.strip() else {}
                self._create_index(
                    name,
                    spec.get("mappings"),
                    spec.get("settings"),
                    from_rest=True,
                    aliases=spec.get("aliases"),
                )
                return (
                    200,
                    _dumps({"acknowledged": True, "shards_acknowledged": True, "index": name}),
                    [],
                )
            if method == "DELETE":
                for real in self._resolve(name):
                    self.delete_index(real)
                return 200, _dumps({"acknowledged": True}), []
            raise self._bad_method(method, f"/{name}")
        sub = parts[1]
        if sub == "_mapping" and n == 2:
            return 200, self._mappings(name), []
        if sub == "_settings" and n in (2, 3):
            names = parts[2].split(",") if n == 3 else None
            return 200, self._settings(name, query, names), []
        if sub in ("_alias", "_aliases") and n == 2:
            return 200, _dumps({i: {"aliases": {}} for i in self._resolve(name)}), []
        if sub == "_count" and n == 2:
            return self._count(name, body)
        if sub == "_search" and n == 2:
            return self._search(name, method, body, query, headers)
        if sub == "_refresh" and n == 2:
            return 200, _dumps({"_shards": self._shards_json(len(self._resolve(name)))}), []
        if sub == "_pit" and n == 2 and method == "POST" and self._is_es:
            return self._open_pit(name, query)
        if sub == "_search" and n == 3 and parts[2] == "point_in_time" and not self._is_es:
            if method == "POST":
                return self._open_pit(name, query)
        if sub == "_doc" and n == 3 and method in ("GET", "HEAD"):
            return self._get_doc(name, parts[2], query)
        if sub == "_doc" and n == 3 and method == "DELETE":
            self._index(name)  # 404 index_not_found_exception for an unknown index
            result = self._bulk_item("delete", name, parts[2], None)
            status = result.pop("status")
            return status, _dumps({"_index": name, "_id": parts[2], **result}), []
        if sub in ("_doc", "_create") and n in (2, 3) and method in ("PUT", "POST"):
            if n == 2 and (sub == "_create" or method == "PUT"):
                raise self._bad_method(method, "/" + "/".join(parts))
            doc_id = (
                parts[2] if n == 3 else base64.urlsafe_b64encode(uuid.uuid4().bytes)[:20].decode()
            )
            result = self._bulk_item(
                "create" if sub == "_create" else "index", name, doc_id, _loads(body)
            )
            status = result.pop("status")
            return status, _dumps({"_index": name, "_id": doc_id, **result}), []
        raise self._bad_method(method, "/" + "/".join(parts))

    def _bad_method(self, method: str, path: str) -> ApiError:
        return ApiError(
            405,
            "",
            "",
            raw=_dumps(
                {
                    "error": f"Incorrect HTTP method for uri [{path}] and method [{method}], "
                    "allowed: [GET, HEAD]",
                    "status": 405,
                }
            ),
        )

    # -- cluster and index APIs -------------------------------------------------------------

    def _info(self) -> bytes:
        major, minor, _ = self.version_tuple
        if self._is_es:
            lucene = {(9, 0): "10.1.0", (9, 1): "10.2.1", (9, 2): "10.3.1"}.get(
                (major, minor), "10.3.2" if major >= 9 else "9.12.0"
            )
            version: dict[str, Any] = {
                "number": self.version,
                "build_flavor": "default",
                "build_type": "docker",
                "build_hash": "0" * 40,
                "build_date": "2025-10-01T00:00:00.000Z",
                "build_snapshot": False,
                "lucene_version": lucene,
                "minimum_wire_compatibility_version": f"{major - 1}.{19 if major == 9 else 17}.0",
                "minimum_index_compatibility_version": f"{major - 1}.0.0",
            }
            tagline = "You Know, for Search"
        else:
            version = {
                "distribution": "opensearch",
                "number": self.version,
                "build_type": "tar",
                "build_hash": "0" * 40,
                "build_date": "2025-02-01T00:00:00.000000Z",
                "build_snapshot": False,
                "lucene_version": "10.2.1" if major >= 3 else "9.12.1",
                "minimum_wire_compatibility_version": "2.19.0" if major >= 3 else "7.10.0",
                "minimum_index_compatibility_version": "2.0.0" if major >= 3 else "7.0.0",
            }
            tagline = "The OpenSearch Project: https://opensearch.org/"
        return _dumps(
            {
                "name": "test-node",
                "cluster_name": self.cluster_name,
                "cluster_uuid": self.cluster_uuid,
                "version": version,
                "tagline": tagline,
            }
        )

    def _create_index(
        self,
        name: str,
        mappings: Any,
        settings: Any,
        *,
        from_rest: bool = False,
        aliases: Any = None,
    ) -> _Index:
        if name != name.lower():
            raise ApiError(
                400,
                "invalid_index_name_exception",
                f"Invalid index name [{name}], must be lowercase",
                extra={"index_uuid": "_na_", "index": name},
            )
        if not name or name.startswith(("_", "-", "+")) or any(c in name for c in '\\/*?"<>| ,#:'):
            raise ApiError(
                400,
                "invalid_index_name_exception",
                f"Invalid index name [{name}]",
                extra={"index_uuid": "_na_", "index": name},
            )
        flat = _flatten_settings(settings or {})
        shards = int(flat.pop("index.number_of_shards", 1))
        replicas = flat.pop("index.number_of_replicas", 1)
        exclude = self.exclude_vectors
        key = "index.mapping.exclude_source_vectors"
        if key in flat:
            if not self._is_es or not self._knows_exclude_vectors():
                raise _bad_request(
                    f"unknown setting [{key}] please check that any required plugins are "
                    "installed, or check the breaking changes documentation for removed settings"
                )
            exclude = str(flat[key]).lower() == "true"
        mapping = _Mapping(self.flavor, self.version_tuple)
        if mappings:
            mapping.merge(mappings)
        with self._lock:
            if name in self._indexes:
                existing = self._indexes[name]
                raise ApiError(
                    400,
                    "resource_already_exists_exception",
                    f"index [{name}/{existing.uuid}] already exists",
                    extra={"index_uuid": existing.uuid, "index": name},
                )
            settings_out = {
                "index.number_of_shards": str(shards),
                "index.number_of_replicas": str(replicas),
                **{k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in flat.items()},
            }
            ix = _Index(name, mapping, settings_out, shards, exclude)
            self._indexes[name] = ix
        return ix

    def _knows_exclude_vectors(self) -> bool:
        # The _source.exclude_vectors option and its index setting arrived in 8.19 and 9.1
        # (TransportVersions.SEARCH_SOURCE_EXCLUDE_VECTORS_PARAM_8_19); the default flipped to
        # true for indexes created from 9.2.
        v = self.version_tuple
        return self._is_es and (v >= (9, 1, 0) or (8, 19, 0) <= v < (9, 0, 0))

    def _resolve(self, expression: str, *, allow_missing: bool = False) -> list[str]:
        with self._lock:
            names = sorted(self._indexes)
        out: list[str] = []
        for part in expression.split(","):
            part = part.strip()
            if part in ("_all", "*", ""):
                out.extend(n for n in names if not n.startswith("."))
            elif "*" in part or "?" in part:
                out.extend(n for n in names if fnmatch.fnmatchcase(n, part))
            elif part in names:
                out.append(part)
            elif not allow_missing:
                raise _index_not_found(part)
        seen: set[str] = set()
        return [n for n in out if not (n in seen or seen.add(n))]

    def _index(self, name: str) -> _Index:
        with self._lock:
            ix = self._indexes.get(name)
        if ix is None:
            raise _index_not_found(name)
        return ix

    def _settings_json(self, ix: _Index, flat: bool = False) -> dict[str, Any]:
        nested: dict[str, Any] = {}
        items = dict(ix.settings)
        items.update(
            {
                "index.provided_name": ix.name,
                "index.creation_date": str(ix.created_ms),
                "index.uuid": ix.uuid,
                "index.version.created": "9033000" if self._is_es else "136407827",
            }
        )
        if flat:
            return dict(sorted(items.items()))
        for key, value in sorted(items.items()):
            node = nested
            *parents, leaf = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        return nested

    def _get_index(self, expression: str) -> bytes:
        out = {}
        for name in self._resolve(expression):
            ix = self._index(name)
            out[name] = {
                "aliases": {},
                "mappings": ix.mapping.as_json(),
                "settings": self._settings_json(ix),
            }
        return _dumps(out)

    def _mappings(self, expression: str) -> bytes:
        return _dumps(
            {n: {"mappings": self._index(n).mapping.as_json()} for n in self._resolve(expression)}
        )

    def _settings(
        self,
        expression: str,
        query: Mapping[str, str] | None = None,
        names: Sequence[str] | None = None,
    ) -> bytes:
        """GET _settings (``/{index}/_settings/{name,...}``: only settings matching those
        names or patterns); ``flat_settings=true`` answers dotted keys, ``include_defaults=true``
        adds the settings left at their defaults (here only the one that depends on the
        version: ``index.mapping.exclude_source_vectors``)."""
        query = query or {}
        flat = query.get("flat_settings") == "true"

        def wanted(items: Mapping[str, Any]) -> dict[str, Any]:
            if names is None:
                return dict(items)
            return {k: v for k, v in items.items() if any(fnmatch.fnmatchcase(k, p) for p in names)}

        out: dict[str, Any] = {}
        for n in self._resolve(expression):
            ix = self._index(n)
            settings = wanted(self._settings_json(ix, flat=True))
            entry: dict[str, Any] = {"settings": settings if flat else _nest(settings)}
            if query.get("include_defaults") == "true":
                key = "index.mapping.exclude_source_vectors"
                defaults: dict[str, Any] = {}
                if self._knows_exclude_vectors() and key not in ix.settings:
                    defaults[key] = str(ix.exclude_source_vectors).lower()
                defaults = wanted(defaults)
                entry["defaults"] = defaults if flat else _nest(defaults)
            if names is None or settings or entry.get("defaults"):
                out[n] = entry
        return _dumps(out)

    def _cat_indices(self, expression: str, query: Mapping[str, str]) -> bytes:
        rows = []
        for name in self._resolve(expression):
            ix = self._index(name)
            size = sum(len(d.full) for shard in ix.docs for d in shard.values())
            row = {
                "health": "green"
                if ix.settings.get("index.number_of_replicas") == "0"
                else "yellow",
                "status": "open",
                "index": name,
                "uuid": ix.uuid,
                "pri": str(ix.shards),
                "rep": ix.settings.get("index.number_of_replicas", "1"),
                "docs.count": str(ix.count()),
                "docs.deleted": "0",
                "store.size": f"{size}b",
                "pri.store.size": f"{size}b",
            }
            if self._is_es and self.version_tuple >= (8, 14, 0):
                row["dataset.size"] = f"{size}b"
            rows.append(row)
        if query.get("format") == "json":
            return _dumps(rows)
        lines = [" ".join(str(v) for v in r.values()) for r in rows]
        return ("\n".join(lines) + ("\n" if lines else "")).encode()

    def _shards_json(self, total: int, skipped: int = 0) -> dict[str, int]:
        return {"total": total, "successful": total, "skipped": skipped, "failed": 0}

    def _count(
        self, expression: str | None, body: bytes
    ) -> tuple[int, bytes, list[tuple[str, str]]]:
        req = _loads(body) if body.strip() else {}
        unknown = set(req) - {"query"}
        if unknown:
            raise ApiError(
                400, "parsing_exception", f"request does not support [{sorted(unknown)[0]}]"
            )
        predicate = _compile_query(req.get("query"))
        names = self._resolve(expression or "*")
        total = 0
        shards = 0
        for name in names:
            ix = self._index(name)
            for shard in ix.snapshot():
                shards += 1
                total += len(shard) if predicate is None else sum(1 for d in shard if predicate(d))
        return 200, _dumps({"count": total, "_shards": self._shards_json(shards)}), []

    def _get_doc(
        self, name: str, doc_id: str, query: Mapping[str, str]
    ) -> tuple[int, bytes, list[tuple[str, str]]]:
        ix = self._index(name)
        doc = ix.get(doc_id)
        head = b'{"_index":' + _dumps(name) + b',"_id":' + _dumps(doc_id)
        if doc is None:
            return 404, head + b',"found":false}', []
        spec = _SourceSpec()
        flag = query.get("_source_exclude_vectors")
        if flag is not None:
            if not self._knows_exclude_vectors():
                raise _bad_request(
                    "request [/_doc] contains unrecognized parameter: [_source_exclude_vectors]"
                )
            spec.exclude_vectors = flag.lower() != "false"
        source = self._source_bytes(ix, doc, spec)
        out = (
            head
            + b',"_version":'
            + str(doc.version).encode()
            + b',"_seq_no":'
            + str(doc.seq_no).encode()
            + b',"_primary_term":1,"found":true'
        )
        if source is not None:
            out += b',"_source":' + source
        return 200, out + b"}", []

    # -- bulk -------------------------------------------------------------------------------

    def _bulk(
        self, default_index: str | None, body: bytes, query: Mapping[str, str]
    ) -> tuple[int, bytes, list[tuple[str, str]]]:
        started = time.perf_counter()
        lines = [line for line in body.split(b"\n") if line.strip()]
        items: list[dict[str, Any]] = []
        errors = False
        i = 0
        while i < len(lines):
            action = _loads(lines[i])
            i += 1
            if not isinstance(action, dict) or len(action) != 1:
                raise _bad_request("Malformed action/metadata line [1], expected START_OBJECT")
            ((op, meta),) = action.items()
            if op not in ("index", "create", "delete", "update"):
                raise _bad_request(
                    f"Malformed action/metadata line [{i}], expected field [create], [delete], "
                    f"[index] or [update] but found [{op}]"
                )
            index_name = meta.get("_index", default_index)
            doc_id = meta.get("_id")
            source = None
            if op != "delete":
                if i >= len(lines):
                    raise _bad_request("The bulk request must be terminated by a newline [\\n]")
                source = _loads(lines[i])
                i += 1
            if index_name is None:
                raise _validation("index is missing")
            if doc_id is None and op != "delete":
                doc_id = base64.urlsafe_b64encode(uuid.uuid4().bytes)[:20].decode()
            result: dict[str, Any] = {"_index": index_name, "_id": doc_id}
            try:
                result.update(self._bulk_item(op, index_name, str(doc_id), source))
            except ApiError as exc:
                errors = True
                result.update(status=exc.status, error=exc.cause())
            items.append({op: result})
        took = int((time.perf_counter() - started) * 1000)
        return 200, _dumps({"errors": errors, "took": took, "items": items}), []

    def _bulk_item(self, op: str, index_name: str, doc_id: str, source: Any) -> dict[str, Any]:
        with self._lock:
            ix = self._indexes.get(index_name)
        if ix is None:
            if op == "delete":
                raise _index_not_found(index_name)
            ix = self._indexes.get(index_name) or self._create_index(index_name, None, None)
        shards = {"total": 2, "successful": 1, "failed": 0}
        if op == "delete":
            old = ix.delete(doc_id)
            return {
                "_version": (old.version + 1) if old else 1,
                "result": "deleted" if old else "not_found",
                "_shards": shards,
                "_seq_no": ix.seq_no,
                "_primary_term": 1,
                "status": 200 if old else 404,
            }
        if op == "update":
            raise _bad_request("update is not supported by the test server")
        try:
            doc = ix.encode(doc_id, source)
            result = ix.put(doc, create=op == "create")
        except _DocError as exc:
            if "version conflict" in exc.reason:
                raise ApiError(
                    409,
                    "version_conflict_engine_exception",
                    exc.reason,
                    extra={"index_uuid": ix.uuid, "shard": "0", "index": ix.name},
                ) from None
            if exc.field_name == "strict_dynamic_mapping_exception":
                raise ApiError(400, exc.field_name, exc.reason) from None
            parse_type = (
                "document_parsing_exception"
                if self._is_es and self.version_tuple >= (8, 8, 0)
                else "mapper_parsing_exception"
            )
            inner = {"type": "illegal_argument_exception", "reason": exc.reason}
            raise ApiError(
                400,
                parse_type,
                f"[1:1] failed to parse: {exc.reason}",
                caused_by=inner,
            ) from None
        return {
            "_version": doc.version,
            "result": result,
            "_shards": shards,
            "_seq_no": ix.seq_no - 1,
            "_primary_term": 1,
            "status": 201 if result == "created" else 200,
        }

    # -- point in time and scroll contexts --------------------------------------------------

    def _new_context_id(self, kind: str) -> str:
        with self._lock:
            self._context_seq += 1
            seq = self._context_seq
        raw = f"{kind}:{seq}:{uuid.uuid4().hex}".encode()
        return base64.urlsafe_b64encode(raw).decode()

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            for cid in [c for c, ctx in self._contexts.items() if ctx.expires < now]:
                del self._contexts[cid]

    def _context(self, cid: Any, kind: str) -> _Context:
        if not isinstance(cid, str) or not cid:
            raise _bad_request(
                f"invalid id: [{cid}]" if kind == "pit" else "Cannot parse scroll id"
            )
        try:
            decoded = base64.urlsafe_b64decode(cid + "=" * (-len(cid) % 4)).decode()
            ckind, seq, _ = decoded.split(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise _bad_request(
                f"invalid id: [{cid}]" if kind == "pit" else "Cannot parse scroll id"
            ) from None
        if ckind != kind:
            raise _bad_request(
                f"invalid id: [{cid}]" if kind == "pit" else "Cannot parse scroll id"
            )
        self._expire()
        with self._lock:
            ctx = self._contexts.get(cid)
        if ctx is None:
            raise _context_missing(seq)
        return ctx

    def _open_pit(
        self, expression: str, query: Mapping[str, str]
    ) -> tuple[int, bytes, list[tuple[str, str]]]:
        if "keep_alive" not in query:
            raise _validation(
                "[keep_alive] is not specified" if self._is_es else "keep alive not specified"
            )
        keep_alive = _parse_time_ms(query["keep_alive"], "keep_alive")
        shards = [
            (ix, docs)
            for ix in map(self._index, self._resolve(expression))
            for docs in ix.snapshot()
        ]
        cid = self._new_context_id("pit")
        ctx = _Context("pit", {cid}, shards, keep_alive, time.monotonic() + keep_alive / 1000)
        with self._lock:
            self._contexts[cid] = ctx
        out: dict[str, Any] = {
            "id" if self._is_es else "pit_id": cid,
            "_shards": self._shards_json(len(shards)),
        }
        if not self._is_es:
            out["creation_time"] = ctx.created_ms
        return 200, _dumps(out), []

    def _forget(self, ctx: _Context) -> None:
        with self._lock:
            for cid in ctx.ids:
                self._contexts.pop(cid, None)

    def _close_pit(self, body: bytes) -> tuple[int, bytes, list[tuple[str, str]]]:
        req = _loads(body) if body.strip() else {}
        if "id" not in req:
            raise _validation("id is required")
        try:
            ctx = self._context(req["id"], "pit")
        except ApiError as exc:
            if exc.status != 404:
                raise
            return 404, _dumps({"succeeded": True, "num_freed": 0}), []
        self._forget(ctx)
        return 200, _dumps({"succeeded": True, "num_freed": len(ctx.shards)}), []

    def _delete_pits(self, body: bytes | None) -> tuple[int, bytes, list[tuple[str, str]]]:
        if body is None:
            with self._lock:
                contexts = {id(c): (cid, c) for cid, c in self._contexts.items() if c.kind == "pit"}
            results = []
            for cid, ctx in contexts.values():
                self._forget(ctx)
                results.append({"successful": True, "pit_id": cid})
            return 200, _dumps({"pits": results}), []
        req = _loads(body) if body.strip() else {}
        pit_ids = req.get("pit_id")
        if pit_ids is None:
            raise _validation("no pit ids specified")
        results = []
        for pid in _as_list(pit_ids):
            try:
                ctx = self._context(pid, "pit")
            except ApiError:
                results.append({"successful": False, "pit_id": pid})
                continue
            self._forget(ctx)
            results.append({"successful": True, "pit_id": pid})
        return 200, _dumps({"pits": results}), []

    def _list_pits(self) -> bytes:
        self._expire()
        with self._lock:
            pits = [(cid, c) for cid, c in self._contexts.items() if c.kind == "pit"]
        return _dumps(
            {
                "pits": [
                    {"pit_id": cid, "creation_time": c.created_ms, "keep_alive": c.keep_alive_ms}
                    for cid, c in pits
                ]
            }
        )

    def _clear_scroll(
        self, path_ids: str | None, body: bytes
    ) -> tuple[int, bytes, list[tuple[str, str]]]:
        req = _loads(body) if body.strip() else {}
        ids = _as_list(req.get("scroll_id")) if req else []
        if path_ids:
            ids += path_ids.split(",")
        if not ids:
            raise _validation("no scroll ids specified")
        freed = 0
        for sid in ids:
            if sid == "_all":
                with self._lock:
                    scrolls = {id(c): c for c in self._contexts.values() if c.kind == "scroll"}
                for ctx in scrolls.values():
                    self._forget(ctx)
                    freed += len(ctx.shards)
                continue
            try:
                ctx = self._context(sid, "scroll")
            except ApiError as exc:
                if exc.status != 404:
                    raise
                continue
            self._forget(ctx)
            freed += len(ctx.shards)
        return (200 if freed else 404), _dumps({"succeeded": True, "num_freed": freed}), []

    # -- search -----------------------------------------------------------------------------

    _SEARCH_KEYS = frozenset(
        {
            "query",
            "size",
            "from",
            "sort",
            "search_after",
            "pit",
            "slice",
            "_source",
            "fields",
            "track_total_hits",
            "timeout",
            "version",
            "seq_no_primary_term",
            "stored_fields",
            "track_scores",
            "explain",
        }
    )

    def _search(
        self,
        expression: str | None,
        method: str,
        body: bytes,
        query: Mapping[str, str],
        headers: Any,
    ) -> tuple[int, bytes, list[tuple[str, str]]]:
        started = time.perf_counter()
        req = _loads(body) if body.strip() else {}
        if not isinstance(req, dict):
            raise ApiError(
                400, "parsing_exception", "Expected [START_OBJECT] but found [START_ARRAY]"
            )
        for key in req:
            if key in _UNSUPPORTED_SEARCH_KEYS:
                raise _bad_request(
                    f"[{key}] is not supported by the test server (search_server.py)"
                )
            if key not in self._SEARCH_KEYS:
                raise ApiError(
                    400,
                    "parsing_exception",
                    f"Unknown key for a {_token(req[key])} in [{key}].",
                    extra={"line": 1, "col": 1},
                )
        for param in ("size", "from"):
            if param in query:
                req[param] = int(query[param])
        if "track_total_hits" in query:
            value = query["track_total_hits"]
            req["track_total_hits"] = value == "true" if value in ("true", "false") else int(value)
        scroll_ms = _parse_time_ms(query["scroll"], "scroll") if "scroll" in query else None
        pit = req.get("pit")
        problems = []
        if pit is not None:
            if scroll_ms is not None:
                problems.append("using [point in time] is not allowed in a scroll context")
            if expression is not None:
                problems.append(
                    "[indices] cannot be used with point in time. Do not specify any index with "
                    "point in time."
                    if self._is_es
                    else "[indices] cannot be used with point in time"
                )
        if scroll_ms is not None:
            if req.get("from", 0) > 0:
                problems.append("using [from] is not allowed in a scroll context")
            if req.get("track_total_hits") is False:
                problems.append("disabling [track_total_hits] is not allowed in a scroll context")
            if req.get("search_after") is not None:
                problems.append("`search_after` cannot be used in a scroll context.")
        if problems:
            raise _validation(*problems)
        source_spec = self._parse_source(req.get("_source"), query)
        size = req.get("size", 10)
        from_ = req.get("from", 0)
        if not isinstance(size, int) or size < 0:
            raise _bad_request(f"[size] parameter cannot be negative, found [{size}]")
        if req.get("search_after") is not None and from_ not in (0, -1):
            raise _bad_request("[from] parameter must be set to 0 when [search_after] is used")
        if from_ + size > MAX_RESULT_WINDOW:
            inner = {
                "type": "illegal_argument_exception",
                "reason": f"Result window is too large, from + size must be less than or equal "
                f"to: [{MAX_RESULT_WINDOW}] but was [{from_ + size}]. See the scroll api for a "
                "more efficient way to request large data sets. This limit can be set by "
                "changing the [index.max_result_window] index level setting.",
            }
            raise _shard_failure(400, inner, expression or "")

        ctx: _Context | None = None
        if pit is not None:
            if not isinstance(pit, Mapping) or "id" not in pit:
                raise ApiError(400, "parsing_exception", "[pit] failed to parse field [id]")
            ctx = self._context(pit["id"], "pit")
            keep = _parse_time_ms(pit["keep_alive"], "keep_alive") if "keep_alive" in pit else None
            ctx.touch(keep)
            shards = ctx.shards
        else:
            shards = [
                (ix, docs)
                for ix in map(self._index, self._resolve(expression or "*"))
                for docs in ix.snapshot()
            ]
        index_label = shards[0][0].name if shards else (expression or "")
        warnings: list[tuple[str, str]] = []
        sorts = self._parse_sort(
            req.get("sort"), shards, pit is not None, scroll_ms is not None, index_label, warnings
        )
        after = req.get("search_after")
        if (
            pit is not None
            and self._is_es
            and sorts
            and sorts[-1].kind != "_shard_doc"
            and (after is None or len(after) == len(sorts) + 1)
        ):
            sorts.append(
                _SortField("_shard_doc", False, False, "_shard_doc")
            )  # SearchRequest.rewrite
        plan = self._plan(ctx, shards, req, sorts, scroll_ms is not None, index_label)
        start = 0
        if after is not None:
            if not sorts:
                raise _shard_failure(
                    400,
                    {
                        "type": "illegal_argument_exception",
                        "reason": "Sort must contain at least one field.",
                    },
                    index_label,
                )
            if not isinstance(after, list) or len(after) != len(sorts):
                n_after = len(after) if isinstance(after, list) else 1
                raise _shard_failure(
                    400,
                    {
                        "type": "illegal_argument_exception",
                        "reason": f"search_after has {n_after} value(s) but sort has {len(sorts)}.",
                    },
                    index_label,
                )
            key = tuple(
                _key_part(sf, _coerce_after(sf, v)) for sf, v in zip(sorts, after, strict=True)
            )
            start = bisect.bisect_right(plan.keys, key)
        else:
            start = max(from_, 0)
        page = plan.entries[start : start + size]
        total = len(plan.entries)
        extra_head = b""
        if ctx is not None:
            pit_id = next(iter(ctx.ids))
            if self.rotate_pit_ids:
                pit_id = self._new_context_id("pit")
                with self._lock:
                    self._contexts[pit_id] = ctx
                    ctx.ids.add(pit_id)
            extra_head = b'"pit_id":' + _dumps(pit_id) + b","
        if scroll_ms is not None:
            sid = self._new_context_id("scroll")
            sctx = _Context(
                "scroll",
                {sid},
                shards,
                scroll_ms,
                time.monotonic() + scroll_ms / 1000,
                plan=plan,
                position=len(page),
                size=size,
            )
            sctx.request = {"sorts": sorts, "source": source_spec, "fields": req.get("fields")}
            with self._lock:
                self._contexts[sid] = sctx
            extra_head = b'"_scroll_id":' + _dumps(sid) + b","
            track: Any = True
        else:
            track = req.get("track_total_hits", DEFAULT_TRACK_TOTAL_HITS)
        body_out = self._hits_answer(
            extra_head,
            page,
            total,
            track,
            sorts,
            source_spec,
            req.get("fields"),
            shards,
            query.get("rest_total_hits_as_int") == "true",
            started,
        )
        return 200, body_out, warnings

    def _scroll(
        self, path_id: str | None, body: bytes, query: Mapping[str, str]
    ) -> tuple[int, bytes, list[tuple[str, str]]]:
        started = time.perf_counter()
        req = _loads(body) if body.strip() else {}
        sid = req.get("scroll_id", query.get("scroll_id", path_id))
        if sid is None:
            raise _validation("scrollId is missing")
        keep = req.get("scroll", query.get("scroll"))
        keep_ms = _parse_time_ms(keep, "scroll") if keep is not None else None
        ctx = self._context(sid, "scroll")
        with ctx.lock:
            assert ctx.plan is not None
            page = ctx.plan.entries[ctx.position : ctx.position + ctx.size]
            ctx.position += len(page)
        if keep_ms is None:
            self._forget(ctx)  # "If a scroll request doesn't pass in the scroll parameter, then
            # the search context will be freed as part of that scroll request."
        else:
            ctx.touch(keep_ms)
        head = b'"_scroll_id":' + _dumps(sid) + b","
        out = self._hits_answer(
            head,
            page,
            len(ctx.plan.entries),
            True,
            ctx.request["sorts"],
            ctx.request["source"],
            ctx.request["fields"],
            ctx.shards,
            query.get("rest_total_hits_as_int") == "true",
            started,
        )
        return 200, out, []

    def _parse_source(self, spec: Any, query: Mapping[str, str]) -> _SourceSpec:
        out = _SourceSpec()
        if "_source" in query:
            value = query["_source"]
            if value in ("false", "true"):
                spec = value == "true"
            else:
                spec = value.split(",")
        if spec is None:
            pass
        elif isinstance(spec, bool):
            out.enabled = spec
        elif isinstance(spec, str):
            out.includes = (spec,)
        elif isinstance(spec, list):
            out.includes = tuple(map(str, spec))
        elif isinstance(spec, Mapping):
            for key, value in spec.items():
                if key in ("includes", "include"):
                    out.includes = tuple(_as_list(value))
                elif key in ("excludes", "exclude"):
                    out.excludes = tuple(_as_list(value))
                elif key == "exclude_vectors" and self._knows_exclude_vectors():
                    if not isinstance(value, bool):
                        raise ApiError(
                            400,
                            "parsing_exception",
                            f"[exclude_vectors] must be a boolean, got [{value}]",
                        )
                    out.exclude_vectors = value
                else:
                    raise ApiError(
                        400,
                        "parsing_exception",
                        f"Unknown key for a {_token(value)} in [{key}].",
                        extra={"line": 1, "col": 1},
                    )
        if "_source_includes" in query:
            out.includes = tuple(query["_source_includes"].split(","))
        if "_source_excludes" in query:
            out.excludes = tuple(query["_source_excludes"].split(","))
        if "_source_exclude_vectors" in query and self._knows_exclude_vectors():
            out.exclude_vectors = query["_source_exclude_vectors"] != "false"
        return out

    def _parse_sort(
        self,
        spec: Any,
        shards: Sequence[tuple[_Index, tuple[_Doc, ...]]],
        with_pit: bool,
        scroll: bool,
        index_label: str,
        warnings: list[tuple[str, str]],
    ) -> list[_SortField]:
        items: list[Any] = _as_list(spec)
        out: list[_SortField] = []
        mappings = {ix.name: ix.mapping for ix, _ in shards}
        for item in items:
            if isinstance(item, str):
                name, opts = item, {}
            elif isinstance(item, Mapping) and len(item) == 1:
                ((name, opts),) = item.items()
                if isinstance(opts, str):
                    opts = {"order": opts}
            else:
                raise ApiError(400, "parsing_exception", "malformed sort format")
            order = str(opts.get("order", "desc" if name == "_score" else "asc")).lower()
            if order not in ("asc", "desc"):
                raise ApiError(400, "parsing_exception", f"[field_sort] Unknown order [{order}]")
            missing_first = opts.get("missing") == "_first"
            desc = order == "desc"
            if name == "_shard_doc":
                if not self._is_es:
                    if self.version_tuple < (3, 3, 0):
                        raise _shard_failure(
                            400,
                            {
                                "type": "query_shard_exception",
                                "reason": "No mapping found for [_shard_doc] in order to sort on",
                                "index": index_label,
                            },
                            index_label,
                        )
                    if scroll:
                        raise _validation(
                            "_shard_doc cannot be used with scroll. Use PIT + search_after instead."
                        )
                if not with_pit:
                    if self._is_es:
                        raise _shard_failure(
                            400,
                            {
                                "type": "illegal_argument_exception",
                                "reason": "[_shard_doc] sort field cannot be used without [point in time]",
                            },
                            index_label,
                        )
                    raise _validation(
                        "_shard_doc is only supported with point-in-time (PIT). Add a PIT or remove _shard_doc."
                    )
                kind = "_shard_doc"
            elif name in ("_doc", "_score", "_seq_no"):
                kind = name  # _seq_no: a long with doc values (SeqNoFieldType.fielddataBuilder)
            elif name == "_id":
                if self._is_es:
                    raise _shard_failure(
                        400,
                        {
                            "type": "illegal_argument_exception",
                            "reason": "Fielddata access on the _id field is disallowed, you can "
                            "re-enable it by updating the dynamic cluster setting: "
                            "indices.id_field_data.enabled",
                        },
                        index_label,
                    )
                warnings.append(
                    (
                        "Warning",
                        f'299 OpenSearch-{self.version}-{"0" * 7} "{ID_FIELDDATA_DEPRECATION}"',
                    )
                )
                kind = "_id"
            else:
                types = {m.types.get(name) for m in mappings.values()} - {None}
                ftype = next(iter(types), None)
                if ftype is None:
                    unmapped = opts.get("unmapped_type")
                    if unmapped is None:
                        raise _shard_failure(
                            400,
                            {
                                "type": "query_shard_exception",
                                "reason": f"No mapping found for [{name}] in order to sort on",
                                "index": index_label,
                            },
                            index_label,
                        )
                    ftype = unmapped
                kind = _sort_kind(ftype)
                if kind == "text":
                    raise _shard_failure(
                        400,
                        {
                            "type": "illegal_argument_exception",
                            "reason": f"Fielddata is disabled on [{name}] in [{index_label}]. Text "
                            "fields are not optimised for operations that require per-document "
                            "field data like aggregations and sorting, so these operations are "
                            "disabled by default. Please use a keyword field instead. "
                            f"Alternatively, set fielddata=true on [{name}] in order to load field "
                            "data by uninverting the inverted index. Note that this can use "
                            "significant memory.",
                        },
                        index_label,
                    )
                if kind == "unsupported":
                    raise _shard_failure(
                        400,
                        {
                            "type": "illegal_argument_exception",
                            "reason": f"Field [{name}] of type [{ftype}] does not support sorting",
                        },
                        index_label,
                    )
            out.append(_SortField(name, desc, missing_first, kind))
        return out

    def _plan(
        self,
        ctx: _Context | None,
        shards: Sequence[tuple[_Index, tuple[_Doc, ...]]],
        req: Mapping[str, Any],
        sorts: Sequence[_SortField],
        scroll: bool,
        index_label: str,
    ) -> _Plan:
        """The matching documents in sort order; cached per PIT (and per index generation)."""
        cache_key = json.dumps(
            [
                req.get("query"),
                req.get("slice"),
                [(s.name, s.desc, s.missing_first) for s in sorts],
                scroll,
            ],
            sort_keys=True,
            default=str,
        )
        cache = ctx.plans if ctx is not None else None
        if cache is None and len(shards) and all(ix is shards[0][0] for ix, _ in shards):
            ix = shards[0][0]
            cache = ix.cache
            cache_key = f"{ix.generation}:{cache_key}"
            if len(cache) > 64:
                cache.clear()
        if cache is not None and cache_key in cache:
            return cache[cache_key]  # type: ignore[no-any-return]
        predicate = _compile_query(req.get("query"))
        selectors = self._slice(
            req.get("slice"), shards, ctx is not None and not scroll, index_label
        )
        fast = _seq_no_plan(shards, req.get("query"), sorts, selectors)
        if fast is not None:
            if cache is not None:
                cache[cache_key] = fast
            return fast
        rows: list[tuple[tuple[Any, ...], int, int, _Doc]] = []
        for si, (_ix, docs) in enumerate(shards):
            select = selectors[si]
            if select is False:
                continue
            for pos, doc in enumerate(docs):
                if select is not True and not select(doc, pos, len(docs)):
                    continue
                if predicate is not None and not predicate(doc):
                    continue
                key = tuple(_key_part(sf, _sort_value(sf, doc, si, pos)) for sf in sorts)
                rows.append((key, si, pos, doc))
        if sorts:
            rows.sort(key=lambda r: (r[0], r[1], r[2]))
        plan = _Plan([r[0] for r in rows], [(r[3], r[1], r[2]) for r in rows])
        if cache is not None:
            cache[cache_key] = plan
        return plan

    def _slice(
        self,
        spec: Any,
        shards: Sequence[tuple[_Index, tuple[_Doc, ...]]],
        pit: bool,
        index_label: str,
    ) -> list[Any]:
        """Per shard: True (all documents), False (none) or a predicate (doc, pos, n)."""
        if spec is None:
            return [True] * len(shards)
        if not isinstance(spec, Mapping):
            raise ApiError(400, "parsing_exception", "[slice] failed to parse")
        sid, smax, sfield = spec.get("id", -1), spec.get("max", -1), spec.get("field")
        if not isinstance(sid, int) or sid < 0:
            raise _bad_request("id must be greater than or equal to 0")
        if not isinstance(smax, int) or smax <= 1:
            raise _bad_request("max must be greater than 1")
        if sid >= smax:
            raise _bad_request("max must be greater than id")
        if sfield == "_id" and pit and self._is_es:
            raise _bad_request("cannot slice on [_id] when using [point-in-time]")
        num_shards = len(shards)

        def inner(slice_id: int, slice_max: int) -> Any:
            if sfield not in (None, "_id"):

                def by_value(doc: _Doc, pos: int, n: int) -> bool:
                    vals = _field_values(doc.values, sfield)
                    if not vals:
                        return False
                    return zlib.crc32(str(int(vals[0])).encode()) % slice_max == slice_id

                return by_value
            if pit and self._is_es and sfield is None:  # DocIdSliceQuery: contiguous doc ids

                def by_range(doc: _Doc, pos: int, n: int) -> bool:
                    quotient, remainder = divmod(n, slice_max)
                    if slice_id < remainder:
                        start, length = (quotient + 1) * slice_id, quotient + 1
                    else:
                        start = remainder * (quotient + 1) + (slice_id - remainder) * quotient
                        length = quotient
                    return start <= pos < start + length

                return by_range
            return lambda doc, pos, n: zlib.crc32(doc.id.encode()) % slice_max == slice_id

        out: list[Any] = []
        for shard_index in range(num_shards):  # SliceBuilder.toFilter
            if num_shards == 1:
                out.append(inner(sid, smax))
            elif smax >= num_shards:
                target_shard = sid % num_shards
                if target_shard != shard_index:
                    out.append(False)
                    continue
                in_shard = smax // num_shards + (1 if smax % num_shards > target_shard else 0)
                out.append(True if in_shard == 1 else inner(sid // num_shards, in_shard))
            else:
                out.append(shard_index % smax == sid)
        return out

    def _source_bytes(self, ix: _Index, doc: _Doc, spec: _SourceSpec) -> bytes | None:
        if not spec.enabled:
            return None
        exclude = (
            spec.exclude_vectors if spec.exclude_vectors is not None else ix.exclude_source_vectors
        )
        if (
            exclude
            and spec.includes
            and doc.vectors
            and any(_match_source(v, spec.includes) for v in doc.vectors)
        ):
            exclude = False  # a vector field included by name comes back
        base = doc.novec if exclude else doc.full
        if not spec.includes and not spec.excludes:
            return base
        return _dumps(_filter_source(_loads(base), spec.includes, spec.excludes))

    def _fields_json(self, ix: _Index, doc: _Doc, patterns: Any) -> bytes | None:
        names = []
        for p in _as_list(patterns):
            names.append(p["field"] if isinstance(p, Mapping) else str(p))
        if not names:
            return None
        full = _loads(doc.full)
        out: dict[str, Any] = {}
        vector_names = {vf.name: vf for vf in ix.mapping.vectors}
        for fname in sorted(set(ix.mapping.types) | set(vector_names)):
            if not any(fnmatch.fnmatchcase(fname, n) for n in names):
                continue
            values = list(_walk_values(full, tuple(fname.split("."))))
            values = [v for v in values if v is not None]
            if not values:
                continue
            if fname in vector_names:  # fields read vectors from the index, never verbatim
                vf = vector_names[fname]
                stored = (
                    values
                    if ix.exclude_source_vectors
                    else [_encode_vector(v, vf, rehydrate=True) for v in values]
                )
                if vf.kind == "dense_vector":
                    out[fname] = _plain(np.asarray(stored[0]))
                elif vf.kind == "sparse_vector":
                    out[fname] = [dict(v) for v in stored]
                else:
                    out[fname] = _plain(stored[0])
            else:
                flat: list[Any] = []
                for v in values:
                    flat.extend(v if isinstance(v, list) else [v])
                out[fname] = flat
        return _dumps(out)

    def _hits_answer(
        self,
        head: bytes,
        page: Sequence[tuple[_Doc, int, int]],
        total: int,
        track: Any,
        sorts: Sequence[_SortField],
        source_spec: _SourceSpec,
        fields: Any,
        shards: Sequence[tuple[_Index, tuple[_Doc, ...]]],
        total_as_int: bool,
        started: float,
    ) -> bytes:
        parts: list[bytes] = [b"{", head]
        parts.append(
            b'"took":%d,"timed_out":false,"_shards":' % int((time.perf_counter() - started) * 1000)
        )
        parts.append(_dumps(self._shards_json(len(shards))))
        parts.append(b',"hits":{')
        if track is not False:
            if track is True:
                value, relation = total, "eq"
            else:
                limit = int(track)
                value, relation = (total, "eq") if total <= limit else (limit, "gte")
            if total_as_int:
                parts.append(b'"total":%d,' % value)
            else:
                parts.append(b'"total":' + _dumps({"value": value, "relation": relation}) + b",")
        scored = not sorts or any(s.kind == "_score" for s in sorts)
        parts.append(b'"max_score":' + (b"1.0" if scored and page else b"null") + b',"hits":[')
        score = b',"_score":1.0' if scored else b',"_score":null'
        for i, (doc, si, pos) in enumerate(page):
            if i:
                parts.append(b",")
            parts.append(doc.head)
            parts.append(score)
            ix = shards[si][0]
            source = self._source_bytes(ix, doc, source_spec)
            if source is not None:
                parts.append(b',"_source":')
                parts.append(source)
            if fields:
                fjson = self._fields_json(ix, doc, fields)
                if fjson and fjson != b"{}":
                    parts.append(b',"fields":' + fjson)
            if sorts:
                parts.append(b',"sort":')
                parts.append(_dumps([_sort_value(sf, doc, si, pos) for sf in sorts]))
            parts.append(b"}")
        parts.append(b"]}}")
        return b"".join(parts)


def _seq_no_plan(
    shards: Sequence[tuple[_Index, tuple[_Doc, ...]]],
    query: Any,
    sorts: Sequence[_SortField],
    selectors: Sequence[Any],
) -> _Plan | None:
    """The plan of a search of one whole shard sorted by ``_seq_no`` (with Elasticsearch's
    ``_shard_doc`` tiebreaker, and a ``range`` on ``_seq_no`` at most), by bisection: a
    shard keeps its documents in the order they were indexed, which is ``_seq_no``'s (an
    update moves a document to the end, with a new one). The general plan filters and
    sorts every document of every shard in Python, for each range of each chain; this
    answers what it would, in time proportional to the range (exporters read that way).
    None: not such a search."""
    if not sorts or sorts[0].kind != "_seq_no" or sorts[0].desc:
        return None
    if len(sorts) > 2 or (len(sorts) == 2 and sorts[1].kind != "_shard_doc"):
        return None
    if len(sorts) == 2 and sorts[1].desc:
        return None
    lo, hi = 0, None
    if query is not None:
        if not isinstance(query, Mapping) or list(query) != ["range"]:
            return None
        ranges = query["range"]
        if not isinstance(ranges, Mapping) or list(ranges) != ["_seq_no"]:
            return None
        bounds = ranges["_seq_no"]
        if not isinstance(bounds, Mapping) or set(bounds) - {"gte", "gt", "lt", "lte"}:
            return None
        try:
            if "gte" in bounds:
                lo = max(lo, int(bounds["gte"]))
            if "gt" in bounds:
                lo = max(lo, int(bounds["gt"]) + 1)
            if "lt" in bounds:
                hi = int(bounds["lt"])
            if "lte" in bounds:
                hi = int(bounds["lte"]) + 1 if hi is None else min(hi, int(bounds["lte"]) + 1)
        except (TypeError, ValueError):
            return None
    chosen = [si for si, select in enumerate(selectors) if select is not False]
    if len(chosen) != 1 or selectors[chosen[0]] is not True:
        return None
    si = chosen[0]
    docs = shards[si][1]
    seqs = [doc.seq_no for doc in docs]
    if seqs != sorted(seqs):
        return None  # not in _seq_no order: the general plan
    start = bisect.bisect_left(seqs, lo)
    stop = len(seqs) if hi is None else max(start, bisect.bisect_left(seqs, hi))
    entries = [(docs[pos], si, pos) for pos in range(start, stop)]
    keys = [
        tuple(_key_part(sf, _sort_value(sf, doc, si, pos)) for sf in sorts)
        for doc, si, pos in entries
    ]
    return _Plan(keys, entries)


# Real search options this server does not implement: refused by name, not as unknown keys.
_UNSUPPORTED_SEARCH_KEYS = frozenset(
    {
        "aggs",
        "aggregations",
        "knn",
        "rank",
        "retriever",
        "highlight",
        "rescore",
        "collapse",
        "post_filter",
        "docvalue_fields",
        "script_fields",
        "runtime_mappings",
        "min_score",
        "suggest",
        "profile",
        "indices_boost",
        "terminate_after",
        "stats",
        "ext",
    }
)


def _sort_kind(ftype: str) -> str:
    if ftype in ("keyword", "constant_keyword", "wildcard", "ip", "version"):
        return "keyword"
    if ftype in _INT_TYPES:
        return "int"
    if ftype in _FLOAT_TYPES:
        return "float"
    if ftype in ("date", "date_nanos"):
        return "date"
    if ftype == "boolean":
        return "bool"
    if ftype in ("text", "match_only_text"):
        return "text"
    return "unsupported"


def _token(value: Any) -> str:
    if isinstance(value, bool):
        return "VALUE_BOOLEAN"
    if isinstance(value, (int, float)):
        return "VALUE_NUMBER"
    if isinstance(value, str):
        return "VALUE_STRING"
    if isinstance(value, list):
        return "START_ARRAY"
    if value is None:
        return "VALUE_NULL"
    return "START_OBJECT"


def _compat_version(header: str | None) -> int | None:
    if not header:
        return None
    match = re.search(r"compatible-with\s*=\s*(\d+)", header)
    return int(match.group(1)) if match else None


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys as nested objects (settings without ``flat_settings``)."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


def _flatten_settings(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in settings.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten_settings(value, full + "."))
        else:
            out[full if full.startswith("index.") else f"index.{full}"] = value
    return out


def _endpoint_for(method: str, parts: list[str], query: Mapping[str, str]) -> str:
    n = len(parts)
    if n == 0:
        return "info"
    head = parts[0]
    last = parts[-1]
    if "_bulk" in parts:
        return "bulk"
    if head == "_search" and n >= 2 and parts[1] == "scroll":
        return "clear_scroll" if method == "DELETE" else "scroll"
    if head == "_search" and n >= 2 and parts[1] == "point_in_time":
        return "close_pit"
    if head == "_pit":
        return "close_pit"
    if "point_in_time" in parts or last == "_pit":
        return "open_pit"
    if last == "_search":
        return "search"
    if last == "_count":
        return "count"
    if last == "_mapping":
        return "mapping"
    if head == "_cat":
        return "cat_indices"
    if last in ("_alias", "_aliases"):
        return "alias"
    if last == "_refresh":
        return "refresh"
    if n in (2, 3) and parts[1] in ("_doc", "_create"):
        return "get_doc" if method in ("GET", "HEAD") else "index_doc"
    if n == 1 and not head.startswith("_"):
        return {"HEAD": "index_exists", "PUT": "create_index", "DELETE": "delete_index"}.get(
            method, "get_index"
        )
    if last == "_settings":
        return "get_index"
    return "other"


def _indices_for(parts: list[str]) -> list[str]:
    if parts and not parts[0].startswith("_"):
        return parts[0].split(",")
    return []


class _HTTPServer(Server):
    owner: SearchServer


class _Handler(Handler):
    server: _HTTPServer
    _accounted: bool = True
    _endpoint: str = "other"
    _method: str = "GET"
    _path: str = "/"

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        extra: Sequence[tuple[str, str]] = (),
    ) -> None:
        owner = self.server.owner
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body) if self._method != 'HEAD' else 0}",
        ]
        if owner._is_es:
            head.append("X-Elastic-Product: Elasticsearch")
        head.extend(f"{k}: {v}" for k, v in extra)
        if self.close_connection:
            head.append("Connection: close")
        head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        self._account(status)  # before the client can see the answer: no race with the test
        if self._method == "HEAD":
            self.wfile.write(head_bytes)
        elif len(body) < 65536:
            self.wfile.write(head_bytes + body)
        else:  # no extra copy of a large page
            self.wfile.write(head_bytes)
            self.wfile.write(body)

    def _account(self, status: int) -> None:
        if not self._accounted:
            self._accounted = True
            self.server.owner._leave(self._endpoint, self._method, self._path, status)

    def _handle(self, method: str) -> None:
        owner = self.server.owner
        split = urlsplit(self.path)
        parts = [unquote(p) for p in split.path.strip("/").split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        self._method = method
        self._path = split.path
        endpoint = self._endpoint = _endpoint_for(method, parts, query)
        self._accounted = False
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        owner._enter(endpoint)
        accept = self.headers.get("Accept")
        if accept:
            with owner._lock:
                owner.accept_headers.add(accept)
        try:
            if owner.latency > 0:
                owner._stop.wait(owner.latency)  # no lock held: concurrent requests overlap
            try:
                # The media type is parsed while the request is built, before security runs.
                owner._check_media_types(self.headers, bool(body))
                owner._authenticate(self.headers, self.path)
            except ApiError as exc:
                self._send_error(exc)
                return
            rule = owner._take_rule(endpoint, _indices_for(parts))
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
                    owner._stop.wait(rule.seconds)
                else:
                    self._send_error(owner._fault_error(rule))
                    return
            try:
                status, payload, extra = owner._route(method, parts, query, body, self.headers)
            except ApiError as exc:
                self._send_error(exc)
                return
            ctype = owner._json_type(accept)
            if endpoint == "cat_indices" and query.get("format") != "json":
                ctype = "text/plain; charset=UTF-8"
            self._send(status, payload, ctype, extra)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # pragma: no cover - a server bug: answer 500 and keep going
            try:
                self._send_error(ApiError(500, "exception", f"test server error: {exc!r}"))
            except OSError:
                self.close_connection = True
        finally:
            self._account(0)

    def _send_error(self, exc: ApiError) -> None:
        owner = self.server.owner
        ctype = exc.content_type or owner._json_type(self.headers.get("Accept"))
        self._send(exc.status, exc.body(), ctype, exc.headers)


# ---------------------------------------------------------------------------------------------
# Running as a process


def _main(argv: Sequence[str] | None = None) -> None:
    """Run a server in its own process (keeps it off the client's GIL in benchmarks).

    Example::

        python tests/search_server.py --flavor elasticsearch --port 0 --latency 0.05 \\
            --index docs --records 100000 --dim 1024 --api-key secret

    Seeds ``--records`` documents ``{"n": i, "group": "g<i % 10>", "embedding": [...]}`` with
    ids ``doc-0000000``... and vectors ``numpy.random.default_rng(SEED).standard_normal(
    (RECORDS, DIM), dtype=numpy.float32)`` drawn in chunks of 10,000 rows (the same values as one draw of the
    whole matrix), so a client can regenerate the data.  ``embedding`` is a dense_vector (Elasticsearch) or a
    knn_vector in an ``index.knn`` index (OpenSearch).  ``--also NAME:N`` (repeatable) adds
    an index holding the first N of those documents; ``--no-group`` leaves ``group`` out.
    Prints one JSON line ``{"url": ...}`` once ready, then serves until stdin closes.
    """
    import argparse
    import sys

    ap = argparse.ArgumentParser(
        description=_main.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--flavor", choices=FLAVORS, default="elasticsearch")
    ap.add_argument("--version", default=None, help="server version (default per flavor)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--index", default="docs")
    ap.add_argument("--records", type=int, default=0)
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--similarity",
        default="cosine",
        help="ES similarity (l2_norm, dot_product, cosine, max_inner_product)",
    )
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--api-key", default=None, help="the encoded API key clients must send")
    ap.add_argument("--basic-auth", default=None, help="USER:PASSWORD")
    ap.add_argument("--exclude-vectors", choices=("auto", "true", "false"), default="auto")
    ap.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="NAME:N",
        help="another index, of the first N documents (repeatable)",
    )
    ap.add_argument("--no-group", action="store_true", help='documents {"n": i} only')
    args = ap.parse_args(argv)
    server = SearchServer(
        args.flavor,
        args.version,
        api_key=args.api_key,
        basic_auth=tuple(args.basic_auth.split(":", 1)) if args.basic_auth else None,  # type: ignore[arg-type]
        exclude_vectors=None if args.exclude_vectors == "auto" else args.exclude_vectors == "true",
        port=args.port,
    )
    if args.flavor == "elasticsearch":
        vector = {"type": "dense_vector", "dims": args.dim, "similarity": args.similarity}
        settings: dict[str, Any] = {"number_of_shards": args.shards}
    else:
        space = {
            "cosine": "cosinesimil",
            "l2_norm": "l2",
            "dot_product": "innerproduct",
            "max_inner_product": "innerproduct",
        }.get(args.similarity, args.similarity)
        vector = {
            "type": "knn_vector",
            "dimension": args.dim,
            "method": {"name": "hnsw", "engine": "faiss", "space_type": space},
        }
        settings = {"number_of_shards": args.shards, "knn": True}
    mapping = {
        "properties": {"embedding": vector, "n": {"type": "long"}, "group": {"type": "keyword"}}
    }
    indexes = [(args.index, args.records)]
    for also in args.also:
        name, _, count = also.rpartition(":")
        indexes.append((name, int(count)))
    for name, _ in indexes:
        server.create_index(name, mapping, settings)
    rng = np.random.default_rng(args.seed)
    chunk = 10_000
    largest = max(count for _, count in indexes)
    for start in range(0, largest, chunk):
        stop = min(largest, start + chunk)
        matrix = rng.standard_normal((stop - start, args.dim), dtype=np.float32)
        for name, count in indexes:
            if start >= count:
                continue
            end = min(stop, count)
            server.seed(
                name,
                ids=[f"doc-{i:07d}" for i in range(start, end)],
                vectors=matrix[: end - start],
                fields=[
                    {"n": i} if args.no_group else {"n": i, "group": f"g{i % 10}"}
                    for i in range(start, end)
                ],
            )
    server.start()
    print(
        json.dumps(
            {
                "url": server.url,
                "flavor": server.flavor,
                "version": server.version,
                "index": args.index,
                "records": args.records,
                "indexes": dict(indexes),
                "dim": args.dim,
            }
        ),
        flush=True,
    )
    try:
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    _main()
