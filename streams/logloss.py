"""Notices a broker that lost its log, says what was lost with it, and lets the agents start over.

The embedded broker keeps its log in memory only (streams.broker): restarted, it comes back with no
records, no committed offsets and no topics. The Faust consumer reconnects and rejoins by itself, but
three things would go wrong silently:

* records the worker had not processed yet are gone with the old log, and nothing would say so;
* the agents' offset watermarks (streams.pixel, streams.learning: they drop a replay after a crash)
  would also drop the new log's records, until its offsets passed the old ones;
* our topics would not exist (Faust declares only its changelog topics again).

:class:`LogLossWatch` follows the worker's consumer (hooks in streams.faust_compat): per partition,
the last offset processed (acked), the highest end offset seen in fetch responses and the last offset
this worker committed. When partitions are assigned and the broker's committed offset of one is below
what this worker committed there (or gone), its log was lost: committed offsets never go back
otherwise. The records between the last one processed and the end seen are reported lost (a warning,
``/v1/stats/broker`` and the ``shoprank_lost_records`` counter), and the partition is marked for the
agents, which reset their watermarks before they handle its next record. The count is a lower bound
when the worker had not fetched the log's tail before the broker went away.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client import Gauge

from streams import metrics

__all__ = ["LogLossWatch", "LogReset"]

log = logging.getLogger(__name__)

LOST_RECORDS = Gauge(
    "shoprank_lost_records", "Records the broker lost before this worker processed them (log reset), by topic",
    ["topic"], registry=metrics.REGISTRY,
)


@dataclass
class LogReset:
    """One partition whose log the broker lost."""

    topic: str
    partition: int
    committed_before: int | None  # what this worker had committed there (None: nothing yet)
    committed_now: int | None  # what the broker says now (None: nothing)
    processed: int  # the next offset this worker would have processed
    end_seen: int  # the highest end offset seen before the loss
    lost: int  # records between the two: never processed, gone
    at_ms: int
    epoch: int = 0  # records fetched before this epoch came from the old log (see LogLossWatch.fetched)


class LogLossWatch:
    """Per-partition bookkeeping of the worker's consumer; see the module docstring."""

    def __init__(self, topics: dict[str, int] | None = None) -> None:
        #: Our topics and their partition counts: all of them restart when a changelog went back.
        self.topics = dict(topics or {})
        self.processed: dict[Any, int] = {}  # tp -> next offset to process (last acked + 1)
        self.end_seen: dict[Any, int] = {}
        self.committed: dict[Any, int] = {}
        self.resets: list[LogReset] = []
        self.lost: Counter[str] = Counter()
        self._pending: dict[str, set[int]] = {}
        self._reset_of: dict[Any, LogReset] = {}
        # The epoch each record was fetched in, by the record itself (weakly: Faust drops acked ones).
        # A reset starts a new epoch, so a record of the old log that finishes after the reset is told
        # apart from the new log's records by when it was fetched, whatever the offsets or generations.
        self.epoch = 0
        self._whole_log_reset = False  # changelog_went_back has marked every partition once
        #: When our topics were last found missing on the broker and created again (ms since the epoch):
        #: commits then wait for the new log's end (streams.faust_compat._within_served_log).
        self.log_lost_at_ms: int | None = None
        self._epoch_of: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        #: Assigned partitions whose read position is past the end of the broker's log of them: a log lost
        #: without a group join since (a topic deleted and created again), found when a commit was held back.
        self.past_end: set[Any] = set()
        #: Table partitions on disk that a crashed process left open, emptied and read again from their
        #: changelog's start (streams.table_store.RocksStore.rebuild): "topic[partition]" -> keys removed.
        self.tables_rebuilt: dict[str, int] = {}

    # -- fed by the consumer (streams.faust_compat) -----------------------------------------------

    def fetched(self, message: Any) -> None:
        self._epoch_of[message] = self.epoch

    def acked(self, tp: Any, offset: int, message: Any = None) -> bool:
        """Count a processed record; True when it came from a log the broker has lost since it was fetched.

        Such a record's offset belongs to the old log: the caller keeps it out of the consumer's
        commit bookkeeping, where it would stand for an offset of the new log.
        """
        reset = self._reset_of.get(tp)
        if reset is not None:
            fetched_in = self._epoch_of.get(message) if message is not None else None
            if fetched_in is not None and fetched_in < reset.epoch:
                # Fetched from the old log before the reset and finished after it: processed, not lost.
                if reset.processed <= offset < reset.end_seen:
                    reset.lost -= 1
                    self.lost[tp.topic] -= 1
                    LOST_RECORDS.labels(tp.topic).set(self.lost[tp.topic])
                return True
        self.processed[tp] = offset + 1
        return False

    def topics_recreated(self) -> None:
        """Our topics were missing on the broker (it lost its log) and have just been created again."""
        self.log_lost_at_ms = int(time.time() * 1000)

    def saw_end(self, tp: Any, end: int | None) -> None:
        if end is not None and end > self.end_seen.get(tp, -1):
            self.end_seen[tp] = end

    def did_commit(self, offsets: dict[Any, int]) -> None:
        self.committed.update(offsets)

    def suspects(self, broker: dict[Any, int | None]) -> list[Any]:
        """Partitions this worker processed but never committed, of which the broker has no commit either:
        the caller looks up their end offsets for :meth:`check_committed`."""
        return [tp for tp, now in broker.items() if now is None and tp not in self.committed and tp in self.processed]

    def check_committed(self, broker: dict[Any, int | None], ends: dict[Any, int] | None = None) -> list[LogReset]:
        """Compare the broker's committed offsets (at assignment) with what this worker committed.

        A partition this worker processed without committing yet counts as lost when its end offset
        (``ends``) is now below what was processed: a live log never shrinks.
        """
        found = []
        self.past_end.clear()  # this assignment's read positions come from the broker's committed offsets
        epoch = self.epoch + 1  # taken only if a reset is found
        for tp, now in broker.items():
            before = self.committed.get(tp)
            if before is None:
                end_now = (ends or {}).get(tp)
                if tp not in self.processed or now is not None or end_now is None or end_now >= self.processed[tp]:
                    continue
            elif now is not None and now >= before:
                continue
            processed = self.processed.get(tp, before or 0)
            end = max(self.end_seen.get(tp, processed), processed)
            reset = LogReset(tp.topic, tp.partition, before, now if now is not None and now >= 0 else None,
                             processed, end, end - processed, int(time.time() * 1000), epoch)
            self.epoch = epoch
            found.append(reset)
            self.resets.append(reset)
            self._reset_of[tp] = reset
            self.lost[tp.topic] += reset.lost
            LOST_RECORDS.labels(tp.topic).set(self.lost[tp.topic])
            self._pending.setdefault(tp.topic, set()).add(tp.partition)
            for known in (self.processed, self.end_seen, self.committed):
                known.pop(tp, None)
            log.warning(
                "the broker lost the log of %s[%d]: this worker had committed up to offset %d and the broker now "
                "has %s; %d record(s) (offsets %d-%d of the old log) were never processed and are gone — publish "
                "them again if they matter (the embedded broker keeps its log in memory only; use a replicated "
                "Kafka cluster in production)",
                tp.topic, tp.partition, -1 if before is None else before, "nothing" if reset.committed_now is None else reset.committed_now,
                reset.lost, processed, end - 1,
            )
        return found

    def changelog_went_back(self, tp: Any, persisted: int, end: int) -> None:
        """A table's changelog partition ``tp`` ends (``end``) before the offset its database on disk had
        reached (``persisted``): the broker lost its log while this worker was away.

        The tables on disk are kept (streams.table_store), but the offset watermarks in them belong to
        the old log, and so does every partition of our topics: the agents restart their watermarks on
        all of them. What the old log held beyond what this worker had processed is unknown here.
        """
        reset = LogReset(tp.topic, tp.partition, persisted + 1, end, persisted + 1, persisted + 1, 0,
                         int(time.time() * 1000), self.epoch)
        self.resets.append(reset)
        if not self._whole_log_reset:
            for topic, partitions in self.topics.items():
                self._pending.setdefault(topic, set()).update(range(partitions))
            self._whole_log_reset = True
            log.warning(
                "the broker lost its log while this worker was away: changelog %s[%d] ends at offset %d, the "
                "table on disk had reached %d. The tables on disk are kept and the agents count the new log "
                "from its start; records of the old log this worker had not processed are gone (the embedded "
                "broker keeps its log in memory only; use a replicated Kafka cluster in production)",
                tp.topic, tp.partition, end, persisted,
            )

    # -- read by the agents -----------------------------------------------------------------------

    def take(self, topic: str, partitions: set[int]) -> set[int]:
        """The ``partitions`` of ``topic`` whose log was lost since the agent last asked (cleared)."""
        pending = self._pending.get(topic)
        if not pending:
            return set()
        hit = pending & partitions
        pending -= hit
        return hit

    def stats(self) -> dict[str, Any]:
        """Records lost per topic, each reset, and per topic what this worker has seen and processed."""
        seen: dict[str, dict[str, int]] = {}
        for name, per_tp in (("end_seen", self.end_seen), ("processed", self.processed)):
            for tp, offset in per_tp.items():
                topic = seen.setdefault(tp.topic, {"end_seen": 0, "processed": 0})
                topic[name] += offset
        return {"lost_records": dict(self.lost), "log_resets": [asdict(r) for r in self.resets], "topics": seen,
                "tables_rebuilt_after_crash": dict(self.tables_rebuilt)}
