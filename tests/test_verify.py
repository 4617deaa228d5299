"""Verification: a migrated table compared with its source (Qdrant local mode, and the
real Pinecone SDK against tests/pinecone_server.py), then changed behind vec2pg's back."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import test_pinecone
from conftest import Target
from pinecone_server import PineconeServer
from psycopg import sql
from qdrant_data import open_local, seed_named, seed_unnamed
from test_pinecone import KEY, dense_records, upsert

from vec2pg.errors import ExitCode, TargetStateError
from vec2pg.records import SparseVector
from vec2pg.sources.pinecone import PineconeSource
from vec2pg.sources.qdrant import QdrantSource
from vec2pg.verify import VerifyReport, _json_difference, _Reservoir, _sparse_difference, verify

#: The fixture of tests/test_pinecone.py: Pinecone's wire format, served in this process.
server = test_pinecone.server


@dataclass
class Migrated:
    """A collection migrated into ``target``'s ``table``, and how to open its source."""

    target: Target
    table: str
    open_source: Callable[[], Any]
    namespace: str  # a namespace with records ("" when the table has none)
    namespaced: bool
    counts: dict[str, int]
    id_pages: list[int] = field(default_factory=list)  # ids per page_ids() call, last run

    def verify(self, **options: Any) -> VerifyReport:
        source = self.open_source()
        listed = source.page_ids
        self.id_pages = []

        def counting(*args: Any) -> Any:
            page = listed(*args)
            self.id_pages.append(len(page.ids))
            return page

        source.page_ids = counting
        try:
            return verify(
                source, self.target.dsn, schema=self.target.schema, table=self.table, **options
            )
        finally:
            source.close()

    def key(self, record_id: str) -> tuple[sql.Composable, list[str]]:
        """A WHERE clause for one row of ``namespace``, and its parameters."""
        if self.namespaced:
            return sql.SQL("namespace = %s AND id = %s"), [self.namespace, record_id]
        return sql.SQL("id = %s"), [record_id]

    def ids(self) -> list[str]:
        where = sql.SQL("namespace = %s") if self.namespaced else sql.SQL("%s = ''")
        return [
            r[0]
            for r in self.target.query(
                sql.SQL("SELECT id FROM {} WHERE {} ORDER BY id").format(
                    self.target.table(self.table), where
                ),
                [self.namespace],
            )
        ]

    def execute(self, statement: str, record_id: str, params: Sequence[Any] = ()) -> None:
        """Run ``statement`` (with ``{table}`` and ``{key}``) on the row of ``record_id``."""
        where, key_params = self.key(record_id)
        query = sql.SQL(statement).format(table=self.target.table(self.table), key=where)
        with self.target.connect() as conn:
            assert conn.execute(query, [*params, *key_params]).rowcount == 1


def run_sql(target: Target, statement: sql.Composable) -> None:
    with target.connect() as conn:
        conn.execute(statement)


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "qdrant"


def migrate_qdrant(storage: Path, target: Target, name: str, seed: Callable[..., None]) -> None:
    client = open_local(storage)
    seed(client, name)
    client.close()
    assert target.cli("qdrant", name, "--path", str(storage), "--quiet") == 0


def qdrant_source(storage: Path, name: str) -> Callable[[], QdrantSource]:
    # 64 ids a page: the 300 points span five pages.
    return lambda: QdrantSource(name, path=str(storage), ids_page_size=64)


