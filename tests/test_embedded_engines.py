"""The embedded engines the next sources read (Milvus Lite, Chroma, LanceDB), as they are.

These tests check the seed helpers (tests/milvus_data.py, chroma_data.py, lancedb_data.py)
and pin down what each SDK returns, so the sources can rely on it: the Python form of each
value, page order and resume, counts, metrics, versions and the warnings each SDK emits.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# The SDKs are optional extras: without all three the module is skipped, not broken.
milvus = pytest.importorskip("pymilvus")
chromadb = pytest.importorskip("chromadb")
lancedb = pytest.importorskip("lancedb")
pa = pytest.importorskip("pyarrow")

from chroma_data import (  # noqa: E402
    SPACES,
    TENANT_LAYOUT,
    chroma_server,
    close_http,
    collection_space,
    open_persistent,
    seed_collection,
    seed_tenants,
    settings,
    stored_rows,
)
from chroma_data import assert_same_rows as assert_same_chroma_rows  # noqa: E402
from lancedb.index import IvfFlat  # noqa: E402
from lancedb.query import ColumnOrdering  # noqa: E402
from lancedb_data import (  # noqa: E402
    VECTOR_COLUMNS,
    connect,
    scan,
    seed_all_types,
    seed_versions,
    vectors_to_numpy,
)
from milvus_data import (  # noqa: E402
    LITE_REFUSED_VECTOR_TYPES,
    VECTOR_FIELDS,
    assert_same_rows,
    milvus_lite,
    partition_rows,
    primary_keys,
    release_lite,
    seed_partitions,
    seed_scalars,
    seed_vectors,
    source_rows,
    vector_metrics,
)

# --------------------------------------------------------------------------------------
# Milvus Lite
# --------------------------------------------------------------------------------------


DataType = milvus.DataType
MilvusClient = milvus.MilvusClient


@pytest.fixture
def lite(tmp_path: Path) -> Any:
    with milvus_lite(tmp_path / "milvus.db") as client:
        yield client


@pytest.mark.parametrize("dtype", LITE_REFUSED_VECTOR_TYPES, ids=lambda t: t.name)
def test_milvus_lite_refuses_half_binary_and_int8_vectors(lite, dtype) -> None:
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("pk", DataType.INT64, is_primary=True)
    schema.add_field("v", dtype, dim=16)

    with pytest.raises(milvus.MilvusException, match="which MilvusLite does not support") as e:
        lite.create_collection("refused", schema=schema)

    assert e.value.code == 6
    assert lite.list_collections() == []


@pytest.mark.parametrize("primary_key", ["int64", "varchar"])
def test_milvus_every_scalar_type_reads_back_exactly(lite, primary_key) -> None:
    seeded = seed_scalars(lite, "scalars", 300, primary_key=primary_key)

    assert_same_rows(source_rows(lite, "scalars", batch_size=64), seeded.rows)
    hits = lite.query("scalars", filter="", output_fields=["*"], limit=10)
    hit = next(h for h in hits if seeded.rows[h["pk"]]["$meta"])
    # The dynamic field's keys come spread among the fields, never as "$meta".
    assert "$meta" not in hit
    assert hit.keys() - seeded.rows[hit["pk"]].keys() == set(seeded.rows[hit["pk"]]["$meta"])


@pytest.mark.parametrize("primary_key", ["int64", "varchar"])
def test_milvus_several_vector_fields_with_their_metrics(lite, primary_key) -> None:
    seeded = seed_vectors(lite, "vectors", 200, primary_key=primary_key)

    assert_same_rows(source_rows(lite, "vectors", batch_size=64), seeded.rows)
    assert vector_metrics(lite, "vectors") == {
        "text": "COSINE",
        "image": "L2",
        "dot": "IP",
        "keywords": "IP",
    }
    index = lite.describe_index("vectors", index_name="text")
    assert (index["field_name"], index["index_type"], index["metric_type"]) == (
        "text",
        "HNSW",
        "COSINE",
    )
    fields = {f["name"]: f for f in lite.describe_collection("vectors")["fields"]}
    for name, (dtype, dim, _, _) in VECTOR_FIELDS.items():
        assert fields[name]["type"] == dtype
        assert fields[name]["params"].get("dim") == dim


def test_milvus_values_come_as_lists_dicts_or_numpy(lite) -> None:
    seeded = seed_vectors(lite, "forms", 10)
    iterator = lite.query_iterator("forms", batch_size=5, filter="", output_fields=["*"])
    hit = iterator.next()[0]
    iterator.close()
    strict = lite.query_iterator(
        "forms", batch_size=5, filter="", output_fields=["text"], strict_float32=True
    )
    numpy_hit = strict.next()[0]
    strict.close()

    assert type(hit["text"]) is list and type(hit["text"][0]) is float
    np.testing.assert_array_equal(
        np.asarray(hit["text"], np.float32), seeded.rows[hit["pk"]]["text"]
    )
    assert type(hit["keywords"]) is dict
    assert all(type(i) is int and type(w) is float for i, w in hit["keywords"].items())
    # strict_float32=True hands each dense vector over as a float32 numpy view.
    assert isinstance(numpy_hit["text"], np.ndarray) and numpy_hit["text"].dtype == np.float32
    np.testing.assert_array_equal(numpy_hit["text"], seeded.rows[numpy_hit["pk"]]["text"])


def test_pymilvus_hands_half_binary_and_int8_vectors_over_as_one_bytes_object() -> None:
    """Milvus Lite cannot hold these types, so decode a server's answer as query() does."""
    from pymilvus.client import entity_helper
    from pymilvus.client.types import HybridExtraList
    from pymilvus.grpc_gen import schema_pb2

    half = np.array([[1.5, -2, 0.25, 3], [4, 5, 6, 7]], np.float16)
    bits = np.array([[0b10110000], [0b00000001]], np.uint8)  # dim 8, packed, first bit high
    small = np.array([[1, -2, 3, -4], [5, 6, 7, -128]], np.int8)
    key = schema_pb2.FieldData(type=DataType.INT64, field_name="pk")
    key.scalars.long_data.data.extend([10, 20])
    fields = [key]
    for name, dtype, dim, attribute, payload in [
        ("half", DataType.FLOAT16_VECTOR, 4, "float16_vector", half.tobytes()),
        ("bits", DataType.BINARY_VECTOR, 8, "binary_vector", bits.tobytes()),
        ("small", DataType.INT8_VECTOR, 4, "int8_vector", small.tobytes()),
    ]:
        data = schema_pb2.FieldData(type=dtype, field_name=name)
        data.vectors.dim = dim
        setattr(data.vectors, attribute, payload)
        fields.append(data)
    rows = [dict.fromkeys(f.field_name for f in fields) for _ in range(2)]
    lazy = [f for f in fields if entity_helper.extract_row_data_from_fields_data_v2(f, rows)]

    first, second = HybridExtraList(lazy, rows)[0:2]
    assert first["half"] == [half[0].tobytes()] and second["half"] == [half[1].tobytes()]
    assert first["bits"] == [b"\xb0"] and second["bits"] == [b"\x01"]
    assert first["small"] == [small[0].tobytes()]
    np.testing.assert_array_equal(np.frombuffer(first["half"][0], np.float16), half[0])
    np.testing.assert_array_equal(np.frombuffer(second["small"][0], np.int8), small[1])


