"""The learning agent says when records of a partition never reached it (a jump in its offsets)."""

from __future__ import annotations

import logging

import pytest

from streams.learning import LearningPipeline


def _agent() -> LearningPipeline:
    # Only the bookkeeping _note_jump uses: the agent's wiring needs a Faust app and a broker.
    agent = LearningPipeline.__new__(LearningPipeline)
    agent.topic_name = "shoprank.interactions"
    agent._handed = {}
    return agent


def test_a_jump_in_a_partitions_offsets_is_logged_with_the_records_that_never_came(
        caplog: pytest.LogCaptureFixture) -> None:
    agent = _agent()
    with caplog.at_level(logging.WARNING, logger="streams.learning"):
        for offset in (2485, 2486, 3159, 3160):
            agent._note_jump(3, offset)
    jumps = [r.getMessage() for r in caplog.records]
    assert jumps == ["shoprank.interactions[3]: record 3159 handed over after 2486: "
                     "records 2487-3158 never reached the learning agent"]


def test_records_in_order_a_replay_and_other_partitions_are_no_jump(caplog: pytest.LogCaptureFixture) -> None:
    agent = _agent()
    with caplog.at_level(logging.WARNING, logger="streams.learning"):
        for partition, offset in ((0, 10), (0, 11), (3, 500), (0, 12), (0, 7), (0, 8), (3, 501)):
            agent._note_jump(partition, offset)  # 7 after 12: read again after a seek back, not a jump
    assert caplog.records == []
