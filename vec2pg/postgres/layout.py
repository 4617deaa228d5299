"""How a source's fields become a PostgreSQL table.

``vec2pg."<collection>"`` gets:

* ``id text``: the record's id as text (Qdrant's integer ids in decimal, UUIDs canonical);
* ``namespace text`` when the source has namespaces (the key is then ``(namespace, id)``);
* one column per vector field: the unnamed/default dense vector is ``embedding``, a named
  one keeps its name (``<name>_vector`` where that collides with a fixed column);
  dense vectors are ``vector(dim)``, sparse ones ``sparsevec(1000000000)``, multivectors
  ``vector(dim)[]`` (one array element per sub-vector, in order), binary ones ``bit(dim)``;
* one ``text`` column per text field the source declares (:attr:`SourceInfo.texts`:
  Chroma's ``document`` and ``uri``), named as the field (``<name>_text`` where that
  collides with a fixed column);
* ``metadata jsonb``.

With ``halfvec=True`` (``--halfvec``) dense vectors and multivectors' elements are
``halfvec(dim)`` instead: IEEE float16, half the space, and indexable up to 4,000
dimensions instead of 2,000, for about three significant digits (values beyond +-65,504
do not fit at all). Sparse vectors stay ``sparsevec``: pgvector has no half-precision one.
A source that holds 16-bit values itself (Milvus's float16 and bfloat16 vectors, LanceDB's
float16 columns) gets ``halfvec`` columns for them without ``--halfvec``.

Each vector column's comment records its source name, kind, metric and storage type as
JSON, so that an index can later be built with the matching operator class.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vec2pg.errors import ConfigError
from vec2pg.records import SourceInfo, VectorField, VectorKind

if TYPE_CHECKING:
    from psycopg import sql

#: PostgreSQL truncates longer identifiers silently (NAMEDATALEN - 1).
MAX_IDENTIFIER_BYTES = 63
#: pgvector's ceiling for ``vector(n)`` and ``halfvec(n)`` (VECTOR_MAX_DIM, HALFVEC_MAX_DIM).
MAX_VECTOR_DIM = 16_000
#: PostgreSQL's ceiling for ``bit(n)`` (MaxAttrSize in bits: 10,485,760 bytes of bits).
MAX_BIT_DIM = 83_886_080
#: The largest finite float16 (what ``halfvec`` stores). float32 values of magnitude below
#: 65,520 round to at most this; from 65,520 on they become infinity, which pgvector
#: refuses ("infinite value not allowed in halfvec").
MAX_HALFVEC_VALUE = 65_504.0
HALFVEC_OVERFLOW = 65_520.0
#: pgvector's ceiling for a sparse vector's dimension (SPARSEVEC_MAX_DIM). Every sparse
#: column gets this dimension, so that any two values in it can be compared; a source index
#: at or beyond it (Pinecone's and Qdrant's are uint32) cannot be stored.
SPARSE_DIM = 1_000_000_000
#: pgvector's ceiling on a sparse vector's non-zero entries (SPARSEVEC_MAX_NNZ).
MAX_SPARSE_NNZ = 16_000

FIXED_COLUMNS = ("id", "namespace", "metadata")


@dataclass(frozen=True, slots=True)
class VectorColumn:
    name: str
    field: VectorField
    #: Store dense values (and multivectors' elements) as float16 ``halfvec``.
    halfvec: bool = False

    @property
    def half(self) -> bool:
        """Whether dense values are stored as float16: asked for, or the source's own."""
        return self.halfvec or self.field.half

    @property
    def storage(self) -> str:
        """The element type: ``vector``, ``halfvec``, ``sparsevec`` or ``bit``."""
        if self.field.kind is VectorKind.SPARSE:
            return "sparsevec"
        if self.field.kind is VectorKind.BINARY:
            return "bit"
        return "halfvec" if self.half else "vector"

    @property
    def sql_type(self) -> str:
        """The column's type, spelled as PostgreSQL's format_type() spells it."""
        if self.field.kind is VectorKind.SPARSE:
            return f"sparsevec({SPARSE_DIM})"
        if self.field.kind is VectorKind.BINARY:
            return f"bit({int(self.field.dim or 0)})"
        dense = f"{self.storage}({int(self.field.dim or 0)})"
        return dense if self.field.kind is VectorKind.DENSE else f"{dense}[]"

    def comment(self, source_kind: str) -> str:
        return json.dumps(
            {
                "vec2pg": {
                    "source": source_kind,
                    "vector": self.field.name,
                    "kind": self.field.kind.value,
                    "dim": self.field.dim,
                    "metric": self.field.metric.value if self.field.metric else None,
                    "storage": self.storage,
                }
            },
            ensure_ascii=False,
        )


