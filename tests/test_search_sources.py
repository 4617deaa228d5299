"""vec2pg elasticsearch and vec2pg opensearch, against tests/search_server.py (the real
``elasticsearch`` and ``opensearch-py`` clients seed and change it, and read it next to
vec2pg): every vector and property type, Elasticsearch 9.2+'s vectors left out of
_source (asked for, on both kinds of index), a run killed with kill -9 and resumed in a
new point in time, errors as the user sees them, rate limits and faults."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from conftest import Target
from elasticsearch import Elasticsearch, helpers
from opensearchpy import OpenSearch
from opensearchpy import helpers as os_helpers
from psycopg import sql
from search_server import SearchServer, rehydrate_dense, rehydrate_sparse

from vec2pg.errors import SourceError, SourceNotFound, SourceUnavailable, SourceUnsupported
from vec2pg.records import VectorKind
from vec2pg.sources.base import WHOLE
from vec2pg.sources.elasticsearch import (
    DecodeSpec,
    ElasticsearchSource,
    VectorSpec,
    decode_search,
)
from vec2pg.sources.opensearch import OpenSearchSource

ES_KEY = ("key-id", "key-secret")
ES_ENCODED = base64.b64encode(b"key-id:key-secret").decode()
OS_AUTH = ("admin", "S3cret!pw")


def direct(fn: Any, *args: Any) -> Any:
    return fn(*args)


# -- the contract's cases ------------------------------------------------------------------


def case_elasticsearch(request: Any, tmp_path: Any) -> Iterator[Any]:
    """Elasticsearch 9.3 (vectors left out of _source: asked for), read as the pattern
    ``docs-*``: two indices, so two namespaces; the larger one of three shards."""
    from test_source_contract import DIM, Case

    indices = {"": "docs-main", "other": "docs-other"}
    with (
        SearchServer("elasticsearch", "9.3.0", api_key=ES_KEY) as server,
        Elasticsearch(server.url, api_key=ES_KEY, request_timeout=10) as client,
    ):
        vector = {"type": "dense_vector", "dims": DIM, "similarity": "l2_norm"}
        for index, shards in (("docs-main", 3), ("docs-other", 1)):
            client.indices.create(
                index=index,
                mappings={"properties": {"embedding": vector}},
                settings={"number_of_shards": shards},
            )

        def put(records: list[Any]) -> None:
            helpers.bulk(
                client,
                (
                    {
                        "_index": indices[r.namespace],
                        "_id": r.id,
                        "_source": {"embedding": r.vectors["embedding"].tolist(), **r.metadata},
                    }
                    for r in records
                ),
            )

        case = Case(
            open=lambda collection="docs-*": ElasticsearchSource(
                collection, url=server.url, api_key=ES_ENCODED, page_size=100, timeout=5
            ),
            cli=["elasticsearch", "docs-*", "--url", server.url, "--api-key", ES_ENCODED]
            + ["--page-size", "100", "--table", "docs"],
            table="docs",
            namespaced=True,
            source_id=str,
            put=put,
            delete=lambda ns, rid: client.delete(index=indices[ns], id=rid),
            break_transiently=lambda: server.fail_next(1, status=503, endpoint="search"),
            table_namespace=lambda ns: indices[ns],
            vector="embedding",
        )
        case.seed()
        yield case


def case_opensearch(request: Any, tmp_path: Any) -> Iterator[Any]:
    """OpenSearch 2.19 (no _shard_doc: chains sorted by _seq_no), one index of two shards."""
    from test_source_contract import COUNTS, DIM, Case

    with SearchServer("opensearch", "2.19.0", basic_auth=OS_AUTH) as server:
        client = OpenSearch(server.url, http_auth=OS_AUTH, timeout=10)
        vector = {"type": "knn_vector", "dimension": DIM, "space_type": "l2"}
        client.indices.create(
            index="docs",
            body={
                "settings": {"number_of_shards": 2, "knn": True},
                "mappings": {"properties": {"embedding": vector}},
            },
        )

        def put(records: list[Any]) -> None:
            os_helpers.bulk(
                client,
                (
                    {
                        "_index": "docs",
                        "_id": r.id,
                        "_source": {"embedding": r.vectors["embedding"].tolist(), **r.metadata},
                    }
                    for r in records
                ),
            )

        case = Case(
            open=lambda collection="docs": OpenSearchSource(
                collection,
                url=server.url,
                user=OS_AUTH[0],
                password=OS_AUTH[1],
                page_size=100,
                timeout=5,
            ),
            cli=["opensearch", "docs", "--url", server.url, "--user", OS_AUTH[0]]
            + ["--password", OS_AUTH[1], "--page-size", "100"],
            table="docs",
            namespaced=False,
            source_id=str,
            put=put,
            delete=lambda ns, rid: client.delete(index="docs", id=rid),
            break_transiently=lambda: server.fail_next(1, status=503, endpoint="search"),
            vector="embedding",
            counts={"": COUNTS[""]},
        )
        case.seed()
        try:
            yield case
        finally:
            client.close()


# -- every vector and property type --------------------------------------------------------

N_TYPED = 30


def es_typed_mapping(bfloat16: bool) -> dict[str, Any]:
    vectors: dict[str, Any] = {
        "l2": {"type": "dense_vector", "dims": 4, "similarity": "l2_norm"},
        "cos": {"type": "dense_vector", "dims": 4, "similarity": "cosine"},
        "dot": {"type": "dense_vector", "dims": 4, "similarity": "dot_product"},
        "mip": {"type": "dense_vector", "dims": 4, "similarity": "max_inner_product"},
        "int8": {
            "type": "dense_vector",
            "dims": 4,
            "element_type": "byte",
            "similarity": "cosine",
        },
        "bits": {"type": "dense_vector", "dims": 16, "element_type": "bit"},
        "raw": {"type": "dense_vector", "dims": 3, "index": False},
        "colbert": {"type": "rank_vectors", "dims": 3},
        "colbert8": {"type": "rank_vectors", "dims": 2, "element_type": "byte"},
        "splade": {"type": "sparse_vector"},
        "passages": {
            "type": "nested",
            "properties": {
                "text": {"type": "text"},
                "vec": {"type": "dense_vector", "dims": 3, "similarity": "l2_norm"},
            },
        },
        "inner": {
            "properties": {
                "label": {"type": "keyword"},
                "deep": {
                    "properties": {
                        "vec": {"type": "dense_vector", "dims": 2, "similarity": "l2_norm"}
                    }
                },
            }
        },
    }
    if bfloat16:
        vectors["bf"] = {
            "type": "dense_vector",
            "dims": 4,
            "element_type": "bfloat16",
            "similarity": "l2_norm",
        }
    scalars = {
        "title": {"type": "text"},
        "tag": {"type": "keyword"},
        "n": {"type": "long"},
        "price": {"type": "double"},
        "ok": {"type": "boolean"},
        "when": {"type": "date"},
        "where": {"type": "geo_point"},
        "attrs": {"type": "flattened"},
    }
    return {"properties": {**vectors, **scalars}}


def typed_documents(bfloat16: bool, *, hex_bytes: bool) -> list[dict[str, Any]]:
    rng = np.random.default_rng(17)
    docs = []
    for i in range(N_TYPED):
        unit = rng.standard_normal(4)
        byte_vector = [int(v) for v in rng.integers(-128, 128, 4)]
        bit_bytes = [int(v) for v in rng.integers(-128, 128, 2)]
        doc: dict[str, Any] = {
            "_id": f"doc-{i:02d}",
            "l2": rng.standard_normal(4).astype(np.float32).tolist(),
            "cos": (rng.standard_normal(4) * 3).astype(np.float32).tolist(),
            "dot": (unit / np.linalg.norm(unit)).astype(np.float32).tolist(),
            "mip": (rng.standard_normal(4) * 10).astype(np.float32).tolist(),
            "int8": byte_vector,
            "bits": bit_bytes,
            "raw": rng.standard_normal(3).astype(np.float32).tolist(),
            "colbert": rng.standard_normal((1 + i % 3, 3)).astype(np.float32).tolist(),
            "colbert8": [[int(v) for v in row] for row in rng.integers(-128, 128, (2, 2))],
            "splade": {"alpha": float(rng.uniform(0.1, 2)), "beta": 0.3 + i},
            "passages": [
                {"text": f"passage {j} of {i}", "vec": rng.standard_normal(3).tolist()}
                for j in range(i % 3)
            ],
            "inner": {"label": f"l{i}", "deep": {"vec": rng.standard_normal(2).tolist()}},
            "title": f"Dokument {i} «ü» 🚀",
            "tag": ["a", "b"] if i % 2 else "c",
            "n": i,
            "price": i / 3,
            "ok": i % 2 == 0,
            "when": f"2024-05-0{1 + i % 9}T10:00:00Z",
            "where": {"lat": 52.5, "lon": 13.4},
            "attrs": {"color": "red", "size": str(i)},
            "empty": None,
        }
        if bfloat16:
            doc["bf"] = rng.standard_normal(4).astype(np.float32).tolist()
        if i == 3:  # vectors missing from a document are NULLs
            for name in ("l2", "colbert", "passages", "bits"):
                del doc[name]
        if i == 4 and hex_bytes:  # byte and bit vectors may be indexed as hex
            doc["int8"] = bytes(np.asarray(byte_vector, dtype=np.int8).view(np.uint8)).hex()
            doc["bits"] = bytes(np.asarray(bit_bytes, dtype=np.int8).view(np.uint8)).hex()
        docs.append(doc)
    return docs


def bits_text(values: Any) -> str:
    if isinstance(values, str):
        values = list(np.frombuffer(bytes.fromhex(values), dtype=np.int8))
    return "".join(f"{b:08b}" for b in np.asarray(values, dtype=np.int8).view(np.uint8))


def expected_es_row(doc: dict[str, Any], rehydrated: bool) -> dict[str, Any]:
    """What the table should hold for a document: the values Elasticsearch returns (on a
    rehydrating index: float32, cosine and bfloat16 vectors rebuilt, sparse values cut)."""

    def dense(value: Any, similarity: str, element: str = "float") -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            value = list(np.frombuffer(bytes.fromhex(value), dtype=np.int8))
        if rehydrated:
            return rehydrate_dense(value, similarity=similarity, element_type=element).astype(
                np.float32
            )
        return np.asarray(value, dtype=np.float64).astype(np.float32)

    row: dict[str, Any] = {
        "l2": dense(doc.get("l2"), "l2_norm"),
        "cos": dense(doc["cos"], "cosine"),
        "dot": dense(doc["dot"], "dot_product"),
        "mip": dense(doc["mip"], "max_inner_product"),
        "int8": dense(doc["int8"], "cosine", "byte"),
        "bits": None if "bits" not in doc else bits_text(doc["bits"]),
        "raw": dense(doc["raw"], ""),
        "colbert": None if "colbert" not in doc else [dense(v, "") for v in doc["colbert"]] or None,
        "colbert8": [dense(v, "", "byte") for v in doc["colbert8"]],
        "passages.vec": [dense(p["vec"], "l2_norm") for p in doc.get("passages", [])] or None,
        "inner.deep.vec": dense(doc["inner"]["deep"]["vec"], "l2_norm"),
    }
    if "bf" in doc:
        row["bf"] = dense(doc["bf"], "l2_norm", "bfloat16")
    vectors = {"l2", "cos", "dot", "mip", "int8", "bits", "raw", "colbert", "colbert8", "bf"}
    metadata = {k: v for k, v in doc.items() if k not in vectors and k != "_id"}
    if "passages" in metadata:
        metadata["passages"] = [{"text": p["text"]} for p in metadata["passages"]]
    metadata["inner"] = {"label": doc["inner"]["label"], "deep": {}}
    if rehydrated:
        metadata["splade"] = rehydrate_sparse(doc["splade"])
    row["metadata"] = metadata
    return row


def comments(target: Target, table: str) -> dict[str, dict[str, Any]]:
    rows = target.query(
        "SELECT a.attname, col_description(a.attrelid, a.attnum) FROM pg_attribute a "
        "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
        [f'"{target.schema}"."{table}"'],
    )
    return {name: json.loads(text)["vec2pg"] for name, text in rows if text}


def column_types(target: Target, table: str) -> dict[str, str]:
    rows = target.query(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        [f'"{target.schema}"."{table}"'],
    )
    return dict(rows)


def assert_vector(got: Any, want: Any, where: str) -> None:
    if want is None:
        assert got is None, where
    elif isinstance(want, str):
        assert got == want, where
    elif isinstance(want, list):
        assert got is not None and len(got) == len(want), where
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w, err_msg=where)
    else:
        np.testing.assert_array_equal(got, want, err_msg=where)


@pytest.mark.parametrize(
    ("version", "exclude"),
    [("8.17.0", None), ("8.19.0", None), ("9.3.0", None), ("9.3.0", False)],
    ids=["8.17", "8.19", "9.3-vectors-out-of-source", "9.3-vectors-in-source"],
)
def test_every_elasticsearch_vector_and_property_type(
    target: Target, capsys: Any, version: str, exclude: bool | None
) -> None:
    bfloat16 = version >= "9.3"
    settings: dict[str, Any] = {"number_of_shards": 2}
    if exclude is not None:
        settings["index.mapping.exclude_source_vectors"] = exclude
    with SearchServer("elasticsearch", version, api_key=ES_KEY) as server:
        rehydrated = server.exclude_vectors and exclude is not False
        docs = typed_documents(bfloat16, hex_bytes=not rehydrated)
        server.seed("typed", docs, mapping=es_typed_mapping(bfloat16), settings=settings)
        args = ["elasticsearch", "typed", "--url", server.url, "--api-key", ES_ENCODED]

        assert target.cli(*args) == 0, capsys.readouterr().err
        err = capsys.readouterr().err
        note = "Elasticsearch index 'typed' keeps its vectors only in its vector index"
        assert (note in err) is rehydrated, err
        if rehydrated:
            assert "'cos' (cosine: re-normalised" in err
            assert "'bf' (bfloat16: rounded" in err and "'splade' (sparse_vector" in err

        rows = target.rows("typed")
        assert set(rows) == {d["_id"] for d in docs}
        for doc in docs:
            want = expected_es_row(doc, rehydrated)
            for column, value in want.items():
                if column != "metadata":
                    assert_vector(rows[doc["_id"]][column], value, f"{doc['_id']} {column}")
            assert rows[doc["_id"]]["metadata"] == want["metadata"], doc["_id"]

        types = column_types(target, "typed")
        assert types["int8"] == "vector(4)" and types["bits"] == "bit(16)"
        assert types["colbert"] == "vector(3)[]" and types["passages.vec"] == "vector(3)[]"
        assert types["inner.deep.vec"] == "vector(2)" and "splade" not in types
        assert types.get("bf", "vector(4)") == "vector(4)"  # bfloat16 fits float32 exactly
        metrics = {name: c["metric"] for name, c in comments(target, "typed").items()}
        assert metrics == {
            "l2": "euclidean",
            "cos": "cosine",
            "dot": "dotproduct",
            "mip": "dotproduct",
            "int8": "cosine",
            "bits": "hamming",
            "raw": None,
            "colbert": "dotproduct",
            "colbert8": "dotproduct",
            "passages.vec": "euclidean",
            "inner.deep.vec": "euclidean",
            **({"bf": "euclidean"} if bfloat16 else {}),
        }

        assert target.cli("verify", *args, "--sample", "100") == 0, capsys.readouterr().out
        assert server.open_contexts == {"pit": 0, "scroll": 0}  # every PIT closed


def test_vectors_left_out_of_source_are_asked_for_and_match_the_official_client(
    target: Target, capsys: Any
) -> None:
    """On Elasticsearch 9.2+ a plain search (the official client's default) has no vectors;
    vec2pg asks for them, and stores exactly what the client then decodes."""
    docs = typed_documents(True, hex_bytes=False)
    with SearchServer("elasticsearch", "9.3.0", api_key=ES_KEY) as server:
        server.seed("typed", docs, mapping=es_typed_mapping(True))
        assert (
            target.cli(
                "elasticsearch", "typed", "--url", server.url, "--api-key", ES_ENCODED, "--quiet"
            )
            == 0
        )
        rows = target.rows("typed")
        with Elasticsearch(server.url, api_key=ES_KEY) as client:
            plain = client.search(index="typed", size=N_TYPED)["hits"]["hits"]
            assert all("cos" not in hit["_source"] for hit in plain)
            asked = client.search(index="typed", size=N_TYPED, source={"exclude_vectors": False})
        for hit in asked["hits"]["hits"]:
            row = rows[hit["_id"]]
            for name in ("cos", "bf", "l2", "mip"):
                if name in hit["_source"]:
                    want = np.asarray(hit["_source"][name], dtype=np.float32)
                    np.testing.assert_array_equal(row[name], want)
    capsys.readouterr()


def test_every_opensearch_knn_vector_type(target: Target, capsys: Any) -> None:
    def knn(dim: int, space: str | None = None, data_type: str = "float", top: bool = False):
        spec: dict[str, Any] = {"type": "knn_vector", "dimension": dim}
        if data_type != "float":
            spec["data_type"] = data_type
        if space and top:
            spec["space_type"] = space
        elif space:
            spec["method"] = {"name": "hnsw", "engine": "faiss", "space_type": space}
        return spec

    mapping = {
        "properties": {
            "l2": knn(4),
            "cos": knn(4, "cosinesimil", top=True),
            "ip": knn(4, "innerproduct"),
            "l1": knn(4, "l1"),
            "linf": knn(4, "linf"),
            "int8": knn(4, "l2", "byte"),
            "bits": knn(16, "hamming", "binary"),
            "passages": {"type": "nested", "properties": {"vec": knn(3)}},
            "n": {"type": "long"},
            "title": {"type": "text"},
        }
    }
    rng = np.random.default_rng(5)
    docs = []
    for i in range(20):
        doc: dict[str, Any] = {"_id": f"d{i}", "n": i, "title": f"t {i}"}
        for name in ("l2", "cos", "ip", "l1", "linf"):
            doc[name] = rng.standard_normal(4).astype(np.float32).tolist()
        doc["int8"] = [int(v) for v in rng.integers(-128, 128, 4)]
        doc["bits"] = [int(v) for v in rng.integers(-128, 128, 2)]
        doc["passages"] = [{"vec": rng.standard_normal(3).tolist()} for _ in range(1 + i % 2)]
        docs.append(doc)
    with SearchServer("opensearch", "2.19.0", basic_auth=OS_AUTH) as server:
        server.seed("knn", docs, mapping=mapping, settings={"index": {"knn": True}})
        args = ["opensearch", "knn", "--url", server.url, "--user", OS_AUTH[0]]
        args += ["--password", OS_AUTH[1]]
        assert target.cli(*args, "--quiet") == 0, capsys.readouterr().err

        rows = target.rows("knn")
        for doc in docs:
            row = rows[doc["_id"]]
            for name in ("l2", "cos", "ip", "l1", "linf", "int8"):
                np.testing.assert_array_equal(row[name], np.asarray(doc[name], dtype=np.float32))
            assert row["bits"] == bits_text(doc["bits"])
            assert_vector(
                row["passages.vec"],
                [np.asarray(p["vec"]).astype(np.float32) for p in doc["passages"]],
                doc["_id"],
            )
            assert row["metadata"] == {
                "n": doc["n"],
                "title": doc["title"],
                "passages": [{} for _ in doc["passages"]],
            }
        metrics = {name: c["metric"] for name, c in comments(target, "knn").items()}
        assert metrics == {
            "l2": "euclidean",
            "cos": "cosine",
            "ip": "dotproduct",
            "l1": "manhattan",
            "linf": None,
            "int8": "euclidean",
            "bits": "hamming",
            "passages.vec": "euclidean",
        }
        assert column_types(target, "knn")["bits"] == "bit(16)"
        assert target.cli("verify", *args) == 0, capsys.readouterr().out


# -- resuming ------------------------------------------------------------------------------


def progress_rows(target: Target) -> int:
    try:
        rows = target.query(
            sql.SQL("SELECT coalesce(sum(records), 0) FROM {}").format(
                target.table("_vec2pg_progress")
            )
        )
    except psycopg.errors.UndefinedTable:
        return 0
    return int(rows[0][0])


def wait_for(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def source_rows(server: SearchServer, index: str) -> dict[str, dict[str, Any]]:
    """Every document as a search returns it now: id -> (vector, rest of _source)."""
    out = {}
    for shard in server._indexes[index].docs:
        for doc_id in shard:
            source = server.get_source(index, doc_id)
            vector = np.asarray(source.pop("embedding"), dtype=np.float32)
            out[doc_id] = {"embedding": vector, "metadata": source}
    return out


@pytest.mark.parametrize("shards", [1, 2], ids=["1-shard", "2-shards"])
def test_kill_9_then_resume_in_a_new_point_in_time_is_exact(target: Target, shards: int) -> None:
    """The run is killed mid-way; documents it had read are then updated (a new _seq_no,
    and every later document of their shard moves in Lucene's order), some added; the
    rerun opens a new PIT and, from the saved _seq_no cursors, reads exactly what is left."""
    n = 3000
    rng = np.random.default_rng(3)
    with SearchServer("elasticsearch", "9.3.0", api_key=ES_KEY, rotate_pit_ids=True) as server:
        mapping = {
            "properties": {
                "embedding": {"type": "dense_vector", "dims": 8, "similarity": "l2_norm"}
            }
        }
        server.seed(
            "docs",
            mapping=mapping,
            settings={"number_of_shards": shards},
            ids=[f"doc-{i:05d}" for i in range(n)],
            vectors=rng.standard_normal((n, 8), dtype=np.float32),
            fields=[{"n": i} for i in range(n)],
        )
        command = [sys.executable, "-m", "vec2pg", "elasticsearch", "docs", "--url", server.url]
        command += ["--api-key", ES_ENCODED, "--dsn", target.dsn, "--schema", target.schema]
        command += ["--page-size", "50", "--concurrency", "2", "--json", "--processes", "0"]
        env = {**os.environ, "VEC2PG_RETRY_INITIAL_SECONDS": "0.01"}
        server.latency = 0.03
        run = subprocess.Popen(
            [*command, "--commit-rows", "100"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            wait_for(lambda: progress_rows(target) >= 300 or run.poll() is not None)
        finally:
            run.kill()
            run.wait()
        committed = progress_rows(target)
        assert 300 <= committed < n, committed

        # Documents read before the kill change; so does Lucene's order of their shards.
        read = [
            r[0] for r in target.query(sql.SQL("SELECT id FROM {}").format(target.table("docs")))
        ]
        changed = sorted(read)[:20]
        server.seed(
            "docs",
            [(rid, {"embedding": [float(i)] * 8, "n": -i}) for i, rid in enumerate(changed)],
        )
        server.seed("docs", [(f"new-{i}", {"embedding": [0.5] * 8, "n": n + i}) for i in range(10)])
        server.latency = 0

        rerun = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
        assert rerun.returncode == 0, rerun.stderr
        summary = json.loads(rerun.stdout.strip().splitlines()[-1])
        assert summary["resumed"] is True and summary["matches_source"] is True
        assert summary["read"] <= n - committed + 30 + 2 * 50  # resumed, not started again

        rows = target.rows("docs")
        want = source_rows(server, "docs")
        assert rows.keys() == want.keys()
        for rid, expected in want.items():
            np.testing.assert_array_equal(rows[rid]["embedding"], expected["embedding"], rid)
            assert rows[rid]["metadata"] == expected["metadata"], rid
        assert server.open_contexts["pit"] <= 1  # the killed run's, until its keep-alive ends


def test_an_expired_point_in_time_is_reopened_and_reading_goes_on_exactly() -> None:
    with SearchServer("elasticsearch", "9.3.0") as server:
        server.seed(
            "docs",
            mapping={"properties": {"v": {"type": "dense_vector", "dims": 2}}},
            ids=[f"d{i}" for i in range(45)],
            vectors=np.ones((45, 2), dtype=np.float32),
            vector_field="v",
        )
        source = ElasticsearchSource("docs", url=server.url, page_size=10)
        try:
            source.describe()
            first = source.page("", WHOLE, None)
            with Elasticsearch(server.url) as client:  # the PIT goes, as if it expired
                client.close_point_in_time(id=source._pits[""])
            with pytest.raises(SourceUnavailable, match="the point in time on 'docs' expired"):
                source.page("", WHOLE, first.next_cursor)
            ids = [r.id for r in first.load()]
            cursor = first.next_cursor
            while cursor is not None:  # the pipeline's retry: a new PIT, from the cursor
                page = source.page("", WHOLE, cursor)
                ids += [r.id for r in page.load()]
                cursor = page.next_cursor
        finally:
            source.close()
        assert sorted(ids) == sorted(f"d{i}" for i in range(45)) and len(ids) == 45


def test_a_saved_chain_of_another_shard_count_is_refused() -> None:
    with SearchServer("opensearch", "2.19.0") as server:
        server.seed(
            "docs",
            mapping={"properties": {"v": {"type": "knn_vector", "dimension": 2}}},
            settings={"index": {"knn": True, "number_of_shards": 2}},
            ids=["a"],
            vectors=np.ones((1, 2), dtype=np.float32),
            vector_field="v",
        )
        source = OpenSearchSource("docs", url=server.url)
        try:
            source.describe()
            for partition, cursor in (("shard 0/3 seq 0-", 5), (WHOLE, "1/3:7")):
                with pytest.raises(SourceError) as refused:
                    source.page("", partition, cursor)
                assert str(refused.value) == (
                    f"OpenSearch at {server.url}: index 'docs' has 2 shards, 3 when the "
                    "interrupted run read it (split or shrunk since), so its saved progress no "
                    "longer applies: run again with --restart"
                )
        finally:
            source.close()


# -- several indices -----------------------------------------------------------------------


def test_a_pattern_keeps_each_index_apart_and_prunes_only_the_indices_it_read(
    target: Target, capsys: Any
) -> None:
    mapping = {"properties": {"v": {"type": "dense_vector", "dims": 2, "similarity": "l2_norm"}}}
    with SearchServer("elasticsearch", "9.1.0") as server:
        for name in ("logs-a", "logs-b", "other"):
            # The same _id in two indices: two rows, told apart by their namespace.
            server.seed(
                name,
                [("same", {"v": [1.0, 2.0], "at": name}), (f"{name}-1", {"v": [3.0, 4.0]})],
                mapping=mapping,
            )
        args = ["elasticsearch", "logs-*", "--url", server.url, "--table", "logs", "--json"]
        assert target.cli(*args) == 0, capsys.readouterr().err
        summary = json.loads(capsys.readouterr().out)
        assert set(summary["namespaces"]) == {"logs-a", "logs-b"}
        rows = target.rows("logs")
        assert set(rows) == {
            ("logs-a", "same"),
            ("logs-a", "logs-a-1"),
            ("logs-b", "same"),
            ("logs-b", "logs-b-1"),
        }
        assert rows[("logs-b", "same")]["metadata"] == {"at": "logs-b"}

        with Elasticsearch(server.url) as client:
            client.delete(index="logs-a", id="logs-a-1")
            client.delete(index="logs-b", id="logs-b-1")
        assert target.cli(*args, "-n", "logs-a", "--prune") == 0, capsys.readouterr().err
        summary = json.loads(capsys.readouterr().out)
        assert summary["deleted"] == 1
        assert ("logs-b", "logs-b-1") in target.rows("logs")  # not read: not pruned

        server.seed("logs-c", [("x", {"v": [1.0, 1.0], "extra": True})], mapping=mapping)
        assert target.cli(*args, "--prune") == 0, capsys.readouterr().err
        assert set(json.loads(capsys.readouterr().out)["namespaces"]) == {
            "logs-a",
            "logs-b",
            "logs-c",
        }
        assert ("logs-b", "logs-b-1") not in target.rows("logs")


def test_indices_that_map_a_vector_differently_are_refused(target: Target, capsys: Any) -> None:
    with SearchServer("elasticsearch", "9.1.0") as server:
        for name, dims in (("a-1", 2), ("a-2", 3)):
            mapping = {"properties": {"v": {"type": "dense_vector", "dims": dims}}}
            server.seed(name, [("x", {"v": [1.0] * dims})], mapping=mapping)
        assert target.cli("elasticsearch", "a-*", "--url", server.url) == 3
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"vec2pg: error: Elasticsearch at {server.url}: vector 'v' differs between indices "
            "'a-1' and 'a-2' (dense 2, cosine and dense 3, cosine); migrate them one by one"
        )


# -- what the user sees when it goes wrong --------------------------------------------------


def last_error(capsys: Any) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_wrong_credentials_say_what_to_check_and_never_show_the_secret(
    target: Target, capsys: Any
) -> None:
    with SearchServer("elasticsearch", "9.3.0", api_key=ES_KEY) as server:
        server.seed("docs", [("a", {"n": 1})])
        wrong = base64.b64encode(b"key-id:not-the-secret").decode()
        assert target.cli("elasticsearch", "docs", "--url", server.url, "--api-key", wrong) == 3
        line = last_error(capsys)
        assert line == (
            f"vec2pg: error: Elasticsearch at {server.url} refused the credentials (HTTP 401: "
            "unable to authenticate with provided credentials and anonymous access is not "
            "allowed for this request): check --api-key (ELASTICSEARCH_API_KEY), or --user and "
            "--password (ELASTICSEARCH_USER, ELASTICSEARCH_PASSWORD)"
        )
        assert wrong not in line
        assert target.cli("elasticsearch", "docs", "--url", server.url) == 3
        assert last_error(capsys).endswith(
            "refused the credentials (HTTP 401: missing authentication credentials for REST "
            "request [/]): the server needs credentials: pass --api-key, or --user and --password"
        )
    with SearchServer("opensearch", "2.19.0", basic_auth=OS_AUTH) as server:
        server.seed("docs", [("a", {"n": 1})])
        code = target.cli(
            "opensearch", "docs", "--url", server.url, "--user", "admin", "--password", "hunter2"
        )
        assert code == 3
        line = last_error(capsys)
        assert line == (
            f"vec2pg: error: OpenSearch at {server.url} refused the credentials (HTTP 401: "
            "Unauthorized): check --user and --password (OPENSEARCH_USER, OPENSEARCH_PASSWORD)"
        )
        # Credentials in the URL are used as --user and --password, and never shown.
        with_password = server.url.replace("http://", "http://admin:hunter2@")
        assert target.cli("opensearch", "docs", "--url", with_password) == 3
        assert last_error(capsys) == line
        with_password = server.url.replace("http://", f"http://admin:{OS_AUTH[1]}@")
        assert target.cli("opensearch", "docs", "--url", with_password, "--quiet") == 0
        assert OS_AUTH[1] not in capsys.readouterr().err


def test_an_unknown_index_names_the_closest_ones(target: Target, capsys: Any) -> None:
    with SearchServer("elasticsearch", "9.3.0") as server:
        for name in ("docs", "docs-2024", "products"):
            server.seed(name, [("a", {"n": 1})])
        assert target.cli("elasticsearch", "doc", "--url", server.url) == 3
        assert last_error(capsys) == (
            f"vec2pg: error: Elasticsearch at {server.url}: no index, alias or data stream "
            "'doc'; did you mean 'docs' or 'docs-2024'?"
        )
        assert target.cli("elasticsearch", "zzz", "--url", server.url) == 3
        assert last_error(capsys) == (
            f"vec2pg: error: Elasticsearch at {server.url}: no index, alias or data stream "
            "'zzz'; it has 'docs', 'docs-2024', 'products'"
        )
        assert target.cli("elasticsearch", "zzz-*", "--url", server.url) == 3
        assert last_error(capsys) == (
            f"vec2pg: error: Elasticsearch at {server.url}: no index matches 'zzz-*'; it has "
            "'docs', 'docs-2024', 'products'"
        )
        source = ElasticsearchSource("nope", url=server.url)
        with pytest.raises(SourceNotFound):
            source.describe()
        source.close()


def test_the_wrong_engine_and_old_versions_are_said_plainly(target: Target, capsys: Any) -> None:
    with SearchServer("opensearch", "2.19.0") as server:
        assert target.cli("elasticsearch", "docs", "--url", server.url) == 2
        assert last_error(capsys) == (
            f"vec2pg: error: {server.url} is OpenSearch 2.19.0, not Elasticsearch: use vec2pg "
            "opensearch"
        )
    with SearchServer("elasticsearch", "7.9.3") as server:
        assert target.cli("elasticsearch", "docs", "--url", server.url) == 3
        assert last_error(capsys) == (
            f"vec2pg: error: Elasticsearch at {server.url} is Elasticsearch 7.9.3; vec2pg reads "
            "through a point in time, which Elasticsearch has from 7.10: upgrade the server (or "
            "reindex into a newer one) and migrate from there"
        )
        assert target.cli("opensearch", "docs", "--url", server.url) == 2
        assert last_error(capsys).endswith(
            "is Elasticsearch 7.9.3, not OpenSearch: use vec2pg elasticsearch"
        )
    with SearchServer("opensearch", "2.3.0") as server:
        assert target.cli("opensearch", "docs", "--url", server.url) == 3
        assert "which OpenSearch has from 2.4" in last_error(capsys)


@pytest.mark.parametrize(
    ("mapping", "reason"),
    [
        (
            {
                "_source": {"enabled": False},
                "properties": {"v": {"type": "dense_vector", "dims": 2}},
            },
            "index 'docs' does not keep its documents' _source, so its vectors and fields cannot "
            "be read back: reindex it with _source enabled",
        ),
        (
            {
                "_source": {"excludes": ["v"]},
                "properties": {"v": {"type": "dense_vector", "dims": 2}},
            },
            "index 'docs' leaves 'v' out of _source (its mapping's _source excludes), so those "
            "vectors cannot be read back: reindex it keeping them",
        ),
        (
            {"properties": {"v": {"type": "dense_vector"}}},
            "vector 'v' of index 'docs' has no dimension yet (no document has set it): index a "
            "document first, or map its dims",
        ),
    ],
    ids=["source-disabled", "vectors-excluded", "no-dims"],
)
def test_an_index_whose_vectors_cannot_be_read_is_refused(mapping: Any, reason: str) -> None:
    with SearchServer("elasticsearch", "9.0.0") as server:
        server.create_index("docs", mapping)
        source = ElasticsearchSource("docs", url=server.url)
        with pytest.raises(SourceUnsupported) as refused:
            source.describe()
        source.close()
        assert str(refused.value) == f"Elasticsearch at {server.url}: {reason}"


def test_rate_limits_and_faults_are_retried_and_the_table_is_complete(
    target: Target, capsys: Any
) -> None:
    n = 1200
    with SearchServer("elasticsearch", "9.3.0") as server:
        server.seed(
            "docs",
            mapping={"properties": {"v": {"type": "dense_vector", "dims": 4}}},
            settings={"number_of_shards": 2},
            ids=[f"d{i}" for i in range(n)],
            vectors=np.random.default_rng(1).standard_normal((n, 4), dtype=np.float32),
            vector_field="v",
        )
        server.fail_next(3, status=429, retry_after=0, endpoint="search")
        server.fail_next(2, status=503, endpoint="search")
        server.fail_next(1, status=429, endpoint="open_pit")
        server.drop_next(1, endpoint="search")
        # A 200 answer without one of its shards is read again, not taken as the page.
        partial_answer = {
            "took": 1,
            "timed_out": False,
            "_shards": {"total": 2, "successful": 1, "skipped": 0, "failed": 1},
            "hits": {"max_score": None, "hits": []},
        }
        server.fail_next(1, status=200, body=partial_answer, endpoint="search")
        args = ["elasticsearch", "docs", "--url", server.url, "--page-size", "100", "--json"]
        # Decoded in two worker processes, as a large index is by default.
        assert target.cli(*args, "--processes", "2") == 0, capsys.readouterr().err
        summary = json.loads(capsys.readouterr().out)
        assert summary["processes"] == 2
        assert summary["rate_limited"] == 4 and summary["retries"] >= 8
        assert summary["written"] == n and len(target.rows("docs")) == n


def test_a_user_without_the_monitor_privilege_still_gets_the_vectors(
    target: Target, capsys: Any
) -> None:
    """GET / (the version) needs a cluster privilege a read-only user may lack: vec2pg asks
    the index whether it knows exclude_vectors instead."""
    with SearchServer("elasticsearch", "9.3.0") as server:
        mapping = {
            "properties": {"v": {"type": "dense_vector", "dims": 2, "similarity": "l2_norm"}}
        }
        server.seed("docs", [("a", {"v": [1.5, 2.5]})], mapping=mapping)
        server.fail_next(1, status=403, endpoint="info")
        assert target.cli("elasticsearch", "docs", "--url", server.url, "--quiet") == 0
        np.testing.assert_array_equal(target.rows("docs")["a"]["v"], [1.5, 2.5])
    capsys.readouterr()


# -- the wire format vec2pg reads ----------------------------------------------------------


def test_seq_no_sorts_ranges_and_settings_as_the_clients_see_them() -> None:
    """What vec2pg relies on in the test server, through the official client."""
    with SearchServer("elasticsearch", "9.3.0") as server, Elasticsearch(server.url) as es:
        server.seed(
            "docs",
            mapping={"properties": {"n": {"type": "long"}}},
            settings={"number_of_shards": 2},
            docs=[(f"d{i}", {"n": i}) for i in range(20)],
        )
        es.index(index="docs", id="d0", document={"n": 100})  # an update: a new _seq_no
        pit = es.open_point_in_time(index="docs", keep_alive="1m")["id"]
        seen = []
        for shard in range(2):
            hits = es.search(
                pit={"id": pit},
                slice={"id": shard, "max": 2},
                sort=[{"_seq_no": "asc"}],
                query={"range": {"_seq_no": {"gte": 0}}},
                size=100,
            )["hits"]["hits"]
            seqs = [h["sort"][0] for h in hits]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # unique in a shard
            assert all(len(h["sort"]) == 2 for h in hits)  # and the _shard_doc tiebreaker
            seen += [h["_id"] for h in hits]
        assert sorted(seen) == sorted(f"d{i}" for i in range(20))
        # The server answers these searches by bisection: as its general plan would.
        for bounds in ({"gte": 3, "lt": 9}, {"gt": 4}, {"lte": 6}, {"gte": 50}):
            fast, general = (
                es.search(
                    pit={"id": pit},
                    slice={"id": 1, "max": 2},
                    sort=[{"_seq_no": "asc"}],
                    query=query,
                    size=100,
                )["hits"]["hits"]
                for query in (
                    {"range": {"_seq_no": bounds}},
                    {"bool": {"filter": [{"range": {"_seq_no": bounds}}]}},
                )
            )
            assert [(h["_id"], h["sort"]) for h in fast] == [(h["_id"], h["sort"]) for h in general]
        es.close_point_in_time(id=pit)
        settings = es.indices.get_settings(
            index="docs",
            name="index.number_of_shards,index.mapping.exclude_source_vectors",
            flat_settings=True,
            include_defaults=True,
        )
        assert settings == {
            "docs": {
                "settings": {"index.number_of_shards": "2"},
                "defaults": {"index.mapping.exclude_source_vectors": "true"},
            }
        }


def test_answers_beyond_simdjson_and_vectors_that_cannot_be_stored() -> None:
    spec = DecodeSpec(
        "Elasticsearch index 'x'",
        "",
        (VectorSpec("v", ("v",), "byte", 3), VectorSpec("b", ("b",), "bit", 8)),
    )
    hits = [
        b'{"_index":"x","_id":"ok","_score":null,"_source":{"v":[1,-2,3],"b":[-1]},"sort":[1]}',
        b'{"_index":"x","_id":"big","_score":null,"_source":{"v":[1,2,300],"b":"zz"},"sort":[2]}',
        b'{"_index":"x","_id":"odd","_score":null,"_source":{"t":"\\ud800","n":123456789012345678901234567890},"sort":[3]}',
    ]
    content = b'{"took":1,"timed_out":false,"hits":{"hits":[' + b",".join(hits) + b"]}}"
    records = {r.id: r for r in decode_search(spec, content)}
    np.testing.assert_array_equal(records["ok"].vectors["v"], [1, -2, 3])
    assert records["ok"].vectors["b"].tolist() == [255] and records["ok"].invalid is None
    assert records["big"].invalid == (
        "vector 'v' holds values that are not bytes (-128..127); vector 'b' is a string that "
        "is not hexadecimal"
    )
    assert records["odd"].metadata == {"t": "\ud800", "n": 123456789012345678901234567890}
    with pytest.raises(SourceUnavailable, match="sent an answer that does not parse"):
        decode_search(spec, content[:-30])


def test_fields_are_described_as_columns() -> None:
    with SearchServer("elasticsearch", "9.3.0") as server:
        server.create_index("docs", es_typed_mapping(True))
        source = ElasticsearchSource("docs", url=server.url)
        try:
            info = source.describe()
        finally:
            source.close()
    kinds = {f.name: (f.kind, f.dim) for f in info.fields}
    assert kinds["bits"] == (VectorKind.BINARY, 16)
    assert kinds["colbert"] == (VectorKind.MULTI, 3)
    assert kinds["passages.vec"] == (VectorKind.MULTI, 3)
    assert kinds["bf"] == (VectorKind.DENSE, 4) and "splade" not in kinds
    assert not info.namespaced and info.raw_pages


def test_verify_knows_that_rebuilt_cosine_vectors_differ_by_rounding(
    target: Target, capsys: Any
) -> None:
    """A table copied from an index that kept its vectors in _source, verified against
    one that rebuilds them (Elasticsearch 9.2+'s default, a reindex away): the cosine
    vectors differ by a unit in the last place here and there, and verify says they match,
    as they do up to normalisation."""
    rng = np.random.default_rng(11)
    vectors = (rng.standard_normal((300, 16)) * 5).astype(np.float32)
    mapping = {"properties": {"v": {"type": "dense_vector", "dims": 16, "similarity": "cosine"}}}
    ids = [f"d{i}" for i in range(300)]
    with SearchServer("elasticsearch", "9.3.0") as server:
        server.seed(
            "kept",
            mapping=mapping,
            settings={"index.mapping.exclude_source_vectors": False},
            ids=ids,
            vectors=vectors,
            vector_field="v",
        )
        server.seed("rebuilt", mapping=mapping, ids=ids, vectors=vectors, vector_field="v")
        assert target.cli("elasticsearch", "kept", "--url", server.url, "--table", "docs") == 0
        rows = target.rows("docs")
        rebuilt = rehydrate_dense(vectors, similarity="cosine")
        stored = np.stack([rows[i]["v"] for i in ids])
        np.testing.assert_array_equal(stored, vectors)
        assert (stored != rebuilt).any()  # what a bitwise comparison would call different
        capsys.readouterr()

        code = target.cli(
            "verify",
            "elasticsearch",
            "rebuilt",
            "--url",
            server.url,
            "--table",
            "docs",
            "--sample",
            "300",
        )
        assert code == 0, capsys.readouterr().out
        assert capsys.readouterr().out.strip().splitlines()[-1].startswith("OK: ")
