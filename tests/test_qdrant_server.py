"""The test Qdrant server (tests/qdrant_server.py) against the real qdrant-client REST client,
answering from local mode or from ``QdrantStore`` s."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

try:
    from qdrant_server import QdrantServer
    from qdrant_store import QdrantStore
except ImportError:  # tests/ imported as a package
    from tests.qdrant_server import QdrantServer
    from tests.qdrant_store import QdrantStore

PLAIN = "plain"
MIXED = "mixed"
PLAIN_POINTS = 23
MIXED_INTS = 9
MIXED_UUIDS = 8


def make_client(url: str, api_key: str | None = None, **kwargs: object) -> QdrantClient:
    """A REST client; no version probe unless asked (it runs in a background thread and warns
    from there when the server is gone, which the project's warnings=error turns into a
    thread exception)."""
    kwargs.setdefault("timeout", 5)
    kwargs.setdefault("check_compatibility", False)
    with warnings.catch_warnings():
        # qdrant-client warns "Api key is used with an insecure connection." for http:// URLs
        warnings.filterwarnings("ignore", "Api key is used with an insecure connection")
        return QdrantClient(url=url, api_key=api_key, **kwargs)  # type: ignore[arg-type]


def _uuid(i: int) -> str:
    return str(uuid.UUID(int=(i * 0x9E3779B97F4A7C15) % (1 << 128)))


@pytest.fixture(scope="module")
def local() -> Iterator[QdrantClient]:
    client = QdrantClient(":memory:")
    client.create_collection(
        PLAIN, vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE)
    )
    client.upsert(
        PLAIN,
        [
            models.PointStruct(
                id=i * 3 + 1,
                vector=[0.1 * i + 0.01, -0.2, 0.3 * (i % 5), 1.0],
                payload={"i": i, "name": f"p{i}"},
            )
            for i in range(PLAIN_POINTS - 1, -1, -1)  # inserted in reverse: order comes from ids
        ],
    )
    client.create_collection(
        MIXED,
        vectors_config={
            "text": models.VectorParams(size=3, distance=models.Distance.COSINE),
            "image": models.VectorParams(
                size=5, distance=models.Distance.MANHATTAN, datatype=models.Datatype.FLOAT32
            ),
            "small": models.VectorParams(size=2, distance=models.Distance.EUCLID),
            "colbert": models.VectorParams(
                size=2,
                distance=models.Distance.DOT,
                multivector_config=models.MultiVectorConfig(
                    comparator=models.MultiVectorComparator.MAX_SIM
                ),
            ),
        },
        sparse_vectors_config={
            "bm25": models.SparseVectorParams(modifier=models.Modifier.IDF),
        },
    )
    points = []
    ids: list[int | str] = [i * 1000 + 7 for i in range(MIXED_INTS)]
    ids += [_uuid(i + 1) for i in range(MIXED_UUIDS)]
    for n, pid in enumerate(ids):
        vector: dict[str, object] = {
            "text": [1.0, 2.0 + n, 3.0],
            "image": [n * 0.5, -1.5, 2.25, 0.0, 1e-3],
            "colbert": [[float(n), 1.0], [2.0, -float(n)], [0.5, 0.5]][: 1 + n % 3],
            "bm25": models.SparseVector(indices=[n + 10, 3, 7], values=[0.5, 1.25, n + 0.75]),
        }
        if n % 2 == 0:  # some points lack a named vector
            vector["small"] = [0.25, float(n)]
        points.append(
            models.PointStruct(
                id=pid,
                vector=vector,
                payload={
                    "title": f"Grüße aus Köln #{n} — 東京 🚀",
                    "nested": {"tags": ["ä", "ß", None, n], "deep": {"x": n / 3, "ok": n % 2 == 0}},
                    "empty": {},
                    "none": None,
                },
            )
        )
    client.upsert(MIXED, points)
    yield client
    client.close()


@pytest.fixture()
def server(local: QdrantClient) -> Iterator[QdrantServer]:
    with QdrantServer(local) as srv:
        yield srv


@pytest.fixture()
def client(server: QdrantServer) -> Iterator[QdrantClient]:
    c = make_client(server.url)
    yield c
    c.close()


def walk(client: QdrantClient, collection: str, limit: int) -> list[tuple[list, object]]:
    pages = []
    offset = None
    while True:
        points, offset = client.scroll(
            collection, limit=limit, offset=offset, with_payload=True, with_vectors=True
        )
        pages.append((points, offset))
        if offset is None:
            return pages


def test_unnamed_vector_int_ids(client: QdrantClient, local: QdrantClient) -> None:
    info = client.get_collection(PLAIN)
    params = info.config.params
    assert isinstance(params.vectors, models.VectorParams)
    assert params.vectors.size == 4
    assert params.vectors.distance == models.Distance.COSINE
    assert params.sparse_vectors is None
    assert info.points_count == PLAIN_POINTS
    assert client.count(PLAIN, exact=True).count == PLAIN_POINTS
    assert client.collection_exists(PLAIN)

    pages = walk(client, PLAIN, limit=5)
    assert pages == walk(local, PLAIN, limit=5)
    assert [len(p) for p, _ in pages] == [5, 5, 5, 5, 3]
    # the offset is the next point's id, not a count
    assert [o for _, o in pages] == [16, 31, 46, 61, None]
    points = [p for page, _ in pages for p in page]
    assert [p.id for p in points] == [i * 3 + 1 for i in range(PLAIN_POINTS)]
    first = points[0]
    assert isinstance(first.vector, list) and all(type(x) is float for x in first.vector)
    assert first.payload == {"i": 0, "name": "p0"}
    # cosine collections store normalised vectors
    assert sum(x * x for x in first.vector) == pytest.approx(1.0, rel=1e-6)


def test_named_sparse_multi_vectors_mixed_ids(client: QdrantClient, local: QdrantClient) -> None:
    params = client.get_collection(MIXED).config.params
    assert isinstance(params.vectors, dict)
    vectors = params.vectors
    assert {k: (v.size, v.distance) for k, v in vectors.items()} == {
        "text": (3, models.Distance.COSINE),
        "image": (5, models.Distance.MANHATTAN),
        "small": (2, models.Distance.EUCLID),
        "colbert": (2, models.Distance.DOT),
    }
    assert vectors["image"].datatype == models.Datatype.FLOAT32
    assert vectors["text"].datatype is None and vectors["text"].multivector_config is None
    assert vectors["colbert"].multivector_config == models.MultiVectorConfig(
        comparator=models.MultiVectorComparator.MAX_SIM
    )
    assert params.sparse_vectors is not None
    assert set(params.sparse_vectors) == {"bm25"}
    assert params.sparse_vectors["bm25"].modifier == models.Modifier.IDF

    total = MIXED_INTS + MIXED_UUIDS
    assert client.count(MIXED, exact=True).count == total

    pages = walk(client, MIXED, limit=4)
    local_pages = walk(local, MIXED, limit=4)
    assert len(pages) == len(local_pages) == 5
    for (got, got_offset), (want, want_offset) in zip(pages, local_pages, strict=True):
        assert got_offset == want_offset
        assert [p.model_dump() for p in got] == [p.model_dump() for p in want]
        assert got == want
    points = [p for page, _ in pages for p in page]
    ids = [p.id for p in points]
    assert len(set(map(str, ids))) == total
    # integer ids first, in order, then the UUIDs (as strings)
    assert ids[:MIXED_INTS] == sorted(i * 1000 + 7 for i in range(MIXED_INTS))
    assert all(isinstance(i, str) and uuid.UUID(i) for i in ids[MIXED_INTS:])
    assert isinstance(pages[2][1], str)  # a UUID next_page_offset is passed back as a string

    for p in points:
        assert isinstance(p.vector, dict)
        assert isinstance(p.vector["text"], list)
        assert isinstance(p.vector["bm25"], models.SparseVector)
        assert p.vector["bm25"].indices == sorted(p.vector["bm25"].indices)
        assert isinstance(p.vector["colbert"], list) and isinstance(p.vector["colbert"][0], list)
        assert p.payload is not None
        assert p.payload["title"].startswith("Grüße aus Köln #")
        assert p.payload["title"].endswith("— 東京 🚀")
        assert p.payload["nested"]["tags"][:3] == ["ä", "ß", None]
        assert p.payload["empty"] == {} and p.payload["none"] is None
    assert sum("small" in p.vector for p in points) == (total + 1) // 2

    # without vectors / payload
    bare, _ = client.scroll(MIXED, limit=2, with_payload=False, with_vectors=False)
    assert [(p.payload, p.vector) for p in bare] == [(None, None), (None, None)]
    only, _ = client.scroll(MIXED, limit=1, with_vectors=["bm25"])
    assert set(only[0].vector) == {"bm25"}


def test_collections_listing_and_exists(client: QdrantClient) -> None:
    assert {c.name for c in client.get_collections().collections} == {PLAIN, MIXED}
    assert client.collection_exists(MIXED) is True
    assert client.collection_exists("nope") is False


def test_unknown_collection_is_404(client: QdrantClient, server: QdrantServer) -> None:
    with pytest.raises(UnexpectedResponse) as err:
        client.get_collection("missing")
    assert err.value.status_code == 404
    assert err.value.structured()["status"] == {
        "error": "Not found: Collection `missing` doesn't exist!"
    }
    for call in (
        lambda: client.scroll("missing", limit=1),
        lambda: client.count("missing", exact=True),
    ):
        with pytest.raises(UnexpectedResponse) as err:
            call()
        assert err.value.status_code == 404
    assert server.count("/collections/missing") == 3


def test_api_key(local: QdrantClient) -> None:
    with QdrantServer(local, api_key="s3cret") as server:
        good = make_client(server.url, api_key="s3cret")
        wrong = make_client(server.url, api_key="nope")
        missing = make_client(server.url)
        try:
            assert good.count(PLAIN).count == PLAIN_POINTS
            with pytest.raises(UnexpectedResponse) as err:
                wrong.get_collection(PLAIN)
            assert err.value.status_code == 401
            assert err.value.content == b"Invalid API key or JWT"
            with pytest.raises(UnexpectedResponse) as err:
                missing.scroll(PLAIN, limit=1)
            assert err.value.status_code == 401
            assert b"Must provide an API key" in err.value.content
            # the version probe on / needs no key, as on the real server
            assert httpx.get(server.url).json()["title"] == "qdrant - vector search engine"
            server.auth_status = 403  # older servers
            with pytest.raises(UnexpectedResponse) as err:
                wrong.count(PLAIN)
            assert err.value.status_code == 403
            server.api_key = None  # settable at any time
            assert wrong.count(PLAIN).count == PLAIN_POINTS
        finally:
            for c in (good, wrong, missing):
                c.close()


def test_503_then_success(client: QdrantClient, server: QdrantServer) -> None:
    server.fail_next(2, status=503, path_contains="/points/count")
    for _ in range(2):
        with pytest.raises(UnexpectedResponse) as err:
            client.count(PLAIN)
        assert err.value.status_code == 503
        assert "Service unavailable" in err.value.structured()["status"]["error"]
    assert client.get_collection(PLAIN).points_count == PLAIN_POINTS  # other paths unaffected
    assert client.count(PLAIN).count == PLAIN_POINTS
    assert server.count("/points/count") == 3
    assert [s for m, p, s in server.log if p.endswith("/points/count")] == [503, 503, 200]


def test_429_with_and_without_retry_after(client: QdrantClient, server: QdrantServer) -> None:
    server.fail_next(1, status=429, retry_after=7)
    with pytest.raises(ResourceExhaustedResponse) as exhausted:
        client.scroll(PLAIN, limit=2)
    assert exhausted.value.retry_after_s == 7
    server.fail_next(1, status=429)
    with pytest.raises(UnexpectedResponse) as err:
        client.scroll(PLAIN, limit=2)
    assert err.value.status_code == 429
    assert len(client.scroll(PLAIN, limit=2)[0]) == 2


def test_hang_longer_than_client_timeout(server: QdrantServer) -> None:
    client = make_client(server.url, timeout=1)
    try:
        server.hang_next(1, seconds=4, path_contains="/points/scroll")
        started = time.monotonic()
        with pytest.raises(ResponseHandlingException) as err:
            client.scroll(PLAIN, limit=3)
        assert isinstance(err.value.source, httpx.ReadTimeout)
        assert 0.9 < time.monotonic() - started < 3
        assert len(client.scroll(PLAIN, limit=3)[0]) == 3  # the next request is answered
    finally:
        client.close()


def test_latency_and_dropped_connection(client: QdrantClient, server: QdrantServer) -> None:
    server.latency = 0.3
    started = time.monotonic()
    client.count(PLAIN)
    assert time.monotonic() - started >= 0.3
    server.latency = 0
    server.drop_next(1)
    with pytest.raises(ResponseHandlingException) as err:
        client.count(PLAIN)
    assert isinstance(err.value.source, httpx.RemoteProtocolError)
    assert client.count(PLAIN).count == PLAIN_POINTS


def test_connection_refused() -> None:
    with QdrantServer() as server:
        url = server.url
    client = make_client(url, timeout=1)
    try:
        with pytest.raises(ResponseHandlingException) as err:
            client.get_collection(PLAIN)
        assert isinstance(err.value.source, httpx.ConnectError)
    finally:
        client.close()


def test_version_probe_is_compatible(server: QdrantServer) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = make_client(server.url, check_compatibility=True)
        deadline = time.monotonic() + 5
        while ("GET", "/", 200) not in server.log and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # let the probe thread compare the versions
        client.close()
    assert ("GET", "/", 200) in server.log
    assert [str(w.message) for w in caught] == []


def test_server_on_a_local_path(tmp_path: object) -> None:
    path = str(tmp_path)
    seeding = QdrantClient(path=path)
    seeding.create_collection("c", vectors_config=models.VectorParams(size=2, distance="Dot"))
    seeding.upsert("c", [models.PointStruct(id=uuid.UUID(int=1).hex, vector=[1.0, 2.0])])
    seeding.close()  # local mode locks the path: one client at a time
    with QdrantServer(path=path) as server:
        client = make_client(server.url)
        try:
            points, offset = client.scroll("c", with_vectors=True)
            assert offset is None
            assert [(p.id, p.vector) for p in points] == [(str(uuid.UUID(int=1)), [1.0, 2.0])]
        finally:
            client.close()


# -- answering from QdrantStores (benchmark scale) ---------------------------------------


def float32(value: object) -> object:
    """Vectors as float32 (a store writes float32 text; local mode float64 text of it)."""
    if isinstance(value, dict):
        return {k: float32(v) for k, v in value.items()}
    if isinstance(value, models.SparseVector):
        return (tuple(value.indices), tuple(np.float32(value.values).tolist()))
    if isinstance(value, list):
        return np.asarray(value, dtype=np.float32).tolist()
    return value


def comparable(pages: list) -> list:
    return [
        ([(p.id, p.payload, float32(p.vector)) for p in points], offset) for points, offset in pages
    ]


@pytest.fixture(scope="module")
def stores(local: QdrantClient) -> list[QdrantStore]:
    return [QdrantStore.from_local(local, name) for name in (PLAIN, MIXED)]


def test_a_store_answers_as_local_mode_does(local: QdrantClient, stores) -> None:
    with QdrantServer(stores, api_key="k") as server:
        client = make_client(server.url, api_key="k")
        try:
            assert {c.name for c in client.get_collections().collections} == {PLAIN, MIXED}
            assert client.collection_exists(MIXED) and not client.collection_exists("nope")
            for name in (PLAIN, MIXED):
                assert client.count(name, exact=True) == local.count(name, exact=True)
                got, want = client.get_collection(name), local.get_collection(name)
                assert got.config.params.vectors == want.config.params.vectors
                assert got.config.params.sparse_vectors == want.config.params.sparse_vectors
                assert got.points_count == local.count(name).count
                assert comparable(walk(client, name, limit=4)) == comparable(
                    walk(local, name, limit=4)
                )
            ids = [p.id for p in local.scroll(MIXED, limit=20)[0]][::3] + [123456]
            got = client.retrieve(MIXED, ids, with_vectors=True)
            want = local.retrieve(MIXED, ids, with_vectors=True)
            assert comparable([(got, None)]) == comparable([(want, None)])
            bare, _ = client.scroll(MIXED, limit=2, with_payload=False, with_vectors=False)
            assert [(p.payload, p.vector) for p in bare] == [(None, None), (None, None)]
            only, _ = client.scroll(MIXED, limit=1, with_vectors=["bm25"])
            assert set(only[0].vector) == {"bm25"}
            with pytest.raises(UnexpectedResponse) as err:
                client.scroll("missing", limit=1)
            assert err.value.status_code == 404
        finally:
            client.close()
        assert server.count("/points/scroll") == 6 + 5 + 3  # two walks, three scrolls


def test_a_store_writes_floats_as_a_qdrant_server_does(local: QdrantClient, stores) -> None:
    """The shortest text that reads back as the same float32 (serde's), not float64's."""
    with QdrantServer(stores) as store_server, QdrantServer(local) as local_server:
        request = {"limit": 23, "with_vector": True, "with_payload": False}
        ours = httpx.post(f"{store_server.url}/collections/{PLAIN}/points/scroll", json=request)
        theirs = httpx.post(f"{local_server.url}/collections/{PLAIN}/points/scroll", json=request)
    vectors = [np.asarray(p["vector"], np.float32) for p in ours.json()["result"]["points"]]
    want = [np.asarray(p["vector"], np.float32) for p in theirs.json()["result"]["points"]]
    assert len(vectors) == len(want) == PLAIN_POINTS
    for got, expected in zip(vectors, want, strict=True):
        np.testing.assert_array_equal(got, expected)  # the same float32 values
    assert len(ours.content) < 0.75 * len(theirs.content)
    assert b"0.009805336," in ours.content and b"0.00980533566325903," in theirs.content


def test_the_server_runs_as_its_own_process_over_rest_and_grpc() -> None:
    script = Path(__file__).with_name("qdrant_server.py")
    args = ["--collection", "a:300", "--collection", "b:50", "--dim", "8", "--bench"]
    args += ["--api-key", "k", "--grpc-port", "0", "--latency", "0.01"]
    process = subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        rest = make_client(ready["url"], api_key="k")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            grpc_client = QdrantClient(
                url=ready["url"],
                grpc_port=ready["grpc_port"],
                prefer_grpc=True,
                api_key="k",
                check_compatibility=False,
            )
        try:
            expected = QdrantStore.bench("a", 300, 8)
            for client in (rest, grpc_client):
                assert client.count("a").count == 300 and client.count("b").count == 50
                points = [p for page, _ in walk(client, "a", 64) for p in page]
                assert [p.id for p in points] == list(range(300))
                assert points[7].payload == {"n": 7}
                np.testing.assert_array_equal(
                    np.asarray(points[7].vector, dtype=np.float32), expected.columns[""].matrix[7]
                )
        finally:
            rest.close()
            grpc_client.close()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
        stats = json.loads(err.strip().splitlines()[-1])
        assert stats["rest"]["requests"]["POST /collections/a/points/scroll"] == 5
        assert stats["grpc"]["requests"]["/qdrant.Points/Scroll"] == 5
        assert stats["process_cpu_seconds"] > 0 and process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
