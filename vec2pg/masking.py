"""Hiding secrets in what vec2pg prints: passwords in DSNs and URLs."""

from __future__ import annotations

import re

_URL_PASSWORD = re.compile(
    r"^(?P<head>[a-z][a-z0-9+.-]*://[^:/?#@]*:)(?P<password>[^@/?#]*)@", re.I
)
# key=value form, or a URL's ?password= parameter (which ends at & or whitespace).
_KV_PASSWORD = re.compile(
    r"(?P<head>\bpassword\s*=\s*)(?P<password>'(?:[^'\\]|\\.)*'|[^\s&]+)", re.I
)


def mask_dsn(dsn: str) -> str:
    """The DSN with its password (URL or key=value form, or ``password=`` parameter) hidden."""
    masked = _URL_PASSWORD.sub(lambda m: m["head"] + ("***" if m["password"] else "") + "@", dsn)
    return _KV_PASSWORD.sub(lambda m: m["head"] + "***", masked)
