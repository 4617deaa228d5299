"""Check that a table holds what its source holds: ``vec2pg verify``.

Three checks, namespace by namespace:

* **counts**: the ids the source lists, and the rows the table holds;
* **ids**: every id the source lists is a row of the table, and every row an id of the
  source. The ids are streamed page by page into a temporary table in PostgreSQL
  (``COPY``) and compared there with anti-joins, so memory stays flat however large the
  namespace; the report names the first few ids on either side;
* **a sample**: up to ``sample`` ids per namespace, drawn uniformly while the ids stream
  past (reservoir sampling), are fetched from the source and compared field by field
  with their rows: vectors exactly as float32 (within half precision for a ``halfvec``
  column, and after normalising both for a cosine vector, since Qdrant normalises those
  on upsert), sparse vectors as sorted non-zero entries (as the sink stores them), text
  fields (Chroma's documents) as text, and metadata as JSON values (``2020`` equals
  ``2020.0``: Pinecone returns every number as a float).

The source only lists and fetches (:class:`~vec2pg.sources.base.VerifiableSource`);
transient failures are retried as a migration retries them. Nothing is written to the
table.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from vec2pg.errors import ConfigError, ExitCode
from vec2pg.postgres.compare import StoredColumn, TargetTable
from vec2pg.postgres.encode import without_nul
from vec2pg.postgres.layout import TextColumn, layout_for
from vec2pg.reading import (
    SPLIT_IN_FLIGHT,
    Chain,
    ChainReader,
    Retrier,
    RetryEvents,
    RetryPolicy,
    select_namespaces,
)
from vec2pg.records import Metric, Record, SparseVector, VectorKind
from vec2pg.sources.base import FETCH_MAX_IDS, Page, VerifiableSource

#: Ids on one side only that a report names (the count is always complete); the text
#: report shows the first few of them.
SHOWN_IDS = 10
SHOWN_IDS_TEXT = 3
#: Records per namespace compared field by field, unless the caller says otherwise.
DEFAULT_SAMPLE = 100
#: A halfvec holds 11 significant bits: a float32 rounds to within 2**-11 (4.9e-4) of
#: itself, relatively, or to within the smallest subnormal half (2**-24) near zero.
HALF_RTOL = 1e-3
HALF_ATOL = 2.0**-24
#: Normalising a float32 vector rounds each component by a few units in the last place
#: (~1e-7 for a unit vector's components); these bounds leave room for that and no more.
COSINE_RTOL = 1e-5
COSINE_ATOL = 1e-6
#: Differences the text report lists before it only counts the rest.
SHOWN_DIFFERENCES = 10


# -- the report ---------------------------------------------------------------------------


@dataclass(slots=True)
class IdDifference:
    """Ids found on one side only: how many, and the first few in byte order."""

    count: int = 0
    ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """``{"count": ..., "ids": [...]}``."""
        return {"count": self.count, "ids": list(self.ids)}


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A sampled record whose ``field`` (a column of the table) differs from its row."""

    id: str
    namespace: str
    field: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        """``{"id", "namespace", "field", "reason"}``."""
        return {
            "id": self.id,
            "namespace": self.namespace,
            "field": self.field,
            "reason": self.reason,
        }


