"""The ``vec2pg`` command: commands built from the source registry, and ``main()``, the error
boundary.

Each source in :func:`vec2pg.sources.registry` becomes ``vec2pg <source>`` (a migration)
and ``vec2pg verify <source>`` (a comparison): its argument and own options, followed by
the options every source shares, which are declared once here. Commands parse options and
call the library; they hold no SQL and no SDK calls. Every error a user should see is a
:class:`~vec2pg.errors.Vec2pgError`; ``main()`` prints it as one line (``vec2pg: error:
...``) and exits with its code. A traceback is printed only with ``--debug``. Secrets (API
keys, DSN passwords) are scrubbed from everything printed.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, cast

import typer
from typer.core import TyperCommand

from vec2pg import __version__
from vec2pg.errors import ConfigError, ExitCode, TerminateSignal, Vec2pgError
from vec2pg.masking import mask_dsn
from vec2pg.sources import MAX_CONCURRENCY, Option, SourceSpec, registry

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


@dataclass
class _Output:
    """How the running command reports: set from its --debug and --json."""

    debug: bool = False
    json: bool = False
    terminated: bool = False  # a SIGTERM arrived


_OUTPUT: ContextVar[_Output | None] = ContextVar("vec2pg_output", default=None)


def _output() -> _Output:
    """How the running command reports (a command run outside main() gets its own)."""
    output = _OUTPUT.get()
    if output is None:
        output = _Output()
        _OUTPUT.set(output)
    return output


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vec2pg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Move vector data from vector databases into PostgreSQL with pgvector.

    Each command reads one source (every id, vector, sparse vector and metadata of every
    namespace) and writes it to the table vec2pg."<collection>" through binary COPY.
    """


# -- the options every source shares ----------------------------------------------------------

