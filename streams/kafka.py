"""Small helpers over aiokafka: reachability, topic creation, producing and reading.

Importing it installs :mod:`streams.fetchwait` for every aiokafka consumer in the process: every module
of ours that reads from Kafka imports this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_fixed

from schemas.topics import TOPICS, TopicSpec
from streams import fetchwait

fetchwait.install()

__all__ = [
    "PRODUCER_BATCH_BYTES", "broker_answers", "create_missing", "describe_topics", "end_offsets", "ensure_topics",
    "new_topic", "producer", "read_range", "read_topic", "reconnecting", "spec_topics",
]

log = logging.getLogger(__name__)

#: The worker's producers' batch size: below the 1 MB a Kafka broker accepts in one record batch by default
#: (message.max.bytes), and room for many 4-10 KB search replies and logs.
PRODUCER_BATCH_BYTES = 256 * 1024


async def reconnecting(consume: Callable[[], Awaitable[None]], what: str, retry_s: float = 1.0) -> None:
    """Run ``consume`` until it returns, starting it again ``retry_s`` after each failure.

    For the worker's own long-running consumers (search requests, followed topics): a broker hiccup
    must not end them for good, and each start reconnects from where the consumer left off. Cancelling
    the task ends it (``CancelledError`` is not retried).
    """

    def log_failure(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.error("reading %s failed (attempt %d); retrying in %g s", what, state.attempt_number, retry_s,
                  exc_info=exc)

    async for attempt in AsyncRetrying(retry=retry_if_exception_type(Exception), wait=wait_fixed(retry_s),
                                       before_sleep=log_failure):
        with attempt:
            await consume()


async def broker_answers(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True when a broker at ``bootstrap`` answers a Metadata request within ``timeout_s``."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    # A refused connection is the answer we are asking for, not an error worth logging.
    conn_log = logging.getLogger("aiokafka")
    level = conn_log.level
    conn_log.setLevel(logging.CRITICAL)
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
        return True
    except (KafkaError, OSError, asyncio.TimeoutError):
        return False
    finally:
        conn_log.setLevel(level)
        with contextlib.suppress(Exception):
            await client.close()


def _topic_configs(spec: TopicSpec, retention_ms: int | None) -> dict[str, str]:
    if spec.compacted:
        return {"cleanup.policy": "compact"}
    return {"retention.ms": str(retention_ms)} if retention_ms is not None else {}


async def ensure_topics(
    bootstrap: str, prefix: str = "", specs: Iterable[TopicSpec] | None = None, retention_ms: int | None = None
) -> list[str]:
    """Create the topics that do not exist yet; return the names created. Safe to call any time.

    ``retention_ms`` bounds how long the event topics (every topic not compacted) keep records: they
    hold pseudonymised shopper data, which a forgotten shopper's must not outlive for long.
    """
    return await create_missing(bootstrap, spec_topics(prefix, specs, retention_ms))


def spec_topics(prefix: str = "", specs: Iterable[TopicSpec] | None = None,
                retention_ms: int | None = None) -> list[NewTopic]:
    """The admin requests that create ``specs`` (default: every shoprank topic) under ``prefix``."""
    return [new_topic(s, s.full_name(prefix), retention_ms) for s in (TOPICS.values() if specs is None else specs)]


def new_topic(spec: TopicSpec, name: str, retention_ms: int | None = None) -> NewTopic:
    """The admin request that creates ``spec``'s topic as ``name`` (partitions, compaction, retention)."""
    return NewTopic(name, spec.partitions, 1, topic_configs=_topic_configs(spec, retention_ms))


