"""Weaviate for scripts/bench: tests/weaviate_server.py in its own process (REST + gRPC,
one collection per size), and as the baseline the loop a user writes with weaviate-client:
``collection.iterator(include_vector=True)`` (its cursor, 100 objects a request) into one
COPY."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
from bench_common import SEED
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "bench-key"
#: The id space of the synthetic objects: every collection holds the first N of it.
IDS = "Bench"


class WeaviateBench:
    name = "weaviate"
    baseline = "weaviate-client's iterator(include_vector=True), 100 objects a request, one COPY"
    namespaced = False
    namespace = ""

    def __init__(self, args: argparse.Namespace) -> None:
        self._server: subprocess.Popen[str] | None = None
        self._ready: dict[str, object] = {}
        sys.path.insert(0, str(ROOT / "tests"))
        from weaviate_server import synthetic_uuid

        self._uuid = synthetic_uuid

    def table_id(self, i: int) -> str:
        return str(self._uuid(IDS, i, SEED))

    def _collection(self, size: int) -> str:
        return f"Bench{size}"

    def start(self, work: Path, sizes: list[int], dim: int, latency: float) -> None:
        largest = max(sizes)
        cmd = [sys.executable, str(ROOT / "tests" / "weaviate_server.py"), "--no-title"]
        cmd += ["--api-key", API_KEY, "--latency", str(latency), "--dim", str(dim)]
        cmd += ["--seed", str(SEED), "--collection", IDS, "--records", str(largest)]
        for n in sizes:
            cmd += ["--also", f"{self._collection(n)}:{n}"]
        self._server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self._server.stdout is not None
        line = self._server.stdout.readline()
        if not line:
            raise SystemExit(f"the Weaviate test server exited with {self._server.wait()}")
        self._ready = json.loads(line)

    def _connection(self) -> list[str]:
        return ["--url", str(self._ready["url"]), "--grpc-port", str(self._ready["grpc_port"])]

    def vec2pg_args(self, size: int) -> list[str]:
        return ["weaviate", self._collection(size), *self._connection()]

    def env(self) -> dict[str, str]:
        return {"WEAVIATE_API_KEY": API_KEY}

    def server_pid(self) -> int | None:
        return self._server.pid if self._server else None

    def run_baseline(self, size: int, dsn: str, table: str) -> int:
        """Every object through the client's iterator, written by one COPY."""
        import weaviate
        from pgvector.psycopg import register_vector
        from psycopg.types.json import Jsonb

        schema, name = table.split(".")
        qualified = sql.Identifier(schema, name)
        client = weaviate.connect_to_custom(
            http_host="127.0.0.1",
            http_port=int(str(self._ready["http_port"])),
            http_secure=False,
            grpc_host="127.0.0.1",
            grpc_port=int(str(self._ready["grpc_port"])),
            grpc_secure=False,
            auth_credentials=weaviate.classes.init.Auth.api_key(API_KEY),
            skip_init_checks=True,
        )
        written = 0
        with client, psycopg.connect(dsn) as conn:
            dim = int(str(self._ready["dim"]))
            conn.execute(
                sql.SQL(
                    "create table {} (id text primary key, embedding vector({}), metadata jsonb)"
                ).format(qualified, sql.Literal(dim))
            )
            register_vector(conn)
            collection = client.collections.get(self._collection(size))
            copy_statement = sql.SQL(
                "copy {} (id, embedding, metadata) from stdin with (format binary)"
            ).format(qualified)
            with conn.cursor().copy(copy_statement) as copy:
                copy.set_types(["text", "vector", "jsonb"])
                for obj in collection.iterator(include_vector=True):
                    vector = np.asarray(obj.vector["default"], dtype=np.float32)
                    copy.write_row((str(obj.uuid), vector, Jsonb(obj.properties)))
                    written += 1
        return written

    def stop(self) -> None:
        if self._server is not None:
            self._server.send_signal(signal.SIGTERM)  # it serves until SIGTERM or SIGINT
            try:
                self._server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
            if self._server.stdout is not None:
                self._server.stdout.close()
            self._server = None


def make(args: argparse.Namespace) -> WeaviateBench:
    return WeaviateBench(args)
