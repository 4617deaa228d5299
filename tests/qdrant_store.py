"""One Qdrant collection held in memory, read-only, fast enough to serve a benchmark.

qdrant-client's local mode sorts every id on every scroll page (``_scroll_by_id`` in
``qdrant_client/local/local_collection.py``) and warns above 20,000 points, so a test server
backed by it slows down as the collection grows. A ``QdrantStore`` sorts the ids once, in the
order a Qdrant server scrolls them, and keeps each vector as float32 numpy arrays, so a
scroll page is a slice of rows::

    store = QdrantStore.from_local(local, "docs")            # a copy of a local-mode collection
    store = QdrantStore.synthetic("bench", 200_000, 1024)    # deterministic data, no local mode
    page = store.scroll(offset=None, limit=256)              # rows and next_page_offset
    points = store.records(page.rows, with_payload=True, with_vectors=True)  # REST models
    body = store.scroll_json(page.next_page_offset, 256)     # a REST scroll answer, as bytes

Semantics, as the Qdrant server has them (qdrant/qdrant):

- Point ids are ``ExtendedPointId = NumId(u64) | Uuid(Uuid)`` with a derived ``Ord``
  (``lib/segment/src/types.rs``): every integer, ascending, before every UUID; UUIDs sort by
  their 16 bytes, which is the order of ``uuid.UUID.int`` and of their canonical lowercase
  text (local mode sorts that text, so both agree).
- A scroll reads ``limit + 1`` points from the offset id on (inclusive; the id need not
  exist) and returns the extra point's id as ``next_page_offset``, ``None`` on the last page
  (``lib/collection/src/collection/point_ops.rs``). A limit of 0 is an error.
- Vectors are float32 (a Cosine collection stores them normalised on upsert). A point's
  vectors are one unnamed vector when the collection has only the unnamed one, else a map
  by name that leaves out the vectors the point lacks.

Payload selectors name top-level keys only (the server also takes nested paths).
"""

from __future__ import annotations

import bisect
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from qdrant_client import QdrantClient
from qdrant_client.http import models

__all__ = [
    "DenseColumn",
    "MultiColumn",
    "QdrantStore",
    "SparseColumn",
    "StorePage",
    "point_key",
]

PointId = int | str
VectorsConfig = models.VectorParams | dict[str, models.VectorParams]
PayloadSelector = (
    bool | Sequence[str] | models.PayloadSelectorInclude | models.PayloadSelectorExclude
)
VectorSelector = bool | Sequence[str]

#: Qdrant point ids are unsigned 64-bit integers.
_MAX_NUM_ID = 2**64 - 1


def point_key(point_id: PointId | uuid.UUID) -> tuple[int, int]:
    """The sort key of a point id in Qdrant's order: ``(0, n)`` for integers, ``(1, uuid)``."""
    if isinstance(point_id, bool):
        raise ValueError(f"point id {point_id!r} is neither an unsigned integer nor a UUID")
    if isinstance(point_id, int):
        if not 0 <= point_id <= _MAX_NUM_ID:
            raise ValueError(f"point id {point_id} is not an unsigned 64-bit integer")
        return 0, point_id
    if isinstance(point_id, uuid.UUID):
        return 1, point_id.int
    try:
        return 1, uuid.UUID(point_id).int
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"point id {point_id!r} is neither an unsigned integer nor a UUID"
        ) from exc


def canonical_id(point_id: PointId | uuid.UUID) -> PointId:
    """An integer id as is, a UUID as the server writes it (lowercase, hyphenated)."""
    kind, value = point_key(point_id)
    return value if kind == 0 else str(uuid.UUID(int=value))


@dataclass(frozen=True)
class DenseColumn:
    """One dense vector per point: row ``r`` of ``matrix`` (zeros where ``present`` is False)."""

    matrix: np.ndarray  # (n, dim) float32
    present: np.ndarray | None = None  # (n,) bool; None: every point has the vector

    def has(self, row: int) -> bool:
        return self.present is None or bool(self.present[row])

    def rest(self, row: int) -> list[float]:
        return self.matrix[row].tolist()


