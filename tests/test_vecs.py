"""--layout vecs: the table is a collection that Supabase's vecs client (0.4.x) opens and
queries as it is, and that vec2pg resyncs afterwards."""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import pytest
from qdrant_client import models
from qdrant_data import open_local

from vec2pg.errors import ExitCode

DIM = 8


def seed(path: Any, n: int = 60, *, named: bool = False) -> Any:
    """A Qdrant collection of ``n`` points (cosine), with payloads; the points."""
    rng = np.random.default_rng(7)
    client = open_local(path)
    config: Any = models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    if named:
        config = {
            "text": config,
            "image": models.VectorParams(size=4, distance=models.Distance.EUCLID),
        }
    client.create_collection("docs", vectors_config=config)
    points = []
    for i in range(n):
        vector: Any = rng.standard_normal(DIM).tolist()
        if named:
            vector = {"text": vector, "image": rng.standard_normal(4).tolist()}
        points.append(models.PointStruct(id=i, vector=vector, payload={"n": i, "even": i % 2 == 0}))
    client.upsert("docs", points)
    return client


def catalog(target) -> list[tuple[Any, ...]]:
    """The vecs schema's relations, columns and indexes (to see that vecs changed none)."""
    return target.query(
        "SELECT c.relname, c.relkind::text, a.attname, format_type(a.atttypid, a.atttypmod), "
        "a.attnotnull, pg_get_expr(d.adbin, d.adrelid) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 "
        "LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum "
        "WHERE n.nspname = 'vecs' ORDER BY 1, 3"
    )


def vecs_client(dsn: str) -> Any:
    import vecs

    # vecs speaks SQLAlchemy's psycopg2 dialect.
    return vecs.create_client(dsn.replace("postgresql://", "postgresql+psycopg2://", 1))


@pytest.fixture
def vecs_schema(target):
    """vecs's schema is always "vecs": dropped after the test, as the test's own is."""
    yield
    with target.connect() as conn:
        conn.execute("DROP SCHEMA IF EXISTS vecs CASCADE")


def vec2pg(target, *args: str) -> int:
    from vec2pg.cli import main

    return main([*args, "--dsn", target.dsn])


def test_a_vecs_collection_opens_and_queries_like_the_source(tmp_path, target, vecs_schema) -> None:
    client = seed(tmp_path / "q")
    queries = [np.random.default_rng(q).standard_normal(DIM).astype(np.float32) for q in range(5)]
    expected = [
        [str(p.id) for p in client.query_points("docs", query=q.tolist(), limit=5).points]
        for q in queries
    ]
    client.close()

    code = vec2pg(
        target,
        "qdrant",
        "docs",
        "--path",
        str(tmp_path / "q"),
        "--layout",
        "vecs",
        "--index",
        "hnsw",
        "--quiet",
    )

    assert code == 0
    columns = {(r[2], r[3], r[4], r[5]) for r in catalog(target) if r[0] == "docs"}
    assert columns == {
        ("id", "text", True, None),
        ("vec", "vector(8)", True, None),
        ("metadata", "jsonb", True, "'{}'::jsonb"),
    }
    indexes = dict(
        target.query(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'vecs' AND tablename = 'docs'"
        )
    )
    assert any(
        name.startswith("ix_meta_") and "gin (metadata jsonb_path_ops)" in d
        for name, d in indexes.items()
    )
    assert any(name.startswith("ix_vector_cosine_ops_hnsw_m16_efc64_") for name in indexes)
    before = catalog(target)

    collection = vecs_client(target.dsn).get_or_create_collection(name="docs", dimension=DIM)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # vecs warns when no index covers the measure
        found = [collection.query(data=q, limit=5, measure="cosine_distance") for q in queries]

    assert catalog(target) == before  # vecs created or changed nothing
    assert found == expected
    collection.upsert(records=[("new", np.ones(DIM), {"added": "by vecs"})])
    collection.delete(ids=["3"])
    assert len(collection) == 60

    # The next vec2pg resync converges: the row vecs added goes, the one it deleted comes back.
    code = vec2pg(
        target,
        "qdrant",
        "docs",
        "--path",
        str(tmp_path / "q"),
        "--layout",
        "vecs",
        "--prune",
        "--quiet",
    )
    assert code == 0
    rows = dict(target.query("SELECT id, metadata FROM vecs.docs"))
    assert set(rows) == {str(i) for i in range(60)}
    assert rows["3"] == {"n": 3, "even": False}
    code = vec2pg(
        target, "verify", "qdrant", "docs", "--path", str(tmp_path / "q"), "--layout", "vecs"
    )
    assert code == 0


