"""The gRPC test Qdrant (tests/qdrant_grpc_server.py) and the fast store (tests/qdrant_store.py)
against the real qdrant-client with ``prefer_grpc=True``.

Every answer is compared with local mode's on the same seeded data, for both backends
(local mode, ``QdrantStore``) and both vector encodings (servers before 1.17 and after).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client import grpc as pb
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse

try:
    from qdrant_data import seed_named, seed_unnamed
    from qdrant_grpc_server import QdrantGrpcServer
    from qdrant_store import QdrantStore
except ImportError:  # tests/ imported as a package
    from tests.qdrant_data import seed_named, seed_unnamed
    from tests.qdrant_grpc_server import QdrantGrpcServer
    from tests.qdrant_store import QdrantStore

UNNAMED = "unnamed"  # one unnamed Cosine vector, integer and UUID ids
NAMED = "named"  # named dense (four metrics), sparse and multi vectors, mixed ids
INTS = "ints"  # integer ids only
SIZES = {UNNAMED: 45, NAMED: 37, INTS: 25}
LEGACY = "1.16.3"  # the last servers that sent vectors in VectorOutput's deprecated fields
CURRENT = "1.17.0"


@pytest.fixture(scope="module")
def local() -> Iterator[QdrantClient]:
    client = QdrantClient(":memory:")
    seed_unnamed(client, UNNAMED, SIZES[UNNAMED], dim=8, ids="mixed")
    seed_named(client, NAMED, SIZES[NAMED], ids="mixed")
    seed_unnamed(client, INTS, SIZES[INTS], dim=4, ids="int")
    yield client
    client.close()


@pytest.fixture(scope="module")
def stores(local: QdrantClient) -> list[QdrantStore]:
    return [QdrantStore.from_local(local, name) for name in SIZES]


@pytest.fixture(
    params=[("local", CURRENT), ("store", CURRENT), ("local", LEGACY), ("store", LEGACY)],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def server(
    request: pytest.FixtureRequest, local: QdrantClient, stores: list[QdrantStore]
) -> Iterator[QdrantGrpcServer]:
    backend, version = request.param
    with QdrantGrpcServer(local if backend == "local" else stores, version=version) as srv:
        yield srv


@pytest.fixture()
def store_server(stores: list[QdrantStore]) -> Iterator[QdrantGrpcServer]:
    """Faults and timing do not depend on the backend: one server for their slow tests."""
    with QdrantGrpcServer(stores) as srv:
        yield srv


@pytest.fixture()
def client(server: QdrantGrpcServer) -> Iterator[QdrantClient]:
    c = server.client()
    yield c
    c.close()


def f32(value: Any) -> Any:
    """Vectors as float32 values: local mode keeps sparse values as float64, Qdrant (and any
    gRPC answer, whose floats are 32-bit) as float32."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: f32(v) for k, v in value.items()}
    if isinstance(value, models.SparseVector):
        return list(value.indices), np.asarray(value.values, dtype=np.float32).tolist()
    return np.asarray(value, dtype=np.float32).tolist()


def comparable(points: list[models.Record]) -> list[tuple[Any, Any, Any]]:
    return [(p.id, p.payload, f32(p.vector)) for p in points]


def walk(client: QdrantClient, name: str, limit: int, **kwargs: Any) -> list[tuple[list, Any]]:
    pages, offset = [], None
    kwargs = {"with_payload": True, "with_vectors": True, **kwargs}
    while True:
        points, offset = client.scroll(name, limit=limit, offset=offset, **kwargs)
        pages.append((comparable(points), offset))
        if offset is None:
            return pages
        assert offset not in [o for _, o in pages[:-1]], f"next_page_offset {offset!r} repeats"


def make_grpc_client(port: int, **kwargs: Any) -> QdrantClient:
    kwargs.setdefault("timeout", 5)
    with warnings.catch_warnings():
        # qdrant-client warns about keys and token providers over plain http://
        warnings.filterwarnings("ignore", "(Api key|Auth token provider) is used with an insecure")
        return QdrantClient(
            url=f"http://127.0.0.1:{port}",
            grpc_port=port,
            prefer_grpc=True,
            check_compatibility=False,
            **kwargs,
        )


