"""Indexes after the load (vec2pg.postgres.index) and halfvec storage, on real PostgreSQL.

Tables come from a real migration of a Qdrant local collection where the source matters
(operator classes, nearest-neighbour answers), and straight from SQL where only the table
does (progress on a table big enough to watch, halfvec until the sink is told to write it).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

try:
    from pgvector import HalfVector
except ImportError:  # pgvector 0.3, which vecs pins, keeps it in pgvector.utils
    from pgvector.utils import HalfVector
from pgvector.psycopg import register_vector
from psycopg import sql
from qdrant_client import models as m
from qdrant_data import open_local, seed_named

from vec2pg.errors import ConfigError, ExitCode
from vec2pg.pipeline import migrate
from vec2pg.postgres import index as index_module
from vec2pg.postgres.index import (
    NotIndexable,
    build_index,
    check_indexable,
    index_name,
    ivfflat_lists,
)
from vec2pg.postgres.layout import TableLayout, layout_for
from vec2pg.postgres.sink import PostgresSink
from vec2pg.records import Metric, Namespace, SourceInfo, VectorField, VectorKind
from vec2pg.sources.qdrant import QdrantSource

DISTANCES = {
    "cosine": (m.Distance.COSINE, "cosine_ops", "<=>"),
    "dot": (m.Distance.DOT, "ip_ops", "<#>"),
    "euclid": (m.Distance.EUCLID, "l2_ops", "<->"),
    "manhattan": (m.Distance.MANHATTAN, "l1_ops", "<+>"),
}
HNSW_NAME = re.compile(r"^ix_vector_(cosine|ip|l2|l1)_ops_hnsw_m16_efc64_[0-9a-f]{8}$")
IVFFLAT_NAME = re.compile(r"^ix_vector_(cosine|ip|l2)_ops_ivfflat_nl\d+_[0-9a-f]{8}$")


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "qdrant"


def seed(storage: Path, name: str, distance: m.Distance, n: int, dim: int, seed: int = 3) -> None:
    """A Qdrant local collection of ``n`` random points of one unnamed vector."""
    rng = np.random.default_rng(seed)
    client = open_local(storage)
    try:
        client.create_collection(name, vectors_config=m.VectorParams(size=dim, distance=distance))
        points = [
            m.PointStruct(id=i, vector=rng.standard_normal(dim).tolist(), payload={"n": i})
            for i in range(n)
        ]
        for start in range(0, n, 500):
            client.upsert(name, points[start : start + 500])
    finally:
        client.close()


@contextmanager
def migrated(target, storage: Path, name: str, **sink_options: Any) -> Iterator[PostgresSink]:
    """Migrate the collection through the real sink; yield the sink, still connected."""
    with PostgresSink(target.dsn, schema=target.schema, **sink_options) as sink:
        with closing(QdrantSource(name, path=str(storage))) as source:
            migrate(source, sink)
        yield sink


def indexes(target, table: str) -> dict[str, tuple[str, str, str, str]]:
    """Each index on the table: (method, column, operator class, options), by name.

    Read from the catalog: pg_indexes' definition leaves out an access method's default
    operator class (ivfflat's vector_l2_ops).
    """
    rows = target.query(
        "SELECT c.relname, am.amname, a.attname, o.opcname, array_to_string(c.reloptions, ',') "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_am am ON am.oid = c.relam JOIN pg_opclass o ON o.oid = i.indclass[0] "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
        "WHERE i.indrelid = %s::regclass AND NOT i.indisprimary",
        [f'"{target.schema}"."{table}"'],
    )
    return {
        name: (method, column, opclass, options) for name, method, column, opclass, options in rows
    }


def as_array(text: str) -> np.ndarray:
    """A vector's text form (``[1,2.5,...]``, pgvector prints it exactly) as float32."""
    return np.array(json.loads(text), dtype=np.float32)


def analyses(target, table: str, at_least: int) -> int:
    """ANALYZE runs on the table (not autovacuum's), once the statistics show ``at_least``."""
    deadline = time.monotonic() + 10  # backends report their statistics within a second
    while True:
        (count,) = target.query(
            "SELECT analyze_count FROM pg_stat_user_tables WHERE schemaname = %s AND relname = %s",
            [target.schema, table],
        )[0]
        if count >= at_least or time.monotonic() > deadline:
            return int(count)
        time.sleep(0.1)


def dense_info(name: str, dim: int, metric: Metric = Metric.EUCLIDEAN) -> SourceInfo:
    return SourceInfo(
        kind="test",
        collection=name,
        location="memory",
        fields=(VectorField("", VectorKind.DENSE, dim, metric),),
        namespaces=(Namespace("", None),),
        namespaced=False,
    )


def create_table(conn: psycopg.Connection[Any], layout: TableLayout) -> None:
    """Create the table as the sink does: typed columns, each vector's JSON comment."""
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(layout.schema)))
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t))
        for c, t in zip(layout.column_names, layout.sql_types, strict=True)
    )
    conn.execute(sql.SQL("CREATE TABLE {} ({})").format(layout.qualified, columns))
    for vector in layout.vectors:
        conn.execute(
            sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
                layout.qualified, sql.Identifier(vector.name), sql.Literal(vector.comment("test"))
            )
        )


