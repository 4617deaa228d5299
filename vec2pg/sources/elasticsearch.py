"""Elasticsearch (and OpenSearch, :mod:`vec2pg.sources.opensearch`): every document of an
index through a point in time, each shard read by ``_seq_no`` with ``search_after``.

Both engines speak one REST wire format, read here with urllib3 (no SDK), and the answers'
float arrays are decoded by simdjson into numpy without a Python float per value, in the
pipeline's decoding processes. No SDK, because none serves every server: the 9.x
``elasticsearch`` client sends ``compatible-with=9``, which 8.x servers refuse (400),
its product check refuses OpenSearch, and both clients decode a page into Python floats
(~6,300 documents/s of 1,024 dimensions, four slices at once), more CPU than the rest of
a run. The server's version comes from ``GET /``.

**Chains and cursors.** A point in time (PIT) is a snapshot, but only for as long as it
lives: a run resumed in a new process must open a new one, in which Lucene's document
numbers (``_doc``, ``_shard_doc``, and the doc-id ranges of a PIT's slices) may all have
changed, so a cursor made of them would skip or repeat documents. What does not change is
a document's shard (its ``_id``'s routing) and its ``_seq_no``, unique among a shard's live
documents and renewed by every update. So a chain is one shard of the index (``slice``
``{"id": s, "max": shards}``: with ``max`` equal to the number of shards every slice is
exactly one whole shard, in any PIT), or a ``_seq_no`` range of one (a single-shard index is
split so), read in ``_seq_no`` order; the cursor is the last ``_seq_no`` read. Resumed in a
new PIT, ``search_after`` that value reads exactly the documents not yet read (a document
updated since has a new, larger ``_seq_no``, and is read in its new version). The shard
count is part of each chain's key, so an index split or shrunk since is noticed.
``_seq_no`` is sortable on every version (doc values) and unique within a shard, which
OpenSearch before 3.3 needs (it has no ``_shard_doc``); Elasticsearch adds ``_shard_doc``
to the first page's sort, which the cursor leaves out.

A PIT that expires during a run (keep-alive :data:`KEEP_ALIVE`, renewed by every page) is
a transient failure: the next try opens a new one and goes on from the cursor.

Vectors: ``dense_vector`` (``float``, ``bfloat16``, ``byte`` as ``vector(dim)``; ``bit`` as
``bit(dim)``), ``rank_vectors`` and dense vectors inside ``nested`` objects as
``vector(dim)[]``, OpenSearch's ``knn_vector`` (``float``, ``byte``; ``binary`` as
``bit(dim)``). ``sparse_vector`` keys are words, not integers: it stays in the metadata,
with the rest of ``_source``. Elasticsearch 9.2+ keeps vectors out of ``_source`` unless
asked (``"_source": {"exclude_vectors": false}``, sent to 8.19 / 9.1 and later only).
"""

from __future__ import annotations

import base64
import math
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from vec2pg.errors import (
    ConfigError,
    SourceAuthError,
    SourceError,
    SourceNotFound,
    SourceUnavailable,
    SourceUnreachable,
    SourceUnsupported,
)
from vec2pg.masking import mask_dsn
from vec2pg.records import (
    Cursor,
    Metric,
    Namespace,
    Record,
    SourceInfo,
    VectorField,
    VectorKind,
)
from vec2pg.sources.base import FETCH_MAX_IDS, MAX_CONCURRENCY, WHOLE, Call, Page, Raw
from vec2pg.sources.http import connection_pool, names_hint, parse_json, status_error, unreachable
from vec2pg.sources.http import retry_after as parse_retry_after

#: Documents per search. 500 documents of 1,024 dimensions are about 5.5 MB of JSON: few
#: enough round trips that latency hardly counts with several chains read at once, and
#: small enough that the pages in flight (a few per unit of --concurrency: being read,
#: queued, being decoded) keep memory small, however large the index. A search returns at
#: most 10,000 (index.max_result_window).
DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 10_000
#: Ids per search when only ids are read (verify): an id and its sort value are ~60 bytes.
IDS_PAGE_SIZE = 10_000
#: How long a point in time outlives its last search. Every page renews it; it must cover
#: the longest pause between two pages of a chain, which is the pipeline's patience with
#: rate limiting (ten minutes). A PIT keeps the segments it reads from being merged away,
#: so it is closed at the end of a run; a killed run's PIT expires after this.
KEEP_ALIVE = "10m"
#: Namespaces smaller than this many pages are one chain: splitting costs requests.
SPLIT_MIN_PAGES = 2
#: Seconds to wait for closing a PIT when the run ends (it expires by itself anyway).
CLOSE_TIMEOUT = 5.0

_WHOLE_CURSOR = re.compile(r"(\d+)/(\d+):(-?\d*)")
_CHAIN_KEY = re.compile(r"shard (\d+)/(\d+)(?: seq (\d+)-(\d*))?")
#: The last hit's sort values at the end of a search answer: ours are always integers
#: (``_seq_no``, and the ``_shard_doc`` Elasticsearch adds). A hit ends with its sort.
_LAST_SORT = re.compile(rb'"sort":\[(-?\d+)(?:,\s*-?\d+)*\]\s*\}\s*\]\s*\}\s*\}\s*$')

_ES_METRICS = {
    "l2_norm": Metric.EUCLIDEAN,
    "dot_product": Metric.DOT,
    "max_inner_product": Metric.DOT,
    "cosine": Metric.COSINE,
}
_OS_METRICS = {
    "l2": Metric.EUCLIDEAN,
    "cosinesimil": Metric.COSINE,
    "innerproduct": Metric.DOT,
    "l1": Metric.MANHATTAN,
    "hamming": Metric.HAMMING,
    "hammingbit": Metric.HAMMING,
}


@dataclass(frozen=True, slots=True)
class VectorSpec:
    """How a vector field of the mapping is read out of ``_source`` (picklable: it travels
    to the decoding processes). ``element``: ``float`` (and bfloat16), ``byte`` or ``bit``;
    ``rows``: a multivector (``rank_vectors``, or a vector inside ``nested`` objects)."""

    name: str  # the field's dotted path: the record's key and the column's name
    path: tuple[str, ...]
    element: str
    dim: int  # values (bit: bits)
    rows: bool = False


