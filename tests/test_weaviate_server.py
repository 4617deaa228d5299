"""Proves tests/weaviate_server.py against the real ``weaviate-client`` v4 (4.24)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import signal
import subprocess
import sys
import time
import types
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import weaviate
import weaviate.connect.v4
import weaviate.retry
from weaviate.classes.config import DataType, VectorDistances
from weaviate.classes.data import GeoCoordinate
from weaviate.classes.init import AdditionalConfig, Timeout
from weaviate.classes.query import Filter, QueryNested, QueryReference
from weaviate.collections.classes.tenants import TenantActivityStatus
from weaviate.collections.classes.types import _PhoneNumber
from weaviate.exceptions import (
    UnexpectedStatusCodeError,
    WeaviateQueryError,
    WeaviateStartUpError,
    WeaviateTenantGetError,
)
from weaviate.proto.v1 import health_weaviate_pb2 as health
from weaviate.proto.v1 import search_get_pb2, weaviate_pb2_grpc
from weaviate_server import (
    MIN_CLIENT_VERSION,
    VectorIndex,
    WeaviateServer,
    synthetic_batches,
)

KEY = "test-key"
SERVER_SCRIPT = Path(__file__).with_name("weaviate_server.py")


@pytest.fixture()
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[WeaviateServer]:
    with WeaviateServer(api_key=KEY) as srv:
        # The client GETs pypi.org on connect (init checks): ask this server instead.
        monkeypatch.setattr(weaviate.connect.v4, "PYPI_PACKAGE_URL", srv.pypi_url)
        yield srv


def connect(server: WeaviateServer, api_key: str | None = KEY, **kwargs: Any) -> Any:
    return weaviate.connect_to_custom(**server.connect_params(api_key=api_key, **kwargs))


@pytest.fixture()
def client(server: WeaviateServer) -> Iterator[Any]:
    with connect(server) as c:
        yield c


def f32(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def bounded(objects: Iterable[Any], limit: int = 1000) -> list[Any]:
    """At most ``limit`` objects: an iterator whose cursor does not advance fails, not hangs."""
    out = list(itertools.islice(objects, limit + 1))
    assert len(out) <= limit, "the iterator did not stop"
    return out


# ----------------------------------------------------------------------- connecting
def test_connect_runs_the_init_checks(server: WeaviateServer) -> None:
    with connect(server, skip_init_checks=False) as c:
        assert c.is_ready()
        assert c.get_meta()["version"] == server.version
    # REST meta (version, grpcMaxMessageSize), the gRPC health check, the PyPI version probe.
    assert server.count("GET /v1/meta") == 2
    assert server.count("Check") == server.count("/grpc.health.v1.Health/Check") == 1
    assert server.count("/pypi/weaviate-client/json") == 1
    assert server.count("/v1/.well-known/ready") == 1


def test_connect_refuses_servers_older_than_the_client_minimum(server: WeaviateServer) -> None:
    assert MIN_CLIENT_VERSION == (1, 27, 0)
    server.version = "1.26.9"
    with pytest.raises(WeaviateStartUpError, match="1.26.9 is not supported"):
        connect(server)
    server.version = "1.27.0"
    connect(server).close()


def test_health_check_needs_no_key_but_reads_do(server: WeaviateServer) -> None:
    server.create_collection("Doc", vector=2)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=lambda b: b,
        )
        reply = health.WeaviateHealthCheckResponse.FromString(
            check(health.WeaviateHealthCheckRequest(), timeout=5)
        )
        assert reply.status == health.WeaviateHealthCheckResponse.SERVING
        stub = weaviate_pb2_grpc.WeaviateStub(channel)
        with pytest.raises(grpc.RpcError) as exc:
            stub.Search(search_get_pb2.SearchRequest(collection="Doc"), timeout=5)
        # A plain Go error in the handler: status UNKNOWN, not UNAUTHENTICATED.
        assert exc.value.code() == grpc.StatusCode.UNKNOWN
        assert exc.value.details() == "extract auth: unauthorized: invalid api key"


# ------------------------------------------------------------------------- schema
def make_library(server: WeaviateServer) -> None:
    server.create_collection("Author", properties={"name": "text"})
    server.create_collection(
        "Article",
        properties={"title": "text", "meta": ("object", {"year": "int", "tags": "text[]"})},
        references={"author": "Author"},
        vector=VectorIndex(4, "l2-squared", index_type="flat"),
        description="articles",
    )
    server.create_collection(
        "Passage",
        properties={"text": "text"},
        named_vectors={
            "cos": VectorIndex(3, "cosine"),
            "dot": VectorIndex(3, "dot"),
            "ham": VectorIndex(3, "hamming"),
            "man": VectorIndex(3, "manhattan"),
            "colbert": VectorIndex(2, "cosine", multi=True),
        },
    )
    server.create_collection("Note", properties={"body": "text"}, vector=3, multi_tenancy=True)


def test_list_collections_and_config(server: WeaviateServer, client: Any) -> None:
    make_library(server)
    listed = client.collections.list_all()
    assert sorted(listed) == ["Article", "Author", "Note", "Passage"]
    assert [p.name for p in listed["Article"].properties] == ["title", "meta"]

    article = client.collections.get("Article").config.get()
    assert article.description == "articles"
    assert article.vector_index_type.value == "flat"
    assert article.vector_index_config.distance_metric == VectorDistances.L2_SQUARED
    assert article.vector_config is None
    assert article.multi_tenancy_config.enabled is False
    title, meta = article.properties
    assert (title.data_type, title.tokenization.value) == (DataType.TEXT, "word")
    assert meta.data_type == DataType.OBJECT
    assert [(n.name, n.data_type) for n in meta.nested_properties] == [
        ("year", DataType.INT),
        ("tags", DataType.TEXT_ARRAY),
    ]
    (author,) = article.references
    assert (author.name, author.target_collections) == ("author", ["Author"])

    passage = client.collections.get("Passage").config.get()
    assert passage.vector_index_config is None and passage.vectorizer is None
    distances = {
        name: cfg.vector_index_config.distance_metric for name, cfg in passage.vector_config.items()
    }
    assert distances == {
        "cos": VectorDistances.COSINE,
        "dot": VectorDistances.DOT,
        "ham": VectorDistances.HAMMING,
        "man": VectorDistances.MANHATTAN,
        "colbert": VectorDistances.COSINE,
    }
    multi = passage.vector_config["colbert"].vector_index_config.multi_vector
    assert multi is not None and multi.aggregation == "maxSim"
    assert passage.vector_config["dot"].vector_index_config.multi_vector is None

    note = client.collections.get("Note").config.get()
    assert note.multi_tenancy_config.enabled is True and note.sharding_config is None
    assert client.collections.exists("Passage") and not client.collections.exists("Nope")


def test_schema_json_as_weaviate_reports_it(server: WeaviateServer) -> None:
    make_library(server)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}) as raw:
        passage = raw.get("/v1/schema/passage").json()  # the server upper-cases the name
        colbert = passage["vectorConfig"]["colbert"]
        assert colbert["vectorizer"] == {"none": {}}
        assert colbert["vectorIndexConfig"]["multivector"]["enabled"] is True
        assert "vectorizer" not in passage and "vectorIndexConfig" not in passage
        article = raw.get("/v1/schema/Article").json()
        assert article["vectorizer"] == "none" and article["vectorIndexType"] == "flat"
        missing = raw.get("/v1/schema/Nope")
        assert (missing.status_code, missing.content) == (404, b"")
        server.add_tenants("Note", {"a": "ACTIVE", "b": "INACTIVE"})
        assert raw.get("/v1/schema/Note/tenants").json() == [
            {"activityStatus": "ACTIVE", "name": "a"},
            {"activityStatus": "INACTIVE", "name": "b"},
        ]
        not_mt = raw.get("/v1/schema/Article/tenants")
        assert not_mt.status_code == 422
        assert "multi-tenancy is not enabled" in not_mt.json()["error"][0]["message"]
        assert raw.get("/v1/.well-known/ready", headers={}).status_code == 200


# ------------------------------------------------------------------------ vectors
def test_iterate_the_unnamed_vector_float32_exact(server: WeaviateServer, client: Any) -> None:
    server.create_collection("Doc", properties={"n": "int"}, vector=VectorIndex(16, "dot"))
    rng = np.random.default_rng(3)
    matrix = rng.standard_normal((250, 16), dtype=np.float32)
    matrix[0, :4] = [1e-30, -3.4e38, np.float32(1) / 3, 1e-45]  # tiny, huge, inexact, denormal
    ids = [uuid.uuid4() for _ in range(250)]
    server.seed("Doc", uuids=ids, vector=matrix, properties=[{"n": i} for i in range(250)])
    server.reset_stats()
    seen = bounded(client.collections.get("Doc").iterator(include_vector=True, cache_size=64))
    assert [o.uuid for o in seen] == sorted(ids)  # UUID order
    by_id = {o.uuid: o for o in seen}
    for i, object_id in enumerate(ids):
        assert set(by_id[object_id].vector) == {"default"}
        assert np.array_equal(f32(by_id[object_id].vector["default"]), matrix[i])
        assert by_id[object_id].properties == {"n": i}
    assert server.count("Search") == math.ceil(250 / 64) + 1  # pages, then an empty one


def test_iterate_named_and_multi_vectors(server: WeaviateServer, client: Any) -> None:
    server.create_collection(
        "Passage",
        properties={"text": "text"},
        named_vectors={"body": VectorIndex(3, "dot"), "colbert": VectorIndex(2, multi=True)},
    )
    tokens = [np.arange(2 * (i + 1), dtype=np.float32).reshape(-1, 2) / 7 for i in range(3)]
    ids = [uuid.UUID(int=i + 1) for i in range(3)]
    server.seed(
        "Passage",
        [
            {"uuid": ids[0], "vectors": {"body": [0.1, 0.2, 0.3], "colbert": tokens[0]}},
            {"uuid": ids[1], "vectors": {"body": [1.0, 2.0, 3.0], "colbert": tokens[1]}},
            {"uuid": ids[2], "vectors": {"colbert": tokens[2]}},  # no "body" vector
        ],
    )
    passage = client.collections.get("Passage")
    got = {o.uuid: o.vector for o in bounded(passage.iterator(include_vector=True, cache_size=2))}
    assert list(got) == ids
    assert np.array_equal(f32(got[ids[0]]["body"]), f32([0.1, 0.2, 0.3]))
    for object_id, expected in zip(ids, tokens, strict=True):
        multi = got[object_id]["colbert"]  # a list of token vectors
        assert isinstance(multi, list) and isinstance(multi[0], list)
        assert np.array_equal(f32(multi), expected)
    assert set(got[ids[2]]) == {"colbert"}  # an absent vector is left out
    only_body = passage.query.fetch_objects(include_vector=["body"]).objects
    assert [set(o.vector) for o in only_body] == [{"body"}, {"body"}, set()]
    assert passage.query.fetch_objects().objects[0].vector == {}  # vectors only when asked


def test_client_drops_named_vectors_when_the_unnamed_one_is_present(
    server: WeaviateServer, client: Any
) -> None:
    # A collection may hold both; the client then returns {"default": ...} only (it looks at
    # vector_bytes first), though the server sends the named vectors too.
    server.create_collection("Both", vector=2, named_vectors={"extra": 2})
    server.seed(
        "Both", [{"uuid": uuid.UUID(int=9), "vector": [1, 2], "vectors": {"extra": [3, 4]}}]
    )
    (obj,) = client.collections.get("Both").query.fetch_objects(include_vector=True).objects
    assert obj.vector == {"default": [1.0, 2.0]}


def test_search_reply_decodes_with_the_generated_messages(server: WeaviateServer) -> None:
    server.create_collection(
        "Doc", properties={"n": "int"}, vector=3, named_vectors={"m": VectorIndex(2, multi=True)}
    )
    zero_led = uuid.UUID("0000ffff-0000-4000-8000-000000000001")
    server.seed(
        "Doc",
        [
            {
                "uuid": zero_led,
                "properties": {"n": -5},
                "vector": [1, 2, 3],
                "vectors": {"m": [[1, 2]]},
            }
        ],
    )
    request = search_get_pb2.SearchRequest(
        collection="Doc",
        metadata=search_get_pb2.MetadataRequest(uuid=True, vector=True, creation_time_unix=True),
        uses_123_api=True,
        uses_125_api=True,
        uses_127_api=True,
    )
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        reply = weaviate_pb2_grpc.WeaviateStub(channel).Search(
            request, metadata=(("authorization", f"Bearer {KEY}"),), timeout=5
        )
    (result,) = reply.results
    meta = result.metadata
    assert meta.id == str(zero_led)
    assert meta.id_as_bytes == zero_led.int.to_bytes(16, "big").lstrip(b"\x00")  # big.Int
    assert meta.vector_bytes == f32([1, 2, 3]).tobytes()
    assert list(meta.vector) == [1.0, 2.0, 3.0]  # the deprecated floats, sent as well
    assert meta.creation_time_unix_present and meta.creation_time_unix > 0
    (multi,) = meta.vectors
    assert multi.name == "m" and multi.type == multi.VECTOR_TYPE_MULTI_FP32
    assert multi.vector_bytes == b"\x02\x00" + f32([1, 2]).tobytes()  # uint16 dim, then rows
    assert result.properties.target_collection == "Doc"
    assert result.properties.non_ref_props.fields["n"].int_value == -5
    assert reply.HasField("generative_grouped_result")


# ---------------------------------------------------------------------- properties
EVERY_TYPE = {
    "text": "text",
    "texts": "text[]",
    "int": "int",
    "ints": "int[]",
    "number": "number",
    "numbers": "number[]",
    "flag": "boolean",
    "flags": "boolean[]",
    "date": "date",
    "dates": "date[]",
    "ref_id": "uuid",
    "ref_ids": "uuid[]",
    "place": "geoCoordinates",
    "phone": "phoneNumber",
    "picture": "blob",
    "meta": ("object", {"year": "int", "when": "date", "inner": ("object", {"deep": "text"})}),
    "rows": ("object[]", {"k": "text", "v": "number"}),
    "unset": "text",
}


def test_every_property_type_round_trips(server: WeaviateServer, client: Any) -> None:
    server.create_collection("Typed", properties=EVERY_TYPE)
    u1, u2 = uuid.uuid4(), uuid.uuid4()
    stored = {
        "text": "Grüße, 東京 🚀",
        "texts": ["a", ""],
        "int": 2**53 + 1,  # kept as a float64 by the server: comes back as 2**53
        "ints": [-1, 0, 2**40],
        "number": 0.1,
        "numbers": [1.5, -2.25],
        "flag": False,
        "flags": [True, False],
        "date": "2024-01-02T03:04:05.120000+02:00",
        "dates": [dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)],
        "ref_id": u1,
        "ref_ids": [str(u1), u2],
        "place": GeoCoordinate(latitude=52.366667, longitude=4.9),
        "phone": {
            "input": "020 1234567",
            "defaultCountry": "NL",
            "countryCode": 31,
            "internationalFormatted": "+31 20 123 4567",
            "national": 201234567,
            "nationalFormatted": "020 123 4567",
            "valid": True,
        },
        "picture": b"\x89PNG\x00",
        "meta": {"year": 1999, "when": "1999-12-31T23:59:59Z", "inner": {"deep": "x"}},
        "rows": [{"k": "a", "v": 1}, {"k": "b"}],
    }
    object_id = uuid.uuid4()
    server.seed("Typed", [{"uuid": object_id, "properties": stored}])
    typed = client.collections.get("Typed")
    (obj,) = typed.query.fetch_objects().objects
    props = obj.properties
    assert "picture" not in props  # blobs only when asked for
    assert props["unset"] is None  # a property the object lacks: a null value
    assert props["text"] == stored["text"] and props["texts"] == ["a", ""]
    assert props["int"] == 2**53 and isinstance(props["int"], int)
    assert props["ints"] == [-1, 0, 2**40]
    assert props["number"] == 0.1 and props["numbers"] == [1.5, -2.25]
    assert props["flag"] is False and props["flags"] == [True, False]
    tz2 = dt.timezone(dt.timedelta(hours=2))
    assert props["date"] == dt.datetime(2024, 1, 2, 3, 4, 5, 120000, tzinfo=tz2)
    assert props["date"].utcoffset() == dt.timedelta(hours=2)
    assert props["dates"] == [dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)]
    assert isinstance(props["ref_id"], uuid.UUID) and props["ref_id"] == u1
    assert props["ref_ids"] == [u1, u2]
    place = props["place"]
    assert isinstance(place, GeoCoordinate)
    assert (place.latitude, place.longitude) == (
        float(np.float32(52.366667)),
        float(np.float32(4.9)),
    )
    phone = props["phone"]
    assert isinstance(phone, _PhoneNumber)
    assert (phone.number, phone.country_code, phone.national, phone.valid) == (
        "020 1234567",
        31,
        201234567,
        True,
    )
    assert phone.international_formatted == "+31 20 123 4567" and phone.default_country == "NL"
    assert props["meta"] == {
        "year": 1999,
        "when": dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc),
        "inner": {"deep": "x"},
    }
    assert props["rows"] == [{"k": "a", "v": 1.0}, {"k": "b"}]  # absent nested: left out

    (with_blob,) = typed.query.fetch_objects(return_properties=["picture", "text"]).objects
    assert with_blob.properties == {"picture": "iVBORwA=", "text": stored["text"]}  # base64 str
    (nested,) = typed.query.fetch_objects(
        return_properties=[QueryNested(name="meta", properties=["year"])]
    ).objects
    assert nested.properties == {"meta": {"year": 1999}}
    assert typed.query.fetch_objects(return_properties=[]).objects[0].properties == {}
    with pytest.raises(WeaviateQueryError, match="no such prop with name 'nope'"):
        typed.query.fetch_objects(return_properties=["nope"])
    assert server.get("Typed", object_id)["properties"]["date"] == "2024-01-02T03:04:05.12+02:00"


def test_seed_validates_against_the_schema(server: WeaviateServer) -> None:
    server.create_collection("Doc", properties={"n": "int", "when": "date"}, vector=3)
    with pytest.raises(ValueError, match="no such property 'x'"):
        server.seed("Doc", [{"uuid": uuid.uuid4(), "properties": {"x": 1}}])
    with pytest.raises(ValueError, match="integer"):
        server.seed("Doc", [{"uuid": uuid.uuid4(), "properties": {"n": "1"}}])
    with pytest.raises(ValueError, match="RFC 3339"):
        server.seed("Doc", [{"uuid": uuid.uuid4(), "properties": {"when": "yesterday"}}])
    with pytest.raises(ValueError, match="3 values"):
        server.seed("Doc", uuids=[uuid.uuid4()], vector=np.ones((1, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="no named vector 'other'"):
        server.seed("Doc", [{"uuid": uuid.uuid4(), "vectors": {"other": [1, 2, 3]}}])
    assert server.object_count("Doc") == 0


# ---------------------------------------------------------------------- references
def test_references_come_back_as_uuids(server: WeaviateServer, client: Any) -> None:
    server.create_collection("Author", properties={"name": "text"})
    server.create_collection("Book", properties={"title": "text"}, references={"by": "Author"})
    ann, bob, ghost = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    server.seed("Author", [{"uuid": ann, "properties": {"name": "Ann"}}, {"uuid": bob}])
    book_ids = [uuid.UUID(int=1), uuid.UUID(int=2), uuid.UUID(int=3)]
    server.seed(
        "Book",
        [
            {"uuid": book_ids[0], "properties": {"title": "one"}, "references": {"by": [ann, bob]}},
            {"uuid": book_ids[1], "references": {"by": ghost}},  # dangling: resolves to nothing
            {"uuid": book_ids[2]},
        ],
    )
    books = client.collections.get("Book")
    got = bounded(
        books.iterator(
            return_properties=["title"],
            return_references=QueryReference(link_on="by", return_properties=["name"]),
            cache_size=2,
        )
    )
    assert [b.uuid for b in got] == book_ids
    first = got[0].references["by"].objects
    assert [a.uuid for a in first] == [ann, bob]
    assert all(isinstance(a.uuid, uuid.UUID) for a in first)
    assert first[0].properties == {"name": "Ann"} and first[0].collection == "Author"
    assert set(got[1].references) == {"by"} and got[1].references["by"].objects == []
    assert got[2].references == {}  # asked for, none stored
    assert books.query.fetch_objects().objects[0].references is None  # not asked for


def test_multi_target_references(server: WeaviateServer, client: Any) -> None:
    server.create_collection("Person", properties={"name": "text"})
    server.create_collection("Company", properties={"name": "text"})
    server.create_collection("Deal", references={"party": ["Person", "Company"]})
    ann, acme = uuid.uuid4(), uuid.uuid4()
    server.seed("Person", [{"uuid": ann, "properties": {"name": "Ann"}}])
    server.seed("Company", [{"uuid": acme, "properties": {"name": "Acme"}}])
    deal = uuid.uuid4()
    server.seed(
        "Deal", [{"uuid": deal, "references": {"party": [("Person", ann), ("Company", acme)]}}]
    )
    with pytest.raises(ValueError, match="multi-target"):
        server.seed("Deal", [{"uuid": uuid.uuid4(), "references": {"party": ann}}])
    deals = client.collections.get("Deal")
    for target, expected in (("Person", ann), ("Company", acme)):
        ref = QueryReference.MultiTarget(link_on="party", target_collection=target)
        (obj,) = deals.query.fetch_objects(return_references=ref).objects
        assert [o.uuid for o in obj.references["party"].objects] == [expected]
    with pytest.raises(WeaviateQueryError, match="multi target references"):
        deals.query.fetch_objects(return_references=QueryReference(link_on="party"))


# ------------------------------------------------------------------------- tenants
def test_every_tenant_is_iterated(server: WeaviateServer, client: Any) -> None:
    server.create_collection("Note", properties={"body": "text"}, vector=2, multi_tenancy=True)
    server.add_tenants("Note", {"alpha": "ACTIVE", "beta": "ACTIVE", "cold": "INACTIVE"})
    expected: dict[str, set[uuid.UUID]] = {}
    for t, n in (("alpha", 3), ("beta", 5)):
        ids = [uuid.uuid4() for _ in range(n)]
        server.seed("Note", uuids=ids, vector=np.ones((n, 2), np.float32), tenant=t)
        expected[t] = set(ids)
    notes = client.collections.get("Note")
    tenants = notes.tenants.get()  # gRPC TenantsGet for servers >= 1.25
    assert {n: t.activity_status for n, t in tenants.items()} == {
        "alpha": TenantActivityStatus.ACTIVE,
        "beta": TenantActivityStatus.ACTIVE,
        "cold": TenantActivityStatus.INACTIVE,
    }
    assert server.count("TenantsGet") == 1 and server.count("/tenants") == 0
    for name in ("alpha", "beta"):
        mine = notes.with_tenant(name)
        assert {o.uuid for o in bounded(mine.iterator(cache_size=2))} == expected[name]
        assert mine.aggregate.over_all(total_count=True).total_count == len(expected[name])
    with pytest.raises(WeaviateQueryError) as exc:
        notes.query.fetch_objects()
    assert exc.value.message == (
        "explorer: list class: search: object search at index note: class Note has "
        "multi-tenancy enabled, but request was without tenant"
    )
    with pytest.raises(WeaviateQueryError, match="tenant not active: 'cold'"):
        notes.with_tenant("cold").query.fetch_objects()
    with pytest.raises(WeaviateQueryError, match='tenant not found: "gamma"'):
        notes.with_tenant("gamma").query.fetch_objects()
    with pytest.raises(WeaviateQueryError, match="multi-tenancy enabled, but request was without"):
        notes.aggregate.over_all(total_count=True)
    server.create_collection("Plain", vector=2)
    with pytest.raises(WeaviateTenantGetError, match="multi-tenancy is not enabled"):
        client.collections.get("Plain").tenants.get()


# -------------------------------------------------------------------------- cursor
def test_after_cursor_gives_each_object_once(server: WeaviateServer, client: Any) -> None:
    server.create_collection("Doc", vector=2)
    edge = [uuid.UUID(int=0), uuid.UUID(int=1), uuid.UUID(int=2**128 - 1)]
    ids = edge + [uuid.uuid4() for _ in range(47)]
    server.seed("Doc", uuids=ids, vector=np.zeros((50, 2), np.float32))
    docs = client.collections.get("Doc")
    seen: list[uuid.UUID] = []
    after = None
    pages = 0
    while pages < 20:  # bounded: a cursor that does not advance fails instead of hanging
        page = docs.query.fetch_objects(limit=7, after=after).objects
        if not page:
            break
        pages += 1
        seen += [o.uuid for o in page]
        after = page[-1].uuid
    assert seen == sorted(ids) and len(set(seen)) == 50 and pages == 8
    assert seen[0] == uuid.UUID(int=0)  # an empty id_as_bytes still decodes
    assert [o.uuid for o in docs.query.fetch_objects(limit=3, after=ids[1]).objects][0] > ids[1]
    assert len(docs.query.fetch_objects().objects) == 10  # QUERY_DEFAULTS_LIMIT
    with pytest.raises(WeaviateQueryError, match="where cannot be set with after and limit"):
        docs.query.fetch_objects(after=ids[0], filters=Filter.by_id().equal(ids[3]))
    assert docs.query.fetch_object_by_id(ids[5]).uuid == ids[5]
    assert docs.query.fetch_object_by_id(uuid.uuid4()) is None
    by_ids = docs.query.fetch_objects_by_ids([ids[9], ids[4]]).objects
    assert {o.uuid for o in by_ids} == {ids[9], ids[4]}


def test_counts_over_grpc_and_over_graphql(server: WeaviateServer, client: Any) -> None:
    server.create_collection("Doc", vector=2)
    server.seed("Doc", uuids=[uuid.uuid4() for _ in range(42)], vector=np.ones((42, 2), np.float32))
    docs = client.collections.get("Doc")
    assert docs.aggregate.over_all(total_count=True).total_count == 42
    assert len(docs) == 42
    assert server.count("Aggregate") == 2 and server.count("/v1/graphql") == 0
    server.version = "1.28.0"  # servers before 1.29 are asked through GraphQL
    with connect(server) as old:
        assert old.collections.get("Doc").aggregate.over_all(total_count=True).total_count == 42
        with pytest.raises(
            WeaviateQueryError, match=r"Cannot query field .+Nope.+ on type .+AggregateObjectsObj"
        ):
            old.collections.get("Nope").aggregate.over_all(total_count=True)
    assert server.count("POST /v1/graphql") == 2 and server.count("Aggregate") == 2


# -------------------------------------------------------------------------- errors
def test_wrong_or_missing_key_on_connect(server: WeaviateServer) -> None:
    with pytest.raises(UnexpectedStatusCodeError) as exc:
        connect(server, api_key="wrong")
    assert exc.value.status_code == 401
    assert "unauthorized: invalid api key" in str(exc.value)
    with pytest.raises(UnexpectedStatusCodeError) as exc:
        connect(server, api_key=None)
    assert exc.value.status_code == 401
    assert "anonymous access not enabled" in str(exc.value)


def test_rotated_key_fails_queries(server: WeaviateServer, client: Any) -> None:
    server.create_collection("Doc", vector=2)
    docs = client.collections.get("Doc")
    server.api_key = "rotated"
    with pytest.raises(WeaviateQueryError) as exc:
        docs.query.fetch_objects()
    assert exc.value.message == "extract auth: unauthorized: invalid api key"
    assert server.log[-1] == ("/weaviate.v1.Weaviate/Search", "UNKNOWN")
    server.grpc_auth_code = grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(WeaviateQueryError):
        docs.query.fetch_objects()
    assert server.log[-1] == ("/weaviate.v1.Weaviate/Search", "UNAUTHENTICATED")
    assert server.count("Search") == 2  # neither is retried
    with pytest.raises(UnexpectedStatusCodeError) as rest:
        docs.config.get()
    assert rest.value.status_code == 401


def test_unknown_collection(server: WeaviateServer, client: Any) -> None:
    nope = client.collections.get("nope")  # the client upper-cases the first letter
    with pytest.raises(UnexpectedStatusCodeError) as exc:
        nope.config.get()
    assert exc.value.status_code == 404
    with pytest.raises(WeaviateQueryError) as query:
        nope.query.fetch_objects()
    assert query.value.message == "could not find class Nope in schema"
    with pytest.raises(WeaviateQueryError, match="could not find class Nope in schema"):
        nope.aggregate.over_all(total_count=True)


@pytest.fixture()
def retry_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's gRPC backoff (weaviate.retry, time.sleep(2**count)), recorded not slept."""
    sleeps: list[float] = []
    monkeypatch.setattr(weaviate.retry, "time", types.SimpleNamespace(sleep=sleeps.append))
    return sleeps


