"""The Milvus source against the real engine (Milvus Lite, in this process or served by
its own process), and Milvus's other vector types (float16, bfloat16, int8, binary), which
Milvus Lite refuses, through pymilvus's own decoding of a server's answer.

Every test checks what a user sees: the exit code, the exact error line, the rows in
PostgreSQL, compared with what was put into Milvus.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from milvus_data import (  # noqa: E402
    WIRE_VECTORS,
    SeededCollection,
    WireClient,
    WireCollection,
    dense,
    lite_client,
    milvus_lite,
    release_lite,
    seed_partitions,
    seed_scalars,
    seed_vectors,
)
from pymilvus import DataType, MilvusClient  # noqa: E402

from vec2pg.errors import SourceNotFound, SourceUnreachable  # noqa: E402
from vec2pg.pipeline import Options, migrate  # noqa: E402
from vec2pg.postgres import PostgresSink  # noqa: E402
from vec2pg.reading import Retrier, RetryPolicy  # noqa: E402
from vec2pg.records import Record  # noqa: E402
from vec2pg.sources.base import WHOLE  # noqa: E402
from vec2pg.sources.milvus import MilvusSource  # noqa: E402

# --------------------------------------------------------------------------------------
# Seeded Milvus Lite databases: each seeded once per session, copied for each test
# --------------------------------------------------------------------------------------

_TEMPLATES: dict[str, tuple[Path, Any]] = {}


def seeded(
    request: pytest.FixtureRequest, tmp_path: Path, name: str, seed: Callable[[Any], Any]
) -> tuple[Path, Any]:
    """A copy of the Milvus Lite database ``name``, seeded by ``seed(client)`` the first
    time it is asked for, and what ``seed`` returned."""
    if name not in _TEMPLATES:
        folder = request.getfixturevalue("tmp_path_factory").mktemp("milvus") / f"{name}.db"
        with milvus_lite(folder) as client:
            _TEMPLATES[name] = (folder, seed(client))
    template, what = _TEMPLATES[name]
    path = tmp_path / f"{name}.db"
    shutil.copytree(template, path)
    return path, copy.deepcopy(what)


def expected_rows(seeded: SeededCollection) -> dict[tuple[str, str], dict[str, Any]]:
    """What vec2pg's table holds for each row of a seed helper's collection: keyed by
    (partition, id), the vectors as they were put in, and the metadata: every scalar field
    but the key, and the dynamic field's keys among them."""
    vectors = set(seeded.dims)
    out = {}
    for key, row in seeded.rows.items():
        metadata = {k: v for k, v in row.items() if k not in vectors and k not in ("pk", "$meta")}
        metadata |= row["$meta"]
        out[(seeded.partitions[key], str(key))] = {
            "vectors": {k: row[k] for k in vectors},
            "metadata": metadata,
        }
    return out


def assert_table_holds(target: Any, table: str, seeded: SeededCollection) -> None:
    """Every row of ``table`` is the seeded row of its key, field by field (an int64 key
    is a bigint id, compared in decimal)."""
    rows = {(ns, str(key)): row for (ns, key), row in target.rows(table).items()}
    expected = expected_rows(seeded)
    assert rows.keys() == expected.keys()
    for key, want in expected.items():
        row = rows[key]
        for name, value in want["vectors"].items():
            if isinstance(value, dict):  # sparse: {index: weight}
                assert row[name] == value, (key, name)
            else:
                np.testing.assert_array_equal(row[name], value, err_msg=f"{key} {name}")
        assert row["metadata"] == want["metadata"], key


def cli(target: Any, path: Path, collection: str, *args: str) -> int:
    return target.cli("milvus", collection, "--uri", str(path), *args)


# --------------------------------------------------------------------------------------
# The shared contract (tests/test_source_contract.py)
# --------------------------------------------------------------------------------------


def case_milvus(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The contract's records in a Milvus Lite collection, read through the gRPC address
    of the Milvus Lite server that pymilvus runs in this process: a server, as vec2pg sees
    it, so that its large partition is split into key ranges (a ``.db`` path reads every
    partition in one chain; the tests below read those). int64 keys (negative and
    positive, not 0..N-1), the vector "embedding" (FLAT index, L2), the metadata in the
    dynamic field, in the partition "_default" (a namespace of the table)."""
    from milvus_lite.server_manager import server_manager_instance
    from test_source_contract import COUNTS, DIM, Case

    def partition(namespace: str) -> str:
        return namespace or "_default"

    def put(path: Path, records: list[Record]) -> None:
        with lite_client(path) as client:
            for namespace in sorted({r.namespace for r in records}):
                rows = [
                    {"pk": int(r.id), "embedding": r.vectors["embedding"], **(r.metadata or {})}
                    for r in records
                    if r.namespace == namespace
                ]
                # Delete and insert: Milvus Lite's upsert keeps dynamic keys a row had.
                client.delete("docs", ids=[row["pk"] for row in rows])
                client.insert("docs", rows, partition_name=partition(namespace))

    def delete(path: Path, namespace: str, rid: str) -> None:
        with lite_client(path) as client:
            client.delete("docs", ids=[int(rid)], partition_name=partition(namespace))

    def create(client: MilvusClient) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("pk", DataType.INT64, is_primary=True)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=DIM)
        index = client.prepare_index_params()
        index.add_index("embedding", index_type="FLAT", metric_type="L2")
        client.create_collection("docs", schema=schema, index_params=index)
        client.create_partition("docs", "other")

    def make(path: Path, uri: str) -> Any:
        return Case(
            open=lambda collection="docs": MilvusSource(collection, uri=uri, batch_size=500),
            cli=["milvus", "docs", "--uri", uri, "--batch-size", "500"],
            table="docs",
            namespaced=True,
            source_id=lambda i: str(i * 7919 - 10_000_000),
            put=partial(put, path),
            delete=partial(delete, path),
            break_transiently=None,  # an embedded engine: no network to fail
            table_namespace=partition,
            vector="embedding",
            # A primary key is unique across a collection's partitions (Milvus Lite keeps
            # only a key's last row): the contract's second namespace, whose ids repeat
            # the first's, cannot be held. The tests below read several partitions.
            counts={"": COUNTS[""]},
        )

    if "contract" not in _TEMPLATES:
        folder = request.getfixturevalue("tmp_path_factory").mktemp("milvus") / "contract.db"
        with milvus_lite(folder) as client:
            create(client)
            seeding = make(folder, "")
            seeding.seed()
        _TEMPLATES["contract"] = (folder, seeding.records)
    template, records = _TEMPLATES["contract"]
    path = tmp_path / "contract.db"
    shutil.copytree(template, path)
    uri = server_manager_instance.start_and_get_uri(str(path))
    assert uri is not None
    case = make(path, uri)
    case.records = dict(records)
    try:
        yield case
    finally:
        release_lite(path)


# --------------------------------------------------------------------------------------
# What a migration writes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("primary_key", ["int64", "varchar"])
def test_every_scalar_type_and_the_dynamic_field_become_metadata(
    request, tmp_path, target, primary_key
) -> None:
    path, collection = seeded(
        request,
        tmp_path,
        f"scalars-{primary_key}",
        lambda c: seed_scalars(c, "scalars", 300, primary_key=primary_key),
    )

    assert cli(target, path, "scalars", "--quiet") == 0
    assert_table_holds(target, "scalars", collection)
    ((id_type,),) = target.query(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attname = 'id'",
        [f'"{target.schema}".scalars'],
    )
    assert id_type == {"int64": "bigint", "varchar": "text"}[primary_key]


def test_geometry_and_timestamptz_are_metadata_text(tmp_path, target) -> None:
    path = tmp_path / "places.db"
    with milvus_lite(path) as client:
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("pk", DataType.INT64, is_primary=True)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
        schema.add_field("place", DataType.GEOMETRY)
        schema.add_field("seen", DataType.TIMESTAMPTZ)
        client.create_collection("places", schema=schema)
        client.insert(
            "places",
            [{"pk": 7, "v": [1, 2], "place": "POINT (13.4 52.5)", "seen": "2025-01-02T03:04:05Z"}],
        )

    assert cli(target, path, "places", "--quiet") == 0
    assert target.rows("places")[("_default", 7)]["metadata"] == {
        "place": "POINT (13.4 52.5)",
        "seen": "2025-01-02T03:04:05Z",
    }


def test_each_vector_field_is_a_column_of_its_type_with_its_metric(
    request, tmp_path, target
) -> None:
    path, collection = seeded(
        request,
        tmp_path,
        "vectors",
        lambda c: seed_vectors(c, "vectors", 200, primary_key="varchar", sparse_largest=10**9 - 1),
    )

    assert cli(target, path, "vectors", "--quiet") == 0
    assert_table_holds(target, "vectors", collection)
    columns = dict(
        target.query(
            "SELECT attname, format_type(atttypid, atttypmod) || ' ' || "
            "(col_description(attrelid, attnum)::jsonb -> 'vec2pg' ->> 'metric') "
            "FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 2 "
            "AND attname <> 'metadata'",
            [f'"{target.schema}".vectors'],
        )
    )
    assert columns == {
        "text": "vector(12) cosine",
        "image": "vector(5) euclidean",
        "dot": "vector(3) dotproduct",
        "keywords": "sparsevec(1000000000) dotproduct",
    }


def test_half_int8_and_binary_vectors_through_pymilvus_decoding(target) -> None:
    """float16 and bfloat16 vectors into halfvec(dim), int8 into vector(dim), binary into
    bit(dim) with Hamming and Jaccard indexes, a nullable vector's missing values as NULL:
    decoded by pymilvus from what a Milvus server sends (Milvus Lite refuses the types)."""
    collection = WireCollection.seed("kinds", 120)
    client = WireClient(collection)
    source = MilvusSource("kinds", client=client, batch_size=50)

    with PostgresSink(target.dsn, schema=target.schema, index="hnsw") as sink:
        summary = migrate(source, sink, Options(concurrency=1))

    assert summary.written == 120 and summary.exit_code == 0
    types = dict(
        target.query(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0",
            [f'"{target.schema}".kinds'],
        )
    )
    assert {name: types[name] for name in WIRE_VECTORS} == {
        "half": "halfvec(4)",
        "brain": "halfvec(4)",
        "small": "vector(4)",
        "bits": "bit(16)",
        "set": "bit(8)",
        "dense": "vector(3)",
        "keywords": "sparsevec(1000000000)",
    }
    rows = target.query(
        f'SELECT id, half::text, brain::text, small::text, bits::text, "set"::text, '
        f'dense::text, metadata FROM "{target.schema}".kinds'
    )
    assert len(rows) == 120
    for rid, half, brain, small, bits, bitset, vector, metadata in rows:
        want = collection.rows[int(rid)]
        np.testing.assert_array_equal(_floats(half, np.float16), want["half"])
        np.testing.assert_array_equal(_floats(brain, np.float32), want["brain"])
        np.testing.assert_array_equal(_floats(small, np.float32), want["small"])
        assert bits == "".join(map(str, np.unpackbits(want["bits"])))
        assert bitset == "".join(map(str, np.unpackbits(want["set"])))
        if want["dense"] is None:
            assert vector is None
        else:
            np.testing.assert_array_equal(_floats(vector, np.float32), want["dense"])
        assert metadata == {"label": want["label"], **want["$meta"]}
    opclasses = sorted(
        r[0]
        for r in target.query(
            "SELECT o.opcname FROM pg_index i JOIN pg_opclass o ON o.oid = i.indclass[0] "
            "WHERE i.indrelid = %s::regclass AND NOT i.indisprimary",
            [f'"{target.schema}".kinds'],
        )
    )
    assert opclasses == [
        "bit_hamming_ops",
        "bit_jaccard_ops",
        "halfvec_cosine_ops",
        "halfvec_ip_ops",
        "sparsevec_ip_ops",
        "vector_l2_ops",
        "vector_l2_ops",
    ]
    # Each page was asked as pymilvus's query iterator asks: key order, after the last key.
    first, second = client.requests[:2]
    assert (first.expr, second.expr) == ("", f"pk > {sorted(collection.rows)[49]}")
    params = {kv.key: kv.value for kv in second.query_params}
    assert (params["iterator"], params["reduce_stop_for_best"], params["limit"]) == (
        "True",
        "True",
        "50",
    )


def _floats(text: str, dtype: Any) -> np.ndarray:
    return np.array(text.strip("[]").split(","), dtype=np.float64).astype(dtype)


def test_float_vectors_are_views_of_the_answers_bytes() -> None:
    """Not arrays pymilvus builds a Python float at a time (42 us a row of 768)."""
    source = MilvusSource("kinds", client=WireClient(WireCollection.seed("kinds", 30)))
    source.describe()

    records = source.page("_default", WHOLE, None).load()
    dense = [r.vectors["dense"] for r in records if r.vectors["dense"] is not None]

    assert len(dense) == 24
    assert all(not v.flags.writeable and isinstance(v.base, np.ndarray) for v in dense)
    assert len({id(v.base) for v in dense}) == 1  # one array a page, each row a view


def test_a_value_not_in_the_form_of_its_type_is_a_rejected_record() -> None:
    """pymilvus checks the length of the 16-bit vectors it decodes; the other forms are
    checked here, so that a record that cannot be converted is rejected with its reason."""
    source = MilvusSource("kinds", client=WireClient(WireCollection.seed("kinds", 1)))
    source.describe()
    rows = [
        {"pk": 1, "small": [b"\x01\x02\x03"], "keywords": {1: 0.5}},
        {"pk": 2, "bits": [b"\x01"], "keywords": [0.5]},
    ]

    first, second = source._records("_default", rows)

    assert (first.id, first.invalid) == (
        "1",
        "vector 'small' is 3 bytes; an int8 vector of 4 dimensions is 4",
    )
    assert (second.id, second.invalid) == (
        "2",
        "vector 'bits' is 1 bytes; a binary vector of 16 bits is 2; "
        "vector 'keywords' is not a sparse vector",
    )


def test_partitions_are_namespaces_and_partition_restricts_a_run(
    request, tmp_path, target, capsys
) -> None:
    path, collection = seeded(request, tmp_path, "seasons", lambda c: seed_partitions(c, "s", 90))

    assert cli(target, path, "s", "--partition", "spring", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert list(summary["namespaces"]) == ["spring"] and summary["written"] == 30
    assert {ns for ns, _ in target.rows("s")} == {"spring"}

    assert cli(target, path, "s", "--partition", "autumn") == 2
    assert capsys.readouterr().err.strip() == (
        "vec2pg: error: milvus 's' has no namespace 'autumn'; it has: '_default', 'spring', "
        "'summer'"
    )

    assert cli(target, path, "s", "--quiet") == 0
    assert_table_holds(target, "s", collection)


def test_an_empty_collection_makes_an_empty_table(tmp_path, target, capsys) -> None:
    path = tmp_path / "empty.db"
    with milvus_lite(path) as client:
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("pk", DataType.INT64, is_primary=True)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=3)
        client.create_collection("nothing", schema=schema)

    assert cli(target, path, "nothing", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["read"], summary["matches_source"]) == (0, True)
    assert target.rows("nothing") == {}


def test_a_partition_key_collection_is_read_whole(tmp_path, target) -> None:
    path = tmp_path / "tenants.db"
    with milvus_lite(path) as client:
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=16)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
        schema.add_field("tenant", DataType.VARCHAR, max_length=16, is_partition_key=True)
        client.create_collection("tenants", schema=schema, num_partitions=4)
        client.insert(
            "tenants", [{"pk": f"k{i}", "v": [i, -i], "tenant": f"t{i % 7}"} for i in range(40)]
        )
        assert len(client.list_partitions("tenants")) > 1  # Milvus's own, one per key hash

    assert cli(target, path, "tenants", "--quiet") == 0
    rows = target.rows("tenants")
    assert sorted(rows) == sorted(("_default", f"k{i}") for i in range(40))
    assert rows[("_default", "k3")]["metadata"] == {"tenant": "t3"}


def test_bm25_output_is_left_out_and_its_text_kept(tmp_path, target) -> None:
    from pymilvus import Function, FunctionType

    path = tmp_path / "bm25.db"
    with milvus_lite(path) as client:
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("pk", DataType.INT64, is_primary=True)
        schema.add_field("text", DataType.VARCHAR, max_length=200, enable_analyzer=True)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=2)
        schema.add_function(
            Function(
                name="bm25",
                function_type=FunctionType.BM25,
                input_field_names=["text"],
                output_field_names=["sparse"],
            )
        )
        client.create_collection("bm25", schema=schema)
        client.insert("bm25", [{"pk": 1, "text": "hello world", "dense": [1, 2]}])

    assert cli(target, path, "bm25", "--quiet") == 0
    row = target.rows("bm25")[("_default", 1)]
    assert "sparse" not in row and row["metadata"] == {"text": "hello world"}


def test_varchar_keys_that_need_escaping_page_and_resume_exactly(tmp_path, target) -> None:
    """pymilvus's own iterator fails on these keys ("unknown escape sequence")."""
    keys = ['a"b', "c\\d", "e'f", "g\nh", "i\tj", "k🚀", "l\x01m", 'n\\"o', "p\\\\", "zz", ""]
    path = tmp_path / "keys.db"
    rng = np.random.default_rng(5)
    with milvus_lite(path) as client:
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=16)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
        client.create_collection("keys", schema=schema)
        client.insert("keys", [{"pk": k, "v": dense(rng, 2)} for k in keys])

    source = MilvusSource("keys", uri=str(path), batch_size=2)
    try:
        source.describe()
        pages, cursor = [], None
        while True:
            page = source.page("_default", WHOLE, cursor)
            pages.append(([r.id for r in page.load()], page.next_cursor))
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert [i for ids, _ in pages for i in ids] == sorted(keys)
        # A cursor after each page resumes with the pages after it, in a new source.
        again = MilvusSource("keys", uri=str(path), batch_size=2)
        again.describe()
        for n, (_, after) in enumerate(pages[:-1]):
            assert [r.id for r in again.page("_default", WHOLE, after).load()] == pages[n + 1][0]
        assert sorted(r.id for r in again.fetch("_default", ['a"b', "g\nh", "nope"])) == [
            'a"b',
            "g\nh",
        ]
        again.close()
    finally:
        source.close()

    rejects = tmp_path / "rejects.jsonl"
    assert cli(target, path, "keys", "--on-error", "skip", "--rejects", str(rejects)) == 9
    assert sorted(i for _, i in target.rows("keys")) == sorted(keys)[1:]
    rejected = json.loads(rejects.read_text().splitlines()[1])
    assert (rejected["id"], rejected["reason"]) == ("", "the id is empty")


