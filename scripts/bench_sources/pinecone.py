"""Pinecone for scripts/bench: tests/pinecone_server.py in its own process, and the
original vec2pg's loop (2024.6.0's ``pinecone migrate``) as the baseline."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from bench_common import SEED, synthetic_id
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "bench-key"
NAMESPACE = "ns"


class PineconeBench:
    name = "pinecone"
    baseline = "the original vec2pg's loop: list 100 ids, fetch them, a new COPY per page"
    namespaced = True
    namespace = NAMESPACE

    def __init__(self, args: argparse.Namespace) -> None:
        self._server: subprocess.Popen[str] | None = None
        self._hosts: dict[str, str] = {}
        self._control = ""

    def table_id(self, i: int) -> str:
        return synthetic_id(i)

    def _index(self, size: int) -> str:
        return f"bench-{size}"

    def start(self, work: Path, sizes: list[int], dim: int, latency: float) -> None:
        cmd = [sys.executable, str(ROOT / "tests" / "pinecone_server.py")]
        cmd += ["--api-key", API_KEY, "--latency", str(latency)]
        for n in sizes:
            cmd += ["--index", f"{self._index(n)}:{dim}:cosine"]
            cmd += ["--synthetic", f"{self._index(n)}:{NAMESPACE}:{n}:{SEED}"]
        self._server = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._server.stdout is not None
        line = self._server.stdout.readline()
        if not line:
            raise SystemExit(f"the Pinecone test server exited with {self._server.wait()}")
        ready = json.loads(line)
        self._hosts, self._control = ready["hosts"], ready["url"]

    def vec2pg_args(self, size: int) -> list[str]:
        index = self._index(size)
        return ["pinecone", index, "--host", self._hosts[index], "--api-key", API_KEY]

    def env(self) -> dict[str, str]:
        return {}

    def server_pid(self) -> int | None:
        return self._server.pid if self._server else None

    def run_baseline(self, size: int, dsn: str, table: str) -> int:
        """vec2pg 2024.6.0's ``pinecone migrate``, step for step, on SDK 10.x.

        Differences forced by the SDK: 10.x's ``list()`` yields ``ListResponse`` pages (4.x
        yielded lists of ids) and ``fetch`` is keyword-only. The progress bar is left out.
        """
        from pgvector.psycopg import register_vector
        from pinecone import Pinecone

        client = Pinecone(api_key=API_KEY, host=self._control)
        index_client = client.Index(self._index(size))  # the name -> host, as 2024.6 did
        namespaces = list(index_client.describe_index_stats()["namespaces"])
        schema, name = table.split(".")
        qualified = sql.Identifier(schema, name)
        conn = psycopg.connect(dsn, autocommit=True)
        conn.execute(
            sql.SQL(
                "create table {} (id text, values vector, namespace text, metadata json)"
            ).format(qualified)
        )
        register_vector(conn)
        copy_statement = sql.SQL(
            "copy {}(id, values, namespace, metadata) from stdin with (format binary)"
        ).format(qualified)
        written = 0
        for namespace in namespaces:
            for page in index_client.list(namespace=namespace, limit=100):
                ids = [item.id for item in page.vectors]
                batch = index_client.fetch(ids=ids, namespace=namespace)
                records: list[Any] = [
                    (rec["id"], np.array(rec["values"]), namespace, rec.get("metadata"))
                    for rec in batch.vectors.values()
                ]
                with conn.cursor().copy(copy_statement) as copy:
                    copy.set_types(["text", "vector", "text", "json"])
                    for rec in records:
                        copy.write_row(rec)
                written += len(records)
        conn.close()
        return written

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


def make(args: argparse.Namespace) -> PineconeBench:
    return PineconeBench(args)
