"""Routes messages an agent cannot use to the dead-letter topic, with reason, origin and original bytes."""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import faust
import orjson
from tenacity import AsyncRetrying, RetryCallState, wait_exponential

from schemas import DeadLetter, RejectReason, encode
from streams import metrics
from streams.settings import Settings

__all__ = ["DeadLetterSink", "RecordOrigin", "plausible_tenant", "record_origin", "salvage", "salvaged_tenant"]

log = logging.getLogger(__name__)


#: Rejected messages larger than this are not parsed again just to salvage a field.
_SALVAGE_MAX_BYTES = 64 * 1024


def salvage(raw: bytes | None, *fields: str) -> dict[str, str]:
    """Short string ``fields`` of a rejected message that is still a JSON object; never raises.

    Used to name the tenant in a dead letter, or to answer a bad request by its ``request_id``.
    """
    if not raw or len(raw) > _SALVAGE_MAX_BYTES:
        return {}
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(obj, dict):
        return {}
    return {f: v for f in fields if isinstance(v := obj.get(f), str) and 0 < len(v) <= 128}


#: What a tenant id looks like (schemas.base.TenantId).
_TENANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def plausible_tenant(value: str | None) -> str | None:
    """A salvaged tenant, if it could be one; else None (a dead letter then names no tenant)."""
    return value if value and _TENANT.fullmatch(value) else None


def salvaged_tenant(raw: bytes | None) -> str | None:
    """The tenant a rejected message names, if it could be one (see :func:`plausible_tenant`)."""
    return plausible_tenant(salvage(raw, "tenant").get("tenant"))


@dataclass
class RecordOrigin:
    """What :class:`DeadLetterSink` reads from a Faust message, built from a plain aiokafka record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None  # seconds, as Faust's


def record_origin(rec: Any) -> RecordOrigin:
    """A dead-letterable origin for a record read by a plain aiokafka consumer."""
    ts = rec.timestamp / 1000 if rec.timestamp is not None else None
    return RecordOrigin(rec.topic, rec.partition, rec.offset, rec.key, rec.value, ts)


class DeadLetterSink:
    """One per agent. Counts what it routed, by reason, for the stats endpoint and metrics."""

    def __init__(self, app: faust.App, settings: Settings, agent: str) -> None:
        self.agent = agent
        self.topic = app.topic(
            settings.topic("dead-letters"),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.counts: Counter[str] = Counter()
        #: Back-off between attempts to send a dead letter (tests shorten it).
        self.retry_wait: Any = wait_exponential(multiplier=0.5, max=10)

    async def send(
        self, message: Any, reason: RejectReason, detail: str, tenant: str | None = None
    ) -> None:
        """Dead-letter ``message`` (a ``faust.types.Message``); returns once the producer has the letter,
        trying again with back-off for as long as the broker refuses it."""
        raw = message.value if isinstance(message.value, bytes) else bytes(message.value or b"")
        key = message.key if isinstance(message.key, bytes) or message.key is None else bytes(message.key)
        letter = DeadLetter.keeping(
            raw,
            key,
            reason=reason,
            detail=detail[:2000],
            source_topic=message.topic,
            source_partition=message.partition,
            source_offset=message.offset,
            source_timestamp=int(message.timestamp * 1000) if message.timestamp else None,
            agent=self.agent,
            tenant=tenant,
            rejected_at=int(time.time() * 1000),
        )
        self.counts[reason] += 1
        metrics.DEAD_LETTERS.labels(self.agent, reason).inc()
        log.info("dead letter from %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason)
        value = encode(letter)

        def failed(state: RetryCallState) -> None:
            self.counts["dead_letter_send_retries"] += 1
            log.warning("could not dead-letter %s[%d]@%d (%s), attempt %d: %s; retrying, the agent waits",
                        message.topic, message.partition, message.offset, reason, state.attempt_number,
                        state.outcome.exception() if state.outcome is not None else "?")

        # Until it is handed to the producer: the caller then acknowledges the message, and were the dead
        # letter dropped, its bytes would be gone with it. The only failures here are the broker's (a dead
        # letter is bounded in size), and while it is away the agent could not go on anyway.
        async for attempt in AsyncRetrying(wait=self.retry_wait, before_sleep=failed, reraise=True):
            with attempt:
                await self.topic.send(key=key[:1024] if key else None, value=value)
