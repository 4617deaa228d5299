"""The contract every source fulfils.

A source only pages and converts: it never retries, reports progress or touches
PostgreSQL. It translates its SDK's failures into :mod:`vec2pg.errors` (transient ones
carry the :class:`~vec2pg.errors.Transient` mixin) so that the pipeline can retry them.

Reading is split in two so that the pipeline can keep several requests in flight:

* :meth:`Source.page` is called sequentially, one namespace at a time, with the cursor the
  previous page returned. It is cheap where the source allows (a Pinecone list of ids) and
  does the whole read where it does not (a Qdrant scroll).
* :meth:`Page.load` turns the page into records. The pipeline calls it from a thread pool,
  several at once, and hands the results to the sink in page order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from vec2pg.records import Cursor, Record, SourceInfo


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

    def page(self, namespace: str, cursor: Cursor) -> Page:
        """Read the page of ``namespace`` that starts at ``cursor`` (``None``: the start)."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...
