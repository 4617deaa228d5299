"""The demo's data: seed a local Qdrant collection of articles, and query the migrated table.

    python scripts/demo_data.py seed DIR   # (re)create DIR with collection "articles"
    python scripts/demo_data.py show       # rows and a nearest-neighbour query, from Postgres

Embeddings are synthetic but shaped like real ones: each topic has a direction in 384-dim
space and every article lies near its topic's, so nearest neighbours share a topic.
"""

from __future__ import annotations

import shutil
import sys
import uuid
import warnings
import zlib
from datetime import date, timedelta

import numpy as np

COLLECTION = "articles"
DIM = 384
N = 3000

TOPICS = {
    "astronomy": [
        "black holes",
        "exoplanets",
        "the Andromeda galaxy",
        "neutron stars",
        "dark matter",
        "Saturn's rings",
    ],
    "cooking": [
        "sourdough bread",
        "fermented kimchi",
        "French omelettes",
        "slow-cooked ragù",
        "Sichuan pepper",
        "crème brûlée",
    ],
    "databases": [
        "PostgreSQL indexes",
        "vector search",
        "write-ahead logs",
        "query planners",
        "HNSW graphs",
        "MVCC",
    ],
    "football": [
        "the offside rule",
        "pressing tactics",
        "penalty shoot-outs",
        "youth academies",
        "the World Cup",
        "goalkeepers",
    ],
    "gardening": [
        "tomato blight",
        "composting",
        "pruning roses",
        "raised beds",
        "drought-proof lawns",
        "bees and wildflowers",
    ],
    "music": [
        "Bach's fugues",
        "jazz harmony",
        "synthesisers",
        "the blues scale",
        "film scores",
        "Brazilian bossa nova",
    ],
}
FORMS = [
    "A beginner's guide to {}",
    "What nobody tells you about {}",
    "{}: ten years of lessons",
    "Why {} matter more than you think",
    "The surprising history of {}",
    "How to get started with {}",
    "{} explained in five minutes",
]
AUTHORS = [
    "Ada Okafor",
    "Björn Lindqvist",
    "Chen Wei",
    "Dolores Ibáñez",
    "Emeka Nwosu",
    "Fatima Zahra",
    "Gustavo Reyes",
]


def seed(path: str) -> None:
    from qdrant_client import QdrantClient
    from qdrant_client import models as m

    shutil.rmtree(path, ignore_errors=True)
    rng = np.random.default_rng(42)
    centres = {topic: rng.standard_normal(DIM) for topic in TOPICS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = QdrantClient(path=path)
    client.create_collection(
        COLLECTION,
        vectors_config={"body": m.VectorParams(size=DIM, distance=m.Distance.COSINE)},
        sparse_vectors_config={"keywords": m.SparseVectorParams()},
    )
    points = []
    for i in range(N):
        topic = list(TOPICS)[i % len(TOPICS)]
        subject = TOPICS[topic][int(rng.integers(len(TOPICS[topic])))]
        title = FORMS[int(rng.integers(len(FORMS)))].format(subject)
        title = title[0].upper() + title[1:]
        body = centres[topic] + 0.8 * rng.standard_normal(DIM)
        words = sorted({zlib.crc32(w.lower().encode()) % 30_000 for w in title.split()})
        points.append(
            m.PointStruct(
                id=str(uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | i)),
                vector={
                    "body": body.tolist(),
                    "keywords": m.SparseVector(indices=words, values=[1.0] * len(words)),
                },
                payload={
                    "title": title,
                    "topic": topic,
                    "author": AUTHORS[int(rng.integers(len(AUTHORS)))],
                    "published": str(date(2020, 1, 1) + timedelta(days=int(rng.integers(2000)))),
                    "words": int(rng.integers(300, 3000)),
                    "tags": [topic, subject.split()[-1]],
                },
            )
        )
    for start in range(0, N, 500):
        client.upsert(COLLECTION, points[start : start + 500])
    client.close()
    print(f"seeded Qdrant collection {COLLECTION!r} with {N:,} articles in {path}")


def drop_table(dsn: str) -> None:
    """Start the demo afresh: drop the table an earlier demo run migrated."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS vec2pg."{COLLECTION}"')


def show(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn) as conn:
        rows = (
            f"SELECT id, metadata->>'title', metadata->>'topic' "
            f"FROM vec2pg.{COLLECTION} ORDER BY id LIMIT 3"
        )
        print(f"\n-- three rows:\n{rows};")
        for row in conn.execute(rows):
            print("  ", " | ".join(map(str, row)))
        probe = conn.execute(
            f"SELECT id, metadata->>'title' FROM vec2pg.{COLLECTION} "
            "WHERE metadata->>'topic' = 'astronomy' ORDER BY id LIMIT 1"
        ).fetchone()
        assert probe is not None
        near = f"(SELECT body FROM vec2pg.{COLLECTION} WHERE id = '{probe[0]}')"
        query = (
            f"SELECT metadata->>'title', metadata->>'topic',\n"
            f"       round((body <=> {near})::numeric, 3) AS distance\n"
            f"FROM vec2pg.{COLLECTION} WHERE id <> '{probe[0]}' ORDER BY distance LIMIT 5"
        )
        print(f"\n-- the 5 nearest neighbours of {probe[1]!r} (cosine distance):\n{query};")
        for title, topic, distance in conn.execute(query):
            print(f"   {distance}  [{topic}] {title}")
        print(f'\nconnect yourself: psql "{dsn}"')
        print("the embedded PostgreSQL keeps running; see it with `vec2pg embedded show`,")
        print("stop it with `vec2pg embedded stop` (from .venv/bin, or after `pip install vec2pg`)")


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "seed" and len(sys.argv) == 3:
        seed(sys.argv[2])
    elif command in ("show", "drop") and len(sys.argv) == 2:
        from vec2pg.postgres.target import embedded_dsn

        (show if command == "show" else drop_table)(embedded_dsn())
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