@dataclass(frozen=True, slots=True)
class TextColumn:
    """A ``text`` column holding one of the source's text fields (:attr:`Record.texts`)."""

    name: str
    field: str


#: The table layouts: vec2pg's own, and a Supabase vecs collection (``vecs."<name>"``:
#: ``id``, one dense vector ``vec``, ``metadata``), which vecs opens as it is.
STYLES = ("vec2pg", "vecs")
ID_TYPES = ("text", "bigint")


@dataclass(frozen=True, slots=True)
class TableLayout:
    schema: str
    table: str
    namespaced: bool
    vectors: tuple[VectorColumn, ...]
    texts: tuple[TextColumn, ...] = ()
    id_type: str = "text"  # "text" or "bigint"
    style: str = "vec2pg"  # "vec2pg" or "vecs"
    #: The source's vector fields this table does not hold (a vecs collection holds one).
    dropped: tuple[str, ...] = ()
    #: The source's text fields this table keeps in its metadata, under their names (a
    #: vecs collection has no text columns).
    folded: tuple[str, ...] = ()

    @property
    def qualified(self) -> sql.Identifier:
        from psycopg import sql  # not at import: decoding processes load this module

        return sql.Identifier(self.schema, self.table)

    @property
    def display(self) -> str:
        """The table's name as a person would type it in psql."""
        return f"{quote(self.schema)}.{quote(self.table)}"

    @property
    def key(self) -> tuple[str, ...]:
        return ("namespace", "id") if self.namespaced else ("id",)

    @property
    def column_names(self) -> list[str]:
        head = ["id", "namespace"] if self.namespaced else ["id"]
        return [*head, *(v.name for v in self.vectors), *(t.name for t in self.texts), "metadata"]

    @property
    def sql_types(self) -> list[str]:
        head = [self.id_type, "text"] if self.namespaced else [self.id_type]
        return [*head, *(v.sql_type for v in self.vectors), *(["text"] * len(self.texts)), "jsonb"]

    @property
    def constraints(self) -> dict[str, str]:
        """Column constraints beside the key: vecs's ``vec`` and ``metadata`` are NOT NULL,
        ``metadata`` with vecs's default (the shape vecs itself creates)."""
        if self.style != "vecs":
            return {}
        return {"vec": " NOT NULL", "metadata": " NOT NULL DEFAULT '{}'::jsonb"}


def layout_for(
    info: SourceInfo,
    schema: str,
    table: str | None,
    *,
    halfvec: bool = False,
    id_type: str | None = None,
    style: str = "vec2pg",
    vector: str | None = None,
) -> TableLayout:
    """Lay out the table for ``info``; raise ConfigError for what PostgreSQL cannot hold.

    ``halfvec`` stores dense vectors and multivectors as ``halfvec`` (float16). ``id_type``
    is ``text`` or ``bigint`` (None: ``bigint`` where the source's ids are all integers).
    ``style`` ``vecs`` lays out a Supabase vecs collection of the one dense vector
    ``vector`` names (see :func:`vecs_layout`).
    """
    table = info.collection if table is None else table
    _check_identifier(schema, "schema", "--schema")
    _check_identifier(table, "table", "--table")
    if id_type is None:
        id_type = "bigint" if info.integer_ids else "text"
    if id_type not in ID_TYPES:
        raise ConfigError(f"unknown --id-type {id_type!r}: choose {' or '.join(ID_TYPES)}")
    if style == "vecs":
        return vecs_layout(info, schema, table, halfvec=halfvec, id_type=id_type, vector=vector)
    if style != "vec2pg":
        raise ConfigError(f"unknown --layout {style!r}: choose {' or '.join(STYLES)}")
    if vector is not None:
        raise ConfigError(
            "--vector chooses the vector of a vecs collection: it goes with --layout vecs"
        )
    columns: list[VectorColumn] = []
    for field in info.fields:
        if field.kind is not VectorKind.SPARSE and (field.dim is None or field.dim < 1):
            raise ConfigError(f"vector {field.name!r} has no usable dimension ({field.dim})")
        limit = MAX_BIT_DIM if field.kind is VectorKind.BINARY else MAX_VECTOR_DIM
        if field.kind is not VectorKind.SPARSE and field.dim and field.dim > limit:
            raise ConfigError(
                f"vector {field.name or '(default)'!r} has {field.dim} dimensions; "
                f"pgvector stores at most {limit}"
            )
        name = field.name or "embedding"
        if name in FIXED_COLUMNS:
            name = f"{name}_vector"
        _check_identifier(name, f"column for vector {field.name!r}", None)
        if name in {c.name for c in columns}:
            raise ConfigError(f"two vectors map to the same column {name!r}")
        columns.append(VectorColumn(name, field, halfvec))
    texts: list[TextColumn] = []
    for text in info.texts:
        name = f"{text}_text" if text in FIXED_COLUMNS else text
        _check_identifier(name, f"column for text {text!r}", None)
        if name in {c.name for c in columns} | {t.name for t in texts}:
            raise ConfigError(f"two fields map to the same column {name!r}")
        texts.append(TextColumn(name, text))
    return TableLayout(schema, table, info.namespaced, tuple(columns), tuple(texts), id_type)


