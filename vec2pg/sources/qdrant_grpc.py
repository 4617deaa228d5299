"""Qdrant's points over its gRPC API (port 6334), where vectors travel as packed float32.

Scroll and retrieve are sent on a channel of our own, and their answers kept as the bytes
that came (no protobuf classes are built): :func:`decode_scroll` (which may run in
another process, see :class:`~vec2pg.sources.base.Raw`) reads protobuf's wire format
itself and takes each vector's floats with one ``numpy.frombuffer``, without a Python
float per value. That costs about 2 ms of CPU for a page of 256 points of 1,024 dims,
payloads included, against 18 ms for qdrant-client's scroll over gRPC and 8 ms for the
REST answer's JSON (:mod:`~vec2pg.sources.qdrant_rest`); it needs neither qdrant-client
nor protobuf in the decoding processes (qdrant-client alone costs 0.7 s and 60 MB to
import).

The messages are qdrant's ``points.proto`` and ``json_with_int.proto``; the field numbers
below are theirs. Servers from 1.17 put vectors in ``VectorOutput``'s ``dense`` /
``sparse`` / ``multi_dense``; older ones in the deprecated ``data`` (with ``indices`` for a
sparse vector, ``vectors_count`` for a multivector): both are read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import numpy as np

from vec2pg.errors import (
    RateLimited,
    SourceAuthError,
    SourceError,
    SourceNotFound,
    SourceUnavailable,
    SourceUnreachable,
)
from vec2pg.records import Record, SparseVector, as_array
from vec2pg.sources.base import Raw
from vec2pg.sources.qdrant_ranges import PointId, point_key
from vec2pg.sources.qdrant_rest import text_id

SCROLL = "/qdrant.Points/Scroll"
GET = "/qdrant.Points/Get"

# Wire types (https://protobuf.dev/programming-guides/encoding/).
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_DOUBLE = struct.Struct("<d")


class GrpcPoints:
    """Scroll and get calls to a Qdrant server's gRPC API, on one channel (HTTP/2 carries
    the calls of every reading thread side by side). Nothing is retried here."""

    def __init__(
        self,
        target: str,
        collection: str,
        *,
        tls: bool,
        api_key: str | None,
        timeout: float,
        where: str,
        credentials: str,
    ) -> None:
        import grpc

        from vec2pg import __version__

        self.where = where
        self.collection = collection
        self._credentials = credentials
        self._timeout = timeout
        self._metadata = (("api-key", api_key),) if api_key is not None else ()
        options = [
            # A page of 10,000 points of 1,024 dims is 40 MB; gRPC's default limit is 4 MB.
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1),
            ("grpc.primary_user_agent", f"vec2pg/{__version__}"),
            # A server that restarts is reconnected to within seconds, not gRPC's default
            # of up to two minutes: the pipeline's retries wait for it.
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 5000),
        ]
        if tls:
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(), options)
        else:
            self._channel = grpc.insecure_channel(target, options)
        # Requests and answers as bytes: encoded and decoded here.
        self._scroll = self._channel.unary_unary(SCROLL)
        self._get = self._channel.unary_unary(GET)
        self._name = collection.encode()

    def scroll(self, offset: PointId | None, limit: int, upper: int | None) -> tuple[Raw, Any]:
        """One scroll page of points with vectors and payload, as it came, and its next
        offset; decoding it leaves out points whose key is ``upper`` or more."""
        content = self._call(self._scroll, _scroll_request(self._name, offset, limit, True))
        return Raw(content, partial(decode_scroll, self.where, upper)), self._next(content)

    def scroll_ids(self, offset: PointId | None, limit: int) -> tuple[list[PointId], Any]:
        """One scroll page of point ids only, and its next offset."""
        content = self._call(self._scroll, _scroll_request(self._name, offset, limit, False))
        try:
            ids = [
                _point_id_in_point(content, start, stop)
                for number, wire, start, stop in _fields(content, 0, len(content))
                if number == 2 and wire == _LEN
            ]
        except (IndexError, ValueError, UnicodeDecodeError) as exc:
            raise _unreadable(self.where, "scroll", exc) from exc
        return ids, self._next(content)

    def retrieve(self, ids: Sequence[PointId]) -> list[Record]:
        """The points with these ids (those the collection has), vectors and payload."""
        content = self._call(self._get, _get_request(self._name, ids))
        return decode_points(self.where, content)

    def close(self) -> None:
        self._channel.close()

    def _next(self, content: bytes) -> Any:
        try:
            return scroll_next_offset(content)
        except (IndexError, ValueError, UnicodeDecodeError) as exc:
            raise _unreadable(self.where, "scroll", exc) from exc

    def _call(self, method: Any, request: bytes) -> bytes:
        import grpc

        try:
            answer: bytes = method(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise grpc_error(
                exc,
                where=self.where,
                credentials=self._credentials,
                collection=self.collection,
                doing="reading points",
            ) from exc
        return answer


def grpc_error(
    exc: Any, *, where: str, credentials: str, collection: str, doing: str
) -> SourceError:
    """vec2pg's error for a failed gRPC call (a ``grpc.RpcError``): Qdrant's status codes
    (``lib/storage/src/content_manager/conversions.rs``) sorted as :func:`status_error`
    sorts HTTP's."""
    import grpc

    codes = grpc.StatusCode
    code = exc.code() if callable(getattr(exc, "code", None)) else codes.UNKNOWN
    details = (exc.details() if callable(getattr(exc, "details", None)) else None) or str(exc)
    status = f"gRPC {code.name}"
    if code in (codes.UNAUTHENTICATED, codes.PERMISSION_DENIED):
        return SourceAuthError(f"{where} refused the API key ({status}): {credentials}")
    if code == codes.NOT_FOUND:
        return SourceNotFound(f"{where}: collection {collection!r} not found ({details})")
    if code == codes.RESOURCE_EXHAUSTED:
        return RateLimited(f"{where} is rate limiting ({status}) while {doing}", _retry_after(exc))
    if code == codes.UNAVAILABLE and _unreachable(details):
        return SourceUnreachable(f"{where} did not answer ({status}): {details}")
    transient = (codes.UNAVAILABLE, codes.DEADLINE_EXCEEDED, codes.INTERNAL, codes.ABORTED)
    if code in (*transient, codes.UNKNOWN):
        return SourceUnavailable(f"{where} answered {status} while {doing}: {details}")
    return SourceError(f"{where} answered {status} while {doing}: {details}")


