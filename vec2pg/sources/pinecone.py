"""Pinecone: list every namespace's ids, fetch them, and turn them into records.

A serverless index is read namespace by namespace: ``list`` pages ids (100 at the most per
request, in bytewise order) and ``fetch`` returns their values, sparse values and
metadata. The SDK does the control plane, the statistics and ``list``; ``fetch``, which
carries nearly all the bytes, is read straight from Pinecone's documented REST API
(``GET /vectors/fetch``) with httpx and orjson, because decoding its JSON into the SDK's
objects and then into numpy cost more CPU than everything else in a run together.

A list page's token comes from the page before, so one chain of list requests
moves about 100 ids per round trip. To hide that latency a large namespace is split into
disjoint id prefixes listed at the same time (:meth:`PineconeSource.partitions`).

The default namespace is stored as ``__default__``, whichever spelling (``__default__`` or
``""``) the index reports. The table's key is (namespace, id).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from vec2pg.errors import (
    ConfigError,
    RateLimited,
    SourceAuthError,
    SourceError,
    SourceNotFound,
    SourceUnavailable,
    SourceUnsupported,
)
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
)
from vec2pg.sources.base import WHOLE, Page

if TYPE_CHECKING:
    from pinecone import Pinecone

DEFAULT_NAMESPACE = "__default__"
#: The data-plane API version vec2pg's fetch speaks (the one pinecone SDK 10.x sends).
DATA_PLANE_API_VERSION = "2026-07"
#: Pinecone's list returns at most 100 ids a page (checked by the SDK and the service).
LIST_LIMIT = 100
#: Namespaces smaller than this are one chain: splitting costs more requests than it saves.
SPLIT_MIN_RECORDS = 20 * LIST_LIMIT
#: At most this many list requests are spent finding the prefixes of one namespace, and
#: at most four per page a single chain would list: probes run concurrently while a
#: chain's pages follow one another, so even then splitting saves time. Ids sharing a long
#: common prefix (``doc-0000001``) cost about 80 probes per character of it.
SPLIT_MAX_PROBES = 1500
#: Probes in flight at once while splitting (each is a list request of at most 100 ids).
PROBE_CONCURRENCY = 32
#: Characters probed when splitting a prefix: all of ASCII but NUL, which is every
#: character a Pinecone id may hold (the SDK refuses other ids, and prefixes, on upsert,
#: fetch and list), so the prefixes of a split cover every id.
PROBE_ALPHABET = tuple(chr(c) for c in range(0x01, 0x80))

_METRICS = {"cosine": Metric.COSINE, "dotproduct": Metric.DOT, "euclidean": Metric.EUCLIDEAN}
_PREFIX = "prefix:"  # partition key of a prefix chain
_EXACT = "id:"  # partition key of one id (a prefix that is itself an id)

POD_EXPLANATION = (
    "vec2pg reads an index by listing its ids, and Pinecone offers list only on serverless "
    "indexes: move the index to serverless (Pinecone's console migrates pod-based indexes) "
    "and migrate that one"
)


@dataclass(frozen=True, slots=True)
class _Probe:
    prefix: str
    ids: list[str]
    has_more: bool


class PineconeSource:
    """Read every record of every namespace of a serverless Pinecone index."""

    def __init__(
        self,
        index: str,
        *,
        api_key: str | None,
        host: str | None = None,
        timeout: float = 30.0,
        concurrency: int = 8,
    ) -> None:
        if not api_key:
            raise ConfigError("no Pinecone API key: pass --api-key or set PINECONE_API_KEY")
        self.index_name = index
        self.host = host
        self.concurrency = concurrency
        from pinecone import Pinecone

        controller = os.environ.get("PINECONE_CONTROLLER_HOST")
        self._pc: Pinecone = Pinecone(api_key=api_key, host=controller or None, timeout=timeout)
        self._api_key = api_key
        self._timeout = timeout
        self._index: Any = None
        self._http: Any = None  # httpx.Client for fetch, once the host is known
        self._api_namespaces: dict[str, str] = {}  # stored name -> the spelling the API uses

    @property
    def location(self) -> str:
        return self.host or "Pinecone"

    def describe(self) -> SourceInfo:
        if self.host is None:
            with self._translate(f"describing index {self.index_name!r}"):
                description = self._pc.describe_index(self.index_name)
            from pinecone import PodDeployment

            if isinstance(description.deployment, PodDeployment):
                raise SourceUnsupported(
                    f"Pinecone index {self.index_name!r} is pod-based: {POD_EXPLANATION}"
                )
            self.host = str(description.host)
        if self._index is None:
            import httpx

            self._index = self._pc.Index(host=self.host)
            self._http = httpx.Client(
                base_url=self.host,
                headers={
                    "Api-Key": self._api_key,
                    "X-Pinecone-Api-Version": DATA_PLANE_API_VERSION,
                },
                timeout=self._timeout,
                limits=httpx.Limits(max_connections=2 * self.concurrency + 4),
            )
        with self._translate("reading the index statistics"):
            stats = self._index.describe_index_stats()
        vector_type = str(getattr(stats, "vector_type", None) or "dense")
        metric = _METRICS.get(str(stats.metric or "").lower())
        fields: list[VectorField] = []
        if vector_type == "dense":
            fields.append(VectorField("", VectorKind.DENSE, int(stats.dimension), metric))
        if vector_type == "sparse" or metric is Metric.DOT:
            # Pinecone stores sparse values on sparse indexes and on dense dotproduct ones.
            fields.append(VectorField("sparse_embedding", VectorKind.SPARSE, None, Metric.DOT))
        namespaces = []
        for api_name, summary in sorted((stats.namespaces or {}).items()):
            name = api_name or DEFAULT_NAMESPACE
            self._api_namespaces[name] = api_name
            namespaces.append(Namespace(name, int(summary.vector_count)))
        return SourceInfo(
            kind="pinecone",
            collection=self.index_name,
            location=self.location,
            fields=tuple(fields),
            namespaces=tuple(namespaces),
            namespaced=True,
        )

    def partitions(self, namespace: str, count: int | None, want: int) -> tuple[str, ...]:
        """Split a large namespace into disjoint id prefixes to list at the same time.

        Ids are listed in bytewise order, so the first page of a prefix P holds its smallest
        ids: the characters after P only grow along it, those seen are present, those
        before the first are absent, and only those after the last seen need a probe. When
        every id on the page shares a longer prefix L, P's ids are L's and those that leave
        L at some position for a greater character, all probed in one wave. A prefix whose
        first page is full is split again, breadth first, until there are ``want`` chains
        or the probe budget is spent. An id equal to a split prefix is a chain of its own.
        """
        if count is None or count < SPLIT_MIN_RECORDS or want < 2:
            return (WHOLE,)
        first = self._probe(namespace, "")
        if not first.has_more:
            return (WHOLE,)
        chains: list[str] = []
        big = [first]
        probes = 1
        budget = min(SPLIT_MAX_PROBES, 4 * count // LIST_LIMIT)
        # A probe is one small list request: more of them in flight than fetches.
        workers = max(PROBE_CONCURRENCY, self.concurrency)
        with ThreadPoolExecutor(workers, thread_name_prefix="vec2pg-probe") as pool:
            while big and len(chains) + len(big) < want:
                parent = big[0]
                candidates = _children(parent)
                if not candidates:  # nothing to split it by: list it whole
                    chains.append(_PREFIX + big.pop(0).prefix)
                    continue
                if probes + len(candidates) > budget:
                    break
                big.pop(0)
                probes += len(candidates)
                for child in pool.map(partial(self._probe, namespace), candidates):
                    if not child.ids:
                        continue
                    if child.has_more:
                        big.append(child)
                    else:
                        chains.append(_PREFIX + child.prefix)
                if parent.ids and parent.ids[0] == parent.prefix:
                    chains.append(_EXACT + parent.prefix)
        chains += [_PREFIX + probe.prefix for probe in big]
        return tuple(sorted(chains))

    def _probe(self, namespace: str, prefix: str) -> _Probe:
        page = self._list(namespace, prefix, None)
        return _Probe(prefix, _ids(page), _next_token(page) is not None)

    def page(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        if partition.startswith(_EXACT):
            ids = [partition[len(_EXACT) :]]
            return Page(
                load=partial(self._fetch, namespace, ids), next_cursor=None, size=1, ids=ids
            )
        prefix = partition[len(_PREFIX) :] if partition != WHOLE else ""
        response = self._list(namespace, prefix, None if cursor is None else str(cursor))
        ids = _ids(response)
        return Page(
            load=partial(self._fetch, namespace, ids),
            next_cursor=_next_token(response),
            size=len(ids),
            ids=ids,
        )

    def page_ids(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        """A page of ids: :meth:`page` already lists them without fetching any record."""
        return self.page(namespace, partition, cursor)

    def fetch(self, namespace: str, ids: Sequence[str]) -> list[Record]:
        """The records of ``namespace`` with these ids (at most 100: one GET)."""
        return self._fetch(namespace, list(ids))

    def _list(self, namespace: str, prefix: str, token: str | None) -> Any:
        with self._translate(f"listing ids of namespace {namespace!r}", listing=True):
            return self._index.list_paginated(
                namespace=self._api_namespaces.get(namespace, namespace),
                prefix=prefix or None,
                limit=LIST_LIMIT,
                pagination_token=token,
            )

    def _fetch(self, namespace: str, ids: list[str]) -> list[Record]:
        if not ids:
            return []
        import httpx
        import orjson

        params = [("ids", i) for i in ids]
        params.append(("namespace", self._api_namespaces.get(namespace, namespace)))
        doing = f"fetching records of namespace {namespace!r}"
        try:
            response = self._http.get("/vectors/fetch", params=params)
        except httpx.TransportError as exc:  # timeouts, refused and dropped connections
            raise SourceUnavailable(
                f"Pinecone index {self.index_name!r} did not answer while {doing}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code != 200:
            raise self._http_error(response, doing)
        vectors = orjson.loads(response.content).get("vectors") or {}
        # A listed id missing from the fetch was deleted in between: it is gone at the source.
        return [_record(namespace, vectors[i]) for i in ids if i in vectors]

    def _http_error(self, response: Any, doing: str) -> SourceError:
        status = response.status_code
        where = f"Pinecone index {self.index_name!r}"
        try:
            message = str(response.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = response.text.strip()[:300] or response.reason_phrase
        if status in (401, 403):
            return SourceAuthError(
                f"{where}: Pinecone refused the API key (HTTP {status}): "
                "check --api-key or PINECONE_API_KEY"
            )
        if status == 404:
            return SourceNotFound(f"{where} not found ({message})")
        retry_after = _retry_after(response.headers.get("retry-after"))
        if status == 429:
            return RateLimited(f"{where} is rate limiting (HTTP 429) while {doing}", retry_after)
        if status >= 500 or status == 408:
            return SourceUnavailable(
                f"{where} answered HTTP {status} while {doing}: {message}", retry_after
            )
        return SourceError(f"{where} answered HTTP {status} while {doing}: {message}")

    def close(self) -> None:
        for resource in (self._http, self._index, self._pc):
            close = getattr(resource, "close", None)
            if close is not None:
                close()

    @contextmanager
    def _translate(self, doing: str, *, listing: bool = False) -> Iterator[None]:
        """Translate the SDK's errors into vec2pg's, naming what we were doing."""
        from pinecone import errors

        where = f"Pinecone index {self.index_name!r}"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                yield
        except (errors.UnauthorizedError, errors.ForbiddenError) as exc:
            raise SourceAuthError(
                f"{where}: Pinecone refused the API key (HTTP {exc.status_code}): "
                "check --api-key or PINECONE_API_KEY"
            ) from exc
        except errors.NotFoundError as exc:
            raise SourceNotFound(f"{where} not found ({_message(exc)})") from exc
        except errors.RateLimitError as exc:
            raise RateLimited(
                f"{where} is rate limiting (HTTP 429) while {doing}", exc.retry_after
            ) from exc
        except errors.ServiceError as exc:
            raise SourceUnavailable(
                f"{where} answered HTTP {exc.status_code} while {doing}: {_message(exc)}"
            ) from exc
        except (errors.PineconeConnectionError, errors.PineconeTimeoutError) as exc:
            raise SourceUnavailable(f"{where} did not answer while {doing}: {exc}") from exc
        except errors.ResponseParsingError as exc:
            if listing:  # what a pod-based index answers to list
                raise SourceUnsupported(
                    f"{where} cannot list ids (is it pod-based?): {POD_EXPLANATION}"
                ) from exc
            raise SourceError(f"{where} sent an answer vec2pg cannot read while {doing}") from exc
        except errors.ApiError as exc:
            if listing and exc.status_code == 400 and "serverless" in _message(exc).lower():
                raise SourceUnsupported(f"{where} cannot list ids: {POD_EXPLANATION}") from exc
            raise SourceError(
                f"{where} answered HTTP {exc.status_code} while {doing}: {_message(exc)}"
            ) from exc


def _children(parent: _Probe) -> list[str]:
    """Disjoint prefixes, longer than ``parent``'s, that together hold all its other ids."""
    depth = len(parent.prefix)
    longer = [i for i in parent.ids if len(i) > depth]
    if not longer:
        return []
    common = os.path.commonprefix(longer)
    if len(common) > depth:
        # Every id on the page continues with `common`: the rest leave it somewhere, for a
        # greater character (a smaller one, or an id that is a prefix of it, would sort
        # before them and be on the page).
        return [common] + [
            common[:i] + c
            for i in range(depth, len(common))
            for c in PROBE_ALPHABET
            if c > common[i]
        ]
    seen = sorted({i[depth] for i in longer})
    chars = seen + [c for c in PROBE_ALPHABET if c > seen[-1]]
    return [parent.prefix + c for c in chars]


def _ids(page: Any) -> list[str]:
    return [v.id for v in (page.vectors or [])]


def _next_token(page: Any) -> str | None:
    pagination = getattr(page, "pagination", None)
    token = getattr(pagination, "next", None) if pagination else None
    return str(token) if token else None


def _record(namespace: str, vector: dict[str, Any]) -> Record:
    """A record from one entry of fetch's JSON answer."""
    vectors: dict[str, Vector | None] = {}
    values = vector.get("values")
    if values:
        vectors[""] = np.array(values, dtype=np.float32)
    sparse = vector.get("sparseValues")
    if sparse and sparse.get("indices"):
        vectors["sparse_embedding"] = SparseVector(
            np.array(sparse["indices"], dtype=np.int64),
            np.array(sparse["values"], dtype=np.float32),
        )
    return Record(
        id=str(vector["id"]), vectors=vectors, metadata=vector.get("metadata"), namespace=namespace
    )


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:  # an HTTP date: back off as usual
        return None


def _message(exc: Any) -> str:
    return str(getattr(exc, "message", None) or exc).strip().splitlines()[0][:300]
