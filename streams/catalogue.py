"""The catalogue agent: catalogue updates in, fresh vectors and payloads in the store out."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import faust
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential

from models.indexer import CatalogueIndexer, IndexReport
from models.store.exceptions import DimensionMismatch, InvalidRequest, StoreError
from schemas import CatalogueUpdate, DecodeError, decode
from schemas.topics import TOPICS
from streams import metrics
from streams.batching import active_partitions, as_current, in_thread
from streams.deadletters import DeadLetterSink
from streams.gapfill import GapFill
from streams.lazy_changelog import changelog_schema
from streams.logloss import LogLossWatch
from streams.malloc_arenas import trim_free_memory
from streams.settings import Settings
from streams.table_store import table_options

__all__ = ["CataloguePipeline"]

log = logging.getLogger(__name__)

#: Micro-batches: embedding runs at batch speed under load, and a lone update waits at most this long.
#: 512 embedded faster (in-process, 2,000 products: 0.97-0.99 of one-call ONNX speed, against 0.93-0.95
#: at 256) but left the worker resident at 1,500 MB with 50,000 products (bench_search), against
#: 1,292 MB at 256: the goal is under 1.5 GB.
_BATCH_MAX = 256
_BATCH_WITHIN_S = 0.1
#: Back-off between attempts to write a batch while the store fails: doubling from the first, capped.
_RETRY_FIRST_S = 0.5
_RETRY_MAX_S = 30.0


def _store_unavailable(exc: BaseException) -> bool:
    """Worth retrying: the store failed (disk, permissions, server away), not the request itself."""
    if isinstance(exc, DimensionMismatch | InvalidRequest):
        return False  # the same batch would fail the same way: a configuration or data problem
    return isinstance(exc, StoreError | OSError)


@dataclass
class CatalogueStats:
    embedded: int = 0
    payload_only: int = 0
    deleted: int = 0
    stale: int = 0
    rejected: int = 0
    batches: int = 0
    #: when the newest batch became searchable (Unix time, s): with ``embedded``, an indexing rate that
    #: does not depend on how often it is read
    last_batch_at: float | None = None
    #: broker timestamp → searchable, for the newest batch (ms)
    last_freshness_ms: float | None = None
    tenants: set[str] = field(default_factory=set)
    #: attempts to write a batch that the store refused, and the store's error while it fails (else None)
    store_retries: int = 0
    store_error: str | None = None
    #: vector indexes built once the catalogue was quiet (Qdrant Edge), and how long the last build took
    index_builds: int = 0
    last_index_build_s: float | None = None


class CataloguePipeline:
    AGENT = "catalogue-index"

    def __init__(self, app: faust.App, settings: Settings, bootstrap: str, indexer_factory: Any,
                 log_loss: LogLossWatch | None = None) -> None:
        self.log_loss = log_loss
        self.tenants = frozenset(settings.tenants)
        self.topic = app.topic(
            settings.topic("catalogue"), key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )
        # Deletes by tenant:product_id (their updated_at), so that a late upsert cannot resurrect the product.
        # A product in the store carries its own updated_at, which the indexer compares too, so it records
        # no upserts here (models.indexer). It did, one changelog record per product: the agent's largest
        # cost besides embedding (bench_indexing 0.81-0.83 of raw ONNX throughput with them). Tables
        # written before 2026-12-06 hold upserts' versions too, which read as before.
        self.versions = app.Table("catalogue-versions", default=None, partitions=TOPICS["catalogue"].partitions,
                                  options=table_options(settings.worker.store), schema=changelog_schema())
        self.dead = DeadLetterSink(app, settings, self.AGENT)
        self.gaps = GapFill(app, self.versions, "catalogue agent", bootstrap, [settings.topic("catalogue")])
        self.stats = CatalogueStats()
        self._indexer_factory = indexer_factory
        self._indexer: CatalogueIndexer | None = None
        self.app = app
        self.topic_name = settings.topic("catalogue")
        #: A store of this process alone (Qdrant Edge) holds only the products of the partitions it indexes.
        self.own_store = settings.store.kind == "edge" or settings.store.url == ":memory:"
        self.gaps.serve(self.topic, self.AGENT, self._handle, batch_max=_BATCH_MAX, within_s=_BATCH_WITHIN_S)

        @app.on_partitions_assigned.connect
        async def warn_if_partial(app: faust.App, assigned: Any, **_: Any) -> None:
            held = self.partitions()
            if self.own_store and len(held) < TOPICS["catalogue"].partitions:
                log.warning(
                    "this worker indexes catalogue partitions %s of %d into a store of its own (Qdrant Edge), so "
                    "its searches see only their products: run one worker per Qdrant Edge store, or give several "
                    "workers one Qdrant server (SHOPRANK_STORE_KIND=qdrant)", sorted(held),
                    TOPICS["catalogue"].partitions)
        self._quiet_s = settings.store.optimize_idle_s
        self._min_points = settings.store.optimize_min_points
        self._writing = False  # a batch is being embedded and written: the catalogue is busy
        self._last_write = 0.0  # when the last batch was done (monotonic)
        if self._quiet_s > 0:
            @app.timer(min(1.0, self._quiet_s), name="index-builder")
            async def build_index_when_quiet() -> None:
                await self.build_index_when_quiet()

    def partitions(self) -> set[int]:
        """The catalogue partitions this worker indexes."""
        return active_partitions(self.app, self.topic_name)

    def coverage(self) -> dict[str, Any]:
        """Which products this worker's searches can find: all, unless its store is its own and it indexes
        only some of the catalogue's partitions."""
        held = self.partitions()
        total = TOPICS["catalogue"].partitions
        return {"partitions": sorted(held), "of": total,
                "searches_see_whole_catalogue": not self.own_store or len(held) == total}

    @property
    def indexer(self) -> CatalogueIndexer:
        if self._indexer is None:  # built lazily: loading the model must not delay the worker's start
            self._indexer = self._indexer_factory()
        return self._indexer

    async def _handle(self, batch: list[Any]) -> None:
        metrics.EVENTS.labels(self.AGENT).inc(len(batch))
        if self.log_loss is not None:
            # The broker lost the catalogue log (streams.logloss): its offsets start again, and so do the next
            # ones expected here (the products' versions, not offsets, keep the index right either way).
            for partition in self.log_loss.take(self.topic_name, {event.message.partition for event in batch}):
                self.gaps.restart(partition)
        await self._index(await self.gaps.fill(batch))
        # The batch's records are in the store or dead-lettered: their next offsets go last (streams.gapfill).
        self.gaps.save()
        self.gaps.ack()

    async def _index(self, batch: list[Any]) -> None:
        updates: list[CatalogueUpdate] = []
        #: ``tenant:product_id`` → the batch's last event carrying an update of it
        events: dict[str, Any] = {}
        for event in batch:
            message = event.message
            try:
                u = decode(CatalogueUpdate, message.value or b"")
                if u.tenant not in self.tenants:
                    raise DecodeError("unknown_tenant", f"tenant {u.tenant!r} is not served here")
            except DecodeError as err:
                self.stats.rejected += 1
                await self.dead.send(message, err.reason, err.detail)
                continue
            updates.append(u)
            events[f"{u.tenant}:{u.product_id}"] = event
        if not updates:
            return
        # The indexer runs in a thread on a plain dict; the deletes it took are written back here, on
        # the loop, naming each key's own event so the write lands in its partition's changelog.
        known: dict[str, int | None] = {k: self.versions.get(k) for k in events}
        versions = dict(known)
        try:
            report, versions = await self._apply(updates, versions)
        except Exception as exc:  # noqa: BLE001 - the model or the request failed: dead-letter, keep serving
            log.exception("catalogue batch of %d failed", len(updates))
            for event in batch:
                await self.dead.send(event.message, "internal_error", f"{type(exc).__name__}: {exc}")
            return
        for key, version in versions.items():
            if version is not None and version != known.get(key):
                as_current(events[key])
                self.versions[key] = version
        s = self.stats
        s.embedded += report.embedded
        s.payload_only += report.payload_only
        s.deleted += report.deleted
        s.stale += report.stale
        s.batches += 1
        s.last_batch_at = time.time()
        s.tenants |= report.tenants
        newest = max((e.message.timestamp for e in batch if e.message.timestamp), default=None)
        if newest:
            s.last_freshness_ms = round((time.time() - newest) * 1000, 1)

    async def build_index_when_quiet(self) -> None:
        """Build the vector index of collections that took enough new vectors (the store counts them, a
        model swap's rebuild included) once no catalogue batch has been written for a while.

        Qdrant Edge leaves new vectors in a plain segment that every dense search scans, and building
        the index holds the interpreter: searches wait meanwhile (about 2 s per 10,000 new products), so
        the build waits for a quiet catalogue, as after a bulk load, not for every trickle of updates.
        """
        if self._indexer is None or self._writing or time.monotonic() - self._last_write < self._quiet_s:
            return
        started = time.perf_counter()
        try:
            built = await in_thread(self._build, self._min_points)
        except StoreError as exc:  # searches go on over the plain segment; the next load tries again
            log.warning("could not build the vector index: %s", exc)
            return
        if built:
            s = self.stats
            s.index_builds += len(built)
            s.last_index_build_s = round(time.perf_counter() - started, 2)
            log.info("built the vector index of %s in %.1f s", ", ".join(built), s.last_index_build_s)

    def _build(self, min_points: int) -> list[str]:
        built = self.indexer.store.optimize_pending(min_points)
        if built:
            # A bulk load and the build leave freed memory in the middle of malloc's arenas, resident.
            trim_free_memory()
        return built

    async def _apply(self, updates: list[CatalogueUpdate], versions: dict[str, int | None]
                     ) -> tuple[IndexReport, dict[str, int | None]]:
        """Index a batch, retrying with back-off for as long as the store fails.

        The batch's offsets are acknowledged only after this returns, so nothing is committed before
        the store has the writes (Qdrant Edge: in its write-ahead log); meanwhile the partition waits,
        its lag grows, and /readyz reports ``store_writable: false``. Each attempt starts from the
        versions as they were: ``apply`` advances them before it writes.
        """
        self._writing = True
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_store_unavailable),
                wait=wait_exponential(multiplier=_RETRY_FIRST_S, max=_RETRY_MAX_S),
                before_sleep=self._log_retry,
                reraise=True,
            ):
                with attempt:
                    fresh = dict(versions)
                    report = await in_thread(self.indexer.apply, updates, fresh)
        finally:
            self._writing = False
            self._last_write = time.monotonic()
        self.stats.store_error = None
        return report, fresh

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.stats.store_retries += 1
        self.stats.store_error = f"{type(exc).__name__}: {exc}"
        log.warning("catalogue batch not indexed (attempt %d): %s — retrying in %.1f s; its offsets stay "
                    "uncommitted until the store takes it", state.attempt_number, self.stats.store_error,
                    state.next_action.sleep if state.next_action else 0.0)
