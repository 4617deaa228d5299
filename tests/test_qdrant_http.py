"""Qdrant servers, over REST and over gRPC: the real qdrant-client and vec2pg's own requests
against servers speaking Qdrant's REST and gRPC wire formats, every test on both.

When QDRANT_URL names a real Qdrant (e.g. the docker-compose one, gRPC on 6334), a
migration of a collection seeded there runs too, on both; fault injection needs our servers.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as m
from qdrant_data import TRANSPORTS, Served, assert_same_rows, seed_named, seed_unnamed, source_rows

from vec2pg.cli import main
from vec2pg.errors import ExitCode

API_KEY = "qdrant-secret-key-123"
#: Read at import, before the autouse fixture clears the environment for each test.
REAL_QDRANT_URL = os.environ.get("QDRANT_URL")


@pytest.fixture
def local() -> Iterator[QdrantClient]:
    client = QdrantClient(":memory:")
    yield client
    client.close()


@pytest.fixture(params=TRANSPORTS)
def served(request, local: QdrantClient) -> Iterator[Served]:
    with Served(local, request.param, api_key=API_KEY) as servers:
        yield servers


def run(target, served: Served, *args: str) -> int:
    return target.cli("qdrant", *args, *served.args)


def retry_lines(err: str) -> list[str]:
    """The retry lines of a plain log (``<time> vec2pg: retrying in 0.4s (attempt 1 ...``)."""
    return [line for line in err.splitlines() if " vec2pg: retrying in " in line]


def test_every_point_arrives(local, served, target, capsys) -> None:
    seed_named(local, "mixed", 700, ids="mixed")

    code = run(target, served, "mixed", "--page-size", "64", "--json")

    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["written"] == 700
    assert_same_rows(target.rows("mixed"), source_rows(local, "mixed"))
    assert served.scrolls() == 11  # ceil(700 / 64): each page read once
    if served.transport == "grpc":
        assert served.rest_requests() == 0  # nothing went over REST


def test_vectors_from_a_server_before_1_17_arrive_over_grpc(local, target, capsys) -> None:
    """Servers before 1.17 send vectors in VectorOutput's deprecated fields (data, indices,
    vectors_count), not its dense / sparse / multi_dense oneof."""
    seed_named(local, "mixed", 300, ids="mixed")
    with Served(local, "grpc") as served:
        served.grpc.version = "1.16.2"
        assert served.grpc.legacy_vectors

        code = run(target, served, "mixed", "--quiet")

    assert code == 0, capsys.readouterr().err
    assert_same_rows(target.rows("mixed"), source_rows(local, "mixed"))


def test_url_and_api_key_come_from_the_environment(local, served, target, monkeypatch) -> None:
    seed_unnamed(local, "docs", 40)
    monkeypatch.setenv("QDRANT_URL", served.url)
    monkeypatch.setenv("QDRANT_API_KEY", API_KEY)

    assert target.cli("qdrant", "docs", *served.transport_args, "--quiet") == 0

    assert target.query(f'SELECT count(*) FROM "{target.schema}".docs') == [(40,)]


def test_the_original_command_form_works(local, served, target, capsys) -> None:
    seed_unnamed(local, "docs", 25)

    code = main(
        ["qdrant", "migrate", "docs", served.url, API_KEY, target.dsn, "--schema", target.schema]
        + served.transport_args
    )

    assert code == 0, capsys.readouterr().err
    assert target.query(f'SELECT count(*) FROM "{target.schema}".docs') == [(25,)]
    assert API_KEY not in capsys.readouterr().out


def test_a_wrong_api_key_is_a_source_error_that_does_not_print_the_key(
    local, served, target, capsys
) -> None:
    seed_unnamed(local, "docs", 5)
    served.api_key = "wrong-key-456"

    code = run(target, served, "docs")

    assert code == ExitCode.SOURCE
    out = capsys.readouterr()
    status = "HTTP 401" if served.transport == "rest" else "gRPC UNAUTHENTICATED"
    assert out.err.strip() == (
        f"vec2pg: error: {served.where} refused the API key ({status}): "
        "check --api-key or QDRANT_API_KEY"
    )
    assert "wrong-key-456" not in out.err + out.out
    assert served.scrolls() == 0


def test_transient_failures_and_timeouts_are_retried_and_nothing_is_lost(
    local, served, target, capsys
) -> None:
    seed_unnamed(local, "docs", 500)
    served.fail_scrolls(2)
    served.hang_scrolls(1, seconds=2.5)

    code = run(target, served, "docs", "--page-size", "50", "--timeout", "1", "--json")

    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["written"] == 500
    assert summary["retries"] == 3
    assert_same_rows(target.rows("docs"), source_rows(local, "docs"))


def test_a_rate_limit_honours_retry_after(local, served, target, capsys) -> None:
    seed_unnamed(local, "docs", 100)
    served.rate_limit_scrolls(1, retry_after=1)

    started = time.monotonic()
    code = run(target, served, "docs", "--json")

    assert code == 0, capsys.readouterr().err
    assert time.monotonic() - started >= 1.0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["retries"], summary["rate_limited"]) == (1, 1)
    assert target.query(f'SELECT count(*) FROM "{target.schema}".docs') == [(100,)]


def test_a_persistent_failure_stops_with_no_half_batch(local, served, target, capsys) -> None:
    """Pages of 100, commits every 200 rows: the 4th scroll fails for good, so the rows of
    the first two pages stay committed and the third page's are rolled back."""
    seed_unnamed(local, "docs", 1000, ids="mixed")
    order = list(source_rows(local, "docs"))

    def fail_from_fourth_page() -> None:
        while served.scrolls() < 3:
            time.sleep(0.005)
        served.server_error_scrolls(1000)

    threading.Thread(target=fail_from_fourth_page, daemon=True).start()
    code = run(
        target, served, "docs", "--page-size", "100", "--commit-rows", "200", "--retries", "3"
    )

    assert code == ExitCode.SOURCE
    last = capsys.readouterr().err.strip().splitlines()[-1]
    status = "HTTP 502" if served.transport == "rest" else "gRPC INTERNAL"
    assert last.startswith(f"vec2pg: error: {served.where} answered {status} while reading points")
    ids = sorted(r[0] for r in target.query(f'SELECT id FROM "{target.schema}".docs'))
    assert ids == sorted(order[:200])