def copy_rows(conn: psycopg.Connection[Any], layout: TableLayout, rows: list[list[Any]]) -> None:
    """Binary COPY of pgvector's own objects (not the sink's encoder), typed by column."""
    register_vector(conn)
    columns = sql.SQL(", ").join(map(sql.Identifier, layout.column_names))
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(layout.qualified, columns)
    with conn.cursor().copy(statement) as copy:
        copy.set_types(
            [t.split("(")[0] + ("[]" if t.endswith("[]") else "") for t in layout.sql_types]
        )
        for row in rows:
            copy.write_row(row)


# -- layout ----------------------------------------------------------------------------


def test_halfvec_layout_types_and_comment() -> None:
    info = SourceInfo(
        kind="qdrant",
        collection="docs",
        location="memory",
        fields=(
            VectorField("", VectorKind.DENSE, 3000, Metric.COSINE),
            VectorField("colbert", VectorKind.MULTI, 128, Metric.DOT),
            VectorField("keywords", VectorKind.SPARSE, None, Metric.DOT),
        ),
        namespaces=(Namespace("", 1),),
        namespaced=False,
    )

    half = layout_for(info, "vec2pg", None, halfvec=True)
    full = layout_for(info, "vec2pg", None)

    assert half.sql_types == [
        "text",
        "halfvec(3000)",
        "halfvec(128)[]",
        "sparsevec(1000000000)",
        "jsonb",
    ]
    assert full.sql_types[1:4] == ["vector(3000)", "vector(128)[]", "sparsevec(1000000000)"]
    storages = [json.loads(c.comment("qdrant"))["vec2pg"]["storage"] for c in half.vectors]
    assert storages == ["halfvec", "halfvec", "sparsevec"]
    assert json.loads(full.vectors[0].comment("qdrant"))["vec2pg"] == {
        "source": "qdrant",
        "vector": "",
        "kind": "dense",
        "dim": 3000,
        "metric": "cosine",
        "storage": "vector",
    }


# -- halfvec storage -------------------------------------------------------------------


