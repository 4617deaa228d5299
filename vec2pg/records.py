"""The records that flow from a source to the sink: plain data, no I/O.

A source describes itself once (:class:`SourceInfo`: its vector fields and namespaces), and
its pages (:class:`vec2pg.sources.base.Page`) load as lists of :class:`Record` s. Vectors are
numpy arrays:

* a dense vector is a 1-D ``float32`` array,
* a multivector (Qdrant's ColBERT-style late-interaction vectors) is a 2-D ``float32``
  array of shape ``(n, dim)``,
* a sparse vector is a :class:`SparseVector` with 0-based indices,
* a binary vector of ``dim`` bits is a 1-D ``uint8`` array of ``ceil(dim / 8)`` bytes, the
  bits packed first bit first (the most significant bit of the first byte), as pgvector's
  ``bit``, Milvus's binary vectors and Elasticsearch's ``bit`` vectors hold them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

FloatArray: TypeAlias = npt.NDArray[np.float32]
IndexArray: TypeAlias = npt.NDArray[np.int64]

#: Where a source resumes reading a namespace: ``None`` is the start; the rest is opaque to
#: everyone but the source (a Qdrant point id, a Pinecone pagination token). It is stored as
#: JSON, so it must be a str or an int.
Cursor: TypeAlias = "str | int | None"


@dataclass(frozen=True, slots=True)
class SparseVector:
    """A sparse vector: 0-based ``indices`` with their ``values``."""

    indices: IndexArray
    values: FloatArray


Vector: TypeAlias = "FloatArray | SparseVector"


class VectorKind(str, Enum):
    DENSE = "dense"
    SPARSE = "sparse"
    MULTI = "multivector"
    BINARY = "binary"  # bits: a bit(dim) column


class Metric(str, Enum):
    """A distance metric, named as pgvector names it."""

    COSINE = "cosine"
    DOT = "dotproduct"
    EUCLIDEAN = "euclidean"
    MANHATTAN = "manhattan"
    HAMMING = "hamming"  # binary vectors
    JACCARD = "jaccard"  # binary vectors


@dataclass(frozen=True, slots=True)
class VectorField:
    """One vector of every record: a column in the target table.

    ``name`` is the key in :attr:`Record.vectors`; ``""`` is the source's unnamed (default)
    vector. ``dim`` is ``None`` for sparse vectors, whose dimension is the sink's, and the
    number of bits for binary ones. ``half``: the source holds the values in 16 bits
    (float16, bfloat16), so the column is ``halfvec`` without ``--halfvec``.
    """

    name: str
    kind: VectorKind
    dim: int | None
    metric: Metric | None
    half: bool = False

    def as_dict(self) -> dict[str, str | int | bool | None]:
        described: dict[str, str | int | bool | None] = {
            "name": self.name,
            "kind": self.kind.value,
            "dim": self.dim,
            "metric": self.metric.value if self.metric else None,
        }
        if self.half:
            described["half"] = True
        return described


@dataclass(frozen=True, slots=True)
class Namespace:
    """A partition of the source (Pinecone namespace); ``count`` may be approximate."""

    name: str
    count: int | None


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What a source tells the sink before the first record."""

    kind: str  # "qdrant", "pinecone": names the source in summaries and table comments
    collection: str  # the collection or index name
    location: str  # where it is (a URL or path), safe to print
    fields: tuple[VectorField, ...]
    namespaces: tuple[Namespace, ...]
    #: Whether the source has namespaces at all; if so the table gets a namespace column
    #: and its key is (namespace, id).
    namespaced: bool
    #: False when the source holds only some of the collection's records (a rejects file):
    #: rows it lacks are then not stale, and --prune is refused.
    complete: bool = True
    #: True when the source's pages can be read apart from their decoding
    #: (:attr:`vec2pg.sources.base.Page.read`): the pipeline may then decode them in other
    #: processes.
    raw_pages: bool = False
    #: Text fields every record carries besides its metadata (Chroma's ``document`` and
    #: ``uri``), in the table's order: each becomes a ``text`` column, and a record's
    #: :attr:`Record.texts` holds its values by these names.
    texts: tuple[str, ...] = ()
    #: The namespace that stands for "no namespace" (Pinecone's ``__default__``): a vecs
    #: collection of it keeps the collection's plain name.
    default_namespace: str = ""
    #: Every id is an integer (Milvus's int64 keys): the table's id is then ``bigint``,
    #: unless ``--id-type text`` says otherwise.
    integer_ids: bool = False
    #: What the user should know of this source before trusting the copy (what it cannot
    #: give back exactly, say): said once when the run starts.
    notes: tuple[str, ...] = ()

    @property
    def total(self) -> int | None:
        counts = [ns.count for ns in self.namespaces]
        return None if any(c is None for c in counts) else sum(c or 0 for c in counts)


@dataclass(slots=True)
class Record:
    """One record: its id (as text), its vectors by field name, and its metadata.

    ``invalid`` is why the source could not turn what it read into vectors (a multivector
    whose sub-vectors differ in length): the record is then rejected with that reason, as
    the sink rejects one PostgreSQL cannot hold, and its vectors hold what was read.

    ``texts`` holds the values of the text fields the source declares
    (:attr:`SourceInfo.texts`) by name; a missing or ``None`` value is a NULL.
    """

    id: str
    vectors: Mapping[str, Any]
    metadata: dict[str, Any] | None = None
    namespace: str = ""
    invalid: str | None = None
    texts: Mapping[str, str | None] = field(default_factory=dict)


def as_array(value: Any, name: str) -> FloatArray:
    """A dense vector (a list of numbers) or a multivector (a list of lists) as a float32
    array; ValueError saying what is wrong with one that is neither (``name``: its field)."""
    try:
        return np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError):
        pass
    label = f"vector {name!r}" if name else "the vector"
    if isinstance(value, list) and all(isinstance(row, list) for row in value):
        lengths = sorted({len(row) for row in value})
        raise ValueError(
            f"{label} is a multivector whose sub-vectors differ in length "
            f"({', '.join(map(str, lengths))} values)"
        )
    raise ValueError(f"{label} is not a list of numbers")
