"""Qdrant's answers as vec2pg decodes them, in any process: REST's JSON (simdjson, and
Python's json where simdjson refuses) and gRPC's wire format (read without protobuf).

The gRPC answers are built with qdrant-client's generated messages, so they are what a
Qdrant server's encoder writes; the few a generated encoder never writes (floats not
packed) are written by hand. Every shape of vector, both of servers before 1.17 and after.
"""

from __future__ import annotations

import json
import uuid

import numpy as np
import orjson
import pytest
from qdrant_client import grpc as pb

from vec2pg.errors import SourceError, SourceUnavailable, Transient
from vec2pg.records import SparseVector
from vec2pg.sources import qdrant_grpc, qdrant_rest
from vec2pg.sources.qdrant_ranges import point_key

UUID = "5a1f07e6-7e3b-4c4a-9f7e-0123456789ab"
PAYLOAD = {
    "title": "Grüße aus Köln — 東京 🚀",
    "n": -7,
    "big": 2**62,
    "score": 0.125,
    "ok": True,
    "none": None,
    "nested": {"tags": ["a", None, 3, {"deep": [1.5, False]}], "empty": {}},
    "list": [],
}


def value(v: object) -> pb.Value:
    if v is None:
        return pb.Value(null_value=pb.NullValue.NULL_VALUE)
    if isinstance(v, bool):
        return pb.Value(bool_value=v)
    if isinstance(v, int):
        return pb.Value(integer_value=v)
    if isinstance(v, float):
        return pb.Value(double_value=v)
    if isinstance(v, str):
        return pb.Value(string_value=v)
    if isinstance(v, dict):
        return pb.Value(struct_value=pb.Struct(fields={k: value(x) for k, x in v.items()}))
    assert isinstance(v, list)
    return pb.Value(list_value=pb.ListValue(values=[value(x) for x in v]))


def point_id(pid: int | str) -> pb.PointId:
    return pb.PointId(num=pid) if isinstance(pid, int) else pb.PointId(uuid=pid)


def scroll(points: list[pb.RetrievedPoint], next_offset: int | str | None = None) -> bytes:
    response = pb.ScrollResponse(result=points, time=0.001)
    if next_offset is not None:
        response.next_page_offset.CopyFrom(point_id(next_offset))
    return response.SerializeToString()


def named(**outputs: pb.VectorOutput) -> pb.VectorsOutput:
    return pb.VectorsOutput(vectors=pb.NamedVectorsOutput(vectors=outputs))


DENSE = [0.5, -1.25, 3.0e38, 1e-45]
MULTI = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
INDICES, VALUES = [3, 17, 300, 2**32 - 1], [0.25, -0.5, 1.0, 2.0]


def current_outputs() -> pb.VectorsOutput:
    """Vectors as servers from 1.17 send them: VectorOutput's oneof."""
    return named(
        text=pb.VectorOutput(dense=pb.DenseVector(data=DENSE)),
        keywords=pb.VectorOutput(sparse=pb.SparseVector(values=VALUES, indices=INDICES)),
        colbert=pb.VectorOutput(
            multi_dense=pb.MultiDenseVector(vectors=[pb.DenseVector(data=row) for row in MULTI])
        ),
    )


def legacy_outputs() -> pb.VectorsOutput:
    """Vectors as servers before 1.17 send them: data, indices, vectors_count."""
    return named(
        text=pb.VectorOutput(data=DENSE),
        keywords=pb.VectorOutput(data=VALUES, indices=pb.SparseIndices(data=INDICES)),
        colbert=pb.VectorOutput(data=[x for row in MULTI for x in row], vectors_count=3),
    )


def assert_vectors(vectors: dict[str, object]) -> None:
    np.testing.assert_array_equal(vectors["text"], np.asarray(DENSE, dtype=np.float32))
    sparse = vectors["keywords"]
    assert isinstance(sparse, SparseVector)
    assert sparse.indices.tolist() == INDICES and sparse.indices.dtype == np.int64
    np.testing.assert_array_equal(sparse.values, np.asarray(VALUES, dtype=np.float32))
    np.testing.assert_array_equal(vectors["colbert"], np.asarray(MULTI, dtype=np.float32))