def test_milvus_iterator_pages_in_key_order_and_resumes_after_a_key(lite, caplog) -> None:
    seeded = seed_scalars(lite, "paged", 300, primary_key="varchar")
    keys = sorted(seeded.rows)

    # pymilvus logs to stderr through a handler of its own on "pymilvus" (propagate=False).
    pymilvus_log = logging.getLogger("pymilvus")
    pymilvus_log.addHandler(caplog.handler)
    try:
        iterator = lite.query_iterator("paged", batch_size=64, filter="", output_fields=["pk"])
    finally:
        pymilvus_log.removeHandler(caplog.handler)
    pages = []
    while page := iterator.next():
        pages.append([hit["pk"] for hit in page])
    iterator.close()
    # Milvus Lite returns no MVCC timestamp; pymilvus logs (not warns) and uses its own.
    assert "failed to get mvccTs from milvus server, use client-side ts instead" in caplog.text

    assert [len(p) for p in pages] == [64, 64, 64, 64, 44]
    assert [k for p in pages for k in p] == keys
    after = keys[99]
    escaped = after.replace("\\", "\\\\").replace('"', '\\"')
    resumed = source_rows(lite, "paged", batch_size=64, filter=f'pk > "{escaped}"')
    assert list(resumed) == keys[100:]

    assert lite.get_collection_stats("paged")["row_count"] == 300
    assert lite.query("paged", filter="", output_fields=["count(*)"])[0]["count(*)"] == 300
    lite.delete("paged", ids=keys[:10])
    assert lite.get_collection_stats("paged")["row_count"] == 290  # exact in Lite
    assert lite.query("paged", filter="", output_fields=["count(*)"])[0]["count(*)"] == 290


