"""Process-wide memory settings for long runs."""

from __future__ import annotations

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
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    except (OSError, AttributeError):  # not glibc (macOS, Windows): nothing to do
        pass