def test_nan_in_a_vector_is_rejected_with_its_id(tmp_path, target, capsys) -> None:
    path = tmp_path / "nan.db"
    with milvus_lite(path) as client:
        seed_partitions(client, "nan", 12, partitions=("_default",))
        bad = client.query("nan", filter="", output_fields=["*"], limit=1)[0]
        client.upsert("nan", [bad | {"embedding": [1.0, float("nan"), 0.0, 0.0]}])

    rejects = tmp_path / "rejects.jsonl"
    code = cli(target, path, "nan", "--on-error", "skip", "--rejects", str(rejects), "--quiet")

    assert code == 9
    rejected = json.loads(rejects.read_text().splitlines()[1])
    assert (rejected["id"], rejected["reason"]) == (
        str(bad["pk"]),
        "vector 'embedding' contains nan; PostgreSQL vectors hold only finite numbers",
    )
    assert len(target.rows("nan")) == 11


def test_a_sparse_index_pgvector_cannot_hold_stops_the_run_naming_the_record(
    request, tmp_path, target, capsys
) -> None:
    path, collection = seeded(
        request, tmp_path, "uint32-sparse", lambda c: seed_vectors(c, "wide", 20)
    )
    first = min(collection.rows)

    assert cli(target, path, "wide") == 6
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"vec2pg: error: record '{first}' in namespace '_default': sparse vector 'keywords' has "
        "index 4294967294; pgvector's sparsevec holds indices 0 to 999999999"
    )


