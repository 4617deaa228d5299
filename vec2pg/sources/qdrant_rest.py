"""Qdrant's points over its REST API: scroll and retrieve with urllib3, decoded by simdjson.

qdrant-client turns every vector component of a scroll answer into a Python float and
then into pydantic models: about 25 ms of CPU for a page of 256 points of 1,024 dims,
which capped a run at about 10,000 points a second on a whole core. Here the answer is
kept as the bytes that came, and :func:`decode_scroll` (which may run in another
process, see :class:`~vec2pg.sources.base.Raw`) reads it with simdjson, copying each
vector's numbers straight into a numpy buffer: about 8 ms for the same page, most of it
simdjson reading the numbers' text. The
control plane (the collection's configuration, its count) stays with qdrant-client.

The scroll's ``next_page_offset``, which the next page needs at once, is read from the end
of the answer (where Qdrant writes it, after the points) without parsing the points;
that also finds an answer cut short on its way, which is then asked for again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from typing import Any
from urllib.parse import quote

import numpy as np

from vec2pg.errors import SourceError, SourceUnavailable, SourceUnreachable
from vec2pg.records import Record, SparseVector, as_array
from vec2pg.sources.base import Raw
from vec2pg.sources.http import (
    connection_pool,
    parse_json,
    retry_after,
    status_error,
    unreachable,
)
from vec2pg.sources.qdrant_ranges import PointId, point_key

#: Where Qdrant writes the scroll's next offset: after the points, at the end.
_NEXT = b'"next_page_offset"'


class RestPoints:
    """Scroll and retrieve requests to a Qdrant server's REST API, over kept-alive
    connections (urllib3; proxies from the environment, as qdrant-client's httpx uses
    them). Nothing is retried here: the pipeline retries, and counts what it retried."""

    def __init__(
        self,
        base_url: str,
        collection: str,
        *,
        api_key: str | None,
        timeout: float,
        connections: int,
        where: str,
        credentials: str,
    ) -> None:

        self.where = where
        self.collection = collection
        self._credentials = credentials
        path = f"{base_url}/collections/{quote(collection, safe='')}/points"
        self._scroll_url, self._points_url = f"{path}/scroll", path
        headers = {"Content-Type": "application/json", "User-Agent": _user_agent()}
        if api_key is not None:
            headers["api-key"] = api_key
        self._pool: Any = connection_pool(
            base_url, headers, timeout=timeout, connections=connections, ca=None
        )

    def scroll(self, offset: PointId | None, limit: int, upper: int | None) -> tuple[Raw, Any]:
        """One scroll page of points with vectors and payload, as it came, and its next
        offset; decoding it leaves out points whose key is ``upper`` or more."""
        content = self._post(self._scroll_url, _scroll_request(offset, limit, True), "scroll")
        raw = Raw(content, partial(decode_scroll, self.where, upper))
        return raw, next_page_offset(self.where, content)

    def scroll_ids(self, offset: PointId | None, limit: int) -> tuple[list[PointId], Any]:
        """One scroll page of point ids only, and its next offset."""
        import orjson

        content = self._post(self._scroll_url, _scroll_request(offset, limit, False), "scroll")
        try:
            result = orjson.loads(content)["result"]
            return [p["id"] for p in result["points"]], result["next_page_offset"]
        except (ValueError, KeyError, TypeError) as exc:
            raise _cut_short(self.where, "scroll", content, exc) from exc

    def retrieve(self, ids: Sequence[PointId]) -> list[Record]:
        """The points with these ids (those the collection has), vectors and payload."""
        request = {"ids": list(ids), "with_payload": True, "with_vector": True}
        content = self._post(self._points_url, _dumps(request), "retrieve")
        return decode_points(self.where, content)

    def close(self) -> None:
        self._pool.clear()

    def _post(self, url: str, body: bytes, doing: str) -> bytes:
        import urllib3

        try:
            response = self._pool.request(
                "POST", url, body=body, preload_content=True, redirect=False
            )
        except urllib3.exceptions.HTTPError as exc:  # refused, timed out, dropped
            error = SourceUnreachable if unreachable(exc) else SourceUnavailable
            raise error(f"{self.where} did not answer a {doing}: {_describe(exc)}") from exc
        if response.status != 200:
            raise status_error(
                response.status,
                error_detail(response.data),
                where=self.where,
                credentials=self._credentials,
                not_found=f"{self.where}: collection {self.collection!r} not found",
                doing=f"reading points ({doing})",
                retry_after=retry_after(response.headers.get("retry-after")),
            )
        data: bytes = response.data
        return data


def _user_agent() -> str:
    from vec2pg import __version__

    return f"vec2pg/{__version__}"


def _dumps(request: dict[str, Any]) -> bytes:
    import orjson

    return orjson.dumps(request)


def _scroll_request(offset: PointId | None, limit: int, full: bool) -> bytes:
    request: dict[str, Any] = {"limit": limit, "with_payload": full, "with_vector": full}
    if offset is not None:
        request["offset"] = offset
    return _dumps(request)


def next_page_offset(where: str, content: bytes) -> Any:
    """The ``next_page_offset`` of a scroll answer (a point id, or ``None`` on the last
    page), read from the answer's end: an answer that does not end as a whole one does
    (cut short on its way) raises :class:`SourceUnavailable`, and is asked for again."""
    import orjson

    at = content.rfind(_NEXT)
    if at >= 0:
        try:
            # The offset and what follows it close the answer's "result" and the answer.
            tail = orjson.loads(b'{"result":{' + content[at:])
            return _point_id(tail["result"]["next_page_offset"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            pass  # found inside a payload, or not at the end: read the whole answer
    try:
        return _point_id(json.loads(content)["result"]["next_page_offset"])
    except (ValueError, KeyError, TypeError) as exc:
        raise _cut_short(where, "scroll", content, exc) from exc


def _point_id(value: Any) -> PointId | None:
    if value is None or (isinstance(value, (int, str)) and not isinstance(value, bool)):
        return value
    raise TypeError(f"a point id is an integer or a UUID, not {value!r}")


def _cut_short(where: str, doing: str, content: bytes, exc: BaseException) -> SourceUnavailable:
    return SourceUnavailable(
        f"{where} sent a {doing} answer that does not parse, as if cut short "
        f"({type(exc).__name__}: {exc}; {len(content):,} bytes)"
    )


def error_detail(content: bytes | None) -> str:
    """The message of a Qdrant error answer: ``{"status": {"error": ...}}`` or plain text."""
    try:
        return str(json.loads(content or b"")["status"]["error"])
    except (ValueError, KeyError, TypeError):
        return (content or b"").decode("utf-8", "replace").strip()[:200] or "no details"


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    shown = reason if isinstance(reason, BaseException) else exc
    text = str(shown).strip()
    return f"{type(shown).__name__}: {text}" if text else type(shown).__name__


# -- decoding, in any process ------------------------------------------------------------


def decode_scroll(where: str, upper: int | None, content: bytes) -> list[Record]:
    """The records of a scroll answer (:class:`~vec2pg.sources.base.Raw`'s decode), less
    the points whose key (:func:`~vec2pg.sources.qdrant_ranges.point_key`) is ``upper`` or
    more: they belong to the next chain."""
    answer = _parse(where, "scroll", content)
    try:
        points = answer["result"]["points"]
    except (KeyError, TypeError) as exc:
        raise _unreadable(where, "scroll", exc) from exc
    return _records(where, "scroll", points, upper)


def decode_points(where: str, content: bytes) -> list[Record]:
    """The records of a retrieve answer (``{"result": [points]}``)."""
    answer = _parse(where, "retrieve", content)
    try:
        points = answer["result"]
    except (KeyError, TypeError) as exc:
        raise _unreadable(where, "retrieve", exc) from exc
    return _records(where, "retrieve", points, None)


def _unreadable(where: str, doing: str, exc: BaseException) -> SourceError:
    # The answer was whole (its end was checked when it came): it is not worth asking again.
    return SourceError(
        f"{where} sent a {doing} answer vec2pg cannot read ({type(exc).__name__}: {exc})"
    )


def _parse(where: str, doing: str, content: bytes) -> Any:
    """The answer, parsed by simdjson; by Python's json where it is valid JSON that
    simdjson refuses (text that is not Unicode, integers beyond 64 bits), or JSON that only
    Python writes (``Infinity``): the sink then rejects the one record PostgreSQL cannot
    hold, with its id, instead of the page."""
    try:
        return parse_json(content)[0]
    except ValueError as exc:
        raise _unreadable(where, doing, exc) from exc


def _records(where: str, doing: str, points: Any, upper: int | None) -> list[Record]:
    records = []
    floats = _Floats()
    try:
        with np.errstate(over="ignore"):  # beyond float32: infinity, which the sink refuses
            for point in points:
                point_id = point["id"]
                if upper is not None and point_key(point_id) >= upper:
                    break  # points come in key order: the rest are the next chain's
                vector, payload = point.get("vector"), point.get("payload")
                records.append(_record(point_id, vector, payload, floats))
            floats.convert()
    except (KeyError, TypeError, ValueError) as exc:
        raise _unreadable(where, doing, exc) from exc
    return records


class _Floats:
    """The float arrays of a page's vectors, converted from the answer's doubles to
    float32 together, once a page: a numpy call per vector would cost more than the
    copying does. Each vector is then a view of the page's array."""

    def __init__(self) -> None:
        self._buffers: list[Any] = []
        #: Where each buffer's array goes: (vectors, name, size, shape, sparse indices).
        self._slots: list[tuple[dict[str, Any], str, int, tuple[int, ...], Any]] = []

    def add(
        self,
        vectors: dict[str, Any],
        name: str,
        value: Any,
        shape: tuple[int, ...] | None = None,
        indices: Any = None,
    ) -> None:
        """Put ``value``'s numbers (a JSON array) in ``vectors[name]`` once converted:
        shaped as ``shape`` (a multivector), or as a sparse vector's values."""
        if isinstance(value, list):  # parsed by Python's json
            array = np.asarray(value, dtype=np.float32)
            if shape is not None:
                array = array.reshape(shape)
            vectors[name] = array if indices is None else SparseVector(indices, array)
            return
        buffer = value.as_buffer(of_type="d")
        size = len(memoryview(buffer)) // 8
        if size != (len(value) if shape is None else shape[0] * shape[1]):
            raise ValueError("nested arrays")  # as_buffer flattens them
        self._buffers.append(buffer)
        self._slots.append((vectors, name, size, shape or (size,), indices))

    def convert(self) -> None:
        if not self._buffers:
            return
        joined = np.frombuffer(b"".join(self._buffers), dtype=np.float64).astype(np.float32)
        at = 0
        for vectors, name, size, shape, indices in self._slots:
            array = joined[at : at + size].reshape(shape)
            vectors[name] = array if indices is None else SparseVector(indices, array)
            at += size


def _record(point_id: PointId, vector: Any, payload: Any, floats: _Floats) -> Record:
    if vector is None:
        named: Any = {}
    elif _is_object(vector):
        named = vector
    else:
        named = {"": vector}
    vectors: dict[str, Any] = {}
    problems = []
    for name in named.keys():  # simdjson's items() would make Python floats of every value
        value = named[name]
        try:
            _vector(name, value, vectors, floats)
        except ValueError as exc:  # rejected with its reason, as the sink rejects records
            vectors[name] = _plain(value)
            problems.append(str(exc))
    metadata = None if payload is None else _plain(payload)
    return Record(text_id(point_id), vectors, metadata, invalid="; ".join(problems) or None)


def _vector(name: str, value: Any, vectors: dict[str, Any], floats: _Floats) -> None:
    """A dense vector (a JSON array of numbers), a multivector (an array of arrays) or a
    sparse vector (``{"indices", "values"}``) as numpy arrays, without a Python float per
    number, into ``vectors[name]``; ValueError says what is wrong with anything else."""
    try:
        if _is_object(value):
            indices, values = value["indices"], value["values"]
            if isinstance(indices, list):
                index_array = np.asarray(indices, dtype=np.int64)
            else:
                index_array = np.frombuffer(indices.as_buffer(of_type="u"), np.uint64)
                index_array = index_array.astype(np.int64)
            if index_array.size != len(values):
                raise ValueError("indices and values differ in number")
            floats.add(vectors, name, values, indices=index_array)
        elif len(value) and _is_array(value[0]):
            rows = [len(row) if _is_array(row) else -1 for row in value]
            if min(rows) != max(rows) or rows[0] < 0:
                as_array(_plain(value), name)  # raises, saying what is wrong
            floats.add(vectors, name, value, shape=(len(rows), rows[0]))
        else:
            floats.add(vectors, name, value)
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
        if _is_object(value) and not ("indices" in value and "values" in value):
            raise ValueError(f"vector {name!r} is an object but not a sparse vector") from None
        as_array(_plain(value), name)  # raises, saying what is wrong
        raise ValueError(f"vector {name!r} is not a list of numbers") from None


def _is_object(value: Any) -> bool:
    return isinstance(value, dict) or hasattr(value, "as_dict")


def _is_array(value: Any) -> bool:
    return isinstance(value, list) or hasattr(value, "as_list")


def _plain(value: Any) -> Any:
    """A simdjson value as Python's (dicts, lists); Python's own as it is."""
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if hasattr(value, "as_list"):
        return value.as_list()
    return value


def text_id(point_id: PointId) -> str:
    """A point id as the table stores it: an integer in decimal, a UUID canonically."""
    if isinstance(point_id, int):
        return str(point_id)
    import uuid

    return str(uuid.UUID(point_id))
