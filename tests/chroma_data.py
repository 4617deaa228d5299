"""Chroma collections of every shape chromadb 1.x holds locally, and what was put in them.

``chromadb.PersistentClient(path)`` runs Chroma's Rust engine in this process (SQLite and
HNSW files under ``path``); ``chroma run --path DIR`` serves the same folder over HTTP for
``chromadb.HttpClient``. Every helper is deterministic from its seed and returns a
:class:`SeededCollection` whose rows hold what was added: the embedding as a float32 array,
the metadata dict (or None), the document and the URI (or None).

What a read returns differs in two ways the tests pin down: embeddings come back as a
float64 array, and in a ``cosine`` collection they differ from what was added by up to a
few float32 ulps (l2 and ip collections return them exactly).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
from chromadb.api import ClientAPI
from chromadb.config import DEFAULT_DATABASE, DEFAULT_TENANT, Settings

#: The spaces (metrics) a collection's HNSW index can use.
SPACES = ("cosine", "l2", "ip")

#: Tenants and databases :func:`seed_tenants` creates, with the collections of each.
TENANT_LAYOUT: dict[tuple[str, str], tuple[str, ...]] = {
    ("default_tenant", "default_database"): ("docs",),
    ("default_tenant", "archive"): ("docs", "old"),
    ("acme", "prod"): ("products",),
    ("acme", "dev"): ("products", "scratch"),
}


@dataclass
class SeededCollection:
    """What a seed helper put in a collection."""

    name: str
    space: str
    dim: int
    #: id -> {"embedding": float32 array as added, "metadata": dict | None, "document":
    #: str | None, "uri": str | None} as a read returns them, in the order they were added.
    rows: dict[str, dict[str, Any]]


def open_persistent(path: Path, **kwargs: Any) -> ClientAPI:
    """A PersistentClient on ``path``; close it (or use it as a context manager) when done."""
    return chromadb.PersistentClient(path=str(path), settings=settings(), **kwargs)


def settings(**kwargs: Any) -> Settings:
    # Telemetry is a no-op in chromadb 1.5 (Posthog.capture does nothing); off all the same.
    return Settings(anonymized_telemetry=False, **kwargs)


def short(value: float) -> float:
    """A float with at most 7 significant digits, which Chroma's metadata keeps exactly.

    chromadb 1.5 returns about one in five arbitrary float64 metadata values (scalars and
    list items alike) 1-2 ulps off, as a decimal parser without exact round-trip does.
    """
    return float(f"{value:.6e}")


def metadata(i: int, rng: np.random.Generator) -> dict[str, Any] | None:
    """Every metadata value type: str, int, float, bool and non-empty lists of each.

    Chroma refuses an empty dict (so a row without metadata has None), None values, empty
    or mixed lists and nested dicts. NaN is accepted but the row's metadata then reads back
    as None, and -0.0 reads back as 0.0, so neither is seeded. Floats are short decimals:
    an arbitrary float64 can read back up to 2 ulps off (see :func:`short`).
    """
    if i % 7 == 0:
        return None
    value: dict[str, Any] = {
        "title": f"Dokument Nr. {i} — «naïve café» 東京 🚀",
        "n": i * 7919 - 2**40,
        "score": short(rng.standard_normal()),
        "flag": i % 2 == 0,
    }
    if i % 3:
        value |= {
            "tags": [f"t{i % 5}", "ü"],
            "counts": [int(v) for v in rng.integers(-(2**31), 2**31, 3)],
            "weights": [short(v) for v in rng.standard_normal(2)],
            "flags": [True, i % 2 == 1],
        }
    return value


def seed_collection(
    client: ClientAPI,
    name: str,
    n: int,
    *,
    dim: int = 8,
    space: str = "cosine",
    documents: bool = True,
    uris: bool = True,
    space_in: str = "configuration",
    seed: int = 1,
) -> SeededCollection:
    """Rows with embeddings, metadatas, and (optionally) documents and URIs.

    ``space_in="configuration"`` sets the metric the 1.x way
    (``configuration={"hnsw": {"space": ...}}``), ``"metadata"`` the 0.x way
    (``metadata={"hnsw:space": ...}``); both end up in ``configuration_json``. Ids are
    strings, not in sorted order; some documents and URIs are None.
    """
    rng = np.random.default_rng(seed)
    options: dict[str, Any]
    if space_in == "configuration":
        options = {"configuration": {"hnsw": {"space": space}}}
    elif space_in == "metadata":
        options = {"metadata": {"hnsw:space": space, "owner": "tests"}}
    else:
        raise ValueError(f"space_in {space_in!r}: configuration or metadata")
    collection = client.create_collection(name, embedding_function=None, **options)

    ids = [f"id-{int(k):06d}-{'äöü東🚀x'[k % 6]}" for k in rng.permutation(10 * n)[:n]]
    embeddings = rng.standard_normal((n, dim)).astype(np.float32)
    rows: dict[str, dict[str, Any]] = {}
    added: dict[str, dict[str, Any] | None] = {}
    for i, key in enumerate(ids):
        added[key] = metadata(i, rng)
        uri = (f"s3://bucket/{i}.png" if i % 4 else None) if uris else None
        rows[key] = {
            "embedding": embeddings[i],
            # Chroma keeps a URI among the metadata, so a row with a URI and no metadata
            # reads back {} where one without either reads back None.
            "metadata": {} if added[key] is None and uri is not None else added[key],
            "document": (f"Text {i}: «naïve» 東京 🚀" if i % 5 else None) if documents else None,
            "uri": uri,
        }
    # A page of adds at most max_batch_size (5,461 here) long.
    step = min(1000, client.get_max_batch_size())
    for start in range(0, n, step):
        batch = ids[start : start + step]
        record: dict[str, Any] = {
            "ids": batch,
            "embeddings": embeddings[start : start + step],
            "metadatas": [added[k] for k in batch],
        }
        if documents:
            record["documents"] = [rows[k]["document"] for k in batch]
        if uris:
            record["uris"] = [rows[k]["uri"] for k in batch]
        collection.add(**record)
    return SeededCollection(name=name, space=space, dim=dim, rows=rows)


def seed_tenants(
    path: Path, n: int = 20, *, seed: int = 5
) -> dict[tuple[str, str], dict[str, SeededCollection]]:
    """Collections in several tenants and databases (:data:`TENANT_LAYOUT`), in one folder."""
    admin = chromadb.AdminClient(settings(is_persistent=True, persist_directory=str(path)))
    for tenant in dict.fromkeys(tenant for tenant, _ in TENANT_LAYOUT):
        if tenant != DEFAULT_TENANT:
            admin.create_tenant(tenant)
    for tenant, database in TENANT_LAYOUT:
        if database != DEFAULT_DATABASE:
            admin.create_database(database, tenant=tenant)
    seeded: dict[tuple[str, str], dict[str, SeededCollection]] = {}
    for number, ((tenant, database), names) in enumerate(TENANT_LAYOUT.items()):
        with open_persistent(path, tenant=tenant, database=database) as client:
            seeded[tenant, database] = {
                name: seed_collection(
                    client, name, n, space=SPACES[j % 3], seed=seed + 10 * number + j
                )
                for j, name in enumerate(names)
            }
    return seeded


def collection_space(collection: Any) -> str:
    """A collection's metric as chromadb 1.x reports it, read without a warning.

    ``configuration_json`` holds ``{"hnsw": {"space": ...}}`` (or ``"spann"``) for both
    ways of setting it; the ``configuration`` property parses the same JSON but warns
    DeprecationWarning "legacy embedding function config" for a collection created with
    ``embedding_function=None``. Older servers only had metadata ``"hnsw:space"``; the
    default is l2.
    """
    config = collection.configuration_json or {}
    for index in ("hnsw", "spann"):
        if (config.get(index) or {}).get("space"):
            return str(config[index]["space"])
    return str((collection.metadata or {}).get("hnsw:space", "l2"))


def stored_rows(collection: Any, *, page: int = 1000) -> dict[str, dict[str, Any]]:
    """Every row as ``get`` returns it, paged by offset (the only way Chroma pages)."""
    rows: dict[str, dict[str, Any]] = {}
    offset = 0
    while True:
        got = collection.get(
            limit=page, offset=offset, include=["embeddings", "metadatas", "documents", "uris"]
        )
        for i, key in enumerate(got["ids"]):
            assert key not in rows, f"{key!r} read twice"
            rows[key] = {
                "embedding": got["embeddings"][i],
                "metadata": got["metadatas"][i],
                "document": got["documents"][i],
                "uri": got["uris"][i],
            }
        if len(got["ids"]) < page:
            return rows
        offset += page


def assert_same_rows(
    actual: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]], *, ulps: int = 0
) -> None:
    """Same ids in the same order; embeddings within ``ulps`` float32 ulps; the rest equal."""
    assert list(actual) == list(expected), "ids differ or come in another order"
    for key, want in expected.items():
        got = actual[key]
        embedding = np.asarray(got["embedding"])
        if ulps == 0:
            np.testing.assert_array_equal(embedding.astype(np.float32), want["embedding"])
        else:
            np.testing.assert_array_max_ulp(
                embedding.astype(np.float32), want["embedding"], maxulp=ulps
            )
        for column in ("metadata", "document", "uri"):
            assert got[column] == want[column], f"{key!r}.{column}"


def close_http(client: ClientAPI) -> None:
    """Close an HttpClient and the two httpx connection pools ``close()`` leaves open.

    chromadb 1.5's HTTP ServerAPI (``chromadb.api.fastapi.FastAPI``) never closes its
    ``httpx.Client``, and an HttpClient holds two of them: its own and its internal admin
    client's (each HTTP client gets a System of its own under a random identifier). Left
    open, their sockets are collected later with ResourceWarning "unclosed
    <socket.socket ...>", which pytest raises at whatever test, or session end, the
    collection happens in.
    """
    sessions = [client._server._session]  # type: ignore[attr-defined]
    admin = getattr(client, "_admin_client", None)
    if admin is not None:
        sessions.append(admin._server._session)
    client.close()
    for session in sessions:
        session.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def chroma_server(path: Path, *, timeout: float = 30.0) -> Iterator[tuple[str, int]]:
    """``chroma run`` (the Rust server in the chromadb wheel) on ``path``, on 127.0.0.1.

    Yields (host, port) once it answers a heartbeat (about 1 s); stops it on exit. The
    folder must not be open in a PersistentClient meanwhile.
    """
    port = free_port()
    chroma = Path(sys.executable).with_name("chroma")
    command = [str(chroma), "run", "--path", str(path), "--host", "127.0.0.1"]
    server = subprocess.Popen(
        [*command, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ | {"NO_COLOR": "1"},
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    message = f"chroma run exited or hung (code {server.poll()})"
                    raise RuntimeError(message) from None
                time.sleep(0.05)
        yield "127.0.0.1", port
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
