"""Saved progress and the run log, kept in the target schema next to the tables.

``_vec2pg_runs`` has a row per run (mode, fingerprint, status, summary). While a run is
unfinished, ``_vec2pg_progress`` holds one row per chain (namespace x partition) with the
cursor to resume from; the sink writes it in the same transaction as the rows it covers,
so a run killed at any moment resumes exactly where its last commit left it. With
``--prune``, ``_vec2pg_seen`` collects the keys the scan has seen, also per transaction.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import sql

from vec2pg.postgres import catalog
from vec2pg.records import Cursor

if TYPE_CHECKING:
    from psycopg import Connection

RUNS = "_vec2pg_runs"
PROGRESS = "_vec2pg_progress"
SEEN = "_vec2pg_seen"

#: A chain's cursor once the chain is read to its end.
DONE: dict[str, bool] = {"done": True}


@dataclass(frozen=True, slots=True)
class Run:
    id: int
    mode: str
    fingerprint: str
    described: dict[str, Any]
    status: str
    started: Any
    finished: Any
    summary: dict[str, Any] | None


def fingerprint(described: dict[str, Any]) -> str:
    """A short hash of what makes saved progress reusable (source, columns, options)."""
    text = json.dumps(described, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def lock_key(schema: str, table: str) -> int:
    """The advisory lock key of a target table: a signed 64-bit hash of its name."""
    return _key(f"vec2pg:{schema}.{table}")


def _key(name: str) -> int:
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


#: The advisory lock (per database) under which a run creates what a database lacks: the
#: extension, a schema, the state tables. Its name has no ".", unlike a target's.
SETUP_LOCK = _key("vec2pg:setup")


class State:
    """Reads and writes the state tables of ``schema`` for the target table ``table``."""

    def __init__(self, conn: Connection[Any], schema: str, table: str) -> None:
        self.conn = conn
        self.schema = schema
        self.table = table

    def _t(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, name)

    def create(self) -> None:
        self.conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " id bigserial PRIMARY KEY, target text NOT NULL, mode text NOT NULL,"
                " fingerprint text NOT NULL, described jsonb NOT NULL,"
                " status text NOT NULL, started timestamptz NOT NULL DEFAULT now(),"
                " finished timestamptz, summary jsonb, error text)"
            ).format(self._t(RUNS))
        )
        self.conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " target text NOT NULL, namespace text NOT NULL, partition text NOT NULL,"
                " cursor jsonb, records bigint NOT NULL DEFAULT 0,"
                " rejected bigint NOT NULL DEFAULT 0,"
                " PRIMARY KEY (target, namespace, partition))"
            ).format(self._t(PROGRESS))
        )
        self.conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " target text NOT NULL, namespace text NOT NULL, id text NOT NULL,"
                " PRIMARY KEY (target, namespace, id))"
            ).format(self._t(SEEN))
        )

    def exists(self) -> bool:
        return catalog.table_exists(self.conn, self.schema, RUNS)

    def unfinished(self) -> Run | None:
        """The run on this target that has not completed, if any."""
        return self._run("status = 'running'")

    def last_complete(self) -> Run | None:
        return self._run("status = 'complete'")

    def _run(self, condition: str) -> Run | None:
        if not self.exists():
            return None
        row = self.conn.execute(
            sql.SQL(
                "SELECT id, mode, fingerprint, described, status, started, finished, summary "
                "FROM {} WHERE target = %s AND " + condition + " ORDER BY id DESC LIMIT 1"
            ).format(self._t(RUNS)),
            [self.table],
        ).fetchone()
        return Run(*row) if row else None

    def start(self, mode: str, described: dict[str, Any]) -> int:
        """Record a new run (ending any unfinished one) and return its id."""
        self.conn.execute(
            sql.SQL(
                "UPDATE {} SET status = 'abandoned', finished = now() "
                "WHERE target = %s AND status = 'running'"
            ).format(self._t(RUNS)),
            [self.table],
        )
        self.clear()
        row = self.conn.execute(
            sql.SQL(
                "INSERT INTO {} (target, mode, fingerprint, described, status) "
                "VALUES (%s, %s, %s, %s, 'running') RETURNING id"
            ).format(self._t(RUNS)),
            [self.table, mode, fingerprint(described), json.dumps(described)],
        ).fetchone()
        assert row is not None
        return int(row[0])

    def finish(self, run_id: int, summary: dict[str, Any]) -> None:
        self.conn.execute(
            sql.SQL(
                "UPDATE {} SET status = 'complete', finished = now(), summary = %s, error = NULL "
                "WHERE id = %s"
            ).format(self._t(RUNS)),
            [json.dumps(summary), run_id],
        )
        self.clear()

    def failed(self, run_id: int, error: str) -> None:
        """Note why the run stopped; it stays resumable."""
        self.conn.execute(
            sql.SQL("UPDATE {} SET error = %s WHERE id = %s").format(self._t(RUNS)),
            [error, run_id],
        )

    def clear(self) -> None:
        for name in (PROGRESS, SEEN):
            self.conn.execute(
                sql.SQL("DELETE FROM {} WHERE target = %s").format(self._t(name)), [self.table]
            )

    def chains(self) -> dict[tuple[str, str], Cursor | dict[str, bool]]:
        """Every chain of the unfinished run and where it stands."""
        rows = self.conn.execute(
            sql.SQL("SELECT namespace, partition, cursor FROM {} WHERE target = %s").format(
                self._t(PROGRESS)
            ),
            [self.table],
        ).fetchall()
        return {(ns, part): cursor for ns, part, cursor in rows}

    def save(self, cursors: dict[tuple[str, str], Cursor | dict[str, bool]]) -> None:
        """Record where chains stand (part of the caller's transaction)."""
        self.save_records(cursors, {}, {})

    def save_records(
        self,
        cursors: dict[tuple[str, str], Cursor | dict[str, bool]],
        records: dict[tuple[str, str], int],
        rejected: dict[tuple[str, str], int],
    ) -> None:
        """Record where chains stand, and how many more records each wrote and rejected."""
        if not cursors:
            return
        with self.conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {} AS p (target, namespace, partition, cursor, records, rejected) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (target, namespace, partition) "
                    "DO UPDATE SET cursor = EXCLUDED.cursor,"
                    " records = p.records + EXCLUDED.records,"
                    " rejected = p.rejected + EXCLUDED.rejected"
                ).format(self._t(PROGRESS)),
                [
                    (
                        self.table,
                        ns,
                        part,
                        json.dumps(cursor),
                        records.get((ns, part), 0),
                        rejected.get((ns, part), 0),
                    )
                    for (ns, part), cursor in cursors.items()
                ],
            )

    def see(self, keys: list[tuple[str, str]]) -> None:
        """Count keys as seen by the scan (for --prune) without their rows being written."""
        with self.conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {} (target, namespace, id) VALUES (%s, %s, %s) "
                    "ON CONFLICT DO NOTHING"
                ).format(self._t(SEEN)),
                [(self.table, ns, rid) for ns, rid in keys],
            )

    def rejected(self) -> dict[str, int]:
        """Records rejected per namespace by the unfinished run, over all its chains."""
        return {ns: n for ns, n in self._per_namespace("rejected").items() if n}

    def records(self) -> dict[str, int]:
        """Records read per namespace by the unfinished run, over all its chains."""
        return self._per_namespace("records")

    def _per_namespace(self, column: str) -> dict[str, int]:
        rows = self.conn.execute(
            sql.SQL("SELECT namespace, sum({}) FROM {} WHERE target = %s GROUP BY 1").format(
                sql.Identifier(column), self._t(PROGRESS)
            ),
            [self.table],
        ).fetchall()
        return {ns: int(n or 0) for ns, n in rows}


