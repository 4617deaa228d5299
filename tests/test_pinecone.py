"""Pinecone to PostgreSQL: the real pinecone SDK against a server speaking Pinecone's wire
format (tests/pinecone_server.py), seeded through the SDK's own upsert."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import PINECONE_KEY
from pinecone import Pinecone
from pinecone_server import PineconeServer
from qdrant_data import assert_equal_value

from vec2pg.cli import main
from vec2pg.errors import ExitCode

KEY = PINECONE_KEY


@pytest.fixture
def server(pinecone_server: PineconeServer) -> PineconeServer:
    return pinecone_server


def upsert(
    server: PineconeServer, index: str, namespace: str, records: list[dict[str, Any]]
) -> None:
    """Seed through the real SDK, so that it checks the wire format both ways."""
    with Pinecone(api_key=KEY, host=server.url) as pc, pc.Index(host=server.host(index)) as idx:
        for start in range(0, len(records), 200):
            idx.upsert(vectors=records[start : start + 200], namespace=namespace)


def dense_records(
    n: int, dim: int, *, prefix: str = "doc-", sparse: bool = False, seed: int = 0
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        record: dict[str, Any] = {
            "id": f"{prefix}{i:05d}",
            "values": rng.standard_normal(dim).astype(np.float32).tolist(),
            "metadata": {
                "title": f"Überschrift {i} — 東京",
                "year": 2000 + i % 25,
                "score": i / 3,
                "public": i % 2 == 0,
                "tags": ["a", f"t{i % 7}", "ü"],
            },
        }
        if sparse and i % 3:
            indices = sorted(rng.choice(50_000, 5, replace=False).tolist())
            record["sparse_values"] = {"indices": indices, "values": rng.random(5).tolist()}
        out.append(record)
    return out


def expected_rows(server: PineconeServer, index: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Every record the server holds, as the row vec2pg should write."""
    rows = {}
    store = server._indexes[index]
    for namespace in server.namespaces(index):
        for rid in store.ids_sorted(namespace):
            record = server.get(index, namespace, rid)
            assert record is not None
            row: dict[str, Any] = {"metadata": record.get("metadata")}
            if record.get("values"):
                row["embedding"] = np.asarray(record["values"], dtype=np.float32)
            sparse = record.get("sparseValues")
            if sparse is not None:
                row["sparse_embedding"] = {
                    int(i): np.float32(v)
                    for i, v in zip(sparse["indices"], sparse["values"], strict=True)
                }
            rows[(namespace or "__default__", rid)] = row
    return rows


def assert_rows_match(target, table: str, expected: dict[tuple[str, str], dict[str, Any]]) -> None:
    actual = target.rows(table)
    assert actual.keys() == expected.keys()
    for key, want in expected.items():
        for column, value in want.items():
            assert_equal_value(actual[key].get(column), value, f"{key}.{column}")


def run(target, *args: str) -> int:
    return target.cli("pinecone", *args, "--api-key", KEY)


#: Decoded by the reading threads (the default below 20,000 records) or by 2 processes.
PROCESSES = pytest.mark.parametrize(
    "processes", [[], ["--processes", "2"]], ids=["threads", "processes"]
)


@PROCESSES
def test_every_namespace_dense_and_sparse_arrives_exactly(
    server, target, capsys, processes
) -> None:
    server.create_index("hybrid", dimension=16, metric="dotproduct")
    upsert(server, "hybrid", "", dense_records(250, 16, sparse=True))  # default namespace
    upsert(server, "hybrid", "tenant-a", dense_records(130, 16, sparse=True, seed=1))
    upsert(server, "hybrid", "tenant-b", dense_records(7, 16, seed=2))

    code = run(target, "hybrid", "--json", *processes)

    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["processes"] == (2 if processes else 0)
    assert {
        name: (ns["expected"], ns["read"], ns["inserted"])
        for name, ns in summary["namespaces"].items()
    } == {
        "__default__": (250, 250, 250),
        "tenant-a": (130, 130, 130),
        "tenant-b": (7, 7, 7),
    }
    assert (summary["mode"], summary["matches_source"]) == ("load", True)
    assert_rows_match(target, "hybrid", expected_rows(server, "hybrid"))
    assert server.count("list") >= 3 + 2  # more than one page in two namespaces
    columns = target.query(
        "SELECT attname, format_type(atttypid, atttypmod), col_description(attrelid, attnum) "
        "FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 ORDER BY attnum",
        [f'"{target.schema}"."hybrid"'],
    )
    assert [(name, kind) for name, kind, _ in columns] == [
        ("id", "text"),
        ("namespace", "text"),
        ("embedding", "vector(16)"),
        ("sparse_embedding", "sparsevec(1000000000)"),
        ("metadata", "jsonb"),
    ]
    assert json.loads(columns[2][2])["vec2pg"]["metric"] == "dotproduct"
    key = target.query(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
        [f'"{target.schema}"."hybrid"'],
    )
    assert key == [("PRIMARY KEY (namespace, id)",)]


