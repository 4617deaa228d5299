"""Showing a run: a rich progress bar on a terminal, plain log lines elsewhere, or nothing.

Progress and messages go to stderr, so that stdout carries only the summary (or, with
``--json``, one JSON object).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from vec2pg.pipeline import Summary
from vec2pg.records import SourceInfo


def _source_line(info: SourceInfo, target: str, total: int | None, committed: int) -> str:
    count = "an unknown number of" if total is None else f"{total:,}"
    n = len(info.namespaces)
    spaces = f" in {n} namespace{'s' * (n != 1)}" if info.namespaced else ""
    resumed = (
        f" (resuming: {committed:,} are in the table from the interrupted run)" if committed else ""
    )
    return (
        f"{info.kind} {info.collection!r} at {info.location}: {count} records{spaces} -> "
        f"{target}{resumed}"
    )


class RichEvents:
    """A live progress bar with records/s and an ETA from the exact count."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._index_task: TaskID | None = None

    def started(self, info: SourceInfo, target: str, total: int | None, committed: int = 0) -> None:
        self.console.print(_source_line(info, target, total, committed))
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} rec/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        # A resumed run's bar starts where the interrupted ones left the table.
        self._task = self._progress.add_task(
            info.collection, total=total, completed=committed, rate="-"
        )
        self._started = time.monotonic()
        self._done = 0

    def advanced(self, namespace: str, records: int) -> None:
        if self._progress is None or self._task is None:
            return
        self._done += records
        elapsed = time.monotonic() - self._started
        rate = f"{self._done / elapsed:,.0f}" if elapsed > 0 else "-"
        label = f"{namespace or '(default)'}" if namespace else None
        fields: dict[str, Any] = {"rate": rate}
        if label:
            fields["description"] = label
        self._progress.update(self._task, advance=records, **fields)

    def retrying(self, message: str, attempt: int, wait: float) -> None:
        self.console.print(f"[yellow]retrying in {wait:.1f}s (attempt {attempt} failed): {message}")

    def indexing(self, phase: str, done: int, total: int) -> None:
        if self._progress is None:
            return
        if self._index_task is None:
            self._index_task = self._progress.add_task("index", total=total or None, rate="-")
        self._progress.update(
            self._index_task, description=phase, completed=done, total=total or None
        )

    def note(self, message: str) -> None:
        self.console.print(message)

    def finished(self, summary: Summary) -> None:
        self.stop()

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class PlainEvents:
    """Log lines for cron and CI: the start, one line every ``interval`` seconds, the end."""

    def __init__(self, stream: TextIO | None = None, interval: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.interval = interval
        self._done = 0
        self._committed = 0
        self._total: int | None = None
        self._started = self._last = time.monotonic()
        self._phase: str | None = None

    def _log(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        print(f"{stamp} vec2pg: {text}", file=self.stream, flush=True)

    def started(self, info: SourceInfo, target: str, total: int | None, committed: int = 0) -> None:
        self._total = total
        self._committed = committed
        self._started = self._last = time.monotonic()
        self._log(_source_line(info, target, total, committed))

    def advanced(self, namespace: str, records: int) -> None:
        self._done += records
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            of = f"/{self._total:,}" if self._total is not None else ""
            rate = self._done / (now - self._started)
            self._log(f"{self._committed + self._done:,}{of} records ({rate:,.0f}/s)")

    def retrying(self, message: str, attempt: int, wait: float) -> None:
        self._log(f"retrying in {wait:.1f}s (attempt {attempt} failed): {message}")

    def indexing(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if phase != self._phase or now - self._last >= self.interval:
            self._phase, self._last = phase, now
            self._log(f"index: {phase}" + (f" {done:,}/{total:,}" if total else ""))

    def note(self, message: str) -> None:
        self._log(message)

    def finished(self, summary: Summary) -> None:
        pass

    def stop(self) -> None:
        pass


class QuietEvents(PlainEvents):
    """Nothing but retries and notes (so that a slow run is explained) on stderr."""

    def started(self, info: SourceInfo, target: str, total: int | None, committed: int = 0) -> None:
        pass

    def advanced(self, namespace: str, records: int) -> None:
        pass

    def indexing(self, phase: str, done: int, total: int) -> None:
        pass


def summary_text(summary: Summary) -> str:
    """The closing lines a person reads."""
    rate = f"in {summary.seconds:,.1f}s ({summary.records_per_second:,.0f} records/s)"
    if summary.mode == "merge":
        head = (
            f"resynced {summary.target}: {summary.read:,} records read, {_changes(summary)} {rate}"
        )
    elif summary.mode == "replace":
        head = f"{summary.written:,} records written to a new {summary.target}, swapped in {rate}"
    else:
        head = f"{summary.written:,} records written to {summary.target} {rate}"
    resumed = ""
    if summary.resumed:
        resumed = " (resumed an interrupted run"
        if summary.committed_before:
            in_all = summary.committed_before + summary.read
            resumed += f": {in_all:,} records in all, {summary.committed_before:,} of them before"
        resumed += ")"
    lines = [head + resumed]
    if len(summary.namespaces) > 1 or any(summary.namespaces):
        for name, ns in summary.namespaces.items():
            c = ns.counts
            detail = (
                _changes_of(c.inserted, c.updated, c.unchanged, c.deleted)
                if summary.mode == "merge"
                else f"{c.written:,} written"
            )
            lines.append(f"  namespace {name or '(default)'!s}: {detail}")
    for name, ns in summary.namespaces.items():
        if not summary.resumed and ns.expected is not None and ns.expected != ns.counts.read:
            where = f"namespace {name!r}" if name else "the source"
            lines.append(
                f"  note: {where} reported {ns.expected:,} records, "
                f"and {ns.counts.read:,} were read "
                "(records were added or deleted during the run, or its count is approximate)"
            )
    if summary.retries:
        lines.append(f"  {summary.retries} transient failures were retried")
    for name in summary.indexes:
        lines.append(f"  built index {name} (then ANALYZE)")
    if summary.indexes:
        lines.append(f"  the index build took {summary.index_seconds:,.1f}s")
    if summary.reconnects:
        lines.append(
            f"  the connection to PostgreSQL was re-established {summary.reconnects} times"
        )
    return "\n".join(lines)


def _changes(summary: Summary) -> str:
    return _changes_of(*(summary.total(n) for n in ("inserted", "updated", "unchanged", "deleted")))


def _changes_of(inserted: int, updated: int, unchanged: int, deleted: int) -> str:
    return (
        f"{inserted:,} inserted, {updated:,} updated, {unchanged:,} unchanged, {deleted:,} deleted"
    )


def plan_text(report: dict[str, Any]) -> str:
    """A dry run's report, as a person reads it."""
    counts = report["namespaces"]
    total = None if None in counts.values() else sum(counts.values())
    lines = [
        "dry run: nothing was written",
        f"source: {report['source']} {report['collection']!r} at {report['location']}: "
        f"{'?' if total is None else f'{total:,}'} records",
    ]
    for name, count in counts.items():
        if name:
            lines.append(f"  namespace {name}: {'?' if count is None else f'{count:,}'} records")
    for vector in report["vectors"]:
        dim = f", {vector['dim']} dimensions" if vector["dim"] else ""
        name = vector["name"] or "(default)"
        lines.append(f"  vector {name}: {vector['kind']}{dim}, metric {vector['metric']}")
    rows = "" if report["rows"] is None else f" (holds {report['rows']:,} rows)"
    lines.append(f"target: {report['target']}{rows}")
    what = {
        "load": "load the table (COPY, then the primary key)",
        "merge": "resync: merge into the table, leaving unchanged rows alone",
        "replace": "load a new table and swap it in",
    }[report["mode"]]
    lines.append(f"  would {what}")
    if report["resume"]:
        resume = report["resume"]
        lines.append(f"  would resume unfinished run #{resume['run']} started {resume['started']}")
    for statement in report["ddl"]:
        lines.append(f"  would run: {statement}")
    lines += [f"  {line}" for line in report.get("size_lines", ())]
    return "\n".join(lines)
