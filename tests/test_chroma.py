"""vec2pg chroma: every row of a real Chroma (PersistentClient's engine, and ``chroma run``
for the HTTP client) into PostgreSQL, compared row by row with what Chroma returns.

The contract case (``case_chroma``) seeds the shared records into a local collection; the
tests here add every shape Chroma holds (spaces, documents, URIs, metadata types, tenants
and databases), the failures a user meets, offset paging under deletes (the anchor), a
kill -9 resumed exactly, a resync with --prune, and --index hnsw against Chroma's search.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

chromadb = pytest.importorskip("chromadb")

from chroma_data import (  # noqa: E402
    chroma_server,
    open_persistent,
    seed_collection,
    seed_tenants,
    stored_rows,
)

from vec2pg.records import Record  # noqa: E402
from vec2pg.sources.chroma import ChromaSource  # noqa: E402

# -- the contract case ------------------------------------------------------------------------

#: A seeded Chroma folder per test session, copied for each test.
_TEMPLATES: dict[str, Any] = {}


def _chroma_records(records: list[Record]) -> dict[str, Any]:
    return {
        "ids": [r.id for r in records],
        "embeddings": np.stack([r.vectors[""] for r in records]),
        "metadatas": [r.metadata for r in records],
    }


def _replace(collection: Any, records: list[Record]) -> None:
    # Chroma's upsert merges metadata into what a row has: replace the rows instead.
    collection.delete(ids=[r.id for r in records])
    collection.add(**_chroma_records(records))


def _local_put(path: Path, records: list[Record]) -> None:
    with open_persistent(path) as client:
        _replace(client.get_collection("docs"), records)


def _seeded(request, case: Any, folder: Path) -> None:
    """Put the contract's records in ``folder`` (copied from a template seeded once)."""
    if "docs" not in _TEMPLATES:
        template = request.getfixturevalue("tmp_path_factory").mktemp("chroma") / "docs"
        with open_persistent(template) as client:
            # l2: Chroma returns l2 embeddings as added (cosine ones a few ulps off).
            client.create_collection(
                "docs", embedding_function=None, configuration={"hnsw": {"space": "l2"}}
            )
        seeding = dataclasses.replace(case, put=partial(_local_put, template))
        seeding.seed()
        _TEMPLATES["docs"] = (template, seeding.records)
    template, records = _TEMPLATES["docs"]
    case.records = dict(records)
    shutil.copytree(template, folder)


def case_chroma(request, tmp_path) -> Iterator[Any]:
    """A local folder (PersistentClient): no network to fail."""
    from test_source_contract import COUNTS, Case

    storage = tmp_path / "chroma"

    def delete(namespace: str, rid: str) -> None:
        with open_persistent(storage) as client:
            client.get_collection("docs").delete(ids=[rid])

    case = Case(
        open=lambda collection="docs": ChromaSource(collection, path=str(storage), page_size=100),
        cli=["chroma", "docs", "--path", str(storage), "--page-size", "100"],
        table="docs",
        namespaced=False,
        source_id=str,
        put=partial(_local_put, storage),
        delete=delete,
        break_transiently=None,
        counts={"": COUNTS[""]},
    )
    _seeded(request, case, storage)
    yield case


#: The ``chroma run`` server (behind a FlakyProxy) the HTTP contract cases share: one per
#: test session, each case in a collection of its own.
_SERVED: dict[str, Any] = {}


def _served(request) -> dict[str, Any]:
    """Start the shared server once; it stops when the session ends."""
    if not _SERVED:
        from contextlib import ExitStack

        from chroma_data import close_http, settings

        stack = ExitStack()
        folder = request.getfixturevalue("tmp_path_factory").mktemp("chroma-served")
        with open_persistent(folder):  # an empty Chroma folder for the server
            pass
        host, port = stack.enter_context(chroma_server(folder))
        proxy = FlakyProxy(port)
        stack.callback(proxy.close)
        client = chromadb.HttpClient(host=host, port=port, settings=settings())
        stack.callback(close_http, client)
        _SERVED.update(host=host, proxy=proxy, client=client, cases=0)
        request.config.add_cleanup(stack.close)
        request.config.add_cleanup(_SERVED.clear)
    return _SERVED


