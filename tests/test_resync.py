"""Running it every night: resync, --prune, --replace, the lock, reconnects, kill -9."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from pinecone_server import PineconeServer
from psycopg import sql
from qdrant_client import QdrantClient
from qdrant_client import models as m
from qdrant_data import (
    assert_same_rows,
    open_local,
    payload,
    seed_unnamed,
    source_rows,
    stored_rows,
)
from qdrant_server import QdrantServer
from test_pinecone import KEY, dense_records, expected_rows, upsert

from vec2pg.cli import main
from vec2pg.errors import ExitCode

LAST_ERROR: list[str] = []


def run_json(target, capsys, *args: str) -> tuple[int, dict[str, Any]]:
    """Run the CLI with --json; the summary, and stderr's last line in LAST_ERROR[0]."""
    code = target.cli(*args, "--json")
    captured = capsys.readouterr()
    LAST_ERROR[:] = captured.err.strip().splitlines()[-1:] or [""]
    out = captured.out.strip()
    return code, json.loads(out.splitlines()[-1]) if out else {}


def xmins(target, table: str) -> dict[str, str]:
    return dict(target.query(sql.SQL("SELECT id, xmin::text FROM {}").format(target.table(table))))


def change_qdrant(client: QdrantClient, name: str) -> dict[str, list[Any]]:
    """20 new points, 10 new vectors, 5 new payloads, 7 deleted; returns the ids touched."""
    points, _ = client.scroll(name, limit=1000, with_vectors=True)
    ids = [p.id for p in points]
    rng = np.random.default_rng(9)
    dim = len(points[0].vector)
    client.upsert(
        name,
        [
            m.PointStruct(
                id=10_000_000 + i, vector=rng.standard_normal(dim).tolist(), payload=payload(i)
            )
            for i in range(20)
        ],
    )
    vectors = ids[:10]
    client.upsert(
        name,
        [
            m.PointStruct(id=i, vector=rng.standard_normal(dim).tolist(), payload=p.payload)
            for i, p in zip(vectors, points[:10], strict=True)
        ],
    )
    payloads = ids[10:15]
    for i in payloads:
        client.set_payload(name, payload={"title": "changed ✓"}, points=[i])
    deleted = ids[15:22]
    client.delete(name, points_selector=m.PointIdsList(points=deleted))
    return {"vectors": vectors, "payloads": payloads, "deleted": deleted}


def test_qdrant_resync_converges_and_leaves_unchanged_rows_alone(tmp_path, target, capsys) -> None:
    storage = tmp_path / "q"
    client = open_local(storage)
    seed_unnamed(client, "docs", 300, ids="mixed")
    client.close()
    code, first = run_json(
        target, capsys, "qdrant", "docs", "--path", str(storage), "--page-size", "64"
    )
    assert (code, first["mode"], first["inserted"]) == (0, "load", 300)
    before = xmins(target, "docs")

    client = open_local(storage)
    touched = change_qdrant(client, "docs")
    client.close()
    code, second = run_json(
        target, capsys, "qdrant", "docs", "--path", str(storage), "--page-size", "64"
    )

    assert code == ExitCode.DIFFERS
    assert LAST_ERROR[0] == (
        f'vec2pg: "{target.schema}"."docs" holds 7 rows the source no longer has: run with --prune to delete them'
    )
    counts = {
        k: second[k]
        for k in ("mode", "read", "inserted", "updated", "unchanged", "deleted", "stale")
    }
    assert counts == {
        "mode": "merge",
        "read": 313,
        "inserted": 20,
        "updated": 15,
        "unchanged": 278,
        "deleted": 0,
        "stale": 7,
    }
    after = xmins(target, "docs")
    changed = {str(i) for i in touched["vectors"] + touched["payloads"]}
    untouched = set(before) - changed - {str(i) for i in touched["deleted"]}
    assert {i: after[i] for i in untouched} == {i: before[i] for i in untouched}  # not rewritten
    assert all(after[i] != before[i] for i in changed)

    code, third = run_json(target, capsys, "qdrant", "docs", "--path", str(storage), "--prune")

    assert (
        code,
        third["deleted"],
        third["inserted"],
        third["updated"],
        third["unchanged"],
        third["matches_source"],
    ) == (0, 7, 0, 0, 313, True)
    assert_same_rows(target.rows("docs"), stored_rows(storage, "docs"))


