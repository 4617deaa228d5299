"""LanceDB for scripts/bench: a local LanceDB folder with one table per size, read in place;
and as the baseline the loop a user writes with lancedb: ``table.search().limit(None)
.to_batches(1000)``, each batch inserted with ``executemany``.

The vector column is named ``embedding`` (LanceDB's own default is ``vector``) so that
vec2pg's table has the column the bench compares with the ceiling's."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import psycopg
from bench_common import synthetic_chunks, synthetic_id
from psycopg import sql

#: Rows per batch of the baseline.
PAGE = 1000


class LanceDBBench:
    name = "lancedb"
    baseline = (
        "lancedb's search().limit(None).to_batches(1000), each batch inserted with executemany"
    )
    namespaced = False
    namespace = ""

    def __init__(self, args: argparse.Namespace) -> None:
        self._path: Path | None = None

    def table_id(self, i: int) -> str:
        return synthetic_id(i)

    def _table(self, size: int) -> str:
        return f"bench{size}"

    def start(self, work: Path, sizes: list[int], dim: int, latency: float) -> None:
        import lancedb
        import pyarrow as pa

        self._path = work / "lancedb"
        db = lancedb.connect(str(self._path))
        for n in sizes:
            table = None
            for first, matrix in synthetic_chunks(n, dim):
                numbers = np.arange(first, first + len(matrix), dtype=np.int64)
                data = pa.table(
                    {
                        "id": pa.array([synthetic_id(int(i)) for i in numbers]),
                        "embedding": pa.FixedSizeListArray.from_arrays(
                            pa.array(matrix.reshape(-1)), dim
                        ),
                        "n": pa.array(numbers),  # the metadata {"n": i}
                    }
                )
                if table is None:
                    table = db.create_table(self._table(n), data=data)
                else:
                    table.add(data)

    def vec2pg_args(self, size: int) -> list[str]:
        return ["lancedb", self._table(size), "--uri", str(self._path)]

    def env(self) -> dict[str, str]:
        return {}

    def server_pid(self) -> int | None:
        return None

    def run_baseline(self, size: int, dsn: str, table: str) -> int:
        """Every row through the table's batches, each batch one executemany."""
        import lancedb
        from pgvector.psycopg import register_vector
        from psycopg.types.json import Jsonb

        schema, name = table.split(".")
        qualified = sql.Identifier(schema, name)
        source = lancedb.connect(str(self._path)).open_table(self._table(size))
        dim = source.schema.field("embedding").type.list_size
        written = 0
        with psycopg.connect(dsn) as conn:
            conn.execute(
                sql.SQL(
                    "create table {} (id text primary key, embedding vector({}), metadata jsonb)"
                ).format(qualified, sql.Literal(dim))
            )
            register_vector(conn)
            insert = sql.SQL("insert into {} (id, embedding, metadata) values (%s, %s, %s)").format(
                qualified
            )
            for batch in source.search().limit(None).to_batches(PAGE):
                rows = [
                    (
                        row["id"],
                        np.asarray(row["embedding"], dtype=np.float32),
                        Jsonb({"n": row["n"]}),
                    )
                    for row in batch.to_pylist()
                ]
                with conn.cursor() as cur:
                    cur.executemany(insert, rows)
                conn.commit()
                written += len(rows)
        return written

    def stop(self) -> None:
        pass


def make(args: argparse.Namespace) -> LanceDBBench:
    return LanceDBBench(args)