@pytest.fixture(params=["qdrant", "pinecone"])
def migrated(request: pytest.FixtureRequest, target: Target, storage: Path) -> Migrated:
    """300 records with cosine vectors (Qdrant, mixed integer and UUID ids), or 250 + 30 in
    two namespaces with dense and sparse vectors (Pinecone: list pages of 100)."""
    if request.param == "qdrant":
        migrate_qdrant(storage, target, "docs", lambda c, n: seed_unnamed(c, n, 300, ids="mixed"))
        return Migrated(target, "docs", qdrant_source(storage, "docs"), "", False, {"": 300})
    server: PineconeServer = request.getfixturevalue("server")
    server.create_index("docs", dimension=16, metric="dotproduct")
    upsert(server, "docs", "tenant-a", dense_records(250, 16, sparse=True))
    upsert(server, "docs", "tenant-b", dense_records(30, 16, seed=1))
    assert target.cli("pinecone", "docs", "--api-key", KEY, "--quiet") == 0
    return Migrated(
        target,
        "docs",
        lambda: PineconeSource("docs", api_key=KEY),
        "tenant-a",
        True,
        {"tenant-a": 250, "tenant-b": 30},
    )


def counts(report: VerifyReport) -> dict[str, tuple[int, int]]:
    return {name: (c.source_count, c.target_count) for name, c in report.namespaces.items()}


def test_an_unchanged_table_verifies(migrated: Migrated) -> None:
    report = migrated.verify(sample=1000)

    assert report.ok, report.text()
    assert report.exit_code == ExitCode.OK
    assert counts(report) == {name: (n, n) for name, n in migrated.counts.items()}
    # Every record was compared field by field, and the ids came in several pages.
    assert {name: c.sampled for name, c in report.namespaces.items()} == migrated.counts
    assert len(migrated.id_pages) >= 4 and max(migrated.id_pages) < 300
    data = json.loads(json.dumps(report.as_dict()))
    assert data["ok"] is True
    total = sum(migrated.counts.values())
    assert data["source_count"] == data["target_count"] == data["sampled"] == total
    namespace = data["namespaces"][migrated.namespace]
    assert namespace["missing_in_target"] == {"count": 0, "ids": []}
    assert namespace["extra_in_target"] == {"count": 0, "ids": []}
    assert namespace["mismatched"] == []
    assert report.text().splitlines()[-1] == (
        f"OK: the table matches the source ({total} compared field by field)"
    )


def test_a_removed_row_is_missing(migrated: Migrated) -> None:
    gone = migrated.ids()[7]
    migrated.execute("DELETE FROM {table} WHERE {key}", gone)

    report = migrated.verify(sample=1000)

    assert not report.ok
    assert report.exit_code == ExitCode.DIFFERS == 8
    check = report.namespaces[migrated.namespace]
    n = migrated.counts[migrated.namespace]
    assert (check.source_count, check.target_count) == (n, n - 1)
    assert (check.missing_in_target.count, check.missing_in_target.ids) == (1, [gone])
    assert check.extra_in_target.count == 0
    assert (check.sampled, check.mismatched) == (n - 1, [])  # the missing one is not compared
    text = report.text().splitlines()
    assert f"1 missing in the table: {gone!r}" in "\n".join(text)
    assert text[-1].startswith(
        "DIFFERS: 1 missing in the table, 0 only in the table, 0 fields differ"
    )
    other = [c for name, c in report.namespaces.items() if name != migrated.namespace]
    assert all(c.ok for c in other)


def test_an_extra_row_in_the_table_is_reported(migrated: Migrated) -> None:
    copied = migrated.ids()[3]
    _insert_copy(migrated, copied, "zz-extra")

    report = migrated.verify(sample=1000)

    check = report.namespaces[migrated.namespace]
    n = migrated.counts[migrated.namespace]
    assert (check.source_count, check.target_count) == (n, n + 1)
    assert (check.extra_in_target.count, check.extra_in_target.ids) == (1, ["zz-extra"])
    assert check.missing_in_target.count == 0
    assert not report.ok
    assert report.as_dict()["extra_in_target"] == 1
    assert "1 only in the table: 'zz-extra'" in report.text()


def _insert_copy(migrated: Migrated, record_id: str, new_id: str) -> None:
    where, params = migrated.key(record_id)
    table = migrated.target.table(migrated.table)
    with migrated.target.connect() as conn:
        conn.execute(
            sql.SQL("CREATE TEMP TABLE copied AS SELECT * FROM {} WHERE {}").format(table, where),
            params,
        )
        conn.execute("UPDATE copied SET id = %s", [new_id])
        conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM copied").format(table))


