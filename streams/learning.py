"""The learning agent: attributed interactions in; analytics totals and the online ranker updated.

Interactions are keyed by tenant, so one tenant's model learns on one partition, in order.

Exactly-once counting over at-least-once delivery: each interaction id is remembered (with the
message that carried it, streams.dedupe) for the dedupe window, which drops re-emitted copies; each totals record
carries the offset of the last message it counted, which drops a replay of messages after a crash
(their effect and the offset travel in one record write, so they cannot part). Totals are written
once per key per batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_args

import faust

from schemas import AttributedInteraction, DecodeError, decode
from schemas.topics import TOPICS
from schemas.interactions import Bucket
from streams import analytics
from streams.batching import active_partitions, as_current, standby_partitions
from streams.deadletters import DeadLetterSink, salvaged_tenant
from streams.dedupe import BatchedDedupe
from streams.gapfill import GapFill
from streams.lazy_changelog import changelog_schema
from streams.logloss import LogLossWatch
from streams.settings import Settings
from streams.table_store import table_options

__all__ = ["LearningPipeline", "Learner"]

log = logging.getLogger(__name__)

_BATCH_MAX = 500
_BATCH_WITHIN_S = 0.05
_PURGE_EVERY = 20_000
#: Offset of the last source message counted into a totals record (see module doc).
_WATERMARK = "_offset"

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

    def __init__(self, app: faust.App, settings: Settings, bootstrap: str, learner: Callable[[], Learner | None],
                 log_loss: LogLossWatch | None = None) -> None:
        self.log_loss = log_loss
        self.topic = app.topic(
            settings.topic("interactions"), key_type=bytes, value_type=bytes, key_serializer="raw",
            value_serializer="raw",
        )
        partitions = TOPICS["interactions"].partitions
        # One table for dedupe entries and totals: its writes go to one changelog partition per source
        # partition, in order, so a totals record that survived a crash implies the entries before it did.
        self.state = app.Table("learn-state", default=None, partitions=partitions, help="dedupe ids and totals",
                               options=table_options(settings.worker.store), schema=changelog_schema())
        self.dead = DeadLetterSink(app, settings, self.AGENT)
        self.dedupe = BatchedDedupe(self.state, int(settings.pixel.dedupe_window_s * 1000))
        self.stats = LearningStats()
        self.app = app
        self.topic_name = settings.topic("interactions")
        self._learner = learner
        self._since_purge = 0
        self.gaps = GapFill(app, self.state, "learning agent", bootstrap, [self.topic_name])
        self.gaps.serve(self.topic, self.AGENT, self._handle, batch_max=_BATCH_MAX, within_s=_BATCH_WITHIN_S)

    async def _handle(self, batch: list[Any]) -> None:
        fresh: list[AttributedInteraction] = []
        fresh_at: list[tuple[int, AttributedInteraction]] = []
        touched: dict[str, tuple[dict[str, float], Any]] = {}
        anchors: dict[int, Any] = {}
        now = int(time.time() * 1000)
        if self.log_loss is not None:
            self._restart_watermarks(batch)
        batch = await self.gaps.fill(batch)
        for event in batch:
            message = event.message
            try:
                it = decode(AttributedInteraction, message.value or b"")
            except DecodeError as err:
                self.stats.rejected += 1
                tenant = salvaged_tenant(message.value)
                await self.dead.send(message, err.reason, err.detail, tenant=tenant)
                continue
            anchors[message.partition] = event
            if self.dedupe.seen_elsewhere(f"{it.tenant}|{it.interaction_id}", message.partition, message.offset):
                self.stats.duplicates += 1
                continue
            key = f"totals|{it.tenant}|{it.bucket}|{message.partition}"
            totals = touched[key][0] if key in touched else dict(self.state.get(key) or {})
            if message.offset <= totals.get(_WATERMARK, -1):
                continue  # a replay after a crash: this record already counted it (see module doc)
            first_purchase = it.outcome == "purchase" and not self.dedupe.seen_elsewhere(
                f"conv|{it.tenant}|{it.search_id}", message.partition, message.offset)
            analytics.add_interaction(totals, it, first_purchase_of_search=first_purchase)
            totals[_WATERMARK] = message.offset
            touched[key] = (totals, event)
            fresh.append(it)
            fresh_at.append((message.partition, it))
        # Dedupe records first: on the one changelog partition they then precede the totals they guard.
        self.dedupe.flush(anchors, now)
        self._maybe_purge(anchors, now, len(batch))
        for key, (totals, event) in touched.items():
            as_current(event)
            self.state[key] = totals
        if fresh:
            learner = self._learner()
            if learner is not None:
                by_partition: dict[int, list[AttributedInteraction]] = {}
                for p, it in fresh_at:
                    by_partition.setdefault(p, []).append(it)
                for p, items in by_partition.items():
                    as_current(anchors[p])  # engagement writes go to this partition's changelog
                    try:
                        learner(items)
                    except Exception:  # noqa: BLE001 - the model misses a batch; the stream goes on
                        log.exception("ranker update failed for %d interactions", len(items))
            self.stats.learned += len(fresh)
            self.stats.last_learned_ms = int(time.time() * 1000)  # when the batch's effects are all in
        self.gaps.save()  # last: the next offsets survive a crash only with what this batch wrote
        self.gaps.ack()

    def _restart_watermarks(self, batch: list[Any]) -> None:
        """The broker lost a partition's log (streams.logloss): its offsets start again, so must its totals'."""
        assert self.log_loss is not None
        first: dict[int, Any] = {}
        for event in batch:
            first.setdefault(event.message.partition, event)
        for partition in self.log_loss.take(self.topic_name, set(first)):
            self.gaps.restart(partition)
            as_current(first[partition])  # the writes go to this partition's changelog
            for key, totals in list(self.state.items()):
                if key.startswith("totals|") and key.endswith(f"|{partition}") and totals:
                    self.state[key] = {**totals, _WATERMARK: -1}

    def _maybe_purge(self, anchors: dict[int, Any], now_ms: int, n: int) -> None:
        self._since_purge += n
        if self._since_purge >= _PURGE_EVERY:
            self._since_purge = 0
            self.dedupe.purge(now_ms, self.active_partitions(), anchors)

    def active_partitions(self) -> set[int]:
        """Partitions of the interactions topic this worker processes (not its standby copies)."""
        return active_partitions(self.app, self.topic_name)

    def held_partitions(self) -> set[int]:
        """Partitions whose totals this worker has: those it processes and its standby copies of the others.

        A tenant's interactions are keyed by tenant, so its totals sit in one partition; with standby
        replicas every worker of two holds all of them, and any worker answers a tenant's analytics.
        """
        return self.active_partitions() | standby_partitions(self.app, self.state.changelog_topic.get_topic_name())

    def by_bucket(self, tenant: str, partitions: set[int]) -> dict[str, dict[str, float]]:
        """Totals per bucket for ``tenant``, summed over ``partitions`` (:meth:`held_partitions`, or only
        :meth:`active_partitions`).

        Looked up by key, not by scanning the table: it also holds every dedupe record.
        """
        parts: dict[str, list[dict[str, float]]] = {}
        for bucket in get_args(Bucket):
            for partition in sorted(partitions):
                totals = self.state.get(f"totals|{tenant}|{bucket}|{partition}")
                if totals:
                    parts.setdefault(bucket, []).append({k: v for k, v in totals.items() if k != _WATERMARK})
        return {bucket: analytics.merge(p) for bucket, p in parts.items()}
