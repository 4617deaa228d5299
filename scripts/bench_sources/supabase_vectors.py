"""Supabase Vector Buckets for scripts/bench: the S3 Vectors test server's Supabase wire
(``/storage/v1/vector/``), and as the baseline the loop a user writes with plain HTTPS
(urllib3, as ``requests`` would): ``ListVectors`` 500 a page by ``nextToken``, one page
after the other, each written with a COPY of its own."""

from __future__ import annotations

import argparse
import json
from typing import Any

from bench_sources.s3vectors import (
    BASELINE_PAGE,
    BUCKET,
    SUPABASE_KEY,
    S3VectorsBench,
    index_name,
)


class SupabaseVectorsBench(S3VectorsBench):
    name = "supabase-vectors"
    baseline = "ListVectors over HTTPS (urllib3 + json), 500 a page by nextToken, a COPY per page"

    def vec2pg_args(self, size: int) -> list[str]:
        return [
            "supabase-vectors",
            BUCKET,
            index_name(size),
            "--project-url",
            self.url,
            "--key",
            SUPABASE_KEY,
        ]

    def env(self) -> dict[str, str]:
        return {}

    def pages(self, size: int) -> Any:
        import urllib3

        http = urllib3.PoolManager()
        headers = {
            "apikey": SUPABASE_KEY,
            "Authorization": f"Bearer {SUPABASE_KEY}",
            "Content-Type": "application/json",
        }
        request: dict[str, Any] = {
            "vectorBucketName": BUCKET,
            "indexName": index_name(size),
            "maxResults": BASELINE_PAGE,
            "returnData": True,
            "returnMetadata": True,
        }
        while True:
            response = http.request(
                "POST",
                f"{self.url}/storage/v1/vector/ListVectors",
                body=json.dumps(request),
                headers=headers,
            )
            answer = json.loads(response.data)
            yield answer["vectors"]
            if not answer.get("nextToken"):
                return
            request["nextToken"] = answer["nextToken"]


def make(args: argparse.Namespace) -> SupabaseVectorsBench:
    return SupabaseVectorsBench(args)
