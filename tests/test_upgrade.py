"""Upgrading from the original vec2pg (2024.6): its table is recognised, and the README's
recipe keeps the original's queries working on the new table."""

from __future__ import annotations

from qdrant_client import models
from qdrant_data import open_local

from vec2pg.errors import ExitCode


def test_the_original_vec2pgs_table_is_named_and_the_readme_view_keeps_its_queries(
    tmp_path, target, capsys
) -> None:
    client = open_local(tmp_path / "q")
    client.create_collection(
        "docs", vectors_config=models.VectorParams(size=3, distance=models.Distance.EUCLID)
    )
    client.upsert(
        "docs",
        [
            models.PointStruct(id=i, vector=[float(i), 0.0, 1.0], payload={"n": i})
            for i in range(1, 6)
        ],
    )
    client.close()
    schema, new = target.schema, f"{target.schema}_new"
    with target.connect() as conn:  # what the original vec2pg left for Qdrant
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".docs (id bigint, "values" vector, metadata json)')
        conn.execute(f"""INSERT INTO "{schema}".docs VALUES (1, '[1,0,1]', '{{"n": 1}}')""")
    args = ["qdrant", "docs", "--path", str(tmp_path / "q"), "--dsn", target.dsn]

    try:
        code = target.cli(*args[:4])
        assert code == ExitCode.TARGET_STATE
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f'vec2pg: error: table "{schema}"."docs" is the original vec2pg\'s ("values" '
            "vector, metadata json), and this vec2pg writes id bigint, embedding vector(3), "
            'metadata jsonb: --replace rebuilds it (see the README, "Upgrading from the '
            'original vec2pg"), or name another --table'
        )

        # The README's recipe: the new table in a schema of its own, the old name a view.
        from vec2pg.cli import main

        assert main([*args, "--schema", new, "--id-type", "bigint", "--quiet"]) == 0
        ((id_type,),) = target.query(f'SELECT pg_typeof(id)::text FROM "{new}".docs LIMIT 1')
        assert id_type == "bigint"
        with target.connect() as conn:
            conn.execute(f'DROP TABLE "{schema}".docs')
            conn.execute(
                f'CREATE VIEW "{schema}".docs AS SELECT id, embedding AS "values", '
                f'metadata::json AS metadata FROM "{new}".docs'
            )
        old_query = (
            f"SELECT id, metadata->>'n' FROM \"{schema}\".docs "
            "ORDER BY \"values\" <-> '[4.4,0,1]' LIMIT 2"
        )
        assert target.query(old_query) == [(4, "4"), (5, "5")]
    finally:
        with target.connect() as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{new}" CASCADE')
