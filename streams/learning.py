"""The learning agent: attributed interactions in; analytics totals and the online ranker updated.

Interactions are keyed by tenant, so one tenant's model learns on one partition, in order. Each
interaction id is remembered for the dedupe window: a replay after a crash (at-least-once delivery)
is dropped here instead of being learned or counted twice. Totals are written once per key per batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import faust

from schemas import AttributedInteraction, DecodeError, decode
from schemas.topics import TOPICS
from streams import analytics
from streams.batching import as_current
from streams.deadletters import DeadLetterSink, salvage
from streams.settings import Settings

__all__ = ["LearningPipeline", "Learner"]

log = logging.getLogger(__name__)

_BATCH_MAX = 500
_BATCH_WITHIN_S = 0.05
_PURGE_EVERY = 20_000

#: Called with each batch of new (deduplicated) interactions of the partition at hand.
Learner = Callable[[list[AttributedInteraction]], None]


@dataclass
class LearningStats:
    learned: int = 0
    duplicates: int = 0
    rejected: int = 0
    last_learned_ms: int = 0


class LearningPipeline:
    AGENT = "learn"

    def __init__(self, app: faust.App, settings: Settings, learner: Callable[[], Learner | None]) -> None:
        self.topic = app.topic(
            settings.topic("interactions"), key_type=bytes, value_type=bytes, key_serializer="raw",
            value_serializer="raw",
        )
        partitions = TOPICS["interactions"].partitions
        self.seen = app.Table("learn-seen", default=None, partitions=partitions, help="interaction ids learned")
        self.totals = app.Table("learn-totals", default=None, partitions=partitions, help="analytics counters")
        self.dead = DeadLetterSink(app, settings, self.AGENT)
        self.dedupe_window_ms = int(settings.pixel.dedupe_window_s * 1000)
        self.stats = LearningStats()
        self._learner = learner
        self._since_purge: dict[int, int] = {}
        app.agent(self.topic, name=self.AGENT)(self._process)

    async def _process(self, stream: faust.StreamT[Any]) -> AsyncIterator[None]:
        async for batch in stream.take_events(_BATCH_MAX, within=_BATCH_WITHIN_S):
            fresh: list[AttributedInteraction] = []
            touched: dict[str, tuple[dict[str, float], Any]] = {}
            now = int(time.time() * 1000)
            for event in batch:
                message = event.message
                try:
                    it = decode(AttributedInteraction, message.value or b"")
                except DecodeError as err:
                    self.stats.rejected += 1
                    tenant = salvage(message.value, "tenant").get("tenant")
                    await self.dead.send(message, err.reason, err.detail, tenant=tenant if tenant and len(tenant) <= 64 else None)
                    continue
                seen_key = f"{it.tenant}|{it.interaction_id}"
                if self.seen.get(seen_key) is not None:
                    self.stats.duplicates += 1
                    continue
                as_current(event)
                self.seen[seen_key] = [message.partition, now]
                first_purchase = False
                if it.outcome == "purchase":
                    conv_key = f"{it.tenant}|conv|{it.search_id}"
                    first_purchase = self.seen.get(conv_key) is None
                    if first_purchase:
                        self.seen[conv_key] = [message.partition, now]
                key = f"{it.tenant}|{it.bucket}|{message.partition}"
                totals = touched[key][0] if key in touched else dict(self.totals.get(key) or {})
                analytics.add_interaction(totals, it, first_purchase_of_search=first_purchase)
                touched[key] = (totals, event)
                fresh.append(it)
                self._maybe_purge(message.partition, now)
            for key, (totals, event) in touched.items():
                as_current(event)
                self.totals[key] = totals
            if fresh:
                learner = self._learner()
                if learner is not None:
                    try:
                        learner(fresh)
                    except Exception:  # noqa: BLE001 - the model misses a batch; the stream goes on
                        log.exception("ranker update failed for %d interactions", len(fresh))
                self.stats.learned += len(fresh)
                self.stats.last_learned_ms = now
            yield None

    def _maybe_purge(self, partition: int, now_ms: int) -> None:
        n = self._since_purge.get(partition, 0) + 1
        if n < _PURGE_EVERY:
            self._since_purge[partition] = n
            return
        self._since_purge[partition] = 0
        horizon = now_ms - self.dedupe_window_ms
        for key in [k for k, v in self.seen.items() if v and v[0] == partition and v[1] < horizon]:
            del self.seen[key]

    def by_bucket(self, tenant: str) -> dict[str, dict[str, float]]:
        """Totals per bucket for ``tenant``, summed over the partitions this worker holds."""
        parts: dict[str, list[dict[str, float]]] = {}
        for key, totals in self.totals.items():
            t, bucket, _ = key.rsplit("|", 2)
            if t == tenant and totals:
                parts.setdefault(bucket, []).append(totals)
        return {bucket: analytics.merge(p) for bucket, p in parts.items()}
