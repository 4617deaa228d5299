"""A rejects file (or any file in its format) as a source: ``vec2pg jsonl FILE``.

It reloads records that an earlier run skipped, once their cause is fixed (the file edited,
or the target changed), into the same table: its header names the source's collection and
vector fields. The cursor of a namespace is a byte offset into the file.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from functools import partial
from typing import Any

from vec2pg.errors import ConfigError, SourceError
from vec2pg.records import Cursor, Namespace, Record, SourceInfo
from vec2pg.rejects import fields_from, record_from, texts_from
from vec2pg.sources.base import WHOLE, Call, Page

#: Records per page.
PAGE_SIZE = 500


class JsonlSource:
    """Read the records of a rejects file."""

    def __init__(self, path: str) -> None:
        if not os.path.isfile(path):
            raise ConfigError(f"no such file: {path}")
        self.path = path
        self._fields: dict[str, Any] = {}

    def describe(self) -> SourceInfo:
        with open(self.path, encoding="utf-8") as file:
            head = self._parse(file.readline(), 1)
            if "vec2pg_rejects" not in head:
                raise SourceError(f"{self.path}:1: not a vec2pg rejects file (no header line)")
            try:
                fields = fields_from(head)
            except (ValueError, KeyError, TypeError) as exc:
                reason = str(exc) if isinstance(exc, ValueError) else f"no {exc} in its fields"
                raise SourceError(f"{self.path}:1: the header's vectors: {reason}") from None
            try:
                texts = texts_from(head)
            except ValueError as exc:
                raise SourceError(f"{self.path}:1: the header's texts: {exc}") from None
            self._fields = {f.name: f for f in fields}
            counts: Counter[str] = Counter()
            for number, line in enumerate(file, start=2):
                if line.strip():
                    counts[str(self._parse(line, number).get("namespace", ""))] += 1
        return SourceInfo(
            kind=str(head["source"]),
            collection=str(head["collection"]),
            location=os.path.abspath(self.path),
            fields=fields,
            namespaces=tuple(Namespace(name, n) for name, n in sorted(counts.items())),
            namespaced=bool(head["namespaced"]),
            complete=False,
            texts=texts,
        )

    def partitions(
        self, namespace: str, count: int | None, want: int, call: Call
    ) -> tuple[str, ...]:
        return (WHOLE,)

    def page(self, namespace: str, partition: str, cursor: Cursor) -> Page:
        records: list[Record] = []
        with open(self.path, "rb") as file:
            if cursor is None:
                file.readline()  # the header
            else:
                file.seek(int(cursor))
            while len(records) < PAGE_SIZE:
                raw = file.readline()
                if not raw:
                    return Page(load=partial(list, records), next_cursor=None, size=len(records))
                if not raw.strip():
                    continue
                line = self._parse(raw.decode("utf-8"), None)
                if str(line.get("namespace", "")) == namespace:
                    records.append(record_from(line, self._fields))
            offset = file.tell()
        return Page(load=partial(list, records), next_cursor=offset, size=len(records))

    def close(self) -> None:
        pass

    def _parse(self, line: str, number: int | None) -> dict[str, Any]:
        try:
            value = json.loads(line)
        except ValueError as exc:
            where = f"{self.path}:{number}" if number else self.path
            raise SourceError(f"{where}: not a JSON line ({exc})") from None
        if not isinstance(value, dict):
            raise SourceError(f"{self.path}: a line is not a JSON object")
        return value
