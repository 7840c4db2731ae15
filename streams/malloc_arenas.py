"""Caps how many malloc arenas glibc keeps for the worker's threads.

glibc hands each new thread an arena of its own, up to 8 per core, and an arena keeps what its thread
freed for that thread to reuse. The worker runs ONNX on one thread per core, the store, Faust's
consumer and RocksDB on theirs: at 50,000 products the worker held about 200 MB more with glibc's default
than with two arenas (bench_search; README, "Memory:"). ``MALLOC_ARENA_MAX`` in the
environment does the same, but only if every launcher (CLI, docker, supervisor) sets it; this runs in
the worker.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import platform

__all__ = ["limit_malloc_arenas", "trim_free_memory"]

log = logging.getLogger(__name__)

#: mallopt's parameter number for the arena cap (glibc malloc.h).
_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's arenas at ``arenas`` for threads that allocate from now on; True if the cap is set.

    Call it before the process starts its threads: a thread that already has an arena keeps it.
    ``arenas`` 0 leaves glibc's default. Elsewhere than glibc (musl, macOS) it does nothing.
    """
    if arenas <= 0 or platform.libc_ver()[0] != "glibc":
        return False
    try:
        ok = bool(_glibc().mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError) as exc:  # no mallopt in this libc: memory use as before
        log.warning("could not cap malloc arenas at %d: %s", arenas, exc)
        return False
    if not ok:
        log.warning("mallopt refused to cap malloc arenas at %d", arenas)
    return ok


def trim_free_memory() -> bool:
    """Give the pages that malloc holds free back to the system (glibc ``malloc_trim(0)``); True if any went.

    Freed memory stays resident in its arena until the arena's top is free; a bulk load leaves much of
    it in the middle. Elsewhere than glibc it does nothing.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        return bool(_glibc().malloc_trim(0))
    except (OSError, AttributeError) as exc:
        log.debug("malloc_trim is not available: %s", exc)
        return False


@functools.cache
def _glibc() -> ctypes.CDLL:
    """The C library, loaded once (trim_free_memory runs after every index build)."""
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
