"""Qdrant collections of every shape, built in local mode, and a row-by-row comparison.

The expected rows are read back from Qdrant itself (a full scroll), so the comparison
checks what a user would: every point of the source is a row of the table, exactly.
"""

from __future__ import annotations

import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as m


def open_local(path: Path) -> QdrantClient:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return QdrantClient(path=str(path))


def point_id(i: int, ids: str, rng: np.random.Generator) -> int | str:
    """Ids that are not 0..N-1: sparse integers, random UUIDs, or both mixed."""
    if ids == "int" or (ids == "mixed" and i % 2):
        return i * 7919 + 13
    return str(uuid.UUID(int=int(rng.integers(0, 2**62)) << 64 | i))


def payload(i: int) -> dict[str, Any]:
    return {
        "title": f"Dokument Nr. {i} — «naïve café» 東京 🚀",
        "n": i,
        "score": i / 7,
        "flag": i % 3 == 0,
        "tags": ["a", "b", f"t{i % 5}"],
        "nested": {"level": {"deeper": [1, {"x": None}, "ü"]}, "empty": {}},
    }


def seed_unnamed(
    client: QdrantClient, name: str, n: int, *, dim: int = 16, ids: str = "int", seed: int = 1
) -> None:
    rng = np.random.default_rng(seed)
    client.create_collection(
        name, vectors_config=m.VectorParams(size=dim, distance=m.Distance.COSINE)
    )
    points = [
        m.PointStruct(
            id=point_id(i, ids, rng), vector=rng.standard_normal(dim).tolist(), payload=payload(i)
        )
        for i in range(n)
    ]
    for start in range(0, n, 500):
        client.upsert(name, points[start : start + 500])


def seed_named(
    client: QdrantClient, name: str, n: int, *, ids: str = "mixed", seed: int = 2
) -> None:
    """Named dense vectors (several sizes and metrics), a sparse vector and a multivector."""
    rng = np.random.default_rng(seed)
    client.create_collection(
        name,
        vectors_config={
            "text": m.VectorParams(size=12, distance=m.Distance.COSINE),
            "image": m.VectorParams(size=5, distance=m.Distance.EUCLID),
            "manhattan": m.VectorParams(size=3, distance=m.Distance.MANHATTAN),
            "colbert": m.VectorParams(
                size=4,
                distance=m.Distance.DOT,
                multivector_config=m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM),
            ),
        },
        sparse_vectors_config={"keywords": m.SparseVectorParams()},
    )
    points = []
    for i in range(n):
        nnz = int(rng.integers(1, 20))
        indices = sorted(rng.choice(100_000, nnz, replace=False).tolist())
        vector: dict[str, Any] = {
            "text": rng.standard_normal(12).tolist(),
            "image": rng.standard_normal(5).tolist(),
            "colbert": rng.standard_normal((int(rng.integers(1, 4)), 4)).tolist(),
            "keywords": m.SparseVector(indices=indices, values=rng.random(nnz).tolist()),
        }
        if i % 10 == 0:
            del vector["image"]  # named vectors are optional per point
        else:
            vector["manhattan"] = rng.standard_normal(3).tolist()
        points.append(m.PointStruct(id=point_id(i, ids, rng), vector=vector, payload=payload(i)))
    for start in range(0, n, 500):
        client.upsert(name, points[start : start + 500])


def stored_rows(path: Path, name: str) -> dict[str, dict[str, Any]]:
    """The rows vec2pg should write for a local storage, read as vec2pg reads it.

    Local mode normalises cosine vectors in memory on upsert but returns them as stored
    (unnormalised) once the storage is reopened, so read from a fresh client.
    """
    client = open_local(path)
    try:
        return source_rows(client, name)
    finally:
        client.close()


def source_rows(client: QdrantClient, name: str) -> dict[str, dict[str, Any]]:
    """Every point of the collection, as the row vec2pg should have written."""
    info = client.get_collection(name).config.params
    rows: dict[str, dict[str, Any]] = {}
    offset = None
    while True:
        points, offset = client.scroll(name, limit=1000, offset=offset, with_vectors=True)
        for p in points:
            key = str(p.id) if isinstance(p.id, int) else str(uuid.UUID(str(p.id)))
            row: dict[str, Any] = {"id": key, "metadata": p.payload}
            vectors = p.vector if isinstance(p.vector, dict) else {"embedding": p.vector}
            names = list(info.vectors) if isinstance(info.vectors, dict) else ["embedding"]
            names += list(info.sparse_vectors or {})
            for vname in names:
                value = vectors.get(vname)
                if value is None:
                    row[vname] = None
                elif hasattr(value, "indices"):
                    row[vname] = {
                        int(i): np.float32(v)
                        for i, v in zip(value.indices, value.values, strict=True)
                    }
                elif value and isinstance(value[0], list):
                    row[vname] = [np.asarray(v, dtype=np.float32) for v in value]
                else:
                    row[vname] = np.asarray(value, dtype=np.float32)
            rows[key] = row
        if offset is None:
            return rows


def assert_same_rows(
    actual: dict[Any, dict[str, Any]], expected: dict[Any, dict[str, Any]]
) -> None:
    """Every expected row is present with equal vectors (float32-exact) and metadata."""
    assert actual.keys() == expected.keys(), (
        f"missing {sorted(expected.keys() - actual.keys())[:5]}, "
        f"unexpected {sorted(actual.keys() - expected.keys())[:5]}"
    )
    for key, want in expected.items():
        got = actual[key]
        for column, value in want.items():
            assert_equal_value(got[column], value, f"{key!r}.{column}")


