"""The ``vec2pg`` command: one thin command per source, and ``main()``, the error boundary.

Commands parse options and call the library; they hold no SQL and no SDK calls. Every
error a user should see is a :class:`~vec2pg.errors.Vec2pgError`; ``main()`` prints it as
one line (``vec2pg: error: ...``) and exits with its code. A traceback is printed only
with ``--debug``. Secrets (API keys, DSN passwords) are scrubbed from everything printed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, fields
from enum import Enum
from typing import Annotated, Any

import typer

from vec2pg import __version__
from vec2pg.errors import ConfigError, ExitCode, Vec2pgError

app = typer.Typer(
    name="vec2pg",
    help="Move vector data from vector databases into PostgreSQL with pgvector.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

#: Every secret seen while parsing; main() scrubs them from anything it prints.
_SECRETS: set[str] = set()


def _secret(value: str | None) -> str | None:
    if value:
        _SECRETS.add(value)
    return value


def redact(text: str) -> str:
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vec2pg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Move vector data from vector databases into PostgreSQL with pgvector.

    Each command reads one source (every id, vector, sparse vector and metadata of every
    namespace) and writes it to the table vec2pg."<collection>" through binary COPY.
    """


# Options every source command shares. Defined once; each command lists them.
Dsn = Annotated[
    str | None,
    typer.Option(
        "--dsn",
        help="PostgreSQL connection string. Default: $POSTGRES_CONNECTION_STRING, "
        "then $DATABASE_URL.",
        show_default=False,
    ),
]
Embedded = Annotated[
    bool,
    typer.Option(
        "--embedded",
        help="Write to an embedded PostgreSQL with pgvector in a per-user folder "
        "($VEC2PG_EMBEDDED_DIR); prints a DSN for psql. Needs vec2pg[embedded].",
    ),
]
Schema = Annotated[str, typer.Option("--schema", help="Target schema.")]
Table = Annotated[
    str | None,
    typer.Option(
        "--table", help="Target table. Default: the collection's name.", show_default=False
    ),
]
Concurrency = Annotated[
    int, typer.Option("--concurrency", min=1, max=64, help="Pages loaded at once.")
]
Retries = Annotated[
    int,
    typer.Option(
        "--retries", min=1, max=100, help="Tries per request before a transient failure is fatal."
    ),
]
CommitRows = Annotated[int, typer.Option("--commit-rows", min=1, help="Rows per transaction.")]
Prune = Annotated[
    bool,
    typer.Option(
        "--prune",
        help="Delete rows whose records the source no longer has, after a scan that completed.",
    ),
]
Replace = Annotated[
    bool,
    typer.Option(
        "--replace",
        help="Load a new table and swap it in atomically (readers see the old or the new one).",
    ),
]
Restart = Annotated[
    bool, typer.Option("--restart", help="Ignore the saved progress of an interrupted run.")
]
Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print nothing but errors and the summary.")
]
Json = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON object (the summary, or the error) on stdout."),
]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")]


class OnError(str, Enum):
    stop = "stop"
    skip = "skip"


OnErrorOption = Annotated[
    OnError,
    typer.Option(
        "--on-error",
        help="A record PostgreSQL cannot take (NaN, wrong dimension, NUL, ...): stop the run "
        "with a one-line error, or skip it into the --rejects file and go on (exit code 9).",
    ),
]
RejectsOption = Annotated[
    str | None,
    typer.Option(
        "--rejects",
        help="JSONL file for skipped records, whole, with their reasons; reload it with "
        "'vec2pg jsonl FILE'. Default with --on-error skip: vec2pg-rejects.jsonl.",
        show_default=False,
    ),
]
StripNul = Annotated[
    bool,
    typer.Option(
        "--strip-nul",
        help="Remove NUL characters from metadata (which jsonb cannot hold) instead of "
        "refusing the record; counted as 'altered'.",
    ),
]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Connect to the source and the target, print what would happen, write nothing.",
    ),
]


class IndexChoice(str, Enum):
    hnsw = "hnsw"
    ivfflat = "ivfflat"


