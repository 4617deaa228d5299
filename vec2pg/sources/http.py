"""What an HTTP error answer means to vec2pg, for every source that speaks HTTP.

One mapping from a status code to vec2pg's errors, so that every source sorts failures the
same way: a refused credential or a missing collection stops the run; 429 is rate limiting
(never fatal while the source still answers: the pipeline slows down and waits); 408 and
5xx are transient and retried; anything else is a terminal source error.
"""

from __future__ import annotations

import difflib
import email.utils
import json
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from vec2pg.errors import (
    RateLimited,
    SourceAuthError,
    SourceError,
    SourceNotFound,
    SourceUnavailable,
)


def status_error(
    status: int,
    detail: str,
    *,
    where: str,
    credentials: str,
    not_found: str | None = None,
    refused_by: str | None = None,
    doing: str | None = None,
    retry_after: float | None = None,
) -> SourceError:
    """vec2pg's error for an HTTP error answer of ``status`` with the server's ``detail``.

    ``where`` names the source (``"Qdrant at http://..."``); ``credentials`` says how to fix a
    refused credential (``"check --api-key or QDRANT_API_KEY"``); ``not_found`` is the
    message for a 404 (default: ``where`` not found); ``refused_by`` names who refuses
    credentials where that is not ``where`` itself (a service's gateway, not the index);
    ``doing`` says what the request was for.
    """
    during = f" while {doing}" if doing else ""
    if status in (401, 403):
        who = f"{where}: {refused_by}" if refused_by else where
        return SourceAuthError(f"{who} refused the API key (HTTP {status}): {credentials}")
    if status == 404:
        return SourceNotFound(f"{not_found or f'{where} not found'} ({detail})")
    if status == 429:
        return RateLimited(f"{where} is rate limiting (HTTP 429){during}", retry_after)
    if status >= 500 or status == 408:
        return SourceUnavailable(f"{where} answered HTTP {status}{during}: {detail}", retry_after)
    return SourceError(f"{where} answered HTTP {status}{during}: {detail}")


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (an HTTP library's error, with its causes) is a refused connection
    or a name that does not resolve, rather than a timeout or a dropped connection."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        error = stack.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, (ConnectionRefusedError, socket.gaierror)):
            return True
        text = str(error)
        if "Name or service not known" in text or "nodename nor servname" in text:
            return True
        stack += [e for e in (error.__cause__, error.__context__) if e is not None]
        stack += [a for a in getattr(error, "args", ()) if isinstance(a, BaseException)]
        reason = getattr(error, "reason", None)
        if isinstance(reason, BaseException):
            stack.append(reason)
    return False


def names_hint(wanted: str, names: Sequence[str], has: str) -> str:
    """What to say of a name the source does not have: the closest of ``names`` it has
    (``did you mean 'docs'?``: alike, or the same but for case, or starting with ``wanted``
    or the pattern ``logs-*``), else the first few (``<has> 'a', 'b'``)."""
    close = difflib.get_close_matches(wanted, names, n=3)
    stem = wanted.rstrip("*").lower()
    close += [n for n in names if stem and n.lower().startswith(stem) and n not in close]
    close = close[:5]
    if close:
        return f"did you mean {' or '.join(repr(n) for n in close)}?"
    if not names:
        return f"{has} none"
    shown = ", ".join(repr(n) for n in sorted(names)[:10])
    more = f" and {len(names) - 10:,} more" if len(names) > 10 else ""
    return f"{has} {shown}{more}"


def retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds: a number of seconds, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def connection_pool(
    base: str, headers: Mapping[str, str], *, timeout: float, connections: int, ca: str | None
) -> Any:
    """A urllib3 pool of up to ``connections`` kept-alive connections to ``base``, sending
    ``headers``; nothing is retried here (the pipeline retries). HTTPS is verified against
    ``ca``, ``$SSL_CERT_FILE`` or certifi's certificates; a proxy set in the environment
    (``HTTPS_PROXY``, ``NO_PROXY``, ...) is used as other clients use it."""
    import urllib.request
    from urllib.parse import urlsplit

    import urllib3

    parts = urlsplit(base)
    options: dict[str, Any] = {
        "headers": dict(headers),
        "maxsize": connections,
        "retries": False,
        "timeout": urllib3.Timeout(connect=timeout, read=timeout),
    }
    if parts.scheme == "https":
        import certifi

        options["ca_certs"] = ca or os.environ.get("SSL_CERT_FILE") or certifi.where()
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        return urllib3.ProxyManager(proxy, **options)
    return urllib3.PoolManager(**options)


#: Each thread's simdjson parser: reusing one saves allocating its buffers per answer.
_parsers = threading.local()


def parse_json(content: bytes) -> tuple[Any, bool]:
    """An answer's JSON: ``(document, True)`` parsed by simdjson (lazy objects and arrays,
    float arrays copied out without a Python float per value), or ``(value, False)`` from
    Python's json where simdjson refuses what Python reads (text that is not Unicode,
    integers beyond 64 bits, ``Infinity``): the sink then rejects the one record PostgreSQL
    cannot hold, with its id, instead of the page. ValueError if it is not JSON."""
    import simdjson

    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = simdjson.Parser()
    try:
        try:
            return parser.parse(content), True
        except RuntimeError as exc:
            if "re-use a parser" not in str(exc):
                raise
            # Objects of the parser's last document are still referenced (by the traceback
            # of an answer that failed to decode): a new parser.
            parser = _parsers.parser = simdjson.Parser()
            return parser.parse(content), True
    except (ValueError, RuntimeError):
        return json.loads(content), False
