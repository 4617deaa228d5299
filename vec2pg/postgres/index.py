"""Index the vector columns after the load, then ``ANALYZE`` (pgvector's loading advice).

One index per indexable vector column, with the operator class of the metric the sink
recorded in the column's comment::

    metric       hnsw                    ivfflat
    cosine       <type>_cosine_ops       <type>_cosine_ops
    dotproduct   <type>_ip_ops           <type>_ip_ops
    euclidean    <type>_l2_ops           <type>_l2_ops
    manhattan    <type>_l1_ops           (none: the column is skipped)

``<type>`` is the column's storage: ``vector``, ``halfvec`` or (hnsw only) ``sparsevec``.
Multivector columns (``vector(n)[]``) are skipped: pgvector cannot index arrays.

Index names follow Supabase vecs' pattern, ``ix_<opclass>_hnsw_m16_efc64_<hash>`` and
``ix_<opclass>_ivfflat_nl<lists>_<hash>``, so that vecs recognises the distance measure of
a table it adopts; the hash (of table and column) keeps names unique within the schema.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import psycopg
from psycopg import sql

from vec2pg.errors import ConfigError, TargetError
from vec2pg.postgres import catalog
from vec2pg.postgres.connection import translate_errors
from vec2pg.postgres.layout import TableLayout, VectorColumn
from vec2pg.records import Metric, VectorKind

if TYPE_CHECKING:
    from psycopg import Connection

IndexMethod = Literal["hnsw", "ivfflat"]
METHODS: tuple[IndexMethod, ...] = ("hnsw", "ivfflat")

#: Called with (phase, done, total) while an index builds. ``phase`` names the column and
#: pgvector's phase, e.g. ``"embedding: loading tuples"``; the last call for a column is
#: ``"<column>: done"`` with done == total == the rows indexed.
ProgressCallback = Callable[[str, int, int], None]
#: Called with one line for each column that is not indexed, and why.
NoteCallback = Callable[[str], None]

#: pgvector's HNSW defaults (m = 16, ef_construction = 64), written out so that the index
#: name, which vecs parses, states them.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
#: pgvector's ceilings for an indexed value: HNSW_MAX_DIM and IVFFLAT_MAX_DIM (vector),
#: twice that for halfvec, 64,000 bits for bit, and HNSW_MAX_NNZ non-zeros for sparsevec.
MAX_INDEX_DIM = {"vector": 2_000, "halfvec": 4_000, "bit": 64_000}
MAX_INDEX_NNZ = 1_000
#: IVFFLAT_MAX_LISTS.
MAX_LISTS = 32_768
#: How often the second connection reads pg_stat_progress_create_index.
POLL_SECONDS = 0.5

# maintenance_work_mem: pgvector builds an HNSW graph in memory and, once it outgrows
# maintenance_work_mem, carries on on disk several times slower ("hnsw graph no longer fits
# into maintenance_work_mem"; 50k x 128 dims here: 17 s in memory, 88 s with 8 MB), and an
# IVFFlat build fails outright when its k-means sample does not fit ("memory required is
# ... MB"). PostgreSQL's default is 64 MB. So each build asks for what it needs (estimated
# below), at most a ceiling, and never less than the session already has (a server tuned
# higher, or PGOPTIONS='-c maintenance_work_mem=4GB' for a bigger build, wins):
#
# * The ceiling is min(1 GB, max(256 MB, shared_buffers)). shared_buffers is by custom a
#   quarter of the server's RAM, the one hint of its size SQL can read; untuned servers keep
#   the 128 MB default whatever their RAM, hence the 256 MB floor. 1 GB bounds what one
#   migration claims on a server others use (managed services' smallest instances have
#   1-2 GB of RAM).
# * Asking for only what the build needs matters because a parallel HNSW build allocates
#   all of maintenance_work_mem up front as dynamic shared memory (/dev/shm), which Docker
#   limits to 64 MB by default (pgvector issue #453). Should that still fail ("could not
#   resize shared memory segment"), the build is retried without parallel workers, which
#   use private memory.
#
# max_parallel_maintenance_workers keeps the server's setting (PostgreSQL's default: 2,
# capped by max_parallel_workers): the server's cores are its administrator's to size, and
# the client cannot see them. On a 2-core machine the default 2 workers halved a 50k-row
# HNSW build (33 s -> 17 s).
MAX_WORK_MEM_CEILING = 1 << 30
MAX_WORK_MEM_FLOOR = 256 << 20
#: Per tuple of an in-memory HNSW graph beside the value itself: measured ~710 bytes with
#: m = 16 on pgvector 0.8.5 (element, 2m neighbours of 16 bytes on layer 0, upper layers).
HNSW_TUPLE_OVERHEAD = 2 * HNSW_M * 16 + 256
#: pgvector samples max(50 * lists, 10,000) rows for IVFFlat's k-means.
IVFFLAT_SAMPLES_PER_LIST = 50
IVFFLAT_MIN_SAMPLES = 10_000

_OPS = {
    Metric.COSINE: "cosine_ops",
    Metric.DOT: "ip_ops",
    Metric.EUCLIDEAN: "l2_ops",
    Metric.MANHATTAN: "l1_ops",
    Metric.HAMMING: "hamming_ops",
    Metric.JACCARD: "jaccard_ops",
}
#: The metrics of binary vectors (bit_hamming_ops, bit_jaccard_ops): a float vector has none.
_BIT_METRICS = {Metric.HAMMING, Metric.JACCARD}
_TYPE = re.compile(r"^(vector|halfvec|sparsevec|bit)\((\d+)\)(\[\])?$")


class NotIndexable(ConfigError):
    """A vector column has more dimensions than pgvector can index."""

    def __init__(self, message: str, column: str, dim: int, limit: int) -> None:
        super().__init__(message)
        self.column = column
        self.dim = dim
        self.limit = limit


@dataclass(frozen=True, slots=True)
class _Column:
    """A vector column as the table has it: its storage type, dimension and metric."""

    name: str
    storage: str  # "vector", "halfvec" or "sparsevec"
    dim: int
    multi: bool
    metric: Metric | None

    @classmethod
    def from_layout(cls, column: VectorColumn) -> _Column:
        field = column.field
        return cls(
            column.name,
            column.storage,
            int(field.dim or 0),
            field.kind is VectorKind.MULTI,
            field.metric,
        )


def check_indexable(layout: TableLayout, method: IndexMethod) -> None:
    """Raise :class:`NotIndexable` if ``method`` cannot index a column of ``layout``.

    Call it before a load that ends with :func:`build_index`, so that a collection too wide
    for an index stops the run before hours of loading, not after.
    """
    _check_method(method)
    for column in layout.vectors:
        _check_dimensions(layout, _Column.from_layout(column), method)


def build_index(
    conn: Connection[Any],
    layout: TableLayout,
    method: IndexMethod,
    *,
    dsn: str | None = None,
    on_progress: ProgressCallback | None = None,
    on_note: NoteCallback | None = None,
) -> list[str]:
    """Index every indexable vector column of ``layout``'s table, then ANALYZE it.

    Returns the names of the indexes built. A column that already has an index of this
    method and operator class is left as it is; columns ``method`` cannot index
    (multivectors; sparse or manhattan ones for ivfflat; sparse ones with more than 1,000
    non-zeros in some row) are skipped with a line to ``on_note``. A dense column wider
    than pgvector indexes raises :class:`NotIndexable` before any index is built.

    ``dsn`` opens a second connection that reads the build's progress every
    ``POLL_SECONDS`` for ``on_progress``, which is called on the calling thread. Each build
    runs in its own transaction on ``conn``; Ctrl-C cancels it.
    """
    _check_method(method)
    with translate_errors(None, f"indexing {layout.display}", conn):
        columns = _table_columns(conn, layout)
        for column in columns:
            _check_dimensions(layout, column, method)
        built: list[str] = []
        for column in columns:
            skipped = _why_not(column, method)
            if skipped:
                _note(on_note, f"{layout.display}.{column.name} is not indexed: {skipped}")
                continue
            opclass = _opclass(column)
            existing = _existing_index(conn, layout, column.name, method, opclass)
            if existing:
                _note(on_note, f"{layout.display}.{column.name} is already indexed by {existing}")
                continue
            name = _build(conn, layout, column, method, opclass, dsn, on_progress, on_note)
            if name:
                built.append(name)
        with conn.transaction():
            conn.execute(sql.SQL("ANALYZE {}").format(layout.qualified))
    return built


def index_name(
    layout: TableLayout, column: str, opclass: str, method: IndexMethod, lists: int
) -> str:
    """vecs' index name: ``ix_<opclass>_hnsw_m16_efc64_<hash>`` / ``..._ivfflat_nl<n>_<hash>``.

    The hash names the table and column: indexes share their schema's namespace, and two
    columns (or tables) with the same operator class need different names.
    """
    digest = hashlib.sha256(json.dumps([layout.table, column]).encode()).hexdigest()[:8]
    params = f"m{HNSW_M}_efc{HNSW_EF_CONSTRUCTION}" if method == "hnsw" else f"nl{lists}"
    return f"ix_{opclass}_{method}_{params}_{digest}"  # at most 56 bytes


def ivfflat_lists(rows: int) -> int:
    """pgvector's advice: rows / 1000 up to a million rows, sqrt(rows) beyond."""
    lists = rows // 1000 if rows <= 1_000_000 else math.isqrt(rows)
    return max(1, min(MAX_LISTS, lists))


