"""The shared PostgreSQL sink: one table per collection, kept in step with its source.

It knows nothing of any source: it takes a :class:`~vec2pg.records.SourceInfo` and pages of
rows its encoder made (:meth:`PostgresSink.encoder`). A run is one of three modes:

* ``load``: the table is new or empty. Rows go straight in through binary COPY, and the
  primary key is added after the load (pgvector's loading advice: load first, index after).
* ``merge``: the table holds rows (a resync). Each transaction's rows are copied into a
  temporary staging table and merged with ``INSERT ... ON CONFLICT DO UPDATE ... WHERE ...
  IS DISTINCT FROM``, so new rows are inserted, changed ones updated and unchanged ones
  not rewritten at all. With ``prune``, rows the complete scan did not see are deleted at
  the end, in the transaction that closes the run.
* ``replace``: rows load into a new table which then takes the old one's place in one
  transaction: readers see the old table or the new one, never a half.

Every transaction commits its rows together with the cursors of the chains they came
from (:mod:`vec2pg.postgres.state`), so a run killed at any moment resumes where its last
commit left it. A PostgreSQL advisory lock per target keeps a second run out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from vec2pg.errors import (
    ConfigError,
    InvalidRecord,
    LockHeld,
    TargetError,
    TargetStateError,
    TargetUnavailable,
)
from vec2pg.postgres.encode import COPY_HEADER, COPY_TRAILER, EncodedRows, PageEncoder
from vec2pg.postgres.index import IndexMethod, build_index, check_indexable
from vec2pg.postgres.layout import TableLayout, layout_for
from vec2pg.postgres.state import DONE, State, fingerprint, lock_key, status
from vec2pg.postgres.target import mask_dsn
from vec2pg.records import Cursor, SourceInfo
from vec2pg.rejects import RejectsFile

if TYPE_CHECKING:
    from psycopg import Connection

#: Rows per transaction. Large enough that commits cost nothing next to the data (10,000
#: rows of 1024-dim float32 are ~40 MB), small enough that an interrupted run loses little.
DEFAULT_COMMIT_ROWS = 10_000
#: A transaction also ends after this many seconds, so that a slow source still saves
#: its progress often.
COMMIT_SECONDS = 10.0

Chain = tuple[str, str]  # (namespace, partition)

#: Server-side keepalives (user-settable since PostgreSQL 9.x; ignored on Unix sockets).
_SESSION_OPTIONS = (
    "-c tcp_keepalives_idle=60 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=6"
    # Adding the key of a large table, a merge or a prune may take longer than a role's
    # statement_timeout allows: that would make the run fail every night, at the end.
    " -c statement_timeout=0"
)
#: SQLSTATEs of a connection that is gone (besides class 08, connection exceptions):
#: admin_shutdown (pg_terminate_backend), crash_shutdown, cannot_connect_now.
_CONNECTION_LOST = {"57P01", "57P02", "57P03"}


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """How a run treats a table that already holds rows."""

    prune: bool = False  # delete rows the source no longer has (after a complete scan)
    replace: bool = False  # load a new table and swap it in
    restart: bool = False  # ignore saved progress
    #: Write records PostgreSQL cannot take to this JSONL file and go on (None: stop).
    rejects: str | None = None
    strip_nul: bool = False  # remove NUL characters from metadata instead of refusing it


@dataclass(slots=True)
class Counts:
    """What happened to one namespace's records."""

    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: int = 0  # skipped, written to the rejects file
    altered: int = 0  # changed to fit (--strip-nul)

    @property
    def written(self) -> int:
        return self.inserted + self.updated

    def add(self, other: Counts) -> None:
        for count in dataclasses.fields(self):
            setattr(self, count.name, getattr(self, count.name) + getattr(other, count.name))


@dataclass(slots=True)
class Plan:
    """What this run does: its mode and, when resuming, where each chain stands."""

    mode: str  # "load", "merge" or "replace"
    run_id: int
    resumed: bool
    #: Every chain of the run and its cursor (None: not started; DONE: finished). Empty
    #: for a fresh run, whose chains the pipeline records with start_chains().
    chains: dict[Chain, Cursor | dict[str, bool]] = field(default_factory=dict)


