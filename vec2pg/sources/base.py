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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from vec2pg.records import Cursor, Record, SourceInfo

#: The partition that covers a whole namespace by itself.
WHOLE = ""


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a namespace: how to load its records, and where the next page starts."""

    load: Callable[[], list[Record]]
    next_cursor: Cursor
    size: int  # how many records the page holds (known before load)


class Source(Protocol):
    """A vector database to read from."""

    def describe(self) -> SourceInfo:
        """Connect, check the collection exists, and describe its fields and namespaces."""
        ...

    def partitions(self, namespace: str, count: int | None, want: int) -> tuple[str, ...]:
        """Split ``namespace`` (of about ``count`` records) into up to about ``want``
        disjoint chains that together hold every record; ``(WHOLE,)`` is one chain."""
        ...

    def page(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        """Read the page of a chain that starts at ``cursor`` (``None``: the chain's start)."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...