def test_a_request_the_server_refuses_stops_at_once(local, served, target, capsys) -> None:
    seed_unnamed(local, "docs", 100)
    served.fail_scrolls(1, transient=False)

    code = run(target, served, "docs", "--json")

    assert code == ExitCode.SOURCE
    error = json.loads(capsys.readouterr().out)["error"]
    status = "HTTP 400" if served.transport == "rest" else "gRPC INVALID_ARGUMENT"
    assert error.startswith(f"{served.where} answered {status} while reading points")
    assert served.scrolls() == 1  # not retried


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_refused_connection_fails_at_once_with_one_line(target, capsys, transport) -> None:
    """A wrong address at the start of a run is said within seconds: one retry at most
    (an outage during a run is retried as long as --retries says)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    grpc = ["--grpc", "--grpc-port", str(port)] if transport == "grpc" else []

    started = time.monotonic()
    code = target.cli("qdrant", "docs", "--url", url, *grpc)
    elapsed = time.monotonic() - started

    assert code == ExitCode.SOURCE
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(retry_lines(err)) == 1, err  # tried twice: a wrong address, not an outage
    if transport == "rest":
        assert lines[-1].startswith(f"vec2pg: error: Qdrant at {url} did not answer: ConnectError")
        assert lines[-1].endswith("; check --url (or QDRANT_URL) and that the server is running")
    else:
        assert lines[-1].startswith(
            f"vec2pg: error: Qdrant at {url} (gRPC port {port}) did not answer (gRPC UNAVAILABLE)"
        )
        assert "Connection refused" in lines[-1]
        assert lines[-1].endswith("or leave out --grpc to read over REST")
    assert elapsed < 5


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_name_that_does_not_resolve_fails_at_once_with_one_line(
    target, capsys, transport
) -> None:
    url = "http://no-such-host.invalid:6333"  # .invalid never resolves (RFC 2606)
    grpc = ["--grpc"] if transport == "grpc" else []

    started = time.monotonic()
    code = target.cli("qdrant", "docs", "--url", url, *grpc)
    elapsed = time.monotonic() - started

    assert code == ExitCode.SOURCE
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(retry_lines(err)) == 1, err
    where = f"Qdrant at {url}" + (" (gRPC port 6334)" if transport == "grpc" else "")
    assert lines[-1].startswith(f"vec2pg: error: {where} did not answer")
    assert "check --url" in lines[-1]
    assert elapsed < 5


def test_a_mistyped_collection_names_the_collections_there(local, served, target, capsys) -> None:
    for name in ("docs", "images", "articles"):
        seed_unnamed(local, name, 3)

    code = run(target, served, "dosc")

    assert code == ExitCode.SOURCE
    assert capsys.readouterr().err.strip() == (
        f"vec2pg: error: Qdrant collection 'dosc' not found at {served.url}; did you mean 'docs'?"
    )

    code = run(target, served, "zzz")

    assert capsys.readouterr().err.strip() == (
        f"vec2pg: error: Qdrant collection 'zzz' not found at {served.url}; it has "
        "'articles', 'docs', 'images'"
    )


def test_among_many_collections_only_the_closest_names_are_said(
    local, served, target, capsys
) -> None:
    local.create_collection("products", vectors_config=m.VectorParams(size=2, distance="Dot"))
    for i in range(12):
        local.create_collection(
            f"logs-{i:02d}", vectors_config=m.VectorParams(size=2, distance="Dot")
        )

    assert run(target, served, "product") == ExitCode.SOURCE
    assert capsys.readouterr().err.strip() == (
        f"vec2pg: error: Qdrant collection 'product' not found at {served.url}; did you mean "
        "'products'?"
    )
    assert run(target, served, "zzz") == ExitCode.SOURCE
    assert capsys.readouterr().err.strip() == (
        f"vec2pg: error: Qdrant collection 'zzz' not found at {served.url}; it has "
        + ", ".join(f"'logs-{i:02d}'" for i in range(10))
        + " and 3 more"
    )


@pytest.mark.skipif(not REAL_QDRANT_URL, reason="QDRANT_URL names no real Qdrant")
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_against_a_real_qdrant(target, transport) -> None:
    """With docker-compose.test.yml up: QDRANT_URL=http://localhost:6333 scripts/test."""
    url = REAL_QDRANT_URL
    assert url
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = QdrantClient(url=url, check_compatibility=False)
    name = f"vec2pg_test_{target.schema}_{transport}"
    seed_named(client, name, 5000, ids="mixed")
    grpc = ["--grpc"] if transport == "grpc" else []
    try:
        code = main(
            ["qdrant", name, "--url", url, *grpc, "--dsn", target.dsn, "--schema", target.schema]
            + ["--quiet", "--table", "real", "--page-size", "100", "--concurrency", "4"]
        )
        assert code == 0
        assert_same_rows(target.rows("real"), source_rows(client, name))
    finally:
        client.delete_collection(name)
        client.close()
