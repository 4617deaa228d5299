"""The one flow every migration follows: describe, prepare, then stream pages into the sink.

Reading and writing overlap. A reader thread walks each namespace page by page (a page's
cursor comes from the page before, so this part is sequential) and hands each page's
``load`` to a pool of ``concurrency`` workers; the calling thread takes the loaded pages
*in page order* and writes them. A bounded queue between the two keeps memory flat: at
most ``2 * concurrency`` pages are in flight, however large the collection.

Transient failures (:class:`~vec2pg.errors.Transient`) are retried with exponential backoff
and jitter, honouring a server's Retry-After, up to ``RetryPolicy.attempts`` tries.
"""

from __future__ import annotations

import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from vec2pg.errors import Transient
from vec2pg.postgres.sink import PostgresSink
from vec2pg.records import Batch, Cursor, SourceInfo
from vec2pg.sources.base import Page, Source

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How transient failures are retried: ``attempts`` tries in all, waits growing from
    ``initial`` seconds to at most ``maximum`` (full jitter), or the server's Retry-After."""

    attempts: int = 6
    # The variable lets tests retry without waiting; users set --retries instead.
    initial: float = field(
        default_factory=lambda: float(os.environ.get("VEC2PG_RETRY_INITIAL_SECONDS", "0.5"))
    )
    maximum: float = 30.0

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hint = getattr(exc, "retry_after", None)
        backoff = min(self.maximum, self.initial * 2 ** (state.attempt_number - 1))
        jittered = random.uniform(backoff / 2, backoff)
        return min(self.maximum * 4, hint) if hint else jittered


@dataclass(slots=True)
class Options:
    concurrency: int = 4
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    namespaces: tuple[str, ...] = ()  # restrict to these; empty: all


@dataclass(slots=True)
class NamespaceSummary:
    read: int = 0
    written: int = 0


@dataclass(slots=True)
class Summary:
    source: str
    collection: str
    target: str
    read: int = 0
    written: int = 0
    seconds: float = 0.0
    retries: int = 0
    namespaces: dict[str, NamespaceSummary] = field(default_factory=dict)

    @property
    def records_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "collection": self.collection,
            "target": self.target,
            "read": self.read,
            "written": self.written,
            "seconds": round(self.seconds, 3),
            "records_per_second": round(self.records_per_second, 1),
            "retries": self.retries,
            "namespaces": {
                name: {"read": ns.read, "written": ns.written}
                for name, ns in self.namespaces.items()
            },
        }


class Events(Protocol):
    """What the pipeline tells whoever shows progress."""

    def started(self, info: SourceInfo, target: str, total: int | None) -> None: ...
    def advanced(self, namespace: str, records: int) -> None: ...
    def retrying(self, message: str, attempt: int, wait: float) -> None: ...
    def finished(self, summary: Summary) -> None: ...


class NoEvents:
    def started(self, info: SourceInfo, target: str, total: int | None) -> None:
        pass

    def advanced(self, namespace: str, records: int) -> None:
        pass

    def retrying(self, message: str, attempt: int, wait: float) -> None:
        pass

    def finished(self, summary: Summary) -> None:
        pass


def migrate(
    source: Source,
    sink: PostgresSink,
    options: Options | None = None,
    events: Events | None = None,
) -> Summary:
    """Copy every record of ``source`` into ``sink``'s table and return what was done."""
    options = options or Options()
    events = events or NoEvents()
    started = time.monotonic()
    retrier = _Retrier(options.retry, events)
    info = retrier.call(source.describe)
    namespaces = _selected(info, options.namespaces)
    layout = sink.prepare(info)
    summary = Summary(info.kind, info.collection, layout.display)
    total = None if info.total is None else sum(ns.count or 0 for ns in namespaces)
    events.started(info, layout.display, total)
    with sink.loader() as loader:
        for batch in _read(source, [ns.name for ns in namespaces], options, retrier):
            written = loader.write(batch)
            ns = summary.namespaces.setdefault(batch.namespace, NamespaceSummary())
            ns.read += len(batch.records)
            ns.written += written
            summary.read += len(batch.records)
            summary.written += written
            events.advanced(batch.namespace, len(batch.records))
    summary.seconds = time.monotonic() - started
    summary.retries = retrier.retries
    events.finished(summary)
    return summary


def _selected(info: SourceInfo, wanted: tuple[str, ...]) -> list[Any]:
    if not wanted:
        return list(info.namespaces)
    by_name = {ns.name: ns for ns in info.namespaces}
    from vec2pg.errors import ConfigError
    from vec2pg.records import Namespace

    missing = [name for name in wanted if name not in by_name]
    if missing and info.exact_counts:
        # A namespace the source does not report has no records: say so rather than guess.
        raise ConfigError(
            f"{info.kind} {info.collection!r} has no namespace "
            + ", ".join(repr(m) for m in missing)
            + f"; it has: {', '.join(repr(n) for n in by_name) or 'none'}"
        )
    return [by_name.get(name, Namespace(name, None)) for name in dict.fromkeys(wanted)]


class _Retrier:
    def __init__(self, policy: RetryPolicy, events: Events) -> None:
        self._policy = policy
        self._events = events
        self._lock = threading.Lock()
        self.retries = 0

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        retrying = Retrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, Transient)),
            stop=stop_after_attempt(self._policy.attempts),
            wait=self._policy.wait,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        return retrying(fn, *args)

    def _before_sleep(self, state: RetryCallState) -> None:
        with self._lock:
            self.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        self._events.retrying(str(exc), state.attempt_number, wait)


_DONE = object()


def _read(
    source: Source, namespaces: list[str], options: Options, retrier: _Retrier
) -> Iterator[Batch]:
    """Yield every page of every namespace, loaded concurrently, in page order."""
    pages: queue.Queue[Any] = queue.Queue(maxsize=2 * options.concurrency)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                pages.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def walk(pool: ThreadPoolExecutor) -> None:
        try:
            for namespace in namespaces:
                cursor: Cursor = None
                while not stop.is_set():
                    page: Page = retrier.call(source.page, namespace, cursor)
                    loaded: Future[Any] = pool.submit(retrier.call, page.load)
                    if not put((namespace, loaded, page.next_cursor)):
                        return
                    if page.next_cursor is None:
                        break
                    cursor = page.next_cursor
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(exc)

    with ThreadPoolExecutor(options.concurrency, thread_name_prefix="vec2pg-load") as pool:
        reader = threading.Thread(target=walk, args=(pool,), name="vec2pg-pages", daemon=True)
        reader.start()
        try:
            while True:
                item = pages.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                namespace, loaded, next_cursor = item
                yield Batch(namespace, loaded.result(), next_cursor)
        finally:
            stop.set()
            while True:  # cancel what was queued but not started
                try:
                    item = pages.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, tuple):
                    item[1].cancel()
            reader.join()
