"""Milvus and Milvus Lite: page every partition of a collection by primary key.

A collection is read partition by partition (each a namespace of the table), in
primary-key order, a page at a time: the query iterator's requests (``iterator=True``
and ``reduce_stop_for_best``, which make Milvus return the smallest keys after a filter,
in key order), each filtered to the keys after the last one read. That last key is the
cursor, so a run resumes exactly from its last commit in a new process: pymilvus's own
``QueryIterator`` keeps its position in the process and builds its key filter without
escaping (a varchar key holding a backslash or a quote stops it mid-way with "unknown
escape sequence"). Plain offset paging would stop at Milvus's 16,384-row window.

Every vector field becomes a column of its own: float vectors ``vector(dim)``, float16
and bfloat16 ``halfvec(dim)`` (the values as they are), int8 vectors ``vector(dim)``
(exact), sparse ones ``sparsevec``, binary ones ``bit(dim)``; each with the metric of its
index. Scalar fields and the dynamic field's keys become the metadata; the primary key
(int64 or varchar) is the id. Fields a function computes (BM25's sparse output) are left
out: Milvus makes them from their input, which is in the metadata.

A URI ending in ``.db`` is a Milvus Lite database (a folder, in Milvus Lite 3), served by
pymilvus in a thread of this process. It holds float and sparse vectors only, returns no
MVCC timestamp (a read is not a snapshot), and scans a whole partition for every page, so
pages are large.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
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
    SourceUnreachable,
    Transient,
)
from vec2pg.masking import mask_dsn
from vec2pg.records import (
    Cursor,
    Metric,
    Namespace,
    Record,
    SourceInfo,
    SparseVector,
    VectorField,
    VectorKind,
)
from vec2pg.sources.base import WHOLE, Call, Page
from vec2pg.sources.http import names_hint

if TYPE_CHECKING:
    from pymilvus import MilvusClient

#: Milvus's most rows a query returns (pymilvus's MAX_BATCH_SIZE, Milvus's
#: quotaAndLimits.limits.maxQueryResultWindow): the largest page.
MAX_BATCH_SIZE = 16_384
#: Bytes of vectors a page holds by default: 2,730 rows of 768 dimensions from a server.
PAGE_BYTES = 8 << 20
#: The same for Milvus Lite, which scans the whole partition for each page (it copies
#: every vector of it: 300 MB a query at 100,000 x 768), so fewer, larger pages are
#: faster. Measured at 100,000 x 768, in CPU per row: 385 us with 8 MB pages, 352 with
#: 16 MB, 306 with 32 MB (about 10,000 rows); the peak memory of the process, Lite's
#: included, grew from 1.3 to 1.6 GB (Lite builds a Python float per value it answers).
LITE_PAGE_BYTES = 32 << 20
#: Ids a page of ``page_ids`` holds: a key is a few bytes, so the largest page Milvus allows.
IDS_BATCH_SIZE = MAX_BATCH_SIZE
#: A partition of fewer pages than this is one chain; a longer one is split into key
#: ranges of two pages or more (:meth:`MilvusSource.partitions`).
SPLIT_MIN_PAGES = 4
#: Keys sampled per chain to find the bounds of the ranges (one search; Milvus's topK
#: is at most 16,384).
SAMPLE_PER_CHAIN = 32
#: The partition key of a key-range chain: ``range:[low, high]`` (JSON; null: unbounded).
_RANGE = "range:"
#: What a sparse vector and a scalar field are taken to weigh when sizing pages.
SPARSE_ROW_BYTES = 1024
SCALAR_ROW_BYTES = 64

#: Milvus's index metrics, as pgvector names them; others (BM25, SUBSTRUCTURE, ...) have
#: no pgvector operator class.
_METRICS = {
    "L2": Metric.EUCLIDEAN,
    "IP": Metric.DOT,
    "COSINE": Metric.COSINE,
    "HAMMING": Metric.HAMMING,
    "JACCARD": Metric.JACCARD,
}
#: Milvus's error codes (merr): collection and partition not found, rate limited,
#: credentials refused, a collection that is not loaded.
_NOT_FOUND = {100, 200}
_RATE_LIMIT = 8
_AUTH = {1800, 1801}
_NOT_LOADED = 101


@dataclass(frozen=True, slots=True)
class _Vector:
    """A vector field: its name, how its values come from pymilvus, and its column."""

    name: str
    kind: str  # "float", "float16", "bfloat16", "int8", "binary", "sparse"
    dim: int | None

    def convert(self, value: Any) -> Any:
        """The value as vec2pg's record holds it; ValueError when it is not one."""
        if value is None:
            return None
        if self.kind == "float":
            if isinstance(value, np.ndarray) and value.dtype == np.float32:
                return value  # strict_float32: a view of the page's buffer
            return np.asarray(value, dtype=np.float32)
        if self.kind == "sparse":
            if not isinstance(value, dict):
                raise ValueError(f"vector {self.name!r} is not a sparse vector")
            return SparseVector(
                np.fromiter(value.keys(), np.int64, len(value)),
                np.fromiter(value.values(), np.float32, len(value)),
            )
        # The byte vectors come as a one-element list holding their bytes.
        data = value[0] if isinstance(value, list) and len(value) == 1 else value
        if not isinstance(data, bytes):
            raise ValueError(f"vector {self.name!r} is not {self.kind} bytes")
        dim = int(self.dim or 0)
        width = {"float16": 2 * dim, "bfloat16": 2 * dim, "int8": dim}.get(self.kind, dim // 8)
        if len(data) != width:
            size = f"{dim} bits" if self.kind == "binary" else f"{dim} dimensions"
            article = "an" if self.kind == "int8" else "a"
            raise ValueError(
                f"vector {self.name!r} is {len(data)} bytes; {article} {self.kind} vector of "
                f"{size} is {width}"
            )
        if self.kind == "float16":
            return np.frombuffer(data, dtype="<f2").astype(np.float32)
        if self.kind == "bfloat16":  # the high half of a float32: exact
            return (np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        if self.kind == "int8":
            return np.frombuffer(data, dtype=np.int8).astype(np.float32)
        return np.frombuffer(data, dtype=np.uint8)  # binary: packed, first bit first


class MilvusSource:
    """Read every row of every partition of a Milvus collection, or of a Milvus Lite one."""

    def __init__(
        self,
        collection: str,
        *,
        uri: str | None = None,
        token: str | None = None,
        db_name: str | None = None,
        batch_size: int | None = None,
        timeout: float = 60.0,
        client: Any = None,
    ) -> None:
        """``client``: an open ``MilvusClient`` to read through instead of connecting to
        ``uri`` (which then only names it); it is left open at :meth:`close`."""
        if not uri and client is None:
            raise ConfigError(
                "name the Milvus to read from: --uri (or MILVUS_URI), http://host:19530 for "
                "a server or a Milvus Lite database such as ./milvus.db"
            )
        if batch_size is not None and not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ConfigError(f"--batch-size must be 1 to {MAX_BATCH_SIZE:,}, not {batch_size}")
        self.collection = collection
        self.uri = uri or ""
        self.lite = client is None and "://" not in self.uri and self.uri.endswith(".db")
        if client is None and not self.lite and "://" not in self.uri:
            raise ConfigError(
                f"--uri {uri!r} is neither a Milvus server (http://host:19530) nor a Milvus "
                "Lite database (a path ending in .db)"
            )
        # A URL may carry credentials (http://user:password@host): never print them.
        if self.lite:
            self.location = os.path.abspath(self.uri)
        else:
            self.location = mask_dsn(self.uri) if self.uri else "the MilvusClient given"
        self.batch_size = batch_size
        self._token = token
        self._db_name = db_name
        self._timeout = timeout
        self._client: MilvusClient | None = client
        self._owns_client = client is None
        self._release_lite = False  # whether close() stops the Lite server this started
        self._primary_key = ""
        self._int_keys = True
        self._vectors: tuple[_Vector, ...] = ()
        self._skipped: tuple[str, ...] = ()  # fields a function computes
        #: Every field and the dynamic field's keys (Milvus Lite includes BM25's output,
        #: which is then dropped).
        self._output_fields: list[str] = ["*"]
        self._partition_key = False  # partitions are Milvus's, not the user's
        self._collection_id: int | None = None
        #: Each chain's MVCC timestamp, from its first page (the query iterator's session):
        #: later pages of the chain read the same snapshot. Milvus Lite has none.
        self._session_ts: dict[tuple[str, str, bool], int] = {}

    # -- connecting --------------------------------------------------------------------

    def _connect(self) -> MilvusClient:
        if self._client is not None:
            return self._client
        import pymilvus

        # pymilvus logs each failed request, with a traceback, through a stderr handler of
        # its own; vec2pg says what failed, once. Milvus Lite logs its own failures too.
        for name in ("pymilvus", "pymilvus.milvus_client", "milvus_lite"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        if self.lite:
            self._check_lite()
        try:
            self._client = pymilvus.MilvusClient(
                uri=self.uri,
                token=self._token or "",
                db_name=self._db_name or "",
                timeout=self._timeout,
            )
        except pymilvus.exceptions.MilvusException as exc:
            raise self._connection_error(exc) from exc
        return self._client

    def _check_lite(self) -> None:
        """What pymilvus would not say about a Milvus Lite path: it creates a database
        where there is none, and says only "Open local milvus failed" when the folder is
        another process's."""
        import importlib.util

        if importlib.util.find_spec("milvus_lite") is None:
            raise ConfigError(
                "a Milvus Lite database (--uri ending in .db) needs milvus-lite: "
                "pip install 'vec2pg[milvus-lite]'"
            )
        if os.path.isfile(self.location):
            raise SourceError(
                f"{self.location} is a file, not a Milvus Lite database folder: Milvus Lite 3 "
                "keeps a database in a folder and cannot read Milvus Lite 2's single files"
            )
        if not os.path.isdir(os.path.join(self.location, "collections")):
            raise SourceNotFound(f"no Milvus Lite database at {self.location}")
        from milvus_lite.server_manager import server_manager_instance

        served = getattr(server_manager_instance, "_servers", None)
        # Stop, at close(), the in-process server this source starts (not one this process
        # already ran): until then its folder stays locked against other processes.
        self._release_lite = isinstance(served, dict) and self.location not in served

    def _connection_error(self, exc: Any) -> SourceError:
        message = _message(exc)
        if self.lite:
            if _locked(self.location):
                return SourceError(
                    f"Milvus Lite database {self.location} is open in another process (Milvus "
                    "Lite locks its folder): stop that process, or serve the folder "
                    "(milvus-lite server --data-dir ...) and pass its --uri http://..."
                )
            return SourceError(f"Milvus Lite database {self.location} cannot be opened: {message}")
        code = getattr(exc, "code", None)
        text = message.lower()
        if "auth" in text or "credential" in text or code in _AUTH:
            return self._auth_error()
        if code == 2 or "fail connecting" in text:
            return SourceUnreachable(
                f"Milvus at {self.location} did not answer ({message}): check --uri, and that "
                "the server is running"
            )
        return SourceError(f"Milvus at {self.location} refused the connection: {message}")

    @property
    def _where(self) -> str:
        return (
            f"Milvus Lite database {self.location}" if self.lite else f"Milvus at {self.location}"
        )

    def _auth_error(self) -> SourceAuthError:
        return SourceAuthError(
            f"Milvus at {self.location} refused the credentials: check --token or MILVUS_TOKEN "
            "(user:password, or an API key)"
        )

    # -- describing --------------------------------------------------------------------

    def describe(self) -> SourceInfo:
        client = self._connect()
        with self._translate("describing the collection"):
            if not client.has_collection(self.collection, timeout=self._timeout):
                raise self._not_found(client)
            described = client.describe_collection(self.collection, timeout=self._timeout)
        self._collection_id = described.get("collection_id") or None
        fields = described["fields"]
        self._read_schema(fields, described.get("functions") or [])
        metrics = self._metrics(client)
        vector_fields = []
        for vector in self._vectors:
            kind = {"sparse": VectorKind.SPARSE, "binary": VectorKind.BINARY}.get(
                vector.kind, VectorKind.DENSE
            )
            half = vector.kind in ("float16", "bfloat16")
            metric = _METRICS.get(metrics.get(vector.name, "").upper())
            vector_fields.append(VectorField(vector.name, kind, vector.dim, metric, half=half))
        if self.batch_size is None:
            page = LITE_PAGE_BYTES if self.lite else PAGE_BYTES
            self.batch_size = _batch_size(self._vectors, len(fields), page)
        self._load(client)
        return SourceInfo(
            kind="milvus",
            collection=self.collection,
            location=self.location,
            fields=tuple(vector_fields),
            namespaces=self._namespaces(client),
            namespaced=True,
            integer_ids=self._int_keys,
        )

    def _not_found(self, client: MilvusClient) -> SourceNotFound:
        with self._translate("listing collections"):
            names = sorted(client.list_collections(timeout=self._timeout))
        where = self._where
        database = f" (database {self._db_name!r})" if self._db_name else ""
        has = names_hint(self.collection, names, "it has")
        return SourceNotFound(f"{where}{database} has no collection {self.collection!r}; {has}")

    def _read_schema(self, fields: list[dict[str, Any]], functions: list[dict[str, Any]]) -> None:
        from pymilvus import DataType, FunctionType

        kinds = {
            DataType.FLOAT_VECTOR: "float",
            DataType.FLOAT16_VECTOR: "float16",
            DataType.BFLOAT16_VECTOR: "bfloat16",
            DataType.INT8_VECTOR: "int8",
            DataType.BINARY_VECTOR: "binary",
            DataType.SPARSE_FLOAT_VECTOR: "sparse",
        }
        # BM25's output is made from its input text (in the metadata), and Milvus neither
        # returns it (it leaves it out of "*") nor could pgvector hold its indices (hashes
        # up to 2**32). Other functions' outputs (MinHash signatures) are vectors as any.
        computed = {
            str(name)
            for function in functions
            if function.get("type") == FunctionType.BM25
            for name in function.get("output_field_names") or ()
        }
        vectors, skipped = [], []
        for field in fields:
            name = str(field["name"])
            if field.get("is_primary"):
                self._primary_key = name
                self._int_keys = field["type"] != DataType.VARCHAR
            if field.get("is_partition_key"):
                self._partition_key = True
            if name in computed:
                skipped.append(name)
            elif field["type"] in kinds:
                dim = (field.get("params") or {}).get("dim")
                size = None if dim is None else int(dim)
                vectors.append(_Vector(name, kinds[field["type"]], size))
        self._vectors, self._skipped = tuple(vectors), tuple(skipped)

    def _metrics(self, client: MilvusClient) -> dict[str, str]:
        metrics: dict[str, str] = {}
        with self._translate("reading the indexes"):
            for index in client.list_indexes(self.collection, timeout=self._timeout):
                info = client.describe_index(
                    self.collection, index_name=index, timeout=self._timeout
                )
                if info and info.get("field_name"):
                    metrics[str(info["field_name"])] = str(info.get("metric_type") or "")
        return metrics

    def _load(self, client: MilvusClient) -> None:
        """Load the collection if it is not: Milvus answers queries only on a loaded one
        (Milvus Lite, after a restart, leaves an indexed collection unloaded)."""
        with self._translate("loading the collection"):
            state = client.get_load_state(self.collection, timeout=self._timeout)["state"]
            if getattr(state, "name", str(state)) != "Loaded":
                client.load_collection(self.collection, timeout=self._timeout)

    def _namespaces(self, client: MilvusClient) -> tuple[Namespace, ...]:
        with self._translate("counting rows"):
            if self._partition_key:
                # A partition key spreads rows over partitions Milvus manages, and Milvus
                # refuses queries naming them: the collection is read whole, as "_default".
                stats = client.get_collection_stats(self.collection, timeout=self._timeout)
                return (Namespace("_default", int(stats["row_count"])),)
            namespaces = []
            for name in sorted(client.list_partitions(self.collection, timeout=self._timeout)):
                stats = client.get_partition_stats(self.collection, name, timeout=self._timeout)
                namespaces.append(Namespace(name, int(stats["row_count"])))
            return tuple(namespaces)

    # -- reading -----------------------------------------------------------------------

    def partitions(
        self, namespace: str, count: int | None, want: int, call: Call
    ) -> tuple[str, ...]:
        """Split a server's partition of :data:`SPLIT_MIN_PAGES` pages or more into key
        ranges of two pages or more each, read at the same time (several requests in
        flight hide a remote server's latency: with 50 ms added to each query of a served
        Milvus Lite, eight ranges read 1.5 to 1.9 times as fast as one chain).

        The bounds are keys of the partition sampled by one vector search (a random query
        vector: its nearest rows have keys unrelated to their vectors, so their quantiles
        spread the chains over the keys). The ranges cover every key whatever the sample:
        a poor one makes chains of unequal length, never a gap. A collection without a
        float vector, or whose search fails, is read in one chain; so is every partition
        of Milvus Lite, which scans the whole partition for each page whatever the filter
        (each chain costs a scan more, and its server shares this process's interpreter:
        measured, eight chains took 20% more CPU than one at 100,000 x 768).
        """
        batch = self._batch()
        if self.lite or count is None or want < 2 or count < SPLIT_MIN_PAGES * batch:
            return (WHOLE,)
        chains = min(want, count // (2 * batch))
        keys = call(self._sample_keys, namespace, SAMPLE_PER_CHAIN * chains)
        bounds = sorted({keys[len(keys) * j // chains] for j in range(1, chains)}) if keys else []
        if not bounds:
            return (WHOLE,)
        edges: list[Any] = [None, *bounds, None]
        return tuple(
            _RANGE + json.dumps([lo, hi], ensure_ascii=False)
            for lo, hi in zip(edges, edges[1:], strict=False)
        )

    def _sample_keys(self, namespace: str, size: int) -> list[Any]:
        """About ``size`` keys of ``namespace``, sorted: the rows nearest a random vector."""
        field = next((v for v in self._vectors if v.kind == "float"), None)
        if field is None:
            return []
        query = np.random.default_rng(0).standard_normal(field.dim or 0).astype(np.float32)
        limit = min(MAX_BATCH_SIZE, size)
        client = self._connect()
        try:
            with self._translate(f"sampling keys of partition {namespace!r}"):
                hits = client.search(
                    self.collection,
                    [query.tolist()],
                    limit=limit,
                    anns_field=field.name,
                    # An HNSW search returns at most its ef results.
                    search_params={"params": {"ef": limit}},
                    output_fields=[self._primary_key],
                    partition_names=None if self._partition_key else [namespace],
                    timeout=self._timeout,
                    retry_on_rate_limit=False,
                )
        except SourceError as exc:
            if isinstance(exc, _Released):
                self._load(client)
            if isinstance(exc, Transient):
                raise  # the pipeline tries again
            return []  # not searchable (no index, a metric it refuses): one chain
        key = self._primary_key
        # A hit holds the key under the key field's name (pymilvus 2.6+) or as "id".
        return sorted({hit[key] if key in hit else hit["id"] for hit in (hits[0] if hits else [])})

    def page(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        rows = self._query(namespace, partition, cursor, self._output_fields, self._batch())
        load = partial(self._records, namespace, rows)
        return Page(load=load, next_cursor=self._next_cursor(rows), size=len(rows))

    def page_ids(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        """A page of keys only: the query returns the primary key and nothing else."""
        rows = self._query(namespace, partition, cursor, [self._primary_key], IDS_BATCH_SIZE)
        ids = [str(row[self._primary_key]) for row in rows]
        return Page(
            load=partial(self.fetch, namespace, ids),
            next_cursor=self._next_cursor(rows),
            size=len(ids),
            ids=ids,
        )

    def fetch(self, namespace: str, ids: Sequence[str]) -> list[Record]:
        """The rows of partition ``namespace`` with these ids; ids that are not keys of
        this collection (not integers, for int64 keys) are left out."""
        keys = [key for key in map(self._key, ids) if key is not None]
        if not keys:
            return []
        literals = ", ".join(_literal(key) for key in keys)
        rows = self._run(
            f"fetching rows of partition {namespace!r}",
            namespace,
            filter=f"{self._primary_key} in [{literals}]",
            output_fields=self._output_fields,
        )
        return self._records(namespace, rows)

    def _batch(self) -> int:
        assert self.batch_size is not None, "describe() first"
        return self.batch_size

    def _query(
        self, namespace: str, partition: str, cursor: Cursor, fields: list[str], limit: int
    ) -> Any:
        """The ``limit`` rows of chain ``partition`` of ``namespace`` after key ``cursor``
        (None: from the chain's start), in key order."""
        low, high = (None, None) if partition == WHOLE else _range(partition)
        key = self._primary_key
        conditions = []
        if cursor is not None:
            conditions.append(f"{key} > {_literal(cursor)}")
        elif low is not None:
            conditions.append(f"{key} >= {_literal(low)}")
        if high is not None:
            conditions.append(f"{key} < {_literal(high)}")
        after = " and ".join(conditions)
        # A walk of ids only (verify) reads its own snapshot, not the migration's.
        chain = (namespace, partition, fields == [key])
        options: dict[str, Any] = {
            "limit": limit,
            # What pymilvus's QueryIterator sends: Milvus then returns the smallest keys
            # that pass the filter, in key order (each segment's, merged until one runs out).
            "iterator": "True",
            "reduce_stop_for_best": "True",
        }
        if self._collection_id is not None:
            options["collection_id"] = self._collection_id
        session = self._session_ts.get(chain)
        if session:
            options["guarantee_timestamp"] = session
        rows = self._run(
            f"reading partition {namespace!r}",
            namespace,
            filter=after,
            output_fields=fields,
            **options,
        )
        if chain not in self._session_ts:
            self._session_ts[chain] = int(
                (getattr(rows, "extra", None) or {}).get("iterator_session_ts", 0) or 0
            )
        return rows

    def _run(self, doing: str, namespace: str, **query: Any) -> Any:
        client = self._connect()
        partitions = None if self._partition_key else [namespace]
        try:
            with self._translate(doing):
                rows = self._ask(client, partitions, query)
        except _Released:
            self._load(client)  # a restarted Milvus Lite forgets it; the pipeline tries again
            raise
        _float_vectors_from_bytes(rows)
        return rows

    def _ask(self, client: MilvusClient, partitions: list[str] | None, query: Any) -> Any:
        return client.query(
            self.collection,
            partition_names=partitions,
            timeout=self._timeout,
            # Dense float vectors as float32 views of one array a page (pymilvus 2.6
            # and later; older ones return lists).
            strict_float32=True,
            # The pipeline retries rate limiting, slowing down; pymilvus would sleep.
            retry_on_rate_limit=False,
            **query,
        )

    def _next_cursor(self, rows: Any) -> Cursor:
        # An empty page ends the chain: a short one need not (reduce_stop_for_best).
        if not rows:
            return None
        key = rows[-1][self._primary_key]
        return int(key) if self._int_keys else str(key)

    def _key(self, text: str) -> int | str | None:
        """The primary key an id stands for; None if none can (an int64 key's id is its
        decimal text, exactly: not "+5", "5_000" or other digits)."""
        if not self._int_keys:
            return text
        try:
            key = int(text)
        except ValueError:
            return None
        return key if str(key) == text and -(2**63) <= key < 2**63 else None

    def _records(self, namespace: str, rows: Any) -> list[Record]:
        with self._translate(f"decoding rows of partition {namespace!r}"):
            return self._decoded(namespace, rows)

    def _decoded(self, namespace: str, rows: Any) -> list[Record]:
        records = []
        primary_key, vectors, skipped = self._primary_key, self._vectors, self._skipped
        for row in rows:  # a row of pymilvus's answer is decoded as it is first read
            key = row.pop(primary_key)
            values: dict[str, Any] = {}
            problems = []
            for vector in vectors:
                value = row.pop(vector.name, None)
                try:
                    values[vector.name] = vector.convert(value)
                except ValueError as exc:  # rejected with its reason, as the sink rejects
                    values[vector.name] = value
                    problems.append(str(exc))
            for name in skipped:
                row.pop(name, None)
            records.append(
                Record(str(key), values, row, namespace, invalid="; ".join(problems) or None)
            )
        return records

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            client.close()
        if self._release_lite:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.location)
            self._release_lite = False

    @contextmanager
    def _translate(self, doing: str) -> Iterator[None]:
        """Translate pymilvus's failures into vec2pg's errors, naming what was being done."""
        import grpc
        from pymilvus.exceptions import MilvusException

        where = self._where
        try:
            yield
        except MilvusException as exc:
            raise self._milvus_error(exc, where, doing) from exc
        except grpc.RpcError as exc:  # what pymilvus passes on without retrying it
            raise _rpc_error(exc, where, doing) from exc

    def _milvus_error(self, exc: Any, where: str, doing: str) -> SourceError:
        import grpc

        code, message = exc.code, _message(exc)
        if isinstance(code, grpc.StatusCode):  # pymilvus retried it until the timeout
            return _status_error(code, message, where, doing)
        if code in _NOT_FOUND:
            return SourceNotFound(f"{where}: {message} (while {doing})")
        if code == _RATE_LIMIT:
            return RateLimited(f"{where} is rate limiting while {doing}: {message}")
        if code in _AUTH or "authenticat" in message.lower():
            return self._auth_error()
        if code == _NOT_LOADED:
            return _Released(
                f"{where}: collection {self.collection!r} was released while {doing} (a "
                f"restart?): loading it again ({message})"
            )
        if code == 2 or "fail connecting" in message.lower():  # pymilvus's, reconnecting
            return SourceUnreachable(f"{where} did not answer while {doing}: {message}")
        if getattr(exc, "retriable", False):
            return SourceUnavailable(f"{where} failed while {doing}: {message}")
        return SourceError(f"{where} failed while {doing}: {message}")


class _Released(SourceUnavailable):
    """The collection is no longer loaded (a restarted Milvus Lite leaves it released):
    :meth:`MilvusSource._run` loads it again, and the pipeline asks again."""


def _batch_size(vectors: Sequence[_Vector], fields: int, page: int) -> int:
    """Rows per page: about ``page`` bytes of vectors, at most :data:`MAX_BATCH_SIZE`."""
    width = {"float": 4.0, "float16": 2.0, "bfloat16": 2.0, "int8": 1.0, "binary": 1 / 8}
    row = SCALAR_ROW_BYTES * fields
    for vector in vectors:
        if vector.kind == "sparse":
            row += SPARSE_ROW_BYTES
        else:
            row += int(width[vector.kind] * (vector.dim or 0))
    return max(1, min(MAX_BATCH_SIZE, page // max(1, row)))


def _float_vectors_from_bytes(rows: Any) -> None:
    """Give pymilvus's page its float vectors as arrays made from the answer's bytes.

    With ``strict_float32`` pymilvus makes each float vector field's array with
    ``np.array`` over protobuf's repeated field, a Python float per value (measured: 42 us
    a row of 768 dimensions, the client's largest cost; 2.5 us this way); the field's
    serialized form is the same floats, packed. A page of another kind (another pymilvus)
    is left as it is.
    """
    from pymilvus import DataType

    cache = getattr(rows, "_float_vector_np_array", None)
    fields = getattr(rows, "_lazy_field_data", None)
    if not isinstance(cache, dict) or not isinstance(fields, list):
        return
    if getattr(rows, "_has_materialized_float_vector", True):
        return
    arrays = {}
    for field in fields:
        if field.type == DataType.FLOAT_VECTOR:
            values = _packed_float32(field.vectors.float_vector.SerializeToString())
            if values is None:
                return
            arrays[field.field_name] = values
    cache.update(arrays)
    rows._has_materialized_float_vector = True


def _packed_float32(message: bytes) -> np.ndarray | None:
    """The values of a serialized ``FloatArray`` (field 1, ``repeated float``, packed:
    tag 0x0A, a varint length, little-endian float32s); None if it is not one."""
    if not message:
        return np.empty(0, dtype=np.float32)
    if message[0] != 0x0A:
        return None
    length, shift, position = 0, 0, 1
    while position < len(message):
        byte = message[position]
        position += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    if position + length != len(message) or length % 4:
        return None
    return np.frombuffer(message, dtype="<f4", count=length // 4, offset=position)


def _range(partition: str) -> tuple[Any, Any]:
    """The bounds of a key-range chain: ``low <= key < high``, None where unbounded."""
    if not partition.startswith(_RANGE):
        raise ValueError(f"not a Milvus chain: {partition!r}")
    low, high = json.loads(partition[len(_RANGE) :])
    return low, high


def _literal(key: Any) -> str:
    """A primary key in Milvus's filter language: an integer, or a double-quoted string
    whose backslashes, quotes and line breaks are escaped."""
    if isinstance(key, int):
        return str(key)
    text = str(key).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\n", "\\n").replace("\r", "\\r") + '"'


def _status_error(code: Any, message: str, where: str, doing: str) -> SourceError:
    import grpc

    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return SourceAuthError(
            f"{where} refused the credentials ({code.name}): check --token or MILVUS_TOKEN"
        )
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than" in message:
        return SourceError(
            f"{where}: a page is larger than gRPC allows while {doing} ({message}): "
            "pass a smaller --batch-size"
        )
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return RateLimited(f"{where} is rate limiting while {doing}: {message}")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        text = f"{where} did not answer while {doing}: {message}"
        if "refused" in message.lower() or "failed to connect" in message.lower():
            return SourceUnreachable(text)
        return SourceUnavailable(text)
    return SourceError(f"{where} failed while {doing}: {message}")


def _rpc_error(exc: Any, where: str, doing: str) -> SourceError:
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
    return _status_error(code, str(details or code), where, doing)


def _message(exc: Any) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:300]


def _locked(folder: str) -> bool:
    """Whether another process holds Milvus Lite's lock on ``folder`` (an advisory flock)."""
    try:
        import fcntl
    except ImportError:  # Windows: say what pymilvus says
        return False
    try:
        with open(os.path.join(folder, "LOCK"), "a+b") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(lock, fcntl.LOCK_UN)
    except OSError:
        return False
    return False
