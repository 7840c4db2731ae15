"""Every worker serves the model that learned: snapshots published by the learner, followed by all.

A tenant's interactions are keyed by tenant, so its model learns on the one worker that holds that
partition; its searches, keyed by request, land on every worker. Every ``share_interval_s`` that worker
publishes each model that learned since to the compacted ``rankers`` topic (schemas.ranker, plain
numbers: not a pickle, which would let whoever can write the topic run code on every worker). Every
worker follows the topic from the beginning (streams.follow) and adopts a snapshot that has learned more
than its own copy, which also hands a model over when its partition moves to another worker.

A worker also publishes when its partitions are revoked, after its agents have finished their events,
so a partition handed over in a rebalance takes its model along whole. After a crash, what was learned
since the last snapshot is lost to the model (the engagement counters keep it): at most
``share_interval_s`` of learning, as a checkpoint bounds it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter
from typing import Any

import faust

from schemas import DecodeError, RankerSnapshot, decode, encode
from streams.deadletters import DeadLetterSink, record_origin, salvaged_tenant
from streams.follow import TopicFollower
from streams.ranking import RankerHub
from streams.settings import Settings

__all__ = ["RankerShare"]

log = logging.getLogger(__name__)


class RankerShare:
    AGENT = "rankers"

    def __init__(self, app: faust.App, settings: Settings, bootstrap: str, hub: RankerHub) -> None:
        self.hub = hub
        self.worker = f"{socket.gethostname()}:{settings.worker.web_port}"
        self.topic = app.topic(settings.topic("rankers"), key_type=bytes, value_type=bytes, key_serializer="raw",
                               value_serializer="raw")
        self.dead = DeadLetterSink(app, settings, self.AGENT)
        self.counts: Counter[str] = Counter()
        self.follower = TopicFollower(bootstrap, settings.topic("rankers"), self._fold,
                                      settings.kafka.fetch_max_wait_ms)
        app.task(self.follower.run)
        app.timer(settings.ranker.share_interval_s, name="ranker-share")(self.publish)

        @app.on_partitions_revoked.connect
        async def publish_on_revoke(app: faust.App, revoked: Any, **_: Any) -> None:
            # Faust sends this once the agents have finished their events: the models are final here, and
            # the worker that takes a partition over can start from them rather than from an older snapshot.
            await self.publish_soon("partitions revoked")

    @property
    def loaded(self) -> bool:
        """True once the topic has been read up to the end offset it had at start-up."""
        return self.follower.loaded

    async def publish(self) -> int:
        """Publish the models that learned here since they were last shared; how many."""
        if not self.loaded:
            return 0  # first learn what the others published: a snapshot behind theirs must not go out
        sent = 0
        for snapshot in self.hub.snapshots_due(self.worker, int(time.time() * 1000)):
            await self.topic.send(key=snapshot.tenant.encode(), value=encode(snapshot))
            self.hub.shared(snapshot)
            self.counts["published"] += 1
            sent += 1
        return sent

    async def publish_soon(self, why: str, timeout_s: float = 5.0) -> None:
        """:meth:`publish`, bounded in time, for a rebalance or a shutdown that must not wait on the broker."""
        try:
            await asyncio.wait_for(self.publish(), timeout_s)
        except Exception as exc:  # noqa: BLE001 - the checkpoint file still has the model; the timer tries again
            log.warning("could not publish the rankers (%s): %s", why, exc)

    def stats(self) -> dict[str, Any]:
        return {
            "loaded": self.loaded,
            "worker": self.worker,
            "versions": self.hub.versions(),
            "records": dict(self.counts),
            "offsets": {str(tp.partition): off for tp, off in self.follower.positions.items()},
            "dead_letters": dict(self.dead.counts),
        }

    async def _fold(self, rec: Any) -> None:
        if rec.value is None:  # a tombstone: nothing to adopt, the model stays
            self.counts["tombstone"] += 1
            return
        try:
            snapshot = decode(RankerSnapshot, rec.value)
            if rec.key is None or rec.key.decode(errors="replace") != snapshot.tenant:
                raise DecodeError("invalid_value", f"key {rec.key!r} is not the snapshot's tenant {snapshot.tenant!r}; "
                                                   "compaction would keep the wrong tenant's model")
        except DecodeError as err:
            await self.dead.send(record_origin(rec), err.reason, err.detail, tenant=salvaged_tenant(rec.value))
            return
        outcome = self.hub.adopt(snapshot)
        self.counts[outcome] += 1
        if outcome == "adopted":
            log.info("ranker of %s: adopted %s-%d from %s", snapshot.tenant, snapshot.model, snapshot.updates,
                     snapshot.worker or "?")