class PostgresSink:
    """Write records into ``schema.table`` of the database at ``dsn``."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "vec2pg",
        table: str | None = None,
        commit_rows: int = DEFAULT_COMMIT_ROWS,
        sync: SyncOptions | None = None,
        halfvec: bool = False,
        index: IndexMethod | None = None,
    ) -> None:
        self.dsn = dsn
        self.halfvec = halfvec
        self.index = index
        self.schema = schema
        self.table = table
        self.commit_rows = commit_rows
        self.sync = sync or SyncOptions()
        self.layout: TableLayout | None = None
        self.plan: Plan | None = None
        self._conn: Connection[Any] | None = None
        self._state: State | None = None
        self._namespaces: list[str] | None = None
        self._rejects: RejectsFile | None = None
        self._complete = True

    @property
    def location(self) -> str:
        return mask_dsn(self.dsn)

    @property
    def display(self) -> str:
        """The target table as a person would type it in psql."""
        assert self.layout is not None, "begin() first"
        return self.layout.display

    # -- connection ---------------------------------------------------------------------

    def connect(self) -> None:
        self._conn = open_connection(self.dsn)

    @property
    def conn(self) -> Connection[Any]:
        if self._conn is None or self._conn.closed:
            self.connect()
        assert self._conn is not None
        return self._conn

    def close(self) -> None:
        if self._rejects is not None:
            self._rejects.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> PostgresSink:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- planning -----------------------------------------------------------------------

    def begin(self, info: SourceInfo, namespaces: list[str] | None) -> Plan:
        """Lock the target, create what is missing, and decide (or resume) the run's mode.

        ``namespaces`` is the run's restriction (None: every namespace); it bounds --prune.
        Called again after a lost connection, it resumes the same run.
        """
        layout = layout_for(info, self.schema, self.table, halfvec=self.halfvec)
        if self.index is not None:
            check_indexable(layout, self.index)  # before hours of loading, not after
        self.layout = layout
        self._namespaces = namespaces
        self._complete = info.complete
        if (self.sync.prune or self.sync.replace) and not info.complete:
            option = "--prune" if self.sync.prune else "--replace"
            raise ConfigError(
                f"{option} needs a source that holds the whole collection; {info.location} does not"
            )
        if self.sync.replace and namespaces is not None:
            # The new table would hold only these namespaces and the swap would drop the rest.
            raise ConfigError("--replace rebuilds the whole table: it does not go with --namespace")
        if self.sync.rejects is not None and self._rejects is None:
            self._rejects = RejectsFile(self.sync.rejects, info)
        described = {
            "source": info.kind,
            "collection": info.collection,
            "location": info.location,
            "columns": dict(zip(layout.column_names, layout.sql_types, strict=True)),
            "namespaces": namespaces,
            "replace": self.sync.replace,
            "prune": self.sync.prune,
        }
        with self._translate(f"preparing {layout.display}"):
            self._ensure_extension()
            self._register_types()
            conn = self.conn
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(layout.schema))
            )
            conn.commit()
            self._lock(layout)
            state = self._state = State(conn, layout.schema, layout.table)
            with conn.transaction():
                state.create()
                self.plan = self._decide(info, layout, state, described)
        # --restart discards the progress found at the start, not this run's own after a
        # reconnect.
        self.sync = dataclasses.replace(self.sync, restart=False)
        return self.plan

    def _decide(
        self, info: SourceInfo, layout: TableLayout, state: State, described: dict[str, Any]
    ) -> Plan:
        unfinished = state.unfinished()
        if unfinished is not None and not self.sync.restart:
            if unfinished.fingerprint != fingerprint(described):
                raise TargetStateError(
                    f"{layout.display} has saved progress of an unfinished run (started "
                    f"{unfinished.started:%Y-%m-%d %H:%M:%S}) with another source or options: "
                    f"{_difference(unfinished.described, described)}; run it again as it was "
                    "to resume, or add --restart to discard that progress"
                )
            if unfinished.mode == "load" or self._table_exists(self._write_table(unfinished.mode)):
                return Plan(unfinished.mode, unfinished.id, True, state.chains())
        exists = self._table_exists(layout.table)
        empty = True
        if exists and not self.sync.replace:
            self._check_columns(layout)
            restarting_load = unfinished is not None and unfinished.mode == "load"
            if restarting_load:
                # An interrupted first load never finished: start it over.
                self.conn.execute(sql.SQL("TRUNCATE {}").format(layout.qualified))
            empty = restarting_load or self._empty(layout.table)
        mode = self._mode(info, exists, empty)
        if mode == "replace":
            self._drop(self._write_table(mode))
        if mode == "replace" or not exists:
            self._create_table(layout, info, self._write_table(mode), key=mode == "merge")
        return Plan(mode, state.start(mode, described), False)

    def _mode(self, info: SourceInfo, exists: bool, empty: bool) -> str:
        """A fresh run's mode, for a target table that exists (or not) and is empty (or not).

        A partial source (a rejects file) may repeat a record: it always merges, into a
        table that has its key from the start, so that repeats collapse instead of breaking
        the key.
        """
        if self.sync.replace:
            return "replace"
        return "load" if (empty or not exists) and info.complete else "merge"

    def start_chains(self, chains: list[Chain]) -> None:
        """Record chains to read (a fresh run's, or namespaces a resumed run lacks), so that
        a resumed run reads the same ones."""
        assert self.plan is not None and self._state is not None
        with self._translate("recording the run's chains"), self.conn.transaction():
            self._state.save(dict.fromkeys(chains))
        self.plan.chains.update(dict.fromkeys(chains))

    def _write_table(self, mode: str) -> str:
        """The table a mode writes into: the target, or for replace a new one."""
        assert self.layout is not None
        if mode != "replace":
            return self.layout.table
        digest = hashlib.sha256(self.layout.table.encode()).hexdigest()[:12]
        return f"_vec2pg_new_{digest}"

    def _lock(self, layout: TableLayout) -> None:
        key = lock_key(layout.schema, layout.table)
        row = self.conn.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()
        self.conn.commit()
        if row and row[0]:
            return
        holder = self.conn.execute(
            "SELECT a.pid, a.backend_start FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.locktype = 'advisory' AND l.granted "
            "AND l.classid = ((%s::bigint >> 32) & 4294967295)::oid "
            "AND l.objid = (%s::bigint & 4294967295)::oid",
            [key, key],
        ).fetchone()
        self.conn.commit()
        who = (
            f" (PostgreSQL pid {holder[0]}, connected {holder[1]:%Y-%m-%d %H:%M:%S})"
            if holder
            else ""
        )
        raise LockHeld(
            f"another vec2pg run{who} is writing to {layout.display}; this run stops without "
            "writing (one run per target at a time)"
        )

    def _ensure_extension(self) -> None:
        conn = self.conn
        row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
        if row is None:
            try:
                with conn.transaction():
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except psycopg.errors.InsufficientPrivilege as exc:
                raise TargetError(
                    "pgvector is not enabled in this database and this role may not enable it: "
                    "ask an administrator to run CREATE EXTENSION vector"
                ) from exc
            except (psycopg.errors.UndefinedFile, psycopg.errors.FeatureNotSupported) as exc:
                raise TargetError(
                    "the pgvector extension is not installed on this PostgreSQL server: "
                    "install it (https://github.com/pgvector/pgvector#installation) "
                    "or use --embedded"
                ) from exc
        conn.commit()

    def _register_types(self) -> None:
        """pgvector's types, for multivectors (arrays of them) and for reading rows back."""
        from pgvector.psycopg import register_vector

        register_vector(self.conn)
        self.conn.commit()

    # -- tables -------------------------------------------------------------------------

    def _ident(self, table: str) -> sql.Identifier:
        assert self.layout is not None
        return sql.Identifier(self.layout.schema, table)

    def _table_exists(self, table: str) -> bool:
        row = self.conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", [self._ident(table).as_string(self.conn)]
        ).fetchone()
        return bool(row and row[0])

    def _empty(self, table: str) -> bool:
        row = self.conn.execute(
            sql.SQL("SELECT NOT EXISTS (SELECT FROM {})").format(self._ident(table))
        ).fetchone()
        return bool(row and row[0])

    def _drop(self, table: str) -> None:
        self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._ident(table)))

    def _check_columns(self, layout: TableLayout) -> None:
        columns = column_types(self.conn, layout.qualified)
        wanted = dict(zip(layout.column_names, layout.sql_types, strict=True))
        if columns != wanted:
            raise TargetStateError(
                f"table {layout.display} has columns {_columns(columns)}, but this source "
                f"needs {_columns(wanted)}: use --replace to rebuild it, or another --table"
            )

    def _create_table(
        self, layout: TableLayout, info: SourceInfo, table: str, *, key: bool
    ) -> None:
        for statement in self._table_statements(layout, info, table, key=key):
            self.conn.execute(statement)

    def _table_statements(
        self, layout: TableLayout, info: SourceInfo, table: str, *, key: bool
    ) -> list[sql.Composed]:
        """CREATE TABLE and the comments that record each vector's metric."""
        target = self._ident(table)
        columns: list[sql.Composable] = [
            sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind))
            for name, kind in zip(layout.column_names, layout.sql_types, strict=True)
        ]
        options = sql.SQL("")
        if key:
            columns.append(self._key_clause())
        else:
            # A bulk load: autovacuum could scan the table while it fills, taking CPU from
            # the load for work that is better done once, after it (PostgreSQL's advice
            # for populating a database). finish() gives the table its key and autovacuum
            # back.
            options = sql.SQL(" WITH (autovacuum_enabled = false)")
        comment = f"vec2pg: {info.kind} collection {info.collection!r} at {info.location}"
        return [
            sql.SQL("CREATE TABLE {} ({}){}").format(target, sql.SQL(", ").join(columns), options),
            sql.SQL("COMMENT ON TABLE {} IS {}").format(target, sql.Literal(comment)),
            *(
                sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
                    target, sql.Identifier(vector.name), sql.Literal(vector.comment(info.kind))
                )
                for vector in layout.vectors
            ),
        ]

    def preview(self, info: SourceInfo, namespaces: list[str] | None) -> dict[str, Any]:
        """What begin() and the run would do, found in a read-only transaction."""
        layout = self.layout = layout_for(info, self.schema, self.table, halfvec=self.halfvec)
        if self.index is not None:
            check_indexable(layout, self.index)
        with self._translate(f"looking at {layout.display}"):
            conn = self.conn
            conn.execute("SET TRANSACTION READ ONLY")
            ddl: list[sql.Composable] = []
            if (
                conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
                is None
            ):
                ddl.append(sql.SQL("CREATE EXTENSION IF NOT EXISTS vector"))
            schema = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", [layout.schema]
            ).fetchone()
            if schema is None:
                ddl.append(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(layout.schema)))
            exists = schema is not None and self._table_exists(layout.table)
            state = State(conn, layout.schema, layout.table)
            unfinished = state.unfinished() if schema is not None else None
            resume = None
            if unfinished is not None and not self.sync.restart:
                resume = {
                    "run": unfinished.id,
                    "mode": unfinished.mode,
                    "started": str(unfinished.started),
                }
            empty = True
            if exists and not self.sync.replace:
                self._check_columns(layout)
                empty = self._empty(layout.table)
            mode = self._mode(info, exists, empty)
            if resume is not None:
                mode = str(resume["mode"])
            elif mode == "replace" or not exists:
                ddl += self._table_statements(
                    layout, info, self._write_table(mode), key=mode == "merge"
                )
            rows = None
            if exists:
                counted = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(layout.qualified))
                rows = int(counted.fetchone()[0])  # type: ignore[index]
            conn.rollback()
        return {
            "target": layout.display,
            "table_exists": exists,
            "rows": rows,
            "mode": mode,
            "resume": resume,
            "columns": dict(zip(layout.column_names, layout.sql_types, strict=True)),
            "ddl": [statement.as_string(conn) for statement in ddl],
        }

    def _key_clause(self) -> sql.Composed:
        assert self.layout is not None
        keys = sql.SQL(", ").join(map(sql.Identifier, self.layout.key))
        return sql.SQL("PRIMARY KEY ({})").format(keys)

    def _has_key(self, table: str) -> bool:
        row = self.conn.execute(
            "SELECT EXISTS (SELECT FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype = 'p')",
            [self._ident(table).as_string(self.conn)],
        ).fetchone()
        return bool(row and row[0])

    # -- writing ------------------------------------------------------------------------

    def encoder(self) -> PageEncoder:
        """What turns records into this table's binary COPY rows (picklable: it may run in
        another process); call it after :meth:`begin`."""
        assert self.layout is not None
        oids = {}
        for name in ("vector", "halfvec"):
            info = self.conn.adapters.types.get(name)
            if info is not None:
                oids[name] = info.oid
        return PageEncoder(self.layout, strip_nul=self.sync.strip_nul, type_oids=oids)

    @contextmanager
    def loader(self) -> Iterator[Loader]:
        """Open a loader; its exit commits what was written, or rolls back on an error."""
        assert self.layout is not None and self.plan is not None and self._state is not None
        with self._translate(f"writing to {self.layout.display}"):
            loader = Loader(self, self.layout, self.plan.mode, self._state, self._rejects)
            try:
                yield loader
            except BaseException:
                loader.abort()
                raise
            loader.commit()

    def finish(
        self, counts: dict[str, Counts], summarize: Callable[[dict[str, int]], dict[str, Any]]
    ) -> dict[str, int]:
        """Close the run in one transaction: key, swap or prune, ANALYZE, mark it complete.

        ``counts`` gain what prune deleted, and the records the whole run (all its resumed
        parts) rejected. Returns the rows per namespace the table holds that the run did not
        read (stale: deleted at the source, left in place without --prune); ``summarize``
        turns them into the summary stored with the run.
        """
        assert self.layout is not None and self.plan is not None and self._state is not None
        layout, plan = self.layout, self.plan
        table = self._write_table(plan.mode)
        with self._translate(f"finishing {layout.display}"), self.conn.transaction():
            if not self._has_key(table):
                self.conn.execute(
                    sql.SQL("ALTER TABLE {} ADD {}").format(self._ident(table), self._key_clause())
                )
                self.conn.execute(
                    sql.SQL("ALTER TABLE {} RESET (autovacuum_enabled)").format(self._ident(table))
                )
            if plan.mode == "replace":
                self._drop(layout.table)
                self.conn.execute(
                    sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                        self._ident(table), sql.Identifier(layout.table)
                    )
                )
                self._rename_key(table, layout.table)
            elif plan.mode == "merge" and self.sync.prune:
                for namespace, deleted in self._prune().items():
                    counts.setdefault(namespace, Counts()).deleted += deleted
            for namespace, rejected in self._state.rejected().items():
                # A resumed run counts what its interrupted parts rejected too.
                ns = counts.setdefault(namespace, Counts())
                ns.rejected = max(ns.rejected, rejected)
            stale = self._stale(counts)
            self._state.finish(plan.run_id, summarize(stale))
            self.conn.execute(sql.SQL("ANALYZE {}").format(layout.qualified))
        return stale

    def _rename_key(self, old_table: str, table: str) -> None:
        """Give the swapped-in table's key the name PostgreSQL would have given it."""
        row = self.conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
            [self._ident(table).as_string(self.conn)],
        ).fetchone()
        if row is None:
            return
        # PostgreSQL's own choice, <table>_pkey, cut to the 63-byte identifier limit.
        name = table.encode()[: 63 - len("_pkey")].decode(errors="ignore") + "_pkey"
        self.conn.execute(
            sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                self._ident(table), sql.Identifier(row[0]), sql.Identifier(name)
            )
        )

    def build_indexes(
        self,
        on_progress: Callable[[str, int, int], None] | None = None,
        on_note: Callable[[str], None] | None = None,
    ) -> list[str]:
        """Build the indexes asked for (``index``) after the run, then ANALYZE."""
        assert self.layout is not None and self.index is not None
        with self._translate(f"indexing {self.layout.display}"):
            return build_index(
                self.conn,
                self.layout,
                self.index,
                dsn=self.dsn,
                on_progress=on_progress,
                on_note=on_note,
            )

    def _prune(self) -> dict[str, int]:
        assert self.layout is not None and self._state is not None
        layout = self.layout
        seen = sql.Identifier(layout.schema, "_vec2pg_seen")
        namespace = sql.SQL("t.namespace") if layout.namespaced else sql.Literal("")
        only = sql.SQL("")
        params: list[Any] = [layout.table]
        if self._namespaces is not None and layout.namespaced:
            only = sql.SQL("t.namespace = ANY(%s) AND ")
            params = [self._namespaces, layout.table]
        rows = self.conn.execute(
            sql.SQL(
                "WITH gone AS (DELETE FROM {} AS t WHERE {}NOT EXISTS (SELECT FROM {} AS s "
                "WHERE s.target = %s AND s.namespace = {} AND s.id = t.id) RETURNING {} AS ns) "
                "SELECT ns, count(*) FROM gone GROUP BY ns"
            ).format(layout.qualified, only, seen, namespace, namespace),
            params,
        ).fetchall()
        return {ns: int(n) for ns, n in rows}

    def _stale(self, counts: dict[str, Counts]) -> dict[str, int]:
        """Rows per namespace beyond what the run read (progress rows count every chain)."""
        assert self.layout is not None and self._state is not None
        if not self._complete:
            return {}
        layout = self.layout
        namespace = sql.SQL("namespace") if layout.namespaced else sql.Literal("")
        held = dict(
            self.conn.execute(
                sql.SQL("SELECT {}, count(*) FROM {} GROUP BY 1").format(
                    namespace, layout.qualified
                )
            ).fetchall()
        )
        read = self._state.records()
        selected = self._namespaces
        return {
            ns: n - read.get(ns, 0)
            for ns, n in held.items()
            if n > read.get(ns, 0) and (selected is None or ns in selected)
        }

    def _translate(self, doing: str) -> AbstractContextManager[None]:
        return translate_errors(self.dsn, doing)

    def record_failure(self, error: str) -> None:
        """Note on the run why it stopped (best effort: the connection may be gone)."""
        if self.plan is None or self._state is None or self._conn is None or self._conn.closed:
            return
        try:
            self._conn.rollback()
            self._state.failed(self.plan.run_id, error)
            self._conn.commit()
        except psycopg.Error:
            pass


