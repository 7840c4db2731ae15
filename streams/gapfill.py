"""Records an agent was never handed are read from the broker: a jump in a partition's offsets is filled.

shoprank's stream topics are neither compacted nor written in transactions, so a partition's offsets
follow one another. An agent handed record ``X`` while it expected ``N < X`` was never handed
``N .. X-1``: Faust's fetch loop lost them on their way (records fetched before a seek and handed
over after it; its read offset dropping what it takes for already read). bench_faults lost such
records after ``kill -9`` restarts, a few runs in ten on a loaded machine (2026-12-07: 144 records of
``interactions[3]``, 1,148 off one tenant's totals), and the consumer's commit had passed them, so no
restart read them again. Rather than chase every path inside Faust's fetch loop, each agent keeps the
next offset it expects per topic partition, in its own table, and reads a skipped range straight from
the broker (:func:`streams.kafka.read_range`) before the record after it. The agents' counting is
idempotent per offset (watermarks, dedupe records), so a record read here and handed over again later
counts once.

The next offsets are written as each batch's last table write: a crash loses them together with the
batch's other writes or not at all, and a stale one only makes the agent read again records it
counted already (which count nothing). A record below the next offset changes nothing here.

A jump is seen only when a later record comes. Records skipped at the end of a partition that then
goes quiet (a small shop's events, a catalogue's last update) would wait for the next one, so each
agent also asks :meth:`GapFill.tail` every few seconds: where the consumer committed past the next
offset the agent expects, and the partition has handed it nothing for :data:`TAIL_IDLE_S`, the records
the commit passed are read too. (Records past the commit are the stream's to hand over, in order: read
here ahead of them, the agent's watermarks would take them, once handed over, for records counted.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka import ConsumerRecord, TopicPartition
from faust.types import TP, ConsumerMessage
from tenacity import AsyncRetrying, RetryCallState, stop_after_delay, wait_exponential

from streams import metrics
from streams.batching import as_current
from streams.kafka import read_range

__all__ = ["TAIL_CHECK_S", "GapFill", "GapStats"]

log = logging.getLogger(__name__)

#: How long a skipped range is asked of the broker before the agent gives up on it and goes on.
GIVE_UP_AFTER_S = 120.0
#: Seconds a partition must have handed its agent nothing, its commit past the next offset expected,
#: before :meth:`GapFill.tail` reads the records between: well past a busy batch.
TAIL_IDLE_S = 30.0
#: Seconds between an agent's calls of :meth:`GapFill.tail`.
TAIL_CHECK_S = 5.0
#: Records :meth:`GapFill.tail` reads of one partition at a time: a batch's worth (the rest come next tick).
TAIL_MAX = 500


@dataclass
class GapStats:
    gaps: int = 0  #: jumps seen
    filled: int = 0  #: records read from the broker and handed to the agent
    gone: int = 0  #: offsets the log no longer held (retention) or did not serve in time
    tails: int = 0  #: quiet partitions whose last records never came, read by :meth:`GapFill.tail`


class GapFill:
    """Per topic partition, the next offset an agent expects; a jump past it is read from the broker.

    ``table`` is the agent's own table, whose changelog partition is the source partition (the write
    lands in the same ordered changelog as the agent's other state). Use: :meth:`serve` registers the
    agent; its handler calls ``batch = await fill(batch)`` first, processes, then :meth:`save` as the
    batch's last table write, then :meth:`ack`.
    """

    PREFIX = "next|"

    def __init__(self, app: faust.App, table: Any, agent: str, bootstrap: str, topics: Iterable[str]) -> None:
        self.app = app
        self.topics = frozenset(topics)  # the agent's source topics, for :meth:`tail`
        self.table = table
        self.agent = agent
        self.bootstrap = bootstrap
        self.stats = GapStats()
        self._next: dict[int, dict[str, int]] = {}  # partition -> topic -> next offset expected
        self._moved: dict[int, Any] = {}  # partitions whose next offsets this batch moved -> an event of theirs
        self._filled: list[Any] = []  # this batch's records read here, to acknowledge after :meth:`save`
        self._handed_at: dict[tuple[str, int], float] = {}  # when a record of the partition was last handed over
        table.on_recover(self.forget)

    def serve(self, topic: Any, name: str, handle: Callable[[list[Any]], Awaitable[None]], *, batch_max: int,
              within_s: float) -> None:
        """Register the agent ``name`` on ``topic``: batches of up to ``batch_max`` events (what came within
        ``within_s``) go to ``handle``, and so, every :data:`TAIL_CHECK_S`, do the records :meth:`tail`
        reads (timer ``<name>-tail``). Never both at once: both move the next offsets and the table."""
        turn = asyncio.Lock()

        async def process(stream: faust.StreamT[Any]) -> AsyncIterator[None]:
            async for batch in stream.take_events(batch_max, within=within_s):
                async with turn:
                    await handle(batch)
                yield None

        async def check_tail() -> None:
            async with turn:
                events = await self.tail()
                if events:
                    await handle(events)

        self.app.agent(topic, name=name)(process)
        self.app.timer(TAIL_CHECK_S, name=f"{name}-tail")(check_tail)

    async def forget(self) -> None:
        """After a recovery the table holds the truth (another worker may have read on): read it again."""
        self._next = {}

    def _of(self, partition: int) -> dict[str, int]:
        nexts = self._next.get(partition)
        if nexts is None:
            nexts = self._next[partition] = dict(self.table.get(f"{self.PREFIX}{partition}") or {})
        return nexts

    async def fill(self, batch: Sequence[Any]) -> list[Any]:
        """``batch`` with the records it skipped, read from the broker, each before the record after it."""
        out: list[Any] = []
        now = time.monotonic()
        for event in batch:
            message = event.message
            self._handed_at[(message.topic, message.partition)] = now
            nexts = self._of(message.partition)
            expected = nexts.get(message.topic)
            if expected is not None and message.offset > expected:
                self.stats.gaps += 1
                log.warning("%s[%d]: record %d handed to the %s while it expected %d: reading %d-%d from the "
                            "broker", message.topic, message.partition, message.offset, self.agent, expected,
                            expected, message.offset - 1)
                out.extend(await self._read(message.topic, message.partition, expected, message.offset, message.tp))
            if expected is None or message.offset >= expected:
                nexts[message.topic] = message.offset + 1
                self._moved[message.partition] = event
            out.append(event)
        return out

    def restart(self, partition: int) -> None:
        """The broker lost ``partition``'s log (streams.logloss): its offsets start again, so do ours."""
        self._next[partition] = {}  # the batch at hand sets them again, and :meth:`save` writes them

    def save(self) -> None:
        """Write the next offsets this batch moved: call it as the batch's last table write."""
        for partition, event in self._moved.items():
            as_current(event)  # this partition's changelog, after the batch's other writes
            self.table[f"{self.PREFIX}{partition}"] = dict(self._next[partition])
        self._moved = {}

    def ack(self) -> None:
        """Acknowledge the records read here (after :meth:`save`), so that the commit may pass them."""
        consumer = self.app.consumer
        for event in self._filled:
            consumer.ack(event.message)
        self._filled = []

    async def tail(self) -> list[Any]:
        """Records of quiet partitions that never reached the agent (see the module doc), to process as a batch.

        Call it from the agent's timer, never while a batch of its stream is being processed; the flow
        must be on (not in a rebalance or recovery)."""
        consumer = self.app.consumer
        if getattr(self.app, "rebalancing", False) or not self.app.flow_control.is_active():
            return []
        now = time.monotonic()
        out: list[Any] = []
        for tp in sorted(consumer.assignment()):
            if tp.topic not in self.topics:
                continue
            expected = self._of(tp.partition).get(tp.topic)
            since = self._handed_at.setdefault((tp.topic, tp.partition), now)
            end = consumer._committed_offset.get(tp)  # noqa: SLF001 - Faust keeps no public view
            if expected is None or end is None or end <= expected or now - since < TAIL_IDLE_S:
                continue
            self.stats.tails += 1
            end = min(end, expected + TAIL_MAX)
            log.warning("%s[%d]: the %s was handed nothing for %.0f s, and the commit passed %d, the next record "
                        "it expects: reading %d-%d from the broker", tp.topic, tp.partition, self.agent,
                        now - since, expected, expected, end - 1)
            out.extend(await self._read(tp.topic, tp.partition, expected, end, tp))
        return out

    async def _read(self, topic: str, partition: int, start: int, end: int, tp: TP) -> list[Any]:

        def retrying(state: RetryCallState) -> None:
            log.warning("%s[%d]: could not read %d-%d (%s), attempt %d; retrying, the %s waits", topic, partition,
                        start, end - 1, state.outcome.exception() if state.outcome else "?", state.attempt_number,
                        self.agent)

        records: list[ConsumerRecord[bytes, bytes]] = []
        try:
            async for attempt in AsyncRetrying(wait=wait_exponential(max=10), stop=stop_after_delay(GIVE_UP_AFTER_S),
                                               before_sleep=retrying, reraise=True):
                with attempt:
                    records = await read_range(self.bootstrap, TopicPartition(topic, partition), start, end)
        except Exception as exc:  # noqa: BLE001 - the broker would not serve them: say so, go on with the stream
            log.error("%s[%d]: gave up reading %d-%d after %.0f s (%s): the %s never processes them", topic,
                      partition, start, end - 1, GIVE_UP_AFTER_S, exc, self.agent)
        gone = (end - start) - len(records)
        if gone:
            self.stats.gone += gone
            log.warning("%s[%d]: %d of offsets %d-%d are not in the log (retention?)", topic, partition, gone,
                        start, end - 1)
        events = [self._event(record, tp) for record in records]
        self.stats.filled += len(events)
        metrics.GAP_FILLED.labels(self.agent).inc(len(events))
        self._filled.extend(events)
        return events

    def _event(self, record: ConsumerRecord[bytes, bytes], tp: TP) -> Any:
        """A Faust event for ``record``, as Faust's own driver builds one (faust.transport.drivers.aiokafka)."""
        timestamp_s: Any = record.timestamp / 1000.0 if record.timestamp is not None else None  # as Faust's
        message = ConsumerMessage(
            record.topic, record.partition, record.offset, timestamp_s,
            record.timestamp_type, record.headers, record.key, record.value, record.checksum,
            record.serialized_key_size, record.serialized_value_size, tp,
            generation_id=self.app.consumer_generation_id,
        )
        return faust.Event(self.app, record.key, record.value, message.headers, message)
