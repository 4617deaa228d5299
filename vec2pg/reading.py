"""Reading a source: retries, throttling, namespace selection, and the engine that walks chains.

Everything that reads a source goes through here, migration and verification alike.

Each namespace is split into chains (most sources: one per namespace; Pinecone: disjoint id
prefixes), and up to ``concurrency`` walker threads read chains page by page (a page's
cursor comes from the page before, so a chain is sequential). Each page is handed to a
pool of ``concurrency`` workers that process it (load its records and encode them, or only
take its ids), and the caller receives the results in page order within each chain. A
bounded queue between them keeps memory flat: at most ``2 * concurrency`` pages wait for
the caller, however large the collection.

Transient failures (:class:`~vec2pg.errors.Transient`) are retried with exponential backoff
and full jitter, honouring a server's Retry-After, up to ``RetryPolicy.attempts`` tries.
Rate limiting (HTTP 429) is never fatal while the source still answers within
``RetryPolicy.rate_limit_patience`` seconds: each 429 also halves the number of requests
in flight, which then grows back by one for every :attr:`Throttle.RECOVER` successes.
"""

from __future__ import annotations

import os
import queue
import random
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception

from vec2pg.errors import ConfigError, RateLimited, SourceError, SourceUnreachable, Transient
from vec2pg.records import Cursor, Namespace, SourceInfo
from vec2pg.sources.base import MAX_CONCURRENCY, Page

__all__ = [
    "MAX_CONCURRENCY",
    "SPLIT_IN_FLIGHT",
    "Chain",
    "ChainReader",
    "Retrier",
    "RetryPolicy",
    "Throttle",
    "select_namespaces",
]

T = TypeVar("T")

#: Requests in flight while chains are being split (see :meth:`Source.partitions`).
SPLIT_IN_FLIGHT = 64
#: A chain remembers this many of its last cursors: a source (or a proxy caching its
#: answers) that sends one back is going round in circles, and the run stops before it
#: writes a page twice.
REMEMBERED_CURSORS = 1_000


def read_limit(count: int) -> int:
    """How many records a namespace that held ``count`` at the start may yield before its
    pages are taken to repeat (records added during a run are welcome, twice as many not)."""
    return 2 * count + 1_000


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

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"--retries must be at least 1, not {self.attempts}")

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


class RetryEvents(Protocol):
    """Who hears of a retry (the pipeline's :class:`~vec2pg.pipeline.Events` do)."""

    def retrying(self, message: str, attempt: int, wait: float) -> None: ...


class Throttle:
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


