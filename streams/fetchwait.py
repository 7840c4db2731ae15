"""Fetch waits that grow while the broker answers fetches with nothing it has, and shrink back after.

Tansu, the embedded broker, walks a partition's record batches to build a fetch answer, and when the
consumer's ``fetch_max_wait_ms`` runs out first it answers with no records at all, however many it
holds. Measured on one partition of 60,000 single-record batches: with a 20 ms wait a consumer read
nothing in 4 s, from any offset; with 100 ms it read 49,000 records/s. Faust's changelogs and the search
results topic are written a few records at a time and Tansu never compacts them, so a worker on the low
wait that search latency needs (``SHOPRANK_KAFKA_FETCH_MAX_WAIT_MS``, 20 ms) would one day read nothing
more: a table recovery that never ends after a restart, a consumer whose lag only grows.

:func:`install` patches aiokafka's fetcher, for every consumer in the process (Faust's included): when
fetches at the same position of a partition bring no records :data:`STRIKES` times in a row although
the answers say the partition has records past it (high-watermark above the fetch offset), that
consumer's wait doubles, up to :data:`MAX_WAIT_MS`; after :data:`RELAX_AFTER` fetches in a row that
brought records, it halves again, never below the configured one. One empty answer is not enough: a
record appended while the broker held the fetch raises the high-watermark of an answer that could not
carry it yet, and the next fetch brings it. Apache Kafka answers as soon as records are there, so
there the wait stays as configured.

:class:`IdleFetchWait` goes the other way for one consumer, the search requests': a longer wait while
nothing comes, so that an idle worker does not fetch empty partitions every few milliseconds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.structs import TopicPartition

__all__ = ["IDLE_AFTER_S", "MAX_WAIT_MS", "RELAX_AFTER", "STRIKES", "IdleFetchWait", "install"]

log = logging.getLogger(__name__)

#: The longest wait a consumer grows to (a fetch of a very long Tansu partition takes this long).
MAX_WAIT_MS = 1_000
#: Fetches with records, in a row, after which a grown wait is halved again.
RELAX_AFTER = 50
#: Empty-handed answers at one position of a partition, in a row, that make a consumer wait longer.
STRIKES = 3
#: After this long without records, :class:`IdleFetchWait` switches its consumer to the idle wait.
IDLE_AFTER_S = 1.0

_installed = False


def install() -> None:
    """Patch aiokafka's :class:`Fetcher` once per process (idempotent)."""
    global _installed
    if _installed:
        return
    original = Fetcher._proc_fetch_request

    async def adaptive_proc_fetch_request(self: Any, assignment: Any, node_id: int, request: Any) -> Any:
        asked: dict[TopicPartition, int] = {}
        for topic, partitions in request.topics:
            for entry in partitions:
                asked[TopicPartition(topic, entry[0])] = entry[1]
        result = await original(self, assignment, node_id, request)
        if assignment.active and asked:
            _adapt(self, assignment, asked)
        return result

    Fetcher._proc_fetch_request = adaptive_proc_fetch_request
    _installed = True


@dataclass
class _Wait:
    """One fetcher's adaptive wait: the configured floor and what the last answers said."""

    floor_ms: int
    strikes: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)  # tp -> (offset, empty answers)
    fed: int = 0  # fetches in a row that brought records, since the wait last changed
    warned: bool = False  # said once loudly per consumer, then quietly


def _adapt(fetcher: Any, assignment: Any, asked: dict[TopicPartition, int]) -> None:
    wait_ms = fetcher._fetch_max_wait_ms  # noqa: SLF001 - read for every fetch request it builds
    st: _Wait = fetcher.__dict__.setdefault("_shoprank_wait", _Wait(wait_ms))
    brought = starved = False
    for tp, offset in asked.items():
        if tp in fetcher._records:  # noqa: SLF001 - a partition is fetched only once its buffer is empty
            brought = True
            st.strikes.pop(tp, None)
            continue
        try:
            tp_state = assignment.state_value(tp)
        except (KeyError, AssertionError):  # unassigned meanwhile
            continue
        if tp_state is None or not tp_state.has_valid_position or tp_state.position != offset:
            continue
        if tp_state.highwater is not None and tp_state.highwater > offset:
            at, count = st.strikes.get(tp, (offset, 0))
            count = count + 1 if at == offset else 1
            st.strikes[tp] = (offset, count)
            if count >= STRIKES:
                starved = True
                del st.strikes[tp]
    if starved:
        st.fed = 0
        grown = min(MAX_WAIT_MS, max(wait_ms * 2, 1))
        if grown != wait_ms:
            fetcher._fetch_max_wait_ms = grown  # noqa: SLF001
            log.log(logging.INFO if st.warned else logging.WARNING,
                    "the broker answered a fetch with no records although it has some (a partition of many small "
                    "record batches on the embedded broker?): fetch wait %d -> %d ms", wait_ms, grown)
            st.warned = True
    elif brought and wait_ms > st.floor_ms:
        st.fed += 1
        if st.fed >= RELAX_AFTER:
            st.fed = 0
            fetcher._fetch_max_wait_ms = max(st.floor_ms, wait_ms // 2)  # noqa: SLF001
            log.info("fetch wait %d -> %d ms", wait_ms, fetcher._fetch_max_wait_ms)  # noqa: SLF001


class IdleFetchWait:
    """A consumer's fetch wait: short while records come, longer once none has come for a while.

    aiokafka reads its fetcher's wait each time it builds a fetch request, so a change takes effect with
    the next fetch. A wait the adaptive patch above has grown meanwhile is left alone.
    """

    def __init__(self, busy_ms: int, idle_ms: int, idle_after_s: float = IDLE_AFTER_S) -> None:
        self.busy_ms, self.idle_ms, self.idle_after_s = busy_ms, max(idle_ms, busy_ms), idle_after_s
        self._last_records = time.monotonic()

    def after_fetch(self, consumer: AIOKafkaConsumer, got_records: bool) -> None:
        fetcher = consumer._fetcher  # noqa: SLF001 - aiokafka has no public setter for the wait
        now = time.monotonic()
        if got_records:
            self._last_records = now
            if fetcher._fetch_max_wait_ms == self.idle_ms:  # noqa: SLF001
                fetcher._fetch_max_wait_ms = self.busy_ms  # noqa: SLF001
        elif now - self._last_records >= self.idle_after_s and fetcher._fetch_max_wait_ms < self.idle_ms:  # noqa: SLF001
            fetcher._fetch_max_wait_ms = self.idle_ms  # noqa: SLF001

    @staticmethod
    def current_ms(consumer: AIOKafkaConsumer) -> int:
        return int(consumer._fetcher._fetch_max_wait_ms)  # noqa: SLF001
