"""LanceDB tables of many Arrow types and several versions, and what was put in them.

``lancedb.connect(DIR)`` opens a folder of Lance tables in this process. A table is an
Arrow schema: vectors are ``fixed_size_list<float32|float16>[dim]`` columns (any number of
them), nothing is a primary key, and every write makes a new version that can be read
later (``open_table(name, version=v)`` gives a read-only handle). Every helper is
deterministic from its seed and returns the Arrow table it wrote, which the tests compare
with what LanceDB reads back (``pa.Table.equals``: types and values exact).
"""

from __future__ import annotations

import datetime
import decimal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa

#: The vector columns of :func:`seed_all_types`: name -> (value type, dimension).
VECTOR_COLUMNS = {
    "vector": (pa.float32(), 8),
    "image": (pa.float32(), 3),
    "half": (pa.float16(), 4),
}

STRUCT = pa.struct([("a", pa.int32()), ("b", pa.string())])


def connect(path: Path, *, stable_row_ids: bool = False) -> Any:
    """A LanceDB connection on ``path``.

    ``stable_row_ids`` makes new tables keep each row's ``_rowid`` across update and
    compaction (the ``new_table_enable_stable_row_ids`` storage option; off by default,
    and it cannot be turned on for an existing table).
    """
    options = {"new_table_enable_stable_row_ids": "true"} if stable_row_ids else None
    return lancedb.connect(str(path), storage_options=options)


def fixed_size_list(values: np.ndarray, value_type: pa.DataType) -> pa.FixedSizeListArray:
    """An (n, dim) array as a FixedSizeList column, without a Python float per value."""
    return pa.FixedSizeListArray.from_arrays(
        pa.array(values.reshape(-1), type=value_type), values.shape[1]
    )


