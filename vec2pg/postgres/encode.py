"""Check each record against what PostgreSQL and pgvector accept, and turn it into a COPY row.

Rows are made here in binary COPY's own format, field by field (pgvector's binary vector,
halfvec and sparsevec, jsonb's version byte and text), so that the sink only sends bytes:
a page of records can then be encoded in another process (:class:`PageEncoder` pickles),
off the interpreter that writes to PostgreSQL.

A record that cannot be stored as it is raises :class:`~vec2pg.errors.InvalidRecord` with
its id, namespace and the reason, *before* any of its batch reaches COPY. Nothing is
altered, with two exceptions that leave every vector exactly as it was: a sparse vector's
entries are put in index order, and its explicit zeros (which pgvector's binary format
refuses) are left out. Removing NUL characters from metadata is a change, made only when
asked (``strip_nul``) and counted.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import orjson

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
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


#: pgvector's binary sparsevec header: int32 dim, int32 nnz, int32 unused (big-endian).
_SPARSE_HEADER = struct.Struct(">iii")
#: jsonb's binary format: a version byte, then the JSON text.
_JSONB_VERSION = b"\x01"
#: Binary COPY: the stream's header (signature, int32 flags, int32 extension length) and
#: trailer; each row is an int16 field count, then each field as an int32 length (-1:
#: NULL) and its bytes.
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = b"\xff\xff"
_FIELD_COUNT = struct.Struct(">h")
_LENGTH = struct.Struct(">i")
_NULL = _LENGTH.pack(-1)
#: A one-dimensional array without NULLs: int32 ndim, int32 flags, int32 element type OID,
#: then int32 length and int32 lower bound (1).
_ARRAY_HEADER = struct.Struct(">iiIii")


#: Checks a record and returns its binary COPY row, and whether it had to be altered to fit.
RowEncoder = Callable[[Record], tuple[bytes, bool]]


@dataclass(slots=True)
class EncodedRows:
    """A page of records as binary COPY rows, and what could not be encoded."""

    data: bytes  # the rows, back to back, without COPY's header and trailer
    rows: int
    altered: int = 0
    #: Records PostgreSQL cannot store as they are, with the reason, in page order.
    rejected: list[tuple[Record, str]] = field(default_factory=list)

    @property
    def read(self) -> int:
        return self.rows + len(self.rejected)


class PageEncoder:
    """Encodes pages of records for one table (see :func:`row_encoder`).

    It pickles as its settings, so that a page can be encoded in another process.
    ``type_oids`` maps ``vector`` and ``halfvec`` to their type OIDs in the target
    database, which arrays of them (multivector columns) carry in binary COPY.
    """

    def __init__(
        self,
        layout: TableLayout,
        *,
        strip_nul: bool = False,
        type_oids: Mapping[str, int] | None = None,
    ) -> None:
        self.layout = layout
        self.strip_nul = strip_nul
        self.type_oids = dict(type_oids or {})
        self._encode = row_encoder(layout, strip_nul=strip_nul, type_oids=self.type_oids)

    @property
    def settings(self) -> tuple[TableLayout, bool, dict[str, int]]:
        """What the encoder is made of: equal settings encode alike."""
        return (self.layout, self.strip_nul, self.type_oids)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_page_encoder, self.settings)

    def __call__(self, records: Sequence[Record]) -> EncodedRows:
        rows: list[bytes] = []
        rejected: list[tuple[Record, str]] = []
        altered = 0
        # A sum of squares of large (finite) float32 values overflows to inf, which is how
        # _check_finite learns to look closer: not worth numpy's warning.
        with np.errstate(over="ignore"):
            for record in records:
                try:
                    row, changed = self._encode(record)
                except InvalidRecord as exc:
                    rejected.append((record, exc.reason))
                    continue
                rows.append(row)
                altered += changed
        return EncodedRows(b"".join(rows), len(rows), altered, rejected)


def _page_encoder(layout: TableLayout, strip_nul: bool, type_oids: dict[str, int]) -> PageEncoder:
    return PageEncoder(layout, strip_nul=strip_nul, type_oids=type_oids)


def row_encoder(
    layout: TableLayout,
    *,
    strip_nul: bool = False,
    type_oids: Mapping[str, int] | None = None,
) -> RowEncoder:
    """Return a function that checks a record and returns its binary COPY row for ``layout``.

    With ``strip_nul``, NUL characters are removed from metadata strings and keys and from
    text fields (the record then counts as altered); otherwise a NUL is a reason to refuse
    the record.
    """
    oids = type_oids or {}
    checks = [(column.field.name, _vector_check(column, oids)) for column in layout.vectors]
    known = {column.field.name for column in layout.vectors} | set(layout.dropped)
    text_fields = [column.field for column in layout.texts]
    known_texts = set(text_fields) | set(layout.folded)
    count = _FIELD_COUNT.pack(len(layout.column_names))
    check_id = _check_bigint if layout.id_type == "bigint" else partial(_check_text, what="id")
    vecs = layout.style == "vecs"

    def encode(record: Record) -> tuple[bytes, bool]:
        altered = False
        if record.invalid is not None:
            raise InvalidRecord(record.id, record.namespace, record.invalid)
        try:
            row: list[bytes | None] = [check_id(record.id)]
            if layout.namespaced:
                row.append(_check_text(record.namespace, "namespace"))
            extra = record.vectors.keys() - known
            if extra:
                names = ", ".join(sorted(repr(n) for n in extra))
                raise ValueError(f"has vectors the source did not describe: {names}")
            vectors = [record.vectors.get(name) for name, _ in checks]
            if vecs and vectors[0] is None:
                raise ValueError(
                    f"has no vector {checks[0][0] or '(default)'!r}, which a vecs collection "
                    "needs (vec is NOT NULL)"
                )
            if checks and all(value is None for value in vectors):
                raise ValueError("has no vector at all")
            for (_, check), value in zip(checks, vectors, strict=True):
                row.append(None if value is None else check(value))
            texts = record.texts
            if texts:
                extra = texts.keys() - known_texts
                if extra:
                    names = ", ".join(sorted(repr(n) for n in extra))
                    raise ValueError(f"has text fields the source did not describe: {names}")
            for name in text_fields:
                text = texts.get(name)
                if strip_nul and isinstance(text, str) and "\x00" in text:
                    text, altered = text.replace("\x00", ""), True
                row.append(None if text is None else _text_field(text, name))
            metadata = record.metadata
            if vecs:  # NOT NULL in vecs; the text fields join it there
                folded = {name: texts.get(name) for name in layout.folded if texts.get(name)}
                metadata = {**(metadata or {}), **folded}
            if strip_nul and metadata is not None:
                cleaned = without_nul(metadata)
                altered = altered or cleaned != metadata
                metadata = cleaned
            row.append(_metadata(metadata))
        except ValueError as exc:
            raise InvalidRecord(record.id, record.namespace, str(exc)) from None
        return _copy_row(count, row), altered

    return encode


def _copy_row(count: bytes, fields: list[bytes | None]) -> bytes:
    parts = [count]
    for value in fields:
        if value is None:
            parts.append(_NULL)
        else:
            parts.append(_LENGTH.pack(len(value)))
            parts.append(value)
    return b"".join(parts)


def without_nul(value: Any) -> Any:
    """``value`` as ``--strip-nul`` stores it: without NUL characters in any string."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value


