"""The contract every source fulfils.

A source only pages and converts: it never retries, reports progress or touches
PostgreSQL. It translates its SDK's failures into :mod:`vec2pg.errors` (transient ones
carry the :class:`~vec2pg.errors.Transient` mixin) so that the pipeline can retry them.

Reading is split so that the pipeline can keep several requests in flight:

* :meth:`Source.partitions` splits a namespace into disjoint *chains* that can be read at
  the same time (Pinecone: id prefixes); most sources have one chain, :data:`WHOLE`.
* :meth:`Source.page` is called sequentially within a chain, with the cursor the previous
  page returned. It is cheap where the source allows (a Pinecone list of ids) and does the
  whole read where it does not (a Qdrant scroll). Different chains run concurrently.
* :meth:`Page.load` turns the page into records. The pipeline calls it from a thread pool,
  several at once, and hands the results to the sink in page order within each chain.
  Where turning an answer into records costs more CPU than fetching it (Pinecone's JSON
  floats), a page also offers :attr:`Page.read`: the answer as it came (:class:`Raw`),
  with a pure function that decodes it, which the pipeline may run in another process.

``vec2pg verify`` needs two more things of a source (:class:`VerifiableSource`): every id
of a chain without the records (:meth:`~VerifiableSource.page_ids`), and a few chosen
records by id (:meth:`~VerifiableSource.fetch`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from vec2pg.records import Cursor, Record, SourceInfo
from vec2pg.sources import MAX_CONCURRENCY

__all__ = ["FETCH_MAX_IDS", "MAX_CONCURRENCY", "WHOLE", "Call", "Page", "Raw", "Source"]

#: The partition that covers a whole namespace by itself.
WHOLE = ""
#: How :meth:`Source.partitions` makes each of its requests: ``call(fn, *args)`` is
#: ``fn(*args)`` retried on transient failures and throttled on rate limits (the
#: pipeline's caller), so that one refused probe does not fail or restart the split.
Call = Callable[..., Any]
#: The most ids :meth:`VerifiableSource.fetch` is asked for at once: a Pinecone list page.
#: Pinecone's fetch names its ids in the URL, and 100 ids of up to 512 bytes stay well
#: below the 64 kB or so that HTTP servers and proxies accept in a request line.
FETCH_MAX_IDS = 100


@dataclass(frozen=True, slots=True)
class Raw:
    """A page's answer as the source sent it, and how it becomes records:
    ``decode(payload)``, a pure function that pickles (a module's function or a
    ``functools.partial`` of one), so that any process can run it."""

    payload: bytes
    decode: Callable[[bytes], list[Record]]


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a namespace: how to load its records, and where the next page starts."""

    load: Callable[[], list[Record]]
    next_cursor: Cursor
    size: int  # how many records the page holds (known before load)
    #: The ids of the page's records, when the source knows them before ``load`` (a
    #: Pinecone list page, a page from :meth:`VerifiableSource.page_ids`); else ``None``.
    ids: list[str] | None = None
    #: ``load`` in two halves, where the source offers them (see :class:`Raw`): ``read()``
    #: does the requests, and ``raw.decode(raw.payload)`` is what ``load()`` returns.
    read: Callable[[], Raw] | None = None


class Source(Protocol):
    """A vector database to read from."""

    def describe(self) -> SourceInfo:
        """Connect, check the collection exists, and describe its fields and namespaces."""
        ...

    def partitions(
        self, namespace: str, count: int | None, want: int, call: Call
    ) -> tuple[str, ...]:
        """Split ``namespace`` (of about ``count`` records) into up to about ``want``
        disjoint chains that together hold every record; ``(WHOLE,)`` is one chain. Each
        request it needs goes through ``call``."""
        ...

    def page(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        """Read the page of a chain that starts at ``cursor`` (``None``: the chain's start)."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


class VerifiableSource(Source, Protocol):
    """A source that a table can be verified against (``vec2pg verify``).

    Verification lists every id of the source, which must cost far less than reading the
    records, and then compares a sample of records field by field.
    """

    def page_ids(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        """Like :meth:`Source.page`, for a caller that needs only the ids: the page's
        ``ids`` are set, and reading it should skip the vectors and metadata where the
        source allows. Chains and cursors are those of :meth:`Source.page`, though pages
        may be larger."""
        ...

    def fetch(self, namespace: str, ids: Sequence[str]) -> list[Record]:
        """The records of ``namespace`` with these ids (at most :data:`FETCH_MAX_IDS`), as
        :meth:`Page.load` returns them, in any order; ids the source lacks are left out."""
        ...
