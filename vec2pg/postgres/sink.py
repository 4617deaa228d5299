"""The shared PostgreSQL sink: one table per collection, kept in step with its source.

It knows nothing of any source: it takes a :class:`~vec2pg.records.SourceInfo` and pages of
rows its encoder made (:meth:`TargetRun.encoder`). A run is one of three modes:

* ``load``: the table is new or empty. Rows go straight in through binary COPY, and the
  primary key is added after the load (pgvector's loading advice: load first, index after).
* ``merge``: the table holds rows (a resync). Each transaction's rows are copied into a
  temporary staging table and merged with ``INSERT ... ON CONFLICT DO UPDATE ... WHERE ...
  IS DISTINCT FROM``, so new rows are inserted, changed ones updated and unchanged ones
  not rewritten at all. With ``prune``, rows the complete scan did not see are deleted at
  the end, in the transaction that closes the run.
* ``replace``: rows load into a new table which then takes the old one's place in one
  transaction: readers see the old table or the new one, never a half.

Which mode, and whether a run resumes an interrupted one, is decided once, by
:func:`vec2pg.postgres.plan.decide`, for the run and its dry run alike. Every transaction
commits its rows together with the cursors of the chains they came from
(:mod:`vec2pg.postgres.state`), so a run killed at any moment resumes where its last commit
left it. A PostgreSQL advisory lock per target keeps a second run out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from vec2pg.errors import (
    ConfigError,
    InvalidRecord,
    LockTimeout,
    TargetError,
    TerminateSignal,
)
from vec2pg.postgres import catalog
from vec2pg.postgres.connection import open_connection, translate_errors
from vec2pg.postgres.encode import COPY_HEADER, COPY_TRAILER, EncodedRows, PageEncoder
from vec2pg.postgres.index import IndexMethod, build_index, check_indexable
from vec2pg.postgres.layout import TableLayout, layout_for
from vec2pg.postgres.locks import LockWatch, describe_sessions, table_holders
from vec2pg.postgres.plan import (
    Decision,
    decide,
    key_clause,
    lock_held,
    read_facts,
    write_table,
)
from vec2pg.postgres.size import SizeEstimate, estimate, free_bytes
from vec2pg.postgres.state import DONE, SETUP_LOCK, State, lock_key, status
from vec2pg.records import Cursor, Record, SourceInfo
from vec2pg.rejects import RejectsFile

if TYPE_CHECKING:
    from psycopg import Connection

#: Rows per transaction. Large enough that commits cost nothing next to the data (10,000
#: rows of 1024-dim float32 are ~40 MB), small enough that an interrupted run loses little.
DEFAULT_COMMIT_ROWS = 10_000
#: A transaction also ends after this many seconds, so that a slow source still saves
#: its progress often.
COMMIT_SECONDS = 10.0
#: Where ``--on-error skip`` writes rejected records unless told otherwise.
DEFAULT_REJECTS = "vec2pg-rejects.jsonl"

Chain = tuple[str, str]  # (namespace, partition)


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """How a run treats a table that already holds rows, and records it cannot store."""

    prune: bool = False  # delete rows the source no longer has (after a complete scan)
    replace: bool = False  # load a new table and swap it in
    restart: bool = False  # ignore saved progress
    #: Write records PostgreSQL cannot take to this JSONL file and go on (None: stop).
    rejects: str | None = None
    strip_nul: bool = False  # remove NUL characters from metadata instead of refusing it
    #: ``"stop"`` at a record PostgreSQL cannot take, or ``"skip"`` it into ``rejects``
    #: (default :data:`DEFAULT_REJECTS`); None: skip if ``rejects`` is given.
    on_error: Literal["stop", "skip"] | None = None

    def __post_init__(self) -> None:
        if self.prune and self.replace:
            raise ConfigError(
                "--prune and --replace do not go together: --replace keeps only what the source has"
            )
        if self.on_error == "stop" and self.rejects is not None:
            raise ConfigError("--rejects goes with --on-error skip")
        if self.on_error == "skip" and self.rejects is None:
            object.__setattr__(self, "rejects", DEFAULT_REJECTS)


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
        lock_timeout: float | None = None,
        id_type: str | None = None,
        layout: str = "vec2pg",
        vector: str | None = None,
    ) -> None:
        """``lock_timeout``: seconds a statement may wait for a lock another session holds
        (None: as long as it takes, as PostgreSQL waits). ``id_type``, ``layout`` and
        ``vector``: the table's shape (see :func:`vec2pg.postgres.layout.layout_for`)."""
        if commit_rows < 1:
            raise ConfigError(f"--commit-rows must be at least 1, not {commit_rows}")
        self.dsn = dsn
        self.halfvec = halfvec
        self.index = index
        self.schema = schema
        self.table = table
        self.commit_rows = commit_rows
        self.sync = sync or SyncOptions()
        if lock_timeout is not None and lock_timeout <= 0:
            raise ConfigError(f"--lock-timeout must be more than 0 seconds, not {lock_timeout}")
        self.lock_timeout = lock_timeout
        self.id_type = id_type
        self.style = layout
        self.vector = vector
        #: The layout of the last run's table (or dry run's).
        self.layout: TableLayout | None = None
        self._conn: Connection[Any] | None = None
        self._rejects: RejectsFile | None = None

    # -- connection ---------------------------------------------------------------------

    def connect(self) -> None:
        conn = open_connection(self.dsn)
        if self.lock_timeout is not None:
            with self.translate("setting --lock-timeout"):
                conn.execute(
                    "SELECT set_config('lock_timeout', %s, false)",
                    [f"{round(self.lock_timeout * 1000)}ms"],
                )
                conn.commit()
        self._conn = conn

    @property
    def conn(self) -> Connection[Any]:
        if self._conn is None or self._conn.closed:
            self.connect()
        assert self._conn is not None
        return self._conn

    @property
    def open_connection(self) -> Connection[Any] | None:
        """The connection, if one is open (without connecting)."""
        return None if self._conn is None or self._conn.closed else self._conn

    def close(self) -> None:
        if self._rejects is not None:
            self._rejects.close()
        if self._conn is not None:
            self._release_locks(self._conn)
            self._conn.close()
            self._conn = None

    @staticmethod
    def _release_locks(conn: psycopg.Connection[Any]) -> None:
        """Give up the target's lock before closing: the server ends a closed session (and
        frees its locks) a moment later, and the next run must not find it still held."""
        idle = (TransactionStatus.IDLE, TransactionStatus.INTRANS, TransactionStatus.INERROR)
        if conn.closed or conn.broken or conn.info.transaction_status not in idle:
            return
        try:
            conn.rollback()
            conn.execute("SELECT pg_advisory_unlock_all()")
            conn.commit()
        except psycopg.Error:
            pass  # then the server frees them as the session ends

    def __enter__(self) -> PostgresSink:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def translate(self, doing: str) -> Iterator[None]:
        """psycopg's errors as vec2pg's, naming what the sink was doing (and, when it gave
        up waiting for a lock, who held one on the table)."""
        try:
            with translate_errors(self.dsn, doing):
                yield
        except LockTimeout as exc:
            conn = self.open_connection
            holders = []
            if conn is not None and self.layout is not None:
                holders = table_holders(conn, self.layout.qualified.as_string(conn))
            held = f"; held by {', '.join(holders)}" if holders else ""
            raise LockTimeout(f"{exc}{held}") from exc

    def watch_locks(self, note: Callable[[str], None]) -> LockWatch:
        """A watch that says (``note``) when the run's session waits for a lock, and for
        whom (see :mod:`vec2pg.postgres.locks`)."""

        def pid() -> int | None:
            conn = self.open_connection
            return conn.info.backend_pid if conn is not None else None

        return LockWatch(self.dsn, pid, note)

    # -- planning -----------------------------------------------------------------------

    def layout_for(self, info: SourceInfo) -> TableLayout:
        """The table ``info``'s records go into; checked indexable before any loading.

        Without an ``id_type``, a table that exists keeps the id type it has, replaced too
        (a rejects file reloads into the bigint table its run made); a new one gets the
        source's default."""
        id_type = self.id_type
        if id_type is None:
            with self.translate("reading the target table's id type"), self.conn.transaction():
                id_type = catalog.id_type(self.conn, self.schema, self.table or info.collection)
        layout = layout_for(
            info,
            self.schema,
            self.table,
            halfvec=self.halfvec,
            id_type=id_type,
            style=self.style,
            vector=self.vector,
        )
        if self.index is not None:
            check_indexable(layout, self.index)  # before hours of loading, not after
        self.layout = layout
        return layout

    def preview(self, info: SourceInfo, namespaces: list[str] | None) -> dict[str, Any]:
        """What :meth:`begin` would decide, and the statements it would run, found in a
        read-only transaction (``--dry-run``). Raises what the run would stop with."""
        layout = self.layout_for(info)
        conn = self.conn
        with self.translate(f"looking at {layout.display}"):
            conn.execute("SET TRANSACTION READ ONLY")
            facts = read_facts(conn, layout, lock_holder=True, count_rows=True)
            conn.rollback()
        decision = decide(facts, info, layout, namespaces, self.sync)
        resume = decision.resume
        return {
            "target": layout.display,
            "table_exists": facts.table,
            "rows": facts.rows,
            "mode": decision.mode,
            "resume": None
            if resume is None
            else {"run": resume.id, "mode": resume.mode, "started": str(resume.started)},
            "columns": dict(zip(layout.column_names, layout.sql_types, strict=True)),
            "ddl": [statement.as_string(conn) for statement in decision.statements],
        }

    def estimate_size(
        self, info: SourceInfo, rows: int, sample: list[Record]
    ) -> tuple[SizeEstimate, int | None]:
        """About how much disk ``rows`` records like ``sample`` take (table, key, indexes),
        and the free space where PostgreSQL keeps its data, if it can be known."""
        layout = self.layout_for(info)
        with self.translate(f"estimating the size of {layout.display}"):
            return estimate(layout, rows, sample, self.index), free_bytes(self.conn)

    def begin(self, info: SourceInfo, namespaces: list[str] | None) -> TargetRun:
        """Lock the target, prepare it, and start (or resume) a run on it.

        ``namespaces`` is the run's restriction (None: every namespace); it bounds --prune.
        Called again after a lost connection, it resumes the same run.
        """
        layout = self.layout_for(info)
        if self.sync.rejects is not None and self._rejects is None:
            self._rejects = RejectsFile(self.sync.rejects, info)
        with self.translate(f"preparing {layout.display}"):
            self._lock(layout)
            self._set_up(info, layout, namespaces)
            self._register_types()
            conn = self.conn
            state = State(conn, layout.schema, layout.table)
            with conn.transaction():
                facts = read_facts(conn, layout, lock_holder=False)
                decision = decide(facts, info, layout, namespaces, self.sync)
                for statement in decision.prepare:
                    conn.execute(statement)
                if decision.resume is not None:
                    run_id, chains = decision.resume.id, state.chains()
                    before = sum(state.records().values())
                else:
                    run_id, chains = state.start(decision.mode, decision.described), {}
                    before = 0
        # --restart discards the progress found at the start, not this run's own after a
        # reconnect.
        self.sync = dataclasses.replace(self.sync, restart=False)
        run = TargetRun(
            self, layout, state, decision, run_id, chains, info.complete, namespaces, self._rejects
        )
        run.committed_before = before
        return run

    def _set_up(self, info: SourceInfo, layout: TableLayout, namespaces: list[str] | None) -> None:
        """Create what the target's database lacks (the extension, the schema, the state
        tables), under a lock of the database's own, so that runs starting at once into a
        new database or schema do not race to create them."""
        conn = self.conn
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [SETUP_LOCK])
            facts = read_facts(conn, layout, lock_holder=False)
            decision = decide(facts, info, layout, namespaces, self.sync)
            for statement in decision.setup:
                self._execute_setup(statement)
            State(conn, layout.schema, layout.table).create()

    def _execute_setup(self, statement: sql.Composed) -> None:
        try:
            with self.conn.transaction():
                self.conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege as exc:
            if "EXTENSION" not in statement.as_string(self.conn):
                raise
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

    def _register_types(self) -> None:
        """pgvector's types, for multivectors (arrays of them) and for reading rows back."""
        from pgvector.psycopg import register_vector

        register_vector(self.conn)
        self.conn.commit()

    def _lock(self, layout: TableLayout) -> None:
        key = lock_key(layout.schema, layout.table)
        conn = self.conn
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()
        conn.commit()
        if row and row[0]:
            return
        holder = catalog.advisory_lock_holder(conn, key)
        waiting_for = []
        if holder is not None:
            (blocking,) = conn.execute("SELECT pg_blocking_pids(%s)", [holder[0]]).fetchone() or (
                [],
            )
            waiting_for = describe_sessions(conn, list(blocking)) if blocking else []
        conn.commit()
        raise lock_held(layout, holder, waiting_for)

    def build_indexes(
        self,
        on_progress: Callable[[str, int, int], None] | None = None,
        on_note: Callable[[str], None] | None = None,
    ) -> list[str]:
        """Build the indexes asked for (``index``) on the last run's table, then ANALYZE."""
        if self.layout is None or self.index is None:
            raise RuntimeError("build_indexes() needs an index method and a finished run")
        with self.translate(f"indexing {self.layout.display}"):
            return build_index(
                self.conn,
                self.layout,
                self.index,
                dsn=self.dsn,
                on_progress=on_progress,
                on_note=on_note,
            )