# --------------------------------------------------------------------------------------
# Failures
# --------------------------------------------------------------------------------------


def test_an_unknown_collection_names_the_closest(request, tmp_path, target, capsys) -> None:
    path, _ = seeded(request, tmp_path, "seasons", lambda c: seed_partitions(c, "s", 90))
    with lite_client(path) as client:
        seed_vectors(client, "documents", 3)

    assert cli(target, path, "document") == 3
    assert capsys.readouterr().err.strip() == (
        f"vec2pg: error: Milvus Lite database {path} has no collection 'document'; did you "
        "mean 'documents'?"
    )
    assert cli(target, path, "zzz") == 3
    assert capsys.readouterr().err.strip() == (
        f"vec2pg: error: Milvus Lite database {path} has no collection 'zzz'; it has "
        "'documents', 's'"
    )


def test_no_lite_database_at_the_path(tmp_path, target, capsys) -> None:
    assert cli(target, tmp_path / "missing.db", "docs") == 3
    assert capsys.readouterr().err.strip() == (
        f"vec2pg: error: no Milvus Lite database at {tmp_path / 'missing.db'}"
    )
    assert not (tmp_path / "missing.db").exists()  # not created by looking


def test_an_unreachable_server(target, capsys) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free: nothing listens there

    code = target.cli("milvus", "docs", "--uri", f"http://127.0.0.1:{port}", "--token", "s3cret")

    assert code == 3
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1] == (
        f"vec2pg: error: Milvus at http://127.0.0.1:{port} did not answer (Fail connecting to "
        f"server on 127.0.0.1:{port}, illegal connection params or server unavailable): check "
        "--uri, and that the server is running"
    )
    assert "s3cret" not in err


