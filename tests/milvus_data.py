"""Milvus Lite collections of every shape Milvus Lite holds, and the rows that were put in.

Milvus Lite 3.x (``milvus-lite`` on PyPI) is pure Python: ``MilvusClient("DIR.db")`` starts
a gRPC server on 127.0.0.1 in a thread of this process, with ``DIR.db`` a folder (2.x used a
file, in a format 3.x cannot read). It holds FLOAT_VECTOR and SPARSE_FLOAT_VECTOR fields
only: FLOAT16, BFLOAT16, BINARY and INT8 vectors are refused at create_collection.

Every helper is deterministic from its seed and returns a :class:`SeededCollection` whose
rows are what a full read of the collection returns, in the form the tests compare:
dense vectors as float32 arrays, sparse vectors as ``{index: np.float32}``, scalars as
Python values, and the dynamic field's keys gathered under ``"$meta"`` (the name Milvus
gives the dynamic field; query results spread its keys among the row's fields).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient

#: Vector field types Milvus Lite 3.2 accepts; the others are refused with code 6.
LITE_VECTOR_TYPES = (DataType.FLOAT_VECTOR, DataType.SPARSE_FLOAT_VECTOR)
LITE_REFUSED_VECTOR_TYPES = (
    DataType.FLOAT16_VECTOR,
    DataType.BFLOAT16_VECTOR,
    DataType.BINARY_VECTOR,
    DataType.INT8_VECTOR,
)

#: The element types an ARRAY field may hold, with the name of the field that holds each.
ARRAY_ELEMENT_TYPES = {
    "arr_bool": DataType.BOOL,
    "arr_int8": DataType.INT8,
    "arr_int16": DataType.INT16,
    "arr_int32": DataType.INT32,
    "arr_int64": DataType.INT64,
    "arr_float": DataType.FLOAT,
    "arr_double": DataType.DOUBLE,
    "arr_varchar": DataType.VARCHAR,
}

#: Defaults of the fields that have one (a row that omits the field, or gives None for a
#: nullable one, reads back the default).
DEFAULT_FLOAT = 1.5
DEFAULT_LABEL = "unlabelled"
#: What the nullable and default fields of :func:`seed_scalars` read back as when a row
#: leaves them out or gives None.
UNSET_READS_BACK = {
    "maybe": None,
    "label": DEFAULT_LABEL,
    "ratio": DEFAULT_FLOAT,
    "extra": None,
    "arr_nullable": None,
}


@dataclass
class SeededCollection:
    """What a seed helper put in a collection."""

    name: str
    primary_key: str
    #: Vector field -> metric of its index, as describe_index reports it ("COSINE", ...).
    metrics: dict[str, str]
    #: Vector field -> dimension (None for sparse).
    dims: dict[str, int | None]
    #: Primary key -> row, each field's value as a full read returns it, plus "$meta".
    rows: dict[int | str, dict[str, Any]]
    #: Primary key -> partition name (every row is in "_default" unless partitioned).
    partitions: dict[int | str, str] = field(default_factory=dict)


@contextmanager
def milvus_lite(path: Path, **kwargs: Any) -> Iterator[MilvusClient]:
    """A client on the Milvus Lite database folder ``path`` (its name must end in ``.db``).

    On exit the client closes and the in-process server stops. Closing the client alone
    leaves the server and the folder's lock in place until the process exits: another
    process then fails with "Open local milvus failed" (DataDirLockedError in the log).
    """
    client = MilvusClient(str(path), **kwargs)
    try:
        yield client
    finally:
        client.close()
        release_lite(path)


def release_lite(path: Path) -> None:
    """Stop the in-process Milvus Lite server of ``path`` and release its lock."""
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(str(path))


def primary_keys(n: int, kind: str, rng: np.random.Generator) -> list[int | str]:
    """Keys that are not 0..N-1 and not in insertion order: sparse, signed, or unicode."""
    if kind == "int64":
        keys = [(i * 7919 + 13) * (-1 if i % 3 == 0 else 1) for i in range(n)]
        keys[-1] = 2**63 - 1  # int64's extremes are valid keys
        if n > 1:
            keys[-2] = -(2**63)
    elif kind == "varchar":
        keys = [f"doc-{i:05d}-{'äöü東京🚀'[i % 6]}" for i in range(n)]
    else:
        raise ValueError(f"primary key kind {kind!r}: int64 or varchar")
    order = rng.permutation(n)
    return [keys[i] for i in order]


def schema_with_key(kind: str, *, dynamic: bool) -> Any:
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=dynamic)
    if kind == "int64":
        schema.add_field("pk", DataType.INT64, is_primary=True)
    else:
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
    return schema


def f32(value: float) -> float:
    """A Python float that survives a FLOAT field (float32) exactly."""
    return float(np.float32(value))


def dense(rng: np.random.Generator, dim: int) -> np.ndarray:
    return rng.standard_normal(dim).astype(np.float32)


#: The largest index of a Milvus sparse vector (indices are uint32, 2**32 - 1 excluded).
MILVUS_SPARSE_MAX = 2**32 - 2


def sparse(rng: np.random.Generator, largest: int = MILVUS_SPARSE_MAX) -> dict[int, np.float32]:
    """Sorted indices in 0..largest (Milvus's range by default), ``largest`` always among
    them, with positive nonzero float32 weights.

    Milvus Lite refuses negative weights and drops zero ones, so none are seeded.
    """
    nnz = int(rng.integers(1, 12))
    indices = sorted({int(i) for i in rng.integers(0, largest + 1, nnz)} | {largest})
    weights = (rng.random(len(indices)) + 0.01).astype(np.float32)
    return dict(zip(indices, weights, strict=True))


def dynamic_keys(i: int) -> dict[str, Any]:
    """Keys no field declares, kept in the dynamic field; a third of the rows have none."""
    if i % 3 == 0:
        return {}
    return {
        "title": f"Dokument Nr. {i} — «naïve café» 東京 🚀",
        "n": i,
        "score": i / 7,
        "even": i % 2 == 0,
        "tags": ["a", f"t{i % 5}"],
        "nested": {"level": [1, {"x": None}, "ü"]},
    }


def insert(client: MilvusClient, name: str, rows: list[dict[str, Any]], **kwargs: Any) -> None:
    for start in range(0, len(rows), 500):
        client.insert(name, rows[start : start + 500], **kwargs)


def seed_scalars(
    client: MilvusClient, name: str, n: int, *, primary_key: str = "int64", seed: int = 1
) -> SeededCollection:
    """Every scalar type, an ARRAY of each element type, nullable and default fields, the
    dynamic field, and one COSINE float vector.

    Nulls and defaults: ``maybe`` (nullable INT64, no default) reads back None; ``label``
    (nullable VARCHAR, default) and ``ratio`` (FLOAT, default) read back their default when
    a row gives None or leaves them out; ``extra`` (nullable JSON) and ``arr_nullable``
    (nullable ARRAY) read back None.
    """
    rng = np.random.default_rng(seed)
    schema = schema_with_key(primary_key, dynamic=True)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=8)
    schema.add_field("flag", DataType.BOOL)
    schema.add_field("tiny", DataType.INT8)
    schema.add_field("small", DataType.INT16)
    schema.add_field("medium", DataType.INT32)
    schema.add_field("big", DataType.INT64)
    schema.add_field("single", DataType.FLOAT)
    schema.add_field("double", DataType.DOUBLE)
    schema.add_field("text", DataType.VARCHAR, max_length=256)
    schema.add_field("doc", DataType.JSON)
    for field_name, element in ARRAY_ELEMENT_TYPES.items():
        extra = {"max_length": 32} if element == DataType.VARCHAR else {}
        schema.add_field(field_name, DataType.ARRAY, element_type=element, max_capacity=6, **extra)
    schema.add_field("maybe", DataType.INT64, nullable=True)
    schema.add_field(
        "label", DataType.VARCHAR, max_length=32, nullable=True, default_value=DEFAULT_LABEL
    )
    schema.add_field("ratio", DataType.FLOAT, default_value=DEFAULT_FLOAT)
    schema.add_field("extra", DataType.JSON, nullable=True)
    schema.add_field(
        "arr_nullable", DataType.ARRAY, element_type=DataType.INT32, max_capacity=4, nullable=True
    )
    index = client.prepare_index_params()
    index.add_index(
        "embedding", index_type="HNSW", metric_type="COSINE", params={"M": 8, "efConstruction": 64}
    )
    client.create_collection(name, schema=schema, index_params=index)

    keys = primary_keys(n, primary_key, rng)
    inserted: list[dict[str, Any]] = []
    expected: dict[int | str, dict[str, Any]] = {}
    for i, key in enumerate(keys):
        length = int(rng.integers(0, 7))  # empty arrays are valid values
        row: dict[str, Any] = {
            "pk": key,
            "embedding": dense(rng, 8),
            "flag": bool(i % 2),
            "tiny": int(rng.integers(-128, 128)),
            "small": int(rng.integers(-(2**15), 2**15)),
            "medium": int(rng.integers(-(2**31), 2**31)),
            "big": int(rng.integers(-(2**62), 2**62)) * 2,
            "single": f32(rng.standard_normal()),
            "double": float(rng.standard_normal()),
            "text": f'Zeile {i}: «naïve» 東京 🚀 \t"quoted"',
            "doc": {"i": i, "nested": {"list": [1, "two", None, 3.5]}, "ü": True},
            "arr_bool": [bool(b) for b in rng.integers(0, 2, length)],
            "arr_int8": [int(v) for v in rng.integers(-128, 128, length)],
            "arr_int16": [int(v) for v in rng.integers(-(2**15), 2**15, length)],
            "arr_int32": [int(v) for v in rng.integers(-(2**31), 2**31, length)],
            "arr_int64": [int(v) * 4 for v in rng.integers(-(2**61), 2**61, length)],
            "arr_float": [f32(v) for v in rng.standard_normal(length)],
            "arr_double": [float(v) for v in rng.standard_normal(length)],
            "arr_varchar": [f"s{j}-é" for j in range(length)],
        }
        want = dict(row)
        if i % 4 == 0:  # nulls given explicitly: a default wins over an explicit None
            row |= {"maybe": None, "label": None, "extra": None, "arr_nullable": None}
            want |= UNSET_READS_BACK
        elif i % 4 == 1:  # nullable and default fields left out
            want |= UNSET_READS_BACK
        else:
            given = {
                "maybe": -i,
                "label": f"L{i}",
                "ratio": f32(i / 4),
                "extra": {"k": [i]},
                "arr_nullable": [i, -i],
            }
            row |= given
            want |= given
        meta = dynamic_keys(i)
        row |= meta
        want["$meta"] = meta
        inserted.append(row)
        expected[key] = want
    insert(client, name, inserted)
    return SeededCollection(
        name=name,
        primary_key="pk",
        metrics={"embedding": "COSINE"},
        dims={"embedding": 8},
        rows=expected,
        partitions=dict.fromkeys(expected, "_default"),
    )


#: The vector fields of :func:`seed_vectors`: name -> (type, dim, index type, metric).
VECTOR_FIELDS: dict[str, tuple[DataType, int | None, str, str]] = {
    "text": (DataType.FLOAT_VECTOR, 12, "HNSW", "COSINE"),
    "image": (DataType.FLOAT_VECTOR, 5, "FLAT", "L2"),
    "dot": (DataType.FLOAT_VECTOR, 3, "IVF_FLAT", "IP"),
    "keywords": (DataType.SPARSE_FLOAT_VECTOR, None, "SPARSE_INVERTED_INDEX", "IP"),
}


def seed_vectors(
    client: MilvusClient,
    name: str,
    n: int,
    *,
    primary_key: str = "int64",
    seed: int = 2,
    sparse_largest: int = MILVUS_SPARSE_MAX,
) -> SeededCollection:
    """Several vector fields in one collection: three dense (COSINE, L2, IP; different
    dimensions and index types) and one sparse (IP, indices up to ``sparse_largest``), with
    the dynamic field on.
    """
    rng = np.random.default_rng(seed)
    schema = schema_with_key(primary_key, dynamic=True)
    index = client.prepare_index_params()
    for field_name, (dtype, dim, index_type, metric) in VECTOR_FIELDS.items():
        schema.add_field(field_name, dtype, **({"dim": dim} if dim else {}))
        index.add_index(field_name, index_type=index_type, metric_type=metric)
    client.create_collection(name, schema=schema, index_params=index)

    rows: dict[int | str, dict[str, Any]] = {}
    inserted = []
    for i, key in enumerate(primary_keys(n, primary_key, rng)):
        row: dict[str, Any] = {"pk": key}
        for field_name, (_, dim, _, _) in VECTOR_FIELDS.items():
            row[field_name] = sparse(rng, sparse_largest) if dim is None else dense(rng, dim)
        meta = dynamic_keys(i)
        inserted.append(row | meta)
        rows[key] = row | {"$meta": meta}
    insert(client, name, inserted)
    return SeededCollection(
        name=name,
        primary_key="pk",
        metrics={f: spec[3] for f, spec in VECTOR_FIELDS.items()},
        dims={f: spec[1] for f, spec in VECTOR_FIELDS.items()},
        rows=rows,
        partitions=dict.fromkeys(rows, "_default"),
    )


def seed_partitions(
    client: MilvusClient,
    name: str,
    n: int,
    *,
    partitions: tuple[str, ...] = ("_default", "spring", "summer"),
    primary_key: str = "int64",
    seed: int = 3,
) -> SeededCollection:
    """Rows spread round-robin over partitions, which Milvus Lite 3.x has."""
    rng = np.random.default_rng(seed)
    schema = schema_with_key(primary_key, dynamic=False)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=4)
    schema.add_field("season", DataType.VARCHAR, max_length=16)
    index = client.prepare_index_params()
    index.add_index("embedding", index_type="FLAT", metric_type="L2")
    client.create_collection(name, schema=schema, index_params=index)
    for partition in partitions:
        if partition != "_default":
            client.create_partition(name, partition)

    by_partition: dict[str, list[dict[str, Any]]] = {p: [] for p in partitions}
    rows: dict[int | str, dict[str, Any]] = {}
    where: dict[int | str, str] = {}
    for i, key in enumerate(primary_keys(n, primary_key, rng)):
        partition = partitions[i % len(partitions)]
        row = {"pk": key, "embedding": dense(rng, 4), "season": partition}
        by_partition[partition].append(row)
        rows[key] = row | {"$meta": {}}
        where[key] = partition
    for partition, partition_rows in by_partition.items():
        insert(client, name, partition_rows, partition_name=partition)
    return SeededCollection(
        name=name,
        primary_key="pk",
        metrics={"embedding": "L2"},
        dims={"embedding": 4},
        rows=rows,
        partitions=where,
    )


def vector_metrics(client: MilvusClient, name: str) -> dict[str, str]:
    """Each indexed vector field's metric, read back as vec2pg would (describe_index)."""
    metrics = {}
    for index_name in client.list_indexes(name):
        info = client.describe_index(name, index_name=index_name)
        metrics[info["field_name"]] = info["metric_type"]
    return metrics


def source_rows(
    client: MilvusClient,
    name: str,
    *,
    batch_size: int = 1000,
    partition_names: list[str] | None = None,
    filter: str = "",
) -> dict[int | str, dict[str, Any]]:
    """Every row, read with query_iterator and put in the form seed helpers return."""
    fields = client.describe_collection(name)["fields"]
    kinds = {f["name"]: f["type"] for f in fields}
    primary_key = next(f["name"] for f in fields if f.get("is_primary"))
    rows: dict[int | str, dict[str, Any]] = {}
    iterator = client.query_iterator(
        name,
        batch_size=batch_size,
        filter=filter,
        output_fields=["*"],
        partition_names=partition_names,
    )
    try:
        while page := iterator.next():
            for hit in page:
                row: dict[str, Any] = {"$meta": {}}
                for field_name, value in hit.items():
                    kind = kinds.get(field_name)
                    if kind is None:  # a key of the dynamic field
                        row["$meta"][field_name] = value
                    elif kind == DataType.FLOAT_VECTOR:
                        row[field_name] = np.asarray(value, dtype=np.float32)
                    elif kind == DataType.SPARSE_FLOAT_VECTOR:
                        row[field_name] = {int(i): np.float32(v) for i, v in value.items()}
                    else:
                        row[field_name] = value
                key = row[primary_key]
                assert key not in rows, f"{key!r} read twice"
                rows[key] = row
    finally:
        iterator.close()
    return rows


def partition_rows(client: MilvusClient, name: str) -> dict[int | str, str]:
    """Primary key -> partition, by reading each partition on its own."""
    where: dict[int | str, str] = {}
    for partition in client.list_partitions(name):
        for key in source_rows(client, name, partition_names=[partition]):
            where[key] = partition
    return where


def assert_same_rows(
    actual: dict[Any, dict[str, Any]], expected: dict[Any, dict[str, Any]]
) -> None:
    """Same keys; every field equal (vectors float32-exact, sparse index and weight)."""
    assert actual.keys() == expected.keys(), (
        f"missing {sorted(map(str, expected.keys() - actual.keys()))[:5]}, "
        f"unexpected {sorted(map(str, actual.keys() - expected.keys()))[:5]}"
    )
    for key, want in expected.items():
        got = actual[key]
        assert got.keys() == want.keys(), f"{key!r}: fields {sorted(got)} != {sorted(want)}"
        for column, value in want.items():
            where = f"{key!r}.{column}"
            if isinstance(value, np.ndarray):
                assert isinstance(got[column], np.ndarray), where
                assert got[column].dtype == value.dtype, where
                np.testing.assert_array_equal(got[column], value, err_msg=where)
            else:
                assert got[column] == value, f"{where}: {got[column]!r} != {value!r}"


@contextmanager
def lite_client(path: Path) -> Iterator[MilvusClient]:
    """A client on the Milvus Lite database ``path`` that, unlike :func:`milvus_lite`, stops
    the in-process server at exit only if it started it (a source may be reading from it)."""
    from milvus_lite.server_manager import server_manager_instance

    started = os.path.abspath(path) not in server_manager_instance._servers
    client = MilvusClient(str(path))
    try:
        yield client
    finally:
        client.close()
        if started:
            release_lite(path)


# --------------------------------------------------------------------------------------
# The vector types Milvus Lite refuses, as a Milvus server sends them
# --------------------------------------------------------------------------------------

#: The vector fields of :class:`WireCollection`: name -> (type, dim, metric of its index).
WIRE_VECTORS: dict[str, tuple[DataType, int | None, str]] = {
    "half": (DataType.FLOAT16_VECTOR, 4, "COSINE"),
    "brain": (DataType.BFLOAT16_VECTOR, 4, "IP"),
    "small": (DataType.INT8_VECTOR, 4, "L2"),
    "bits": (DataType.BINARY_VECTOR, 16, "HAMMING"),
    "set": (DataType.BINARY_VECTOR, 8, "JACCARD"),
    "dense": (DataType.FLOAT_VECTOR, 3, "L2"),  # nullable: every fifth row has none
    "keywords": (DataType.SPARSE_FLOAT_VECTOR, None, "IP"),
}


def bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float32 values that bfloat16 holds exactly, as bfloat16's 16 bits (uint16)."""
    bits = np.asarray(values, dtype=np.float32).view(np.uint32)
    assert not np.any(bits & 0xFFFF), "not a bfloat16 value"
    return (bits >> 16).astype(np.uint16)


@dataclass
class WireCollection:
    """A collection of every vector type Milvus has (Milvus Lite holds only float and
    sparse vectors), and what a Milvus server answers about it.

    :class:`WireClient` serves it through pymilvus's own decoding of a server's answer, so
    each value reaches a reader in the form pymilvus gives it: the 16-bit, int8 and binary
    vectors as a one-element list of bytes, float vectors as lists or float32 views, sparse
    ones as dicts. ``rows`` holds what each row's fields are: numpy arrays (float16 for
    ``half``, the float32 values of ``brain``, int8, packed uint8 bits), dicts for sparse,
    None for a missing (nullable) vector, and the dynamic field's keys under ``"$meta"``.
    """

    name: str
    rows: dict[int, dict[str, Any]]

    @classmethod
    def seed(cls, name: str, n: int, seed: int = 4) -> WireCollection:
        rng = np.random.default_rng(seed)
        keys = primary_keys(n, "int64", rng)
        rows: dict[int, dict[str, Any]] = {}
        for i, key in enumerate(keys):
            # bfloat16 values: float32s whose low 16 bits are zero.
            brain = (rng.standard_normal(4).astype(np.float32).view(np.uint32) & 0xFFFF0000).view(
                np.float32
            )
            rows[int(key)] = {
                "pk": int(key),
                "half": rng.standard_normal(4).astype(np.float16),
                "brain": brain,
                "small": rng.integers(-128, 128, 4).astype(np.int8),
                "bits": np.packbits(rng.integers(0, 2, 16, dtype=np.uint8)),
                "set": np.packbits(rng.integers(0, 2, 8, dtype=np.uint8)),
                "dense": None if i % 5 == 0 else dense(rng, 3),
                "keywords": sparse(rng, 999_999_999),
                "label": f"Nr. {i} «{key}»",
                "$meta": dynamic_keys(i),
            }
        return cls(name, rows)

    def describe(self) -> dict[str, Any]:
        """What describe_collection returns for it (pymilvus's dict)."""
        fields: list[dict[str, Any]] = [
            {"name": "pk", "type": DataType.INT64, "params": {}, "is_primary": True},
            {"name": "label", "type": DataType.VARCHAR, "params": {"max_length": 64}},
        ]
        for name, (dtype, dim, _) in WIRE_VECTORS.items():
            field: dict[str, Any] = {"name": name, "type": dtype, "params": {}}
            if dim is not None:
                field["params"]["dim"] = dim
            if name == "dense":
                field["nullable"] = True
            fields.append(field)
        return {
            "collection_name": self.name,
            "fields": fields,
            "functions": [],
            "enable_dynamic_field": True,
            "collection_id": 4242,
        }

    def answer(self, keys: list[int], output_fields: list[str]) -> Any:
        """The QueryResults a Milvus server sends for the rows of ``keys``, in that order."""
        import json

        from pymilvus.client.entity_helper import sparse_rows_to_proto
        from pymilvus.grpc_gen import common_pb2, milvus_pb2, schema_pb2

        rows = [self.rows[k] for k in keys]
        wanted = set(self.rows[keys[0]]) if keys and "*" in output_fields else set(output_fields)
        wanted.add("pk")
        data = []
        key = schema_pb2.FieldData(type=DataType.INT64, field_name="pk")
        key.scalars.long_data.data.extend(keys)
        data.append(key)
        if "label" in wanted:
            label = schema_pb2.FieldData(type=DataType.VARCHAR, field_name="label")
            label.scalars.string_data.data.extend(r["label"] for r in rows)
            data.append(label)
        attributes = {
            DataType.FLOAT16_VECTOR: "float16_vector",
            DataType.BFLOAT16_VECTOR: "bfloat16_vector",
            DataType.INT8_VECTOR: "int8_vector",
            DataType.BINARY_VECTOR: "binary_vector",
        }
        for name, (dtype, dim, _) in WIRE_VECTORS.items():
            if name not in wanted:
                continue
            field = schema_pb2.FieldData(type=dtype, field_name=name)
            values = [r[name] for r in rows]
            if dtype == DataType.SPARSE_FLOAT_VECTOR:
                field.vectors.sparse_float_vector.CopyFrom(sparse_rows_to_proto(values))
            else:
                field.vectors.dim = int(dim or 0)
            if dtype == DataType.FLOAT_VECTOR:
                # A nullable vector: validity per row, and only the valid rows' values.
                field.valid_data.extend(v is not None for v in values)
                present = [v for v in values if v is not None]
                field.vectors.float_vector.data.extend(
                    np.concatenate(present).tolist() if present else []
                )
            elif dtype == DataType.BFLOAT16_VECTOR:
                setattr(
                    field.vectors,
                    attributes[dtype],
                    b"".join(bfloat16_bits(v).tobytes() for v in values),
                )
            elif dtype in attributes:
                setattr(field.vectors, attributes[dtype], b"".join(v.tobytes() for v in values))
            data.append(field)
        if "*" in output_fields:
            meta = schema_pb2.FieldData(type=DataType.JSON, field_name="$meta", is_dynamic=True)
            meta.scalars.json_data.data.extend(json.dumps(r["$meta"]).encode() for r in rows)
            data.append(meta)
        return milvus_pb2.QueryResults(
            status=common_pb2.Status(),
            fields_data=data,
            collection_name=self.name,
            output_fields=[f.field_name for f in data],
        )


class WireClient:
    """A ``MilvusClient`` stand-in serving a :class:`WireCollection` as a Milvus server
    would: what the source asks (describe, indexes, partitions, counts) from the
    collection, and every query through pymilvus's own ``GrpcHandler.query`` on the
    server's answer (the rows the filter ``pk > N`` or ``pk in [...]`` selects, in key
    order, at most ``limit``). ``requests`` records each query request as sent."""

    def __init__(self, collection: WireCollection) -> None:
        self.collection = collection
        self.requests: list[Any] = []

    def has_collection(self, name: str, **_: Any) -> bool:
        return name == self.collection.name

    def list_collections(self, **_: Any) -> list[str]:
        return [self.collection.name]

    def describe_collection(self, name: str, **_: Any) -> dict[str, Any]:
        return self.collection.describe()

    def list_indexes(self, name: str, **_: Any) -> list[str]:
        return list(WIRE_VECTORS)

    def describe_index(self, name: str, index_name: str, **_: Any) -> dict[str, Any]:
        return {"field_name": index_name, "metric_type": WIRE_VECTORS[index_name][2]}

    def get_load_state(self, name: str, **_: Any) -> dict[str, Any]:
        from pymilvus.client.types import LoadState

        return {"state": LoadState.Loaded}

    def list_partitions(self, name: str, **_: Any) -> list[str]:
        return ["_default"]

    def get_partition_stats(self, name: str, partition: str, **_: Any) -> dict[str, int]:
        return {"row_count": len(self.collection.rows)}

    def query(
        self,
        collection_name: str,
        filter: str = "",
        output_fields: list[str] | None = None,
        partition_names: list[str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        from types import SimpleNamespace

        from pymilvus.client.grpc_handler import GrpcHandler

        def serve(request: Any, timeout: Any = None, metadata: Any = None) -> Any:
            self.requests.append(request)
            keys = sorted(self.collection.rows)
            expr = request.expr.strip()
            if expr.startswith("pk > "):
                after = int(expr[len("pk > ") :])
                keys = [k for k in keys if k > after]
            elif expr.startswith("pk in ["):
                wanted = {int(k) for k in expr[len("pk in [") : -1].split(",") if k.strip()}
                keys = [k for k in keys if k in wanted]
            else:
                assert not expr, expr
            params = {kv.key: kv.value for kv in request.query_params}
            if "limit" in params:
                keys = keys[: int(params["limit"])]
            return self.collection.answer(keys, list(request.output_fields))

        handler = SimpleNamespace(server_address="wire", _stub=SimpleNamespace(Query=serve))
        return GrpcHandler.query(
            handler,
            collection_name,
            expr=filter,
            output_fields=output_fields,
            partition_names=partition_names,
            timeout=timeout,
            **kwargs,
        )

    def close(self) -> None:
        pass