def test_halfvec_round_trip_within_float16_precision(target) -> None:
    layout = layout_for(
        SourceInfo(
            kind="test",
            collection="half",
            location="memory",
            fields=(
                VectorField("", VectorKind.DENSE, 64, Metric.COSINE),
                VectorField("multi", VectorKind.MULTI, 8, Metric.DOT),
            ),
            namespaces=(Namespace("", None),),
            namespaced=False,
        ),
        target.schema,
        None,
        halfvec=True,
    )
    rng = np.random.default_rng(7)
    dense = (rng.standard_normal((50, 64)) * 100).astype(np.float32)
    dense[0, :3] = [65504.0, -65504.0, 1e-8]  # the largest float16, and one that underflows
    multi = rng.standard_normal((50, 3, 8)).astype(np.float32)

    with target.connect() as conn:
        create_table(conn, layout)
        # pgvector's HalfVector is what its binary halfvec dumper sends (a numpy array has
        # no halfvec dumper; it would go out as vector and fail).
        copy_rows(
            conn,
            layout,
            [
                [str(i), HalfVector(dense[i]), [HalfVector(v) for v in multi[i]], None]
                for i in range(50)
            ],
        )

    rows = target.query(
        sql.SQL("SELECT id::int, embedding::text, multi::text FROM {} ORDER BY 1").format(
            target.table("half")
        )
    )
    assert [r[0] for r in rows] == list(range(50))
    for i, embedding, stored_multi in rows:
        got = as_array(embedding)
        # Exactly the float16 rounding of each value: about 3 significant digits.
        np.testing.assert_array_equal(got, dense[i].astype(np.float16))
        np.testing.assert_allclose(got, dense[i], rtol=1e-3, atol=1e-7)
        elements = re.findall(r"\[[^\]]*\]", stored_multi)
        for g, w in zip(elements, multi[i], strict=True):
            np.testing.assert_array_equal(as_array(g), w.astype(np.float16))


@pytest.mark.parametrize("value", [65520.0, -70000.0, 3.0e38])
def test_a_value_beyond_float16_is_refused_by_pgvector_not_stored_as_infinity(
    target, value
) -> None:
    """What encode.py must check first: float32 values from 65,520 on (65,504 is the largest
    float16) become infinity when cast, and pgvector refuses the COPY as a whole."""
    layout = layout_for(dense_info("over", 3), target.schema, None, halfvec=True)
    vector = np.array([1.0, value, 0.5], dtype=np.float32)
    with pytest.warns(RuntimeWarning, match="overflow"):
        half = HalfVector(vector)

    with target.connect() as conn:
        create_table(conn, layout)
        with pytest.raises(psycopg.errors.DataException, match="infinite value not allowed"):
            copy_rows(conn, layout, [["1", half, None]])

    assert target.query(sql.SQL("SELECT count(*) FROM {}").format(target.table("over"))) == [(0,)]
    assert np.float16(np.float32(65519.0)) == np.float16(65504.0)  # rounds down, still finite


def test_the_sink_writes_halfvec_from_numpy_arrays(storage, target) -> None:
    seed(storage, "docs", m.Distance.EUCLID, 200, 16)

    with migrated(target, storage, "docs", halfvec=True) as sink:
        assert sink.layout is not None
        assert build_index(sink.conn, sink.layout, "hnsw")

    client = open_local(storage)
    points, _ = client.scroll("docs", limit=1000, with_vectors=True)
    client.close()
    rows = target.rows("docs")
    for p in points:
        want = np.asarray(p.vector, dtype=np.float32)
        np.testing.assert_array_equal(rows[str(p.id)]["embedding"], want.astype(np.float16))
    ((_, _, opclass, _),) = indexes(target, "docs").values()
    assert opclass == "halfvec_l2_ops"


# -- operator classes ------------------------------------------------------------------


@pytest.mark.parametrize("distance", list(DISTANCES))
def test_hnsw_index_has_the_operator_class_of_the_metric_and_the_table_is_analysed(
    storage, target, distance
) -> None:
    qdrant_distance, ops, _ = DISTANCES[distance]
    seed(storage, "docs", qdrant_distance, 300, 8)
    events: list[tuple[str, int, int]] = []

    with migrated(target, storage, "docs") as sink:
        assert sink.layout is not None
        built = build_index(
            sink.conn,
            sink.layout,
            "hnsw",
            dsn=target.dsn,
            on_progress=lambda *event: events.append(event),
        )

    assert len(built) == 1 and HNSW_NAME.match(built[0]), built
    assert indexes(target, "docs") == {
        built[0]: ("hnsw", "embedding", f"vector_{ops}", "m=16,ef_construction=64")
    }
    assert events[-1] == ("embedding: done", 300, 300)
    # The sink analyses after the load, build_index once more after the index.
    assert analyses(target, "docs", 2) == 2


