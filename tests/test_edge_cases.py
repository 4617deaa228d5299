"""Edge cases found in review: each test failed before its fix."""

from __future__ import annotations

import json
import threading
import time

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as m
from qdrant_data import open_local, seed_unnamed
from qdrant_server import QdrantServer
from test_pinecone import KEY, dense_records, upsert

from vec2pg.cli import main
from vec2pg.errors import ExitCode, RateLimited, SourceUnavailable
from vec2pg.pipeline import Options, RetryPolicy, migrate
from vec2pg.postgres import PostgresSink


def test_replace_with_a_namespace_is_refused_instead_of_dropping_the_others(
    pinecone_server, target, capsys
) -> None:
    pinecone_server.create_index("docs", dimension=4, metric="cosine")
    upsert(pinecone_server, "docs", "a", dense_records(5, 4))
    upsert(pinecone_server, "docs", "b", dense_records(5, 4))
    assert target.cli("pinecone", "docs", "--api-key", KEY, "--quiet") == 0

    code = target.cli("pinecone", "docs", "--api-key", KEY, "--replace", "-n", "a")

    assert code == ExitCode.USAGE
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "vec2pg: error: --replace rebuilds the whole table: it does not go with --namespace"
    )
    assert target.query(
        f'SELECT namespace, count(*) FROM "{target.schema}".docs GROUP BY 1 ORDER BY 1'
    ) == [("a", 5), ("b", 5)]


def bad_collection(local: QdrantClient, good: int = 200) -> None:
    local.create_collection(
        "docs", vectors_config=m.VectorParams(size=2, distance=m.Distance.EUCLID)
    )
    points = [m.PointStruct(id=i, vector=[float(i), 1.0], payload={"i": i}) for i in range(good)]
    points.append(m.PointStruct(id=5_000, vector=[1.0, float("inf")], payload={}))
    local.upsert("docs", points)


def test_records_rejected_before_an_interruption_still_count_after_the_resume(
    target, capsys, tmp_path
) -> None:
    """Point 3 (of ids 0..2) is rejected in the first commit; the run then fails; the
    resumed run must still report it and exit 9, not 0."""
    local = QdrantClient(":memory:")
    local.create_collection(
        "docs", vectors_config=m.VectorParams(size=2, distance=m.Distance.EUCLID)
    )
    local.upsert(
        "docs",
        [m.PointStruct(id=i, vector=[1.0, float("inf") if i == 3 else 1.0]) for i in range(200)],
    )
    rejects = tmp_path / "r.jsonl"
    args = [
        "--page-size",
        "10",
        "--commit-rows",
        "10",
        "--on-error",
        "skip",
        "--rejects",
        str(rejects),
        "--retries",
        "1",
    ]
    with QdrantServer(local) as server:

        def fail_later() -> None:
            while server.count("/points/scroll") < 4:
                time.sleep(0.005)
            server.fail_next(1000, status=502, path_contains="/points/scroll")

        threading.Thread(target=fail_later, daemon=True).start()
        assert target.cli("qdrant", "docs", "--url", server.url, *args) == ExitCode.SOURCE
        server.clear_faults()
        capsys.readouterr()

        code = target.cli("qdrant", "docs", "--url", server.url, *args, "--json")

    summary = json.loads(capsys.readouterr().out)
    assert code == ExitCode.REJECTED
    assert (summary["resumed"], summary["rejected"], summary["matches_source"]) == (True, 1, False)
    assert target.query(f'SELECT count(*) FROM "{target.schema}".docs') == [(199,)]
    local.close()


def test_prune_keeps_the_row_of_a_record_rejected_this_time(tmp_path, target, capsys) -> None:
    storage = tmp_path / "q"
    client = open_local(storage)
    client.create_collection(
        "docs", vectors_config=m.VectorParams(size=2, distance=m.Distance.EUCLID)
    )
    client.upsert("docs", [m.PointStruct(id=i, vector=[float(i), 1.0]) for i in range(50)])
    client.close()
    assert target.cli("qdrant", "docs", "--path", str(storage), "--quiet") == 0
    client = open_local(storage)
    client.upsert("docs", [m.PointStruct(id=13, vector=[1.0, float("inf")])])  # 13 exists
    client.close()
    capsys.readouterr()

    code = target.cli(
        "qdrant",
        "docs",
        "--path",
        str(storage),
        "--prune",
        "--on-error",
        "skip",
        "--rejects",
        str(tmp_path / "r.jsonl"),
        "--json",
    )

    assert code == ExitCode.REJECTED
    summary = json.loads(capsys.readouterr().out)
    assert (summary["rejected"], summary["deleted"]) == (1, 0)
    assert target.query(
        f"SELECT embedding::text FROM \"{target.schema}\".docs WHERE id = '13'"
    ) == [("[13,1]",)]


def test_a_rejects_file_that_repeats_a_record_reloads_once(tmp_path, target, capsys) -> None:
    storage = tmp_path / "q"
    client = open_local(storage)
    bad_collection(client, good=20)
    client.close()
    rejects = tmp_path / "r.jsonl"
    skip = ["--on-error", "skip", "--rejects", str(rejects)]
    assert target.cli("qdrant", "docs", "--path", str(storage), *skip) == ExitCode.REJECTED
    assert (
        target.cli("qdrant", "docs", "--path", str(storage), *skip) == ExitCode.REJECTED
    )  # nightly
    head, *lines = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert [x["id"] for x in lines] == ["5000", "5000"]
    for x in lines:
        x["vectors"][""] = [1.0, 2.0]
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text("\n".join(json.dumps(x) for x in [head, *lines]) + "\n")
    capsys.readouterr()

    assert (
        main(["jsonl", str(fixed), "--dsn", target.dsn, "--schema", target.schema, "--quiet"]) == 0
    ), capsys.readouterr().err

    assert target.query(
        f"SELECT embedding::text FROM \"{target.schema}\".docs WHERE id = '5000'"
    ) == [("[1,2]",)]