@pytest.mark.parametrize("outputs", [current_outputs, legacy_outputs], ids=["1.17+", "before"])
def test_grpc_points_of_every_shape(outputs) -> None:
    payload = {k: value(v) for k, v in PAYLOAD.items()}
    content = scroll(
        [
            pb.RetrievedPoint(id=point_id(42), payload=payload, vectors=outputs()),
            pb.RetrievedPoint(
                id=point_id(UUID),
                vectors=pb.VectorsOutput(vector=pb.VectorOutput(dense=pb.DenseVector(data=[1]))),
                shard_key=pb.ShardKey(keyword="shard"),  # fields vec2pg does not read
                order_value=pb.OrderValue(int=5),
            ),
        ],
        next_offset=2**64 - 1,
    )

    first, second = qdrant_grpc.decode_scroll("Qdrant at x", None, content)

    assert (first.id, first.metadata, first.invalid) == ("42", PAYLOAD, None)
    assert_vectors(dict(first.vectors))
    assert second.id == UUID and second.metadata == {}  # gRPC sends no payload as {}
    np.testing.assert_array_equal(second.vectors[""], np.asarray([1.0], dtype=np.float32))
    assert qdrant_grpc.scroll_next_offset(content) == 2**64 - 1
    assert qdrant_grpc.scroll_next_offset(scroll([])) is None


def test_grpc_floats_that_are_not_packed_are_read_too() -> None:
    """A generated encoder packs repeated floats; protobuf lets a decoder meet them one
    fixed32 at a time, even mixed with packed ones."""
    wire = qdrant_grpc
    unpacked = b"".join(
        wire._tag(1, 5) + np.float32(x).tobytes() for x in DENSE[:2]
    ) + wire._len_field(1, np.asarray(DENSE[2:], dtype="<f4").tobytes())
    output = wire._len_field(101, unpacked)
    vectors = wire._len_field(1, output)
    point = wire._len_field(1, wire._point_id_bytes(7)) + wire._len_field(4, vectors)
    (record,) = wire.decode_scroll("w", None, wire._len_field(2, point))
    np.testing.assert_array_equal(record.vectors[""], np.asarray(DENSE, dtype=np.float32))


def test_grpc_points_at_or_past_the_chain_end_are_left_out() -> None:
    points = [pb.RetrievedPoint(id=point_id(i)) for i in (5, 9, 10, 11)]
    points.append(pb.RetrievedPoint(id=point_id(UUID)))
    content = scroll(points)

    assert [r.id for r in qdrant_grpc.decode_scroll("w", 10, content)] == ["5", "9"]
    upper = point_key(UUID)
    assert [r.id for r in qdrant_grpc.decode_scroll("w", upper, content)] == [
        "5",
        "9",
        "10",
        "11",
    ]


def test_a_grpc_multivector_of_unequal_rows_is_a_bad_record() -> None:
    ragged = pb.MultiDenseVector(vectors=[pb.DenseVector(data=[1, 2]), pb.DenseVector(data=[3])])
    vectors = named(colbert=pb.VectorOutput(multi_dense=ragged))
    content = scroll([pb.RetrievedPoint(id=point_id(1), vectors=vectors)])

    (record,) = qdrant_grpc.decode_scroll("w", None, content)

    assert record.invalid == (
        "vector 'colbert' is a multivector whose sub-vectors differ in length (1, 2 values)"
    )
    assert record.vectors["colbert"] == [[1.0, 2.0], [3.0]]


def test_a_grpc_answer_that_does_not_decode_is_a_terminal_error() -> None:
    content = scroll([pb.RetrievedPoint(id=point_id(1), vectors=current_outputs())])
    for broken in (content[:-3], content + b"\x0a\x05ab"):
        with pytest.raises(SourceError) as caught:
            qdrant_grpc.decode_scroll("Qdrant at x", None, broken)
        assert not isinstance(caught.value, Transient)
        assert str(caught.value).startswith("Qdrant at x sent a gRPC scroll answer vec2pg cannot")
        with pytest.raises(ValueError):
            qdrant_grpc.scroll_next_offset(broken)


def test_grpc_requests_are_what_the_generated_messages_read() -> None:
    request = pb.ScrollPoints.FromString(qdrant_grpc._scroll_request(b"docs", UUID, 256, True))
    assert (request.collection_name, request.offset.uuid, request.limit) == ("docs", UUID, 256)
    assert request.with_payload.enable and request.with_vectors.enable
    request = pb.ScrollPoints.FromString(qdrant_grpc._scroll_request(b"d", None, 7, False))
    assert not request.HasField("offset")
    assert request.HasField("with_payload") and not request.with_payload.enable
    get = pb.GetPoints.FromString(qdrant_grpc._get_request("Ünï".encode(), [2**64 - 1, UUID]))
    assert get.collection_name == "Ünï" and [i.num or i.uuid for i in get.ids] == [2**64 - 1, UUID]
    assert get.with_payload.enable and get.with_vectors.enable


# -- REST -------------------------------------------------------------------------------


