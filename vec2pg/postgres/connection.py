"""Connecting to PostgreSQL, and turning psycopg's errors into vec2pg's, in one place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg

from vec2pg.errors import ConfigError, LockTimeout, TargetError, TargetUnavailable
from vec2pg.masking import mask_dsn

if TYPE_CHECKING:
    from psycopg import Connection

#: Server-side keepalives (user-settable since PostgreSQL 9.x; ignored on Unix sockets).
SESSION_OPTIONS = (
    "-c tcp_keepalives_idle=60 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=6"
    # Adding the key of a large table, a merge or a prune may take longer than a role's
    # statement_timeout allows: that would make the run fail every night, at the end.
    " -c statement_timeout=0"
)
#: Seconds to wait for a connection to be established.
CONNECT_TIMEOUT = 15
#: How often the server checks, during a statement, that vec2pg is still connected.
CLIENT_CHECK = "5s"
#: SQLSTATEs of a connection that is gone (besides class 08, connection exceptions):
#: admin_shutdown (pg_terminate_backend), crash_shutdown, cannot_connect_now.
_CONNECTION_LOST = {"57P01", "57P02", "57P03"}


#: Supabase's transaction pooler (Supavisor, and the dedicated PgBouncer) listens here.
TRANSACTION_POOLER_PORT = "6543"
POOLER_ADVICE = (
    "vec2pg needs a session of its own (an advisory lock, a temporary table, COPY across "
    "statements), which a transaction pooler does not keep: connect directly (Supabase: "
    "db.<project-ref>.supabase.co, port 5432) or through the session pooler (port 5432 of "
    "the pooler's host)"
)


def check_not_transaction_pooler(dsn: str) -> None:
    """Stop, before connecting, at a DSN that names Supabase's transaction pooler."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return  # open_connection says what is wrong with it
    if str(params.get("port", "")).split(",")[0] == TRANSACTION_POOLER_PORT:
        raise ConfigError(
            f"{mask_dsn(dsn)} is a transaction pooler (port {TRANSACTION_POOLER_PORT}): "
            f"{POOLER_ADVICE}"
        )


def open_connection(dsn: str, application_name: str = "vec2pg") -> Connection[Any]:
    """Connect to ``dsn``; failures become TargetError (TargetUnavailable when the server
    did not answer: a run retries those), without the password."""
    from psycopg.conninfo import conninfo_to_dict

    check_not_transaction_pooler(dsn)
    try:
        # The DSN's own options (a search_path, a role) stay; ours come after them.
        # If this machine dies, the server notices within about two minutes and frees
        # the run's advisory lock, so tomorrow's cron run is not locked out.
        own = conninfo_to_dict(dsn).get("options")
        options = f"{own} {SESSION_OPTIONS}" if own else SESSION_OPTIONS
        conn = psycopg.connect(
            dsn,
            application_name=application_name,
            connect_timeout=CONNECT_TIMEOUT,
            options=options,
        )
        _check_client_connection(conn)
        return conn
    except psycopg.OperationalError as exc:
        if "unsupported startup parameter" in str(exc):  # PgBouncer's own answer
            raise ConfigError(
                f"{mask_dsn(dsn)} is a connection pooler (PgBouncer: {first_line(exc)}): "
                f"{POOLER_ADVICE}"
            ) from exc
        raise TargetUnavailable(
            f"cannot connect to PostgreSQL at {mask_dsn(dsn)}: {first_line(exc)}"
        ) from exc
    except psycopg.ProgrammingError as exc:  # a malformed DSN
        raise TargetError(f"invalid PostgreSQL DSN {mask_dsn(dsn)}: {first_line(exc)}") from exc


def _check_client_connection(conn: Connection[Any]) -> None:
    """Have the server notice within seconds that vec2pg is gone, even while a statement
    of its waits for a lock: a run killed then would otherwise keep its advisory lock
    until the lock it waited for was released, and the next run would be refused for a
    run that no longer exists (PostgreSQL 14 and later, where the system allows it)."""
    if conn.info.server_version < 140000:
        return
    try:
        conn.execute(
            "SELECT set_config('client_connection_check_interval', %s, false)", [CLIENT_CHECK]
        )
        conn.commit()
    except psycopg.Error:  # not on this server's system
        conn.rollback()


def check_target(dsn: str) -> None:
    """Connect to ``dsn`` and leave: a wrong address or password is said at once."""
    open_connection(dsn).close()


def connection_lost(exc: psycopg.Error, conn: Connection[Any] | None = None) -> bool:
    """Whether ``exc`` means the connection is gone (not a statement that failed on it: a
    cancelled statement or a full disk leave the connection usable)."""
    if conn is not None and conn.broken:
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _CONNECTION_LOST


@contextmanager
def translate_errors(
    dsn: str | None, doing: str, conn: Connection[Any] | None = None
) -> Iterator[None]:
    """Turn psycopg's errors into vec2pg's, naming what we were doing."""
    try:
        yield
    except psycopg.errors.LockNotAvailable as exc:
        raise LockTimeout(
            f"gave up waiting for a lock while {doing} (--lock-timeout): {first_line(exc)}"
        ) from exc
    except psycopg.Error as exc:
        if connection_lost(exc, conn):
            at = f" at {mask_dsn(dsn)}" if dsn else ""
            raise TargetUnavailable(
                f"lost the connection to PostgreSQL{at} while {doing}: {first_line(exc)}"
            ) from exc
        raise TargetError(f"PostgreSQL failed while {doing}: {first_line(exc)}") from exc


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (PostgreSQL adds DETAIL and HINT lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