def test_milvus_lite_has_no_16384_offset_window(lite) -> None:
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("pk", DataType.INT64, is_primary=True)
    schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
    lite.create_collection("window", schema=schema)
    rng = np.random.default_rng(0)
    keys = primary_keys(16_500, "int64", rng)
    vectors = rng.standard_normal((16_500, 2)).astype(np.float32)
    for start in range(0, 16_500, 5000):
        lite.insert(
            "window",
            [
                {"pk": k, "v": v}
                for k, v in zip(
                    keys[start : start + 5000], vectors[start : start + 5000], strict=True
                )
            ],
        )

    # Milvus itself refuses offset + limit above 16,384 (its maxQueryResultWindow).
    page = lite.query("window", filter="", output_fields=["pk"], offset=16_380, limit=100)
    assert len(page) == 100
    # A plain query pages in insertion order; only the iterator sorts by key.
    assert [h["pk"] for h in page] == keys[16_380:16_480]


def test_milvus_partitions(lite) -> None:
    seeded = seed_partitions(lite, "seasons", 90)

    assert lite.list_partitions("seasons") == ["_default", "spring", "summer"]
    assert partition_rows(lite, "seasons") == seeded.partitions
    assert_same_rows(source_rows(lite, "seasons"), seeded.rows)
    assert lite.get_partition_stats("seasons", "spring")["row_count"] == 30


OPEN_IN_ANOTHER_PROCESS = """
import sys
from pymilvus import MilvusClient
try:
    MilvusClient(sys.argv[1])
except Exception as e:
    print(type(e).__name__, e.message)
else:
    print("opened")
"""


