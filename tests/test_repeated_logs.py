"""Repeated client errors are logged once per window, with a count (streams.repeated_logs)."""

from __future__ import annotations

import logging

import pytest

from streams import repeated_logs
from streams.repeated_logs import RepeatFilter


def test_a_repeated_error_passes_once_per_window_then_says_how_many_were_held(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    logger = logging.getLogger("test.repeated_logs")
    logger.addFilter(RepeatFilter(window_s=60, clock=lambda: now[0]))
    with caplog.at_level(logging.ERROR, logger="test.repeated_logs"):
        for _ in range(100):
            logger.error("Topic %s not found in cluster metadata", "shoprank.catalogue")
        logger.error("Topic %s not found in cluster metadata", "shoprank.pixel")  # another topic: its own line
        now[0] = 61.0
        logger.error("Topic %s not found in cluster metadata", "shoprank.catalogue")
    assert [r.getMessage() for r in caplog.records] == [
        "Topic shoprank.catalogue not found in cluster metadata",
        "Topic shoprank.pixel not found in cluster metadata",
        "Topic shoprank.catalogue not found in cluster metadata (and 99 more like this in the last 60 s)",
    ]


def test_install_filters_aiokafkas_noisy_loggers_once() -> None:
    try:
        repeated_logs.install()
        repeated_logs.install()
        for name in repeated_logs.NOISY_LOGGERS:
            assert sum(isinstance(f, RepeatFilter) for f in logging.getLogger(name).filters) == 1, name
    finally:  # the worker installs them in its own process; the other tests here see aiokafka as it is
        for name in repeated_logs.NOISY_LOGGERS:
            logger = logging.getLogger(name)
            for f in [f for f in logger.filters if isinstance(f, RepeatFilter)]:
                logger.removeFilter(f)
