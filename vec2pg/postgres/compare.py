"""The PostgreSQL side of ``vec2pg verify``: a target table, read to be compared with its source.

A namespace's source ids are streamed page by page into a temporary table (``COPY``) and
compared there with anti-joins, so memory stays flat however large the namespace; sampled
rows are read back in binary, so that pgvector's loaders read each float exactly as
stored. Nothing is written to the target table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import sql

from vec2pg.errors import TargetStateError
from vec2pg.masking import mask_dsn
from vec2pg.postgres import catalog
from vec2pg.postgres.connection import open_connection, translate_errors
from vec2pg.postgres.encode import bigint_id
from vec2pg.postgres.layout import TableLayout, TextColumn, VectorColumn

if TYPE_CHECKING:
    from psycopg import Connection

_IDS = sql.Identifier("_vec2pg_verify_ids")


@dataclass(frozen=True, slots=True)
class StoredColumn:
    """A vector column as the table holds it."""

    vector: VectorColumn
    half: bool  # stored as halfvec: compared within half precision


class TargetTable:
    """The target table of a verification, read through one connection of its own."""

    def __init__(self, dsn: str, layout: TableLayout) -> None:
        self._dsn = dsn
        self._layout = layout
        self._conn: Connection[Any] | None = None
        #: The vector columns, once the table is open.
        self.columns: list[StoredColumn] = []

    @property
    def conn(self) -> Connection[Any]:
        if self._conn is None:
            raise RuntimeError("use TargetTable as a context manager")
        return self._conn

    @property
    def folded(self) -> tuple[str, ...]:
        """The source's text fields the table keeps in its metadata (a vecs collection)."""
        return self._layout.folded

    @property
    def texts(self) -> tuple[TextColumn, ...]:
        """The text columns (the source's text fields)."""
        return self._layout.texts

    def __enter__(self) -> TargetTable:
        layout = self._layout
        self._conn = open_connection(self._dsn, "vec2pg verify")
        try:
            with self._translate(f"reading the columns of {layout.display}"):
                self.columns = self._check_columns()
                from pgvector.psycopg import register_vector

                register_vector(self.conn)
                self.conn.execute(
                    sql.SQL(
                        "CREATE TEMP TABLE IF NOT EXISTS {} (id text) ON COMMIT DELETE ROWS"
                    ).format(_IDS)
                )
                self.conn.commit()
        except BaseException:
            self.conn.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()  # read only: nothing to commit; the temporary table goes too

    def _check_columns(self) -> list[StoredColumn]:
        """The vector columns, after checking the table exists and suits the source."""
        layout = self._layout
        if not catalog.table_exists(self.conn, layout.schema, layout.table):
            raise TargetStateError(
                f"table {layout.display} does not exist in {mask_dsn(self._dsn)}: nothing to "
                "verify; migrate first, or name the table with --schema and --table"
            )
        held = catalog.column_types(self.conn, layout.schema, layout.table)
        # A dense vector may be stored in half precision (--halfvec).
        accepted = {
            name: {kind} for name, kind in zip(layout.column_names, layout.sql_types, strict=True)
        }
        for vector in layout.vectors:
            accepted[vector.name].add(dataclasses.replace(vector, halfvec=True).sql_type)
        # Ids compare as text whatever id type the table has (catalog.ID_COLUMN_TYPES).
        accepted["id"] |= set(catalog.ID_COLUMN_TYPES)
        wanted = dict(zip(layout.column_names, layout.sql_types, strict=True))
        wrong = [
            f"{name} {wanted[name]} (the table has {held.get(name) or 'no such column'})"
            for name in layout.column_names
            if held.get(name) not in accepted[name]
        ]
        if wrong:
            raise TargetStateError(
                f"table {layout.display} was not migrated from this source: it needs "
                f"{'; '.join(wrong)}; name the right table with --schema and --table"
            )
        self._layout = dataclasses.replace(layout, id_type=catalog.ID_COLUMN_TYPES[held["id"]])
        return [
            StoredColumn(vector, held[vector.name].startswith("halfvec"))
            for vector in layout.vectors
        ]

    def counts(self, namespaces: list[str] | None) -> dict[str, int]:
        """Rows per namespace (``""`` when the table has no namespaces)."""
        layout = self._layout
        if not layout.namespaced:
            query = sql.SQL("SELECT '', count(*) FROM {}")
        elif namespaces is None:
            query = sql.SQL("SELECT namespace, count(*) FROM {} GROUP BY 1")
        else:
            query = sql.SQL(
                "SELECT namespace, count(*) FROM {} WHERE namespace = ANY(%s) GROUP BY 1"
            )
        params = [namespaces] if layout.namespaced and namespaces is not None else None
        with self._translate(f"counting the rows of {layout.display}"):
            rows = self.conn.execute(query.format(layout.qualified), params).fetchall()
            self.conn.commit()
        return {str(namespace): int(count) for namespace, count in rows}

    def copy_ids(self, pages: Iterable[Sequence[str]]) -> None:
        """Copy a namespace's source ids, page by page, into a temporary table, for
        :meth:`missing` and :meth:`extra`; :meth:`forget_ids` drops them."""
        with self._translate("copying the source's ids into PostgreSQL"):
            statement = sql.SQL("COPY {} (id) FROM STDIN").format(_IDS)
            with self.conn.cursor().copy(statement) as copy:
                for ids in pages:
                    for record_id in ids:
                        copy.write_row((record_id,))
            # Temporary tables are never analysed automatically: without statistics the
            # planner guesses a few rows and may choose a nested-loop anti-join.
            self.conn.execute(sql.SQL("ANALYZE {}").format(_IDS))

    def forget_ids(self) -> None:
        """Drop the copied ids: the temporary table empties itself on commit."""
        with self._translate("dropping the source's ids"):
            self.conn.commit()

    def missing(self, namespace: str, shown: int) -> tuple[int, list[str]]:
        """Source ids (copied by :meth:`copy_ids`) that are no row of the table: how many,
        and the first ``shown`` of them in byte order."""
        return self._one_sided(
            "SELECT s.id FROM {ids} AS s WHERE NOT EXISTS "
            "(SELECT FROM {table} AS t WHERE {in_namespace}{t_id} = s.id)",
            namespace,
            shown,
        )

    def extra(self, namespace: str, shown: int) -> tuple[int, list[str]]:
        """Rows of the table whose ids the source did not list (as :meth:`missing`)."""
        return self._one_sided(
            "SELECT {t_id} AS id FROM {table} AS t WHERE {in_namespace}NOT EXISTS "
            "(SELECT FROM {ids} AS s WHERE s.id = {t_id})",
            namespace,
            shown,
        )

    def _one_sided(self, ids_query: str, namespace: str, shown: int) -> tuple[int, list[str]]:
        layout = self._layout
        in_namespace = sql.SQL("t.namespace = %(namespace)s AND " if layout.namespaced else "")
        query = sql.SQL(
            "WITH found AS ({}) SELECT (SELECT count(*) FROM found), "
            # Byte order, whatever the database's collation: the order Pinecone lists in.
            'ARRAY(SELECT id FROM found ORDER BY id COLLATE "C" LIMIT %(shown)s)'
        ).format(
            sql.SQL(ids_query).format(
                ids=_IDS, table=layout.qualified, in_namespace=in_namespace, t_id=self._text_id
            )
        )
        with self._translate(f"comparing ids with {layout.display}"):
            row = self.conn.execute(query, {"namespace": namespace, "shown": shown}).fetchone()
        assert row is not None
        return int(row[0]), [str(i) for i in row[1]]

    def rows(self, namespace: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The rows of these ids in ``namespace``, by id: each column's value by name."""
        layout = self._layout
        texts = (t.name for t in layout.texts)
        names = ["id", *(c.vector.name for c in self.columns), *texts, "metadata"]
        in_namespace = "namespace = %(namespace)s AND " if layout.namespaced else ""
        query = sql.SQL("SELECT {} FROM {} WHERE {}id = ANY(%(ids)s)").format(
            sql.SQL(", ").join(map(sql.Identifier, names)),
            layout.qualified,
            sql.SQL(in_namespace),
        )
        keys: list[Any] = list(ids)
        if layout.id_type == "bigint":  # ids that cannot be a bigint are no rows
            keys = [key for key in map(bigint_id, ids) if key is not None]
        with self._translate(f"reading sampled rows of {layout.display}"):
            # Binary: pgvector's loaders then read each float exactly as stored.
            cursor = self.conn.cursor(binary=True)
            fetched = cursor.execute(query, {"namespace": namespace, "ids": keys}).fetchall()
            self.conn.commit()
        return {str(values[0]): dict(zip(names, values, strict=True)) for values in fetched}

    @property
    def _text_id(self) -> sql.Composable:
        """The table's id as the text the source's ids are compared with."""
        return sql.SQL("t.id::text" if self._layout.id_type == "bigint" else "t.id")

    def _translate(self, doing: str) -> AbstractContextManager[None]:
        return translate_errors(self._dsn, doing)
