"""The sources vec2pg reads from: one registry entry each, from which the commands are built.

An entry (:class:`SourceSpec`) is data: the command's name, its argument, its own options
(with their environment variables), the import path of its factory, and the extra that
installs its SDK. ``vec2pg <source>`` and ``vec2pg verify <source>`` are built from it,
with the options every source shares declared once in :mod:`vec2pg.cli`.

Nothing here imports a source's module or its SDK: ``vec2pg --help`` stays fast, and a
missing or broken SDK breaks only its own command, with one line saying what to install.

Other packages add sources through the ``vec2pg.sources`` entry-point group; each entry
point names a :class:`SourceSpec`::

    [project.entry-points."vec2pg.sources"]
    mydb = "vec2pg_mydb:SPEC"

where ``SPEC = SourceSpec(name="mydb", ..., factory="vec2pg_mydb.source:MyDbSource")``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vec2pg.errors import ConfigError

if TYPE_CHECKING:
    from vec2pg.sources.base import Source

#: The entry-point group through which other packages add sources.
ENTRY_POINT_GROUP = "vec2pg.sources"
#: The most pages a run reads at once (``--concurrency``): sources size their connection
#: pools by it.
MAX_CONCURRENCY = 64


@dataclass(frozen=True)
class Argument:
    """The one positional argument of a source's commands: what to read."""

    name: str  # the factory's first argument, e.g. "collection"
    metavar: str  # as usage shows it, e.g. "COLLECTION"
    help: str


@dataclass(frozen=True)
class Option:
    """An option of a command: its keyword, flags, help and how it is parsed."""

    name: str  # the keyword it is passed as
    flags: tuple[str, ...]
    help: str
    type: type = str  # str, int, float or bool (a flag)
    default: Any = None
    envvar: str | None = None
    metavar: str | None = None
    #: A secret (an API key): never printed, scrubbed from every message.
    secret: bool = False
    multiple: bool = False  # repeatable; the value is a tuple
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    #: Turns each parsed value into what the source or pipeline takes.
    convert: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class SourceSpec:
    """A source, as the command line and the registry know it."""

    name: str  # the command: ``vec2pg <name>``
    summary: str  # one line, for ``vec2pg --help``
    description: str  # the rest of ``vec2pg <name> --help``
    argument: Argument
    #: ``"module:callable"``, called as ``factory(argument, **options)``; returns a Source.
    factory: str
    options: tuple[Option, ...] = ()
    #: The extra that installs the source's SDK: ``pip install 'vec2pg[<extra>]'``.
    extra: str | None = None
    #: Modules the factory needs (its SDK), checked before it is called.
    requires: tuple[str, ...] = ()
    concurrency: int = 4  # the default --concurrency
    #: The option that restricts a run to some namespaces (Pinecone's --namespace), if the
    #: source has namespaces; its values go to the pipeline, not the factory.
    namespaces: Option | None = None
    #: The original vec2pg's form, ``vec2pg <name> migrate ARGUMENT A B C``: the flags its
    #: positional values after the argument stand for, in order.
    legacy: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    #: False for a source that holds only part of a collection (a rejects file): no
    #: --prune, --replace or --verify, and no ``vec2pg verify`` command.
    complete: bool = True
    #: A second, optional argument naming one collection of ``argument`` (an index of an
    #: S3 Vectors bucket), passed to the factory under its name. When it is left out, the
    #: command copies every collection that ``collections`` lists, each into its own table.
    collection: Argument | None = None
    #: ``"module:callable"``, called as ``collections(argument, **options)``: the names of
    #: the collections in ``argument``, for a command given no ``collection``.
    collections: str | None = None
    #: ``"module:callable"``, called as ``check(argument, **options)`` before the target or
    #: the source is connected: raises ConfigError for options that cannot go together
    #: (``--url`` and ``--path``), so a usage error is said before anything waits on a
    #: network. It does no I/O.
    check: str | None = None

    def check_options(self, argument: str, options: Mapping[str, Any]) -> None:
        """Refuse what the source cannot run with before anything connects: its SDK
        missing, or options its ``check`` rejects."""
        self._require()
        if self.check is not None:
            self._load(self.check)(argument, **options)

    def open(self, argument: str, options: Mapping[str, Any]) -> Source:
        """The source, from the command's argument and its own options."""
        source: Source = self._load(self.factory)(argument, **options)
        return source

    def collections_of(self, argument: str, options: Mapping[str, Any]) -> list[str]:
        """Every collection in ``argument``, as ``collections`` lists them (``options``: the
        source's own; its ``collection`` is left out)."""
        if self.collection is None or self.collections is None:
            raise ConfigError(f"vec2pg {self.name} reads one collection at a time")
        own = {name: value for name, value in options.items() if name != self.collection.name}
        return list(self._load(self.collections)(argument, **own))

    def _load(self, reference: str) -> Any:
        """The callable ``"module:callable"`` names, once the modules the source needs are
        there."""
        self._require()
        module, _, attribute = reference.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def _require(self) -> None:
        """ConfigError naming the extra to install if a module the source needs is missing."""
        missing = [module for module in self.requires if not _importable(module)]
        if missing:
            install = f"pip install 'vec2pg[{self.extra}]'" if self.extra else "install it"
            raise ConfigError(f"vec2pg {self.name} needs {', '.join(missing)}: {install}")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is missing or broken
        return False


