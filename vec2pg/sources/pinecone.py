"""Pinecone: list every namespace's ids, fetch them, and turn them into records.

A serverless index is read namespace by namespace: ``list`` pages ids (100 at the most per
request, in bytewise order) and ``fetch`` returns their values, sparse values and
metadata. Every request goes to Pinecone's documented REST API with urllib3
(:class:`_Http`): the control plane's ``GET /indexes/{name}`` (the index's host, and
whether it is pod-based), and the index's ``POST /describe_index_stats``, ``GET
/vectors/list`` and ``GET /vectors/fetch``. The SDK's response objects, and httpx's reading
of a 1 MB answer, each cost more CPU than the rest of a run; and without the SDK a plain
``pip install vec2pg`` reads Pinecone. A fetch answer's float arrays (nearly all of its
bytes) are decoded by simdjson straight into numpy buffers, without a Python float per
value.

A list page's token comes from the page before, so one chain of list requests
moves about 100 ids per round trip. To hide that latency a large namespace is split into
disjoint id prefixes listed at the same time (:meth:`PineconeSource.partitions`).

The default namespace is stored as ``__default__``, whichever spelling (``__default__`` or
``""``) the index reports. The table's key is (namespace, id).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import quote

import numpy as np

from vec2pg.errors import (
    ConfigError,
    SourceError,
    SourceNotFound,
    SourceUnavailable,
    SourceUnreachable,
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
from vec2pg.sources.base import MAX_CONCURRENCY, WHOLE, Call, Page, Raw
from vec2pg.sources.http import connection_pool, names_hint, parse_json, status_error, unreachable
from vec2pg.sources.http import retry_after as parse_retry_after

DEFAULT_NAMESPACE = "__default__"
#: The API version vec2pg speaks (the one pinecone SDK 10.x sends).
API_VERSION = "2026-07"
#: Pinecone's control plane, unless PINECONE_CONTROLLER_HOST names another.
CONTROLLER = "https://api.pinecone.io"
#: Pinecone's list returns at most 100 ids a page (checked by the SDK and the service).
LIST_LIMIT = 100
#: Namespaces smaller than this are one chain: splitting costs more requests than it saves.
SPLIT_MIN_RECORDS = 20 * LIST_LIMIT
#: At most this many list requests are spent finding the prefixes of one namespace, and
#: at most four per page a single chain would list: probes run concurrently while a
#: chain's pages follow one another, so even then splitting saves time. Ids sharing a long
#: common prefix (``doc-0000001``) cost about 80 probes per character of it.
SPLIT_MAX_PROBES = 1500
#: Probes in flight at once while splitting (each is a list request of at most 100 ids);
#: the pipeline's throttle halves that on every 429.
PROBE_CONCURRENCY = 64
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
    ) -> None:
        if not api_key:
            raise ConfigError("no Pinecone API key: pass --api-key or set PINECONE_API_KEY")
        self.index_name = index
        self.host = host
        self._api_key = api_key
        self._timeout = timeout
        controller = os.environ.get("PINECONE_CONTROLLER_HOST") or CONTROLLER
        self._control = _Http(controller, api_key, timeout, 2)
        self._http: _Http | None = None  # the index's own host, once known
        self._api_namespaces: dict[str, str] = {}  # stored name -> the spelling the API uses

    @property
    def location(self) -> str:
        return self.host or "Pinecone"

    def describe(self) -> SourceInfo:
        if self.host is None:
            self.host = self._index_host()
        if self._http is None:
            # Probes, then readers and loaders (two per unit of concurrency), in flight; a
            # pool only keeps the connections it used.
            connections = max(PROBE_CONCURRENCY, 2 * MAX_CONCURRENCY) + 4
            self._http = _Http(self.host, self._api_key, self._timeout, connections)
        stats = self._json(
            self._request(
                self._http, "POST", "/describe_index_stats", b"{}", "reading the index statistics"
            ),
            "reading the index statistics",
        )
        vector_type = str(stats.get("vectorType") or "dense")
        metric = _METRICS.get(str(stats.get("metric") or "").lower())
        fields: list[VectorField] = []
        if vector_type == "dense":
            fields.append(VectorField("", VectorKind.DENSE, int(stats["dimension"]), metric))
        if vector_type == "sparse" or metric is Metric.DOT:
            # Pinecone stores sparse values on sparse indexes and on dense dotproduct ones.
            fields.append(VectorField("sparse_embedding", VectorKind.SPARSE, None, Metric.DOT))
        namespaces = []
        for api_name, summary in sorted((stats.get("namespaces") or {}).items()):
            name = api_name or DEFAULT_NAMESPACE
            self._api_namespaces[name] = api_name
            namespaces.append(Namespace(name, int(summary.get("vectorCount") or 0)))
        return SourceInfo(
            kind="pinecone",
            collection=self.index_name,
            location=self.location,
            fields=tuple(fields),
            namespaces=tuple(namespaces),
            namespaced=True,
            raw_pages=True,
            default_namespace=DEFAULT_NAMESPACE,
        )

    def _index_host(self) -> str:
        """The index's host, from the control plane; refused for a pod-based index."""
        doing = f"describing index {self.index_name!r}"
        path = f"/indexes/{quote(self.index_name, safe='')}"
        response = self._control.request("GET", path, None)
        if response.status == 404:
            raise SourceNotFound(
                f"Pinecone index {self.index_name!r} not found; {self._indexes_hint()}"
            )
        if response.status != 200:
            raise self._http_error(response, doing)
        description = self._json(response, doing)
        deployment = description.get("deployment") or {}
        spec = description.get("spec") or {}  # API versions before 2025-10
        if deployment.get("deployment_type") == "pod" or "pod" in spec:
            raise SourceUnsupported(
                f"Pinecone index {self.index_name!r} is pod-based: {POD_EXPLANATION}"
            )
        host = description.get("host")
        if not host:
            state = (description.get("status") or {}).get("state", "not ready")
            raise SourceUnavailable(f"Pinecone index {self.index_name!r} is {state}, not ready yet")
        return str(host)

    def _indexes_hint(self) -> str:
        """The indexes the project has, the closest to the one asked for first."""
        try:
            response = self._control.request("GET", "/indexes", None)
            names = [str(i["name"]) for i in self._json(response, "listing indexes")["indexes"]]
        except (SourceError, KeyError, TypeError):
            return "check the name (and that the API key is the project's)"
        if not names:
            return "the project has no indexes (is the API key the project's?)"
        return names_hint(self.index_name, names, "the project has")

    def _json(self, response: Any, doing: str) -> Any:
        import orjson

        try:
            return orjson.loads(response.data)
        except orjson.JSONDecodeError as exc:
            raise SourceUnavailable(
                f"Pinecone index {self.index_name!r} sent an answer that does not parse while "
                f"{doing} ({exc})"
            ) from exc

    def partitions(
        self, namespace: str, count: int | None, want: int, call: Call
    ) -> tuple[str, ...]:
        """Split a large namespace into disjoint id prefixes to list at the same time.

        Ids are listed in bytewise order, so the first page of a prefix P holds its smallest
        ids: the characters after P only grow along it, those seen are present, those
        before the first are absent, and only those after the last seen need a probe. When
        every id on the page shares a longer prefix L, P's ids are L's and those that leave
        L at some position for a greater character, all probed in one wave. Prefixes whose
        first page is full are split again, the shortest (likely the largest) first, until
        ``want`` of them are left or the probe budget is spent. An id equal to a split
        prefix is a chain of its own. Each probe goes through ``call``, which retries it
        and slows down when Pinecone limits the rate of list requests.
        """
        if count is None or count < SPLIT_MIN_RECORDS or want < 2:
            return (WHOLE,)
        first = call(self._probe, namespace, "")
        if not first.has_more:
            return (WHOLE,)
        chains: list[str] = []
        big = [first]  # prefixes with more than a page of ids
        probes = 1
        budget = min(SPLIT_MAX_PROBES, 4 * count // LIST_LIMIT)
        # A probe is one small list request: more of them in flight than fetches.
        with ThreadPoolExecutor(PROBE_CONCURRENCY, thread_name_prefix="vec2pg-probe") as pool:
            # Level by level: the shortest big prefixes (likely the largest) are split
            # together, so that the chains left are of about one size; complete chains,
            # a page or less, do not count towards ``want``.
            while big and len(big) < want:
                depth = min(len(probe.prefix) for probe in big)
                waves: list[tuple[_Probe, list[str]]] = []
                for parent in (probe for probe in big if len(probe.prefix) == depth):
                    candidates = _children(parent)
                    if probes + len(candidates) > budget:
                        break
                    probes += len(candidates)
                    waves.append((parent, candidates))
                if not waves:
                    break
                split = {parent.prefix for parent, _ in waves}
                big = [probe for probe in big if probe.prefix not in split]
                probe = partial(call, self._probe, namespace)
                everything = [c for _, candidates in waves for c in candidates]
                for child in pool.map(probe, everything):
                    if child.has_more:
                        big.append(child)
                    elif child.ids:
                        chains.append(_PREFIX + child.prefix)
                for parent, candidates in waves:
                    if not candidates:  # nothing to split it by: list it whole
                        chains.append(_PREFIX + parent.prefix)
                    elif parent.ids and parent.ids[0] == parent.prefix:
                        chains.append(_EXACT + parent.prefix)
        chains += [_PREFIX + probe.prefix for probe in big]
        return tuple(sorted(chains))

    def _probe(self, namespace: str, prefix: str) -> _Probe:
        ids, token = self._list(namespace, prefix, None)
        return _Probe(prefix, ids, token is not None)

    def page(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        if partition.startswith(_EXACT):
            ids, token = [partition[len(_EXACT) :]], None
        else:
            prefix = partition[len(_PREFIX) :] if partition != WHOLE else ""
            ids, token = self._list(namespace, prefix, None if cursor is None else str(cursor))
        return Page(
            load=partial(self._fetch, namespace, ids),
            next_cursor=token,
            size=len(ids),
            ids=ids,
            read=partial(self._read, namespace, ids),
        )

    def page_ids(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        """A page of ids: :meth:`page` already lists them without fetching any record."""
        return self.page(namespace, partition, cursor)

    def fetch(self, namespace: str, ids: Sequence[str]) -> list[Record]:
        """The records of ``namespace`` with these ids (at most 100: one GET)."""
        return self._fetch(namespace, list(ids))

    def _list(self, namespace: str, prefix: str, token: str | None) -> tuple[list[str], str | None]:
        """One page of ids (at most 100) and the token of the next page, if any."""
        import orjson

        params = {"namespace": self._api_namespaces.get(namespace, namespace)}
        params["limit"] = str(LIST_LIMIT)
        if prefix:
            params["prefix"] = prefix
        if token is not None:
            params["paginationToken"] = token
        doing = f"listing ids of namespace {namespace!r}"
        response = self._get("/vectors/list", params, doing, listing=True)
        content: bytes = response.data
        try:
            answer = orjson.loads(content)
            ids = [str(v["id"]) for v in answer.get("vectors") or ()]
            following = (answer.get("pagination") or {}).get("next")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            text = content.decode("utf-8", "replace").strip()
            if "json" not in response.headers.get("content-type", "") and "pod" in text.lower():
                # A pod-based index answers list with a text that says so, not a list page.
                raise SourceUnsupported(
                    f"Pinecone index {self.index_name!r} cannot list ids (it answered "
                    f"{text[:120]!r}): {POD_EXPLANATION}"
                ) from exc
            raise SourceUnavailable(  # cut short on its way: worth asking again
                f"Pinecone index {self.index_name!r} sent a list answer that does not parse "
                f"while {doing} ({type(exc).__name__}: {exc}; {len(content):,} bytes)"
            ) from exc
        return ids, str(following) if following else None

    def _fetch(self, namespace: str, ids: list[str]) -> list[Record]:
        raw = self._read(namespace, ids)
        return raw.decode(raw.payload)

    def _read(self, namespace: str, ids: list[str]) -> Raw:
        """The fetch answer for ``ids``; decoding it is :func:`decode_fetch`'s work."""
        decode = partial(decode_fetch, self.index_name, namespace, ids)
        if not ids:
            return Raw(b'{"vectors": {}}', decode)
        params: list[tuple[str, str]] = [("ids", i) for i in ids]
        params.append(("namespace", self._api_namespaces.get(namespace, namespace)))
        content: bytes = self._get("/vectors/fetch", params, _fetching(namespace)).data
        return Raw(content, decode)

    def _get(self, path: str, params: Any, doing: str, *, listing: bool = False) -> Any:
        """The answer (status 200) to a GET of the data plane; errors as vec2pg's."""
        if self._http is None:
            raise RuntimeError("describe() first")
        url = f"{path}?{_query(params)}"
        return self._request(self._http, "GET", url, None, doing, listing=listing)

    def _request(
        self,
        http: _Http,
        method: str,
        path: str,
        body: bytes | None,
        doing: str,
        *,
        listing: bool = False,
    ) -> Any:
        """The answer (status 200) to a request; errors as vec2pg's."""
        import urllib3

        try:
            response = http.request(method, path, body)
        except urllib3.exceptions.HTTPError as exc:  # timeouts, refused and dropped connections
            error = SourceUnreachable if unreachable(exc) else SourceUnavailable
            raise error(
                f"Pinecone index {self.index_name!r} did not answer while {doing}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if response.status != 200:
            raise self._http_error(response, doing, listing=listing)
        return response

    def _http_error(self, response: Any, doing: str, *, listing: bool = False) -> SourceError:
        import orjson

        status = response.status
        try:
            message = str(orjson.loads(response.data)["error"]["message"])
        except (ValueError, KeyError, TypeError):
            text = response.data.decode("utf-8", "replace").strip()[:300]
            message = text or response.reason or f"HTTP {status}"
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return self._status_error(status, message, doing, retry_after, listing=listing)

    def _status_error(
        self,
        status: int,
        message: str,
        doing: str,
        retry_after: float | None,
        *,
        listing: bool = False,
    ) -> SourceError:
        """vec2pg's error for an HTTP error answer."""
        where = f"Pinecone index {self.index_name!r}"
        if listing and status == 400 and "serverless" in message.lower():
            return SourceUnsupported(f"{where} cannot list ids: {POD_EXPLANATION}")
        return status_error(
            status,
            message,
            where=where,
            refused_by="Pinecone",
            credentials="check --api-key or PINECONE_API_KEY",
            doing=doing,
            retry_after=retry_after,
        )

    def close(self) -> None:
        for http in (self._http, self._control):
            if http is not None:
                http.close()


class _Http:
    """Requests to one of Pinecone's hosts over a pool of kept-alive connections (urllib3).

    A bare host (what the control plane answers) is reached over HTTPS, verified against
    certifi's certificates (as the SDK and httpx do) or ``SSL_CERT_FILE``; a proxy set in
    the environment (``HTTPS_PROXY``, ``NO_PROXY``, ...) is used as the SDK would use it.
    Nothing is retried here: the pipeline retries, and counts what it retried.
    """

    def __init__(self, host: str, api_key: str, timeout: float, connections: int) -> None:
        self.base = base_url(host)
        headers = {
            "Api-Key": api_key,
            "X-Pinecone-Api-Version": API_VERSION,
            "Content-Type": "application/json",
        }
        self._pool: Any = connection_pool(
            self.base, headers, timeout=timeout, connections=connections, ca=None
        )

    def request(self, method: str, path: str, body: bytes | None) -> Any:
        url = f"{self.base}{path}"
        return self._pool.request(method, url, body=body, preload_content=True, redirect=False)

    def close(self) -> None:
        self._pool.clear()


#: Characters a query value may hold as they are (RFC 3986's unreserved ones).
_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]*")


def _query(params: dict[str, str] | list[tuple[str, str]]) -> str:
    """A query string; the 100 ids of a fetch are mostly plain, and quote() is slow."""
    from urllib.parse import quote

    pairs = params.items() if isinstance(params, dict) else params
    return "&".join(f"{k}={v if _UNRESERVED.fullmatch(v) else quote(v, safe='')}" for k, v in pairs)


def base_url(host: str) -> str:
    """An index host as a URL: the control plane answers a bare host name, served on HTTPS."""
    host = host.rstrip("/")
    return host if "://" in host else f"https://{host}"


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


def _fetching(namespace: str) -> str:
    return f"fetching records of namespace {namespace!r}"


def decode_fetch(index: str, namespace: str, ids: list[str], content: bytes) -> list[Record]:
    """The records of index ``index``'s fetch answer ``content`` for ``ids`` of
    ``namespace`` (:class:`~vec2pg.sources.base.Raw`'s decode: it may run in any process).

    An answer that does not parse was cut short on its way (a dropped connection, a proxy):
    a transient failure, and the page is fetched again.
    """
    try:
        return _decode_fetch(namespace, content, ids)
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise SourceUnavailable(
            f"Pinecone index {index!r} sent an answer that does not parse while "
            f"{_fetching(namespace)} ({exc}; {len(content):,} bytes)"
        ) from exc


def _decode_fetch(namespace: str, content: bytes, ids: list[str]) -> list[Record]:
    """The records of a fetch answer, in the order of ``ids``.

    A listed id missing from the answer was deleted in between: it is gone at the source.
    simdjson parses the answer once; the float arrays are copied out of it as doubles and
    rounded to float32, as a JSON parser and numpy would (Pinecone stores float32).
    """
    answer, simd = parse_json(content)
    if simd:
        return _records(namespace, answer, ids)
    return _plain_records(namespace, answer, ids)


def _plain_records(namespace: str, answer: dict[str, Any], ids: list[str]) -> list[Record]:
    """The records of a fetch answer that Python's json read (see :func:`_decode_fetch`)."""
    vectors = answer.get("vectors") or {}
    records = []
    with np.errstate(over="ignore"):
        for rid in ids:
            vector = vectors.get(rid)
            if vector is None:
                continue
            fields: dict[str, Vector | None] = {}
            if vector.get("values"):
                fields[""] = np.asarray(vector["values"], dtype=np.float32)
            sparse = vector.get("sparseValues")
            if sparse is not None and sparse.get("indices"):
                fields["sparse_embedding"] = SparseVector(
                    np.asarray(sparse["indices"], dtype=np.int64),
                    np.asarray(sparse.get("values") or [], dtype=np.float32),
                )
            records.append(Record(rid, fields, vector.get("metadata"), namespace))
    return records


def _records(namespace: str, answer: Any, ids: list[str]) -> list[Record]:
    vectors = answer.get("vectors") or {}
    found = [(rid, vectors[rid]) for rid in ids if rid in vectors]
    dense = _float_rows([vector.get("values") for _, vector in found])
    records = []
    for (rid, vector), values in zip(found, dense, strict=True):
        fields: dict[str, Vector | None] = {}
        if values is not None:
            fields[""] = values
        sparse = vector.get("sparseValues")
        if sparse is not None and sparse.get("indices"):
            indices = np.frombuffer(sparse["indices"].as_buffer(of_type="u"), dtype=np.uint64)
            sparse_values = _float_rows([sparse["values"]])[0]
            if sparse_values is None:
                raise ValueError(f"record {rid!r} has sparse indices but no values")
            fields["sparse_embedding"] = SparseVector(indices.astype(np.int64), sparse_values)
        metadata = vector.get("metadata")
        records.append(
            Record(
                id=rid,
                vectors=fields,
                metadata=None if metadata is None else metadata.as_dict(),
                namespace=namespace,
            )
        )
    return records


def _float_rows(arrays: list[Any]) -> list[Any]:
    """float32 arrays of JSON arrays of numbers (``None`` for a missing or empty one),
    converted together when they are of one length, as a dense index's are."""
    buffers = [None if not a else a.as_buffer(of_type="d") for a in arrays]
    sizes = {len(memoryview(b)) for b in buffers if b is not None}
    # A value beyond float32 becomes infinity, which the sink refuses with the record's id.
    with np.errstate(over="ignore"):
        if len(sizes) == 1 and None not in buffers:
            joined = np.frombuffer(b"".join(buffers), dtype=np.float64)  # type: ignore[arg-type]
            return list(joined.astype(np.float32).reshape(len(buffers), -1))
        return [
            None if b is None else np.frombuffer(b, dtype=np.float64).astype(np.float32)
            for b in buffers
        ]
