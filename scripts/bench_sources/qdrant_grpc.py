"""Qdrant over gRPC for scripts/bench: the Qdrant adapter (qdrant.py), with vec2pg reading
through ``--grpc`` from the same test server's gRPC port. ``--source all`` measures both."""

from __future__ import annotations

import argparse

from bench_sources.qdrant import QdrantBench


def make(args: argparse.Namespace) -> QdrantBench:
    return QdrantBench(args, transport="grpc")
