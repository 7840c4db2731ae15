"""The worker's online rankers, one per tenant: built lazily, fed by the learning agent, read by search,
checkpointed to disk and restored at start-up.

Engagement counters live in the learning agent's Faust table (keys ``eng|<tenant>|…``, sent to its
changelog in packs, streams.packed), so they are rebuilt from its changelog like the analytics totals;
the River models live in a checkpoint file per tenant under the data directory, written atomically
every few seconds and on shutdown. Models learn from interactions the learning agent has
deduplicated, so a replay after a crash is not learned twice; what was learned after the last
checkpoint and before a crash is relearned only if its offsets were not yet committed (the checkpoint
interval bounds what an online model can forget).

Only the worker holding a tenant's ``interactions`` partition learns its model; the others serve the
snapshots it publishes (streams.ranker_share), adopting one when it has learned more than their own copy.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any, Literal

from models.ranker import Engagement, Objective, OnlineRanker, RankerConfig
from schemas import AttributedInteraction, RankerSnapshot
from streams.packed import Records
from streams.settings import Settings

__all__ = ["ENGAGEMENT_PREFIX", "AdoptOutcome", "RankerHub"]

#: What became of a snapshot read from the rankers topic.
AdoptOutcome = Literal["adopted", "not_newer", "other_model", "other_tenant"]

#: Engagement records' keys in the learning agent's table: ``eng|<tenant>|<Engagement key>``.
ENGAGEMENT_PREFIX = "eng|"

log = logging.getLogger(__name__)


class _TenantView(MutableMapping[str, list[float]]):
    """One tenant's engagement records, under a key prefix of the shared records.

    Between :meth:`hold` and :meth:`flush` writes are held and then written once per key, in one
    :meth:`Records.write`: an impression updates two engagement records per product shown, so a batch
    writes the same popular keys many times, and the learning table sends its changelog in packs
    (streams.packed).
    """

    def __init__(self, records: Records, prefix: str) -> None:
        self.records, self.prefix = records, prefix
        self._held: dict[str, list[float]] | None = None

    def __getitem__(self, key: str) -> list[float]:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def get(self, key: str, default: Any = None) -> Any:
        if self._held is not None and key in self._held:
            return self._held[key]
        value = self.records.get(self.prefix + key)
        return default if value is None else value

    def get_many(self, keys: Sequence[str]) -> list[Any]:
        """:meth:`get` for many keys, through one read of the records."""
        found = self.records.get_many([self.prefix + key for key in keys])
        held = self._held
        if held:
            found = [held.get(key, value) for key, value in zip(keys, found, strict=True)]
        return found

    def __setitem__(self, key: str, value: list[float]) -> None:
        if self._held is not None:
            self._held[key] = value
        else:
            self.records.write({self.prefix + key: value})

    def __delitem__(self, key: str) -> None:
        raise TypeError("engagement records are never deleted: they decay (streams.packed keeps no tombstones)")

    def __iter__(self) -> Iterator[str]:
        self.flush()
        n = len(self.prefix)
        return (k[n:] for k in self.records.keys(self.prefix))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def hold(self) -> None:
        """Hold writes until :meth:`flush`."""
        if self._held is None:
            self._held = {}

    def flush(self) -> None:
        """Write what was held (each key once) and stop holding."""
        held, self._held = self._held, None
        if held:
            self.records.write({self.prefix + key: value for key, value in held.items()})


class RankerHub:
    def __init__(self, settings: Settings, records: Records) -> None:
        self.settings = settings.ranker
        self.tenants = frozenset(settings.tenants)
        self.records = records
        self.dir = settings.worker.data_dir / "rankers" / settings.worker.app_id
        self._rankers: dict[str, OnlineRanker] = {}
        self._views: dict[str, _TenantView] = {}
        self._saved_at: dict[str, int] = {}
        #: The updates of the last snapshot of each tenant this worker published or adopted.
        self._shared_at: dict[str, int] = {}
        #: The most updates of any snapshot of each tenant read from the rankers topic.
        self._topic_high: dict[str, int] = {}
        self._building = threading.Lock()  # search threads and the event loop both build rankers on first use

    def config_for(self, tenant: str) -> RankerConfig:
        return RankerConfig(
            objective=Objective.parse(self.settings.objective_for(tenant)),
            explore_slots=self.settings.slots(),
            warmup=self.settings.warmup,
            seed=hash(tenant) & 0xFFFF,
        )

    def path(self, tenant: str) -> Path:
        return self.dir / f"{tenant}.ranker"

    def get(self, tenant: str) -> OnlineRanker | None:
        """The tenant's ranker (restored from its checkpoint the first time), or None if disabled."""
        if not self.settings.enabled or tenant not in self.tenants:
            return None
        ranker = self._rankers.get(tenant)
        if ranker is None:
            with self._building:
                return self._build(tenant)
        return ranker

    def _build(self, tenant: str) -> OnlineRanker:
        ranker = self._rankers.get(tenant)
        if ranker is None:  # built once: a snapshot adopted into a second copy would be lost with it
            view = self._views[tenant] = _TenantView(self.records, f"{ENGAGEMENT_PREFIX}{tenant}|")
            engagement = Engagement(view, half_life_ms=self.settings.half_life_days * 86_400_000)
            path = self.path(tenant)
            config = self.config_for(tenant)
            try:
                ranker = OnlineRanker.load(path, config, engagement) if path.exists() else None
            except Exception:  # noqa: BLE001 - a damaged checkpoint costs the model, not the worker
                log.exception("could not restore the ranker of %s from %s; starting afresh", tenant, path)
                ranker = None
            ranker = ranker or OnlineRanker(config, engagement)
            self._rankers[tenant] = ranker
            self._saved_at[tenant] = ranker.updates
            # A model restored from this worker's own checkpoint is not news: only what it learns next is.
            self._shared_at[tenant] = ranker.updates
        return ranker

    def learn(self, interactions: list[AttributedInteraction]) -> None:
        """Learn a batch (of one source partition: the caller has made its last event current)."""
        held: dict[str, _TenantView] = {}
        try:
            for it in interactions:
                ranker = self.get(it.tenant)
                if ranker is not None:
                    if it.tenant not in held:
                        held[it.tenant] = self._views[it.tenant]
                        held[it.tenant].hold()
                    ranker.learn(it)
        finally:
            for view in held.values():
                view.flush()

    def checkpoint(self) -> int:
        """Save every ranker that learned since its last save; how many were saved."""
        saved = 0
        for tenant, ranker in list(self._rankers.items()):
            if ranker.updates != self._saved_at.get(tenant):
                ranker.save(self.path(tenant))
                self._saved_at[tenant] = ranker.updates
                saved += 1
        return saved

    def snapshots_due(self, worker: str, now_ms: int) -> list[RankerSnapshot]:
        """Snapshots of the models that learned here since they were last shared.

        Only a model ahead of everything read from the topic is published: the topic is compacted, so a
        snapshot behind the newest one could be all that a worker starting later finds.
        """
        return [ranker.snapshot(tenant, worker=worker, now_ms=now_ms) for tenant, ranker in list(self._rankers.items())
                if ranker.updates != self._shared_at.get(tenant) and ranker.updates > self._topic_high.get(tenant, 0)]

    def shared(self, snapshot: RankerSnapshot) -> None:
        """``snapshot`` is on its way to the topic."""
        self._shared_at[snapshot.tenant] = snapshot.updates
        self._topic_high[snapshot.tenant] = max(snapshot.updates, self._topic_high.get(snapshot.tenant, 0))

    def adopt(self, snapshot: RankerSnapshot) -> AdoptOutcome:
        """Serve ``snapshot`` if it is newer than this worker's model of its tenant (read from the topic)."""
        if not self.settings.enabled or snapshot.tenant not in self.tenants:
            return "other_tenant"
        self._topic_high[snapshot.tenant] = max(snapshot.updates, self._topic_high.get(snapshot.tenant, 0))
        ranker = self.get(snapshot.tenant)
        assert ranker is not None
        if snapshot.model != ranker.name:
            return "other_model"
        if not ranker.adopt(snapshot):
            return "not_newer"
        self._shared_at[snapshot.tenant] = snapshot.updates  # not news from here: never published again
        return "adopted"

    def versions(self) -> dict[str, str]:
        return {t: r.version for t, r in self._rankers.items()}