def test_every_pinecone_namespace_becomes_a_collection_of_its_own(
    pinecone_server, target, vecs_schema, capsys
) -> None:
    from conftest import PINECONE_KEY
    from test_pinecone import dense_records, upsert

    pinecone_server.create_index("idx", dimension=DIM, metric="cosine")
    upsert(pinecone_server, "idx", "", dense_records(12, DIM))
    upsert(pinecone_server, "idx", "products", dense_records(5, DIM, prefix="p-"))

    code = vec2pg(
        target, "pinecone", "idx", "--api-key", PINECONE_KEY, "--layout", "vecs", "--json"
    )

    assert code == 0, capsys.readouterr().err
    summaries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(s["target"], s["written"]) for s in summaries] == [
        ('"vecs"."idx"', 12),
        ('"vecs"."idx_products"', 5),
    ]
    client = vecs_client(target.dsn)
    assert len(client.get_or_create_collection(name="idx", dimension=DIM)) == 12
    assert len(client.get_or_create_collection(name="idx_products", dimension=DIM)) == 5


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        (
            [],
            "a vecs collection holds one dense vector, and qdrant 'docs' has dense 'text', "
            "dense 'image': choose it with --vector NAME",
        ),
        (
            ["--vector", "sound"],
            "qdrant 'docs' has no vector 'sound'; it has dense 'text', dense 'image'",
        ),
        (
            ["--vector", "text", "--halfvec"],
            "vecs reads vector(dim) columns, not halfvec: leave out --halfvec",
        ),
        (
            ["--vector", "text", "--table", "_hidden"],
            "vecs does not see tables whose names start "
            "with '_' ('_hidden'): name the collection with --table",
        ),
    ],
    ids=["two vectors", "unknown vector", "halfvec", "hidden name"],
)
def test_what_vecs_cannot_hold_is_refused_in_one_line(
    tmp_path, target, vecs_schema, capsys, extra, error
) -> None:
    seed(tmp_path / "q", 5, named=True).close()

    code = vec2pg(
        target, "qdrant", "docs", "--path", str(tmp_path / "q"), "--layout", "vecs", *extra
    )

    assert code == ExitCode.USAGE
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"vec2pg: error: {error}"


def test_vector_chooses_the_one_vecs_holds(tmp_path, target, vecs_schema) -> None:
    seed(tmp_path / "q", 5, named=True).close()

    code = vec2pg(
        target,
        "qdrant",
        "docs",
        "--path",
        str(tmp_path / "q"),
        "--layout",
        "vecs",
        "--vector",
        "text",
        "--quiet",
    )

    assert code == 0
    assert target.query("SELECT count(*), min(vector_dims(vec)) FROM vecs.docs") == [(5, DIM)]


def test_bigint_ids_sort_and_compare_as_numbers(tmp_path, target) -> None:
    seed(tmp_path / "q", 12).close()

    code = vec2pg(
        target,
        "qdrant",
        "docs",
        "--path",
        str(tmp_path / "q"),
        "--id-type",
        "bigint",
        "--schema",
        target.schema,
        "--quiet",
    )

    assert code == 0
    assert target.query(f'SELECT id FROM "{target.schema}".docs WHERE id = 5') == [(5,)]
    assert [
        r[0]
        for r in target.query(f'SELECT id FROM "{target.schema}".docs ORDER BY id LIMIT 3 OFFSET 9')
    ] == [9, 10, 11]
    assert (
        vec2pg(
            target,
            "verify",
            "qdrant",
            "docs",
            "--path",
            str(tmp_path / "q"),
            "--schema",
            target.schema,
        )
        == 0
    )
    # Without --id-type, the next run keeps the table's bigint ids (no "use --replace").
    assert (
        vec2pg(target, "qdrant", "docs", "--path", str(tmp_path / "q"), "--schema", target.schema)
        == 0
    )


def test_an_id_that_is_no_integer_is_a_bad_record_under_bigint(tmp_path, target, capsys) -> None:
    client = open_local(tmp_path / "q")
    client.create_collection(
        "docs", vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT)
    )
    client.upsert(
        "docs", [models.PointStruct(id="5d9f1f6c-0b6a-4c53-9a37-7c1f3f7a2e11", vector=[1.0, 2.0])]
    )
    client.close()

    code = vec2pg(
        target,
        "qdrant",
        "docs",
        "--path",
        str(tmp_path / "q"),
        "--id-type",
        "bigint",
        "--schema",
        target.schema,
    )

    assert code == ExitCode.INVALID_RECORD
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "vec2pg: error: record '5d9f1f6c-0b6a-4c53-9a37-7c1f3f7a2e11': the id "
        "'5d9f1f6c-0b6a-4c53-9a37-7c1f3f7a2e11' is not a 64-bit integer, and the table's id is "
        "bigint (--id-type text keeps every id)"
    )


