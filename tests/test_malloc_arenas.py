"""The worker's cap on glibc malloc arenas: counted with glibc's own malloc_info in a fresh interpreter."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's")

# Eight threads allocate at once (blocks under the mmap threshold come from the thread's arena), then
# glibc's malloc_info lists one <heap> per arena in use.
_PROBE = r"""
import ctypes, os, sys, tempfile, threading
from streams.malloc_arenas import limit_malloc_arenas
print("capped" if limit_malloc_arenas(int(sys.argv[1])) else "default")
barrier = threading.Barrier(8)
held = []
def work():
    barrier.wait()
    held.append([bytearray(64 * 1024) for _ in range(16)])
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL("libc.so.6")
libc.fdopen.restype = ctypes.c_void_p
with tempfile.TemporaryFile() as f:
    stream = libc.fdopen(os.dup(f.fileno()), b"w")
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    f.seek(0)
    print(f.read().decode().count("<heap nr="))
"""


def _arenas(cap: int) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE, str(cap)], capture_output=True, text=True, timeout=60, check=True)
    mode, heaps = out.stdout.split()
    return mode, int(heaps)


def test_capped_threads_share_two_arenas_where_glibc_would_give_each_its_own() -> None:
    assert _arenas(2) == ("capped", 2)
    mode, heaps = _arenas(0)
    assert mode == "default"
    assert heaps >= 8  # the main arena and one per thread: what the cap is for



_TRIM_PROBE = r"""
from streams.malloc_arenas import trim_free_memory
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
blocks = [bytearray(64 * 1024) for _ in range(3200)]  # 200 MB on malloc's heap, under the mmap threshold
kept = blocks[::10]  # every tenth stays: the freed ones are holes, below the heap's top
del blocks
before = rss_mb()
trimmed = trim_free_memory()
print(before, rss_mb(), trimmed)
"""


def test_trim_gives_freed_holes_back_to_the_system() -> None:
    out = subprocess.run([sys.executable, "-c", _TRIM_PROBE], capture_output=True, text=True, check=True, timeout=60)
    before, after, trimmed = out.stdout.split()
    assert trimmed == "True"
    assert int(before) - int(after) > 100, out.stdout  # 180 MB were free in the holes
