"""The attribution stage of the pixel agent: session state in a Faust table, interactions out.

The pixel agent consumes the pixel and searches topics together (both keyed ``tenant:session_id`` with
the same partition count, so Faust assigns a session's searches and events to one worker). After
validation and deduplication it hands each batch here. A session's state is read once per batch and
written back once, to the changelog partition of that session's last event; a periodic sweep settles
events whose search never came and drops idle sessions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP

from schemas import PixelEvent, SearchLog, encode
from streams.attribution import Attributed, AttributionConfig, Attributor, new_session, user_hasher
from streams.batching import active_partitions, as_current
from streams.settings import Settings

__all__ = ["AttributionStage", "AttributionStats"]

log = logging.getLogger(__name__)


@dataclass
class AttributionStats:
    searches_logged: int = 0
    interactions: Counter[str] = field(default_factory=Counter)
    unattributed: Counter[str] = field(default_factory=Counter)
    sessions_expired: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "searches_logged": self.searches_logged,
            "interactions": dict(self.interactions),
            "unattributed": dict(self.unattributed),
            "sessions_expired": self.sessions_expired,
        }


class AttributionStage:
    PREFIX = "sess|"

    def __init__(self, app: faust.App, settings: Settings, table: Any) -> None:
        cfg = settings.attribution
        self.config = AttributionConfig(
            window_ms=int(cfg.window_s * 1000),
            late_grace_ms=int(cfg.late_grace_s * 1000),
            max_searches=cfg.max_searches,
        )
        self.attributor = Attributor(self.config, user_hasher(cfg.user_hash_key))
        self.app = app
        self.pixel_topic = settings.topic("pixel")
        # The pixel agent's table: session writes then share one ordered changelog partition with the
        # dedupe records and counts of the same batch (see streams.pixel).
        self.sessions = table
        # Reads go to the store: ``table.get`` looks a key up twice (contains, then get).
        self._read_session = table.data.get
        self.out_topic = settings.topic("interactions")
        app.topic(self.out_topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
        self.searches_topic = settings.topic("searches")
        #: Per partition: the next offset of the searches topic after the last search log handled here.
        self._searches_next: dict[int, int] = {}
        self.stats = AttributionStats()
        #: The last event seen per source partition: the sweep writes a session back to its own
        #: partition's changelog by naming one (see streams.batching.as_current).
        self._anchor: dict[int, Any] = {}
        #: A batch and a sweep never interleave: each reads session states, awaits the broker's
        #: acknowledgement of what it emits, then writes the states back.
        self._turn = asyncio.Lock()
        #: When the sweep next has something to do with each session (worker clock, ms): right after a
        #: batch wrote it (its old searches and clicks are trimmed), when its first parked event's grace
        #: runs out, when it goes idle. The sweep reads only the sessions that are due: reading and
        #: decoding every session every few seconds was a tenth of the pixel agent's time.
        self._due: dict[str, int] = {}
        table.on_recover(self._index_sessions)
        app.timer(cfg.sweep_interval_s, name="attribution-sweep")(self.sweep)

    async def handle_batch(self, items: Iterable[tuple[Any, PixelEvent | SearchLog]]) -> None:
        """Attribute a batch of validated pixel events and search logs, in their arrival order."""
        async with self._turn:
            await self._handle_batch(items)

    async def _handle_batch(self, items: Iterable[tuple[Any, PixelEvent | SearchLog]]) -> None:
        touched: dict[str, tuple[dict[str, Any], Any]] = {}
        produced = Attributed()
        now = int(time.time() * 1000)
        for event, record in items:
            key = f"{self.PREFIX}{record.tenant}:{record.session_id}"
            state = touched[key][0] if key in touched else (self._read_session(key) or new_session())
            state["p"] = event.message.partition
            touched[key] = (state, event)
            self._anchor[event.message.partition] = event
            if isinstance(record, SearchLog):
                self.stats.searches_logged += 1
                p = event.message.partition
                self._searches_next[p] = max(self._searches_next.get(p, 0), event.message.offset + 1)
                produced.extend(self.attributor.add_search(state, record, now))
            else:
                produced.extend(self.attributor.add_event(state, record, now))
        # The interactions first, acknowledged by the broker, then the session states: a crash in between
        # replays these records against the old states, which give the same interaction ids again (the
        # learner drops the repeats). The other way round, a state that no longer lists an event as
        # waiting could reach the changelog while the interaction it produced did not: lost for good.
        await self._emit(produced)
        for key, (state, event) in touched.items():
            as_current(event)
            self.sessions[key] = state
            self._due[key] = now

    def searches_caught_up(self, partition: int) -> bool:
        """Whether this worker has handled the searches partition to its end (the fetcher's high-watermark).

        While it has not (a restart, a burst), an event waiting for its search is not given up on: its
        search log may be right behind, in the backlog. Grace is for searches that never come.
        """
        tp = TP(self.searches_topic, partition)
        consumer = self.app.consumer
        try:
            end = consumer.highwater(tp)
        except AssertionError:  # not assigned here (a rebalance under way): nothing to wait for here
            return True
        if end is None:
            return False  # not fetched since (re)start: its backlog is unknown yet, the next fetch tells
        committed = consumer._committed_offset.get(tp)  # noqa: SLF001 - Faust keeps no public view
        position = max(self._searches_next.get(partition, 0), committed or 0)
        return position >= end

    async def sweep(self) -> None:
        """Settle events whose grace ran out and forget idle sessions, on the partitions held here."""
        async with self._turn:
            await self._sweep()

    async def _sweep(self) -> None:
        now = int(time.time() * 1000)
        assigned = active_partitions(self.app, self.pixel_topic)
        settle = {p: self.searches_caught_up(p) for p in assigned}
        produced = Attributed()
        writes: list[tuple[str, dict[str, Any] | None, int]] = []  # (key, state to write or None: drop, partition)
        for key in [k for k, due in self._due.items() if due <= now]:
            state = self._read_session(key)
            p = state.get("p") if state else None
            if p not in assigned:  # gone, or another worker's now: its next recovery here indexes it again
                del self._due[key]
                continue
            if p not in self._anchor:
                continue
            had = (len(state["pending"]), len(state["searches"]), len(state["clicks"]))
            produced.extend(self.attributor.expire(state, now, settle=settle[p]))
            if Attributor.is_idle(state, now, self.config.window_ms):
                writes.append((key, None, p))
            elif had != (len(state["pending"]), len(state["searches"]), len(state["clicks"])):
                writes.append((key, state, p))
            self._due[key] = self.attributor.next_due(state, now, settle=settle[p])
        await self._emit(produced)  # before the states that no longer hold what it settled (see handle_batch)
        for key, new_state, p in writes:
            as_current(self._anchor[p])
            if new_state is None:
                del self.sessions[key]
                self._due.pop(key, None)
                self.stats.sessions_expired += 1
            else:
                self.sessions[key] = new_state

    async def _index_sessions(self) -> None:
        """After a recovery the sessions held here may have changed: the next sweep looks at each once."""
        self._due = {key: 0 for key in self.sessions.keys() if isinstance(key, str) and key.startswith(self.PREFIX)}

    async def _emit(self, produced: Attributed) -> None:
        for ev, reason in produced.unattributed:
            self.stats.unattributed[reason] += 1
            log.info("unattributed %s %s of %s: %s", ev.type, ev.event_id, ev.tenant, reason)
        sent = []
        # Straight to the producer: a Faust topic send adds a future, a callback and sensors per record
        # (a sixth of this stage's time), and nothing here needs them.
        producer = self.app.producer
        for interaction in produced.interactions:
            self.stats.interactions[interaction.outcome] += 1
            sent.append(await producer.send(self.out_topic, interaction.tenant.encode(), encode(interaction),
                                            partition=None, timestamp=None, headers=None))
        if sent:
            await asyncio.gather(*sent)  # acknowledged by the broker