# -- planning --------------------------------------------------------------------------


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ConfigError(f"unknown index method {method!r}: choose hnsw or ivfflat")


def _check_dimensions(layout: TableLayout, column: _Column, method: IndexMethod) -> None:
    if column.storage == "sparsevec" or _why_not(column, method):
        return  # sparse: no dimension limit (the build checks non-zeros); others: skipped
    limit = MAX_INDEX_DIM[column.storage]
    if column.dim <= limit:
        return
    where = f"{layout.display}.{column.name}"
    if column.storage == "vector" and column.dim <= MAX_INDEX_DIM["halfvec"]:
        fix = (
            "add --halfvec to store it as halfvec (float16, about 3 significant digits), "
            f"which pgvector indexes up to {MAX_INDEX_DIM['halfvec']:,} dimensions"
        )
    else:
        fix = "leave out --index and query it without an index (exact search)"
    raise NotIndexable(
        f"cannot build an {method} index on {where}: {column.storage}({column.dim}) has more "
        f"than {limit:,} dimensions, pgvector's limit for indexing {column.storage}; {fix}",
        column.name,
        column.dim,
        limit,
    )


def _why_not(column: _Column, method: IndexMethod) -> str | None:
    """Why ``method`` cannot index ``column``, or None if it can."""
    if column.multi:
        return "it is a multivector (an array of vectors), and pgvector cannot index arrays"
    if column.metric is None:
        return "its comment records no metric to choose an operator class by"
    if method == "ivfflat" and column.storage == "sparsevec":
        return "ivfflat cannot index sparsevec; use --index hnsw"
    if method == "ivfflat" and column.metric is Metric.MANHATTAN:
        return "ivfflat has no manhattan (L1) operator class; use --index hnsw"
    metric = column.metric.value
    if column.storage == "bit" and column.metric not in _BIT_METRICS:
        return f"pgvector indexes bit columns by hamming or jaccard distance, not {metric}"
    if column.storage != "bit" and column.metric in _BIT_METRICS:
        return f"pgvector has no {metric} distance for {column.storage} columns"
    if method == "ivfflat" and column.metric is Metric.JACCARD:
        return "ivfflat has no jaccard operator class; use --index hnsw"
    return None


