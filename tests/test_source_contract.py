"""The contract every source fulfils, checked the same way on each (one parameter a source).

Each case seeds the same records into a real engine or a wire-format test server and says
how to open, change and break it. The checks: partitions are disjoint and cover every
record; a saved cursor resumes exactly; ``page_ids`` lists the ids ``page`` reads; ``fetch``
leaves out ids the source lacks; failures are sorted into transient and terminal; and a
migration, a resync with ``--prune`` after changes, and ``verify`` leave the table equal to
the source, row by row.

Adding a source: write a ``case_<name>(request, tmp_path)`` generator in the source's own
test module (seeding ``canonical`` records into its engine or test server, yielding a
:class:`Case`) and add its import path to ``CASES``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pytest
from conftest import PINECONE_KEY, Target, column_types

from vec2pg.errors import SourceError, Transient
from vec2pg.postgres.layout import layout_for
from vec2pg.records import Record
from vec2pg.sources.base import WHOLE, VerifiableSource

DIM = 8
#: Records per namespace: enough for several pages, and for Pinecone to split the first.
COUNTS = {"": 2_400, "other": 130}


def canonical(namespace: str, i: int) -> Record:
    """The i-th record of a namespace, as every source is seeded with it (metadata that
    every source holds: strings, floats, booleans, lists of strings)."""
    rng = np.random.default_rng([zlib.crc32(namespace.encode()), i])
    return Record(
        id=f"{i}",
        vectors={"": rng.standard_normal(DIM).astype(np.float32)},
        metadata={
            "title": f"record {i} «{namespace or 'default'}» 🚀",
            "score": i / 8,
            "even": i % 2 == 0,
            "tags": ["a", f"t{i % 5}"],
        },
        namespace=namespace,
    )


@dataclass
class Case:
    """A source seeded with records, and how a test opens, changes and breaks it."""

    #: A source of the seeded collection; ``open(collection="no-such-collection")`` one of a
    #: collection the source does not have.
    open: Callable[..., VerifiableSource]
    cli: list[str]  # the command line's source arguments
    table: str
    namespaced: bool
    #: How the source spells a canonical record's id (Qdrant: integers and UUIDs).
    source_id: Callable[[int], str]
    put: Callable[[list[Record]], None]  # upsert records
    delete: Callable[[str, str], None]  # (namespace, id as the source spells it)
    #: Make the source's next request fail transiently (None: it cannot, e.g. embedded).
    break_transiently: Callable[[], None] | None
    #: Where the table stores the canonical namespace (Pinecone: "" is "__default__").
    table_namespace: Callable[[str], str] = lambda ns: ns
    #: The name the source gives the canonical records' dense vector ("": its unnamed one).
    vector: str = ""
    #: How the namespaces of COUNTS are seeded (a source without namespaces: only "").
    counts: dict[str, int] = field(default_factory=lambda: dict(COUNTS))
    #: The records the source holds, by (namespace, id), with their vector named ``vector``.
    records: dict[tuple[str, str], Record] = field(default_factory=dict)

    def seed(self) -> None:
        """Put ``counts`` canonical records into the source."""
        self.add([(canonical(ns, i), i) for ns, count in self.counts.items() for i in range(count)])

    def add(self, records: list[tuple[Record, int]]) -> None:
        """Put records (each with its number) into the source, spelled as it spells ids and
        names its vector."""
        spelled = [
            Record(self.source_id(i), {self.vector: r.vectors[""]}, r.metadata, r.namespace)
            for r, i in records
        ]
        self.put(spelled)
        self.records.update({(r.namespace, r.id): r for r in spelled})


def qdrant_id(i: int) -> str:
    # Integers and UUIDs mixed, not 0..N-1: both kinds of Qdrant ids, in Qdrant's order.
    return str(i * 7 + 3) if i % 3 else str(uuid.UUID(int=(i * 2654435761) % 2**128))


def _qdrant_point(record: Record) -> Any:
    from qdrant_client import models

    point_id: int | str = int(record.id) if record.id.isdigit() else record.id
    return models.PointStruct(
        id=point_id, vector=record.vectors[""].tolist(), payload=record.metadata
    )


#: A seeded local Qdrant storage per test session, copied for each test (local mode
#: upserts 2,400 points in seconds; a copy takes milliseconds).
_QDRANT_STORAGE: dict[str, Any] = {}


def case_qdrant_local(request, tmp_path) -> Iterator[Case]:
    import shutil

    from qdrant_client import models
    from qdrant_data import open_local

    from vec2pg.sources.qdrant import QdrantSource

    def change(path: Any, action: Callable[[Any], None]) -> None:
        client = open_local(path)
        try:
            action(client)
        finally:
            client.close()

    def put(path: Any, records: list[Record]) -> None:
        change(path, lambda c: c.upsert("docs", list(map(_qdrant_point, records))))

    storage = tmp_path / "qdrant"
    case = Case(
        open=lambda collection="docs": QdrantSource(collection, path=str(storage), page_size=100),
        cli=["qdrant", "docs", "--path", str(storage), "--page-size", "100"],
        table="docs",
        namespaced=False,
        source_id=qdrant_id,
        put=partial(put, storage),
        delete=lambda ns, rid: change(
            storage, lambda c: c.delete("docs", [int(rid) if rid.isdigit() else rid])
        ),
        break_transiently=None,
        counts={"": COUNTS[""]},
    )
    if "docs" not in _QDRANT_STORAGE:
        template = request.getfixturevalue("tmp_path_factory").mktemp("qdrant") / "docs"
        # Euclid: local mode returns vectors as upserted (cosine ones normalised).
        params = models.VectorParams(size=DIM, distance=models.Distance.EUCLID)
        change(template, lambda c: c.create_collection("docs", vectors_config=params))
        seeding = dataclasses.replace(case, put=partial(put, template))
        seeding.seed()
        _QDRANT_STORAGE["docs"] = (template, seeding.records)
    template, records = _QDRANT_STORAGE["docs"]
    case.records = dict(records)
    shutil.copytree(template, storage)
    yield case


def case_qdrant_rest(request, tmp_path) -> Iterator[Case]:
    from qdrant_client import models
    from qdrant_server import QdrantServer

    from vec2pg.sources.qdrant import QdrantSource

    with QdrantServer(api_key="contract-key") as server:
        server.local.create_collection(
            "docs", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.EUCLID)
        )
        case = Case(
            open=lambda collection="docs": QdrantSource(
                collection, url=server.url, api_key="contract-key", page_size=100, timeout=5
            ),
            cli=[
                "qdrant",
                "docs",
                "--url",
                server.url,
                "--api-key",
                "contract-key",
                "--page-size",
                "100",
            ],
            table="docs",
            namespaced=False,
            source_id=qdrant_id,
            put=lambda records: server.local.upsert("docs", list(map(_qdrant_point, records))),
            delete=lambda ns, rid: server.local.delete(
                "docs", [int(rid) if rid.isdigit() else rid]
            ),
            break_transiently=lambda: server.fail_next(1, status=503),
            counts={"": COUNTS[""]},
        )
        case.seed()
        yield case


def case_qdrant_grpc(request, tmp_path) -> Iterator[Case]:
    """Qdrant's gRPC API (tests/qdrant_grpc_server.py), and nothing else: no REST server."""
    import grpc
    from qdrant_client import QdrantClient, models
    from qdrant_grpc_server import QdrantGrpcServer

    from vec2pg.sources.qdrant import QdrantSource

    local = QdrantClient(":memory:")
    local.create_collection(
        "docs", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.EUCLID)
    )
    with QdrantGrpcServer(local, api_key="contract-key") as server:
        url = f"http://127.0.0.1:{server.port}"
        case = Case(
            open=lambda collection="docs": QdrantSource(
                collection,
                url=url,
                api_key="contract-key",
                page_size=100,
                timeout=5,
                grpc=True,
                grpc_port=server.port,
            ),
            cli=["qdrant", "docs", "--url", url, "--api-key", "contract-key"]
            + ["--page-size", "100", "--grpc", "--grpc-port", str(server.port)],
            table="docs",
            namespaced=False,
            source_id=qdrant_id,
            put=lambda records: local.upsert("docs", list(map(_qdrant_point, records))),
            delete=lambda ns, rid: local.delete("docs", [int(rid) if rid.isdigit() else rid]),
            break_transiently=lambda: server.fail_next(1, grpc.StatusCode.UNAVAILABLE),
            counts={"": COUNTS[""]},
        )
        case.seed()
        yield case
    local.close()


