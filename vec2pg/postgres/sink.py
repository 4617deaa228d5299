"""The shared PostgreSQL sink: create the table, then stream batches into it with binary COPY.

It knows nothing of any source: it takes a :class:`~vec2pg.records.SourceInfo` and
:class:`~vec2pg.records.Batch` es. Rows go through one ``COPY ... FROM STDIN (FORMAT
BINARY)`` per transaction, and a transaction holds many batches (``commit_rows`` rows),
so that neither round trips nor commits dominate.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from vec2pg.errors import TargetError, TargetStateError, TargetUnavailable
from vec2pg.postgres.encode import (
    EncodedJson,
    JsonbBinaryDumper,
    SparseBinaryDumper,
    row_encoder,
)
from vec2pg.postgres.layout import TableLayout, layout_for
from vec2pg.postgres.target import mask_dsn
from vec2pg.records import Batch, SourceInfo, SparseVector

if TYPE_CHECKING:
    from psycopg import Connection

#: Rows per transaction. Large enough that commits cost nothing next to the data (10,000
#: rows of 1024-dim float32 are ~40 MB), small enough that an interrupted run loses little.
DEFAULT_COMMIT_ROWS = 10_000


class PostgresSink:
    """Write records into ``schema.table`` of the database at ``dsn``."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "vec2pg",
        table: str | None = None,
        commit_rows: int = DEFAULT_COMMIT_ROWS,
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.table = table
        self.commit_rows = commit_rows
        self.layout: TableLayout | None = None
        self._conn: Connection[Any] | None = None

    @property
    def location(self) -> str:
        return mask_dsn(self.dsn)

    def connect(self) -> None:
        try:
            self._conn = psycopg.connect(self.dsn, application_name="vec2pg", connect_timeout=15)
        except psycopg.OperationalError as exc:
            raise TargetError(
                f"cannot connect to PostgreSQL at {self.location}: {_first_line(exc)}"
            ) from exc
        except psycopg.ProgrammingError as exc:  # a malformed DSN
            raise TargetError(
                f"invalid PostgreSQL DSN {self.location}: {_first_line(exc)}"
            ) from exc

    @property
    def conn(self) -> Connection[Any]:
        if self._conn is None:
            self.connect()
        assert self._conn is not None
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> PostgresSink:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def prepare(self, info: SourceInfo) -> TableLayout:
        """Create the extension, schema and table for ``info``; refuse a table holding data."""
        layout = layout_for(info, self.schema, self.table)
        with self._translate(f"preparing {layout.display}"):
            self._ensure_extension()
            self._register_types()
            with self.conn.transaction():
                self.conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(layout.schema))
                )
                if self._table_exists(layout):
                    self._check_existing(layout)
                else:
                    self._create_table(layout, info)
        self.layout = layout
        return layout

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
        from pgvector.psycopg import register_vector
        from psycopg.types import TypeInfo

        register_vector(self.conn)
        adapters = self.conn.adapters
        for python_type, dumper, type_name in (
            (EncodedJson, JsonbBinaryDumper, "jsonb"),
            (SparseVector, SparseBinaryDumper, "sparsevec"),
        ):
            info = TypeInfo.fetch(self.conn, type_name)
            assert info is not None
            adapters.register_dumper(python_type, type("", (dumper,), {"oid": info.oid}))

    def _table_exists(self, layout: TableLayout) -> bool:
        row = self.conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", [layout.qualified.as_string(self.conn)]
        ).fetchone()
        return bool(row and row[0])

    def _check_existing(self, layout: TableLayout) -> None:
        columns = {
            name
            for (name,) in self.conn.execute(
                "SELECT attname FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                [layout.qualified.as_string(self.conn)],
            ).fetchall()
        }
        if columns != set(layout.column_names):
            raise TargetStateError(
                f"table {layout.display} exists with columns {sorted(columns)}, but this source "
                f"needs {sorted(layout.column_names)}: use another --table, or drop it"
            )
        has_rows = self.conn.execute(
            sql.SQL("SELECT EXISTS (SELECT FROM {})").format(layout.qualified)
        ).fetchone()
        if has_rows and has_rows[0]:
            raise TargetStateError(
                f"table {layout.display} already holds rows; this version of vec2pg does not "
                "resync into a table with data: use another --table, or empty it first"
            )

    def _create_table(self, layout: TableLayout, info: SourceInfo) -> None:
        columns: list[sql.Composable] = [sql.SQL("id text NOT NULL")]
        if layout.namespaced:
            columns.append(sql.SQL("namespace text NOT NULL"))
        columns += [
            sql.SQL("{} {}").format(sql.Identifier(v.name), v.sql_type) for v in layout.vectors
        ]
        columns.append(sql.SQL("metadata jsonb"))
        columns.append(
            sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, layout.key)))
        )
        self.conn.execute(
            sql.SQL("CREATE TABLE {} ({})").format(layout.qualified, sql.SQL(", ").join(columns))
        )
        comment = f"vec2pg: {info.kind} collection {info.collection!r} at {info.location}"
        self.conn.execute(
            sql.SQL("COMMENT ON TABLE {} IS {}").format(layout.qualified, sql.Literal(comment))
        )
        for vector in layout.vectors:
            self.conn.execute(
                sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
                    layout.qualified,
                    sql.Identifier(vector.name),
                    sql.Literal(vector.comment(info.kind)),
                )
            )

    @contextmanager
    def loader(self) -> Iterator[Loader]:
        """Open a loader; its exit commits what was written, or rolls back on an error."""
        assert self.layout is not None, "prepare() first"
        loader = Loader(self, self.layout)
        with self._translate(f"writing to {self.layout.display}"):
            try:
                yield loader
            except BaseException:
                loader.abort()
                raise
            loader.commit()

    @contextmanager
    def _translate(self, doing: str) -> Iterator[None]:
        """Turn psycopg's errors into vec2pg's, naming what we were doing."""
        try:
            yield
        except psycopg.OperationalError as exc:
            raise TargetUnavailable(
                f"lost the connection to PostgreSQL at {self.location} while {doing}: "
                f"{_first_line(exc)}"
            ) from exc
        except psycopg.Error as exc:
            raise TargetError(f"PostgreSQL failed while {doing}: {_first_line(exc)}") from exc


