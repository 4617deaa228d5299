"""The shared PostgreSQL sink: DDL, validation, binary COPY. It knows no source."""

from vec2pg.postgres.sink import PostgresSink
from vec2pg.postgres.target import mask_dsn, resolve_dsn

__all__ = ["PostgresSink", "mask_dsn", "resolve_dsn"]