@dataclass(slots=True)
class NamespaceCheck:
    """What verification found in one namespace."""

    source_count: int = 0  # ids the source listed
    target_count: int = 0  # rows the table holds
    missing_in_target: IdDifference = field(default_factory=IdDifference)
    extra_in_target: IdDifference = field(default_factory=IdDifference)
    sampled: int = 0  # records compared field by field
    mismatched: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the namespace's rows are exactly its source's records."""
        return (
            self.source_count == self.target_count
            and not self.missing_in_target.count
            and not self.extra_in_target.count
            and not self.mismatched
        )

    def as_dict(self) -> dict[str, Any]:
        """The check as JSON-able data (see :meth:`VerifyReport.as_dict`)."""
        return {
            "ok": self.ok,
            "source_count": self.source_count,
            "target_count": self.target_count,
            "missing_in_target": self.missing_in_target.as_dict(),
            "extra_in_target": self.extra_in_target.as_dict(),
            "sampled": self.sampled,
            "mismatched": [m.as_dict() for m in self.mismatched],
        }


@dataclass(slots=True)
class VerifyReport:
    """The result of :func:`verify`: one :class:`NamespaceCheck` per namespace."""

    source: str  # "qdrant", "pinecone"
    collection: str
    target: str  # the table, as typed in psql
    namespaced: bool
    namespaces: dict[str, NamespaceCheck] = field(default_factory=dict)
    seconds: float = 0.0
    retries: int = 0

    @property
    def ok(self) -> bool:
        """Whether the table matches the source in every check."""
        return all(check.ok for check in self.namespaces.values())

    @property
    def exit_code(self) -> ExitCode:
        """``OK``, or ``DIFFERS`` when any check found a difference."""
        return ExitCode.OK if self.ok else ExitCode.DIFFERS

    def totals(self) -> dict[str, int]:
        """Counts summed over the namespaces."""
        checks = self.namespaces.values()
        return {
            "source_count": sum(c.source_count for c in checks),
            "target_count": sum(c.target_count for c in checks),
            "missing_in_target": sum(c.missing_in_target.count for c in checks),
            "extra_in_target": sum(c.extra_in_target.count for c in checks),
            "sampled": sum(c.sampled for c in checks),
            "mismatched": sum(len(c.mismatched) for c in checks),
        }

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-able data: ``ok``, the totals and every namespace's check."""
        return {
            "ok": self.ok,
            "source": self.source,
            "collection": self.collection,
            "target": self.target,
            **self.totals(),
            "seconds": round(self.seconds, 3),
            "retries": self.retries,
            "namespaces": {name: check.as_dict() for name, check in self.namespaces.items()},
        }

    def text(self) -> str:
        """A short report for people: counts, the first differences, then a verdict line."""
        totals = self.totals()
        lines = [
            f"{self.source} {self.collection!r} vs {self.target}: "
            f"{totals['source_count']:,} records in the source, "
            f"{totals['target_count']:,} rows in the table"
            + (
                f" ({_count(len(self.namespaces), 'namespace', 'namespaces')})"
                if self.namespaced
                else ""
            )
        ]
        details: list[str] = []
        for name, check in self.namespaces.items():
            where = f"namespace {name!r}: " if self.namespaced else ""
            for side, found in (
                ("missing in the table", check.missing_in_target),
                ("only in the table", check.extra_in_target),
            ):
                if found.count:
                    shown = ", ".join(repr(i) for i in found.ids[:SHOWN_IDS_TEXT])
                    more = ", ..." if found.count > SHOWN_IDS_TEXT else ""
                    details.append(f"  {where}{found.count:,} {side}: {shown}{more}")
            if check.source_count != check.target_count and not (
                check.missing_in_target.count or check.extra_in_target.count
            ):  # equal id sets but unequal counts: the source listed an id twice
                details.append(
                    f"  {where}{check.source_count:,} ids listed by the source, "
                    f"{check.target_count:,} rows"
                )
            details += [f"  {where}{m.id!r} {m.field}: {m.reason}" for m in check.mismatched]
        if len(details) > SHOWN_DIFFERENCES:
            rest = len(details) - SHOWN_DIFFERENCES + 1
            details = [*details[: SHOWN_DIFFERENCES - 1], f"  ... and {rest:,} more"]
        lines += details
        compared = f"{totals['sampled']:,} compared field by field"
        if self.ok:
            lines.append(f"OK: the table matches the source ({compared})")
        else:
            lines.append(
                f"DIFFERS: {totals['missing_in_target']:,} missing in the table, "
                f"{totals['extra_in_target']:,} only in the table, "
                f"{_count(totals['mismatched'], 'field differs', 'fields differ')} ({compared})"
            )
        return "\n".join(lines)


# -- verification -------------------------------------------------------------------------


