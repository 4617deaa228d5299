"""The command line as a user meets it: help, version, errors, exit codes, secrets."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import PINECONE_KEY as KEY

from vec2pg import __version__
from vec2pg.cli import app, main
from vec2pg.errors import ExitCode
from vec2pg.postgres.target import mask_dsn

COMMANDS = sorted(c.name or c.callback.__name__ for c in app.registered_commands if c.callback)


def test_every_command_has_help_and_a_docstring(capsys) -> None:
    assert COMMANDS, "no commands registered"
    for command in COMMANDS:
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert f"Usage: vec2pg {command} [OPTIONS]" in out
        assert "--dsn" in out and "--json" in out
    for info in app.registered_commands:
        assert info.callback is not None and info.callback.__doc__


def test_version(capsys) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"vec2pg {__version__}"


def test_python_dash_m_works() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vec2pg", "--version"], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, f"vec2pg {__version__}")


def test_no_target_is_one_line_naming_the_three_ways(tmp_path, capsys) -> None:
    code = main(["qdrant", "docs", "--path", str(tmp_path)])

    assert code == ExitCode.USAGE
    assert capsys.readouterr().err.strip() == (
        "vec2pg: error: no PostgreSQL target: pass --dsn, set POSTGRES_CONNECTION_STRING "
        "(or DATABASE_URL), or use --embedded"
    )


def test_no_target_with_json_prints_a_json_error(tmp_path, capsys) -> None:
    code = main(["qdrant", "docs", "--path", str(tmp_path), "--json"])

    assert code == ExitCode.USAGE
    error = json.loads(capsys.readouterr().out)
    assert error["exit_code"] == 2
    assert error["error"].startswith("no PostgreSQL target")


def test_dsn_and_embedded_together_are_refused(tmp_path, capsys) -> None:
    code = main(
        ["qdrant", "docs", "--path", str(tmp_path), "--dsn", "postgresql://x", "--embedded"]
    )
    assert code == ExitCode.USAGE
    assert (
        capsys.readouterr().err.strip()
        == "vec2pg: error: give either --dsn or --embedded, not both"
    )


def test_neither_url_nor_path_is_refused(capsys) -> None:
    assert main(["qdrant", "docs", "--dsn", "postgresql://localhost/x"]) == ExitCode.USAGE
    assert capsys.readouterr().err.strip() == (
        "vec2pg: error: name one Qdrant to read from: --url (or QDRANT_URL) for a server, "
        "or --path for a local Qdrant storage folder"
    )


def test_an_unreachable_database_is_a_target_error_without_the_password(tmp_path, capsys) -> None:
    from qdrant_data import open_local, seed_unnamed

    client = open_local(tmp_path / "q")
    seed_unnamed(client, "docs", 3)
    client.close()
    dsn = "postgresql://alice:pa55-w0rd-xyz@127.0.0.1:1/db"

    code = main(["qdrant", "docs", "--path", str(tmp_path / "q"), "--dsn", dsn, "--debug"])

    assert code == ExitCode.TARGET
    err = capsys.readouterr().err
    assert "pa55-w0rd-xyz" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        "vec2pg: error: cannot connect to PostgreSQL at postgresql://alice:***@127.0.0.1:1/db: "
    )


def test_a_malformed_dsn_is_a_target_error(tmp_path, capsys) -> None:
    from qdrant_data import open_local, seed_unnamed

    client = open_local(tmp_path / "q")
    seed_unnamed(client, "docs", 3)
    client.close()

    code = main(
        ["qdrant", "docs", "--path", str(tmp_path / "q"), "--dsn", "not a dsn password=hunter2"]
    )

    assert code == ExitCode.TARGET
    err = capsys.readouterr().err.strip()
    assert "hunter2" not in err
    assert err.startswith("vec2pg: error: invalid PostgreSQL DSN not a dsn password=***: ")


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("postgresql://u:secret@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgres://u@h/db", "postgres://u@h/db"),
        ("postgresql://u:@/postgres?host=/tmp/x", "postgresql://u:@/postgres?host=/tmp/x"),
        ("host=h user=u password=secret dbname=d", "host=h user=u password=*** dbname=d"),
        ("host=h password='se cret' dbname=d", "host=h password=*** dbname=d"),
        ("postgresql://h/db?password=secret&x=1", "postgresql://h/db?password=***&x=1"),
    ],
)
def test_mask_dsn(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked


def test_ctrl_c_is_exit_130_with_one_line_and_a_json_error(
    target, tmp_path, monkeypatch, capsys
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("vec2pg.pipeline.migrate", interrupted)

    code = target.cli("pinecone", "idx", "--host", "http://127.0.0.1:9", "--api-key", KEY, "--json")

    assert code == ExitCode.INTERRUPTED == 130
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"error": "interrupted", "exit_code": 130}
    assert captured.err.strip().splitlines()[-1] == "vec2pg: error: interrupted"