@pytest.fixture
def pinecone(pinecone_server: PineconeServer) -> PineconeServer:
    return pinecone_server


def test_pinecone_resync_per_namespace_and_prune_stays_in_the_chosen_namespaces(
    pinecone, target, capsys
) -> None:
    pinecone.create_index("docs", dimension=8, metric="dotproduct")
    upsert(pinecone, "docs", "a", dense_records(150, 8, sparse=True))
    upsert(pinecone, "docs", "b", dense_records(40, 8, seed=4))
    assert target.cli("pinecone", "docs", "--api-key", KEY, "--quiet") == 0
    capsys.readouterr()
    changed = dense_records(5, 8, sparse=True, seed=7)  # new values for doc-00000..4 in "a"
    upsert(pinecone, "docs", "a", changed + dense_records(3, 8, prefix="new-"))
    pinecone.delete("docs", "a", ["doc-00100", "doc-00101"])
    pinecone.delete("docs", "b", ["doc-00000"])

    code, summary = run_json(
        target, capsys, "pinecone", "docs", "--api-key", KEY, "-n", "a", "--prune"
    )

    assert code == 0
    a = summary["namespaces"]["a"]
    assert {k: a[k] for k in ("inserted", "updated", "unchanged", "deleted")} == {
        "inserted": 3,
        "updated": 5,
        "unchanged": 143,
        "deleted": 2,
    }
    assert list(summary["namespaces"]) == ["a"]
    # "b" was not scanned, so its deleted record stays until a run that reads "b".
    rows = target.rows("docs")
    assert ("b", "doc-00000") in rows
    del rows[("b", "doc-00000")]
    assert rows.keys() == expected_rows(pinecone, "docs").keys()

    code, summary = run_json(target, capsys, "pinecone", "docs", "--api-key", KEY, "--prune")
    assert (code, summary["deleted"], summary["matches_source"]) == (0, 1, True)


def test_replace_swaps_in_a_new_table_while_readers_read(target, capsys) -> None:
    local = QdrantClient(":memory:")
    seed_unnamed(local, "docs", 300)
    with QdrantServer(local) as server:
        assert target.cli("qdrant", "docs", "--url", server.url, "--quiet") == 0
        local.delete(
            "docs",
            points_selector=m.PointIdsList(
                points=[p.id for p in local.scroll("docs", limit=50)[0]]
            ),
        )
        server.latency = 0.02
        seen: list[Any] = []
        stop = threading.Event()

        def read() -> None:
            with target.connect() as conn:
                while not stop.is_set():
                    try:
                        seen.append(
                            conn.execute(
                                sql.SQL("SELECT count(*) FROM {}").format(target.table("docs"))
                            ).fetchone()[0]
                        )
                    except psycopg.Error as exc:
                        seen.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        code, summary = run_json(
            target, capsys, "qdrant", "docs", "--url", server.url, "--replace", "--page-size", "25"
        )
        time.sleep(0.2)
        stop.set()
        reader.join()

    assert (code, summary["mode"], summary["written"]) == (0, "replace", 250)
    assert set(seen) <= {300, 250}, [s for s in seen if s not in (300, 250)][:3]
    assert seen[0] == 300 and seen[-1] == 250
    assert_same_rows(target.rows("docs"), source_rows(local, "docs"))
    leftovers = target.query("SELECT relname FROM pg_class WHERE relname LIKE '_vec2pg_new_%%'")
    assert leftovers == []
    local.close()


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def progress_rows(target) -> int:
    try:
        rows = target.query(
            sql.SQL("SELECT coalesce(sum(records), 0) FROM {}").format(
                target.table("_vec2pg_progress")
            )
        )
    except psycopg.errors.UndefinedTable:
        return 0
    return int(rows[0][0])


class Background:
    """vec2pg's main() in a thread of this process (for runs that must overlap)."""

    def __init__(self, *args: str) -> None:
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, args=(args,))
        self.thread.start()

    def _run(self, args: tuple[str, ...]) -> None:
        self.code = main(list(args))

    def join(self) -> int | None:
        self.thread.join(60)
        return self.code