TARGET = (
    Option(
        "dsn",
        ("--dsn",),
        "PostgreSQL connection string. Default: $POSTGRES_CONNECTION_STRING, then $DATABASE_URL.",
        metavar="DSN",
    ),
    Option(
        "embedded",
        ("--embedded",),
        "Write to an embedded PostgreSQL with pgvector in a per-user folder "
        "($VEC2PG_EMBEDDED_DIR); prints a DSN for psql. Needs vec2pg[embedded].",
        type=bool,
        default=False,
    ),
    Option(
        "schema",
        ("--schema",),
        "Target schema. Default: vec2pg (vecs with --layout vecs).",
        metavar="NAME",
    ),
    Option("table", ("--table",), "Target table. Default: the collection's name.", metavar="NAME"),
)
#: The table's shape: the run's and verify's alike.
SHAPE = (
    Option(
        "layout",
        ("--layout",),
        "The table's shape: vec2pg's (every vector its own column, namespaces in one table) "
        "or a Supabase vecs collection (id, vec, metadata in schema vecs; one table per "
        "namespace), which vecs opens as it is.",
        default="vec2pg",
        choices=("vec2pg", "vecs"),
    ),
    Option(
        "vector",
        ("--vector",),
        "With --layout vecs: the dense vector the collection holds, when the source has more "
        "than one vector.",
        metavar="NAME",
    ),
    Option(
        "id_type",
        ("--id-type",),
        "The id column's type: text (any id), or bigint where every id is an integer (WHERE "
        "id = 5, ORDER BY id in number order). Default: bigint for sources whose ids are all "
        "integers (Milvus's int64 keys), else text.",
        choices=("text", "bigint"),
    ),
)
CONCURRENCY = Option(
    "concurrency",
    ("--concurrency",),
    "Pages read at once.",
    type=int,
    metavar="N",
    min=1,
    max=MAX_CONCURRENCY,
)
RETRIES = Option(
    "retries",
    ("--retries",),
    "Tries per request before a transient failure is fatal.",
    type=int,
    default=6,
    metavar="N",
    min=1,
    max=100,
)
PROCESSES = Option(
    "processes",
    ("--processes",),
    "Processes that decode the records read, where the source's answers allow it "
    "(Pinecone, Qdrant, S3 Vectors, Supabase Vector Buckets, Elasticsearch, OpenSearch). "
    "Default: one per CPU (up to 4; none on a single CPU) for 20,000 records or more. "
    "0: the reading threads decode.",
    type=int,
    metavar="N",
    min=0,
    max=64,
)
STRIP_NUL = Option(
    "strip_nul",
    ("--strip-nul",),
    "Remove NUL characters from metadata (which jsonb cannot hold) instead of refusing the "
    "record; counted as 'altered'.",
    type=bool,
    default=False,
)
SAMPLE = Option(
    "sample",
    ("--sample",),
    "Records per namespace compared field by field by verify.",
    type=int,
    default=100,
    metavar="N",
    min=0,
)
WRITING = (
    Option(
        "commit_rows",
        ("--commit-rows",),
        "Rows per transaction.",
        type=int,
        default=10_000,
        metavar="N",
        min=1,
    ),
    Option(
        "prune",
        ("--prune",),
        "Delete rows whose records the source no longer has, after a scan that completed.",
        type=bool,
        default=False,
    ),
    Option(
        "replace",
        ("--replace",),
        "Load a new table and swap it in atomically (readers see the old or the new one).",
        type=bool,
        default=False,
    ),
    Option(
        "restart",
        ("--restart",),
        "Ignore the saved progress of an interrupted run.",
        type=bool,
        default=False,
    ),
    Option(
        "on_error",
        ("--on-error",),
        "A record PostgreSQL cannot take (NaN, wrong dimension, NUL, ...): stop the run with "
        "a one-line error, or skip it into the --rejects file and go on (exit code 9).",
        default="stop",
        choices=("stop", "skip"),
    ),
    Option(
        "rejects",
        ("--rejects",),
        "JSONL file for skipped records, whole, with their reasons; reload it with "
        "'vec2pg jsonl FILE'. Default with --on-error skip: vec2pg-rejects.jsonl.",
        metavar="FILE",
    ),
    STRIP_NUL,
    Option(
        "lock_timeout",
        ("--lock-timeout",),
        "Give up (exit 7) when a statement waits this long for a lock another session holds "
        "on the target. Default: wait, saying for whom.",
        type=float,
        metavar="SECONDS",
        min=0.001,
    ),
    Option(
        "dry_run",
        ("--dry-run",),
        "Connect to the source and the target, print what would happen, write nothing.",
        type=bool,
        default=False,
    ),
    Option(
        "index_method",
        ("--index",),
        "After the load, build this pgvector index on every vector column, with the operator "
        "class of the source's metric, then ANALYZE.",
        choices=("hnsw", "ivfflat"),
    ),
    Option(
        "halfvec",
        ("--halfvec",),
        "Store dense vectors and multivectors as halfvec (16-bit floats) instead of vector: "
        "half the space, and indexable up to 4,000 dimensions instead of 2,000. Values keep "
        "about 3 significant digits; a value beyond +-65,504 stops the run.",
        type=bool,
        default=False,
    ),
    Option(
        "verify",
        ("--verify",),
        "After the run, compare source and table (counts, every id, a sample of records field "
        "by field); exit 8 if they differ.",
        type=bool,
        default=False,
    ),
    SAMPLE,
)
#: What only a complete source may do (not a rejects file).
COMPLETE_ONLY = {"prune", "replace", "verify", "sample"}
QUIET = Option(
    "quiet",
    ("--quiet", "-q"),
    "Print nothing but errors and the summary.",
    type=bool,
    default=False,
)
JSON = Option(
    "json_output",
    ("--json",),
    "Print one JSON object (the summary, or the error) on stdout.",
    type=bool,
    default=False,
)
DEBUG = Option("debug", ("--debug",), "Show tracebacks of errors.", type=bool, default=False)
OUTPUT = (QUIET, JSON, DEBUG)