def open_elsewhere(path: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", OPEN_IN_ANOTHER_PROCESS, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout.strip()


def test_milvus_lite_locks_its_folder_until_the_server_stops(tmp_path) -> None:
    path = tmp_path / "locked.db"
    client = MilvusClient(str(path))
    seeded = seed_vectors(client, "docs", 20)
    client.close()

    # Closing the client leaves the in-process server, and its lock, in place.
    assert open_elsewhere(path) == "ConnectionConfigException Open local milvus failed"
    release_lite(path)
    assert open_elsewhere(path) == "opened"

    with milvus_lite(path) as reopened:
        # A collection with indexes is not loaded after a restart: query needs a load.
        assert reopened.get_load_state("docs")["state"].name == "NotLoad"
        reopened.load_collection("docs")
        assert_same_rows(source_rows(reopened, "docs"), seeded.rows)


def test_milvus_orm_collection_api_is_deprecated(tmp_path) -> None:
    path = tmp_path / "orm.db"
    with milvus_lite(path) as client:
        seeded = seed_scalars(client, "orm", 30)
        with pytest.warns(
            milvus.PyMilvusDeprecationWarning,
            match="`connections.connect` is an ORM-style PyMilvus API and will be removed in PyMilvus 3.1",
        ):
            milvus.connections.connect(alias="orm", uri=str(path))
        with pytest.warns(milvus.PyMilvusDeprecationWarning, match="`Collection` is an ORM-style"):
            collection = milvus.Collection("orm", using="orm")
        with pytest.warns(
            milvus.PyMilvusDeprecationWarning,
            match=r"`Collection.query_iterator` is an ORM-style PyMilvus API and will be removed in PyMilvus 3.1. Use `MilvusClient.query_iterator\(\)` instead.",
        ):
            iterator = collection.query_iterator(batch_size=100, expr="", output_fields=["*"])
        hits = iterator.next()
        iterator.close()
        with pytest.warns(milvus.PyMilvusDeprecationWarning):
            milvus.connections.disconnect("orm")

    assert sorted(h["pk"] for h in hits) == sorted(seeded.rows)
    assert isinstance(milvus.PyMilvusDeprecationWarning(), FutureWarning)


# --------------------------------------------------------------------------------------
# Chroma
# --------------------------------------------------------------------------------------


@pytest.fixture
def chroma(tmp_path: Path) -> Any:
    with open_persistent(tmp_path / "chroma") as client:
        yield client


@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("space_in", ["configuration", "metadata"])
def test_chroma_rows_read_back_with_their_space(chroma, space, space_in) -> None:
    seeded = seed_collection(
        chroma, "docs", 150, space=space, space_in=space_in, documents=space_in == "metadata"
    )
    collection = chroma.get_collection("docs")

    assert collection_space(collection) == space
    assert collection.configuration_json["hnsw"]["space"] == space
    if space_in == "metadata":
        assert collection.metadata == {"hnsw:space": space, "owner": "tests"}
    else:
        assert collection.metadata is None
    # A cosine collection returns embeddings up to 2 float32 ulps from what was added.
    assert_same_chroma_rows(
        stored_rows(collection, page=64), seeded.rows, ulps=2 if space == "cosine" else 0
    )


def test_chroma_cosine_embeddings_are_not_returned_bit_exact(chroma) -> None:
    seeded = seed_collection(chroma, "cosine-docs", 100, space="cosine")
    rows = stored_rows(chroma.get_collection("cosine-docs"))

    changed = [
        k
        for k in seeded.rows
        if not np.array_equal(rows[k]["embedding"].astype(np.float32), seeded.rows[k]["embedding"])
    ]
    assert len(changed) > 50


def test_chroma_get_returns_float64_arrays_and_counts(chroma) -> None:
    seeded = seed_collection(chroma, "forms", 40, dim=5, space="l2", documents=False, uris=False)
    collection = chroma.get_collection("forms")

    got = collection.get(
        limit=10, offset=0, include=["embeddings", "metadatas", "documents", "uris"]
    )
    assert isinstance(got["embeddings"], np.ndarray)
    assert (got["embeddings"].dtype, got["embeddings"].shape) == (np.float64, (10, 5))
    assert got["documents"] == [None] * 10 and got["uris"] == [None] * 10
    assert collection.get(limit=1)["included"] == ["metadatas", "documents"]  # the default
    assert collection.count() == 40
    assert_same_chroma_rows(stored_rows(collection), seeded.rows)


def test_chroma_configuration_property_warns_for_an_unset_embedding_function(chroma) -> None:
    seed_collection(chroma, "configured", 3, space="ip")
    seed_collection(chroma, "legacy", 3, space="ip", space_in="metadata")

    with pytest.warns(DeprecationWarning, match="^legacy embedding function config$"):
        assert chroma.get_collection("configured").configuration["hnsw"]["space"] == "ip"
    assert chroma.get_collection("legacy").configuration["hnsw"]["space"] == "ip"  # no warning
    assert chroma.get_collection("configured").configuration_json["embedding_function"] == {
        "type": "legacy"
    }


def test_chroma_offset_pages_follow_insertion_and_shift_after_deletes(chroma) -> None:
    seeded = seed_collection(chroma, "paged", 300, space="l2")
    collection = chroma.get_collection("paged")
    ids = list(seeded.rows)

    def page(offset: int, limit: int = 10) -> list[str]:
        return collection.get(limit=limit, offset=offset, include=[])["ids"]

    assert page(0, 300) == ids and page(120) == page(120)  # insertion order, stable
    assert ids != sorted(ids)
    collection.update(ids=[ids[5]], metadatas=[{"changed": True}])
    collection.upsert(ids=[ids[6]], embeddings=np.ones((1, 8), np.float32))
    collection.add(ids=["aaa-new"], embeddings=np.ones((1, 8), np.float32))
    assert page(0, 400) == [*ids, "aaa-new"]  # updates keep their place, adds go last

    collection.delete(ids=ids[:7])
    assert page(113) == ids[120:130]  # an offset read before the delete now skips 7 rows


def test_chroma_tenants_and_databases(tmp_path) -> None:
    path = tmp_path / "chroma"
    seeded = seed_tenants(path, 10)
    admin = chromadb.AdminClient(settings(is_persistent=True, persist_directory=str(path)))

    assert not hasattr(admin, "list_tenants")  # tenants cannot be listed, only got
    assert admin.get_tenant("acme")["name"] == "acme"
    assert {d["name"] for d in admin.list_databases(tenant="acme")} == {"prod", "dev"}
    assert {d["name"] for d in admin.list_databases()} == {"default_database", "archive"}
    for (tenant, database), names in TENANT_LAYOUT.items():
        with open_persistent(path, tenant=tenant, database=database) as client:
            assert sorted(c.name for c in client.list_collections()) == sorted(names)
            assert client.count_collections() == len(names)
            for name in names:
                assert_same_chroma_rows(
                    stored_rows(client.get_collection(name)),
                    seeded[tenant, database][name].rows,
                    ulps=2,
                )


def test_chroma_http_client_reads_a_served_folder(tmp_path) -> None:
    path = tmp_path / "served"
    with open_persistent(path) as client:
        seeded = seed_collection(client, "docs", 120, space="ip")

    with chroma_server(path) as (host, port):
        client = chromadb.HttpClient(host=host, port=port, settings=settings())
        try:
            collection = client.get_collection("docs")
            assert collection_space(collection) == "ip"
            assert [c.name for c in client.list_collections()] == ["docs"]
            assert_same_chroma_rows(stored_rows(collection, page=50), seeded.rows)
        finally:
            close_http(client)


class RecordingHandler(BaseHTTPRequestHandler):
    """Answers what HttpClient asks while it starts, and records each request's headers."""

    seen: list[tuple[str, dict[str, str]]] = []
    answers = {
        "/api/v2/auth/identity": {"user_id": "u", "tenant": "t1", "databases": ["db1"]},
        "/api/v2/tenants/t1": {"name": "t1"},
        "/api/v2/tenants/t1/databases/db1": {
            "id": "00000000-0000-0000-0000-000000000000",
            "name": "db1",
            "tenant": "t1",
        },
        "/api/v2/heartbeat": {"nanosecond heartbeat": 1},
    }

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append((self.path, dict(self.headers)))
        body = json.dumps(self.answers.get(self.path, {})).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_chroma_http_client_sends_its_headers_on_every_request() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), RecordingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    RecordingHandler.seen = []
    try:
        client = chromadb.HttpClient(
            host="127.0.0.1",
            port=server.server_address[1],
            headers={"x-chroma-token": "secret-1"},
            tenant="t1",
            database="db1",
            settings=settings(),
        )
        client.heartbeat()
        close_http(client)
        token = chromadb.HttpClient(
            host="127.0.0.1",
            port=server.server_address[1],
            tenant="t1",
            database="db1",
            settings=settings(
                chroma_client_auth_provider="chromadb.auth.token_authn.TokenAuthClientProvider",
                chroma_client_auth_credentials="secret-2",
            ),
        )
        close_http(token)
    finally:
        server.shutdown()
        server.server_close()

    paths = [path for path, _ in RecordingHandler.seen]
    assert paths[:4] == [
        "/api/v2/auth/identity",
        "/api/v2/tenants/t1",
        "/api/v2/tenants/t1/databases/db1",
        "/api/v2/heartbeat",
    ]
    assert all(h["x-chroma-token"] == "secret-1" for _, h in RecordingHandler.seen[:4])
    assert RecordingHandler.seen[4][1]["Authorization"] == "Bearer secret-2"