class Phase(str, Enum):
    """Where a :class:`TargetRun` stands."""

    PLANNED = "planned"  # begun: the target is locked and prepared
    LOADING = "loading"  # a loader has written (some of) its pages
    FINISHED = "finished"  # the run is complete: key, swap or prune done, marked complete
    FAILED = "failed"  # it stopped; its progress stays for the next run to resume


class TargetRun:
    """One run on the target, from :meth:`PostgresSink.begin` to :meth:`finish`.

    Its exit, when the run did not finish, notes on the run why it stopped; the run stays
    resumable.
    """

    def __init__(
        self,
        sink: PostgresSink,
        layout: TableLayout,
        state: State,
        decision: Decision,
        run_id: int,
        chains: dict[Chain, Cursor | dict[str, bool]],
        complete: bool,
        namespaces: list[str] | None,
        rejects: RejectsFile | None,
    ) -> None:
        self.layout = layout
        self.mode = decision.mode
        self.resumed = decision.resume is not None
        self.run_id = run_id
        #: Every chain of the run and its cursor (None: not started; DONE: finished). Empty
        #: for a fresh run, whose chains the pipeline records with :meth:`start_chains`.
        self.chains = chains
        self.phase = Phase.PLANNED
        #: Rows removed when the key was added, because they repeated another's key.
        self.duplicates_removed = 0
        #: Records the interrupted runs it resumes had committed.
        self.committed_before = 0
        self._sink = sink
        self._state = state
        self._complete = complete
        self._namespaces = namespaces
        self._rejects = rejects

    def __enter__(self) -> TargetRun:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None and self.phase is not Phase.FINISHED:
            self._failed(_why(exc))

    @property
    def display(self) -> str:
        """The target table as a person would type it in psql."""
        return self.layout.display

    def _require(self, *phases: Phase) -> None:
        if self.phase not in phases:
            wanted = " or ".join(p.value for p in phases)
            raise RuntimeError(f"the run is {self.phase.value}, not {wanted}")

    def start_chains(self, chains: list[Chain]) -> None:
        """Record chains to read (a fresh run's, or namespaces a resumed run lacks), so that
        a resumed run reads the same ones."""
        self._require(Phase.PLANNED, Phase.LOADING)
        conn = self._sink.conn
        with self._sink.translate("recording the run's chains"), conn.transaction():
            self._state.save(dict.fromkeys(chains))
        self.chains.update(dict.fromkeys(chains))

    def encoder(self) -> PageEncoder:
        """What turns records into this table's binary COPY rows (picklable: it may run in
        another process)."""
        oids = {}
        for name in ("vector", "halfvec"):
            info = self._sink.conn.adapters.types.get(name)
            if info is not None:
                oids[name] = info.oid
        return PageEncoder(self.layout, strip_nul=self._sink.sync.strip_nul, type_oids=oids)

    @contextmanager
    def loader(self) -> Iterator[Loader]:
        """Open a loader; its exit commits what was written, or rolls back on an error."""
        self._require(Phase.PLANNED, Phase.LOADING)
        self.phase = Phase.LOADING
        sink = self._sink
        with sink.translate(f"writing to {self.layout.display}"):
            loader = Loader(
                sink.conn,
                self.layout,
                self.mode,
                self._state,
                self.encoder(),
                into=sql.Identifier(self.layout.schema, write_table(self.layout, self.mode)),
                rejects=self._rejects,
                commit_rows=sink.commit_rows,
                record_seen=self.mode == "merge" and sink.sync.prune,
            )
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
        turns them into the summary stored with the run. With an index to build, ANALYZE
        waits for it (:meth:`PostgresSink.build_indexes`).
        """
        self._require(Phase.PLANNED, Phase.LOADING)
        sink, layout = self._sink, self.layout
        conn = sink.conn
        table = write_table(layout, self.mode)
        written = sql.Identifier(layout.schema, table)
        with sink.translate(f"finishing {layout.display}"), conn.transaction():
            if not catalog.has_primary_key(conn, layout.schema, table):
                self._add_key(written)
                conn.execute(sql.SQL("ALTER TABLE {} RESET (autovacuum_enabled)").format(written))
            if self.mode == "replace":
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(layout.qualified))
                conn.execute(
                    sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                        written, sql.Identifier(layout.table)
                    )
                )
                self._rename_key()
            elif self.mode == "merge" and sink.sync.prune:
                for namespace, deleted in self._prune().items():
                    counts.setdefault(namespace, Counts()).deleted += deleted
            if layout.style == "vecs":
                self._metadata_index()
            for namespace, rejected in self._state.rejected().items():
                # A resumed run counts what its interrupted parts rejected too.
                ns = counts.setdefault(namespace, Counts())
                ns.rejected = max(ns.rejected, rejected)
            stale = self._stale()
            self._state.finish(self.run_id, summarize(stale))
            if sink.index is None:
                conn.execute(sql.SQL("ANALYZE {}").format(layout.qualified))
        self.phase = Phase.FINISHED
        return stale

    def _add_key(self, table: sql.Identifier) -> None:
        """Give a loaded table its primary key. Should a broken source have sent a record
        twice before the run caught it going round in circles, the later copy is kept:
        the key goes on, and the table holds each record once."""
        conn = self._sink.conn
        add = sql.SQL("ALTER TABLE {} ADD {}").format(table, key_clause(self.layout))
        try:
            with conn.transaction():
                conn.execute(add)
            return
        except psycopg.errors.UniqueViolation:
            pass
        key = sql.SQL(", ").join(map(sql.Identifier, self.layout.key))
        removed = conn.execute(
            sql.SQL(
                "DELETE FROM {} WHERE ctid IN (SELECT ctid FROM (SELECT ctid, row_number() "
                "OVER (PARTITION BY {} ORDER BY ctid DESC) AS copy FROM {}) AS t WHERE copy > 1)"
            ).format(table, key, table)
        ).rowcount
        self.duplicates_removed += max(0, removed)
        conn.execute(add)

    def _metadata_index(self) -> None:
        """The GIN ``jsonb_path_ops`` index on metadata that vecs gives its collections
        (``ix_meta_<7 characters>``), unless the table has one."""
        conn, layout = self._sink.conn, self.layout
        row = conn.execute(
            "SELECT EXISTS (SELECT FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_am am ON am.oid = c.relam JOIN pg_opclass o ON o.oid = i.indclass[0] "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
            "WHERE i.indrelid = %s::regclass AND am.amname = 'gin' AND a.attname = 'metadata' "
            "AND o.opcname = 'jsonb_path_ops')",
            [layout.qualified.as_string(conn)],
        ).fetchone()
        if row and row[0]:
            return
        digest = hashlib.sha256(layout.table.encode()).hexdigest()[:7]
        conn.execute(
            sql.SQL("CREATE INDEX {} ON {} USING gin (metadata jsonb_path_ops)").format(
                sql.Identifier(f"ix_meta_{digest}"), layout.qualified
            )
        )

    def _rename_key(self) -> None:
        """Give the swapped-in table's key the name PostgreSQL would have given it."""
        conn, layout = self._sink.conn, self.layout
        key = catalog.primary_key_name(conn, layout.schema, layout.table)
        if key is None:
            return
        # PostgreSQL's own choice, <table>_pkey, cut to the 63-byte identifier limit.
        name = layout.table.encode()[: 63 - len("_pkey")].decode(errors="ignore") + "_pkey"
        conn.execute(
            sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                layout.qualified, sql.Identifier(key), sql.Identifier(name)
            )
        )

    def _prune(self) -> dict[str, int]:
        layout = self.layout
        seen = sql.Identifier(layout.schema, "_vec2pg_seen")
        namespace = sql.SQL("t.namespace") if layout.namespaced else sql.Literal("")
        only = sql.SQL("")
        params: list[Any] = [layout.table]
        if self._namespaces is not None and layout.namespaced:
            only = sql.SQL("t.namespace = ANY(%s) AND ")
            params = [self._namespaces, layout.table]
        rows = (
            self._sink.conn.execute(
                sql.SQL(
                    "WITH gone AS (DELETE FROM {} AS t WHERE {}NOT EXISTS (SELECT FROM {} AS s "
                    "WHERE s.target = %s AND s.namespace = {} AND s.id = t.id::text) "
                    "RETURNING {} AS ns) SELECT ns, count(*) FROM gone GROUP BY ns"
                ).format(layout.qualified, only, seen, namespace, namespace),
                params,
            )
        ).fetchall()
        return {ns: int(n) for ns, n in rows}

    def _stale(self) -> dict[str, int]:
        """Rows per namespace beyond what the run read (progress rows count every chain)."""
        if not self._complete:
            return {}
        layout = self.layout
        namespace = sql.SQL("namespace") if layout.namespaced else sql.Literal("")
        held = dict(
            self._sink.conn.execute(
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

    def committed(self) -> int | None:
        """Records the run (with its resumed parts) has committed, if PostgreSQL answers
        (through a connection of its own: the run's may have been lost with a Ctrl-C in
        the middle of a statement)."""
        layout = self.layout
        try:
            with open_connection(self._sink.dsn) as conn:
                return sum(State(conn, layout.schema, layout.table).records().values())
        except (psycopg.Error, TargetError):
            return None

    def _failed(self, error: str) -> None:
        """Note on the run why it stopped (best effort: the connection may be gone)."""
        self.phase = Phase.FAILED
        conn = self._sink.open_connection
        if conn is None:
            return
        try:
            conn.rollback()
            self._state.failed(self.run_id, error)
            conn.commit()
        except psycopg.Error:
            pass


class Loader:
    """Writes pages through binary COPY and commits them with their chains' cursors."""

    def __init__(
        self,
        conn: Connection[Any],
        layout: TableLayout,
        mode: str,
        state: State,
        encode: PageEncoder,
        *,
        into: sql.Identifier,
        rejects: RejectsFile | None,
        commit_rows: int,
        record_seen: bool,
    ) -> None:
        self._conn = conn
        self._layout = layout
        self._mode = mode
        self._state = state
        self._rejects = rejects
        self._commit_rows = commit_rows
        #: Record every key the scan sees, rejected ones too, for --prune to keep their rows.
        self._record_seen = record_seen
        self.encode = encode
        self._copy: Any = None
        self._copy_cm: Any = None
        self._reset_pending()
        self.counts: dict[str, Counts] = {}  # committed
        self._into: sql.Composable = into
        if mode == "merge":
            conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS _vec2pg_stage (LIKE {}) ON COMMIT DELETE ROWS"
                ).format(layout.qualified)
            )
            conn.commit()
            self._into = sql.Identifier("_vec2pg_stage")

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
            self._pending_rows >= self._commit_rows
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
        if self._rejected_keys and self._record_seen:
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
        if self._record_seen:
            self._conn.execute(
                sql.SQL(
                    "INSERT INTO {} (target, namespace, id) "
                    "SELECT %s, {}, id::text FROM _vec2pg_stage ON CONFLICT DO NOTHING"
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


def _why(exc: BaseException) -> str:
    """Why a run stopped, as the run log keeps it for ``vec2pg status``."""
    if isinstance(exc, TerminateSignal):
        return "terminated (SIGTERM)"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    return str(exc) or type(exc).__name__


def target_status(dsn: str, schema: str, table: str) -> dict[str, Any]:
    """The rows, last completed run and saved progress of ``schema.table``."""
    conn = open_connection(dsn)
    with conn, translate_errors(dsn, f"reading the status of {schema}.{table}"):
        return status(conn, schema, table)
