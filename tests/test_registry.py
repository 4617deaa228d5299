"""The source registry: commands built from it, plugins through its entry-point group, and
one line for a source whose SDK is not installed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vec2pg.cli import main
from vec2pg.errors import ConfigError, ExitCode
from vec2pg.sources import QDRANT, Argument, SourceSpec, registry

PLUGIN = '''
"""A source package of someone else's: records made up in memory."""

import numpy as np

from vec2pg.records import Metric, Namespace, Record, SourceInfo, VectorField, VectorKind
from vec2pg.sources import Argument, Option, SourceSpec
from vec2pg.sources.base import WHOLE, Page


class MemorySource:
    def __init__(self, collection, *, count):
        self.collection = collection
        self.count = count

    def describe(self):
        return SourceInfo(
            kind="memory",
            collection=self.collection,
            location="memory",
            fields=(VectorField("", VectorKind.DENSE, 3, Metric.COSINE),),
            namespaces=(Namespace("", self.count),),
            namespaced=False,
        )

    def partitions(self, namespace, count, want, call):
        return (WHOLE,)

    def _records(self, ids):
        return [Record(i, {"": np.full(3, int(i) + 1, dtype=np.float32)}, {"n": int(i)}) for i in ids]

    def page(self, namespace, partition, cursor):
        start = int(cursor or 0)
        end = min(start + 4, self.count)
        ids = [str(i) for i in range(start, end)]
        return Page(
            load=lambda: self._records(ids),
            next_cursor=end if end < self.count else None,
            size=len(ids),
            ids=ids,
        )

    page_ids = page

    def fetch(self, namespace, ids):
        return self._records([i for i in ids if i.isdigit() and int(i) < self.count])

    def close(self):
        pass


