"""Adjustments to faust-streaming's Kafka driver, applied once when the app is built.

- Faust recovers a table by reading its changelog up to the partition's end offset, which it asks for
  with ListOffsets. On the embedded Tansu broker that answer can be short (see
  :func:`streams.kafka.end_offsets`), so recovery would stop early and silently lose table state.
  We route Faust's end-offset lookup through the verified one.
- Faust hard-codes the worker consumer's ``fetch_max_wait_ms`` to 1500. Tansu holds a fetch for that
  whole time even when data arrives (measured: ~450 ms median delay at 1500, ~5 ms at 50), which
  puts seconds into search latency. The wait becomes a setting (``SHOPRANK_KAFKA_FETCH_MAX_WAIT_MS``).
- The consumer can be handed a record it has just processed again (seen on Tansu, at fetch-batch
  boundaries). Faust lets it through (its check is ``offset >= last read``) and acks the offset a
  second time after that offset was committed; the duplicate in its acked list then breaks the run
  of consecutive offsets it commits, and commits crawl forward an offset or two per interval while
  lag grows. We drop a record whose offset is not past the last one processed (unless Faust has
  seeked since), and keep the acked list free of duplicates and already-committed offsets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.kafka import end_offsets

__all__ = ["install"]

_installed = False


_fetch_max_wait_ms = 1500


def install(fetch_max_wait_ms: int | None = None) -> None:
    global _installed, _fetch_max_wait_ms
    if fetch_max_wait_ms is not None:
        _fetch_max_wait_ms = fetch_max_wait_ms
    if _installed:
        return
    thread_cls = faust_aiokafka.AIOKafkaConsumerThread
    original = thread_cls._highwaters

    async def _highwaters(self: Any, partitions: list[Any]) -> Mapping[Any, int]:
        consumer = self._ensure_consumer()
        if self.consumer.in_transaction:
            return await original(self, partitions)
        servers = consumer._client._bootstrap_servers  # noqa: SLF001 - aiokafka keeps no public copy
        bootstrap = servers if isinstance(servers, str) else ",".join(map(str, servers))
        return await end_offsets(bootstrap, partitions)

    thread_cls._highwaters = _highwaters

    create_worker_consumer = thread_cls._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create_worker_consumer(self, transport)
        consumer._fetch_max_wait_ms = _fetch_max_wait_ms  # noqa: SLF001 - read when the consumer starts
        return consumer

    thread_cls._create_worker_consumer = _create_worker_consumer
    _install_redelivery_guard()
    _installed = True


def _install_redelivery_guard() -> None:
    consumer_cls = faust_consumer.Consumer
    getmany = consumer_cls.getmany
    new_offset = consumer_cls._new_offset

    async def guarded_getmany(self: Any, timeout: float) -> Any:
        last: dict[Any, int] = self.__dict__.setdefault("_shoprank_last_offset", {})
        async for tp, message in getmany(self, timeout):
            read = self._read_offset.get(tp)
            # ``read`` equal to what we last handed over means no seek happened since (a seek sets it
            # to the next offset to read), so an offset at or below it was processed already.
            if read is not None and last.get(tp) == read and message.offset <= read:
                continue
            last[tp] = message.offset
            yield tp, message

    def deduplicated_new_offset(self: Any, tp: Any) -> int | None:
        acked = self._acked[tp]
        if acked:
            committed = self._committed_offset[tp]
            acked[:] = sorted({o for o in acked if committed is None or o >= committed})
        return new_offset(self, tp)

    consumer_cls.getmany = guarded_getmany
    consumer_cls._new_offset = deduplicated_new_offset