def test_info_and_listing(client: QdrantClient, server: QdrantGrpcServer) -> None:
    version = client.info()
    assert (version.title, version.version) == ("qdrant - vector search engine", server.version)
    assert {c.name for c in client.get_collections().collections} == set(SIZES)
    assert client.collection_exists(NAMED) is True
    assert client.collection_exists("nope") is False
    # every call went over gRPC, to the methods of Qdrant's services
    assert server.count("/qdrant.Qdrant/HealthCheck") == 1
    assert server.count("Collections/List") == 1
    assert server.count("CollectionExists") == 2
    assert server.count() == 4


@pytest.mark.parametrize("name", list(SIZES))
def test_collection_config_and_count(client: QdrantClient, local: QdrantClient, name: str) -> None:
    got, want = client.get_collection(name), local.get_collection(name)
    assert got.points_count == want.points_count == SIZES[name]
    assert got.config.params.vectors == want.config.params.vectors
    assert got.config.params.sparse_vectors == want.config.params.sparse_vectors
    assert client.count(name, exact=True).count == SIZES[name]


@pytest.mark.parametrize("limit", [1, 4, 10, 100])
@pytest.mark.parametrize("name", list(SIZES))
def test_scroll_equals_local_mode(
    client: QdrantClient, local: QdrantClient, name: str, limit: int
) -> None:
    pages = walk(client, name, limit)
    assert pages == walk(local, name, limit)
    assert sum(len(p) for p, _ in pages) == SIZES[name]
    if name != INTS:
        # integer ids first, then UUIDs; a UUID next_page_offset comes back as a string
        ids = [i for page, _ in pages for i, _, _ in page]
        kinds = [isinstance(i, int) for i in ids]
        assert kinds == sorted(kinds, reverse=True) and 0 < sum(kinds) < len(ids)
        if limit < 10:
            assert any(isinstance(offset, str) and uuid.UUID(offset) for _, offset in pages)


def test_vector_shapes(client: QdrantClient) -> None:
    (point,), _ = client.scroll(UNNAMED, limit=1, with_vectors=True)
    assert isinstance(point.vector, list) and len(point.vector) == 8
    assert all(type(x) is float for x in point.vector)
    assert sum(x * x for x in point.vector) == pytest.approx(1.0, rel=1e-5)  # Cosine: normalised
    points, _ = client.scroll(NAMED, limit=SIZES[NAMED], with_vectors=True)
    for p in points:
        assert isinstance(p.vector, dict)
        assert isinstance(p.vector["keywords"], models.SparseVector)
        assert isinstance(p.vector["colbert"][0], list) and len(p.vector["colbert"][0]) == 4
    assert sum("image" in p.vector for p in points) == SIZES[NAMED] - 4  # every tenth lacks it


def test_selectors(client: QdrantClient, local: QdrantClient) -> None:
    bare, _ = client.scroll(NAMED, limit=3, with_payload=False, with_vectors=False)
    # over gRPC an unrequested payload is an empty map, which the client makes {} (REST: None)
    assert [(p.payload, p.vector) for p in bare] == [({}, None)] * 3
    some, _ = client.scroll(NAMED, limit=3, with_payload=["n", "flag"], with_vectors=["keywords"])
    want, _ = local.scroll(NAMED, limit=3, with_payload=["n", "flag"], with_vectors=["keywords"])
    assert comparable(some) == comparable(want)
    assert [set(p.vector) for p in some] == [{"keywords"}] * 3
    assert [set(p.payload) for p in some] == [{"n", "flag"}] * 3
    exclude = models.PayloadSelectorExclude(exclude=["title", "nested"])
    got, _ = client.scroll(UNNAMED, limit=2, with_payload=exclude)
    assert [set(p.payload) for p in got] == [{"n", "score", "flag", "tags"}] * 2


@pytest.mark.parametrize("name", [UNNAMED, NAMED])
def test_retrieve(client: QdrantClient, local: QdrantClient, name: str) -> None:
    everything, _ = local.scroll(name, limit=100)
    ids = [
        everything[5].id,
        everything[-1].id,
        999_999_999,
        str(uuid.UUID(int=7)),
        everything[0].id,
    ]
    got = client.retrieve(name, ids, with_payload=True, with_vectors=True)
    want = local.retrieve(name, ids, with_payload=True, with_vectors=True)
    assert comparable(got) == comparable(want)
    assert [p.id for p in got] == [ids[0], ids[1], ids[4]]  # unknown ids are left out
    # an upper-case UUID names the same point; the answer spells it canonically
    uuid_id = next(p.id for p in everything if isinstance(p.id, str))
    (point,) = client.retrieve(name, [uuid_id.upper()])
    assert point.id == uuid_id


