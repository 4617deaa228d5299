"""One decision for a run and its dry run: what the target holds, and what to do with it.

:func:`read_facts` reads everything the decision depends on into one value
(:class:`TargetFacts`); :func:`decide`, a pure function, turns the facts and the run's
options into a :class:`Decision`: the mode, whether it resumes an interrupted run, and the
statements that prepare the target. ``--dry-run`` prints that decision; the run reads the
facts again under its lock, decides again with the same function, and executes the same
statements. Two functions that decided the same thing would drift apart.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import sql

from vec2pg.errors import ConfigError, LockHeld, TargetStateError
from vec2pg.postgres import catalog
from vec2pg.postgres.layout import TableLayout
from vec2pg.postgres.state import Run, State, fingerprint, lock_key
from vec2pg.records import SourceInfo

if TYPE_CHECKING:
    from psycopg import Connection

    from vec2pg.postgres.sink import SyncOptions

MODES = ("load", "merge", "replace")


@dataclass(frozen=True, slots=True)
class TargetFacts:
    """What the target holds, as far as a run's decision goes."""

    extension: bool  # pgvector is enabled in the database
    schema: bool  # the target schema exists
    table: bool  # the target table exists
    columns: dict[str, str]  # its columns and their types ({} without a table)
    empty: bool  # it holds no rows (or does not exist)
    rows: int | None  # the rows it holds, if counted (None without a table)
    unfinished: Run | None  # a run on this target that did not complete
    staging: bool  # the new table a replace loads into exists
    #: The session holding the target's lock (pid, connected at), when another does.
    lock_holder: tuple[int, Any] | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What a run does to its target."""

    mode: str  # "load", "merge" or "replace"
    #: The interrupted run this one resumes, or None for a fresh run.
    resume: Run | None
    #: Statements before the target's lock, under the database's setup lock: the extension
    #: and the schema, if missing.
    setup: tuple[sql.Composed, ...]
    #: Statements under the lock, in the transaction that records the run.
    prepare: tuple[sql.Composed, ...]
    #: What the run's saved progress is tied to (its fingerprint is compared on resume).
    described: dict[str, Any]

    @property
    def statements(self) -> tuple[sql.Composed, ...]:
        return self.setup + self.prepare


def staging_table(table: str) -> str:
    """The table a replace loads into before it takes ``table``'s place."""
    digest = hashlib.sha256(table.encode()).hexdigest()[:12]
    return f"_vec2pg_new_{digest}"


def write_table(layout: TableLayout, mode: str) -> str:
    """The table a mode writes into: the target, or for replace the staging table."""
    return staging_table(layout.table) if mode == "replace" else layout.table


def read_facts(
    conn: Connection[Any], layout: TableLayout, *, lock_holder: bool, count_rows: bool = False
) -> TargetFacts:
    """The facts :func:`decide` needs, read in the caller's transaction (writing nothing).

    ``lock_holder``: also look for another session holding the target's lock (the dry run
    does; a run takes the lock instead). ``count_rows``: count the table's rows (the dry
    run shows them; a run needs only to know whether there are any).
    """
    schema, table = layout.schema, layout.table
    has_schema = catalog.schema_exists(conn, schema)
    exists = has_schema and catalog.table_exists(conn, schema, table)
    key = lock_key(schema, table)
    holder = catalog.advisory_lock_holder(conn, key) if lock_holder else None
    return TargetFacts(
        extension=catalog.extension_enabled(conn),
        schema=has_schema,
        table=exists,
        columns=catalog.column_types(conn, schema, table) if exists else {},
        empty=not exists or catalog.is_empty(conn, schema, table),
        rows=catalog.row_count(conn, schema, table) if exists and count_rows else None,
        unfinished=State(conn, schema, table).unfinished() if has_schema else None,
        staging=has_schema and catalog.table_exists(conn, schema, staging_table(table)),
        lock_holder=holder,
    )


def described(
    info: SourceInfo, layout: TableLayout, namespaces: list[str] | None, sync: SyncOptions
) -> dict[str, Any]:
    """What a run's saved progress holds for: the same source, columns and options."""
    return {
        "source": info.kind,
        "collection": info.collection,
        "location": info.location,
        "columns": dict(zip(layout.column_names, layout.sql_types, strict=True)),
        "namespaces": namespaces,
        "replace": sync.replace,
        "prune": sync.prune,
    }