def verify(
    source: VerifiableSource,
    dsn: str,
    *,
    schema: str = "vec2pg",
    table: str | None = None,
    namespaces: tuple[str, ...] = (),
    sample: int = DEFAULT_SAMPLE,
    concurrency: int = 4,
    retry: RetryPolicy | None = None,
    events: RetryEvents | None = None,
    strip_nul: bool = False,
    layout: str = "vec2pg",
    vector: str | None = None,
) -> VerifyReport:
    """Compare ``source`` with the table it was migrated into, and report every difference.

    ``schema`` and ``table`` name the table as the migration did (``table`` defaults to the
    collection's name). ``namespaces`` restricts the check (empty: every namespace of the
    source, and any namespace only the table has). Up to ``sample`` records per namespace
    are compared field by field. ``concurrency`` id pages are listed at once where the
    source splits a namespace (Pinecone). Transient source failures are retried by
    ``retry``; ``events`` only hears of those retries. ``strip_nul``: the migration ran
    with ``--strip-nul``, so NUL characters in source metadata are ignored.

    The caller owns ``source`` (and closes it). Raises :class:`~vec2pg.errors.ConfigError`
    for bad arguments, :class:`~vec2pg.errors.TargetStateError` when the table is missing
    or not laid out for this source, and the source's and PostgreSQL's errors.
    """
    if sample < 0:
        raise ConfigError(f"--sample must be 0 or more, not {sample}")
    if concurrency < 1:
        raise ConfigError(f"--concurrency must be at least 1, not {concurrency}")
    started = time.monotonic()
    retrier = Retrier(retry or RetryPolicy(), events, concurrency)
    info = retrier.starting(source.describe)
    selected = select_namespaces(info, namespaces)
    shape = layout_for(info, schema, table, style=layout, vector=vector)
    report = VerifyReport(info.kind, info.collection, shape.display, info.namespaced)
    with TargetTable(dsn, shape) as target:
        held = target.counts([ns.name for ns in selected] if namespaces else None)
        if info.namespaced and not shape.namespaced:
            # A vecs collection holds one namespace of the source, and no namespace column.
            if len(selected) != 1:
                raise ConfigError("a vecs collection holds one namespace: name it with --namespace")
            held = {selected[0].name: held.get("", 0)}
        for ns in selected:
            check = report.namespaces[ns.name] = NamespaceCheck(target_count=held.get(ns.name, 0))
            chains = [
                Chain(ns.name, partition)
                for partition in source.partitions(
                    ns.name, ns.count, 2 * concurrency, retrier.limited(SPLIT_IN_FLIGHT)
                )
            ]
            reservoir = _Reservoir(sample, random.Random())
            listed = ChainReader(
                chains,
                source.page_ids,
                partial(_page_ids, retrier),
                concurrency=concurrency,
                retrier=retrier,
                counts={ns.name: ns.count},
            )
            target.copy_ids(reservoir.passing(ids for _, ids, _ in listed))
            check.source_count = reservoir.seen
            check.missing_in_target = IdDifference(*target.missing(ns.name, SHOWN_IDS))
            check.extra_in_target = IdDifference(*target.extra(ns.name, SHOWN_IDS))
            target.forget_ids()
            _compare_sample(source, retrier, target, ns.name, reservoir.items, check, strip_nul)
        if info.namespaced and not namespaces:
            # Namespaces the source no longer has (or never had): every row is extra.
            for name in sorted(held.keys() - report.namespaces.keys()):
                check = report.namespaces[name] = NamespaceCheck(target_count=held[name])
                # Against no source ids at all.
                check.extra_in_target = IdDifference(*target.extra(name, SHOWN_IDS))
    report.seconds = time.monotonic() - started
    report.retries = retrier.retries
    return report


def _page_ids(retrier: Retrier, page: Page) -> list[str]:
    # page_ids may hand back a whole page where listing ids costs as much as reading.
    if page.ids is not None:
        return page.ids
    return [record.id for record in retrier.call(page.load)]


class _Reservoir:
    """A uniform sample of ``size`` items from a stream of unknown length (Li's
    Algorithm L: it draws random numbers only for the items it keeps, so a page of ids
    costs a slice, not a loop over every id)."""

    def __init__(self, size: int, rng: random.Random) -> None:
        self.size = size
        self.items: list[str] = []
        self.seen = 0
        self._rng = rng
        self._w = 1.0
        self._next = 0  # the stream position of the next item to keep, once full
        if size:
            self._w = math.exp(math.log(self._uniform()) / size)
            self._next = size + self._skip()

    def _uniform(self) -> float:
        return 1.0 - self._rng.random()  # in (0, 1]: its log is finite

    def _skip(self) -> int:
        if self._w >= 1.0:
            return 0
        return math.floor(math.log(self._uniform()) / math.log1p(-self._w))

    def add(self, items: Sequence[str]) -> None:
        """Offer ``items``, the next part of the stream."""
        if self.size and len(self.items) < self.size:
            self.items.extend(items[: self.size - len(self.items)])
        end = self.seen + len(items)
        while self.size and self._next < end:
            self.items[self._rng.randrange(self.size)] = items[self._next - self.seen]
            self._w *= math.exp(math.log(self._uniform()) / self.size)
            self._next += self._skip() + 1
        self.seen = end

    def passing(self, pages: Iterable[Sequence[str]]) -> Iterator[Sequence[str]]:
        """Yield ``pages`` unchanged, offering each to the sample on its way."""
        for page in pages:
            self.add(page)
            yield page