def _vector_literal(values: np.ndarray) -> str:
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


def test_a_changed_vector_is_a_mismatch_on_that_field(migrated: Migrated) -> None:
    changed = migrated.ids()[11]
    where, params = migrated.key(changed)
    table = migrated.target.table(migrated.table)
    (text,) = migrated.target.query(
        sql.SQL("SELECT embedding::text FROM {} WHERE {}").format(table, where), params
    )[0]
    vector = np.array(json.loads(text), dtype=np.float32)
    vector[5] += 0.5
    migrated.execute(
        "UPDATE {table} SET embedding = %s::vector WHERE {key}", changed, [_vector_literal(vector)]
    )

    report = migrated.verify(sample=1000)

    check = report.namespaces[migrated.namespace]
    assert [(m.id, m.namespace, m.field) for m in check.mismatched] == [
        (changed, migrated.namespace, "embedding")
    ]
    reason = check.mismatched[0].reason
    assert reason.startswith("1 of 16 values differ; the largest difference at index 5: ")
    assert check.missing_in_target.count == check.extra_in_target.count == 0
    assert not report.ok
    assert report.as_dict()["namespaces"][migrated.namespace]["mismatched"] == [
        {"id": changed, "namespace": migrated.namespace, "field": "embedding", "reason": reason}
    ]
    assert f"{changed!r} embedding: 1 of 16 values differ" in report.text()


def test_changed_metadata_is_a_mismatch(migrated: Migrated) -> None:
    changed = migrated.ids()[2]
    migrated.execute(
        "UPDATE {table} SET metadata = jsonb_set(metadata, '{{title}}', '\"changed\"') WHERE {key}",
        changed,
    )

    report = migrated.verify(sample=1000)

    check = report.namespaces[migrated.namespace]
    assert [(m.id, m.field) for m in check.mismatched] == [(changed, "metadata")]
    assert check.mismatched[0].reason.startswith('$.title: source "')
    assert check.mismatched[0].reason.endswith(', table "changed"')
    assert report.exit_code == ExitCode.DIFFERS


def test_a_smaller_sample_compares_exactly_that_many(migrated: Migrated) -> None:
    report = migrated.verify(sample=25)

    assert report.ok
    assert {name: c.sampled for name, c in report.namespaces.items()} == {
        name: min(25, n) for name, n in migrated.counts.items()
    }
    assert migrated.verify(sample=0).as_dict()["sampled"] == 0


def test_cosine_vectors_normalised_or_scaled_in_the_table_still_match(
    storage: Path, target: Target
) -> None:
    migrate_qdrant(storage, target, "docs", lambda c, n: seed_unnamed(c, n, 120, ids="int"))
    migrated = Migrated(target, "docs", qdrant_source(storage, "docs"), "", False, {"": 120})
    table = target.table("docs")
    # What a Qdrant server returns for a cosine collection: the unit vectors.
    run_sql(target, sql.SQL("UPDATE {} SET embedding = l2_normalize(embedding)").format(table))

    assert migrated.verify(sample=1000).ok

    # Twice each vector (exact in float32): equal to the source once both are normalised.
    run_sql(target, sql.SQL("UPDATE {} SET embedding = embedding + embedding").format(table))
    assert migrated.verify(sample=1000).ok