def test_unavailable_is_retried_by_the_client(
    server: WeaviateServer, client: Any, retry_sleeps: list[float]
) -> None:
    server.create_collection("Doc", vector=2)
    docs = client.collections.get("Doc")
    server.fail_next(2, grpc.StatusCode.UNAVAILABLE, method="Search")
    assert docs.query.fetch_objects().objects == []
    assert server.count("Search") == 3 and retry_sleeps == [1, 2]
    server.reset_stats()
    retry_sleeps.clear()
    server.fail_next(6, grpc.StatusCode.UNAVAILABLE, method="Weaviate/Search")
    with pytest.raises(WeaviateQueryError, match="failed after 5 retries"):
        docs.query.fetch_objects()
    assert server.count("Search") == 6 and retry_sleeps == [1, 2, 4, 8, 16, 32]
    server.fail_next(1, grpc.StatusCode.UNAVAILABLE, method="Aggregate")
    assert docs.aggregate.over_all(total_count=True).total_count == 0  # retried as well


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAUTHENTICATED],
    ids=lambda c: c.name,
)
def test_other_grpc_faults_are_not_retried(
    server: WeaviateServer, client: Any, retry_sleeps: list[float], code: grpc.StatusCode
) -> None:
    server.create_collection("Doc", vector=2)
    server.fail_next(1, code, method="/weaviate.v1.Weaviate/Search", details="slow down")
    with pytest.raises(WeaviateQueryError) as exc:
        client.collections.get("Doc").query.fetch_objects()
    assert exc.value.message == "slow down"
    assert server.count("Search") == 1 and retry_sleeps == []
    assert server.log[-1] == ("/weaviate.v1.Weaviate/Search", code.name)