def test_a_sparse_only_index_has_no_dense_column(server, target) -> None:
    server.create_index("sparse", metric="dotproduct", vector_type="sparse")
    rng = np.random.default_rng(3)
    records = [
        {
            "id": f"s{i}",
            "sparse_values": {
                "indices": sorted(rng.choice(999_999_999, 3, replace=False).tolist()),
                "values": [0.5, 1.5, 2.5],
            },
            "metadata": {"i": i},
        }
        for i in range(40)
    ]
    records[0]["sparse_values"]["indices"] = [0, 1, 999_999_999]  # pgvector's edges
    upsert(server, "sparse", "ns", records)

    assert run(target, "sparse") == 0

    assert_rows_match(target, "sparse", expected_rows(server, "sparse"))
    columns = [
        r[0]
        for r in target.query(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0",
            [f'"{target.schema}"."sparse"'],
        )
    ]
    assert columns == ["id", "namespace", "sparse_embedding", "metadata"]


@PROCESSES
def test_a_sparse_index_beyond_pgvectors_dimension_is_refused_with_the_record(
    server, target, capsys, processes
) -> None:
    server.create_index("sparse", metric="dotproduct", vector_type="sparse")
    upsert(
        server,
        "sparse",
        "ns",
        [
            {"id": "ok", "sparse_values": {"indices": [5], "values": [1.0]}},
            {"id": "big", "sparse_values": {"indices": [7, 3_000_000_000], "values": [1.0, 2.0]}},
        ],
    )

    code = run(target, "sparse", *processes)

    assert code == ExitCode.INVALID_RECORD
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "vec2pg: error: record 'big' in namespace 'ns': sparse vector 'sparse_embedding' has index "
        "3000000000; pgvector's sparsevec holds indices 0 to 999999999"
    )
    assert target.query(f'SELECT count(*) FROM "{target.schema}".sparse') == [(0,)]


def test_namespaces_can_be_restricted_and_the_default_has_two_spellings(server, target) -> None:
    server.create_index("docs", dimension=4, metric="cosine")
    upsert(server, "docs", "", dense_records(20, 4))
    upsert(server, "docs", "keep", dense_records(5, 4))
    upsert(server, "docs", "skip", dense_records(5, 4))

    assert run(target, "docs", "--namespace", "", "-n", "keep", "--table", "a") == 0
    assert run(target, "docs", "--namespace", "__default__", "--table", "b") == 0

    counts = f'SELECT namespace, count(*) FROM "{target.schema}".{{}} GROUP BY 1 ORDER BY 1'
    assert target.query(counts.format("a")) == [("__default__", 20), ("keep", 5)]
    assert target.query(counts.format("b")) == [("__default__", 20)]


def test_an_unknown_namespace_is_refused(server, target, capsys) -> None:
    server.create_index("docs", dimension=4, metric="cosine")
    upsert(server, "docs", "a", dense_records(3, 4))

    assert run(target, "docs", "--namespace", "nope") == ExitCode.USAGE
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == "vec2pg: error: pinecone 'docs' has no namespace 'nope'; it has: 'a'"
    )


def test_an_older_server_that_spells_the_default_namespace_empty(server, target) -> None:
    server.create_index("docs", dimension=4, metric="euclidean")
    upsert(server, "docs", "", dense_records(150, 4))
    server.default_namespace_name = ""

    assert run(target, "docs") == 0

    assert target.query(f'SELECT namespace, count(*) FROM "{target.schema}".docs GROUP BY 1') == [
        ("__default__", 150)
    ]