def _typed(option: Option) -> tuple[Any, dict[str, Any]]:
    """The annotation and typer.Option settings of ``option``."""
    kind: Any = option.type
    settings: dict[str, Any] = {"help": option.help}
    if option.choices:
        kind = Enum(f"{option.name}_choice", {c: c for c in option.choices}, type=str)  # type: ignore[misc,no-redef]
        settings["case_sensitive"] = False
    if option.multiple:
        kind = list[kind]
    if option.default is None and option.type is not bool:
        kind = kind | None
        settings["show_default"] = False
    if option.type is not bool:
        settings["metavar"] = option.metavar or (
            "[" + "|".join(option.choices) + "]" if option.choices else "VALUE"
        )
    for name in ("envvar", "min", "max"):
        if getattr(option, name) is not None:
            settings[name] = getattr(option, name)
    return kind, settings


def _parameter(option: Option) -> inspect.Parameter:
    kind, settings = _typed(option)
    default = option.default
    if option.choices and default is not None:
        default = kind(default) if not option.multiple else default
    return inspect.Parameter(
        option.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(default, *option.flags, **settings),
        annotation=kind,
    )


def _command_function(
    spec: SourceSpec, options: Sequence[Option], run: Callable[[SourceSpec, dict[str, Any]], int]
) -> Callable[..., int]:
    """A command function for Typer: ``spec``'s argument, then ``options``."""
    collection = [spec.collection.name] if spec.collection is not None else []
    names = [spec.argument.name, *collection, *(option.name for option in options)]
    if len(set(names)) != len(names):
        raise ConfigError(f"source {spec.name!r} declares an option that vec2pg already has")
    argument = inspect.Parameter(
        spec.argument.name,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default=typer.Argument(..., metavar=spec.argument.metavar, help=spec.argument.help),
        annotation=str,
    )

    def command(**values: Any) -> int:
        output = _output()
        output.debug = output.debug or bool(values.get("debug"))
        output.json = bool(values.get("json_output"))
        for option in options:
            value = values[option.name]
            if isinstance(value, Enum):
                value = value.value
            if option.multiple:
                value = tuple(value or ())
            if option.convert is not None:
                value = (
                    tuple(map(option.convert, value)) if option.multiple else option.convert(value)
                )
            if option.secret:
                _secret(value)
            values[option.name] = value
        # Usage errors first: before the target, or the source, is waited on.
        spec.check_options(values[spec.argument.name], _source_options(spec, values))
        return _each_collection(spec, values, run)

    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [argument, *_collection_argument(spec), *map(_parameter, options)]
    )
    command.__doc__ = f"{spec.summary}\n\n{spec.description}"
    command.__name__ = spec.name
    return command


def _collection_argument(spec: SourceSpec) -> list[inspect.Parameter]:
    """The optional second argument of a source that has one (an index of a bucket)."""
    if spec.collection is None:
        return []
    return [
        inspect.Parameter(
            spec.collection.name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=typer.Argument(
                None,
                metavar=f"[{spec.collection.metavar}]",
                help=spec.collection.help,
                show_default=False,
            ),
            annotation=str | None,
        )
    ]


def _each_collection(
    spec: SourceSpec, values: dict[str, Any], run: Callable[[SourceSpec, dict[str, Any]], int]
) -> int:
    """``run`` the command once; or, for a source whose collection argument is left out (a
    bucket without an index), once per collection the source lists, each into a table of
    its own: the worst exit code of them. An error stops at the collection it happened in;
    the same command then resyncs the ones before and goes on."""
    if spec.collection is None or values[spec.collection.name] is not None:
        return run(spec, values)
    from vec2pg.reading import Retrier, RetryPolicy

    argument = values[spec.argument.name]
    retrier = Retrier(RetryPolicy(attempts=values["retries"]), None, 1)
    names = retrier.starting(spec.collections_of, argument, _source_options(spec, values))
    if values.get("table") is not None and len(names) > 1:
        shown = ", ".join(repr(name) for name in names[:5]) + (", ..." if len(names) > 5 else "")
        raise ConfigError(
            f"--table names one table, and {spec.name} {argument!r} holds {len(names)} "
            f"({shown}): name the {spec.collection.metavar} to copy, or leave --table out "
            "for a table each"
        )
    return max(run(spec, {**values, spec.collection.name: name}) for name in names)


