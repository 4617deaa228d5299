"""Chroma for scripts/bench: the embedded engine (``chromadb.PersistentClient``), one
collection per size in one folder, read in place; and as the baseline the loop a user writes
with chromadb: ``collection.get(limit=1000, offset=...)`` page after page, each page
inserted with ``executemany``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import psycopg
from bench_common import synthetic_chunks, synthetic_id, synthetic_metadata
from psycopg import sql

#: Rows per get of the baseline (and per add while seeding).
PAGE = 1000


class ChromaBench:
    name = "chroma"
    baseline = "chromadb's get(limit=1000, offset=...) page by page, each inserted with executemany"
    namespaced = False
    namespace = ""

    def __init__(self, args: argparse.Namespace) -> None:
        self._path: Path | None = None

    def table_id(self, i: int) -> str:
        return synthetic_id(i)

    def _collection(self, size: int) -> str:
        return f"bench{size}"

    def _client(self):  # type: ignore[no-untyped-def]
        import chromadb
        from chromadb.config import Settings

        assert self._path is not None
        return chromadb.PersistentClient(
            path=str(self._path), settings=Settings(anonymized_telemetry=False)
        )

    def start(self, work: Path, sizes: list[int], dim: int, latency: float) -> None:
        self._path = work / "chroma"
        with self._client() as client:
            step = min(5000, client.get_max_batch_size())
            for n in sizes:
                collection = client.create_collection(
                    self._collection(n),
                    embedding_function=None,
                    configuration={"hnsw": {"space": "l2"}},
                )
                for first, matrix in synthetic_chunks(n, dim):
                    for start in range(0, len(matrix), step):
                        rows = range(first + start, first + min(len(matrix), start + step))
                        collection.add(
                            ids=[synthetic_id(i) for i in rows],
                            embeddings=matrix[start : start + step],
                            metadatas=[synthetic_metadata(i) for i in rows],
                        )

    def vec2pg_args(self, size: int) -> list[str]:
        return ["chroma", self._collection(size), "--path", str(self._path)]

    def env(self) -> dict[str, str]:
        return {}

    def server_pid(self) -> int | None:
        return None

    def run_baseline(self, size: int, dsn: str, table: str) -> int:
        """Every row through get() by offset, each page one executemany."""
        from pgvector.psycopg import register_vector
        from psycopg.types.json import Jsonb

        schema, name = table.split(".")
        qualified = sql.Identifier(schema, name)
        written = 0
        with self._client() as client, psycopg.connect(dsn) as conn:
            collection = client.get_collection(self._collection(size), embedding_function=None)
            dim = len(collection.get(limit=1, include=["embeddings"])["embeddings"][0])
            conn.execute(
                sql.SQL(
                    "create table {} (id text primary key, embedding vector({}), metadata jsonb)"
                ).format(qualified, sql.Literal(dim))
            )
            register_vector(conn)
            insert = sql.SQL("insert into {} (id, embedding, metadata) values (%s, %s, %s)").format(
                qualified
            )
            offset = 0
            while True:
                got = collection.get(
                    limit=PAGE, offset=offset, include=["embeddings", "metadatas", "documents"]
                )
                rows = [
                    (i, np.asarray(e, dtype=np.float32), Jsonb(m))
                    for i, e, m in zip(got["ids"], got["embeddings"], got["metadatas"], strict=True)
                ]
                with conn.cursor() as cur:
                    cur.executemany(insert, rows)
                conn.commit()
                written += len(rows)
                offset += len(rows)
                if len(rows) < PAGE:
                    return written

    def stop(self) -> None:
        pass


def make(args: argparse.Namespace) -> ChromaBench:
    return ChromaBench(args)
