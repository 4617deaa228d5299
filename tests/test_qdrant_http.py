"""Qdrant over HTTP: the real qdrant-client against a server speaking Qdrant's REST format.

When QDRANT_URL names a real Qdrant (e.g. the docker-compose one), a migration of a
collection seeded there runs too; fault injection needs our server.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from collections.abc import Iterator

import pytest
from qdrant_client import QdrantClient
from qdrant_data import assert_same_rows, seed_named, seed_unnamed, source_rows
from qdrant_server import QdrantServer

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


@pytest.fixture
def server(local: QdrantClient) -> Iterator[QdrantServer]:
    with QdrantServer(local, api_key=API_KEY) as srv:
        yield srv


def run(target, server: QdrantServer, *args: str) -> int:
    return target.cli("qdrant", *args, "--url", server.url, "--api-key", API_KEY)


def test_every_point_arrives_over_http(local, server, target, capsys) -> None:
    seed_named(local, "mixed", 700, ids="mixed")

    code = run(target, server, "mixed", "--page-size", "64", "--json")

    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["written"] == 700
    assert_same_rows(target.rows("mixed"), source_rows(local, "mixed"))
    assert server.count("/points/scroll") == 11  # ceil(700 / 64): each page read once


def test_url_and_api_key_come_from_the_environment(local, server, target, monkeypatch) -> None:
    seed_unnamed(local, "docs", 40)
    monkeypatch.setenv("QDRANT_URL", server.url)
    monkeypatch.setenv("QDRANT_API_KEY", API_KEY)

    assert target.cli("qdrant", "docs", "--quiet") == 0

    assert target.query(f'SELECT count(*) FROM "{target.schema}".docs') == [(40,)]


def test_the_original_command_form_works_over_http(local, server, target, capsys) -> None:
    seed_unnamed(local, "docs", 25)

    code = main(
        ["qdrant", "migrate", "docs", server.url, API_KEY, target.dsn, "--schema", target.schema]
    )

    assert code == 0, capsys.readouterr().err
    assert target.query(f'SELECT count(*) FROM "{target.schema}".docs') == [(25,)]
    assert API_KEY not in capsys.readouterr().out


def test_a_wrong_api_key_is_a_source_error_that_does_not_print_the_key(
    local, server, target, capsys
) -> None:
    seed_unnamed(local, "docs", 5)

    code = target.cli("qdrant", "docs", "--url", server.url, "--api-key", "wrong-key-456")

    assert code == ExitCode.SOURCE
    out = capsys.readouterr()
    assert out.err.strip() == (
        f"vec2pg: error: Qdrant at {server.url} refused the API key (HTTP 401): "
        "check --api-key or QDRANT_API_KEY"
    )
    assert "wrong-key-456" not in out.err + out.out
    assert server.count("/points/scroll") == 0


def test_5xx_and_timeouts_are_retried_and_nothing_is_lost(local, server, target, capsys) -> None:
    seed_unnamed(local, "docs", 500)
    server.fail_next(2, status=503, path_contains="/points/scroll")
    server.hang_next(1, seconds=2.5, path_contains="/points/scroll")

    code = run(target, server, "docs", "--page-size", "50", "--timeout", "1", "--json")

    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["written"] == 500
    assert summary["retries"] == 3
    assert_same_rows(target.rows("docs"), source_rows(local, "docs"))


def test_429_honours_retry_after(local, server, target, capsys) -> None:
    seed_unnamed(local, "docs", 100)
    server.fail_next(1, status=429, retry_after=1, path_contains="/points/scroll")

    started = time.monotonic()
    code = run(target, server, "docs", "--json")

    assert code == 0, capsys.readouterr().err
    assert time.monotonic() - started >= 1.0
    assert json.loads(capsys.readouterr().out)["retries"] == 1
    assert target.query(f'SELECT count(*) FROM "{target.schema}".docs') == [(100,)]


def test_a_persistent_failure_stops_with_no_half_batch(local, server, target, capsys) -> None:
    """Pages of 100, commits every 200 rows: the 4th scroll fails for good, so the rows of
    the first two pages stay committed and the third page's are rolled back."""
    seed_unnamed(local, "docs", 1000, ids="mixed")
    order = list(source_rows(local, "docs"))

    def fail_from_fourth_page(*_: object) -> None:
        while server.count("/points/scroll") < 3:
            time.sleep(0.005)
        server.fail_next(1000, status=502, path_contains="/points/scroll")

    import threading

    threading.Thread(target=fail_from_fourth_page, daemon=True).start()
    code = run(
        target, server, "docs", "--page-size", "100", "--commit-rows", "200", "--retries", "3"
    )

    assert code == ExitCode.SOURCE
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(f"vec2pg: error: Qdrant at {server.url} answered HTTP 502")
    ids = sorted(r[0] for r in target.query(f'SELECT id FROM "{target.schema}".docs'))
    assert ids == sorted(order[:200])


def test_an_unreachable_server_is_a_source_error(target, capsys) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"

    code = target.cli("qdrant", "docs", "--url", url, "--retries", "2")

    assert code == ExitCode.SOURCE
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"vec2pg: error: Qdrant at {url} did not answer: ConnectError")


@pytest.mark.skipif(not REAL_QDRANT_URL, reason="QDRANT_URL names no real Qdrant")
def test_against_a_real_qdrant(target) -> None:
    """With docker-compose.test.yml up: QDRANT_URL=http://localhost:6333 scripts/test."""
    url = REAL_QDRANT_URL
    assert url
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = QdrantClient(url=url, check_compatibility=False)
    name = f"vec2pg_test_{target.schema}"
    seed_named(client, name, 2000, ids="mixed")
    try:
        assert (
            main(
                [
                    "qdrant",
                    name,
                    "--url",
                    url,
                    "--dsn",
                    target.dsn,
                    "--schema",
                    target.schema,
                    "--quiet",
                    "--table",
                    "real",
                ]
            )
            == 0
        )
        assert_same_rows(target.rows("real"), source_rows(client, name))
    finally:
        client.delete_collection(name)
        client.close()