@pytest.mark.parametrize(
    ("backend", "version"),
    [("local", CURRENT), ("store", CURRENT), ("local", LEGACY), ("store", LEGACY)],
)
def test_vectors_travel_in_the_fields_the_server_fills(
    local: QdrantClient, stores: list[QdrantStore], backend: str, version: str
) -> None:
    """1.17+ fills VectorOutput's dense/sparse/multi_dense oneof; older servers the
    deprecated data (+ indices, + vectors_count). Read with the raw stub."""
    with QdrantGrpcServer(local if backend == "local" else stores, version=version) as server:
        channel = grpc.insecure_channel(server.address)
        try:
            stub = pb.PointsStub(channel)
            request = pb.ScrollPoints(
                collection_name=NAMED, limit=3, with_vectors=pb.WithVectorsSelector(enable=True)
            )
            response = stub.Scroll(request, timeout=5)
            (unnamed,) = stub.Scroll(
                pb.ScrollPoints(
                    collection_name=UNNAMED,
                    limit=1,
                    with_vectors=pb.WithVectorsSelector(enable=True),
                ),
                timeout=5,
            ).result
        finally:
            channel.close()
    assert len(response.result) == 3 and response.HasField("next_page_offset")
    assert response.time > 0
    assert unnamed.vectors.WhichOneof("vectors_options") == "vector"
    single = unnamed.vectors.vector
    for point in response.result:
        assert point.vectors.WhichOneof("vectors_options") == "vectors"
        vectors = point.vectors.vectors.vectors
        text, keywords, colbert = vectors["text"], vectors["keywords"], vectors["colbert"]
        if version == LEGACY:
            for output in (text, keywords, colbert, single):
                assert output.WhichOneof("vector") is None
            assert len(text.data) == 12 and not text.HasField("indices")
            assert not text.HasField("vectors_count")
            assert len(keywords.indices.data) == len(keywords.data) > 0
            assert len(colbert.data) == 4 * colbert.vectors_count > 0
            assert len(single.data) == 8
        else:
            assert [o.WhichOneof("vector") for o in (text, keywords, colbert, single)] == [
                "dense",
                "sparse",
                "multi_dense",
                "dense",
            ]
            assert [len(o.data) for o in (text, keywords, colbert, single)] == [0, 0, 0, 0]
            assert len(text.dense.data) == 12 and len(single.dense.data) == 8
            assert len(keywords.sparse.indices) == len(keywords.sparse.values) > 0
            assert {len(v.data) for v in colbert.multi_dense.vectors} == {4}


