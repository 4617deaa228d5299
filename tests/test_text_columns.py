"""Text fields a source declares (SourceInfo.texts, Record.texts: Chroma's documents and
URIs): text columns through the shared sink, resync, --replace, --prune, verify and the
rejects file, for any source."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from conftest import column_types

from vec2pg.cli import main
from vec2pg.errors import ConfigError, InvalidRecord
from vec2pg.pipeline import Options, migrate
from vec2pg.postgres import PostgresSink
from vec2pg.postgres.layout import layout_for
from vec2pg.postgres.sink import SyncOptions
from vec2pg.records import Metric, Namespace, Record, SourceInfo, VectorField, VectorKind
from vec2pg.rejects import header
from vec2pg.sources.base import WHOLE, Call, Page
from vec2pg.verify import verify

FIELDS = (VectorField("", VectorKind.DENSE, 3, Metric.EUCLIDEAN),)


class TextsSource:
    """Records with a vector, two text fields and metadata; ``texts`` and ``metadata``
    overrides by id, and ``gone`` ids left out."""

    def __init__(
        self,
        count: int,
        texts: dict[str, dict[str, Any]] | None = None,
        gone: set[str] | None = None,
        fields: tuple[str, ...] = ("document", "uri"),
    ) -> None:
        self.count = count
        self.texts = texts or {}
        self.gone = gone or set()
        self.fields = fields

    def ids(self) -> list[str]:
        return [str(i) for i in range(self.count) if str(i) not in self.gone]

    def describe(self) -> SourceInfo:
        return SourceInfo(
            "texts",
            "docs",
            "memory",
            FIELDS,
            (Namespace("", len(self.ids())),),
            False,
            texts=self.fields,
        )

    def partitions(
        self, namespace: str, count: int | None, want: int, call: Call
    ) -> tuple[str, ...]:
        return (WHOLE,)

    def record(self, rid: str) -> Record:
        i = int(rid)
        texts: dict[str, Any] = {
            "document": f"Text {i} «naïve» 東京 🚀" if i % 3 else None,
            "uri": f"s3://bucket/{i}.png" if i % 2 else None,
        }
        texts.update(self.texts.get(rid, {}))
        texts = {name: value for name, value in texts.items() if name in self.fields}
        vector = np.array([i, i / 2, -i], dtype=np.float32)
        return Record(rid, {"": vector}, {"i": i}, texts=texts)

    def page(self, namespace: str, partition: str, cursor: Any) -> Page:
        ids = self.ids()
        start = int(cursor or 0)
        chunk = ids[start : start + 7]
        nxt = start + 7 if start + 7 < len(ids) else None
        return Page(
            load=lambda: [self.record(i) for i in chunk],
            next_cursor=nxt,
            size=len(chunk),
            ids=chunk,
        )

    page_ids = page

    def fetch(self, namespace: str, ids: Any) -> list[Record]:
        return [self.record(i) for i in ids if i in set(self.ids())]

    def close(self) -> None:
        pass


def run(target, source: TextsSource, **sync: Any) -> Any:
    with PostgresSink(target.dsn, schema=target.schema, sync=SyncOptions(**sync)) as sink:
        return migrate(source, sink, Options(concurrency=2))


def assert_rows_are(target, source: TextsSource) -> None:
    rows = target.rows("docs")
    assert sorted(rows) == sorted(source.ids())
    for rid in source.ids():
        want = source.record(rid)
        row = rows[rid]
        for name in source.fields:
            assert row[name] == want.texts.get(name), (rid, name)
        assert row["metadata"] == want.metadata
        np.testing.assert_array_equal(row["embedding"], want.vectors[""])


def test_text_fields_become_text_columns_between_the_vectors_and_the_metadata(target) -> None:
    summary = run(target, TextsSource(30))

    assert summary.written == 30
    with target.connect() as conn:
        types = column_types(conn, target.schema, "docs")
    assert list(types.items()) == [
        ("id", "text"),
        ("embedding", "vector(3)"),
        ("document", "text"),
        ("uri", "text"),
        ("metadata", "jsonb"),
    ]
    assert_rows_are(target, TextsSource(30))
    rows = target.rows("docs")
    assert (rows["5"]["document"], rows["5"]["uri"]) == (
        "Text 5 «naïve» 東京 🚀",
        "s3://bucket/5.png",
    )
    assert (rows["6"]["document"], rows["6"]["uri"]) == (None, None)  # NULL, not ""


def test_a_resync_updates_a_changed_text_and_prunes(target) -> None:
    run(target, TextsSource(30))
    changed = TextsSource(31, texts={"4": {"document": "rewritten"}, "6": {"uri": ""}}, gone={"9"})

    summary = run(target, changed, prune=True)

    counts = summary.as_dict()
    assert (counts["inserted"], counts["updated"], counts["deleted"]) == (1, 2, 1)
    assert counts["unchanged"] == 27
    assert_rows_are(target, changed)
    assert target.rows("docs")["6"]["uri"] == ""  # an empty text is not NULL


def test_replace_keeps_the_text_columns(target) -> None:
    run(target, TextsSource(10))
    source = TextsSource(12, texts={"1": {"document": "new"}})

    summary = run(target, source, replace=True)

    assert summary.mode == "replace" and summary.written == 12
    assert_rows_are(target, source)


def test_a_table_without_the_text_columns_is_not_resynced(target, capsys) -> None:
    run(target, TextsSource(5, fields=("document",)))

    from vec2pg.errors import TargetStateError

    with pytest.raises(TargetStateError) as caught:
        run(target, TextsSource(5))
    assert "uri text" in str(caught.value) and "use --replace" in str(caught.value)


def test_verify_compares_each_text_field(target) -> None:
    run(target, TextsSource(20))

    ok = verify(TextsSource(20), target.dsn, schema=target.schema, sample=20)
    differs = verify(
        TextsSource(20, texts={"5": {"document": "other"}, "7": {"uri": None}}),
        target.dsn,
        schema=target.schema,
        sample=20,
    )

    assert ok.ok, ok.text()
    assert sorted((m.id, m.field, m.reason) for m in differs.namespaces[""].mismatched) == [
        ("5", "document", 'source "other", table "Text 5 «naïve» 東京 🚀"'),
        ("7", "uri", 'source null, table "s3://bucket/7.png"'),
    ]


def test_a_nul_in_a_text_is_refused_or_stripped(target) -> None:
    bad = TextsSource(10, texts={"2": {"document": "a\x00b"}})
    with pytest.raises(InvalidRecord) as caught:
        run(target, bad)
    assert str(caught.value) == (
        "record '2': the text field 'document' contains a NUL character, which PostgreSQL "
        "text cannot hold (--strip-nul removes them)"
    )
    assert target.query("SELECT to_regclass(%s)", [f'"{target.schema}".docs']) in (
        [(None,)],
        [(f"{target.schema}.docs",)],
    )

    summary = run(target, bad, strip_nul=True, restart=True)

    assert summary.total("altered") == 1
    assert target.rows("docs")["2"]["document"] == "ab"
    report = verify(bad, target.dsn, schema=target.schema, sample=10, strip_nul=True)
    assert report.ok, report.text()


def test_rejected_records_keep_their_texts_and_reload_from_the_rejects_file(
    target, tmp_path
) -> None:
    rejects = tmp_path / "rejects.jsonl"
    bad = TextsSource(10, texts={"2": {"document": "a\x00b"}, "5": {"uri": "\ud800"}})

    summary = run(target, bad, on_error="skip", rejects=str(rejects))

    assert summary.total("rejected") == 2
    head, *lines = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert head["texts"] == ["document", "uri"]
    assert {line["id"]: line["texts"] for line in lines} == {
        "2": {"document": "a\x00b", "uri": None},
        "5": {"document": "Text 5 «naïve» 東京 🚀", "uri": "\ud800"},
    }
    assert [line["reason"] for line in lines] == [
        "the text field 'document' contains a NUL character, which PostgreSQL text cannot "
        "hold (--strip-nul removes them)",
        "the text field 'uri' is not valid Unicode (it holds a lone surrogate)",
    ]
    for line in lines:  # fixed by hand
        line["texts"] = {
            k: v and v.replace("\x00", "").replace("\ud800", "x") for k, v in line["texts"].items()
        }
    rejects.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in [head, *lines]) + "\n")

    code = main(["jsonl", str(rejects), "--dsn", target.dsn, "--schema", target.schema, "--quiet"])

    assert code == 0
    rows = target.rows("docs")
    assert len(rows) == 10
    assert (rows["2"]["document"], rows["5"]["uri"]) == ("ab", "x")


def test_a_rejects_file_whose_texts_are_not_text_rejects_them_again(target, tmp_path) -> None:
    rejects = tmp_path / "rejects.jsonl"
    run(
        target,
        TextsSource(4, texts={"1": {"document": "a\x00"}}),
        on_error="skip",
        rejects=str(rejects),
    )
    head, line = [json.loads(x) for x in rejects.read_text().splitlines()]
    line["texts"]["document"] = 42
    rejects.write_text(json.dumps(head) + "\n" + json.dumps(line) + "\n")
    again = tmp_path / "again.jsonl"

    code = main(
        ["jsonl", str(rejects), "--dsn", target.dsn, "--schema", target.schema, "--quiet"]
        + ["--on-error", "skip", "--rejects", str(again)]
    )

    assert code == 9
    reasons = [json.loads(x).get("reason") for x in again.read_text().splitlines()[1:]]
    assert reasons == ["the text field 'document' is not text"]


def test_names_that_collide_are_renamed_or_refused() -> None:
    info = TextsSource(1, fields=("metadata", "document")).describe()
    layout = layout_for(info, "s", None)
    assert layout.column_names == ["id", "embedding", "metadata_text", "document", "metadata"]

    clash = TextsSource(1, fields=("embedding",)).describe()
    with pytest.raises(ConfigError, match="^two fields map to the same column 'embedding'$"):
        layout_for(clash, "s", None)


def test_a_source_without_text_fields_keeps_its_layout_and_rejects_header() -> None:
    info = SourceInfo("qdrant", "docs", "x", FIELDS, (Namespace("", 1),), False)

    assert layout_for(info, "s", None).column_names == ["id", "embedding", "metadata"]
    assert "texts" not in header(info)
