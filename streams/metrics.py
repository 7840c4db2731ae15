"""Prometheus instruments of a worker, and the background task that refreshes the sampled ones.

Counters and histograms are updated where things happen (one line in each agent); rates are left to
Prometheus (``rate(shoprank_agent_events_total[1m])``). Lag, group status and index sizes are
sampled by :func:`install` every ``SHOPRANK_WORKER_METRICS_INTERVAL_S``, never on a scrape: a scrape
must stay cheap and must not touch the broker or the store.

Everything lives in one registry of our own (:data:`REGISTRY`) with the process collectors, so
``/metrics`` shows shoprank's series and the process's, nothing a library registered by itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    GCCollector,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from streams.lag import LagProbe, LagWindow

if TYPE_CHECKING:
    from schemas import SearchResult
    from streams.app import ShoprankApp

__all__ = [
    "CONTENT_TYPE",
    "DEAD_LETTERS",
    "EVENTS",
    "GAP_FILLED",
    "REGISTRY",
    "install",
    "observe_search",
    "render",
    "set_model_version",
]

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

#: The classic text format that :func:`generate_latest` writes; every Prometheus version reads it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

EVENTS = Counter(
    "shoprank_agent_events", "Messages taken from Kafka per agent (good and bad alike)", ["agent"], registry=REGISTRY
)
COLLECTOR_ACCEPTED = Counter(
    "shoprank_collector_events_accepted", "Pixel events the collector published", ["tenant"], registry=REGISTRY
)
COLLECTOR_REFUSED = Counter(
    "shoprank_collector_requests_refused", "Collector requests refused, by reason", ["reason"], registry=REGISTRY
)
DEAD_LETTERS = Counter(
    "shoprank_dead_letters", "Messages routed to the dead-letter topic, by agent and reason", ["agent", "reason"],
    registry=REGISTRY,
)
GAP_FILLED = Counter(
    "shoprank_gap_filled_records", "Records an agent was not handed in order, read from the broker (streams.gapfill)",
    ["agent"], registry=REGISTRY,
)
SEARCH_STAGE = Histogram(
    "shoprank_search_stage_seconds",
    "Wall time of each search stage (SearchResult.timings_ms)",
    ["stage"],
    # From a sub-millisecond filter step to a multi-second cold start.
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
MODEL_VERSION = Gauge(
    "shoprank_model_version_info", "Model versions served (value 1), by kind: embedder, ranker", ["kind", "version"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "shoprank_consumer_lag", "Messages behind the end offset, for partitions this worker holds",
    ["group", "topic", "partition"], registry=REGISTRY,
)
GROUP_STATUS = Enum(
    "shoprank_consumer_group_status", "The worker's consumer group judged by Burrow's rules",
    ["group"], states=["NOTFOUND", "OK", "WARN", "ERR"], registry=REGISTRY,
)
EVENT_LOOP = Gauge("shoprank_event_loop_info", "The worker's event loop (value 1), by kind: asyncio or uvloop",
                   ["loop"], registry=REGISTRY)
INDEX_POINTS = Gauge("shoprank_index_points", "Products in each tenant's index", ["tenant"], registry=REGISTRY)
GC_FROZEN = Gauge("shoprank_gc_frozen_objects", "Objects frozen out of full garbage collections (streams.gc_freeze)",
                  registry=REGISTRY)
GC_RECLAIMED = Gauge(
    "shoprank_gc_reclaimed_objects",
    "Unreachable objects the reclaiming collections found among frozen ones, since the worker started",
    registry=REGISTRY,
)
GC_RECLAIM_SECONDS = Gauge("shoprank_gc_last_reclaim_seconds", "Pause of the last reclaiming full collection",
                           registry=REGISTRY)
SAMPLE_ERRORS = Counter(
    "shoprank_metrics_sample_errors", "Failed background samples (broker or store unreachable)", ["what"],
    registry=REGISTRY,
)

_versions: dict[str, str] = {}


def render() -> bytes:
    """The text exposition of :data:`REGISTRY` (what ``GET /metrics`` answers)."""
    return generate_latest(REGISTRY)


def set_model_version(kind: str, version: str) -> None:
    """Record the version of ``kind`` now served; the previous version's series goes away."""
    old = _versions.get(kind)
    if old == version:
        return
    if old is not None:
        MODEL_VERSION.remove(kind, old)
    _versions[kind] = version
    MODEL_VERSION.labels(kind, version).set(1)


def observe_search(results: Iterable[SearchResult]) -> None:
    """Stage timings and model versions of answered searches."""
    for r in results:
        for stage, ms in r.timings_ms.items():
            SEARCH_STAGE.labels(stage).observe(ms / 1000)
        for kind, version in r.model_versions.items():
            set_model_version(kind, version)


def install(shop: ShoprankApp) -> None:
    """Register the background sampler of lag, group status, index sizes and the embedder version."""
    app = shop.faust
    # Faust's consumer group id is the app id (with the topic prefix); search requests have their own.
    groups = [app.conf.id, shop.search.requests.group]
    window = LagWindow()
    GC_FROZEN.set_function(shop.gc.frozen)
    GC_RECLAIMED.set_function(lambda: shop.gc.stats.reclaimed)
    GC_RECLAIM_SECONDS.set_function(lambda: shop.gc.stats.last_reclaim_s or 0.0)

    @app.timer(shop.settings.worker.metrics_interval_s, name="metrics-sampler")
    async def sample() -> None:
        await _sample_lag(shop, window, groups)
        await _sample_store(shop)


async def _sample_lag(shop: ShoprankApp, window: LagWindow, groups: list[str]) -> None:
    try:
        # A fresh connection each time: nothing is left open when the worker stops between samples.
        async with LagProbe(shop.bootstrap, fallback_groups=groups) as probe:
            snaps = await probe.snapshot(groups)
    except Exception as exc:  # noqa: BLE001 - a sampler never takes the worker down
        SAMPLE_ERRORS.labels("lag").inc()
        log.warning("lag sample failed: %s", exc)
        return
    held: dict[str, set[tuple[str, int]]] = {group: set() for group in groups}
    consumers = (shop.faust.consumer, shop.search.requests.consumer)
    for group, consumer in zip(groups, consumers, strict=True):
        try:
            held[group] = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        except Exception:  # noqa: BLE001 - consumer not started yet
            pass
    CONSUMER_LAG.clear()
    for snap in snaps:
        window.observe(snap)
        for p in snap.partitions:
            if (p.topic, p.partition) in held.get(snap.group, ()):
                CONSUMER_LAG.labels(snap.group, p.topic, str(p.partition)).set(p.lag)
    for group in groups:
        GROUP_STATUS.labels(group).state(window.report(group).status)


async def _sample_store(shop: ShoprankApp) -> None:
    from models.store.exceptions import CollectionNotFound
    from streams.batching import in_thread

    res = shop.resources
    loaded = res.loaded()
    if loaded["model_loaded"]:
        set_model_version("embedder", res.embedder.version)
    if not loaded["store_open"]:
        return

    def counts() -> dict[str, int]:
        out = {}
        for tenant in shop.settings.tenants:
            try:
                out[tenant] = res.store.count(res.serving.serving(tenant).collection)
            except CollectionNotFound:
                out[tenant] = 0  # nothing indexed for this tenant yet
        return out

    try:
        sizes = await in_thread(counts)
    except Exception as exc:  # noqa: BLE001 - the store may be briefly unavailable; try next time
        SAMPLE_ERRORS.labels("index").inc()
        log.warning("index size sample failed: %s", exc)
        return
    for tenant, n in sizes.items():
        INDEX_POINTS.labels(tenant).set(n)