@dataclass(frozen=True)
class MultiColumn:
    """A multivector per point: rows ``offsets[r]:offsets[r + 1]`` of ``data``; none if empty."""

    data: np.ndarray  # (total, dim) float32
    offsets: np.ndarray  # (n + 1,) int64

    def has(self, row: int) -> bool:
        # Qdrant rejects empty multivectors, so zero rows means the point has none.
        return bool(self.offsets[row + 1] > self.offsets[row])

    def rows(self, row: int) -> np.ndarray:
        return self.data[self.offsets[row] : self.offsets[row + 1]]

    def rest(self, row: int) -> list[list[float]]:
        return self.rows(row).tolist()


@dataclass(frozen=True)
class SparseColumn:
    """A sparse vector per point: ``indices``/``values`` ``offsets[r]:offsets[r + 1]``."""

    indices: np.ndarray  # (nnz,) uint32
    values: np.ndarray  # (nnz,) float32
    offsets: np.ndarray  # (n + 1,) int64
    present: np.ndarray  # (n,) bool: an empty sparse vector is still a vector

    def has(self, row: int) -> bool:
        return bool(self.present[row])

    def pair(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        start, stop = self.offsets[row], self.offsets[row + 1]
        return self.indices[start:stop], self.values[start:stop]

    def rest(self, row: int) -> models.SparseVector:
        indices, values = self.pair(row)
        return models.SparseVector(indices=indices.tolist(), values=values.tolist())


Column = DenseColumn | MultiColumn | SparseColumn


@dataclass(frozen=True)
class StorePage:
    """A scroll page: the store's rows (points in Qdrant's order) and the next page's offset."""

    rows: range
    next_page_offset: PointId | None


class QdrantStore:
    """A read-only collection: ids in Qdrant's order, float32 columns, payload dicts.

    ``ids`` must already be in Qdrant's order (``from_records`` sorts them); ``columns``
    maps each vector name (``""`` for the unnamed vector) to its column, row ``r`` being the
    point ``ids[r]``; ``payloads[r]`` is that point's payload.
    """

    def __init__(
        self,
        name: str,
        vectors_config: VectorsConfig | None,
        sparse_vectors_config: dict[str, models.SparseVectorParams] | None,
        ids: Sequence[PointId],
        columns: dict[str, Column],
        payloads: Sequence[dict[str, Any] | None],
    ) -> None:
        if len(payloads) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(payloads)} payloads")
        self.name = name
        self.vectors_config = vectors_config
        self.sparse_vectors_config = sparse_vectors_config or None
        self.ids = list(ids)
        self.columns = columns
        self.payloads = payloads
        self.int_count = 0
        while self.int_count < len(self.ids) and isinstance(self.ids[self.int_count], int):
            self.int_count += 1
        self._int_ids = np.array(self.ids[: self.int_count], dtype=np.uint64)
        self._uuid_ints = [uuid.UUID(str(i)).int for i in self.ids[self.int_count :]]
        if np.any(self._int_ids[1:] <= self._int_ids[:-1]) or any(
            a >= b for a, b in zip(self._uuid_ints, self._uuid_ints[1:], strict=False)
        ):
            raise ValueError("ids are not in Qdrant's order (integers, then UUIDs, ascending)")
        self._rows_by_id: dict[PointId, int] | None = None
        self._info: models.CollectionInfo | None = None

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_records(
        cls,
        name: str,
        vectors_config: VectorsConfig | None,
        sparse_vectors_config: dict[str, models.SparseVectorParams] | None,
        records: Iterable[models.Record | models.PointStruct],
    ) -> QdrantStore:
        """A store of these points (any order), vectors as given (rounded to float32)."""
        points = sorted(records, key=lambda p: point_key(p.id))
        ids = [canonical_id(p.id) for p in points]
        if len({point_key(i) for i in ids}) != len(ids):
            raise ValueError("duplicate point ids")
        dense = _dense_names(vectors_config)
        columns: dict[str, Column] = {}
        per_point = [_named(p.vector) for p in points]
        for vname, params in dense.items():
            values = [v.get(vname) for v in per_point]
            if params.multivector_config is not None:
                columns[vname] = _multi_column(values, params.size)
            else:
                columns[vname] = _dense_column(values, params.size)
        for vname in sparse_vectors_config or {}:
            columns[vname] = _sparse_column([v.get(vname) for v in per_point])
        payloads = [p.payload for p in points]
        return cls(name, vectors_config, sparse_vectors_config, ids, columns, payloads)

    @classmethod
    def from_local(cls, client: QdrantClient, name: str, *, page_size: int = 1000) -> QdrantStore:
        """A copy of a collection of a (local-mode or remote) client, read by one scroll."""
        params = client.get_collection(name).config.params
        records: list[models.Record] = []
        offset: PointId | None = None
        while True:
            points, next_offset = client.scroll(
                name, limit=page_size, offset=offset, with_payload=True, with_vectors=True
            )
            records += points
            if next_offset is None:
                break
            offset = next_offset  # type: ignore[assignment]
        return cls.from_records(name, params.vectors, params.sparse_vectors, records)

    @classmethod
    def synthetic(
        cls,
        name: str,
        n: int,
        dim: int,
        *,
        ids: str = "int",
        distance: models.Distance = models.Distance.COSINE,
        seed: int = 0,
        payload: bool = True,
    ) -> QdrantStore:
        """``n`` points of one unnamed ``dim``-dimensional vector, the same for the same
        arguments. ``ids``: ``"int"`` (``7r + 3``), ``"uuid"`` (random) or ``"mixed"`` (half
        each). Payloads are small (``{"n", "title", "group"}``) and made on demand."""
        rng = np.random.default_rng(seed)
        ids_in_order = _synthetic_ids(n, ids, rng)
        matrix = np.empty((n, dim), dtype=np.float32)
        step = max(1, (1 << 22) // max(dim, 1))  # ~16 MB of float32 at a time
        for start in range(0, n, step):
            # Uniform in [-0.5, 0.5): six times faster to draw than normal, as good for a copy.
            block = rng.random((min(step, n - start), dim), dtype=np.float32)
            block -= 0.5
            if distance == models.Distance.COSINE:
                block /= np.linalg.norm(block, axis=1, keepdims=True)
            matrix[start : start + len(block)] = block
        config = models.VectorParams(size=dim, distance=distance)
        payloads: Sequence[dict[str, Any] | None] = _SyntheticPayloads(n) if payload else [None] * n
        return cls(name, config, None, ids_in_order, {"": DenseColumn(matrix)}, payloads)

    @classmethod
    def bench(cls, name: str, n: int, dim: int, *, seed: int = 0) -> QdrantStore:
        """The records every source is benchmarked with (``scripts/bench_common.py``): ids
        0..n-1, vectors drawn as its ``synthetic_chunks`` draws them (standard normal
        float32, 10,000 rows at a time from one generator), payload ``{"n": i}``. Dot
        product: a server leaves the vectors as drawn (Cosine would normalise them)."""
        rng = np.random.default_rng(seed)
        matrix = np.empty((n, dim), dtype=np.float32)
        for start in range(0, n, _BENCH_CHUNK):
            stop = min(n, start + _BENCH_CHUNK)
            matrix[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32)
        config = models.VectorParams(size=dim, distance=models.Distance.DOT)
        return cls(name, config, None, range(n), {"": DenseColumn(matrix)}, _BenchPayloads(n))

    # ------------------------------------------------------------------- reading
    def __len__(self) -> int:
        return len(self.ids)

    def count(self) -> int:
        return len(self.ids)

    @property
    def unnamed_only(self) -> bool:
        """Points carry one unnamed vector, not a map of named ones."""
        return list(self.columns) == [""]

    def position(self, offset: PointId | uuid.UUID | None) -> int:
        """The row of the first point whose id is ``offset`` or after it in Qdrant's order."""
        if offset is None:
            return 0
        kind, value = point_key(offset)
        if kind == 0:
            return int(np.searchsorted(self._int_ids, np.uint64(value), side="left"))
        return self.int_count + bisect.bisect_left(self._uuid_ints, value)

    def scroll(self, offset: PointId | uuid.UUID | None = None, limit: int = 10) -> StorePage:
        """The page a Qdrant scroll from ``offset`` answers: ``limit`` rows and the next id."""
        if limit < 1:
            raise ValueError("Limit cannot be 0")
        start = self.position(offset)
        stop = min(start + limit, len(self.ids))
        next_offset = self.ids[stop] if stop < len(self.ids) else None
        return StorePage(range(start, stop), next_offset)

    def rows_for(self, ids: Iterable[PointId | uuid.UUID]) -> list[int]:
        """The rows of these ids, in the order asked, unknown ids left out (as retrieve)."""
        if self._rows_by_id is None:
            self._rows_by_id = {pid: row for row, pid in enumerate(self.ids)}
        rows = []
        for pid in ids:
            row = self._rows_by_id.get(canonical_id(pid))
            if row is not None:
                rows.append(row)
        return rows

    def payload(self, row: int, selector: PayloadSelector = True) -> dict[str, Any] | None:
        """The point's payload as the selector shapes it (``None`` when not asked for)."""
        if selector is False:
            return None
        payload = self.payloads[row] or {}
        if selector is True:
            return payload
        if isinstance(selector, models.PayloadSelectorExclude):
            return {k: v for k, v in payload.items() if k not in selector.exclude}
        keys = selector.include if isinstance(selector, models.PayloadSelectorInclude) else selector
        return {k: payload[k] for k in keys if k in payload}

    def vector_names(self, row: int, selector: VectorSelector = True) -> list[str]:
        """The names of the point's vectors the selector asks for (none when it is False)."""
        if selector is False:
            return []
        wanted = self.columns if selector is True else selector
        unknown = [v for v in wanted if v not in self.columns]
        if unknown:
            raise ValueError(f"Wrong input: Not existing vector name error: {unknown[0]}")
        return [v for v in wanted if self.columns[v].has(row)]

    def records(
        self,
        rows: Iterable[int],
        with_payload: PayloadSelector = True,
        with_vectors: VectorSelector = False,
    ) -> list[models.Record]:
        """The points as qdrant-client's REST models, as a scroll or retrieve returns them."""
        return [
            models.Record(
                id=self.ids[row],
                payload=self.payload(row, with_payload),
                vector=self._rest_vectors(row, with_vectors, numpy=False),
            )
            for row in rows
        ]

    def rest_points(
        self,
        rows: Iterable[int],
        with_payload: PayloadSelector = True,
        with_vectors: VectorSelector = False,
    ) -> list[dict[str, Any]]:
        """The points of Qdrant's REST JSON, vectors as numpy arrays (for ``orjson``)."""
        points = []
        for row in rows:
            point: dict[str, Any] = {"id": self.ids[row]}
            payload = self.payload(row, with_payload)
            if payload is not None:
                point["payload"] = payload
            vector = self._rest_vectors(row, with_vectors, numpy=True)
            if vector is not None:
                point["vector"] = vector
            points.append(point)
        return points

    def scroll_json(
        self,
        offset: PointId | None = None,
        limit: int = 10,
        with_payload: PayloadSelector = True,
        with_vectors: VectorSelector = False,
    ) -> bytes:
        """A whole REST scroll answer (``{"result": {"points", "next_page_offset"}, ...}``).

        orjson writes a float32 array with the shortest text that reads back as the same
        float32, as Qdrant's serde does, so the JSON is the server's to the digit."""
        started = time.perf_counter()
        page = self.scroll(offset, limit)
        result = {
            "points": self.rest_points(page.rows, with_payload, with_vectors),
            "next_page_offset": page.next_page_offset,
        }
        body = {"result": result, "status": "ok", "time": time.perf_counter() - started}
        return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)

    def collection_info(self) -> models.CollectionInfo:
        """What ``get_collection`` answers: local mode's info for the same config and count."""
        if self._info is None:
            empty = QdrantClient(":memory:")
            try:
                empty.create_collection(
                    self.name,
                    vectors_config=self.vectors_config or {},
                    sparse_vectors_config=self.sparse_vectors_config,
                )
                info = empty.get_collection(self.name)
            finally:
                empty.close()
            self._info = info.model_copy(update={"points_count": len(self.ids)})
        return self._info

    def _rest_vectors(self, row: int, selector: VectorSelector, *, numpy: bool) -> Any:
        names = self.vector_names(row, selector)
        if selector is False or (not names and not self.columns):
            return None
        values: dict[str, Any] = {}
        for vname in names:
            column = self.columns[vname]
            if not numpy:
                values[vname] = column.rest(row)
            elif isinstance(column, DenseColumn):
                values[vname] = column.matrix[row]
            elif isinstance(column, MultiColumn):
                values[vname] = column.rows(row)
            else:
                indices, vals = column.pair(row)
                values[vname] = {"indices": indices, "values": vals}
        if list(values) == [""]:  # the server's VectorStructInternal::Single
            return values[""]
        return values


