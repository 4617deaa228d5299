"""Qdrant for scripts/bench: tests/qdrant_server.py in its own process (REST, and gRPC from
the same collections), and the original vec2pg's loop as the baseline.

vec2pg reads over REST, or over gRPC with ``--vec2pg-args --grpc`` (or an ``args.transport``
of ``"grpc"``). The baseline is the same for both: the original vec2pg's ``qdrant
migrate`` (its repository's ``plugins/qdrant.py``; no release holds it), which reads over
REST as qdrant-client does by default. Its offset is advanced as a count (100 a page),
which reads every point once only with ids 0..N-1: the collections have those ids.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from bench_common import SEED
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "bench-key"


class QdrantBench:
    baseline = (
        "the original vec2pg's loop: scroll 100 points (offset advanced as a count), "
        "a new COPY of numpy float64 arrays per page"
    )
    namespaced = False
    namespace = ""

    def __init__(self, args: argparse.Namespace, transport: str | None = None) -> None:
        transport = transport or getattr(args, "transport", None)
        #: --vec2pg-args '--grpc' adds the flag itself; the port is always given.
        self._flag_given = "--grpc" in str(getattr(args, "vec2pg_args", "")).split()
        if transport is None:
            grpc = self._flag_given or getattr(args, "source", "") == "qdrant-grpc"
            transport = "grpc" if grpc else "rest"
        if transport not in ("rest", "grpc"):
            raise SystemExit(f"--transport is rest or grpc, not {transport!r}")
        self.grpc = transport == "grpc"
        self.name = "qdrant-grpc" if self.grpc else "qdrant"
        self._server: subprocess.Popen[str] | None = None
        self._ready: dict[str, Any] = {}

    def table_id(self, i: int) -> str:
        return str(i)

    def _collection(self, size: int) -> str:
        return f"bench-{size}"

    def start(self, work: Path, sizes: list[int], dim: int, latency: float) -> None:
        cmd = [sys.executable, str(ROOT / "tests" / "qdrant_server.py"), "--bench"]
        cmd += ["--api-key", API_KEY, "--latency", str(latency), "--grpc-port", "0"]
        cmd += ["--dim", str(dim), "--seed", str(SEED)]
        for n in sizes:
            cmd += ["--collection", f"{self._collection(n)}:{n}"]
        self._server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self._server.stdout is not None
        line = self._server.stdout.readline()
        if not line:
            raise SystemExit(f"the Qdrant test server exited with {self._server.wait()}")
        self._ready = json.loads(line)

    def vec2pg_args(self, size: int) -> list[str]:
        args = ["qdrant", self._collection(size), "--url", self._ready["url"]]
        args += ["--api-key", API_KEY, "--grpc-port", str(self._ready["grpc_port"])]
        if self.grpc and not self._flag_given:
            args.append("--grpc")
        return args

    def env(self) -> dict[str, str]:
        return {}

    def server_pid(self) -> int | None:
        return self._server.pid if self._server else None

    def run_baseline(self, size: int, dsn: str, table: str) -> int:
        """The original vec2pg's ``qdrant migrate``, step for step (the progress bar left out):
        qdrant-client's REST scroll of 100 points, the offset advanced by the page's size,
        and each page written with a new binary COPY of numpy float64 arrays."""
        import warnings

        from pgvector.psycopg import register_vector
        from qdrant_client import QdrantClient

        collection = self._collection(size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an API key over http://
            client = QdrantClient(url=self._ready["url"], api_key=API_KEY)
        if not client.collection_exists(collection_name=collection):
            raise SystemExit(f"the test server has no collection {collection!r}")
        client.count(collection_name=collection)  # as the original does, for its progress bar
        schema, name = table.split(".")
        qualified = sql.Identifier(schema, name)
        conn = psycopg.connect(dsn, autocommit=True)
        conn.execute(
            sql.SQL(
                "create table {} (id bigint, values vector, metadata json, "
                "shard_key text, order_value text)"
            ).format(qualified)
        )
        register_vector(conn)
        copy_statement = sql.SQL(
            "copy {}(id, values, metadata, shard_key, order_value) from stdin with (format binary)"
        ).format(qualified)
        limit, offset, written = 100, 0, 0
        while True:
            batch_records, _ = client.scroll(
                collection_name=collection,
                with_payload=True,
                with_vectors=True,
                limit=limit,
                offset=offset,
            )
            if not batch_records:
                break
            offset += len(batch_records)
            records = [
                (
                    rec.id,
                    np.array(rec.vector),
                    rec.payload,
                    str(rec.shard_key),
                    str(rec.order_value),
                )
                for rec in batch_records
            ]
            with conn.cursor().copy(copy_statement) as copy:
                copy.set_types(["bigint", "vector", "json", "text", "text"])
                for rec in records:
                    copy.write_row(rec)
            written += len(records)
        conn.close()
        client.close()
        return written

    def stop(self) -> None:
        if self._server is not None:
            self._server.send_signal(signal.SIGTERM)  # it serves until told to stop
            try:
                self._server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
            self._server = None


def make(args: argparse.Namespace) -> QdrantBench:
    return QdrantBench(args)
