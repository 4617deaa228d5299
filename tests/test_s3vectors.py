"""Amazon S3 Vectors and Supabase Vector Buckets, read through tests/s3vectors_server.py.

The AWS wire is driven by the real boto3 client (its credential chain, endpoint and control
plane) and botocore's SigV4 signer; the Supabase wire by plain HTTPS with the service-role
key. Every test checks what a user sees: the exit code, the exact error line, and the rows
in PostgreSQL, each compared with what the server holds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from s3vectors_server import S3VectorsServer, seed_synthetic

from vec2pg.errors import RateLimited, SourceAuthError, SourceNotFound, SourceUnavailable
from vec2pg.records import Record
from vec2pg.sources.base import WHOLE

boto3 = pytest.importorskip("boto3", reason="the s3vectors source needs boto3 (vec2pg[s3vectors])")

KEY_ID = "AKIDTEST"
SUPABASE_KEY = "service-role-key-0123456789"
ANON_KEY = "anon-key-0123456789"
WIRES = ("aws", "supabase")


def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials for the test server, and nothing from the developer's AWS or Supabase."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "SUPABASE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(autouse=True)
def _aws(monkeypatch: pytest.MonkeyPatch) -> None:
    aws_environment(monkeypatch)


@pytest.fixture
def server() -> Iterator[S3VectorsServer]:
    with S3VectorsServer(supabase_key=SUPABASE_KEY, supabase_anon_key=ANON_KEY) as srv:
        yield srv


def source_args(wire: str, server: S3VectorsServer, *names: str) -> list[str]:
    """The command line's source part: ``s3vectors BUCKET [INDEX] ...`` on either wire."""
    if wire == "aws":
        return ["s3vectors", *names, "--endpoint-url", server.url, "--region", "us-east-1"]
    return ["supabase-vectors", *names, "--project-url", server.url, "--key", SUPABASE_KEY]


def open_source(wire: str, server: S3VectorsServer, bucket: str, index: str, **kw: Any) -> Any:
    from vec2pg.sources.s3vectors import S3VectorsSource, SupabaseVectorsSource

    if wire == "aws":
        return S3VectorsSource(
            bucket, index=index, endpoint_url=server.url, region="us-east-1", timeout=5, **kw
        )
    return SupabaseVectorsSource(
        bucket, index=index, project_url=server.url, key=SUPABASE_KEY, timeout=5, **kw
    )


def held(server: S3VectorsServer, bucket: str, index: str) -> dict[str, tuple[np.ndarray, Any]]:
    """What the server answers for every key: the float32 values and the metadata."""
    out = {}
    for key in server.keys(bucket, index):
        vector = server.get(bucket, index, key)
        assert vector is not None
        values = np.asarray(vector["data"]["float32"], dtype=np.float64).astype(np.float32)
        out[key] = (values, vector.get("metadata"))
    return out


def assert_rows_match(target: Any, table: str, server: S3VectorsServer, bucket: str, index: str):
    """Every row of ``table`` is a vector of the index, and every vector a row: keys,
    float32 values and metadata compared exactly."""
    rows = target.rows(table)
    expected = held(server, bucket, index)
    assert sorted(rows) == sorted(expected)
    for key, (values, metadata) in expected.items():
        np.testing.assert_array_equal(rows[key]["embedding"], values, err_msg=repr(key))
        assert (rows[key]["metadata"] or {}) == (metadata or {}), key
    return rows


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def column_type(target: Any, table: str, column: str = "embedding") -> str:
    ((kind,),) = target.query(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attname = %s",
        [f'"{target.schema}"."{table}"', column],
    )
    return str(kind)


# -- the contract every source passes -------------------------------------------------------


def _case(wire: str, request: Any) -> Iterator[Any]:
    from test_source_contract import COUNTS, DIM, Case

    aws_environment(request.getfixturevalue("monkeypatch"))
    with S3VectorsServer(supabase_key=SUPABASE_KEY) as server:
        server.create_index("bucket", "docs", DIM, "euclidean")
        client = boto3.client("s3vectors", endpoint_url=server.url, region_name="us-east-1")

        def put(records: list[Record]) -> None:
            server.seed(
                "bucket",
                "docs",
                [r.id for r in records],
                np.stack([r.vectors[""] for r in records]),
                [r.metadata for r in records],
            )

        case = Case(
            open=lambda collection="docs": open_source(
                wire, server, "bucket", collection, page_size=100
            ),
            cli=[*source_args(wire, server, "bucket", "docs"), "--page-size", "100"],
            table="docs",
            namespaced=False,
            source_id=lambda i: f"doc/{i:05d}",
            put=put,
            delete=lambda ns, key: client.delete_vectors(
                vectorBucketName="bucket", indexName="docs", keys=[key]
            ),
            break_transiently=lambda: server.fail_next(1, status=503),
            counts={"": COUNTS[""]},
        )
        case.seed()
        yield case
        client.close()


