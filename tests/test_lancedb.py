"""vec2pg lancedb: every row of a real LanceDB table (its local engine) into PostgreSQL,
compared row by row with what LanceDB reads back.

The contract case (``case_lancedb``) holds the shared records in a table with a string id
column; the tests here add every vector and scalar Arrow type, tables without an id
column, null vectors and ids, pinned versions, a kill -9 resumed on the same snapshot, a
resync with --prune, and --index hnsw against LanceDB's own search.
"""

from __future__ import annotations

import base64
import datetime
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

lancedb = pytest.importorskip("lancedb")
pa = pytest.importorskip("pyarrow")

from conftest import column_types  # noqa: E402
from lancedb_data import (  # noqa: E402
    connect,
    fixed_size_list,
    scan,
    seed_all_types,
    seed_versions,
    vectors_to_numpy,
)

from vec2pg.records import Record  # noqa: E402
from vec2pg.sources.lancedb import LanceDBSource  # noqa: E402

# -- the contract case ------------------------------------------------------------------------


def _arrow(records: list[Record]) -> Any:
    vectors = np.stack([r.vectors["vector"] for r in records]).astype(np.float32)
    meta = [r.metadata or {} for r in records]
    return pa.table(
        {
            "id": pa.array([r.id for r in records]),
            "vector": fixed_size_list(vectors, pa.float32()),
            "title": pa.array([m.get("title") for m in meta], pa.string()),
            "score": pa.array([m.get("score") for m in meta], pa.float64()),
            "even": pa.array([m.get("even") for m in meta], pa.bool_()),
            "tags": pa.array([m.get("tags") for m in meta], pa.list_(pa.string())),
        }
    )


def case_lancedb(request, tmp_path) -> Iterator[Any]:
    from test_source_contract import COUNTS, Case

    folder = tmp_path / "lancedb"
    db = connect(folder)

    def put(records: list[Record]) -> None:
        data = _arrow(records)
        if "docs" not in db.list_tables().tables:
            db.create_table("docs", data=data)
            return
        table = db.open_table("docs")
        table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(
            data
        )

    case = Case(
        open=lambda collection="docs": LanceDBSource(collection, uri=str(folder), page_size=100),
        cli=["lancedb", "docs", "--uri", str(folder), "--page-size", "100"],
        table="docs",
        namespaced=False,
        source_id=str,
        put=put,
        delete=lambda ns, rid: db.open_table("docs").delete(f"id = '{rid}'"),
        break_transiently=None,
        vector="vector",
        counts={"": COUNTS[""]},
    )
    case.seed()
    yield case


# -- helpers ----------------------------------------------------------------------------------


def utc(value: datetime.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def naive_ns(nanoseconds: int) -> str:
    seconds, fraction = divmod(nanoseconds, 10**9)
    moment = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=seconds)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction:09d}"


