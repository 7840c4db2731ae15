"""Adjustments to faust-streaming's Kafka driver, applied once when the app is built.

Faust recovers a table by reading its changelog up to the partition's end offset, which it asks for
with ListOffsets. On the embedded Tansu broker that answer can be short (see
:func:`streams.kafka.end_offsets`), so recovery would stop early and silently lose table state.
We route Faust's end-offset lookup through the verified one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.kafka import end_offsets

__all__ = ["install"]

_installed = False


def install() -> None:
    global _installed
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
    _installed = True