def case_s3vectors(request: Any, tmp_path: Path) -> Iterator[Any]:
    yield from _case("aws", request)


def case_supabase(request: Any, tmp_path: Path) -> Iterator[Any]:
    yield from _case("supabase", request)


# -- every row, several indexes, keys and metadata of every kind ----------------------------

KEYS = [
    "plain",
    'quotes " and \\ backslashes',
    "émoji 🚀, 中文, Ελληνικά",
    "new\nline\ttab\u2028",
    '","nextToken":"forged"}',
    '{"key":"not a vector"}',
    "k" * 1024,
    "𝄞" * 512,  # 1,024 UTF-16 units: Supabase's limit
    "a/b?c=d&e#f",
]


def every_json_type(i: int) -> dict[str, Any]:
    return {
        "s": f"text {i} «ü»",
        "i": i,
        "big": 2**62 + i,
        "f": i / 8,
        "tiny": -1.5e-7,
        "t": True,
        "no": False,
        "null": None,
        "list": [1, "a", None, [2.5, {"x": []}]],
        "obj": {"key": {"key": "nested"}, "deep": {"er": [True]}},
        "empty": {},
    }


def supabase_metadata(i: int) -> dict[str, Any]:
    # Supabase's vector API takes strings, numbers, booleans and lists of them.
    return {"s": f"text {i} 🚀", "i": i, "f": i / 8, "t": i % 2 == 0, "tags": ["a", f"t{i}", 3]}


def seed_bucket(server: S3VectorsServer, wire: str) -> None:
    """Three indexes: keys of every kind, metadata up to 40 KB, and plain numbered ones."""
    rng = np.random.default_rng(7)
    metadata = every_json_type if wire == "aws" else supabase_metadata
    server.create_index("bucket", "keys", 8, "cosine", non_filterable_metadata_keys=["blob"])
    records = [{**metadata(i), "blob": "x" * 100} for i in range(len(KEYS))]
    # The largest metadata there may be: 40 KB of compact JSON (its filterable part is
    # small: "blob" is non-filterable).
    big = {**metadata(0), "blob": ""}
    big["blob"] = "z" * (40 * 1024 - len(json.dumps(big, separators=(",", ":")).encode()))
    records[0] = big
    server.seed("bucket", "keys", KEYS, rng.standard_normal((len(KEYS), 8)), records)
    keys = [f"n-{i:04d}" for i in range(700)]
    server.seed(
        "bucket",
        "numbers",
        keys,
        rng.standard_normal((700, 5)),
        [metadata(i) for i in range(700)],
        distance_metric="euclidean",
    )
    server.create_index("bucket", "empty-one", 3, "cosine")