@dataclass(frozen=True, slots=True)
class DecodeSpec:
    """What :func:`decode_search` needs to turn an answer into records."""

    where: str  # "Elasticsearch index 'docs'", for messages
    namespace: str  # the records' namespace ("" without namespaces)
    vectors: tuple[VectorSpec, ...]


@dataclass(frozen=True, slots=True)
class _Chain:
    """A chain's key: one shard (``None``: every shard, one after another), and a
    ``_seq_no`` range of it (``lo`` included, ``hi`` excluded, ``None``: open)."""

    shard: int | None
    shards: int
    lo: int | None = None
    hi: int | None = None

    @property
    def key(self) -> str:
        if self.shard is None:
            return WHOLE
        key = f"shard {self.shard}/{self.shards}"
        if self.lo is None and self.hi is None:
            return key
        return f"{key} seq {self.lo or 0}-{'' if self.hi is None else self.hi}"

    @classmethod
    def parse(cls, key: str, shards: int) -> _Chain:
        if key == WHOLE:
            return cls(None, shards)
        match = _CHAIN_KEY.fullmatch(key)
        if match is None:
            raise SourceError(f"{key!r} is not a chain of this source: run again with --restart")
        shard, of, lo, hi = match.groups()
        return cls(int(shard), int(of), None if lo is None else int(lo), int(hi) if hi else None)


@dataclass
class _Index:
    """What describe() learnt of one namespace's index."""

    name: str
    shards: int
    rehydrated: bool  # index.mapping.exclude_source_vectors (Elasticsearch 9.2+)
    synthetic: bool = False  # a synthetic _source (index.mapping.source.mode)


@dataclass(frozen=True, slots=True)
class _Scan:
    """What the walker needs of a search answer without decoding it."""

    hits: int
    last: int | None  # the last hit's _seq_no
    pit: str | None