#: Rows drawn at a time by scripts/bench_common.py's synthetic_chunks (its CHUNK).
_BENCH_CHUNK = 10_000


class _BenchPayloads(Sequence[dict[str, Any]]):
    """``{"n": i}`` for point i, made when read."""

    def __init__(self, n: int) -> None:
        self._n = n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, row: Any) -> Any:
        if isinstance(row, slice):
            return [self[r] for r in range(*row.indices(self._n))]
        if not -self._n <= row < self._n:
            raise IndexError(row)
        return {"n": row % self._n}


class _SyntheticPayloads(Sequence[dict[str, Any]]):
    """Small payloads made when read: a benchmark's 200k points need no 200k dicts."""

    def __init__(self, n: int) -> None:
        self._n = n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, row: Any) -> Any:
        if isinstance(row, slice):
            return [self[r] for r in range(*row.indices(self._n))]
        if not -self._n <= row < self._n:
            raise IndexError(row)
        row %= self._n
        return {"n": row, "title": f"Dokument {row} — café", "group": row % 10}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[r] for r in range(self._n))


def _synthetic_ids(n: int, kind: str, rng: np.random.Generator) -> list[PointId]:
    if kind not in ("int", "uuid", "mixed"):
        raise ValueError(f"ids must be int, uuid or mixed, not {kind!r}")
    ints = n if kind == "int" else (n + 1) // 2 if kind == "mixed" else 0
    raw = rng.bytes(16 * (n - ints))
    keys = sorted({int.from_bytes(raw[i : i + 16], "big") for i in range(0, len(raw), 16)})
    if len(keys) != n - ints:  # two equal random 128-bit numbers: practically never
        raise RuntimeError("duplicate random UUIDs; try another seed")
    return [7 * r + 3 for r in range(ints)] + [str(uuid.UUID(int=k)) for k in keys]