# --------------------------------------------------------------------------------------
# LanceDB
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_id", [True, False], ids=["id", "no-id"])
def test_lancedb_every_arrow_type_reads_back_exactly(tmp_path, with_id) -> None:
    db = connect(tmp_path)
    seeded = seed_all_types(db, "items", 600, with_id=with_id)
    table = db.open_table("items")

    assert table.to_arrow().equals(seeded)
    assert table.schema == seeded.schema
    assert ("id" in table.schema.names) is with_id
    reader = table.search().limit(None).to_batches(128)
    assert isinstance(reader, pa.RecordBatchReader)
    sizes = [batch.num_rows for batch in reader]
    assert sum(sizes) == 600 and max(sizes) <= 128
    assert scan(table, batch_size=128).equals(seeded)
    assert table.count_rows() == 600 and table.version == 3


def test_lancedb_vectors_to_numpy_without_copies(tmp_path) -> None:
    db = connect(tmp_path)
    seeded = seed_all_types(db, "items", 90)
    batch = next(iter(db.open_table("items").search().limit(None).to_batches(40)))

    assert batch.num_rows == 30  # a batch never spans fragments: the first write had 30
    for name, (value_type, dim) in VECTOR_COLUMNS.items():
        column = batch.column(name)
        values = vectors_to_numpy(column)
        assert values.shape == (30, dim) and values.dtype == value_type.to_pandas_dtype()
        assert np.shares_memory(values, column.values.to_numpy(zero_copy_only=True))
        np.testing.assert_array_equal(values, vectors_to_numpy(seeded[name])[:30])
    # A slice's .values is the whole child array (its offset ignored); flatten() is not.
    sliced = batch.column("vector").slice(5, 10)
    assert len(sliced.values) == 30 * 8
    np.testing.assert_array_equal(
        vectors_to_numpy(sliced), vectors_to_numpy(seeded["vector"])[5:15]
    )