def _opclass(column: _Column) -> str:
    assert column.metric is not None  # _why_not() skipped the column otherwise
    return f"{column.storage}_{_OPS[column.metric]}"


def _table_columns(conn: Connection[Any], layout: TableLayout) -> list[_Column]:
    """The layout's vector columns as the table holds them: type from the catalog, metric
    from the comment the sink wrote (the layout's metric where the comment is missing)."""
    with conn.transaction():
        rows = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod), col_description(attrelid, attnum) "
            "FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            [layout.qualified.as_string(conn)],
        ).fetchall()
    catalog = {name: (kind, comment) for name, kind, comment in rows}
    columns = []
    for vector in layout.vectors:
        if vector.name not in catalog:
            raise TargetError(f"{layout.display} has no column {vector.name!r} to index")
        kind, comment = catalog[vector.name]
        match = _TYPE.match(kind)
        if match is None:
            raise TargetError(
                f"{layout.display}.{vector.name} is {kind}, not a pgvector type vec2pg indexes"
            )
        columns.append(
            _Column(
                vector.name,
                match[1],
                int(match[2]),
                bool(match[3]),
                _recorded_metric(comment, vector),
            )
        )
    return columns


def _recorded_metric(comment: str | None, column: VectorColumn) -> Metric | None:
    try:
        recorded = json.loads(comment or "")["vec2pg"]["metric"]
    except (ValueError, KeyError, TypeError):
        return column.field.metric
    try:
        return Metric(recorded) if recorded is not None else None
    except ValueError:
        return None


def _existing_index(
    conn: Connection[Any], layout: TableLayout, column: str, method: str, opclass: str
) -> str | None:
    """A valid index of ``method`` and ``opclass`` on ``column`` alone, whoever built it."""
    with conn.transaction():
        row = conn.execute(
            "SELECT c.relname FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_am am ON am.oid = c.relam "
            "JOIN pg_opclass o ON o.oid = i.indclass[0] "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
            "WHERE i.indrelid = %s::regclass AND i.indnatts = 1 AND i.indisvalid "
            "AND i.indpred IS NULL AND a.attname = %s AND am.amname = %s AND o.opcname = %s "
            "ORDER BY c.relname LIMIT 1",
            [layout.qualified.as_string(conn), column, method, opclass],
        ).fetchone()
    return str(row[0]) if row else None


