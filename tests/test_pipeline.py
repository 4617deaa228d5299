"""The pipeline and the shared sink with a fake source (the pipeline's own unit tests).

The sink is real: every test writes to PostgreSQL and checks what is there afterwards.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import threading
import time
from functools import partial
from typing import Any

import numpy as np
import pytest

from vec2pg.errors import ExitCode, InvalidRecord, SourceUnavailable, Vec2pgError
from vec2pg.pipeline import Options, RetryPolicy, migrate
from vec2pg.postgres import PostgresSink
from vec2pg.records import (
    Cursor,
    Metric,
    Namespace,
    Record,
    SourceInfo,
    SparseVector,
    VectorField,
    VectorKind,
)
from vec2pg.sources.base import WHOLE, Call, Page, Raw

DIM = 4


def dense(i: int) -> np.ndarray:
    return np.arange(DIM, dtype=np.float32) + i


class FakeSource:
    """Namespaces of ``per_namespace`` records in pages of ``page_size``; loads can sleep."""

    def __init__(
        self,
        namespaces: dict[str, int],
        page_size: int = 10,
        *,
        bad: dict[str, Record] | None = None,
        load_delay: float = 0.0,
        failures: int = 0,
        raw: bool = False,
    ) -> None:
        self.namespaces = namespaces
        self.raw = raw  # pages come with read(): decoded by decode_pickled
        self.page_size = page_size
        self.bad = bad or {}
        self.load_delay = load_delay
        self.failures = failures
        self.loading = 0
        self.max_loading = 0
        self.loaded_pages = 0
        self._lock = threading.Lock()

    def describe(self) -> SourceInfo:
        return SourceInfo(
            kind="fake",
            collection="things",
            location="memory",
            fields=(
                VectorField("", VectorKind.DENSE, DIM, Metric.COSINE),
                VectorField("sparse", VectorKind.SPARSE, None, Metric.DOT),
            ),
            namespaces=tuple(Namespace(n, c) for n, c in self.namespaces.items()),
            namespaced=True,
            raw_pages=self.raw,
        )

    def partitions(
        self, namespace: str, count: int | None, want: int, call: Call
    ) -> tuple[str, ...]:
        return (WHOLE,)

    def page(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        start = int(cursor or 0)
        end = min(start + self.page_size, self.namespaces[namespace])
        nxt: Cursor = end if end < self.namespaces[namespace] else None
        return Page(
            load=lambda: self._load(namespace, start, end),
            next_cursor=nxt,
            size=end - start,
            read=partial(self._read, namespace, start, end) if self.raw else None,
        )

    def _read(self, namespace: str, start: int, end: int) -> Raw:
        return Raw(pickle.dumps(self._load(namespace, start, end)), decode_pickled)

    def _load(self, namespace: str, start: int, end: int) -> list[Record]:
        with self._lock:
            if self.failures:
                self.failures -= 1
                raise SourceUnavailable("fake outage")
            self.loading += 1
            self.max_loading = max(self.max_loading, self.loading)
        try:
            if self.load_delay:
                time.sleep(random.uniform(0, self.load_delay))
            records = []
            for i in range(start, end):
                rid = f"{namespace}-{i:05d}"
                records.append(
                    self.bad.get(rid)
                    or Record(
                        rid,
                        {
                            "": dense(i),
                            "sparse": SparseVector(
                                np.array([i, i + 10]), np.array([1.0, 2.0], dtype=np.float32)
                            ),
                        },
                        {"i": i},
                        namespace,
                    )
                )
            return records
        finally:
            with self._lock:
                self.loading -= 1
                self.loaded_pages += 1

    def close(self) -> None:
        pass


def decode_pickled(payload: bytes) -> list[Record]:
    """A raw FakeSource page's decoding, which a decoding process runs; a record with the
    id ``die`` ends that process."""
    records: list[Record] = pickle.loads(payload)
    if any(record.id == "die" for record in records):
        os._exit(3)
    return records


def run(target, source: FakeSource, **options: Any) -> Any:
    with PostgresSink(
        target.dsn, schema=target.schema, commit_rows=options.pop("commit_rows", 10_000)
    ) as sink:
        return migrate(source, sink, Options(**options))


def stored(target) -> list[tuple[str, str]]:
    return target.query(
        f'SELECT namespace, id FROM "{target.schema}".things ORDER BY namespace, id'
    )


@pytest.mark.parametrize("processes", [0, 2], ids=["threads", "processes"])
def test_pages_arrive_in_order_with_several_loads_in_flight(target, processes) -> None:
    source = FakeSource({"a": 205, "": 3, "b": 97}, page_size=7, load_delay=0.01, raw=processes > 0)

    summary = run(target, source, concurrency=4, processes=processes)

    assert summary.written == summary.read == 305
    assert summary.processes == processes
    assert {k: v.counts.written for k, v in summary.namespaces.items()} == {
        "a": 205,
        "": 3,
        "b": 97,
    }
    assert source.max_loading > 1
    assert len(stored(target)) == 305
    row = target.query(
        f'SELECT embedding::text, sparse::text, metadata FROM "{target.schema}".things WHERE namespace = %s AND id = %s',
        ["b", "b-00096"],
    )
    assert row == [("[96,97,98,99]", "{97:1,107:2}/1000000000", {"i": 96})]


def test_memory_is_bounded_pages_in_flight(target) -> None:
    """However long the source, at most 2 * concurrency pages wait for the writer (+ the
    ones being loaded): the reader blocks instead of running ahead."""
    source = FakeSource({"a": 3000}, page_size=10)
    seen_ahead = []
    original = source.page

    def page(namespace: str, partition: str, cursor: Cursor) -> Page:
        seen_ahead.append(int(cursor or 0) // 10 - written_pages[0])
        return original(namespace, partition, cursor)

    written_pages = [0]
    source.page = page  # type: ignore[method-assign]
    import vec2pg.postgres.sink as sink_module

    real_write = sink_module.Loader.write_rows

    def write(self: Any, *args: Any) -> None:
        time.sleep(0.001)
        written_pages[0] += 1
        real_write(self, *args)

    sink_module.Loader.write_rows = write  # type: ignore[method-assign]
    try:
        run(target, source, concurrency=2)
    finally:
        sink_module.Loader.write_rows = real_write  # type: ignore[method-assign]
    assert max(seen_ahead) <= 2 * 2 + 2 + 1


class SplitSource(FakeSource):
    """Two chains per namespace: the ``even`` and the ``odd`` tens of its records."""

    def __init__(self, namespaces: dict[str, int]) -> None:
        super().__init__(namespaces, page_size=10)
        self.chains: list[tuple[str, str]] = []

    def partitions(
        self, namespace: str, count: int | None, want: int, call: Call
    ) -> tuple[str, ...]:
        return ("even", "odd")

    def page(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        start = int(cursor if cursor is not None else (0 if partition == "even" else 10))
        end = min(start + 10, self.namespaces[namespace])
        nxt: Cursor = start + 20 if start + 20 < self.namespaces[namespace] else None
        self.chains.append((namespace, partition))
        return Page(
            load=lambda: self._load(namespace, start, end),
            next_cursor=nxt,
            size=end - start,
            read=partial(self._read, namespace, start, end) if self.raw else None,
        )


def test_partitions_of_a_namespace_are_read_concurrently_once(target) -> None:
    source = SplitSource({"a": 95, "b": 40})

    summary = run(target, source, concurrency=3)

    assert summary.read == summary.written == 135
    assert set(source.chains) == {("a", "even"), ("a", "odd"), ("b", "even"), ("b", "odd")}
    assert stored(target) == sorted(
        [("a", f"a-{i:05d}") for i in range(95)] + [("b", f"b-{i:05d}") for i in range(40)]
    )


def test_transient_load_failures_are_retried(target) -> None:
    source = FakeSource({"a": 50}, page_size=10, failures=3)

    summary = run(target, source, retry=RetryPolicy(attempts=4, initial=0.001))

    assert summary.retries == 3
    assert len(stored(target)) == 50


def test_too_many_failures_raise_the_last_one(target) -> None:
    source = FakeSource({"a": 50}, page_size=10, failures=10)

    with pytest.raises(SourceUnavailable, match="fake outage"):
        run(target, source, retry=RetryPolicy(attempts=3, initial=0.001))
    assert stored(target) == []


def bad_record(rid: str, **changes: Any) -> Record:
    vectors: dict[str, Any] = {"": dense(0), "sparse": None}
    vectors.update(changes.pop("vectors", {}))
    return Record(rid, vectors, changes.pop("metadata", {"ok": True}), "a")


def test_metadata_is_stored_as_json_would_read_it(target) -> None:
    """Nulls, integers beyond 64 bits, non-string keys (written as Python's json writes
    them), nesting, and text beyond ASCII all arrive as jsonb equal to the JSON text."""
    cases = [
        {"none": None, "list": [None, 1, "x"]},
        {"big": 2**70, "neg": -(2**64)},
        {1: "one", "nested": {"deep": [1.5, {"a": True}]}},
        {"text": "héllo ✓ 🎉", "tab": "a\tb", "quote": 'say "hi"'},
        {},
    ]
    records = {
        f"a-{i:05d}": bad_record(f"a-{i:05d}", metadata=metadata)
        for i, metadata in enumerate(cases)
    }
    source = FakeSource({"a": len(cases)}, bad=records)

    run(target, source)

    rows = target.query(f'SELECT id, metadata::text FROM "{target.schema}".things ORDER BY id')
    assert [json.loads(text) for _, text in rows] == [json.loads(json.dumps(c)) for c in cases]


NAN = np.array([1, np.nan, 0, 0], dtype=np.float32)
INF = np.array([1, np.inf, 0, 0], dtype=np.float32)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (
            bad_record("a-00015", vectors={"": NAN}),
            "the vector contains nan; PostgreSQL vectors hold only finite numbers",
        ),
        (
            bad_record("a-00015", vectors={"": INF}),
            "the vector contains inf; PostgreSQL vectors hold only finite numbers",
        ),
        (
            bad_record("a-00015", vectors={"": np.zeros(3, dtype=np.float32)}),
            "the vector has 3 values; the index has 4",
        ),
        (
            bad_record("a-00015", metadata={"t": "a\x00b"}),
            "metadata contains a NUL character (\\u0000), which jsonb cannot hold (--strip-nul removes them)",
        ),
        (
            bad_record("a-00015", metadata={"x": float("nan")}),
            "metadata holds NaN or infinity, which JSON cannot express",
        ),
        (
            bad_record(
                "a-00015",
                vectors={
                    "sparse": SparseVector(np.array([5, 5]), np.array([1, 2], dtype=np.float32))
                },
            ),
            "sparse vector 'sparse' repeats index 5",
        ),
        (
            bad_record(
                "a-00015",
                vectors={
                    "sparse": SparseVector(
                        np.array([1_000_000_000]), np.array([1], dtype=np.float32)
                    )
                },
            ),
            "sparse vector 'sparse' has index 1000000000; pgvector's sparsevec holds indices 0 to 999999999",
        ),
        (
            bad_record(
                "a-00015",
                vectors={
                    "sparse": SparseVector(np.arange(16_001), np.ones(16_001, dtype=np.float32))
                },
            ),
            "sparse vector 'sparse' has 16001 non-zero values; pgvector accepts at most 16000",
        ),
        (
            bad_record("a-00015", metadata={"x": [None, {"y": float("-inf")}]}),
            "metadata holds NaN or infinity, which JSON cannot express",
        ),
        (
            bad_record("a-00015", metadata={"t": "half a pair: \ud800"}),
            "metadata holds text that is not valid Unicode",
        ),
        (
            bad_record("a-00015", metadata={"x": {1, 2}}),
            "metadata is not representable as JSON: Object of type set is not JSON serializable",
        ),
        (
            bad_record("a-00015", vectors={"other": dense(1)}),
            "has vectors the source did not describe: 'other'",
        ),
    ],
    ids=[
        "nan",
        "inf",
        "dimension",
        "nul-metadata",
        "nan-metadata",
        "inf-beside-null-metadata",
        "surrogate-metadata",
        "sparse-dup",
        "sparse-range",
        "sparse-nnz",
        "set-metadata",
        "unknown-vector",
    ],
)
def test_an_invalid_record_stops_the_run_with_its_id_and_no_half_batch(
    target, record, reason
) -> None:
    """Pages of 10, commits every 10 rows: record 15 is in the second page, so exactly the
    first page is in the table."""
    source = FakeSource({"a": 40}, page_size=10, bad={record.id: record})

    with pytest.raises(InvalidRecord) as caught:
        run(target, source, commit_rows=10)

    assert str(caught.value) == f"record 'a-00015' in namespace 'a': {reason}"
    assert stored(target) == [("a", f"a-{i:05d}") for i in range(10)]


def test_an_id_with_nul_or_too_long_is_refused(target) -> None:
    long_id = "x" * 2049
    source = FakeSource({"a": 5}, bad={"a-00001": bad_record(long_id)})
    with pytest.raises(
        InvalidRecord, match="the id is 2049 bytes; the most a key may hold is 2048"
    ):
        run(target, source)
    source = FakeSource({"a": 5}, bad={"a-00001": bad_record("a\x00b")})
    with pytest.raises(InvalidRecord, match="the id contains a NUL character"):
        run(target, source)


def test_sparse_vectors_are_stored_in_index_order_without_explicit_zeros(target) -> None:
    odd = bad_record(
        "a-00001",
        vectors={
            "sparse": SparseVector(
                np.array([30, 2, 7]), np.array([3.0, 0.0, 7.0], dtype=np.float32)
            )
        },
    )
    source = FakeSource({"a": 3}, bad={"a-00001": odd})

    run(target, source)

    assert target.query(
        f'SELECT sparse::text FROM "{target.schema}".things WHERE id = %s', ["a-00001"]
    ) == [("{8:7,31:3}/1000000000",)]


# -- decoding processes -------------------------------------------------------------


def test_an_invalid_record_decoded_in_a_process_stops_the_run_as_in_one(target) -> None:
    record = bad_record(
        "a-00015", vectors={"": np.array([1.0, np.nan, 0.0, 0.0], dtype=np.float32)}
    )
    source = FakeSource({"a": 40}, page_size=10, bad={record.id: record}, raw=True)

    with pytest.raises(InvalidRecord) as caught:
        run(target, source, commit_rows=10, processes=1)

    assert str(caught.value) == (
        "record 'a-00015' in namespace 'a': the vector contains nan; "
        "PostgreSQL vectors hold only finite numbers"
    )
    assert stored(target) == [("a", f"a-{i:05d}") for i in range(10)]


def test_a_decoding_process_that_dies_stops_the_run_with_what_happened(target) -> None:
    dying = Record("die", {"": dense(0)}, None, "a")
    source = FakeSource({"a": 40}, page_size=10, bad={"a-00025": dying}, raw=True)

    with pytest.raises(Vec2pgError) as caught:
        run(target, source, commit_rows=10, processes=1)

    assert caught.value.exit_code == ExitCode.LOCAL  # not INTERNAL: nothing of vec2pg's is wrong
    assert str(caught.value).startswith("a process decoding records failed (")
    assert str(caught.value).endswith(
        "); if it was killed, or ran out of memory, --processes 0 decodes in the main process"
    )
    # What committed before the death, whole pages only: pages are read side by side, so
    # the death can come before the first commit (0) or after one or two (10, 20).
    assert len(stored(target)) in (0, 10, 20)


def test_autovacuum_waits_for_the_end_of_a_first_load(target) -> None:
    """While the key-less table fills, autovacuum is off for it; the run's end gives it
    back with the key, also when the load was interrupted and resumed."""

    def reloptions() -> Any:
        return target.query(
            "SELECT reloptions FROM pg_class WHERE oid = %s::regclass",
            [f'"{target.schema}".things'],
        )[0][0]

    bad = bad_record("a-00015", vectors={"": np.array([np.inf, 0, 0, 0], dtype=np.float32)})
    with pytest.raises(InvalidRecord):
        run(target, FakeSource({"a": 40}, bad={bad.id: bad}), commit_rows=10)
    assert reloptions() == ["autovacuum_enabled=false"]

    summary = run(target, FakeSource({"a": 40}))

    assert summary.resumed and len(stored(target)) == 40
    assert reloptions() is None