class Loader:
    """Writes batches through binary COPY, committing every ``commit_rows`` rows."""

    def __init__(self, sink: PostgresSink, layout: TableLayout) -> None:
        self._sink = sink
        self._conn = sink.conn
        self._layout = layout
        self._encode = row_encoder(layout)
        self._copy: Any = None
        self._copy_cm: Any = None
        self._pending = 0
        self.committed = 0

    def write(self, batch: Batch) -> int:
        """Check and write ``batch``; return how many rows it wrote."""
        rows = [self._encode(record) for record in batch.records]  # raises before any COPY
        if not rows:
            return 0
        copy = self._copy or self._open_copy()
        for row in rows:
            copy.write_row(row)
        self._pending += len(rows)
        if self._pending >= self._sink.commit_rows:
            self.commit()
        return len(rows)

    def _open_copy(self) -> Any:
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            self._layout.qualified,
            sql.SQL(", ").join(map(sql.Identifier, self._layout.column_names)),
        )
        self._copy_cm = self._conn.cursor().copy(statement)
        self._copy = self._copy_cm.__enter__()
        self._copy.set_types(self._layout.copy_types)
        return self._copy

    def commit(self) -> None:
        if self._copy_cm is not None:
            cm, self._copy_cm, self._copy = self._copy_cm, None, None
            cm.__exit__(None, None, None)
        self._conn.commit()
        self.committed += self._pending
        self._pending = 0

    def abort(self) -> None:
        """Drop the open COPY and roll back the rows since the last commit."""
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
        self._pending = 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
