"""The one flow every migration follows: describe, prepare, then stream pages into the sink.

Reading and writing overlap. Each namespace is split into chains (most sources: one per
namespace; Pinecone: disjoint id prefixes), and up to ``concurrency`` reader threads walk
chains page by page (a page's cursor comes from the page before, so a chain is
sequential). Each page's ``load`` goes to a pool of ``concurrency`` workers, and the
calling thread writes the loaded pages, in page order within each chain. A bounded queue
between them keeps memory flat: at most ``2 * concurrency`` pages wait for the writer,
however large the collection.

Where the source's pages come in two halves (:attr:`~vec2pg.sources.base.Page.read`), the
workers only make the requests, and a pool of processes decodes the answers and encodes
the rows (:mod:`vec2pg.workers`): that work holds the GIL, and one interpreter could not
keep up with the network. The writer then only sends bytes.

Transient failures (:class:`~vec2pg.errors.Transient`) are retried with exponential backoff
and full jitter, honouring a server's Retry-After, up to ``RetryPolicy.attempts`` tries.
Rate limiting (HTTP 429) is never fatal while the source still answers within
``RetryPolicy.rate_limit_patience`` seconds: each 429 also halves the number of requests
in flight, which then grows back by one for every ``_Throttle.RECOVER`` successes.
"""

from __future__ import annotations

import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception

from vec2pg import workers
from vec2pg.errors import ConfigError, RateLimited, TargetUnavailable, Transient, Vec2pgError
from vec2pg.memory import release_large_blocks, trim
from vec2pg.postgres.encode import EncodedRows, PageEncoder
from vec2pg.postgres.sink import Counts, Loader, Plan, PostgresSink
from vec2pg.postgres.state import DONE
from vec2pg.records import Cursor, Namespace, SourceInfo
from vec2pg.sources.base import Page, Source

T = TypeVar("T")