def assert_equal_value(got: Any, want: Any, where: str) -> None:
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), where
        np.testing.assert_array_equal(got, want, err_msg=where)
    elif isinstance(want, list) and want and isinstance(want[0], np.ndarray):
        assert len(got) == len(want), where
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w, err_msg=where)
    else:
        assert got == want, where


#: The transports a Qdrant server is read over (vec2pg's default first).
TRANSPORTS = ("rest", "grpc")


class Served:
    """A local-mode client (or stores) served over REST and gRPC at once, as a Qdrant
    server serves both ports, and how vec2pg is pointed at it over ``transport``::

        with Served(local, "grpc", api_key="k") as served:
            target.cli("qdrant", "docs", *served.args)
            served.fail_scrolls(2)          # the next two scrolls fail transiently

    Over gRPC, vec2pg's ``--url`` names the REST server (its host is the gRPC one's):
    ``rest_requests`` then shows that nothing went over REST.
    """

    def __init__(self, source: Any, transport: str, *, api_key: str | None = None) -> None:
        from qdrant_grpc_server import QdrantGrpcServer
        from qdrant_server import QdrantServer

        self.transport = transport
        self.api_key = api_key
        self.rest = QdrantServer(source, api_key=api_key)
        self.grpc = QdrantGrpcServer(source, api_key=api_key)

    def __enter__(self) -> Served:
        self.rest.start()
        self.grpc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.grpc.stop()
        self.rest.stop()

    @property
    def url(self) -> str:
        return self.rest.url

    @property
    def transport_args(self) -> list[str]:
        """What selects the transport (nothing for REST, vec2pg's default)."""
        return ["--grpc", "--grpc-port", str(self.grpc.port)] if self.transport == "grpc" else []

    @property
    def args(self) -> list[str]:
        """vec2pg's source options that read this server (``--url``, ``--api-key``, ...)."""
        key = ["--api-key", self.api_key] if self.api_key else []
        return ["--url", self.url, *key, *self.transport_args]

    @property
    def where(self) -> str:
        """How vec2pg's messages name the server."""
        port = f" (gRPC port {self.grpc.port})" if self.transport == "grpc" else ""
        return f"Qdrant at {self.url}{port}"

    def source_options(self) -> dict[str, Any]:
        """QdrantSource's keywords that read this server."""
        options: dict[str, Any] = {"url": self.url, "api_key": self.api_key}
        if self.transport == "grpc":
            options.update(grpc=True, grpc_port=self.grpc.port)
        return options

    def fail_scrolls(self, n: int, *, transient: bool = True) -> None:
        """The next ``n`` scrolls fail: 503 / UNAVAILABLE, or 502 / INTERNAL (HTTP and gRPC
        words for a server error; both transient) with ``transient``, else 400 /
        INVALID_ARGUMENT (a request the server refuses: terminal)."""
        import grpc

        if self.transport == "rest":
            self.rest.fail_next(n, status=503 if transient else 400, path_contains="/points/scroll")
        else:
            code = grpc.StatusCode.UNAVAILABLE if transient else grpc.StatusCode.INVALID_ARGUMENT
            self.grpc.fail_next(n, code, method="Scroll")

    def server_error_scrolls(self, n: int) -> None:
        """The next ``n`` scrolls answer a server error (HTTP 502, gRPC INTERNAL)."""
        import grpc

        if self.transport == "rest":
            self.rest.fail_next(n, status=502, path_contains="/points/scroll")
        else:
            self.grpc.fail_next(n, grpc.StatusCode.INTERNAL, method="Scroll")

    def rate_limit_scrolls(self, n: int, retry_after: int) -> None:
        import grpc

        if self.transport == "rest":
            self.rest.fail_next(
                n, status=429, retry_after=retry_after, path_contains="/points/scroll"
            )
        else:
            self.grpc.fail_next(
                n, grpc.StatusCode.RESOURCE_EXHAUSTED, method="Scroll", retry_after=retry_after
            )

    def hang_scrolls(self, n: int, seconds: float) -> None:
        if self.transport == "rest":
            self.rest.hang_next(n, seconds=seconds, path_contains="/points/scroll")
        else:
            self.grpc.hang_next(n, seconds=seconds, method="Scroll")

    def scrolls(self) -> int:
        """Scroll requests the server received over the transport."""
        if self.transport == "rest":
            return self.rest.count("/points/scroll")
        return self.grpc.count("Scroll")

    def set_latency(self, seconds: float) -> None:
        self.rest.latency = self.grpc.latency = seconds

    def rest_requests(self) -> int:
        """Requests the REST server received, the version probe of ``GET /`` left out."""
        return self.rest.count("/collections")


def store_rows(store: Any) -> dict[str, dict[str, Any]]:
    """Every point of a ``QdrantStore`` of one unnamed dense vector, as the row vec2pg
    should have written."""
    matrix = store.columns[""].matrix
    rows = {}
    for row, point in enumerate(store.ids):
        key = str(point) if isinstance(point, int) else str(uuid.UUID(point))
        rows[key] = {"id": key, "metadata": store.payload(row), "embedding": matrix[row]}
    return rows
