"""Chroma: page a collection with ``get(limit, offset)`` and turn its rows into records.

A collection is read from a local folder (``--path``: ``chromadb.PersistentClient``, Chroma's
engine in this process) or a server (``--host``: ``chromadb.HttpClient``), in a tenant and
database. Each row becomes a record: its id, its embedding (the ``embedding`` column, with
the collection's ``hnsw:space`` as the metric), its document and URI (the ``document`` and
``uri`` text columns) and its metadata.

Chroma pages only by offset, in insertion order (an internal sequence number): an update
keeps a row's place and new rows go last, so an offset stays exact as rows are added or
changed. A delete before the offset moves every later row back, and a plain offset would
then skip as many rows as were deleted. So a cursor holds the offset *and the id of the row
just before it* (the last row of the page before), and every page is read from one row
earlier: when that row is still the anchor, nothing before it moved. When it is not, rows
before it were deleted, and the anchor is looked for further back (its new offset: rows
only ever move back); should the anchor itself be gone, the chain is read again from its
start, and the rows it had already written are written again, unchanged. Resuming a
killed run in a new process goes through the same check, so it is exact too.
"""

from __future__ import annotations

import itertools
import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from vec2pg.errors import (
    ConfigError,
    RateLimited,
    SourceAuthError,
    SourceError,
    SourceNotFound,
    SourceUnavailable,
    SourceUnreachable,
)
from vec2pg.masking import mask_dsn
from vec2pg.records import (
    Cursor,
    Metric,
    Namespace,
    Record,
    SourceInfo,
    VectorField,
    VectorKind,
)
from vec2pg.sources.base import WHOLE, Call, Page
from vec2pg.sources.http import names_hint, retry_after, status_error, unreachable

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

T = TypeVar("T")

DEFAULT_TENANT = "default_tenant"
DEFAULT_DATABASE = "default_database"
#: Rows per ``get``. 1,000 rows of 1,536 dimensions arrive as ~12 MB of float64: enough to
#: amortise a request, little enough to keep memory flat.
DEFAULT_PAGE_SIZE = 1000
#: Ids per ``get`` when only ids are read (verification, and looking for a moved anchor).
DEFAULT_IDS_PAGE_SIZE = 10_000
#: The text fields every record carries: Chroma's document and URI.
TEXTS = ("document", "uri")
#: Chroma's spaces as pgvector's metrics. Chroma's "l2" is the squared distance, which
#: orders neighbours as the Euclidean distance does; "ip" is 1 - dot product.
_METRICS = {"cosine": Metric.COSINE, "l2": Metric.EUCLIDEAN, "ip": Metric.DOT}
#: What ``get`` returns with each row besides its id.
_INCLUDE = ["embeddings", "metadatas", "documents", "uris"]


@dataclass(frozen=True, slots=True)
class _Position:
    """Where a chain stands: the offset of its next row, the id of the row before it (None
    at the start), and how often the chain was begun again because that row was deleted
    (so that a cursor of the new pass never repeats one of an earlier pass)."""

    offset: int = 0
    after: str | None = None
    passes: int = 0

    @classmethod
    def parse(cls, cursor: Cursor) -> _Position:
        if cursor is None:
            return cls()
        try:
            offset, after, passes = json.loads(str(cursor))
            return cls(int(offset), str(after), int(passes))
        except (ValueError, TypeError) as exc:
            raise SourceError(
                f"saved progress holds a cursor that is not a Chroma one ({cursor!r}); "
                "run again with --restart"
            ) from exc

    def cursor(self) -> str:
        return json.dumps([self.offset, self.after, self.passes], ensure_ascii=False)


def check_location(
    collection: str,
    *,
    path: str | None = None,
    host: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    **_: Any,
) -> None:
    """ConfigError unless the options name exactly one Chroma: a folder (``path``) or a
    server (``host``). No I/O."""
    if (path is None) == (host is None):
        raise ConfigError(
            "name one Chroma to read from: --path for a local Chroma folder, "
            "or --host (with --port, --ssl) for a Chroma server"
        )
    if page_size < 1:
        raise ConfigError(f"--page-size must be at least 1, not {page_size}")