HOLD = """
import sys, time
from pymilvus import MilvusClient
MilvusClient(sys.argv[1])
print("open", flush=True)
time.sleep(120)
"""


def test_a_lite_database_another_process_has_open(request, tmp_path, target, capsys) -> None:
    path, _ = seeded(request, tmp_path, "seasons", lambda c: seed_partitions(c, "s", 90))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        assert cli(target, path, "s") == 3
    finally:
        holder.kill()
        holder.communicate()
    assert capsys.readouterr().err.strip() == (
        f"vec2pg: error: Milvus Lite database {path} is open in another process (Milvus Lite "
        "locks its folder): stop that process, or serve the folder (milvus-lite server "
        "--data-dir ...) and pass its --uri http://..."
    )


# --------------------------------------------------------------------------------------
# Resume, resync, index, and a Milvus served over the network
# --------------------------------------------------------------------------------------


def walk(source: MilvusSource, namespace: str, chain: str, cursor: Any = None) -> list[Any]:
    """Every page of a chain from ``cursor``: its ids and the cursor after it."""
    pages = []
    while True:
        page = source.page(namespace, chain, cursor)
        pages.append(([r.id for r in page.load()], page.next_cursor))
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


def committed(target: Any) -> int:
    try:
        ((done,),) = target.query(
            f'SELECT coalesce(sum(records), 0) FROM "{target.schema}"._vec2pg_progress'
        )
    except Exception:  # not created yet
        return 0
    return int(done)


