"""What scripts/bench.py shares with each source's benchmark adapter (scripts/bench_sources/).

Every source is seeded with the same synthetic records: ``synthetic_id(i)`` (or the id the
source must use instead, see :attr:`BenchSource.table_id`), the float32 vectors of
``synthetic_chunks(n, dim)``, and the metadata ``{"n": i}``, in one namespace (or none).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

SEED = 0
#: Rows per chunk of :func:`synthetic_chunks` (a chunk of 10,000 x 1,024 is 40 MB).
CHUNK = 10_000


def synthetic_chunks(n: int, dim: int, seed: int = SEED) -> Iterator[tuple[int, np.ndarray]]:
    """The vectors of records 0..n-1, chunk by chunk: (first record's number, matrix)."""
    rng = np.random.default_rng(seed)
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        yield start, rng.standard_normal((stop - start, dim), dtype=np.float32)


def synthetic_id(i: int) -> str:
    return f"doc-{i:07d}"


def synthetic_metadata(i: int) -> dict[str, int]:
    return {"n": i}


class BenchSource(Protocol):
    """A source as scripts/bench measures it: a module in scripts/bench_sources/ with a
    ``make(args: argparse.Namespace) -> BenchSource`` function."""

    name: str  # the command: "pinecone", "qdrant", ...
    #: The simplest loop a user would write with the SDK, in a few words, for the report.
    baseline: str
    namespaced: bool  # whether vec2pg's table has a namespace column
    namespace: str  # the namespace the records are in ("" without namespaces)

    def table_id(self, i: int) -> str:
        """How vec2pg's table spells record i's id (synthetic_id(i), a UUID, ...)."""
        ...

    def start(self, work: Path, sizes: list[int], dim: int, latency: float) -> None:
        """Seed a collection of each size; a network source runs its test server in a
        process of its own, sleeping ``latency`` seconds per request."""
        ...

    def vec2pg_args(self, size: int) -> list[str]:
        """The arguments after ``vec2pg`` that migrate the collection of ``size`` records."""
        ...

    def env(self) -> dict[str, str]:
        """Environment the vec2pg process needs besides the DSN (credentials)."""
        ...

    def server_pid(self) -> int | None:
        """The test server's pid, for its CPU time; None for an embedded engine."""
        ...

    def run_baseline(self, size: int, dsn: str, table: str) -> int:
        """Copy the collection of ``size`` records into ``table`` (``schema.name``; the loop
        creates it, as the tool or script it stands for would, e.g. ``(id text primary key,
        embedding vector(dim), metadata jsonb)``) with the simplest loop a user would write
        with the SDK; return the records written."""
        ...

    def stop(self) -> None: ...


def work_dir(work: Path, name: str) -> Path:
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder
