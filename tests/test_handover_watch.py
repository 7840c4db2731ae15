"""An agent says when records of a partition never reached it (a jump in the offsets it is handed)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from streams.batching import HandOverWatch


def test_a_jump_in_a_partitions_offsets_is_logged_with_the_records_that_never_came(
        caplog: pytest.LogCaptureFixture) -> None:
    watch = HandOverWatch("learning agent")
    with caplog.at_level(logging.WARNING, logger="streams.batching"):
        for offset in (2485, 2486, 3159, 3160):
            watch.note("shoprank.interactions", 3, offset)
    jumps = [r.getMessage() for r in caplog.records]
    assert jumps == ["shoprank.interactions[3]: record 3159 handed over after 2486: "
                     "records 2487-3158 never reached the learning agent"]


def test_records_in_order_a_replay_and_other_partitions_are_no_jump(caplog: pytest.LogCaptureFixture) -> None:
    watch = HandOverWatch("pixel agent")
    handed = [("pixel", 0, 10), ("pixel", 0, 11), ("pixel", 3, 500), ("pixel", 0, 12), ("searches", 0, 90),
              ("pixel", 0, 7), ("pixel", 0, 8), ("pixel", 3, 501), ("searches", 0, 91)]
    with caplog.at_level(logging.WARNING, logger="streams.batching"):
        for topic, partition, offset in handed:  # 7 after 12: read again after a seek back, not a jump
            watch.note(topic, partition, offset)
    assert caplog.records == []


def test_after_a_recovery_the_next_record_is_no_jump(caplog: pytest.LogCaptureFixture) -> None:
    watch = HandOverWatch("learning agent")
    watch.note("shoprank.interactions", 0, 100)
    asyncio.run(watch.forget())  # a rebalance: another worker may have read 101-499 meanwhile
    with caplog.at_level(logging.WARNING, logger="streams.batching"):
        watch.note("shoprank.interactions", 0, 500)
    assert caplog.records == []
