"""--dry-run: it connects to both sides, says what it would do, and writes nothing."""

from __future__ import annotations

import json

from qdrant_data import open_local, seed_named, seed_unnamed


def catalog(target) -> list[tuple[str, str]]:
    """Every relation in the test's schema, and the schema itself."""
    schema = target.query(
        "SELECT nspname, '' FROM pg_namespace WHERE nspname = %s", [target.schema]
    )
    return schema + target.query(
        "SELECT relname, relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE nspname = %s ORDER BY relname",
        [target.schema],
    )


def test_a_dry_run_on_a_new_target_creates_nothing(tmp_path, target, capsys) -> None:
    client = open_local(tmp_path / "q")
    seed_named(client, "docs", 120)
    client.close()

    code = target.cli("qdrant", "docs", "--path", str(tmp_path / "q"), "--dry-run", "--json")

    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert catalog(target) == []
    assert (report["mode"], report["table_exists"], report["resume"]) == ("load", False, None)
    assert report["namespaces"] == {"": 120}
    assert {v["name"]: (v["kind"], v["dim"], v["metric"]) for v in report["vectors"]} == {
        "text": ("dense", 12, "cosine"),
        "image": ("dense", 5, "euclidean"),
        "manhattan": ("dense", 3, "manhattan"),
        "colbert": ("multivector", 4, "dotproduct"),
        "keywords": ("sparse", None, "dotproduct"),
    }
    ddl = [d for d in report["ddl"] if d != "CREATE EXTENSION IF NOT EXISTS vector"]  # first test?
    assert ddl[0] == f'CREATE SCHEMA "{target.schema}"'
    assert ddl[1].startswith(
        f'CREATE TABLE "{target.schema}"."docs" ("id" text, "text" vector(12), '
    )


def test_a_dry_run_on_an_existing_table_changes_nothing(tmp_path, target, capsys) -> None:
    client = open_local(tmp_path / "q")
    seed_unnamed(client, "docs", 50)
    client.close()
    assert target.cli("qdrant", "docs", "--path", str(tmp_path / "q"), "--quiet") == 0
    before = (
        catalog(target),
        target.query(f'SELECT id, xmin::text FROM "{target.schema}".docs ORDER BY id'),
    )
    runs = target.query(f'SELECT count(*) FROM "{target.schema}"._vec2pg_runs')
    capsys.readouterr()

    code = target.cli("qdrant", "docs", "--path", str(tmp_path / "q"), "--dry-run")

    assert code == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == "dry run: nothing was written"
    assert f'target: "{target.schema}"."docs" (holds 50 rows)' in text
    assert "would resync: merge into the table, leaving unchanged rows alone" in text
    after = (
        catalog(target),
        target.query(f'SELECT id, xmin::text FROM "{target.schema}".docs ORDER BY id'),
    )
    assert after == before
    assert target.query(f'SELECT count(*) FROM "{target.schema}"._vec2pg_runs') == runs


def test_a_dry_run_of_a_rejects_file_says_it_would_merge_into_a_keyed_table(
    tmp_path, target, capsys
) -> None:
    """A rejects file may repeat a record: the run merges into a table keyed from the start,
    and the dry run says so (it once said load, with a key-less table)."""
    rejects = tmp_path / "rejects.jsonl"
    header = {
        "vec2pg_rejects": 1,
        "source": "qdrant",
        "collection": "docs",
        "namespaced": False,
        "fields": [{"name": "", "kind": "dense", "dim": 2, "metric": "cosine"}],
    }
    line = {"namespace": "", "id": "1", "reason": "x", "vectors": {"": [0.5, 1.0]}}
    rejects.write_text(json.dumps(header) + "\n" + json.dumps(line) + "\n")

    code = target.cli("jsonl", str(rejects), "--dry-run", "--json")

    assert code == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert catalog(target) == []
    assert report["mode"] == "merge"
    create = [d for d in report["ddl"] if d.startswith("CREATE TABLE")]
    assert create == [
        f'CREATE TABLE "{target.schema}"."docs" ("id" text, "embedding" vector(2), '
        '"metadata" jsonb, PRIMARY KEY ("id"))'
    ]