def _migrate_options(spec: SourceSpec) -> list[Option]:
    own = [*spec.options, *([spec.namespaces] if spec.namespaces else [])]
    writing = [o for o in WRITING if spec.complete or o.name not in COMPLETE_ONLY]
    concurrency = replace(CONCURRENCY, default=spec.concurrency)
    return [*own, *TARGET, *SHAPE, concurrency, RETRIES, PROCESSES, *writing, *OUTPUT]


def _verify_options(spec: SourceSpec) -> list[Option]:
    own = [*spec.options, *([spec.namespaces] if spec.namespaces else [])]
    concurrency = replace(CONCURRENCY, default=spec.concurrency)
    strip_nul = replace(
        STRIP_NUL,
        help="The table was migrated with --strip-nul: compare metadata without NUL characters.",
    )
    shape = [option for option in SHAPE if option.name != "id_type"]
    return [*own, *TARGET, *shape, concurrency, RETRIES, strip_nul, SAMPLE, *OUTPUT]


def _epilog(spec: SourceSpec, verb: str = "") -> str | None:
    if not spec.examples:
        return None
    # "\b": click leaves the paragraph as it is instead of rewrapping it.
    lines = [f"  {example.replace('vec2pg ', f'vec2pg {verb}', 1)}" for example in spec.examples]
    return "Examples:\n\n\b\n" + "\n".join(lines)


class _Command(TyperCommand):
    """Help as a good command line's reads: ``Usage: vec2pg qdrant [OPTIONS] COLLECTION``,
    arguments by their names, with no Python types."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [name for name, _ in self._arguments(ctx)]

    def format_options(self, ctx: Any, formatter: Any) -> None:
        options = [
            record
            for param in self.get_params(ctx)
            if param.param_type_name == "option" and (record := param.get_help_record(ctx))
        ]
        for title, rows in (("Arguments", self._arguments(ctx)), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)

    def _arguments(self, ctx: Any) -> list[tuple[str, str]]:
        return [
            (param.metavar or (param.name or "").upper(), getattr(param, "help", None) or "")
            for param in self.get_params(ctx)
            if param.param_type_name == "argument" and not getattr(param, "hidden", False)
        ]


def _command_class(spec: SourceSpec) -> type[TyperCommand]:
    """A command class that takes the original vec2pg's form, ``migrate ARGUMENT A B C``."""

    class Command(_Command):
        def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
            return super().parse_args(ctx, _legacy(self, spec, args))

    return Command


def _legacy(command: Any, spec: SourceSpec, args: list[str]) -> list[str]:
    """``args`` with the original form's positional values after ``migrate ARGUMENT`` turned
    into the options they stand for; other arguments as they are."""
    if not spec.legacy or not args or args[0] != "migrate":
        return args
    takes_value = {
        flag
        for param in command.params
        if param.param_type_name == "option" and not param.is_flag and not param.count
        for flag in param.opts
    }
    positional: list[str] = []
    rest: list[str] = []
    position = 1
    while position < len(args):
        arg = args[position]
        if arg.startswith("-") and arg != "-":
            rest.append(arg)
            if "=" not in arg and arg in takes_value and position + 1 < len(args):
                position += 1
                rest.append(args[position])
        else:
            positional.append(arg)
        position += 1
    if not positional:
        return args  # "migrate" is the name of what to read
    names = [
        spec.argument.metavar,
        *(flag.lstrip("-").replace("-", "_").upper() for flag in spec.legacy),
    ]
    if len(positional) > len(names):
        raise ConfigError(f"too many arguments for: migrate {' '.join(names)}")
    given = zip(spec.legacy, positional[1:], strict=False)  # the rest may come from the env
    legacy = [part for flag, value in given for part in (flag, value)]
    return [positional[0], *rest, *legacy]