#: int64's bounds, for a bigint id.
_INT64 = (-(2**63), 2**63 - 1)
_BIGINT = struct.Struct(">q")
_INTEGER = re.compile(r"-?(0|[1-9][0-9]{0,18})")


def bigint_id(value: str) -> int | None:
    """The id as a bigint id column holds it, or None if it cannot be one. Only an
    integer's own spelling: "007" or "1_000" are other ids than 7 and 1000."""
    number = int(value) if _INTEGER.fullmatch(value) else None
    if number is None or not _INT64[0] <= number <= _INT64[1]:
        return None
    return number


def _check_bigint(value: str) -> bytes:
    """An id as PostgreSQL's binary bigint (``--id-type bigint``)."""
    number = bigint_id(value)
    if number is None:
        raise ValueError(
            f"the id {value!r} is not a 64-bit integer, and the table's id is bigint "
            "(--id-type text keeps every id)"
        )
    return _BIGINT.pack(number)


def _check_text(value: str, what: str) -> bytes:
    if not value and what == "id":
        raise ValueError("the id is empty")
    if "\x00" in value:
        raise ValueError(f"the {what} contains a NUL character, which PostgreSQL text cannot hold")
    try:
        data = value.encode()
    except UnicodeEncodeError:
        raise ValueError(f"the {what} is not valid Unicode (it holds a lone surrogate)") from None
    if what == "id" and len(data) > MAX_ID_BYTES:
        raise ValueError(f"the id is {len(data)} bytes; the most a key may hold is {MAX_ID_BYTES}")
    return data


def _text_field(value: Any, name: str) -> bytes:
    """A text field's value as PostgreSQL text (binary COPY's text is its UTF-8 bytes)."""
    if not isinstance(value, str):
        raise ValueError(f"the text field {name!r} is a {type(value).__name__}, not text")
    if "\x00" in value:
        raise ValueError(
            f"the text field {name!r} contains a NUL character, which PostgreSQL text cannot "
            "hold (--strip-nul removes them)"
        )
    try:
        return value.encode()
    except UnicodeEncodeError:
        raise ValueError(
            f"the text field {name!r} is not valid Unicode (it holds a lone surrogate)"
        ) from None


def _metadata(metadata: dict[str, Any] | None) -> bytes | None:
    """Metadata as binary jsonb.

    orjson writes the common case; it writes NaN and infinity as ``null``, so a text with
    ``null`` in it is checked for them. What orjson refuses (keys that are not strings,
    integers beyond 64 bits, text that is not Unicode) goes through the standard library,
    which converts keys as Python does or says why it cannot.
    """
    if metadata is None:
        return None
    try:
        data = orjson.dumps(metadata)
    except TypeError:
        data = _stdlib_json(metadata)
    else:
        if b"null" in data and _non_finite(metadata):
            raise ValueError(_NON_FINITE)
    if b"\\u0000" in data and _JSON_NUL.search(data):
        raise ValueError(
            "metadata contains a NUL character (\\u0000), which jsonb cannot hold "
            "(--strip-nul removes them)"
        )
    if len(data) > MAX_JSONB_BYTES:
        raise ValueError(
            f"metadata is {len(data):,} bytes; jsonb holds at most {MAX_JSONB_BYTES:,}"
        )
    return _JSONB_VERSION + data


