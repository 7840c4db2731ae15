"""Read a whole topic on every worker, outside the consumer group, and keep following it.

Some state must be complete on every worker, whichever partitions it holds: merchandising rules
(streams.rules), forgotten users (streams.privacy). Each reads its compacted topic with a plain
consumer (no group, no commits) from the beginning at start-up and then as records arrive. We chose
this over a Faust ``GlobalTable``: the topic itself is the source of truth, so there is no changelog
to own, a bad record can be dead-lettered with its origin instead of failing table recovery, and
Faust's global tables are untested on the embedded Tansu broker.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafka import end_offsets, reconnecting

__all__ = ["TopicFollower", "caught_up", "partitions_of"]

_RETRY_S = 1.0
_POLL_MS = 500


class TopicFollower:
    """Feeds every record of ``topic`` to ``fold``, in offset order per partition, for as long as the app runs.

    ``loaded`` is set once the topic has been read up to the end offsets it had at start-up, so that
    callers can wait for complete state before acting on it.
    """

    def __init__(self, bootstrap: str, topic: str, fold: Callable[[Any], Awaitable[None]],
                 fetch_max_wait_ms: int = 100, on_loaded: Callable[[], None] | None = None) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.fold = fold
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.on_loaded = on_loaded
        self.loaded_event = threading.Event()  # threading: search threads wait on it too
        self.positions: dict[TopicPartition, int] = {}

    @property
    def loaded(self) -> bool:
        return self.loaded_event.is_set()

    async def wait_loaded(self, timeout_s: float) -> bool:
        """Wait (without blocking the event loop) until loaded; False when ``timeout_s`` ran out."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self.loaded:
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def run(self) -> None:
        """Follow the topic, reconnecting where it left off after any failure."""
        await reconnecting(self._consume, self.topic, _RETRY_S)

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=max(self.fetch_max_wait_ms, 100),
        )
        await consumer.start()
        try:
            tps = await partitions_of(consumer, self.topic)
            consumer.assign(tps)
            for tp in tps:
                if tp in self.positions:
                    consumer.seek(tp, self.positions[tp])
                else:
                    await consumer.seek_to_beginning(tp)
            ends = {} if self.loaded else await end_offsets(self.bootstrap, tps)
            while True:
                if not self.loaded and await caught_up(consumer, ends):
                    self.loaded_event.set()
                    if self.on_loaded is not None:
                        self.on_loaded()
                batch = await consumer.getmany(timeout_ms=_POLL_MS)
                for tp, records in batch.items():
                    for rec in records:
                        await self.fold(rec)
                        self.positions[tp] = rec.offset + 1
        finally:
            await consumer.stop()


async def caught_up(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer._client.force_metadata_update()  # the first metadata may be empty
        partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise LookupError(f"topic {topic} does not exist — create it with `shoprank topics`")
    return [TopicPartition(topic, p) for p in sorted(partitions)]
