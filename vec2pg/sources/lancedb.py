"""LanceDB: read one version of a table as Arrow record batches and turn its rows into records.

A run reads one snapshot: the version that is the latest when it starts (or ``--version``).
Each chain is a range of row offsets in that version, and its partition names the version
(``"<version>:<start>:<stop>"``), so a resumed run, in a new process, reads the very
snapshot the interrupted one read, whatever was written since; a version is immutable, so
an offset in it always names the same row.

Every ``fixed_size_list`` column of floats is a vector: ``vector(dim)`` for float32 (and
float64, stored as float32), ``halfvec(dim)`` for float16, and a ``list`` of them a
multivector (``vector(dim)[]``). The vectors go from Arrow's buffers into numpy arrays
without a copy and from there into the binary COPY rows: no Python float per value. The
other columns become the metadata (a null column left out), as JSON: numbers, strings and
booleans as they are, timestamps, dates and times as ISO 8601 text (every digit kept),
decimals as text (exact), binary values as base64 text, lists, structs and maps (string
keys) as arrays and objects.

A record's id is the ``--id-column`` (default ``id``; integers or strings). A table without
that column is read with LanceDB's row id (``_rowid``) as each record's id: stable only in
a table created with stable row ids, otherwise changed by an update or a compaction.

A metric exists only where a column has a vector index (its ``distance_type``); a column
without one records no metric.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar, cast

import numpy as np

from vec2pg.errors import ConfigError, SourceError, SourceNotFound, SourceUnavailable
from vec2pg.masking import mask_dsn
from vec2pg.records import (
    Cursor,
    Metric,
    Namespace,
    Record,
    SourceInfo,
    VectorField,
    VectorKind,
)
from vec2pg.sources.base import WHOLE, Call, Page
from vec2pg.sources.http import names_hint

T = TypeVar("T")

#: Rows per page: 2,048 rows of 1,536 float32 dimensions are 12 MB of Arrow.
DEFAULT_PAGE_SIZE = 2048
#: Rows per page when only ids are read (verification).
DEFAULT_IDS_PAGE_SIZE = 20_000
#: A chain of fewer pages than this is not split further: the split would cost more
#: queries than it saves.
MIN_PAGES_PER_CHAIN = 4
#: LanceDB's distance types as pgvector's metrics (hamming is for binary vectors).
_METRICS = {"l2": Metric.EUCLIDEAN, "cosine": Metric.COSINE, "dot": Metric.DOT}
ROW_ID = "_rowid"


@dataclass(frozen=True, slots=True)
class _Vector:
    """A vector column: its name, kind, dimension and element type (numpy)."""

    name: str
    kind: VectorKind
    dim: int
    dtype: str  # "float16", "float32" or "float64"


@dataclass(frozen=True, slots=True)
class _Plan:
    """How a page's batches become records (picklable, made once from the schema)."""

    id_column: str  # the id column, or ROW_ID
    vectors: tuple[_Vector, ...]
    metadata: tuple[str, ...]  # the other columns, in the table's order


