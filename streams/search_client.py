"""A small Python client for search over Kafka: send a request, await its reply by request id."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas import SearchRequest, SearchResult, decode, encode
from schemas.exceptions import DecodeError
from schemas.topics import TOPICS
from streams.kafka import create_missing, new_topic  # importing it installs the adaptive fetch wait
from streams.exceptions import ShoprankError

__all__ = ["SearchClient", "SearchTimeout"]


class SearchTimeout(ShoprankError, TimeoutError):
    """No reply arrived in time; the message says whether a worker is running."""


class SearchClient:
    """Request/reply over two topics, correlated by ``request_id``.

    It reads every partition of the reply topic from its end (no consumer group), so any number
    of clients can share the default results topic; a client with heavy traffic should use its own
    ``reply_topic`` (one that starts with the results topic's name).
    """

    def __init__(self, bootstrap: str, requests_topic: str, reply_topic: str) -> None:
        self.bootstrap = bootstrap
        self.requests_topic = requests_topic
        self.reply_topic = reply_topic
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._pending: dict[str, asyncio.Future[SearchResult]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> SearchClient:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=0)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=5
        )
        # Made from the results topic's spec if missing: a broker without auto-creation (Kafka as in
        # docker/) would leave the reader below with no partitions, and the replies unread.
        await create_missing(self.bootstrap, [new_topic(TOPICS["search-results"], self.reply_topic)])
        await self._producer.start()
        await self._consumer.start()
        parts = self._consumer.partitions_for_topic(self.reply_topic)
        if not parts:
            await self._consumer._client.force_metadata_update()  # noqa: SLF001
            parts = self._consumer.partitions_for_topic(self.reply_topic) or set()
        tps = [TopicPartition(self.reply_topic, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the lazy seek now, so replies sent from here on are seen
            await self._consumer.position(tp)
        self._reader = asyncio.create_task(self._read())
        return self

    async def stop(self) -> None:
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._consumer:
            await self._consumer.stop()
        if self._producer:
            await self._producer.stop()

    async def __aenter__(self) -> SearchClient:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def search(self, tenant: str, query: str, *, timeout_s: float = 10.0, **fields: Any) -> SearchResult:
        request = SearchRequest(
            request_id=fields.pop("request_id", uuid.uuid4().hex),
            tenant=tenant,
            query=query,
            reply_topic=self.reply_topic,
            **fields,
        )
        return await self.send(request, timeout_s=timeout_s)

    async def send(self, request: SearchRequest, *, timeout_s: float = 10.0) -> SearchResult:
        return await self.send_raw(request.request_id, encode(request), key=f"{request.tenant}:{request.request_id}",
                                   timeout_s=timeout_s)

    async def send_raw(self, request_id: str, value: bytes, *, key: str | None = None,
                       timeout_s: float = 10.0) -> SearchResult:
        """Send any bytes as a request and await the reply for ``request_id`` (for testing bad input)."""
        assert self._producer is not None, "call start() first"
        future: asyncio.Future[SearchResult] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._producer.send_and_wait(self.requests_topic, value, key=key.encode() if key else None)
            return await asyncio.wait_for(future, timeout_s)
        except asyncio.TimeoutError:
            raise SearchTimeout(
                f"no reply to request {request_id} within {timeout_s:.0f} s — is a `shoprank worker` running?"
            ) from None
        finally:
            self._pending.pop(request_id, None)

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=100)
            for messages in batch.values():
                for m in messages:
                    future = self._pending.get(m.key.decode(errors="replace")) if m.key else None
                    if future is None or future.done():
                        continue
                    try:
                        future.set_result(decode(SearchResult, m.value or b""))
                    except DecodeError as err:
                        future.set_exception(err)
