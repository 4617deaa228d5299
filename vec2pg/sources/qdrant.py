"""Qdrant: scroll a collection, in disjoint ranges of ids read at the same time, into records.

Point ids become text: an integer id ``42`` becomes ``'42'``, a UUID its canonical
lowercase hyphenated form. Qdrant has no namespaces, so the table has none either.

The offset Qdrant's scroll takes is a *point id* (where the page starts), never a count:
the original vec2pg advanced it as a count and skipped or repeated points whose ids were
not 0..N-1. A scroll's next offset comes from the page before, so one chain of scrolls
moves a page per round trip; a large collection is therefore split into ranges of ids
(:mod:`vec2pg.sources.qdrant_ranges`), each scrolled from its first id up to the next
range's, all at the same time.

A server is read over REST (:mod:`~vec2pg.sources.qdrant_rest`, the default) or gRPC
(:mod:`~vec2pg.sources.qdrant_grpc`, ``grpc=True``: binary vectors, decoded for a quarter
of REST's CPU, and a third of its bytes); a local storage (``path``) through
qdrant-client's local mode. qdrant-client describes the collection (configuration, exact
count) on all three.
"""

from __future__ import annotations

import os
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from vec2pg.errors import (
    ConfigError,
    RateLimited,
    SourceError,
    SourceNotFound,
    SourceUnavailable,
    SourceUnreachable,
)
from vec2pg.masking import mask_dsn
from vec2pg.records import (
    Cursor,
    Metric,
    Namespace,
    Record,
    SourceInfo,
    SparseVector,
    Vector,
    VectorField,
    VectorKind,
    as_array,
)
from vec2pg.sources.base import MAX_CONCURRENCY, WHOLE, Call, Page, Raw
from vec2pg.sources.http import names_hint, retry_after, status_error, unreachable
from vec2pg.sources.qdrant_ranges import (
    PROBE_IDS,
    PointId,
    Probe,
    cuts,
    key_point,
    point_key,
)
from vec2pg.sources.qdrant_rest import error_detail, text_id

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from qdrant_client import QdrantClient
    from qdrant_client.http import models

T = TypeVar("T")

_METRICS = {
    "Cosine": Metric.COSINE,
    "Dot": Metric.DOT,
    "Euclid": Metric.EUCLIDEAN,
    "Manhattan": Metric.MANHATTAN,
}

#: Points per scroll request. 256 points of 1024-dim float32 are about 2.5 MB of JSON
#: (1 MB over gRPC): large enough to amortise the round trip, small enough to keep
#: memory flat.
DEFAULT_PAGE_SIZE = 256
#: Points per scroll request when only ids are read (verification): an id is a few dozen
#: bytes of JSON, so 4,096 of them are ~150 kB, and a million points take 245 requests.
DEFAULT_IDS_PAGE_SIZE = 4096
#: Qdrant's REST and gRPC ports (a URL without a port means the REST one).
DEFAULT_PORT = 6333
DEFAULT_GRPC_PORT = 6334
#: Collections smaller than this are one chain: splitting costs more requests than it
#: saves. A chain holds at least this many pages.
SPLIT_MIN_RECORDS = 2_000
SPLIT_MIN_PAGES = 2
#: Probes in flight while splitting (each a scroll of 100 ids); the pipeline's throttle
#: halves that on every 429.
PROBE_CONCURRENCY = 64
#: A chain's partition key: ``range:<first id>:<next chain's first id>``, either empty at
#: the collection's ends. It means the same range in any run, on either transport.
_RANGE = "range:"

CREDENTIALS = "check --api-key or QDRANT_API_KEY"


class _Points(Protocol):
    """How points are read: scroll pages (with or without their vectors) and retrieve."""

    def scroll(
        self, offset: PointId | None, limit: int, upper: int | None
    ) -> tuple[Raw | list[Record], Any]: ...

    def scroll_ids(self, offset: PointId | None, limit: int) -> tuple[list[PointId], Any]: ...

    def retrieve(self, ids: Sequence[PointId]) -> list[Record]: ...

    def close(self) -> None: ...