def expected_metadata(row: dict[str, Any], naive: int) -> dict[str, Any]:
    """A row of seed_all_types as vec2pg's metadata should hold it (README, LanceDB)."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        if name in ("id", "vector", "image", "half", "_rowid") or value is None:
            continue
        if name == "created":
            value = utc(value)
        elif name == "naive_ns":
            value = naive_ns(naive)
        elif name == "day":
            value = value.isoformat()
        elif name == "at":
            value = f"{value:%H:%M:%S.%f}"
        elif name == "price":
            value = str(value)
        elif name == "blob":
            value = base64.b64encode(value).decode()
        elif name == "props":
            value = dict(value)
        out[name] = value
    return out


def assert_rows(target, table: str, expected: dict[str, dict[str, Any]]) -> None:
    rows = target.rows(table)
    assert sorted(rows) == sorted(expected)
    for key, want in expected.items():
        row = rows[key]
        for column, value in want.items():
            if isinstance(value, np.ndarray):
                got = np.asarray(row[column])
                if value.dtype == np.float16:  # a halfvec column
                    got = np.array(row[column], dtype=np.float32).astype(np.float16)
                np.testing.assert_array_equal(got, value, err_msg=f"{key} {column}")
            elif column == "multi":
                assert len(row[column]) == len(value), key
                for got, sub in zip(row[column], value, strict=True):
                    np.testing.assert_array_equal(got, sub)
            else:
                assert row[column] == value, (key, column)


def run_cli(target, *args: str, capsys: Any = None) -> int:
    code = target.cli(*args)
    return code


# -- every type -------------------------------------------------------------------------------


@pytest.mark.parametrize("with_id", [True, False], ids=["id-column", "row-ids"])
def test_every_vector_and_scalar_type_arrives(target, tmp_path, with_id, capsys) -> None:
    db = connect(tmp_path)
    seeded = seed_all_types(db, "items", 600, with_id=with_id)
    read = scan(db.open_table("items"), with_row_id=True)

    code = target.cli("lancedb", "items", "--uri", str(tmp_path), "--page-size", "64")

    assert code == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    with target.connect() as conn:
        types = column_types(conn, target.schema, "items")
    assert (types["vector"], types["image"], types["half"], types["metadata"]) == (
        "vector(8)",
        "vector(3)",
        "halfvec(4)",
        "jsonb",
    )
    assert list(types)[:1] == ["id"] and len(types) == 5
    rows = read.to_pylist()
    keys = [str(r["id"]) for r in rows] if with_id else [str(r["_rowid"]) for r in rows]
    naive = read["naive_ns"].cast(pa.int64()).to_pylist()
    vectors = {name: vectors_to_numpy(read[name]) for name in ("vector", "image", "half")}
    expected = {
        key: {
            **{name: matrix[i] for name, matrix in vectors.items()},
            "metadata": expected_metadata(row, naive[i]),
        }
        for i, (key, row) in enumerate(zip(keys, rows, strict=True))
    }
    assert_rows(target, "items", expected)
    assert seeded.num_rows == 600
    note = (
        "LanceDB table 'items' has no column 'id': its rows' ids are LanceDB's row ids "
        "(_rowid), which an update or a compaction changes unless the table was created with "
        "stable row ids; name a column of ids with --id-column"
    )
    assert (note in err) is not with_id
    capsys.readouterr()
    assert (
        target.cli(
            "verify", "lancedb", "items", "--uri", str(tmp_path), "--sample", "600", "--json"
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["sampled"] == 600
    assert (
        "vector columns 'vector', 'image', 'half' of LanceDB table 'items' have no vector index"
        in err
    )
    assert "WARN" not in err


def test_multivectors_float64_and_null_vectors_and_ids(target, tmp_path, capsys) -> None:
    db = connect(tmp_path)
    rng = np.random.default_rng(3)
    n = 40
    multi = [rng.standard_normal((1 + i % 3, 4)).astype(np.float32) for i in range(n)]
    sub = pa.list_(pa.float32(), 4)
    wide = rng.standard_normal((n, 3))  # float64
    maybe = rng.standard_normal((n, 2)).astype(np.float32)
    maybe_values = pa.array(maybe.reshape(-1))
    validity = [i % 5 != 1 for i in range(n)]
    ids: list[str | None] = [f"r{i}" for i in range(n)]
    ids[7] = None
    table = pa.table(
        {
            "id": pa.array(ids),
            "multi": pa.array([m.tolist() for m in multi], pa.list_(sub)),
            "wide": fixed_size_list(wide, pa.float64()),
            "maybe": pa.FixedSizeListArray.from_arrays(
                maybe_values, 2, mask=pa.array([not v for v in validity])
            ),
            "n": pa.array(range(n), pa.int32()),
        }
    )
    # Row 3: every vector null, so no vector at all; row 9: a null inside a vector.
    multi_col = table["multi"].to_pylist()
    multi_col[3] = None
    wide_col = table["wide"].to_pylist()
    wide_col[3] = None
    maybe_col = table["maybe"].to_pylist()
    maybe_col[3] = None
    maybe_col[9] = [1.0, None]
    table = table.set_column(1, "multi", pa.array(multi_col, pa.list_(sub)))
    table = table.set_column(2, "wide", pa.array(wide_col, pa.list_(pa.float64(), 3)))
    table = table.set_column(3, "maybe", pa.array(maybe_col, pa.list_(pa.float32(), 2)))
    db.create_table("mixed", data=table)
    rejects = tmp_path / "rejects.jsonl"

    code = target.cli(
        "lancedb",
        "mixed",
        "--uri",
        str(tmp_path),
        "--page-size",
        "16",
        "--on-error",
        "skip",
        "--rejects",
        str(rejects),
        "--quiet",
    )

    assert code == 9, capsys.readouterr().err
    with target.connect() as conn:
        types = column_types(conn, target.schema, "mixed")
    assert (types["multi"], types["wide"], types["maybe"]) == (
        "vector(4)[]",
        "vector(3)",
        "vector(2)",
    )
    lines = [json.loads(line) for line in rejects.read_text().splitlines()[1:]]
    assert sorted((line["id"], line["reason"]) for line in lines) == [
        ("(no id: row 7 of version 1)", "its 'id' is null"),
        ("r3", "has no vector at all"),
        ("r9", "vector 'maybe' has null values"),
    ]
    expected = {}
    for i in range(n):
        if i in (3, 7, 9):
            continue
        expected[f"r{i}"] = {
            "multi": multi[i],
            "wide": wide[i].astype(np.float32),
            "maybe": maybe[i] if validity[i] else None,
            "metadata": {"n": i},
        }
    rows = target.rows("mixed")
    for key, want in expected.items():  # a null vector is a NULL
        if want["maybe"] is None:
            assert rows[key]["maybe"] is None, key
            del want["maybe"]
    assert_rows(target, "mixed", expected)


# -- what a user gets wrong -------------------------------------------------------------------


def test_unknown_tables_columns_versions_and_folders(target, tmp_path, capsys) -> None:
    db = connect(tmp_path)
    seed_versions(db, "history")
    seed_all_types(db, "items", 30)
    uri = str(tmp_path)

    cases = [
        (
            ["lancedb", "histroy", "--uri", uri],
            3,
            f"LanceDB table 'histroy' not found at {uri}; did you mean 'history'?",
        ),
        (
            ["lancedb", "history", "--uri", uri, "--id-column", "key"],
            2,
            "LanceDB table 'history' has no column 'key' (--id-column); its columns: 'id', 'tag', 'vector'",
        ),
        (["lancedb", "items", "--uri", uri, "--id-column", "title"], 0, None),
        (
            ["lancedb", "items", "--uri", uri, "--id-column", "f64", "--table", "x"],
            2,
            "the id column 'f64' of LanceDB table 'items' is double; ids must be integers or strings: name another with --id-column",
        ),
        (
            ["lancedb", "history", "--uri", uri, "--version", "9"],
            3,
            f"LanceDB table 'history' at {uri} has no version 9 (Version 9 no longer exists. Was it cleaned up?; its versions: 1 to 4): choose another --version, or run again with --restart if an interrupted run read it",
        ),
        (
            ["lancedb", "docs", "--uri", str(tmp_path / "none")],
            3,
            f"no LanceDB database at {tmp_path / 'none'} (no such folder)",
        ),
        (
            ["lancedb", "docs"],
            2,
            "name the LanceDB database to read from: --uri (or LANCEDB_URI), a folder or s3://bucket/path",
        ),
    ]
    for args, code, message in cases:
        capsys.readouterr()
        got = target.cli(*args, "--quiet")
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after the notes, if any
        if message is None:
            # A column with nulls as the id: those rows are rejected, the run stops.
            assert got == 6 and err.startswith(
                "vec2pg: error: record '(no title: row 0 of version 3)': its 'title' is null"
            ), err
        else:
            assert (got, err) == (code, f"vec2pg: error: {message}")


def test_an_empty_table(target, tmp_path, capsys) -> None:
    db = connect(tmp_path)
    schema = pa.schema(
        [("id", pa.int64()), ("vector", pa.list_(pa.float32(), 6)), ("tag", pa.string())]
    )
    db.create_table("empty", schema=schema)

    assert target.cli("lancedb", "empty", "--uri", str(tmp_path), "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["read"], summary["written"]) == (0, 0)
    assert target.rows("empty") == {}
    with target.connect() as conn:
        assert column_types(conn, target.schema, "empty") == {
            "id": "text",
            "vector": "vector(6)",
            "metadata": "jsonb",
        }


# -- versions ---------------------------------------------------------------------------------


def version_rows(table: Any) -> dict[str, dict[str, Any]]:
    got = scan(table)
    vectors = vectors_to_numpy(got["vector"])
    return {
        str(row["id"]): {"vector": vectors[i], "metadata": {"tag": row["tag"]}}
        for i, row in enumerate(got.select(["id", "tag"]).to_pylist())
    }


def test_version_pins_the_snapshot_read(target, tmp_path, capsys) -> None:
    db = connect(tmp_path)
    seed_versions(db, "history")

    assert (
        target.cli("lancedb", "history", "--uri", str(tmp_path), "--version", "2", "--quiet") == 0
    )
    assert_rows(target, "history", version_rows(db.open_table("history", version=2)))
    capsys.readouterr()
    assert target.cli("lancedb", "history", "--uri", str(tmp_path), "--prune", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    # From version 2 to 4 (ids 0 to 44): id % 5 == 0 updated (9, but 10 is also deleted),
    # id % 7 == 3 deleted (6).
    assert (summary["updated"], summary["deleted"], summary["inserted"]) == (8, 6, 0)
    assert_rows(target, "history", version_rows(db.open_table("history")))


def test_kill_9_then_resume_reads_the_same_version(target, tmp_path) -> None:
    db = connect(tmp_path)
    rng = np.random.default_rng(5)
    n = 12_000
    first = pa.table(
        {
            "id": pa.array(np.arange(n) * 3 + 1),
            "vector": fixed_size_list(rng.standard_normal((n, 8)).astype(np.float32), pa.float32()),
            "tag": pa.array([f"t{i % 7}" for i in range(n)]),
        }
    )
    table = db.create_table("big", data=first)
    read_version = table.version
    command = [
        sys.executable,
        "-m",
        "vec2pg",
        "lancedb",
        "big",
        "--uri",
        str(tmp_path),
        "--page-size",
        "20",
        "--commit-rows",
        "200",
        "--concurrency",
        "2",
        "--dsn",
        target.dsn,
        "--schema",
        target.schema,
    ]
    run = subprocess.Popen(
        [*command, "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while committed(target) < 1000 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=30)
    assert run.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert 0 < committed(target) < n

    # Meanwhile the table moves on: rows deleted, updated and added (new versions).
    table.delete("id % 10 = 1")
    table.update(where="id < 100", values={"tag": "updated"})
    table.add(first.slice(0, 10).set_column(0, "id", pa.array(np.arange(10) * 3 + 2)))
    assert table.version > read_version

    # Resumed with larger pages: a chain is a range of offsets, a cursor an offset.
    faster = [*command, "--page-size", "2000", "--commit-rows", "10000"]
    again = subprocess.run([*faster, "--json"], capture_output=True, text=True, timeout=120)

    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["resumed"] is True
    assert "WARN" not in again.stderr
    assert_rows(target, "big", version_rows(db.open_table("big", version=read_version)))

    latest = subprocess.run(
        [*faster, "--prune", "--json"], capture_output=True, text=True, timeout=120
    )
    assert latest.returncode == 0, latest.stderr
    done = json.loads(latest.stdout)
    assert (done["inserted"], done["deleted"]) == (10, n // 10)
    assert_rows(target, "big", version_rows(db.open_table("big")))


def committed(target) -> int:
    try:
        rows = target.query(
            f'SELECT coalesce(sum(records), 0) FROM "{target.schema}"._vec2pg_progress'
        )
    except Exception:
        return 0
    return int(rows[0][0])


# -- resync -----------------------------------------------------------------------------------


def test_a_resync_with_updates_deletes_and_prune(target, tmp_path, capsys) -> None:
    db = connect(tmp_path)
    seed_versions(db, "history", 60)
    table = db.open_table("history")
    cli = ["lancedb", "history", "--uri", str(tmp_path), "--page-size", "16"]
    assert target.cli(*cli, "--quiet") == 0

    table.update(where="id < 4", values={"tag": "again"})
    table.delete("id >= 80")
    table.add(
        pa.table(
            {
                "id": pa.array([1000, 1001]),
                "vector": fixed_size_list(np.ones((2, 4), np.float32), pa.float32()),
                "tag": pa.array(["new", None]),
            }
        )
    )
    capsys.readouterr()

    assert target.cli(*cli, "--prune", "--json") == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    held = [int(k) for k in version_rows(db.open_table("history", version=4))]
    gone = sum(1 for k in held if k >= 80)
    changed = sum(1 for k in held if k < 4)  # 3 (id 3 was deleted in version 4)
    assert (summary["inserted"], summary["updated"], summary["deleted"]) == (2, changed, gone)
    assert summary["unchanged"] == len(held) - gone - changed
    expected = version_rows(table)
    expected["1001"]["metadata"] = {}  # a null column is left out
    assert_rows(target, "history", expected)

    assert target.cli("verify", *cli, "--sample", "200", "--json") == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["ok"]


# -- --index hnsw against LanceDB's own search ---------------------------------------------------


@pytest.mark.parametrize(
    ("distance", "operator"), [("cosine", "<=>"), ("l2", "<->"), ("dot", "<#>")]
)
def test_index_hnsw_finds_what_lancedb_finds(target, tmp_path, distance, operator, capsys) -> None:
    from lancedb.index import IvfFlat

    db = connect(tmp_path)
    rng = np.random.default_rng(11)
    n, dim = 1500, 16
    table = db.create_table(
        "docs",
        data=pa.table(
            {
                "id": pa.array([f"d{i}" for i in range(n)]),
                "vector": fixed_size_list(
                    rng.standard_normal((n, dim)).astype(np.float32), pa.float32()
                ),
            }
        ),
    )
    table.create_index("vector", config=IvfFlat(distance_type=distance, num_partitions=2))

    assert (
        target.cli("lancedb", "docs", "--uri", str(tmp_path), "--index", "hnsw", "--quiet") == 0
    ), capsys.readouterr().err
    queries = rng.standard_normal((20, dim)).astype(np.float32)
    lance_top = [
        table.search(q)
        .distance_type(distance)
        .bypass_vector_index()
        .limit(1)
        .to_arrow()["id"][0]
        .as_py()
        for q in queries
    ]
    with target.connect() as conn:
        from pgvector.psycopg import register_vector

        register_vector(conn)
        conn.execute("SET hnsw.ef_search = 400")
        conn.execute("SET enable_seqscan = off")
        query = f'SELECT id FROM "{target.schema}".docs ORDER BY vector {operator} %s LIMIT 1'
        plan = conn.execute("EXPLAIN " + query, [queries[0]]).fetchall()
        assert any("Index Scan" in line[0] for line in plan), plan
        postgres_top = [conn.execute(query, [q]).fetchone()[0] for q in queries]
    assert postgres_top == lance_top
    assert len(set(lance_top)) > 5