def test_rest_faults_and_tenant_faults(server: WeaviateServer, client: Any) -> None:
    server.create_collection("Doc", vector=2, multi_tenancy=True)
    server.fail_next(1, 429, path="/v1/schema/Doc", retry_after=1)
    with pytest.raises(UnexpectedStatusCodeError) as exc:
        client.collections.get("Doc").config.get()
    assert exc.value.status_code == 429
    server.fail_next(1, 503, path="/v1/schema")
    with pytest.raises(UnexpectedStatusCodeError) as exc:
        client.collections.list_all()
    assert exc.value.status_code == 503
    assert client.collections.get("Doc").config.get().name == "Doc"  # faults are used up
    server.fail_next(1, grpc.StatusCode.RESOURCE_EXHAUSTED, method="TenantsGet")
    with pytest.raises(WeaviateTenantGetError):
        client.collections.get("Doc").tenants.get()
    with pytest.raises(ValueError):
        server.fail_next(1, 503, method="Search")
    server.fail_next(1, 429, path="/v1/meta", retry_after=2, details="slow down")
    server.hang_next(1, seconds=0.3, path="/v1/meta")
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}) as raw:
        start = time.monotonic()
        answer = raw.get("/v1/meta")
        assert time.monotonic() - start >= 0.3
        assert answer.status_code == 429 and answer.headers["retry-after"] == "2"
        assert answer.json() == {"error": [{"message": "slow down"}]}
        assert raw.get("/v1/meta").json()["version"] == server.version