def case_chroma_http(request, tmp_path) -> Iterator[Any]:
    """``chroma run`` behind a proxy that can answer 503 (HttpClient)."""
    from test_source_contract import COUNTS, Case

    served = _served(request)
    served["cases"] += 1
    name, host, proxy = f"docs-{served['cases']}", served["host"], served["proxy"]
    proxy.failing = 0
    collection = served["client"].create_collection(
        name, embedding_function=None, configuration={"hnsw": {"space": "l2"}}
    )
    case = Case(
        open=lambda collection=name: ChromaSource(
            collection, host=host, port=proxy.port, page_size=100, timeout=10
        ),
        cli=["chroma", name, "--host", host, "--port", str(proxy.port), "--page-size", "100"],
        table=name,
        namespaced=False,
        source_id=str,
        put=partial(_replace, collection),
        delete=lambda ns, rid: collection.delete(ids=[rid]),
        break_transiently=lambda: setattr(proxy, "failing", 1),
        counts={"": COUNTS[""]},
    )
    case.seed()
    try:
        yield case
    finally:
        served["client"].delete_collection(name)


# -- helpers ----------------------------------------------------------------------------------


def assert_table_holds(target, table: str, collection: Any) -> None:
    """Every row of ``table`` is the row Chroma returns, every field compared exactly."""
    source = stored_rows(collection)
    rows = target.rows(table)
    assert sorted(rows) == sorted(source)
    for key, want in source.items():
        row = rows[key]
        np.testing.assert_array_equal(row["embedding"], np.asarray(want["embedding"], np.float32))
        assert row["document"] == want["document"], key
        assert row["uri"] == want["uri"], key
        assert row["metadata"] == want["metadata"], key


def embeddings(collection: Any, ids: list[str]) -> np.ndarray:
    """The embeddings the rows with these ids hold, in that order."""
    got = collection.get(ids=ids, include=["embeddings"])
    by_id = dict(zip(got["ids"], got["embeddings"], strict=True))
    return np.stack([by_id[i] for i in ids]).astype(np.float32)


def comment_metric(target, table: str) -> str:
    (comment,) = target.query(
        "SELECT col_description(%s::regclass, attnum) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attname = 'embedding'",
        [f'"{target.schema}"."{table}"'] * 2,
    )[0]
    return str(json.loads(comment)["vec2pg"]["metric"])


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "chroma"


# -- every shape ------------------------------------------------------------------------------


def test_every_collection_shape_arrives_row_for_row(target, folder, capsys) -> None:
    with open_persistent(folder) as client:
        seed_collection(client, "cosine-docs", 300, space="cosine", seed=1)
        seed_collection(client, "l2-plain", 200, space="l2", documents=False, uris=False, seed=2)
        seed_collection(client, "ip-legacy", 250, dim=5, space="ip", space_in="metadata", seed=3)

    for name, metric in [
        ("cosine-docs", "cosine"),
        ("l2-plain", "euclidean"),
        ("ip-legacy", "dotproduct"),
    ]:
        assert (
            target.cli("chroma", name, "--path", str(folder), "--page-size", "64", "--quiet") == 0
        ), capsys.readouterr().err
        assert comment_metric(target, name) == metric
    with target.connect() as conn:
        from conftest import column_types

        assert list(column_types(conn, target.schema, "ip-legacy").items()) == [
            ("id", "text"),
            ("embedding", "vector(5)"),
            ("document", "text"),
            ("uri", "text"),
            ("metadata", "jsonb"),
        ]
    with open_persistent(folder) as client:
        for name in ("cosine-docs", "l2-plain", "ip-legacy"):
            assert_table_holds(target, name, client.get_collection(name))
        rows = target.rows("cosine-docs")
        ids = list(stored_rows(client.get_collection("cosine-docs")))
    # Chroma keeps every metadata type; a row without metadata but with a URI reads {}.
    assert rows[ids[1]]["metadata"]["tags"] == ["t1", "ü"]
    assert {type(v) for v in rows[ids[1]]["metadata"].values()} == {str, int, float, bool, list}
    assert rows[ids[0]]["metadata"] is None and rows[ids[0]]["uri"] is None
    assert rows[ids[7]]["metadata"] == {} and rows[ids[7]]["uri"] == "s3://bucket/7.png"