async def create_missing(bootstrap: str, topics: Iterable[NewTopic]) -> list[str]:
    """Create those of ``topics`` the broker does not have; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        created = []
        for topic in topics:  # one by one: another worker may be creating the same topics
            if topic.name in existing:
                continue
            try:
                await admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        await admin.close()


async def describe_topics(bootstrap: str, names: Iterable[str] | None = None) -> dict[str, int]:
    """Topic name → partition count, for the given names or every topic on the broker."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = sorted(await admin.list_topics()) if names is None else list(names)
        if not names:
            return {}
        described = await admin.describe_topics(names)
        return {d["topic"]: len(d["partitions"]) for d in described if d["error_code"] == 0}
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def producer(bootstrap: str, **kwargs: object) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer that flushes and stops on exit."""
    prod = AIOKafkaProducer(bootstrap_servers=bootstrap, **kwargs)  # type: ignore[arg-type]
    await prod.start()
    try:
        yield prod
        await prod.flush()
    finally:
        await prod.stop()


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    from_beginning: bool = True,
    idle_timeout_s: float = 2.0,
    max_messages: int | None = None,
    follow: bool = False,
) -> AsyncIterator[tuple[TopicPartition, int, bytes | None, bytes | None, int]]:
    """Yield ``(tp, offset, key, value, timestamp_ms)`` from every partition of ``topic``.

    Without ``follow`` it stops once nothing new has arrived for ``idle_timeout_s``.
    Uses no consumer group, so it commits nothing and disturbs no one.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        group_id=None,
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - first metadata may be empty
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        seen = 0
        while True:
            batch = await consumer.getmany(timeout_ms=int(idle_timeout_s * 1000))
            if not batch and not follow:
                return
            for tp, messages in batch.items():
                for m in messages:
                    yield tp, m.offset, m.key, m.value, m.timestamp
                    seen += 1
                    if max_messages is not None and seen >= max_messages:
                        return
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
    """The true end offset (high-watermark) of each partition: the offset the broker serves records up to.

    ListOffsets("latest") alone is not enough on the embedded Tansu broker, which gets it wrong both ways:

    - short, when records were produced in multi-record batches (it reported 1 for a 100-record batch);
    - long, after it lost its log: a producer that still holds the old metadata writes to a topic the
      broker no longer has, and Tansu accepts those records, lists them, yet serves none of them (fetch
      high-watermark 0). Faust's table recovery then waited for good for changelog records that never
      came (issue 6's stuck broker-restart recovery).

    The high-watermark in a fetch response is right in both cases. So ask ListOffsets, fetch once from
    just below that (from the earliest offset when that is out of range) and take the fetch's
    high-watermark. Plain Kafka protocol either way; on real Kafka the two agree.
    """
    tps = list(tps)
    if not tps:
        return {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=1024,
        auto_offset_reset="earliest",  # a listed end the broker does not serve is out of range
    )
    await consumer.start()
    try:
        listed = await consumer.end_offsets(tps)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, max(listed[tp] - 1, 0))
        for _ in range(40):  # each round waits at most ~0.1 s; empty partitions answer at once
            await consumer.getmany(timeout_ms=100)
            if all(consumer.highwater(tp) is not None for tp in tps):
                break
        ends = {}
        for tp in tps:
            served = consumer.highwater(tp)
            ends[tp] = listed[tp] if served is None else served
            if served is not None and served < listed[tp]:
                log.warning(
                    "the broker lists %d record(s) of %s[%d] past its high-watermark %d that it does not serve "
                    "(Tansu accepted writes to a topic it had lost); counting from %d",
                    listed[tp] - served, tp.topic, tp.partition, served, served,
                )
        return ends
    finally:
        await consumer.stop()


async def read_range(bootstrap: str, tp: TopicPartition, start: int, end: int,
                     timeout_s: float = 30.0) -> list[ConsumerRecord[bytes, bytes]]:
    """The records of ``tp`` from offset ``start`` up to ``end`` (excluded), as the broker serves them now.

    Offsets the log no longer holds (retention) are simply absent: the first record may come after
    ``start``. Raises :class:`TimeoutError` when the broker has not served up to ``end`` in ``timeout_s``.
    Uses no consumer group, so it commits nothing and disturbs no one.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=50,
        auto_offset_reset="earliest",  # below the log's start: read from where it starts now
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while True:
            got = await consumer.getmany(tp, timeout_ms=200)
            for record in got.get(tp, ()):
                if record.offset >= end:
                    return records
                if record.offset >= start:
                    records.append(record)
            if await consumer.position(tp) >= end:
                return records
            if time.monotonic() > deadline:
                raise TimeoutError(f"{tp.topic}[{tp.partition}]: offsets {start}-{end - 1} not served in {timeout_s:.0f} s")
    finally:
        await consumer.stop()