def _add_commands() -> None:
    for spec in registry().values():
        app.command(
            spec.name,
            short_help=spec.summary,
            epilog=_epilog(spec),
            no_args_is_help=True,
            cls=_command_class(spec),
        )(_command_function(spec, _migrate_options(spec), _migrate))
        if spec.complete:
            verify_app.command(
                spec.name,
                short_help=f"Compare a {spec.name} source with its table.",
                help=f"Compare {spec.argument.metavar} with the table it was migrated into: "
                "counts per namespace, every id on both sides, and a sample of records field "
                "by field. Exit 0 when they match, 8 when they differ.",
                epilog=_epilog(spec, "verify "),
                no_args_is_help=True,
                cls=_Command,
            )(_command_function(spec, _verify_options(spec), _verify_only))


# -- running them ----------------------------------------------------------------------------


def _source_options(spec: SourceSpec, values: dict[str, Any]) -> dict[str, Any]:
    options = {option.name: values[option.name] for option in spec.options}
    if spec.collection is not None:
        options[spec.collection.name] = values[spec.collection.name]
    return options


def _namespaces(spec: SourceSpec, values: dict[str, Any]) -> tuple[str, ...]:
    return tuple(values[spec.namespaces.name]) if spec.namespaces else ()


def _events(quiet: bool) -> Any:
    from vec2pg.progress import PlainEvents, QuietEvents, RichEvents

    if quiet:
        return QuietEvents()
    return RichEvents() if sys.stderr.isatty() else PlainEvents()


def _open(spec: SourceSpec, values: dict[str, Any], events: Any) -> Any:
    """The source of a command, saying so when opening it takes a while (a large local
    storage loads every point first)."""
    argument = values[spec.argument.name]
    with _slow(events, f"opening {spec.name} {argument!r}"):
        return spec.open(argument, _source_options(spec, values))


@contextmanager
def _slow(events: Any, doing: str, after: float = 1.0) -> Iterator[None]:
    """Say ``doing...`` (once) if it has not finished after ``after`` seconds."""
    timer = threading.Timer(after, events.note, [f"{doing}..."])
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _target(values: dict[str, Any]) -> str:
    from vec2pg.postgres.target import dsn_password, resolve_dsn

    dsn = resolve_dsn(values["dsn"], embedded=values["embedded"])
    _secret(dsn_password(dsn))
    return dsn


def _migrate(spec: SourceSpec, values: dict[str, Any]) -> int:
    """Run one migration (or its dry run); return the exit code."""
    from vec2pg.pipeline import Options, RetryPolicy, migrate, plan
    from vec2pg.postgres.sink import PostgresSink, SyncOptions
    from vec2pg.progress import plan_text
    from vec2pg.sources.base import VerifiableSource
    from vec2pg.verify import verify

    sync = SyncOptions(
        prune=values.get("prune", False),
        replace=values.get("replace", False),
        restart=values["restart"],
        rejects=values["rejects"],
        strip_nul=values["strip_nul"],
        on_error=values["on_error"],
    )
    dsn = _target(values)
    options = Options(
        concurrency=values["concurrency"],
        retry=RetryPolicy(attempts=values["retries"]),
        namespaces=_namespaces(spec, values),
        processes=values["processes"],
        flat_memory=sys.platform.startswith("linux"),
    )
    as_json, dry_run = values["json_output"], values["dry_run"]
    events = _events(values["quiet"] or as_json or dry_run)
    shape = _shape(values)
    with ExitStack() as stack:
        stack.callback(events.stop)
        # The target first: a wrong password is said at once, not after a slow source opens.
        with _slow(events, f"connecting to PostgreSQL at {mask_dsn(dsn)}"):
            sink = stack.enter_context(
                PostgresSink(
                    dsn,
                    table=values["table"],
                    commit_rows=values["commit_rows"],
                    sync=sync,
                    halfvec=values["halfvec"],
                    index=values["index_method"],
                    lock_timeout=values["lock_timeout"],
                    id_type=values["id_type"],
                    **shape,
                )
            )
        source = stack.enter_context(closing(_open(spec, values, events)))
        worst = 0
        for table, namespaces in _tables(source, values, options):
            sink.table = table
            run = dataclasses.replace(options, namespaces=namespaces)
            if dry_run:
                report = plan(source, sink, run)
                typer.echo(json.dumps(report) if as_json else plan_text(report))
                continue
            summary = migrate(source, sink, run, events)
            if values.get("verify"):
                summary.verify = verify(
                    cast(VerifiableSource, source),
                    dsn,
                    table=table,
                    namespaces=namespaces,
                    sample=values["sample"],
                    concurrency=options.concurrency,
                    retry=options.retry,
                    events=events,
                    strip_nul=sync.strip_nul,
                    **shape,
                )
            worst = max(worst, _report(summary, values, dsn, sync))
    return worst