def case_pinecone(request, tmp_path) -> Iterator[Case]:
    from vec2pg.sources.pinecone import PineconeSource

    server = request.getfixturevalue("pinecone_server")
    server.create_index("docs", dimension=DIM, metric="euclidean")

    def put(records: list[Record]) -> None:
        for namespace in {r.namespace for r in records}:
            server.seed(
                "docs",
                namespace,
                [
                    {"id": r.id, "values": r.vectors[""].tolist(), "metadata": r.metadata}
                    for r in records
                    if r.namespace == namespace
                ],
            )

    case = Case(
        open=lambda collection="docs": PineconeSource(collection, api_key=PINECONE_KEY),
        cli=["pinecone", "docs", "--api-key", PINECONE_KEY],
        table="docs",
        namespaced=True,
        # Hex ids: splitting doc-00001-style ids would cost more probes than 2,400 records
        # allow (about 80 per character of their common prefix).
        source_id=lambda i: hashlib.sha1(str(i).encode()).hexdigest()[:16],
        put=put,
        delete=lambda ns, rid: server.delete("docs", ns, [rid]),
        break_transiently=lambda: server.fail_next(1, status=503),
        table_namespace=lambda ns: ns or "__default__",
    )
    case.seed()
    yield case


#: Every source's case: a factory here, or the import path of one in the source's tests.
CASES: dict[str, Callable[..., Iterator[Case]] | str] = {
    "elasticsearch": "test_search_sources:case_elasticsearch",
    "opensearch": "test_search_sources:case_opensearch",
    "qdrant-local": case_qdrant_local,
    "qdrant-rest": case_qdrant_rest,
    "qdrant-grpc": case_qdrant_grpc,
    "pinecone": case_pinecone,
    "s3vectors": "test_s3vectors:case_s3vectors",
    "supabase-vectors": "test_s3vectors:case_supabase",
    "weaviate": "test_weaviate:case_weaviate",
    "chroma": "test_chroma:case_chroma",
    "chroma-http": "test_chroma:case_chroma_http",
    "lancedb": "test_lancedb:case_lancedb",
    "milvus-lite": "test_milvus:case_milvus",
}