def api_key(envvar: str, what: str) -> Option:
    """A source's ``--api-key``, from ``envvar`` when not given; a secret."""
    return Option("api_key", ("--api-key",), what, envvar=envvar, metavar="KEY", secret=True)


def timeout(default: float) -> Option:
    """A source's ``--timeout``: seconds to wait for each request."""
    return Option(
        "timeout",
        ("--timeout",),
        "Seconds to wait for each request.",
        type=float,
        default=default,
        metavar="SECONDS",
        min=1,
    )


def _pinecone_namespace(name: str) -> str:
    # Pinecone spells its default namespace "__default__" (older servers: ""); so does the table.
    return name or "__default__"


QDRANT = SourceSpec(
    name="qdrant",
    summary="Copy a Qdrant collection into PostgreSQL.",
    description=(
        "Every point arrives exactly once: ids (integers and UUIDs, as text), the unnamed "
        'vector (column "embedding"), named dense vectors (vector(dim)), sparse vectors '
        '(sparsevec) and multivectors (vector(dim)[]), and the payload (jsonb "metadata").'
        "\n\nThe original vec2pg's form works too: vec2pg qdrant migrate COLLECTION URL "
        "[API_KEY] [DSN], with API_KEY and DSN from QDRANT_API_KEY and "
        "POSTGRES_CONNECTION_STRING."
    ),
    argument=Argument("collection", "COLLECTION", "The Qdrant collection to copy."),
    factory="vec2pg.sources.qdrant:QdrantSource",
    check="vec2pg.sources.qdrant:check_location",
    options=(
        Option(
            "url",
            ("--url",),
            "Qdrant server URL, e.g. http://localhost:6333.",
            envvar="QDRANT_URL",
            metavar="URL",
        ),
        api_key("QDRANT_API_KEY", "Qdrant API key."),
        Option(
            "path",
            ("--path",),
            "A local Qdrant storage folder (qdrant-client's local mode) instead of --url.",
            metavar="DIR",
        ),
        Option(
            "page_size",
            ("--page-size",),
            "Points per scroll request.",
            type=int,
            default=256,
            metavar="N",
            min=1,
            max=10_000,
        ),
        timeout(60.0),
        Option(
            "grpc",
            ("--grpc",),
            "Read points over Qdrant's gRPC API (vectors as binary floats: less CPU than "
            "REST's JSON) at the --url's host and --grpc-port.",
            type=bool,
            default=False,
        ),
        Option(
            "grpc_port",
            ("--grpc-port",),
            "Qdrant's gRPC port, with --grpc.",
            type=int,
            default=6334,
            metavar="PORT",
            min=1,
            max=65_535,
        ),
    ),
    extra="qdrant",
    requires=("qdrant_client",),
    # Scrolls of different ranges of ids in flight: a server answers them side by side.
    concurrency=8,
    legacy=("--url", "--api-key", "--dsn"),
    examples=(
        "vec2pg qdrant docs --url http://localhost:6333 --dsn postgresql://user:pw@host/db",
        "vec2pg qdrant docs --url http://localhost:6333 --grpc --dsn postgresql://...",
        "vec2pg qdrant docs --path ./qdrant_storage --embedded",
    ),
)