def test_tenants_and_databases(target, folder, capsys) -> None:
    seeded = seed_tenants(folder, 15)

    code = target.cli(
        "chroma",
        "products",
        "--path",
        str(folder),
        "--tenant",
        "acme",
        "--database",
        "dev",
        "--quiet",
    )

    assert code == 0, capsys.readouterr().err
    with open_persistent(folder, tenant="acme", database="dev") as client:
        assert_table_holds(target, "products", client.get_collection("products"))
    assert len(target.rows("products")) == len(seeded["acme", "dev"]["products"].rows)
    capsys.readouterr()

    assert (
        target.cli(
            "chroma", "products", "--path", str(folder), "--tenant", "acme", "--database", "prd"
        )
        == 3
    )
    assert capsys.readouterr().err.strip() == (
        f"vec2pg: error: Chroma at {folder} (tenant 'acme', database 'prd'): Database [prd] not "
        "found. Are you sure it exists?; did you mean 'prod'?"
    )
    assert target.cli("chroma", "products", "--path", str(folder), "--tenant", "acne") == 3
    assert capsys.readouterr().err.strip() == (
        f"vec2pg: error: Chroma at {folder} (tenant 'acne'): Tenant [acne] not found; check "
        "--tenant (Chroma cannot list its tenants)"
    )


def test_an_unknown_collection_names_the_closest(target, folder, capsys) -> None:
    with open_persistent(folder) as client:
        seed_collection(client, "articles", 5)
        seed_collection(client, "images", 5)

    assert target.cli("chroma", "article", "--path", str(folder)) == 3
    assert capsys.readouterr().err.strip() == (
        f"vec2pg: error: Chroma collection 'article' not found at {folder}; did you mean 'articles'?"
    )
    assert target.cli("chroma", "docs", "--path", str(folder / "nowhere")) == 3
    assert capsys.readouterr().err.strip() == (
        f"vec2pg: error: no Chroma storage at {folder / 'nowhere'} (no chroma.sqlite3)"
    )


def test_an_empty_collection(target, folder, capsys) -> None:
    with open_persistent(folder) as client:
        client.create_collection("never", embedding_function=None)
        seed_collection(client, "emptied", 20, dim=6)
        emptied = client.get_collection("emptied")
        emptied.delete(ids=emptied.get(include=[])["ids"])

    assert target.cli("chroma", "never", "--path", str(folder)) == 3
    assert capsys.readouterr().err.strip() == (
        f"vec2pg: error: Chroma collection 'never' at {folder} has never held a record, so it "
        "has no dimension to make its vector column with: add records first"
    )
    assert target.cli("chroma", "emptied", "--path", str(folder), "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["read"], summary["written"]) == (0, 0)
    assert target.rows("emptied") == {}
    assert target.query(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'embedding'",
        [f'"{target.schema}".emptied'],
    ) == [("vector(6)",)]


# -- the HTTP client --------------------------------------------------------------------------


class FlakyProxy:
    """A reverse proxy in front of ``chroma run`` that answers 503 to the next requests when
    told to (what a load balancer does while the server restarts)."""

    def __init__(self, port: int) -> None:
        self.failing = 0
        self.requests = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy.requests += 1
                if proxy.failing:
                    proxy.failing -= 1
                    answer, status, headers = b"upstream restarting", 503, {}
                else:
                    upstream = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    wanted = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    upstream.request(self.command, self.path, body or None, wanted)
                    reply = upstream.getresponse()
                    answer, status = reply.read(), reply.status
                    headers = {"Content-Type": reply.getheader("Content-Type") or "text/plain"}
                    upstream.close()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_PUT = do_DELETE = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def served(folder) -> Iterator[tuple[str, int, Any]]:
    with open_persistent(folder) as client:
        seed_collection(client, "docs", 700, space="ip", seed=4)
    with chroma_server(folder) as (host, port):
        proxy = FlakyProxy(port)
        try:
            yield host, proxy.port, proxy
        finally:
            proxy.close()


def test_a_server_through_the_http_client_with_a_transient_failure(
    target, folder, served, capsys
) -> None:
    host, port, proxy = served
    proxy.failing = 0
    source = ChromaSource("docs", host=host, port=port, page_size=100, token="tok-123")
    try:
        source.describe()
        proxy.failing = 1
        from vec2pg.errors import SourceUnavailable

        with pytest.raises(SourceUnavailable) as outage:
            source.page("", "", None)
        assert (
            str(outage.value)
            == f"Chroma at http://{host}:{port} answered HTTP 503: upstream restarting"
        )
    finally:
        source.close()
    proxy.failing = 2

    code = target.cli(
        "chroma", "docs", "--host", host, "--port", str(port), "--page-size", "100", "--json"
    )

    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["retries"] == 2
    with open_persistent(folder) as client:  # the server's folder, read directly
        assert_table_holds(target, "docs", client.get_collection("docs"))


def test_an_unreachable_server_is_a_source_error_without_the_token(target, capsys) -> None:
    from chroma_data import free_port

    port = free_port()
    started = time.monotonic()
    code = target.cli(
        "chroma", "docs", "--host", "127.0.0.1", "--port", str(port), "--token", "s3cr3t-tok"
    )

    assert code == 3
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        f"vec2pg: error: Chroma at http://127.0.0.1:{port} did not answer: ConnectError: "
        "[Errno 111] Connection refused"
    )
    assert "s3cr3t-tok" not in err
    assert time.monotonic() - started < 10


