"""The errors a user should see, and the exit code each one ends the program with.

Every error vec2pg raises on purpose derives from :class:`Vec2pgError`. Its message says
what failed, on what, and how to fix it; ``cli.main`` prints that one line and exits with
``exit_code``. Errors that are worth retrying carry the :class:`Transient` mixin; the
pipeline retries those with bounded exponential backoff and gives up with the last one.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes, documented in the README ("Exit codes")."""

    OK = 0
    INTERNAL = 1  # a bug: please report it with --debug output
    USAGE = 2  # bad options or configuration (also Typer's own usage errors)
    SOURCE = 3  # the source is unreachable, refuses us, or has no such collection
    TARGET = 4  # PostgreSQL is unreachable, refuses us, or lacks pgvector
    TARGET_STATE = 5  # the target table is not in a state this run may write to
    INVALID_RECORD = 6  # a record cannot be stored as it is; the run stopped
    LOCKED = 7  # another vec2pg run holds the lock on this target
    DIFFERS = 8  # the run finished, but the table does not match the source
    REJECTED = 9  # the run finished, but skipped records (they are in the rejects file)
    LOCAL = 10  # this machine failed the run: a decoding process died, a file is unwritable
    INTERRUPTED = 130  # Ctrl-C (SIGINT)
    TERMINATED = 143  # SIGTERM: cron's timeout, systemd, Kubernetes


class Vec2pgError(Exception):
    """Base class of every error that is reported to the user as one line."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Transient:
    """Mixin: the operation may succeed if tried again later.

    ``retry_after`` is the server's own hint in seconds (HTTP ``Retry-After``), if any.
    """

    retry_after: float | None = None


class ConfigError(Vec2pgError):
    """The options or environment do not describe a run that can be carried out."""

    exit_code = ExitCode.USAGE


class SourceError(Vec2pgError):
    """The source database failed or refused a request."""

    exit_code = ExitCode.SOURCE


class SourceNotFound(SourceError):
    """The collection or index does not exist."""


class SourceAuthError(SourceError):
    """The source rejected our credentials."""


class SourceUnsupported(SourceError):
    """The source exists but cannot be read the way vec2pg reads it."""


class SourceUnavailable(Transient, SourceError):
    """A timeout, a refused connection or a 5xx: worth retrying."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SourceUnreachable(SourceUnavailable):
    """The source's address refused the connection, or its name does not resolve: worth
    retrying during a run (a restart, a failover), not for long at its start."""


class RateLimited(SourceUnavailable):
    """HTTP 429: back off (honouring Retry-After), slow down, and go on."""


class TargetError(Vec2pgError):
    """PostgreSQL failed or refused a request."""

    exit_code = ExitCode.TARGET


class TargetUnavailable(Transient, TargetError):
    """The connection to PostgreSQL was lost; reconnecting may help."""


class TargetStateError(Vec2pgError):
    """The target table holds data or state this run may not overwrite."""

    exit_code = ExitCode.TARGET_STATE


class LockHeld(Vec2pgError):
    """Another run is writing to the same target table."""

    exit_code = ExitCode.LOCKED


class TerminateSignal(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by the command line's handler: a run stops as it
    does on Ctrl-C (the transaction in progress rolled back, what committed kept)."""


class Interrupted(Vec2pgError):
    """A run stopped by Ctrl-C; its message says what is committed."""

    exit_code = ExitCode.INTERRUPTED


class Terminated(Interrupted):
    """A run stopped by SIGTERM; its message says what is committed."""

    exit_code = ExitCode.TERMINATED


class LocalError(Vec2pgError):
    """This machine failed the run: a decoding process died (killed, out of memory), or a
    file vec2pg writes could not be written."""

    exit_code = ExitCode.LOCAL


class LockTimeout(LockHeld):
    """A statement waited longer than --lock-timeout for a lock another session holds."""


class InvalidRecord(Vec2pgError):
    """A record that PostgreSQL cannot store as it is."""

    exit_code = ExitCode.INVALID_RECORD

    def __init__(self, record_id: str, namespace: str, reason: str) -> None:
        where = f"record {record_id!r}" + (f" in namespace {namespace!r}" if namespace else "")
        super().__init__(f"{where}: {reason}")
        self.record_id = record_id
        self.namespace = namespace
        self.reason = reason

    def __reduce__(self) -> tuple[type[InvalidRecord], tuple[str, str, str]]:
        # Rebuilt from its parts when it crosses from a decoding process (pickle).
        return (type(self), (self.record_id, self.namespace, self.reason))