def check_location(
    collection: str,
    *,
    url: str | None = None,
    path: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    grpc: bool = False,
    **_: Any,
) -> None:
    """ConfigError unless the options name exactly one Qdrant to read: a server (``url``)
    or a storage folder (``path``), and ``grpc`` only with a server. No I/O."""
    if (url is None) == (path is None):
        raise ConfigError(
            "name one Qdrant to read from: --url (or QDRANT_URL) for a server, "
            "or --path for a local Qdrant storage folder"
        )
    if page_size < 1:
        raise ConfigError(f"--page-size must be at least 1, not {page_size}")
    if grpc and path is not None:
        raise ConfigError("--grpc reads a server (--url); a local storage (--path) has none")


class QdrantSource:
    """Read every point of a Qdrant collection from a server (``url``, over REST, or gRPC
    with ``grpc=True``) or a storage folder (``path``)."""

    def __init__(
        self,
        collection: str,
        *,
        url: str | None = None,
        api_key: str | None = None,
        path: str | None = None,
        timeout: float = 30.0,
        page_size: int = DEFAULT_PAGE_SIZE,
        ids_page_size: int = DEFAULT_IDS_PAGE_SIZE,
        grpc: bool = False,
        grpc_port: int = DEFAULT_GRPC_PORT,
    ) -> None:
        check_location(collection, url=url, path=path, page_size=page_size, grpc=grpc)
        self.collection = collection
        self.page_size = page_size
        self.ids_page_size = max(1, ids_page_size)
        self.grpc = grpc
        # A URL may carry credentials (http://user:password@host): never print them.
        self.location = mask_dsn(url) if url is not None else os.path.abspath(path or "")
        self.where = f"Qdrant at {self.location}" + (f" (gRPC port {grpc_port})" if grpc else "")
        self._points: _Points
        if path is not None:
            self._client = self._open_local(path)
            self._points = _LocalPoints(self._client, collection, self._call)
            return
        assert url is not None
        base, host, tls = _endpoint(url, api_key)
        self._client = _remote_client(url, api_key, timeout, grpc, grpc_port)
        if grpc:
            from vec2pg.sources.qdrant_grpc import GrpcPoints

            self._points = GrpcPoints(
                f"{host}:{grpc_port}",
                collection,
                tls=tls,
                api_key=api_key,
                timeout=timeout,
                where=self.where,
                credentials=CREDENTIALS,
            )
        else:
            from vec2pg.sources.qdrant_rest import RestPoints

            self._points = RestPoints(
                base,
                collection,
                api_key=api_key,
                timeout=timeout,
                # Probes, then readers and loaders (two per unit of concurrency), in flight.
                connections=max(PROBE_CONCURRENCY, 2 * MAX_CONCURRENCY) + 4,
                where=self.where,
                credentials=CREDENTIALS,
            )

    def _open_local(self, path: str) -> QdrantClient:
        from qdrant_client import QdrantClient

        # Local mode silently creates an empty storage where there is none: check first.
        if not os.path.isfile(os.path.join(path, "meta.json")):
            raise SourceNotFound(f"no Qdrant local storage at {self.location} (no meta.json)")
        try:
            with warnings.catch_warnings():
                # Local mode warns above 20,000 points; the user asked for it.
                warnings.simplefilter("ignore", UserWarning)
                return QdrantClient(path=path)
        except RuntimeError as exc:  # the storage folder's lock is held
            raise SourceError(
                f"Qdrant storage {self.location} is in use by another process ({exc}); "
                "stop it or point --url at the server that owns it"
            ) from exc

    @property
    def _remote(self) -> bool:
        return not isinstance(self._points, _LocalPoints)

    def describe(self) -> SourceInfo:
        if not self._call(self._client.collection_exists, self.collection):
            raise self._not_found()
        config = self._call(self._client.get_collection, self.collection).config.params
        fields: list[VectorField] = []
        vectors = config.vectors
        if isinstance(vectors, dict):
            fields += [_dense_field(name, params) for name, params in vectors.items()]
        elif vectors is not None:
            fields.append(_dense_field("", vectors))
        fields += [
            # Qdrant scores sparse vectors by dot product.
            VectorField(name, VectorKind.SPARSE, None, Metric.DOT)
            for name in (config.sparse_vectors or {})
        ]
        count = self._call(self._client.count, self.collection, exact=True).count
        return SourceInfo(
            kind="qdrant",
            collection=self.collection,
            location=self.location,
            fields=tuple(fields),
            namespaces=(Namespace("", count),),
            namespaced=False,
            raw_pages=self._remote,
        )

    def _not_found(self) -> SourceNotFound:
        """The collection is missing: say which the source has, or the closest names."""
        message = f"Qdrant collection {self.collection!r} not found at {self.location}"
        try:
            names = [c.name for c in self._call(self._client.get_collections).collections]
        except SourceError:  # a key that may not list collections: say what we know
            return SourceNotFound(message)
        return SourceNotFound(f"{message}; {names_hint(self.collection, names, 'it has')}")

    def partitions(
        self, namespace: str, count: int | None, want: int, call: Call
    ) -> tuple[str, ...]:
        """Split a server's collection into up to ``want`` ranges of ids of about as many
        points each, found by probes (:func:`vec2pg.sources.qdrant_ranges.cuts`), each a
        scroll of 100 ids sent through ``call``. A local storage is one chain: local mode
        answers one request at a time."""
        if not self._remote or count is None or count < SPLIT_MIN_RECORDS or want < 2:
            return (WHOLE,)
        chains = min(want, count // (SPLIT_MIN_PAGES * self.page_size))
        if chains < 2:
            return (WHOLE,)
        with ThreadPoolExecutor(PROBE_CONCURRENCY, thread_name_prefix="vec2pg-probe") as pool:

            def probe_many(keys: Sequence[int]) -> list[Probe]:
                return list(pool.map(partial(call, self._probe), keys))

            found = cuts(count, chains, probe_many)
        if not found:
            return (WHOLE,)
        bounds: list[int | None] = [None, *found, None]
        return tuple(_range_key(lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False))

    def _probe(self, key: int) -> Probe:
        ids, next_offset = self._call(self._points.scroll_ids, key_point(key), PROBE_IDS)
        keys = [point_key(i) for i in ids]
        if next_offset is not None:
            keys.append(point_key(next_offset))
        return Probe(key, tuple(keys), next_offset is None)

    def page(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        offset, limit, upper = self._start(partition, cursor, self.page_size)
        answer, next_offset = self._call(self._points.scroll, offset, limit, upper)
        next_cursor = _next_cursor(next_offset, upper)
        if isinstance(answer, Raw):
            return Page(
                load=partial(answer.decode, answer.payload),
                next_cursor=next_cursor,
                size=limit,
                read=partial(_as_read, answer),
            )
        return Page(load=partial(list, answer), next_cursor=next_cursor, size=len(answer))

    def page_ids(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        """A page of point ids only: the scroll skips vectors and payloads."""
        offset, limit, upper = self._start(partition, cursor, self.ids_page_size)
        point_ids, next_offset = self._call(self._points.scroll_ids, offset, limit)
        if upper is not None:
            point_ids = [i for i in point_ids if point_key(i) < upper]
        ids = [text_id(i) for i in point_ids]
        return Page(
            load=partial(self.fetch, namespace, ids),
            next_cursor=_next_cursor(next_offset, upper),
            size=len(ids),
            ids=ids,
        )

    def _start(
        self, partition: str, cursor: Cursor, page_size: int
    ) -> tuple[PointId | None, int, int | None]:
        """Where a chain's page starts, how many points to ask for, and the chain's end."""
        lower, upper = _bounds(partition)
        if cursor is not None:
            offset: PointId | None = cursor
        else:
            offset = None if lower is None else key_point(lower)
        limit = page_size
        if upper is not None:
            # Each key is one point at most: a range of integer ids holds no more points
            # than it has keys, and its last page asks for no more than it can hold.
            start = 0 if offset is None else point_key(offset)
            limit = max(1, min(page_size, upper - start))
        return offset, limit, upper

    def fetch(self, namespace: str, ids: Sequence[str]) -> list[Record]:
        """The points with these ids (vec2pg's text form), vectors and payload included."""
        if not ids:
            return []
        return self._call(self._points.retrieve, [_qdrant_id(i) for i in ids])

    def close(self) -> None:
        self._points.close()
        self._client.close()

    def _call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call qdrant-client (or our own requests, which raise vec2pg's errors already),
        translating its failures into vec2pg's errors."""
        import grpc
        from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        try:
            return method(*args, **kwargs)
        except ResourceExhaustedResponse as exc:  # 429 with an integer Retry-After
            raise RateLimited(
                f"{self.where} is rate limiting ({'gRPC' if self.grpc else 'HTTP 429'})",
                float(exc.retry_after_s),
            ) from exc
        except UnexpectedResponse as exc:
            raise self._http_error(exc) from exc
        except ResponseHandlingException as exc:  # timeouts, refused connections, bad bodies
            message = f"{self.where} did not answer: {_describe(exc.source)}"
            if unreachable(exc):
                raise SourceUnreachable(message + self._address_hint()) from exc
            raise SourceUnavailable(message) from exc
        except grpc.RpcError as exc:
            from vec2pg.sources.qdrant_grpc import grpc_error

            error = grpc_error(
                exc,
                where=self.where,
                credentials=CREDENTIALS,
                collection=self.collection,
                doing="describing the collection",
            )
            if isinstance(error, SourceUnreachable):
                error = SourceUnreachable(f"{error}{self._address_hint()}")
            raise error from exc
        except OSError as exc:
            kind = SourceUnreachable if unreachable(exc) else SourceUnavailable
            raise kind(f"{self.where}: {_describe(exc)}") from exc

    def _address_hint(self) -> str:
        if self.grpc:
            return (
                f"; check --url and --grpc-port (Qdrant's gRPC port, {DEFAULT_GRPC_PORT} "
                "unless configured otherwise), or leave out --grpc to read over REST"
            )
        return "; check --url (or QDRANT_URL) and that the server is running"

    def _http_error(self, exc: Any) -> SourceError:
        return status_error(
            exc.status_code or 0,
            error_detail(exc.content),
            where=self.where,
            credentials=CREDENTIALS,
            not_found=f"{self.where}: collection {self.collection!r} not found",
            retry_after=retry_after(exc.headers.get("retry-after") if exc.headers else None),
        )


class _LocalPoints:
    """Points of a local storage, through qdrant-client's local mode."""

    def __init__(self, client: QdrantClient, collection: str, call: Callable[..., Any]) -> None:
        self._client = client
        self._collection = collection
        self._call = call

    def scroll(
        self, offset: PointId | None, limit: int, upper: int | None
    ) -> tuple[list[Record], Any]:
        points, next_offset = self._call(
            self._client.scroll,
            self._collection,
            limit=limit,
            offset=offset,
            with_payload=True,
            with_vectors=True,
        )
        if upper is not None:
            points = [p for p in points if point_key(_plain_id(p.id)) < upper]
        return _records(points), _next_offset(next_offset)

    def scroll_ids(self, offset: PointId | None, limit: int) -> tuple[list[PointId], Any]:
        points, next_offset = self._call(
            self._client.scroll,
            self._collection,
            limit=limit,
            offset=offset,
            with_payload=False,
            with_vectors=False,
        )
        return [_plain_id(p.id) for p in points], _next_offset(next_offset)

    def retrieve(self, ids: Sequence[PointId]) -> list[Record]:
        points = self._call(
            self._client.retrieve,
            self._collection,
            list(ids),
            with_payload=True,
            with_vectors=True,
        )
        return _records(points)

    def close(self) -> None:
        pass  # the source closes the client


def _endpoint(url: str, api_key: str | None) -> tuple[str, str, bool]:
    """The REST base URL, the host and whether TLS is used, as qdrant-client reads a URL:
    ``localhost:6333`` is a host and port, a URL without a scheme is HTTPS with an API
    key and HTTP without, without a port it is 6333, and its path is a prefix."""
    from urllib3.util import parse_url

    try:
        parsed = parse_url(f"//{url}" if url.startswith("localhost") else url)
    except ValueError as exc:
        raise ConfigError(f"--url {mask_dsn(url)!r} is not a URL ({exc})") from exc
    scheme = parsed.scheme or ("https" if api_key is not None else "http")
    if scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(
            f"--url {mask_dsn(url)!r} is not an http:// or https:// URL of a Qdrant server"
        )
    port = parsed.port or DEFAULT_PORT
    prefix = (parsed.path or "").rstrip("/")
    return f"{scheme}://{parsed.host}:{port}{prefix}", parsed.host, scheme == "https"


def _remote_client(
    url: str, api_key: str | None, timeout: float, grpc: bool, grpc_port: int
) -> QdrantClient:
    """qdrant-client for the control plane: over gRPC alone with ``grpc``."""
    from qdrant_client import QdrantClient

    with warnings.catch_warnings():
        # "Api key is used with an insecure connection": the user chose http://.
        warnings.simplefilter("ignore", UserWarning)
        try:
            # The version check is one more request (REST, even with prefer_grpc) and
            # warns on a mismatch.
            return QdrantClient(
                url=url,
                api_key=api_key,
                timeout=max(1, round(timeout)),
                prefer_grpc=grpc,
                grpc_port=grpc_port,
                check_compatibility=False,
            )
        except ValueError as exc:  # "Unknown scheme", a port that is not a number
            raise ConfigError(f"--url {mask_dsn(url)!r}: {exc}") from exc


def _range_key(lower: int | None, upper: int | None) -> str:
    text = ["" if key is None else str(key_point(key)) for key in (lower, upper)]
    return f"{_RANGE}{text[0]}:{text[1]}"


def _bounds(partition: str) -> tuple[int | None, int | None]:
    """The keys a chain starts at and ends before (``None``: the collection's ends)."""
    if partition == WHOLE:
        return None, None
    if not partition.startswith(_RANGE) or partition.count(":") != 2:
        raise SourceError(f"{partition!r} is not a range of Qdrant point ids")
    lower, upper = partition[len(_RANGE) :].split(":")
    return (None if not lower else point_key(_qdrant_id(lower))), (
        None if not upper else point_key(_qdrant_id(upper))
    )


def _next_cursor(next_offset: PointId | None, upper: int | None) -> Cursor:
    """The cursor of a chain's next page: the scroll's next offset, unless it is past the
    chain's end."""
    if next_offset is None or (upper is not None and point_key(next_offset) >= upper):
        return None
    return next_offset


def _as_read(raw: Raw) -> Raw:
    return raw


def _dense_field(name: str, params: models.VectorParams) -> VectorField:
    kind = VectorKind.MULTI if params.multivector_config is not None else VectorKind.DENSE
    distance = params.distance.value if hasattr(params.distance, "value") else str(params.distance)
    return VectorField(name, kind, params.size, _METRICS.get(distance))


def _records(points: list[models.Record]) -> list[Record]:
    """Records of qdrant-client's points (local mode)."""
    records = []
    for point in points:
        vector = point.vector
        named = vector if isinstance(vector, dict) else {} if vector is None else {"": vector}
        vectors: dict[str, Any] = {}
        problems = []
        for name, value in named.items():
            try:
                vectors[name] = _vector(name, value)
            except ValueError as exc:  # rejected with its reason, as the sink rejects records
                vectors[name] = value
                problems.append(str(exc))
        invalid = "; ".join(problems) or None
        records.append(
            Record(text_id(_plain_id(point.id)), vectors, point.payload, invalid=invalid)
        )
    return records


def _plain_id(point_id: int | str | uuid.UUID) -> PointId:
    return point_id if isinstance(point_id, (int, str)) else str(point_id)


def _qdrant_id(text: str) -> PointId:
    """The id Qdrant knows from its text form: ``'42'`` is the integer 42, else a UUID."""
    # Only an integer id's text is all ASCII digits: a UUID's always holds hyphens.
    return int(text) if text.isascii() and text.isdigit() else text


def _next_offset(next_offset: Any) -> PointId | None:
    """qdrant-client's ``next_page_offset`` as a cursor (a JSON-storable int or str)."""
    if next_offset is None:
        return None
    return next_offset if isinstance(next_offset, int) else str(next_offset)


def _vector(name: str, value: Any) -> Vector:
    if hasattr(value, "indices"):  # models.SparseVector
        return SparseVector(
            np.asarray(value.indices, dtype=np.int64), np.asarray(value.values, dtype=np.float32)
        )
    # A list of floats (dense) or a list of lists (multivector) becomes a 1-D or 2-D array.
    return as_array(value, name)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
