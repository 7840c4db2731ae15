"""Every worker's copy of the merchandising rules, read from the compacted rules topic.

A search can land on any worker, whichever partitions it holds, so each worker needs *all* rules of its
tenants. Each one therefore reads the whole rules topic with a plain consumer outside the consumer group
(no group, no commits), from the beginning at start-up and then as new versions arrive, and folds it into a
dict: the latest version of each ``tenant:rule_id`` wins. We chose this over a Faust ``GlobalTable``: the
rules topic is itself the compacted source of truth, so there is no changelog to own, a bad record can be
dead-lettered with its origin instead of failing table recovery, and Faust's global tables are untested on
the embedded Tansu broker.

Searches run in executor threads and read a per-tenant tuple that is replaced, never mutated, on each
update. Until the topic has been read up to its end offset at start-up, a search waits (at most
:data:`LOAD_WAIT_S`) so that a restarted worker never answers without the rules it had; ``/readyz`` reports
``rules_loaded`` too.

Every worker reads every record, so a record that fails to decode is dead-lettered by each worker that
reads it, again after each restart; its dead letters share ``source_topic/partition/offset`` and can be
told apart as duplicates by those.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import faust
from aiokafka import AIOKafkaConsumer

from schemas import DecodeError, MerchandisingRule, decode
from streams.deadletters import DeadLetterSink, record_origin, salvaged_tenant
from streams.follow import TopicFollower, caught_up, partitions_of
from streams.kafka import end_offsets
from streams.settings import Settings

__all__ = ["LOAD_WAIT_S", "Outcome", "RuleBook", "RuleLog", "read_rules"]

log = logging.getLogger(__name__)

#: How long a search waits at start-up for the rules to be read: long enough for a compacted topic of a
#: few thousand rules, short enough that a broken rules topic slows searches down rather than stopping them.
LOAD_WAIT_S = 10.0
_POLL_MS = 500

Outcome = Literal["stored", "deleted", "tombstone", "stale", "other_tenant", "invalid"]


@dataclass
class RuleLog:
    """The fold of the rules topic: the latest version of each rule, deleted ones kept as markers.

    A deleted rule stays (``deleted=True``) so that an older version read later cannot bring it back.
    """

    tenants: frozenset[str] | None = None  # None: keep every tenant's rules (the CLI)
    latest: dict[tuple[str, str], MerchandisingRule] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)

    def apply(self, key: bytes | None, value: bytes | None) -> tuple[Outcome, str | None]:
        """Fold one record in: what became of it, and the tenant whose rules changed (if known).

        Raises :class:`DecodeError` for a value that is not a rule or whose key does not name it.
        """
        if value is None:  # a Kafka tombstone: compaction's own way of deleting a key
            tenant, _, rule_id = (key or b"").decode(errors="replace").partition(":")
            old = self.latest.pop((tenant, rule_id), None)
            self.counts["tombstone"] += 1
            return "tombstone", tenant if old is not None else None
        rule = decode(MerchandisingRule, value)
        expected = f"{rule.tenant}:{rule.rule_id}"
        if key is None or key.decode(errors="replace") != expected:
            raise DecodeError(
                "invalid_value",
                f"key {key!r} does not match tenant:rule_id {expected!r}; compaction would keep the wrong version "
                "— publish rules with `shoprank rules add`",
            )
        if self.tenants is not None and rule.tenant not in self.tenants:
            self.counts["other_tenant"] += 1
            return "other_tenant", rule.tenant
        old = self.latest.get((rule.tenant, rule.rule_id))
        if old is not None and old.updated_at > rule.updated_at:
            self.counts["stale"] += 1
            return "stale", rule.tenant
        self.latest[(rule.tenant, rule.rule_id)] = rule
        outcome: Outcome = "deleted" if rule.deleted else "stored"
        self.counts[outcome] += 1
        return outcome, rule.tenant

    def rules(self, tenant: str, *, include_deleted: bool = False) -> list[MerchandisingRule]:
        """``tenant``'s rules in rule-id order."""
        return sorted(
            (r for (t, _), r in self.latest.items() if t == tenant and (include_deleted or not r.deleted)),
            key=lambda r: r.rule_id,
        )


class RuleBook:
    """Keeps the current rules of the tenants a worker serves; :meth:`rules_for` is the searcher's rule source."""

    AGENT = "rules"

    def __init__(self, app: faust.App, settings: Settings, bootstrap: str) -> None:
        self.topic = settings.topic("rules")
        self.log = RuleLog(tenants=frozenset(settings.tenants))
        self.dead = DeadLetterSink(app, settings, self.AGENT)
        self._by_tenant: dict[str, tuple[MerchandisingRule, ...]] = {}
        self._gave_up = False
        self.follower = TopicFollower(
            bootstrap, self.topic, self._fold, settings.kafka.fetch_max_wait_ms,
            on_loaded=lambda: log.info("rules loaded: %s", {t: len(r) for t, r in self._by_tenant.items()}),
        )
        app.task(self.follower.run)

    @property
    def loaded(self) -> bool:
        """True once the topic has been read up to the end offset it had at start-up."""
        return self.follower.loaded

    def rules_for(self, tenant: str) -> Sequence[MerchandisingRule]:
        """``tenant``'s live rules; call from a thread: until they are loaded it blocks, once, up to
        :data:`LOAD_WAIT_S`, after which searches go on with what has been read so far."""
        if not self.loaded and not self._gave_up and not self.follower.loaded_event.wait(LOAD_WAIT_S):
            self._gave_up = True
            log.warning("rules topic %s not read yet; searching without all merchandising rules", self.topic)
        return self._by_tenant.get(tenant, ())

    def stats(self) -> dict[str, Any]:
        return {
            "loaded": self.loaded,
            "rules": {t: len(rs) for t, rs in sorted(self._by_tenant.items())},
            "records": dict(self.log.counts),
            "offsets": {str(tp.partition): off for tp, off in self.follower.positions.items()},
            "dead_letters": dict(self.dead.counts),
        }

    async def _fold(self, rec: Any) -> None:
        try:
            outcome, tenant = self.log.apply(rec.key, rec.value)
        except DecodeError as err:
            await self.dead.send(record_origin(rec), err.reason, err.detail,
                                 tenant=salvaged_tenant(rec.value))
            return
        if outcome in ("stored", "deleted", "tombstone") and tenant is not None:
            # Replaced, never mutated: a search thread may be iterating the old tuple right now.
            self._by_tenant[tenant] = tuple(self.log.rules(tenant))


async def read_rules(bootstrap: str, topic: str, timeout_s: float = 30.0) -> RuleLog:
    """The whole rules topic folded, read up to its current end (for ``shoprank rules list | rm``).

    Records that break the contract are skipped here (the workers dead-letter them) and counted as invalid.
    Raises :class:`TimeoutError` when the end is not reached within ``timeout_s``.
    """
    return await asyncio.wait_for(_read_rules(bootstrap, topic), timeout_s)


async def _read_rules(bootstrap: str, topic: str) -> RuleLog:
    fold = RuleLog()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=100)
    await consumer.start()
    try:
        tps = await partitions_of(consumer, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await end_offsets(bootstrap, tps)
        while not await caught_up(consumer, ends):
            batch = await consumer.getmany(timeout_ms=_POLL_MS)
            for records in batch.values():
                for rec in records:
                    try:
                        fold.apply(rec.key, rec.value)
                    except DecodeError:
                        fold.counts["invalid"] += 1
        return fold
    finally:
        await consumer.stop()
