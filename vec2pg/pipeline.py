"""The one flow every migration follows: describe, prepare, then stream pages into the sink.

Reading and writing overlap: :class:`~vec2pg.reading.ChainReader` walks the source's chains
with several requests in flight, and the calling thread writes the pages it yields, in page
order within each chain, through the run's loader (see :mod:`vec2pg.reading` for the
threads, the bounded queue, retries and throttling).

Where the source's pages come in two halves (:attr:`~vec2pg.sources.base.Page.read`), the
reading threads only make the requests, and a pool of processes decodes the answers and
encodes the rows (:mod:`vec2pg.workers`): that work holds the GIL, and one interpreter could
not keep up with the network. The writer then only sends bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from vec2pg import workers
from vec2pg.errors import (
    ExitCode,
    Interrupted,
    LocalError,
    TargetUnavailable,
    Terminated,
    TerminateSignal,
)
from vec2pg.memory import release_large_blocks, trim
from vec2pg.postgres.encode import EncodedRows, PageEncoder
from vec2pg.postgres.sink import Counts, PostgresSink, TargetRun
from vec2pg.postgres.size import SizeEstimate, human
from vec2pg.postgres.state import DONE
from vec2pg.reading import (
    SPLIT_IN_FLIGHT,
    Chain,
    ChainReader,
    Retrier,
    RetryPolicy,
    select_namespaces,
)
from vec2pg.records import Namespace, Record, SourceInfo
from vec2pg.sources.base import WHOLE, Page, Raw, Source

if TYPE_CHECKING:
    from vec2pg.verify import VerifyReport

__all__ = ["Events", "NoEvents", "Options", "RetryPolicy", "Summary", "migrate", "plan"]

#: Pages written between two trims of free memory (:func:`vec2pg.memory.trim`), with
#: ``Options.flat_memory``.
TRIM_EVERY = 50


@dataclass(slots=True)
class Options:
    concurrency: int = 4
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    namespaces: tuple[str, ...] = ()  # restrict to these; empty: all
    #: Processes that decode and encode pages (see :mod:`vec2pg.workers`); 0: none, the
    #: threads do it; ``None``: :func:`vec2pg.workers.default_count` (the command line's
    #: default). They are started with ``spawn``, which imports the calling script again:
    #: it must then guard its main code with ``if __name__ == "__main__":``.
    processes: int | None = 0
    #: Tune glibc's malloc to keep memory flat (:mod:`vec2pg.memory`): trim it now and
    #: then, and when this process's threads decode pages, map large blocks on their own.
    #: The command line does.
    flat_memory: bool = False
    #: Times a lost PostgreSQL connection is re-established, resuming from the last commit.
    reconnects: int = 5


@dataclass(slots=True)
class NamespaceSummary:
    expected: int | None = None  # the count the source reported (approximate on some)
    counts: Counts = field(default_factory=Counts)
    stale: int = 0  # rows the table holds that the source no longer has (kept: no --prune)

    def as_dict(self) -> dict[str, Any]:
        c = self.counts
        return {
            "expected": self.expected,
            "read": c.read,
            "written": c.written,
            "inserted": c.inserted,
            "updated": c.updated,
            "unchanged": c.unchanged,
            "deleted": c.deleted,
            "rejected": c.rejected,
            "altered": c.altered,
            "stale": self.stale,
        }


@dataclass(slots=True)
class Summary:
    source: str
    collection: str
    target: str = ""
    mode: str = ""
    resumed: bool = False
    seconds: float = 0.0
    retries: int = 0
    rate_limited: int = 0
    reconnects: int = 0
    processes: int = 0  # that decoded pages
    #: Records the interrupted runs this one resumed had committed (in the table already).
    committed_before: int = 0
    #: Seconds the index build took (not part of ``seconds``: records/s is the load's).
    index_seconds: float = 0.0
    indexes: list[str] = field(default_factory=list)
    namespaces: dict[str, NamespaceSummary] = field(default_factory=dict)
    #: The comparison of source and table after the run, if one was asked for.
    verify: VerifyReport | None = None

    def total(self, name: str) -> int:
        if name == "stale":
            return sum(ns.stale for ns in self.namespaces.values())
        return sum(int(getattr(ns.counts, name)) for ns in self.namespaces.values())

    @property
    def read(self) -> int:
        return self.total("read")

    @property
    def written(self) -> int:
        return self.total("written")

    @property
    def matches_source(self) -> bool:
        """Whether the table now holds exactly what the source holds."""
        return self.total("stale") == 0 and self.total("rejected") == 0

    @property
    def exit_code(self) -> ExitCode:
        """``OK`` only when the table matches the source: ``REJECTED`` when records were
        skipped, ``DIFFERS`` when stale rows remain or verification found a difference."""
        if self.total("rejected"):
            return ExitCode.REJECTED
        if self.total("stale"):
            return ExitCode.DIFFERS
        if self.verify is not None and not self.verify.ok:
            return self.verify.exit_code
        return ExitCode.OK

    @property
    def records_per_second(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        totals = (
            "read",
            "written",
            "inserted",
            "updated",
            "unchanged",
            "deleted",
            "rejected",
            "altered",
            "stale",
        )
        result = {
            "source": self.source,
            "collection": self.collection,
            "target": self.target,
            "mode": self.mode,
            "resumed": self.resumed,
            **{name: self.total(name) for name in totals},
            "committed_before": self.committed_before,
            "seconds": round(self.seconds, 3),
            "records_per_second": round(self.records_per_second, 1),
            "index_seconds": round(self.index_seconds, 3),
            "retries": self.retries,
            "rate_limited": self.rate_limited,
            "reconnects": self.reconnects,
            "processes": self.processes,
            "indexes": self.indexes,
            "matches_source": self.matches_source,
            "namespaces": {name: ns.as_dict() for name, ns in self.namespaces.items()},
        }
        if self.verify is not None:
            result["verify"] = self.verify.as_dict()
        return result


class Events(Protocol):
    """What the pipeline tells whoever shows progress."""

    def started(self, info: SourceInfo, target: str, total: int | None, committed: int = 0) -> None:
        """The run begins: ``total`` records in all (None: unknown), ``committed`` of them
        already in the table from the interrupted runs this one resumes."""
        ...

    def advanced(self, namespace: str, records: int) -> None: ...
    def retrying(self, message: str, attempt: int, wait: float) -> None: ...
    def indexing(self, phase: str, done: int, total: int) -> None: ...
    def note(self, message: str) -> None: ...
    def finished(self, summary: Summary) -> None: ...


class NoEvents:
    def started(self, info: SourceInfo, target: str, total: int | None, committed: int = 0) -> None:
        pass

    def advanced(self, namespace: str, records: int) -> None:
        pass

    def retrying(self, message: str, attempt: int, wait: float) -> None:
        pass

    def indexing(self, phase: str, done: int, total: int) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def finished(self, summary: Summary) -> None:
        pass


def migrate(
    source: Source,
    sink: PostgresSink,
    options: Options | None = None,
    events: Events | None = None,
) -> Summary:
    """Bring ``sink``'s table in step with ``source`` and return what was done.

    A lost PostgreSQL connection is re-established (``options.reconnects`` times in a row)
    and the run resumes from its last commit, so nothing is lost or written twice. Ctrl-C
    (or SIGTERM) raises :class:`~vec2pg.errors.Interrupted` saying what is committed.
    """
    return _Migration(source, sink, options or Options(), events or NoEvents()).run()


class _Migration:
    """One call of :func:`migrate`: the source described, the run on the target begun (again
    after a lost connection), every chain read into it, the run finished and indexed."""

    def __init__(self, source: Source, sink: PostgresSink, options: Options, events: Events):
        self.source, self.sink, self.options, self.events = source, sink, options, events
        self.started = time.monotonic()
        self.retrier = Retrier(options.retry, events, options.concurrency)
        self.info = info = self.retrier.starting(source.describe)
        self.namespaces = select_namespaces(info, options.namespaces)
        #: The run's restriction (None: every namespace); it bounds --prune.
        self.restricted = [ns.name for ns in self.namespaces] if options.namespaces else None
        self.summary = Summary(info.kind, info.collection)
        for ns in self.namespaces:
            self.summary.namespaces[ns.name] = NamespaceSummary(expected=ns.count)
        #: What committed, per namespace (the summary's counts).
        self.counts = {name: ns.counts for name, ns in self.summary.namespaces.items()}
        self.total = None if info.total is None else sum(ns.count or 0 for ns in self.namespaces)
        processes = 0
        if info.raw_pages:
            wanted = options.processes
            processes = workers.default_count(self.total) if wanted is None else wanted
        self.summary.processes = processes
        #: The run on the target, once begun (again after a lost connection).
        self.target_run: TargetRun | None = None
        #: Records the interrupted runs that this one resumes had committed.
        self.committed_before = 0
        self._shown = False

    def run(self) -> Summary:
        summary, sink, events = self.summary, self.sink, self.events
        if self.options.flat_memory and not summary.processes:
            release_large_blocks()
        if self.total is not None and self.total >= SIZE_NOTE_RECORDS:
            for line in size_lines(
                *sized(self.source, sink, self.info, self.namespaces, self.retrier)
            ):
                events.note(line)
        try:
            with _Decoders(summary.processes) as decoders, sink.watch_locks(events.note):
                stale = self._reconnecting(decoders)
                _finished(summary, self.counts, stale)
                summary.seconds = time.monotonic() - self.started
                if sink.index is not None:
                    # Load first, index after (pgvector's advice): a whole table, one build.
                    indexing = time.monotonic()
                    summary.indexes = sink.build_indexes(events.indexing, events.note)
                    summary.index_seconds = time.monotonic() - indexing
        except KeyboardInterrupt as exc:
            raise self._interrupted(exc) from None
        events.finished(summary)
        return summary

    def _reconnecting(self, decoders: _Decoders) -> dict[str, int]:
        """:meth:`_once`, again after a lost PostgreSQL connection: up to
        ``options.reconnects`` times in a row. The budget is for one outage, and starts
        again once a transaction has committed (a long migration may live through many
        failovers, or a pooler that recycles its connections)."""
        failures = 0
        committed = 0
        while True:
            try:
                return self._once(decoders)
            except TargetUnavailable as exc:
                now = sum(c.read for c in self.counts.values())
                if now > committed:  # the connection worked since it was last lost
                    failures, committed = 0, now
                if failures == self.options.reconnects:
                    raise
                failures += 1
                self.summary.reconnects += 1
                wait = min(30.0, self.options.retry.initial * 2 ** (failures - 1))
                self.events.retrying(f"{exc}; reconnecting", failures, wait)
                self.sink.close()
                time.sleep(wait)

    def _once(self, decoders: _Decoders) -> dict[str, int]:
        """Begin (or resume) the run, read every unfinished chain into it, and finish it;
        return the stale rows per namespace."""
        summary, options = self.summary, self.options
        with self.sink.begin(self.info, self.restricted) as run:
            if self.target_run is None:  # the first; a reconnect resumes the same run
                self.committed_before = run.committed_before
            self.target_run = run
            summary.target, summary.mode = run.display, run.mode
            summary.resumed = summary.resumed or run.resumed
            # A fresh run's chains; a resumed one's for namespaces it did not have.
            started = {ns for ns, _ in run.chains}
            missing = [ns for ns in self.namespaces if ns.name not in started]
            if missing or any(cursor != DONE for cursor in run.chains.values()):
                decoders.start(run.encoder())  # while the chains are being split
            if missing:
                # Splitting a namespace (Pinecone) makes many small requests, a page of ids
                # each, before any record is read: more of them in flight than reading.
                split = self.retrier.limited(max(SPLIT_IN_FLIGHT, 2 * options.concurrency))
                run.start_chains(
                    [
                        (ns.name, key)
                        for ns in missing
                        # Two chains (or more) per reader: no long one is left to the end.
                        for key in self.source.partitions(
                            ns.name, ns.count, 2 * options.concurrency, split
                        )
                    ]
                )
            if not self._shown:
                summary.committed_before = run.committed_before
                self.events.started(self.info, summary.target, self.total, run.committed_before)
                for note in self.info.notes:
                    self.events.note(note)
                self._shown = True
            self._copy(run, decoders.pool)
            summary.seconds = time.monotonic() - self.started
            summary.retries = self.retrier.retries
            summary.rate_limited = self.retrier.rate_limited
            stale = run.finish(self.counts, lambda found: _finished(summary, self.counts, found))
        if run.duplicates_removed:
            self.events.note(
                f"removed {run.duplicates_removed:,} rows that repeated another's key: the "
                "source had sent those records twice"
            )
        return stale

    def _copy(self, run: TargetRun, decoders: ProcessPoolExecutor | None) -> None:
        """Read every unfinished chain of ``run`` into it; add what committed to the counts."""
        options = self.options
        start = [
            Chain(namespace, partition, cursor)  # type: ignore[arg-type]
            for (namespace, partition), cursor in sorted(run.chains.items())
            if cursor != DONE
        ]
        loader = None
        try:
            with run.loader() as loader:
                encode = partial(_encoded, self.retrier, loader.encode, decoders)
                pages = ChainReader(
                    start,
                    self.source.page,
                    encode,
                    concurrency=options.concurrency,
                    retrier=self.retrier,
                    # Reading far more than a namespace held at the start stops the run.
                    counts={ns.name: ns.count for ns in self.namespaces},
                )
                for written, (chain, rows, next_cursor) in enumerate(pages, start=1):
                    loader.write_rows(chain.namespace, chain.partition, next_cursor, rows)
                    self.events.advanced(chain.namespace, rows.read)
                    if options.flat_memory and written % TRIM_EVERY == 0:
                        trim()
        finally:
            if loader is not None:
                for name, committed in loader.counts.items():
                    self.counts.setdefault(name, Counts()).add(committed)

    def _interrupted(self, signal: KeyboardInterrupt) -> Interrupted:
        """What Ctrl-C (or SIGTERM) left: the records committed, and how to go on."""
        error, what = (
            (Terminated, "terminated (SIGTERM)")
            if isinstance(signal, TerminateSignal)
            else (Interrupted, "interrupted")
        )
        summary, run = self.summary, self.target_run
        if run is None:
            return error(f"{what} before anything was written")
        total = run.committed()  # PostgreSQL's word: the counts may miss a last commit
        if total is None:
            return error(f"{what}; what committed is kept, and the same command resumes")
        this_run = total - self.committed_before
        committed = f"{this_run:,} records read by this run are committed to {summary.target}"
        if self.committed_before:
            committed += f" ({total:,} with the interrupted runs before it)"
        return error(f"{what}: {committed}; the same command resumes from there")


def _finished(summary: Summary, counts: dict[str, Counts], stale: dict[str, int]) -> dict[str, Any]:
    """Put what the run's end found (pruned or stale rows, possibly of namespaces the
    source no longer has) into the summary, and return it as the run log keeps it."""
    for name, namespace_counts in counts.items():
        summary.namespaces.setdefault(name, NamespaceSummary(counts=namespace_counts))
    for name, rows in stale.items():
        summary.namespaces.setdefault(name, NamespaceSummary()).stale = rows
    return summary.as_dict()


#: Runs of this many records say first how much disk they will take.
SIZE_NOTE_RECORDS = 10_000


def sized(
    source: Source,
    sink: PostgresSink,
    info: SourceInfo,
    namespaces: list[Namespace],
    retrier: Retrier,
) -> tuple[SizeEstimate, int | None]:
    """The disk the run's records will take, from a sample (its first page), and the free
    space where PostgreSQL keeps its data, if it can be known."""
    sample: list[Record] = []
    rows = sum(ns.count or 0 for ns in namespaces)
    first = next((ns for ns in namespaces if ns.count), None)
    if first is not None:
        page = retrier.call(source.page, first.name, WHOLE, None)
        sample = retrier.call(page.load)
    return sink.estimate_size(info, rows, sample)


def size_lines(estimate: SizeEstimate, free: int | None) -> list[str]:
    """What a person reads of :func:`sized`: the estimate, and a warning if it will not fit."""
    index = f", {human(estimate.indexes)} of indexes" if estimate.indexes else ""
    lines = [
        f"the table will take about {human(estimate.total)} ({human(estimate.table)} of rows, "
        f"{human(estimate.key)} of key{index})"
    ]
    if free is not None and estimate.total > free:
        lines.append(
            f"warning: only {human(free)} is free where PostgreSQL keeps its data: grow the "
            "disk first (on Supabase: Project Settings, Compute and Disk), or the load may "
            "stop when it is full"
        )
    return lines


def plan(source: Source, sink: PostgresSink, options: Options | None = None) -> dict[str, Any]:
    """What :func:`migrate` would do, without writing anything (``--dry-run``).

    It raises what the run would stop with before writing (saved progress of other options,
    a table with other columns, another run holding the target).
    """
    options = options or Options()
    retrier = Retrier(options.retry, NoEvents(), options.concurrency)
    info = retrier.starting(source.describe)
    namespaces = select_namespaces(info, options.namespaces)
    restricted = [ns.name for ns in namespaces] if options.namespaces else None
    report = {
        "source": info.kind,
        "collection": info.collection,
        "location": info.location,
        "namespaces": {ns.name: ns.count for ns in namespaces},
        "vectors": [f.as_dict() for f in info.fields],
        **sink.preview(info, restricted),
    }
    estimate, free = sized(source, sink, info, namespaces, retrier)
    report["size"] = {**estimate.as_dict(), "free_bytes": free}
    report["size_lines"] = size_lines(estimate, free)
    return report


def _encoded(
    retrier: Retrier, encode: PageEncoder, decoders: ProcessPoolExecutor | None, page: Page
) -> EncodedRows:
    """A page's records as COPY rows: decoded in a process of the pool if the page can be
    read apart from its decoding, else here. An answer that does not decode (cut short on
    its way: a transient failure) is read again."""
    if decoders is None or page.read is None:
        return encode(retrier.call(page.load))
    return retrier.retried(_decoded_elsewhere, retrier, decoders, page.read)


def _decoded_elsewhere(
    retrier: Retrier, decoders: ProcessPoolExecutor, read: Callable[[], Raw]
) -> EncodedRows:
    with retrier.throttle:  # for the request, not for the decoding
        raw = read()
    try:
        return decoders.submit(workers.decode, raw).result()
    except BrokenProcessPool as exc:
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise LocalError(
            f"a process decoding records failed ({exc}{cause}); if it was killed, or ran "
            "out of memory, --processes 0 decodes in the main process"
        ) from exc


class _Decoders:
    """The processes that decode pages (:mod:`vec2pg.workers`): started once the table,
    and so the rows' encoding, is known; stopped on leaving."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.pool: ProcessPoolExecutor | None = None
        self._settings: Any = None

    def start(self, encoder: PageEncoder) -> None:
        """Start the processes, or start them again if ``encoder`` differs from theirs (a
        reconnection to a server where pgvector's types have other OIDs)."""
        if self.pool is not None and encoder.settings != self._settings:
            self.stop()
        if self.count and self.pool is None:
            self.pool, self._settings = workers.start(self.count, encoder), encoder.settings

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def __enter__(self) -> _Decoders:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