def _shape(values: dict[str, Any]) -> dict[str, Any]:
    """The table's shape, as PostgresSink and verify take it: schema, layout, vector (verify
    reads the id type from the table)."""
    layout = values.get("layout") or "vec2pg"
    return {
        "schema": values["schema"] or ("vecs" if layout == "vecs" else "vec2pg"),
        "layout": layout,
        "vector": values.get("vector"),
    }


def _tables(source: Any, values: dict[str, Any], options: Any) -> list[tuple[str | None, Any]]:
    """The runs of a command: one, into ``--table``; or, for a vecs collection of a source
    with namespaces, one a namespace (vecs's ids are unique alone), each into the table
    :func:`vec2pg.postgres.layout.vecs_table` names."""
    if values.get("layout") != "vecs":
        return [(values["table"], options.namespaces)]
    from vec2pg.postgres.layout import vecs_table
    from vec2pg.reading import Retrier, select_namespaces

    info = Retrier(options.retry, None, 1).starting(source.describe)
    if not info.namespaced:
        return [(values["table"], options.namespaces)]
    selected = select_namespaces(info, options.namespaces)
    if values["table"] is not None and len(selected) > 1:
        raise ConfigError(
            f"--table names one vecs collection, and {info.kind} {info.collection!r} has "
            f"{len(selected)} namespaces: name one with --namespace, or leave --table out for "
            "a collection each"
        )
    base = values["table"] or info.collection
    return [(vecs_table(base, ns.name, info.default_namespace), (ns.name,)) for ns in selected]


def _report(summary: Any, values: dict[str, Any], dsn: str, sync: Any) -> int:
    """Print a run's summary (and what to do about what it found); return its exit code."""
    from vec2pg.progress import summary_text

    if values["json_output"]:
        typer.echo(json.dumps(summary.as_dict()))
    else:
        typer.echo(summary_text(summary))
        if summary.verify is not None:
            typer.echo(summary.verify.text())
        if values["embedded"]:
            typer.echo(f"query it: psql \"{dsn}\" -c 'SELECT count(*) FROM {summary.target}'")
            typer.echo("the embedded PostgreSQL keeps running: vec2pg embedded stop stops it")
    rejected, stale = summary.total("rejected"), summary.total("stale")
    if rejected:
        print(
            f"vec2pg: {rejected:,} records were skipped into {sync.rejects}: "
            "fix them and load them with 'vec2pg jsonl'",
            file=sys.stderr,
        )
    elif stale:
        print(
            f"vec2pg: {summary.target} holds {stale:,} rows the source no "
            "longer has: run with --prune to delete them",
            file=sys.stderr,
        )
    return int(summary.exit_code)


def _verify_only(spec: SourceSpec, values: dict[str, Any]) -> int:
    """Compare a source with its table (``vec2pg verify <source>``); return the exit code."""
    from vec2pg.pipeline import RetryPolicy
    from vec2pg.postgres.connection import check_target
    from vec2pg.sources.base import VerifiableSource
    from vec2pg.verify import verify

    dsn = _target(values)
    as_json = values["json_output"]
    events = _events(values["quiet"] or as_json)
    with _slow(events, f"connecting to PostgreSQL at {mask_dsn(dsn)}"):
        check_target(dsn)  # before a slow source: a wrong password is said at once
    with closing(_open(spec, values, events)) as source:
        report = verify(
            cast(VerifiableSource, source),
            dsn,
            table=values["table"],
            namespaces=_namespaces(spec, values),
            sample=values["sample"],
            concurrency=values["concurrency"],
            retry=RetryPolicy(attempts=values["retries"]),
            events=events,
            strip_nul=values["strip_nul"],
            **_shape(values),
        )
    typer.echo(json.dumps(report.as_dict()) if as_json else report.text())
    return int(report.exit_code)