def test_a_run_with_index_analyses_the_table_once_after_the_build(storage, target) -> None:
    """Load, index, then ANALYZE (pgvector's advice), once: not after the load as well."""
    seed(storage, "docs", m.Distance.COSINE, 300, 8)

    with migrated(target, storage, "docs", index="hnsw"):
        pass

    assert len(indexes(target, "docs")) == 1
    assert analyses(target, "docs", 1) == 1
    time.sleep(1.5)  # any second ANALYZE would have been reported by now
    assert analyses(target, "docs", 1) == 1


@pytest.mark.parametrize("distance", ["cosine", "dot", "euclid"])
def test_ivfflat_index_has_the_operator_class_and_lists_by_row_count(
    storage, target, distance
) -> None:
    qdrant_distance, ops, _ = DISTANCES[distance]
    seed(storage, "docs", qdrant_distance, 2500, 4)

    with migrated(target, storage, "docs") as sink:
        assert sink.layout is not None
        built = build_index(sink.conn, sink.layout, "ivfflat")

    assert len(built) == 1 and IVFFLAT_NAME.match(built[0]), built
    assert "_nl2_" in built[0]  # 2,500 rows / 1,000
    assert indexes(target, "docs") == {
        built[0]: ("ivfflat", "embedding", f"vector_{ops}", "lists=2")
    }


def test_ivfflat_lists_follow_pgvectors_advice() -> None:
    assert [ivfflat_lists(n) for n in (0, 999, 2500, 1_000_000, 4_000_000, 10**10)] == [
        1,
        1,
        2,
        1000,
        2000,
        32_768,
    ]


def test_ivfflat_skips_a_manhattan_column_with_a_note(storage, target) -> None:
    seed(storage, "docs", m.Distance.MANHATTAN, 50, 4)
    notes: list[str] = []

    with migrated(target, storage, "docs") as sink:
        assert sink.layout is not None
        assert build_index(sink.conn, sink.layout, "ivfflat", on_note=notes.append) == []

    assert notes == [
        f'"{target.schema}"."docs".embedding is not indexed: '
        "ivfflat has no manhattan (L1) operator class; use --index hnsw"
    ]
    assert indexes(target, "docs") == {}


@pytest.mark.parametrize(
    ("method", "expected", "skipped"),
    [
        (
            "hnsw",
            {
                "text": "vector_cosine_ops",
                "image": "vector_l2_ops",
                "manhattan": "vector_l1_ops",
                "keywords": "sparsevec_ip_ops",
            },
            ["colbert"],
        ),
        (
            "ivfflat",
            {"text": "vector_cosine_ops", "image": "vector_l2_ops"},
            ["manhattan", "colbert", "keywords"],
        ),
    ],
)
def test_named_vectors_get_one_index_each_and_multivectors_are_skipped(
    storage, target, method, expected, skipped
) -> None:
    client = open_local(storage)
    seed_named(client, "mixed", 400)
    client.close()
    notes: list[str] = []
    notes_again: list[str] = []

    with migrated(target, storage, "mixed") as sink:
        assert sink.layout is not None
        built = build_index(sink.conn, sink.layout, method, on_note=notes.append)
        again = build_index(sink.conn, sink.layout, method, on_note=notes_again.append)

    found = indexes(target, "mixed")
    assert sorted(found) == sorted(built) and len(built) == len(expected)
    columns = [(column, opclass) for _, column, opclass, _ in found.values()]
    assert dict(columns) == expected
    assert {method_ for method_, *_ in found.values()} == {method}
    table = f'"{target.schema}"."mixed"'
    assert [n.split(" is not indexed: ")[0] for n in notes] == [f"{table}.{c}" for c in skipped]
    assert (
        f"{table}.colbert is not indexed: it is a multivector (an array of vectors), and pgvector cannot index arrays"
        in notes
    )
    # A second run finds every index in place and builds nothing.
    assert again == []
    assert sorted(notes_again) == sorted(
        notes
        + [
            f"{table}.{c} is already indexed by {n}"
            for (c, _), n in zip(columns, found, strict=True)
        ]
    )