PINECONE = SourceSpec(
    name="pinecone",
    summary="Copy a serverless Pinecone index, every namespace, into PostgreSQL.",
    description=(
        'One row per (namespace, id): dense values (column "embedding", vector(dim)), sparse '
        'values ("sparse_embedding", sparsevec) and metadata (jsonb "metadata"). Ids are '
        "listed and fetched with several requests in flight (--concurrency); rate limits "
        "(HTTP 429) slow the run down, they do not stop it."
        "\n\nThe original vec2pg's form works too: vec2pg pinecone migrate INDEX [API_KEY] "
        "[DSN], with API_KEY and DSN from PINECONE_API_KEY and POSTGRES_CONNECTION_STRING."
    ),
    argument=Argument("index", "INDEX", "The Pinecone index to copy."),
    factory="vec2pg.sources.pinecone:PineconeSource",
    options=(
        api_key("PINECONE_API_KEY", "Pinecone API key."),
        Option(
            "host",
            ("--host",),
            "The index's host (https://INDEX-PROJECT.svc...); skips the control plane.",
            metavar="URL",
        ),
        timeout(30.0),
    ),
    concurrency=8,
    namespaces=Option(
        "namespace",
        ("--namespace", "-n"),
        'Copy only this namespace (repeatable). The default one is __default__ (or "").',
        metavar="NAME",
        multiple=True,
        convert=_pinecone_namespace,
    ),
    legacy=("--api-key", "--dsn"),
    examples=(
        "PINECONE_API_KEY=... vec2pg pinecone my-index --dsn postgresql://user:pw@host/db",
        "vec2pg pinecone my-index -n products -n reviews --prune --dsn postgresql://...",
    ),
)

JSONL = SourceSpec(
    name="jsonl",
    summary="Load a rejects file (records an earlier run skipped) once their cause is fixed.",
    description=(
        "The file's first line names the collection and its vectors, so the records go into "
        'the same table (vec2pg."<collection>") and are merged with what it holds.'
    ),
    argument=Argument("path", "FILE", "A rejects file written by --on-error skip."),
    factory="vec2pg.sources.jsonl:JsonlSource",
    concurrency=1,
    examples=("vec2pg jsonl vec2pg-rejects.jsonl --dsn postgresql://user:pw@host/db",),
    complete=False,
)

WEAVIATE = SourceSpec(
    name="weaviate",
    summary="Copy a Weaviate collection, every tenant, into PostgreSQL.",
    description=(
        "Every object arrives exactly once, read over gRPC by Weaviate's cursor (after a "
        'UUID): its UUID (text), the unnamed vector (column "embedding") and every named '
        "vector, multi-vectors included (vector(dim), vector(dim)[]), with its distance in "
        "the column's comment, and every property (blobs included; cross-references as "
        'their UUIDs) in jsonb "metadata". Each tenant of a multi-tenant collection is a '
        "namespace; only ACTIVE tenants can be read."
    ),
    argument=Argument("collection", "COLLECTION", "The Weaviate collection to copy."),
    factory="vec2pg.sources.weaviate:WeaviateSource",
    options=(
        Option(
            "url",
            ("--url",),
            "Weaviate's REST address, e.g. http://localhost:8080 (https: TLS for gRPC too).",
            envvar="WEAVIATE_URL",
            metavar="URL",
        ),
        Option(
            "grpc_port",
            ("--grpc-port",),
            "Weaviate's gRPC port, on the host of --url.",
            type=int,
            default=50051,
            metavar="PORT",
            min=1,
            max=65535,
        ),
        Option(
            "grpc_host",
            ("--grpc-host",),
            "gRPC's host where it is not --url's (Weaviate Cloud: grpc-<cluster host>, "
            "with --grpc-port 443).",
            metavar="HOST",
        ),
        api_key("WEAVIATE_API_KEY", "Weaviate API key."),
        Option(
            "page_size",
            ("--page-size",),
            "Objects per request, at most (fewer where objects are large: about 4 MB a page).",
            type=int,
            default=1000,
            metavar="N",
            min=1,
            max=10_000,
        ),
        timeout(60.0),
    ),
    extra="weaviate",
    requires=("weaviate", "grpc"),
    concurrency=8,
    namespaces=Option(
        "tenant",
        ("--tenant",),
        "Copy only this tenant of a multi-tenant collection (repeatable).",
        metavar="NAME",
        multiple=True,
    ),
    examples=(
        "vec2pg weaviate Article --url http://localhost:8080 --dsn postgresql://user:pw@host/db",
        "WEAVIATE_API_KEY=... vec2pg weaviate Note --url https://weaviate.example.com "
        "--tenant acme --prune --dsn postgresql://...",
    ),
)