class ChromaSource:
    """Read every row of a Chroma collection from a folder (``path``) or a server (``host``)."""

    def __init__(
        self,
        collection: str,
        *,
        path: str | None = None,
        host: str | None = None,
        port: int = 8000,
        ssl: bool = False,
        headers: Sequence[tuple[str, str]] | Mapping[str, str] = (),
        token: str | None = None,
        token_header: str = "x-chroma-token",
        tenant: str = DEFAULT_TENANT,
        database: str = DEFAULT_DATABASE,
        page_size: int = DEFAULT_PAGE_SIZE,
        ids_page_size: int = DEFAULT_IDS_PAGE_SIZE,
        timeout: float = 60.0,
    ) -> None:
        check_location(collection, path=path, host=host, page_size=page_size)
        self.collection = collection
        self.page_size = page_size
        self.ids_page_size = max(1, ids_page_size)
        self.tenant = tenant
        self.database = database
        self._path = path
        self._host = host
        self._port = port
        self._ssl = ssl
        self._headers = dict(headers.items() if isinstance(headers, Mapping) else headers)
        if token:
            header = token_header.lower()
            self._headers[token_header] = f"Bearer {token}" if header == "authorization" else token
        self._timeout = timeout
        if path is not None:
            where = os.path.abspath(path)
        else:
            # A host may be given as user:password@host: never print the password.
            where = mask_dsn(f"{'https' if ssl else 'http'}://{host}:{port}")
        scope = [f"tenant {tenant!r}"] if tenant != DEFAULT_TENANT else []
        scope += [f"database {database!r}"] if database != DEFAULT_DATABASE else []
        self.location = f"{where} ({', '.join(scope)})" if scope else where
        self._client: Any = None  # a ClientAPI (whose type lacks close())
        self._collection: Collection | None = None

    # -- connecting ---------------------------------------------------------------------

    def _connect(self) -> ClientAPI:
        if self._client is None:
            self._client = self._call(self._open_client)
        client: ClientAPI = self._client
        return client

    def _open_client(self) -> ClientAPI:
        import chromadb
        from chromadb.config import Settings

        settings = Settings(anonymized_telemetry=False)
        if self._path is not None:
            # PersistentClient makes an empty Chroma where there is none: look first.
            if not os.path.isfile(os.path.join(self._path, "chroma.sqlite3")):
                raise SourceNotFound(f"no Chroma storage at {self.location} (no chroma.sqlite3)")
            return chromadb.PersistentClient(
                path=self._path, settings=settings, tenant=self.tenant, database=self.database
            )
        import httpx

        self._preflight()
        try:
            client = chromadb.HttpClient(
                host=str(self._host),
                port=self._port,
                ssl=self._ssl,
                headers=self._headers,
                settings=settings,
                tenant=self.tenant,
                database=self.database,
            )
        except ValueError as exc:
            # HttpClient checks the tenant and database as it starts, and turns every
            # failure but Chroma's own errors into a ValueError of the answer's text.
            if "Could not connect to a Chroma server" in str(exc):
                raise
            raise SourceUnavailable(f"Chroma at {self.location} failed: {exc}") from None
        for session in _sessions(client):
            # chromadb's sessions never time out (httpx.Client(timeout=None)): a server
            # that stops answering would hold the run for ever.
            session.timeout = httpx.Timeout(self._timeout)
            session.event_hooks["response"] = [_raise_status]
        return client

    def _preflight(self) -> None:
        """Ask the server for its heartbeat, with a timeout: HttpClient's own first requests
        have none, and would hide an error answer's status."""
        import httpx

        host = str(self._host)
        base = (
            host if "://" in host else f"{'https' if self._ssl else 'http'}://{host}:{self._port}"
        )
        with httpx.Client(timeout=self._timeout, headers=self._headers) as http:
            _raise_status(http.get(f"{base.rstrip('/')}/api/v2/heartbeat"))

    def describe(self) -> SourceInfo:
        client = self._connect()
        collection = self._call(self._get_collection, client)
        self._collection = collection
        model = getattr(collection, "_model", None)
        dim = getattr(model, "dimension", None)
        if dim is None:  # a collection's model learns its dimension on the first add
            first = self._call(collection.get, limit=1, include=["embeddings"])
            embeddings = first.get("embeddings")
            dim = len(embeddings[0]) if embeddings is not None and len(embeddings) else None
        if dim is None:
            raise SourceError(
                f"Chroma collection {self.collection!r} at {self.location} has never held a "
                "record, so it has no dimension to make its vector column with: add records "
                "first"
            )
        count = self._call(collection.count)
        return SourceInfo(
            kind="chroma",
            collection=self.collection,
            location=self.location,
            fields=(VectorField("", VectorKind.DENSE, int(dim), _metric(collection)),),
            namespaces=(Namespace("", count),),
            namespaced=False,
            texts=TEXTS,
        )

    def _get_collection(self, client: ClientAPI) -> Collection:
        from chromadb.errors import NotFoundError

        try:
            # No embedding function: vec2pg reads embeddings, it never makes them.
            return client.get_collection(self.collection, embedding_function=None)
        except NotFoundError:
            names = [c.name for c in client.list_collections()]
            raise SourceNotFound(
                f"Chroma collection {self.collection!r} not found at {self.location}; "
                f"{names_hint(self.collection, names, 'it has')}"
            ) from None

    # -- reading ------------------------------------------------------------------------

    def partitions(
        self, namespace: str, count: int | None, want: int, call: Call
    ) -> tuple[str, ...]:
        # An offset chain cannot be split: a delete moves every row after it.
        return (WHOLE,)

    def page(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        got, nxt = self._page(cursor, self.page_size, _INCLUDE)
        return Page(load=partial(_records, got), next_cursor=nxt, size=len(got["ids"]))

    def page_ids(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        """A page of ids only: the ``get`` includes nothing else."""
        got, nxt = self._page(cursor, self.ids_page_size, [])
        ids = list(got["ids"])
        return Page(
            load=partial(self.fetch, namespace, ids), next_cursor=nxt, size=len(ids), ids=ids
        )

    def fetch(self, namespace: str, ids: Sequence[str]) -> list[Record]:
        """The rows with these ids; ids the collection lacks are left out."""
        if not ids:
            return []
        got = self._get(ids=list(ids), include=_INCLUDE)
        return _records(got)

    def close(self) -> None:
        client, self._client, self._collection = self._client, None, None
        if client is None:
            return
        sessions = _sessions(client) if self._host is not None else []
        client.close()
        for session in sessions:
            # HttpClient.close() leaves its two httpx pools open (chromadb 1.5): their
            # sockets would be collected later with a ResourceWarning.
            session.close()

    def _require(self) -> Collection:
        if self._collection is None:
            raise RuntimeError("describe() first")
        return self._collection

    def _page(self, cursor: Cursor, limit: int, include: list[str]) -> tuple[Any, Cursor]:
        """The ``get`` of a chain's page at ``cursor``, and the cursor after it."""
        position = _Position.parse(cursor)
        got = self._read(position, limit, include)
        if got is None:  # the anchor moved back: find where it is now
            moved = self._anchor(position)
            got = None if moved is None else self._read(moved, limit, include)
            if moved is not None and got is not None:
                position = moved
            else:  # the anchor is gone: read the chain again from its start
                position = _Position(passes=position.passes + 1)
                got = self._read(position, limit, include)
                assert got is not None
        ids = got["ids"]
        if len(ids) < limit:
            return got, None
        end = _Position(position.offset + len(ids), ids[-1], position.passes)
        return got, end.cursor()

    def _read(self, position: _Position, limit: int, include: list[str]) -> Any | None:
        """The ``limit`` rows from ``position``, or None if the row before it is no longer
        the one the position names (rows before it were deleted)."""
        if position.after is None:
            return self._get(limit=limit, offset=position.offset, include=include)
        got: Any = self._get(limit=limit + 1, offset=position.offset - 1, include=include)
        if got["ids"][:1] != [position.after]:
            return None
        return {
            key: value[1:] if key != "included" and value is not None else value
            for key, value in got.items()
        }

    def _get(self, **kwargs: Any) -> Any:
        """``collection.get(**kwargs)``, its failures translated.

        It is where a run's time goes: for a 768-dimension row chromadb's engine spends
        about 140 us of CPU (in threads of its own), then makes a Python float of every
        value and a float64 array of them. Its private ``_get``, without that array, saves
        a tenth of it: not enough to lean on a private method for.
        """
        return self._call(self._require().get, **kwargs)

    def _anchor(self, position: _Position) -> _Position | None:
        """Where the row a position names as its anchor is now: rows before it were
        deleted, so it moved back (never forward). None if it is gone."""
        assert position.after is not None
        if not self._get(ids=[position.after], include=[])["ids"]:
            return None
        end = position.offset - 1  # where it was: it is now before that
        while end > 0:
            start = max(0, end - self.ids_page_size)
            ids = self._get(limit=end - start, offset=start, include=[])["ids"]
            if position.after in ids:
                offset = start + ids.index(position.after) + 1
                return _Position(offset, position.after, position.passes)
            end = start
        return None

    # -- errors -------------------------------------------------------------------------

    def _call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call chromadb, translating its failures into vec2pg's errors."""
        import httpx
        from chromadb.errors import ChromaError

        where = f"Chroma at {self.location}"
        try:
            with warnings.catch_warnings():
                # chromadb warns (DeprecationWarning) of its own legacy configurations.
                warnings.simplefilter("ignore", DeprecationWarning)
                return method(*args, **kwargs)
        except _HttpStatus as exc:
            raise status_error(
                exc.status,
                exc.detail,
                where=where,
                credentials="check --token (CHROMA_API_KEY), --token-header and --header",
                not_found=f"{where}: not found",
                retry_after=exc.retry_after,
            ) from None
        except ChromaError as exc:
            raise self._chroma_error(exc, where) from None
        except httpx.TimeoutException as exc:
            raise SourceUnavailable(f"{where} did not answer in time ({_describe(exc)})") from None
        except httpx.TransportError as exc:
            error = SourceUnreachable if unreachable(exc) else SourceUnavailable
            raise error(f"{where} did not answer: {_describe(exc)}") from None
        except ValueError as exc:
            # HttpClient's own words for a refused connection at its start.
            if "Could not connect to a Chroma server" in str(exc):
                raise SourceUnreachable(f"{where} did not answer: {exc}") from None
            raise

    def _chroma_error(self, exc: Any, where: str) -> SourceError:
        from chromadb.errors import NotFoundError

        message = str(exc.message() if callable(getattr(exc, "message", None)) else exc)
        if isinstance(exc, NotFoundError):
            return SourceNotFound(f"{where}: {message}{self._scope_hint(message)}")
        code = exc.code() if callable(getattr(exc, "code", None)) else 500
        if code in (401, 403):
            return SourceAuthError(
                f"{where} refused the credentials ({message}): check --token (CHROMA_API_KEY), "
                "--token-header and --header"
            )
        if code == 429:
            return RateLimited(f"{where} is rate limiting: {message}")
        if code >= 500 and self._host is not None:
            return SourceUnavailable(f"{where} failed: {message}")
        return SourceError(f"{where}: {message}")

    def _scope_hint(self, message: str) -> str:
        """What to say after a tenant or database Chroma does not have."""
        if message.startswith("Tenant"):
            return "; check --tenant (Chroma cannot list its tenants)"
        if not message.startswith("Database") or self._path is None:
            return ""
        import chromadb
        from chromadb.config import Settings

        try:
            admin = chromadb.AdminClient(
                Settings(
                    anonymized_telemetry=False, is_persistent=True, persist_directory=self._path
                )
            )
            names = [d["name"] for d in admin.list_databases(tenant=self.tenant)]
        except Exception:  # a hint only: the error stands without it
            return ""
        return f"; {names_hint(self.database, names, f'tenant {self.tenant!r} has')}"


class _HttpStatus(Exception):
    """An HTTP error answer that is not one of Chroma's own errors (a proxy's 502, a 429)."""

    def __init__(self, status: int, detail: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail, self.retry_after = status, detail, retry_after


def _raise_status(response: Any) -> None:
    """httpx's response hook: an error answer without one of Chroma's error bodies raises
    :class:`_HttpStatus`, keeping the status (chromadb would raise a bare Exception with
    only the body)."""
    if response.status_code < 400:
        return
    response.read()
    detail = response.text.strip()[:200] or "no details"
    try:
        from chromadb.errors import error_types

        if json.loads(response.text).get("error") in error_types:
            return  # chromadb raises its own error for it
    except (ValueError, AttributeError):
        pass
    raise _HttpStatus(
        response.status_code, detail, retry_after(response.headers.get("retry-after"))
    )


def _sessions(client: Any) -> list[Any]:
    """The httpx sessions of an HttpClient: its own and its admin client's."""
    sessions = []
    for owner in (client, getattr(client, "_admin_client", None)):
        session = getattr(getattr(owner, "_server", None), "_session", None)
        if session is not None:
            sessions.append(session)
    return sessions


def _metric(collection: Any) -> Metric | None:
    """The collection's space: ``configuration_json`` (chromadb 1.x, however it was set),
    else the 0.x metadata ``hnsw:space``; Chroma's default is l2."""
    config = getattr(collection, "configuration_json", None) or {}
    for index in ("hnsw", "spann"):
        space = (config.get(index) or {}).get("space")
        if space:
            return _METRICS.get(str(space))
    space = (collection.metadata or {}).get("hnsw:space", "l2")
    return _METRICS.get(str(space))


def _records(got: Any) -> list[Record]:
    """A ``get`` answer as records: float64 embeddings become float32 (Chroma holds float32,
    so exactly), the document and URI their text fields."""
    ids = got["ids"]
    if not ids:
        return []
    embeddings = got.get("embeddings")
    documents = got.get("documents") or [None] * len(ids)
    uris = got.get("uris") or [None] * len(ids)
    metadatas = got.get("metadatas") or [None] * len(ids)
    vectors = _float32(embeddings, len(ids))
    return [
        Record(
            record_id,
            {"": vector},
            dict(metadata) if metadata is not None else None,
            texts={"document": document, "uri": uri},
        )
        for record_id, vector, metadata, document, uri in zip(
            ids, vectors, metadatas, documents, uris, strict=True
        )
    ]


def _float32(embeddings: Any, rows: int) -> Any:
    """Embeddings (lists of floats, or an array) as float32 arrays, one per row. Chroma
    holds float32, so the conversion is exact."""
    if isinstance(embeddings, np.ndarray):
        return embeddings.astype(np.float32, copy=False)
    dim = len(embeddings[0]) if rows else 0
    if all(len(e) == dim for e in embeddings):
        # One pass over the floats, straight into float32 (np.array of nested lists first
        # looks at every list to find the shape).
        flat = np.fromiter(
            itertools.chain.from_iterable(embeddings), dtype=np.float32, count=rows * dim
        )
        return flat.reshape(rows, dim)
    return [np.asarray(e, dtype=np.float32) for e in embeddings]  # rows of other lengths


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
