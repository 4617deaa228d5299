"""The dry run predicts the real run: mode, resume and exit code, for every target state and
every set of options (both come from one decision, vec2pg.postgres.plan.decide)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql
from test_pipeline import FakeSource

from vec2pg.errors import SourceError, Vec2pgError
from vec2pg.pipeline import Options, RetryPolicy, migrate, plan
from vec2pg.postgres import PostgresSink
from vec2pg.postgres.sink import SyncOptions
from vec2pg.postgres.state import lock_key
from vec2pg.sources.base import Page

COUNTS = {"a": 30, "b": 20}


class StoppingSource(FakeSource):
    """A FakeSource whose reading stops for good after ``pages`` pages."""

    def __init__(self, pages: int) -> None:
        super().__init__(COUNTS, page_size=10)
        self.pages_left = pages

    def page(self, namespace: str, partition: str, cursor: Any) -> Page:
        if self.pages_left == 0:
            raise SourceError("the source went away")
        self.pages_left -= 1
        return super().page(namespace, partition, cursor)


def run(target, source: FakeSource, **sync: Any) -> Any:
    with sink_for(target, **sync) as sink:
        return migrate(source, sink, options(sync))


def options(sync: dict[str, Any]) -> Options:
    return Options(concurrency=1, retry=RetryPolicy(initial=0.001), namespaces=sync.get("ns", ()))


@contextmanager
def sink_for(target, **sync: Any) -> Iterator[PostgresSink]:
    sync = {k: v for k, v in sync.items() if k != "ns"}
    with PostgresSink(
        target.dsn, schema=target.schema, commit_rows=10, sync=SyncOptions(**sync)
    ) as sink:
        yield sink


def interrupted(target, pages: int, **sync: Any) -> None:
    with pytest.raises(SourceError):
        run(target, StoppingSource(pages), **sync)


def loaded(target) -> None:
    run(target, FakeSource(COUNTS, page_size=10))


def other_columns(target) -> None:
    with target.connect() as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(target.schema)))
        conn.execute(sql.SQL("CREATE TABLE {} (id text, note text)").format(target.table("things")))


STATES: dict[str, Callable[[Any], None]] = {
    "new": lambda target: None,
    "empty table": lambda target: run(target, FakeSource({"a": 0, "b": 0})),
    "loaded": loaded,
    "other columns": other_columns,
    "interrupted load": lambda target: interrupted(target, 2),
    "interrupted merge": lambda target: (loaded(target), interrupted(target, 2)),
    "interrupted prune": lambda target: (loaded(target), interrupted(target, 2, prune=True)),
    "interrupted replace": lambda target: (loaded(target), interrupted(target, 2, replace=True)),
    "interrupted namespace": lambda target: (loaded(target), interrupted(target, 1, ns=("a",))),
}
OPTIONS: dict[str, dict[str, Any]] = {
    "none": {},
    "prune": {"prune": True},
    "replace": {"replace": True},
    "restart": {"restart": True},
    "restart prune": {"restart": True, "prune": True},
    "namespace": {"ns": ("a",)},
    "namespace replace": {"ns": ("a",), "replace": True},
}


def quiet(target) -> None:
    """Wait until the sessions of earlier runs have ended: a closed connection's backend may
    hold its advisory lock for a moment after the client has gone."""
    deadline = time.monotonic() + 10
    while (
        target.query("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'vec2pg'")
        != [(0,)]
        and time.monotonic() < deadline
    ):
        time.sleep(0.01)


def outcome(call: Callable[[], Any]) -> tuple[str | None, bool | None, int]:
    """(mode, resumed, exit code) of a dry run or a run, or (None, None, code) of its error."""
    try:
        result = call()
    except Vec2pgError as exc:
        return None, None, int(exc.exit_code)
    if isinstance(result, dict):  # the dry run's report
        return result["mode"], result["resume"] is not None, 0
    return result.mode, result.resumed, int(result.exit_code)


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("state", list(STATES))
def test_the_dry_run_predicts_the_run(target, state: str, option: str) -> None:
    STATES[state](target)
    quiet(target)
    sync = OPTIONS[option]

    def dry_run() -> dict[str, Any]:
        with sink_for(target, **sync) as sink:
            return plan(FakeSource(COUNTS, page_size=10), sink, options(sync))

    predicted = outcome(dry_run)
    quiet(target)
    actual = outcome(lambda: run(target, FakeSource(COUNTS, page_size=10), **sync))

    assert predicted == actual


def test_a_dry_run_sees_the_lock_of_a_running_run(target) -> None:
    loaded(target)
    with psycopg.connect(target.dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [lock_key(target.schema, "things")])
        with sink_for(target) as sink:
            dry = outcome(lambda: plan(FakeSource(COUNTS), sink, options({})))
        actual = outcome(lambda: run(target, FakeSource(COUNTS)))
    assert dry == actual == (None, None, 7)


def test_after_an_interrupted_run_prune_is_refused_by_the_dry_run_as_by_the_run(target) -> None:
    """The review's case: the dry run said it would resume (exit 0), the run exited 5."""
    loaded(target)
    interrupted(target, 2)
    errors = []
    for call in (
        lambda sink: plan(FakeSource(COUNTS), sink, options({})),
        lambda sink: migrate(FakeSource(COUNTS), sink, options({})),
    ):
        with sink_for(target, prune=True) as sink, pytest.raises(Vec2pgError) as caught:
            call(sink)
        errors.append((caught.value.exit_code, str(caught.value)))

    assert errors[0] == errors[1]
    assert errors[0][0] == 5 and "prune was False, now True" in errors[0][1]
