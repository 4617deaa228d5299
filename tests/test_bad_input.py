"""Records PostgreSQL will not take, through real sources: stop, skip, fix and reload."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import models as m
from qdrant_data import assert_same_rows, open_local, stored_rows

from vec2pg.cli import main
from vec2pg.errors import ExitCode

GOOD = 100
#: Point id -> (what is wrong, the reason vec2pg gives).
BAD: dict[int, tuple[str, str]] = {
    1001: ("inf", "vector 'dense' contains inf; PostgreSQL vectors hold only finite numbers"),
    1002: (
        "nul",
        "metadata contains a NUL character (\\u0000), which jsonb cannot hold (--strip-nul removes them)",
    ),
    1003: ("no vector", "has no vector at all"),
    1004: (
        "sparse index",
        "sparse vector 'sparse' has index 3000000000; pgvector's sparsevec holds indices 0 to 999999999",
    ),
    1005: ("nan metadata", "metadata holds NaN or infinity, which JSON cannot express"),
}


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    path = tmp_path / "q"
    client = open_local(path)
    client.create_collection(
        "bad",
        vectors_config={"dense": m.VectorParams(size=3, distance=m.Distance.EUCLID)},
        sparse_vectors_config={"sparse": m.SparseVectorParams()},
    )
    good = [
        m.PointStruct(
            id=i,
            vector={"dense": [i, 1.0, 2.0], "sparse": m.SparseVector(indices=[i], values=[1.0])},
            payload={"i": i},
        )
        for i in range(GOOD)
    ]
    bad = [
        m.PointStruct(id=1001, vector={"dense": [1.0, float("inf"), 2.0]}, payload={"i": 1001}),
        m.PointStruct(id=1002, vector={"dense": [1.0, 1.0, 2.0]}, payload={"t": "a\x00b"}),
        m.PointStruct(id=1003, vector={}, payload={"i": 1003}),
        m.PointStruct(
            id=1004,
            vector={"sparse": m.SparseVector(indices=[7, 3_000_000_000], values=[1.0, 2.0])},
            payload={"i": 1004},
        ),
        m.PointStruct(id=1005, vector={"dense": [1.0, 1.0, 2.0]}, payload={"x": float("nan")}),
    ]
    client.upsert("bad", good + bad)
    client.close()
    return path


def rows(target) -> dict[str, Any]:
    return {
        r[0]: r
        for r in target.query(
            f'SELECT id, dense::text, sparse::text, metadata FROM "{target.schema}".bad'
        )
    }


def test_the_default_stops_at_the_first_bad_record_with_nothing_half_written(
    storage, target, capsys
) -> None:
    code = target.cli("qdrant", "bad", "--path", str(storage))

    assert code == ExitCode.INVALID_RECORD
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == f"vec2pg: error: record '1001': {BAD[1001][1]}"
    )
    assert rows(target) == {}  # the batch (here: the whole first load) was rolled back


def test_skip_writes_every_bad_record_whole_with_its_reason_and_goes_on(
    storage, target, capsys, tmp_path
) -> None:
    rejects = tmp_path / "rejects.jsonl"

    code = target.cli(
        "qdrant",
        "bad",
        "--path",
        str(storage),
        "--on-error",
        "skip",
        "--rejects",
        str(rejects),
        "--json",
    )

    assert code == ExitCode.REJECTED
    out = capsys.readouterr()
    summary = json.loads(out.out)
    assert (
        summary["read"],
        summary["written"],
        summary["rejected"],
        summary["matches_source"],
    ) == (105, 100, 5, False)
    assert (
        out.err.strip().splitlines()[-1]
        == f"vec2pg: 5 records were skipped into {rejects}: fix them and load them with 'vec2pg jsonl'"
    )
    assert len(rows(target)) == GOOD
    head, *lines = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert head["vec2pg_rejects"] == 1 and head["collection"] == "bad"
    assert {int(line["id"]): line["reason"] for line in lines} == {
        i: reason for i, (_, reason) in BAD.items()
    }
    by_id = {int(line["id"]): line for line in lines}
    assert by_id[1001]["vectors"]["dense"] == [1.0, float("inf"), 2.0]
    assert by_id[1002]["metadata"] == {"t": "a\x00b"}
    assert by_id[1004]["vectors"]["sparse"] == {"indices": [7, 3_000_000_000], "values": [1.0, 2.0]}


def test_the_rejects_file_reloads_once_its_records_are_fixed(
    storage, target, capsys, tmp_path
) -> None:
    rejects = tmp_path / "rejects.jsonl"
    assert (
        target.cli(
            "qdrant", "bad", "--path", str(storage), "--on-error", "skip", "--rejects", str(rejects)
        )
        == ExitCode.REJECTED
    )
    head, *lines = [json.loads(line) for line in rejects.read_text().splitlines()]
    fixes = {
        "1001": lambda r: r["vectors"].update(dense=[1.0, 0.0, 2.0]),
        "1002": lambda r: r.update(metadata={"t": "ab"}),
        "1003": lambda r: r["vectors"].update(dense=[3.0, 3.0, 3.0]),
        "1004": lambda r: r["vectors"].update(
            sparse={"indices": [7, 999_999_999], "values": [1.0, 2.0]}
        ),
        "1005": lambda r: r.update(metadata={"x": None}),
    }
    for line in lines:
        fixes[line["id"]](line)
    rejects.write_text("\n".join(json.dumps(x) for x in [head, *lines]) + "\n")
    capsys.readouterr()

    code = main(["jsonl", str(rejects), "--dsn", target.dsn, "--schema", target.schema, "--json"])

    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert (summary["target"], summary["mode"], summary["inserted"]) == (
        f'"{target.schema}"."bad"',
        "merge",
        5,
    )
    table = rows(target)
    assert len(table) == GOOD + 5
    assert table["1001"][1] == "[1,0,2]"
    assert table["1002"][3] == {"t": "ab"}
    assert table["1003"][1:3] == ("[3,3,3]", None)
    assert table["1004"][2] == "{8:1,1000000000:2}/1000000000"
    assert table["1005"][3] == {"x": None}


def test_strip_nul_is_explicit_and_counted(storage, target, capsys, tmp_path) -> None:
    code = target.cli(
        "qdrant",
        "bad",
        "--path",
        str(storage),
        "--strip-nul",
        "--on-error",
        "skip",
        "--rejects",
        str(tmp_path / "r.jsonl"),
        "--json",
    )

    assert code == ExitCode.REJECTED
    summary = json.loads(capsys.readouterr().out)
    assert (summary["altered"], summary["rejected"], summary["written"]) == (1, 4, 101)
    assert rows(target)["1002"][3] == {"t": "ab"}


def test_rejects_without_skip_is_a_usage_error(storage, target, capsys, tmp_path) -> None:
    assert (
        target.cli("qdrant", "bad", "--path", str(storage), "--rejects", str(tmp_path / "r"))
        == ExitCode.USAGE
    )
    assert capsys.readouterr().err.strip() == "vec2pg: error: --rejects goes with --on-error skip"


@pytest.mark.parametrize("processes", ["0", "2"], ids=["threads", "processes"])
def test_pinecone_records_beyond_pgvector_are_skipped_and_reloaded(
    pinecone_server, target, capsys, tmp_path, processes
) -> None:
    from test_pinecone import KEY, dense_records, expected_rows, upsert

    rejects = tmp_path / "rejects.jsonl"
    server = pinecone_server
    server.create_index("hybrid", dimension=4, metric="dotproduct")
    records = dense_records(30, 4, sparse=True)
    records[3]["sparse_values"] = {"indices": [5, 4_000_000_000], "values": [1.0, 2.0]}
    records[4]["metadata"] = {"t": "nul\x00here"}
    upsert(server, "hybrid", "ns", records)

    code = target.cli(
        "pinecone",
        "hybrid",
        "--api-key",
        KEY,
        "--on-error",
        "skip",
        "--rejects",
        str(rejects),
        "--json",
        "--processes",
        processes,
    )

    assert code == ExitCode.REJECTED
    assert json.loads(capsys.readouterr().out)["rejected"] == 2
    head, *lines = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert sorted((x["namespace"], x["id"]) for x in lines) == [
        ("ns", "doc-00003"),
        ("ns", "doc-00004"),
    ]
    for line in lines:
        if line["id"] == "doc-00003":
            line["vectors"]["sparse_embedding"]["indices"] = [5, 6]
        else:
            line["metadata"]["t"] = "nul here"
    rejects.write_text("\n".join(json.dumps(x) for x in [head, *lines]) + "\n")

    assert (
        main(["jsonl", str(rejects), "--dsn", target.dsn, "--schema", target.schema, "--quiet"])
        == 0
    )

    expected = expected_rows(server, "hybrid")
    table = target.rows("hybrid")
    assert table.keys() == expected.keys()
    assert table[("ns", "doc-00004")]["metadata"]["t"] == "nul here"
    assert table[("ns", "doc-00003")]["sparse_embedding"] == {5: 1.0, 6: 2.0}


def test_a_whole_qdrant_collection_with_no_bad_records_matches_after_skip_mode(
    tmp_path, target
) -> None:
    """--on-error skip changes nothing for good records: the table equals the source."""
    from qdrant_data import seed_named

    client = open_local(tmp_path / "g")
    seed_named(client, "good", 300)
    client.close()

    code = target.cli(
        "qdrant",
        "good",
        "--path",
        str(tmp_path / "g"),
        "--on-error",
        "skip",
        "--rejects",
        str(tmp_path / "r.jsonl"),
        "--quiet",
    )

    assert code == 0
    assert not (tmp_path / "r.jsonl").exists()
    assert_same_rows(target.rows("good"), stored_rows(tmp_path / "g", "good"))