#: Requests in flight while chains are being split (see :meth:`Source.partitions`).
SPLIT_IN_FLIGHT = 64
#: Pages written between two trims of free memory (:func:`vec2pg.memory.trim`), with
#: ``Options.flat_memory``.
TRIM_EVERY = 50


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How transient failures are retried: ``attempts`` tries in all, waits growing from
    ``initial`` seconds to at most ``maximum`` (full jitter), or the server's Retry-After.
    Rate limiting is retried for as long as ``rate_limit_patience`` seconds."""

    attempts: int = 6
    # The variable lets tests retry without waiting; users set --retries instead.
    initial: float = field(
        default_factory=lambda: float(os.environ.get("VEC2PG_RETRY_INITIAL_SECONDS", "0.5"))
    )
    maximum: float = 30.0
    rate_limit_patience: float = 600.0

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hint = getattr(exc, "retry_after", None)
        backoff = min(self.maximum, self.initial * 2 ** (state.attempt_number - 1))
        jittered = random.uniform(backoff / 2, backoff)
        return min(self.maximum * 4, hint) if hint else jittered

    def stopper(self) -> Callable[[RetryCallState], bool]:
        """When to give up on one call: after ``attempts`` failures that were not rate
        limiting, or after ``rate_limit_patience`` seconds of it."""
        failures = 0

        def stop(state: RetryCallState) -> bool:
            nonlocal failures
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, RateLimited):
                return (state.seconds_since_start or 0.0) >= self.rate_limit_patience
            failures += 1
            return failures >= self.attempts

        return stop


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
    indexes: list[str] = field(default_factory=list)
    namespaces: dict[str, NamespaceSummary] = field(default_factory=dict)

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
        return {
            "source": self.source,
            "collection": self.collection,
            "target": self.target,
            "mode": self.mode,
            "resumed": self.resumed,
            **{name: self.total(name) for name in totals},
            "seconds": round(self.seconds, 3),
            "records_per_second": round(self.records_per_second, 1),
            "retries": self.retries,
            "rate_limited": self.rate_limited,
            "reconnects": self.reconnects,
            "processes": self.processes,
            "indexes": self.indexes,
            "matches_source": self.matches_source,
            "namespaces": {name: ns.as_dict() for name, ns in self.namespaces.items()},
        }


class Events(Protocol):
    """What the pipeline tells whoever shows progress."""

    def started(self, info: SourceInfo, target: str, total: int | None) -> None: ...
    def advanced(self, namespace: str, records: int) -> None: ...
    def retrying(self, message: str, attempt: int, wait: float) -> None: ...
    def indexing(self, phase: str, done: int, total: int) -> None: ...
    def note(self, message: str) -> None: ...
    def finished(self, summary: Summary) -> None: ...


class NoEvents:
    def started(self, info: SourceInfo, target: str, total: int | None) -> None:
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

    A lost PostgreSQL connection is re-established up to ``options.reconnects`` times; the
    run then resumes from its last commit, so nothing is lost or written twice.
    """
    options = options or Options()
    events = events or NoEvents()
    started = time.monotonic()
    retrier = _Retrier(options.retry, events, options.concurrency)
    info = retrier.call(source.describe)
    namespaces = _selected(info, options.namespaces)
    restricted = [ns.name for ns in namespaces] if options.namespaces else None
    summary = Summary(info.kind, info.collection)
    for ns in namespaces:
        summary.namespaces[ns.name] = NamespaceSummary(expected=ns.count)
    counts = {name: ns.counts for name, ns in summary.namespaces.items()}
    total = None if info.total is None else sum(ns.count or 0 for ns in namespaces)
    # Splitting a namespace (Pinecone) makes many small requests, a page of ids each,
    # before any record is read: more of them in flight than while reading.
    split_call = retrier.limited(max(SPLIT_IN_FLIGHT, 2 * options.concurrency))
    processes = 0
    if info.raw_pages:
        wanted = options.processes
        processes = workers.default_count(total) if wanted is None else wanted
    summary.processes = processes
    if options.flat_memory and not processes:
        release_large_blocks()
    shown = False
    with _Decoders(processes) as decoders:
        for attempt in range(options.reconnects + 1):
            try:
                plan = sink.begin(info, restricted)
                summary.target, summary.mode = sink.display, plan.mode
                summary.resumed = summary.resumed or plan.resumed
                # A fresh run's chains; a resumed one's for namespaces it did not have yet.
                started_namespaces = {ns for ns, _ in plan.chains}
                missing = [ns for ns in namespaces if ns.name not in started_namespaces]
                if missing or any(cursor != DONE for cursor in plan.chains.values()):
                    decoders.start(sink.encoder())  # while the chains are being split
                if missing:
                    sink.start_chains(
                        [
                            (ns.name, key)
                            for ns in missing
                            # Two chains (or more) per reader: no long one is left to the end.
                            for key in source.partitions(
                                ns.name, ns.count, 2 * options.concurrency, split_call
                            )
                        ]
                    )
                if not shown:
                    events.started(info, summary.target, total)
                    shown = True
                _copy(source, sink, plan, options, retrier, events, counts, decoders.pool)
                summary.seconds = time.monotonic() - started
                summary.retries, summary.rate_limited = retrier.retries, retrier.rate_limited
                stale = sink.finish(counts, lambda found: _finished(summary, counts, found))
                break
            except TargetUnavailable as exc:
                if attempt == options.reconnects:
                    raise
                summary.reconnects += 1
                wait = min(30.0, options.retry.initial * 2**attempt)
                events.retrying(f"{exc}; reconnecting", attempt + 1, wait)
                sink.close()
                time.sleep(wait)
            except BaseException as exc:
                sink.record_failure(str(exc) or type(exc).__name__)
                raise
    _finished(summary, counts, stale)
    if sink.index is not None:
        # Load first, index after (pgvector's advice): a whole table, one build.
        summary.indexes = sink.build_indexes(events.indexing, events.note)
    summary.seconds = time.monotonic() - started
    events.finished(summary)
    return summary