def _segments() -> Option:
    return Option(
        "segments",
        ("--segments",),
        "Segments of the index listed at the same time (ListVectors' segmentCount, each a "
        "chain resumed from its own token). Default: 16, or 1 for an index of one page.",
        type=int,
        metavar="N",
        min=1,
        max=16,
    )


def _list_page_size() -> Option:
    return Option(
        "page_size",
        ("--page-size",),
        "Vectors per ListVectors request (maxResults). Default: about 512 KB of vector data "
        "(128 of 1,024 dimensions), at most 1,000.",
        type=int,
        metavar="N",
        min=1,
        max=1_000,
    )


_BUCKET = Argument("bucket", "BUCKET", "The vector bucket.")
_INDEX = Argument(
    "index", "INDEX", "The index to copy. Default: every index of the bucket, a table each."
)

S3VECTORS = SourceSpec(
    name="s3vectors",
    summary="Copy an Amazon S3 Vectors index (or every index of a bucket) into PostgreSQL.",
    description=(
        'One row per key: the key ("id"), data.float32 ("embedding", vector(dim), the '
        'distance metric in its comment) and the metadata (jsonb "metadata"). The index is '
        "listed in up to 16 segments at once (ListVectors with its data and metadata: that "
        "needs the s3vectors:GetVectors permission as well as ListVectors). Credentials come "
        "from the AWS chain: the environment, --profile, ~/.aws, an instance role."
    ),
    argument=_BUCKET,
    collection=_INDEX,
    collections="vec2pg.sources.s3vectors:s3vectors_indexes",
    factory="vec2pg.sources.s3vectors:S3VectorsSource",
    options=(
        Option(
            "region",
            ("--region",),
            "AWS region of the bucket. Default: $AWS_REGION, or the profile's.",
            metavar="REGION",
        ),
        Option(
            "profile",
            ("--profile",),
            "AWS profile (~/.aws/config). Default: $AWS_PROFILE, else the default chain.",
            metavar="NAME",
        ),
        Option(
            "endpoint_url",
            ("--endpoint-url",),
            "Another S3 Vectors endpoint (a compatible server). Default: "
            "https://s3vectors.REGION.api.aws.",
            metavar="URL",
        ),
        _segments(),
        _list_page_size(),
        timeout(30.0),
    ),
    extra="s3vectors",
    requires=("boto3", "urllib3", "simdjson"),
    concurrency=16,
    examples=(
        "vec2pg s3vectors my-bucket my-index --region us-east-1 --dsn postgresql://user:pw@host/db",
        "vec2pg s3vectors my-bucket --profile prod --region eu-west-1 --dsn postgresql://...",
    ),
)

SUPABASE_VECTORS = SourceSpec(
    name="supabase-vectors",
    summary="Copy a Supabase vector bucket's index (or all of them) into PostgreSQL.",
    description=(
        "Supabase Vector Buckets (Storage's tier for embeddings, built on S3 Vectors): one row "
        'per key: the key ("id"), its vector ("embedding", vector(dim), the distance metric '
        'in its comment) and its metadata (jsonb "metadata"), read in up to 16 segments at '
        "once with the project's service-role key. A project on the self-hosted pgvector "
        "backend returns 16-bit values: they are stored as halfvec(dim), exactly."
    ),
    argument=_BUCKET,
    collection=_INDEX,
    collections="vec2pg.sources.s3vectors:supabase_indexes",
    factory="vec2pg.sources.s3vectors:SupabaseVectorsSource",
    options=(
        Option(
            "project_url",
            ("--project-url",),
            "The project's URL, https://<ref>.supabase.co.",
            envvar="SUPABASE_URL",
            metavar="URL",
        ),
        Option(
            "key",
            ("--key",),
            "The project's service-role key.",
            envvar="SUPABASE_SERVICE_ROLE_KEY",
            metavar="KEY",
            secret=True,
        ),
        _segments(),
        _list_page_size(),
        timeout(30.0),
    ),
    requires=("urllib3", "simdjson"),
    concurrency=16,
    examples=(
        "vec2pg supabase-vectors embeddings documents-openai --project-url "
        'https://<ref>.supabase.co --key "$SUPABASE_SERVICE_ROLE_KEY" --dsn postgresql://...',
        "vec2pg supabase-vectors embeddings --dsn postgresql://...   # every index, a table each",
    ),
)