def rest_scroll(points: list[dict], next_offset: object = None, *, dumps=orjson.dumps) -> bytes:
    body = {
        "result": {"points": points, "next_page_offset": next_offset},
        "status": "ok",
        "time": 0.002,
    }
    data = dumps(body)
    return data if isinstance(data, bytes) else data.encode()


REST_POINT = {
    "id": 42,
    "payload": PAYLOAD,
    "vector": {
        "text": DENSE,
        "keywords": {"indices": INDICES, "values": VALUES},
        "colbert": MULTI,
    },
}


def test_rest_points_of_every_shape() -> None:
    content = rest_scroll([REST_POINT, {"id": UUID.upper(), "vector": [1.0, 2]}], UUID)

    first, second = qdrant_rest.decode_scroll("w", None, content)

    assert (first.id, first.metadata, first.invalid) == ("42", PAYLOAD, None)
    assert_vectors(dict(first.vectors))
    assert second.id == UUID and second.metadata is None  # REST sends no payload as null
    np.testing.assert_array_equal(second.vectors[""], np.asarray([1, 2], dtype=np.float32))
    assert qdrant_rest.next_page_offset("w", content) == UUID


def test_rest_json_that_simdjson_refuses_is_read_by_python() -> None:
    """Text that is not Unicode and integers beyond 64 bits are valid JSON; NaN and
    Infinity are what Python's json writes. Each becomes the one record the sink rejects
    (with its id) or stores, not a failed page."""
    points = [
        {"id": 1, "payload": {"text": "\ud800"}, "vector": [1.0, float("inf")]},
        {"id": 2, "payload": {"huge": 2**70}, "vector": [1.0, 2.0]},
    ]
    content = rest_scroll(points, 3, dumps=json.dumps)

    first, second = qdrant_rest.decode_scroll("w", None, content)

    assert first.metadata == {"text": "\ud800"}
    assert first.vectors[""].tolist() == [1.0, float("inf")]
    assert second.metadata == {"huge": 2**70}
    assert qdrant_rest.next_page_offset("w", content) == 3


@pytest.mark.parametrize(
    ("vector", "reason"),
    [
        (
            {"colbert": [[1.0, 2.0], [3.0]]},
            "vector 'colbert' is a multivector whose sub-vectors differ in length (1, 2 values)",
        ),
        ({"text": [1.0, None]}, "vector 'text' is not a list of numbers"),
        ({"text": [1.0, [2.0, 3.0]]}, "vector 'text' is not a list of numbers"),
        ({"text": {"a": 1}}, "vector 'text' is an object but not a sparse vector"),
    ],
)
def test_a_rest_vector_that_is_not_one_is_a_bad_record(vector, reason) -> None:
    (record,) = qdrant_rest.decode_scroll("w", None, rest_scroll([{"id": 9, "vector": vector}]))

    assert record.invalid == reason
    (name,) = vector
    assert record.vectors[name] == vector[name]  # as read, for the rejects file


def test_rest_points_at_or_past_the_chain_end_are_left_out() -> None:
    content = rest_scroll([{"id": i} for i in (5, 9, 10)] + [{"id": UUID}])
    assert [r.id for r in qdrant_rest.decode_scroll("w", 10, content)] == ["5", "9"]


def test_the_next_offset_of_a_rest_answer_is_found_wherever_it_is() -> None:
    inside = [{"id": 1, "payload": {"next_page_offset": 77}}]  # a payload key of that name
    assert qdrant_rest.next_page_offset("w", rest_scroll(inside, 5)) == 5
    first = orjson.dumps({"result": {"next_page_offset": 6, "points": inside}, "status": "ok"})
    assert qdrant_rest.next_page_offset("w", first) == 6
    spaced = json.dumps(json.loads(rest_scroll(inside, None)), indent=2).encode()
    assert qdrant_rest.next_page_offset("w", spaced) is None
    big = rest_scroll(inside, 2**64 - 1)
    assert qdrant_rest.next_page_offset("w", big) == 2**64 - 1


def test_a_rest_answer_cut_short_is_asked_for_again() -> None:
    content = rest_scroll([REST_POINT] * 3, 99)
    for cut in (len(content) - 1, len(content) // 2, 10):
        with pytest.raises(SourceUnavailable) as caught:
            qdrant_rest.next_page_offset("Qdrant at x", content[:cut])
        assert str(caught.value).startswith(
            "Qdrant at x sent a scroll answer that does not parse, as if cut short"
        )


def test_ids_are_stored_canonically() -> None:
    assert qdrant_rest.text_id(2**64 - 1) == "18446744073709551615"
    assert qdrant_rest.text_id(UUID.upper()) == UUID
    assert qdrant_rest.text_id(uuid.UUID(UUID).hex) == UUID