def test_a_halfvec_column_is_compared_within_half_precision(storage: Path, target: Target) -> None:
    migrate_qdrant(storage, target, "docs", lambda c, n: seed_unnamed(c, n, 100, ids="int"))
    migrated = Migrated(target, "docs", qdrant_source(storage, "docs"), "", False, {"": 100})
    run_sql(
        target,
        sql.SQL(
            "ALTER TABLE {} ALTER COLUMN embedding TYPE halfvec(16) USING embedding::halfvec(16)"
        ).format(target.table("docs")),
    )

    assert migrated.verify(sample=1000).ok

    changed = migrated.ids()[4]
    migrated.execute(
        "UPDATE {table} SET embedding = (embedding::vector + %s::vector)::halfvec(16) WHERE {key}",
        changed,
        ["[" + ",".join(["0"] * 15 + ["0.25"]) + "]"],
    )
    report = migrated.verify(sample=1000)
    assert [(m.id, m.field) for m in report.namespaces[""].mismatched] == [(changed, "embedding")]
    assert "1 of 16 values differ; the largest difference at index 15" in report.text()


def test_named_sparse_and_multivectors_are_compared(storage: Path, target: Target) -> None:
    migrate_qdrant(storage, target, "mixed", lambda c, n: seed_named(c, n, 200, ids="mixed"))
    migrated = Migrated(target, "mixed", qdrant_source(storage, "mixed"), "", False, {"": 200})

    report = migrated.verify(sample=1000)
    assert report.ok, report.text()
    assert report.namespaces[""].sampled == 200
    # What --halfvec stores: dense vectors and multivectors' elements in half precision.
    run_sql(
        target,
        sql.SQL(
            "ALTER TABLE {} ALTER COLUMN text TYPE halfvec(12) USING text::halfvec(12), "
            "ALTER COLUMN colbert TYPE halfvec(4)[] USING colbert::halfvec(4)[]"
        ).format(target.table("mixed")),
    )
    assert migrated.verify(sample=1000).ok

    ids = migrated.ids()
    migrated.execute("UPDATE {table} SET keywords = '{{1:0.5,7:2}}/1000000000' WHERE {key}", ids[0])
    migrated.execute(
        "UPDATE {table} SET colbert = colbert || '[1,2,3,4]'::halfvec(4) WHERE {key}", ids[1]
    )
    migrated.execute("UPDATE {table} SET text = NULL WHERE {key}", ids[2])
    report = migrated.verify(sample=1000)

    found = {(m.id, m.field): m.reason for m in report.namespaces[""].mismatched}
    assert found.keys() == {(ids[0], "keywords"), (ids[1], "colbert"), (ids[2], "text")}
    assert found[(ids[0], "keywords")].startswith("non-zero indices differ: ")
    assert found[(ids[1], "colbert")].startswith("the source has ")
    assert found[(ids[2], "text")] == "the table holds NULL"


def test_pinecone_numbers_compare_as_json_values_and_ghost_namespaces_are_extra(
    server: PineconeServer, target: Target
) -> None:
    server.create_index("docs", dimension=8, metric="cosine")
    upsert(server, "docs", "", dense_records(120, 8))
    assert target.cli("pinecone", "docs", "--api-key", KEY, "--quiet") == 0
    migrated = Migrated(
        target, "docs", lambda: PineconeSource("docs", api_key=KEY), "__default__", True, {}
    )
    first = migrated.ids()[0]
    # Pinecone answers 2000.0 for the 2000 that was upserted; the table holds what it said.
    assert target.query(
        sql.SQL("SELECT metadata->'year' FROM {} WHERE id = %s").format(target.table("docs")),
        [first],
    ) == [(2000.0,)]
    migrated.execute(
        "UPDATE {table} SET metadata = metadata || '{{\"year\": 2000}}' WHERE {key}", first
    )
    _insert_copy(migrated, first, "ghost-1")
    run_sql(
        target,
        sql.SQL("UPDATE {} SET namespace = 'gone' WHERE id = 'ghost-1'").format(
            target.table("docs")
        ),
    )

    report = migrated.verify(sample=1000)

    assert report.namespaces["__default__"].ok
    gone = report.namespaces["gone"]
    assert (gone.source_count, gone.target_count) == (0, 1)
    assert (gone.extra_in_target.count, gone.extra_in_target.ids) == (1, ["ghost-1"])
    assert not report.ok
    # Restricted to the source's namespace, the table matches.
    assert migrated.verify(sample=10, namespaces=("__default__",)).ok


