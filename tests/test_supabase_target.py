"""Supabase as the target: its transaction pooler is refused before anything is written."""

from __future__ import annotations

import re
import socket
import struct
import threading
from typing import Any

import numpy as np
import pytest

from vec2pg.cli import main
from vec2pg.errors import ExitCode
from vec2pg.pipeline import NoEvents

ADVICE = (
    "vec2pg needs a session of its own (an advisory lock, a temporary table, COPY across "
    "statements), which a transaction pooler does not keep: connect directly (Supabase: "
    "db.<project-ref>.supabase.co, port 5432) or through the session pooler (port 5432 of "
    "the pooler's host)"
)


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["run", "dry run"])
def test_the_transaction_pooler_port_is_refused_before_connecting(
    tmp_path, capsys, dry_run
) -> None:
    """No server answers on this host: the refusal comes before any connection attempt."""
    dsn = "postgresql://postgres.abcdefgh:s3cret-pw@aws-0-us-east-1.pooler.supabase.invalid:6543/postgres"

    code = main(["qdrant", "docs", "--path", str(tmp_path), "--dsn", dsn, *dry_run])

    assert code == ExitCode.USAGE
    err = capsys.readouterr().err.strip()
    assert "s3cret-pw" not in err
    assert err == (
        "vec2pg: error: postgresql://postgres.abcdefgh:***@aws-0-us-east-1.pooler.supabase.invalid"
        f":6543/postgres is a transaction pooler (port 6543): {ADVICE}"
    )


def pgbouncer_refusing_startup_options() -> tuple[int, threading.Thread]:
    """A server that answers a startup packet as PgBouncer does when it is sent options it
    does not pass on (ignore_startup_parameters without them)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                (length,) = struct.unpack(">i", conn.recv(4))
                conn.recv(length - 4)  # the startup packet
                fields = b"SFATAL\x00C08P01\x00Munsupported startup parameter: options\x00\x00"
                conn.sendall(b"E" + struct.pack(">i", 4 + len(fields)) + fields)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


def test_a_pgbouncer_that_says_it_is_one_is_refused_with_the_same_advice(tmp_path, capsys) -> None:
    port, server = pgbouncer_refusing_startup_options()
    dsn = f"postgresql://app:pw@127.0.0.1:{port}/db?sslmode=disable"

    code = main(["qdrant", "docs", "--path", str(tmp_path), "--dsn", dsn])
    server.join(timeout=5)

    assert code == ExitCode.USAGE
    assert capsys.readouterr().err.strip() == (
        f"vec2pg: error: postgresql://app:***@127.0.0.1:{port}/db?sslmode=disable is a connection "
        'pooler (PgBouncer: connection failed: connection to server at "127.0.0.1", port '
        f"{port} failed: FATAL:  unsupported startup parameter: options): {ADVICE}"
    )


# -- how much disk a run will take ---------------------------------------------------------


class DenseSource:
    """``count`` records of one ``dim``-dimensional vector and some metadata."""

    def __init__(self, count: int, dim: int) -> None:
        self.count, self.dim = count, dim

    def describe(self) -> Any:
        from vec2pg.records import Metric, Namespace, SourceInfo, VectorField, VectorKind

        field = VectorField("", VectorKind.DENSE, self.dim, Metric.COSINE)
        return SourceInfo("dense", "docs", "memory", (field,), (Namespace("", self.count),), False)

    def partitions(self, namespace: str, count: Any, want: int, call: Any) -> tuple[str, ...]:
        return ("",)

    def page(self, namespace: str, partition: str, cursor: Any) -> Any:
        from vec2pg.records import Record
        from vec2pg.sources.base import Page

        start = int(cursor or 0)
        stop = min(start + 500, self.count)
        rng = np.random.default_rng(start)
        matrix = rng.standard_normal((stop - start, self.dim), dtype=np.float32)
        records = [
            Record(f"doc-{i:07d}", {"": matrix[i - start]}, {"title": f"document {i}", "n": i})
            for i in range(start, stop)
        ]
        return Page(lambda: records, stop if stop < self.count else None, len(records))

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("dim", "rows"),
    # Enough rows that a load's bulk extension of the table (up to 64 empty pages at its
    # end, PostgreSQL 16 and later) is not what is measured.
    [(8, 20_000), (768, 3_000)],
    ids=["inline vectors", "toasted vectors"],
)
def test_the_dry_run_estimates_the_size_of_table_key_and_index(target, dim, rows) -> None:
    from vec2pg.pipeline import migrate, plan
    from vec2pg.postgres import PostgresSink

    index = "hnsw" if dim > 8 else None  # an HNSW build of many rows would be slow here
    with PostgresSink(target.dsn, schema=target.schema, index=index) as sink:
        size = plan(DenseSource(rows, dim), sink)["size"]
        migrate(DenseSource(rows, dim), sink)
    regclass = f'"{target.schema}"."docs"'
    ((heap, indexes),) = target.query(
        "SELECT pg_total_relation_size(%s::regclass) - pg_indexes_size(%s::regclass), "
        "pg_indexes_size(%s::regclass)",
        [regclass] * 3,
    )

    assert size["rows"] == rows
    assert 0.85 < size["table_bytes"] / heap < 1.15
    assert 0.85 < (size["key_bytes"] + size["index_bytes"]) / indexes < 1.15


def test_a_run_that_will_not_fit_says_so_before_it_loads(target, monkeypatch) -> None:
    from vec2pg.pipeline import migrate
    from vec2pg.postgres import PostgresSink

    notes: list[str] = []

    class Notes(NoEvents):
        def note(self, message: str) -> None:
            notes.append(message)

        def started(self, *args: Any, **kwargs: Any) -> None:
            notes.append("started")

    monkeypatch.setattr("vec2pg.postgres.sink.free_bytes", lambda conn: 1_000_000)
    with PostgresSink(target.dsn, schema=target.schema) as sink:
        migrate(DenseSource(10_000, 4), sink, events=Notes())

    assert re.fullmatch(
        r"the table will take about [0-9.]+ MB \([0-9.]+ MB of rows, [0-9.]+ kB of key\)", notes[0]
    )
    assert notes[1] == (
        "warning: only 1.0 MB is free where PostgreSQL keeps its data: grow the disk first (on "
        "Supabase: Project Settings, Compute and Disk), or the load may stop when it is full"
    )
    assert notes[2] == "started"  # said before loading