def _unreachable(details: str) -> bool:
    """A refused connection or a name that does not resolve, as gRPC core words them."""
    return any(
        text in details
        for text in ("Connection refused", "DNS resolution failed", "Name or service not known")
    )


def _retry_after(exc: Any) -> float | None:
    """Qdrant's ``retry-after`` trailer (whole seconds) on a RESOURCE_EXHAUSTED answer."""
    try:
        for key, value in exc.trailing_metadata() or ():
            if key == "retry-after":
                return max(0.0, float(value))
    except (AttributeError, TypeError, ValueError):
        pass
    return None


# -- the wire format ------------------------------------------------------------------------


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(number: int, wire: int) -> bytes:
    return _varint_bytes(number << 3 | wire)


def _len_field(number: int, payload: bytes) -> bytes:
    return _tag(number, _LEN) + _varint_bytes(len(payload)) + payload


def _point_id_bytes(point_id: PointId) -> bytes:
    """A ``PointId``: ``uint64 num = 1`` or ``string uuid = 2``."""
    if isinstance(point_id, int):
        return _tag(1, _VARINT) + _varint_bytes(point_id)
    return _len_field(2, point_id.encode())


def _selector(enable: bool) -> bytes:
    """A ``WithPayloadSelector`` or ``WithVectorsSelector`` of ``bool enable = 1``."""
    return _tag(1, _VARINT) + (b"\x01" if enable else b"\x00")


def _scroll_request(name: bytes, offset: PointId | None, limit: int, full: bool) -> bytes:
    """A ``ScrollPoints``: collection_name = 1, offset = 3, limit = 4, with_payload = 6,
    with_vectors = 7."""
    parts = [_len_field(1, name)]
    if offset is not None:
        parts.append(_len_field(3, _point_id_bytes(offset)))
    parts.append(_tag(4, _VARINT) + _varint_bytes(limit))
    parts.append(_len_field(6, _selector(full)))
    parts.append(_len_field(7, _selector(full)))
    return b"".join(parts)


def _get_request(name: bytes, ids: Sequence[PointId]) -> bytes:
    """A ``GetPoints``: collection_name = 1, ids = 2, with_payload = 4, with_vectors = 5."""
    parts = [_len_field(1, name)]
    parts += [_len_field(2, _point_id_bytes(i)) for i in ids]
    parts.append(_len_field(4, _selector(True)))
    parts.append(_len_field(5, _selector(True)))
    return b"".join(parts)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("a varint longer than 10 bytes")


