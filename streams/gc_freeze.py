"""Short garbage-collection pauses in a long-running worker: long-lived objects are frozen as they settle.

CPython's cycle collector walks every tracked object of the oldest generation in each full collection,
and runs one whenever a quarter more objects than at the last one have survived into that generation.
The worker's long-lived objects pile up there as it serves: search hits' payloads and their feature
parts (caches of up to 20,000 entries each, several objects per product), ranker state, Faust's
buffers. At 10,000 products a full collection walked about 74,000 of them and took 22-40 ms, every
3.5 s under 100 searches/s; every search in flight waited for it, and those bursts were the Kafka p99
(bench_search: p99 33-47 ms, the slowest 1% in bursts 3.5 s apart, each led by one search whose own
server time was 30-35 ms).

:class:`GcFreezer` collects what is not frozen yet and moves the survivors into the permanent
generation every few seconds (``gc.freeze``: a list splice, no walk). Full collections then walk only
what is younger than the last freeze: under a millisecond in the same run. Frozen objects are still freed by reference
counting, as almost all are; only garbage cycles among them wait, for :meth:`GcFreezer.reclaim`,
which unfreezes, collects everything and freezes again every ``SHOPRANK_WORKER_GC_RECLAIM_S``: one
long pause (about 0.1 s) in that interval instead of one every few seconds. What each reclaim found
is in ``/metrics`` (``shoprank_gc_reclaimed_objects``): the garbage freezing held back meanwhile.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

__all__ = ["FreezeStats", "GcFreezer"]


@dataclass
class FreezeStats:
    freezes: int = 0
    reclaims: int = 0
    #: objects the last reclaim found unreachable, and over all reclaims
    last_reclaimed: int = 0
    reclaimed: int = 0
    last_reclaim_s: float | None = None


class GcFreezer:
    """Freeze (:meth:`freeze`) on a short timer; :meth:`tick` reclaims instead when one is due."""

    def __init__(self, reclaim_every_s: float) -> None:
        self.reclaim_every_s = reclaim_every_s
        self.stats = FreezeStats()
        self._reclaimed_at = time.monotonic()

    def freeze(self) -> None:
        """Collect what is not frozen yet (its garbage must not be frozen), then freeze what is left.

        A full collection, but a short one: it walks only the objects that arrived since the last freeze.
        Collecting only the young generations first left the garbage cycles already promoted to the
        oldest one to be frozen with the rest: indexing 40,000 products, the worker grew by 175 MB.
        """
        gc.collect()
        gc.freeze()
        self.stats.freezes += 1

    def reclaim(self) -> int:
        """Collect everything, frozen objects included, and freeze the survivors; objects found unreachable."""
        started = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self._reclaimed_at = time.monotonic()
        s = self.stats
        s.reclaims += 1
        s.last_reclaimed = found
        s.reclaimed += found
        s.last_reclaim_s = round(time.perf_counter() - started, 4)
        return found

    def tick(self) -> None:
        if self.reclaim_every_s > 0 and time.monotonic() - self._reclaimed_at >= self.reclaim_every_s:
            self.reclaim()
        else:
            self.freeze()

    @staticmethod
    def frozen() -> int:
        """Objects in the permanent generation now."""
        return gc.get_freeze_count()