def test_a_second_run_on_the_same_target_exits_at_once(target, capsys) -> None:
    local = QdrantClient(":memory:")
    seed_unnamed(local, "docs", 200)
    with QdrantServer(local) as server:
        server.latency = 0.05
        first = Background(
            "qdrant",
            "docs",
            "--url",
            server.url,
            "--dsn",
            target.dsn,
            "--schema",
            target.schema,
            "--page-size",
            "20",
            "--quiet",
        )
        wait_for(lambda: server.count("/points/scroll") >= 2)

        started = time.monotonic()
        code = target.cli("qdrant", "docs", "--url", server.url)
        elapsed = time.monotonic() - started

        assert code == ExitCode.LOCKED
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith("vec2pg: error: another vec2pg run (PostgreSQL pid ")
        assert line.endswith(
            f'is writing to "{target.schema}"."docs"; this run stops without writing (one run per target at a time)'
        )
        assert elapsed < 10  # it did not wait for the first run
        assert first.join() == 0
    assert_same_rows(target.rows("docs"), source_rows(local, "docs"))
    local.close()


def test_a_connection_killed_by_the_server_is_reconnected_and_the_run_resumes(
    target, capsys
) -> None:
    local = QdrantClient(":memory:")
    seed_unnamed(local, "docs", 400, ids="mixed")
    with QdrantServer(local) as server:
        server.latency = 0.03
        run = Background(
            "qdrant",
            "docs",
            "--url",
            server.url,
            "--dsn",
            target.dsn,
            "--schema",
            target.schema,
            "--page-size",
            "20",
            "--commit-rows",
            "40",
            "--json",
        )
        wait_for(lambda: progress_rows(target) >= 80)

        killed = target.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'vec2pg' AND pid <> pg_backend_pid()"
        )

        assert killed == [(True,)]
        assert run.join() == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["reconnects"] == 1
    assert summary["read"] == 400  # committed reads: what was rolled back was read again
    assert_same_rows(target.rows("docs"), source_rows(local, "docs"))
    local.close()


def vec2pg_process(target, server: QdrantServer, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "VEC2PG_RETRY_INITIAL_SECONDS": "0.01"}
    command = [
        sys.executable,
        "-m",
        "vec2pg",
        "qdrant",
        "docs",
        "--url",
        server.url,
        "--dsn",
        target.dsn,
        "--schema",
        target.schema,
        "--json",
        *args,
    ]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def no_vec2pg_backend(target) -> bool:
    rows = target.query("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'vec2pg'")
    return rows == [(0,)]


@pytest.mark.parametrize("point", ["mid-copy", "between-commits", "mid-resync", "during-prune"])
def test_kill_9_at_any_point_then_rerun_converges(target, point) -> None:
    local = QdrantClient(":memory:")
    seed_unnamed(local, "docs", 400, ids="mixed")
    with QdrantServer(local) as server:
        prune: tuple[str, ...] = ()
        if point in ("mid-resync", "during-prune"):
            first = vec2pg_process(target, server)
            out, err = first.communicate(timeout=60)
            assert first.returncode == 0, err
            local.delete(
                "docs",
                points_selector=m.PointIdsList(
                    points=[p.id for p in local.scroll("docs", limit=30)[0]]
                ),
            )
            local.upsert(
                "docs",
                [
                    m.PointStruct(id=99_000_000 + i, vector=[0.5] * 16, payload={"new": i})
                    for i in range(25)
                ],
            )
            prune = ("--prune",)
        server.latency = 0.05 if point == "during-prune" else 0.02
        holder = psycopg.connect(target.dsn) if point == "during-prune" else None
        commit_rows = "100000" if point == "mid-copy" else "40"
        proc = vec2pg_process(
            target, server, "--page-size", "20", "--commit-rows", commit_rows, *prune
        )
        if point == "during-prune":
            assert holder is not None
            # Hold the run's log row: the run scans, prunes, then blocks closing the run.
            wait_for(
                lambda: (
                    target.query(
                        sql.SQL("SELECT count(*) FROM {} WHERE status = 'running'").format(
                            target.table("_vec2pg_runs")
                        )
                    )[0][0]
                    == 1
                )
            )
            holder.execute(
                sql.SQL("SELECT * FROM {} WHERE status = 'running' FOR UPDATE").format(
                    target.table("_vec2pg_runs")
                )
            )
            wait_for(
                lambda: (
                    target.query(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'vec2pg' AND wait_event_type = 'Lock'"
                    )
                    == [(1,)]
                )
            )
        elif point == "mid-copy":
            wait_for(lambda: server.count("/points/scroll") >= 8)
        else:
            wait_for(lambda: progress_rows(target) >= 80)
        proc.kill()
        proc.communicate()
        if holder is not None:
            holder.rollback()
            holder.close()
        wait_for(lambda: no_vec2pg_backend(target))
        if point == "mid-copy":
            assert target.query(
                sql.SQL("SELECT count(*) FROM {}").format(target.table("docs"))
            ) == [(0,)]

        server.latency = 0
        rerun = vec2pg_process(target, server, "--page-size", "20", *prune)
        out, err = rerun.communicate(timeout=120)

    assert rerun.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["resumed"] is True
    assert summary["matches_source"] is True
    assert_same_rows(target.rows("docs"), source_rows(local, "docs"))
    assert target.query(
        sql.SQL("SELECT count(*) FROM {}").format(target.table("_vec2pg_progress"))
    ) == [(0,)]
    local.close()


