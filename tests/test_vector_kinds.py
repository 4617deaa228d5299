"""Binary vectors (bit(n) columns, Hamming and Jaccard) and a source's own 16-bit vectors
(halfvec columns without --halfvec), through the shared sink, index builder and verify."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from psycopg import sql

from vec2pg.pipeline import Options, migrate
from vec2pg.postgres import PostgresSink
from vec2pg.records import Metric, Namespace, Record, SourceInfo, VectorField, VectorKind
from vec2pg.sources.base import WHOLE, Call, Page
from vec2pg.verify import verify

FIELDS = (
    VectorField("half", VectorKind.DENSE, 4, Metric.COSINE, half=True),
    VectorField("hamming", VectorKind.BINARY, 10, Metric.HAMMING),
    VectorField("jaccard", VectorKind.BINARY, 16, Metric.JACCARD),
)


def packed(i: int, bits: int) -> np.ndarray:
    """Record i's bits (deterministic, pad bits zero), packed first bit first."""
    rng = np.random.default_rng(i)
    return np.packbits(rng.integers(0, 2, bits, dtype=np.uint8))


class KindsSource:
    """``count`` records with a float16-held dense vector and two binary vectors."""

    def __init__(self, count: int, overrides: dict[str, dict[str, Any]] | None = None) -> None:
        self.count = count
        self.overrides = overrides or {}

    def describe(self) -> SourceInfo:
        return SourceInfo("kinds", "kinds", "memory", FIELDS, (Namespace("", self.count),), False)

    def partitions(
        self, namespace: str, count: int | None, want: int, call: Call
    ) -> tuple[str, ...]:
        return (WHOLE,)

    def records(self, ids: list[str]) -> list[Record]:
        out = []
        for rid in ids:
            i = int(rid)
            vectors: dict[str, Any] = {
                # float16 values, as a float16 source holds them
                "half": (np.arange(4, dtype=np.float32) / 3 + i)
                .astype(np.float16)
                .astype(np.float32),
                "hamming": packed(i, 10),
                "jaccard": packed(i + 1000, 16),
            }
            vectors.update(self.overrides.get(rid, {}))
            out.append(Record(rid, vectors, {"i": i}))
        return out

    def page(self, namespace: str, partition: str, cursor: Any) -> Page:
        start = int(cursor or 0)
        ids = [str(i) for i in range(start, min(start + 7, self.count))]
        nxt = start + 7 if start + 7 < self.count else None
        return Page(load=lambda: self.records(ids), next_cursor=nxt, size=len(ids), ids=ids)

    page_ids = page

    def fetch(self, namespace: str, ids: Any) -> list[Record]:
        return self.records([i for i in ids if int(i) < self.count])

    def close(self) -> None:
        pass


def test_binary_and_source_half_vectors_get_their_own_column_types(target) -> None:
    with PostgresSink(target.dsn, schema=target.schema, index="hnsw") as sink:
        summary = migrate(KindsSource(30), sink, Options(concurrency=2))

    assert summary.written == 30
    types = dict(
        target.query(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0",
            [f'"{target.schema}".kinds'],
        )
    )
    assert (types["half"], types["hamming"], types["jaccard"]) == (
        "halfvec(4)",
        "bit(10)",
        "bit(16)",
    )
    row = target.query(
        sql.SQL("SELECT half::text, hamming::text, jaccard::text FROM {} WHERE id = '5'").format(
            target.table("kinds")
        )
    )[0]
    want_half = (np.arange(4, dtype=np.float32) / 3 + 5).astype(np.float16)
    assert np.array_equal(np.array(row[0].strip("[]").split(","), dtype=np.float16), want_half)
    assert row[1] == "".join(map(str, np.unpackbits(packed(5, 10))[:10]))
    assert row[2] == "".join(map(str, np.unpackbits(packed(1005, 16))))
    opclasses = sorted(
        r[0]
        for r in target.query(
            "SELECT o.opcname FROM pg_index i JOIN pg_opclass o ON o.oid = i.indclass[0] "
            "WHERE i.indrelid = %s::regclass AND NOT i.indisprimary",
            [f'"{target.schema}".kinds'],
        )
    )
    assert opclasses == ["bit_hamming_ops", "bit_jaccard_ops", "halfvec_cosine_ops"]
    assert summary.indexes and len(summary.indexes) == 3


def test_verify_compares_bits_exactly(target) -> None:
    with PostgresSink(target.dsn, schema=target.schema) as sink:
        migrate(KindsSource(30), sink)

    ok = verify(KindsSource(30), target.dsn, schema=target.schema, sample=30)
    flipped = packed(3, 10).copy()
    flipped[1] ^= 0b0100_0000  # bit 9 of 10
    differs = verify(
        KindsSource(30, {"3": {"hamming": flipped}}), target.dsn, schema=target.schema, sample=30
    )

    assert ok.ok, ok.text()
    assert not differs.ok
    (mismatch,) = differs.namespaces[""].mismatched
    assert (mismatch.id, mismatch.field, mismatch.reason) == (
        "3",
        "hamming",
        "1 of 10 bits differ; the first at bit 9",
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (
            np.zeros(3, dtype=np.uint8),
            "vector 'hamming' is 3 uint8 values; a binary vector of 10 bits is 2 bytes",
        ),
        (
            np.zeros(2, dtype=np.float32),
            "vector 'hamming' is 2 float32 values; a binary vector of 10 bits is 2 bytes",
        ),
    ],
)
def test_a_binary_vector_of_the_wrong_size_is_a_bad_record(target, value, reason) -> None:
    from vec2pg.errors import InvalidRecord

    with PostgresSink(target.dsn, schema=target.schema) as sink:
        with pytest.raises(InvalidRecord) as caught:
            migrate(KindsSource(10, {"4": {"hamming": value}}), sink)
    assert str(caught.value) == f"record '4': {reason}"


def test_a_16_bit_source_value_beyond_halfvec_is_a_bad_record(target) -> None:
    from vec2pg.errors import InvalidRecord

    big = np.array([1.0, 2.0, 1e6, 3.0], dtype=np.float32)  # bfloat16 holds it, float16 not
    with PostgresSink(target.dsn, schema=target.schema) as sink:
        with pytest.raises(InvalidRecord) as caught:
            migrate(KindsSource(10, {"2": {"half": big}}), sink)
    assert str(caught.value) == (
        "record '2': vector 'half' contains 1000000.0, beyond halfvec's range (+-65,504): "
        "a 16-bit source vector is stored as one"
    )
