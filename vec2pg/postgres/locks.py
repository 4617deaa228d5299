"""Lock waits: saying that a run waits, and for whom.

Another session holding a lock on the target table (a migration of the schema, a long
transaction, someone's ``LOCK TABLE`` in psql) makes vec2pg's statements wait, for ever by
default, as PostgreSQL's do. :class:`LockWatch` watches the run's backend from a
connection of its own: once it has waited a few seconds, it names the sessions it waits
for (``pg_blocking_pids``), each once. ``--lock-timeout`` ends the wait instead
(:data:`LOCK_NOT_AVAILABLE`), and the error names who held the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg

if TYPE_CHECKING:
    from psycopg import Connection

#: Seconds from the start of a run to the watch's first look; and between two looks. A
#: wait is noted once two looks in a row found it.
WAIT_BEFORE_NOTE = 2.0
POLL_SECONDS = 1.0

_SESSIONS = (
    "SELECT pid, coalesce(nullif(application_name, ''), 'no application name'), usename, "
    "state, to_char(state_change, 'YYYY-MM-DD HH24:MI:SS'), "
    "left(regexp_replace(query, '\\s+', ' ', 'g'), 60) "
    "FROM pg_stat_activity WHERE pid = ANY(%s) ORDER BY pid"
)


def describe_sessions(conn: Connection[Any], pids: list[int]) -> list[str]:
    """Each session as a person needs to find it: pid, application, user, state, query."""
    rows = conn.execute(_SESSIONS, [pids]).fetchall()
    return [
        f"PostgreSQL pid {pid} ({application}, user {user}, {state} since {since}: {query!r})"
        for pid, application, user, state, since, query in rows
    ]


def table_holders(conn: Connection[Any], regclass: str) -> list[str]:
    """The other sessions that hold a lock on the table ``regclass`` (best effort)."""
    try:
        with conn.transaction():
            pids = [
                int(pid)
                for (pid,) in conn.execute(
                    "SELECT DISTINCT pid FROM pg_locks WHERE relation = to_regclass(%s) "
                    "AND granted AND pid <> pg_backend_pid()",
                    [regclass],
                ).fetchall()
            ]
            return describe_sessions(conn, pids) if pids else []
    except psycopg.Error:
        return []


class LockWatch:
    """While open, says (``note``) when the backend ``pid()`` names waits for a lock, and
    for which sessions. It connects only once the
    run has lasted that long, so that short runs cost no second connection."""

    def __init__(
        self,
        dsn: str,
        pid: Callable[[], int | None],
        note: Callable[[str], None],
    ) -> None:
        self._dsn = dsn
        self._pid = pid
        self._note = note
        self._stop = threading.Event()
        self._told: set[int] = set()
        self._thread = threading.Thread(target=self._watch, name="vec2pg-locks", daemon=True)

    def __enter__(self) -> LockWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        if self._stop.wait(WAIT_BEFORE_NOTE):
            return
        try:
            with psycopg.connect(
                self._dsn, autocommit=True, application_name="vec2pg lock watch", connect_timeout=15
            ) as conn:
                seen: dict[int, int] = {}  # blocker -> looks in a row that found it
                while not self._stop.is_set():
                    self._look(conn, seen)
                    self._stop.wait(POLL_SECONDS)
        except psycopg.Error:
            return  # the watch is a nicety: the run goes on without it

    def _look(self, conn: Connection[Any], seen: dict[int, int]) -> None:
        """Note each session the run has waited for over two looks in a row."""
        pid = self._pid()
        if pid is None:
            return
        (blocking,) = conn.execute("SELECT pg_blocking_pids(%s)", [pid]).fetchone() or ([],)
        for blocker in set(seen) - set(blocking):
            del seen[blocker]
        new = []
        for blocker in map(int, blocking):
            seen[blocker] = seen.get(blocker, 0) + 1
            if seen[blocker] == 2 and blocker not in self._told:
                new.append(blocker)
        if new:
            self._told.update(new)
            for session in describe_sessions(conn, new):
                self._note(
                    f"waiting for a lock that {session} holds; the run goes on once it is "
                    "released (--lock-timeout gives up instead)"
                )