def _compare_sample(
    source: VerifiableSource,
    retrier: Retrier,
    target: TargetTable,
    namespace: str,
    ids: list[str],
    check: NamespaceCheck,
    strip_nul: bool,
) -> None:
    """Fetch the sampled records and compare each with its row, noting what differs."""
    ids = sorted(ids)
    for start in range(0, len(ids), FETCH_MAX_IDS):
        chunk = ids[start : start + FETCH_MAX_IDS]
        records = {r.id: r for r in retrier.call(source.fetch, namespace, chunk)}
        rows = target.rows(namespace, chunk)
        for record_id in chunk:
            record, row = records.get(record_id), rows.get(record_id)
            # A record deleted at the source since it was listed, or a row the table lacks
            # (already counted as missing), cannot be compared.
            if record is None or row is None:
                continue
            check.sampled += 1
            check.mismatched += [
                Mismatch(record_id, namespace, column, reason)
                for column, reason in _differences(
                    target.columns, target.texts, target.folded, record, row, strip_nul
                )
            ]


# -- the table ----------------------------------------------------------------------------


def _differences(
    columns: Sequence[StoredColumn],
    texts: Sequence[TextColumn],
    folded: Sequence[str],
    record: Record,
    row: dict[str, Any],
    strip_nul: bool,
) -> Iterator[tuple[str, str]]:
    """(column, reason) for every field of ``record`` that its ``row`` does not hold
    (``folded``: text fields the table keeps in its metadata, as a vecs collection does)."""
    for column in columns:
        vector = column.vector
        reason = _vector_difference(record.vectors.get(vector.field.name), row[vector.name], column)
        if reason is not None:
            yield vector.name, reason
    for text in texts:
        want = record.texts.get(text.field)
        if strip_nul and isinstance(want, str):
            want = want.replace("\x00", "")
        if want != row[text.name]:
            yield text.name, f"source {_short(want)}, table {_short(row[text.name])}"
    metadata = record.metadata
    if folded:
        metadata = {
            **(metadata or {}),
            **{n: record.texts[n] for n in folded if record.texts.get(n)},
        }
    if strip_nul and metadata is not None:
        metadata = without_nul(metadata)
    # No metadata and an empty object are the same to every source; Qdrant's scroll and
    # retrieve may answer either for a point without payload.
    reason = _json_difference(metadata or {}, row["metadata"] or {}, "$")
    if reason is not None:
        yield "metadata", reason


