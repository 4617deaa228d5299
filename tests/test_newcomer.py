"""What a newcomer meets (issue 12): the version, a fast --help, the embedded server's
commands, start-up that fails fast, and the resume story told in plain words."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import pytest

from vec2pg import __version__
from vec2pg.cli import main
from vec2pg.errors import ExitCode


def test_the_version_is_the_package_metadatas_and_after_the_original_vec2pg() -> None:
    assert version("vec2pg") == __version__
    year, month, *_ = map(int, __version__.split("."))
    assert (year, month) > (2024, 6)  # PyPI's vec2pg 2024.6.0: pip must pick this one


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_flags(flag, capsys) -> None:
    assert main([flag]) == 0
    assert capsys.readouterr().out.strip() == f"vec2pg {__version__}"


def test_help_imports_nothing_heavy() -> None:
    """numpy, psycopg and the SDKs load when a run needs them, not for --help."""
    probe = (
        "import sys; from vec2pg.cli import main; main(['--help']); main(['qdrant', '--help']); "
        "print(sorted(m for m in ('numpy', 'psycopg', 'qdrant_client', 'pinecone', 'boto3') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_help_reads_like_a_good_command_lines(capsys) -> None:
    assert main(["--help"]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"^  qdrant +Copy a Qdrant collection into PostgreSQL\.$", listing, re.M)
    commands = listing.split("Commands:")[1]
    assert "..." not in commands  # no summary cut off
    assert main(["qdrant", "--help"]) == 0
    text = capsys.readouterr().out
    assert "Usage: vec2pg qdrant [OPTIONS] COLLECTION\n" in text
    assert "<str>" not in text and "<int" not in text and "{" not in text.split("\n")[0]
    assert "  --url URL " in text and "  --page-size N " in text
    assert "Examples:" in text
    assert "  vec2pg qdrant docs --url http://localhost:6333 --dsn postgresql://" in text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_refused_address_at_the_start_fails_after_one_retry(target, capsys) -> None:
    """A wrong address is far likelier at the start than an outage: two tries, not six."""
    url = f"http://127.0.0.1:{free_port()}"

    code = target.cli("qdrant", "docs", "--url", url)

    assert code == ExitCode.SOURCE
    err = capsys.readouterr().err.strip().splitlines()
    assert sum("retrying" in line for line in err) == 1
    assert err[-1].startswith(f"vec2pg: error: Qdrant at {url} did not answer: ConnectError")


def test_the_target_is_checked_before_the_source_is_opened(tmp_path, capsys) -> None:
    """A wrong DSN is said at once, not after a large local storage has been read: here the
    storage is locked by another client, and the error is still the target's."""
    from qdrant_data import open_local, seed_unnamed

    holder = open_local(tmp_path / "q")
    seed_unnamed(holder, "docs", 3)
    try:
        code = main(
            [
                "qdrant",
                "docs",
                "--path",
                str(tmp_path / "q"),
                "--dsn",
                f"postgresql://u:pw@127.0.0.1:{free_port()}/db",
            ]
        )
    finally:
        holder.close()

    assert code == ExitCode.TARGET
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith("vec2pg: error: cannot connect to PostgreSQL at postgresql://u:***@127.0.0.1:")
    )


def test_the_embedded_server_can_be_shown_and_stopped(tmp_path) -> None:
    from qdrant_data import open_local, seed_unnamed

    folder = Path(tempfile.mkdtemp(prefix="vec2pg-embedded-"))
    folder.chmod(0o755)  # the embedded server runs as user pgserver when started as root
    client = open_local(tmp_path / "q")
    seed_unnamed(client, "docs", 5)
    client.close()
    env = {**os.environ, "VEC2PG_EMBEDDED_DIR": str(folder / "pgdata")}

    def vec2pg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vec2pg", *args], env=env, capture_output=True, text=True
        )

    try:
        ran = vec2pg("qdrant", "docs", "--path", str(tmp_path / "q"), "--embedded")
        running = json.loads(vec2pg("embedded", "show", "--json").stdout)
        stopped = vec2pg("embedded", "stop")
        after = json.loads(vec2pg("embedded", "show", "--json").stdout)
        again = vec2pg("embedded", "stop")
    finally:
        vec2pg("embedded", "stop")
        shutil.rmtree(folder, ignore_errors=True)

    assert ran.returncode == 0, ran.stderr
    assert "the embedded PostgreSQL keeps running: vec2pg embedded stop stops it" in ran.stdout
    assert running["running"] and running["dsn"].startswith(
        "postgresql://postgres:@/postgres?host="
    )
    assert stopped.returncode == 0
    assert (
        stopped.stdout.strip() == f"stopped the embedded PostgreSQL (data in {folder / 'pgdata'})"
    )
    assert not after["running"] and after["dsn"] is None
    assert again.stdout.strip().startswith("the embedded PostgreSQL was not running")