class Loader:
    """Writes pages through binary COPY and commits them with their chains' cursors."""

    def __init__(
        self,
        sink: PostgresSink,
        layout: TableLayout,
        mode: str,
        state: State,
        rejects: RejectsFile | None,
    ) -> None:
        self._sink = sink
        self._conn = sink.conn
        self._layout = layout
        self._mode = mode
        self._state = state
        self._rejects = rejects
        self.encode = sink.encoder()
        self._copy: Any = None
        self._copy_cm: Any = None
        self._reset_pending()
        self.counts: dict[str, Counts] = {}  # committed
        if mode == "merge":
            self._conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS _vec2pg_stage (LIKE {}) ON COMMIT DELETE ROWS"
                ).format(layout.qualified)
            )
            self._conn.commit()
            self._into: sql.Composable = sql.Identifier("_vec2pg_stage")
        else:
            self._into = sink._ident(sink._write_table(mode))

    def write_rows(
        self, namespace: str, partition: str, next_cursor: Cursor, rows: EncodedRows
    ) -> None:
        """Write a page of a chain's records, as :attr:`encode` made it; it is committed with
        ``next_cursor``, the chain's cursor after it (``None``: the chain is done).

        A record PostgreSQL cannot take raises InvalidRecord before any of the page is
        written, or with a rejects file goes there instead.
        """
        if rows.rejected and self._rejects is None:
            record, reason = rows.rejected[0]
            raise InvalidRecord(record.id, record.namespace, reason)
        pending = self._pending_counts.setdefault(namespace, Counts())
        for record, reason in rows.rejected:
            assert self._rejects is not None
            self._rejects.add(record, reason)
            # Still in the source: --prune must not delete the row it had.
            self._rejected_keys.append((record.namespace, record.id))
        rejected = len(rows.rejected)
        pending.rejected += rejected
        pending.altered += rows.altered
        if rows.rows:
            copy = self._copy or self._open_copy()
            copy.write(rows.data)
        chain = (namespace, partition)
        self._pending_cursors[chain] = DONE if next_cursor is None else next_cursor
        self._chain_records[chain] = self._chain_records.get(chain, 0) + rows.rows
        self._chain_rejected[chain] = self._chain_rejected.get(chain, 0) + rejected
        pending.read += rows.read
        if self._mode != "merge":
            pending.inserted += rows.rows
        self._pending_rows += rows.rows
        if (
            self._pending_rows >= self._sink.commit_rows
            or time.monotonic() - self._since >= COMMIT_SECONDS
        ):
            self.commit()

    def _reset_pending(self) -> None:
        """Forget what the transaction that just ended (committed or not) had pending."""
        self._pending_rows = 0
        self._pending_cursors: dict[Chain, Cursor | dict[str, bool]] = {}
        self._pending_counts: dict[str, Counts] = {}
        self._chain_records: dict[Chain, int] = {}
        self._chain_rejected: dict[Chain, int] = {}
        self._rejected_keys: list[tuple[str, str]] = []
        self._since = time.monotonic()

    def _open_copy(self) -> Any:
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            self._into, sql.SQL(", ").join(map(sql.Identifier, self._layout.column_names))
        )
        self._copy_cm = self._conn.cursor().copy(statement)
        self._copy = self._copy_cm.__enter__()
        # Rows are written as blocks of binary COPY (see vec2pg.postgres.encode): the
        # stream's header and trailer are ours to send too.
        self._copy.write(COPY_HEADER)
        return self._copy

    def commit(self) -> None:
        if self._copy_cm is not None:
            self._copy.write(COPY_TRAILER)  # an error here leaves abort() the COPY to end
            cm, self._copy_cm, self._copy = self._copy_cm, None, None
            cm.__exit__(None, None, None)
        if self._mode == "merge" and self._pending_rows:
            self._merge()
        if self._rejected_keys and self._mode == "merge" and self._sink.sync.prune:
            self._state.see(self._rejected_keys)
        self._state.save_records(self._pending_cursors, self._chain_records, self._chain_rejected)
        if self._rejects is not None:
            self._rejects.flush()  # durable before the commit that skips its records
        self._conn.commit()
        for namespace, counts in self._pending_counts.items():
            self.counts.setdefault(namespace, Counts()).add(counts)
        self._reset_pending()

    def _merge(self) -> None:
        layout = self._layout
        namespace = sql.SQL("namespace") if layout.namespaced else sql.Literal("")
        if self._sink.sync.prune:
            self._conn.execute(
                sql.SQL(
                    "INSERT INTO {} (target, namespace, id) SELECT %s, {}, id FROM _vec2pg_stage "
                    "ON CONFLICT DO NOTHING"
                ).format(sql.Identifier(layout.schema, "_vec2pg_seen"), namespace),
                [layout.table],
            )
        values = [c for c in layout.column_names if c not in layout.key]
        key = sql.SQL(", ").join(map(sql.Identifier, layout.key))
        columns = sql.SQL(", ").join(map(sql.Identifier, layout.column_names))
        current = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in values)
        incoming = sql.SQL(", ").join(
            sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in values
        )
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in values
        )
        rows = self._conn.execute(
            sql.SQL(
                # A key twice in one transaction (a rejects file can repeat a record): the
                # last one wins, as it would across transactions.
                "WITH merged AS (INSERT INTO {} AS t ({}) SELECT DISTINCT ON ({}) {} "
                "FROM _vec2pg_stage ORDER BY {}, ctid DESC "
                "ON CONFLICT ({}) DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({}) "
                "RETURNING {} AS ns, (xmax = 0) AS inserted) "
                "SELECT ns, count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) "
                "FROM merged GROUP BY ns"
            ).format(
                layout.qualified,
                columns,
                key,
                columns,
                key,
                key,
                assignments,
                current,
                incoming,
                namespace,
            )
        ).fetchall()
        changed = {ns: (int(i), int(u)) for ns, i, u in rows}
        for ns, counts in self._pending_counts.items():
            inserted, updated = changed.get(ns, (0, 0))
            counts.inserted += inserted
            counts.updated += updated
            counts.unchanged += counts.read - counts.rejected - inserted - updated

    def abort(self) -> None:
        """Drop the open COPY and roll back what was written since the last commit."""
        if self._copy_cm is not None:
            cm, self._copy_cm, self._copy = self._copy_cm, None, None
            try:
                cm.__exit__(RuntimeError, RuntimeError("aborted by vec2pg"), None)
            except psycopg.Error:
                pass  # the COPY fails with our own error: what we want
        if not self._conn.closed:
            try:
                self._conn.rollback()
            except psycopg.Error:
                pass  # the connection is gone; so is the transaction
        self._reset_pending()
        if self._rejects is not None:
            self._rejects.discard()