IndexOption = Annotated[
    IndexChoice | None,
    typer.Option(
        "--index",
        help="After the load, build this pgvector index on every vector column, with the "
        "operator class of the source's metric, then ANALYZE.",
        show_default=False,
    ),
]
Halfvec = Annotated[
    bool,
    typer.Option(
        "--halfvec",
        help="Store dense vectors and multivectors as halfvec (16-bit floats) instead of "
        "vector: half the space, and indexable up to 4,000 dimensions instead of 2,000. "
        "Values keep about 3 significant digits; a value beyond +-65,504 stops the run.",
    ),
]
VerifyFlag = Annotated[
    bool,
    typer.Option(
        "--verify",
        help="After the run, compare source and table (counts, every id, a sample of records "
        "field by field); exit 8 if they differ.",
    ),
]
Sample = Annotated[
    int,
    typer.Option(
        "--sample", min=0, help="Records per namespace compared field by field by verify."
    ),
]


@dataclass(frozen=True)
class _Common:
    """The options every source command shares, taken from the command's locals()."""

    dsn: str | None
    embedded: bool
    schema: str
    table: str | None
    concurrency: int
    retries: int
    commit_rows: int
    prune: bool
    replace: bool
    restart: bool
    on_error: OnError
    rejects: str | None
    strip_nul: bool
    dry_run: bool
    index_method: IndexChoice | None
    halfvec: bool
    verify: bool
    sample: int
    quiet: bool
    json_output: bool

    @classmethod
    def of(cls, values: dict[str, Any]) -> _Common:
        return cls(**{f.name: values[f.name] for f in fields(cls)})


def _run(
    make_source: Callable[[], Any],
    common: _Common,
    namespaces: Sequence[str] = (),
    *,
    verify_only: bool = False,
    processes: int | None = None,
) -> int:
    """Run one migration (or its dry run, or only its verification); return the exit code."""
    from vec2pg.pipeline import Options, RetryPolicy, migrate, plan
    from vec2pg.postgres import PostgresSink, resolve_dsn
    from vec2pg.postgres.sink import SyncOptions
    from vec2pg.postgres.target import dsn_password
    from vec2pg.progress import PlainEvents, QuietEvents, RichEvents, plan_text, summary_text

    if common.prune and common.replace:
        raise ConfigError(
            "--prune and --replace do not go together: --replace keeps only what the source has"
        )
    dsn = resolve_dsn(common.dsn, embedded=common.embedded)
    _secret(dsn_password(dsn))
    events: RichEvents | PlainEvents
    if common.quiet or common.json_output or common.dry_run:
        events = QuietEvents()
    elif sys.stderr.isatty():
        events = RichEvents()
    else:
        events = PlainEvents()
    options = Options(
        concurrency=common.concurrency,
        retry=RetryPolicy(attempts=common.retries),
        namespaces=tuple(namespaces),
        processes=processes,
        flat_memory=sys.platform.startswith("linux"),
    )
    rejects = common.rejects
    if common.on_error is OnError.skip and rejects is None:
        rejects = "vec2pg-rejects.jsonl"
    elif common.on_error is OnError.stop and rejects is not None:
        raise ConfigError("--rejects goes with --on-error skip")
    sync = SyncOptions(
        prune=common.prune,
        replace=common.replace,
        restart=common.restart,
        rejects=rejects,
        strip_nul=common.strip_nul,
    )
    with ExitStack() as stack:
        stack.callback(events.stop)
        source = make_source()
        stack.callback(source.close)
        if verify_only:
            report = _verify(source, dsn, common, options)
            typer.echo(json.dumps(report.as_dict()) if common.json_output else report.text())
            return int(report.exit_code)
        sink = stack.enter_context(
            PostgresSink(
                dsn,
                schema=common.schema,
                table=common.table,
                commit_rows=common.commit_rows,
                sync=sync,
                halfvec=common.halfvec,
                index=common.index_method.value if common.index_method else None,
            )
        )
        if common.dry_run:
            report = plan(source, sink, options)
            typer.echo(json.dumps(report) if common.json_output else plan_text(report))
            return 0
        summary = migrate(source, sink, options, events)
        checked = _verify(source, dsn, common, options) if common.verify else None
    result = summary.as_dict()
    if checked is not None:
        result["verify"] = checked.as_dict()
    if common.json_output:
        typer.echo(json.dumps(result))
    else:
        typer.echo(summary_text(summary))
        if checked is not None:
            typer.echo(checked.text())
        if common.embedded:
            typer.echo(f"query it: psql \"{dsn}\" -c 'SELECT count(*) FROM {summary.target}'")
    rejected, stale = summary.total("rejected"), summary.total("stale")
    if rejected:
        print(
            f"vec2pg: {rejected:,} records were skipped into {rejects}: "
            "fix them and load them with 'vec2pg jsonl'",
            file=sys.stderr,
        )
        return int(ExitCode.REJECTED)
    if stale:
        print(
            f"vec2pg: {summary.target} holds {stale:,} rows the source no "
            "longer has: run with --prune to delete them",
            file=sys.stderr,
        )
        return int(ExitCode.DIFFERS)
    if checked is not None and not checked.ok:
        return int(checked.exit_code)
    return 0


