"""The rejects file: records PostgreSQL could not take, whole, with the reason.

A JSON Lines file. The first line describes the source (so that the file can be loaded
again on its own: ``vec2pg jsonl FILE``); each further line is one record::

    {"vec2pg_rejects": 1, "source": "qdrant", "collection": "docs", "namespaced": false,
     "fields": [{"name": "", "kind": "dense", "dim": 4, "metric": "cosine"}]}
    {"namespace": "", "id": "42", "reason": "the vector contains nan; ...",
     "vectors": {"": [0.1, NaN, 0.3, 0.4]}, "metadata": {"title": "..."}}

Dense vectors are lists, multivectors lists of lists, sparse vectors
``{"indices": [...], "values": [...]}``. A source with text fields (Chroma's documents)
names them in the header (``"texts": ["document", "uri"]``) and each line holds their
values (``"texts": {"document": "...", "uri": null}``). Values JSON cannot spell are written as
JavaScript spells them (``NaN``, ``Infinity``), which Python's json module reads back.
Lines are flushed to disk before the transaction that skipped them commits, so a crash
can repeat a line (the reload merges it once) but never lose one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

import numpy as np

from vec2pg.errors import ConfigError, LocalError
from vec2pg.records import (
    Metric,
    Record,
    SourceInfo,
    SparseVector,
    VectorField,
    VectorKind,
    as_array,
)

FORMAT_VERSION = 1


class RejectsFile:
    """Appends rejected records to ``path``, writing the header when the file is new."""

    def __init__(self, path: str | Path, info: SourceInfo) -> None:
        self.path = Path(path)
        self._info = info
        self._pending: list[str] = []
        self._file: IO[str] | None = None
        if os.path.realpath(info.location) == os.path.realpath(self.path):
            raise ConfigError(f"{self.path} is what this run reads: give --rejects another file")
        existing = _first_line(self.path)
        if existing is not None and existing != header(info):
            raise ConfigError(
                f"{self.path} holds the rejects of another collection or of other vectors "
                f"({existing.get('source')} {existing.get('collection')!r}): give --rejects "
                "another file"
            )

    def add(self, record: Record, reason: str) -> None:
        line = {
            "namespace": record.namespace,
            "id": record.id,
            "reason": reason,
            "vectors": {name: _plain(value) for name, value in record.vectors.items()},
            "metadata": record.metadata,
        }
        if record.texts:
            line["texts"] = dict(record.texts)
        text = json.dumps(line, ensure_ascii=False, default=repr)
        try:
            text.encode()
        except UnicodeEncodeError:  # a lone surrogate: escaped, it reads back the same
            text = json.dumps(line, default=repr)
        self._pending.append(text)

    def flush(self) -> None:
        """Write what is pending and make it durable."""
        if not self._pending:
            return
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                new = not self.path.exists() or self.path.stat().st_size == 0
                self._file = self.path.open("a", encoding="utf-8")
                if new:
                    self._file.write(json.dumps(header(self._info), ensure_ascii=False) + "\n")
            self._file.write("\n".join(self._pending) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            # The transaction that skips these records then rolls back: nothing is lost.
            self._abandon()
            raise LocalError(f"cannot write the rejects file {self.path}: {exc}") from exc
        self._pending = []

    def discard(self) -> None:
        """Forget what is pending (its transaction rolled back; it will be read again)."""
        self._pending = []

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _abandon(self) -> None:
        """Close a file that cannot be written, dropping what its buffer still holds."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # the write that failed is already reported
            self._file = None


def _first_line(path: Path) -> dict[str, Any] | None:
    """The header of an existing rejects file, if there is one."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    with path.open(encoding="utf-8") as file:
        try:
            head = json.loads(file.readline())
        except ValueError:
            head = None
    if not isinstance(head, dict) or "vec2pg_rejects" not in head:
        raise ConfigError(
            f"{path} exists and is not a vec2pg rejects file: give --rejects another file"
        )
    return head


def header(info: SourceInfo) -> dict[str, Any]:
    head = {
        "vec2pg_rejects": FORMAT_VERSION,
        "source": info.kind,
        "collection": info.collection,
        "namespaced": info.namespaced,
        "fields": [f.as_dict() for f in info.fields],
    }
    if info.texts:  # only then: the headers of sources without text fields stay as they were
        head["texts"] = list(info.texts)
    return head


def texts_from(head: dict[str, Any]) -> tuple[str, ...]:
    """The text fields a rejects file's header names; ValueError if they are not names."""
    texts = head.get("texts", [])
    if not isinstance(texts, list) or not all(isinstance(t, str) and t for t in texts):
        raise ValueError(f"the text fields {texts!r} are not a list of names")
    return tuple(texts)


def fields_from(head: dict[str, Any]) -> tuple[VectorField, ...]:
    """The vector fields a rejects file's header describes; ValueError naming what is not
    one vec2pg knows."""
    fields = []
    for f in head["fields"]:
        if f.get("kind") not in {kind.value for kind in VectorKind}:
            known = ", ".join(kind.value for kind in VectorKind)
            raise ValueError(
                f"vector {f.get('name')!r} has the unknown kind {f.get('kind')!r} "
                f"(vec2pg knows {known})"
            )
        if f.get("metric") and f["metric"] not in {metric.value for metric in Metric}:
            raise ValueError(f"vector {f.get('name')!r} has the unknown metric {f['metric']!r}")
        fields.append(
            VectorField(
                f["name"],
                VectorKind(f["kind"]),
                f["dim"],
                Metric(f["metric"]) if f.get("metric") else None,
                bool(f.get("half", False)),
            )
        )
    return tuple(fields)


def record_from(line: dict[str, Any], fields: dict[str, VectorField]) -> Record:
    """A record from one line of a rejects file (one whose vectors are no vectors, edited
    by hand, is rejected again with the reason)."""
    vectors: dict[str, Any] = {}
    problems = []
    for name, value in (line.get("vectors") or {}).items():
        field = fields.get(name)
        sparse = field.kind is VectorKind.SPARSE if field is not None else isinstance(value, dict)
        try:
            if value is None:
                vectors[name] = None
            elif sparse:
                vectors[name] = SparseVector(
                    np.asarray(value["indices"], dtype=np.int64),
                    np.asarray(value["values"], dtype=np.float32),
                )
            elif field is not None and field.kind is VectorKind.BINARY:
                vectors[name] = np.asarray(value, dtype=np.uint8)
            else:
                vectors[name] = as_array(value, name)
        except (ValueError, TypeError, KeyError) as exc:
            vectors[name] = value
            problems.append(
                str(exc) if isinstance(exc, ValueError) else f"vector {name!r} is malformed"
            )
    texts = line.get("texts") or {}
    if not isinstance(texts, dict):
        problems.append("its text fields are not an object")
        texts = {}
    for name, value in texts.items():
        if value is not None and not isinstance(value, str):
            problems.append(f"the text field {name!r} is not text")
    return Record(
        str(line["id"]),
        vectors,
        line.get("metadata"),
        str(line.get("namespace", "")),
        invalid="; ".join(problems) or None,
        texts=texts,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, SparseVector):
        return {"indices": value.indices.tolist(), "values": value.values.tolist()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
