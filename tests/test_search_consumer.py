"""The search request consumer (streams.search._RequestConsumer) on the real embedded broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from schemas.topics import TOPICS
from streams.broker import EmbeddedBroker
from streams.kafka import create_missing, new_topic, reconnecting
from streams.search import _RequestConsumer
from streams.settings import load_settings


def test_the_search_consumer_reads_its_topic_created_after_it_joined(
        broker: EmbeddedBroker, no_autocreate: None) -> None:
    # A broker that lost its log comes back without the topic; the worker creates it again a few
    # seconds later. Until aiokafka refreshed its metadata (5 minutes by default) the consumer held
    # no partition: no search answered, /readyz at 503 (CI, 2026-12-06).
    prefix = f"t{uuid.uuid4().hex[:10]}."
    settings = load_settings(tenants=("demo",), kafka={
        "bootstrap": broker.bootstrap, "topic_prefix": prefix, "search_metadata_max_age_s": 1.0,
        "rebalance_timeout_s": 2.0, "session_timeout_s": 6.0, "heartbeat_interval_s": 0.5,
    })

    async def run() -> set[Any]:
        requests = _RequestConsumer(None, settings, broker.bootstrap)  # type: ignore[arg-type] - no request comes
        task = asyncio.create_task(reconnecting(requests._consume, requests.topic, 1.0))  # as _run does
        try:
            deadline = time.monotonic() + 30
            while requests.consumer is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await asyncio.sleep(3.0)  # joined its group while the topic does not exist
            before = requests.partitions()
            # From its spec, as the worker's topic guard creates it again (streams.app).
            spec = TOPICS["search-requests"]
            await create_missing(broker.bootstrap, [new_topic(spec, requests.topic, settings.kafka.retention_ms)])
            created = time.monotonic()
            while not requests.assigned and time.monotonic() < created + 30:
                await asyncio.sleep(0.1)
            assert not before, before
            return requests.partitions()
        finally:
            requests._stopped.set()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    partitions = asyncio.run(run())  # within 30 s of the topic's creation
    assert sorted(tp.partition for tp in partitions) == list(range(TOPICS["search-requests"].partitions)), partitions


def test_a_worker_beyond_the_partition_count_is_a_ready_spare(broker: EmbeddedBroker, no_autocreate: None) -> None:
    # Five workers, four search request partitions: the fifth holds none, which is not a fault. It still
    # answers the gateway's searches and takes partitions over when a worker leaves; /readyz said 503.
    prefix = f"t{uuid.uuid4().hex[:10]}."
    settings = load_settings(tenants=("demo",), kafka={
        "bootstrap": broker.bootstrap, "topic_prefix": prefix, "search_metadata_max_age_s": 1.0,
        "rebalance_timeout_s": 2.0, "session_timeout_s": 6.0, "heartbeat_interval_s": 0.5,
    })
    spec = TOPICS["search-requests"]

    async def run() -> list[tuple[bool, bool, set[Any]]]:
        topic = settings.topic("search-requests")
        await create_missing(broker.bootstrap, [new_topic(spec, topic, settings.kafka.retention_ms)])
        members = [_RequestConsumer(None, settings, broker.bootstrap)  # type: ignore[arg-type] - no request comes
                   for _ in range(spec.partitions + 1)]
        tasks = [asyncio.create_task(reconnecting(m._consume, m.topic, 1.0)) for m in members]

        def settled() -> bool:
            held = [m.partitions() for m in members]
            return (all(m.assigned for m in members) and sum(map(len, held)) == spec.partitions
                    and len(set().union(*held)) == spec.partitions)

        try:
            deadline = time.monotonic() + 60
            while not settled() and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            return [(m.assigned, m._check.spare, m.partitions()) for m in members]
        finally:
            for m in members:
                m._stopped.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    states = asyncio.run(run())
    assert all(ready for ready, _, _ in states), states
    assert sorted(len(held) for _, _, held in states) == [0] + [1] * spec.partitions, states
    assert [spare for _, spare, held in states if not held] == [True], states
    assert not any(spare for _, spare, held in states if held), states