def column_types(conn: Connection[Any], table: sql.Identifier) -> dict[str, str]:
    """A table's columns and their types, as format_type() spells them."""
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        [table.as_string(conn)],
    ).fetchall()
    return dict(rows)


def open_connection(dsn: str, application_name: str = "vec2pg") -> Connection[Any]:
    """Connect to ``dsn``; failures become TargetError (TargetUnavailable when the server
    did not answer: a run retries those), without the password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        # The DSN's own options (a search_path, a role) stay; ours come after them.
        # If this machine dies, the server notices within about two minutes and frees
        # the run's advisory lock, so tomorrow's cron run is not locked out.
        own = conninfo_to_dict(dsn).get("options")
        options = f"{own} {_SESSION_OPTIONS}" if own else _SESSION_OPTIONS
        return psycopg.connect(
            dsn, application_name=application_name, connect_timeout=15, options=options
        )
    except psycopg.OperationalError as exc:
        raise TargetUnavailable(
            f"cannot connect to PostgreSQL at {mask_dsn(dsn)}: {_first_line(exc)}"
        ) from exc
    except psycopg.ProgrammingError as exc:  # a malformed DSN
        raise TargetError(f"invalid PostgreSQL DSN {mask_dsn(dsn)}: {_first_line(exc)}") from exc


@contextmanager
def translate_errors(dsn: str, doing: str) -> Iterator[None]:
    """Turn psycopg's errors into vec2pg's, naming what we were doing."""
    try:
        yield
    except psycopg.OperationalError as exc:
        state = exc.sqlstate
        if state is None or state.startswith("08") or state in _CONNECTION_LOST:
            raise TargetUnavailable(
                f"lost the connection to PostgreSQL at {mask_dsn(dsn)} while {doing}: "
                f"{_first_line(exc)}"
            ) from exc
        raise TargetError(f"PostgreSQL failed while {doing}: {_first_line(exc)}") from exc
    except psycopg.Error as exc:
        raise TargetError(f"PostgreSQL failed while {doing}: {_first_line(exc)}") from exc


def target_status(dsn: str, schema: str, table: str) -> dict[str, Any]:
    """The rows, last completed run and saved progress of ``schema.table``."""
    sink = PostgresSink(dsn, schema=schema, table=table)
    with sink, sink._translate(f"reading the status of {schema}.{table}"):
        return status(sink.conn, schema, table)


def _difference(saved: dict[str, Any], now: dict[str, Any]) -> str:
    changed = [key for key in sorted(set(saved) | set(now)) if saved.get(key) != now.get(key)]
    return "; ".join(f"{key} was {saved.get(key)!r}, now {now.get(key)!r}" for key in changed[:3])


def _columns(columns: dict[str, str]) -> str:
    return ", ".join(f"{name} {kind}" for name, kind in columns.items())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