def _finished(summary: Summary, counts: dict[str, Counts], stale: dict[str, int]) -> dict[str, Any]:
    """Put what the run's end found (pruned or stale rows, possibly of namespaces the
    source no longer has) into the summary, and return it as the run log keeps it."""
    for name, namespace_counts in counts.items():
        summary.namespaces.setdefault(name, NamespaceSummary(counts=namespace_counts))
    for name, rows in stale.items():
        summary.namespaces.setdefault(name, NamespaceSummary()).stale = rows
    return summary.as_dict()


def plan(source: Source, sink: PostgresSink, options: Options | None = None) -> dict[str, Any]:
    """What :func:`migrate` would do, without writing anything (``--dry-run``)."""
    options = options or Options()
    retrier = _Retrier(options.retry, NoEvents(), options.concurrency)
    info = retrier.call(source.describe)
    namespaces = _selected(info, options.namespaces)
    restricted = [ns.name for ns in namespaces] if options.namespaces else None
    return {
        "source": info.kind,
        "collection": info.collection,
        "location": info.location,
        "namespaces": {ns.name: ns.count for ns in namespaces},
        "vectors": [f.as_dict() for f in info.fields],
        **sink.preview(info, restricted),
    }


def _copy(
    source: Source,
    sink: PostgresSink,
    plan: Plan,
    options: Options,
    retrier: _Retrier,
    events: Events,
    counts: dict[str, Counts],
    decoders: ProcessPoolExecutor | None,
) -> None:
    """Read every unfinished chain of ``plan`` into the sink; add what committed to counts."""
    start = {chain: cursor for chain, cursor in plan.chains.items() if cursor != DONE}
    loader: Loader | None = None
    try:
        with sink.loader() as loader:
            reader = _Reader(source, start, options, retrier, loader.encode, decoders)
            for written, (chain, rows, next_cursor) in enumerate(reader.pages(), start=1):
                loader.write_rows(chain.namespace, chain.partition, next_cursor, rows)
                events.advanced(chain.namespace, rows.read)
                if options.flat_memory and written % TRIM_EVERY == 0:
                    trim()
    finally:
        if loader is not None:
            for name, committed in loader.counts.items():
                counts.setdefault(name, Counts()).add(committed)


def _selected(info: SourceInfo, wanted: tuple[str, ...]) -> list[Namespace]:
    if not wanted:
        return list(info.namespaces)
    by_name = {ns.name: ns for ns in info.namespaces}
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise ConfigError(
            f"{info.kind} {info.collection!r} has no namespace "
            + ", ".join(repr(m) for m in missing)
            + f"; it has: {', '.join(repr(n) for n in by_name) or 'none'}"
        )
    return [by_name[name] for name in dict.fromkeys(wanted)]


class _Throttle:
    """How many source requests may be in flight: halved on every 429, then grown back."""

    RECOVER = 20  # successes per extra request in flight

    def __init__(self, limit: int) -> None:
        self.maximum = self.limit = limit
        self._in_flight = 0
        self._successes = 0
        self._cond = threading.Condition()

    def __enter__(self) -> None:
        with self._cond:
            while self._in_flight >= self.limit:
                self._cond.wait()
            self._in_flight += 1

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        with self._cond:
            self._in_flight -= 1
            if isinstance(exc, RateLimited):
                self.limit = max(1, self.limit // 2)
                self._successes = 0
            elif exc is None and self.limit < self.maximum:
                self._successes += 1
                if self._successes >= self.RECOVER:
                    self.limit += 1
                    self._successes = 0
            self._cond.notify_all()


class _Retrier:
    def __init__(self, policy: RetryPolicy, events: Events, concurrency: int) -> None:
        self._policy = policy
        self._events = events
        self._lock = threading.Lock()
        # Readers and loaders both call the source: 2 * concurrency threads at most.
        self.throttle = _Throttle(2 * concurrency)
        self.retries = 0
        self.rate_limited = 0

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return self._call(self.throttle, fn, *args)

    def limited(self, limit: int) -> Callable[..., Any]:
        """A ``call`` with its own throttle of ``limit`` requests in flight."""
        return partial(self._call, _Throttle(limit))

    def _call(self, throttle: _Throttle, fn: Callable[..., T], *args: Any) -> T:
        retrying = Retrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, Transient)),
            stop=self._policy.stopper(),
            wait=self._policy.wait,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        result: T = retrying(self._throttled, throttle, fn, *args)
        return result

    @staticmethod
    def _throttled(throttle: _Throttle, fn: Callable[..., T], *args: Any) -> T:
        with throttle:
            return fn(*args)

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        with self._lock:
            self.retries += 1
            self.rate_limited += isinstance(exc, RateLimited)
        wait = state.next_action.sleep if state.next_action else 0.0
        self._events.retrying(str(exc), state.attempt_number, wait)


