"""Weaviate: every object of a collection (every tenant of a multi-tenant one) over gRPC.

weaviate-client (v4) connects over REST and reads the schema (``config.get()``); the
objects are read from the same server's gRPC API with the client's generated protocol
(``weaviate.proto.v1``), through grpcio itself rather than the client's query methods:

* the client retries UNAVAILABLE on its own for 63 s (sleeps of 1, 2, 4, ... 32 s), and
  vec2pg's pipeline retries, counts and reports failures itself;
* the client unpacks every vector into Python floats (some 6,000 objects of 1,024
  dimensions a second on one core), while a reply's ``vector_bytes`` are little-endian
  float32 that numpy takes as they are; the reply is parsed by protobuf's C parser;
* with both an unnamed vector and named ones the client returns only the unnamed one;
  here each is asked for (the named ones by name) and each arrives.

Objects are paged by Weaviate's cursor: ``after`` is the last UUID read, and objects come
in UUID order (every shard's, merged). A chain's cursor is that UUID, so a resumed run
asks for exactly the objects after it. Weaviate refuses a filter next to ``after``, but
``after`` may be any UUID, present or not: a namespace is split into disjoint UUID ranges
``[lo, hi)``, each read from ``after = lo - 1`` until the first UUID at or beyond ``hi``
(the rest of that page belongs to the next range and is dropped). The UUIDs Weaviate
makes (version 4) or derives (``generate_uuid5``) are uniform, so the ranges hold about
as many objects each; ids that are not (sequential hand-made UUIDs) still arrive exactly
once, in fewer busy chains.

A multi-tenant collection's tenants are its namespaces (the table's ``namespace``
column); Weaviate reads a tenant only while it is ACTIVE. Weaviate's schema does not
record a vector's dimension: it is learnt from the first objects that have the vector.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from operator import attrgetter
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from vec2pg.errors import (
    ConfigError,
    RateLimited,
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
from vec2pg.sources.base import FETCH_MAX_IDS, WHOLE, Call, Page
from vec2pg.sources.http import names_hint, status_error, unreachable

if TYPE_CHECKING:
    from weaviate import WeaviateClient

#: Weaviate's gRPC port unless the server is configured otherwise.
DEFAULT_GRPC_PORT = 50051
#: Objects per Search request, at most: the first page of a chain may not be a cursor
#: request (see :meth:`WeaviateSource._chain_page`), and QUERY_MAXIMUM_RESULTS (10,000 by
#: default) caps those.
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10_000
#: Ids per Search when only ids are read (verification): a UUID is some 60 bytes of reply.
IDS_PAGE_SIZE = MAX_PAGE_SIZE
#: A page's reply should stay near this size: pages of large objects (wide vectors,
#: multi-vectors, long texts) hold fewer of them, as measured on a sample of objects. A
#: run holds up to three pages per unit of --concurrency (in flight, queued, written),
#: each its reply and then its records: at 1,024 dimensions and --concurrency 16, 4 MB
#: pages peak near 350 MB and 8 MB ones near 520 MB, and read no faster.
PAGE_BYTES = 4 * 1024 * 1024
#: GRPC_MAX_MESSAGE_SIZE's default, for a server whose /v1/meta does not say.
GRPC_MAX_MESSAGE_SIZE = 104_858_000
#: Objects read to learn the vectors' dimensions (Weaviate's schema has none) and the
#: size of an object, and how many such requests at most.
SAMPLE_SIZE = 100
SAMPLE_REQUESTS = 20
#: Tenants counted at once while describing a multi-tenant collection (one request each).
COUNTS_IN_FLIGHT = 16
#: A range chain's last page asks for the objects it expects to find before the range's
#: end (from the density of the page before) and this many more, so that it does not read
#: a whole page that belongs to the next range.
TAIL_MARGIN = 16
#: The UUID space: ranges are parts of [0, 2**128).
SPACE = 2**128
#: Servers before this answer counts over GraphQL only (as weaviate-client asks them).
GRPC_AGGREGATE_SINCE = (1, 29)

_METRICS = {
    "cosine": Metric.COSINE,
    "dot": Metric.DOT,
    # The squared distance ranks as the distance does.
    "l2-squared": Metric.EUCLIDEAN,
    "manhattan": Metric.MANHATTAN,
    "hamming": Metric.HAMMING,
}
_RANGE = "uuids:"  # partition key of a UUID range: "uuids:<lo hex>-<hi hex>"
_F32 = np.dtype("<f4")
#: The oldest server vec2pg reads: TenantsGet (1.25) and multi-vectors over gRPC (1.29;
#: weaviate-client itself refuses servers before 1.27).
MIN_VERSION = (1, 27)
_SEARCH = "/weaviate.v1.Weaviate/Search"
_AGGREGATE = "/weaviate.v1.Weaviate/Aggregate"
_TENANTS_GET = "/weaviate.v1.Weaviate/TenantsGet"
#: Tenant activity statuses as TenantsGet answers them (old and new names) -> the new name.
_TENANT_STATUS = {
    "HOT": "ACTIVE",
    "ACTIVE": "ACTIVE",
    "COLD": "INACTIVE",
    "INACTIVE": "INACTIVE",
    "FROZEN": "OFFLOADED",
    "OFFLOADED": "OFFLOADED",
    "FREEZING": "OFFLOADING",
    "OFFLOADING": "OFFLOADING",
    "UNFREEZING": "ONLOADING",
    "ONLOADING": "ONLOADING",
}
#: What Weaviate says (in gRPC status UNKNOWN: its handlers return plain errors) when the
#: key is missing or wrong, or a node or shard is not ready yet (worth asking again).
_AUTH_DETAILS = ("unauthorized", "invalid api key", "anonymous access", "unauthenticated")
_TRANSIENT_DETAILS = (
    "not ready",
    "deadline exceeded",
    "connection refused",
    "connection reset",
    "broken pipe",
    "timeout",
    "try again",
    "temporarily",
)


@dataclass(frozen=True, slots=True)
class _Decoding:
    """How a Search reply becomes records."""

    unnamed: bool  # the collection has the unnamed (legacy) vector: metadata.vector_bytes
    named: frozenset[str]  # named vectors, single and multi
    #: The multi-vectors among them (a uint16 dimension, then float32 rows), as the schema
    #: says: protocols before weaviate-client 4.11 do not mark them on the wire.
    multi: frozenset[str] = frozenset()
    #: Vectors without a column: no object sampled had one, so their dimension is unknown.
    dimensionless: frozenset[str] = frozenset()


@dataclass
class _Schema:
    """What describe() learnt of the collection."""

    name: str
    multi_tenancy: bool
    fields: list[VectorField]
    unnamed: bool
    named: list[str]
    properties: Any  # search_get_pb2.PropertiesRequest: every property, blobs included
    #: multiTenancyConfig.autoTenantActivation: Weaviate activates an INACTIVE tenant read.
    auto_activation: bool = False
    tenants: dict[str, str] = field(default_factory=dict)  # tenant -> activity status


class WeaviateSource:
    """Read every object of a Weaviate collection, every tenant of a multi-tenant one."""

    def __init__(
        self,
        collection: str,
        *,
        url: str | None,
        api_key: str | None = None,
        grpc_port: int | None = None,
        grpc_host: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        timeout: float = 60.0,
        ids_page_size: int = IDS_PAGE_SIZE,
    ) -> None:
        if not url:
            raise ConfigError("no Weaviate address: pass --url (or set WEAVIATE_URL)")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ConfigError(f"--page-size must be from 1 to {MAX_PAGE_SIZE:,}, not {page_size}")
        parts = urlsplit(url if "://" in url else f"https://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"--url must be http(s)://HOST[:PORT], not {mask_dsn(url)!r}")
        if parts.path.strip("/"):
            raise ConfigError(
                f"--url must be http(s)://HOST[:PORT] without a path, not {mask_dsn(url)!r}: "
                "weaviate-client adds /v1 itself"
            )
        self.collection = collection
        # A URL may carry credentials (https://user:password@host): never print them.
        self.location = mask_dsn(url)
        self._secure = parts.scheme == "https"
        self._http_host = parts.hostname
        self._http_port = parts.port or (443 if self._secure else 80)
        self._grpc_host = grpc_host or parts.hostname
        self._grpc_port = DEFAULT_GRPC_PORT if grpc_port is None else grpc_port
        self._api_key = api_key
        self._timeout = timeout
        self._page_size = page_size
        self._ids_page_size = max(1, min(ids_page_size, MAX_PAGE_SIZE))
        self._object_page = page_size  # set by describe() from the objects' size
        self._client: WeaviateClient | None = None
        self._channel: Any = None
        self._calls: dict[str, Any] = {}
        self._version: tuple[int, int] = (0, 0)
        self._schema: _Schema | None = None
        self._decoding: _Decoding | None = None

    # ------------------------------------------------------------------ describe
    def describe(self) -> SourceInfo:
        self._connect()
        schema = self._schema = self._read_schema()
        if schema.multi_tenancy:
            schema.tenants = self._tenants(schema.name)
            active = [t for t, status in schema.tenants.items() if status == "ACTIVE"]
            counts: dict[str, int | None] = dict.fromkeys(schema.tenants)
            with ThreadPoolExecutor(COUNTS_IN_FLIGHT, thread_name_prefix="vec2pg-count") as pool:
                counts.update(zip(active, pool.map(self._count, active), strict=True))
        else:
            counts = {"": self._count("")}
        fields, dimensionless, object_bytes = self._sample(schema, counts)
        self._decoding = _Decoding(
            unnamed=schema.unnamed,
            named=frozenset(schema.named),
            multi=frozenset(f.name for f in schema.fields if f.kind is VectorKind.MULTI),
            dimensionless=frozenset(dimensionless),
        )
        if object_bytes:
            fitting = max(1, PAGE_BYTES // object_bytes)
            self._object_page = min(self._page_size, fitting)
        return SourceInfo(
            kind="weaviate",
            collection=schema.name,
            location=self.location,
            fields=tuple(fields),
            namespaces=tuple(Namespace(name, count) for name, count in counts.items()),
            namespaced=schema.multi_tenancy,
        )

    def _connect(self) -> None:
        if self._client is not None:
            return
        import grpc
        import weaviate
        from weaviate.classes.init import AdditionalConfig, Auth, Timeout

        with self._rest("connecting"):
            # skip_init_checks: no gRPC health check, and no request to pypi.org for the
            # client's latest version (a migration host may have no internet at all).
            client = weaviate.connect_to_custom(
                http_host=self._http_host,
                http_port=self._http_port,
                http_secure=self._secure,
                grpc_host=self._grpc_host,
                grpc_port=self._grpc_port,
                grpc_secure=self._secure,
                auth_credentials=Auth.api_key(self._api_key) if self._api_key else None,
                skip_init_checks=True,
                additional_config=AdditionalConfig(
                    timeout=Timeout(init=self._timeout, query=self._timeout, insert=self._timeout)
                ),
            )
        self._client = client
        with self._rest("reading the server's version"):
            meta = client.get_meta()
        self._version = _version(str(meta.get("version", "")))
        if self._version < MIN_VERSION:
            raise SourceUnsupported(_too_old(self.location, str(meta.get("version"))))
        size = int(meta.get("grpcMaxMessageSize") or GRPC_MAX_MESSAGE_SIZE)
        options = [
            ("grpc.max_receive_message_length", size),
            ("grpc.max_send_message_length", size),
        ]
        target = f"{self._grpc_host}:{self._grpc_port}"
        if self._secure:
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(), options)
        else:
            self._channel = grpc.insecure_channel(target, options)
        self._calls = {
            path: self._channel.unary_unary(path, request_serializer=_serialize)
            for path in (_SEARCH, _AGGREGATE, _TENANTS_GET)
        }

    def _read_schema(self) -> _Schema:
        assert self._client is not None
        collections = self._client.collections
        try:
            with self._rest(f"reading the schema of collection {self.collection!r}"):
                config = collections.get(self.collection).config.get()
        except SourceNotFound as exc:
            with self._rest("listing the collections"):
                names = sorted(collections.list_all(simple=True))
            raise SourceNotFound(self._no_collection(names)) from exc
        fields: list[VectorField] = []
        legacy = config.vector_index_config
        if legacy is not None:
            fields.append(_field("", legacy))
        vector_config = config.vector_config or {}
        named = list(vector_config)
        fields += [_field(name, vector_config[name].vector_index_config) for name in named]
        tenancy = config.multi_tenancy_config
        return _Schema(
            name=config.name,
            multi_tenancy=bool(tenancy.enabled),
            auto_activation=bool(getattr(tenancy, "auto_tenant_activation", False)),
            fields=fields,
            unnamed=legacy is not None,
            named=named,
            properties=_properties_request(config.properties, config.references),
        )

    def _no_collection(self, names: list[str]) -> str:
        wanted = self.collection[:1].upper() + self.collection[1:]
        message = f"Weaviate at {self.location} has no collection {wanted!r}"
        return f"{message}; {names_hint(wanted, names, 'it has')}"

    def _tenants(self, collection: str) -> dict[str, str]:
        from weaviate.proto.v1 import tenants_pb2

        request = tenants_pb2.TenantsGetRequest(collection=collection)
        reply = tenants_pb2.TenantsGetReply.FromString(
            self._grpc(_TENANTS_GET, request, "listing the tenants")
        )
        statuses = {}
        for tenant in reply.tenants:
            name = tenants_pb2.TenantActivityStatus.Name(tenant.activity_status)
            status = name.removeprefix("TENANT_ACTIVITY_STATUS_")
            statuses[tenant.name] = _TENANT_STATUS.get(status, status)
        return dict(sorted(statuses.items()))

    def _count(self, tenant: str) -> int:
        """The objects of the collection (of one tenant): gRPC Aggregate, or GraphQL on
        servers before 1.29 (through the client, as it asks those)."""
        assert self._schema is not None
        doing = f"counting the objects of tenant {tenant!r}" if tenant else "counting the objects"
        if self._version < GRPC_AGGREGATE_SINCE:
            assert self._client is not None
            collection = self._client.collections.get(self._schema.name)
            if tenant:
                collection = collection.with_tenant(tenant)
            with self._rest(doing):
                return int(collection.aggregate.over_all(total_count=True).total_count or 0)
        from weaviate.proto.v1 import aggregate_pb2

        request = aggregate_pb2.AggregateRequest(
            collection=self._schema.name, tenant=tenant, objects_count=True
        )
        reply = aggregate_pb2.AggregateReply.FromString(self._grpc(_AGGREGATE, request, doing))
        return int(reply.single_result.objects_count)

    def _sample(
        self, schema: _Schema, counts: dict[str, int | None]
    ) -> tuple[list[VectorField], set[str], int | None]:
        """The vector fields with their dimensions, the vectors no sampled object had, and
        the size of an object in a reply (from the first objects of the collection)."""
        from weaviate.proto.v1 import search_get_pb2

        dims: dict[str, int] = {}
        wanted = {f.name for f in schema.fields}
        multi = {f.name for f in schema.fields if f.kind is VectorKind.MULTI}
        object_bytes: int | None = None
        requests = 0
        sampled = [tenant for tenant, count in counts.items() if count]
        if schema.auto_activation:
            # Reading an INACTIVE tenant activates it: only if no ACTIVE one had the vectors.
            sampled += [t for t, status in schema.tenants.items() if status == "INACTIVE"]
        for tenant in sampled:
            after = ""
            while wanted - dims.keys() and requests < SAMPLE_REQUESTS:
                missing = wanted - dims.keys()
                # The first request reads whole objects (their size sets the page size);
                # the next ones only the vectors still without a dimension.
                request = self._request(
                    tenant, SAMPLE_SIZE, after, ids_only=object_bytes is not None
                )
                request.metadata.vector = "" in missing
                del request.metadata.vectors[:]
                request.metadata.vectors.extend(sorted(missing - {""}))
                raw = self._grpc(_SEARCH, request, _reading(tenant))
                requests += 1
                results = search_get_pb2.SearchReply.FromString(raw).results
                if object_bytes is None and results:
                    object_bytes = max(1, len(raw) // len(results))
                for result in results:
                    meta = result.metadata
                    if "" in missing and (meta.vector_bytes or len(meta.vector)):
                        dims[""] = len(meta.vector_bytes) // 4 or len(meta.vector)
                    for entry in meta.vectors:
                        if entry.name in missing and entry.vector_bytes:
                            dims[entry.name] = _dimension(entry, entry.name in multi)
                if len(results) < SAMPLE_SIZE:
                    break
                after = results[-1].metadata.id
        fields = [
            VectorField(f.name, f.kind, dims[f.name], f.metric)
            for f in schema.fields
            if f.name in dims
        ]
        return fields, wanted - dims.keys(), object_bytes

    # -------------------------------------------------------------- reading pages
    def partitions(
        self, namespace: str, count: int | None, want: int, call: Call
    ) -> tuple[str, ...]:
        """Disjoint UUID ranges of ``namespace``, of two pages or more each; no requests."""
        self._check_readable(namespace)
        if count is None or want < 2:
            return (WHOLE,)
        chains = min(want, count // (2 * self._object_page))
        if chains < 2:
            return (WHOLE,)
        bounds = [i * SPACE // chains for i in range(chains + 1)]
        return tuple(
            f"{_RANGE}{lo:032x}-{hi:032x}" for lo, hi in zip(bounds, bounds[1:], strict=False)
        )

    def page(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        """The objects of a chain after ``cursor``: one Search, decoded."""
        decoding = self._described()
        reply, keep, ids, next_cursor = self._chain_page(
            namespace, partition, cursor, self._object_page, False
        )
        # Decoded at once, some 6 us an object: the records hold half the reply's bytes
        # (it carries the unnamed vector twice: as float32 bytes and as deprecated floats),
        # and a page waits in the pipeline's queue as records. Not in another process
        # (Page.read): sending a reply there and its rows back costs more than decoding it
        # (57 against 92 us of CPU an object, 1,024 dimensions).
        records = _records(decoding, namespace, reply, keep)
        del reply
        return Page(load=lambda: records, next_cursor=next_cursor, size=keep, ids=ids)

    def page_ids(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        """A page of UUIDs only: no properties, no vectors, and larger pages."""
        self._described()
        _, keep, ids, next_cursor = self._chain_page(
            namespace, partition, cursor, self._ids_page_size, True
        )
        return Page(
            load=partial(self._fetch_all, namespace, ids),
            next_cursor=next_cursor,
            size=keep,
            ids=ids,
        )

    def _chain_page(
        self, namespace: str, partition: str, cursor: Cursor, page_size: int, ids_only: bool
    ) -> tuple[Any, int, list[str], Cursor]:
        """One Search of a chain: the reply, how many of its objects are the chain's (the
        rest lie beyond its range), their ids, and the next cursor."""
        from weaviate.proto.v1 import search_get_pb2

        lo, hi = _bounds(partition)
        if cursor is None:
            # The chain's first page: after lo - 1 (a UUID need not exist to be "after"), or
            # no cursor at all from the start of the space, whose first UUID (0) no "after"
            # precedes. Weaviate sorts a cursorless page by UUID too, across shards.
            after, start, limit = ("" if lo == 0 else _uuid_text(lo - 1)), lo, page_size
        else:
            last, _, tail = str(cursor).partition("/")
            after, limit = last, min(page_size, int(tail)) if tail else page_size
            start = uuid.UUID(last).int + 1
        request = self._request(namespace, limit, after, ids_only=ids_only)
        raw = self._grpc(_SEARCH, request, _reading(namespace))
        reply = search_get_pb2.SearchReply.FromString(raw)
        results = reply.results
        ids = [r.metadata.id or _uuid_from_bytes(r.metadata.id_as_bytes) for r in results]
        keep = len(ids)
        if hi < SPACE and ids:
            keep = bisect.bisect_left([uuid.UUID(i).int for i in ids], hi)
        # A page shorter than asked for is the end: every shard had fewer objects left.
        if keep < len(ids) or len(ids) < limit or not keep:
            return reply, keep, ids[:keep], None
        last_id = ids[keep - 1]
        following = self._tail_limit(page_size, keep, start, uuid.UUID(last_id).int, hi)
        next_cursor = last_id if following >= page_size else f"{last_id}/{following}"
        return reply, keep, ids, next_cursor

    @staticmethod
    def _tail_limit(page_size: int, read: int, start: int, last: int, hi: int) -> int:
        """How many objects the next page of a range chain asks for: a whole page, or,
        near the range's end, those the density of the page just read puts before it."""
        if hi >= SPACE:
            return page_size  # the end of the space: a short page ends the chain
        expected = read * (hi - last - 1) / max(1, last - start + 1)
        return max(1, min(page_size, math.ceil(expected * 1.25) + TAIL_MARGIN))

    def fetch(self, namespace: str, ids: Sequence[str]) -> list[Record]:
        """The objects of ``namespace`` with these UUIDs (an ``_id`` filter); others are
        left out, as are ids that are not UUIDs (no object has one)."""
        from weaviate.proto.v1 import base_pb2, search_get_pb2

        decoding = self._described()
        wanted = []
        for rid in ids:
            try:
                wanted.append(str(uuid.UUID(rid)))
            except ValueError:
                continue
        if not wanted:
            return []
        request = self._request(namespace, len(wanted), "")
        request.filters.CopyFrom(
            base_pb2.Filters(
                operator=base_pb2.Filters.OPERATOR_CONTAINS_ANY,
                target=base_pb2.FilterTarget(property="_id"),
                value_text_array=base_pb2.TextArray(values=wanted),
            )
        )
        raw = self._grpc(_SEARCH, request, f"fetching objects of {_where(namespace)}")
        reply = search_get_pb2.SearchReply.FromString(raw)
        return _records(decoding, namespace, reply, len(reply.results))

    def _fetch_all(self, namespace: str, ids: list[str]) -> list[Record]:
        records: list[Record] = []
        for start in range(0, len(ids), FETCH_MAX_IDS):
            records += self.fetch(namespace, ids[start : start + FETCH_MAX_IDS])
        return records

    def _request(self, tenant: str, limit: int, after: str, *, ids_only: bool = False) -> Any:
        from weaviate.proto.v1 import search_get_pb2

        schema = self._schema
        assert schema is not None, "describe() first"
        if ids_only:
            properties = search_get_pb2.PropertiesRequest()
            metadata = search_get_pb2.MetadataRequest(uuid=True)
        else:
            properties = schema.properties
            metadata = search_get_pb2.MetadataRequest(
                uuid=True, vector=schema.unnamed, vectors=schema.named
            )
        return search_get_pb2.SearchRequest(
            collection=schema.name,
            tenant=tenant,
            limit=limit,
            after=after,
            properties=properties,
            metadata=metadata,
            uses_123_api=True,
            uses_125_api=True,
            uses_127_api=True,
        )

    def _described(self) -> _Decoding:
        assert self._decoding is not None, "describe() first"
        return self._decoding

    def _check_readable(self, namespace: str) -> None:
        schema = self._schema
        assert schema is not None, "describe() first"
        status = schema.tenants.get(namespace, "ACTIVE")
        if status == "INACTIVE" and schema.auto_activation:
            return  # Weaviate activates it when it is read
        if status != "ACTIVE":
            raise SourceError(_inactive(schema.name, namespace, status))

    def close(self) -> None:
        channel, client = self._channel, self._client
        self._channel = self._client = None
        if channel is not None:
            channel.close()
        if client is not None:
            client.close()

    # -------------------------------------------------------------------- errors
    def _grpc(self, path: str, request: Any, doing: str) -> bytes:
        """A unary gRPC call's reply, as bytes; failures as vec2pg's errors."""
        import grpc

        call = self._calls.get(path)
        assert call is not None, "describe() first"
        metadata = (("authorization", f"Bearer {self._api_key}"),) if self._api_key else None
        try:
            reply: bytes = call(request, metadata=metadata, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise self._grpc_error(exc, doing) from None
        return reply

    def _grpc_error(self, exc: Any, doing: str) -> SourceError:
        import grpc

        code = exc.code()
        details = str(exc.details() or code.name).strip()
        lowered = details.lower()
        where = f"Weaviate at {self.location}"
        said = f"{where} answered {code.name} while {doing}: {details}"
        collection = self._schema.name if self._schema else self.collection
        if code is grpc.StatusCode.PERMISSION_DENIED:  # RBAC: a key without the permission
            return SourceAuthError(
                f"{where} refused {doing} ({details}): the API key needs read permissions on "
                f"collection {collection!r}"
            )
        if code is grpc.StatusCode.UNAUTHENTICATED or any(t in lowered for t in _AUTH_DETAILS):
            return SourceAuthError(
                f"{where} refused the API key over gRPC ({details}): check --api-key or "
                "WEAVIATE_API_KEY"
            )
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            if "larger than max" in lowered or "message too large" in lowered:
                return SourceError(
                    f"{where} sent a reply larger than gRPC's message limit while {doing} "
                    f"({details}): lower --page-size"
                )
            return RateLimited(f"{where} is rate limiting (gRPC RESOURCE_EXHAUSTED) while {doing}")
        if code is grpc.StatusCode.UNAVAILABLE:
            refused = any(
                text in lowered
                for text in ("connection refused", "dns resolution failed", "name resolution")
            )
            grpc_at = f"{where}: gRPC at {self._grpc_host}:{self._grpc_port}"
            if refused:
                return SourceUnreachable(
                    f"{grpc_at} did not answer while {doing} ({details}); check --grpc-port "
                    "and that it is reachable"
                )
            return SourceUnavailable(f"{grpc_at} is unavailable while {doing} ({details})")
        if code in (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.INTERNAL,
            grpc.StatusCode.ABORTED,
            grpc.StatusCode.CANCELLED,
        ):
            return SourceUnavailable(said)
        if "could not find class" in lowered:
            return SourceNotFound(f"{where} has no collection {collection!r} ({details})")
        if "not active" in lowered:
            return SourceError(_inactive(collection, _tenant_in(details), "INACTIVE"))
        if "tenant not found" in lowered:
            return SourceNotFound(
                f"{where}: collection {collection!r} has no tenant {_tenant_in(details)!r} "
                "(any more)"
            )
        if "query maximum results exceeded" in lowered:
            return SourceError(
                f"{said}: the server's QUERY_MAXIMUM_RESULTS is below --page-size; lower it"
            )
        if code is grpc.StatusCode.UNKNOWN and any(t in lowered for t in _TRANSIENT_DETAILS):
            return SourceUnavailable(said)
        return SourceError(said)

    @contextmanager
    def _rest(self, doing: str) -> Iterator[None]:
        """Translate weaviate-client's REST failures into vec2pg's errors."""
        import httpx
        from weaviate.exceptions import (
            UnexpectedStatusCodeError,
            WeaviateConnectionError,
            WeaviateQueryError,
            WeaviateStartUpError,
            WeaviateTimeoutError,
        )

        where = f"Weaviate at {self.location}"
        try:
            yield
        except UnexpectedStatusCodeError as exc:
            status = exc.status_code
            if status == 401 and not self._api_key:
                raise SourceAuthError(
                    f"{where} needs an API key (HTTP 401): pass --api-key or set WEAVIATE_API_KEY"
                ) from None
            raise status_error(
                status,
                _rest_detail(exc.error),
                where=where,
                credentials="check --api-key or WEAVIATE_API_KEY",
                not_found=f"{where} has no collection {self.collection!r}",
                doing=doing,
            ) from None
        except WeaviateStartUpError as exc:
            if exc.__cause__ is None:  # the client's own check: a server it does not support
                said = re.search(r"version (\S+) is not supported", str(exc))
                version = said.group(1) if said else "a version weaviate-client refuses"
                raise SourceUnsupported(_too_old(self.location, version)) from None
            raise self._unreachable(exc, doing) from None
        except (WeaviateConnectionError, WeaviateTimeoutError, httpx.HTTPError) as exc:
            raise self._unreachable(exc, doing) from None
        except WeaviateQueryError as exc:  # a GraphQL count of an older server
            raise SourceError(f"{where} failed while {doing}: {exc.message}") from None

    def _unreachable(self, exc: BaseException, doing: str) -> SourceError:
        error = SourceUnreachable if unreachable(exc) else SourceUnavailable
        cause = exc.__cause__ or exc
        text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        detail = f"{type(cause).__name__}: {text}" if text else type(cause).__name__
        return error(f"Weaviate at {self.location} did not answer while {doing}: {detail}")


# ---------------------------------------------------------------------- decoding
def _records(decoding: _Decoding, namespace: str, reply: Any, keep: int) -> list[Record]:
    """The first ``keep`` objects of a Search reply as records."""
    records = []
    unnamed = decoding.unnamed
    for result in itertools.islice(reply.results, keep):
        meta = result.metadata
        rid = meta.id or _uuid_from_bytes(meta.id_as_bytes)
        vectors: dict[str, Any] = {}
        problems: list[str] = []
        if unnamed:
            raw = meta.vector_bytes  # each access copies the bytes: once
            if raw and "" in decoding.dimensionless:
                problems.append(_dimensionless(""))
            elif raw:
                vectors[""] = np.frombuffer(raw, dtype=_F32)
            elif len(meta.vector):  # servers that send only the older float list
                vectors[""] = np.asarray(meta.vector, dtype=np.float32)
        entries = meta.vectors
        if len(entries):
            _named_vectors(decoding, entries, vectors, problems)
        properties = result.properties
        try:
            metadata = _properties(properties.non_ref_props)
        except _Unreadable as exc:
            metadata = {}
            problems.append(str(exc))
        for reference in properties.ref_props:
            targets = metadata.setdefault(reference.prop_name, [])
            targets += [
                p.metadata.id or _uuid_from_bytes(p.metadata.id_as_bytes)
                for p in reference.properties
            ]
        records.append(
            Record(rid, vectors, metadata, namespace, invalid="; ".join(problems) or None)
        )
    return records


def _named_vectors(
    decoding: _Decoding, entries: Any, vectors: dict[str, Any], problems: list[str]
) -> None:
    for entry in entries:
        name = entry.name
        if name not in decoding.named:
            if decoding.unnamed and name == "default":
                continue  # the unnamed vector, named as the client names it
            problems.append(f"vector {name!r} is not in the collection's schema")
        elif name in decoding.dimensionless:
            problems.append(_dimensionless(name))
        else:
            raw = entry.vector_bytes
            try:
                multi = name in decoding.multi
                vectors[name] = _multi(raw) if multi else np.frombuffer(raw, dtype=_F32)
            except ValueError as exc:
                problems.append(f"vector {name!r}: {exc}")


def _dimensionless(name: str) -> str:
    label = f"vector {name!r}" if name else "the unnamed vector"
    return (
        f"{label} had no values in the objects vec2pg sampled to learn its dimension "
        "(Weaviate's schema has none), so the table has no column for it: run again with "
        "--replace"
    )


class _Unreadable(ValueError):
    """A property value of a kind this client's protocol does not know."""


def _properties(properties: Any) -> dict[str, Any]:
    out = {}
    fields = properties.fields
    for name in fields:  # not .items(): the Mapping mixin's iterator is Python code
        value = fields[name]
        kind = value.WhichOneof("kind")
        if kind == "null_value":
            continue  # Weaviate has no null: the object lacks the property
        try:
            out[name] = _VALUES[kind](value) if kind is not None else _unknown(value)
        except _Unreadable as exc:
            raise _Unreadable(f"property {name!r}: {exc}") from None
    return out


def _unknown(value: Any) -> Any:
    raise _Unreadable(
        "a value of a type this weaviate-client's protocol does not know; upgrade "
        "weaviate-client (pip install -U 'vec2pg[weaviate]')"
    )


def _list(values: Any) -> list[Any]:
    kind = values.WhichOneof("kind")
    if kind is None:
        return []  # an empty array
    inner = getattr(values, kind)
    if kind == "int_values":
        return np.frombuffer(inner.values, dtype="<i8").tolist()  # type: ignore[no-any-return]
    if kind == "number_values":
        return np.frombuffer(inner.values, dtype="<f8").tolist()  # type: ignore[no-any-return]
    if kind == "object_values":
        return [_properties(item) for item in inner.values]
    return list(inner.values)  # text, date, uuid and bool values


def _geo(value: Any) -> dict[str, float]:
    # float32 on the wire: their shortest decimal form, as Weaviate's REST API prints them.
    geo = value.geo_value
    return {
        "latitude": float(str(np.float32(geo.latitude))),
        "longitude": float(str(np.float32(geo.longitude))),
    }


def _phone(value: Any) -> dict[str, Any]:
    phone = value.phone_value  # named as Weaviate's REST API names them
    return {
        "input": phone.input,
        "internationalFormatted": phone.international_formatted,
        "countryCode": phone.country_code,
        "national": phone.national,
        "nationalFormatted": phone.national_formatted,
        "valid": phone.valid,
        "defaultCountry": phone.default_country,
    }


_VALUES: dict[str, Callable[[Any], Any]] = {
    "text_value": attrgetter("text_value"),
    "int_value": attrgetter("int_value"),
    "number_value": attrgetter("number_value"),
    "bool_value": attrgetter("bool_value"),
    "date_value": attrgetter("date_value"),  # RFC 3339 text, as Weaviate stores it
    "uuid_value": attrgetter("uuid_value"),
    "blob_value": attrgetter("blob_value"),  # base64 text
    "object_value": lambda v: _properties(v.object_value),
    "list_value": lambda v: _list(v.list_value),
    "geo_value": _geo,
    "phone_value": _phone,
}


def _multi(payload: bytes) -> Any:
    """A multi-vector's bytes: a little-endian uint16 dimension, then float32 rows."""
    if len(payload) < 2:
        raise ValueError("a multi-vector of fewer than 2 bytes")
    dim = int.from_bytes(payload[:2], "little")
    if dim == 0 or (len(payload) - 2) % (4 * dim):
        raise ValueError(
            f"{len(payload) - 2} bytes of float32 rows do not divide by dimension {dim}"
        )
    return np.frombuffer(payload, dtype=_F32, offset=2).reshape(-1, dim)


def _dimension(entry: Any, multi: bool) -> int:
    if multi:
        return int.from_bytes(entry.vector_bytes[:2], "little")
    return len(entry.vector_bytes) // 4


# ---------------------------------------------------------------------- schema
def _field(name: str, config: Any) -> VectorField:
    """A vector field (its dimension still unknown) from its vector index config."""
    distance = getattr(config, "distance_metric", None)
    metric = _METRICS.get(str(getattr(distance, "value", distance) or "").lower())
    multi = getattr(config, "multi_vector", None) is not None
    return VectorField(name, VectorKind.MULTI if multi else VectorKind.DENSE, None, metric)


def _properties_request(properties: Sequence[Any], references: Sequence[Any]) -> Any:
    """Every property by name, blobs too (Weaviate leaves those out unless named), nested
    ones of objects by name, and each reference's targets' UUIDs."""
    from weaviate.proto.v1 import search_get_pb2

    def nested(prop: Any) -> Any:
        children = prop.nested_properties or []
        return search_get_pb2.ObjectPropertiesRequest(
            prop_name=prop.name,
            primitive_properties=[c.name for c in children if not _is_object(c)],
            object_properties=[nested(c) for c in children if _is_object(c)],
        )

    refs = []
    for ref in references:
        targets = list(ref.target_collections)
        for target in targets:
            refs.append(
                search_get_pb2.RefPropertiesRequest(
                    reference_property=ref.name,
                    properties=search_get_pb2.PropertiesRequest(),
                    metadata=search_get_pb2.MetadataRequest(uuid=True),
                    target_collection=target if len(targets) > 1 else "",
                )
            )
    return search_get_pb2.PropertiesRequest(
        non_ref_properties=[p.name for p in properties if not _is_object(p)],
        object_properties=[nested(p) for p in properties if _is_object(p)],
        ref_properties=refs,
        return_all_nonref_properties=False,
    )


def _is_object(prop: Any) -> bool:
    kind = getattr(prop.data_type, "value", prop.data_type)
    return str(kind) in ("object", "object[]")


# ------------------------------------------------------------------------ helpers
def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


def _bounds(partition: str) -> tuple[int, int]:
    if partition == WHOLE:
        return 0, SPACE
    if not partition.startswith(_RANGE):
        raise ConfigError(f"not a Weaviate chain: {partition!r}")
    lo, _, hi = partition[len(_RANGE) :].partition("-")
    return int(lo, 16), int(hi, 16)


def _uuid_text(value: int) -> str:
    return str(uuid.UUID(int=value))


def _uuid_from_bytes(raw: bytes) -> str:
    # Weaviate encodes it through a big integer: leading zero bytes are dropped.
    return _uuid_text(int.from_bytes(raw, "big"))


def _version(text: str) -> tuple[int, int]:
    parts = text.lstrip("v").split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        return (0, 0)


def _reading(namespace: str) -> str:
    return f"reading objects of {_where(namespace)}"


def _where(namespace: str) -> str:
    return f"tenant {namespace!r}" if namespace else "the collection"


def _tenant_in(details: str) -> str:
    """The tenant an error names (``tenant not active: 'cold'``), or what it said."""
    for quote in ("'", '"'):
        if details.count(quote) >= 2:
            return details.split(quote)[-2]
    return details


def _inactive(collection: str, tenant: str, status: str) -> str:
    return (
        f"tenant {tenant!r} of Weaviate collection {collection!r} is {status}, and Weaviate "
        f"reads only ACTIVE tenants: activate it (collection.tenants.update(Tenant("
        f"name={tenant!r}, activity_status=TenantActivityStatus.ACTIVE))) or leave it out "
        "with --tenant"
    )


def _too_old(location: str, version: str) -> str:
    return (
        f"Weaviate at {location} runs {version}; vec2pg reads Weaviate "
        f"{'.'.join(map(str, MIN_VERSION))} or later: upgrade the server"
    )


def _rest_detail(error: Any) -> str:
    """The message of a REST error body ({"error": [{"message": ...}]} or {"message": ...})."""
    if isinstance(error, dict):
        errors = error.get("error")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return str(errors[0].get("message", errors[0]))
        if "message" in error:
            return str(error["message"])
    return str(error or "no details")[:300]