class LanceDBSource:
    """Read every row of one version of a LanceDB table."""

    def __init__(
        self,
        table: str,
        *,
        uri: str | None = None,
        version: int | None = None,
        id_column: str = "id",
        page_size: int = DEFAULT_PAGE_SIZE,
        ids_page_size: int = DEFAULT_IDS_PAGE_SIZE,
    ) -> None:
        if not uri:
            raise ConfigError(
                "name the LanceDB database to read from: --uri (or LANCEDB_URI), a folder "
                "or s3://bucket/path"
            )
        if page_size < 1:
            raise ConfigError(f"--page-size must be at least 1, not {page_size}")
        if version is not None and version < 1:
            raise ConfigError(f"--version must be at least 1, not {version}")
        self.table = table
        self.uri = uri
        self.version = version
        self.id_column = id_column
        self.page_size = page_size
        self.ids_page_size = max(1, ids_page_size)
        self._local = "://" not in uri
        self.location = os.path.abspath(uri) if self._local else mask_dsn(uri)
        self._db: Any = None
        self._tables: dict[int, Any] = {}  # pinned handles by version
        #: The version describe() pinned: the one a fresh chain reads.
        self._pinned: int | None = None
        self._plan: _Plan | None = None

    # -- describing ---------------------------------------------------------------------

    def describe(self) -> SourceInfo:
        latest = self._open(None)
        version = self.version if self.version is not None else int(latest.version)
        table = self._pinned_table(version)
        self._pinned = version
        schema = table.schema
        self._plan = plan = self._plan_for(schema)
        metrics = self._call(_index_metrics, table)
        fields = tuple(
            VectorField(v.name, v.kind, v.dim, metrics.get(v.name), half=v.dtype == "float16")
            for v in plan.vectors
        )
        notes = []
        if plan.id_column == ROW_ID:
            notes.append(
                f"LanceDB table {self.table!r} has no column {self.id_column!r}: its rows' ids "
                "are LanceDB's row ids (_rowid), which an update or a compaction changes "
                "unless the table was created with stable row ids; name a column of ids "
                "with --id-column"
            )
        unindexed = [v.name for v in plan.vectors if v.name not in metrics]
        if unindexed:
            names = ", ".join(repr(n) for n in unindexed)
            notes.append(
                f"vector column{'s' if len(unindexed) > 1 else ''} {names} of LanceDB table "
                f"{self.table!r} {'have' if len(unindexed) > 1 else 'has'} no vector index, "
                "so no metric: --index leaves them out"
            )
        return SourceInfo(
            kind="lancedb",
            collection=self.table,
            location=self.location,
            fields=fields,
            namespaces=(Namespace("", int(self._call(table.count_rows))),),
            namespaced=False,
            notes=tuple(notes),
        )

    def _plan_for(self, schema: Any) -> _Plan:
        import pyarrow as pa

        vectors: list[_Vector] = []
        metadata: list[str] = []
        names = list(schema.names)
        for column in schema:
            vector = _vector_column(column)
            if vector is not None:
                vectors.append(vector)
            elif column.name != self.id_column:
                metadata.append(column.name)
        if not vectors:
            raise SourceError(
                f"LanceDB table {self.table!r} at {self.location} has no vector column (a "
                f"fixed_size_list of floats); its columns: {', '.join(names)}"
            )
        if self.id_column in names:
            kind = schema.field(self.id_column).type
            if pa.types.is_dictionary(kind):
                kind = kind.value_type
            if not (pa.types.is_integer(kind) or _is_text(kind)):
                raise ConfigError(
                    f"the id column {self.id_column!r} of LanceDB table {self.table!r} is "
                    f"{kind}; ids must be integers or strings: name another with --id-column"
                )
            if self.id_column in {v.name for v in vectors}:
                raise ConfigError(f"the id column {self.id_column!r} is a vector column")
            return _Plan(self.id_column, tuple(vectors), tuple(metadata))
        if self.id_column != "id":  # named on purpose: a typo is no reason for row ids
            raise ConfigError(
                f"LanceDB table {self.table!r} has no column {self.id_column!r} (--id-column); "
                f"{names_hint(self.id_column, names, 'its columns:')}"
            )
        return _Plan(ROW_ID, tuple(vectors), tuple(metadata))

    def _open(self, version: int | None) -> Any:
        """A handle of the table: the latest version, or pinned to ``version``."""
        db = self._connect()
        if version is None:
            try:
                return self._call(db.open_table, self.table)
            except ValueError as exc:
                if "not found" not in str(exc).lower():
                    raise SourceError(f"LanceDB table {self.table!r}: {exc}") from None
                names = self._call(_table_names, db)
                raise SourceNotFound(
                    f"LanceDB table {self.table!r} not found at {self.location}; "
                    f"{names_hint(self.table, names, 'it has')}"
                ) from None
        try:
            return self._call(db.open_table, self.table, version=version)
        except ValueError as exc:
            versions = [v["version"] for v in self._call(self._open(None).list_versions)]
            shown = f"{versions[0]} to {versions[-1]}" if versions else "none"
            raise SourceNotFound(
                f"LanceDB table {self.table!r} at {self.location} has no version {version} "
                f"({exc}; its versions: {shown}): choose another --version, or run again "
                "with --restart if an interrupted run read it"
            ) from None

    def _connect(self) -> Any:
        if self._db is None:
            if self._local and not os.path.isdir(self.uri):
                raise SourceNotFound(f"no LanceDB database at {self.location} (no such folder)")
            import lancedb

            self._db = self._call(lancedb.connect, self.uri)
        return self._db

    def _pinned_table(self, version: int) -> Any:
        table = self._tables.get(version)
        if table is None:
            table = self._tables[version] = self._open(version)
        return table

    # -- reading ------------------------------------------------------------------------

    def partitions(
        self, namespace: str, count: int | None, want: int, call: Call
    ) -> tuple[str, ...]:
        """Ranges of row offsets in the pinned version, each a chain of its own."""
        version = self._require_pinned()
        total = int(count or 0)
        chains = max(1, min(want, total // (MIN_PAGES_PER_CHAIN * self.page_size)))
        bounds = [total * k // chains for k in range(chains + 1)]
        return tuple(f"{version}:{bounds[k]}:{bounds[k + 1]}" for k in range(chains))

    def page(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        batches, offset, nxt = self._read(partition, cursor, self.page_size, columns=None)
        plan = self._require_plan()
        size = sum(b.num_rows for b in batches)
        return Page(
            load=partial(_records, plan, batches, self._describe_row(partition, offset)),
            next_cursor=nxt,
            size=size,
        )

    def page_ids(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        """A page of ids only: the query selects the id column (or the row ids) alone."""
        plan = self._require_plan()
        columns = [] if plan.id_column == ROW_ID else [plan.id_column]
        batches, offset, nxt = self._read(partition, cursor, self.ids_page_size, columns=columns)
        where = self._describe_row(partition, offset)
        listed = [i for batch in batches for i in _batch_ids(plan, batch)]
        ids = [where(n) if record_id is None else record_id for n, record_id in enumerate(listed)]
        return Page(
            load=partial(self.fetch, namespace, ids), next_cursor=nxt, size=len(ids), ids=ids
        )

    def fetch(self, namespace: str, ids: Sequence[str]) -> list[Record]:
        """The rows of the pinned version with these ids; ids it lacks are left out."""
        if not ids:
            return []
        plan = self._require_plan()
        table = self._pinned_table(self._require_pinned())
        if plan.id_column == ROW_ID:
            wanted = [int(i) for i in ids if i.isascii() and i.isdigit()]
            condition = f"_rowid IN ({', '.join(map(str, wanted))})" if wanted else "false"
        else:
            kind = table.schema.field(plan.id_column).type
            quoted = _column_sql(plan.id_column)
            if _is_text(kind) or _is_text(getattr(kind, "value_type", None)):
                values = ", ".join("'" + i.replace("'", "''") + "'" for i in ids)
            else:
                values = ", ".join(i for i in ids if _is_integer_text(i))
            condition = f"{quoted} IN ({values})" if values else "false"
        query = table.search().where(condition).limit(len(ids) + 1)
        if plan.id_column == ROW_ID:
            query = query.with_row_id(True)
        got = self._call(query.to_arrow)
        return _records(plan, got.to_batches(), lambda i: f"(a row without an id, {i})")

    def close(self) -> None:
        self._tables.clear()
        self._db = None

    def _read(
        self, partition: str, cursor: Cursor, limit: int, *, columns: list[str] | None
    ) -> tuple[list[Any], int, Cursor]:
        """The batches of a chain's page at ``cursor``, its first row's offset, and the
        cursor after it."""
        version, start, stop = self._range(partition)
        offset = start if cursor is None else int(cursor)
        want = limit if stop is None else min(limit, stop - offset)
        if want <= 0:
            return [], offset, None
        table = self._pinned_table(version)
        query = table.search().offset(offset).limit(want)
        if columns is not None:
            query = query.select(columns)
        if self._require_plan().id_column == ROW_ID:
            query = query.with_row_id(True)
        got = self._call(query.to_arrow)
        read = got.num_rows
        end = offset + read
        done = read < want or (stop is not None and end >= stop)
        return got.to_batches(), offset, None if done else end

    def _range(self, partition: str) -> tuple[int, int, int | None]:
        if partition == WHOLE:
            return self._require_pinned(), 0, None
        try:
            version, start, stop = (int(part) for part in partition.split(":"))
        except ValueError:
            raise SourceError(
                f"saved progress names a chain that is not a LanceDB one ({partition!r}); "
                "run again with --restart"
            ) from None
        return version, start, stop

    def _describe_row(self, partition: str, offset: int) -> Callable[[int], str]:
        """How a row without an id is named in errors and rejects: by its place."""
        version = self._range(partition)[0]

        def where(position: int) -> str:
            return f"(no {self.id_column}: row {offset + position} of version {version})"

        return where

    def _require_plan(self) -> _Plan:
        if self._plan is None:
            raise RuntimeError("describe() first")
        return self._plan

    def _require_pinned(self) -> int:
        if self._pinned is None:
            raise RuntimeError("describe() first")
        return self._pinned

    def _call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call LanceDB, translating its I/O failures (an object store that does not answer)
        into vec2pg's errors; a ValueError (no such table or version) is left to the caller."""
        try:
            return method(*args, **kwargs)
        except OSError as exc:
            if self._local:
                raise SourceError(f"LanceDB at {self.location}: {exc}") from None
            raise SourceUnavailable(f"LanceDB at {self.location} failed: {exc}") from None
        except RuntimeError as exc:  # lance's own errors (an object store's, a corrupt file)
            error = SourceError if self._local else SourceUnavailable
            raise error(f"LanceDB at {self.location}: {exc}") from None


def _table_names(db: Any) -> list[str]:
    """Every table of the database (``list_tables`` answers in pages)."""
    names: list[str] = []
    token = None
    while True:
        page = db.list_tables(page_token=token) if token else db.list_tables()
        names += list(page.tables)
        token = getattr(page, "page_token", None)
        if not token:
            return names


def _index_metrics(table: Any) -> dict[str, Metric]:
    """Each indexed vector column's metric (its index's distance type)."""
    metrics: dict[str, Metric] = {}
    for index in table.list_indices():
        stats = table.index_stats(index.name)
        distance = getattr(stats, "distance_type", None) if stats is not None else None
        metric = _METRICS.get(str(distance).lower()) if distance else None
        if metric is not None and len(index.columns) == 1:
            metrics[index.columns[0]] = metric
    return metrics


def _vector_column(column: Any) -> _Vector | None:
    """The column as a vector column, if it is one: a fixed-size list of floats (dense), or
    a list of them (a multivector)."""
    import pyarrow as pa

    kind = column.type
    if pa.types.is_fixed_size_list(kind) and pa.types.is_floating(kind.value_type):
        return _Vector(column.name, VectorKind.DENSE, kind.list_size, _dtype(kind.value_type))
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        inner = kind.value_type
        if pa.types.is_fixed_size_list(inner) and pa.types.is_floating(inner.value_type):
            return _Vector(column.name, VectorKind.MULTI, inner.list_size, _dtype(inner.value_type))
    return None


def _dtype(value_type: Any) -> str:
    return str(value_type.to_pandas_dtype().__name__)


def _is_text(kind: Any) -> bool:
    import pyarrow as pa

    return kind is not None and (pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _is_integer_text(text: str) -> bool:
    digits = text[1:] if text.startswith("-") else text
    return digits.isascii() and digits.isdigit()


def _column_sql(name: str) -> str:
    """A column's name as LanceDB's SQL filters spell it."""
    return "`" + name.replace("`", "``") + "`"


# -- turning batches into records (in the pipeline's loading threads) -------------------------


def _records(plan: _Plan, batches: Sequence[Any], where: Callable[[int], str]) -> list[Record]:
    """A page's batches as records: vectors as numpy views of Arrow's buffers, ids as text,
    every other column as metadata. ``where(i)`` names the page's i-th row if it has no id."""
    records: list[Record] = []
    position = 0
    for batch in batches:
        n = batch.num_rows
        if not n:
            continue
        ids = _batch_ids(plan, batch)
        read = {v.name: _vector_values(v, batch.column(v.name)) for v in plan.vectors}
        vectors = {name: values for name, (values, _) in read.items()}
        names = [name for name in plan.metadata if name in batch.schema.names]
        if names:
            columns = [_json_values(batch.column(name)) for name in names]
            # A null is left out: every row has every column, so a missing key says it.
            metadata = [
                {k: v for k, v in zip(names, row, strict=True) if v is not None}
                for row in zip(*columns, strict=True)
            ]
        else:
            metadata = [{} for _ in range(n)]
        if None not in ids and all(clean for _, clean in read.values()):
            named = cast(list[str], ids)
            if len(vectors) == 1:  # the common case, without a loop per field
                ((name, values),) = vectors.items()
                records += [
                    Record(i, {name: v}, m) for i, v, m in zip(named, values, metadata, strict=True)
                ]
            else:
                rows = zip(*vectors.values(), strict=True)
                records += [
                    Record(i, dict(zip(vectors, row, strict=True)), m)
                    for i, row, m in zip(named, rows, metadata, strict=True)
                ]
        else:
            for row in range(n):
                records.append(
                    _odd_record(plan, ids[row], vectors, row, metadata[row], where(position + row))
                )
        position += n
    return records


def _odd_record(
    plan: _Plan,
    record_id: str | None,
    vectors: dict[str, list[Any]],
    row: int,
    metadata: dict[str, Any],
    place: str,
) -> Record:
    """A row with a null id, a null vector or one that cannot be read (a str: why)."""
    problems = [values[row] for values in vectors.values() if isinstance(values[row], str)]
    if record_id is None:
        problems.append(f"its {plan.id_column!r} is null")
    return Record(
        record_id if record_id is not None else place,
        {name: None if isinstance(v[row], str) else v[row] for name, v in vectors.items()},
        metadata,
        invalid="; ".join(problems) or None,
    )


def _batch_ids(plan: _Plan, batch: Any) -> list[str | None]:
    """The batch's ids as text (None where null)."""
    import pyarrow as pa

    column = batch.column(plan.id_column)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    values = column.to_pylist()
    if _is_text(column.type):
        return list(values)
    return [None if value is None else str(value) for value in values]


def _vector_values(vector: _Vector, column: Any) -> tuple[list[Any], bool]:
    """Each row's vector: a numpy view (float32 copies of float64), None for a null one,
    or why it cannot be read (a str); and whether every row's is an array."""
    n = len(column)
    if vector.kind is VectorKind.DENSE:
        flat, bad = _flat_values(column, vector)
        matrix = flat.reshape(n, vector.dim)
        valid = column.is_valid().to_numpy(zero_copy_only=False) if column.null_count else None
        out: list[Any] = list(matrix)
        if valid is None and bad is None:
            return out, True
        for row in range(n):
            if valid is not None and not valid[row]:
                out[row] = None
            elif bad is not None and bad[row]:
                out[row] = f"vector {vector.name!r} has null values"
        return out, False
    # A multivector: a list of fixed-size lists, row i its sub-vectors offsets[i]:offsets[i+1].
    offsets = column.offsets.to_numpy(zero_copy_only=False)
    inner = column.values
    flat, bad = _flat_values(inner, vector)
    matrix = flat.reshape(len(inner), vector.dim)
    valid = column.is_valid().to_numpy(zero_copy_only=False) if column.null_count else None
    inner_valid = inner.is_valid().to_numpy(zero_copy_only=False) if inner.null_count else None
    multi: list[Any] = []
    for row in range(n):
        lo, hi = int(offsets[row]), int(offsets[row + 1])
        if valid is not None and not valid[row]:
            multi.append(None)
        elif (inner_valid is not None and not inner_valid[lo:hi].all()) or (
            bad is not None and bad[lo:hi].any()
        ):
            multi.append(f"multivector {vector.name!r} has null sub-vectors or values")
        else:
            multi.append(matrix[lo:hi])
    return multi, valid is None and inner_valid is None and bad is None


def _flat_values(column: Any, vector: _Vector) -> tuple[np.ndarray, np.ndarray | None]:
    """A fixed-size-list column's values as one flat numpy array (a view of Arrow's buffer;
    ``.values`` ignores a slice's offset, so it is sliced here), and which rows hold a null
    value (None: none does)."""
    dim = vector.dim
    values = column.values.slice(column.offset * dim, len(column) * dim)
    bad = None
    if values.null_count:
        import pyarrow.compute as pc

        nulls = pc.is_null(values).to_numpy(zero_copy_only=False)
        bad = nulls.reshape(-1, dim).any(axis=1)
        flat = values.fill_null(0).to_numpy(zero_copy_only=False)
    else:
        flat = values.to_numpy(zero_copy_only=True)
    if flat.dtype != np.float32:
        # A record's vectors are float32 (vec2pg.records): float16 values exactly so (their
        # halfvec column stores them as they were), float64 ones rounded, as vector holds.
        flat = flat.astype(np.float32)
    return flat, bad


def _json_values(column: Any) -> list[Any]:
    """A column's values as JSON-able Python values, converted a column at a time."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.dictionary_decode()
        kind = column.type
    if pa.types.is_float16(kind):
        return list(column.cast(pa.float32()).to_pylist())
    if pa.types.is_timestamp(kind):
        # Every digit of the unit, and the zone: '2023-11-14T22:13:20.123456Z'.
        text = column.cast(pa.string())
        return list(pc.replace_substring(text, " ", "T", max_replacements=1).to_pylist())
    if pa.types.is_date(kind) or pa.types.is_time(kind):
        return list(column.cast(pa.string()).to_pylist())
    if pa.types.is_duration(kind):
        return list(column.cast(pa.int64()).to_pylist())  # in the column's unit
    if pa.types.is_decimal(kind):
        return [None if v is None else format(v, "f") for v in column.to_pylist()]
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return [_plain(v) for v in column.to_pylist()]
    if pa.types.is_fixed_size_binary(kind):
        return [_plain(v) for v in column.to_pylist()]
    if pa.types.is_map(kind) and _is_text(kind.key_type):
        return [None if v is None else {k: _plain(x) for k, x in v} for v in column.to_pylist()]
    if pa.types.is_nested(kind):
        return [_plain(v) for v in column.to_pylist()]
    return list(column.to_pylist())


def _plain(value: Any) -> Any:
    """A nested value as JSON can hold it (see the module's docstring)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            if all(isinstance(k, str) for k, _ in value):  # a map with string keys
                return {k: _plain(v) for k, v in value}
            return [[_plain(k), _plain(v)] for k, v in value]
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if hasattr(value, "isoformat"):  # pandas' Timestamp, for nanoseconds
        return value.isoformat()
    return str(value)