def _search_options(product: str, envvar: str, *, api_keys: bool) -> tuple[Option, ...]:
    """The options of ``vec2pg elasticsearch`` and ``vec2pg opensearch``."""
    keys = (api_key(f"{envvar}_API_KEY", f"{product} API key: the encoded key, or ID:KEY."),)
    return (
        Option(
            "url",
            ("--url",),
            f"{product}'s address, e.g. https://localhost:9200.",
            envvar=f"{envvar}_URL",
            metavar="URL",
        ),
        *(keys if api_keys else ()),
        Option("user", ("--user",), "User (HTTP basic).", envvar=f"{envvar}_USER", metavar="USER"),
        Option(
            "password",
            ("--password",),
            "The user's password.",
            envvar=f"{envvar}_PASSWORD",
            metavar="PASSWORD",
            secret=True,
        ),
        Option(
            "ca_certs",
            ("--ca-certs",),
            "CA certificates (PEM) that signed the server's certificate (its http_ca.crt). "
            "Default: $SSL_CERT_FILE, else certifi's.",
            envvar=f"{envvar}_CA_CERTS",
            metavar="FILE",
        ),
        Option(
            "page_size",
            ("--page-size",),
            "Documents per search.",
            type=int,
            default=500,
            metavar="N",
            min=1,
            max=10_000,
        ),
        timeout(60.0),
    )


def _search_namespaces() -> Option:
    return Option(
        "namespace",
        ("--namespace", "-n"),
        "Copy only this index of an alias or pattern (repeatable).",
        metavar="INDEX",
        multiple=True,
    )


def _search_description(vectors: str) -> str:
    return (
        "Every document, read through a point in time shard by shard in _seq_no order "
        "(shards, and _seq_no ranges of them, read at once; a resumed run goes on exactly): "
        f"its _id as the id, {vectors}, the metric in the column's comment, and the rest of "
        '_source as jsonb "metadata". The index may be an alias, a data stream, a pattern '
        "(docs-*) or a list (a,b): each of its indices is then a namespace."
    )


ELASTICSEARCH = SourceSpec(
    name="elasticsearch",
    summary="Copy an Elasticsearch index (or every index of an alias or pattern) into PostgreSQL.",
    description=_search_description(
        "each dense_vector as a column (float, bfloat16 and byte: vector(dim); bit: "
        "bit(dim); rank_vectors and vectors in nested objects: vector(dim)[])",
    ),
    argument=Argument("index", "INDEX", "The index (alias, data stream, pattern) to copy."),
    factory="vec2pg.sources.elasticsearch:ElasticsearchSource",
    options=_search_options("Elasticsearch", "ELASTICSEARCH", api_keys=True),
    extra="elasticsearch",
    requires=("urllib3", "simdjson", "orjson"),
    concurrency=4,
    namespaces=_search_namespaces(),
    examples=(
        "vec2pg elasticsearch docs --url https://localhost:9200 --api-key ... "
        "--ca-certs http_ca.crt --dsn postgresql://user:pw@host/db",
        "vec2pg elasticsearch 'logs-*' --url https://es.example.com --user elastic "
        "--password ... --prune --dsn postgresql://...",
    ),
)

OPENSEARCH = SourceSpec(
    name="opensearch",
    summary="Copy an OpenSearch index (or every index of an alias or pattern) into PostgreSQL.",
    description=_search_description(
        "each knn_vector as a column (float and byte: vector(dim); binary: bit(dim); in "
        "nested objects: vector(dim)[])",
    ),
    argument=Argument("index", "INDEX", "The index (alias, pattern) to copy."),
    factory="vec2pg.sources.opensearch:OpenSearchSource",
    options=_search_options("OpenSearch", "OPENSEARCH", api_keys=False),
    extra="opensearch",
    requires=("urllib3", "simdjson", "orjson"),
    concurrency=4,
    namespaces=_search_namespaces(),
    examples=(
        "vec2pg opensearch docs --url https://localhost:9200 --user admin --password ... "
        "--dsn postgresql://user:pw@host/db",
    ),
)


