"""OpenSearch for scripts/bench: tests/search_server.py in its own process (OpenSearch 2.19,
one knn_vector index per size, one shard each), and as the baseline the loop a user writes
with opensearch-py: ``helpers.scan`` (a scroll, 1,000 documents a page), into one COPY."""

from __future__ import annotations

import argparse
from typing import Any

from bench_sources.elasticsearch import SearchBench, copy_hits

USER, PASSWORD = "admin", "bench-Pw-1"


class OpenSearchBench(SearchBench):
    name = "opensearch"
    flavor = "opensearch"
    baseline = "opensearch-py: helpers.scan (a scroll, 1,000 documents a page), one COPY"

    def _auth(self) -> list[str]:
        return ["--user", USER, "--password", PASSWORD]

    def _server_auth(self) -> list[str]:
        return ["--basic-auth", f"{USER}:{PASSWORD}"]

    def run_baseline(self, size: int, dsn: str, table: str) -> int:
        """Every document through a scroll, one COPY."""
        from opensearchpy import OpenSearch, helpers

        client = OpenSearch(self.url, http_auth=(USER, PASSWORD), timeout=120)
        try:
            hits: Any = helpers.scan(client, index=self._index(size), size=1000)
            return copy_hits(([hit] for hit in hits), dsn, table, self.dim)
        finally:
            client.close()


def make(args: argparse.Namespace) -> OpenSearchBench:
    return OpenSearchBench(args)