def vecs_layout(
    info: SourceInfo, schema: str, table: str, *, halfvec: bool, id_type: str, vector: str | None
) -> TableLayout:
    """A vecs collection: ``id`` (the key), ``vec vector(dim) NOT NULL`` (the one dense
    vector ``vector`` names, or the source's only vector) and ``metadata jsonb NOT NULL``.

    vecs reads the dimension from ``vec``'s type and ignores tables whose names start with
    ``_``; it holds one namespace (vecs's ids are unique alone): a source with namespaces is
    copied one collection per namespace (see :func:`vecs_table`). Text fields go into the
    metadata, under their names.
    """
    if halfvec:
        raise ConfigError("vecs reads vector(dim) columns, not halfvec: leave out --halfvec")
    if table.startswith("_"):
        raise ConfigError(
            f"vecs does not see tables whose names start with '_' ({table!r}): name the "
            "collection with --table"
        )
    described = ", ".join(f"{f.kind.value} {f.name or '(default)'!r}" for f in info.fields)
    if vector is not None:
        chosen = next((f for f in info.fields if f.name == vector), None)
        if chosen is None:
            raise ConfigError(
                f"{info.kind} {info.collection!r} has no vector {vector!r}; it has {described}"
            )
    elif len(info.fields) == 1:
        chosen = info.fields[0]
    else:
        raise ConfigError(
            f"a vecs collection holds one dense vector, and {info.kind} {info.collection!r} has "
            f"{described}: choose it with --vector NAME"
        )
    if chosen.kind is not VectorKind.DENSE:
        raise ConfigError(
            f"a vecs collection holds one dense vector, and {chosen.kind.value} vector "
            f"{chosen.name or '(default)'!r} is not one"
            + ("" if vector is not None else f" ({info.kind} {info.collection!r} has {described})")
        )
    if not chosen.dim or chosen.dim > MAX_VECTOR_DIM:
        raise ConfigError(f"vector {chosen.name!r} has no usable dimension ({chosen.dim})")
    # A 16-bit source vector is stored as vector: vecs reads no other type, and float32
    # holds every float16 and bfloat16 value exactly.
    column = VectorColumn("vec", dataclasses.replace(chosen, half=False))
    dropped = tuple(f.name for f in info.fields if f is not chosen)
    return TableLayout(schema, table, False, (column,), (), id_type, "vecs", dropped, info.texts)


def vecs_table(collection: str, namespace: str, default: str | None) -> str:
    """The vecs collection a namespace of ``collection`` becomes: ``collection`` for the
    default namespace (``default``, or ``""``), ``<collection>_<namespace>`` for the others."""
    return collection if namespace in ("", default) else f"{collection}_{namespace}"


def _check_identifier(name: str, what: str, option: str | None) -> None:
    if not name:
        raise ConfigError(f"the {what} name is empty")
    if "\x00" in name:
        raise ConfigError(f"the {what} name {name!r} contains a NUL character")
    size = len(name.encode())
    if size > MAX_IDENTIFIER_BYTES:
        fix = f"; choose a shorter one with {option}" if option else ""
        raise ConfigError(
            f"the {what} name {name!r} is {size} bytes, PostgreSQL's limit is "
            f"{MAX_IDENTIFIER_BYTES}{fix}"
        )


def quote(identifier: str) -> str:
    """An identifier quoted as PostgreSQL quotes it."""
    return '"' + identifier.replace('"', '""') + '"'
