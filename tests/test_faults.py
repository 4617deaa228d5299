"""Faults a careful tester found getting through, each reproduced against real PostgreSQL and
the wire-format test servers: cursors that repeat, SIGTERM, a reconnect budget spent by
one outage after another, lock waits, and records or files that crashed a run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
import psycopg
import pytest
from qdrant_client import QdrantClient
from qdrant_data import seed_unnamed
from qdrant_server import QdrantServer
from test_pinecone import KEY, dense_records, upsert
from test_pipeline import FakeSource

from vec2pg.cli import main
from vec2pg.errors import ExitCode, SourceError
from vec2pg.pipeline import Options, RetryPolicy, migrate
from vec2pg.postgres import PostgresSink
from vec2pg.records import Cursor
from vec2pg.sources.base import Page


def count_rows(target, table: str) -> tuple[int, int]:
    """(rows, distinct keys) of a table."""
    key = "(namespace, id)" if table == "idx" else "id"
    ((rows, distinct),) = target.query(
        f'SELECT count(*), count(DISTINCT {key}) FROM "{target.schema}"."{table}"'
    )
    return rows, distinct


# -- 1. a cursor that repeats --------------------------------------------------------------


def test_a_pinecone_list_token_that_comes_back_stops_the_run_and_the_next_run_recovers(
    pinecone_server, target, capsys
) -> None:
    pinecone_server.create_index("idx", dimension=4, metric="cosine")
    upsert(pinecone_server, "idx", "ns", dense_records(300, 4))
    pinecone_server.repeat_list_token = True

    code = target.cli("pinecone", "idx", "--api-key", KEY, "--quiet")

    assert code == ExitCode.SOURCE
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(
        "vec2pg: error: the source sent namespace 'ns' back to a page it had already read"
    )
    assert "reading stopped before any page was written twice" in err
    rows, distinct = count_rows(target, "idx")
    assert rows == distinct <= 300

    pinecone_server.repeat_list_token = False
    assert target.cli("pinecone", "idx", "--api-key", KEY, "--quiet") == 0
    assert count_rows(target, "idx") == (300, 300)


def test_a_qdrant_offset_that_comes_back_stops_the_run_and_the_next_run_recovers(
    target, capsys
) -> None:
    local = QdrantClient(":memory:")
    seed_unnamed(local, "docs", 300)
    with QdrantServer(local) as server:
        server.repeat_next_offset = True
        args = ["qdrant", "docs", "--url", server.url, "--page-size", "50", "--quiet"]

        code = target.cli(*args)

        assert code == ExitCode.SOURCE
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith(
            "vec2pg: error: the source sent the collection back to a page it had already read"
        )
        rows, distinct = count_rows(target, "docs")
        assert rows == distinct <= 300

        server.repeat_next_offset = False
        assert target.cli(*args) == 0
    assert count_rows(target, "docs") == (300, 300)


class EndlessSource(FakeSource):
    """Each page has a new cursor, but the pages repeat the same records (no cursor comes
    back): the run stops once it has read far more than the namespace holds."""

    endless = True

    def page(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        if not self.endless:
            return super().page(namespace, partition, cursor)
        step = int(cursor or 0)
        page = super().page(namespace, partition, (step % 3) * 10)
        return Page(load=page.load, next_cursor=step + 1, size=page.size)


def test_reading_far_past_the_count_stops_and_the_next_run_keeps_each_record_once(target) -> None:
    source = EndlessSource({"a": 30}, page_size=10)
    options = Options(concurrency=1, retry=RetryPolicy(initial=0.001))

    with PostgresSink(target.dsn, schema=target.schema, commit_rows=10) as sink:
        with pytest.raises(SourceError) as caught:
            migrate(source, sink, options)
    assert str(caught.value).startswith(
        "1,070 records of namespace 'a' have been read, far more than the 30 it held when the "
        "run started: its pages seem to repeat"
    )

    source.endless = False
    with PostgresSink(target.dsn, schema=target.schema, commit_rows=10) as sink:
        summary = migrate(source, sink, options)

    assert summary.resumed and summary.exit_code == ExitCode.OK
    assert target.query(f'SELECT count(*), count(DISTINCT id) FROM "{target.schema}".things') == [
        (30, 30)
    ]


# -- 2. SIGTERM (and Ctrl-C) ----------------------------------------------------------------


def progress(target) -> int:
    try:
        ((done,),) = target.query(
            f'SELECT coalesce(sum(records), 0) FROM "{target.schema}"._vec2pg_progress'
        )
    except psycopg.Error:
        return 0
    return int(done)


@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [(signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGINT, 130, "interrupted")],
    ids=["SIGTERM", "SIGINT"],
)
def test_a_signal_stops_the_run_saying_what_is_committed_and_the_same_command_resumes(
    pinecone_server, target, signum, code, said
) -> None:
    records = 30_000
    pinecone_server.create_index("idx", dimension=32, metric="cosine")
    rng = np.random.default_rng(1)
    pinecone_server.seed(
        "idx", "ns", rng.standard_normal((records, 32)), ids=[f"{i:06x}" for i in range(records)]
    )
    pinecone_server.latency = 0.01
    command = [
        sys.executable,
        "-m",
        "vec2pg",
        "pinecone",
        "idx",
        "--api-key",
        KEY,
        "--dsn",
        target.dsn,
        "--schema",
        target.schema,
        "--commit-rows",
        "1000",
        "--processes",
        "2",
    ]
    run = subprocess.Popen(
        [*command, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while progress(target) < 2_000 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    run.send_signal(signum)
    out, err = run.communicate(timeout=60)

    assert run.returncode == code, err
    error = json.loads(out)
    assert error["exit_code"] == code
    assert error["error"].startswith(f"{said}: ")
    assert error["error"].endswith(
        f'records read by this run are committed to "{target.schema}"."idx"; '
        "the same command resumes from there"
    )
    assert err.strip().splitlines()[-1] == f"vec2pg: error: {error['error']}"
    assert "leaked semaphore" not in err and "Traceback" not in err
    for _ in range(100):  # its decoding processes end with it
        try:
            os.killpg(run.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("processes of the stopped run are left")

    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert re.search(
        r" \(resuming: [0-9,]+ are in the table from the interrupted run\)$", again.stderr, re.M
    )
    assert f"(resumed an interrupted run: {records:,} records in all, " in again.stdout
    assert count_rows(target, "idx") == (records, records)


# -- 3. the reconnect budget is per outage ---------------------------------------------------


def test_six_lost_connections_with_commits_between_them_do_not_end_the_run(target) -> None:
    """Failovers or a pooler recycling connections: each outage gets the whole budget."""
    source = FakeSource({"a": 300}, page_size=10, load_delay=0.02)
    kills: list[int] = []

    def kill_after_each_commit() -> None:
        deadline = time.monotonic() + 60
        while len(kills) < 6 and time.monotonic() < deadline:
            done = progress(target)
            if done >= 30 * (len(kills) + 1):
                ((killed,),) = target.query(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'vec2pg' AND pid <> pg_backend_pid()"
                )
                if killed:  # not between two of vec2pg's connections
                    kills.append(done)
            time.sleep(0.005)

    killer = threading.Thread(target=kill_after_each_commit)
    killer.start()
    with PostgresSink(target.dsn, schema=target.schema, commit_rows=10) as sink:
        summary = migrate(source, sink, Options(concurrency=1, retry=RetryPolicy(initial=0.001)))
    killer.join()

    assert len(kills) == 6
    assert summary.reconnects == 6  # more than the 5 in a row it may have
    assert count_rows(target, "things") == (300, 300)


def test_an_outage_without_a_commit_between_losses_spends_the_budget(target) -> None:
    from vec2pg.errors import TargetUnavailable
    from vec2pg.pipeline import NoEvents

    class Reconnects(NoEvents):
        def __init__(self) -> None:
            self.seen = 0

        def retrying(self, message: str, attempt: int, wait: float) -> None:
            self.seen += message.endswith("; reconnecting")

    source = FakeSource({"a": 100}, page_size=10, load_delay=0.05)
    stop = threading.Event()

    def kill_every_connection() -> None:
        while not stop.is_set():
            target.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'vec2pg' AND pid <> pg_backend_pid()"
            )
            time.sleep(0.002)

    events = Reconnects()
    options = Options(concurrency=1, retry=RetryPolicy(initial=0.001), reconnects=2)
    killer = threading.Thread(target=kill_every_connection)
    with PostgresSink(target.dsn, schema=target.schema, commit_rows=1000) as sink:
        killer.start()
        try:
            with pytest.raises(TargetUnavailable):
                migrate(source, sink, options, events)
        finally:
            stop.set()
            killer.join()

    assert events.seen == 2  # both reconnects spent, with no commit between the losses


# -- 4. lock waits ---------------------------------------------------------------------------


@pytest.fixture
def migrated_docs(tmp_path, target) -> list[str]:
    """A Qdrant collection migrated once; the arguments that resync it."""
    from qdrant_data import open_local

    client = open_local(tmp_path / "q")
    seed_unnamed(client, "docs", 30)
    client.close()
    args = [
        "qdrant",
        "docs",
        "--path",
        str(tmp_path / "q"),
        "--dsn",
        target.dsn,
        "--schema",
        target.schema,
    ]
    assert main(args + ["--quiet"]) == 0
    return args


def lock_table(target) -> psycopg.Connection[Any]:
    """Another session holding a lock on the table, in an open transaction."""
    blocker = psycopg.connect(target.dsn, application_name="someone's psql")
    blocker.execute(f'LOCK TABLE "{target.schema}".docs IN ACCESS EXCLUSIVE MODE')
    return blocker


def test_lock_timeout_gives_up_naming_who_holds_the_lock(migrated_docs, target, capsys) -> None:
    blocker = lock_table(target)
    pid = blocker.info.backend_pid
    try:
        capsys.readouterr()
        code = main([*migrated_docs, "--lock-timeout", "0.5"])
        err = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        blocker.close()

    assert code == ExitCode.LOCKED
    assert err.startswith(
        f'vec2pg: error: gave up waiting for a lock while preparing "{target.schema}"."docs" '
        "(--lock-timeout): canceling statement due to lock timeout; held by PostgreSQL pid "
        f"{pid} (someone's psql, user "
    )


def start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "vec2pg", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_line(stream: Any, wanted: str, seconds: float = 20) -> str:
    deadline = time.monotonic() + seconds
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = stream.readline()
        lines.append(line)
        if wanted in line:
            return line
    pytest.fail(f"no line with {wanted!r} in {lines}")


def test_a_run_waiting_for_a_lock_says_for_whom_and_goes_on_when_it_is_released(
    migrated_docs, target
) -> None:
    blocker = lock_table(target)
    pid = blocker.info.backend_pid
    run = start(migrated_docs)
    try:
        line = wait_for_line(run.stderr, "waiting for a lock")
    finally:
        blocker.close()
    out, err = run.communicate(timeout=30)

    assert line.split(" ", 1)[1].startswith(
        f"vec2pg: waiting for a lock that PostgreSQL pid {pid} (someone's psql, user "
    )
    assert line.rstrip().endswith(
        "holds; the run goes on once it is released (--lock-timeout gives up instead)"
    )
    assert run.returncode == 0, err


def test_a_run_killed_while_it_waits_for_a_lock_leaves_no_lock_of_its_own(
    migrated_docs, target
) -> None:
    """Its session's advisory lock would otherwise outlive it until the other session let
    go, and the next run would be refused for a run that no longer exists."""
    from vec2pg.postgres.state import lock_key

    blocker = lock_table(target)
    try:
        run = start(migrated_docs)
        wait_for_line(run.stderr, "waiting for a lock")
        run.kill()
        run.communicate()
        key = lock_key(target.schema, "docs")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and target.query(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
            "AND objid = (%s::bigint & 4294967295)::oid",
            [key],
        ) != [(0,)]:
            time.sleep(0.2)
        held = target.query(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
            "AND objid = (%s::bigint & 4294967295)::oid",
            [key],
        )
    finally:
        blocker.close()

    assert held == [(0,)]  # gone while the other session still held its lock
    assert main(migrated_docs + ["--quiet"]) == 0


# -- 5. an answer cut short with status 200 ---------------------------------------------------


@pytest.mark.parametrize("endpoint", ["fetch", "list"])
@pytest.mark.parametrize("processes", ["0", "2"])
def test_an_answer_cut_short_with_status_200_is_retried(
    pinecone_server, target, capsys, endpoint, processes
) -> None:
    pinecone_server.create_index("idx", dimension=4, metric="cosine")
    upsert(pinecone_server, "idx", "ns", dense_records(250, 4))
    pinecone_server.truncate_next(2, endpoint=endpoint)

    code = target.cli("pinecone", "idx", "--api-key", KEY, "--processes", processes, "--json")

    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert (summary["written"], summary["retries"]) == (250, 2)
    assert count_rows(target, "idx") == (250, 250)


def test_a_list_answer_that_never_parses_is_not_called_pod_based(
    pinecone_server, target, capsys
) -> None:
    pinecone_server.create_index("idx", dimension=4, metric="cosine")
    upsert(pinecone_server, "idx", "ns", dense_records(10, 4))
    pinecone_server.truncate_next(100, endpoint="list")

    code = target.cli("pinecone", "idx", "--api-key", KEY, "--retries", "3")

    assert code == ExitCode.SOURCE
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(
        "vec2pg: error: Pinecone index 'idx' sent a list answer that does not parse while "
        "listing ids of namespace 'ns' ("
    )
    assert "pod" not in err


# -- 6. metadata that JSON cannot hold in PostgreSQL ------------------------------------------


def test_metadata_python_json_reads_but_simdjson_does_not_rejects_only_its_record(
    pinecone_server, target, tmp_path, capsys
) -> None:
    pinecone_server.create_index("idx", dimension=2, metric="cosine")
    upsert(pinecone_server, "idx", "ns", dense_records(20, 2))
    pinecone_server.store_json(
        "idx", "ns", "surrogate", b'{"id":"surrogate","values":[1,2],"metadata":{"s":"\\ud800"}}'
    )
    pinecone_server.store_json(
        "idx", "ns", "huge", b'{"id":"huge","values":[2,1],"metadata":{"n":1180591620717411303424}}'
    )
    rejects = tmp_path / "rejects.jsonl"

    stopped = target.cli("pinecone", "idx", "--api-key", KEY, "--table", "stop")
    stop_err = capsys.readouterr().err.strip().splitlines()[-1]
    skipped = target.cli(
        "pinecone", "idx", "--api-key", KEY, "--on-error", "skip", "--rejects", str(rejects)
    )

    assert stopped == ExitCode.INVALID_RECORD
    assert stop_err == (
        "vec2pg: error: record 'surrogate' in namespace 'ns': metadata holds text that is not "
        "valid Unicode"
    )
    assert skipped == ExitCode.REJECTED
    lines = [json.loads(line) for line in rejects.read_text().splitlines()[1:]]
    assert [(line["id"], line["reason"]) for line in lines] == [
        ("surrogate", "metadata holds text that is not valid Unicode")
    ]
    assert count_rows(target, "idx") == (21, 21)
    assert target.query(
        f"""SELECT metadata->>'n' FROM "{target.schema}".idx WHERE id = 'huge'"""
    ) == [("1180591620717411303424",)]


# -- 7. a multivector whose sub-vectors differ in length ---------------------------------------


def ragged(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for point in points:
        if point["id"] == 13:  # seed_named's ids are i * 7919 + 13: the first point
            point["vector"]["colbert"] = [[0.5, 0.25, 0.125, 1.0], [0.5, 0.25, 0.125]]
    return points


def test_a_ragged_multivector_is_a_bad_record_not_a_crash(target, tmp_path, capsys) -> None:
    from qdrant_data import seed_named

    local = QdrantClient(":memory:")
    seed_named(local, "docs", 20, ids="int")
    rejects = tmp_path / "rejects.jsonl"
    with QdrantServer(local) as server:
        server.rewrite_points = ragged
        args = ["qdrant", "docs", "--url", server.url]

        stopped = target.cli(*args)
        stop_err = capsys.readouterr().err.strip().splitlines()[-1]
        skipped = target.cli(*args, "--on-error", "skip", "--rejects", str(rejects))

    reason = "vector 'colbert' is a multivector whose sub-vectors differ in length (3, 4 values)"
    assert stopped == ExitCode.INVALID_RECORD
    assert stop_err == f"vec2pg: error: record '13': {reason}"
    assert skipped == ExitCode.REJECTED
    (line,) = [json.loads(line) for line in rejects.read_text().splitlines()[1:]]
    assert (line["id"], line["reason"]) == ("13", reason)
    assert line["vectors"]["colbert"] == [[0.5, 0.25, 0.125, 1.0], [0.5, 0.25, 0.125]]
    assert count_rows(target, "docs") == (19, 19)

    # The same record in a rejects file, as vec2pg jsonl reads it again: rejected again.
    capsys.readouterr()
    assert target.cli("jsonl", str(rejects)) == ExitCode.INVALID_RECORD
    assert (
        capsys.readouterr().err.strip().splitlines()[-1] == f"vec2pg: error: record '13': {reason}"
    )


def test_a_rejects_file_naming_an_unknown_vector_kind_is_one_line(target, tmp_path, capsys) -> None:
    rejects = tmp_path / "rejects.jsonl"
    header = {
        "vec2pg_rejects": 1,
        "source": "qdrant",
        "collection": "docs",
        "namespaced": False,
        "fields": [{"name": "", "kind": "hologram", "dim": 2, "metric": "cosine"}],
    }
    rejects.write_text(json.dumps(header) + "\n")

    assert target.cli("jsonl", str(rejects)) == ExitCode.SOURCE
    assert capsys.readouterr().err.strip() == (
        f"vec2pg: error: {rejects}:1: the header's vectors: vector '' has the unknown kind "
        "'hologram' (vec2pg knows dense, sparse, multivector, binary)"
    )


# -- 8. parallel first runs into a new database ------------------------------------------------


def test_first_runs_started_at_once_into_a_new_database_all_succeed(pg_dsn) -> None:
    """Each creates the extension, the schema and the state tables if missing: checked,
    then created, they raced (pg_extension_name_index, pg_namespace_nspname_index)."""
    name = f"fresh_{os.getpid()}_{time.monotonic_ns() % 10**6}"
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg.conninfo.make_conninfo(pg_dsn, dbname=name)
    try:
        results: list[Any] = []

        def one(collection: str) -> None:
            source = FakeSource({collection: 30}, page_size=10)
            try:
                with PostgresSink(dsn, schema="new", table=collection) as sink:
                    results.append(migrate(source, sink, Options(concurrency=1)).written)
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                results.append(exc)

        threads = [threading.Thread(target=one, args=(f"c{i}",)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [30] * 6
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


# -- 9. an unwritable rejects file ----------------------------------------------------------


def test_an_unwritable_rejects_file_is_one_line_and_not_a_bug(target, capsys) -> None:
    from qdrant_data import seed_unnamed as seed

    local = QdrantClient(":memory:")
    seed(local, "docs", 10)

    def short_vector(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
        points[0]["vector"] = [1.0, 2.0]  # a record the sink rejects: 2 values, not 16
        return points

    with QdrantServer(local) as server:
        server.rewrite_points = short_vector
        code = target.cli(
            "qdrant", "docs", "--url", server.url, "--on-error", "skip", "--rejects", "/dev/full"
        )

    assert code == ExitCode.LOCAL
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "vec2pg: error: cannot write the rejects file /dev/full: [Errno 28] No space left on device"
    )
    assert target.query(f'SELECT count(*) FROM "{target.schema}".docs') == [(0,)]  # nothing half


# -- 10. status, in plain words, with one meaning for each exit code ---------------------------


class CtrlC(FakeSource):
    """Ctrl-C after ``pages`` pages."""

    def __init__(self, pages: int) -> None:
        super().__init__({"a": 60}, page_size=10)
        self.pages_left = pages

    def page(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        if self.pages_left == 0:
            raise KeyboardInterrupt
        self.pages_left -= 1
        return super().page(namespace, partition, cursor)


def test_status_after_an_interrupted_first_load_says_so_and_exits_8(target, capsys) -> None:
    from vec2pg.errors import Interrupted

    with PostgresSink(target.dsn, schema=target.schema, commit_rows=10) as sink:
        with pytest.raises(Interrupted) as caught:
            migrate(CtrlC(3), sink, Options(concurrency=1))
    assert str(caught.value) == (
        f'interrupted: 30 records read by this run are committed to "{target.schema}".'
        '"things"; the same command resumes from there'
    )

    code = main(["status", "things", "--dsn", target.dsn, "--schema", target.schema])

    assert code == ExitCode.DIFFERS
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f'"{target.schema}"."things" holds 30 rows'
    assert lines[1] == "  no completed vec2pg run"
    assert lines[2].startswith("  an interrupted first load, started ")
    assert lines[2].endswith(": 30 records committed; the same command resumes it")
    assert lines[3] == "  it stopped: interrupted (Ctrl-C)"