@pytest.fixture(params=list(CASES))
def case(request, tmp_path) -> Iterator[Case]:
    factory = CASES[request.param]
    if isinstance(factory, str):
        module, _, name = factory.partition(":")
        factory = getattr(importlib.import_module(module), name)
    yield from factory(request, tmp_path)


def direct(fn: Callable[..., Any], *args: Any) -> Any:
    """A ``call`` for Source.partitions without the pipeline's retries."""
    return fn(*args)


def walk(
    source: VerifiableSource,
    namespace: str,
    partition: str,
    cursor: Any = None,
    *,
    ids_only: bool = False,
) -> list[tuple[list[str], Any]]:
    """Every page of a chain from ``cursor``: its ids and the cursor after it."""
    pages = []
    while True:
        if ids_only:
            page = source.page_ids(namespace, partition, cursor)
            ids = page.ids if page.ids is not None else [r.id for r in page.load()]
        else:
            page = source.page(namespace, partition, cursor)
            ids = [record.id for record in page.load()]
        pages.append((ids, page.next_cursor))
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


def source_namespaces(source: VerifiableSource) -> dict[str, int | None]:
    return {ns.name: ns.count for ns in source.describe().namespaces}


def expected_ids(case: Case, namespace: str) -> set[str]:
    by_table = {case.table_namespace(ns): ns for ns in case.counts}
    return {rid for ns, rid in case.records if ns == by_table.get(namespace, namespace)}


def test_partitions_are_disjoint_and_cover_every_record(case: Case) -> None:
    source = case.open()
    try:
        namespaces = source_namespaces(source)
        split = False
        for namespace, count in namespaces.items():
            partitions = source.partitions(namespace, count, 8, direct)
            split = split or len(partitions) > 1
            seen: list[str] = []
            for partition in partitions:
                seen += [rid for ids, _ in walk(source, namespace, partition) for rid in ids]
            assert len(seen) == len(set(seen)), f"{namespace!r}: an id in two chains"
            assert set(seen) == expected_ids(case, namespace)
        if case.namespaced:  # Pinecone: its large namespace is split into id prefixes
            assert split
    finally:
        source.close()