_NON_FINITE = "metadata holds NaN or infinity, which JSON cannot express"


def _stdlib_json(metadata: dict[str, Any]) -> bytes:
    try:
        text = json.dumps(metadata, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode()
    except UnicodeEncodeError:
        raise ValueError("metadata holds text that is not valid Unicode") from None
    except ValueError:  # allow_nan=False: JSON has no NaN or infinity
        raise ValueError(_NON_FINITE) from None
    except TypeError as exc:
        raise ValueError(f"metadata is not representable as JSON: {exc}") from None


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    return False


def _vector_check(column: VectorColumn, type_oids: Mapping[str, int]) -> Callable[[Any], bytes]:
    field = column.field
    label = f"vector {field.name!r}" if field.name else "the vector"

    # pgvector's binary vector and halfvec: int16 dim, int16 unused, then big-endian
    # float4 or float2 values.
    header = struct.pack(">HH", field.dim or 0, 0)
    wire = ">f2" if column.half else ">f4"
    element_size = _LENGTH.pack(len(header) + (field.dim or 0) * np.dtype(wire).itemsize)

    def dense(value: np.ndarray) -> bytes:
        if value.ndim != 1 or value.shape[0] != field.dim:
            raise ValueError(f"{label} has {_shape(value)} values; the index has {field.dim}")
        _check_finite(value, label)
        if column.half:
            _check_half(value, label, column.halfvec)
        return header + value.astype(wire).tobytes()

    def multi(value: np.ndarray) -> bytes:
        if value.ndim != 2 or value.shape[1] != field.dim:
            raise ValueError(
                f"{label} is a multivector of shape {value.shape}; "
                f"each must have {field.dim} values"
            )
        _check_finite(value, label)
        if column.half:
            _check_half(value, label, column.halfvec)
        # An array of vector or halfvec, each element as `dense` makes it.
        parts = [_ARRAY_HEADER.pack(1, 0, type_oids[column.storage], len(value), 1)]
        for element in value.astype(wire):
            parts += (element_size, header, element.tobytes())
        return b"".join(parts)

    def sparse(value: SparseVector) -> bytes:
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
        # pgvector's binary sparsevec: the header, 0-based int32 indices, float4 values.
        return (
            _SPARSE_HEADER.pack(SPARSE_DIM, indices.size, 0)
            + indices.astype(">i4").tobytes()
            + values.astype(">f4").tobytes()
        )

    bits = int(field.dim or 0)
    bit_header = _LENGTH.pack(bits)
    packed = (bits + 7) // 8

    def binary(value: np.ndarray) -> bytes:
        # PostgreSQL's binary bit: int32 length in bits, then the bits, first bit first.
        if value.dtype != np.uint8 or value.ndim != 1 or value.shape[0] != packed:
            raise ValueError(
                f"{label} is {value.size} {value.dtype} values; a binary vector of {bits} bits "
                f"is {packed} bytes"
            )
        return bit_header + value.tobytes()

    checks: dict[VectorKind, Callable[[Any], bytes]] = {
        VectorKind.DENSE: dense,
        VectorKind.MULTI: multi,
        VectorKind.SPARSE: sparse,
        VectorKind.BINARY: binary,
    }
    check = checks[field.kind]
    expected = SparseVector if field.kind is VectorKind.SPARSE else np.ndarray

    def typed(value: Any) -> bytes:
        if not isinstance(value, expected):
            raise ValueError(
                f"{label} is a {type(value).__name__}, expected a {field.kind.value} vector"
            )
        return check(value)

    return typed


def _check_finite(values: np.ndarray, label: str) -> None:
    # The sum of squares is finite only if every value is (a cheap first look); when it
    # is not, a value may still only be large: look at each.
    if values.ndim == 1 and math.isfinite(np.dot(values, values)):
        return
    if not np.isfinite(values).all():
        bad = values[~np.isfinite(values)].flat[0]
        raise ValueError(f"{label} contains {bad}; PostgreSQL vectors hold only finite numbers")


def _check_half(values: np.ndarray, label: str, asked: bool) -> None:
    # Checked before converting: beyond it float16 is infinity, which halfvec refuses for
    # the whole COPY without naming the record.
    if values.size and np.abs(values).max() >= HALFVEC_OVERFLOW:
        bad = values.flat[int(np.abs(values).argmax())]
        why = "store it without --halfvec" if asked else "a 16-bit source vector is stored as one"
        raise ValueError(
            f"{label} contains {bad}, beyond halfvec's range (+-{MAX_HALFVEC_VALUE:,.0f}): {why}"
        )


def _shape(value: np.ndarray) -> str:
    return str(value.shape[0]) if value.ndim == 1 else f"shape {value.shape}"
