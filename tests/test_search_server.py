"""Proves tests/search_server.py against the real ``elasticsearch`` (9.x) and ``opensearch-py``
clients: product check, media types, mappings, PIT + search_after + slices, scroll, vectors
as each engine returns them, auth, errors and injected faults."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import elastic_transport
import elasticsearch
import numpy as np
import opensearchpy
import pytest
from elasticsearch import Elasticsearch, helpers
from opensearchpy import OpenSearch
from search_server import SearchServer, rehydrate_dense, rehydrate_sparse

API_KEY = ("key-id", "key-secret")
N_DOCS = 60
DIM = 6
MAX_PAGES = 1000  # a paging bug must fail, not loop forever


def es_mapping(similarity: str = "l2_norm") -> dict[str, Any]:
    return {
        "properties": {
            "embedding": {"type": "dense_vector", "dims": DIM, "similarity": similarity},
            "n": {"type": "long"},
            "group": {"type": "keyword"},
            "title": {"type": "text"},
        }
    }


def os_mapping() -> dict[str, Any]:
    return {
        "properties": {
            "embedding": {
                "type": "knn_vector",
                "dimension": DIM,
                "method": {"name": "hnsw", "engine": "faiss", "space_type": "l2"},
            },
            "n": {"type": "long"},
            "group": {"type": "keyword"},
        }
    }


def matrix(n: int = N_DOCS, dim: int = DIM, seed: int = 7) -> np.ndarray:
    out = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    out[0, 0] = np.float32(1e-30)  # values whose float32 repr is not a short decimal
    out[1, 1] = np.float32(-3.0e18)  # large, yet its square still fits a float32
    return out


def ids(n: int = N_DOCS) -> list[str]:
    return [f"doc-{i:03d}" for i in range(n)]


def fields(n: int = N_DOCS) -> list[dict[str, Any]]:
    return [{"n": i, "group": f"g{i % 4}", "title": f"document {i}"} for i in range(n)]


@pytest.fixture()
def es_server() -> Iterator[SearchServer]:
    with SearchServer("elasticsearch", "9.3.0", api_key=API_KEY) as server:
        server.seed("docs", mapping=es_mapping(), ids=ids(), vectors=matrix(), fields=fields())
        yield server


@pytest.fixture()
def es(es_server: SearchServer) -> Iterator[Elasticsearch]:
    with Elasticsearch(es_server.url, api_key=API_KEY, request_timeout=5) as client:
        yield client


@pytest.fixture()
def os_server() -> Iterator[SearchServer]:
    with SearchServer("opensearch", "2.19.0", basic_auth=("admin", "S3cret!pw")) as server:
        server.seed(
            "docs",
            mapping=os_mapping(),
            settings={"index": {"knn": True}},
            ids=ids(),
            vectors=matrix(),
            fields=[{"n": i, "group": f"g{i % 4}"} for i in range(N_DOCS)],
        )
        yield server


@pytest.fixture()
def osc(os_server: SearchServer) -> Iterator[OpenSearch]:
    client = OpenSearch(os_server.url, http_auth=("admin", "S3cret!pw"), timeout=5)
    yield client
    client.close()


def read_pit(
    es: Elasticsearch, pit: str, *, slices: int, size: int, sort: list[Any], **extra: Any
) -> list[dict[str, Any]]:
    """Every hit of a PIT, slice by slice, page by page with search_after."""
    hits: list[dict[str, Any]] = []
    for slice_id in range(slices):
        after = None
        for _page in range(MAX_PAGES):
            body: dict[str, Any] = {
                "pit": {"id": pit, "keep_alive": "1m"},
                "sort": sort,
                "size": size,
                "track_total_hits": False,
                **extra,
            }
            if slices > 1:
                body["slice"] = {"id": slice_id, "max": slices}
            if after is not None:
                body["search_after"] = after
            resp = es.search(**body)
            pit = resp["pit_id"]  # always the latest id, as the docs ask
            page = resp["hits"]["hits"]
            if not page:
                break
            hits.extend(page)
            after = page[-1]["sort"]
        else:
            raise AssertionError("search_after never reached the end")
    return hits


# ---------------------------------------------------------------------------------------------
# Elasticsearch: product, media types, version


def test_info_passes_the_product_check_with_compat_headers(
    es_server: SearchServer, es: Elasticsearch
) -> None:
    info = es.info()
    assert info["version"]["number"] == "9.3.0"
    assert info["tagline"] == "You Know, for Search"
    assert "distribution" not in info["version"]
    assert info.meta.headers["x-elastic-product"] == "Elasticsearch"
    assert info.meta.headers["content-type"] == (
        "application/vnd.elasticsearch+json;compatible-with=9"
    )
    assert es_server.accept_headers == {"application/vnd.elasticsearch+json; compatible-with=9"}
    assert es.ping() is True  # HEAD /


def test_es_client_refuses_an_opensearch_server(os_server: SearchServer) -> None:
    with Elasticsearch(os_server.url, basic_auth=("admin", "S3cret!pw")) as client:
        with pytest.raises(elasticsearch.UnsupportedProductError):
            client.info()
        # A body in Elasticsearch's media type is refused outright by OpenSearch.
        with pytest.raises(elasticsearch.ApiError) as exc:
            client.count(index="docs", query={"match_all": {}})
        assert exc.value.status_code == 406
        assert "application/vnd.elasticsearch+json; compatible-with=9] is not supported" in str(
            exc.value.body
        )


def test_9x_client_against_an_8x_server_is_refused() -> None:
    with SearchServer("elasticsearch", "8.17.0") as server, Elasticsearch(server.url) as client:
        with pytest.raises(elasticsearch.BadRequestError) as exc:
            client.info()
        assert exc.value.message == "media_type_header_exception"
        assert exc.value.body["error"]["caused_by"]["reason"] == (
            "Accept version must be either version 8 or 7, but found 9. "
            "Accept=application/vnd.elasticsearch+json; compatible-with=9"
        )
        with pytest.raises(elasticsearch.BadRequestError):
            client.count(index="x", query={"match_all": {}})  # Content-Type too


# ---------------------------------------------------------------------------------------------
# Elasticsearch: mappings, listing, count


def test_mapping_shows_vector_defaults(es_server: SearchServer, es: Elasticsearch) -> None:
    es.indices.create(
        index="kinds",
        mappings={
            "properties": {
                "f": {"type": "dense_vector", "dims": 512},
                "b": {"type": "dense_vector", "dims": 4, "element_type": "byte"},
                "bits": {"type": "dense_vector", "dims": 16, "element_type": "bit"},
                "h": {
                    "type": "dense_vector",
                    "dims": 4,
                    "element_type": "bfloat16",
                    "similarity": "dot_product",
                },
                "raw": {"type": "dense_vector", "dims": 3, "index": False},
                "sparse": {"type": "sparse_vector"},
                "multi": {"type": "rank_vectors", "dims": 2},
                "meta": {"properties": {"tags": {"type": "keyword"}, "at": {"type": "date"}}},
                "chunks": {
                    "type": "nested",
                    "properties": {"v": {"type": "dense_vector", "dims": 2}},
                },
                "loc": {"type": "geo_point"},
                "ok": {"type": "boolean"},
                "score": {"type": "double"},
                "count": {"type": "integer"},
            }
        },
    )
    props = es.indices.get_mapping(index="kinds")["kinds"]["mappings"]["properties"]
    assert list(props) == sorted(props)  # fields come back sorted by name
    assert props["f"] == {
        "type": "dense_vector",
        "dims": 512,
        "index": True,
        "similarity": "cosine",
        "index_options": {
            "type": "bbq_hnsw",
            "m": 16,
            "ef_construction": 100,
            "rescore_vector": {"oversample": 3.0},
        },
    }
    assert props["b"]["element_type"] == "byte" and props["b"]["index_options"]["type"] == "hnsw"
    assert props["bits"]["similarity"] == "l2_norm"  # the default for bit vectors
    assert props["h"]["index_options"]["type"] == "int8_hnsw"
    assert props["raw"] == {"type": "dense_vector", "dims": 3, "index": False}
    assert props["sparse"] == {"type": "sparse_vector"}
    assert props["multi"] == {"type": "rank_vectors", "dims": 2}
    assert props["chunks"]["type"] == "nested"
    assert props["meta"]["properties"]["at"] == {"type": "date"}

    both = es.indices.get_mapping(index="*")
    assert set(both) == {"docs", "kinds"}
    listing = es.cat.indices(format="json")
    rows = {row["index"]: row for row in listing}
    assert rows["docs"]["docs.count"] == str(N_DOCS) and rows["kinds"]["docs.count"] == "0"
    assert set(es.indices.get_alias()) == {"docs", "kinds"}
    got = es.indices.get(index="docs")["docs"]
    assert got["settings"]["index"]["number_of_shards"] == "1"
    assert es.indices.exists(index="docs") and not es.indices.exists(index="nope")


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (
            {"type": "dense_vector", "dims": 4, "element_type": "half"},
            "invalid element_type [half]",
        ),
        ({"type": "dense_vector", "dims": 5000}, "should be in the range [1, 4096]"),
        ({"type": "dense_vector", "dims": 12, "element_type": "bit"}, "multiple of 8"),
        (
            {"type": "dense_vector", "dims": 4, "similarity": "manhattan"},
            "Unknown value [manhattan]",
        ),
        ({"type": "knn_vector", "dimension": 4}, "No handler for type [knn_vector]"),
    ],
)
def test_bad_mappings_are_refused(es: Elasticsearch, spec: dict[str, Any], reason: str) -> None:
    with pytest.raises(elasticsearch.BadRequestError) as exc:
        es.indices.create(index="bad", mappings={"properties": {"v": spec}})
    assert exc.value.message == "mapper_parsing_exception"
    assert reason in exc.value.body["error"]["reason"]


def test_bfloat16_needs_9_3() -> None:
    with SearchServer("elasticsearch", "9.2.0") as server:
        with pytest.raises(ValueError, match=r"available types are \['float', 'byte', 'bit'\]"):
            server.create_index(
                "x",
                {
                    "properties": {
                        "v": {"type": "dense_vector", "dims": 2, "element_type": "bfloat16"}
                    }
                },
            )


def test_count(es: Elasticsearch) -> None:
    assert es.count(index="docs")["count"] == N_DOCS
    assert es.count(index="docs", query={"term": {"group": "g1"}})["count"] == N_DOCS // 4
    assert es.count(index="docs", query={"range": {"n": {"gte": 10, "lt": 20}}})["count"] == 10
    both = {
        "bool": {
            "filter": [{"term": {"group": "g1"}}],
            "must_not": [{"ids": {"values": ["doc-001"]}}],
        }
    }
    assert es.count(index="docs", query=both)["count"] == N_DOCS // 4 - 1
    assert es.count()["count"] == N_DOCS


# ---------------------------------------------------------------------------------------------
# Elasticsearch: PIT, search_after, slices


@pytest.mark.parametrize("shards", [1, 3], ids=["1-shard", "3-shards"])
@pytest.mark.parametrize("slices", [1, 2, 5], ids=["1-slice", "2-slices", "5-slices"])
def test_pit_slices_return_each_document_once_with_exact_vectors(slices: int, shards: int) -> None:
    data = matrix()
    with SearchServer("elasticsearch", "9.3.0", api_key=API_KEY) as server:
        server.seed(
            "docs",
            mapping=es_mapping(),
            settings={"number_of_shards": shards},
            ids=ids(),
            vectors=data,
            fields=fields(),
        )
        with Elasticsearch(server.url, api_key=API_KEY) as es:
            pit = es.open_point_in_time(index="docs", keep_alive="1m")
            assert pit["_shards"]["total"] == shards
            hits = read_pit(
                es,
                pit["id"],
                slices=slices,
                size=7,
                sort=["_shard_doc"],
                source={"exclude_vectors": False},
            )
            got = [h["_id"] for h in hits]
            assert len(got) == N_DOCS and set(got) == set(ids())  # disjoint and covering
            for hit in hits:
                i = int(hit["_id"].split("-")[1])
                vec = np.asarray(hit["_source"]["embedding"], dtype=np.float32)
                assert np.array_equal(vec, data[i])  # l2_norm: float32 kept bit for bit
                assert hit["_source"]["n"] == i
                (shard_doc,) = hit["sort"]
                assert shard_doc >> 32 < shards
            assert len({h["sort"][0] >> 32 for h in hits}) == shards  # routed to every shard
            assert es.close_point_in_time(id=pit["id"])["num_freed"] == shards
            assert server.open_contexts == {"pit": 0, "scroll": 0}


def test_search_after_with_ties_is_exact_only_with_the_tiebreaker(es: Elasticsearch) -> None:
    pit = es.open_point_in_time(index="docs", keep_alive="1m")["id"]
    # 4 groups of 15 documents: every page boundary falls inside a run of equal sort values.
    hits = read_pit(es, pit, slices=1, size=4, sort=[{"group": "asc"}])
    assert [h["_id"] for h in hits] == sorted(ids(), key=lambda d: (int(d[4:]) % 4, int(d[4:])))
    assert all(len(h["sort"]) == 2 for h in hits)  # [group, implicit _shard_doc]
    # Dropping the tiebreaker value from search_after turns the tiebreaker off (as
    # SearchRequest.rewrite does); equal values are then skipped and documents are lost.
    first = es.search(pit={"id": pit}, sort=[{"group": "asc"}], size=4)
    assert first["hits"]["hits"][-1]["sort"] == ["g0", 12]
    after = es.search(pit={"id": pit}, sort=[{"group": "asc"}], size=4, search_after=["g0"])
    assert [h["sort"] for h in after["hits"]["hits"]] == [["g1"]] * 4
    with pytest.raises(elasticsearch.BadRequestError) as exc:
        es.search(pit={"id": pit}, sort=[{"group": "asc"}], search_after=["g0", 1, 2])
    assert exc.value.body["error"]["root_cause"][0]["reason"] == (
        "search_after has 3 value(s) but sort has 1."  # no tiebreaker: not 2 values
    )
    es.close_point_in_time(id=pit)


def test_pit_misuse_is_refused(es: Elasticsearch) -> None:
    pit = es.open_point_in_time(index="docs", keep_alive="1m")["id"]
    with pytest.raises(elasticsearch.BadRequestError) as exc:
        es.search(index="docs", pit={"id": pit})
    assert "[indices] cannot be used with point in time" in exc.value.body["error"]["reason"]
    with pytest.raises(elasticsearch.BadRequestError, match="max must be greater than 1"):
        es.search(pit={"id": pit}, slice={"id": 0, "max": 1})
    with pytest.raises(elasticsearch.BadRequestError, match="cannot slice on"):
        es.search(pit={"id": pit}, slice={"field": "_id", "id": 0, "max": 2})
    with pytest.raises(elasticsearch.BadRequestError) as exc:
        es.search(pit={"id": pit}, sort=["_id"])
    assert "Fielddata access on the _id field is disallowed" in str(exc.value.body)
    with pytest.raises(elasticsearch.BadRequestError) as exc:
        es.search(pit={"id": pit}, sort=["title"])
    assert "Fielddata is disabled on [title]" in str(exc.value.body)
    with pytest.raises(elasticsearch.BadRequestError, match="Result window is too large"):
        es.search(pit={"id": pit}, size=10_001)
    with pytest.raises(elasticsearch.BadRequestError, match="is too large"):
        es.open_point_in_time(index="docs", keep_alive="2d")
    with pytest.raises(elasticsearch.BadRequestError, match="not supported by the test server"):
        es.search(pit={"id": pit}, aggs={"g": {"terms": {"field": "group"}}})
    unsorted = es.search(pit={"id": pit}, size=3)["hits"]
    assert unsorted["total"] == {"value": N_DOCS, "relation": "eq"}
    assert all("sort" not in h and h["_score"] == 1.0 for h in unsorted["hits"])
    es.close_point_in_time(id=pit)


def test_closing_a_pit_twice_and_an_expired_pit(es_server: SearchServer, es: Elasticsearch) -> None:
    pit = es.open_point_in_time(index="docs", keep_alive="1m")["id"]
    assert es.close_point_in_time(id=pit).body == {"succeeded": True, "num_freed": 1}
    with pytest.raises(elasticsearch.NotFoundError) as exc:  # ClearScrollResponse: 404 if none
        es.close_point_in_time(id=pit)
    assert exc.value.body == {"succeeded": True, "num_freed": 0}
    short = es.open_point_in_time(index="docs", keep_alive="100ms")["id"]
    time.sleep(0.2)
    with pytest.raises(elasticsearch.NotFoundError) as exc:
        es.search(pit={"id": short})
    assert exc.value.body["error"]["root_cause"][0]["type"] == "search_context_missing_exception"
    assert es_server.open_contexts["pit"] == 0


def test_rotated_pit_ids_all_work(es_server: SearchServer) -> None:
    es_server.rotate_pit_ids = True
    with Elasticsearch(es_server.url, api_key=API_KEY) as es:
        first = es.open_point_in_time(index="docs", keep_alive="1m")["id"]
        second = es.search(pit={"id": first}, size=1)["pit_id"]
        assert second != first
        assert es.search(pit={"id": first}, size=1)["hits"]["hits"]
        hits = read_pit(es, second, slices=2, size=9, sort=["_shard_doc"])
        assert sorted(h["_id"] for h in hits) == ids()
        assert es_server.open_contexts["pit"] == 1
        es.close_point_in_time(id=second)
        assert es_server.open_contexts["pit"] == 0


def test_scroll_slices_and_clear(es_server: SearchServer, es: Elasticsearch) -> None:
    seen: list[str] = []
    for slice_id in range(3):
        resp = es.search(
            index="docs", scroll="1m", size=8, sort=["_doc"], slice={"id": slice_id, "max": 3}
        )
        scroll_id = resp["_scroll_id"]
        for _page in range(MAX_PAGES):
            if not resp["hits"]["hits"]:
                break
            seen += [h["_id"] for h in resp["hits"]["hits"]]
            resp = es.scroll(scroll_id=scroll_id, scroll="1m")
        assert es.clear_scroll(scroll_id=scroll_id)["num_freed"] == 1
        with pytest.raises(elasticsearch.NotFoundError) as exc:  # already freed: 404
            es.clear_scroll(scroll_id=scroll_id)
        assert exc.value.body == {"succeeded": True, "num_freed": 0}
    assert sorted(seen) == ids()
    with pytest.raises(elasticsearch.BadRequestError, match="from"):
        es.search(index="docs", scroll="1m", from_=5)
    assert es_server.open_contexts == {"pit": 0, "scroll": 0}


# ---------------------------------------------------------------------------------------------
# Elasticsearch: vectors in _source


def test_exclude_vectors_default_and_request_option() -> None:
    data = matrix()
    with SearchServer("elasticsearch", "9.2.0") as server, Elasticsearch(server.url) as es:
        assert server.exclude_vectors is True  # the 9.2 default
        server.seed("docs", mapping=es_mapping("cosine"), ids=ids(), vectors=data, fields=fields())
        hit = es.search(index="docs", query={"ids": {"values": ["doc-005"]}})["hits"]["hits"][0]
        assert hit["_source"] == {"n": 5, "group": "g1", "title": "document 5"}
        hit = es.search(
            index="docs", query={"ids": {"values": ["doc-005"]}}, source={"exclude_vectors": False}
        )["hits"]["hits"][0]
        back = np.asarray(hit["_source"]["embedding"], dtype=np.float32)
        # cosine vectors are stored normalised and come back as float32(v / |v| * |v|)
        assert np.array_equal(back, rehydrate_dense(data[5], similarity="cosine"))
        every = np.asarray(
            [
                h["_source"]["embedding"]
                for h in es.search(
                    index="docs", size=N_DOCS, sort=["n"], source={"exclude_vectors": False}
                )["hits"]["hits"]
            ],
            dtype=np.float32,
        )
        assert not np.array_equal(every, data)  # not bit for bit: ~1.5% of values move 1 ulp
        assert np.allclose(every, data, rtol=1e-6, atol=0)
        named = es.search(index="docs", size=1, source=["embedding"])["hits"]["hits"][0]
        assert set(named["_source"]) == {"embedding"}  # included by name
        by_fields = es.search(index="docs", size=1, sort=["n"], fields=["embedding"])["hits"][
            "hits"
        ][0]
        assert "embedding" not in by_fields["_source"]
        assert np.array_equal(
            np.asarray(by_fields["fields"]["embedding"], dtype=np.float32),
            rehydrate_dense(data[0], similarity="cosine"),
        )

        server.create_index(
            "kept", es_mapping("cosine"), {"index.mapping.exclude_source_vectors": False}
        )
        server.seed("kept", ids=ids(3), vectors=data[:3], fields=fields(3))
        hit = es.search(index="kept", sort=["n"])["hits"]["hits"][0]
        assert np.array_equal(np.asarray(hit["_source"]["embedding"], dtype=np.float32), data[0])
        hidden = es.search(index="kept", sort=["n"], source={"exclude_vectors": True})
        assert "embedding" not in hidden["hits"]["hits"][0]["_source"]
        doc = es.get(index="docs", id="doc-002", source_exclude_vectors=False)
        assert len(doc["_source"]["embedding"]) == DIM


def test_older_servers_keep_vectors_and_may_not_know_the_option() -> None:
    data = matrix()
    with SearchServer("elasticsearch", "9.1.0") as server, Elasticsearch(server.url) as es:
        assert server.exclude_vectors is False
        server.seed("docs", mapping=es_mapping("cosine"), ids=ids(), vectors=data, fields=fields())
        hit = es.search(index="docs", sort=["n"], size=1)["hits"]["hits"][0]
        assert np.array_equal(np.asarray(hit["_source"]["embedding"], dtype=np.float32), data[0])
        hit = es.search(index="docs", sort=["n"], size=1, source={"exclude_vectors": True})
        assert "embedding" not in hit["hits"]["hits"][0]["_source"]
    with SearchServer("elasticsearch", "9.0.0") as server, Elasticsearch(server.url) as es:
        server.seed("docs", mapping=es_mapping(), ids=ids(2), vectors=data[:2])
        with pytest.raises(elasticsearch.BadRequestError) as exc:
            es.search(index="docs", source={"exclude_vectors": False})
        assert exc.value.message == "parsing_exception"
        assert (
            exc.value.body["error"]["reason"]
            == "Unknown key for a VALUE_BOOLEAN in [exclude_vectors]."
        )


@pytest.mark.parametrize("exclude", [True, False], ids=["rehydrated", "verbatim"])
def test_vector_element_types_come_back_as_elasticsearch_returns_them(exclude: bool) -> None:
    mapping = {
        "properties": {
            "b": {"type": "dense_vector", "dims": 4, "element_type": "byte"},
            "bits": {"type": "dense_vector", "dims": 16, "element_type": "bit"},
            "h": {
                "type": "dense_vector",
                "dims": 3,
                "element_type": "bfloat16",
                "similarity": "l2_norm",
            },
            "s": {"type": "sparse_vector"},
            "multi": {"type": "rank_vectors", "dims": 2},
        }
    }
    halves = [0.1, 1.0 / 3.0, -2.7182817]
    doc = {
        "b": [-128, 0, 5, 127],
        "bits": "0aff",  # hex form: 16 bits, 2 bytes
        "h": halves,
        "s": {"zeta": 0.123456, "alpha": 1.5, "Élan": 2.0},
        "multi": [[0.5, 1.25], [0.1, -3.0]],
    }
    with SearchServer("elasticsearch", "9.3.0", exclude_vectors=exclude) as server:
        server.seed("v", [{"_id": "1", **doc}, {"_id": "2", "bits": [1, -1]}], mapping)
        with Elasticsearch(server.url) as es:
            hits = es.search(index="v", source={"exclude_vectors": False}, sort=["_doc"])["hits"][
                "hits"
            ]
    src = hits[0]["_source"]
    if not exclude:  # the index kept the _source as sent
        assert src == doc and hits[1]["_source"] == {"bits": [1, -1]}
        return
    assert src["b"] == [-128, 0, 5, 127]
    assert src["bits"] == [10, -1]  # dims/8 signed bytes, even when indexed as hex
    assert hits[1]["_source"]["bits"] == [1, -1]
    # Values arrive as the shortest decimals of float32s: compare them as float32.
    h = np.asarray(src["h"], dtype=np.float32)
    assert np.array_equal(h, rehydrate_dense(halves, similarity="l2_norm", element_type="bfloat16"))
    assert h.tolist() == [0.10009765625, 0.333984375, -2.71875]  # bfloat16 keeps 8 bits
    assert list(src["s"]) == ["alpha", "zeta", "Élan"]  # term (UTF-8) order
    expected = rehydrate_sparse(doc["s"])
    assert {k: np.float32(v) for k, v in src["s"].items()} == {
        k: np.float32(v) for k, v in expected.items()
    }
    assert src["s"]["zeta"] == 0.123291015625  # 0.123456 truncated to 9 mantissa bits
    assert np.array_equal(
        np.asarray(src["multi"], dtype=np.float32), np.asarray(doc["multi"], dtype=np.float32)
    )


def test_index_time_vector_checks(es: Elasticsearch) -> None:
    es.indices.create(
        index="checked",
        mappings={
            "properties": {
                "v": {"type": "dense_vector", "dims": 3, "similarity": "dot_product"},
                "c": {"type": "dense_vector", "dims": 2, "similarity": "cosine"},
                "b": {"type": "dense_vector", "dims": 2, "element_type": "byte"},
            }
        },
    )
    resp = es.bulk(
        operations=[
            {"index": {"_index": "checked", "_id": "ok"}},
            {"v": [0.6, 0.8, 0.0], "c": [3, 4], "b": [1, 2]},
            {"index": {"_index": "checked", "_id": "dims"}},
            {"v": [1.0, 0.0]},
            {"index": {"_index": "checked", "_id": "unit"}},
            {"v": [1.0, 1.0, 1.0]},
            {"index": {"_index": "checked", "_id": "zero"}},
            {"c": [0.0, 0.0]},
            {"index": {"_index": "checked", "_id": "frac"}},
            {"b": [1.5, 2]},
            {"create": {"_index": "checked", "_id": "ok"}},
            {"b": [1, 2]},
            {"delete": {"_index": "checked", "_id": "missing"}},
        ],
        refresh=True,
    )
    assert resp["errors"] is True
    items = {next(iter(i.values()))["_id"]: next(iter(i.values())) for i in resp["items"][:5]}
    assert items["ok"]["status"] == 201 and items["ok"]["result"] == "created"
    assert (
        "different number of dimensions [2] than defined in the mapping [3]"
        in items["dims"]["error"]["reason"]
    )
    assert items["dims"]["error"]["type"] == "document_parsing_exception"
    assert "unit-length vectors" in items["unit"]["error"]["reason"]
    assert "zero magnitude" in items["zero"]["error"]["reason"]
    assert "non-decimal values" in items["frac"]["error"]["reason"]
    assert resp["items"][5]["create"]["status"] == 409
    assert resp["items"][6]["delete"]["status"] == 404
    assert es.count(index="checked")["count"] == 1


def test_bulk_through_helpers_then_read_back(es: Elasticsearch) -> None:
    data = matrix(25, DIM, seed=3)
    es.indices.create(index="loaded", mappings=es_mapping(), settings={"number_of_shards": 2})
    actions = (
        {"_index": "loaded", "_id": f"x{i}", "embedding": data[i].tolist(), "n": i}
        for i in range(25)
    )
    ok, errors = helpers.bulk(es, actions, chunk_size=10)
    assert (ok, errors) == (25, [])
    pit = es.open_point_in_time(index="loaded", keep_alive="1m")["id"]
    hits = read_pit(
        es, pit, slices=2, size=6, sort=[{"n": "desc"}], source={"exclude_vectors": False}
    )
    assert [h["_source"]["n"] for h in sorted(hits, key=lambda h: -h["_source"]["n"])] == list(
        range(24, -1, -1)
    )
    for h in hits:
        assert np.array_equal(
            np.asarray(h["_source"]["embedding"], dtype=np.float32), data[h["_source"]["n"]]
        )
    es.close_point_in_time(id=pit)


# ---------------------------------------------------------------------------------------------
# Elasticsearch: auth, errors, faults


def test_auth_failures_are_401_security_exceptions(es_server: SearchServer) -> None:
    with Elasticsearch(es_server.url) as anonymous:
        with pytest.raises(elasticsearch.AuthenticationException) as exc:
            anonymous.info()
    err = exc.value.body["error"]
    assert err["type"] == "security_exception"
    assert err["reason"] == "missing authentication credentials for REST request [/]"
    assert err["header"]["WWW-Authenticate"][-1] == "ApiKey"
    assert exc.value.meta.headers.get("www-authenticate")
    with Elasticsearch(es_server.url, api_key=("other", "nope")) as wrong:
        with pytest.raises(elasticsearch.AuthenticationException) as exc:
            wrong.count(index="docs")
    assert exc.value.body["error"]["additional_unsuccessful_credentials"] == (
        "API key: unable to find apikey with id other"
    )
    es_server.basic_auth = ("elastic", "changeme")
    with Elasticsearch(es_server.url, basic_auth=("elastic", "changeme")) as basic:
        assert basic.count(index="docs")["count"] == N_DOCS
    with Elasticsearch(es_server.url, basic_auth=("elastic", "bad")) as basic:
        with pytest.raises(
            elasticsearch.AuthenticationException, match="unable to authenticate user"
        ):
            basic.count(index="docs")


def test_unknown_index_is_404(es: Elasticsearch) -> None:
    with pytest.raises(elasticsearch.NotFoundError) as exc:
        es.indices.get_mapping(index="nope")
    assert exc.value.message == "index_not_found_exception"
    assert exc.value.body["error"]["resource.id"] == "nope"
    assert exc.value.body["error"]["reason"] == "no such index [nope]"
    with pytest.raises(elasticsearch.NotFoundError):
        es.open_point_in_time(index="nope", keep_alive="1m")
    assert es.count(index="no*")["count"] == 0  # a wildcard matching nothing is not an error


def test_429_and_503_surface_as_api_errors(es_server: SearchServer, es: Elasticsearch) -> None:
    no_retry = es.options(max_retries=0)
    es_server.fail_next(1, status=429, retry_after=2, endpoint="search")
    with pytest.raises(elasticsearch.ApiError) as exc:
        no_retry.search(index="docs")
    assert exc.value.status_code == 429
    assert exc.value.message == "es_rejected_execution_exception"
    assert exc.value.meta.headers["retry-after"] == "2"
    es_server.fail_next(1, status=503, endpoint="search")
    with pytest.raises(elasticsearch.ApiError) as exc:
        es.options(retry_on_status=()).search(index="docs")
    assert exc.value.status_code == 503
    assert exc.value.body["error"]["root_cause"][0]["type"] == "no_shard_available_action_exception"
    # The default client retries 429/502/503/504 up to 3 times without sleeping.
    es_server.reset_stats()
    es_server.fail_next(2, status=429, endpoint="search")
    assert es.search(index="docs")["hits"]["hits"]
    assert es_server.count("search") == 3
    assert es_server.status_counts[("search", 429)] == 2
    es_server.fail_next(4, status=503, endpoint="count")
    with pytest.raises(elasticsearch.ApiError):
        es.count(index="docs")
    assert es_server.count("count") == 4  # 1 try + 3 retries, then the last answer raises


def test_drop_and_hang(es_server: SearchServer, es: Elasticsearch) -> None:
    es_server.drop_next(4, endpoint="search")
    with pytest.raises(elasticsearch.ConnectionError):
        es.search(index="docs")
    assert es_server.status_counts[("search", 0)] == 4
    assert es.search(index="docs")["hits"]["hits"]  # healthy again
    es_server.hang_next(1, seconds=1.0, endpoint="count")
    with pytest.raises(elasticsearch.ConnectionTimeout):
        es.options(request_timeout=0.2, max_retries=0).count(index="docs")
    assert isinstance(elasticsearch.ConnectionTimeout("x"), elastic_transport.TransportError)


def test_latency_and_concurrent_slices(es_server: SearchServer, es: Elasticsearch) -> None:
    pit = es.open_point_in_time(index="docs", keep_alive="1m")["id"]
    es_server.latency = 0.1
    es_server.reset_stats()

    def one_slice(i: int) -> list[str]:
        resp = es.search(pit={"id": pit}, slice={"id": i, "max": 6}, size=100, sort=["_shard_doc"])
        return [h["_id"] for h in resp["hits"]["hits"]]

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=6) as pool:
        parts = list(pool.map(one_slice, range(6)))
    elapsed = time.monotonic() - start
    assert sorted(d for p in parts for d in p) == ids()
    assert es_server.count("search") == 6
    assert 1 < es_server.max_in_flight <= 6
    assert elapsed < 6 * 0.1 * 0.75  # the requests overlapped
    assert es_server.in_flight == 0


# ---------------------------------------------------------------------------------------------
# OpenSearch


def test_opensearch_info_and_mapping(os_server: SearchServer, osc: OpenSearch) -> None:
    info = osc.info()
    assert info["version"]["distribution"] == "opensearch"
    assert info["version"]["number"] == "2.19.0"
    assert (
        osc.indices.get_mapping(index="docs")["docs"]["mappings"]["properties"]["embedding"]
        == (os_mapping()["properties"]["embedding"])
    )
    assert osc.indices.get(index="docs")["docs"]["settings"]["index"]["knn"] == "true"
    assert osc.count(index="docs")["count"] == N_DOCS
    assert [r["index"] for r in osc.cat.indices(format="json")] == ["docs"]
    with pytest.raises(opensearchpy.RequestError) as exc:
        osc.indices.create(
            index="x", body={"mappings": {"properties": {"v": {"type": "dense_vector", "dims": 3}}}}
        )
    assert "No handler for type [dense_vector]" in str(exc.value.info)
    osc.indices.create(
        index="b",
        body={
            "settings": {"index.knn": True},
            "mappings": {
                "properties": {
                    "v": {
                        "type": "knn_vector",
                        "dimension": 16,
                        "data_type": "binary",
                        "method": {"name": "hnsw", "engine": "faiss", "space_type": "hamming"},
                    }
                }
            },
        },
    )
    osc.index(index="b", id="1", body={"v": [7, -8]})
    assert osc.get(index="b", id="1")["_source"] == {"v": [7, -8]}


def read_os_pit(
    osc: OpenSearch, pit: str, *, slices: int, size: int, sort: list[Any]
) -> list[dict[str, Any]]:
    hits: list[dict[str, Any]] = []
    for slice_id in range(slices):
        after = None
        for _page in range(MAX_PAGES):
            body: dict[str, Any] = {
                "pit": {"id": pit, "keep_alive": "1m"},
                "sort": sort,
                "size": size,
            }
            if slices > 1:
                body["slice"] = {"id": slice_id, "max": slices}
            if after is not None:
                body["search_after"] = after
            page = osc.search(body=body)["hits"]["hits"]
            if not page:
                break
            hits += page
            after = page[-1]["sort"]
        else:
            raise AssertionError("search_after never reached the end")
    return hits


@pytest.mark.parametrize("slices", [1, 2, 5], ids=["1-slice", "2-slices", "5-slices"])
def test_opensearch_pit_slices_return_each_document_once(
    os_server: SearchServer, osc: OpenSearch, slices: int
) -> None:
    data = matrix()
    pit = osc.create_pit(index="docs", params={"keep_alive": "1m"})
    assert set(pit) == {"pit_id", "_shards", "creation_time"}
    hits = read_os_pit(osc, pit["pit_id"], slices=slices, size=7, sort=[{"n": "asc"}])
    assert sorted(h["_id"] for h in hits) == ids()
    for hit in hits:
        assert len(hit["sort"]) == 1  # OpenSearch adds no tiebreaker
        vec = np.asarray(hit["_source"]["embedding"], dtype=np.float32)
        assert np.array_equal(vec, data[hit["_source"]["n"]])
    assert [p["pit_id"] for p in osc.get_all_pits()["pits"]] == [pit["pit_id"]]
    deleted = osc.delete_pit(body={"pit_id": [pit["pit_id"]]})
    assert deleted == {"pits": [{"successful": True, "pit_id": pit["pit_id"]}]}
    assert osc.delete_pit(body={"pit_id": [pit["pit_id"]]})["pits"][0]["successful"] is False
    assert os_server.open_contexts["pit"] == 0


def test_opensearch_ties_lose_documents_without_a_unique_sort(osc: OpenSearch) -> None:
    pit = osc.create_pit(index="docs", params={"keep_alive": "1m"})["pit_id"]
    lossy = read_os_pit(osc, pit, slices=1, size=4, sort=[{"group": "asc"}])
    assert len(lossy) == 4 * 4  # one page per group: the rest of each run of ties is skipped
    with pytest.raises(opensearchpy.RequestError) as exc:  # no _shard_doc before 3.3
        osc.search(body={"pit": {"id": pit}, "sort": ["_shard_doc"]})
    assert "No mapping found for [_shard_doc]" in str(exc.value.info)
    with pytest.warns(
        opensearchpy.OpenSearchWarning, match="fielddata on the _id field is deprecated"
    ):
        exact = read_os_pit(osc, pit, slices=1, size=4, sort=[{"group": "asc"}, {"_id": "asc"}])
    assert sorted(h["_id"] for h in exact) == ids()
    osc.delete_all_pits()


def test_opensearch_3_3_has_an_explicit_shard_doc() -> None:
    with SearchServer("opensearch", "3.3.0") as server:
        server.seed(
            "docs",
            mapping=os_mapping(),
            ids=ids(),
            vectors=matrix(),
            fields=[{"n": i, "group": f"g{i % 4}"} for i in range(N_DOCS)],
        )
        client = OpenSearch(server.url)
        pit = client.create_pit(index="docs", params={"keep_alive": "1m"})["pit_id"]
        hits = read_os_pit(client, pit, slices=2, size=5, sort=[{"group": "asc"}, "_shard_doc"])
        assert sorted(h["_id"] for h in hits) == ids()
        with pytest.raises(opensearchpy.RequestError, match="only supported with point-in-time"):
            client.search(index="docs", body={"sort": ["_shard_doc"]})
        client.close()


@pytest.mark.parametrize("slices", [1, 2, 3])
def test_opensearch_scroll_with_slices(
    os_server: SearchServer, osc: OpenSearch, slices: int
) -> None:
    seen: list[str] = []
    for slice_id in range(slices):
        body: dict[str, Any] = {"size": 9, "sort": ["_doc"]}
        if slices > 1:
            body["slice"] = {"id": slice_id, "max": slices}
        resp = osc.search(index="docs", body=body, params={"scroll": "1m"})
        scroll_id = resp["_scroll_id"]
        assert resp["hits"]["total"]["relation"] == "eq"
        for _page in range(MAX_PAGES):
            if not resp["hits"]["hits"]:
                break
            seen += [h["_id"] for h in resp["hits"]["hits"]]
            resp = osc.scroll(scroll_id=scroll_id, params={"scroll": "1m"})
        assert osc.clear_scroll(scroll_id=scroll_id) == {"succeeded": True, "num_freed": 1}
    assert sorted(seen) == ids()
    for h in helpers_scan(osc):
        assert "embedding" in h["_source"]
    assert os_server.open_contexts["scroll"] == 0


def helpers_scan(osc: OpenSearch) -> list[dict[str, Any]]:
    hits = list(opensearchpy.helpers.scan(osc, index="docs", size=11))
    assert sorted(h["_id"] for h in hits) == ids()
    return hits


def test_opensearch_auth_404_and_faults(os_server: SearchServer, osc: OpenSearch) -> None:
    anonymous = OpenSearch(os_server.url)
    with pytest.raises(opensearchpy.AuthenticationException) as exc:
        anonymous.info()
    assert exc.value.status_code == 401 and exc.value.error == "Unauthorized"
    anonymous.close()
    with pytest.raises(opensearchpy.NotFoundError) as nf:
        osc.create_pit(index="nope", params={"keep_alive": "1m"})
    assert nf.value.error == "index_not_found_exception"
    os_server.fail_next(1, status=429, endpoint="search")
    with pytest.raises(opensearchpy.TransportError) as tr:  # opensearch-py does not retry 429
        osc.search(index="docs")
    assert tr.value.status_code == 429 and tr.value.error == "rejected_execution_exception"
    os_server.reset_stats()
    os_server.fail_next(2, status=503, endpoint="search")
    assert osc.search(index="docs")["hits"]["hits"]  # it retries 502/503/504 (3 times)
    assert os_server.count("search") == 3
    os_server.drop_next(4, endpoint="count")
    with pytest.raises(opensearchpy.ConnectionError):
        osc.count(index="docs")


# ---------------------------------------------------------------------------------------------
# Server-side API and the process entry point


def test_seed_validates_like_an_index_request() -> None:
    with SearchServer("elasticsearch", "9.3.0") as server:
        server.create_index("v", {"properties": {"v": {"type": "dense_vector", "dims": 3}}})
        with pytest.raises(ValueError, match="different number of dimensions"):
            server.seed("v", ids=["a"], vectors=np.ones((1, 2), dtype=np.float32), vector_field="v")
        with pytest.raises(ValueError, match="NaN"):
            server.seed("v", [{"_id": "a", "v": [1.0, float("nan"), 0.0]}])
        assert server.seed("v", [("a", {"v": [1, 2, 3]})]) == 1
        assert server.get_source("v", "a") == {"v": rehydrate_dense([1, 2, 3]).tolist()}
        assert server.get_source("v", "a", vectors=False) == {}
        server.seed("dyn", [{"_id": "1", "title": "x", "at": "2024-01-02T03:04:05Z", "k": 3}])
        props = server.mapping("dyn")["properties"]
        assert props["at"] == {"type": "date"} and props["k"] == {"type": "long"}
        assert props["title"]["fields"]["keyword"]["type"] == "keyword"


def test_runs_as_a_process_with_deterministic_data() -> None:
    script = Path(__file__).with_name("search_server.py")
    command = [
        sys.executable,
        str(script),
        "--flavor",
        "elasticsearch",
        "--port",
        "0",
        "--index",
        "bench",
        "--records",
        "30",
        "--dim",
        "4",
        "--similarity",
        "l2_norm",
        "--api-key",
        "abc",
    ]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["records"] == 30
        with Elasticsearch(ready["url"], api_key="abc") as es:
            pit = es.open_point_in_time(index="bench", keep_alive="1m")["id"]
            hits = read_pit(
                es, pit, slices=2, size=8, sort=["_shard_doc"], source={"exclude_vectors": False}
            )
        proc.stdin.close()  # the server stops when its stdin closes
        assert proc.wait(timeout=10) == 0
    expected = np.random.default_rng(0).standard_normal((30, 4), dtype=np.float32)
    assert len(hits) == 30
    for h in hits:
        assert h["_id"] == f"doc-{h['_source']['n']:07d}"
        assert np.array_equal(
            np.asarray(h["_source"]["embedding"], dtype=np.float32), expected[h["_source"]["n"]]
        )


def test_stop_wakes_a_hung_request(es_server: SearchServer) -> None:
    es_server.hang_next(1, seconds=30, endpoint="count")
    errors: list[Exception] = []

    def call() -> None:
        with Elasticsearch(es_server.url, api_key=API_KEY, request_timeout=10, max_retries=0) as c:
            try:
                c.count(index="docs")
            except elastic_transport.TransportError as exc:  # the close, as the client saw it
                errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    time.sleep(0.2)
    start = time.monotonic()
    es_server.stop()
    worker.join(timeout=10)
    assert time.monotonic() - start < 5
    assert not worker.is_alive()
