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

    def open(self, argument: str, options: Mapping[str, Any]) -> Source:
        """The source, from the command's argument and its own options."""
        missing = [module for module in self.requires if not _importable(module)]
        if missing:
            install = f"pip install 'vec2pg[{self.extra}]'" if self.extra else "install it"
            raise ConfigError(f"vec2pg {self.name} needs {', '.join(missing)}: {install}")
        module, _, attribute = self.factory.partition(":")
        factory = getattr(importlib.import_module(module), attribute)
        source: Source = factory(argument, **options)
        return source


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
    ),
    extra="qdrant",
    requires=("qdrant_client",),
    concurrency=2,
    legacy=("--url", "--api-key", "--dsn"),
    examples=(
        "vec2pg qdrant docs --url http://localhost:6333 --dsn postgresql://user:pw@host/db",
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

#: The sources vec2pg comes with, in the order ``vec2pg --help`` lists them.
BUILT_IN: tuple[SourceSpec, ...] = (QDRANT, PINECONE, JSONL)


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