def test_unknown_collection(client: QdrantClient, server: QdrantGrpcServer) -> None:
    for call in (
        lambda: client.get_collection("missing"),
        lambda: client.scroll("missing", limit=1),
        lambda: client.count("missing", exact=True),
        lambda: client.retrieve("missing", [1]),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert err.value.details() == "Not found: Collection `missing` doesn't exist!"
    assert [code for _, code in server.log] == ["NOT_FOUND"] * 4


def test_limit_zero_is_rejected(client: QdrantClient) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.scroll(UNNAMED, limit=0)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limit" in err.value.details()


@pytest.mark.parametrize("backend", ["local", "store"])
def test_api_key(local: QdrantClient, stores: list[QdrantStore], backend: str) -> None:
    source = local if backend == "local" else stores
    with QdrantGrpcServer(source, api_key="s3cret", read_only_api_key="r34d") as server:
        clients = {
            "good": make_grpc_client(server.port, api_key="s3cret"),
            "read_only": make_grpc_client(server.port, api_key="r34d"),
            "bearer": make_grpc_client(server.port, auth_token_provider=lambda: "s3cret"),
            "wrong": make_grpc_client(server.port, api_key="nope"),
            "missing": make_grpc_client(server.port),
        }
        try:
            for name in ("good", "read_only", "bearer"):
                assert clients[name].count(INTS).count == SIZES[INTS], name
            with pytest.raises(grpc.RpcError) as err:
                clients["wrong"].scroll(INTS, limit=1)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert err.value.details() == "Invalid API key or JWT"
            with pytest.raises(grpc.RpcError) as err:
                clients["missing"].get_collection(INTS)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert err.value.details() == "Must provide an API key or an Authorization bearer token"
            assert clients["missing"].info().version == server.version  # HealthCheck needs no key
            server.api_key = server.read_only_api_key = None  # settable at any time
            assert clients["wrong"].count(INTS).count == SIZES[INTS]
        finally:
            for c in clients.values():
                c.close()


def test_unavailable_then_success(client: QdrantClient, server: QdrantGrpcServer) -> None:
    server.fail_next(2, grpc.StatusCode.UNAVAILABLE, method="Scroll")
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as err:
            client.scroll(INTS, limit=2)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "injected" in err.value.details()
    assert client.count(INTS).count == SIZES[INTS]  # other methods unaffected
    assert len(client.scroll(INTS, limit=2)[0]) == 2
    assert server.count("Scroll") == server.count("Points/Scroll") == 3
    assert [c for p, c in server.log if p.endswith("/Scroll")] == ["UNAVAILABLE"] * 2 + ["OK"]


def test_rate_limit(client: QdrantClient, server: QdrantGrpcServer) -> None:
    # With a retry-after trailer (as Qdrant's rate limiter sends) the client raises its own
    # ResourceExhaustedResponse; without one, the plain gRPC error.
    server.fail_next(1, grpc.StatusCode.RESOURCE_EXHAUSTED, retry_after=7, method="Scroll")
    with pytest.raises(ResourceExhaustedResponse) as exhausted:
        client.scroll(INTS, limit=2)
    assert exhausted.value.retry_after_s == 7
    assert str(exhausted.value).startswith("Rate limiting exceeded: Read rate limit exceeded")
    server.fail_next(1, grpc.StatusCode.RESOURCE_EXHAUSTED)
    with pytest.raises(grpc.RpcError) as err:
        client.count(INTS)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert client.count(INTS).count == SIZES[INTS]


def test_hang_past_the_deadline(store_server: QdrantGrpcServer) -> None:
    server = store_server
    client = server.client(timeout=1)
    try:
        server.hang_next(1, seconds=4, method="Scroll")
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            client.scroll(INTS, limit=3)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert 0.9 < time.monotonic() - started < 3
        assert len(client.scroll(INTS, limit=3)[0]) == 3  # the next call is answered
    finally:
        client.close()


def test_latency_concurrency_and_stats(store_server: QdrantGrpcServer) -> None:
    server = store_server
    client = server.client()
    client.count(INTS)  # connect first: the first call also opens the channel
    server.reset_stats()
    assert server.count() == 0 and server.max_in_flight == 0
    server.latency = 0.3
    started = time.monotonic()
    client.count(INTS)
    assert time.monotonic() - started >= 0.3
    threads = [threading.Thread(target=client.scroll, args=(INTS,)) for _ in range(4)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - started < 1.1  # served side by side, not one after another
    assert server.max_in_flight >= 2
    assert server.count("Scroll") == 4 and server.in_flight == 0
    assert server.stats()["cpu_seconds"]["/qdrant.Points/Scroll"] > 0
    client.close()


# ------------------------------------------------------------------ the store alone
def test_store_scroll_equals_local_mode_page_by_page() -> None:
    """The store sorts independently of local mode: ids and next_page_offset agree on every
    page, for edge ids (0, 2**64 - 1, UUIDs near the hex digit/letter boundary)."""
    edge: list[int | str] = [0, 1, 9, 10, 2**63, 2**64 - 1, 7, 100]
    edge += [
        "00000000-0000-0000-0000-000000000000",
        "9fffffff-ffff-ffff-ffff-ffffffffffff",
        "a0000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "0000000a-0000-0000-0000-000000000000",
        "00000009-0000-0000-0000-000000000000",
    ]
    rng = random.Random(5)
    edge += [rng.getrandbits(63) for _ in range(40)]
    edge += [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(40)]
    rng.shuffle(edge)
    points = [
        models.PointStruct(id=pid, vector=[1.0, float(n)], payload={"n": n})
        for n, pid in enumerate(edge)
    ]
    local = QdrantClient(":memory:")
    try:
        local.create_collection("e", vectors_config=models.VectorParams(size=2, distance="Dot"))
        local.upsert("e", points)
        store = QdrantStore.from_records(
            "e", models.VectorParams(size=2, distance="Dot"), None, reversed(points)
        )
        for limit in (1, 3, 7, 50, 200):
            offset = None
            while True:
                want, want_next = local.scroll("e", limit=limit, offset=offset, with_vectors=True)
                page = store.scroll(offset, limit)
                assert [store.ids[r] for r in page.rows] == [p.id for p in want]
                assert page.next_page_offset == want_next
                assert store.records(page.rows, True, True) == want
                if want_next is None:
                    break
                offset = want_next
        # an offset that is no point's id starts at the next one, as on the server
        for offset in (
            8,
            2**62,
            "00000000-0000-0000-0000-000000000001",
            "A0000000-0000-0000-0000-000000000001",
        ):
            want, want_next = local.scroll("e", limit=2, offset=offset)
            page = store.scroll(offset, 2)
            assert ([store.ids[r] for r in page.rows], page.next_page_offset) == (
                [p.id for p in want],
                want_next,
            )
    finally:
        local.close()
    with pytest.raises(ValueError, match="Limit cannot be 0"):
        store.scroll(None, 0)


@pytest.mark.parametrize("ids", ["int", "uuid", "mixed"])
def test_synthetic_store_scrolls_as_local_mode(ids: str) -> None:
    cosine = QdrantStore.synthetic("s", 120, 6, ids=ids, seed=3)
    assert np.allclose(np.linalg.norm(cosine.columns[""].matrix, axis=1), 1.0)  # normalised
    # Dot: local mode re-normalises Cosine vectors on upsert (1 ulp off); Qdrant leaves
    # vectors of length 1 +- 1e-6 alone (cosine_preprocess, lib/segment/src/spaces/simple.rs).
    store = QdrantStore.synthetic("s", 120, 6, ids=ids, seed=3, distance=models.Distance.DOT)
    assert store.count() == 120 and store.ids == cosine.ids
    again = QdrantStore.synthetic("s", 120, 6, ids=ids, seed=3, distance=models.Distance.DOT)
    assert again.ids == store.ids
    assert np.array_equal(again.columns[""].matrix, store.columns[""].matrix)
    local = QdrantClient(":memory:")
    try:
        local.create_collection("s", vectors_config=models.VectorParams(size=6, distance="Dot"))
        records = store.records(range(store.count()), True, True)
        random.Random(1).shuffle(records)
        local.upsert(
            "s", [models.PointStruct(id=r.id, vector=r.vector, payload=r.payload) for r in records]
        )
        for limit in (1, 16, 119, 120, 500):
            offset = None
            while True:
                want, want_next = local.scroll("s", limit=limit, offset=offset, with_vectors=True)
                page = store.scroll(offset, limit)
                assert comparable(store.records(page.rows, True, True)) == comparable(want)
                assert page.next_page_offset == want_next
                if want_next is None:
                    break
                offset = want_next
    finally:
        local.close()


def test_store_rest_json_is_the_rest_answer(local: QdrantClient, stores: list[QdrantStore]) -> None:
    store = next(s for s in stores if s.name == NAMED)
    body = json.loads(store.scroll_json(None, 5, with_payload=True, with_vectors=True))
    assert body["status"] == "ok"
    want, want_next = local.scroll(NAMED, limit=5, with_payload=True, with_vectors=True)
    result = body["result"]
    assert result["next_page_offset"] == want_next
    got = [models.Record.model_validate(p) for p in result["points"]]
    assert comparable(got) == comparable(want)


def test_runs_as_its_own_process() -> None:
    script = Path(__file__).with_name("qdrant_grpc_server.py")
    args = ["--grpc-port", "0", "--latency", "0.01", "--collection", "c", "--records", "300"]
    args += ["--dim", "8", "--api-key", "k", "--ids", "mixed", "--seed", "4"]
    process = subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        client = make_grpc_client(port, api_key="k")
        try:
            assert client.count("c").count == 300
            pages = walk(client, "c", 64)
        finally:
            client.close()
        expected = QdrantStore.synthetic("c", 300, 8, ids="mixed", seed=4)
        ids = [i for page, _ in pages for i, _, _ in page]
        assert ids == expected.ids
        assert pages[0][0][0] == comparable(expected.records([0], True, True))[0]
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
        stats = json.loads(err.strip().splitlines()[-1])
        assert stats["requests"]["/qdrant.Points/Scroll"] == len(pages) == 5
        assert stats["process_cpu_seconds"] > 0
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
