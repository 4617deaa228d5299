"""Weaviate to PostgreSQL: vec2pg's source (weaviate-client v4 over REST, its protocol over
gRPC) against tests/weaviate_server.py, the wire-format test server of the real client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import psycopg
import pytest
import weaviate.connect.v4
from conftest import Target
from weaviate_server import VectorIndex, WeaviateServer

from vec2pg.errors import RateLimited, SourceAuthError, SourceError, Transient
from vec2pg.sources.base import WHOLE
from vec2pg.sources.weaviate import WeaviateSource

KEY = "wv-test-key-314"
#: The contract's canonical namespaces, as tenants of a multi-tenant collection.
TENANTS = {"": "main", "other": "other"}


@pytest.fixture(autouse=True)
def _no_weaviate_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("WEAVIATE_URL", "WEAVIATE_API_KEY"):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[WeaviateServer]:
    with WeaviateServer(api_key=KEY) as srv:
        # Were the client to ask PyPI for its latest version, it would ask this server.
        monkeypatch.setattr(weaviate.connect.v4, "PYPI_PACKAGE_URL", srv.pypi_url)
        yield srv


def source_args(server: WeaviateServer, collection: str, *extra: str) -> list[str]:
    return [
        "weaviate",
        collection,
        "--url",
        server.url,
        "--grpc-port",
        str(server.grpc_port),
        "--api-key",
        KEY,
        *extra,
    ]


def open_source(server: WeaviateServer, collection: str, **options: Any) -> WeaviateSource:
    return WeaviateSource(
        collection, url=server.url, grpc_port=server.grpc_port, api_key=KEY, **options
    )


def last_error(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def f32(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def contract_uuid(i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"vec2pg-contract/{i}"))


# ------------------------------------------------------------------ the shared contract
def case_weaviate(request: Any, tmp_path: Any) -> Iterator[Any]:
    """The contract's records in a multi-tenant collection: one tenant per namespace, in a
    named vector called "default" (what weaviate-client 4.16+ names a self-provided one)."""
    from test_source_contract import DIM, Case

    with WeaviateServer(api_key=KEY) as server:
        server.create_collection(
            "Docs",
            properties={"title": "text", "score": "number", "even": "boolean", "tags": "text[]"},
            named_vectors={"default": VectorIndex(DIM, "l2-squared")},
            multi_tenancy=True,
        )
        server.add_tenants("Docs", list(TENANTS.values()))

        def put(records: list[Any]) -> None:
            for namespace in {r.namespace for r in records}:
                objects = [
                    {"uuid": r.id, "properties": r.metadata, "vectors": dict(r.vectors)}
                    for r in records
                    if r.namespace == namespace
                ]
                server.seed("Docs", objects, tenant=TENANTS[namespace])

        case = Case(
            open=lambda collection="Docs": WeaviateSource(
                collection,
                url=server.url,
                grpc_port=server.grpc_port,
                api_key=KEY,
                page_size=100,
                timeout=5,
            ),
            cli=source_args(server, "Docs", "--page-size", "100"),
            table="Docs",
            namespaced=True,
            source_id=contract_uuid,
            put=put,
            delete=lambda ns, rid: server.delete("Docs", [rid], tenant=TENANTS[ns]),
            break_transiently=lambda: server.fail_next(1, grpc.StatusCode.UNAVAILABLE),
            table_namespace=TENANTS.__getitem__,
            vector="default",
        )
        case.seed()
        yield case


# ------------------------------------------------------------- every type of vector
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
    "meta": (
        "object",
        {"year": "int", "when": "date", "thumb": "blob", "inner": ("object", {"deep": "text"})},
    ),
    "rows": ("object[]", {"k": "text", "v": "number"}),
    "unset": "text",
}
ANN, BOB = uuid.UUID(int=0xA), uuid.UUID(int=0xB)


def make_typed(server: WeaviateServer) -> tuple[list[uuid.UUID], np.ndarray]:
    """A collection with every property type, references, the unnamed vector and named
    vectors of every distance and kind; two objects."""
    server.create_collection("Person", properties={"name": "text"})
    server.create_collection("Company", properties={"name": "text"})
    server.create_collection(
        "Typed",
        properties=EVERY_TYPE,
        references={"author": "Person", "party": ["Person", "Company"]},
        vector=VectorIndex(4, "dot"),
        named_vectors={
            "cos": VectorIndex(3, "cosine"),
            "ham": VectorIndex(3, "hamming"),
            "man": VectorIndex(3, "manhattan"),
            "l2": VectorIndex(3, "l2-squared", index_type="flat"),
            "colbert": VectorIndex(2, "dot", multi=True),
        },
    )
    server.seed("Person", [{"uuid": ANN, "properties": {"name": "Ann"}}])
    server.seed("Company", [{"uuid": BOB, "properties": {"name": "Bob Inc"}}])
    ids = [uuid.UUID("00000000-0000-4000-8000-000000000001"), uuid.uuid4()]
    # Tiny, large, inexact, denormal. (Not near float32's maximum: the sink's finiteness
    # check squares the values and numpy warns of the overflow.)
    unnamed = f32([[1e-30, -3.4e18, 1 / 3, 1e-45], [0.5, 0.25, -1, 2]])
    full = {
        "text": "Grüße, 東京 🚀",
        "texts": ["a", ""],
        "int": 2**53 + 1,  # Weaviate keeps ints as float64: 2**53 comes back
        "ints": [-1, 0, 2**40],
        "number": 0.1,
        "numbers": [1.5, -2.25],
        "flag": False,
        "flags": [True, False],
        "date": "2024-01-02T03:04:05.120000+02:00",
        "dates": ["2020-01-01T00:00:00Z"],
        "ref_id": str(ANN),
        "ref_ids": [str(ANN), str(BOB)],
        "place": {"latitude": 52.366667, "longitude": 4.9},
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
        "meta": {
            "year": 1999,
            "when": "1999-12-31T23:59:59Z",
            "thumb": b"\x01",
            "inner": {"deep": "x"},
        },
        "rows": [{"k": "a", "v": 1}, {"k": "b"}],
    }
    tokens = np.arange(6, dtype=np.float32).reshape(3, 2) / 7
    server.seed(
        "Typed",
        [
            {
                "uuid": ids[0],
                "properties": full,
                "vector": unnamed[0],
                "vectors": {
                    "cos": [0.1, 0.2, 0.3],
                    "ham": [1, 0, 1],
                    "man": [-1, 2, -3],
                    "l2": [9, 8, 7],
                    "colbert": tokens,
                },
                "references": {"author": ANN, "party": [("Person", ANN), ("Company", BOB)]},
            },
            # Few properties, no named vectors but one, no references.
            {
                "uuid": ids[1],
                "properties": {"text": "short"},
                "vector": unnamed[1],
                "vectors": {"l2": [1, 2, 3]},
            },
        ],
    )
    return ids, unnamed


def test_every_vector_and_property_type_arrives(server, target: Target, capsys) -> None:
    ids, unnamed = make_typed(server)

    assert target.cli(*source_args(server, "Typed"), "--quiet") == 0, capsys.readouterr().err

    rows = target.rows("Typed")
    assert set(rows) == {str(i) for i in ids}
    first, second = rows[str(ids[0])], rows[str(ids[1])]
    np.testing.assert_array_equal(first["embedding"], unnamed[0])
    np.testing.assert_array_equal(first["cos"], f32([0.1, 0.2, 0.3]))
    np.testing.assert_array_equal(first["ham"], f32([1, 0, 1]))
    np.testing.assert_array_equal(first["man"], f32([-1, 2, -3]))
    np.testing.assert_array_equal(first["l2"], f32([9, 8, 7]))
    np.testing.assert_array_equal(
        first["colbert"], np.arange(6, dtype=np.float32).reshape(3, 2) / 7
    )
    assert first["metadata"] == {
        "text": "Grüße, 東京 🚀",
        "texts": ["a", ""],
        "int": 2**53,
        "ints": [-1, 0, 2**40],
        "number": 0.1,
        "numbers": [1.5, -2.25],
        "flag": False,
        "flags": [True, False],
        "date": "2024-01-02T03:04:05.12+02:00",  # as Weaviate stores it (Go's RFC 3339)
        "dates": ["2020-01-01T00:00:00Z"],
        "ref_id": str(ANN),
        "ref_ids": [str(ANN), str(BOB)],
        "place": {"latitude": 52.36667, "longitude": 4.9},  # float32, in its shortest form
        "phone": {
            "input": "020 1234567",
            "internationalFormatted": "+31 20 123 4567",
            "countryCode": 31,
            "national": 201234567,
            "nationalFormatted": "020 123 4567",
            "valid": True,
            "defaultCountry": "NL",
        },
        "picture": "iVBORwA=",  # blobs too, base64 as Weaviate keeps them
        "meta": {
            "year": 1999,
            "when": "1999-12-31T23:59:59Z",
            "thumb": "AQ==",
            "inner": {"deep": "x"},
        },
        "rows": [{"k": "a", "v": 1.0}, {"k": "b"}],
        "author": [str(ANN)],
        "party": [str(ANN), str(BOB)],  # a multi-target reference: each target's UUIDs
    }
    np.testing.assert_array_equal(second["embedding"], unnamed[1])
    np.testing.assert_array_equal(second["l2"], f32([1, 2, 3]))
    assert second["cos"] is None and second["colbert"] is None
    assert second["metadata"] == {"text": "short"}

    comments = dict(
        target.query(
            "SELECT attname, col_description(attrelid, attnum) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            [f'"{target.schema}"."Typed"'],
        )
    )
    described = {
        name: (
            c["vec2pg"]["vector"],
            c["vec2pg"]["kind"],
            c["vec2pg"]["dim"],
            c["vec2pg"]["metric"],
        )
        for name, comment in comments.items()
        if comment and (c := json.loads(comment)).get("vec2pg")
    }
    assert described == {
        "embedding": ("", "dense", 4, "dotproduct"),
        "cos": ("cos", "dense", 3, "cosine"),
        "ham": ("ham", "dense", 3, "hamming"),
        "man": ("man", "dense", 3, "manhattan"),
        "l2": ("l2", "dense", 3, "euclidean"),  # l2-squared ranks as the distance does
        "colbert": ("colbert", "multivector", 2, "dotproduct"),
    }


def test_connecting_asks_nothing_of_pypi_and_skips_the_clients_retries(server) -> None:
    server.create_collection("Doc", vector=2)
    server.seed("Doc", uuids=[uuid.uuid4() for _ in range(5)], vector=np.ones((5, 2), np.float32))
    source = open_source(server, "doc")  # Weaviate capitalises collection names
    try:
        info = source.describe()
        assert (info.collection, info.namespaced, info.total) == ("Doc", False, 5)
        assert server.count("/pypi/weaviate-client/json") == 0 and server.count("Check") == 0
        server.fail_next(1, grpc.StatusCode.UNAVAILABLE, method="Search")
        started = time.monotonic()
        with pytest.raises(SourceError) as outage:
            source.page("", WHOLE, None)
        # weaviate-client would sleep 1 s and ask again; vec2pg's pipeline retries instead.
        assert time.monotonic() - started < 1 and isinstance(outage.value, Transient)
        assert server.count("Search") == 2  # one to learn the dimension, one refused
        server.fail_next(1, grpc.StatusCode.RESOURCE_EXHAUSTED, method="Search")
        with pytest.raises(RateLimited):
            source.page("", WHOLE, None)
        server.api_key = "rotated"  # gRPC refuses a key with status UNKNOWN
        with pytest.raises(SourceAuthError, match="refused the API key over gRPC"):
            source.page("", WHOLE, None)
    finally:
        source.close()


# ---------------------------------------------------------------------------- tenants
def test_tenants_are_namespaces_and_inactive_ones_are_said(server, target: Target, capsys) -> None:
    server.create_collection("Note", properties={"body": "text"}, vector=2, multi_tenancy=True)
    server.add_tenants(
        "Note", {"alpha": "ACTIVE", "beta": "ACTIVE", "empty": "ACTIVE", "cold": "INACTIVE"}
    )
    expected = {}
    for tenant, n in (("alpha", 3), ("beta", 250), ("cold", 2)):
        ids = [uuid.uuid4() for _ in range(n)]
        props = [{"body": f"{tenant} {i}"} for i in range(n)]
        vectors = np.arange(2 * n, dtype=np.float32).reshape(n, 2)
        server.seed("Note", uuids=ids, vector=vectors, properties=props, tenant=tenant)
        expected.update({(tenant, str(u)): p for u, p in zip(ids, props, strict=True)})
    args = source_args(server, "Note", "--page-size", "40")

    assert target.cli(*args, "--tenant", "alpha", "--tenant", "beta", "--quiet") == 0, (
        capsys.readouterr().err
    )
    assert {k: r["metadata"] for k, r in target.rows("Note").items()} == {
        k: v for k, v in expected.items() if k[0] != "cold"
    }
    assert target.cli(*args, "--quiet") == 3
    assert last_error(capsys) == (
        "vec2pg: error: tenant 'cold' of Weaviate collection 'Note' is INACTIVE, and Weaviate "
        "reads only ACTIVE tenants: activate it (collection.tenants.update(Tenant(name='cold', "
        "activity_status=TenantActivityStatus.ACTIVE))) or leave it out with --tenant"
    )
    server.set_tenant_status("Note", "cold", "ACTIVE")
    assert target.cli(*args, "--json") == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["namespaces"]["cold"]["inserted"] == 2 and summary["inserted"] == 2
    assert {k: r["metadata"] for k, r in target.rows("Note").items()} == expected


def test_inactive_tenants_are_read_where_weaviate_activates_them(
    server, target: Target, capsys
) -> None:
    server.create_collection("Note", vector=2, multi_tenancy=True, auto_tenant_activation=True)
    server.add_tenants("Note", {"cold": "INACTIVE"})
    ids = [uuid.uuid4() for _ in range(3)]
    server.seed("Note", uuids=ids, vector=np.ones((3, 2), np.float32), tenant="cold")

    assert target.cli(*source_args(server, "Note"), "--quiet") == 0, capsys.readouterr().err

    assert set(target.rows("Note")) == {("cold", str(u)) for u in ids}
    assert server.tenants("Note") == {"cold": "ACTIVE"}


# ---------------------------------------------------------------------- reading pages
def test_a_large_collection_is_read_in_parallel_uuid_ranges_exactly_once(
    server, target: Target, capsys
) -> None:
    server.create_collection("Big", properties={"n": "int"}, vector=8)
    n = 6_000
    ids = [uuid.uuid4() for _ in range(n)]
    matrix = np.random.default_rng(5).standard_normal((n, 8), dtype=np.float32)
    server.seed("Big", uuids=ids, vector=matrix, properties=[{"n": i} for i in range(n)])
    server.latency = 0.01
    server.reset_stats()

    args = source_args(server, "Big", "--page-size", "100", "--concurrency", "4")
    assert target.cli(*args, "--json") == 0, capsys.readouterr().err

    summary = json.loads(capsys.readouterr().out)
    assert (summary["read"], summary["written"]) == (n, n)  # each object read once
    rows = target.rows("Big")
    assert len(rows) == n
    for i in range(0, n, 7):
        row = rows[str(ids[i])]
        np.testing.assert_array_equal(row["embedding"], matrix[i])
        assert row["metadata"] == {"n": i}
    assert server.max_in_flight >= 3  # chains read at the same time
    # 8 chains: each one's last page asks for about what is left before its end.
    assert server.count("Search") <= n / 100 + 2 * 8 + 1


def test_ids_that_are_not_uniform_arrive_too(server, target: Target, capsys) -> None:
    server.create_collection("Seq", vector=2)
    ids = [uuid.UUID(int=i) for i in range(1_200)]  # UUID 0 included: no "after" precedes it
    server.seed("Seq", uuids=ids, vector=np.ones((1_200, 2), np.float32))

    args = source_args(server, "Seq", "--page-size", "50")
    assert target.cli(*args, "--json") == 0, capsys.readouterr().err

    assert json.loads(capsys.readouterr().out)["read"] == 1_200
    assert set(target.rows("Seq")) == {str(u) for u in ids}


def test_a_vector_no_sampled_object_has_gets_no_column_and_its_objects_are_refused(
    server, target: Target, capsys
) -> None:
    server.create_collection("Sparse", named_vectors={"a": 2, "b": 3})
    ids = sorted(uuid.uuid4() for _ in range(2_101))
    server.seed("Sparse", uuids=ids, vectors={"a": np.ones((2_101, 2), np.float32)})
    # The last object (by UUID) is the only one with "b": beyond the 2,000 vec2pg samples.
    server.seed("Sparse", [{"uuid": ids[-1], "vectors": {"a": [1, 1], "b": [1, 2, 3]}}])

    assert target.cli(*source_args(server, "Sparse")) == 6

    assert last_error(capsys) == (
        f"vec2pg: error: record '{ids[-1]}': vector 'b' had no values in the objects vec2pg "
        "sampled to learn its dimension (Weaviate's schema has none), so the table has no "
        "column for it: run again with --replace"
    )
    ((columns,),) = target.query(
        "SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0",
        [f'"{target.schema}"."Sparse"'],
    )
    assert columns == ["id", "a", "metadata"]


def test_pages_of_wide_objects_hold_fewer_of_them(server) -> None:
    server.create_collection("Wide", vector=2048)
    server.seed(
        "Wide", uuids=[uuid.uuid4() for _ in range(700)], vector=np.ones((700, 2048), np.float32)
    )
    source = open_source(server, "Wide")
    try:
        source.describe()
        page = source.page("", WHOLE, None)
        # About 16 kB an object (the floats travel twice): 4 MB holds some 250, not 1,000.
        assert 200 <= page.size <= 260 and page.next_cursor is not None
        assert len(page.load()) == page.size
    finally:
        source.close()


def test_an_older_server_is_counted_over_graphql(server, target: Target, capsys) -> None:
    server.version = "1.28.2"
    server.create_collection("Doc", vector=2)
    server.seed("Doc", uuids=[uuid.uuid4() for _ in range(30)], vector=np.ones((30, 2), np.float32))

    assert target.cli(*source_args(server, "Doc"), "--json") == 0, capsys.readouterr().err

    assert json.loads(capsys.readouterr().out)["written"] == 30
    assert server.count("POST /v1/graphql") == 1 and server.count("Aggregate") == 0


# ---------------------------------------------------------------------- failures
def test_a_wrong_api_key_is_refused_without_printing_it(server, target: Target, capsys) -> None:
    server.create_collection("Doc", vector=2)
    args = source_args(server, "Doc")
    args[args.index(KEY)] = "not-the-key-271828"

    assert target.cli(*args) == 3
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        f"vec2pg: error: Weaviate at {server.url} refused the API key (HTTP 401): "
        "check --api-key or WEAVIATE_API_KEY"
    )
    assert "not-the-key-271828" not in err
    assert target.cli(*args[:-2]) == 3  # no key at all
    assert last_error(capsys) == (
        f"vec2pg: error: Weaviate at {server.url} needs an API key (HTTP 401): pass --api-key "
        "or set WEAVIATE_API_KEY"
    )


def test_an_unknown_collection_names_those_there_are(server, target: Target, capsys) -> None:
    for name in ("Article", "Author", "Zebra"):
        server.create_collection(name, vector=2)

    assert target.cli(*source_args(server, "Artcle")) == 3

    assert last_error(capsys) == (
        f"vec2pg: error: Weaviate at {server.url} has no collection 'Artcle'; did you mean "
        "'Article'?"
    )
    assert server.count("GET /v1/schema/Artcle") == 1


def test_a_server_older_than_the_client_supports_is_said(server, target: Target, capsys) -> None:
    server.version = "1.26.3"
    server.create_collection("Doc", vector=2)

    assert target.cli(*source_args(server, "Doc")) == 3

    assert last_error(capsys) == (
        f"vec2pg: error: Weaviate at {server.url} runs 1.26.3; vec2pg reads Weaviate 1.27 or "
        "later: upgrade the server"
    )


def test_a_wrong_grpc_port_fails_at_once(server, target: Target, capsys) -> None:
    server.create_collection("Doc", vector=2)
    args = source_args(server, "Doc")
    with socket_port() as closed:
        args[args.index(str(server.grpc_port))] = str(closed)
        started = time.monotonic()
        assert target.cli(*args) == 3
    assert time.monotonic() - started < 10
    error = last_error(capsys)
    assert error.startswith(
        f"vec2pg: error: Weaviate at {server.url}: gRPC at 127.0.0.1:{closed} did not answer "
        "while counting the objects ("
    )
    assert error.endswith("); check --grpc-port and that it is reachable")


class socket_port:
    """A local port that nothing listens on."""

    def __enter__(self) -> int:
        import socket

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        return int(self._socket.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._socket.close()


def test_rate_limits_and_outages_slow_the_run_down_but_do_not_stop_it(
    server, target: Target, capsys
) -> None:
    server.create_collection("Doc", properties={"n": "int"}, vector=2)
    server.seed(
        "Doc",
        uuids=[uuid.uuid4() for _ in range(500)],
        vector=np.ones((500, 2), np.float32),
        properties=[{"n": i} for i in range(500)],
    )
    server.fail_next(1, 429, path="/v1/schema/Doc", retry_after=0)
    server.fail_next(3, grpc.StatusCode.RESOURCE_EXHAUSTED, method="Search")
    server.fail_next(2, grpc.StatusCode.UNAVAILABLE, method="Search")

    started = time.monotonic()
    assert target.cli(*source_args(server, "Doc", "--page-size", "100"), "--json") == 0, (
        capsys.readouterr().err
    )

    summary = json.loads(capsys.readouterr().out)
    assert (summary["written"], summary["rate_limited"], summary["retries"]) == (500, 4, 6)
    assert time.monotonic() - started < 20  # the client's own backoff would take 1 + 2 s more


# ------------------------------------------------------------------ kill -9, then resume
def progress(target: Target) -> int:
    try:
        ((done,),) = target.query(
            f'SELECT coalesce(sum(records), 0) FROM "{target.schema}"._vec2pg_progress'
        )
    except psycopg.Error:
        return 0
    return int(done)


def test_a_run_killed_with_sigkill_resumes_exactly(server, target: Target, capsys) -> None:
    server.create_collection(
        "Note",
        properties={"n": "int", "tenant": "text"},
        named_vectors={"v": 8},
        multi_tenancy=True,
    )
    server.add_tenants("Note", ["north", "south"])
    rng = np.random.default_rng(9)
    expected: dict[tuple[str, str], tuple[np.ndarray, dict[str, Any]]] = {}
    for tenant, n in (("north", 2_500), ("south", 1_500)):
        ids = [uuid.uuid4() for _ in range(n)]
        matrix = rng.standard_normal((n, 8), dtype=np.float32)
        props = [{"n": i, "tenant": tenant} for i in range(n)]
        server.seed("Note", uuids=ids, vectors={"v": matrix}, properties=props, tenant=tenant)
        expected.update({(tenant, str(u)): (matrix[i], props[i]) for i, u in enumerate(ids)})
    server.latency = 0.02
    args = [
        *source_args(server, "Note", "--page-size", "50", "--concurrency", "2"),
        "--commit-rows",
        "200",
        "--dsn",
        target.dsn,
        "--schema",
        target.schema,
    ]
    run = subprocess.Popen(
        [sys.executable, "-m", "vec2pg", *args, "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while progress(target) < 800 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGKILL)
    run.communicate(timeout=30)
    committed = progress(target)
    assert run.returncode == -signal.SIGKILL and 800 <= committed < len(expected)
    server.latency = 0

    assert target.cli(*args[: args.index("--dsn")], "--json") == 0, capsys.readouterr().err

    summary = json.loads(capsys.readouterr().out)
    assert summary["resumed"] and summary["read"] == len(expected) - committed
    rows = target.rows("Note")
    assert rows.keys() == expected.keys()
    for key, (vector, props) in expected.items():
        np.testing.assert_array_equal(rows[key]["v"], vector)
        assert rows[key]["metadata"] == props