def _chroma_header(value: str) -> tuple[str, str]:
    """A ``--header 'Name: value'`` as (name, value)."""
    name, colon, rest = value.partition(":")
    if not colon or not name.strip():
        raise ConfigError(f"--header {value.split(':')[0]!r}...: give it as 'Name: value'")
    return name.strip(), rest.strip()


CHROMA = SourceSpec(
    name="chroma",
    summary="Copy a Chroma collection into PostgreSQL.",
    description=(
        'Every row arrives once: its id, its embedding (column "embedding", vector(dim), with '
        "the collection's hnsw:space as the metric), its document and URI (text columns "
        '"document" and "uri") and its metadata (jsonb "metadata"). Reads a local Chroma '
        "folder (--path) or a Chroma server (--host, --port, --ssl), in --tenant and "
        "--database. Rows are paged by offset; a cursor also names the row before it, so "
        "rows deleted during a run, or before a resumed one, never make it skip a row."
    ),
    argument=Argument("collection", "COLLECTION", "The Chroma collection to copy."),
    factory="vec2pg.sources.chroma:ChromaSource",
    check="vec2pg.sources.chroma:check_location",
    options=(
        Option(
            "path",
            ("--path",),
            "A local Chroma folder (chromadb.PersistentClient) instead of --host.",
            metavar="DIR",
        ),
        Option(
            "host",
            ("--host",),
            "A Chroma server's host name (chromadb.HttpClient).",
            envvar="CHROMA_HOST",
            metavar="HOST",
        ),
        Option(
            "port",
            ("--port",),
            "The Chroma server's port.",
            type=int,
            default=8000,
            metavar="PORT",
            min=1,
            max=65_535,
        ),
        Option("ssl", ("--ssl",), "Connect to the server with HTTPS.", type=bool, default=False),
        Option(
            "token",
            ("--token",),
            "A token for the server (a Chroma Cloud API key), sent as --token-header.",
            envvar="CHROMA_API_KEY",
            metavar="TOKEN",
            secret=True,
        ),
        Option(
            "token_header",
            ("--token-header",),
            "The header --token goes in: X-Chroma-Token, or Authorization (as 'Bearer TOKEN').",
            default="x-chroma-token",
            choices=("x-chroma-token", "authorization"),
        ),
        Option(
            "headers",
            ("--header",),
            "An HTTP header for every request to the server, as 'Name: value' (repeatable).",
            metavar="'NAME: VALUE'",
            multiple=True,
            convert=_chroma_header,
        ),
        Option(
            "tenant",
            ("--tenant",),
            "The tenant the collection is in.",
            default="default_tenant",
            envvar="CHROMA_TENANT",
            metavar="NAME",
        ),
        Option(
            "database",
            ("--database",),
            "The database the collection is in.",
            default="default_database",
            envvar="CHROMA_DATABASE",
            metavar="NAME",
        ),
        Option(
            "page_size",
            ("--page-size",),
            "Rows per get request.",
            type=int,
            default=1000,
            metavar="N",
            min=1,
            max=100_000,
        ),
        timeout(60.0),
    ),
    extra="chroma",
    requires=("chromadb",),
    concurrency=2,
    examples=(
        "vec2pg chroma docs --path ./chroma --dsn postgresql://user:pw@host/db",
        "vec2pg chroma docs --host chroma.internal --port 8000 --tenant acme --database prod",
    ),
)

LANCEDB = SourceSpec(
    name="lancedb",
    summary="Copy a LanceDB table into PostgreSQL.",
    description=(
        "Reads one version of the table (the latest when the run starts, or --version), as "
        "Arrow record batches: every fixed-size-list float column becomes a vector(dim) "
        "column (halfvec(dim) for float16 ones), a list of them a vector(dim)[] column, and "
        'the other columns the jsonb "metadata". Ids are the --id-column (default id), or '
        "LanceDB's row id (_rowid) in a table without that column. A resumed run reads the "
        "same version as the run it resumes."
    ),
    # Not "table": that is the --table option (the target table).
    argument=Argument("lance_table", "TABLE", "The LanceDB table to copy."),
    factory="vec2pg.sources.lancedb:LanceDBSource",
    options=(
        Option(
            "uri",
            ("--uri",),
            "The LanceDB database: a folder, or s3://bucket/path (gs://, az://) as "
            "lancedb.connect accepts.",
            envvar="LANCEDB_URI",
            metavar="URI",
        ),
        Option(
            "version",
            ("--version",),
            "Read this version of the table. Default: the latest when the run starts.",
            type=int,
            metavar="N",
            min=1,
        ),
        Option(
            "id_column",
            ("--id-column",),
            "The column that holds each row's id. A table without it is read with LanceDB's "
            "row ids as ids.",
            default="id",
            metavar="NAME",
        ),
        Option(
            "page_size",
            ("--page-size",),
            "Rows per page read.",
            type=int,
            default=2048,
            metavar="N",
            min=1,
            max=100_000,
        ),
    ),
    extra="lancedb",
    requires=("lancedb", "pyarrow"),
    concurrency=2,
    examples=(
        "vec2pg lancedb docs --uri ./lancedb --dsn postgresql://user:pw@host/db",
        "vec2pg lancedb docs --uri s3://bucket/lancedb --version 42 --id-column doc_id",
    ),
)


