"""Milvus for scripts/bench: the embedded engine (Milvus Lite, ``MilvusClient("x.db")``),
one collection per size in one database folder, read in place by vec2pg's process; and as
the baseline the loop a user writes with pymilvus: ``query_iterator()`` with its default
batch of 1,000 rows, each batch inserted with ``executemany``.

A collection: a varchar primary key ``pk`` (the synthetic ids), the float vector
``embedding`` with a FLAT index (L2, so vec2pg's column says ``euclidean``), and the int64
field ``n`` (the metadata ``{"n": i}``), all in the partition ``_default`` (the table's
namespace). Milvus Lite serves a database to one process at a time (it locks the folder),
so seeding and the baseline stop their in-process server when done, for vec2pg's process
to open it.

Milvus Lite's server runs in the reading process and scans the whole partition for every
query (it copies each of its vectors): its pages cost more the larger the collection, and
its CPU, not vec2pg's, bounds a run (see the README's Milvus section).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from bench_common import synthetic_chunks, synthetic_id
from psycopg import sql

#: Rows per insert while seeding.
INSERT_ROWS = 5000
#: pymilvus's query_iterator batch when none is given: what the simple loop uses.
BASELINE_BATCH = 1000


class MilvusBench:
    name = "milvus"
    baseline = (
        "pymilvus's query_iterator() (1,000 rows a batch) on Milvus Lite, each batch inserted "
        "with executemany"
    )
    namespaced = True
    namespace = "_default"

    def __init__(self, args: argparse.Namespace) -> None:
        self._path: Path | None = None

    def table_id(self, i: int) -> str:
        return synthetic_id(i)

    def _collection(self, size: int) -> str:
        return f"bench{size}"

    def start(self, work: Path, sizes: list[int], dim: int, latency: float) -> None:
        from pymilvus import DataType, MilvusClient

        work.mkdir(parents=True, exist_ok=True)
        self._path = work / "milvus.db"
        client = MilvusClient(str(self._path))
        try:
            for n in sizes:
                schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
                schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=16)
                schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
                schema.add_field("n", DataType.INT64)
                index = client.prepare_index_params()
                index.add_index("embedding", index_type="FLAT", metric_type="L2")
                client.create_collection(self._collection(n), schema=schema, index_params=index)
                for first, matrix in synthetic_chunks(n, dim):
                    for start in range(0, len(matrix), INSERT_ROWS):
                        rows = matrix[start : start + INSERT_ROWS]
                        client.insert(
                            self._collection(n),
                            [
                                {"pk": synthetic_id(i), "embedding": vector, "n": i}
                                for i, vector in enumerate(rows, first + start)
                            ],
                        )
        finally:
            self._release(client)

    def _release(self, client: Any) -> None:
        from milvus_lite.server_manager import server_manager_instance

        client.close()
        server_manager_instance.release_server(str(self._path))

    def vec2pg_args(self, size: int) -> list[str]:
        return ["milvus", self._collection(size), "--uri", str(self._path)]

    def env(self) -> dict[str, str]:
        return {}

    def server_pid(self) -> int | None:
        return None  # the engine runs in the reading process

    def run_baseline(self, size: int, dsn: str, table: str) -> int:
        """Every row through query_iterator(), each batch one executemany."""
        from pgvector.psycopg import register_vector
        from psycopg.types.json import Jsonb
        from pymilvus import MilvusClient

        logging.getLogger("pymilvus").setLevel(logging.ERROR)  # "failed to get mvccTs"
        schema, name = table.split(".")
        qualified = sql.Identifier(schema, name)
        client = MilvusClient(str(self._path))
        written = 0
        try:
            collection = self._collection(size)
            if client.get_load_state(collection)["state"].name != "Loaded":
                client.load_collection(collection)  # an indexed collection, after a restart
            dim = client.describe_collection(collection)["fields"][1]["params"]["dim"]
            with psycopg.connect(dsn) as conn:
                conn.execute(
                    sql.SQL(
                        "create table {} (id text primary key, namespace text, "
                        "embedding vector({}), metadata jsonb)"
                    ).format(qualified, sql.Literal(dim))
                )
                register_vector(conn)
                insert = sql.SQL(
                    "insert into {} (id, namespace, embedding, metadata) values (%s, %s, %s, %s)"
                ).format(qualified)
                iterator = client.query_iterator(
                    collection, batch_size=BASELINE_BATCH, output_fields=["*"]
                )
                while batch := iterator.next():
                    rows = [
                        (
                            row["pk"],
                            self.namespace,
                            np.asarray(row["embedding"], dtype=np.float32),
                            Jsonb({"n": row["n"]}),
                        )
                        for row in batch
                    ]
                    with conn.cursor() as cur:
                        cur.executemany(insert, rows)
                    conn.commit()
                    written += len(rows)
                iterator.close()
        finally:
            self._release(client)
        return written

    def stop(self) -> None:
        pass


def make(args: argparse.Namespace) -> MilvusBench:
    return MilvusBench(args)