def _count(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


# -- comparing fields ---------------------------------------------------------------------


def _vector_difference(source: Any, stored: Any, column: StoredColumn) -> str | None:
    """Why the stored value of a vector column is not the source's vector, or None."""
    if source is None and stored is None:
        return None
    if source is None:
        return "the source record has no such vector, the table has one"
    if stored is None:
        return "the table holds NULL"
    field_ = column.vector.field
    if field_.kind is VectorKind.SPARSE:
        return _sparse_difference(source, stored)
    if field_.kind is VectorKind.BINARY:
        return _bits_difference(np.asarray(source, dtype=np.uint8), stored, int(field_.dim or 0))
    cosine = field_.metric is Metric.COSINE
    if field_.kind is VectorKind.DENSE:
        return _dense_difference(np.asarray(source), _array(stored), column.half, cosine)
    rows = np.asarray(source)
    if rows.ndim != 2 or len(rows) != len(stored):
        return f"the source has {len(rows)} vectors, the table {len(stored)}"
    for number, (want, got) in enumerate(zip(rows, stored, strict=True)):
        reason = _dense_difference(want, _array(got), column.half, cosine)
        if reason is not None:
            return f"vector {number} of {len(rows)}: {reason}"
    return None


def _dense_difference(
    source: np.ndarray, stored: np.ndarray, half: bool, cosine: bool
) -> str | None:
    if source.shape != stored.shape:
        return f"the source has {source.size} values, the table {stored.size}"
    want, got = source.astype(np.float64), stored.astype(np.float64)
    rtol, atol = (HALF_RTOL, HALF_ATOL) if half else (0.0, 0.0)
    close = np.abs(want - got) <= rtol * np.abs(want) + atol
    if close.all():
        return None
    if cosine:
        # Qdrant normalises cosine vectors on upsert and returns them normalised, except
        # local mode after a reopen: either side may hold the other's unit vector.
        unit_want, unit_got = _unit(want), _unit(got)
        rtol, atol = max(rtol, COSINE_RTOL), max(atol, COSINE_ATOL)
        if (np.abs(unit_want - unit_got) <= rtol * np.abs(unit_want) + atol).all():
            return None
    worst = int(np.argmax(np.abs(want - got)))
    return (
        f"{int(np.count_nonzero(~close))} of {source.size} values differ; the largest "
        f"difference at index {worst}: source {want[worst]:.9g}, table {got[worst]:.9g}"
    )


def _sparse_difference(source: SparseVector, stored: Any) -> str | None:
    # The sink stores entries in index order and leaves explicit zeros out.
    order = np.argsort(source.indices, kind="stable")
    indices, values = source.indices[order], source.values[order]
    nonzero = values != 0
    indices, values = indices[nonzero].astype(np.int64), values[nonzero].astype(np.float32)
    got_indices = np.asarray(stored.indices(), dtype=np.int64)
    got_values = np.asarray(stored.values(), dtype=np.float32)
    if not np.array_equal(indices, got_indices):
        only_source = np.setdiff1d(indices, got_indices)
        only_table = np.setdiff1d(got_indices, indices)
        return (
            f"non-zero indices differ: {only_source.size} only at the source "
            f"{only_source[:3].tolist()}, {only_table.size} only in the table "
            f"{only_table[:3].tolist()}"
        )
    differ = np.flatnonzero(values != got_values)
    if differ.size == 0:
        return None
    first = int(differ[0])
    return (
        f"{differ.size} of {values.size} values differ; at index {int(indices[first])}: "
        f"source {float(values[first]):.9g}, table {float(got_values[first]):.9g}"
    )


def _bits_difference(source: np.ndarray, stored: Any, bits: int) -> str | None:
    """Why a stored bit string (binary: int32 length, then the bits) differs, or None."""
    if isinstance(stored, str):
        held = np.packbits(np.frombuffer(stored.encode(), dtype=np.uint8) - ord("0"))
    else:
        held = np.frombuffer(bytes(stored)[4:], dtype=np.uint8)
    want = np.unpackbits(source)[:bits]
    got = np.unpackbits(held)[:bits]
    if want.shape == got.shape and np.array_equal(want, got):
        return None
    if want.shape != got.shape:
        return f"the source has {want.size} bits, the table {got.size}"
    differ = np.flatnonzero(want != got)
    return f"{differ.size} of {bits} bits differ; the first at bit {int(differ[0])}"


def _array(value: Any) -> np.ndarray:
    """A vector or halfvec as pgvector's loaders return it, as a numpy array."""
    if isinstance(value, np.ndarray):
        return value
    return np.asarray(value.to_numpy())


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _json_difference(source: Any, stored: Any, path: str) -> str | None:
    """Where two JSON values first differ (a JSONPath and both values), or None.

    Numbers compare by value (``2020 == 2020.0``), but a boolean is never a number.
    """
    if isinstance(source, dict) and isinstance(stored, dict):
        for key in sorted(source.keys() | stored.keys()):
            where = f"{path}.{key}" if _PLAIN_KEY.match(key) else f"{path}[{json.dumps(key)}]"
            if key not in stored:
                return f"{where} is missing in the table"
            if key not in source:
                return f"{where} is only in the table"
            reason = _json_difference(source[key], stored[key], where)
            if reason is not None:
                return reason
        return None
    if isinstance(source, list) and isinstance(stored, list):
        if len(source) != len(stored):
            return f"{path} has {len(source)} items at the source, {len(stored)} in the table"
        for number, (want, got) in enumerate(zip(source, stored, strict=True)):
            reason = _json_difference(want, got, f"{path}[{number}]")
            if reason is not None:
                return reason
        return None
    if _same_scalar(source, stored):
        return None
    return f"{path}: source {_short(source)}, table {_short(stored)}"


def _same_scalar(source: Any, stored: Any) -> bool:
    if isinstance(source, bool) or isinstance(stored, bool):
        return type(source) is type(stored) and source == stored  # JSON true is not 1
    numbers = (int, float)
    if isinstance(source, numbers) and isinstance(stored, numbers):
        if source == stored:
            return True
        try:
            # jsonb prints 1e300 as its 301 digits, which read back as an int.
            return float(source) == float(stored)
        except OverflowError:
            return False
    return type(source) is type(stored) and bool(source == stored)


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