def test_a_sparse_column_with_over_1000_non_zeros_is_skipped_and_the_rest_indexed(target) -> None:
    info = SourceInfo(
        kind="test",
        collection="sparse",
        location="memory",
        fields=(
            VectorField("", VectorKind.DENSE, 3, Metric.COSINE),
            VectorField("keywords", VectorKind.SPARSE, None, Metric.DOT),
        ),
        namespaces=(Namespace("", None),),
        namespaced=False,
    )
    layout = layout_for(info, target.schema, None)
    wide = "{" + ",".join(f"{i}:1" for i in range(1, 1002)) + "}/1000000000"
    with target.connect() as conn:
        create_table(conn, layout)
        conn.execute(
            sql.SQL(
                "INSERT INTO {} VALUES ('a', '[1,2,3]', '{{1:1}}/1000000000', NULL), "
                "('b', '[3,2,1]', %s, NULL)"
            ).format(layout.qualified),
            [wide],
        )
    notes: list[str] = []

    with psycopg.connect(target.dsn) as conn:
        built = build_index(conn, layout, "hnsw", on_note=notes.append)

    assert [i[:3] for i in indexes(target, "sparse").values()] == [
        ("hnsw", "embedding", "vector_cosine_ops")
    ]
    assert len(built) == 1
    assert notes == [
        f'"{target.schema}"."sparse".keywords is not indexed: some values have more than '
        "1,000 non-zero entries, pgvector's limit for indexing sparsevec"
    ]


def test_index_names_are_short_and_distinct_per_table_and_column() -> None:
    names = set()
    for table in ("docs", "x" * 63):
        layout = layout_for(dense_info(table, 8), "s", None)
        for column in ("embedding", "text"):
            for method, lists in (("hnsw", 0), ("ivfflat", 32_768)):
                name = index_name(layout, column, "sparsevec_cosine_ops", method, lists)  # type: ignore[arg-type]
                assert len(name.encode()) <= 63
                names.add(name)
    assert len(names) == 8


# -- dimensions ------------------------------------------------------------------------


def test_too_many_dimensions_for_vector_names_halfvec(storage, target) -> None:
    seed(storage, "wide", m.Distance.COSINE, 5, 3000)

    with migrated(target, storage, "wide") as sink:
        assert sink.layout is not None
        with pytest.raises(NotIndexable) as raised:
            check_indexable(sink.layout, "hnsw")
        with pytest.raises(NotIndexable) as built:
            build_index(sink.conn, sink.layout, "hnsw")

    message = (
        f'cannot build an hnsw index on "{target.schema}"."wide".embedding: vector(3000) has '
        "more than 2,000 dimensions, pgvector's limit for indexing vector; add --halfvec to "
        "store it as halfvec (float16, about 3 significant digits), which pgvector indexes "
        "up to 4,000 dimensions"
    )
    assert str(raised.value) == str(built.value) == message
    assert isinstance(built.value, ConfigError) and built.value.exit_code == ExitCode.USAGE
    assert (built.value.column, built.value.dim, built.value.limit) == ("embedding", 3000, 2000)
    assert indexes(target, "wide") == {}


def test_halfvec_indexes_3000_dimensions_but_not_5000(target) -> None:
    layout = layout_for(dense_info("wide", 3000), target.schema, None, halfvec=True)
    check_indexable(layout, "hnsw")
    check_indexable(layout, "ivfflat")
    rng = np.random.default_rng(5)
    with target.connect() as conn:
        create_table(conn, layout)
        copy_rows(
            conn,
            layout,
            [
                [str(i), HalfVector(rng.standard_normal(3000).astype(np.float32)), None]
                for i in range(20)
            ],
        )
    with psycopg.connect(target.dsn) as conn:
        built = build_index(conn, layout, "hnsw")
    assert len(built) == 1 and built[0].startswith("ix_halfvec_l2_ops_hnsw_m16_efc64_")

    too_wide = layout_for(dense_info("wider", 5000), target.schema, None, halfvec=True)
    with pytest.raises(
        NotIndexable, match=r"halfvec\(5000\) has more than 4,000 dimensions.*leave out --index"
    ):
        check_indexable(too_wide, "ivfflat")