def test_kill_9_mid_run_then_the_same_command_resumes_exactly(tmp_path, target, capsys) -> None:
    path = tmp_path / "kill.db"
    with milvus_lite(path) as client:
        collection = seed_partitions(client, "k", 3000, partitions=("_default", "spring"))
    args = ["--uri", str(path), "--batch-size", "20", "--commit-rows", "100"]
    run = subprocess.Popen(
        [sys.executable, "-m", "vec2pg", "milvus", "k", *args, "--quiet", "--concurrency", "1"]
        + ["--dsn", target.dsn, "--schema", target.schema],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while committed(target) < 300 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(run.pid, signal.SIGKILL)
    run.communicate(timeout=30)
    before = committed(target)

    assert run.returncode == -signal.SIGKILL
    assert 300 <= before < 3000
    assert target.cli("milvus", "k", *args, "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["resumed"] and summary["matches_source"]
    assert summary["read"] == 3000 - before
    assert_table_holds(target, "k", collection)


def test_resync_with_updates_deletes_and_prune(request, tmp_path, target, capsys) -> None:
    path, collection = seeded(request, tmp_path, "seasons", lambda c: seed_partitions(c, "s", 90))
    assert cli(target, path, "s", "--quiet") == 0

    by_partition = {
        p: sorted(k for k, where in collection.partitions.items() if where == p)
        for p in ("_default", "spring", "summer")
    }
    changed, gone = by_partition["spring"][0], by_partition["summer"][:2]
    with lite_client(path) as client:
        row = collection.rows[changed] | {"embedding": np.ones(4, np.float32), "season": "late"}
        client.upsert(
            "s", [{k: v for k, v in row.items() if k != "$meta"}], partition_name="spring"
        )
        client.delete("s", ids=gone, partition_name="summer")
        client.insert("s", [{"pk": 5, "embedding": np.zeros(4, np.float32), "season": "new"}])
    collection.rows[changed] = row
    collection.rows[5] = {"pk": 5, "embedding": np.zeros(4, np.float32), "season": "new"}
    collection.rows[5]["$meta"] = {}
    collection.partitions[5] = "_default"
    for key in gone:
        del collection.rows[key], collection.partitions[key]
    capsys.readouterr()

    assert cli(target, path, "s", "--json") == 8  # the deleted rows are stale
    summary = json.loads(capsys.readouterr().out)
    assert (summary["inserted"], summary["updated"], summary["stale"]) == (1, 1, 2)
    assert cli(target, path, "s", "--prune", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["deleted"], summary["unchanged"], summary["stale"]) == (2, 89, 0)
    assert_table_holds(target, "s", collection)
    assert cli(target, path, "s", "--verify", "--quiet") == 0


def test_index_hnsw_finds_what_milvus_finds(request, tmp_path, target) -> None:
    path, collection = seeded(
        request,
        tmp_path,
        "vectors",
        lambda c: seed_vectors(c, "vectors", 200, primary_key="varchar", sparse_largest=10**9 - 1),
    )
    assert cli(target, path, "vectors", "--index", "hnsw", "--quiet") == 0

    rng = np.random.default_rng(9)
    operators = {"text": "<=>", "image": "<->", "dot": "<#>"}
    dims = {"text": 12, "image": 5, "dot": 3}
    with lite_client(path) as client, target.connect() as conn:
        client.load_collection("vectors")  # an indexed collection is not, after a restart
        conn.execute("SET hnsw.ef_search = 400")
        conn.execute("SET enable_seqscan = off")  # 200 rows: the index, not a scan
        for field, operator in operators.items():
            for _ in range(5):
                query = dense(rng, dims[field])
                # Each engine at its most exact: Milvus probes every IVF list.
                exact = {"params": {"nprobe": 1024, "ef": 400}}
                hits = client.search(
                    "vectors", [query], anns_field=field, limit=1, search_params=exact
                )
                (found,) = conn.execute(
                    f'SELECT id FROM "{target.schema}".vectors ORDER BY {field} {operator} '
                    "%s::vector LIMIT 1",
                    [str(query.tolist())],
                ).fetchone()
                assert found == hits[0][0]["pk"], field
            plan = conn.execute(
                f'EXPLAIN SELECT id FROM "{target.schema}".vectors ORDER BY {field} {operator} '
                "%s::vector LIMIT 1",
                [str(dense(rng, dims[field]).tolist())],
            ).fetchall()
            assert any("Index Scan" in line for (line,) in plan), plan


@contextmanager
def served(path: Path, port: int | None = None) -> Iterator[str]:
    """Milvus Lite's server on the database ``path`` in a process of its own: a Milvus
    server as pymilvus sees it. Yields its URI."""
    if port is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(path)]
        + ["--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None and "listening" in server.stdout.readline()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.kill()
        server.communicate(timeout=30)


def test_a_milvus_served_over_the_network(request, tmp_path, target) -> None:
    path, collection = seeded(request, tmp_path, "seasons", lambda c: seed_partitions(c, "s", 90))
    with served(path) as uri:
        assert target.cli("milvus", "s", "--uri", uri, "--quiet") == 0
        assert_table_holds(target, "s", collection)
        assert target.cli("verify", "milvus", "s", "--uri", uri, "--quiet") == 0
        # A server's partition is split into key ranges; a cursor in one resumes exactly.
        source = MilvusSource("s", uri=uri, batch_size=5)
        source.describe()
        chains = source.partitions("spring", 30, 8, lambda fn, *args: fn(*args))
        walks = {chain: walk(source, "spring", chain) for chain in chains}
        source.close()
        assert len(chains) == 3 and all(c.startswith("range:") for c in chains)
        ids = [rid for pages in walks.values() for page, _ in pages for rid in page]
        assert sorted(ids) == sorted(
            str(k) for k, p in collection.partitions.items() if p == "spring"
        )
        chain, pages = max(walks.items(), key=lambda item: len(item[1]))
        again = MilvusSource("s", uri=uri, batch_size=5)
        again.describe()
        assert walk(again, "spring", chain, pages[0][1]) == pages[1:]
        again.close()
        source = MilvusSource("nope", uri=uri)
        with pytest.raises(SourceNotFound) as missing:
            source.describe()
        source.close()
        assert str(missing.value) == f"Milvus at {uri} has no collection 'nope'; it has 's'"


def test_a_server_that_restarts_is_a_transient_failure(request, tmp_path) -> None:
    path, _ = seeded(request, tmp_path, "seasons", lambda c: seed_partitions(c, "s", 90))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with served(path, port) as uri:
        source = MilvusSource("s", uri=uri, batch_size=10, timeout=5)
        source.describe()
        assert len(source.page("spring", WHOLE, None).load()) == 10
    try:
        with pytest.raises(SourceUnreachable):  # Transient: the pipeline tries again
            source.page("spring", WHOLE, None)
        with served(path, port):
            # Milvus Lite starts with the collection released: loaded again, then read.
            retrier = Retrier(RetryPolicy(initial=0.01), None, 1)
            assert len(retrier.call(source.page, "spring", WHOLE, None).load()) == 10
            assert retrier.retries >= 1
    finally:
        source.close()