def _verify(source: Any, dsn: str, common: _Common, options: Any) -> Any:
    """Compare the source with its table (vec2pg.verify)."""
    from vec2pg.verify import verify

    return verify(
        source,
        dsn,
        schema=common.schema,
        table=common.table,
        namespaces=options.namespaces,
        sample=common.sample,
        concurrency=common.concurrency,
        retry=options.retry,
        strip_nul=common.strip_nul,
    )


@app.command(no_args_is_help=True)
def qdrant(
    ctx: typer.Context,
    collection: Annotated[
        str, typer.Argument(help="The Qdrant collection to copy.", show_default=False)
    ],
    legacy: Annotated[
        list[str] | None,
        typer.Argument(
            hidden=True, help="The original vec2pg's form: migrate COLLECTION URL API_KEY DSN."
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="QDRANT_URL",
            help="Qdrant server URL, e.g. http://localhost:6333.",
            show_default=False,
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", envvar="QDRANT_API_KEY", help="Qdrant API key.", show_default=False
        ),
    ] = None,
    path: Annotated[
        str | None,
        typer.Option(
            "--path",
            help="A local Qdrant storage folder (qdrant-client's local mode) instead of --url.",
            show_default=False,
        ),
    ] = None,
    page_size: Annotated[
        int, typer.Option("--page-size", min=1, max=10_000, help="Points per scroll request.")
    ] = 256,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for each request.")
    ] = 60.0,
    dsn: Dsn = None,
    embedded: Embedded = False,
    schema: Schema = "vec2pg",
    table: Table = None,
    concurrency: Concurrency = 2,
    retries: Retries = 6,
    commit_rows: CommitRows = 10_000,
    prune: Prune = False,
    replace: Replace = False,
    restart: Restart = False,
    on_error: OnErrorOption = OnError.stop,
    rejects: RejectsOption = None,
    strip_nul: StripNul = False,
    dry_run: DryRun = False,
    index_method: IndexOption = None,
    halfvec: Halfvec = False,
    verify: VerifyFlag = False,
    sample: Sample = 100,
    quiet: Quiet = False,
    json_output: Json = False,
    debug: Debug = False,
) -> int:
    """Copy a Qdrant collection into PostgreSQL.

    Every point arrives exactly once: ids (integers and UUIDs, as text), the unnamed
    vector (column "embedding"), named dense vectors (vector(dim)), sparse vectors
    (sparsevec) and multivectors (vector(dim)[]), and the payload (jsonb "metadata").

    The original vec2pg's form works too: vec2pg qdrant migrate COLLECTION URL [API_KEY] [DSN],
    with API_KEY and DSN from QDRANT_API_KEY and POSTGRES_CONNECTION_STRING.
    """
    if collection == "migrate" and legacy:
        collection, url, api_key, dsn = _legacy(
            legacy, ["COLLECTION", "URL", "API_KEY", "DSN"], [url, api_key, dsn]
        )
    elif legacy:
        raise ConfigError(f"unexpected arguments after the collection: {' '.join(legacy)}")
    _secret(api_key)

    def make_source() -> Any:
        from vec2pg.sources.qdrant import QdrantSource

        return QdrantSource(
            collection, url=url, api_key=api_key, path=path, timeout=timeout, page_size=page_size
        )

    common = _Common.of(locals())
    return _run(make_source, common, verify_only=_verifying(ctx))