def test_transient_source_failures_are_retried(server: PineconeServer, target: Target) -> None:
    server.create_index("docs", dimension=8, metric="cosine")
    upsert(server, "docs", "ns", dense_records(150, 8))
    assert target.cli("pinecone", "docs", "--api-key", KEY, "--quiet") == 0
    server.fail_next(2, status=503, endpoint="list")
    server.fail_next(2, status=429, retry_after=0, endpoint="fetch")

    source = PineconeSource("docs", api_key=KEY)
    try:
        report = verify(source, target.dsn, schema=target.schema)
    finally:
        source.close()

    assert report.ok, report.text()
    # The SDK retries list by itself; vec2pg retries the fetches it makes over HTTP.
    assert server.status_counts[("list", 503)] == server.status_counts[("fetch", 429)] == 2
    assert report.retries >= 2
    assert report.namespaces["ns"].sampled == 100


def test_a_large_namespace_is_listed_in_parallel_prefixes(
    server: PineconeServer, target: Target
) -> None:
    server.create_index("big", dimension=4, metric="cosine")
    records = test_pinecone.hex_records(2500, 4, seed=9)
    upsert(server, "big", "ns", records)
    assert target.cli("pinecone", "big", "--api-key", KEY, "--quiet") == 0
    server.delete("big", "ns", [records[0]["id"]])
    server.reset_stats()

    source = PineconeSource("big", api_key=KEY)
    try:
        report = verify(source, target.dsn, schema=target.schema, concurrency=8, sample=50)
    finally:
        source.close()

    check = report.namespaces["ns"]
    assert (check.source_count, check.target_count) == (2499, 2500)
    assert (check.extra_in_target.count, check.extra_in_target.ids) == (1, [records[0]["id"]])
    assert check.sampled == 50
    assert server.count("list") > 25 + 16  # probes, and then 16+ chains


def test_a_missing_table_is_a_target_state_error(storage: Path, target: Target) -> None:
    client = open_local(storage)
    seed_unnamed(client, "docs", 10)
    client.close()
    source = QdrantSource("docs", path=str(storage))
    try:
        with pytest.raises(TargetStateError) as raised:
            verify(source, target.dsn, schema=target.schema)
    finally:
        source.close()
    assert str(raised.value) == (
        f'table "{target.schema}"."docs" does not exist in {target.dsn}: nothing to verify; '
        "migrate first, or name the table with --schema and --table"
    )
    assert raised.value.exit_code == ExitCode.TARGET_STATE


def test_a_table_of_another_source_is_a_target_state_error(storage: Path, target: Target) -> None:
    migrate_qdrant(storage, target, "docs", lambda c, n: seed_unnamed(c, n, 10))
    client = open_local(storage)
    seed_named(client, "mixed", 5)
    client.close()
    source = QdrantSource("mixed", path=str(storage))
    try:
        with pytest.raises(TargetStateError, match="was not migrated from this source"):
            verify(source, target.dsn, schema=target.schema, table="docs")
    finally:
        source.close()


# -- the comparisons themselves -----------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "stored", "reason"),
    [
        ({"year": 2020.0}, {"year": 2020}, None),
        ({"big": 1e300}, {"big": 10**300}, None),  # jsonb prints 1e300 as 301 digits
        ({"a": [1, {"b": None}]}, {"a": [1.0, {"b": None}]}, None),
        ({"flag": True}, {"flag": 1}, "$.flag: source true, table 1"),
        ({"n": 0}, {"n": False}, "$.n: source 0, table false"),
        ({"a": {"b c": "x"}}, {"a": {"b c": "y"}}, '$.a["b c"]: source "x", table "y"'),
        ({"a": 1}, {}, "$.a is missing in the table"),
        ({}, {"z": 1}, "$.z is only in the table"),
        ({"t": [1, 2]}, {"t": [1]}, "$.t has 2 items at the source, 1 in the table"),
        ({"s": "1"}, {"s": 1}, '$.s: source "1", table 1'),
    ],
)
def test_json_values_compare_as_json(source: Any, stored: Any, reason: str | None) -> None:
    assert _json_difference(source, stored, "$") == reason