def test_unknown_method_is_a_usage_error(target) -> None:
    layout = layout_for(dense_info("docs", 3), target.schema, None)
    with pytest.raises(ConfigError, match="unknown index method 'flat': choose hnsw or ivfflat"):
        check_indexable(layout, "flat")  # type: ignore[arg-type]


# -- progress --------------------------------------------------------------------------


def big_table(target, rows: int, dim: int = 64) -> TableLayout:
    """A table of ``rows`` random vectors, made in SQL: big enough to watch build."""
    layout = layout_for(dense_info("big", dim, Metric.COSINE), target.schema, None)
    with target.connect() as conn:
        create_table(conn, layout)
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (id, embedding) SELECT g::text, "
                "(SELECT array_agg(random() - 0.5) FROM generate_series(1, %s) WHERE g > 0)::vector "
                "FROM generate_series(1, %s) g"
            ).format(layout.qualified),
            [dim, rows],
        )
        conn.execute(sql.SQL("ANALYZE {}").format(layout.qualified))
    return layout


def _spills(notes: list[str]) -> list[str]:
    return [n for n in notes if "no longer fits into maintenance_work_mem" in n]


def test_build_memory_follows_the_dimension_not_the_column_statistics(target) -> None:
    # 768 dimensions are stored out of line (TOAST): PostgreSQL's statistics say a value is
    # some 18 bytes, and a build sized by them spilled to disk (issue 12: 30,000 x 768 took
    # 236 s against 85 s in memory). 10,000 rows need about 38 MB; the session has 1 MB.
    layout = big_table(target, 10_000, dim=768)
    with target.connect() as conn:
        width = conn.execute(
            "SELECT avg_width FROM pg_stats WHERE schemaname = %s AND tablename = 'big' "
            "AND attname = 'embedding'",
            [target.schema],
        ).fetchone()
    assert width is not None and width[0] < 100  # the statistics' view of a 3 kB value
    notes: list[str] = []

    with psycopg.connect(target.dsn, options="-c maintenance_work_mem=1MB") as conn:
        built = build_index(conn, layout, "hnsw", on_note=notes.append)

    assert len(built) == 1
    assert _spills(notes) == []


def test_a_build_that_spills_to_disk_says_so_in_pgvectors_words(target, monkeypatch) -> None:
    # A server that cannot give the build what it needs (here: a ceiling of 1 MB).
    monkeypatch.setattr(index_module, "MAX_WORK_MEM_CEILING", 1 << 20)
    monkeypatch.setattr(index_module, "MAX_WORK_MEM_FLOOR", 1 << 20)
    layout = big_table(target, 3_000, dim=768)
    notes: list[str] = []

    with psycopg.connect(target.dsn, options="-c maintenance_work_mem=1MB") as conn:
        build_index(conn, layout, "hnsw", on_note=notes.append)

    assert len(_spills(notes)) == 1, notes
    assert _spills(notes)[0].startswith(f"{layout.display}.embedding: hnsw graph no longer fits")


def test_progress_is_polled_from_a_second_connection_while_hnsw_builds(target) -> None:
    layout = big_table(target, 12_000)
    events: list[tuple[str, int, int]] = []

    with psycopg.connect(target.dsn) as conn:
        built = build_index(
            conn, layout, "hnsw", dsn=target.dsn, on_progress=lambda *e: events.append(e)
        )

    assert len(built) == 1
    during = [e for e in events if e[0] == "embedding: loading tuples"]
    assert during, events
    assert all(0 <= done <= total and total > 0 for _, done, total in during), during
    assert events[-1] == ("embedding: done", 12_000, 12_000)


