"""Amazon S3 Vectors and Supabase Vector Buckets: list every vector of an index, segment by segment.

Supabase's vector buckets are built on S3 Vectors and serve the same operations: JSON over
``POST /<Operation>``, AWS's at ``https://s3vectors.<region>.api.aws`` signed with SigV4,
Supabase's at ``https://<ref>.supabase.co/storage/v1/vector/<Operation>`` with the project's
service-role key. A bucket holds indexes; an index holds vectors with a string ``key``, a
float32 ``data`` array and a JSON ``metadata`` object. The table gets one row per key.

Reading is ``ListVectors`` with ``returnData`` and ``returnMetadata``: up to 1,000 vectors a
page (AWS also stops a page once it passes 1 MB, so pages can be short), the next page named
by ``nextToken``. ``segmentCount``/``segmentIndex`` split an index into up to 16 disjoint
listings read at the same time: each segment is a chain of its own (partition
``seg:<i>/<n>``: its count is in its key, so that a resumed run reads the same segments),
resumed from its own saved token.

A page's JSON floats, nearly all of its bytes, are decoded by simdjson straight into float32
arrays, in the pipeline's decoding processes (:class:`~vec2pg.sources.base.Raw`): botocore's
JSON parsing (about 1,500 vectors a second per process) would be the bottleneck. So
ListVectors is sent with urllib3, on AWS signed by botocore (SigV4) with the credentials
boto3 resolves (environment, ``--profile``, instance role), and the reading thread finds the
page's ``nextToken`` without parsing it. boto3's client does the rest: ``GetIndex``,
``ListIndexes`` and ``GetVectors`` (the records ``vec2pg verify`` compares).

Supabase's self-hosted pgvector backend stores vectors as ``halfvec``: what it returns is
rounded to 16 bits. Where a Supabase index shows that (its ``nextToken`` is the page's last
key, as that backend pages; or, in an index of one page, every value is a float16), its
vector is declared 16-bit (:attr:`~vec2pg.records.VectorField.half`): the column is
``halfvec``, which holds those values exactly in half the space, and verify compares them
within half precision.
"""

from __future__ import annotations

import json
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from vec2pg.errors import (
    ConfigError,
    RateLimited,
    SourceAuthError,
    SourceError,
    SourceNotFound,
    SourceUnavailable,
    SourceUnreachable,
    SourceUnsupported,
)
from vec2pg.masking import mask_dsn
from vec2pg.records import Cursor, Metric, Namespace, Record, SourceInfo, VectorField, VectorKind
from vec2pg.sources.base import MAX_CONCURRENCY, WHOLE, Call, Page, Raw
from vec2pg.sources.http import connection_pool, names_hint, unreachable
from vec2pg.sources.http import retry_after as parse_retry_after

#: ListVectors' limits (botocore's model: ListVectorsMaxResults, ListVectorsSegmentCount).
LIST_MAX_RESULTS = 1_000
MAX_SEGMENTS = 16
#: GetVectors takes at most 100 keys (GetVectorsInputList).
GET_MAX_KEYS = 100
#: ListIndexes and ListVectorBuckets answer at most 500 names a page.
LIST_NAMES_MAX = 500
#: A page asks for about this much vector data: 128 vectors of 1,024 dimensions, some 2.5 MB
#: of JSON (floats as text). AWS stops a page once past 1 MB anyway, and Supabase's pgvector
#: backend does not (1,000 vectors of 4,000 dimensions: 40 MB of JSON in one answer). Half
#: AWS's cut halves the memory that pages waiting to be written hold (measured: 430 MiB
#: peak RSS instead of 650 at --concurrency 16), and 16 segments still keep 40,000 vectors
#: a second in flight at 50 ms a request, four times what two cores decode.
PAGE_DATA_BYTES = 1 << 19
#: describe() counts an index (ListVectors has no count) by listing its keys, every segment
#: at once, up to this many pages of 1,000 keys each: exactly for up to 512,000 vectors, in
#: at most 32 round trips. A larger index's count is unknown (no ETA).
COUNT_PAGES = 32
#: Vectors describe() reads with their data: that checks the GetVectors permission before
#: anything is written, and shows whether the values are 16-bit.
SAMPLE_VECTORS = 100

_METRICS = {"cosine": Metric.COSINE, "euclidean": Metric.EUCLIDEAN}
_SEGMENT = re.compile(r"seg:(\d+)/(\d+)")
#: An answer's nextToken, found without parsing its megabytes of floats: in a JSON object
#: that ends with ``,"nextToken":"<no quote or backslash>"}`` (or starts with
#: ``{"nextToken":"...",``, the order of botocore's model), whitespace allowed between the
#: tokens, nextToken is a member of the outermost object, since a quote that no backslash
#: precedes cannot occur inside a JSON string. Other layouts, tokens with escapes, and
#: answers without a token (a chain's last page) are parsed.
_TAIL_TOKEN = re.compile(rb',\s*"nextToken"\s*:\s*"([^"\\]*)"\s*\}\s*\Z')
_HEAD_TOKEN = re.compile(rb'\A\s*\{\s*"nextToken"\s*:\s*"([^"\\]*)"\s*,')
#: Bytes at the end searched for it: AWS's tokens are a few hundred bytes, Supabase's
#: pgvector backend's the last key (at most 1,024 characters: 4 kB of UTF-8).
_TOKEN_SCAN = 8_192
#: How each vector of a ListVectors answer starts (AWS's order and Supabase's), counted to
#: size a page without parsing it.
_VECTOR_START = b'{"key":'
#: The reason of a record that came without its vector data.
_NO_DATA = "the source sent no vector data for it"