@app.command(
    no_args_is_help=True,
    cls=_Command,
    short_help="Show a target's rows, last run and saved progress.",
)
def status(
    table: str = typer.Argument(
        ..., metavar="TABLE", help="The target table (the collection's name).", show_default=False
    ),
    dsn: str | None = typer.Option(
        None,
        "--dsn",
        metavar="DSN",
        help="PostgreSQL connection string. Default: $POSTGRES_CONNECTION_STRING, then "
        "$DATABASE_URL.",
        show_default=False,
    ),
    embedded: bool = typer.Option(
        False, "--embedded", help="Read the embedded PostgreSQL's target."
    ),
    schema: str = typer.Option("vec2pg", "--schema", metavar="NAME", help="Target schema."),
    json_output: bool = typer.Option(
        False, "--json", help="Print one JSON object (the status, or the error) on stdout."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
) -> int:
    """Show a target's rows, its last completed run and any interrupted one.

    Exits 8 when an interrupted run waits to be resumed (the same command resumes it), 5
    when vec2pg has never run on the target, and 0 otherwise.
    """
    from vec2pg.postgres.sink import target_status

    output = _output()
    output.debug, output.json = output.debug or debug, json_output
    report = target_status(_target({"dsn": dsn, "embedded": embedded}), schema, table)
    if json_output:
        typer.echo(json.dumps(report))
    else:
        typer.echo(_status_text(report))
    if report["unfinished"] is not None:
        return int(ExitCode.DIFFERS)
    return int(ExitCode.TARGET_STATE) if report["last_complete"] is None else 0


#: A run's mode in plain words.
_MODES = {"load": "first load", "merge": "resync", "replace": "replacement"}


def _status_text(report: dict[str, Any]) -> str:
    rows = "does not exist" if report["rows"] is None else f"holds {report['rows']:,} rows"
    lines = [f"{report['table']} {rows}"]
    last = report["last_complete"]
    if last is None:
        lines.append("  no completed vec2pg run")
    else:
        done = last["summary"] or {}
        lines.append(
            f"  last completed run: a {_MODES.get(last['mode'], last['mode'])}, finished "
            f"{_when(last['finished'])}: {done.get('read', 0):,} records read, "
            f"{done.get('inserted', 0):,} inserted, {done.get('updated', 0):,} updated, "
            f"{done.get('deleted', 0):,} deleted"
        )
    unfinished = report["unfinished"]
    if unfinished is None:
        lines.append("  no interrupted run")
    else:
        chains = unfinished["chains"]
        parts = (
            f" (read in {chains['total']} parts, {chains['done']} of them to the end)"
            if chains["total"] > 1
            else ""
        )
        lines.append(
            f"  an interrupted {_MODES.get(unfinished['mode'], unfinished['mode'])}, started "
            f"{_when(unfinished['started'])}: {unfinished['records']:,} records committed"
            f"{parts}; the same command resumes it"
        )
        if unfinished["error"]:
            lines.append(f"  it stopped: {unfinished['error']}")
    return "\n".join(lines)


def _when(iso: str | None) -> str:
    """A timestamp of the run log as a person reads it: to the second, with its zone."""
    if not iso:
        return "(unknown)"
    import datetime

    moment = datetime.datetime.fromisoformat(iso)
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip() or iso


embedded_app = typer.Typer(
    name="embedded",
    help="The embedded PostgreSQL with pgvector that --embedded starts and leaves running.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(embedded_app, short_help="Show or stop the embedded PostgreSQL.")


@embedded_app.command("show", cls=_Command)
def embedded_show(
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> int:
    """Say whether the embedded PostgreSQL runs, where its data is, and how to connect."""
    from vec2pg.postgres.target import embedded_state

    state = embedded_state()
    if json_output:
        typer.echo(json.dumps(state))
    elif state["running"]:
        typer.echo(
            f"the embedded PostgreSQL is running (pid {state['pid']}), data in {state['data_dir']}"
        )
        typer.echo(f'connect: psql "{state["dsn"]}"')
        typer.echo("stop it: vec2pg embedded stop")
    else:
        typer.echo(f"the embedded PostgreSQL is not running; its data is in {state['data_dir']}")
        typer.echo("vec2pg <source> ... --embedded starts it")
    return 0


@embedded_app.command("stop", cls=_Command)
def embedded_stop() -> int:
    """Stop the embedded PostgreSQL (its data stays; the next --embedded run starts it)."""
    from vec2pg.postgres.target import embedded_data_dir, stop_embedded

    stopped = stop_embedded()
    where = embedded_data_dir()
    typer.echo(
        f"stopped the embedded PostgreSQL (data in {where})"
        if stopped
        else f"the embedded PostgreSQL was not running (data in {where})"
    )
    return 0


verify_app = typer.Typer(
    name="verify",
    help="Compare a source with its table: counts per namespace, every id on both sides, and "
    "a sample of records field by field. Exit 0 when they match, 8 when they differ.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(verify_app, short_help="Compare a source with its table.")
_add_commands()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return (and, as a script, exit with) the exit code."""
    from typer.exceptions import Abort, Exit, TyperException

    args = list(sys.argv[1:] if argv is None else argv)
    output = _Output(debug=os.environ.get("VEC2PG_DEBUG") == "1")
    token = _OUTPUT.set(output)
    previous = _on_sigterm(output)
    try:
        command = typer.main.get_command(app)
        result = command.main(args=args, prog_name="vec2pg", standalone_mode=False)
        if result == ExitCode.INTERRUPTED:
            # Typer turns Ctrl-C into this exit code without a word (no command returns
            # it): say it, on stderr and in --json's error object, as for any failure.
            return _stopped(output)
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
        return _stopped(output)
    except Vec2pgError as exc:
        if output.debug:
            import traceback

            traceback.print_exc()
        return _fail(str(exc), exc.exit_code, output)
    except KeyboardInterrupt:
        return _stopped(output)
    except Exception as exc:
        if output.debug:
            import traceback

            traceback.print_exc()
        reason = f"{type(exc).__name__}: {exc}"
        hint = "" if output.debug else " (run with --debug for the traceback)"
        return _fail(f"internal error: {reason}{hint}", ExitCode.INTERNAL, output)
    finally:
        _OUTPUT.reset(token)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _on_sigterm(output: _Output) -> Any:
    """Stop on SIGTERM (cron's timeout, systemd, Kubernetes) as on Ctrl-C: the run raises
    :class:`~vec2pg.errors.TerminateSignal` in the main thread, rolls back the transaction
    in progress, ends its decoding processes and says what is committed. A second SIGTERM
    while it does so is ignored. Returns the handler it replaced (None: none replaced)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum: int, frame: Any) -> None:
        if not output.terminated:
            output.terminated = True
            raise TerminateSignal()

    return signal.signal(signal.SIGTERM, terminate)


def _stopped(output: _Output) -> int:
    """Ctrl-C or SIGTERM before a run began (a run says more, as Interrupted)."""
    if output.terminated:
        return _fail("terminated (SIGTERM)", ExitCode.TERMINATED, output)
    return _fail("interrupted", ExitCode.INTERRUPTED, output)


def _fail(message: str, code: ExitCode, output: _Output) -> int:
    message = redact(message)
    if output.json:
        print(json.dumps({"error": message, "exit_code": int(code)}))
    print(f"vec2pg: error: {message}", file=sys.stderr)
    return int(code)
