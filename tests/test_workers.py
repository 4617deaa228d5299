"""Decoding pages in other processes (vec2pg.workers): what crosses the process boundary."""

from __future__ import annotations

import inspect
import pickle
from functools import partial

import pytest

from vec2pg import errors, workers
from vec2pg.errors import SourceError, SourceUnavailable
from vec2pg.postgres.encode import PageEncoder
from vec2pg.postgres.layout import layout_for
from vec2pg.records import Metric, Namespace, SourceInfo, VectorField, VectorKind
from vec2pg.sources.base import Raw
from vec2pg.sources.pinecone import decode_fetch

LAYOUT = layout_for(
    SourceInfo(
        kind="pinecone",
        collection="idx",
        location="memory",
        fields=(VectorField("", VectorKind.DENSE, 2, Metric.COSINE),),
        namespaces=(Namespace("ns", 2),),
        namespaced=True,
    ),
    "vec2pg",
    None,
)


@pytest.fixture(scope="module")
def pool():
    with workers.start(1, PageEncoder(LAYOUT)) as pool:
        yield pool


def test_a_page_is_decoded_and_encoded_in_another_process(pool) -> None:
    answer = b'{"vectors": {"b": {"id": "b", "values": [0.5, 1e40]}, "a": {"id": "a", "values": [1, 2]}}}'
    raw = Raw(answer, partial(decode_fetch, "idx", "ns", ["a", "b", "gone"]))

    rows = pool.submit(workers.decode, raw).result()

    assert rows.data == PageEncoder(LAYOUT)(raw.decode(raw.payload)).data
    assert (rows.rows, [(r.id, reason) for r, reason in rows.rejected]) == (
        1,
        [("b", "the vector contains inf; PostgreSQL vectors hold only finite numbers")],
    )


def test_an_answer_that_cannot_be_read_is_the_sources_error_in_the_calling_process(pool) -> None:
    raw = Raw(b'{"vectors": {"a": {"values": [1', partial(decode_fetch, "idx", "ns", ["a"]))

    with pytest.raises(SourceError) as caught:
        pool.submit(workers.decode, raw).result()

    # Cut short on its way (issue 11): transient, so the page is fetched again.
    assert isinstance(caught.value, SourceUnavailable)
    assert str(caught.value).startswith(
        "Pinecone index 'idx' sent an answer that does not parse while fetching records of "
        "namespace 'ns' ("
    )


@pytest.mark.parametrize(
    ("cpus", "records", "expected"),
    [(1, 10**6, 0), (2, 19_999, 0), (2, 20_000, 2), (8, 10**6, 4), (2, None, 2), (1, None, 0)],
)
def test_processes_are_used_for_large_collections_on_several_cpus(
    monkeypatch, cpus, records, expected
) -> None:
    monkeypatch.setattr(workers, "available_cpus", lambda: cpus)

    assert workers.default_count(records) == expected


def every_error() -> list[errors.Vec2pgError]:
    made: list[errors.Vec2pgError] = []
    for _, cls in inspect.getmembers(errors, inspect.isclass):
        if issubclass(cls, errors.Vec2pgError):
            if cls is errors.InvalidRecord:
                made.append(cls("id-1", "ns", "a reason"))
            elif issubclass(cls, errors.SourceUnavailable):
                made.append(cls(f"{cls.__name__} happened", 2.5))
            else:
                made.append(cls(f"{cls.__name__} happened"))
    return made


@pytest.mark.parametrize("error", every_error(), ids=lambda e: type(e).__name__)
def test_every_error_crosses_from_a_decoding_process_whole(error) -> None:
    """A worker's exception reaches the run pickled; one that cannot be rebuilt breaks
    the pool instead of reaching the user with its own message and exit code."""
    copy = pickle.loads(pickle.dumps(error))

    assert (type(copy), str(copy), copy.exit_code) == (type(error), str(error), error.exit_code)
    assert vars(copy) == vars(error)


def test_the_processes_restart_only_when_the_encoding_changes() -> None:
    """After a reconnection, pgvector's types may have other OIDs (another server)."""
    from vec2pg.pipeline import _Decoders

    with _Decoders(1) as decoders:
        decoders.start(PageEncoder(LAYOUT, type_oids={"vector": 1}))
        first = decoders.pool
        decoders.start(PageEncoder(LAYOUT, type_oids={"vector": 1}))
        assert decoders.pool is first
        decoders.start(PageEncoder(LAYOUT, type_oids={"vector": 2}))
        assert decoders.pool is not first and decoders.pool is not None
        assert first is not None and first._shutdown_thread
    assert decoders.pool is None


def test_starting_the_processes_gives_ctrl_c_back_to_the_run() -> None:
    import signal

    before = signal.getsignal(signal.SIGINT)

    with workers.start(1, PageEncoder(LAYOUT)) as pool:
        assert signal.getsignal(signal.SIGINT) is before
        assert pool.submit(signal.getsignal, signal.SIGINT).result() == signal.SIG_IGN