@app.command(no_args_is_help=True)
def pinecone(
    ctx: typer.Context,
    index: Annotated[str, typer.Argument(help="The Pinecone index to copy.", show_default=False)],
    legacy: Annotated[
        list[str] | None,
        typer.Argument(hidden=True, help="The original vec2pg's form: migrate INDEX API_KEY DSN."),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", envvar="PINECONE_API_KEY", help="Pinecone API key.", show_default=False
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            "--host",
            help="The index's host (https://INDEX-PROJECT.svc...); skips the control plane.",
            show_default=False,
        ),
    ] = None,
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace",
            "-n",
            help='Copy only this namespace (repeatable). The default one is __default__ (or "").',
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for each request.")
    ] = 30.0,
    processes: Annotated[
        int | None,
        typer.Option(
            "--processes",
            min=0,
            max=64,
            help="Processes that decode the fetched records. Default: one per CPU (up to 4; "
            "none on a single CPU) for 20,000 records or more. 0: the reading threads decode.",
            show_default=False,
        ),
    ] = None,
    dsn: Dsn = None,
    embedded: Embedded = False,
    schema: Schema = "vec2pg",
    table: Table = None,
    concurrency: Concurrency = 8,
    retries: Retries = 6,
    commit_rows: CommitRows = 10_000,
    prune: Prune = False,
    replace: Replace = False,
    restart: Restart = False,
    on_error: OnErrorOption = OnError.stop,
    rejects: RejectsOption = None,
    strip_nul: StripNul = False,
    dry_run: DryRun = False,
    index_method: IndexOption = None,
    halfvec: Halfvec = False,
    verify: VerifyFlag = False,
    sample: Sample = 100,
    quiet: Quiet = False,
    json_output: Json = False,
    debug: Debug = False,
) -> int:
    """Copy a serverless Pinecone index, every namespace, into PostgreSQL.

    One row per (namespace, id): dense values (column "embedding", vector(dim)), sparse
    values ("sparse_embedding", sparsevec) and metadata (jsonb "metadata"). Ids are listed
    and fetched with several requests in flight (--concurrency); rate limits (HTTP 429)
    slow the run down, they do not stop it.

    The original vec2pg's form works too: vec2pg pinecone migrate INDEX [API_KEY] [DSN],
    with API_KEY and DSN from PINECONE_API_KEY and POSTGRES_CONNECTION_STRING.
    """
    if index == "migrate" and legacy:
        index, api_key, dsn = _legacy(legacy, ["INDEX", "API_KEY", "DSN"], [api_key, dsn])
    elif legacy:
        raise ConfigError(f"unexpected arguments after the index: {' '.join(legacy)}")
    _secret(api_key)
    namespaces = [_default_namespace(n) for n in namespace or []]

    def make_source() -> Any:
        from vec2pg.sources.pinecone import PineconeSource

        return PineconeSource(
            index, api_key=api_key, host=host, timeout=timeout, concurrency=concurrency
        )

    common = _Common.of(locals())
    return _run(make_source, common, namespaces, verify_only=_verifying(ctx), processes=processes)


@app.command(no_args_is_help=True)
def jsonl(
    path: Annotated[
        str, typer.Argument(help="A rejects file written by --on-error skip.", show_default=False)
    ],
    dsn: Dsn = None,
    embedded: Embedded = False,
    schema: Schema = "vec2pg",
    table: Table = None,
    concurrency: Concurrency = 1,
    retries: Retries = 6,
    commit_rows: CommitRows = 10_000,
    prune: Annotated[bool, typer.Option(hidden=True)] = False,
    replace: Annotated[bool, typer.Option(hidden=True)] = False,
    restart: Restart = False,
    on_error: OnErrorOption = OnError.stop,
    rejects: RejectsOption = None,
    strip_nul: StripNul = False,
    dry_run: DryRun = False,
    index_method: IndexOption = None,
    halfvec: Halfvec = False,
    verify: Annotated[bool, typer.Option(hidden=True)] = False,
    sample: Annotated[int, typer.Option(hidden=True)] = 0,
    quiet: Quiet = False,
    json_output: Json = False,
    debug: Debug = False,
) -> int:
    """Load a rejects file (records an earlier run skipped) once their cause is fixed.

    The file's first line names the collection and its vectors, so the records go into
    the same table (vec2pg."<collection>") and are merged with what it holds.
    """

    def make_source() -> Any:
        from vec2pg.sources.jsonl import JsonlSource

        return JsonlSource(path)

    return _run(make_source, _Common.of(locals()))


@app.command(no_args_is_help=True)
def status(
    table: Annotated[
        str, typer.Argument(help="The target table (the collection's name).", show_default=False)
    ],
    dsn: Dsn = None,
    embedded: Embedded = False,
    schema: Schema = "vec2pg",
    json_output: Json = False,
    debug: Debug = False,
) -> int:
    """Show a target's rows, its last completed run and any saved progress.

    Exits 0 when the target has completed a run and has no unfinished one, 8 when an
    unfinished run waits to be resumed, 5 when vec2pg has never completed a run on it.
    """
    from vec2pg.postgres import resolve_dsn
    from vec2pg.postgres.sink import target_status

    dsn = resolve_dsn(dsn, embedded=embedded)
    report = target_status(dsn, schema, table)
    if json_output:
        typer.echo(json.dumps(report))
    else:
        typer.echo(_status_text(report))
    if report["last_complete"] is None:
        return int(ExitCode.TARGET_STATE)
    return int(ExitCode.DIFFERS) if report["unfinished"] else 0