def vectors_to_numpy(column: pa.ChunkedArray | pa.FixedSizeListArray) -> np.ndarray:
    """A FixedSizeList column as an (n, dim) numpy array, zero-copy for one chunk.

    ``flatten()`` honours a slice where ``.values`` does not (a sliced array's ``values``
    is the whole child array), but it leaves null vectors out, so a column with nulls
    would shift rows: refused here.
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.null_count:
        raise ValueError(f"{array.null_count} null vectors: flatten() would drop them")
    dim = array.type.list_size
    return array.flatten().to_numpy(zero_copy_only=True).reshape(-1, dim)


def all_types(
    n: int, rng: np.random.Generator, *, start: int = 0, with_id: bool = True
) -> pa.Table:
    """``n`` rows of every column type :func:`seed_all_types` writes."""
    i = np.arange(start, start + n)
    keys = [int(k) for k in i]
    columns: dict[str, pa.Array] = {}
    if with_id:
        columns["id"] = pa.array(i * 7919 + 13, pa.int64())  # not 0..N-1, not a row number
    for name, (value_type, dim) in VECTOR_COLUMNS.items():
        values = rng.standard_normal((n, dim)).astype(value_type.to_pandas_dtype())
        columns[name] = fixed_size_list(values, value_type)
    columns |= {
        "i8": pa.array((i % 256 - 128).astype(np.int8)),
        "i16": pa.array(rng.integers(-(2**15), 2**15, n, dtype=np.int16)),
        "i32": pa.array(rng.integers(-(2**31), 2**31, n, dtype=np.int32)),
        "i64": pa.array(rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)),
        "u8": pa.array(rng.integers(0, 2**8, n, dtype=np.uint8)),
        "u16": pa.array(rng.integers(0, 2**16, n, dtype=np.uint16)),
        "u32": pa.array(rng.integers(0, 2**32, n, dtype=np.uint32)),
        "u64": pa.array(rng.integers(2**63, 2**64 - 1, n, dtype=np.uint64)),  # above int64
        "f16": pa.array(rng.standard_normal(n).astype(np.float16)),
        "f32": pa.array(rng.standard_normal(n).astype(np.float32)),
        "f64": pa.array(rng.standard_normal(n)),
        "flag": pa.array([None if k % 11 == 0 else bool(k % 2) for k in keys], pa.bool_()),
        "title": pa.array([None if k % 5 == 0 else f"Zeile {k} «naïve» 東京 🚀" for k in keys]),
        "body": pa.array([f"large {k} " * (k % 4) for k in keys], pa.large_string()),
        "created": pa.array(
            (1_700_000_000_000_000 + i * 1_000_003).astype("datetime64[us]"),
            pa.timestamp("us", tz="UTC"),
        ),
        "naive_ns": pa.array((i * 1_000_000_007).astype("datetime64[ns]"), pa.timestamp("ns")),
        "day": pa.array((i % 40_000).astype("datetime64[D]"), pa.date32()),
        "at": pa.array(
            [datetime.time(k % 24, k % 60, k % 60, k % 1000) for k in keys], pa.time64("us")
        ),
        "price": pa.array([decimal.Decimal(k) / 100 for k in keys], pa.decimal128(12, 2)),
        "tags": pa.array([[f"t{k % 3}", "ü"][: k % 3] for k in keys], pa.list_(pa.string())),
        "counts": pa.array([list(range(k % 4)) for k in keys], pa.large_list(pa.int64())),
        "point": pa.array([{"a": int(k), "b": None if k % 2 else f"x{k}"} for k in keys], STRUCT),
        "blob": pa.array([bytes([k % 256, 0, 255]) * (k % 3) for k in keys], pa.binary()),
        "color": pa.array([("red", "green", "blue")[k % 3] for k in keys]).dictionary_encode(),
        "props": pa.array(
            [[("k", int(k))] if k % 2 else [] for k in keys], pa.map_(pa.string(), pa.int64())
        ),
    }
    return pa.table(columns)


def seed_all_types(db: Any, name: str, n: int, *, seed: int = 1, with_id: bool = True) -> pa.Table:
    """One table: an ``id`` (int64, unless ``with_id=False``), three vector columns (float32
    of two dimensions and float16) and scalar columns of many Arrow types, with nulls.

    Written as a create and two appends: three fragments, versions 1..3.
    """
    rng = np.random.default_rng(seed)
    sizes = [n // 3, n // 3, n - 2 * (n // 3)]
    parts = []
    start = 0
    for size in sizes:
        parts.append(all_types(size, rng, start=start, with_id=with_id))
        start += size
    table = db.create_table(name, data=parts[0])
    for part in parts[1:]:
        table.add(part)
    return pa.concat_tables(parts)


@dataclass
class SeededVersions:
    """A table written as several versions, and the rows each version holds."""

    name: str
    #: version -> the whole table at that version, in scan order.
    versions: dict[int, pa.Table]
    #: version -> what was done to make it.
    operations: dict[int, str]


def simple_rows(ids: list[int], rng: np.random.Generator, tag: str) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "vector": fixed_size_list(
                rng.standard_normal((len(ids), 4)).astype(np.float32), pa.float32()
            ),
            "tag": pa.array([tag] * len(ids)),
        }
    )


def seed_versions(db: Any, name: str, n: int = 30, *, seed: int = 7) -> SeededVersions:
    """Create, append, update, delete: four versions whose contents are known.

    A scan returns rows in fragment order: an updated row moves to a new fragment at the
    end; a deleted row is gone from that version on (and still in the older ones).
    """
    rng = np.random.default_rng(seed)
    first = simple_rows(list(range(n)), rng, "created")
    table = db.create_table(name, data=first)
    versions = {table.version: first}
    operations = {table.version: "create"}

    appended = simple_rows(list(range(n, n + n // 2)), rng, "appended")
    table.add(appended)
    current = pa.concat_tables([first, appended])
    versions[table.version] = current
    operations[table.version] = "append"

    table.update(where="id % 5 = 0", values={"tag": "updated"})
    moved = current["id"].to_numpy() % 5 == 0
    kept = current.filter(pa.array(~moved))
    updated = current.filter(pa.array(moved))
    updated = updated.set_column(2, "tag", pa.array(["updated"] * updated.num_rows))
    current = pa.concat_tables([kept, updated])
    versions[table.version] = current
    operations[table.version] = "update id % 5 = 0"

    table.delete("id % 7 = 3")
    current = current.filter(pa.array(current["id"].to_numpy() % 7 != 3))
    versions[table.version] = current
    operations[table.version] = "delete id % 7 = 3"
    return SeededVersions(name=name, versions=versions, operations=operations)


def scan(table: Any, *, batch_size: int = 1000, with_row_id: bool = False) -> pa.Table:
    """The whole table as vec2pg would read it: a stream of record batches, reassembled."""
    query = table.search().limit(None).with_row_id(with_row_id)
    reader = query.to_batches(batch_size)
    return pa.Table.from_batches(list(reader), schema=reader.schema)
