"""Faust's commit bookkeeping with streams.faust_compat installed: never commit past an unprocessed record.

The consumer here is a stand-in holding only the bookkeeping Faust's ``_new_offset`` reads (acked
offsets, their index, gaps, the committed offset); the functions under test are Faust's own, patched.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest
from faust.transport import consumer as faust_consumer
from faust.types import TP
from intervaltree import IntervalTree

from streams import faust_compat

faust_compat.install()
TOPIC_PARTITION = TP("shoprank.pixel", 0)


class Bookkeeping:
    """What Faust's Consumer keeps per partition for commits, and a seek that only records itself."""

    def __init__(self, committed: int | None, acked: list[int]) -> None:
        self._committed_offset: dict[Any, int | None] = defaultdict(lambda: None, {TOPIC_PARTITION: committed})
        self._acked: dict[Any, list[int]] = defaultdict(list, {TOPIC_PARTITION: list(acked)})
        self._acked_index: dict[Any, set[int]] = defaultdict(set, {TOPIC_PARTITION: set(acked)})
        self._gap: dict[Any, IntervalTree] = defaultdict(IntervalTree)
        self.seeks: list[tuple[Any, int]] = []

    async def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))

    def new_offset(self) -> int | None:
        return faust_consumer.Consumer._new_offset(self, TOPIC_PARTITION)  # type: ignore[arg-type]


def test_faust_alone_would_commit_past_a_missing_next_record() -> None:
    # The defect the guard exists for: offset 10 never processed, 11 and 12 were; Faust commits 13.
    original = faust_compat._faust_new_offset
    assert original(Bookkeeping(10, [11, 12]), TOPIC_PARTITION) == 13


def test_a_missing_next_record_holds_the_commit() -> None:
    book = Bookkeeping(10, [11, 12])
    assert book.new_offset() is None
    assert book._acked[TOPIC_PARTITION] == [11, 12]  # kept for when 10 is done
    book._acked[TOPIC_PARTITION].insert(0, 10)
    book._acked_index[TOPIC_PARTITION].add(10)
    assert book.new_offset() == 13


def test_a_record_missing_for_long_is_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faust_compat, "HEAD_GRACE_S", 0.2)

    async def commits() -> tuple[Bookkeeping, list[list[tuple[Any, int]]]]:
        book = Bookkeeping(10, [11, 12])
        book.__dict__["_shoprank_last_offset"] = {TOPIC_PARTITION: 10}
        seen = []
        for pause in (0.0, 0.25, 0.0):  # first sight; past the grace; right after the seek
            await asyncio.sleep(pause)
            assert book.new_offset() is None
            await asyncio.sleep(0)
            seen.append(list(book.seeks))
        return book, seen

    book, seen = asyncio.run(commits())
    assert seen == [[], [(TOPIC_PARTITION, 10)], [(TOPIC_PARTITION, 10)]]  # once, after the grace, not again at once
    # The redelivery guard must not take the re-read record 10 for one it already handed over.
    assert TOPIC_PARTITION not in book.__dict__["_shoprank_last_offset"]


def test_consecutive_acks_gaps_and_stale_offsets_commit_as_before() -> None:
    assert Bookkeeping(10, [10, 11, 12]).new_offset() == 13
    assert Bookkeeping(None, [4, 5]).new_offset() == 6  # nothing committed yet: where the log starts is unknown
    gapped = Bookkeeping(10, [11, 12])
    gapped._gap[TOPIC_PARTITION].addi(10, 11)  # offset 10 is a known hole (compaction, a control record)
    assert gapped.new_offset() == 13
    stale = Bookkeeping(10, [8, 9, 10, 10, 11])  # a replay acked offsets below the commit, and one twice
    assert stale.new_offset() == 12
    assert stale._acked_index[TOPIC_PARTITION] == set()  # index and list agree: a later ack of 8 or 9 is not lost
