"""Periodic fine-tuning per tenant: collect attributed outcomes from Kafka, retrain when due, gate, promote.

``shoprank models retrain`` runs this as its own process, beside the workers (training takes minutes
of CPU, which a worker answering searches cannot spare). Each cycle it

1. reads the ``interactions`` and ``catalogue`` topics from where it left off into the training log
   (models.training.datalog: exact across crashes, kept past the topics' retention);
2. asks, per tenant, whether a run is due (models.training.schedule: new positives or elapsed time);
3. fine-tunes a due tenant on its own outcomes weighted by its own objective, registers the model
   and runs the evaluation gate. A model that passes is promoted, and the workers hot-swap to it
   (streams.swap); one that does not stays a candidate with the reason.

Records that do not decode go to dead letters with their origin, like everywhere in the streams.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from models.training.datalog import TrainingLog
from models.training.schedule import (
    Decision,
    RetrainPolicy,
    decide_retrain,
    load_state,
    save_state,
)
from schemas import CatalogueUpdate, DeadLetter, DecodeError, decode, encode
from schemas.interactions import AttributedInteraction
from streams.follow import caught_up, partitions_of
from streams.kafka import end_offsets, producer
from streams.settings import Settings

__all__ = ["CollectReport", "Retrainer", "policy_of"]

log = logging.getLogger(__name__)

_HISTORY = 20


def policy_of(settings: Settings) -> RetrainPolicy:
    r = settings.retrain
    return RetrainPolicy(every_s=r.every_hours * 3600, min_new=r.min_new, min_new_on_schedule=r.min_new_on_schedule,
                         min_total=r.min_total, min_interval_s=r.min_interval_minutes * 60)


@dataclass
class CollectReport:
    interactions: int = 0
    catalogue_texts: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _key(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


class Retrainer:
    """One retraining loop over ``tenants`` (default: the configured ones), with its training log open."""

    def __init__(self, settings: Settings, bootstrap: str, *, tenants: Sequence[str] | None = None,
                 log_dir: Path | None = None,
                 train: Callable[[str, list[Any], Decision], dict[str, Any]] | None = None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.tenants = list(tenants or settings.tenants)
        self.root = log_dir or settings.models.dir / "retrain"
        self.log = TrainingLog(self.root / "data")
        self.policy = policy_of(settings)
        self._train = train or self._fine_tune

    def close(self) -> None:
        self.log.close()

    # --------------------------------------------------------------------------------------- collect

    async def collect(self, max_s: float = 60.0) -> CollectReport:
        """Read both topics up to the end offsets they have now (or for ``max_s``), checkpointing each batch."""
        report = CollectReport()
        start = time.monotonic()
        topics = {self.settings.topic("interactions"): AttributedInteraction,
                  self.settings.topic("catalogue"): CatalogueUpdate}
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=100)
        await consumer.start()
        try:
            tps = [tp for topic in topics for tp in await partitions_of(consumer, topic)]
            consumer.assign(tps)
            for tp in tps:
                if _key(tp) in self.log.positions:
                    consumer.seek(tp, self.log.positions[_key(tp)])
                else:
                    await consumer.seek_to_beginning(tp)
            ends = await end_offsets(self.bootstrap, tps)
            async with producer(self.bootstrap) as dead_letters:
                while time.monotonic() - start < max_s:
                    if await caught_up(consumer, ends):
                        break
                    batch = await consumer.getmany(timeout_ms=500)
                    moved: dict[str, int] = {}
                    for tp, records in batch.items():
                        for rec in records:
                            await self._add(rec, topics[tp.topic], report, dead_letters)
                            moved[_key(tp)] = rec.offset + 1
                    if moved:
                        self.log.checkpoint(moved)
        finally:
            await consumer.stop()
        report.seconds = time.monotonic() - start
        return report

    async def _add(self, rec: Any, cls: type[Any], report: CollectReport, dead_letters: Any) -> None:
        try:
            record = decode(cls, rec.value or b"")
        except DecodeError as exc:
            report.dead_letters[exc.reason] = report.dead_letters.get(exc.reason, 0) + 1
            letter = DeadLetter.keeping(
                rec.value or b"", rec.key, reason=exc.reason, detail=str(exc)[:2000], source_topic=rec.topic,
                source_partition=rec.partition, source_offset=rec.offset, source_timestamp=rec.timestamp,
                agent="retrain", tenant=None, rejected_at=int(time.time() * 1000))
            await dead_letters.send_and_wait(self.settings.topic("dead-letters"), encode(letter),
                                             key=rec.key[:1024] if rec.key else None)
            return
        if isinstance(record, AttributedInteraction):
            self.log.add_interaction(record)
            report.interactions += 1
        elif self.log.add_catalogue(record):
            report.catalogue_texts += 1

    # ------------------------------------------------------------------------------------ decide, train

    def decisions(self, now: float | None = None) -> dict[str, Decision]:
        now = time.time() if now is None else now
        out = {}
        for tenant in self.tenants:
            counts = self.log.counts.get(tenant)
            out[tenant] = decide_retrain(load_state(self.root / "schedule", tenant),
                                         counts.positives if counts else 0, now, self.policy)
        return out

    def status(self) -> dict[str, dict[str, Any]]:
        """Per tenant: what the log holds, the schedule state and whether a run is due now."""
        out = {}
        for tenant, decision in self.decisions().items():
            counts = self.log.counts.get(tenant)
            state = load_state(self.root / "schedule", tenant)
            out[tenant] = {"positives": counts.positives if counts else 0,
                           "interactions": counts.interactions if counts else 0,
                           "products": counts.products if counts else 0,
                           "last_run_at": state.last_run_at, "runs": state.runs,
                           "last_version": state.last_version, "last_status": state.last_status,
                           "due": decision.due, "reason": decision.reason}
        return out

    def run_due(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """Train every tenant that is due, one after the other; what each run gave."""
        results = {}
        for tenant, decision in self.decisions(now).items():
            if decision.due:
                results[tenant] = self.retrain(tenant, decision)
        return results

    def retrain(self, tenant: str, decision: Decision) -> dict[str, Any]:
        counts = self.log.counts.get(tenant)
        positives = counts.positives if counts else 0
        state = load_state(self.root / "schedule", tenant)
        started = time.time()
        log.info("retraining %s: %s", tenant, decision.reason)
        try:
            outcome = self._train(tenant, list(self.log.interactions(tenant)), decision)
        except Exception as exc:  # a failed run must not end the loop; it is retried after the interval
            log.exception("retraining %s failed", tenant)
            outcome = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}", "version": None}
        state.last_run_at = started
        state.runs += 1
        if outcome["status"] != "failed":
            state.positives_at_last_run = positives
        state.last_version = outcome.get("version")
        state.last_status = outcome["status"]
        state.last_reason = outcome["reason"]
        state.history = [*state.history, {"at": started, "trigger": decision.trigger, "positives": positives,
                                          **outcome}][-_HISTORY:]
        save_state(self.root / "schedule", tenant, state)
        return outcome

    def _fine_tune(self, tenant: str, records: list[Any], decision: Decision) -> dict[str, Any]:
        """The real run: rows weighted by the tenant's objective → train → register → gate."""
        from models.export import serving_model
        from models.ranker.online import Objective
        from models.training.data import OutcomeWeights, examples_from_interactions
        from models.training.gate import GateConfig
        from models.training.pipeline import RunConfig, train_tenant
        from models.training.trainer import TrainConfig

        r = self.settings.retrain
        objective = Objective.parse(self.settings.ranker.objective_for(tenant))
        rows = examples_from_interactions(records, self.log.catalogue(tenant), tenant=tenant,
                                          weights=OutcomeWeights(objective=objective, half_life_days=r.half_life_days))
        if sum(e.positive for e in rows) < 4:
            return {"status": "skipped", "version": None,
                    "reason": f"only {len(rows)} usable rows (products missing from the catalogue texts?)"}
        base_dir = self.settings.models.embedder_dir
        serving_model(base_dir)
        result = train_tenant(
            rows, models_dir=self.settings.models.dir, tenant=tenant, base_dir=base_dir,
            work_dir=self.settings.models.dir / "training" / tenant, source=f"retrain:{decision.trigger}",
            objective=objective, config=RunConfig(gate_config=GateConfig(min_relative_gain=r.min_gain)),
            train_config=TrainConfig(max_minutes=r.max_minutes, max_steps=r.max_steps, epochs=r.epochs),
            progress=False, log=lambda m: log.info("%s: %s", tenant, m))
        m = result.manifest
        return {"status": m.status, "version": m.version, "reason": m.reason, "rows": len(rows),
                "metrics": {k: v.get("candidate") for k, v in m.metrics.items()}}

    # ------------------------------------------------------------------------------------------ loop

    def run(self, *, once: bool = False, stop: threading.Event | None = None,
            on_cycle: Callable[[CollectReport, dict[str, dict[str, Any]]], None] | None = None) -> None:
        """Collect, then train what is due; forever (every ``SHOPRANK_RETRAIN_CHECK_S``) unless ``once``."""
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                report = asyncio.run(self.collect(max_s=max(self.settings.retrain.check_s, 5.0)))
            except Exception:  # broker away: train on what the log holds, collect again next cycle
                log.exception("collecting training data failed; retrying next cycle")
                report = CollectReport()
            results = self.run_due()
            if on_cycle is not None:
                on_cycle(report, results)
            if once:
                return
            stop.wait(self.settings.retrain.check_s)