def test_a_reload_may_not_write_its_rejects_into_the_file_it_reads(
    tmp_path, target, capsys
) -> None:
    storage = tmp_path / "q"
    client = open_local(storage)
    bad_collection(client, good=5)
    client.close()
    rejects = tmp_path / "r.jsonl"
    assert (
        target.cli(
            "qdrant",
            "docs",
            "--path",
            str(storage),
            "--on-error",
            "skip",
            "--rejects",
            str(rejects),
        )
        == ExitCode.REJECTED
    )
    capsys.readouterr()

    code = main(
        [
            "jsonl",
            str(rejects),
            "--dsn",
            target.dsn,
            "--schema",
            target.schema,
            "--on-error",
            "skip",
            "--rejects",
            str(rejects),
        ]
    )

    assert code == ExitCode.USAGE
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == f"vec2pg: error: {rejects} is what this run reads: give --rejects another file"
    )
    assert len(rejects.read_text().splitlines()) == 2  # header and the one record, unchanged


def test_a_rejects_file_of_another_collection_is_refused(tmp_path, target, capsys) -> None:
    storage = tmp_path / "q"
    client = open_local(storage)
    bad_collection(client, good=5)
    seed_unnamed(client, "other", 3)
    client.close()
    rejects = tmp_path / "r.jsonl"
    assert (
        target.cli(
            "qdrant",
            "docs",
            "--path",
            str(storage),
            "--on-error",
            "skip",
            "--rejects",
            str(rejects),
        )
        == ExitCode.REJECTED
    )
    capsys.readouterr()

    code = target.cli(
        "qdrant", "other", "--path", str(storage), "--on-error", "skip", "--rejects", str(rejects)
    )

    assert code == ExitCode.USAGE
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"vec2pg: error: {rejects} holds the rejects of another collection or of other vectors "
        "(qdrant 'docs'): give --rejects another file"
    )


def test_the_run_log_keeps_what_prune_deleted(tmp_path, target, capsys) -> None:
    storage = tmp_path / "q"
    client = open_local(storage)
    seed_unnamed(client, "docs", 30)
    client.close()
    assert target.cli("qdrant", "docs", "--path", str(storage), "--quiet") == 0
    client = open_local(storage)
    client.delete("docs", points_selector=m.PointIdsList(points=[13, 7932]))
    client.close()

    assert target.cli("qdrant", "docs", "--path", str(storage), "--prune", "--quiet") == 0

    logged = target.query(
        f'SELECT summary FROM "{target.schema}"._vec2pg_runs ORDER BY id DESC LIMIT 1'
    )[0][0]
    assert (logged["deleted"], logged["stale"], logged["matches_source"]) == (2, 0, True)


class RateLimitedThenOutage:
    """A source call that is rate limited five times, then has one outage, then works."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= 5:
            raise RateLimited("slow down", retry_after=0.001)
        if self.calls == 6:
            raise SourceUnavailable("blip")
        return "ok"


def test_rate_limiting_does_not_use_up_the_retries_of_other_failures() -> None:
    from vec2pg.pipeline import NoEvents
    from vec2pg.reading import Retrier

    call = RateLimitedThenOutage()
    retrier = Retrier(RetryPolicy(attempts=2, initial=0.001), NoEvents(), 1)

    assert retrier.call(call) == "ok"
    assert (call.calls, retrier.rate_limited, retrier.retries) == (7, 5, 6)


def test_restart_applies_to_saved_progress_not_to_the_runs_own_after_a_reconnect(target) -> None:
    """With --restart, a reconnect must resume the run it started, not start another."""
    from test_pipeline import FakeSource

    from vec2pg.postgres.sink import SyncOptions

    source = FakeSource({"a": 300}, page_size=10, load_delay=0.02)

    def kill_mid_run() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                done = target.query(
                    f'SELECT coalesce(sum(records), 0) FROM "{target.schema}"._vec2pg_progress'
                )
            except Exception:
                done = [(0,)]
            if done[0][0] >= 40:
                target.query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'vec2pg' AND pid <> pg_backend_pid()"
                )
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_mid_run)
    killer.start()
    with PostgresSink(
        target.dsn, schema=target.schema, commit_rows=20, sync=SyncOptions(restart=True)
    ) as sink:
        summary = migrate(source, sink, Options(concurrency=1, retry=RetryPolicy(initial=0.001)))
    killer.join()

    assert summary.reconnects == 1
    assert summary.read == 300
    assert target.query(f'SELECT count(*) FROM "{target.schema}".things') == [(300,)]
    assert target.query(
        f'SELECT status, count(*) FROM "{target.schema}"._vec2pg_runs GROUP BY 1'
    ) == [("complete", 1)]


@pytest.mark.parametrize("sqlstate_error", ["57014"])
def test_a_statement_error_is_not_mistaken_for_a_lost_connection(
    target, capsys, sqlstate_error
) -> None:
    """A cancelled statement (57014) is a target error, not a reason to reconnect 5 times."""
    import psycopg

    from vec2pg.errors import TargetError, TargetUnavailable
    from vec2pg.postgres.connection import translate_errors

    with pytest.raises(TargetError) as caught, translate_errors(target.dsn, "testing"):
        with psycopg.connect(target.dsn) as conn:
            conn.execute("SET statement_timeout = 1")
            conn.execute("SELECT pg_sleep(1)")
    assert not isinstance(caught.value, TargetUnavailable)
    assert str(caught.value).startswith("PostgreSQL failed while testing: canceling statement")
