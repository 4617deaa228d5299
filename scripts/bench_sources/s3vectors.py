"""Amazon S3 Vectors for scripts/bench: tests/s3vectors_server.py in its own process (one
bucket, an index per size), and the loop other migration tools run as the baseline: boto3's
``list_vectors`` with ``returnData`` and ``returnMetadata``, 500 a page, one page after the
other by ``nextToken``, each page written with a COPY of its own.

Run as a script (``python scripts/bench_sources/s3vectors.py --sizes 50000 --dim 1024``) it
is the server: it seeds the synthetic records of scripts/bench_common.py, prints its URL,
and serves until its stdin closes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "bench"
KEY_ID = "AKIDBENCH"
SECRET = "bench-secret"
SUPABASE_KEY = "bench-service-role-key"
#: The baseline's page: what other tools ask ListVectors for (its default maxResults).
BASELINE_PAGE = 500


def index_name(size: int) -> str:
    return f"bench-{size}"


class S3VectorsBench:
    name = "s3vectors"
    baseline = "boto3 list_vectors, 500 a page by nextToken, one page at a time, a COPY per page"
    namespaced = False
    namespace = ""

    def __init__(self, args: argparse.Namespace) -> None:
        self._server: subprocess.Popen[str] | None = None
        self.url = ""

    def table_id(self, i: int) -> str:
        from bench_common import synthetic_id

        return synthetic_id(i)

    def start(self, work: Path, sizes: list[int], dim: int, latency: float) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--dim", str(dim)]
        cmd += ["--latency", str(latency), "--sizes", ",".join(map(str, sizes))]
        self._server = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._server.stdout is not None
        line = self._server.stdout.readline()
        if not line:
            raise SystemExit(f"the S3 Vectors test server exited with {self._server.wait()}")
        self.url = line.strip()

    def vec2pg_args(self, size: int) -> list[str]:
        return [
            "s3vectors",
            BUCKET,
            index_name(size),
            "--endpoint-url",
            self.url,
            "--region",
            "us-east-1",
        ]

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def server_pid(self) -> int | None:
        return self._server.pid if self._server else None

    def pages(self, size: int) -> Any:
        """The baseline's pages: boto3's list_vectors answers, one after the other."""
        import boto3

        client = boto3.client(
            "s3vectors",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
        )
        request: dict[str, Any] = {
            "vectorBucketName": BUCKET,
            "indexName": index_name(size),
            "maxResults": BASELINE_PAGE,
            "returnData": True,
            "returnMetadata": True,
        }
        while True:
            answer = client.list_vectors(**request)
            yield answer["vectors"]
            if not answer.get("nextToken"):
                return
            request["nextToken"] = answer["nextToken"]

    def run_baseline(self, size: int, dsn: str, table: str) -> int:
        return copy_pages(self.pages(size), dsn, table)

    def stop(self) -> None:
        if self._server is not None:
            if self._server.stdin is not None:
                self._server.stdin.close()  # it serves until its stdin closes
            try:
                self._server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
            self._server = None


def copy_pages(pages: Any, dsn: str, table: str) -> int:
    """Write each page of vectors (``key``, ``data.float32``, ``metadata``) with a COPY of its
    own into ``table``, created as the bench asks (autocommit, as a simple loop does)."""
    import numpy as np
    import psycopg
    from pgvector.psycopg import register_vector
    from psycopg import sql
    from psycopg.types.json import Jsonb

    schema, name = table.split(".")
    qualified = sql.Identifier(schema, name)
    written = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        register_vector(conn)
        copy_statement = sql.SQL(
            "copy {} (id, embedding, metadata) from stdin with (format binary)"
        ).format(qualified)
        created = False
        for vectors in pages:
            if not created and vectors:
                dim = len(vectors[0]["data"]["float32"])
                conn.execute(
                    sql.SQL(
                        "create table {} (id text primary key, embedding vector({}), "
                        "metadata jsonb)"
                    ).format(qualified, sql.Literal(dim))
                )
                created = True
            with conn.cursor().copy(copy_statement) as copy:
                copy.set_types(["text", "vector", "jsonb"])
                for vector in vectors:
                    values = np.asarray(vector["data"]["float32"], dtype=np.float32)
                    copy.write_row((vector["key"], values, Jsonb(vector.get("metadata"))))
            written += len(vectors)
    return written


def make(args: argparse.Namespace) -> S3VectorsBench:
    return S3VectorsBench(args)


def serve(argv: list[str] | None = None) -> None:
    """The test server with the bench's records, in this process until stdin closes."""
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "scripts")]
    from bench_common import SEED, synthetic_chunks, synthetic_id, synthetic_metadata
    from s3vectors_server import S3VectorsServer

    ap = argparse.ArgumentParser(description=serve.__doc__)
    ap.add_argument("--sizes", required=True, help="an index of each size (comma list)")
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--latency", type=float, default=0.05)
    args = ap.parse_args(argv)
    server = S3VectorsServer(supabase_key=SUPABASE_KEY)
    for size in (int(s) for s in args.sizes.split(",") if s):
        server.create_index(BUCKET, index_name(size), args.dim, "cosine")
        for start, matrix in synthetic_chunks(size, args.dim, SEED):
            stop = start + len(matrix)
            server.seed(
                BUCKET,
                index_name(size),
                [synthetic_id(i) for i in range(start, stop)],
                matrix,
                [synthetic_metadata(i) for i in range(start, stop)],
            )
    server.latency = args.latency
    server.start()
    print(server.url, flush=True)
    try:
        sys.stdin.read()  # until the bench closes it
    finally:
        server.stop()


if __name__ == "__main__":
    serve()
