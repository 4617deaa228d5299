"""What PostgreSQL's catalog says about a target: one query per question, asked everywhere.

Every function reads through the caller's connection and transaction, and changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from psycopg import sql

from vec2pg.postgres.layout import quote

if TYPE_CHECKING:
    from psycopg import Connection


def display(schema: str, table: str) -> str:
    """A table's name as a person would type it in psql: ``"schema"."table"``."""
    return f"{quote(schema)}.{quote(table)}"


def _regclass(conn: Connection[Any], schema: str, table: str) -> str:
    return sql.Identifier(schema, table).as_string(conn)


def extension_enabled(conn: Connection[Any], name: str = "vector") -> bool:
    row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = %s", [name]).fetchone()
    return row is not None


def schema_exists(conn: Connection[Any], schema: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema]).fetchone()
        is not None
    )


def table_exists(conn: Connection[Any], schema: str, table: str) -> bool:
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", [_regclass(conn, schema, table)]
    ).fetchone()
    return bool(row and row[0])


def column_types(conn: Connection[Any], schema: str, table: str) -> dict[str, str]:
    """A table's columns and their types, as format_type() spells them, in column order."""
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        [_regclass(conn, schema, table)],
    ).fetchall()
    return dict(rows)


#: An id column's type, as the ``--id-type`` it stands for: a collection vecs itself
#: created has ``character varying`` ids, which vec2pg reads and writes as text.
ID_COLUMN_TYPES = {"bigint": "bigint", "text": "text", "character varying": "text"}


def id_type(conn: Connection[Any], schema: str, table: str) -> str | None:
    """The ``--id-type`` a table's ``id`` column has (:data:`ID_COLUMN_TYPES`); None without
    such a table or column."""
    if not table_exists(conn, schema, table):
        return None
    return ID_COLUMN_TYPES.get(column_types(conn, schema, table).get("id") or "")


def has_primary_key(conn: Connection[Any], schema: str, table: str) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p')",
        [_regclass(conn, schema, table)],
    ).fetchone()
    return bool(row and row[0])


def primary_key_name(conn: Connection[Any], schema: str, table: str) -> str | None:
    row = conn.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
        [_regclass(conn, schema, table)],
    ).fetchone()
    return str(row[0]) if row else None


def is_empty(conn: Connection[Any], schema: str, table: str) -> bool:
    row = conn.execute(
        sql.SQL("SELECT NOT EXISTS (SELECT FROM {})").format(sql.Identifier(schema, table))
    ).fetchone()
    return bool(row and row[0])


def row_count(conn: Connection[Any], schema: str, table: str) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
    ).fetchone()
    return int(row[0]) if row else 0


def advisory_lock_holder(conn: Connection[Any], key: int) -> tuple[int, Any] | None:
    """The PostgreSQL pid and connection time of the session holding advisory lock ``key``."""
    row = conn.execute(
        "SELECT a.pid, a.backend_start FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
        "WHERE l.locktype = 'advisory' AND l.granted "
        "AND l.classid = ((%s::bigint >> 32) & 4294967295)::oid "
        "AND l.objid = (%s::bigint & 4294967295)::oid",
        [key, key],
    ).fetchone()
    return (int(row[0]), row[1]) if row else None