def test_a_saved_cursor_resumes_exactly(case: Case) -> None:
    source = case.open()
    namespace, count = max(source_namespaces(source).items(), key=lambda item: item[1] or 0)
    # The longest chain of a split, or the whole namespace, which is a chain of every source.
    partitions = {*source.partitions(namespace, count, 8, direct), WHOLE}
    chains = {p: walk(source, namespace, p) for p in sorted(partitions)}
    partition, pages = max(chains.items(), key=lambda chain: len(chain[1]))
    source.close()
    assert len(pages) >= 3, "the chain must have pages to resume between"
    middle = len(pages) // 2
    cursor = pages[middle - 1][1]

    again = case.open()  # a new process, as a resumed run is: describe() comes first
    try:
        again.describe()
        resumed = walk(again, namespace, partition, cursor)
    finally:
        again.close()

    assert resumed == pages[middle:]


def test_page_ids_lists_the_ids_page_reads(case: Case) -> None:
    source = case.open()
    try:
        for namespace, count in source_namespaces(source).items():
            for partition in source.partitions(namespace, count, 8, direct):
                read = [rid for ids, _ in walk(source, namespace, partition) for rid in ids]
                listed = [
                    rid
                    for ids, _ in walk(source, namespace, partition, ids_only=True)
                    for rid in ids
                ]
                assert sorted(listed) == sorted(read)
    finally:
        source.close()


def test_fetch_returns_the_records_and_leaves_out_missing_ids(case: Case) -> None:
    source = case.open()
    try:
        namespace = next(iter(source_namespaces(source)))
        wanted = sorted(expected_ids(case, namespace))[:5]
        missing = "999999999" if not case.namespaced else "no-such-id"
        records = source.fetch(namespace, [*wanted, missing])
    finally:
        source.close()

    assert sorted(r.id for r in records) == wanted
    by_namespace = {case.table_namespace(ns): ns for ns in case.counts}
    for record in records:
        want = case.records[(by_namespace.get(namespace, namespace), record.id)]
        np.testing.assert_array_equal(record.vectors[case.vector], want.vectors[case.vector])
        assert record.metadata == want.metadata


def test_failures_are_sorted_into_transient_and_terminal(case: Case) -> None:
    source = case.open(collection="no-such-collection")
    try:
        with pytest.raises(SourceError) as missing:
            source.describe()
        assert not isinstance(missing.value, Transient), missing.value
    finally:
        source.close()
    if case.break_transiently is None:
        return  # an embedded engine: no network to fail
    source = case.open()
    try:
        namespace = next(iter(source_namespaces(source)))
        case.break_transiently()
        with pytest.raises(SourceError) as outage:
            source.page(namespace, WHOLE, None).load()
        assert isinstance(outage.value, Transient), outage.value
        assert source.page(namespace, WHOLE, None).load()  # the next request succeeds
    finally:
        source.close()


def assert_table_is(case: Case, target: Target) -> None:
    """The table's rows are the case's records, every field compared."""
    source = case.open()
    try:
        info = source.describe()
    finally:
        source.close()
    layout = layout_for(info, target.schema, case.table)
    # A source whose ids are all integers (Milvus's int64 keys) gets a bigint id column.
    with target.connect() as conn:
        id_type = column_types(conn, target.schema, case.table)["id"]
    assert id_type == ("bigint" if info.integer_ids else "text")
    rows = {
        (key[0], str(key[1])) if isinstance(key, tuple) else str(key): row
        for key, row in target.rows(case.table).items()
    }
    expected = {
        (case.table_namespace(ns), rid) if case.namespaced else rid: record
        for (ns, rid), record in case.records.items()
    }
    assert rows.keys() == expected.keys()
    for key, record in expected.items():
        row = rows[key]
        for column in layout.vectors:
            np.testing.assert_array_equal(row[column.name], record.vectors[column.field.name])
        assert row["metadata"] == record.metadata, key


def test_migrate_resync_with_prune_and_verify_round_trip(
    case: Case, target: Target, capsys
) -> None:
    assert target.cli(*case.cli, "--quiet") == 0, capsys.readouterr().err
    assert_table_is(case, target)

    first = canonical("", 0)
    gone = case.source_id(1)
    case.delete("", gone)
    del case.records[("", gone)]
    changed = Record(first.id, {"": first.vectors[""] + 1}, {"title": "changed"}, "")
    case.add([(changed, 0), (canonical("", 10_000), 10_000)])
    capsys.readouterr()

    assert target.cli(*case.cli, "--prune", "--json") == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert (summary["inserted"], summary["updated"], summary["deleted"]) == (1, 1, 1)
    assert_table_is(case, target)

    assert target.cli("verify", *case.cli, "--json") == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["source_count"] == len(case.records)