MILVUS = SourceSpec(
    name="milvus",
    summary="Copy a Milvus (or Milvus Lite) collection, every partition, into PostgreSQL.",
    description=(
        "One row per (partition, primary key), read in key order: each vector field a "
        "column of its own (float and int8 vectors vector(dim), float16 and bfloat16 "
        "halfvec(dim), sparse vectors sparsevec, binary vectors bit(dim)), with its index's "
        "metric in the column comment, and the scalar fields and dynamic field as jsonb "
        '"metadata". --uri is a server (http://host:19530) or a Milvus Lite database '
        "(./milvus.db)."
    ),
    argument=Argument("collection", "COLLECTION", "The Milvus collection to copy."),
    factory="vec2pg.sources.milvus:MilvusSource",
    options=(
        Option(
            "uri",
            ("--uri",),
            "Milvus server URI (http://localhost:19530), or a Milvus Lite database (./milvus.db).",
            envvar="MILVUS_URI",
            metavar="URI",
        ),
        Option(
            "token",
            ("--token",),
            "Milvus credentials: user:password, or an API key (Zilliz Cloud).",
            envvar="MILVUS_TOKEN",
            metavar="TOKEN",
            secret=True,
        ),
        Option("db_name", ("--db",), "The Milvus database the collection is in.", metavar="NAME"),
        Option(
            "batch_size",
            ("--batch-size",),
            "Rows per query (at most 16,384). Default: about 8 MB of vectors, 32 MB from "
            "Milvus Lite.",
            type=int,
            metavar="N",
            min=1,
            max=16_384,
        ),
        timeout(60.0),
    ),
    extra="milvus",
    requires=("pymilvus",),
    concurrency=4,
    namespaces=Option(
        "partition",
        ("--partition", "-p"),
        "Copy only this partition (repeatable). The default one is _default.",
        metavar="NAME",
        multiple=True,
    ),
    examples=(
        "vec2pg milvus docs --uri http://localhost:19530 --token root:Milvus --dsn postgresql://...",
        "vec2pg milvus docs --uri ./milvus.db --embedded",
    ),
)

#: The sources vec2pg comes with, in the order ``vec2pg --help`` lists them.
BUILT_IN: tuple[SourceSpec, ...] = (
    QDRANT,
    PINECONE,
    WEAVIATE,
    S3VECTORS,
    SUPABASE_VECTORS,
    ELASTICSEARCH,
    OPENSEARCH,
    CHROMA,
    LANCEDB,
    MILVUS,
    JSONL,
)


@functools.cache
def registry() -> dict[str, SourceSpec]:
    """Every source by command name: the built-in ones, then those of installed plugins
    (a plugin that fails to load, or takes a name already used, is skipped with a warning
    on stderr, so that the other commands still work)."""
    from importlib.metadata import entry_points

    sources = {spec.name: spec for spec in BUILT_IN}
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            spec = entry.load()
        except Exception as exc:
            _warn(f"the source plugin {entry.value!r} failed to load ({type(exc).__name__}: {exc})")
            continue
        if not isinstance(spec, SourceSpec):
            _warn(f"the source plugin {entry.value!r} is not a vec2pg.sources.SourceSpec")
        elif spec.name in sources:
            _warn(f"the source plugin {entry.value!r} names {spec.name!r}, which is taken")
        else:
            sources[spec.name] = spec
    return sources


def _warn(message: str) -> None:
    print(f"vec2pg: warning: {message}; skipped", file=sys.stderr)
