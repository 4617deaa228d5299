"""How much disk a migration will take: the table, its key and the indexes it will build.

Estimated from the layout (each vector's dimension and storage), the record count, and a
sample of records (their ids and metadata), page by page as PostgreSQL stores them: a row
is its 24-byte header, its line pointer and its fields, and rows fill 8 kB pages whole; a
row above about 2 kB moves its largest values (vectors beyond ~500 dimensions) out of
line into the TOAST table, in chunks of 1,996 bytes, four to a page. An HNSW index holds
each vector again with its neighbours (2m of them on the bottom layer). Measured on
PostgreSQL 18 with pgvector 0.8.5 (5,000 rows, 8 to 1,536 dimensions, ~100-byte metadata),
the estimates of the table, its key and an HNSW index are within 15% of what PostgreSQL
reports (``pg_total_relation_size``, ``pg_indexes_size``); a load also leaves up to 64
empty pages at the table's end (PostgreSQL 16 extends a relation in bulk), which only
small tables notice.

Where PostgreSQL runs on this machine (the embedded server, a local socket or localhost)
and tells its data directory, the free space there is known, and a run that would not fit
is said before it loads (Supabase's advice: grow the disk first).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from vec2pg.postgres.layout import TableLayout
from vec2pg.records import Record, VectorKind

if TYPE_CHECKING:
    from psycopg import Connection

PAGE = 8192
PAGE_HEADER = 24
LINE_POINTER = 4
TUPLE_HEADER = 24
#: A row larger than this has its large values moved out of line (TOAST_TUPLE_THRESHOLD).
TOAST_THRESHOLD = 2032
#: Bytes of a value per TOAST chunk (TOAST_MAX_CHUNK_SIZE), and chunk rows per page.
TOAST_CHUNK = 1996
TOAST_CHUNKS_PER_PAGE = 4
TOAST_POINTER = 18
#: pgvector's HNSW page layout: an element tuple (its vector and up to 10 heap pointers of
#: 6 bytes) and a neighbour tuple of 2m item pointers of 6 bytes (the bottom layer's; the
#: layers above hold few elements), each with its 24-byte header.
HNSW_ELEMENT_HEADER = 24 + 10 * 6
HNSW_NEIGHBOUR_BYTES = 6


@dataclass(frozen=True, slots=True)
class SizeEstimate:
    rows: int
    table: int  # heap and TOAST, bytes
    key: int  # the primary key's btree
    indexes: int  # the vector indexes asked for (0 without --index)

    @property
    def total(self) -> int:
        return self.table + self.key + self.indexes

    def as_dict(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "table_bytes": self.table,
            "key_bytes": self.key,
            "index_bytes": self.indexes,
            "total_bytes": self.total,
        }


def estimate(
    layout: TableLayout, rows: int, sample: list[Record], index: str | None, hnsw_m: int = 16
) -> SizeEstimate:
    """The bytes ``rows`` records like ``sample`` take in ``layout``'s table, its key and,
    with ``index``, its vector indexes."""
    import orjson

    ids = _mean([len(r.id.encode()) for r in sample], 16)
    metadata = _mean(
        [_jsonb(len(orjson.dumps(r.metadata))) if r.metadata else 0 for r in sample], 0
    )
    namespace = _mean([len(r.namespace.encode()) for r in sample], 8) if layout.namespaced else 0
    vectors = [_vector_bytes(column.storage, column.field, sample) for column in layout.vectors]
    inline = TUPLE_HEADER + _varlena(ids) + _varlena(namespace) + metadata + sum(vectors)
    toasted = 0
    for size in sorted(vectors, reverse=True):  # the largest values go out of line first
        if inline <= TOAST_THRESHOLD:
            break
        inline += TOAST_POINTER - size
        toasted += math.ceil(size / TOAST_CHUNK)
    heap = _pages(rows, inline)
    toast = math.ceil(rows * toasted / TOAST_CHUNKS_PER_PAGE) * PAGE if toasted else 0
    key = _pages(rows, 16 + _varlena(ids) + _varlena(namespace))
    built = 0
    if index is not None:
        for column, size in zip(layout.vectors, vectors, strict=True):
            if column.field.kind in (VectorKind.MULTI,):
                continue  # arrays are not indexed
            if index == "hnsw":
                neighbours = TUPLE_HEADER + 8 + 2 * hnsw_m * HNSW_NEIGHBOUR_BYTES
                element = HNSW_ELEMENT_HEADER + size + neighbours
                built += _pages(rows, element)
            else:  # ivfflat: the vector and its heap pointer, in lists
                built += _pages(rows, 16 + size)
    return SizeEstimate(rows, heap + toast, key, built)


def _mean(values: list[int], default: int) -> int:
    return round(sum(values) / len(values)) if values else default


def _json_size(metadata: Any) -> int:
    import orjson

    try:
        return len(orjson.dumps(metadata))
    except TypeError:  # what orjson refuses (integers beyond 64 bits, ...): near enough
        return len(str(metadata))


def _jsonb(text: int) -> int:
    # jsonb keeps a header and an entry of 4 bytes per key and value beside the text, and
    # numbers as numeric: about a fifth more than the JSON text, measured.
    return _varlena(text * 6 // 5 + 8)


def _varlena(size: int) -> int:
    return size + (1 if size < 127 else 4)


def _vector_bytes(storage: str, field: Any, sample: list[Record]) -> int:
    dim = int(field.dim or 0)
    if storage == "sparsevec":
        nnz = _mean(
            [
                int(getattr(r.vectors.get(field.name), "indices", ()).__len__())
                for r in sample
                if r.vectors.get(field.name) is not None
            ],
            64,
        )
        return 16 + 8 * nnz
    if storage == "bit":
        return 8 + (dim + 7) // 8
    element = 2 if storage == "halfvec" else 4
    one = 8 + element * dim
    if field.kind is VectorKind.MULTI:
        held = [r.vectors[field.name] for r in sample if r.vectors.get(field.name) is not None]
        rows = _mean([len(value) for value in held], 8)
        return 20 + rows * (4 + one)
    return one


def _pages(rows: int, row: int) -> int:
    per_page = max(1, (PAGE - PAGE_HEADER) // (_aligned(row) + LINE_POINTER))
    return math.ceil(rows / per_page) * PAGE


def _aligned(size: int) -> int:
    return (size + 7) // 8 * 8


def free_bytes(conn: Connection[Any]) -> int | None:
    """Free bytes where the server keeps its data, if it runs on this machine and says
    where (``data_directory`` needs superuser or pg_read_all_settings); else None."""
    if (
        conn.info.host
        and not conn.info.host.startswith("/")
        and conn.info.host
        not in (
            "localhost",
            "127.0.0.1",
            "::1",
        )
    ):
        return None
    try:
        with conn.transaction():
            row = conn.execute("SELECT current_setting('data_directory', true)").fetchone()
    except psycopg.Error:
        return None
    directory = row[0] if row else None
    if not directory or not os.path.isdir(directory):
        return None
    try:
        stat = os.statvfs(directory)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def human(size: int) -> str:
    """Bytes as a person reads them: 1.2 GB, 340 MB, 12 kB."""
    for unit, step in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= step:
            return f"{size / step:,.1f} {unit}"
    return f"{size} bytes"