def test_an_interrupted_build_is_cancelled_and_leaves_no_index(target) -> None:
    layout = big_table(target, 12_000)

    class Interrupted(BaseException):
        pass

    def interrupt(phase: str, done: int, total: int) -> None:
        raise Interrupted  # as Ctrl-C would, while the build runs

    started = time.monotonic()
    with psycopg.connect(target.dsn) as conn:
        with pytest.raises(Interrupted):
            build_index(conn, layout, "hnsw", dsn=target.dsn, on_progress=interrupt)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.execute("SELECT 1").fetchone() == (1,)

    assert time.monotonic() - started < 3  # cancelled, not waited for (a build takes ~4 s)
    assert indexes(target, "big") == {}
    assert target.query(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'vec2pg-progress'"
    ) == [(0,)]


# -- the acceptance test: the index answers like Qdrant --------------------------------


@pytest.mark.parametrize(
    ("method", "distance"),
    [
        ("hnsw", "cosine"),
        ("hnsw", "euclid"),
        ("hnsw", "dot"),
        ("hnsw", "manhattan"),
        ("ivfflat", "cosine"),
        ("ivfflat", "euclid"),
    ],
)
def test_nearest_neighbour_through_the_index_matches_qdrants_own_search(
    storage, target, method, distance
) -> None:
    qdrant_distance, _, operator = DISTANCES[distance]
    seed(storage, "docs", qdrant_distance, 400, 16, seed=11)

    with migrated(target, storage, "docs") as sink:
        assert sink.layout is not None
        (name,) = build_index(sink.conn, sink.layout, method)

    queries = np.random.default_rng(12).standard_normal((6, 16)).astype(np.float32)
    # Qdrant's own search, on a client opened on the storage after the migration: local mode
    # returns cosine vectors unnormalised once reopened, and normalises them when it searches.
    client = open_local(storage)
    try:
        expected = [
            str(client.query_points("docs", query=q.tolist(), limit=1).points[0].id)
            for q in queries
        ]
    finally:
        client.close()

    search = sql.SQL("SELECT id FROM {} ORDER BY embedding {} %s::vector LIMIT 1").format(
        target.table("docs"), sql.SQL(operator)
    )
    with target.connect() as conn:
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET hnsw.ef_search = 200")  # exact at this size
        conn.execute("SET ivfflat.probes = 1000")  # every list: exact
        plan = "\n".join(
            r[0] for r in conn.execute(sql.SQL("EXPLAIN ") + search, [str(queries[0].tolist())])
        )
        assert f"Index Scan using {name}" in plan, plan
        got = [conn.execute(search, [str(q.tolist())]).fetchone()[0] for q in queries]  # type: ignore[index]

    assert got == expected


def test_index_and_halfvec_from_the_command_line(storage, target, capsys) -> None:
    """A collection too wide for an index stops before loading and names --halfvec; with
    --halfvec it loads and indexes; a value halfvec cannot hold names its record."""
    seed(storage, "wide", m.Distance.COSINE, 40, 2500)

    code = target.cli("qdrant", "wide", "--path", str(storage), "--index", "hnsw")

    assert code == 2
    assert "--halfvec" in capsys.readouterr().err.strip().splitlines()[-1]
    assert target.query(
        "SELECT count(*) FROM pg_namespace WHERE nspname = %s", [target.schema]
    ) == [(0,)]

    code = target.cli(
        "qdrant", "wide", "--path", str(storage), "--index", "hnsw", "--halfvec", "--json"
    )

    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["written"] == 40 and len(summary["indexes"]) == 1
    assert target.query(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'embedding'",
        [f'"{target.schema}"."wide"'],
    ) == [("halfvec(2500)",)]


def test_a_value_beyond_halfvec_names_its_record(tmp_path, target, capsys) -> None:
    client = open_local(tmp_path / "q")
    client.create_collection(
        "big", vectors_config=m.VectorParams(size=2, distance=m.Distance.EUCLID)
    )
    client.upsert(
        "big", [m.PointStruct(id=1, vector=[1.0, 2.0]), m.PointStruct(id=2, vector=[70000.0, 1.0])]
    )
    client.close()

    assert target.cli("qdrant", "big", "--path", str(tmp_path / "q"), "--halfvec") == 6
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "vec2pg: error: record '2': the vector contains 70000.0, beyond halfvec's range (+-65,504): "
        "store it without --halfvec"
    )