class _StoredSparse:
    def __init__(self, entries: dict[int, float]) -> None:
        self._entries = dict(sorted(entries.items()))

    def indices(self) -> list[int]:
        return list(self._entries)

    def values(self) -> list[float]:
        return list(self._entries.values())


def test_sparse_vectors_compare_as_sorted_non_zero_entries() -> None:
    source = SparseVector(
        np.array([9, 2, 5], dtype=np.int64), np.array([1.5, 0.25, 0.0], dtype=np.float32)
    )
    assert _sparse_difference(source, _StoredSparse({2: 0.25, 9: 1.5})) is None
    assert _sparse_difference(source, _StoredSparse({2: 0.25, 9: 1.0})) == (
        "1 of 2 values differ; at index 9: source 1.5, table 1"
    )
    assert _sparse_difference(source, _StoredSparse({2: 0.25, 5: 1.0, 9: 1.5})) == (
        "non-zero indices differ: 0 only at the source [], 1 only in the table [5]"
    )


def test_the_reservoir_samples_uniformly_from_pages() -> None:
    hits = dict.fromkeys(range(1000), 0)
    for seed in range(400):
        reservoir = _Reservoir(50, random.Random(seed))
        stream = [str(i) for i in range(1000)]
        for start in range(0, 1000, 77):
            reservoir.add(stream[start : start + 77])
        assert reservoir.seen == 1000
        assert len(set(reservoir.items)) == 50
        for item in reservoir.items:
            hits[int(item)] += 1
    # Each item is kept with probability 1/20: 20 times in 400 runs, give or take.
    assert min(hits.values()) > 3 and max(hits.values()) < 45
    first, last = sum(hits[i] for i in range(500)), sum(hits[i] for i in range(500, 1000))
    assert abs(first - last) < 0.15 * (first + last)


def test_a_small_stream_is_kept_whole() -> None:
    reservoir = _Reservoir(100, random.Random(1))
    reservoir.add(["a", "b"])
    reservoir.add([])
    reservoir.add(["c"])
    assert (reservoir.items, reservoir.seen) == (["a", "b", "c"], 3)
    empty = _Reservoir(0, random.Random(1))
    empty.add(["a"])
    assert (empty.items, empty.seen) == ([], 1)


def test_verify_from_the_command_line_and_after_a_migration(tmp_path, target, capsys) -> None:
    from qdrant_data import open_local, seed_named

    from vec2pg.cli import main

    storage = tmp_path / "cli"
    client = open_local(storage)
    seed_named(client, "docs", 200)
    client.close()
    code = target.cli("qdrant", "docs", "--path", str(storage), "--verify", "--json")
    assert code == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    assert (result["written"], result["verify"]["ok"]) == (200, True)

    verify = [
        "verify",
        "qdrant",
        "docs",
        "--path",
        str(storage),
        "--dsn",
        target.dsn,
        "--schema",
        target.schema,
    ]
    assert main(verify) == 0
    assert (
        capsys.readouterr()
        .out.strip()
        .splitlines()[-1]
        .startswith("OK: the table matches the source")
    )

    with target.connect() as conn:
        conn.execute(
            f'DELETE FROM "{target.schema}".docs WHERE id = (SELECT min(id) FROM "{target.schema}".docs)'
        )
    assert main(verify) == ExitCode.DIFFERS
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("DIFFERS")
    assert main([*verify, "--json"]) == ExitCode.DIFFERS
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["namespaces"][""]["missing_in_target"]["count"] == 1