def hex_records(n: int, dim: int, *, seed: int, bits: int = 64) -> list[dict[str, Any]]:
    """``dense_records`` with random hexadecimal ids (hashes, UUIDs): they split widely."""
    rng = random.Random(seed)
    records = dense_records(n, dim)
    for record in records:
        record["id"] = f"{rng.getrandbits(bits):0{bits // 4}x}"
    return records


def test_a_large_namespace_is_listed_in_parallel_prefixes_exactly_once(
    server, target, capsys
) -> None:
    """Hex ids: the namespace splits into prefixes, listed concurrently."""
    server.create_index("big", dimension=8, metric="cosine")
    upsert(server, "big", "ns", hex_records(6000, 8, seed=5, bits=128))
    server.latency = 0.03
    server.reset_stats()

    code = run(target, "big", "--concurrency", "8", "--json")

    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["written"] == 6000
    assert_rows_match(target, "big", expected_rows(server, "big"))
    assert server.max_in_flight > 4
    # One chain would list 60 pages; prefixes list 16+ chains, each with a partial last page.
    assert server.count("list") > 60 + 16


def test_rate_limited_probes_are_retried_one_by_one_while_splitting(server, target, capsys) -> None:
    """Splitting probes dozens of prefixes at once; Pinecone limits list requests per
    second. Each refused probe is retried (and the probes slowed down) on its own: the
    split neither fails nor starts over, and every record arrives once."""
    server.create_index("big", dimension=8, metric="cosine")
    upsert(server, "big", "ns", hex_records(3000, 8, seed=7))
    # The first list (the namespace's first page) is answered; the 40 after it, the
    # split's probes in flight together, are refused.
    server.hang_next(1, seconds=0, endpoint="list")
    server.fail_next(40, status=429, retry_after=0, endpoint="list")

    code = run(target, "big", "--concurrency", "8", "--json")

    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["written"] == 3000
    assert summary["rate_limited"] == 40
    assert server.status_counts[("list", 429)] == 40
    assert_rows_match(target, "big", expected_rows(server, "big"))


def test_a_bare_host_from_the_control_plane_is_reached_over_https() -> None:
    from vec2pg.sources.pinecone import base_url

    assert base_url("docs-abc123.svc.aped-4627-b74a.pinecone.io") == (
        "https://docs-abc123.svc.aped-4627-b74a.pinecone.io"
    )
    assert base_url("http://127.0.0.1:5081/") == "http://127.0.0.1:5081"


def test_a_split_prefix_that_is_itself_an_id_and_rare_characters_are_kept(
    server, target, capsys
) -> None:
    """ "a" is an id and the prefix of 6,000 others, so splitting "a" makes "a" a chain of
    its own; "~x" and "\x7fx" (DEL) sort after every letter and are found by the probes."""
    from vec2pg.sources.pinecone import PineconeSource

    server.create_index("tree", dimension=4, metric="cosine")
    names = [
        "a",
        *(f"a{i:04d}" for i in range(6000)),
        *(f"b{i:03d}" for i in range(500)),
        "~x",
        "\x7fx",
    ]
    records = dense_records(len(names), 4)
    for record, name in zip(records, names, strict=True):
        record["id"] = name
    upsert(server, "tree", "ns", records)

    source = PineconeSource("tree", api_key=KEY)
    source.describe()
    chains = source.partitions("ns", len(names), 32, lambda fn, *args: fn(*args))
    source.close()
    assert "id:a" in chains and "prefix:~" in chains and "prefix:\x7f" in chains
    prefixes = [c.removeprefix("prefix:") for c in chains if c.startswith("prefix:")]
    assert not any(p != q and q.startswith(p) for p in prefixes for q in prefixes)  # disjoint

    code = run(target, "tree", "--concurrency", "8", "--json")

    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["written"] == len(names)
    assert_rows_match(target, "tree", expected_rows(server, "tree"))


def test_a_storm_of_429s_slows_the_run_down_but_does_not_stop_it(server, target, capsys) -> None:
    server.create_index("docs", dimension=8, metric="cosine")
    upsert(server, "docs", "ns", dense_records(1500, 8))
    server.fail_next(60, status=429, retry_after=0, endpoint="fetch")
    # Back to back on the one chain: each waits twice as long as the last (no Retry-After).
    server.fail_next(8, status=429, endpoint="list")

    code = run(target, "docs", "--retries", "2", "--json")

    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["written"] == 1500
    assert summary["rate_limited"] > 0
    assert server.status_counts[("fetch", 429)] == 60
    assert server.status_counts[("list", 429)] == 8
    assert_rows_match(target, "docs", expected_rows(server, "docs"))


