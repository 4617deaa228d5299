"""Elasticsearch for scripts/bench: tests/search_server.py in its own process (Elasticsearch
9.3, one index per size, one shard each as Elasticsearch creates them by default, vectors
kept out of _source as 9.2+ does, so that both sides must ask for them), and as the
baseline the loop a user writes with the official client: a point in time, ``search_after``
1,000 documents a search (helpers.scan's page) sorted by ``_shard_doc``, asking for the
vectors, into one COPY.

The vectors are ``l2_norm`` ones: Elasticsearch gives them back exactly (cosine ones come
back re-normalised, which the bench's comparison with the seeded data would count as
different). ``$VEC2PG_BENCH_SHARDS`` sets the shards of each index.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from bench_common import SEED, synthetic_id
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "YmVuY2g6YmVuY2gta2V5"  # base64 of "bench:bench-key", as Kibana shows keys
PAGE = 1000


class SearchBench:
    """The test server as Elasticsearch or OpenSearch; the baseline is the flavor's."""

    name = "elasticsearch"
    flavor = "elasticsearch"
    baseline = (
        "elasticsearch-py: a point in time, search_after 1,000 documents a search "
        "(sort _shard_doc, exclude_vectors false), one COPY"
    )
    namespaced = False
    namespace = ""

    def __init__(self, args: argparse.Namespace) -> None:
        self._server: subprocess.Popen[str] | None = None
        self.url = ""
        self.dim = 0
        self.shards = int(os.environ.get("VEC2PG_BENCH_SHARDS", "1"))

    def table_id(self, i: int) -> str:
        return synthetic_id(i)

    def _index(self, size: int) -> str:
        return f"bench-{size}"

    def _auth(self) -> list[str]:
        return ["--api-key", API_KEY]

    def start(self, work: Path, sizes: list[int], dim: int, latency: float) -> None:
        largest = max(sizes)
        self.dim = dim
        cmd = [sys.executable, str(ROOT / "tests" / "search_server.py"), "--flavor", self.flavor]
        cmd += ["--latency", str(latency), "--dim", str(dim), "--seed", str(SEED)]
        cmd += ["--similarity", "l2_norm", "--shards", str(self.shards), "--no-group"]
        cmd += ["--index", self._index(largest), "--records", str(largest)]
        cmd += [f"--also={self._index(n)}:{n}" for n in sizes if n != largest]
        cmd += self._server_auth()
        self._server = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._server.stdout is not None
        line = self._server.stdout.readline()
        if not line:
            raise SystemExit(f"the search test server exited with {self._server.wait()}")
        self.url = json.loads(line)["url"]

    def _server_auth(self) -> list[str]:
        return ["--api-key", API_KEY]

    def vec2pg_args(self, size: int) -> list[str]:
        return [self.name, self._index(size), "--url", self.url, *self._auth()]

    def env(self) -> dict[str, str]:
        return {}

    def server_pid(self) -> int | None:
        return self._server.pid if self._server else None

    def run_baseline(self, size: int, dsn: str, table: str) -> int:
        """Every document through a point in time with search_after, one COPY."""
        from elasticsearch import Elasticsearch

        with Elasticsearch(self.url, api_key=API_KEY, request_timeout=120) as es:
            pit = es.open_point_in_time(index=self._index(size), keep_alive="5m")["id"]
            after: Any = None

            def pages() -> Any:
                nonlocal pit, after
                while True:
                    answer = es.search(
                        pit={"id": pit, "keep_alive": "5m"},
                        sort=["_shard_doc"],
                        size=PAGE,
                        search_after=after,
                        source={"exclude_vectors": False},
                        track_total_hits=False,
                    )
                    pit = answer["pit_id"]
                    hits = answer["hits"]["hits"]
                    if not hits:
                        return
                    yield hits
                    after = hits[-1]["sort"]

            try:
                return copy_hits(pages(), dsn, table, self.dim)
            finally:
                es.close_point_in_time(id=pit)

    def stop(self) -> None:
        if self._server is not None:
            if self._server.stdin is not None:
                self._server.stdin.close()  # it serves until its stdin closes
            try:
                self._server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
            self._server = None


def copy_hits(pages: Any, dsn: str, table: str, dim: int) -> int:
    """Write pages of hits (``_id``, ``_source`` with ``embedding``) with one binary COPY
    into ``table``, created here; return how many."""
    from pgvector.psycopg import register_vector
    from psycopg.types.json import Jsonb

    schema, name = table.split(".")
    qualified = sql.Identifier(schema, name)
    written = 0
    with psycopg.connect(dsn) as conn:
        conn.execute(
            sql.SQL(
                "create table {} (id text primary key, embedding vector({}), metadata jsonb)"
            ).format(qualified, sql.Literal(dim))
        )
        register_vector(conn)
        statement = sql.SQL(
            "copy {} (id, embedding, metadata) from stdin with (format binary)"
        ).format(qualified)
        with conn.cursor().copy(statement) as copy:
            copy.set_types(["text", "vector", "jsonb"])
            for hits in pages:
                for hit in hits:
                    source = hit["_source"]
                    vector = np.asarray(source.pop("embedding"), dtype=np.float32)
                    copy.write_row((hit["_id"], vector, Jsonb(source)))
                    written += 1
    return written


def make(args: argparse.Namespace) -> SearchBench:
    return SearchBench(args)