def _dense_names(config: VectorsConfig | None) -> dict[str, models.VectorParams]:
    if config is None:
        return {}
    if isinstance(config, models.VectorParams):
        return {"": config}
    return dict(config)


def _named(vector: Any) -> dict[str, Any]:
    if vector is None:
        return {}
    if isinstance(vector, dict):
        return vector
    return {"": vector}  # the unnamed vector (a list, or a list of lists)


def _dense_column(values: list[Any], dim: int) -> DenseColumn:
    matrix = np.zeros((len(values), dim), dtype=np.float32)
    present = np.zeros(len(values), dtype=bool)
    for row, value in enumerate(values):
        if value is not None:
            matrix[row] = value
            present[row] = True
    return DenseColumn(matrix, None if present.all() else present)


def _multi_column(values: list[Any], dim: int) -> MultiColumn:
    lengths = [0 if v is None else len(v) for v in values]
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = np.zeros((int(offsets[-1]), dim), dtype=np.float32)
    for row, value in enumerate(values):
        if value is not None:
            data[offsets[row] : offsets[row + 1]] = value
    return MultiColumn(data, offsets)


def _sparse_column(values: list[Any]) -> SparseColumn:
    lengths = [0 if v is None else len(v.indices) for v in values]
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    indices = np.zeros(int(offsets[-1]), dtype=np.uint32)
    vals = np.zeros(int(offsets[-1]), dtype=np.float32)
    for row, value in enumerate(values):
        if value is not None:
            # The server keeps a sparse vector sorted by index.
            order = np.argsort(np.asarray(value.indices, dtype=np.uint32), kind="stable")
            indices[offsets[row] : offsets[row + 1]] = np.asarray(value.indices)[order]
            vals[offsets[row] : offsets[row + 1]] = np.asarray(value.values)[order]
    present = np.array([v is not None for v in values], dtype=bool)
    return SparseColumn(indices, vals, offsets, present)