SPEC = SourceSpec(
    name="memory",
    summary="Copy made-up records into PostgreSQL.",
    description="A plugin's source, added through the vec2pg.sources entry points.",
    argument=Argument("collection", "COLLECTION", "What to call the records."),
    factory="vec2pg_memory:MemorySource",
    options=(Option("count", ("--count",), "How many records.", type=int, default=5, metavar="N"),),
    examples=("vec2pg memory things --count 10 --dsn postgresql://...",),
)
'''


def install_plugin(folder: Path, entry_points: str) -> dict[str, str]:
    """A package and its distribution metadata in ``folder``, as pip would install them;
    the environment that puts it on the path."""
    (folder / "vec2pg_memory.py").write_text(PLUGIN)
    dist = folder / "vec2pg_memory-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vec2pg-memory\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(folder), env.get("PYTHONPATH", "")])
    return env


def vec2pg(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vec2pg", *args], env=env, capture_output=True, text=True
    )


def test_a_plugin_adds_a_source_through_the_entry_point_group(tmp_path, target) -> None:
    env = install_plugin(tmp_path, "[vec2pg.sources]\nmemory = vec2pg_memory:SPEC\n")

    listed = vec2pg(env, "--help")
    helped = vec2pg(env, "memory", "--help")
    ran = vec2pg(
        env,
        "memory",
        "things",
        "--count",
        "7",
        "--dsn",
        target.dsn,
        "--schema",
        target.schema,
        "--json",
    )
    checked = vec2pg(
        env,
        "verify",
        "memory",
        "things",
        "--count",
        "7",
        "--dsn",
        target.dsn,
        "--schema",
        target.schema,
    )

    assert re.search(r"^\s*memory\s+Copy made-up records into PostgreSQL\.$", listed.stdout, re.M)
    assert helped.returncode == 0
    assert "Usage: vec2pg memory [OPTIONS] COLLECTION" in helped.stdout
    assert "--count N" in helped.stdout and "--dsn DSN" in helped.stdout
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["written"] == 7
    assert target.query(f'SELECT count(*) FROM "{target.schema}".things') == [(7,)]
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip().splitlines()[-1].startswith("OK: the table matches the source")


def test_a_plugin_that_fails_to_load_breaks_no_other_command(tmp_path) -> None:
    env = install_plugin(tmp_path, "[vec2pg.sources]\nbroken = vec2pg_no_such_module:SPEC\n")

    done = vec2pg(env, "qdrant", "--help")

    assert done.returncode == 0
    assert "Usage: vec2pg qdrant [OPTIONS] COLLECTION" in done.stdout
    assert done.stderr.strip() == (
        "vec2pg: warning: the source plugin 'vec2pg_no_such_module:SPEC' failed to load "
        "(ModuleNotFoundError: No module named 'vec2pg_no_such_module'); skipped"
    )


def test_a_source_whose_sdk_is_missing_says_what_to_install() -> None:
    spec = SourceSpec(
        name="nosdk",
        summary="",
        description="",
        argument=Argument("collection", "COLLECTION", ""),
        factory="vec2pg.sources.qdrant:QdrantSource",
        extra="nosdk",
        requires=("vec2pg_test_no_such_sdk",),
    )
    with pytest.raises(ConfigError) as caught:
        spec.open("docs", {})
    assert str(caught.value) == (
        "vec2pg nosdk needs vec2pg_test_no_such_sdk: pip install 'vec2pg[nosdk]'"
    )


def test_every_source_has_a_command_and_a_verify_command(capsys) -> None:
    for spec in registry().values():
        assert main([spec.name, "--help"]) == 0
        usage = capsys.readouterr().out
        assert f"Usage: vec2pg {spec.name} [OPTIONS] {spec.argument.metavar}" in usage
        if spec.complete:
            assert main(["verify", spec.name, "--help"]) == 0
            assert f"Usage: vec2pg verify {spec.name} [OPTIONS]" in capsys.readouterr().out


def test_verify_help_shows_only_what_verify_uses(capsys) -> None:
    assert main(["verify", "qdrant", "--help"]) == 0
    text = capsys.readouterr().out

    for unused in (
        "--prune",
        "--replace",
        "--index",
        "--halfvec",
        "--dry-run",
        "--commit-rows",
        "--restart",
        "--on-error",
        "--rejects",
        "--verify",
        "--processes",
    ):
        assert unused not in text, unused
    for used in (
        "--url",
        "--api-key",
        "--path",
        "--dsn",
        "--schema",
        "--table",
        "--sample",
        "--strip-nul",
        "--json",
        "--quiet",
        "--debug",
    ):
        assert used in text, used


def test_verify_refuses_the_migration_only_options(capsys) -> None:
    code = main(["verify", "qdrant", "docs", "--path", ".", "--dry-run"])

    assert code == 2
    assert "No such option: --dry-run" in capsys.readouterr().err


def test_debug_is_read_from_the_command_not_from_the_raw_arguments(tmp_path, capsys) -> None:
    """--debug is the command's option: a table named "--debug" does not turn it on."""
    args = ["qdrant", "docs", "--path", str(tmp_path), "--dsn", "postgresql://x"]

    assert main([*args, "--debug"]) == ExitCode.TARGET
    assert "Traceback (most recent call last)" in capsys.readouterr().err
    assert main([*args, "--table", "--debug"]) == ExitCode.TARGET
    assert "Traceback" not in capsys.readouterr().err


def test_the_registry_names_the_extra_of_each_built_in_source() -> None:
    assert QDRANT.extra == "qdrant" and QDRANT.requires == ("qdrant_client",)
    assert {spec.name for spec in registry().values()} >= {"qdrant", "pinecone", "jsonl"}


def test_every_source_names_an_extra_that_pip_knows_and_the_test_extra_installs() -> None:
    """``pip install 'vec2pg[<extra>]'``, as the error for a missing SDK says, is a real
    extra; and ``[test]`` (through ``[all]``) installs every one of them."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    named = {spec.extra for spec in registry().values() if spec.extra}
    (everything,) = extras["all"]
    installed = set(everything.removeprefix("vec2pg[").removesuffix("]").split(","))

    assert named <= extras.keys()
    assert "vec2pg[all]" in extras["test"]
    # An extra that [all] leaves out requires only what [all] installs (milvus: pymilvus,
    # which milvus-lite requires too).
    covered = {req for extra in installed for req in extras[extra]}
    for extra in named - installed:
        assert set(extras[extra]) <= covered, extra