class ElasticsearchSource:
    """Read every document of an Elasticsearch index, alias or pattern (each index of an
    alias or pattern is a namespace). :class:`~vec2pg.sources.opensearch.OpenSearchSource`
    is the same for OpenSearch."""

    kind = "elasticsearch"
    product = "Elasticsearch"
    envvar = "ELASTICSEARCH"
    #: Point in time arrived in Elasticsearch 7.10.
    minimum = (7, 10)

    def __init__(
        self,
        index: str,
        *,
        url: str | None = None,
        api_key: str | None = None,
        user: str | None = None,
        password: str | None = None,
        ca_certs: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        ids_page_size: int = IDS_PAGE_SIZE,
        timeout: float = 60.0,
    ) -> None:
        if not url:
            raise ConfigError(
                f"no {self.product} URL: pass --url (e.g. https://localhost:9200) or set "
                f"{self.envvar}_URL"
            )
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ConfigError(f"--page-size must be between 1 and {MAX_PAGE_SIZE:,}")
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.username is not None and user is None:  # http://user:password@host:9200
            user, password = unquote(parts.username), unquote(parts.password or "")
        if api_key and user:
            raise ConfigError("pass an API key or a user and password, not both")
        if password and not user:
            raise ConfigError(f"a password needs a user: pass --user or set {self.envvar}_USER")
        netloc = parts.hostname or ""
        netloc = f"[{netloc}]" if ":" in netloc else netloc
        if parts.port is not None:
            netloc += f":{parts.port}"
        self.base = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"
        self.location = mask_dsn(self.base)
        self.index = index
        self.page_size = page_size
        self.ids_page_size = max(1, min(ids_page_size, MAX_PAGE_SIZE))
        self.where = f"{self.product} at {self.location}"
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"ApiKey {_encoded_api_key(api_key)}"
        elif user:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        self._credentials = bool(api_key or user)
        self._http = _Http(self.base, headers, timeout, ca_certs, 2 * MAX_CONCURRENCY + 4)
        self.version: tuple[int, int, int] | None = None
        self._exclude_vectors_option = False  # send "_source": {"exclude_vectors": false}
        self._indices: dict[str, _Index] = {}  # namespace -> its index
        self._decode: dict[str, DecodeSpec] = {}
        self._pits: dict[str, str] = {}  # namespace -> the PIT id last answered
        self._pit_lock = threading.Lock()

    # -- describing -------------------------------------------------------------------------

    def describe(self) -> SourceInfo:
        self._check_server()
        mappings = self._get(
            f"/{index_path(self.index)}/_mapping", "reading the mapping", index=True
        )
        if not isinstance(mappings, dict) or not mappings:
            raise self._not_found(f"no index matches {self.index!r}")
        names = sorted(mappings)
        # One index (or an alias of one) is the table itself; a pattern, a list, an alias
        # of several indices or a data stream (which rolls over into more) keeps each index
        # apart, as a namespace: _ids are unique only within one index.
        namespaced = (
            len(names) > 1
            or any(c in self.index for c in "*,")
            or any(n.startswith(".ds-") for n in names)
        )
        settings = self._get(
            f"/{index_path(self.index)}/_settings/index.number_of_shards,"
            "index.mapping.exclude_source_vectors,index.mapping.source.mode,index.mode",
            "reading the index settings",
            params={"flat_settings": "true", "include_defaults": "true"},
            index=True,
        )
        fields: dict[str, tuple[str, VectorField, VectorSpec]] = {}
        notes: list[str] = []
        namespaces = []
        for name in names:
            mapping = (mappings[name] or {}).get("mappings") or {}
            index = self._index_info(name, settings.get(name) or {})
            specs = self._vectors(name, mapping)
            self._check_source(name, mapping, [spec for _, spec in specs], index)
            for vector_field, spec in specs:
                seen = fields.get(spec.name)
                if seen is not None and (seen[1], seen[2]) != (vector_field, spec):
                    raise SourceUnsupported(
                        f"{self.where}: vector {spec.name!r} differs between indices "
                        f"{seen[0]!r} and {name!r} ({_describe_field(seen[1])} and "
                        f"{_describe_field(vector_field)}); migrate them one by one"
                    )
                fields[spec.name] = (name, vector_field, spec)
            note = _rehydration_note(self.product, name, mapping, specs)
            if index.rehydrated and note:
                notes.append(note)
            if index.synthetic or str((mapping.get("_source") or {}).get("mode")) == "synthetic":
                notes.append(
                    f"{self.product} index {name!r} keeps a synthetic _source: it rebuilds each "
                    "document from its fields, so arrays come back sorted (keywords without "
                    "duplicates) and values as their fields hold them; the metadata holds what "
                    f"{self.product} returns"
                )
            namespace = name if namespaced else ""
            self._indices[namespace] = index
            namespaces.append(Namespace(namespace, self._count(name)))
        vectors = tuple(spec for _, _, spec in fields.values())
        for namespace, index in self._indices.items():
            where = f"{self.product} index {index.name!r}"
            self._decode[namespace] = DecodeSpec(where, namespace, vectors)
        return SourceInfo(
            kind=self.kind,
            collection=self.index,
            location=self.location,
            fields=tuple(vector_field for _, vector_field, _ in fields.values()),
            namespaces=tuple(namespaces),
            namespaced=namespaced,
            raw_pages=True,
            notes=tuple(notes),
        )

    def _check_server(self) -> None:
        """The server's product and version, from ``GET /``; what it can be asked."""
        doing = "reading the server's version"
        status, content, headers = self._request("GET", "/", doing)
        if status == 403:
            # GET / needs the monitor privilege, which a read-only user may lack: go on
            # without the version, and ask the server whether it knows exclude_vectors.
            self._exclude_vectors_option = self._knows_exclude_vectors()
            return
        if status != 200:
            raise self._error(status, content, headers, doing)
        version = orjson_loads(content).get("version") or {}
        distribution = str(version.get("distribution") or "elasticsearch").lower()
        number = str(version.get("number") or "")
        if distribution != self.kind:
            product = {"opensearch": "OpenSearch", "elasticsearch": "Elasticsearch"}.get(
                distribution, distribution
            )
            command = distribution if distribution in ("opensearch", "elasticsearch") else None
            fix = f": use vec2pg {command}" if command else ""
            raise ConfigError(f"{self.location} is {product} {number}, not {self.product}{fix}")
        parsed = _version(number)
        serverless = version.get("build_flavor") == "serverless"  # always the latest
        if parsed is None and not serverless:
            raise SourceError(f"{self.where} answered an unknown version {number!r}")
        self.version = parsed
        if parsed is not None and parsed[:2] < self.minimum and not serverless:
            raise SourceUnsupported(
                f"{self.where} is {self.product} {number}; vec2pg reads through a point in "
                f"time, which {self.product} has from {'.'.join(map(str, self.minimum))}: "
                "upgrade the server (or reindex into a newer one) and migrate from there"
            )
        self._exclude_vectors_option = serverless or self._has_exclude_vectors(parsed)

    def _has_exclude_vectors(self, version: tuple[int, int, int] | None) -> bool:
        """Whether searches take ``"_source": {"exclude_vectors": false}``: from 8.19 and
        9.1 (older servers refuse the unknown key with a 400)."""
        if version is None:
            return False
        return version >= (9, 1, 0) or (8, 19, 0) <= version < (9, 0, 0)

    def _knows_exclude_vectors(self) -> bool:
        """Ask the server whether it knows ``exclude_vectors`` (when its version is hidden)."""
        body = {"size": 0, "_source": {"exclude_vectors": False}}
        status, content, _ = self._request(
            "POST", f"/{index_path(self.index)}/_search", "asking what the server supports", body
        )
        if status == 200:
            return True
        if status == 400:
            return False
        raise self._error(status, content, {}, "asking what the server supports", index=True)

    def _index_info(self, name: str, settings: Mapping[str, Any]) -> _Index:
        flat = {**(settings.get("defaults") or {}), **(settings.get("settings") or {})}
        flat = _flatten(flat)
        shards = int(flat.get("index.number_of_shards") or 1)
        rehydrated = str(flat.get("index.mapping.exclude_source_vectors", "false")) == "true"
        # logsdb and time_series indices default to a synthetic _source.
        mode = flat.get("index.mapping.source.mode") or (
            "synthetic" if flat.get("index.mode") in ("logsdb", "time_series") else "stored"
        )
        return _Index(name, shards, rehydrated, str(mode).lower() == "synthetic")

    def _vectors(
        self, index: str, mapping: Mapping[str, Any]
    ) -> list[tuple[VectorField, VectorSpec]]:
        """Every vector field of a mapping, as a column and as read out of ``_source``."""
        found: list[tuple[VectorField, VectorSpec]] = []

        def walk(properties: Mapping[str, Any], prefix: tuple[str, ...], nested: bool) -> None:
            for key, spec in sorted(properties.items()):
                path = (*prefix, key)
                kind = spec.get("type", "object" if "properties" in spec else None)
                if kind in ("object", "nested") or "properties" in spec:
                    walk(spec.get("properties") or {}, path, nested or kind == "nested")
                    continue
                vector = self._vector(index, ".".join(path), path, kind, spec, nested)
                if vector is not None:
                    found.append(vector)

        walk(mapping.get("properties") or {}, (), False)
        return found

    def _vector(
        self,
        index: str,
        name: str,
        path: tuple[str, ...],
        kind: Any,
        spec: Mapping[str, Any],
        nested: bool,
    ) -> tuple[VectorField, VectorSpec] | None:
        """A vector field as a column (None: the field is not a vector, or stays in the
        metadata), for Elasticsearch's types; OpenSearch's class reads its own."""
        if kind not in ("dense_vector", "rank_vectors"):
            return None
        element = str(spec.get("element_type") or "float")
        if element not in ("float", "bfloat16", "byte", "bit"):
            raise SourceUnsupported(
                f"{self.where}: vector {name!r} of index {index!r} has element_type "
                f"{element!r}, which vec2pg does not know"
            )
        rows = kind == "rank_vectors" or nested
        if rows and element == "bit":
            return None  # a list of bit vectors has no column type: kept in the metadata
        dims = spec.get("dims")
        if not isinstance(dims, int) or dims < 1:
            raise SourceUnsupported(
                f"{self.where}: vector {name!r} of index {index!r} has no dimension yet (no "
                "document has set it): index a document first, or map its dims"
            )
        similarity = spec.get("similarity")
        if element == "bit":
            # Bit vectors are compared by Hamming distance whatever the similarity says.
            metric: Metric | None = Metric.HAMMING
        elif kind == "rank_vectors":
            metric = Metric.DOT  # scored by MaxSim over dot products
        else:
            metric = _ES_METRICS.get(str(similarity)) if similarity else None
        return vector_field(name, path, element, dims, metric, rows)

    def _check_source(
        self, index: str, mapping: Mapping[str, Any], specs: list[VectorSpec], info: _Index
    ) -> None:
        """Refuse an index whose ``_source`` does not hold its vectors (they cannot be read)."""
        source = mapping.get("_source") or {}
        if source.get("enabled") is False or str(source.get("mode")) == "disabled":
            raise SourceUnsupported(
                f"{self.where}: index {index!r} does not keep its documents' _source, so "
                "its vectors and fields cannot be read back: reindex it with _source enabled"
            )
        excludes = [str(p) for p in _as_list(source.get("excludes") or source.get("exclude"))]
        includes = [str(p) for p in _as_list(source.get("includes") or source.get("include"))]
        left_out = [
            spec.name
            for spec in specs
            if any(_matches(spec.name, p) for p in excludes)
            or (includes and not any(_matches(spec.name, p) for p in includes))
        ]
        if left_out and not info.rehydrated:
            raise SourceUnsupported(
                f"{self.where}: index {index!r} leaves {', '.join(map(repr, left_out))} out "
                "of _source (its mapping's _source excludes), so those vectors cannot be "
                "read back: reindex it keeping them"
            )
        if info.rehydrated and not self._exclude_vectors_option:
            raise SourceUnsupported(
                f"{self.where}: index {index!r} keeps its vectors out of _source "
                "(index.mapping.exclude_source_vectors) and the server does not say it "
                "returns them on request"
            )

    def _count(self, index: str) -> int:
        answer = self._get(f"/{index_path(index)}/_count", f"counting the documents of {index!r}")
        return int(answer["count"])

    # -- chains -----------------------------------------------------------------------------

    def partitions(
        self, namespace: str, count: int | None, want: int, call: Call
    ) -> tuple[str, ...]:
        """One chain per shard, or ``_seq_no`` ranges of each shard when there are fewer
        shards than chains wanted (see the module's docstring)."""
        shards = self._index(namespace).shards
        if count is None or count < SPLIT_MIN_PAGES * self.page_size or want < 2:
            return (WHOLE,)
        per_shard = math.ceil(want / shards)
        chains = []
        for shard in range(shards):
            if per_shard == 1:
                chains.append(_Chain(shard, shards).key)
                continue
            top = call(self._max_seq_no, namespace, shard, shards)
            if top is None or top < per_shard:  # an empty (or nearly empty) shard
                chains.append(_Chain(shard, shards).key)
                continue
            bounds = sorted({top * i // per_shard for i in range(1, per_shard)})
            lows = [0, *bounds]
            highs: list[int | None] = [*bounds, None]
            chains += [
                _Chain(shard, shards, lo, hi).key for lo, hi in zip(lows, highs, strict=True)
            ]
        return tuple(chains)

    def _max_seq_no(self, namespace: str, shard: int, shards: int) -> int | None:
        body: dict[str, Any] = {"size": 1, "sort": [{"_seq_no": "desc"}], "_source": False}
        if shards > 1:
            body["slice"] = {"id": shard, "max": shards}
        doing = f"splitting shard {shard} of {self._index(namespace).name!r}"
        content, _ = self._search(namespace, body, doing)
        answer = orjson_loads(content)
        hits = (answer.get("hits") or {}).get("hits") or []
        return int(hits[0]["sort"][0]) if hits else None

    def page(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        chain, shard, after = self._where(namespace, partition, cursor)
        body = self._body(chain, shard, after, self.page_size)
        if self._exclude_vectors_option:
            body["_source"] = {"exclude_vectors": False}
        content, scan = self._search(namespace, body, self._reading(namespace))
        if scan.last is None and scan.hits:
            raise SourceUnavailable(  # cut short on its way
                f"{self.where} sent a search answer without its last sort values while "
                f"{self._reading(namespace)} ({len(content):,} bytes)"
            )
        decode = partial(decode_search, self._decode[namespace])
        return Page(
            load=partial(decode, content),
            next_cursor=self._next(chain, shard, scan.hits, scan.last, self.page_size),
            size=scan.hits,
            read=partial(Raw, content, decode),
        )

    def page_ids(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        """A page of ids only (``_source`` left out), up to 10,000 a search."""
        chain, shard, after = self._where(namespace, partition, cursor)
        body = self._body(chain, shard, after, self.ids_page_size)
        body["_source"] = False
        doing = f"listing the ids of {self._index(namespace).name!r}"
        content, _ = self._search(namespace, body, doing)
        answer = orjson_loads(content)
        hits = (answer.get("hits") or {}).get("hits") or []
        ids = [str(hit["_id"]) for hit in hits]
        last = int(hits[-1]["sort"][0]) if hits else None
        return Page(
            load=partial(self._fetch_all, namespace, ids),
            next_cursor=self._next(chain, shard, len(hits), last, self.ids_page_size),
            size=len(ids),
            ids=ids,
        )

    def _where(
        self, namespace: str, partition: str, cursor: Cursor
    ) -> tuple[_Chain, int, int | None]:
        """The chain of ``partition``, the shard its page at ``cursor`` is in, and the
        ``_seq_no`` after which it starts; a chain of another shard count is refused."""
        shards = self._index(namespace).shards
        chain = _Chain.parse(partition, shards)
        if chain.shard is not None:
            saved = chain.shards
            shard, after = chain.shard, None if cursor is None else int(cursor)
        elif cursor is None:
            saved, shard, after = shards, 0, None
        else:
            match = _WHOLE_CURSOR.fullmatch(str(cursor))
            if match is None:
                raise SourceError(
                    f"{cursor!r} is not a cursor of this source: run again with --restart"
                )
            shard, saved = int(match.group(1)), int(match.group(2))
            after = int(match.group(3)) if match.group(3) else None
        if saved != shards:
            raise SourceError(
                f"{self.where}: index {self._index(namespace).name!r} has {shards} shards, "
                f"{saved} when the interrupted run read it (split or shrunk since), so its "
                "saved progress no longer applies: run again with --restart"
            )
        return chain, shard, after

    def _body(self, chain: _Chain, shard: int, after: int | None, size: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "size": size,
            "sort": [{"_seq_no": "asc"}],
            "track_total_hits": False,
        }
        if chain.shards > 1:
            # max = the number of shards: each slice is one whole shard, in every PIT.
            body["slice"] = {"id": shard, "max": chain.shards}
        if chain.lo is not None or chain.hi is not None:
            bounds = {"gte": chain.lo or 0}
            if chain.hi is not None:
                bounds["lt"] = chain.hi
            body["query"] = {"range": {"_seq_no": bounds}}
        if after is not None:
            # Only the _seq_no: Elasticsearch's _shard_doc tiebreaker belongs to one PIT.
            body["search_after"] = [after]
        return body

    @staticmethod
    def _next(chain: _Chain, shard: int, hits: int, last: int | None, size: int) -> Cursor:
        """The cursor after a page of ``hits`` (``size`` asked for) ending at ``last``."""
        more = hits >= size and last is not None
        if chain.shard is not None:
            return last if more else None
        if more:
            return f"{shard}/{chain.shards}:{last}"
        if shard + 1 < chain.shards:  # on to the next shard
            return f"{shard + 1}/{chain.shards}:"
        return None

    def fetch(self, namespace: str, ids: Sequence[str]) -> list[Record]:
        """The documents of ``namespace`` with these ids, as they are now (no PIT)."""
        if not ids:
            return []
        index = self._index(namespace).name
        body: dict[str, Any] = {"query": {"ids": {"values": list(ids)}}, "size": len(ids)}
        if self._exclude_vectors_option:
            body["_source"] = {"exclude_vectors": False}
        doing = f"fetching documents of {index!r}"
        status, content, headers = self._request(
            "POST",
            f"/{index_path(index)}/_search",
            doing,
            body,
            {"allow_partial_search_results": "false"},
        )
        if status != 200:
            raise self._error(status, content, headers, doing)
        _scan(content, self.where, doing)  # refuses an answer missing shards
        return decode_search(self._decode[namespace], content)

    def _fetch_all(self, namespace: str, ids: list[str]) -> list[Record]:
        records: list[Record] = []
        for start in range(0, len(ids), FETCH_MAX_IDS):
            records += self.fetch(namespace, ids[start : start + FETCH_MAX_IDS])
        return records

    def close(self) -> None:
        with self._pit_lock:
            pits, self._pits = list(self._pits.values()), {}
        for pit in pits:
            try:  # best effort: a PIT left behind expires after KEEP_ALIVE
                self._close_pit(pit)
            except Exception:  # closing must not hide what ended the run
                pass
        self._http.close()

    # -- points in time ---------------------------------------------------------------------

    def _open_pit(self, index: str) -> str:
        answer = self._post(
            f"/{index_path(index)}/_pit",
            None,
            f"opening a point in time on {index!r}",
            {"keep_alive": KEEP_ALIVE},
        )
        return str(answer["id"])

    def _close_pit(self, pit: str) -> None:
        self._http.request("DELETE", "/_pit", body=json_body({"id": pit}), timeout=CLOSE_TIMEOUT)

    def _pit(self, namespace: str) -> str:
        with self._pit_lock:
            pit = self._pits.get(namespace)
            if pit is None:
                # Opened under the lock: the chains of a namespace share one snapshot.
                pit = self._pits[namespace] = self._open_pit(self._index(namespace).name)
            return pit

    def _search(self, namespace: str, body: dict[str, Any], doing: str) -> tuple[bytes, _Scan]:
        """A search of ``namespace``'s PIT: the answer (status 200, every shard in it) and
        what the walker needs of it."""
        pit = self._pit(namespace)
        body = {**body, "pit": {"id": pit, "keep_alive": KEEP_ALIVE}}
        status, content, headers = self._request(
            "POST", "/_search", doing, body, {"allow_partial_search_results": "false"}
        )
        if status == 404 and b"search_context_missing_exception" in content:
            with self._pit_lock:
                if self._pits.get(namespace) == pit:
                    del self._pits[namespace]  # the next try opens another
            raise SourceUnavailable(
                f"{self.where}: the point in time on {self._index(namespace).name!r} expired "
                f"while {doing} (keep-alive {KEEP_ALIVE}); a new one goes on from the last page"
            )
        if status != 200:
            raise self._error(status, content, headers, doing)
        scan = _scan(content, self.where, doing)
        if scan.pit and scan.pit != pit:  # the server may answer a new id: use the latest
            with self._pit_lock:
                if self._pits.get(namespace) == pit:
                    self._pits[namespace] = scan.pit
        return content, scan

    # -- HTTP -------------------------------------------------------------------------------

    def _index(self, namespace: str) -> _Index:
        index = self._indices.get(namespace)
        if index is None:
            raise SourceError(f"{self.where}: no namespace {namespace!r} (describe() first)")
        return index

    def _reading(self, namespace: str) -> str:
        return f"reading {self._index(namespace).name!r}"

    def _get(
        self, path: str, doing: str, *, params: Mapping[str, str] | None = None, index: bool = False
    ) -> Any:
        status, content, headers = self._request("GET", path, doing, None, params)
        if status != 200:
            raise self._error(status, content, headers, doing, index=index)
        return orjson_loads(content)

    def _post(
        self, path: str, body: Any, doing: str, params: Mapping[str, str] | None = None
    ) -> Any:
        status, content, headers = self._request("POST", path, doing, body, params)
        if status != 200:
            raise self._error(status, content, headers, doing, index=True)
        return orjson_loads(content)

    def _request(
        self,
        method: str,
        path: str,
        doing: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes, Mapping[str, str]]:
        import urllib3

        try:
            return self._http.request(
                method, path, params=params, body=None if body is None else json_body(body)
            )
        except urllib3.exceptions.HTTPError as exc:  # timeouts, refused and dropped connections
            error = SourceUnreachable if unreachable(exc) else SourceUnavailable
            raise error(f"{self.where} did not answer while {doing}: {_describe(exc)}") from exc

    def _error(
        self,
        status: int,
        content: bytes,
        headers: Mapping[str, str],
        doing: str,
        *,
        index: bool = False,
    ) -> SourceError:
        reason, kind = _reason(content)
        if status in (401, 403):
            return self._auth_error(status, reason, doing)
        if status == 404 and index and kind in ("index_not_found_exception", ""):
            return self._not_found(f"no index, alias or data stream {self.index!r}")
        return status_error(
            status,
            reason,
            where=self.where,
            credentials="",
            doing=doing,
            retry_after=parse_retry_after(headers.get("retry-after")),
        )

    def _auth_error(self, status: int, reason: str, doing: str) -> SourceAuthError:
        if status == 401:
            fix = self._credentials_hint() if self._credentials else self._no_credentials_hint()
            return SourceAuthError(
                f"{self.where} refused the credentials (HTTP 401: {reason}): {fix}"
            )
        return SourceAuthError(
            f"{self.where} refused {doing} (HTTP 403: {reason}): the user needs the read and "
            f"view_index_metadata privileges on {self.index!r}"
        )

    def _credentials_hint(self) -> str:
        return (
            f"check --api-key ({self.envvar}_API_KEY), or --user and --password "
            f"({self.envvar}_USER, {self.envvar}_PASSWORD)"
        )

    def _no_credentials_hint(self) -> str:
        return "the server needs credentials: pass --api-key, or --user and --password"

    def _not_found(self, what: str) -> SourceNotFound:
        """``what`` is missing, and the names of what the server has (the closest first)."""
        try:
            names = self._names()
        except SourceError:
            names = []
        wanted = self.index.split(",")[0]
        has = f"; {names_hint(wanted, names, 'it has')}"
        return SourceNotFound(f"{self.where}: {what}{has}")

    def _names(self) -> list[str]:
        """The server's indices and aliases, hidden and system ones left out."""
        rows = self._get(
            "/_cat/indices", "listing indices", params={"format": "json", "h": "index"}
        )
        names = {str(row["index"]) for row in rows or ()}
        aliases = self._get("/_alias", "listing aliases")
        for entry in (aliases or {}).values():
            names.update(str(alias) for alias in (entry or {}).get("aliases") or {})
        return sorted(n for n in names if not n.startswith("."))


def vector_field(
    name: str,
    path: tuple[str, ...],
    element: str,
    dims: int,
    metric: Metric | None,
    rows: bool,
) -> tuple[VectorField, VectorSpec]:
    if element == "bit":
        kind = VectorKind.BINARY
    else:
        kind = VectorKind.MULTI if rows else VectorKind.DENSE
    return VectorField(name, kind, dims, metric), VectorSpec(name, path, element, dims, rows)


def _rehydration_note(
    product: str,
    index: str,
    mapping: Mapping[str, Any],
    specs: list[tuple[VectorField, VectorSpec]],
) -> str | None:
    """What an index that keeps vectors out of ``_source`` cannot give back exactly."""
    lossy = []
    for vector_field, spec in specs:
        if spec.element == "bfloat16":
            lossy.append(f"{spec.name!r} (bfloat16: rounded to 8 bits of mantissa)")
        elif spec.element == "float" and vector_field.metric is Metric.COSINE:
            lossy.append(
                f"{spec.name!r} (cosine: re-normalised, one unit in the last place off in "
                "about 1.5% of the values)"
            )
    sparse = _sparse_fields(mapping.get("properties") or {}, ())
    if sparse:
        lossy.append(
            f"{', '.join(map(repr, sparse))} (sparse_vector, in the metadata: 9 bits of mantissa)"
        )
    if not lossy:
        return None
    return (
        f"{product} index {index!r} keeps its vectors only in its vector index "
        "(index.mapping.exclude_source_vectors) and rebuilds them when asked: "
        f"{'; '.join(lossy)}. The table holds what {product} returns (verify compares with "
        "that); the values as first indexed cannot be read back from this index"
    )


def _sparse_fields(properties: Mapping[str, Any], prefix: tuple[str, ...]) -> list[str]:
    found = []
    for key, spec in sorted(properties.items()):
        path = (*prefix, key)
        if "properties" in spec:
            found += _sparse_fields(spec["properties"], path)
        elif spec.get("type") == "sparse_vector":
            found.append(".".join(path))
    return found


def _describe_field(vector_field: VectorField) -> str:
    metric = vector_field.metric.value if vector_field.metric else "no metric"
    return f"{vector_field.kind.value} {vector_field.dim}, {metric}"


# -- HTTP ------------------------------------------------------------------------------------


class _Http:
    """Requests to the server over a pool of kept-alive connections (urllib3): certificates
    from ``ca_certs``, ``SSL_CERT_FILE`` or certifi, a proxy from the environment
    (``HTTPS_PROXY``, ``NO_PROXY``, ...). Nothing is retried here: the pipeline retries."""

    def __init__(
        self,
        base: str,
        headers: dict[str, str],
        timeout: float,
        ca_certs: str | None,
        connections: int,
    ) -> None:
        if ca_certs and not os.path.isfile(ca_certs):
            raise ConfigError(f"--ca-certs {ca_certs}: no such file")
        self.base = base
        self.timeout = timeout
        self._pool: Any = connection_pool(
            base, headers, timeout=timeout, connections=connections, ca=ca_certs
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout: float | None = None,
    ) -> tuple[int, bytes, Mapping[str, str]]:
        from urllib.parse import urlencode

        import urllib3

        url = self.base + path + (f"?{urlencode(params)}" if params else "")
        kwargs: dict[str, Any] = {}
        if timeout is not None:
            kwargs["timeout"] = urllib3.Timeout(connect=timeout, read=timeout)
        response = self._pool.request(
            method, url, body=body, preload_content=True, redirect=False, **kwargs
        )
        return response.status, response.data, response.headers

    def close(self) -> None:
        self._pool.clear()


def _encoded_api_key(api_key: str) -> str:
    """An API key as the ``ApiKey`` header takes it: the encoded form Kibana shows, or
    ``id:api_key`` (encoded here)."""
    if ":" in api_key:
        return base64.b64encode(api_key.encode()).decode()
    return api_key


def index_path(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe=",*")


def json_body(body: Any) -> bytes:
    import orjson

    data: bytes = orjson.dumps(body)
    return data


def orjson_loads(content: bytes) -> Any:
    import orjson

    return orjson.loads(content)


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Settings as dotted keys, whether the server nested them or not."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _version(number: str) -> tuple[int, int, int] | None:
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", number)
    if match is None:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def _reason(content: bytes) -> tuple[str, str]:
    """An error answer's reason and type (Elasticsearch's error shape, which OpenSearch
    kept; OpenSearch's security plugin answers plain text)."""
    try:
        answer = orjson_loads(content)
    except ValueError:
        text = content.decode("utf-8", "replace").strip().splitlines()
        return (text[0][:300] if text else "no details"), ""
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        causes = error.get("root_cause") or []
        cause = causes[0] if causes and isinstance(causes[0], dict) else error
        reason = str(cause.get("reason") or error.get("reason") or error.get("type") or "")
        return reason[:300], str(cause.get("type") or error.get("type") or "")
    if isinstance(error, str):
        return error[:300], ""
    return content.decode("utf-8", "replace").strip()[:300] or "no details", ""


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _matches(name: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(name, pattern) or name.startswith(pattern + ".")


# -- reading answers -------------------------------------------------------------------------


def _scan(content: bytes, where: str = "", doing: str = "") -> _Scan:
    """How many hits a search answer holds, the last one's ``_seq_no`` and the PIT id,
    without decoding it (the walker needs them; the records are decoded elsewhere). An
    answer that is missing shards (a timeout, a failed shard) is worth asking again."""
    hits_at = content.find(b'"hits":{')
    if hits_at < 0:
        raise SourceUnavailable(
            f"{where} sent an answer without hits while {doing} ({len(content):,} bytes)"
        )
    try:
        head = orjson_loads(content[:hits_at].rstrip().rstrip(b",") + b"}")
    except ValueError as exc:
        raise SourceUnavailable(
            f"{where} sent an answer that does not parse while {doing} ({exc})"
        ) from exc
    shards = head.get("_shards") or {}
    if head.get("timed_out") or shards.get("failed"):
        failures = shards.get("failures") or [{}]
        reason = ((failures[0] or {}).get("reason") or {}).get("reason") or "timed out"
        raise SourceUnavailable(
            f"{where} answered without {shards.get('failed', 0)} of {shards.get('total', '?')} "
            f"shards while {doing} ({reason})"
        )
    # Every hit ends with its sort values (one pass over the bytes, ~8 ms for 11 MB). A
    # document's own field "sort" holding an array would be counted too: the page then
    # seems larger than it is, and at worst one more (empty) page is asked for.
    hits = content.count(b'"sort":[', hits_at)
    last = None
    if hits:
        match = _LAST_SORT.search(content, max(hits_at, len(content) - 512))
        if match is not None:
            last = int(match.group(1))
        else:  # not the usual layout: read the answer's hits
            found = (orjson_loads(content).get("hits") or {}).get("hits") or []
            hits = len(found)
            last = int(found[-1]["sort"][0]) if found else None
    pit = head.get("pit_id")
    return _Scan(hits, last, str(pit) if pit else None)


def decode_search(spec: DecodeSpec, content: bytes) -> list[Record]:
    """The records of a search answer (:class:`~vec2pg.sources.base.Raw`'s decode: it may
    run in any process). An answer that does not parse was cut short on its way: a
    transient failure, and the page is read again."""
    try:
        return _decode(spec, content)
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise SourceUnavailable(
            f"{spec.where} sent an answer that does not parse ({type(exc).__name__}: {exc}; "
            f"{len(content):,} bytes)"
        ) from exc


def _decode(spec: DecodeSpec, content: bytes) -> list[Record]:
    answer, simd = parse_json(content)
    return _records(spec, answer, _SIMDJSON if simd else _PLAIN)


@dataclass(frozen=True, slots=True)
class _Json:
    """How to look at parsed JSON: simdjson's lazy proxies, or Python's dicts and lists."""

    is_object: Callable[[Any], bool]
    is_array: Callable[[Any], bool]
    plain: Callable[[Any], Any]  # a container as Python values
    doubles: Callable[[Any], np.ndarray]  # an array of numbers as float64, else TypeError


def _simdjson_doubles(array: Any) -> np.ndarray:
    return np.frombuffer(array.as_buffer(of_type="d"), dtype=np.float64)


def _plain_doubles(array: Any) -> np.ndarray:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in array):
        raise TypeError("not a list of numbers")
    return np.asarray(array, dtype=np.float64)


def _simdjson_plain(value: Any) -> Any:
    as_dict = getattr(value, "as_dict", None)
    if as_dict is not None:
        return as_dict()
    as_list = getattr(value, "as_list", None)
    return as_list() if as_list is not None else value


def _is_simdjson_object(value: Any) -> bool:
    return hasattr(value, "as_dict")


def _is_simdjson_array(value: Any) -> bool:
    return hasattr(value, "as_buffer")


_SIMDJSON = _Json(_is_simdjson_object, _is_simdjson_array, _simdjson_plain, _simdjson_doubles)
_PLAIN = _Json(
    lambda v: isinstance(v, dict), lambda v: isinstance(v, list), lambda v: v, _plain_doubles
)


def _records(spec: DecodeSpec, answer: Any, js: _Json) -> list[Record]:
    hits = answer["hits"]["hits"]
    names = {vector.name for vector in spec.vectors}
    # The paths that lead to a vector: objects on them are copied key by key.
    prefixes = {".".join(v.path[:i]) for v in spec.vectors for i in range(1, len(v.path))}
    read: list[tuple[str, dict[str, Any], Any, list[str]]] = []
    floats: dict[str, list[tuple[int, np.ndarray]]] = {}  # float64 rows, rounded together
    for number, hit in enumerate(hits):
        source = hit.get("_source")
        vectors: dict[str, Any] = {}
        problems: list[str] = []
        metadata = None
        if source is not None:
            for vector in spec.vectors:
                values = list(_values_at(source, vector.path, js))
                if not values:
                    continue
                try:
                    converted = _convert(vector, values, js)
                except ValueError as exc:  # rejected with its reason, as the sink rejects
                    vectors[vector.name] = [js.plain(v) for v in values]
                    problems.append(f"vector {vector.name!r} {exc}")
                    continue
                if converted is not None and converted.dtype == np.float64:
                    floats.setdefault(vector.name, []).append((number, converted))
                vectors[vector.name] = converted
            metadata = _metadata(source, names, prefixes, "", js)
        read.append((str(hit["_id"]), vectors, metadata, problems))
    for name, rows in floats.items():
        for (number, _), rounded in zip(rows, _float32_rows([r for _, r in rows]), strict=True):
            read[number][1][name] = rounded
    return [
        Record(rid, vectors, metadata, spec.namespace, invalid="; ".join(problems) or None)
        for rid, vectors, metadata, problems in read
    ]


def _values_at(node: Any, path: tuple[str, ...], js: _Json) -> Iterator[Any]:
    """The values at ``path`` in a document: through arrays of objects (nested), and
    through dotted keys (``{"a.b": ...}`` is ``{"a": {"b": ...}}`` to the engines)."""
    if not path:
        if node is not None:
            yield node
        return
    if js.is_array(node) and path:
        for item in node:
            if js.is_object(item):
                yield from _values_at(item, path, js)
        return
    if not js.is_object(node):
        return
    for cut in range(1, len(path) + 1):
        key = ".".join(path[:cut])
        if key in node:
            yield from _values_at(node[key], path[cut:], js)


def _convert(vector: VectorSpec, values: list[Any], js: _Json) -> Any:
    """A field's values as the column takes them: float32 (rows: 2-D), or packed bits."""
    if vector.rows:
        if len(values) == 1 and js.is_array(values[0]) and _rows_inside(values[0], js):
            rows = list(values[0])  # rank_vectors: one array of vectors
        else:
            rows = values  # one vector per nested object
        converted = [_one(vector, row, js) for row in rows]
        if not converted:
            return None
        lengths = {len(r) for r in converted}
        if len(lengths) > 1:
            raise ValueError(f"holds vectors of {', '.join(map(str, sorted(lengths)))} values")
        with np.errstate(over="ignore"):  # infinity: the sink refuses it with the id
            return np.stack(converted).astype(np.float32)
    if len(values) > 1:
        raise ValueError(f"has {len(values)} values in one document")
    return _one(vector, values[0], js)


def _rows_inside(array: Any, js: _Json) -> bool:
    first = next(iter(array), None)
    return first is not None and (js.is_array(first) or isinstance(first, str))


def _one(vector: VectorSpec, value: Any, js: _Json) -> np.ndarray:
    if isinstance(value, str):  # byte and bit vectors may be indexed as hex
        if vector.element not in ("byte", "bit"):
            raise ValueError("is a string, not a list of numbers")
        try:
            raw = np.frombuffer(bytes.fromhex(value), dtype=np.int8)
        except ValueError:
            raise ValueError("is a string that is not hexadecimal") from None
    elif js.is_array(value):
        try:
            numbers = js.doubles(value)
        except TypeError:
            raise ValueError("is not a list of numbers") from None
        if vector.element not in ("byte", "bit"):
            return numbers  # float64: rounded to float32 with its page
        if not (np.all(numbers == np.round(numbers)) and np.all(np.abs(numbers + 0.5) <= 128)):
            raise ValueError(f"holds values that are not {vector.element}s (-128..127)")
        raw = numbers.astype(np.int8)
    else:
        raise ValueError("is not a list of numbers")
    if vector.element == "bit":
        if raw.size * 8 != vector.dim:
            raise ValueError(f"has {raw.size * 8} bits; the mapping has {vector.dim}")
        return raw.view(np.uint8)  # signed bytes as the engines send them: the same bits
    return raw.astype(np.float32)


def _float32_rows(rows: list[np.ndarray]) -> list[np.ndarray]:
    """float64 rows as float32 (a value beyond float32 becomes infinity, which the sink
    refuses with the record's id), converted together when they are of one length."""
    with np.errstate(over="ignore"):
        if len({row.size for row in rows}) == 1:  # one pass: copied and rounded at once
            return list(np.stack(rows, dtype=np.float32, casting="same_kind"))
        return [row.astype(np.float32) for row in rows]


def _metadata(node: Any, names: set[str], prefixes: set[str], prefix: str, js: _Json) -> Any:
    """``_source`` without its vector fields, as Python values (an object on the way to a
    vector is copied key by key, everything else converted whole)."""
    if js.is_array(node):
        return [_metadata(item, names, prefixes, prefix, js) for item in node]
    if not js.is_object(node):
        return node
    out = {}
    for key in node.keys():
        path = prefix + key
        if path in names:
            continue
        value = node[key]
        if path in prefixes:
            out[key] = _metadata(value, names, prefixes, path + ".", js)
        else:
            out[key] = js.plain(value)
    return out
