"""A Qdrant collection split into ranges of ids read at the same time: every point exactly
once, whatever its ids, over REST and gRPC, resumed exactly, even after ``kill -9``.

The splitting itself (vec2pg/sources/qdrant_ranges.py) is checked on simulated
collections of every shape of ids first: what it decides only shares the points out, so
the checks are that the ranges cover the key line and that they are of about one size.
"""

from __future__ import annotations

import bisect
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
import pytest
from psycopg import sql
from qdrant_client import models as m
from qdrant_data import TRANSPORTS, Served, assert_same_rows, store_rows
from qdrant_store import QdrantStore

from vec2pg.sources.base import WHOLE
from vec2pg.sources.qdrant import QdrantSource
from vec2pg.sources.qdrant_ranges import (
    KEYS_END,
    MAX_PROBES,
    MAX_ROUNDS,
    PROBE_IDS,
    UUID_KEYS,
    Probe,
    cuts,
    key_point,
    point_key,
)

U = UUID_KEYS


# -- the splitting, on simulated collections --------------------------------------------


def probing(keys: list[int], calls: list[int]) -> Callable[[Sequence[int]], list[Probe]]:
    """A probe over a sorted list of keys, as a scroll of PROBE_IDS ids answers it."""

    def probe(at: Sequence[int]) -> list[Probe]:
        calls.append(len(at))
        found = []
        for key in at:
            i = bisect.bisect_left(keys, key)
            page = keys[i : i + PROBE_IDS]
            following = keys[i + PROBE_IDS] if i + PROBE_IDS < len(keys) else None
            seen = page + ([following] if following is not None else [])
            found.append(Probe(key, tuple(seen), following is None))
        return found

    return probe