class Retrier:
    """Calls a source: retried on transient failures, throttled on rate limits, counted."""

    def __init__(self, policy: RetryPolicy, events: RetryEvents | None, concurrency: int) -> None:
        self._policy = policy
        self._events = events
        self._lock = threading.Lock()
        # Walkers and workers both call the source: 2 * concurrency threads at most.
        self.throttle = Throttle(2 * concurrency)
        self.retries = 0
        self.rate_limited = 0

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return self._call(self.throttle, fn, *args)

    def limited(self, limit: int) -> Callable[..., Any]:
        """A ``call`` with its own throttle of ``limit`` requests in flight."""
        return partial(self._call, Throttle(limit))

    def starting(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` as :meth:`call`, but an unreachable source (a refused connection,
        a name that does not resolve) is tried only :data:`STARTING_ATTEMPTS` times: at
        the start of a run it is a wrong address far more often than an outage."""
        return self._call(self.throttle, fn, *args, starting=True)

    def retried(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` retried as :meth:`call` retries, but not throttled: ``fn`` holds
        :attr:`throttle` itself for its requests, and not for its other work."""
        return self._call(None, fn, *args)

    def _call(
        self, throttle: Throttle | None, fn: Callable[..., T], *args: Any, starting: bool = False
    ) -> T:
        stop = self._policy.stopper()
        if starting:
            stop = _or_unreachable(stop)
        retrying = Retrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, Transient)),
            stop=stop,
            wait=self._policy.wait,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        result: T = retrying(self._throttled, throttle, fn, *args)
        return result

    @staticmethod
    def _throttled(throttle: Throttle | None, fn: Callable[..., T], *args: Any) -> T:
        if throttle is None:
            return fn(*args)
        with throttle:
            return fn(*args)

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        with self._lock:
            self.retries += 1
            self.rate_limited += isinstance(exc, RateLimited)
        wait = state.next_action.sleep if state.next_action else 0.0
        if self._events is not None:
            self._events.retrying(str(exc), state.attempt_number, wait)


#: Tries of a source that is unreachable at the start of a run (:meth:`Retrier.starting`).
STARTING_ATTEMPTS = 2


def _or_unreachable(stop: Callable[[RetryCallState], bool]) -> Callable[[RetryCallState], bool]:
    def stopping(state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, SourceUnreachable) and state.attempt_number >= STARTING_ATTEMPTS:
            return True
        return stop(state)

    return stopping


def _short(cursor: Cursor) -> str:
    text = repr(cursor)
    return text if len(text) <= 40 else text[:37] + "..."


def select_namespaces(info: SourceInfo, wanted: Sequence[str]) -> list[Namespace]:
    """The namespaces a run reads: ``wanted`` ones (each once, in order), or all of them."""
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


@dataclass(frozen=True, slots=True)
class Chain:
    """A chain of a namespace (see :meth:`Source.partitions`), and where to start reading it."""

    namespace: str
    partition: str
    cursor: Cursor = None  # None: the chain's beginning


#: How a walker reads the page of a chain at a cursor: ``Source.page`` or ``page_ids``.
ReadPage = Callable[[str, str, Cursor], Page]


class ChainReader(Generic[T]):
    """Walks ``chains`` and yields, for each page, ``(chain, process(page), next_cursor)``:
    in page order within a chain, chains interleaved, ``concurrency`` of them at once."""

    def __init__(
        self,
        chains: Sequence[Chain],
        read: ReadPage,
        process: Callable[[Page], T],
        *,
        concurrency: int,
        retrier: Retrier,
        counts: Mapping[str, int | None] | None = None,
    ) -> None:
        """``counts``: each namespace's records when the run started; reading far more
        (:func:`read_limit`) stops the run, as a cursor that comes back does."""
        self._counts = {ns: count for ns, count in (counts or {}).items() if count is not None}
        self._read_so_far: dict[str, int] = {}
        self._chains = list(chains)
        self._read = read
        self._process = process
        self._concurrency = concurrency
        self._retrier = retrier
        self._todo: queue.Queue[Chain | None] = queue.Queue()
        self._pages: queue.Queue[Any] = queue.Queue(maxsize=2 * concurrency)
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[tuple[Chain, T, Cursor]]:
        for chain in self._chains:
            self._todo.put(chain)
        left = len(self._chains)
        walkers = [
            threading.Thread(target=self._walk, name=f"vec2pg-pages-{i}", daemon=True)
            for i in range(min(self._concurrency, left))
        ]
        pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="vec2pg-load")
        self._pool = pool
        for walker in walkers:
            walker.start()
        try:
            while left:
                item = self._pages.get()
                if isinstance(item, BaseException):
                    raise item
                chain, processed, next_cursor = item
                yield chain, processed.result(), next_cursor
                left -= next_cursor is None
        finally:
            self._stop.set()
            for _ in walkers:
                self._todo.put(None)
            self._drain()
            # On an error or Ctrl-C, do not wait for requests in flight (up to their
            # timeout): nothing they return would be used. Walkers are daemons.
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

    def _walk(self) -> None:
        try:
            while not self._stop.is_set():
                chain = self._todo.get()
                if chain is None:
                    return
                cursor = chain.cursor
                recent: deque[Cursor] = deque([cursor], maxlen=REMEMBERED_CURSORS)
                while not self._stop.is_set():
                    page = self._retrier.call(self._read, chain.namespace, chain.partition, cursor)
                    # Checked before the page is handed on: it is then never written twice.
                    self._check(chain, cursor, page, recent)
                    processed: Future[T] = self._pool.submit(self._process, page)
                    if not self._put((chain, processed, page.next_cursor)):
                        return
                    if page.next_cursor is None:
                        break
                    cursor = page.next_cursor
                    recent.append(cursor)
        except BaseException as exc:  # handed to the caller, which raises it
            self._put(exc)

    def _check(self, chain: Chain, cursor: Cursor, page: Page, recent: deque[Cursor]) -> None:
        """Stop a chain whose source goes round in circles (see :data:`REMEMBERED_CURSORS`)."""
        where = f"namespace {chain.namespace!r}" if chain.namespace else "the collection"
        resume = (
            "; a proxy or cache between vec2pg and the source may be answering with old "
            "pages. What was written is committed, and the same command resumes once the "
            "source answers as it should"
        )
        if page.next_cursor is not None and page.next_cursor in recent:
            raise SourceError(
                f"the source sent {where} back to a page it had already read (cursor "
                f"{_short(page.next_cursor)} after {_short(cursor)}): reading stopped before "
                f"any page was written twice{resume}"
            )
        count = self._counts.get(chain.namespace)
        if count is None:
            return
        with self._lock:
            read = self._read_so_far[chain.namespace] = (
                self._read_so_far.get(chain.namespace, 0) + page.size
            )
        if read > read_limit(count):
            raise SourceError(
                f"{read:,} records of {where} have been read, far more than the {count:,} it "
                f"held when the run started: its pages seem to repeat{resume}"
            )