@pytest.mark.parametrize("wire", WIRES)
def test_every_index_of_a_bucket_arrives_row_for_row(
    wire: str, target: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Pages stop past 6 kB: short pages, some of one vector (the 40 KB metadata).
    with S3VectorsServer(supabase_key=SUPABASE_KEY, list_page_bytes=6_000) as server:
        seed_bucket(server, wire)

        code = target.cli(*source_args(wire, server, "bucket"), "--json", "--segments", "3")

        out, err = capsys.readouterr()
        assert code == 0, err
        summaries = {s["collection"]: s for s in map(json.loads, out.strip().splitlines())}
        assert list(summaries) == ["empty-one", "keys", "numbers"]  # ListIndexes' order
        assert [summaries[n]["written"] for n in summaries] == [0, len(KEYS), 700]
        rows = assert_rows_match(target, "keys", server, "bucket", "keys")
        assert_rows_match(target, "numbers", server, "bucket", "numbers")
        assert target.rows("empty-one") == {}
        assert len(json.dumps(rows["plain"]["metadata"], separators=(",", ":"))) == 40 * 1024
        assert server.count("ListVectors") > 700 // 100  # short pages

        assert target.cli("verify", *source_args(wire, server, "bucket")) == 0
        reports = [line for line in capsys.readouterr().out.splitlines() if line[:3] in "OK:"]
        assert reports == ["OK: the table matches the source (0 compared field by field)"] + [
            f"OK: the table matches the source ({n} compared field by field)"
            for n in (len(KEYS), 100)
        ]
    comments = dict(
        target.query(
            "SELECT c.relname, col_description(c.oid, a.attnum) FROM pg_class c "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'embedding' "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s",
            [target.schema],
        )
    )
    assert json.loads(comments["keys"])["vec2pg"]["metric"] == "cosine"
    assert json.loads(comments["numbers"])["vec2pg"]["metric"] == "euclidean"
    assert column_type(target, "numbers") == "vector(5)"


def test_table_with_several_indexes_is_refused(server, target, capsys) -> None:
    seed_bucket(server, "aws")

    code = target.cli(*source_args("aws", server, "bucket"), "--table", "one")

    assert code == 2
    assert error_line(capsys) == (
        "vec2pg: error: --table names one table, and s3vectors 'bucket' holds 3 ('empty-one', "
        "'keys', 'numbers'): name the INDEX to copy, or leave --table out for a table each"
    )


@pytest.mark.parametrize("segments", range(1, 17))
def test_every_segment_count_reads_each_key_once(server, segments: int) -> None:
    seed_synthetic(server, "bucket", "docs", 500, 4)
    source = open_source("aws", server, "bucket", "docs", segments=segments, page_size=100)
    try:
        info = source.describe()
        partitions = source.partitions("", info.namespaces[0].count, 8, lambda f, *a: f(*a))
        read: list[str] = []
        for partition in partitions:
            cursor = None
            while True:
                page = source.page("", partition, cursor)
                records = page.load()
                assert page.size == len(records)
                read += [r.id for r in records]
                cursor = page.next_cursor
                if cursor is None:
                    break
    finally:
        source.close()
    assert len(partitions) == segments
    assert (partitions == (WHOLE,)) == (segments == 1)
    assert len(read) == len(set(read)) == 500
    assert info.namespaces[0].count == 500


def test_segments_are_read_at_the_same_time(server, target, capsys) -> None:
    seed_synthetic(server, "bucket", "docs", 3_000, 16)
    server.latency = 0.02
    server.reset_stats()

    code = target.cli(*source_args("aws", server, "bucket", "docs"), "--quiet", "--page-size", "50")

    assert code == 0, capsys.readouterr().err
    assert server.max_in_flight >= 8  # 16 segments, --concurrency 16: in flight together
    assert_rows_match(target, "docs", server, "bucket", "docs")


# -- 4,096 dimensions, --halfvec and --index -------------------------------------------------


def test_4096_dimensions_arrive_exactly(server, target, capsys) -> None:
    seed_synthetic(server, "bucket", "wide", 30, 4096)
    args = source_args("aws", server, "bucket", "wide")

    assert target.cli(*args, "--quiet") == 0, capsys.readouterr().err
    assert column_type(target, "wide") == "vector(4096)"
    assert_rows_match(target, "wide", server, "bucket", "wide")

    assert target.cli(*args, "--halfvec", "--index", "hnsw", "--table", "half") == 2
    assert error_line(capsys) == (
        f'vec2pg: error: cannot build an hnsw index on "{target.schema}"."half".embedding: '
        "halfvec(4096) has more than 4,000 dimensions, pgvector's limit for indexing halfvec; "
        "leave out --index and query it without an index (exact search)"
    )


def test_4000_dimensions_with_halfvec_and_an_index(server, target, capsys) -> None:
    seed_synthetic(server, "bucket", "wide", 30, 4000)

    code = target.cli(
        *source_args("aws", server, "bucket", "wide"), "--halfvec", "--index", "hnsw", "--quiet"
    )

    assert code == 0, capsys.readouterr().err
    assert column_type(target, "wide") == "halfvec(4000)"
    rows = target.rows("wide")
    for key, (values, _) in held(server, "bucket", "wide").items():
        np.testing.assert_array_equal(rows[key]["embedding"], values.astype(np.float16))
    assert target.query(
        "SELECT count(*) FROM pg_indexes WHERE schemaname = %s AND tablename = 'wide' "
        "AND indexdef LIKE '%%USING hnsw (embedding halfvec_cosine_ops)%%'",
        [target.schema],
    ) == [(1,)]


# -- Supabase's pgvector backend: 16-bit values ----------------------------------------------


@pytest.mark.parametrize("records", [2_500, 40], ids=["paged", "one-page"])
def test_supabase_pgvector_backend_is_stored_as_halfvec_and_verifies(
    records: int, target: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with S3VectorsServer(supabase_key=SUPABASE_KEY, halfvec=True) as server:
        seed_synthetic(server, "bucket", "docs", records, 4000 if records < 100 else 12)
        args = source_args("supabase", server, "bucket", "docs")

        assert target.cli(*args, "--dry-run") == 0
        plan = capsys.readouterr().out
        assert '"embedding" halfvec(' in plan
        code = target.cli(*args, "--quiet", "--verify", "--index", "hnsw")

        out, err = capsys.readouterr()
        assert code == 0, err
        assert out.strip().splitlines()[-1].startswith("OK: the table matches the source")
        dim = 4000 if records < 100 else 12
        assert column_type(target, "docs") == f"halfvec({dim})"
        rows = assert_rows_match(target, "docs", server, "bucket", "docs")
    values = np.concatenate([row["embedding"] for row in rows.values()])
    assert np.array_equal(values.astype(np.float16).astype(np.float32), values)


def test_aws_values_are_float32_and_stay_vector(server, target, capsys) -> None:
    seed_synthetic(server, "bucket", "docs", 50, 8)

    assert target.cli(*source_args("supabase", server, "bucket", "docs"), "--quiet") == 0
    assert column_type(target, "docs") == "vector(8)"
    assert_rows_match(target, "docs", server, "bucket", "docs")


# -- kill -9 mid-run, then the same command ---------------------------------------------------


def committed(target: Any) -> int:
    try:
        ((done,),) = target.query(
            f'SELECT coalesce(sum(records), 0) FROM "{target.schema}"._vec2pg_progress'
        )
    except psycopg.Error:
        return 0
    return int(done)


@pytest.mark.parametrize("wire", WIRES)
def test_kill_9_mid_run_then_the_same_command_resumes_exactly(wire: str, target: Any) -> None:
    records = 8_000
    with S3VectorsServer(supabase_key=SUPABASE_KEY, halfvec=wire == "supabase") as server:
        seed_synthetic(server, "bucket", "docs", records, 16)
        server.latency = 0.01
        command = [
            sys.executable,
            "-m",
            "vec2pg",
            *source_args(wire, server, "bucket", "docs"),
            "--dsn",
            target.dsn,
            "--schema",
            target.schema,
            "--commit-rows",
            "500",
            "--segments",
            "5",
            "--page-size",
            "100",
            "--concurrency",
            "5",
            "--processes",
            "2",  # pages decoded in other processes, which die with the run
        ]
        run = subprocess.Popen(
            [*command, "--quiet"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while committed(target) < 2_000 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(run.pid, signal.SIGKILL)
        run.communicate(timeout=30)
        assert run.returncode == -signal.SIGKILL
        assert 2_000 <= committed(target) < records

        server.latency = 0
        again = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=120)

        assert again.returncode == 0, again.stderr
        summary = json.loads(again.stdout)
        assert summary["resumed"] and summary["read"] < records
        assert_rows_match(target, "docs", server, "bucket", "docs")


# -- refusals and what is missing -------------------------------------------------------------


def test_403_without_get_vectors_says_which_permission(server, target, capsys) -> None:
    seed_synthetic(server, "bucket", "docs", 20, 4)
    server.deny(KEY_ID, "s3vectors:GetVectors")

    assert target.cli(*source_args("aws", server, "bucket", "docs")) == 3
    assert error_line(capsys) == (
        "vec2pg: error: S3 Vectors index 'docs' of bucket 'bucket': AWS refused to list the "
        "vectors with their data (AccessDeniedException: User: "
        "arn:aws:iam::123456789012:user/AKIDTEST is not authorized to perform: "
        "s3vectors:GetVectors on resource: "
        "arn:aws:s3vectors:us-east-1:123456789012:bucket/bucket/index/docs because no "
        "identity-based policy allows the s3vectors:GetVectors action): reading data and "
        "metadata needs the s3vectors:GetVectors permission as well as s3vectors:ListVectors; "
        "grant both on the index"
    )
    assert target.query(
        "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename = 'docs'",
        [target.schema],
    ) == [(0,)]


def test_403_through_supabase_says_which_permission(server, target, capsys) -> None:
    seed_synthetic(server, "bucket", "docs", 20, 4)
    server.deny(SUPABASE_KEY, "s3vectors:GetVectors")

    assert target.cli(*source_args("supabase", server, "bucket", "docs")) == 3
    assert error_line(capsys) == (
        "vec2pg: error: Supabase vector index 'docs' of bucket 'bucket': Supabase refused to "
        "list the vectors with their data (AccessDeniedException: Access denied to S3 Vector "
        "service. Please check your permissions.): reading data and metadata needs the "
        "s3vectors:GetVectors permission as well as s3vectors:ListVectors; the AWS "
        "credentials of the project's Storage need both"
    )


@pytest.mark.parametrize(
    ("key", "said"),
    [
        (ANON_KEY, "HTTP 403: AccessDenied: Access denied: Invalid role"),
        ("wrong", "HTTP 401: Invalid API key"),
    ],
    ids=["anon", "wrong"],
)
def test_a_key_that_is_not_the_service_role_key(server, target, capsys, key, said) -> None:
    seed_synthetic(server, "bucket", "docs", 20, 4)
    args = ["supabase-vectors", "bucket", "docs", "--project-url", server.url, "--key", key]

    assert target.cli(*args, "--json") == 3
    out, err = capsys.readouterr()
    line = (
        f"Supabase vector index 'docs' of bucket 'bucket': Supabase refused the credentials "
        f"({said}): pass the project's service-role key (not the anon key) with --key or "
        "SUPABASE_SERVICE_ROLE_KEY"
    )
    assert json.loads(out) == {"error": line, "exit_code": 3}
    assert err.strip().splitlines()[-1] == f"vec2pg: error: {line}"
    assert key not in out + err


@pytest.mark.parametrize("wire", WIRES)
def test_unknown_bucket_and_index_name_what_there_is(wire, server, target, capsys) -> None:
    seed_synthetic(server, "bucket", "documents", 5, 4)
    server.create_index("bucket", "notes", 4)
    server.create_bucket("vacant")
    where = f"{server.url} (us-east-1)" if wire == "aws" else server.url
    noun = "S3 Vectors" if wire == "aws" else "Supabase vector"

    assert target.cli(*source_args(wire, server, "bucket", "document")) == 3
    assert error_line(capsys) == (
        f"vec2pg: error: {noun} index 'document' not found in bucket 'bucket'; "
        "did you mean 'documents'?"
    )
    assert target.cli(*source_args(wire, server, "bucket", "zzz")) == 3
    assert error_line(capsys) == (
        f"vec2pg: error: {noun} index 'zzz' not found in bucket 'bucket'; the indexes "
        "there: 'documents', 'notes'"
    )
    assert target.cli(*source_args(wire, server, "buckets", "documents")) == 3
    assert error_line(capsys) == (
        f"vec2pg: error: {noun} bucket 'buckets' not found at {where}; did you mean 'bucket'?"
    )
    assert target.cli(*source_args(wire, server, "nothing-like-it")) == 3
    assert error_line(capsys) == (
        f"vec2pg: error: {noun} bucket 'nothing-like-it' not found at {where}; the buckets "
        "there: 'bucket', 'vacant'"
    )
    assert target.cli(*source_args(wire, server, "vacant")) == 3
    assert error_line(capsys) == (
        f"vec2pg: error: {noun} bucket 'vacant' has no indexes: nothing to copy"
    )


def test_names_botocore_refuses_are_said_before_anything_is_sent(server, target, capsys) -> None:
    assert target.cli(*source_args("aws", server, "bucket", "ix")) == 2
    assert error_line(capsys).startswith(
        "vec2pg: error: S3 Vectors index 'ix' of bucket 'bucket': S3 Vectors would not take "
        "it: Parameter validation failed: Invalid length for parameter indexName"
    )
    assert server.count() == 0


def test_missing_credentials_region_and_key(server, target, capsys, monkeypatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    assert target.cli(*source_args("aws", server, "bucket", "docs")) == 2
    assert error_line(capsys) == (
        "vec2pg: error: no AWS credentials for S3 Vectors: set AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY, pass --profile, or run where an instance role applies"
    )
    assert target.cli("s3vectors", "bucket", "docs", "--endpoint-url", server.url) == 2
    assert error_line(capsys) == (
        "vec2pg: error: no AWS region for S3 Vectors: pass --region (e.g. --region "
        "us-east-1), set AWS_REGION, or name one in the profile"
    )
    assert target.cli("supabase-vectors", "bucket", "docs", "--project-url", server.url) == 2
    assert error_line(capsys) == (
        "vec2pg: error: no Supabase key: pass --key or set SUPABASE_SERVICE_ROLE_KEY (the "
        "project's service-role key)"
    )


def test_the_key_and_url_come_from_the_environment(server, target, capsys, monkeypatch) -> None:
    seed_synthetic(server, "bucket", "docs", 30, 4)
    monkeypatch.setenv("SUPABASE_URL", server.url)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", SUPABASE_KEY)

    assert target.cli("supabase-vectors", "bucket", "docs", "--quiet") == 0
    assert SUPABASE_KEY not in capsys.readouterr().out
    assert_rows_match(target, "docs", server, "bucket", "docs")


# -- rate-limit storms and transient failures --------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
def test_a_rate_limit_storm_slows_the_run_and_loses_nothing(wire, server, target, capsys) -> None:
    seed_synthetic(server, "bucket", "docs", 4_000, 8)
    server.latency = 0.002
    server.fail_next(2, status=500, operation="GetIndex")

    def storm() -> None:  # once reading is under way: 16 segments in flight
        deadline = time.monotonic() + 30
        while server.count("ListVectors") < 25 and time.monotonic() < deadline:
            time.sleep(0.001)
        server.drop_next(2, operation="ListVectors")
        server.fail_next(2, status=503, operation="ListVectors")
        server.fail_next(80, status=429, retry_after=0.01, operation="ListVectors")

    thread = threading.Thread(target=storm)
    thread.start()
    code = target.cli(*source_args(wire, server, "bucket", "docs"), "--json", "--page-size", "50")
    thread.join()

    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    assert summary["rate_limited"] == 80 and summary["retries"] == 80 + 2 + 2 + 2
    assert server.status_counts[("ListVectors", 429)] == 80
    assert_rows_match(target, "docs", server, "bucket", "docs")


@pytest.mark.parametrize("wire", WIRES)
def test_failures_are_sorted(wire, server) -> None:
    seed_synthetic(server, "bucket", "docs", 30, 4)
    source = open_source(wire, server, "bucket", "docs")
    try:
        source.describe()
        server.fail_next(1, status=429, retry_after=2.5, operation="ListVectors")
        with pytest.raises(RateLimited) as limited:
            source.page("", WHOLE, None)
        assert limited.value.retry_after == 2.5
        for status in (500, 503, 408):
            server.fail_next(1, status=status, operation="ListVectors")
            with pytest.raises(SourceUnavailable):
                source.page("", WHOLE, None)
        server.drop_next(1, operation="ListVectors")
        with pytest.raises(SourceUnavailable):
            source.page("", WHOLE, None)
        server.fail_next(1, status=404, operation="GetVectors")
        with pytest.raises(SourceNotFound):
            source.fetch("", ["vec-0000001"])
        server.deny(KEY_ID if wire == "aws" else SUPABASE_KEY, "s3vectors:GetVectors")
        with pytest.raises(SourceAuthError):
            source.page("", WHOLE, None)
        assert source.page_ids("", WHOLE, None).ids
    finally:
        source.close()


# -- resync, --replace, rejects ----------------------------------------------------------------


def test_replace_and_a_record_postgresql_cannot_hold(server, target, capsys, tmp_path) -> None:
    seed_synthetic(server, "bucket", "docs", 200, 4)
    server.seed("bucket", "docs", ["bad\x00key"], np.ones((1, 4)), [{"n": -1}])
    args = source_args("aws", server, "bucket", "docs")
    rejects = tmp_path / "rejects.jsonl"

    code = target.cli(*args, "--on-error", "skip", "--rejects", str(rejects), "--json")

    out, _ = capsys.readouterr()
    assert code == 9
    assert json.loads(out)["rejected"] == 1
    rejected = [json.loads(line) for line in rejects.read_text().splitlines()[1:]]
    assert [(r["id"], r["reason"]) for r in rejected] == [
        ("bad\x00key", "the id contains a NUL character, which PostgreSQL text cannot hold")
    ]
    assert target.cli(*args, "--replace", "--on-error", "skip", "--rejects", str(rejects)) == 9
    assert len(target.rows("docs")) == 200


def test_a_resumed_token_of_a_re_created_index_says_restart(server) -> None:
    seed_synthetic(server, "bucket", "docs", 300, 4)
    source = open_source("aws", server, "bucket", "docs", page_size=100)
    try:
        source.describe()
        token = source.page("", WHOLE, None).next_cursor
        boto3.client("s3vectors", endpoint_url=server.url, region_name="us-east-1").delete_index(
            vectorBucketName="bucket", indexName="docs"
        )
        seed_synthetic(server, "bucket", "docs", 300, 4)
        with pytest.raises(Exception) as caught:
            source.page("", WHOLE, token)
    finally:
        source.close()
    assert str(caught.value).endswith(
        "; if the index was re-created since that progress was saved, --restart reads it from "
        "the start"
    )


# -- finding the next page without parsing it --------------------------------------------------


@pytest.mark.parametrize(
    ("body", "token", "size"),
    [
        (b'{"vectors":[{"key":"a"},{"key":"b"}],"nextToken":"tok-1"}', "tok-1", 2),
        (b'{"nextToken":"tok-2","vectors":[{"key":"a"}]}', "tok-2", 1),
        (b'{"vectors":[{"key":"a"}]}', None, 1),
        # A key that looks like a token: parsed, never mistaken for one.
        (b'{"vectors":[{"key":"x\\",\\"nextToken\\":\\"forged"}]}', None, 1),
        (b'{"vectors":[{"key":"a"}],"nextToken":"with \\"quote\\""}', 'with "quote"', 1),
        (b'{ "vectors" : [ ] , "nextToken" : "spaced" }', "spaced", 0),
        ('{"vectors":[],"nextToken":"ключ 🚀"}'.encode(), "ключ 🚀", 0),
    ],
)
def test_the_next_token_is_found_in_the_answer(body: bytes, token: str | None, size: int) -> None:
    from vec2pg.sources.s3vectors import SupabaseVectorsSource

    source = SupabaseVectorsSource("bucket", index="docs", project_url="http://x", key="k")
    assert source._token_and_size(body, WHOLE) == (token, size)
    source.close()


def test_a_page_cut_short_is_asked_for_again(server) -> None:
    from vec2pg.sources.s3vectors import decode_list

    seed_synthetic(server, "bucket", "docs", 50, 4)
    source = open_source("aws", server, "bucket", "docs")
    try:
        source.describe()
        page = source.page("", WHOLE, None)
        assert page.read is not None
        raw = page.read()
        with pytest.raises(SourceUnavailable):
            decode_list("index 'docs'", False, raw.payload[:-10])
        again = page.read()  # the first answer is given once; then it is asked for again
        assert [r.id for r in again.decode(again.payload)] == [
            r.id for r in raw.decode(raw.payload)
        ]
    finally:
        source.close()
    assert server.count("ListVectors") == 3  # the sample, the page, and the page again


def test_what_cannot_be_converted_is_a_record_with_its_reason() -> None:
    from vec2pg.sources.s3vectors import decode_list

    body = (
        b'{"vectors":['
        b'{"key":"no-data","metadata":{"a":1}},'
        b'{"key":"strings","data":{"float32":["1","2"]}},'
        b'{"key":"not-an-object","data":{"float32":[1,2]},"metadata":[1]},'
        b'{"key":"empty","data":{"float32":[]}},'
        b'{"key":"\\ud800 lone","data":{"float32":[1e400,0.5]}},'
        b'{"key":"fine","data":{"float32":[0.25,-1]},"metadata":{"x":null}}'
        b"]}"
    )

    records = {r.id: r for r in decode_list("index 'docs'", False, body)}

    assert {key: r.invalid for key, r in records.items()} == {
        "no-data": "the source sent no vector data for it",
        "strings": "its vector data is not a list of numbers",
        "not-an-object": "its metadata is a JSON list, not an object",
        "empty": None,  # the sink refuses its dimension, with its key
        "\ud800 lone": None,  # the sink refuses the infinity and the lone surrogate
        "fine": None,
    }
    assert records["no-data"].vectors == {}
    assert records["empty"].vectors[""].shape == (0,)
    assert np.isinf(records["\ud800 lone"].vectors[""][0])
    np.testing.assert_array_equal(records["fine"].vectors[""], np.float32([0.25, -1]))
    assert records["fine"].metadata == {"x": None}