def status(conn: Connection[Any], schema: str, table: str) -> dict[str, Any]:
    """What is known of a target: its rows, the last completed run, and saved progress."""
    state = State(conn, schema, table)
    rows = None
    if catalog.table_exists(conn, schema, table):
        rows = catalog.row_count(conn, schema, table)
    result: dict[str, Any] = {
        "table": catalog.display(schema, table),
        "rows": rows,
        "last_complete": None,
        "unfinished": None,
    }
    last = state.last_complete()
    if last is not None:
        result["last_complete"] = {
            "run": last.id,
            "mode": last.mode,
            "started": last.started.isoformat(),
            "finished": last.finished.isoformat() if last.finished else None,
            "summary": last.summary,
        }
    unfinished = state.unfinished()
    if unfinished is not None:
        chains = state.chains()
        error = conn.execute(
            sql.SQL("SELECT error FROM {} WHERE id = %s").format(sql.Identifier(schema, RUNS)),
            [unfinished.id],
        ).fetchone()
        result["unfinished"] = {
            "run": unfinished.id,
            "mode": unfinished.mode,
            "started": unfinished.started.isoformat(),
            "source": unfinished.described.get("source"),
            "collection": unfinished.described.get("collection"),
            "records": sum(state.records().values()),
            "chains": {"total": len(chains), "done": sum(c == DONE for c in chains.values())},
            "error": error[0] if error else None,
        }
    return result
