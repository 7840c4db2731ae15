"""Notices a group join that the broker answered with an assignment made before it, so that the consumer joins again.

Apache Kafka rebalances a group whenever its leader joins again, and an aiokafka leader joins again when
the metadata of a subscribed topic changes (the topic was created, or given more partitions): the new
assignment then covers the new partitions. Tansu, the embedded broker, answers that join of a group's
only member with the generation the group already had, and SyncGroup with the assignment made before.
The search request consumer that had joined while its topic was missing (the broker had lost its log
and the worker created the topic again seconds later) held no partition for good: no search answered,
``/readyz`` at 503 (CI, 2026-12-06).

:class:`AssignmentCheck` gives the consumer an assignor of its own that remembers what it computed.
When this consumer was the leader of a group of one, computed partitions for itself, and was handed
none, the broker served a stale assignment: :meth:`AssignmentCheck.raise_if_stale` then raises
:class:`StaleAssignmentError`, and the consumer's owner starts a new consumer, which joins as a new member.
A consumer of a larger group is left alone: with more members than partitions, holding none is normal.

The leader also tells every member, in the assignment's user data, how many members and partitions the
group has: a member handed nothing while the group's partitions went to others is a *spare*
(:attr:`AssignmentCheck.spare`), ready to serve the gateway's searches and to take partitions over,
rather than a consumer whose topic is missing.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

__all__ = ["AssignmentCheck", "StaleAssignmentError"]

log = logging.getLogger(__name__)


class StaleAssignmentError(RuntimeError):
    """The broker handed this consumer an assignment older than the one its group's leader just made."""


class _RecordingAssignor(RoundRobinPartitionAssignor):
    """Round robin, remembering the last assignment made and the last one received (per subclass: see
    :class:`AssignmentCheck`); each assignment carries the group's size in its user data."""

    last: dict[str, Any] | None = None
    received: Any = None

    @classmethod
    def assign(cls, cluster: Any, member_metadata: dict[str, Any]) -> dict[str, Any]:
        made: dict[str, Any] = super().assign(cluster, member_metadata)
        partitions = sum(len(parts) for a in made.values() for _, parts in a.assignment)
        note = orjson.dumps({"members": len(made), "partitions": partitions})
        made = {member: ConsumerProtocolMemberAssignment(a.version, a.assignment, note) for member, a in made.items()}
        cls.last = made
        return made

    @classmethod
    def on_assignment(cls, assignment: Any) -> None:
        cls.received = assignment


def _group_note(assignment: Any) -> dict[str, int]:
    """The group's size as its leader wrote it into ``assignment`` ({} from a leader that did not)."""
    try:
        note = orjson.loads(assignment.user_data or b"{}")
    except (orjson.JSONDecodeError, AttributeError):
        return {}
    return note if isinstance(note, dict) else {}


class AssignmentCheck:
    """One consumer's assignor, and the verdict on what the broker handed it at each join."""

    def __init__(self) -> None:
        # aiokafka calls assignors through the class: a subclass of our own keeps this consumer's record apart.
        self.assignor: type[_RecordingAssignor] = type("RecordingRoundRobin", (_RecordingAssignor,),
                                                       {"last": None, "received": None})
        self.stale: str | None = None
        #: The last join handed this consumer nothing because the group's partitions all went to others.
        self.spare = False

    def assigned(self, assigned: Any) -> None:
        """Called with what the join handed this consumer (its rebalance listener's ``on_partitions_assigned``)."""
        received, self.assignor.received = self.assignor.received, None
        note = _group_note(received) if received is not None else {}
        self.spare = not assigned and note.get("partitions", 0) > 0 and note.get("members", 0) > 1
        made, self.assignor.last = self.assignor.last, None
        if made is None or len(made) != 1 or assigned:
            return  # not the leader this time, a group of several, or something was assigned
        (assignment,) = made.values()
        computed = [(topic, list(partitions)) for topic, partitions in assignment.assignment if partitions]
        if computed:
            self.stale = f"the group's only member was assigned nothing, though its leader assigned it {computed}"
            log.warning("%s: the broker served an earlier assignment; joining again as a new member", self.stale)

    def raise_if_stale(self) -> None:
        if self.stale is not None:
            raise StaleAssignmentError(self.stale)