def _rows(conn: Connection[Any], layout: TableLayout) -> int:
    """About how many rows the table holds: the planner's estimate, or a count where the
    table was never analysed (a table that vec2pg just loaded is analysed after the index)."""
    with conn.transaction():
        row = conn.execute(
            "SELECT reltuples FROM pg_class WHERE oid = %s::regclass",
            [layout.qualified.as_string(conn)],
        ).fetchone()
        if row is not None and row[0] >= 0:
            return int(round(row[0]))
        return catalog.row_count(conn, layout.schema, layout.table)


def _work_mem_needed(column: _Column, method: IndexMethod, rows: int) -> int:
    """Bytes of maintenance_work_mem the build needs to run in memory.

    From the dimension, not the column's statistics: those report the width of a value
    stored out of line (TOAST, from about 500 dimensions on) as its pointer's, some 18
    bytes, and a build sized by them spilled to disk (30,000 x 768: 236 s against 85 s).
    """
    if column.storage == "bit":
        value = 8 + (column.dim + 7) // 8  # varlena header, bit length, the bits
    else:
        element = 2 if column.storage == "halfvec" else 4
        value = 8 + element * column.dim  # varlena header + elements
    if method == "hnsw":
        return rows * (value + HNSW_TUPLE_OVERHEAD)
    lists = ivfflat_lists(rows)
    samples = max(IVFFLAT_SAMPLES_PER_LIST * lists, IVFFLAT_MIN_SAMPLES)
    return (samples + 2 * lists) * (8 + 4 * column.dim)  # k-means works in float32


