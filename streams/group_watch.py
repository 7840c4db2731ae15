"""Joins the stream consumer's group again when its assignment no longer fits the broker's topics.

A broker that lost its log (the embedded one keeps it in memory) or an operator who deleted a topic
can leave the worker's stream consumer (Faust's) with a group assignment that does not fit the broker:

* **Joined while its topics were missing.** After the broker came back, the consumer refreshed its
  metadata (no topics), joined, and Faust's assignor skipped every missing topic ("Ignoring missing
  topic"): the worker held no partition. The topic guard (streams.app) created the topics seconds
  later, but aiokafka notices new partitions only at its next metadata refresh (Faust's default: 5
  minutes), so ``/readyz`` stayed at 503 (CI, 2026-12-06, the in-flight broker restart).
* **Read positions in a log that is gone.** A topic deleted and created again under a running worker:
  no group join followed, so nothing reported the loss or reset the positions (streams.logloss does
  both at an assignment), and the new log's records were never read (seen: no pixel event counted).
  The commit guard (streams.faust_compat) notices such positions: they are past the log's end.

Either way the fix is a new join once the topics exist, checked after each topic check. The embedded
broker answers a lone member's new join with the assignment it made before (streams.stale_assignment),
so the consumer commits what it has, leaves the group and joins as a new member; on Apache Kafka that
is an ordinary rebalance.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import faust

from streams.logloss import LogLossWatch

__all__ = ["GroupWatch"]

log = logging.getLogger(__name__)

#: How often the worker checks its stream consumer's assignment against the broker's topics.
CHECK_S = 2.0


class GroupWatch:
    """Watches the topics of the stream consumer's group assignments; joins again when they come back."""

    def __init__(self, app: faust.App, log_loss: LogLossWatch) -> None:
        self.app, self.log_loss = app, log_loss
        #: Topics the group's members read that the metadata lacked when this worker last assigned partitions.
        self.skipped: frozenset[str] = frozenset()
        self.rejoins = 0
        self.reasons: deque[str] = deque(maxlen=10)  # why it joined again, the latest last
        self._record_skipped(app.assignor)

    def _record_skipped(self, assignor: Any) -> None:
        assign = assignor.assign

        # aiokafka calls the assignor's ``assign`` in the consumer's thread, on the group leader only.
        def recording_assign(cluster: Any, member_metadata: Any) -> Any:
            wanted = {topic for metadata in member_metadata.values() for topic in metadata.subscription}
            self.skipped = frozenset(t for t in wanted if not cluster.partitions_for_topic(t))
            return assign(cluster, member_metadata)

        assignor.assign = recording_assign

    def stats(self) -> dict[str, Any]:
        """Joins again so far and why (the latest last); the stream consumer's partitions now."""
        try:
            held = self.app.consumer.assignment()
        except Exception:  # noqa: BLE001 - consumer not started yet
            held = set()
        assignment: dict[str, list[int]] = {}
        for tp in held:
            assignment.setdefault(tp.topic, []).append(tp.partition)
        return {"rejoins": self.rejoins, "reasons": list(self.reasons), "skipped_topics": sorted(self.skipped),
                "assignment": {topic: sorted(parts) for topic, parts in sorted(assignment.items())}}

    async def check(self) -> bool:
        """Join again if the assignment does not fit the broker's topics (see the module docstring); True
        if the consumer left the group to join again. Called on a worker timer."""
        consumer = self._consumer()
        if consumer is None or self.app.rebalancing or not self.app.tables.recovery.completed.is_set():
            # Not in the middle of either: a join forced 3 s after a broker restart, during that rebalance,
            # once left a batch of records uncounted (since fixed in streams.faust_compat), and each join
            # restarts the table recovery.
            return False
        behind = sorted({tp.topic for tp in self.log_loss.past_end})
        if behind:
            reason = f"its read positions are past the end of the broker's log of {behind} (the log was lost)"
            topics = []  # the join reports the loss now; a topic still missing is skipped, then joined below
        elif self.skipped:
            reason = f"topics missing at its last group join exist again: {sorted(self.skipped)}"
            topics = sorted(self.skipped)
        else:
            return False
        # What was processed is committed under the current generation, before leaving the group.
        try:
            await self.app.consumer.commit()
        except Exception as exc:  # noqa: BLE001 - what is not committed is read again and deduplicated
            log.warning("commit before joining the group again failed: %s", exc)
        joined = await self._thread().call_thread(self._join_again, consumer, topics)
        if joined:
            self.skipped = frozenset()  # the new join's assignment records its own
            self.log_loss.past_end.clear()
            self.rejoins += 1
            self.reasons.append(reason)
            log.warning("the stream consumer leaves its group and joins again: %s", reason)
        return bool(joined)

    def _thread(self) -> Any:
        """Faust's consumer thread, where the aiokafka consumer lives (None before it exists)."""
        return getattr(self.app.consumer, "_thread", None)

    def _consumer(self) -> Any:
        """The aiokafka consumer of the worker's streams, once started."""
        return getattr(self._thread(), "_consumer", None)

    @staticmethod
    async def _join_again(consumer: Any, topics: list[str]) -> bool:
        """In the consumer's thread: read the metadata afresh and, when it has ``topics``, leave the
        group (which also forgets the member id) so that the coordinator joins again as a new member."""
        client, coordinator = consumer._client, consumer._coordinator  # noqa: SLF001 - no public way to rejoin
        await client.force_metadata_update()
        if not all(client.cluster.partitions_for_topic(t) for t in topics):
            return False  # not in this broker's metadata yet: the next check tries again
        await coordinator._maybe_leave_group()  # noqa: SLF001 - leaves, resets the member id, asks to rejoin
        return True
