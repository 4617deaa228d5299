"""vec2pg: move vector data from vector databases into PostgreSQL with pgvector.

The library is what the command line calls::

    from vec2pg import PostgresSink, migrate
    from vec2pg.sources.qdrant import QdrantSource

    with PostgresSink("postgresql://...") as sink:
        summary = migrate(QdrantSource("docs", url="http://localhost:6333"), sink)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "2026.12.0"

from vec2pg.errors import ExitCode, InvalidRecord, Vec2pgError

if TYPE_CHECKING:
    from vec2pg.pipeline import Options, Summary, migrate
    from vec2pg.postgres.sink import PostgresSink
    from vec2pg.records import Record, SourceInfo, SparseVector, VectorField
    from vec2pg.sources.base import Page, Source

__all__ = [
    "ExitCode",
    "InvalidRecord",
    "Options",
    "Page",
    "PostgresSink",
    "Record",
    "Source",
    "SourceInfo",
    "SparseVector",
    "Summary",
    "Vec2pgError",
    "VectorField",
    "__version__",
    "migrate",
]

_LAZY = {
    "Record": "vec2pg.records",
    "SourceInfo": "vec2pg.records",
    "SparseVector": "vec2pg.records",
    "VectorField": "vec2pg.records",
    "Options": "vec2pg.pipeline",
    "Summary": "vec2pg.pipeline",
    "migrate": "vec2pg.pipeline",
    "PostgresSink": "vec2pg.postgres.sink",
    "Page": "vec2pg.sources.base",
    "Source": "vec2pg.sources.base",
}


def __getattr__(name: str) -> Any:
    # numpy, psycopg and the pipeline load on first use, so that `vec2pg --help` stays fast.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vec2pg' has no attribute {name!r}")