def test_latency_is_added_to_both_transports(server: WeaviateServer, client: Any) -> None:
    server.create_collection("Doc", vector=2)
    docs = client.collections.get("Doc")
    server.latency = 0.2
    server.reset_stats()
    start = time.monotonic()
    docs.query.fetch_objects()
    assert time.monotonic() - start >= 0.2
    start = time.monotonic()
    docs.config.get()
    assert time.monotonic() - start >= 0.2
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda _: docs.query.fetch_objects(), range(4)))
    assert time.monotonic() - start < 4 * 0.2 * 0.75  # the calls overlapped
    assert server.max_in_flight >= 2 and server.in_flight == 0


def test_hang_past_the_client_deadline(server: WeaviateServer) -> None:
    server.create_collection("Doc", vector=2)
    config = AdditionalConfig(timeout=Timeout(init=2, query=0.3, insert=2))
    with connect(server, additional_config=config) as c:
        server.hang_next(1, seconds=1.0, method="Search")
        start = time.monotonic()
        with pytest.raises(WeaviateQueryError, match="Deadline"):
            c.collections.get("Doc").query.fetch_objects()
        assert 0.3 <= time.monotonic() - start < 1.0
        assert server.count("Search") == 1  # DEADLINE_EXCEEDED is not retried


def test_pages_of_large_vectors_encode_fast(server: WeaviateServer) -> None:
    server.create_collection("Big", properties={"n": "int"}, vector=1024)
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((2000, 1024), dtype=np.float32)
    server.seed(
        "Big",
        uuids=[uuid.uuid4() for _ in range(2000)],
        vector=matrix,
        properties=[{"n": i} for i in range(2000)],
    )
    request = search_get_pb2.SearchRequest(
        collection="Big",
        limit=1000,
        metadata=search_get_pb2.MetadataRequest(uuid=True, vector=True),
    )
    # 8 MB a page: above gRPC's default 4 MB limit; the client takes grpcMaxMessageSize from meta.
    options = [("grpc.max_receive_message_length", server.grpc_max_message_size)]
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}", options=options) as channel:
        search = channel.unary_unary(
            "/weaviate.v1.Weaviate/Search",
            request_serializer=search_get_pb2.SearchRequest.SerializeToString,
            response_deserializer=lambda b: b,
        )
        auth = (("authorization", f"Bearer {KEY}"),)
        search(request, metadata=auth, timeout=10)  # warm up
        start = time.perf_counter()
        raw = search(request, metadata=auth, timeout=10)
        elapsed = time.perf_counter() - start
    assert len(raw) > 1000 * 2 * 4096  # vector_bytes and the deprecated floats
    assert elapsed < 0.5, f"a 1000 x 1024 page took {elapsed:.3f} s"
    first = search_get_pb2.SearchReply.FromString(raw).results[0].metadata
    row = np.frombuffer(first.vector_bytes, dtype="<f4")
    assert any(np.array_equal(row, r) for r in matrix)


