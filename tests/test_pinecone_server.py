"""Proves tests/pinecone_server.py against the real ``pinecone`` SDK (10.x)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from pinecone import Pinecone
from pinecone._internal import http_client as sdk_http
from pinecone.errors import (
    ApiError,
    NotFoundError,
    PineconeConnectionError,
    PineconeTimeoutError,
    PineconeTypeError,
    PineconeValueError,
    RateLimitError,
    ResponseParsingError,
    ServiceError,
    UnauthorizedError,
)
from pinecone.models.indexes.deployment import ManagedDeployment, PodDeployment
from pinecone_server import PineconeServer, reset_sdk_retry_budget

KEY = "test-key"


@pytest.fixture()
def server() -> Iterator[PineconeServer]:
    reset_sdk_retry_budget()
    with PineconeServer(api_key=KEY) as srv:
        srv.create_index("docs", dimension=4, metric="dotproduct")
        srv.create_index("sparse-only", metric="dotproduct", vector_type="sparse")
        srv.create_index("old-pod", dimension=4, deployment="pod")
        yield srv
    reset_sdk_retry_budget()


@pytest.fixture()
def pc(server: PineconeServer) -> Iterator[Pinecone]:
    with Pinecone(api_key=KEY, host=server.url, timeout=5) as client:
        yield client


def test_describe_index_via_control_plane(server: PineconeServer, pc: Pinecone) -> None:
    desc = pc.describe_index("docs")
    assert desc.name == "docs"
    assert desc.host == server.host("docs")
    assert desc.host.startswith("http://127.0.0.1:")
    assert desc.status.ready is True
    assert isinstance(desc.deployment, ManagedDeployment)
    field = desc.schema.fields["_values"]
    assert (field.dimension, field.metric) == (4, "dotproduct")
    # The 9.x accessors survive as computed properties.
    assert (desc.dimension, desc.metric, desc.vector_type) == (4, "dotproduct", "dense")

    sparse = pc.indexes.describe("sparse-only")
    assert "_sparse_values" in sparse.schema.fields
    assert (sparse.dimension, sparse.metric, sparse.vector_type) == (None, "dotproduct", "sparse")

    pod = pc.describe_index("old-pod")
    assert isinstance(pod.deployment, PodDeployment)
    assert (pod.deployment.pod_type, pod.deployment.replicas, pod.deployment.shards) == (
        "p1.x1",
        1,
        1,
    )

    assert sorted(i.name for i in pc.indexes.list()) == ["docs", "old-pod", "sparse-only"]
    assert server.api_versions == {"2026-07"}


def test_index_by_name_resolves_host(server: PineconeServer, pc: Pinecone) -> None:
    with pc.Index(name="docs") as idx:
        assert idx.host == server.host("docs")
        assert idx.describe_index_stats().dimension == 4


def test_control_plane_from_env(server: PineconeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PINECONE_CONTROLLER_HOST", server.url)  # read when host= is not given
    with Pinecone(api_key=KEY) as client:
        assert client.describe_index("docs").host == server.host("docs")


def test_unknown_index_is_404(pc: Pinecone) -> None:
    with pytest.raises(NotFoundError) as exc:
        pc.describe_index("nope")
    assert exc.value.status_code == 404
    assert exc.value.body["error"]["code"] == "NOT_FOUND"


def test_wrong_api_key_is_401(server: PineconeServer) -> None:
    with Pinecone(api_key="wrong", host=server.url) as bad:
        with pytest.raises(UnauthorizedError) as exc:
            bad.describe_index("docs")
        assert exc.value.status_code == 401
        assert exc.value.body == {
            "error": {"code": "UNAUTHENTICATED", "message": "Invalid API key."},
            "status": 401,
        }
        with bad.Index(host=server.host("docs")) as idx, pytest.raises(UnauthorizedError):
            idx.fetch(ids=["a"])


def test_upsert_and_fetch_dense_sparse_and_metadata(server: PineconeServer, pc: Pinecone) -> None:
    metadata = {
        "title": "Grüße, 東京 🚀",
        "year": 2020,
        "score": 0.5,
        "draft": False,
        "tags": ["a", "ß"],
    }
    with pc.Index(host=server.host("docs")) as idx:
        resp = idx.upsert(
            vectors=[
                {"id": "dense", "values": [0.1, 0.2, 0.3, 0.4], "metadata": metadata},
                {
                    "id": "hybrid",
                    "values": [1.0, 2.0, 3.0, 4.0],
                    "sparse_values": {"indices": [7, 4_000_000_000], "values": [0.5, 0.25]},
                },
                ("tuple", [0.0, 0.0, 0.0, 1.0]),
            ],
            namespace="ns1",
        )
        assert resp.upserted_count == 3
        fetched = idx.fetch(ids=["dense", "hybrid", "tuple", "missing"], namespace="ns1")
    assert set(fetched.vectors) == {"dense", "hybrid", "tuple"}  # missing ids are absent
    dense = fetched.vectors["dense"]
    assert np.array_equal(
        np.asarray(dense.values, dtype=np.float32),
        np.asarray([0.1, 0.2, 0.3, 0.4], dtype=np.float32),
    )
    assert dense.sparse_values is None
    # Pinecone returns metadata numbers as floats.
    assert dense.metadata == {**metadata, "year": 2020.0}
    assert isinstance(dense.metadata["year"], float)
    hybrid = fetched.vectors["hybrid"]
    assert hybrid.sparse_values.indices == [7, 4_000_000_000]
    assert hybrid.sparse_values.values == [0.5, 0.25]
    assert hybrid.metadata is None
    assert fetched.namespace == "ns1"
    assert server.get("docs", "ns1", "dense")["metadata"]["title"] == metadata["title"]


def test_upsert_sparse_only(server: PineconeServer, pc: Pinecone) -> None:
    with pc.Index(host=server.host("sparse-only")) as idx:
        idx.upsert(
            vectors=[
                {
                    "id": "s1",
                    "sparse_values": {"indices": [1, 9], "values": [0.3, 0.7]},
                    "metadata": {"kind": "sparse"},
                },
            ]
        )
        got = idx.fetch(ids=["s1"]).vectors["s1"]
        assert got.values == []
        assert got.sparse_values.indices == [1, 9]
        stats = idx.describe_index_stats()
        assert stats.vector_type == "sparse"
        assert stats.dimension is None
        with pytest.raises(ApiError) as exc:  # dense values are rejected by a sparse index
            idx.upsert(vectors=[{"id": "d", "values": [1.0, 2.0]}])
        assert exc.value.status_code == 400


def test_upsert_validation(server: PineconeServer, pc: Pinecone) -> None:
    with pc.Index(host=server.host("old-pod")) as idx:
        with pytest.raises(ApiError) as exc:
            idx.upsert(vectors=[("a", [1.0, 2.0, 3.0])])
        assert exc.value.status_code == 400
        assert "Vector dimension 3 does not match the dimension of the index 4" in str(exc.value)
        with pytest.raises(ApiError) as exc:  # sparse values need sparse or dotproduct (cosine)
            idx.upsert(
                vectors=[
                    {
                        "id": "h",
                        "values": [1.0] * 4,
                        "sparse_values": {"indices": [1], "values": [1.0]},
                    }
                ]
            )
        assert exc.value.status_code == 400
        with pytest.raises(PineconeTypeError):  # the SDK checks metadata types itself
            idx.upsert(vectors=[{"id": "m", "values": [1.0] * 4, "metadata": {"bad": {"x": 1}}}])
    with httpx.Client(base_url=server.host("old-pod"), headers={"Api-Key": KEY}) as raw:
        resp = raw.post(
            "/vectors/upsert",
            json={"vectors": [{"id": "m", "values": [1.0] * 4, "metadata": {"bad": {"x": 1}}}]},
        )
        assert resp.status_code == 400
        assert resp.json()["error"]["code"] == "INVALID_ARGUMENT"
        assert (
            raw.post(
                "/vectors/upsert",
                json={"vectors": [{"id": "m", "values": [1.0] * 4, "metadata": {"null": None}}]},
            ).status_code
            == 400
        )
    with pc.Index(host=server.host("docs")) as idx:
        with pytest.raises(ApiError) as exc:
            idx.upsert(vectors=[(f"v{i}", [1.0] * 4) for i in range(1001)])
        assert exc.value.status_code == 400
        assert "1000" in str(exc.value)
        assert server.vector_count("docs") == 0


def test_describe_index_stats_namespaces(server: PineconeServer, pc: Pinecone) -> None:
    with pc.Index(host=server.host("docs")) as idx:
        idx.upsert(vectors=[("d1", [1.0] * 4), ("d2", [2.0] * 4)])  # default namespace
        idx.upsert(vectors=[("a", [1.0] * 4)], namespace="ns-a")
        server.seed("docs", "ns-b", np.ones((3, 4), dtype=np.float32), ids=["x", "y", "z"])
        stats = idx.describe_index_stats()
        assert {k: v.vector_count for k, v in stats.namespaces.items()} == {
            "__default__": 2,
            "ns-a": 1,
            "ns-b": 3,
        }
        assert stats.total_vector_count == 6
        assert (stats.dimension, stats.metric, stats.vector_type) == (4, "dotproduct", "dense")
        assert stats.index_fullness == 0.0
        # "__default__" addresses the default namespace on the data plane too.
        assert set(idx.fetch(ids=["d1"], namespace="__default__").vectors) == {"d1"}
        server.default_namespace_name = ""  # mimic older servers
        assert set(idx.describe_index_stats().namespaces) == {"", "ns-a", "ns-b"}


def test_list_paginated_across_pages(server: PineconeServer, pc: Pinecone) -> None:
    ids = [f"doc-{i:04d}" for i in range(250)]
    rng = np.random.default_rng(1)
    server.seed("docs", "ns", rng.standard_normal((250, 4), dtype=np.float32), ids=ids[::-1])
    with pc.Index(host=server.host("docs")) as idx:
        seen: list[str] = []
        token = None
        pages = 0
        while True:
            page = idx.list_paginated(namespace="ns", limit=100, pagination_token=token)
            pages += 1
            seen += [v.id for v in page.vectors]
            token = page.pagination.next if page.pagination else None
            if token is None:
                break
        assert pages == 3 and seen == sorted(ids)
        assert (
            len([v.id for p in idx.list(namespace="ns") for v in p.vectors]) == 250
        )  # default 100
        assert [v.id for v in idx.list_paginated(namespace="ns", prefix="doc-012").vectors] == [
            f"doc-012{i}" for i in range(10)
        ]
        with pytest.raises(PineconeValueError):  # the SDK refuses limit > 100 itself
            idx.list_paginated(namespace="ns", limit=101)
    with httpx.Client(base_url=server.host("docs"), headers={"Api-Key": KEY}) as raw:
        resp = raw.get("/vectors/list", params={"namespace": "ns", "limit": 101})
        assert resp.status_code == 400
        assert resp.json()["error"]["code"] == "INVALID_ARGUMENT"
        last = raw.get(
            "/vectors/list", params={"namespace": "ns", "limit": 100, "prefix": "doc-02"}
        ).json()
        assert len(last["vectors"]) == 50 and "pagination" not in last


def test_pod_index_has_no_list(server: PineconeServer, pc: Pinecone) -> None:
    with pc.Index(name="old-pod") as idx:
        idx.upsert(vectors=[("a", [1.0] * 4)])
        assert set(idx.fetch(ids=["a"]).vectors) == {"a"}
        with pytest.raises(ResponseParsingError):  # default: 200 with a non-JSON body
            idx.list_paginated()
        server.pod_list = "error400"
        with pytest.raises(ApiError) as exc:
            idx.list_paginated()
        assert exc.value.status_code == 400
        assert "serverless" in str(exc.value)


def test_fetch_more_than_1000_ids_rejected(server: PineconeServer, pc: Pinecone) -> None:
    with pc.Index(host=server.host("docs")) as idx:
        with pytest.raises(ApiError) as exc:
            idx.fetch(ids=[f"id{i}" for i in range(1001)])
        assert exc.value.status_code == 400
        assert idx.fetch(ids=[f"id{i}" for i in range(1000)]).vectors == {}


def test_429_with_retry_after_is_retried_then_raised(server: PineconeServer, pc: Pinecone) -> None:
    server.seed("docs", "", [{"id": "a", "values": [1.0] * 4}])
    with pc.Index(host=server.host("docs")) as idx:
        server.fail_next(1, status=429, retry_after=0.2, endpoint="fetch")
        start = time.monotonic()
        assert set(idx.fetch(ids=["a"]).vectors) == {"a"}  # the SDK retried by itself
        assert time.monotonic() - start >= 0.2  # and honoured Retry-After
        assert server.status_counts[("fetch", 429)] == 1
        assert server.status_counts[("fetch", 200)] == 1

        server.reset_stats()
        server.fail_next(10, status=429, retry_after=0, endpoint="fetch")
        with pytest.raises(RateLimitError) as exc:
            idx.fetch(ids=["a"])
        assert exc.value.status_code == 429
        assert exc.value.retry_after == 0.0
        assert exc.value.headers["retry-after"] == "0"
        assert server.count("fetch") == 4  # 1 try + 3 SDK retries
        server.clear_faults()


def test_5xx_and_drops(
    server: PineconeServer, pc: Pinecone, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK's backoff sleeps go through this private seam; record them instead of sleeping.
    delays: list[float] = []
    monkeypatch.setattr(sdk_http, "_retry_sleep", delays.append)
    with pc.Index(host=server.host("docs")) as idx:
        server.fail_next(4, status=503, endpoint="describe_index_stats")
        with pytest.raises(ServiceError) as exc:
            idx.describe_index_stats()
        assert exc.value.status_code == 503
        assert server.count("describe_index_stats") == 4  # 1 try + 3 SDK retries
        assert len(delays) == 3 and all(0.25 <= d <= 60 for d in delays)
        server.fail_next(2, status=500, endpoint="describe_index_stats")
        assert idx.describe_index_stats().total_vector_count == 0  # retried past two 500s
        server.drop_next(4, endpoint="fetch")
        with pytest.raises(PineconeConnectionError):
            idx.fetch(ids=["a"])
        assert server.status_counts[("fetch", 0)] == 4
        assert idx.fetch(ids=["a"]).vectors == {}  # healthy again


def test_timeout(server: PineconeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk_http, "_retry_sleep", lambda _delay: None)
    with Pinecone(api_key=KEY, host=server.url, timeout=0.3) as client:
        with client.Index(host=server.host("docs")) as idx:
            server.hang_next(4, seconds=0.8, endpoint="fetch")
            with pytest.raises(PineconeTimeoutError):
                idx.fetch(ids=["a"])  # each of the 4 attempts times out after 0.3 s
            assert server.count("fetch") == 4
            assert isinstance(PineconeTimeoutError("x"), TimeoutError)


def test_connection_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk_http, "_retry_sleep", lambda _delay: None)  # connect errors retry too
    with PineconeServer(api_key=KEY) as srv:
        host = srv.create_index("gone", dimension=2)
    with Pinecone(api_key=KEY) as client, client.Index(host=host) as idx:
        with pytest.raises(PineconeConnectionError):
            idx.describe_index_stats()


def test_latency_and_concurrent_requests(server: PineconeServer, pc: Pinecone) -> None:
    ids = [f"id{i:03d}" for i in range(160)]
    server.seed("docs", "ns", np.arange(640, dtype=np.float32).reshape(160, 4), ids=ids)
    server.latency = 0.2
    server.reset_stats()
    batches = [ids[i : i + 10] for i in range(0, 160, 10)]
    with pc.Index(host=server.host("docs")) as idx:
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(lambda b: idx.fetch(ids=b, namespace="ns"), batches))
        elapsed = time.monotonic() - start
    assert sum(len(r.vectors) for r in results) == 160
    assert results[3].vectors["id031"].values == [124.0, 125.0, 126.0, 127.0]
    assert server.count("fetch") == 16
    assert server.max_in_flight > 1
    assert server.max_in_flight <= 8
    assert elapsed < 16 * 0.2 * 0.75  # the requests overlapped
    assert server.in_flight == 0


def test_seed_matrix_roundtrips_float32(server: PineconeServer) -> None:
    server.create_index("wide", dimension=64)
    rng = np.random.default_rng(7)
    mat = rng.standard_normal((50, 64), dtype=np.float32)
    mat[0, 0] = 1e-30
    mat[0, 1] = -3.4e38
    ids = [f"r{i}" for i in range(50)]
    server.seed("wide", "", mat, ids=ids, metadata=[{"i": i} for i in range(50)])
    with Pinecone(api_key=KEY) as client, client.Index(host=server.host("wide")) as idx:
        got = idx.fetch(ids=ids).vectors
    back = np.asarray([got[i].values for i in ids], dtype=np.float32)
    assert np.array_equal(back, mat)
    assert got["r3"].metadata == {"i": 3.0}
    with pytest.raises(ValueError, match="dimension"):
        server.seed("wide", "", np.ones((1, 3), dtype=np.float32), ids=["bad"])
    with pytest.raises(ValueError):
        server.seed("wide", "", np.full((1, 64), math.nan, dtype=np.float32), ids=["nan"])