def test_5xx_answers_are_retried(server, target, capsys) -> None:
    server.create_index("docs", dimension=8, metric="cosine")
    upsert(server, "docs", "ns", dense_records(300, 8))
    server.fail_next(6, status=503, endpoint="fetch")

    assert run(target, "docs", "--json") == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["written"] == 300


def test_a_pod_based_index_gets_an_explanation(server, target, capsys) -> None:
    server.create_index("old", dimension=8, deployment="pod")

    code = run(target, "old")

    assert code == ExitCode.SOURCE
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "vec2pg: error: Pinecone index 'old' is pod-based: vec2pg reads an index by listing its "
        "ids, and Pinecone offers list only on serverless indexes: move the index to serverless "
        "(Pinecone's console migrates pod-based indexes) and migrate that one"
    )


def test_a_pod_based_index_named_by_host_is_explained_too(server, target, capsys) -> None:
    host = server.create_index("old", dimension=8, deployment="pod")
    upsert(server, "old", "ns", dense_records(3, 8))

    assert run(target, "old", "--host", host) == ExitCode.SOURCE
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "vec2pg: error: Pinecone index 'old' cannot list ids (it answered 'list is not "
        "supported for pod-based indexes'): vec2pg reads an index by listing its ids, and "
        "Pinecone offers list only on serverless indexes: move the index to serverless "
        "(Pinecone's console migrates pod-based indexes) and migrate that one"
    )


def test_a_wrong_api_key_is_refused_without_printing_it(server, target, capsys) -> None:
    server.create_index("docs", dimension=8, metric="cosine")

    code = target.cli("pinecone", "docs", "--api-key", "bad-key-000")

    assert code == ExitCode.SOURCE
    out = capsys.readouterr()
    assert out.err.strip() == (
        "vec2pg: error: Pinecone index 'docs': Pinecone refused the API key (HTTP 401): "
        "check --api-key or PINECONE_API_KEY"
    )
    assert "bad-key-000" not in out.err + out.out


def test_an_unknown_index_is_a_source_error(server, target, capsys) -> None:
    assert run(target, "nope") == ExitCode.SOURCE
    assert (
        capsys.readouterr().err.strip().startswith("vec2pg: error: Pinecone index 'nope' not found")
    )


def test_no_api_key_is_a_usage_error(server, target, capsys) -> None:
    assert target.cli("pinecone", "docs") == ExitCode.USAGE
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "vec2pg: error: no Pinecone API key: pass --api-key or set PINECONE_API_KEY"
    )


def test_the_original_command_form_works(server, target, capsys, monkeypatch) -> None:
    server.create_index("docs", dimension=8, metric="cosine")
    upsert(server, "docs", "ns", dense_records(12, 8))

    assert main(["pinecone", "migrate", "docs", KEY, target.dsn, "--schema", target.schema]) == 0, (
        capsys.readouterr().err
    )
    monkeypatch.setenv("PINECONE_API_KEY", KEY)
    monkeypatch.setenv("POSTGRES_CONNECTION_STRING", target.dsn)
    assert main(["pinecone", "migrate", "docs", "--schema", target.schema, "--table", "again"]) == 0

    assert target.query(f'SELECT count(*) FROM "{target.schema}".docs') == [(12,)]
    assert target.query(f'SELECT count(*) FROM "{target.schema}".again') == [(12,)]
    assert KEY not in capsys.readouterr().out


#: docker-compose.test.yml's Pinecone Local (http://localhost:5080), read before the
#: autouse fixture clears the environment.
PINECONE_LOCAL = os.environ.get("PINECONE_LOCAL_URL")