def test_runs_as_its_own_process() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(SERVER_SCRIPT),
            "--port",
            "0",
            "--grpc-port",
            "0",
            "--latency",
            "0.01",
            "--collection",
            "Bench",
            "--records",
            "300",
            "--dim",
            "16",
            "--api-key",
            "k",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        info = json.loads(line)
        assert info["records"] == 300
        with weaviate.connect_to_custom(
            http_host="127.0.0.1",
            http_port=info["http_port"],
            http_secure=False,
            grpc_host="127.0.0.1",
            grpc_port=info["grpc_port"],
            grpc_secure=False,
            auth_credentials=weaviate.classes.init.Auth.api_key("k"),
            skip_init_checks=True,
        ) as c:
            bench = c.collections.get("Bench")
            got = {o.uuid: o for o in bounded(bench.iterator(include_vector=True, cache_size=128))}
            assert len(bench) == 300
        for ids, matrix, props in synthetic_batches("Bench", 300, 16):
            for object_id, row, expected in zip(ids, matrix, props, strict=True):
                assert np.array_equal(f32(got[object_id].vector["default"]), row)
                assert got[object_id].properties == expected
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    stats = json.loads(err.strip().splitlines()[-1])
    assert stats["requests"]["/weaviate.v1.Weaviate/Search"] == 4  # 3 pages + an empty one