def test_a_sparse_only_source_is_refused(tmp_path, target, vecs_schema, capsys) -> None:
    client = open_local(tmp_path / "q")
    client.create_collection(
        "words", vectors_config={}, sparse_vectors_config={"bm25": models.SparseVectorParams()}
    )
    client.upsert(
        "words",
        [models.PointStruct(id=1, vector={"bm25": models.SparseVector(indices=[3], values=[1.0])})],
    )
    client.close()

    code = vec2pg(target, "qdrant", "words", "--path", str(tmp_path / "q"), "--layout", "vecs")

    assert code == ExitCode.USAGE
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "vec2pg: error: a vecs collection holds one dense vector, and sparse vector 'bm25' is "
        "not one (qdrant 'words' has sparse 'bm25')"
    )


def test_dry_run_and_replace_on_a_vecs_collection(tmp_path, target, vecs_schema, capsys) -> None:
    seed(tmp_path / "q", 20).close()
    args = ["qdrant", "docs", "--path", str(tmp_path / "q"), "--layout", "vecs"]

    assert vec2pg(target, *args, "--dry-run") == 0
    plan = capsys.readouterr().out
    assert 'CREATE TABLE "vecs"."docs"' in plan
    assert '"vec" vector(8) NOT NULL' in plan
    assert target.query("SELECT to_regclass('vecs.docs') IS NULL") == [(True,)]

    assert vec2pg(target, *args, "--quiet") == 0
    with target.connect() as conn:
        conn.execute("UPDATE vecs.docs SET metadata = '{\"edited\": true}' WHERE id = '4'")
    capsys.readouterr()
    assert vec2pg(target, *args, "--replace", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["mode"], summary["written"]) == ("replace", 20)
    assert target.query("SELECT metadata FROM vecs.docs WHERE id = '4'") == [
        ({"n": 4, "even": True},)
    ]


def test_rejects_and_their_reload_on_a_vecs_collection(
    tmp_path, target, vecs_schema, capsys
) -> None:
    rejects = tmp_path / "rejects.jsonl"
    source = tmp_path / "in.jsonl"
    head = {
        "vec2pg_rejects": 1,
        "source": "qdrant",
        "collection": "docs",
        "namespaced": False,
        "fields": [{"name": "", "kind": "dense", "dim": 2, "metric": "cosine"}],
    }
    lines = [head] + [
        {"namespace": "", "id": str(i), "vectors": {"": [1.0, float(i)]}, "metadata": {"i": i}}
        for i in range(5)
    ]
    lines[3]["vectors"][""] = [1.0, "Infinity"]
    source.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    args = ["--layout", "vecs", "--rejects", str(rejects), "--quiet"]

    code = vec2pg(target, "jsonl", str(source), *args, "--on-error", "skip")

    assert code == ExitCode.REJECTED
    assert [json.loads(line)["id"] for line in rejects.read_text().splitlines()[1:]] == ["2"]
    assert [r[0] for r in target.query("SELECT id FROM vecs.docs ORDER BY id")] == [
        "0",
        "1",
        "3",
        "4",
    ]

    fixed = [json.loads(line) for line in rejects.read_text().splitlines()]
    fixed[1]["vectors"][""] = [1.0, 2.0]
    rejects.write_text("\n".join(json.dumps(line) for line in fixed) + "\n")
    assert vec2pg(target, "jsonl", str(rejects), "--layout", "vecs", "--table", "docs") == 0
    assert target.query("SELECT vec::text FROM vecs.docs WHERE id = '2'") == [("[1,2]",)]


def test_kill_9_then_the_same_command_resumes_a_vecs_collection(
    tmp_path, target, vecs_schema, capsys
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    seed(tmp_path / "q", 3000).close()
    args = ["qdrant", "docs", "--path", str(tmp_path / "q"), "--layout", "vecs"]
    args += ["--page-size", "20", "--commit-rows", "100", "--concurrency", "1"]
    run = subprocess.Popen(
        [sys.executable, "-m", "vec2pg", *args, "--quiet", "--dsn", target.dsn],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )

    def committed() -> int:
        try:
            return int(
                target.query("SELECT coalesce(sum(records), 0) FROM vecs._vec2pg_progress")[0][0]
            )
        except Exception:  # not created yet
            return 0

    deadline = time.monotonic() + 60
    while committed() < 300 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(run.pid, signal.SIGKILL)
    run.communicate(timeout=30)
    before = committed()

    assert run.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert 300 <= before < 3000
    assert vec2pg(target, *args, "--json", "--verify") == 0
    lines = capsys.readouterr().out.splitlines()
    summary = json.loads(lines[0])
    assert summary["resumed"]
    assert summary["read"] == 3000 - before
    assert target.query("SELECT count(*) FROM vecs.docs") == [(3000,)]
