"""The pixel-event validation agent: count valid events per tenant and type, dead-letter the rest."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import faust

from schemas import EVENT_TYPES, DecodeError, PixelEvent, SearchLog, decode
from schemas.topics import TOPICS
from streams import metrics
from streams.attribution_stage import AttributionStage
from streams.batching import active_partitions, as_current
from streams.deadletters import DeadLetterSink, salvaged_tenant
from streams.dedupe import BatchedDedupe
from streams.gapfill import GapFill
from streams.lazy_changelog import changelog_schema
from streams.logloss import LogLossWatch
from streams.privacy import ForgetList
from streams.settings import Settings
from streams.table_store import table_options

__all__ = ["PixelPipeline", "PixelValidator"]

log = logging.getLogger(__name__)

#: Dedupe entries are purged (for the partition at hand) once every this many events.
_PURGE_EVERY = 5_000
#: Micro-batch bounds: at most this many events, or whatever arrived within this many seconds.
_BATCH_MAX = 500
_BATCH_WITHIN_S = 0.05
#: A partition's counts, in one record: ``counts|<partition>`` maps ``tenant|type`` to [events, offset of
#: the last one counted]. A record per tenant and type was 44% of this table's changelog records under
#: bench_learning's traffic (8,560 of 19,496), each one a producer send here and a read on every standby.
_COUNTS = "counts|"
#: Counts as earlier versions kept them, a record per tenant and type (``count|tenant|type|partition``):
#: read once per partition, where no ``counts|`` record exists yet, and carried into it.
_LEGACY_COUNT = "count|"


class PixelValidator:
    """Checks one raw pixel message: the contract, then what only the deployment knows.

    Pure and synchronous, so it is tested without a broker. Raises :class:`DecodeError`.
    """

    def __init__(self, settings: Settings) -> None:
        self.tenants = frozenset(settings.tenants)
        self.max_bytes = settings.pixel.max_payload_bytes
        self.max_skew_ms = int(settings.pixel.max_future_skew_s * 1000)

    def check(self, raw: bytes | None, *, now_ms: int, broker_ts_ms: int | None = None) -> PixelEvent:
        if raw is None:
            raise DecodeError("invalid_json", "empty message (no value)")
        event = decode(PixelEvent, raw, max_bytes=self.max_bytes)
        if event.tenant not in self.tenants:
            raise DecodeError("unknown_tenant", f"tenant {event.tenant!r} is not served here")
        if event.client_ts > now_ms + self.max_skew_ms:
            ahead = (event.client_ts - now_ms) / 1000
            raise DecodeError("future_timestamp", f"client_ts is {ahead:.0f} s in the future")
        if event.server_ts is None:
            event = event.model_copy(update={"server_ts": broker_ts_ms if broker_ts_ms is not None else now_ms})
        return event


@dataclass
class PixelStats:
    valid: int = 0
    rejected: int = 0


class PixelPipeline:
    """Wires the validation agent, its tables and its dead-letter sink into a Faust app.

    Counts are kept per source partition (one ``counts|<partition>`` record): each record is then written
    only from its own partition, so its changelog is exact on recovery without a repartition hop;
    readers sum over partitions. Each count carries the offset of the last event it counted, and each
    dedupe entry (streams.dedupe) the message that first carried its id: a batch replayed after a crash counts nothing
    twice and is still attributed again (attribution is idempotent by interaction id).
    """

    AGENT = "pixel-validate"

    def __init__(self, app: faust.App, settings: Settings, bootstrap: str, forget: ForgetList | None = None,
                 log_loss: LogLossWatch | None = None) -> None:
        self.validator = PixelValidator(settings)
        self.log_loss = log_loss
        self.forget = forget
        self.dedupe_window_ms = int(settings.pixel.dedupe_window_s * 1000)
        partitions = TOPICS["pixel"].partitions
        self.pixel_topic = settings.topic("pixel")
        self.searches_topic = settings.topic("searches")
        # One consumer over both: they share key and partition count, so a session's search logs and
        # events meet on one worker, which attributes each outcome to its search (streams.attribution).
        self.topic = app.topic(
            self.pixel_topic, self.searches_topic,
            key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
        )
        # Dedupe entries and counts share one table: its writes reach one changelog partition per source
        # partition in order, so counts that survived a crash imply the dedupe entries written before.
        self.state = app.Table("pixel-state", default=None, partitions=partitions,
                               help="event ids seen, sessions, counts",
                               options=table_options(settings.worker.store), schema=changelog_schema())
        self.dedupe = BatchedDedupe(self.state, self.dedupe_window_ms)
        self.dead = DeadLetterSink(app, settings, self.AGENT)
        self.stats = PixelStats()
        self.attribution = AttributionStage(app, settings, self.state)
        self.app = app
        self._since_purge = 0
        #: Per partition, what the earlier per-key count records held (see _LEGACY_COUNT). Read again after
        #: each recovery: a read while a partition was still recovering would have found none.
        self._legacy: dict[int, dict[str, list[int]]] = {}
        self.state.on_recover(self._forget_legacy)
        self.gaps = GapFill(app, self.state, "pixel agent", bootstrap, [self.pixel_topic, self.searches_topic])
        # Batches: a count key is then written once per batch rather than once per event, which
        # halves the changelog traffic that bounds this agent's throughput. Offsets of a batch are
        # acknowledged only after the whole batch has been handled (at-least-once).
        self.gaps.serve(self.topic, self.AGENT, self._handle_batch, batch_max=_BATCH_MAX, within_s=_BATCH_WITHIN_S)

    async def _handle_batch(self, batch: list[Any]) -> None:
        if self.forget is not None:
            await self.forget.ready()
        metrics.EVENTS.labels(self.AGENT).inc(len(batch))
        if self.log_loss is not None:
            self._restart_watermarks(batch)
        batch = await self.gaps.fill(batch)
        counts: dict[int, dict[str, list[int]]] = {}  # partition -> its counts record, as this batch leaves it
        changed: set[int] = set()
        last_of_partition: dict[int, Any] = {}
        attributable: list[tuple[Any, PixelEvent | SearchLog]] = []
        for event in batch:
            message = event.message
            try:
                record = await (self._handle_search(event) if message.topic == self.searches_topic
                                else self._handle(event, counts, changed))
                if record is not None:
                    attributable.append((event, record))
                last_of_partition[message.partition] = event
            except Exception as exc:  # a worker never dies on one message
                log.exception("pixel agent failed on %s[%d]@%d", message.topic, message.partition, message.offset)
                await self.dead.send(message, "internal_error", f"{type(exc).__name__}: {exc}")
        # Write order matters (one changelog partition per source partition, in order): dedupe
        # records and sessions first, counts last, so surviving counts imply what they depend on.
        now_ms = int(time.time() * 1000)
        self.dedupe.flush(last_of_partition, now_ms)
        try:
            await self.attribution.handle_batch(attributable)
        except Exception:  # logged; the events stay counted and deduplicated
            log.exception("attribution failed for a batch of %d records", len(attributable))
        for partition in changed:
            as_current(last_of_partition[partition])
            self.state[f"{_COUNTS}{partition}"] = counts[partition]
        self._since_purge += len(batch)
        if self._since_purge >= _PURGE_EVERY:
            self._since_purge = 0
            self.dedupe.purge(now_ms, self.active_partitions(), last_of_partition)
        self.gaps.save()  # last: the next offsets survive a crash only with what this batch wrote
        self.gaps.ack()

    def _restart_watermarks(self, batch: list[Any]) -> None:
        """The broker lost a partition's log (streams.logloss): its offsets start again, so must its counts'."""
        assert self.log_loss is not None
        first: dict[int, Any] = {}
        for event in batch:
            if event.message.topic == self.pixel_topic:
                first.setdefault(event.message.partition, event)
        for partition in self.log_loss.take(self.pixel_topic, set(first)):
            self.gaps.restart(partition)
            as_current(first[partition])  # the write goes to this partition's changelog
            record = self.counts_of(partition)
            if record:
                self.state[f"{_COUNTS}{partition}"] = {slot: [n, -1] for slot, (n, _) in record.items()}

    async def _handle_search(self, event: Any) -> SearchLog | None:
        """A search log from the search agent (trusted producer, still checked)."""
        message = event.message
        try:
            record = decode(SearchLog, message.value or b"")
        except DecodeError as err:
            await self.dead.send(message, err.reason, err.detail, tenant=salvaged_tenant(message.value))
            return None
        return record if record.session_id is not None else None

    async def _handle(self, event: Any, counts: dict[int, dict[str, list[int]]],
                      changed: set[int]) -> PixelEvent | None:
        message = event.message
        now_ms = int(time.time() * 1000)
        broker_ts = int(message.timestamp * 1000) if message.timestamp else None
        try:
            ev = self.validator.check(message.value, now_ms=now_ms, broker_ts_ms=broker_ts)
        except DecodeError as err:
            self.stats.rejected += 1
            tenant = salvaged_tenant(message.value)
            await self.dead.send(message, err.reason, err.detail, tenant=tenant)
            return None
        if self.forget is not None and self.forget.is_forgotten(ev.tenant, ev.user_id):
            # Dropped without a dead letter: a dead letter would keep the shopper's event.
            self.forget.counts["events_dropped"] += 1
            return None
        partition, offset = message.partition, message.offset
        # Names the message that first carried this id: the same message replayed after a crash is
        # that message again, not a duplicate, and the count watermark decides whether it counted.
        if self.dedupe.seen_elsewhere(f"{ev.tenant}|{ev.event_id}", partition, offset):
            self.stats.rejected += 1
            await self.dead.send(message, "duplicate_event", f"event_id {ev.event_id!r} was already counted", ev.tenant)
            return None
        record = counts.get(partition)
        if record is None:
            record = counts[partition] = self.counts_of(partition)
        slot = f"{ev.tenant}|{ev.type}"
        n, last = record.get(slot) or (0, -1)
        if offset > last:
            record[slot] = [n + 1, offset]
            changed.add(partition)
        self.stats.valid += 1
        return ev

    def counts_of(self, partition: int) -> dict[str, list[int]]:
        """A copy of ``partition``'s counts: ``tenant|type`` -> [events, offset of the last one counted]."""
        record = self.state.get(f"{_COUNTS}{partition}")
        if record is None:
            record = self._legacy_counts(partition)
        return {slot: list(value) for slot, value in record.items()}

    async def _forget_legacy(self) -> None:
        self._legacy = {}

    def _legacy_counts(self, partition: int) -> dict[str, list[int]]:
        if partition not in self._legacy:
            suffix = f"|{partition}"
            self._legacy[partition] = {
                key[len(_LEGACY_COUNT):-len(suffix)]: list(value) for key, value in list(self.state.items())
                if isinstance(key, str) and key.startswith(_LEGACY_COUNT) and key.endswith(suffix) and value
            }
        return self._legacy[partition]

    def active_partitions(self) -> set[int]:
        """Pixel partitions this worker processes (not its standby copies of others)."""
        return active_partitions(self.app, self.pixel_topic)

    def totals(self) -> dict[str, dict[str, int]]:
        """Valid events per tenant and type, summed over the partitions this worker processes.

        Looked up by key, not by scanning the table: it also holds every dedupe record and session.
        """
        summed: dict[str, int] = {}
        for partition in self.active_partitions():
            for slot, (n, _) in self.counts_of(partition).items():
                summed[slot] = summed.get(slot, 0) + n
        out: dict[str, dict[str, int]] = {}
        for tenant in sorted(self.validator.tenants):
            for etype in EVENT_TYPES:
                if n := summed.get(f"{tenant}|{etype}", 0):
                    out.setdefault(tenant, {})[etype] = n
        return out