def test_saved_progress_from_other_options_is_reported_not_used(tmp_path, target, capsys) -> None:
    local = QdrantClient(":memory:")
    seed_unnamed(local, "docs", 200)
    with QdrantServer(local) as server:
        server.latency = 0.03
        proc = vec2pg_process(target, server, "--page-size", "20", "--commit-rows", "40")
        wait_for(lambda: progress_rows(target) >= 40)
        proc.kill()
        proc.communicate()
        wait_for(lambda: no_vec2pg_backend(target))
        server.latency = 0

        code = target.cli("qdrant", "docs", "--url", server.url, "--prune")

        assert code == ExitCode.TARGET_STATE
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith(
            f'vec2pg: error: "{target.schema}"."docs" has saved progress of an unfinished run (started '
        )
        assert line.endswith(
            "prune was False, now True; run it again as it was to resume, or add --restart to discard that progress"
        )

        code, summary = run_json(
            target, capsys, "qdrant", "docs", "--url", server.url, "--prune", "--restart"
        )
        assert (code, summary["resumed"], summary["mode"]) == (0, False, "load")
    assert_same_rows(target.rows("docs"), source_rows(local, "docs"))
    local.close()


def test_status_shows_saved_progress_and_the_last_completed_run(
    tmp_path: Path, target, capsys
) -> None:
    local = QdrantClient(":memory:")
    seed_unnamed(local, "docs", 120)
    with QdrantServer(local) as server:
        assert target.cli("qdrant", "docs", "--url", server.url, "--quiet") == 0
        server.latency = 0.03
        proc = vec2pg_process(target, server, "--page-size", "20", "--commit-rows", "40")
        wait_for(lambda: progress_rows(target) >= 40)
        proc.kill()
        proc.communicate()
    capsys.readouterr()

    code = main(["status", "docs", "--dsn", target.dsn, "--schema", target.schema, "--json"])

    assert code == ExitCode.DIFFERS  # an unfinished run waits to be resumed

    status = json.loads(capsys.readouterr().out)
    assert status["table"] == f'"{target.schema}"."docs"'
    assert status["rows"] == 120
    assert status["last_complete"]["mode"] == "load"
    assert status["last_complete"]["summary"]["inserted"] == 120
    unfinished = status["unfinished"]
    assert unfinished["mode"] == "merge"
    assert unfinished["records"] >= 40
    assert unfinished["chains"] == {"total": 1, "done": 0}
    assert (
        main(["status", "docs", "--dsn", target.dsn, "--schema", target.schema]) == ExitCode.DIFFERS
    )
    text = capsys.readouterr().out
    assert f'"{target.schema}"."docs" holds 120 rows' in text
    assert "the same command resumes it" in text
    assert (
        main(["status", "nope", "--dsn", target.dsn, "--schema", target.schema])
        == ExitCode.TARGET_STATE
    )
    assert capsys.readouterr().out.splitlines()[:2] == [
        f'"{target.schema}"."nope" does not exist',
        "  no completed vec2pg run",
    ]
    local.close()