@dataclass(frozen=True, slots=True)
class _Chain:
    namespace: str
    partition: str
    cursor: Cursor  # where to start: None for the chain's beginning


_DONE = object()


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


class _Reader:
    """Walks every chain of every namespace and yields its pages' rows in chain order."""

    def __init__(
        self,
        source: Source,
        start: dict[tuple[str, str], Any],
        options: Options,
        retrier: _Retrier,
        encode: PageEncoder,
        decoders: ProcessPoolExecutor | None,
    ) -> None:
        self._source = source
        self._start = start
        self._options = options
        self._retrier = retrier
        self._encode = encode
        self._decoders = decoders
        self._chains: queue.Queue[_Chain | None] = queue.Queue()
        self._pages: queue.Queue[Any] = queue.Queue(maxsize=2 * options.concurrency)
        self._stop = threading.Event()

    def pages(self) -> Iterator[tuple[_Chain, EncodedRows, Cursor]]:
        concurrency = self._options.concurrency
        for (namespace, partition), cursor in sorted(self._start.items()):
            self._chains.put(_Chain(namespace, partition, cursor))
        chains = len(self._start)
        pool = ThreadPoolExecutor(concurrency, thread_name_prefix="vec2pg-load")
        walkers = [
            threading.Thread(target=self._walk, args=(pool,), name=f"vec2pg-pages-{i}", daemon=True)
            for i in range(concurrency)
        ]
        for walker in walkers:
            walker.start()
        try:
            while chains:
                item = self._pages.get()
                if isinstance(item, BaseException):
                    raise item
                chain, loaded, next_cursor = item
                yield chain, loaded.result(), next_cursor
                chains -= next_cursor is None
        finally:
            self._stop.set()
            for _ in walkers:
                self._chains.put(None)
            self._drain()
            # On an error or Ctrl-C, do not wait for requests in flight (up to their
            # timeout): nothing they return would be written. Walkers are daemons.
            for walker in walkers:
                walker.join(timeout=1.0)
            self._drain()
            pool.shutdown(wait=False, cancel_futures=True)

    def _drain(self) -> None:
        while True:  # cancel what was queued but not started
            try:
                item = self._pages.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, tuple):
                item[1].cancel()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._pages.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _walk(self, pool: ThreadPoolExecutor) -> None:
        try:
            while not self._stop.is_set():
                chain = self._chains.get()
                if chain is None:
                    return
                cursor = chain.cursor
                while not self._stop.is_set():
                    page: Page = self._retrier.call(
                        self._source.page, chain.namespace, chain.partition, cursor
                    )
                    loaded: Future[EncodedRows] = pool.submit(self._load, page)
                    if not self._put((chain, loaded, page.next_cursor)):
                        return
                    if page.next_cursor is None:
                        break
                    cursor = page.next_cursor
        except BaseException as exc:  # handed to the writer, which raises it
            self._put(exc)

    def _load(self, page: Page) -> EncodedRows:
        """The page's records as COPY rows: decoded in a process of the pool if the page
        can be read apart from its decoding, else here."""
        if self._decoders is None or page.read is None:
            return self._encode(self._retrier.call(page.load))
        raw = self._retrier.call(page.read)
        try:
            return self._decoders.submit(workers.decode, raw).result()
        except BrokenProcessPool as exc:
            cause = f": {exc.__cause__}" if exc.__cause__ else ""
            raise Vec2pgError(
                f"a process decoding records failed ({exc}{cause}); if it was killed, or ran "
                "out of memory, --processes 0 decodes in the main process"
            ) from exc
