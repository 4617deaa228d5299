"""Process-wide memory settings for long runs (glibc's malloc; elsewhere they do nothing)."""

from __future__ import annotations

import functools
from typing import Any

#: glibc's mallopt() parameter for the size from which a block is mapped on its own.
M_MMAP_THRESHOLD = -3


def release_large_blocks() -> None:
    """Keep a long run's memory flat on glibc.

    glibc maps a block of 128 kB or more and unmaps it on free, but raises that threshold
    each time such a block is freed; after that the megabyte-sized answers, buffers and
    arrays a run allocates by the thousand come from the heaps of a dozen threads, which
    fragment and stay resident (peak RSS grew 25% from 50,000 to 200,000 records). A fixed
    threshold keeps every large block mapped, and returned to the system when freed.

    It is not free: mapping and faulting in every block cost a third more system time, and
    a quarter of the records/s of a Pinecone run decoded by its threads. Decoding processes
    (:mod:`vec2pg.workers`) have one thread each and stay flat without it.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)


def trim() -> None:
    """Give the memory malloc holds free back to the system (glibc's malloc_trim).

    A run's megabyte-sized answers and rows, allocated and freed by many threads, leave
    free memory scattered in malloc's heaps, which stays resident: trimmed now and then
    (about a millisecond), a run's memory stays at what it uses. Measured on 50,000 and
    200,000 records (vec2pg and its decoding processes): 219 and 220 MiB untrimmed, with
    the 200,000-record peaks up to 10% above the other's in the bench; 206 and 203 MiB
    trimmed.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _glibc() -> Any:
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 (glibc's, or AttributeError)
    except (OSError, AttributeError):  # not glibc (macOS, Windows): nothing to do
        return None
    return libc
