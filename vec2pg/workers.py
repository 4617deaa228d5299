"""Decoding and encoding pages in other processes.

A Pinecone fetch answer holds about 11 kB of JSON per 1,024-dim record. Turning it into
float32 vectors and then into binary COPY rows costs some 80 us of CPU per record, all of
it with Python's GIL held (simdjson and orjson keep it), which capped a run at about
7,000 records/s however many cores the machine has. So the pipeline's threads only make
the requests (their network waits release the GIL) and, for a source whose pages come
with :attr:`~vec2pg.sources.base.Page.read`, hand each answer to these processes, which
decode and encode it and send back rows ready for COPY.

The processes are started with ``spawn`` (forking a process that runs threads is
unsafe), as soon as the table is known, so that they start while the run still lists
ids. They ignore Ctrl-C: the pipeline stops them. If the run itself is killed (``kill
-9``, the OOM killer, a cron ``timeout``), they end too: a pool's worker would otherwise
wait for work for ever, as it holds its task queue's writing end itself.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from vec2pg import memory
from vec2pg.postgres.encode import EncodedRows, PageEncoder
from vec2pg.sources.base import Raw

#: At most this many processes by default: 4 decode more than Pinecone lets one index
#: serve (about 100 fetches of 100 records a second).
MAX_PROCESSES = 4
#: Below this many records starting processes (0.12 s of CPU and 32 MB each, and their
#: pages' trips through pipes) costs more than it saves.
MIN_RECORDS = 20_000

#: Pages decoded between two trims of the process's free memory (:func:`memory.trim`).
TRIM_EVERY = 10

#: The signals that stop a run: its processes ignore them, as the run stops them itself.
_STOPPING = (signal.SIGINT, signal.SIGTERM)
_DEFAULTS: dict[int, Any] = {
    signal.SIGINT: signal.default_int_handler,
    signal.SIGTERM: signal.SIG_DFL,
}

_encoder: PageEncoder | None = None
_decoded = 0


def default_count(records: int | None) -> int:
    """How many processes to decode ``records`` records with: none for a small
    collection or a single CPU, else one per CPU up to :data:`MAX_PROCESSES`. An unknown
    count (None) is a large collection: a source counts exactly what it can count cheaply
    (S3 Vectors, up to 512,000 vectors), and says None only beyond that."""
    cpus = available_cpus()
    if cpus < 2 or (records is not None and records < MIN_RECORDS):
        return 0
    return min(cpus, MAX_PROCESSES)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity: a container's or taskset's share,
    not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def start(count: int, encoder: PageEncoder) -> ProcessPoolExecutor:
    """Start ``count`` processes that run :func:`decode` with ``encoder``."""
    pool = ProcessPoolExecutor(
        count,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_started,
        initargs=(encoder,),
    )
    # Each submission starts a process while none is idle. A Ctrl-C (or a SIGTERM sent to
    # the whole process group, as systemd does) while a process imports, before it can
    # ignore it, would print its traceback or kill it, and break the pool: they start with
    # both ignored (a disposition exec keeps), then the parent takes them back.
    main = threading.current_thread() is threading.main_thread()
    handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in _STOPPING} if main else {}
    try:
        for _ in range(count):
            pool.submit(os.getpid)
    finally:
        for sig, handler in handlers.items():
            # None: a handler installed outside Python, which Python cannot put back.
            signal.signal(sig, handler if handler is not None else _DEFAULTS[sig])
    return pool


def _started(encoder: PageEncoder) -> None:
    global _encoder
    for sig in _STOPPING:
        signal.signal(sig, signal.SIG_IGN)
    _encoder = encoder
    threading.Thread(target=_end_with_parent, name="vec2pg-parent", daemon=True).start()


def _end_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is not None:
        parent.join()  # returns when the parent has ended, however it ended
        os._exit(1)


def decode(raw: Raw) -> EncodedRows:
    """A page's records as binary COPY rows (run in a process :func:`start` started)."""
    global _decoded
    assert _encoder is not None, "a process of workers.start()"
    rows = _encoder(raw.decode(raw.payload))
    _decoded += 1
    if _decoded % TRIM_EVERY == 0:
        memory.trim()
    return rows