def test_lancedb_versions_can_be_pinned_and_read(tmp_path) -> None:
    db = connect(tmp_path)
    seeded = seed_versions(db, "history")

    assert list(seeded.operations) == [1, 2, 3, 4]
    assert [v["version"] for v in db.open_table("history").list_versions()] == [1, 2, 3, 4]
    for version, expected in seeded.versions.items():
        pinned = db.open_table("history", version=version)
        assert pinned.version == version
        assert scan(pinned, batch_size=7).equals(expected), seeded.operations[version]
    pinned = db.open_table("history", version=2)
    with pytest.raises(
        ValueError, match="table cannot be modified when a specific version is checked out"
    ):
        pinned.add(seeded.versions[1])
    pinned.checkout_latest()
    assert pinned.version == 4 and pinned.count_rows() == seeded.versions[4].num_rows


@pytest.mark.parametrize("stable", [False, True], ids=["default", "stable-row-ids"])
def test_lancedb_row_ids_change_on_update_and_compaction_unless_stable(tmp_path, stable) -> None:
    db = connect(tmp_path, stable_row_ids=stable)
    seed_versions(db, "history")
    table = db.open_table("history")

    def row_ids(t: Any) -> dict[int, int]:
        got = scan(t, with_row_id=True)
        return dict(zip(got["id"].to_pylist(), got["_rowid"].to_pylist(), strict=True))

    at_v2, latest = row_ids(db.open_table("history", version=2)), row_ids(table)
    table.optimize()
    compacted = row_ids(table)

    updated = [k for k in latest if k % 5 == 0]
    if stable:
        assert all(at_v2[k] == latest[k] == compacted[k] for k in latest)
    else:
        assert all(at_v2[k] != latest[k] for k in updated)  # an update writes a new row
        assert at_v2[1] == latest[1] == 1  # (fragment << 32) | offset
        assert all(compacted[k] != latest[k] for k in latest)
    assert db.open_table("history", version=1).count_rows() == 30  # old versions stay readable


def test_lancedb_resume_by_offset_by_filter_or_by_row_id(tmp_path) -> None:
    db = connect(tmp_path)
    seeded = seed_all_types(db, "items", 600)
    table = db.open_table("items")
    ids = seeded["id"].to_pylist()

    by_offset = table.search().offset(250).limit(100).to_arrow()
    assert by_offset["id"].to_pylist() == ids[250:350]
    after = ids[249]
    by_id = (
        table.search()
        .where(f"id > {after}")
        .order_by([ColumnOrdering(column_name="id")])
        .limit(None)
        .to_arrow()
    )
    assert by_id["id"].to_pylist() == sorted(i for i in ids if i > after)
    # Without stable row ids a _rowid is (fragment << 32) | offset: it grows in scan order.
    row_ids = scan(table, with_row_id=True)["_rowid"].to_pylist()
    by_row_id = (
        table.search().with_row_id(True).where(f"_rowid > {row_ids[249]}").limit(None).to_arrow()
    )
    assert by_row_id["id"].to_pylist() == ids[250:]


def test_lancedb_metric_only_exists_with_an_index(tmp_path) -> None:
    db = connect(tmp_path)
    seed_all_types(db, "items", 300)
    table = db.open_table("items")
    assert table.list_indices() == []

    # create_index(metric=..., num_partitions=...) warns DeprecationWarning: use a config.
    table.create_index("vector", config=IvfFlat(distance_type="cosine", num_partitions=2))
    table.create_index("half", config=IvfFlat(distance_type="dot", num_partitions=2))

    metrics = {
        ix.columns[0]: table.index_stats(ix.name).distance_type for ix in table.list_indices()
    }
    assert metrics == {"vector": "cosine", "half": "dot"}
    assert table.version == 5  # an index is a version too


def test_lancedb_table_names_is_deprecated(tmp_path) -> None:
    db = connect(tmp_path)
    seed_versions(db, "history")

    assert db.list_tables().tables == ["history"]
    with pytest.warns(
        DeprecationWarning, match=r"^table_names\(\) is deprecated, use list_tables\(\) instead$"
    ):
        assert db.table_names() == ["history"]