# -- offset paging under deletes --------------------------------------------------------------


def walk(
    source: ChromaSource, cursor: Any = None, *, pages: int | None = None
) -> tuple[list[str], Any]:
    ids: list[str] = []
    while pages is None or pages > 0:
        page = source.page("", "", cursor)
        ids += [r.id for r in page.load()]
        cursor = page.next_cursor
        pages = None if pages is None else pages - 1
        if cursor is None:
            break
    return ids, cursor


@pytest.mark.parametrize("deleted", ["before the anchor", "the anchor", "after the anchor"])
def test_rows_deleted_between_pages_never_make_a_page_skip_one(folder, deleted) -> None:
    with open_persistent(folder) as client:
        seed_collection(client, "paged", 500, space="l2", seed=6)
    source = ChromaSource("paged", path=str(folder), page_size=40)
    try:
        source.describe()
        order = list(stored_rows(source._require()))
        first, cursor = walk(source, pages=5)  # 200 rows read
        assert first == order[:200]
        gone = {
            "before the anchor": order[10:17],
            "the anchor": order[199:200],
            "after the anchor": order[250:260],
        }[deleted]
        source._require().delete(ids=gone)
        source._require().add(ids=["added-late"], embeddings=np.ones((1, 8), np.float32))
        rest, end = walk(source, cursor)
    finally:
        source.close()

    remaining = [i for i in order if i not in gone] + ["added-late"]
    if deleted == "the anchor":  # read again from the start, in a second pass
        assert rest == remaining
    else:
        assert rest == [i for i in remaining if i not in first]
    assert end is None


# -- kill -9, then resume -----------------------------------------------------------------------


def progress(target) -> tuple[int, Any]:
    try:
        rows = target.query(
            f'SELECT coalesce(sum(records), 0), max(cursor::text) FROM "{target.schema}"._vec2pg_progress'
        )
    except Exception:
        return 0, None
    return int(rows[0][0]), rows[0][1]


@pytest.mark.parametrize("meanwhile", ["rows deleted before the cursor", "the anchor deleted"])
def test_kill_9_mid_run_then_resume_exactly(target, tmp_path, meanwhile) -> None:
    folder = tmp_path / "chroma"
    with open_persistent(folder) as client:
        seed_collection(client, "big", 4000, space="l2", seed=7, documents=True)
    command = [
        sys.executable,
        "-m",
        "vec2pg",
        "chroma",
        "big",
        "--path",
        str(folder),
        "--page-size",
        "25",
        "--commit-rows",
        "100",
        "--dsn",
        target.dsn,
        "--schema",
        target.schema,
    ]
    run = subprocess.Popen(
        [*command, "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while progress(target)[0] < 500 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=30)
    assert run.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    committed, cursor = progress(target)
    assert 0 < committed < 4000
    offset, anchor, _ = json.loads(json.loads(cursor))

    with open_persistent(folder) as client:
        big = client.get_collection("big")
        order = big.get(include=[])["ids"]
        assert order[offset - 1] == anchor
        gone = order[offset - 40 : offset - 30] if meanwhile.startswith("rows") else [anchor]
        big.delete(ids=gone)
        changed = order[offset + 5]
        big.update(
            ids=[changed],
            documents=["changed after the kill"],
            embeddings=embeddings(big, [changed]),
        )
        big.add(
            ids=["late-1", "late-2"],
            embeddings=np.full((2, 8), 0.5, np.float32),
            documents=["a", "b"],
        )

    # Resumed with larger pages: a cursor holds an offset and an id, not a page number.
    faster = [*command, "--page-size", "500", "--commit-rows", "10000"]
    again = subprocess.run([*faster, "--json"], capture_output=True, text=True, timeout=120)

    summary = json.loads(again.stdout)
    assert again.returncode == 0, again.stderr
    assert summary["resumed"] is True
    if not meanwhile.startswith("rows"):
        assert f"removed {offset - 1:,} rows that repeated another's key" in again.stderr
    # What it read: the rows after the anchor; or, with the anchor gone, the whole
    # collection again (a second pass; the rows written twice are kept once).
    after = 4000 - offset if meanwhile.startswith("rows") else 4000 - 1
    assert summary["read"] == after + 2
    with open_persistent(folder) as client:
        source = stored_rows(client.get_collection("big"))
    rows = target.rows("big")
    # Rows deleted after they were committed stay until a run with --prune.
    assert sorted(set(rows) - set(source)) == sorted(gone)
    assert_same(rows, source)

    pruned = subprocess.run(
        [*faster, "--prune", "--json"], capture_output=True, text=True, timeout=120
    )
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout)["deleted"] == len(gone)
    assert_same(target.rows("big"), source, exact=True)


def assert_same(rows: dict[str, Any], source: dict[str, Any], *, exact: bool = False) -> None:
    """Every source row is in ``rows`` as Chroma returns it (and nothing else, ``exact``)."""
    if exact:
        assert rows.keys() == source.keys()
    for key, want in source.items():
        row = rows[key]
        np.testing.assert_array_equal(row["embedding"], np.asarray(want["embedding"], np.float32))
        assert (row["document"], row["uri"], row["metadata"]) == (
            want["document"],
            want["uri"],
            want["metadata"],
        ), key


# -- resync ----------------------------------------------------------------------------------


def test_a_resync_with_updates_deletes_and_prune(target, folder, capsys) -> None:
    with open_persistent(folder) as client:
        seed_collection(client, "docs", 400, space="cosine", seed=8)
    cli = ["chroma", "docs", "--path", str(folder), "--page-size", "70"]
    assert target.cli(*cli, "--quiet") == 0

    with open_persistent(folder) as client:
        docs = client.get_collection("docs")
        ids = docs.get(include=[])["ids"]
        # A document only (with the embeddings it had: without them Chroma would embed it).
        docs.update(ids=ids[:3], documents=["new text"] * 3, embeddings=embeddings(docs, ids[:3]))
        docs.update(ids=[ids[3]], metadatas=[{"changed": True}])
        docs.update(ids=[ids[4]], uris=["s3://elsewhere"])
        docs.upsert(ids=[ids[5]], embeddings=np.full((1, 8), 0.25, np.float32))
        docs.delete(ids=ids[10:14])
        docs.add(
            ids=["new-1", "new-2"],
            embeddings=np.ones((2, 8), np.float32),
            metadatas=[{"k": 1}, {"k": 2}],
        )
    capsys.readouterr()

    assert target.cli(*cli, "--prune", "--json") == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert (summary["inserted"], summary["updated"], summary["deleted"]) == (2, 6, 4)
    assert summary["unchanged"] == 400 - 4 - 6
    with open_persistent(folder) as client:
        assert_table_holds(target, "docs", client.get_collection("docs"))

    assert target.cli("verify", *cli, "--sample", "500", "--json") == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["sampled"] == 398  # cosine: within normalisation's ulps


# -- --index hnsw against Chroma's own search ---------------------------------------------------


@pytest.mark.parametrize(("space", "operator"), [("cosine", "<=>"), ("l2", "<->"), ("ip", "<#>")])
def test_index_hnsw_finds_what_chroma_finds(target, folder, space, operator, capsys) -> None:
    with open_persistent(folder) as client:
        seeded = seed_collection(client, "docs", 1500, dim=16, space=space, seed=9, documents=False)
    assert target.cli("chroma", "docs", "--path", str(folder), "--index", "hnsw", "--quiet") == 0, (
        capsys.readouterr().err
    )

    rng = np.random.default_rng(10)
    queries = rng.standard_normal((20, 16)).astype(np.float32)
    with open_persistent(folder) as client:
        found = client.get_collection("docs").query(
            query_embeddings=queries, n_results=1, include=[]
        )
    chroma_top = [ids[0] for ids in found["ids"]]
    with target.connect() as conn:
        from pgvector.psycopg import register_vector

        register_vector(conn)
        conn.execute("SET hnsw.ef_search = 400")
        conn.execute("SET enable_seqscan = off")  # 1,500 rows: the planner would scan them
        plan = conn.execute(
            f'EXPLAIN SELECT id FROM "{target.schema}".docs ORDER BY embedding {operator} %s LIMIT 1',
            [queries[0]],
        ).fetchall()
        assert any("Index Scan" in line[0] for line in plan), plan
        postgres_top = [
            conn.execute(
                f'SELECT id FROM "{target.schema}".docs ORDER BY embedding {operator} %s LIMIT 1',
                [q],
            ).fetchone()[0]
            for q in queries
        ]
    assert postgres_top == chroma_top
    assert len(set(chroma_top)) > 5 and set(chroma_top) <= set(seeded.rows)