def decide(
    facts: TargetFacts,
    info: SourceInfo,
    layout: TableLayout,
    namespaces: list[str] | None,
    sync: SyncOptions,
) -> Decision:
    """The run's mode, whether it resumes, and the statements that prepare the target.

    Raises what the run would stop with before writing anything: :class:`ConfigError` for
    options the source does not allow, :class:`LockHeld` when another run holds the
    target, :class:`TargetStateError` for saved progress of other options or a table with
    other columns.
    """
    if (sync.prune or sync.replace) and not info.complete:
        option = "--prune" if sync.prune else "--replace"
        raise ConfigError(
            f"{option} needs a source that holds the whole collection; {info.location} does not"
        )
    if sync.replace and namespaces is not None:
        # The new table would hold only these namespaces and the swap would drop the rest.
        raise ConfigError("--replace rebuilds the whole table: it does not go with --namespace")
    if facts.lock_holder is not None:
        raise lock_held(layout, facts.lock_holder)
    run = described(info, layout, namespaces, sync)
    setup: list[sql.Composed] = []
    if not facts.extension:
        setup.append(sql.SQL("CREATE EXTENSION IF NOT EXISTS vector").format())
    if not facts.schema:
        setup.append(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(layout.schema)))
    unfinished = facts.unfinished
    if unfinished is not None and not sync.restart:
        if unfinished.fingerprint != fingerprint(run):
            raise TargetStateError(
                f"{layout.display} has saved progress of an unfinished run (started "
                f"{unfinished.started:%Y-%m-%d %H:%M:%S}) with another source or options: "
                f"{_difference(unfinished.described, run)}; run it again as it was "
                "to resume, or add --restart to discard that progress"
            )
        writes_into = facts.staging if unfinished.mode == "replace" else facts.table
        if unfinished.mode == "load" or writes_into:
            return Decision(unfinished.mode, unfinished, tuple(setup), (), run)
    prepare: list[sql.Composed] = []
    empty = True
    if facts.table and not sync.replace:
        wanted = dict(zip(layout.column_names, layout.sql_types, strict=True))
        if _normalised(facts.columns) != wanted:
            if _original(facts.columns):
                raise TargetStateError(
                    f'table {layout.display} is the original vec2pg\'s ("values" vector, '
                    f"metadata json), and this vec2pg writes {_columns(wanted)}: --replace "
                    'rebuilds it (see the README, "Upgrading from the original vec2pg"), '
                    "or name another --table"
                )
            raise TargetStateError(
                f"table {layout.display} has columns {_columns(facts.columns)}, but this source "
                f"needs {_columns(wanted)}: use --replace to rebuild it, or another --table"
            )
        restarting_load = unfinished is not None and unfinished.mode == "load"
        if restarting_load:
            # An interrupted first load never finished: start it over.
            prepare.append(sql.SQL("TRUNCATE {}").format(layout.qualified))
        empty = restarting_load or facts.empty
    mode = _mode(info, facts.table, empty, sync)
    if mode == "replace":
        prepare.append(
            sql.SQL("DROP TABLE IF EXISTS {}").format(
                sql.Identifier(layout.schema, write_table(layout, mode))
            )
        )
    if mode == "replace" or not facts.table:
        prepare += table_statements(info, layout, write_table(layout, mode), key=mode == "merge")
    return Decision(mode, None, tuple(setup), tuple(prepare), run)


def _mode(info: SourceInfo, exists: bool, empty: bool, sync: SyncOptions) -> str:
    """A fresh run's mode, for a target table that exists (or not) and is empty (or not).

    A partial source (a rejects file) may repeat a record: it always merges, into a table
    that has its key from the start, so that repeats collapse instead of breaking the key.
    """
    if sync.replace:
        return "replace"
    return "load" if (empty or not exists) and info.complete else "merge"


def key_clause(layout: TableLayout) -> sql.Composed:
    keys = sql.SQL(", ").join(map(sql.Identifier, layout.key))
    return sql.SQL("PRIMARY KEY ({})").format(keys)


def table_statements(
    info: SourceInfo, layout: TableLayout, table: str, *, key: bool
) -> list[sql.Composed]:
    """CREATE TABLE and the comments that record each vector's source and metric."""
    target = sql.Identifier(layout.schema, table)
    constraints = layout.constraints
    columns: list[sql.Composable] = [
        sql.SQL("{} {}{}").format(
            sql.Identifier(name), sql.SQL(kind), sql.SQL(constraints.get(name, ""))
        )
        for name, kind in zip(layout.column_names, layout.sql_types, strict=True)
    ]
    options = sql.SQL("")
    if key:
        columns.append(key_clause(layout))
    else:
        # A bulk load: autovacuum could scan the table while it fills, taking CPU from the
        # load for work that is better done once, after it (PostgreSQL's advice for
        # populating a database). Finishing gives the table its key and autovacuum back.
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


def lock_held(
    layout: TableLayout, holder: tuple[int, Any] | None, waiting_for: list[str] | None = None
) -> LockHeld:
    """The error of a run that finds another one on its target (``waiting_for``: the
    sessions that one waits for, if it is waiting for a lock)."""
    who = (
        f" (PostgreSQL pid {holder[0]}, connected {holder[1]:%Y-%m-%d %H:%M:%S})" if holder else ""
    )
    waiting = (
        f"; it is waiting for a lock that {', '.join(waiting_for)} holds" if waiting_for else ""
    )
    return LockHeld(
        f"another vec2pg run{who} is writing to {layout.display}; this run stops without "
        f"writing (one run per target at a time){waiting}"
    )


def _difference(saved: dict[str, Any], now: dict[str, Any]) -> str:
    changed = [key for key in sorted(set(saved) | set(now)) if saved.get(key) != now.get(key)]
    return "; ".join(f"{key} was {saved.get(key)!r}, now {now.get(key)!r}" for key in changed[:3])


def _normalised(columns: dict[str, str]) -> dict[str, str]:
    """A table's columns with its id's type as the ``--id-type`` it stands for
    (catalog.ID_COLUMN_TYPES: vecs's ``character varying`` ids are text)."""
    held = columns.get("id")
    if held in catalog.ID_COLUMN_TYPES:
        return {**columns, "id": catalog.ID_COLUMN_TYPES[held]}
    return columns


def _original(columns: dict[str, str]) -> bool:
    """A table the original vec2pg (2024.6) made: ``id``, an untyped ``values vector``,
    ``metadata json`` (and Pinecone's ``namespace``)."""
    return columns.get("values") == "vector" and columns.get("metadata") == "json"


def _columns(columns: dict[str, str]) -> str:
    return ", ".join(f"{name} {kind}" for name, kind in columns.items())