def _status_text(report: dict[str, Any]) -> str:
    rows = "does not exist" if report["rows"] is None else f"holds {report['rows']:,} rows"
    lines = [f"{report['table']} {rows}"]
    last = report["last_complete"]
    if last is None:
        lines.append("  no completed vec2pg run")
    else:
        done = last["summary"] or {}
        lines.append(
            f"  last completed run #{last['run']} ({last['mode']}) finished {last['finished']}: "
            f"{done.get('read', 0):,} read, {done.get('inserted', 0):,} inserted, "
            f"{done.get('updated', 0):,} updated, {done.get('deleted', 0):,} deleted"
        )
    unfinished = report["unfinished"]
    if unfinished is None:
        lines.append("  no saved progress")
    else:
        chains = unfinished["chains"]
        lines.append(
            f"  unfinished run #{unfinished['run']} ({unfinished['mode']}) started "
            f"{unfinished['started']}: {unfinished['records']:,} records committed, "
            f"{chains['done']} of {chains['total']} chains done; the same command resumes it"
        )
        if unfinished["error"]:
            lines.append(f"  it stopped with: {unfinished['error']}")
    return "\n".join(lines)


verify_app = typer.Typer(
    name="verify",
    help="Compare a source with its table: counts per namespace, every id on both sides, and "
    "a sample of records field by field. Exit 0 when they match, 8 when they differ.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(verify_app)
# The source commands themselves, so that verify takes exactly the options a migration
# took; run under "verify" they only compare (the options that shape writing are unused).
verify_app.command(
    "qdrant",
    no_args_is_help=True,
    help="Compare a Qdrant collection with its table (same options as 'vec2pg qdrant').",
)(qdrant)
verify_app.command(
    "pinecone",
    no_args_is_help=True,
    help="Compare a Pinecone index with its table (same options as 'vec2pg pinecone').",
)(pinecone)


def _verifying(ctx: typer.Context) -> bool:
    """Whether the command runs as 'vec2pg verify <source>'."""
    return ctx.parent is not None and ctx.parent.info_name == "verify"


def _default_namespace(name: str) -> str:
    # Pinecone spells its default namespace "__default__" (older servers: ""); so does the table.
    return name or "__default__"


def _legacy(args: list[str], names: list[str], defaults: list[str | None]) -> list[Any]:
    """Map the original positional form onto (name, *options); later ones may come from env."""
    if len(args) > len(names):
        raise ConfigError(f"too many arguments for: migrate {' '.join(names)}")
    values: list[str | None] = list(args) + [None] * (len(names) - len(args))
    # Options given explicitly fill what the positional form left out.
    for i, default in enumerate(defaults, start=1):
        if values[i] is None:
            values[i] = default
    return values


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return (and, as a script, exit with) the exit code."""
    from typer.exceptions import Abort, Exit, TyperException

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("VEC2PG_DEBUG") == "1"
    as_json = "--json" in args
    try:
        command = typer.main.get_command(app)
        result = command.main(args=args, prog_name="vec2pg", standalone_mode=False)
        if result == ExitCode.INTERRUPTED:
            # Typer turns Ctrl-C into this exit code without a word (no command returns
            # it): say it, on stderr and in --json's error object, as for any failure.
            return _fail("interrupted", ExitCode.INTERRUPTED, as_json)
        return int(result) if isinstance(result, int) else 0
    except Exit as exc:
        return int(exc.exit_code)
    except TyperException as exc:  # a usage error: Typer prints it with a hint
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            print(f"vec2pg: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", ExitCode.USAGE))
    except Abort:
        return _fail("interrupted", ExitCode.INTERRUPTED, as_json)
    except Vec2pgError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        return _fail(str(exc), exc.exit_code, as_json)
    except KeyboardInterrupt:
        return _fail("interrupted", ExitCode.INTERRUPTED, as_json)
    except Exception as exc:
        if debug:
            import traceback

            traceback.print_exc()
        reason = f"{type(exc).__name__}: {exc}"
        hint = "" if debug else " (run with --debug for the traceback)"
        return _fail(f"internal error: {reason}{hint}", ExitCode.INTERNAL, as_json)


def _fail(message: str, code: ExitCode, as_json: bool) -> int:
    message = redact(message)
    if as_json:
        print(json.dumps({"error": message, "exit_code": int(code)}))
    print(f"vec2pg: error: {message}", file=sys.stderr)
    return int(code)
