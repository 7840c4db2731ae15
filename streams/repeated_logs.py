"""Repeated client errors logged once per window, with a count, instead of thousands of times.

While the broker is away or has lost its topics, aiokafka logs the same error for every fetch, metadata
refresh and reconnect: "Topic ... not found in cluster metadata", "Failed fetch messages from 111",
"Unable connect to node". A worker whose embedded broker restarted wrote 6,000 such lines in two minutes
(tests/test_faults_more.py), which buried the lines that said what happened (the loss report, the
topics created again) and filled CI's log tail. :func:`install` lets each distinct message through once
per :data:`WINDOW_S` per logger; the next one after the window says how many were held back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["NOISY_LOGGERS", "WINDOW_S", "RepeatFilter", "install"]

#: aiokafka's loggers that repeat one error per request while the broker is away.
NOISY_LOGGERS = ("aiokafka", "aiokafka.client", "aiokafka.cluster", "aiokafka.conn",
                 "aiokafka.consumer.fetcher", "aiokafka.consumer.group_coordinator", "aiokafka.producer.sender")
WINDOW_S = 60.0


class RepeatFilter(logging.Filter):
    """Passes a message (its logger, level, format and arguments) once per ``window_s``."""

    def __init__(self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s = window_s
        self._clock = clock
        self._seen: dict[tuple[object, ...], tuple[float, int]] = {}  # key -> (passed at, held back since)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            key: tuple[object, ...] = (record.name, record.levelno, record.msg, *map(str, record.args or ()))
        except Exception:  # noqa: BLE001 - an argument that cannot be shown: let the record through
            return True
        now = self._clock()
        passed = self._seen.get(key)
        if passed is not None and now - passed[0] < self.window_s:
            self._seen[key] = (passed[0], passed[1] + 1)
            return False
        held = passed[1] if passed is not None else 0
        if len(self._seen) > 10_000:  # messages that name ever-new things: forget the old ones
            self._seen.clear()
        self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} (and {held} more like this in the last {self.window_s:.0f} s)"
        return True


def install(window_s: float = WINDOW_S) -> None:
    """Filter :data:`NOISY_LOGGERS` (idempotent: a logger keeps the filter it has)."""
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in logger.filters):
            logger.addFilter(RepeatFilter(window_s))