class VectorBucketSource:
    """Every vector of one index of a vector bucket (S3 Vectors, or Supabase's)."""

    kind = ""  # "s3vectors", "supabase-vectors"

    def __init__(
        self,
        bucket: str,
        index: str | None,
        wire: _Wire,
        *,
        segments: int | None = None,
        page_size: int | None = None,
    ) -> None:
        self.bucket = bucket
        self.index = index
        self._wire = wire
        wire.where = self.where if index is not None else f"{wire.service} bucket {bucket!r}"
        if segments is not None and not 1 <= segments <= MAX_SEGMENTS:
            raise ConfigError(f"--segments must be 1 to {MAX_SEGMENTS}, not {segments}")
        if page_size is not None and not 1 <= page_size <= LIST_MAX_RESULTS:
            raise ConfigError(f"--page-size must be 1 to {LIST_MAX_RESULTS}, not {page_size}")
        self.segments = segments
        self._asked_page_size = page_size
        self.page_size = page_size or LIST_MAX_RESULTS  # set by describe() from the dimension
        self._half = False

    @property
    def where(self) -> str:
        return f"{self._wire.service} index {self.index!r} of bucket {self.bucket!r}"

    @property
    def location(self) -> str:
        return f"bucket {self.bucket!r} at {self._wire.location}"

    def _index_ref(self) -> dict[str, Any]:
        if self.index is None:
            raise ConfigError(f"name the index of bucket {self.bucket!r} to read")
        return {"vectorBucketName": self.bucket, "indexName": self.index}

    # -- describing ----------------------------------------------------------------------

    def describe(self) -> SourceInfo:
        try:
            answer = self._wire.control("GetIndex", self._index_ref(), "describing the index")
        except SourceNotFound:
            raise self._missing() from None
        index = answer.get("index") or {}
        data_type = str(index.get("dataType") or "float32")
        if data_type != "float32":
            raise SourceUnsupported(
                f"{self.where} holds {data_type} vectors; vec2pg reads float32 ones"
            )
        dim = int(index["dimension"])
        metric = _METRICS.get(str(index.get("distanceMetric") or "").lower())
        if self._asked_page_size is None:
            # About half a megabyte of vector data a page (see PAGE_DATA_BYTES).
            self.page_size = max(1, min(LIST_MAX_RESULTS, PAGE_DATA_BYTES // (4 * dim)))
        sample = self._sample(min(SAMPLE_VECTORS, self.page_size))
        self._half = self._wire.sixteen_bit(sample)
        count = len(sample.records) if sample.next_token is None else self._count()
        return SourceInfo(
            kind=self.kind,
            collection=str(self.index),
            location=self.location,
            fields=(VectorField("", VectorKind.DENSE, dim, metric, half=self._half),),
            namespaces=(Namespace("", count),),
            namespaced=False,
            raw_pages=True,
        )

    def _sample(self, size: int) -> _Sample:
        body = {**self._index_ref(), "maxResults": size, "returnData": True}
        body["returnMetadata"] = True
        content = self._wire.post("ListVectors", body, "reading the first vectors")
        token, _ = self._token_and_size(content, WHOLE)
        records = decode_list(self.where, False, content)
        return _Sample(records, token)

    def _count(self) -> int | None:
        """The index's vectors, its keys listed in every segment at once; None when a
        segment holds more than :data:`COUNT_PAGES` pages of them."""
        with ThreadPoolExecutor(MAX_SEGMENTS, thread_name_prefix="vec2pg-count") as pool:
            counts = list(pool.map(self._count_segment, range(MAX_SEGMENTS)))
        return None if None in counts else sum(c or 0 for c in counts)

    def _count_segment(self, segment: int) -> int | None:
        partition, token, total = _partition(segment, MAX_SEGMENTS), None, 0
        for _ in range(COUNT_PAGES):
            keys, token = self._keys(partition, token, "counting the vectors")
            total += len(keys)
            if token is None:
                return total
        return None

    # -- reading -------------------------------------------------------------------------

    def partitions(
        self, namespace: str, count: int | None, want: int, call: Call
    ) -> tuple[str, ...]:
        """Segments: ``--segments``, else one for an index of a page, and 16 for a larger
        one (or one of unknown size), all read at once."""
        segments = self.segments
        if segments is None:
            segments = 1 if count is not None and count <= self.page_size else MAX_SEGMENTS
        if segments == 1:
            return (WHOLE,)
        return tuple(_partition(i, segments) for i in range(segments))

    def page(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        body = self._list_body(partition, cursor, self.page_size)
        body["returnData"] = body["returnMetadata"] = True
        content = self._wire.post("ListVectors", body, _listing(partition))
        token, size = self._token_and_size(content, partition)
        answer = _Answer(self, body, partition, content)
        return Page(load=answer.load, next_cursor=token, size=size, read=answer.read)

    def page_ids(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        """A page of keys only (1,000 a request, and only the ListVectors permission)."""
        keys, token = self._keys(partition, cursor, f"listing the keys{_of(partition)}")
        return Page(
            load=partial(self.fetch, namespace, keys), next_cursor=token, size=len(keys), ids=keys
        )

    def fetch(self, namespace: str, ids: Sequence[str]) -> list[Record]:
        """The vectors with these keys (GetVectors, 100 a request); absent keys are left out."""
        records: list[Record] = []
        for start in range(0, len(ids), GET_MAX_KEYS):
            body = {**self._index_ref(), "keys": list(ids[start : start + GET_MAX_KEYS])}
            body["returnData"] = body["returnMetadata"] = True
            answer = self._wire.control("GetVectors", body, "fetching vectors by key")
            records += _plain_records(answer.get("vectors") or [], self._half)
        return records

    def index_names(self) -> list[str]:
        """Every index of the bucket (ListIndexes, page by page)."""
        names: list[str] = []
        token: str | None = None
        while True:
            body: dict[str, Any] = {"vectorBucketName": self.bucket, "maxResults": LIST_NAMES_MAX}
            if token is not None:
                body["nextToken"] = token
            answer = self._wire.control("ListIndexes", body, "listing the bucket's indexes")
            names += [str(ix["indexName"]) for ix in answer.get("indexes") or ()]
            token = answer.get("nextToken")
            if not token:
                return names

    def close(self) -> None:
        self._wire.close()

    def _list_body(self, partition: str, cursor: Cursor, size: int) -> dict[str, Any]:
        body: dict[str, Any] = {**self._index_ref(), "maxResults": size}
        if partition != WHOLE:
            match = _SEGMENT.fullmatch(partition)
            if match is None:
                raise ConfigError(f"{self.where}: {partition!r} is not a segment vec2pg made")
            body["segmentIndex"], body["segmentCount"] = int(match[1]), int(match[2])
        if cursor is not None:
            body["nextToken"] = str(cursor)
        return body

    def _keys(self, partition: str, cursor: Cursor, doing: str) -> tuple[list[str], str | None]:
        """One page of keys (no data, no metadata), and the token of the next page."""
        body = self._list_body(partition, cursor, LIST_MAX_RESULTS)
        content = self._wire.post("ListVectors", body, doing)
        try:
            answer = json.loads(content)
            keys = [str(v["key"]) for v in answer.get("vectors") or ()]
            token = answer.get("nextToken")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise _garbled(self.where, content, doing, exc) from exc
        return keys, str(token) if token else None

    def _token_and_size(self, content: bytes, partition: str) -> tuple[str | None, int]:
        """A page's nextToken and how many vectors it holds, in the reading thread: found
        in the answer's bytes where its layout allows (see :data:`_TAIL_TOKEN`), else
        parsed. The count (of :data:`_VECTOR_START`, at most the page size; metadata holding
        an object that starts with "key" would count too) is for the pipeline's check that
        a source does not yield far more records than it holds."""
        found = _TAIL_TOKEN.search(content, max(0, len(content) - _TOKEN_SCAN))
        found = found or _HEAD_TOKEN.match(content)
        if found is not None:
            size = min(_occurrences(content, _VECTOR_START), self.page_size)
            return found[1].decode("utf-8") or None, size
        try:
            answer = _parse(content)
            token, size = answer.get("nextToken"), len(answer.get("vectors") or ())
            del answer  # the thread's parser is free for the next answer
        except (ValueError, RuntimeError, TypeError) as exc:
            if not str(exc).startswith(_BEYOND_SIMDJSON):
                raise _garbled(self.where, content, _listing(partition), exc) from exc
            plain = json.loads(content)
            token, size = plain.get("nextToken"), len(plain.get("vectors") or ())
        return (str(token) if token else None), size

    def _decoder(self) -> Callable[[bytes], list[Record]]:
        return partial(decode_list, self.where, self._half)

    # -- what is missing -----------------------------------------------------------------

    def _missing(self) -> SourceNotFound:
        """The index or its bucket is not there: say which, and what there is."""
        try:
            names = self.index_names()
        except SourceNotFound:
            return self.missing_bucket()
        except SourceError:
            names = None  # not allowed to list them: say what is known
        where = f"{self._wire.service} index {self.index!r} not found in bucket {self.bucket!r}"
        if names is not None and not names:
            return SourceNotFound(f"{where}, which has no indexes")
        return SourceNotFound(where + _suggest(str(self.index), names, "indexes"))

    def missing_bucket(self) -> SourceNotFound:
        """The bucket is not there: say so, with the closest names there are."""
        wire = self._wire
        return SourceNotFound(
            f"{wire.service} bucket {self.bucket!r} not found at {wire.location}"
            f"{_suggest(self.bucket, self._bucket_names(), 'buckets')}{wire.not_found_hint}"
        )

    def _bucket_names(self) -> list[str] | None:
        names: list[str] = []
        token: str | None = None
        try:
            while True:
                body: dict[str, Any] = {"maxResults": LIST_NAMES_MAX}
                if token is not None:
                    body["nextToken"] = token
                answer = self._wire.control("ListVectorBuckets", body, "listing the buckets")
                names += [str(b["vectorBucketName"]) for b in answer.get("vectorBuckets") or ()]
                token = answer.get("nextToken")
                if not token:
                    return names
        except SourceError:
            return None  # not allowed to list them: the message names none


@dataclass(frozen=True, slots=True)
class _Sample:
    records: list[Record]
    next_token: str | None


class _Answer:
    """A ListVectors answer that :meth:`VectorBucketSource.page` read, decoded later (by
    :func:`decode_list`, in a decoding process or a loading thread); asked for again when
    it is needed again, because its decoding found it cut short on its way."""

    def __init__(
        self, source: VectorBucketSource, body: dict[str, Any], partition: str, content: bytes
    ) -> None:
        self._source, self._body, self._partition = source, body, partition
        self._content: bytes | None = content

    def read(self) -> Raw:
        content, self._content = self._content, None  # held once: memory stays flat
        if content is None:
            content = self._source._wire.post("ListVectors", self._body, _listing(self._partition))
        return Raw(content, self._source._decoder())

    def load(self) -> list[Record]:
        raw = self.read()
        return raw.decode(raw.payload)


#: Bytes of an answer compared at once while counting in it: small enough for numpy's
#: temporary arrays to come from malloc's heap rather than a mapping of their own each.
_COUNT_CHUNK = 1 << 16


def _occurrences(content: bytes, needle: bytes) -> int:
    """How often ``needle`` occurs in ``content``: numpy compares the megabytes of an answer
    with its first byte (4x faster than bytes.count, and without holding the GIL), and
    only those few places with the rest."""
    data = np.frombuffer(content, np.uint8)
    end = max(0, len(data) - len(needle) + 1)
    places = np.concatenate(
        [
            np.flatnonzero(data[start : min(end, start + _COUNT_CHUNK)] == needle[0]) + start
            for start in range(0, end, _COUNT_CHUNK)
        ]
        or [np.zeros(0, np.intp)]
    )
    for offset in range(1, len(needle)):
        places = places[data[places + offset] == needle[offset]]
    return len(places)


def _partition(segment: int, count: int) -> str:
    return f"seg:{segment}/{count}"


def _of(partition: str) -> str:
    match = _SEGMENT.fullmatch(partition)
    return f" of segment {match[1]} of {match[2]}" if match else ""


def _listing(partition: str) -> str:
    return f"listing vectors{_of(partition)}"


def _suggest(name: str, names: list[str] | None, what: str) -> str:
    """``; did you mean 'x'?``, or the names there are, for a name not among ``names``."""
    return "" if names is None else f"; {names_hint(name, names, f'the {what} there:')}"


def _garbled(where: str, content: bytes, doing: str, exc: BaseException) -> SourceUnavailable:
    # Cut short on its way (a dropped connection, a proxy): worth asking again.
    return SourceUnavailable(
        f"{where} sent an answer that does not parse while {doing} "
        f"({type(exc).__name__}: {exc}; {len(content):,} bytes)"
    )


# -- decoding (in any process) ------------------------------------------------------------

#: Each thread's simdjson parser: reusing one saves allocating its buffers per answer.
_parsers = threading.local()
#: simdjson's errors for JSON that is valid but beyond it (a lone surrogate escaped in a
#: key, a number beyond float64): Python's json reads those, and the sink rejects the one
#: record PostgreSQL cannot hold, with its key, instead of the whole page.
_BEYOND_SIMDJSON = ("STRING_ERROR", "BIGINT_ERROR", "UTF8_ERROR", "NUMBER_ERROR")


def _parse(content: bytes) -> Any:
    import simdjson

    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = simdjson.Parser()
    try:
        return parser.parse(content)
    except RuntimeError as exc:
        if str(exc).startswith(_BEYOND_SIMDJSON):
            raise
        # The parser's last document is still referenced (by the traceback of an answer
        # that failed to decode): a new parser.
        parser = _parsers.parser = simdjson.Parser()
        return parser.parse(content)


def decode_list(where: str, half: bool, content: bytes) -> list[Record]:
    """The records of the ListVectors answer ``content`` of ``where`` (the decode of its
    :class:`~vec2pg.sources.base.Raw`: it may run in any process). ``half``: the index's
    values are 16-bit, and a vector that is not cannot be stored as its column is.

    An answer that does not parse was cut short on its way: a transient failure.
    """
    try:
        try:
            answer = _parse(content)
        except (ValueError, RuntimeError) as exc:
            if not str(exc).startswith(_BEYOND_SIMDJSON):
                raise
            return _plain_records(json.loads(content).get("vectors") or [], half)
        return _records(answer.get("vectors") or [], half)
    except (ValueError, RuntimeError, TypeError, KeyError, AttributeError) as exc:
        raise _garbled(where, content, "listing vectors", exc) from exc


def _records(vectors: Any, half: bool) -> list[Record]:
    """Records of simdjson's vectors: each float array copied out as doubles (no Python
    float per value), all of them rounded to float32 together, as numpy rounds."""
    keys, buffers, metadata, problems = [], [], [], []
    for vector in vectors:
        keys.append(str(vector["key"]))
        data = vector.get("data")
        values = None if data is None else data.get("float32")
        buffer, problem = None, None
        if values is None:
            problem = _NO_DATA
        else:
            try:
                buffer = values.as_buffer(of_type="d")
            except (TypeError, AttributeError):
                problem = "its vector data is not a list of numbers"
        buffers.append(buffer)
        problems.append(problem)
        meta = vector.get("metadata")
        metadata.append(meta.as_dict() if hasattr(meta, "as_dict") else meta)
    return _assemble(keys, buffers, metadata, problems, half)


def _plain_records(vectors: list[dict[str, Any]], half: bool) -> list[Record]:
    """Records of vectors as Python's json (or botocore) parsed them."""
    keys, buffers, metadata, problems = [], [], [], []
    for vector in vectors:
        keys.append(str(vector["key"]))
        values = (vector.get("data") or {}).get("float32")
        buffer, problem = None, None
        if values is None:
            problem = _NO_DATA
        elif not isinstance(values, list) or not all(type(x) in (int, float) for x in values):
            # numpy would take "1.5" and True for numbers; JSON's are not.
            problem = "its vector data is not a list of numbers"
        else:
            try:
                buffer = np.asarray(values, dtype=np.float64).tobytes()
            except OverflowError:  # an integer of hundreds of digits
                problem = "its vector holds a number beyond float32's range"
        buffers.append(buffer)
        problems.append(problem)
        metadata.append(vector.get("metadata"))
    return _assemble(keys, buffers, metadata, problems, half)


def _assemble(
    keys: list[str],
    buffers: list[Any],
    metadata: list[Any],
    problems: list[str | None],
    half: bool,
) -> list[Record]:
    sizes = {len(memoryview(b)) for b in buffers if b is not None}
    # A value beyond float32 becomes infinity, which the sink refuses with the record's key.
    with np.errstate(over="ignore"):
        if len(sizes) == 1 and 0 not in sizes and None not in buffers:
            # One float32 matrix, each row rounded from its doubles in place: no joined
            # copy of the page's doubles.
            matrix = np.empty((len(buffers), sizes.pop() // 8), dtype=np.float32)
            for row, buffer in zip(matrix, buffers, strict=True):
                row[:] = np.frombuffer(buffer, dtype=np.float64)
            rows: list[Any] = list(matrix)
        else:
            rows = [
                None if b is None else np.frombuffer(b, dtype=np.float64).astype(np.float32)
                for b in buffers
            ]
    records = []
    for key, row, meta, problem in zip(keys, rows, metadata, problems, strict=True):
        if problem is None and meta is not None and not isinstance(meta, dict):
            problem = f"its metadata is a JSON {type(meta).__name__}, not an object"
        if problem is None and half and not _is_sixteen_bit(row):
            problem = (
                "its vector holds values that 16 bits cannot hold, though the index's values "
                "were 16-bit when the run began (so its column is halfvec): the index has "
                "changed; run again with --replace"
            )
        vectors = {} if row is None else {"": row}
        records.append(Record(key, vectors, meta, invalid=problem))
    return records


def _is_sixteen_bit(values: np.ndarray) -> bool:
    with np.errstate(over="ignore"):
        return bool(np.array_equal(values.astype(np.float16).astype(np.float32), values))


def _detailed_sixteen_bit(records: list[Record]) -> bool:
    """Whether the vectors' values are all float16s, some of which need all its precision
    (not round numbers such as 0.5, which every precision holds): values rounded to 16 bits."""
    rows = [r.vectors[""] for r in records if "" in r.vectors and r.invalid is None]
    if not rows or not all(_is_sixteen_bit(row) for row in rows):
        return False
    bits = np.concatenate(rows).astype(np.float16).view(np.uint16)
    return bool(np.any(bits & 0x000F))


# -- the wires ----------------------------------------------------------------------------


class _Wire(ABC):
    """How requests reach a vector bucket service, and what its error answers mean."""

    service = ""  # what its buckets and indexes are called: "S3 Vectors", "Supabase vector"
    refuser = ""  # who refuses credentials and permissions: "AWS", "Supabase"
    #: How to fix a missing permission to read data (s3vectors:GetVectors).
    grant = ""
    location = ""  # its address, safe to print
    not_found_hint = ""
    where = ""  # what is read (an index of a bucket), for messages

    @abstractmethod
    def post(self, operation: str, body: Mapping[str, Any], doing: str) -> bytes:
        """The bytes of the answer (status 200) to ``POST /<operation>`` with ``body``."""

    @abstractmethod
    def control(self, operation: str, body: Mapping[str, Any], doing: str) -> dict[str, Any]:
        """The parsed answer of an operation of the control plane."""

    @abstractmethod
    def close(self) -> None:
        """Release the connections."""

    def sixteen_bit(self, sample: _Sample) -> bool:
        """Whether the service rounds the index's values to 16 bits."""
        return False

    def _error(
        self,
        operation: str,
        body: Mapping[str, Any],
        status: int,
        code: str,
        message: str,
        doing: str,
        retry_after: float | None,
    ) -> SourceError:
        """vec2pg's error for an error answer to ``operation`` with ``body``."""
        where, said = self.where, f"{code}: {message}" if code else message
        if code == "TooManyRequestsException" or status == 429:
            return RateLimited(f"{where} is rate limiting (HTTP 429) while {doing}", retry_after)
        if code == "NotFoundException" or status == 404:
            return SourceNotFound(f"{where}: {message or 'not found'} (while {doing})")
        if status >= 500 or status == 408 or code in _TRANSIENT:
            return SourceUnavailable(
                f"{where} answered HTTP {status} while {doing} ({said})", retry_after
            )
        if status in (401, 403) and code == "AccessDeniedException":
            with_data = body.get("returnData") or body.get("returnMetadata")
            if operation == "ListVectors" and with_data:
                return SourceAuthError(
                    f"{where}: {self.refuser} refused to list the vectors with their data "
                    f"({said}): reading data and metadata needs the s3vectors:GetVectors "
                    f"permission as well as s3vectors:ListVectors; {self.grant}"
                )
            return SourceAuthError(
                f"{where}: {self.refuser} refused {operation} ({said}): vec2pg needs "
                "s3vectors:GetIndex, ListIndexes, ListVectors and GetVectors on the index"
            )
        if status in (401, 403):
            return SourceAuthError(
                f"{where}: {self.refuser} refused the credentials (HTTP {status}: {said}): "
                f"{self.refused}"
            )
        resume = (
            "; if the index was re-created since that progress was saved, --restart reads it "
            "from the start"
            if "nextToken" in body and operation == "ListVectors"
            else ""
        )
        return SourceError(f"{where} answered HTTP {status} while {doing} ({said}){resume}")

    refused = ""  # how to fix refused credentials


#: Error codes of transient failures (AWS's, and Supabase Storage's own 500).
_TRANSIENT = frozenset(
    {
        "ServiceUnavailableException",
        "InternalServerException",
        "RequestTimeoutException",
        "ThrottlingException",
        "InternalError",
    }
)


class _Pool:
    """POST requests over a pool of kept-alive connections (urllib3), never retried here
    (the pipeline retries); HTTPS verified against ``ca`` (``AWS_CA_BUNDLE``),
    ``SSL_CERT_FILE`` or certifi's certificates; a proxy from the environment
    (``HTTPS_PROXY``, ``NO_PROXY``) used as other clients use it."""

    def __init__(self, base: str, headers: Mapping[str, str], timeout: float, ca: str | None):
        # Readers and loaders (two per unit of concurrency), and describe()'s counters.
        connections = 2 * MAX_CONCURRENCY + MAX_SEGMENTS
        self._pool: Any = connection_pool(
            base, headers, timeout=timeout, connections=connections, ca=ca
        )

    def post(self, url: str, body: bytes, headers: Mapping[str, str] | None, what: str) -> Any:
        """The answer; ``headers`` replace the pool's. ``what`` names the failure."""
        import urllib3

        try:
            return self._pool.request(
                "POST",
                url,
                body=body,
                headers=None if headers is None else dict(headers),
                preload_content=True,
                redirect=False,
            )
        except urllib3.exceptions.HTTPError as exc:  # timeouts, refused and dropped connections
            error = SourceUnreachable if unreachable(exc) else SourceUnavailable
            raise error(f"{what}: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self._pool.clear()


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds, or AWS's ``x-amz-retry-after`` in milliseconds."""
    seconds = parse_retry_after(headers.get("retry-after") or headers.get("Retry-After"))
    if seconds is not None:
        return seconds
    millis = headers.get("x-amz-retry-after")
    try:
        return max(0.0, float(millis) / 1000) if millis else None
    except ValueError:
        return None


def _error_fields(content: bytes) -> tuple[str, str]:
    """An error body's code and message, in either service's shape."""
    try:
        answer = json.loads(content)
    except ValueError:
        return "", content.decode("utf-8", "replace").strip()[:300]
    if not isinstance(answer, dict):
        return "", str(answer)[:300]
    code = str(answer.get("code") or answer.get("__type") or "").split("#")[-1]
    return code, str(answer.get("message") or answer.get("Message") or "")


class _AwsWire(_Wire):
    """S3 Vectors: boto3's client for the control plane; ListVectors signed by botocore
    (SigV4, service ``s3vectors``) and sent with urllib3."""

    service = "S3 Vectors"
    refuser = "AWS"
    grant = "grant both on the index"
    refused = "check the AWS credentials (environment, --profile, instance role) and --region"

    def __init__(
        self,
        *,
        region: str | None,
        profile: str | None,
        endpoint_url: str | None,
        timeout: float,
    ) -> None:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ProfileNotFound

        try:
            session = boto3.Session(profile_name=profile, region_name=region)
        except ProfileNotFound as exc:
            raise ConfigError(
                f"AWS profile {profile!r} not found in ~/.aws/config or ~/.aws/credentials"
            ) from exc
        if not session.region_name:
            raise ConfigError(
                "no AWS region for S3 Vectors: pass --region (e.g. --region us-east-1), set "
                "AWS_REGION, or name one in the profile"
            )
        config = Config(
            retries={"total_max_attempts": 1},  # the pipeline retries, and counts it
            connect_timeout=timeout,
            read_timeout=timeout,
            max_pool_connections=MAX_CONCURRENCY,
        )
        try:
            self._client: Any = session.client(
                "s3vectors", endpoint_url=endpoint_url, config=config
            )
            self._credentials: Any = session.get_credentials()
        except (BotoCoreError, ValueError) as exc:
            raise ConfigError(f"S3 Vectors: {exc}") from exc
        if self._credentials is None:
            raise ConfigError(
                "no AWS credentials for S3 Vectors: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, pass --profile, or run where an instance role applies"
            )
        self.region = str(self._client.meta.region_name)
        self._endpoint = str(self._client.meta.endpoint_url).rstrip("/")
        self._signing_name = self._client.meta.service_model.signing_name or "s3vectors"
        self.location = f"{mask_dsn(self._endpoint)} ({self.region})"
        self.not_found_hint = "" if endpoint_url else " (is --region right?)"
        headers = {"Content-Type": "application/json"}
        self._pool = _Pool(self._endpoint, headers, timeout, os.environ.get("AWS_CA_BUNDLE"))

    def post(self, operation: str, body: Mapping[str, Any], doing: str) -> bytes:
        import orjson
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        url = f"{self._endpoint}/{operation}"
        data = orjson.dumps(body)
        request = AWSRequest("POST", url, data=data, headers={"Content-Type": "application/json"})
        # Frozen per request: refreshable credentials (an instance role's) renew themselves.
        credentials = self._credentials.get_frozen_credentials()
        SigV4Auth(credentials, self._signing_name, self.region).add_auth(request)
        headers = dict(request.headers.items())
        what = f"{self.where} did not answer while {doing}"
        response = self._pool.post(url, data, headers, what)
        if response.status == 200:
            content: bytes = response.data
            return content
        code, message = _error_fields(response.data)
        # Where AWS's JSON protocols put the error code (botocore reads it from there first).
        code = (response.headers.get("x-amzn-ErrorType") or "").split(":")[0] or code
        raise self._error(
            operation,
            body,
            response.status,
            code,
            message or response.reason or "",
            doing,
            _retry_after(response.headers),
        )

    def control(self, operation: str, body: Mapping[str, Any], doing: str) -> dict[str, Any]:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            ParamValidationError,
            ReadTimeoutError,
        )

        method = getattr(self._client, re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower())
        what = f"{self.where} did not answer while {doing}"
        try:
            answer: dict[str, Any] = method(**body)
        except ClientError as exc:
            error = exc.response.get("Error") or {}
            meta = exc.response.get("ResponseMetadata") or {}
            raise self._error(
                operation,
                body,
                int(meta.get("HTTPStatusCode") or 0),
                str(error.get("Code") or ""),
                str(error.get("Message") or ""),
                doing,
                _retry_after(meta.get("HTTPHeaders") or {}),
            ) from exc
        except ParamValidationError as exc:  # a name of 1 or 2 characters, before sending
            text = " ".join(str(exc).split())
            raise ConfigError(f"{self.where}: S3 Vectors would not take it: {text}") from exc
        except NoCredentialsError as exc:
            raise ConfigError(f"no AWS credentials for S3 Vectors: {exc}") from exc
        except (EndpointConnectionError, ConnectTimeoutError) as exc:
            error_type = SourceUnreachable if unreachable(exc) else SourceUnavailable
            raise error_type(f"{what}: {exc}") from exc
        except (ReadTimeoutError, ConnectionClosedError, BotoCoreError) as exc:
            raise SourceUnavailable(f"{what}: {exc}") from exc
        answer.pop("ResponseMetadata", None)
        return answer

    def close(self) -> None:
        self._pool.close()
        self._client.close()


class _SupabaseWire(_Wire):
    """Supabase Storage's vector API: the same operations under ``/storage/v1/vector/``,
    with the service-role key as ``apikey`` and ``Authorization: Bearer``."""

    service = "Supabase vector"
    refuser = "Supabase"
    grant = "the AWS credentials of the project's Storage need both"
    refused = (
        "pass the project's service-role key (not the anon key) with --key or "
        "SUPABASE_SERVICE_ROLE_KEY"
    )

    def __init__(self, *, project_url: str | None, key: str | None, timeout: float) -> None:
        if not project_url:
            raise ConfigError(
                "no Supabase project: pass --project-url https://<ref>.supabase.co or set "
                "SUPABASE_URL"
            )
        if not key:
            raise ConfigError(
                "no Supabase key: pass --key or set SUPABASE_SERVICE_ROLE_KEY (the project's "
                "service-role key)"
            )
        self._base = vector_api_url(project_url)
        self.location = mask_dsn(project_url.rstrip("/"))
        headers = {
            "apikey": key,
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
        }
        self._pool = _Pool(self._base, headers, timeout, None)

    def post(self, operation: str, body: Mapping[str, Any], doing: str) -> bytes:
        import orjson

        what = f"{self.where} did not answer while {doing}"
        response = self._pool.post(f"{self._base}/{operation}", orjson.dumps(body), None, what)
        if response.status == 200:
            content: bytes = response.data
            return content
        code, message = _error_fields(response.data)
        if response.status == 403 and "S3 Vector service" in message:
            # AWS refused storage's own credentials (its S3 Vectors backend): AWS's code.
            code = "AccessDeniedException"
        raise self._error(
            operation,
            body,
            response.status,
            code,
            message or response.reason or "",
            doing,
            _retry_after(response.headers),
        )

    def control(self, operation: str, body: Mapping[str, Any], doing: str) -> dict[str, Any]:
        content = self.post(operation, body, doing)
        try:
            answer = json.loads(content) if content.strip() else {}
        except ValueError as exc:
            raise _garbled(self.where, content, doing, exc) from exc
        if not isinstance(answer, dict):
            raise SourceError(f"{self.where} sent a JSON {type(answer).__name__} while {doing}")
        return answer

    def sixteen_bit(self, sample: _Sample) -> bool:
        # Storage's pgvector backend pages by key (its nextToken is the page's last key,
        # where AWS's is opaque) and stores halfvec. An index of one page shows it only in
        # its values.
        if sample.next_token is not None:
            return bool(sample.records) and sample.next_token == sample.records[-1].id
        return _detailed_sixteen_bit(sample.records)

    def close(self) -> None:
        self._pool.close()


def vector_api_url(project_url: str) -> str:
    """Supabase's vector API under a project URL (``https://<ref>.supabase.co``), under a
    gateway's storage URL (``.../storage/v1``), or storage's own (``.../vector``)."""
    base = project_url.rstrip("/")
    if "://" not in base:
        base = f"https://{base}"
    if base.endswith("/vector"):
        return base
    if base.endswith("/storage/v1"):
        return f"{base}/vector"
    return f"{base}/storage/v1/vector"


# -- the two sources ----------------------------------------------------------------------


class S3VectorsSource(VectorBucketSource):
    """Every vector of an index of an Amazon S3 Vectors bucket."""

    kind = "s3vectors"

    def __init__(
        self,
        bucket: str,
        *,
        index: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        endpoint_url: str | None = None,
        segments: int | None = None,
        page_size: int | None = None,
        timeout: float = 30.0,
    ) -> None:
        wire = _AwsWire(region=region, profile=profile, endpoint_url=endpoint_url, timeout=timeout)
        super().__init__(bucket, index, wire, segments=segments, page_size=page_size)


class SupabaseVectorsSource(VectorBucketSource):
    """Every vector of an index of a Supabase vector bucket."""

    kind = "supabase-vectors"

    def __init__(
        self,
        bucket: str,
        *,
        index: str | None = None,
        project_url: str | None = None,
        key: str | None = None,
        segments: int | None = None,
        page_size: int | None = None,
        timeout: float = 30.0,
    ) -> None:
        wire = _SupabaseWire(project_url=project_url, key=key, timeout=timeout)
        super().__init__(bucket, index, wire, segments=segments, page_size=page_size)


def s3vectors_indexes(bucket: str, **options: Any) -> list[str]:
    """Every index of an S3 Vectors bucket: ``vec2pg s3vectors BUCKET`` copies each."""
    return _indexes(S3VectorsSource(bucket, **options))


def supabase_indexes(bucket: str, **options: Any) -> list[str]:
    """Every index of a Supabase vector bucket: ``vec2pg supabase-vectors BUCKET`` copies each."""
    return _indexes(SupabaseVectorsSource(bucket, **options))


def _indexes(source: VectorBucketSource) -> list[str]:
    try:
        try:
            names = source.index_names()
        except SourceNotFound:
            raise source.missing_bucket() from None
    finally:
        source.close()
    if not names:
        raise SourceNotFound(
            f"{source._wire.service} bucket {source.bucket!r} has no indexes: nothing to copy"
        )
    return names
