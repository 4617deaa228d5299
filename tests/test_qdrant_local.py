"""Qdrant (local mode, ``--path``) to PostgreSQL through the command line, row by row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from qdrant_client import models as m
from qdrant_data import assert_same_rows, open_local, seed_named, seed_unnamed, stored_rows

from vec2pg.errors import ExitCode


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "qdrant"


@pytest.mark.parametrize("ids", ["int", "uuid", "mixed"])
def test_multi_page_collection_arrives_exactly(storage, target, capsys, ids) -> None:
    client = open_local(storage)
    seed_unnamed(client, "docs", 1234, ids=ids)
    client.close()
    expected = stored_rows(storage, "docs")

    code = target.cli("qdrant", "docs", "--path", str(storage), "--page-size", "100", "--json")

    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["read"] == summary["written"] == 1234
    assert summary["target"] == f'"{target.schema}"."docs"'
    assert_same_rows(target.rows("docs"), expected)


def test_named_sparse_and_multivectors_with_5000_mixed_ids(storage, target, capsys) -> None:
    client = open_local(storage)
    seed_named(client, "mixed", 5000, ids="mixed")
    client.close()
    expected = stored_rows(storage, "mixed")

    assert target.cli("qdrant", "mixed", "--path", str(storage), "--quiet") == 0

    assert_same_rows(target.rows("mixed"), expected)
    types = target.query(
        "SELECT attname, format_type(atttypid, atttypmod), col_description(attrelid, attnum) "
        "FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 ORDER BY attnum",
        [f'"{target.schema}"."mixed"'],
    )
    columns = {name: (kind, json.loads(c)["vec2pg"] if c else None) for name, kind, c in types}
    assert columns["id"][0] == "text"
    assert columns["metadata"][0] == "jsonb"
    assert columns["text"] == (
        "vector(12)",
        {
            "source": "qdrant",
            "vector": "text",
            "kind": "dense",
            "dim": 12,
            "metric": "cosine",
            "storage": "vector",
        },
    )
    assert columns["image"][0] == "vector(5)" and columns["image"][1]["metric"] == "euclidean"
    assert columns["manhattan"][1]["metric"] == "manhattan"
    assert columns["colbert"][0] == "vector(4)[]"
    assert columns["colbert"][1]["kind"] == "multivector"
    assert columns["keywords"][0] == "sparsevec(1000000000)"
    assert columns["keywords"][1]["metric"] == "dotproduct"
    key = target.query(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
        [f'"{target.schema}"."mixed"'],
    )
    assert key == [("PRIMARY KEY (id)",)]


def test_the_table_answers_a_nearest_neighbour_query_like_qdrant(storage, target) -> None:
    client = open_local(storage)
    seed_unnamed(client, "docs", 300, dim=16)
    query = [0.1 * i for i in range(16)]
    best = client.query_points("docs", query=query, limit=3).points
    client.close()

    assert target.cli("qdrant", "docs", "--path", str(storage), "--quiet") == 0

    rows = target.query(
        f'SELECT id FROM "{target.schema}".docs ORDER BY embedding <=> %s::vector LIMIT 3',
        [str(query)],
    )
    assert [r[0] for r in rows] == [str(p.id) for p in best]


def test_empty_collection_creates_an_empty_table(storage, target, capsys) -> None:
    client = open_local(storage)
    client.create_collection(
        "empty", vectors_config=m.VectorParams(size=4, distance=m.Distance.DOT)
    )
    client.close()

    assert target.cli("qdrant", "empty", "--path", str(storage), "--json") == 0

    assert json.loads(capsys.readouterr().out)["written"] == 0
    assert target.query(f'SELECT count(*) FROM "{target.schema}".empty') == [(0,)]


def test_unknown_collection_is_a_source_error(storage, target, capsys) -> None:
    open_local(storage).close()

    code = target.cli("qdrant", "nope", "--path", str(storage))

    assert code == ExitCode.SOURCE
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"vec2pg: error: Qdrant collection 'nope' not found at {storage}; it has none"]
    assert target.query(
        "SELECT count(*) FROM pg_namespace WHERE nspname = %s", [target.schema]
    ) == [(0,)]


def test_a_mistyped_collection_names_the_closest_one(storage, target, capsys) -> None:
    client = open_local(storage)
    seed_unnamed(client, "articles", 3)
    seed_unnamed(client, "Docs", 3)
    client.close()

    code = target.cli("qdrant", "docs", "--path", str(storage))

    assert code == ExitCode.SOURCE
    assert capsys.readouterr().err.strip() == (
        f"vec2pg: error: Qdrant collection 'docs' not found at {storage}; did you mean 'Docs'?"
    )


def test_grpc_is_refused_for_a_local_storage(storage, target, capsys) -> None:
    open_local(storage).close()

    assert target.cli("qdrant", "docs", "--path", str(storage), "--grpc") == ExitCode.USAGE
    assert capsys.readouterr().err.strip() == (
        "vec2pg: error: --grpc reads a server (--url); a local storage (--path) has none"
    )


def test_a_path_without_qdrant_storage_is_refused_and_left_alone(tmp_path, target, capsys) -> None:
    missing = tmp_path / "not-there"

    code = target.cli("qdrant", "docs", "--path", str(missing))

    assert code == ExitCode.SOURCE
    assert capsys.readouterr().err.strip() == (
        f"vec2pg: error: no Qdrant local storage at {missing} (no meta.json)"
    )
    assert not missing.exists()


@pytest.mark.parametrize(
    "collection", ["Ünïcödé ✓ space", "select", "a.b; drop table x --", "UPPER"]
)
def test_any_collection_name_works(storage, target, collection) -> None:
    client = open_local(storage)
    seed_unnamed(client, collection, 20)
    client.close()

    assert target.cli("qdrant", collection, "--path", str(storage), "--quiet") == 0

    quoted = collection.replace('"', '""')
    assert target.query(f'SELECT count(*) FROM "{target.schema}"."{quoted}"') == [(20,)]


@pytest.mark.parametrize("table", ['we"ird\\name', "Ünïcödé ✓", "x'); drop table y; --"])
def test_any_table_name_works(storage, target, table) -> None:
    client = open_local(storage)
    seed_unnamed(client, "docs", 20)
    client.close()

    assert target.cli("qdrant", "docs", "--table", table, "--path", str(storage), "--quiet") == 0

    assert target.query(
        f'SELECT count(*) FROM "{target.schema}"."{table.replace(chr(34), 2 * chr(34))}"'
    ) == [(20,)]


def test_a_table_name_postgres_would_truncate_is_refused(storage, target, capsys) -> None:
    name = "x" * 64
    client = open_local(storage)
    seed_unnamed(client, name, 5)
    client.close()

    code = target.cli("qdrant", name, "--path", str(storage))

    assert code == ExitCode.USAGE
    assert capsys.readouterr().err.strip() == (
        f"vec2pg: error: the table name '{name}' is 64 bytes, PostgreSQL's limit is 63; "
        "choose a shorter one with --table"
    )


def test_the_original_command_form_works(storage, target, capsys, monkeypatch) -> None:
    """vec2pg qdrant migrate COLLECTION URL API_KEY DSN, here with local storage as URL's stand-in."""
    client = open_local(storage)
    seed_unnamed(client, "docs", 30)
    client.close()
    monkeypatch.setenv("POSTGRES_CONNECTION_STRING", target.dsn)

    from vec2pg.cli import main

    # The original form names a server URL; --path stands in for it here (the HTTP form is
    # tested against the Qdrant wire-format server in test_qdrant_http.py).
    code = main(
        ["qdrant", "migrate", "docs", "--path", str(storage), "--schema", target.schema, "--quiet"]
    )

    assert code == 0, capsys.readouterr().err
    assert target.query(f'SELECT count(*) FROM "{target.schema}".docs') == [(30,)]