def layouts(n: int) -> dict[str, list[int]]:
    rng = random.Random(n)
    return {
        "dense 0..N-1": list(range(n)),
        "dense 1..N": list(range(1, n + 1)),
        "sparse 7r+3": [7 * r + 3 for r in range(n)],
        "random 64-bit": [rng.getrandbits(64) for _ in range(n)],
        "random UUIDs": [U + rng.getrandbits(128) for _ in range(n)],
        "half integers, half UUIDs": [rng.getrandbits(63) for _ in range(n // 2)]
        + [U + rng.getrandbits(128) for _ in range(n - n // 2)],
        "two clusters far apart": list(range(n // 2)) + list(range(10**15, 10**15 + n - n // 2)),
        "UUIDs that are small numbers": [U + i * 3 for i in range(n)],
        "the extremes and random ids": [0, 1, 2**63, 2**64 - 1, U, KEYS_END - 1]
        + [rng.getrandbits(64) for _ in range(n - 6)],
    }


@pytest.mark.parametrize("n", [2_400, 60_000])
@pytest.mark.parametrize("layout", list(layouts(10)))
def test_ranges_cover_every_key_and_share_the_points_out_evenly(layout: str, n: int) -> None:
    keys = sorted(set(layouts(n)[layout]))
    calls: list[int] = []

    found = cuts(len(keys), 16, probing(keys, calls))

    assert found == sorted(set(found)) and all(0 < k < KEYS_END for k in found)
    bounds = [0, *found, KEYS_END]
    sizes = [
        bisect.bisect_left(keys, b) - bisect.bisect_left(keys, a)
        for a, b in zip(bounds, bounds[1:], strict=False)
    ]
    assert sum(sizes) == len(keys)
    assert 8 <= len(sizes) <= 16
    assert max(sizes) <= 1.6 * len(keys) / 16, sizes  # random ids: within sampling noise
    assert len(calls) <= MAX_ROUNDS and sum(calls) <= MAX_PROBES


def test_ids_zero_to_n_are_cut_exactly_in_one_round() -> None:
    keys = list(range(50_000))
    calls: list[int] = []

    found = cuts(len(keys), 10, probing(keys, calls))

    assert found == [5_000 * i for i in range(1, 10)]
    assert len(calls) == 1


def test_keys_and_ids() -> None:
    for point in (0, 1, 2**64 - 1, str(uuid.UUID(int=0)), str(uuid.UUID(int=2**128 - 1))):
        assert key_point(point_key(point)) == point
    assert point_key(2**64 - 1) < point_key(str(uuid.UUID(int=0)))  # integers first
    upper = "A0000000-0000-0000-0000-000000000001"  # any spelling Qdrant accepts
    assert point_key(upper) == U + 0xA0000000_0000_0000_0000_000000000001


# -- over the servers --------------------------------------------------------------------


def direct(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def extremes(n: int) -> list[int | str]:
    rng = random.Random(7)
    ids: list[int | str] = [0, 1, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1]
    ids += [str(uuid.UUID(int=0)), str(uuid.UUID(int=1)), str(uuid.UUID(int=2**128 - 1))]
    ids += [rng.getrandbits(64) for _ in range(n // 2)]
    ids += [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(n - len(ids))]
    return ids


def store_of(name: str, ids: list[int | str], dim: int = 4) -> QdrantStore:
    rng = random.Random(len(ids))
    config = m.VectorParams(size=dim, distance=m.Distance.DOT)
    points = [
        m.PointStruct(id=pid, vector=[rng.random() for _ in range(dim)], payload={"n": n})
        for n, pid in enumerate(ids)
    ]
    return QdrantStore.from_records(name, config, None, points)


def stores() -> list[QdrantStore]:
    n = 3_000
    return [
        QdrantStore.synthetic("dense", n, 4, ids="int", distance=m.Distance.DOT),
        store_of("zero-to-n", list(range(n))),
        QdrantStore.synthetic("uuids", n, 4, ids="uuid", distance=m.Distance.DOT),
        QdrantStore.synthetic("mixed", n, 4, ids="mixed", distance=m.Distance.DOT),
        store_of("extremes", extremes(n)),
    ]


@pytest.fixture(scope="module")
def collections() -> list[QdrantStore]:
    return stores()


@pytest.fixture(params=TRANSPORTS)
def served(request, collections) -> Iterator[Served]:
    with Served(collections, request.param) as servers:
        yield servers


def walk(source: QdrantSource, partition: str, cursor: Any = None, *, ids: bool = False):
    """Every page of a chain from ``cursor``: (ids, next cursor)."""
    pages = []
    while True:
        page = source.page_ids("", partition, cursor) if ids else source.page("", partition, cursor)
        pages.append((page.ids if ids else [r.id for r in page.load()], page.next_cursor))
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


@pytest.mark.parametrize("name", [s.name for s in stores()])
def test_chains_hold_every_point_exactly_once(served, collections, name) -> None:
    store = next(s for s in collections if s.name == name)
    source = QdrantSource(name, page_size=50, ids_page_size=70, **served.source_options())
    try:
        count = source.describe().namespaces[0].count
        partitions = source.partitions("", count, 12, direct)
        read = [i for p in partitions for page, _ in walk(source, p) for i in page]
        listed = [i for p in partitions for page, _ in walk(source, p, ids=True) for i in page]
    finally:
        source.close()

    assert len(partitions) >= 8 and all(p.startswith("range:") for p in partitions)
    want = sorted(store_rows(store))
    assert sorted(read) == want  # every point, none twice
    assert sorted(listed) == want


def test_a_chain_resumes_exactly_in_a_new_source(served) -> None:
    source = QdrantSource("mixed", page_size=40, **served.source_options())
    partitions = source.partitions("", source.describe().namespaces[0].count, 6, direct)
    chains = {p: walk(source, p) for p in partitions}
    source.close()
    # A chain that crosses from integers to UUIDs, and the longest one.
    crossing = next(p for p in partitions if p.split(":")[1].isdigit() and "-" in p.split(":")[2])
    for partition in {crossing, max(chains, key=lambda p: len(chains[p]))}:
        pages = chains[partition]
        assert len(pages) >= 3
        middle = len(pages) // 2
        again = QdrantSource("mixed", page_size=40, **served.source_options())
        try:
            again.describe()
            assert walk(again, partition, pages[middle - 1][1]) == pages[middle:]
        finally:
            again.close()


def test_an_integer_range_asks_for_no_more_points_than_it_can_hold(served) -> None:
    source = QdrantSource("zero-to-n", page_size=64, **served.source_options())
    try:
        partitions = source.partitions("", 3_000, 12, direct)
        assert partitions[1] == "range:250:500"  # ids 0..N-1: cut exactly
        served.rest.reset_counters()
        served.grpc.reset_stats()
        pages = walk(source, "range:250:500")
    finally:
        source.close()
    assert [len(ids) for ids, _ in pages] == [64, 64, 64, 58]  # the last asks for 58
    assert served.scrolls() == 4


def test_a_small_collection_is_one_chain(served) -> None:
    source = QdrantSource("dense", page_size=50, **served.source_options())
    try:
        assert source.partitions("", 1_999, 8, direct) == (WHOLE,)  # SPLIT_MIN_RECORDS
        assert source.partitions("", 3_000, 1, direct) == (WHOLE,)
    finally:
        source.close()


# -- migrations, killed and resumed ----------------------------------------------------


def test_a_split_collection_migrates_with_requests_in_flight_on_every_chain(
    served, target, collections, capsys
) -> None:
    served.set_latency(0.02)

    code = target.cli(
        "qdrant", "mixed", *served.args, "--page-size", "50", "--concurrency", "4", "--json"
    )

    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["written"] == 3_000
    store = next(s for s in collections if s.name == "mixed")
    assert_same_rows(target.rows("mixed"), store_rows(store))
    if served.transport == "grpc":
        assert served.grpc.max_in_flight >= 4  # scrolls of several chains at once


def progress_rows(target) -> int:
    try:
        rows = target.query(
            sql.SQL("SELECT coalesce(sum(records), 0) FROM {}").format(
                target.table("_vec2pg_progress")
            )
        )
    except psycopg.errors.UndefinedTable:
        return 0
    return int(rows[0][0])


def vec2pg_process(target, served: Served, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "VEC2PG_RETRY_INITIAL_SECONDS": "0.01"}
    command = [sys.executable, "-m", "vec2pg", "qdrant", "big", *served.args]
    command += ["--dsn", target.dsn, "--schema", target.schema, "--json", *args]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


@pytest.mark.parametrize(
    ("transport", "again"),
    [("rest", "rest"), ("grpc", "grpc"), ("grpc", "rest")],
    ids=["rest", "grpc", "grpc-then-rest"],
)
def test_kill_9_mid_run_then_the_rerun_resumes_every_chain(target, transport, again) -> None:
    """20,000 points of mixed ids (decoded in worker processes), split into chains; the run
    is killed once some of it is committed, and the same command finishes it (over either
    transport: a chain is a range of ids, its cursor a point id, on both)."""
    store = QdrantStore.synthetic("big", 20_000, 8, ids="mixed", distance=m.Distance.DOT)
    with Served(store, transport) as served:
        served.set_latency(0.02)
        args = ("--page-size", "100", "--commit-rows", "500", "--concurrency", "4")
        first = vec2pg_process(target, served, *args)
        deadline = time.monotonic() + 60
        while progress_rows(target) < 3_000:
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "no progress committed"
            time.sleep(0.02)
        first.kill()
        first.communicate()
        committed = progress_rows(target)
        assert 3_000 <= committed < 20_000
        chains = target.query(
            sql.SQL("SELECT count(*) FROM {}").format(target.table("_vec2pg_progress"))
        )[0][0]
        assert chains >= 8

        served.set_latency(0)
        served.transport = again
        rerun = vec2pg_process(target, served, *args)
        out, err = rerun.communicate(timeout=120)

    assert rerun.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["resumed"] is True and summary["matches_source"] is True
    assert summary["processes"] >= 1 or os.cpu_count() == 1
    assert summary["read"] <= 20_000  # committed pages were not read again
    assert_same_rows(target.rows("big"), store_rows(store))
