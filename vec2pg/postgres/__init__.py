"""The shared PostgreSQL sink: DDL, validation, binary COPY. It knows no source."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vec2pg.postgres.sink import PostgresSink
    from vec2pg.postgres.target import mask_dsn, resolve_dsn

__all__ = ["PostgresSink", "mask_dsn", "resolve_dsn"]

_LAZY = {
    "PostgresSink": "vec2pg.postgres.sink",
    "mask_dsn": "vec2pg.postgres.target",
    "resolve_dsn": "vec2pg.postgres.target",
}


def __getattr__(name: str) -> Any:
    # psycopg loads on first use: decoding processes import the encoder, not the sink.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vec2pg.postgres' has no attribute {name!r}")
