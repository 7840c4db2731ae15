"""Freezing settled objects out of full garbage collections (streams.gc_freeze), in this process."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streams.gc_freeze import GcFreezer


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> tuple[Node, weakref.ref[Node]]:
    """Two objects that refer to each other: only the cycle collector frees them once dropped."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a, weakref.ref(b)


def tracked(obj: object) -> bool:
    """Whether ``obj`` is in a generation that collections walk (frozen objects are in none)."""
    return any(o is obj for o in gc.get_objects())


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.collect()
    yield
    gc.unfreeze()
    gc.collect()


def test_freeze_moves_survivors_out_of_collections_but_collects_garbage_first() -> None:
    freezer = GcFreezer(reclaim_every_s=0)
    kept, _ = cycle()
    young, young_ref = cycle()
    old, old_ref = cycle()
    gc.collect(1)
    gc.collect(1)  # ``old`` is in the oldest generation now, where young collections do not look
    del young, old  # garbage already: the collection before the freeze must free them, not freeze them
    assert young_ref() is not None and old_ref() is not None and tracked(kept)
    freezer.freeze()
    assert young_ref() is None and old_ref() is None
    assert not tracked(kept) and freezer.frozen() > 0 and freezer.stats.freezes == 1


def test_a_frozen_cycle_waits_for_the_reclaim() -> None:
    freezer = GcFreezer(reclaim_every_s=0)
    held, ref = cycle()
    freezer.freeze()
    del held  # garbage now, but frozen: ordinary collections do not see it
    gc.collect()
    assert ref() is not None
    assert freezer.reclaim() >= 2
    assert ref() is None
    s = freezer.stats
    assert s.reclaims == 1 and s.last_reclaimed == s.reclaimed >= 2 and s.last_reclaim_s is not None
    survivor = Node()
    freezer.reclaim()  # what survives a reclaim is frozen again
    assert not tracked(survivor)


def test_tick_reclaims_when_due_and_freezes_otherwise() -> None:
    never = GcFreezer(reclaim_every_s=0)
    never.tick()
    never.tick()
    assert never.stats.freezes == 2 and never.stats.reclaims == 0
    due = GcFreezer(reclaim_every_s=1e-9)
    due.tick()
    assert due.stats.reclaims == 1 and due.stats.freezes == 0
    hourly = GcFreezer(reclaim_every_s=3600)
    hourly.tick()
    assert hourly.stats.reclaims == 0 and hourly.stats.freezes == 1