def _work_mem(conn: Connection[Any], needed: int) -> int | None:
    """The maintenance_work_mem (bytes) to set for a build, or None to keep the session's."""
    with conn.transaction():
        row = conn.execute(
            "SELECT pg_size_bytes(current_setting('maintenance_work_mem')), "
            "pg_size_bytes(current_setting('shared_buffers'))"
        ).fetchone()
    assert row is not None
    current, shared_buffers = int(row[0]), int(row[1])
    ceiling = min(MAX_WORK_MEM_CEILING, max(MAX_WORK_MEM_FLOOR, shared_buffers))
    wanted = min(ceiling, needed + needed // 8 + (16 << 20))  # margin for the estimate
    return wanted if wanted > current else None


# -- building --------------------------------------------------------------------------


def _build(
    conn: Connection[Any],
    layout: TableLayout,
    column: _Column,
    method: IndexMethod,
    opclass: str,
    dsn: str | None,
    on_progress: ProgressCallback | None,
    on_note: NoteCallback | None,
) -> str | None:
    """Build one index; return its name, or None if the column's values cannot be indexed."""
    rows = _rows(conn, layout)
    lists = ivfflat_lists(rows)
    name = index_name(layout, column.name, opclass, method, lists)
    options = (
        sql.SQL("m = {}, ef_construction = {}").format(
            sql.Literal(HNSW_M), sql.Literal(HNSW_EF_CONSTRUCTION)
        )
        if method == "hnsw"
        else sql.SQL("lists = {}").format(sql.Literal(lists))
    )
    statement = sql.SQL("CREATE INDEX {} ON {} USING {} ({} {}) WITH ({})").format(
        sql.Identifier(name),
        layout.qualified,
        sql.SQL(method),  # one of METHODS
        sql.Identifier(column.name),
        sql.Identifier(opclass),
        options,
    )
    work_mem = _work_mem(conn, _work_mem_needed(column, method, rows))
    progress = _Progress(dsn, conn, column.name, on_progress, rows)

    def notice(diagnostic: Any) -> None:
        # pgvector's own word on the build, e.g. "hnsw graph no longer fits into
        # maintenance_work_mem" (and that it will take significantly more time).
        detail = f" ({diagnostic.message_detail})" if diagnostic.message_detail else ""
        _note(on_note, f"{layout.display}.{column.name}: {diagnostic.message_primary}{detail}")

    conn.add_notice_handler(notice)
    try:
        try:
            _create(conn, statement, work_mem, progress, serial=False)
        except psycopg.errors.DiskFull as exc:
            if "shared memory" not in str(exc):
                raise
            _note(
                on_note,
                f"{layout.display}.{column.name}: no room for a parallel build in the "
                "server's shared memory (/dev/shm; Docker's default is 64 MB, raise it with "
                "--shm-size); building with one process",
            )
            _create(conn, statement, work_mem, progress, serial=True)
        except psycopg.errors.ProgramLimitExceeded as exc:
            if column.storage != "sparsevec" or "non-zero" not in str(exc):
                raise
            _note(
                on_note,
                f"{layout.display}.{column.name} is not indexed: some values have more than "
                f"{MAX_INDEX_NNZ:,} non-zero entries, pgvector's limit for indexing sparsevec",
            )
            return None
    finally:
        conn.remove_notice_handler(notice)
        progress.close()
    with conn.transaction():
        row = conn.execute(
            "SELECT reltuples FROM pg_class WHERE oid = %s::regclass",
            [sql.Identifier(layout.schema, name).as_string(conn)],
        ).fetchone()
    indexed = max(0, round(row[0])) if row else 0
    if on_progress is not None:
        on_progress(f"{column.name}: done", indexed, indexed)
    return name


def _create(
    conn: Connection[Any],
    statement: sql.Composed,
    work_mem: int | None,
    progress: _Progress,
    *,
    serial: bool,
) -> None:
    """Run CREATE INDEX in a transaction of its own with the build's settings (SET LOCAL)."""
    with conn.transaction():
        if work_mem is not None:
            conn.execute(
                "SELECT set_config('maintenance_work_mem', %s, true)", [f"{work_mem // 1024}kB"]
            )
        if serial:
            conn.execute("SELECT set_config('max_parallel_maintenance_workers', '0', true)")
        # An index build takes minutes where a statement_timeout meant for application
        # queries (managed services set one per role) would kill it.
        conn.execute("SELECT set_config('statement_timeout', '0', true)")
        progress.run(lambda: conn.execute(statement))


class _Progress:
    """Runs a build while a second connection reports pg_stat_progress_create_index."""

    def __init__(
        self,
        dsn: str | None,
        conn: Connection[Any],
        column: str,
        on_progress: ProgressCallback | None,
        rows: int = 0,
    ) -> None:
        self._column = column
        self._rows = rows
        self._on_progress = on_progress
        self._pid = conn.info.backend_pid
        self._conn = conn
        self._watcher: Connection[Any] | None = None
        if dsn is not None and on_progress is not None:
            try:
                self._watcher = psycopg.connect(
                    dsn, autocommit=True, application_name="vec2pg-progress", connect_timeout=15
                )
            except psycopg.Error:
                self._watcher = None  # progress is a nicety: the build goes on without it

    def run(self, build: Callable[[], object]) -> None:
        """Run ``build`` on a worker thread; poll and report here until it ends."""
        if self._watcher is None:
            build()  # psycopg itself cancels the statement on Ctrl-C
            return
        last: tuple[str, int, int] | None = None
        with ThreadPoolExecutor(1, thread_name_prefix="vec2pg-index") as pool:
            future: Future[object] = pool.submit(build)
            try:
                while True:
                    try:
                        future.result(timeout=POLL_SECONDS)
                        return
                    except FutureTimeout:
                        pass
                    state = self._poll()
                    if state is not None and state != last and self._on_progress is not None:
                        last = state
                        self._on_progress(*state)
            except BaseException:
                if not future.done():
                    # Interrupted here (Ctrl-C, or on_progress raised): stop the build, whose
                    # transaction then rolls back, before the pool waits for its thread.
                    self._cancel()
                raise

    def _cancel(self) -> None:
        try:
            self._conn.cancel_safe()
        except psycopg.Error:
            pass  # the server is gone: so is the build

    def _poll(self) -> tuple[str, int, int] | None:
        assert self._watcher is not None
        try:
            row = self._watcher.execute(
                "SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total "
                "FROM pg_stat_progress_create_index WHERE pid = %s",
                [self._pid],
            ).fetchone()
        except psycopg.Error:
            return None
        if row is None:
            return None
        phase, blocks_done, blocks_total, tuples_done, tuples_total = row
        # In tuples, which a person can relate to the table's rows: pgvector reports their
        # total where it knows it (IVFFlat's loading phase), HNSW only the tuples done, out
        # of the rows the build was sized for; the table scan's blocks otherwise.
        if tuples_total:
            done, total = tuples_done, tuples_total
        elif tuples_done and self._rows:
            done, total = tuples_done, max(self._rows, tuples_done)
        else:
            done, total = blocks_done, blocks_total
        phase = str(phase).removeprefix("building index: ")
        return f"{self._column}: {phase}", int(done or 0), int(total or 0)

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None


def _note(on_note: NoteCallback | None, text: str) -> None:
    if on_note is not None:
        on_note(text)
