"""Builds the Faust app: settings in, agents, tables and HTTP views wired."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka.admin import NewTopic
from mode.utils.times import want_seconds

from schemas.topics import TOPICS
from streams import eager_handover, faust_compat, group_watch, table_store
from streams.batching import in_thread
from streams.catalogue import CataloguePipeline
from streams.gc_freeze import GcFreezer
from streams.group_watch import GroupWatch
from streams.kafka import PRODUCER_BATCH_BYTES, create_missing, spec_topics
from streams.learning import LearningPipeline
from streams.logloss import LogLossWatch
from streams.pixel import PixelPipeline
from streams.privacy import ForgetList
from streams.packed import PackedRecords
from streams.ranker_share import RankerShare
from streams.ranking import ENGAGEMENT_PREFIX, RankerHub
from streams.resources import Resources
from streams.rules import RuleBook
from streams.search import SearchPipeline
from streams.settings import Settings
from streams.swap import SwapManager

__all__ = ["ShoprankApp", "create_app", "faust_topics"]

log = logging.getLogger(__name__)


#: How often standby table partitions take the changelog records read for them (streams.app below).
_STANDBY_APPLY_S = 0.5


@dataclass
class ShoprankApp:
    """The Faust app and the pipelines on it (views and tests reach the pipelines through this)."""

    faust: faust.App
    settings: Settings
    bootstrap: str
    resources: Resources
    log_loss: LogLossWatch
    pixel: PixelPipeline
    catalogue: CataloguePipeline
    search: SearchPipeline
    learning: LearningPipeline
    rules: RuleBook
    rankers: RankerHub
    ranker_share: RankerShare
    forget: ForgetList
    swaps: SwapManager
    gc: GcFreezer
    group: GroupWatch


def create_app(settings: Settings, bootstrap: str) -> ShoprankApp:
    """A configured, not yet started Faust app talking to ``bootstrap`` (Kafka protocol only)."""
    log_loss = LogLossWatch({settings.topic(name): spec.partitions for name, spec in TOPICS.items()})
    table_store.install()
    faust_compat.install(fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms, log_loss=log_loss)
    eager_handover.install()
    kafka = settings.kafka
    worker = settings.worker
    app = faust.App(
        # The prefix isolates deployments on one cluster: Faust names its consumer group and its
        # changelog topics after the app id, so those must carry the prefix too.
        f"{kafka.topic_prefix}{worker.app_id}",
        broker=[f"kafka://{server.strip()}" for server in bootstrap.split(",")],
        store=worker.store,
        datadir=str(settings.faust_dir),
        autodiscover=False,
        topic_replication_factor=1,
        # Our own topics are created up front with their partition counts (streams.kafka.ensure_topics);
        # Faust still declares its internal changelog topics.
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=kafka.rebalance_timeout_s,
        broker_session_timeout=kafka.session_timeout_s,
        broker_heartbeat_interval=kafka.heartbeat_interval_s,
        # aiokafka waits for a partition's full batch to be sent before it takes the next record, and
        # a search result or search log is 4-10 KB: with the 16 KB default every second or third reply
        # waited for a produce round trip inside the search agent's loop.
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        producer_linger=kafka.producer_linger_ms / 1000,
        table_standby_replicas=worker.standby_replicas,
        web_enabled=True,
        web_bind=worker.web_host,
        web_host=worker.web_host,
        web_port=worker.web_port,
    )
    rules = RuleBook(app, settings, bootstrap)  # every tenant's rules, whatever partitions this worker holds
    hub: RankerHub | None = None
    learning = LearningPipeline(app, settings, bootstrap, lambda: hub.learn if hub is not None else None, log_loss)
    # Engagement counters share the learning agent's table (one ordered changelog with the totals).
    hub = RankerHub(settings, PackedRecords(learning.state, ENGAGEMENT_PREFIX))
    resources = Resources(settings, rules=rules.rules_for, ranker=hub.get)
    forget = ForgetList(app, settings, bootstrap)  # every tenant's forgotten shoppers, on every worker
    shop = ShoprankApp(
        faust=app,
        settings=settings,
        bootstrap=bootstrap,
        resources=resources,
        log_loss=log_loss,
        pixel=PixelPipeline(app, settings, bootstrap, forget, log_loss),
        catalogue=CataloguePipeline(app, settings, bootstrap, lambda: resources.indexer, log_loss),
        search=SearchPipeline(app, settings, lambda: resources.searcher, bootstrap),
        learning=learning,
        rules=rules,
        rankers=hub,
        ranker_share=RankerShare(app, settings, bootstrap, hub),  # the learner's models, for every worker
        forget=forget,
        swaps=SwapManager(app, settings, resources),
        gc=GcFreezer(worker.gc_reclaim_s),
        group=GroupWatch(app, log_loss),
    )

    @app.timer(settings.ranker.checkpoint_interval_s, name="ranker-checkpoint")
    async def checkpoint_rankers() -> None:
        await in_thread(hub.checkpoint)

    @app.on_before_shutdown.connect
    async def save_rankers(app: faust.App, **_: Any) -> None:
        hub.checkpoint()
        await shop.ranker_share.publish_soon("shutdown")

    @app.timer(_STANDBY_APPLY_S, name="standby-apply")
    async def apply_standby_records() -> None:
        """Apply the changelog records read for standby partitions so far.

        Faust holds them until a table has 1,000 (its ``standby_buffer_size``), so at a small shop's pace
        another worker's copy of the engagement counters and analytics totals lagged for hours (seen:
        none of a tenant's totals on the second of two workers).
        """
        recovery = app.tables.recovery
        # Under load Faust's own flushes come often enough. Each extra one also writes the persisted
        # offsets: flushing at every tick, two workers ran bench_learning's traffic at 3,023 and 3,071
        # messages/s, against 3,256 and 3,199 without (the VM's noise is about that size).
        last = recovery._last_flush_at  # noqa: SLF001 - Faust's record of its last flush (time.monotonic)
        waited = _STANDBY_APPLY_S if last is None else time.monotonic() - last
        if not recovery.in_recovery and waited >= _STANDBY_APPLY_S and any(recovery.buffers.values()):
            recovery.flush_buffers()

    ours = spec_topics(kafka.topic_prefix, retention_ms=kafka.retention_ms)

    @app.timer(kafka.topic_check_s, name="topic-guard")
    async def recreate_lost_topics() -> None:
        """A broker that lost its log lost our topics too: create them again, as the worker did at start."""
        try:
            # Ours and Faust's in one admin round trip.
            created = await create_missing(bootstrap, ours + faust_topics(app))
        except Exception as exc:  # noqa: BLE001 - the broker is away; the next check tries again
            log.debug("topic check failed: %s", exc)
            return
        if created:
            log_loss.topics_recreated()
            log.warning("topics missing on the broker (did it lose its log?) were created again: %s", created)

    @app.timer(group_watch.CHECK_S, name="group-watch")
    async def join_again_if_the_assignment_is_stale() -> None:
        try:
            await shop.group.check()
        except Exception as exc:  # noqa: BLE001 - the broker went away again; the next check tries again
            log.warning("joining the group again failed: %s", exc)

    @app.task
    async def load_resources() -> None:
        """Open the store and load the model in the background; /readyz waits for both."""
        await in_thread(lambda: (resources.store, resources.embedder, resources.serving))
        # Start-up leaves about 230,000 objects (Faust, the model, the store) that live as long as the
        # worker, and every full collection walked them again: 100 ms pauses, each one a burst of late
        # searches (bench_search at 100 rps: Kafka p99 536-820 ms before, 177 ms after). Frozen, they
        # are left out of collections; what settles later is frozen by the timer below.
        shop.gc.reclaim()

    if worker.gc_freeze_s > 0:
        @app.timer(worker.gc_freeze_s, name="gc-freeze")
        async def freeze_settled_objects() -> None:
            shop.gc.tick()

    from streams import metrics
    from streams.web import register_views

    register_views(shop)
    metrics.install(shop)  # lag, group status and index sizes sampled in the background for /metrics
    return shop


def faust_topics(app: faust.App) -> list[NewTopic]:
    """The topics Faust declares at start-up (tables' changelogs, the leader topic), configured as it does.

    Faust declares each once per process (memoised), so after a broker lost its log they would only
    come back auto-created with the broker's defaults, which the worker no longer allows
    (streams.autocreate): without its changelog topics, table recovery waits for metadata and fails.
    """
    channels = [table.changelog_topic for table in app.tables.values()]
    if not app.conf.topic_disable_leader:
        channels.append(app._leader_assignor._leader_topic)  # noqa: SLF001 - Faust names it, not us
    return [NewTopic(name, channel.partitions or app.conf.topic_partitions, 1, topic_configs=_faust_config(app, channel))
            for channel in channels for name in channel.topics]


def _faust_config(app: faust.App, channel: Any) -> dict[str, str]:
    """A Faust topic's broker config, built by Faust's own transport as when it declares the topic."""
    retention_ms = int(want_seconds(channel.retention) * 1000) if channel.retention else None
    config = app.transport._topic_config(retention_ms, channel.compacting, channel.deleting)  # noqa: SLF001
    config.update(channel.config or {})
    return {k: str(v) for k, v in config.items()}
