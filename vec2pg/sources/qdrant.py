"""Qdrant: scroll a collection by ``next_page_offset`` and turn points into records.

Point ids become text: an integer id ``42`` becomes ``'42'``, a UUID its canonical
lowercase hyphenated form. Qdrant has no namespaces, so the table has none either.

The offset Qdrant's scroll takes is a *point id* (the one after the last page), never a
count: the original vec2pg advanced it as a count and skipped or repeated points whose ids
were not 0..N-1.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

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
from vec2pg.sources.base import WHOLE, Call, Page
from vec2pg.sources.http import retry_after, status_error, unreachable

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

#: Points per scroll request. 256 points of 1024-dim float32 are about 2.5 MB of JSON:
#: large enough to amortise the round trip, small enough to keep memory flat.
DEFAULT_PAGE_SIZE = 256
#: Points per scroll request when only ids are read (verification): an id is a few dozen
#: bytes of JSON, so 4,096 of them are ~150 kB, and a million points take 245 requests.
DEFAULT_IDS_PAGE_SIZE = 4096


class QdrantSource:
    """Read every point of a Qdrant collection from a server (``url``) or a storage (``path``)."""

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
    ) -> None:
        if (url is None) == (path is None):
            raise ConfigError(
                "name one Qdrant to read from: --url (or QDRANT_URL) for a server, "
                "or --path for a local Qdrant storage folder"
            )
        if page_size < 1:
            raise ConfigError(f"--page-size must be at least 1, not {page_size}")
        self.collection = collection
        self.page_size = page_size
        self.ids_page_size = max(1, ids_page_size)
        # A URL may carry credentials (http://user:password@host): never print them.
        self.location = mask_dsn(url) if url is not None else os.path.abspath(path or "")
        self._client = self._connect(url, api_key, path, timeout)

    def _connect(
        self, url: str | None, api_key: str | None, path: str | None, timeout: float
    ) -> QdrantClient:
        from qdrant_client import QdrantClient

        if path is None:
            with warnings.catch_warnings():
                # "Api key is used with an insecure connection": the user chose http://.
                warnings.simplefilter("ignore", UserWarning)
                # REST only; the version check is one more request and warns on mismatch.
                return QdrantClient(
                    url=url,
                    api_key=api_key,
                    timeout=max(1, round(timeout)),
                    check_compatibility=False,
                )
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

    def describe(self) -> SourceInfo:
        if not self._call(self._client.collection_exists, self.collection):
            raise SourceNotFound(
                f"Qdrant collection {self.collection!r} not found at {self.location}"
            )
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
        )

    def partitions(
        self, namespace: str, count: int | None, want: int, call: Call
    ) -> tuple[str, ...]:
        # A scroll's offset is a point id with no upper bound: one chain.
        return (WHOLE,)

    def page(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        points, next_offset = self._call(
            self._client.scroll,
            self.collection,
            limit=self.page_size,
            offset=cursor,
            with_payload=True,
            with_vectors=True,
        )
        return Page(
            load=partial(_records, points), next_cursor=_next_cursor(next_offset), size=len(points)
        )

    def page_ids(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        """A page of point ids only: the scroll skips vectors and payloads."""
        points, next_offset = self._call(
            self._client.scroll,
            self.collection,
            limit=self.ids_page_size,
            offset=cursor,
            with_payload=False,
            with_vectors=False,
        )
        ids = [_point_id(p.id) for p in points]
        return Page(
            load=partial(self.fetch, namespace, ids),
            next_cursor=_next_cursor(next_offset),
            size=len(ids),
            ids=ids,
        )

    def fetch(self, namespace: str, ids: Sequence[str]) -> list[Record]:
        """The points with these ids (vec2pg's text form), vectors and payload included."""
        if not ids:
            return []
        points = self._call(
            self._client.retrieve,
            self.collection,
            [_qdrant_id(i) for i in ids],
            with_payload=True,
            with_vectors=True,
        )
        return _records(points)

    def close(self) -> None:
        self._client.close()

    def _call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call the client, translating its failures into vec2pg's errors."""
        from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        try:
            return method(*args, **kwargs)
        except ResourceExhaustedResponse as exc:  # 429 with an integer Retry-After
            raise RateLimited(
                f"Qdrant at {self.location} is rate limiting (HTTP 429)", float(exc.retry_after_s)
            ) from exc
        except UnexpectedResponse as exc:
            raise self._http_error(exc) from exc
        except ResponseHandlingException as exc:  # timeouts, refused connections, bad bodies
            error = SourceUnreachable if unreachable(exc) else SourceUnavailable
            raise error(
                f"Qdrant at {self.location} did not answer: {_describe(exc.source)}"
            ) from exc
        except OSError as exc:
            error = SourceUnreachable if unreachable(exc) else SourceUnavailable
            raise error(f"Qdrant at {self.location}: {_describe(exc)}") from exc

    def _http_error(self, exc: Any) -> SourceError:
        where = f"Qdrant at {self.location}"
        return status_error(
            exc.status_code or 0,
            _error_detail(exc.content),
            where=where,
            credentials="check --api-key or QDRANT_API_KEY",
            not_found=f"{where}: collection {self.collection!r} not found",
            retry_after=retry_after(exc.headers.get("retry-after") if exc.headers else None),
        )


def _dense_field(name: str, params: models.VectorParams) -> VectorField:
    kind = VectorKind.MULTI if params.multivector_config is not None else VectorKind.DENSE
    distance = params.distance.value if hasattr(params.distance, "value") else str(params.distance)
    return VectorField(name, kind, params.size, _METRICS.get(distance))


def _records(points: list[models.Record]) -> list[Record]:
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
        records.append(Record(_point_id(point.id), vectors, point.payload, invalid=invalid))
    return records


def _point_id(point_id: int | str | uuid.UUID) -> str:
    if isinstance(point_id, int):
        return str(point_id)
    return str(point_id if isinstance(point_id, uuid.UUID) else uuid.UUID(point_id))


def _qdrant_id(text: str) -> int | str:
    """The id Qdrant knows from its text form: ``'42'`` is the integer 42, else a UUID."""
    # Only an integer id's text is all ASCII digits: a UUID's always holds hyphens.
    return int(text) if text.isascii() and text.isdigit() else text


def _next_cursor(next_offset: Any) -> Cursor:
    """The scroll's ``next_page_offset`` as a cursor (a JSON-storable int or str)."""
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


def _error_detail(content: bytes | None) -> str:
    try:
        body = json.loads(content or b"")
        return str(body["status"]["error"])
    except (ValueError, KeyError, TypeError):
        return (content or b"").decode("utf-8", "replace").strip()[:200] or "no details"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