@pytest.mark.skipif(not PINECONE_LOCAL, reason="PINECONE_LOCAL_URL names no Pinecone Local")
def test_against_pinecone_local(target, monkeypatch) -> None:
    """With docker-compose.test.yml up: PINECONE_LOCAL_URL=http://localhost:5080 scripts/test."""
    from pinecone import ServerlessSpec

    assert PINECONE_LOCAL
    monkeypatch.setenv("PINECONE_CONTROLLER_HOST", PINECONE_LOCAL)
    name = f"vec2pg-{target.schema.replace('_', '-')}"
    with Pinecone(api_key="pclocal", host=PINECONE_LOCAL) as pc:
        pc.create_index(
            name,
            spec=ServerlessSpec(cloud="aws", region="us-east-1"),
            dimension=8,
            metric="dotproduct",
        )
        try:
            with pc.Index(host=pc.describe_index(name).host) as idx:
                records = dense_records(450, 8, sparse=True)
                for namespace in ("", "a"):
                    for start in range(0, len(records), 100):
                        idx.upsert(vectors=records[start : start + 100], namespace=namespace)
                assert (
                    main(
                        [
                            "pinecone",
                            name,
                            "--api-key",
                            "pclocal",
                            "--dsn",
                            target.dsn,
                            "--schema",
                            target.schema,
                            "--table",
                            "local",
                            "--quiet",
                        ]
                    )
                    == 0
                )
                rows = target.rows("local")
                assert len(rows) == 900
                fetched = idx.fetch(ids=[r["id"] for r in records[:50]], namespace="a").vectors
                for rid, vector in fetched.items():
                    np.testing.assert_array_equal(
                        rows[("a", rid)]["embedding"], np.asarray(vector.values, dtype=np.float32)
                    )
        finally:
            pc.delete_index(name)


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += map(int, task.read_text().split())
    return found


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"  # a zombie has ended


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_a_run_ends_its_decoding_processes_and_a_rerun_converges(server, target) -> None:
    server.create_index("big", dimension=8, metric="cosine")
    upsert(server, "big", "ns", dense_records(600, 8))
    server.latency = 0.05
    command = [sys.executable, "-m", "vec2pg", "pinecone", "big", "--api-key", KEY]
    command += ["--dsn", target.dsn, "--schema", target.schema, "--json", "--processes", "2"]
    # Not pipes: processes left running would hold them open.
    proc = subprocess.Popen(
        [*command, "--concurrency", "1", "--commit-rows", "100"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while server.count("fetch") < 3:  # reading, so the decoding processes have started
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    # The pool's workers, and multiprocessing's resource tracker.
    started = [pid for pid in children(proc.pid) if running(pid)]
    assert len(started) >= 2

    proc.kill()
    proc.wait()

    deadline = time.monotonic() + 10
    while any(running(pid) for pid in started):
        if time.monotonic() > deadline:
            left = [pid for pid in started if running(pid)]
            for pid in left:
                os.kill(pid, 9)
            pytest.fail(f"processes of the killed run still running: {left}")
        time.sleep(0.05)
    server.latency = 0
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert (summary["resumed"], summary["matches_source"]) == (True, True)
    assert_rows_match(target, "big", expected_rows(server, "big"))


def test_a_typo_in_the_index_name_suggests_the_closest(server, target, capsys) -> None:
    server.create_index("documents", dimension=4, metric="cosine")
    server.create_index("images", dimension=4, metric="cosine")

    assert run(target, "document") == ExitCode.SOURCE
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "vec2pg: error: Pinecone index 'document' not found; did you mean 'documents'?"
    )
    assert run(target, "zzz") == ExitCode.SOURCE
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "vec2pg: error: Pinecone index 'zzz' not found; the project has 'documents', 'images'"
    )


def test_a_migration_needs_no_pinecone_sdk(server, target, tmp_path) -> None:
    """A plain install reads Pinecone over its REST API: the SDK is not imported."""
    import subprocess
    import sys

    server.create_index("docs", dimension=4, metric="cosine")
    upsert(server, "docs", "ns", dense_records(5, 4))
    blocker = tmp_path / "pinecone.py"
    blocker.write_text("raise ImportError('the pinecone SDK is not installed')\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "vec2pg",
            "pinecone",
            "docs",
            "--api-key",
            KEY,
            "--dsn",
            target.dsn,
            "--schema",
            target.schema,
            "--quiet",
        ],
        env=env,
        capture_output=True,
        text=True,
    )

    assert done.returncode == 0, done.stderr
    assert target.query(f'SELECT count(*) FROM "{target.schema}".docs') == [(5,)]