def _fields(buf: bytes, pos: int, stop: int) -> Iterator[tuple[int, int, int, int]]:
    """The fields of the message in ``buf[pos:stop]``: ``(number, wire type, a, b)``, where
    for a length-delimited field ``buf[a:b]`` is its payload, for a varint ``a`` is its
    value, and for a fixed-size one ``a`` is where its bytes start."""
    while pos < stop:
        tag = buf[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = _varint(buf, pos)
        wire = tag & 7
        if wire == _LEN:
            size = buf[pos]
            if size < 0x80:
                pos += 1
            else:
                size, pos = _varint(buf, pos)
            end = pos + size
            if end > stop:
                raise ValueError("a field runs past the end of its message")
            yield tag >> 3, wire, pos, end
            pos = end
        elif wire == _VARINT:
            value, pos = _varint(buf, pos)
            yield tag >> 3, wire, value, pos
        elif wire == _I64:
            yield tag >> 3, wire, pos, pos + 8
            pos += 8
        elif wire == _I32:
            yield tag >> 3, wire, pos, pos + 4
            pos += 4
        else:
            raise ValueError(f"wire type {wire} (groups are not in Qdrant's messages)")
    if pos != stop:
        raise ValueError("a field runs past the end of its message")


def scroll_next_offset(content: bytes) -> PointId | None:
    """A ``ScrollResponse``'s ``next_page_offset = 1`` (``None`` on the last page).

    Qdrant writes it first, but a field may come anywhere (the last one counts), so every
    top-level field is stepped over: the points (``result = 2``) by their lengths alone."""
    found: PointId | None = None
    pos, stop = 0, len(content)
    while pos < stop:
        tag = content[pos]
        if tag == 0x12:  # result = 2, length-delimited: a point
            size = content[pos + 1]
            if size < 0x80:
                pos += 2 + size
            else:
                size, pos = _varint(content, pos + 1)
                pos += size
            continue
        end = _field_end(content, pos)
        for number, wire, a, b in _fields(content, pos, end):
            if number == 1 and wire == _LEN:
                found = _point_id(content, a, b)
        pos = end
    if pos != stop:
        raise ValueError("a field runs past the end of its message")
    return found


def _field_end(buf: bytes, pos: int) -> int:
    """Where the field that starts at ``pos`` ends."""
    tag, at = _varint(buf, pos)
    wire = tag & 7
    if wire == _LEN:
        size, at = _varint(buf, at)
        return at + size
    if wire == _VARINT:
        return _varint(buf, at)[1]
    if wire == _I64:
        return at + 8
    if wire == _I32:
        return at + 4
    raise ValueError(f"wire type {wire} (groups are not in Qdrant's messages)")


def _point_id(buf: bytes, start: int, stop: int) -> PointId:
    point_id: PointId | None = None
    for number, wire, a, b in _fields(buf, start, stop):
        if number == 1 and wire == _VARINT:
            point_id = a
        elif number == 2 and wire == _LEN:
            point_id = buf[a:b].decode()
    if point_id is None:
        raise ValueError("a point id that is neither a number nor a UUID")
    return point_id


def _point_id_in_point(buf: bytes, start: int, stop: int) -> PointId:
    for number, wire, a, b in _fields(buf, start, stop):
        if number == 1 and wire == _LEN:
            return _point_id(buf, a, b)
    raise ValueError("a point without an id")


# -- decoding, in any process ------------------------------------------------------------


def decode_scroll(where: str, upper: int | None, content: bytes) -> list[Record]:
    """The records of a ``ScrollResponse`` (its ``result = 2`` points), less the points
    whose key is ``upper`` or more: they belong to the next chain."""
    try:
        records = []
        for number, wire, start, stop in _fields(content, 0, len(content)):
            if number == 2 and wire == _LEN:
                point_id, record = _point(content, start, stop)
                if upper is not None and point_key(point_id) >= upper:
                    break  # points come in key order: the rest are the next chain's
                records.append(record)
        return records
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise _unreadable(where, "scroll", exc) from exc


def decode_points(where: str, content: bytes) -> list[Record]:
    """The records of a ``GetResponse`` (its ``result = 1`` points)."""
    try:
        return [
            _point(content, start, stop)[1]
            for number, wire, start, stop in _fields(content, 0, len(content))
            if number == 1 and wire == _LEN
        ]
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise _unreadable(where, "get", exc) from exc


def _unreadable(where: str, doing: str, exc: BaseException) -> SourceError:
    # gRPC frames each answer with its length: one that does not decode came whole, and is
    # not worth asking for again.
    return SourceError(
        f"{where} sent a gRPC {doing} answer vec2pg cannot read ({type(exc).__name__}: {exc})"
    )


def _point(buf: bytes, start: int, stop: int) -> tuple[PointId, Record]:
    """A ``RetrievedPoint``: id = 1, payload = 2 (map entries), vectors = 4."""
    point_id: PointId | None = None
    payload: dict[str, Any] = {}
    vectors: dict[str, Any] = {}
    problems: list[str] = []
    for number, wire, a, b in _fields(buf, start, stop):
        if wire != _LEN:
            continue
        if number == 1:
            point_id = _point_id(buf, a, b)
        elif number == 2:
            key, value = _entry(buf, a, b)
            payload[key] = value
        elif number == 4:
            _vectors(buf, a, b, vectors, problems)
    if point_id is None:
        raise ValueError("a point without an id")
    record = Record(text_id(point_id), vectors, payload, invalid="; ".join(problems) or None)
    return point_id, record


def _entry(buf: bytes, start: int, stop: int) -> tuple[str, Any]:
    """A ``map<string, Value>`` entry: key = 1, value = 2."""
    key, value = "", None
    for number, wire, a, b in _fields(buf, start, stop):
        if number == 1 and wire == _LEN:
            key = buf[a:b].decode()
        elif number == 2 and wire == _LEN:
            value = _value(buf, a, b)
    return key, value


def _value(buf: bytes, start: int, stop: int) -> Any:
    """A ``Value``: null = 1, double = 2, int64 = 3, string = 4, bool = 5, struct = 6
    (``map<string, Value> fields = 1``), list = 7 (``repeated Value values = 1``)."""
    value: Any = None
    for number, wire, a, b in _fields(buf, start, stop):
        if number == 4 and wire == _LEN:
            value = buf[a:b].decode()
        elif number == 3 and wire == _VARINT:
            value = a - (1 << 64) if a >= 1 << 63 else a
        elif number == 2 and wire == _I64:
            value = _DOUBLE.unpack_from(buf, a)[0]
        elif number == 5 and wire == _VARINT:
            value = a != 0
        elif number == 1:
            value = None
        elif number == 6 and wire == _LEN:
            value = dict(
                _entry(buf, c, d) for n, w, c, d in _fields(buf, a, b) if n == 1 and w == _LEN
            )
        elif number == 7 and wire == _LEN:
            value = [_value(buf, c, d) for n, w, c, d in _fields(buf, a, b) if n == 1 and w == _LEN]
    return value


def _vectors(
    buf: bytes, start: int, stop: int, vectors: dict[str, Any], problems: list[str]
) -> None:
    """A ``VectorsOutput``: the unnamed vector = 1, or named ones = 2 (``NamedVectorsOutput``:
    ``map<string, VectorOutput> vectors = 1``)."""
    for number, wire, a, b in _fields(buf, start, stop):
        if wire != _LEN:
            continue
        if number == 1:
            _output(buf, a, b, "", vectors, problems)
        elif number == 2:
            for n, w, c, d in _fields(buf, a, b):
                if n == 1 and w == _LEN:
                    name, where = "", (0, 0)
                    for n2, w2, e, f in _fields(buf, c, d):
                        if n2 == 1 and w2 == _LEN:
                            name = buf[e:f].decode()
                        elif n2 == 2 and w2 == _LEN:
                            where = (e, f)
                    _output(buf, where[0], where[1], name, vectors, problems)


def _output(
    buf: bytes, start: int, stop: int, name: str, vectors: dict[str, Any], problems: list[str]
) -> None:
    """A ``VectorOutput``: ``dense = 101`` (``DenseVector{data = 1}``), ``sparse = 102``
    (``SparseVector{values = 1, indices = 2}``), ``multi_dense = 103``
    (``MultiDenseVector{repeated DenseVector vectors = 1}``); before 1.17 ``data = 1``,
    ``indices = 2`` (``SparseIndices{data = 1}``), ``vectors_count = 3``."""
    data: list[tuple[int, int, int]] = []  # legacy floats: (wire type, start, stop) pieces
    indices: tuple[int, int] | None = None
    count: int | None = None
    for number, wire, a, b in _fields(buf, start, stop):
        if number == 101 and wire == _LEN:
            vectors[name] = _floats(buf, _only(buf, a, b, 1))
            return
        if number == 102 and wire == _LEN:
            values, sparse_indices = [], []
            for n, w, c, d in _fields(buf, a, b):
                if n == 1:
                    values.append((w, c, d))
                elif n == 2:
                    sparse_indices.append((w, c, d))
            vectors[name] = SparseVector(_indices(buf, sparse_indices), _floats(buf, values))
            return
        if number == 103 and wire == _LEN:
            rows = [
                _floats(buf, _only(buf, c, d, 1))
                for n, w, c, d in _fields(buf, a, b)
                if n == 1 and w == _LEN
            ]
            _multi(name, rows, vectors, problems)
            return
        if number == 1:
            data.append((wire, a, b))
        elif number == 2 and wire == _LEN:
            indices = (a, b)
        elif number == 3 and wire == _VARINT:
            count = a
    values = _floats(buf, data)
    if indices is not None:
        vectors[name] = SparseVector(_indices(buf, _only(buf, indices[0], indices[1], 1)), values)
    elif count is not None:
        if count > 0 and values.size % count == 0:
            vectors[name] = values.reshape(count, -1)
        else:
            vectors[name] = values.tolist()
            problems.append(
                f"vector {name!r} is a multivector of {values.size} values that do not make "
                f"{count} sub-vectors of one length"
            )
    else:
        vectors[name] = values


def _only(buf: bytes, start: int, stop: int, number: int) -> list[tuple[int, int, int]]:
    """The pieces (wire type, start, stop) of field ``number`` of a message."""
    return [(w, a, b) for n, w, a, b in _fields(buf, start, stop) if n == number]


def _floats(buf: bytes, pieces: list[tuple[int, int, int]]) -> Any:
    """A ``repeated float`` field as a float32 array: packed (little-endian float32s in one
    length-delimited piece, as Qdrant sends them) or not (a fixed32 per value)."""
    arrays = []
    for wire, start, stop in pieces:
        if wire == _LEN:
            if (stop - start) % 4:
                raise ValueError("packed floats whose length is not a multiple of 4")
            arrays.append(np.frombuffer(buf, "<f4", (stop - start) // 4, start))
        elif wire == _I32:
            arrays.append(np.frombuffer(buf, "<f4", 1, start))
        else:
            raise ValueError(f"floats of wire type {wire}")
    if len(arrays) == 1:
        return arrays[0].astype(np.float32)  # a copy: aligned, and apart from the answer
    return np.concatenate(arrays).astype(np.float32) if arrays else np.zeros(0, np.float32)


def _indices(buf: bytes, pieces: list[tuple[int, int, int]]) -> Any:
    """A ``repeated uint32`` field (packed varints, or a varint per value) as int64s."""
    parts = []
    for wire, start, stop in pieces:
        if wire == _VARINT:
            parts.append(np.array([start], dtype=np.int64))
        elif wire == _LEN:
            parts.append(_packed_varints(np.frombuffer(buf, np.uint8, stop - start, start)))
        else:
            raise ValueError(f"indices of wire type {wire}")
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _packed_varints(data: Any) -> Any:
    """Packed varints (each at most 5 bytes: uint32s) decoded at once with numpy."""
    if data.size == 0:
        return np.zeros(0, np.int64)
    ends = np.flatnonzero(data < 0x80)
    if ends.size == 0 or ends[-1] != data.size - 1:
        raise ValueError("packed varints cut short")
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if lengths.max() > 5:
        raise ValueError("a packed uint32 longer than 5 bytes")
    values = np.zeros(ends.size, np.int64)
    for k in range(int(lengths.max())):
        has = lengths > k
        values[has] |= (data[starts[has] + k].astype(np.int64) & 0x7F) << (7 * k)
    return values


def _multi(name: str, rows: list[Any], vectors: dict[str, Any], problems: list[str]) -> None:
    if rows and len({row.size for row in rows}) == 1:
        vectors[name] = np.stack(rows)
        return
    value = [row.tolist() for row in rows]
    try:
        vectors[name] = as_array(value, name)
    except ValueError as exc:  # rejected with its reason, as the sink rejects records
        vectors[name] = value
        problems.append(str(exc))
