"""Check each record against what PostgreSQL and pgvector accept, and turn it into a COPY row.

A record that cannot be stored as it is raises :class:`~vec2pg.errors.InvalidRecord` with
its id, namespace and the reason, *before* any of its batch reaches COPY. Nothing is
altered, with two exceptions that leave every vector exactly as it was: a sparse vector's
entries are put in index order, and its explicit zeros (which pgvector's binary format
refuses) are left out. Removing NUL characters from metadata is a change, made only when
asked (``strip_nul``) and counted.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from pgvector import HalfVector
from psycopg.adapt import Dumper
from psycopg.pq import Format

from vec2pg.errors import InvalidRecord
from vec2pg.postgres.layout import (
    HALFVEC_OVERFLOW,
    MAX_HALFVEC_VALUE,
    MAX_SPARSE_NNZ,
    SPARSE_DIM,
    TableLayout,
    VectorColumn,
)
from vec2pg.records import Record, SparseVector, VectorKind

#: Longer ids cannot be keys: a btree entry must fit in a third of an 8 kB page (2,704
#: bytes), and no source we read allows more than 512 (Pinecone) or 36 (a Qdrant UUID).
MAX_ID_BYTES = 2048
#: jsonb's largest value (a 28-bit offset: 256 MB, less its header).
MAX_JSONB_BYTES = (1 << 28) - 1024
#: jsonb cannot hold U+0000: an escape ``\u0000`` not itself escaped by a backslash.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


class EncodedJson(str):
    """Metadata already serialised (and checked) as JSON text."""


class JsonbBinaryDumper(Dumper):
    """Send :class:`EncodedJson` as binary jsonb: a version byte, then the text."""

    format = Format.BINARY

    def dump(self, obj: EncodedJson) -> bytes:
        return b"\x01" + obj.encode()


class SparseBinaryDumper(Dumper):
    """Send :class:`~vec2pg.records.SparseVector` as pgvector's binary sparsevec.

    Layout (pgvector's sparsevec_recv): int32 dim, int32 nnz, int32 unused, nnz int32
    indices (0-based), nnz float4 values; all big-endian.
    """

    format = Format.BINARY

    def dump(self, obj: SparseVector) -> bytes:
        header = struct.pack(">iii", SPARSE_DIM, len(obj.indices), 0)
        return header + obj.indices.astype(">i4").tobytes() + obj.values.astype(">f4").tobytes()


#: Checks a record and returns its COPY row, and whether it had to be altered to fit.
RowEncoder = Callable[[Record], tuple[Sequence[Any], bool]]


def row_encoder(layout: TableLayout, *, strip_nul: bool = False) -> RowEncoder:
    """Return a function that checks a record and returns its COPY row for ``layout``.

    With ``strip_nul``, NUL characters are removed from metadata strings and keys (the
    record then counts as altered); otherwise a NUL is a reason to refuse the record.
    """
    checks = [(column.field.name, _vector_check(column)) for column in layout.vectors]
    known = {column.field.name for column in layout.vectors}

    def encode(record: Record) -> tuple[Sequence[Any], bool]:
        altered = False
        try:
            row: list[Any] = [_check_text(record.id, "id")]
            if layout.namespaced:
                row.append(_check_text(record.namespace, "namespace"))
            extra = record.vectors.keys() - known
            if extra:
                names = ", ".join(sorted(repr(n) for n in extra))
                raise ValueError(f"has vectors the source did not describe: {names}")
            vectors = [record.vectors.get(name) for name, _ in checks]
            if checks and all(value is None for value in vectors):
                raise ValueError("has no vector at all")
            for (_, check), value in zip(checks, vectors, strict=True):
                row.append(None if value is None else check(value))
            metadata = record.metadata
            if strip_nul and metadata is not None:
                cleaned = without_nul(metadata)
                altered = cleaned != metadata
                metadata = cleaned
            row.append(_metadata(metadata))
        except ValueError as exc:
            raise InvalidRecord(record.id, record.namespace, str(exc)) from None
        return row, altered

    return encode


def without_nul(value: Any) -> Any:
    """``value`` as ``--strip-nul`` stores it: without NUL characters in any string."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value


def _check_text(value: str, what: str) -> str:
    if not value and what == "id":
        raise ValueError("the id is empty")
    if "\x00" in value:
        raise ValueError(f"the {what} contains a NUL character, which PostgreSQL text cannot hold")
    size = len(value.encode())
    if what == "id" and size > MAX_ID_BYTES:
        raise ValueError(f"the id is {size} bytes; the most a key may hold is {MAX_ID_BYTES}")
    return value


def _metadata(metadata: dict[str, Any] | None) -> EncodedJson | None:
    if metadata is None:
        return None
    try:
        text = json.dumps(metadata, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:  # allow_nan=False: JSON has no NaN or infinity
        raise ValueError("metadata holds NaN or infinity, which JSON cannot express") from None
    except TypeError as exc:
        raise ValueError(f"metadata is not representable as JSON: {exc}") from None
    if "\\u0000" in text and _JSON_NUL.search(text):
        raise ValueError(
            "metadata contains a NUL character (\\u0000), which jsonb cannot hold "
            "(--strip-nul removes them)"
        )
    if len(text) > MAX_JSONB_BYTES:
        raise ValueError(
            f"metadata is {len(text):,} bytes; jsonb holds at most {MAX_JSONB_BYTES:,}"
        )
    return EncodedJson(text)


def _vector_check(column: VectorColumn) -> Callable[[Any], Any]:
    field = column.field
    label = f"vector {field.name!r}" if field.name else "the vector"

    def dense(value: np.ndarray) -> Any:
        if value.ndim != 1 or value.shape[0] != field.dim:
            raise ValueError(f"{label} has {_shape(value)} values; the index has {field.dim}")
        _check_finite(value, label)
        if column.halfvec:
            _check_half(value, label)
            return HalfVector(value)
        return value

    def multi(value: np.ndarray) -> list[Any]:
        if value.ndim != 2 or value.shape[1] != field.dim:
            raise ValueError(
                f"{label} is a multivector of shape {value.shape}; "
                f"each must have {field.dim} values"
            )
        _check_finite(value, label)
        if column.halfvec:
            _check_half(value, label)
            return [HalfVector(v) for v in value]
        return list(value)

    def sparse(value: SparseVector) -> SparseVector:
        indices, values = value.indices, value.values
        if indices.ndim != 1 or indices.shape != values.shape:
            raise ValueError(f"sparse {label} has {indices.size} indices but {values.size} values")
        _check_finite(values, f"sparse {label}")
        if indices.size and (indices.min() < 0 or indices.max() >= SPARSE_DIM):
            bad = indices.max() if indices.max() >= SPARSE_DIM else indices.min()
            raise ValueError(
                f"sparse {label} has index {bad}; "
                f"pgvector's sparsevec holds indices 0 to {SPARSE_DIM - 1}"
            )
        if indices.size > 1 and not np.all(indices[1:] > indices[:-1]):
            order = np.argsort(indices, kind="stable")
            indices, values = indices[order], values[order]
            if np.any(indices[1:] == indices[:-1]):
                dup = indices[1:][indices[1:] == indices[:-1]][0]
                raise ValueError(f"sparse {label} repeats index {dup}")
        nonzero = values != 0
        if not nonzero.all():
            indices, values = indices[nonzero], values[nonzero]
        if indices.size > MAX_SPARSE_NNZ:
            raise ValueError(
                f"sparse {label} has {indices.size} non-zero values; "
                f"pgvector accepts at most {MAX_SPARSE_NNZ}"
            )
        if indices is value.indices and values is value.values:
            return value
        return SparseVector(indices, values)

    checks: dict[VectorKind, Callable[[Any], Any]] = {
        VectorKind.DENSE: dense,
        VectorKind.MULTI: multi,
        VectorKind.SPARSE: sparse,
    }
    check = checks[field.kind]
    expected = SparseVector if field.kind is VectorKind.SPARSE else np.ndarray

    def typed(value: Any) -> Any:
        if not isinstance(value, expected):
            raise ValueError(
                f"{label} is a {type(value).__name__}, expected a {field.kind.value} vector"
            )
        return check(value)

    return typed


def _check_finite(values: np.ndarray, label: str) -> None:
    if not np.isfinite(values).all():
        bad = values[~np.isfinite(values)].flat[0]
        raise ValueError(f"{label} contains {bad}; PostgreSQL vectors hold only finite numbers")


def _check_half(values: np.ndarray, label: str) -> None:
    # Checked before converting: beyond it float16 is infinity, which halfvec refuses for
    # the whole COPY without naming the record.
    if values.size and np.abs(values).max() >= HALFVEC_OVERFLOW:
        bad = values.flat[int(np.abs(values).argmax())]
        raise ValueError(
            f"{label} contains {bad}, beyond halfvec's range (+-{MAX_HALFVEC_VALUE:,.0f}): "
            "store it without --halfvec"
        )


def _shape(value: np.ndarray) -> str:
    return str(value.shape[0]) if value.ndim == 1 else f"shape {value.shape}"
