"""The adaptive fetch wait (streams.fetchwait) on the real embedded broker."""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import NewTopic

from streams import fetchwait
from streams.broker import EmbeddedBroker
from streams.fetchwait import IdleFetchWait
from streams.kafka import create_missing, producer

#: Single-record batches: enough that Tansu cannot answer a 1 ms fetch (measured: 0 of 6,000 records
#: in 5 s without the patch, all of them in about 1 s with it).
BATCHES = 6_000


async def _one_partition_topic(bootstrap: str, stem: str) -> str:
    topic = f"{stem}-{uuid.uuid4().hex[:8]}"
    await create_missing(bootstrap, [NewTopic(topic, 1, 1)])
    return topic


async def _fill(bootstrap: str, topic: str) -> None:
    async with producer(bootstrap, linger_ms=0) as prod:
        for i in range(BATCHES):
            await (await prod.send(topic, f"r{i}".encode(), partition=0))  # one batch each


async def _read_all(bootstrap: str, topic: str, wait_ms: int) -> tuple[list[bytes], int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                fetch_max_wait_ms=wait_ms)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        values: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(values) < BATCHES and time.monotonic() < deadline:
            got = await consumer.getmany(tp, timeout_ms=200)
            values += [m.value for ms in got.values() for m in ms]
        return values, IdleFetchWait.current_ms(consumer)
    finally:
        await consumer.stop()


def test_a_consumer_on_a_short_wait_still_reads_a_partition_of_many_small_batches(broker: EmbeddedBroker) -> None:
    async def run() -> tuple[list[bytes], int]:
        topic = await _one_partition_topic(broker.bootstrap, "fetchwait")
        await _fill(broker.bootstrap, topic)
        return await _read_all(broker.bootstrap, topic, wait_ms=1)

    values, wait_after = asyncio.run(run())
    assert values == [f"r{i}".encode() for i in range(BATCHES)]
    # The broker did answer empty-handed (that is what grows the wait), and the consumer got past it.
    assert 1 < wait_after <= fetchwait.MAX_WAIT_MS


def test_the_search_consumer_waits_longer_while_idle_and_short_again_once_requests_come(broker: EmbeddedBroker) -> None:
    async def run() -> list[tuple[str, int, int]]:
        topic = await _one_partition_topic(broker.bootstrap, "idlewait")
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, fetch_max_wait_ms=5)
        await consumer.start()
        seen: list[tuple[str, int, int]] = []  # (moment, records fetched, wait after)
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            wait = IdleFetchWait(busy_ms=5, idle_ms=50, idle_after_s=0.3)

            async def fetch(moment: str) -> None:
                got = await consumer.getmany(tp, timeout_ms=100)
                n = sum(len(ms) for ms in got.values())
                wait.after_fetch(consumer, n > 0)
                seen.append((moment, n, IdleFetchWait.current_ms(consumer)))

            await fetch("start")
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:  # nothing comes
                await fetch("idle")
            async with producer(broker.bootstrap, linger_ms=0) as prod:
                await (await prod.send(topic, b"request", partition=0))
            got = 0
            deadline = time.monotonic() + 5.0
            while not got and time.monotonic() < deadline:
                await fetch("request")
                got = seen[-1][1]
            return seen
        finally:
            await consumer.stop()

    seen = asyncio.run(run())
    assert seen[0][2] == 5  # requests may come at once: the short wait
    assert [w for m, _, w in seen if m == "idle"][-1] == 50  # a second without requests: the idle wait
    assert seen[-1][1] == 1 and seen[-1][2] == 5  # the request came: short again for the next ones
