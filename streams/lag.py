"""Consumer lag per group, topic and partition, judged by Burrow's evaluation rules.

Three parts, from pure to I/O:

* :func:`evaluate_partition` and :func:`evaluate_group` are Burrow's rules over a window of commits
  (no I/O; unit-tested with crafted windows).
* :class:`LagWindow` keeps that window per partition from periodic snapshots.
* :class:`LagProbe` takes the snapshots from the broker: group names from ListGroups, committed
  offsets from OffsetFetch, end offsets from :func:`streams.kafka.end_offsets` (which corrects Tansu's
  ListOffsets under-reporting multi-record batches with the fetch high-watermark).

Burrow (github.com/linkedin/Burrow, ``core/internal/evaluator/caching.go``) watches every commit on
``__consumer_offsets``. A plain Kafka client cannot, so the window here is filled by polling
OffsetFetch, and one poll stands for one commit interval:

* the committed offset moved since the last entry, or the group has live members → a commit entry is
  appended (members that do not advance are what Burrow calls STALL);
* it did not move and the group has no members → nothing is appended: nobody commits, so the window's
  last commit ages, and Burrow's rule 3 (STOP) can fire.

Completeness counts polls, not commits: ``complete = polls seen / window size``; a partition below
``minimum_complete`` is reported OK, as Burrow does for partitions it has too few commits for.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal, Self

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from streams.kafka import end_offsets

__all__ = [
    "Commit",
    "GroupReport",
    "GroupSnapshot",
    "GroupStatus",
    "LagProbe",
    "LagWindow",
    "PartitionLag",
    "PartitionReport",
    "PartitionStatus",
    "evaluate_group",
    "evaluate_partition",
]

log = logging.getLogger(__name__)

#: Burrow's partition statuses. REWIND is Burrow's too: a committed offset went backwards.
PartitionStatus = Literal["OK", "WARN", "STOP", "STALL", "REWIND"]
#: Burrow's group statuses: the worst partition, with STOP, STALL and REWIND all reported as ERR.
GroupStatus = Literal["NOTFOUND", "OK", "WARN", "ERR"]

_SEVERITY: dict[str, int] = {"NOTFOUND": 0, "OK": 1, "WARN": 2, "ERR": 3, "STOP": 4, "STALL": 5, "REWIND": 6}

#: Group states in which members hold partitions and commit (Kafka's DescribeGroups vocabulary).
_LIVE_STATES = frozenset({"Stable", "PreparingRebalance", "CompletingRebalance"})


# -- Burrow's rules (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class Commit:
    """One committed offset in the window: when it was seen, and the lag against the end offset then."""

    offset: int
    timestamp_ms: int
    lag: int


def evaluate_partition(
    commits: Sequence[Commit],
    broker_offsets: Sequence[int],
    current_lag: int,
    now_ms: int,
    allowed_lag: int = 0,
) -> PartitionStatus:
    """Burrow's ``calculatePartitionStatus``: the status of one partition from its commit window.

    ``commits`` oldest first; ``broker_offsets`` the partition's recent end offsets. In Burrow's order:

    0. Lag now at most ``allowed_lag`` → OK: a partition that is caught up is never in error.
    3. STOP when the time since the last commit exceeds the span of the window
       (``now - last > last - first``), unless an end offset seen recently was at or below the last
       commit (the consumer was caught up a moment ago, so do not alert yet).
    2. REWIND when a commit is lower than the one before and no later commit got back to it.
    1. OK when the lag was within ``allowed_lag`` at any commit in the window.
    4. STALL when every commit in the window has the same offset (and lag is non-zero: rule 1).
    5. WARN when the offsets advance but the lag never decreased from one commit to the next.
    Otherwise OK.
    """
    if not commits or current_lag <= allowed_lag:
        return "OK"
    first, last = commits[0], commits[-1]
    stopped = now_ms - last.timestamp_ms > last.timestamp_ms - first.timestamp_ms
    recently_caught_up = any(end <= last.offset for end in broker_offsets)
    if stopped and not recently_caught_up:
        return "STOP"
    rewind = next((i for i in range(1, len(commits)) if commits[i].offset < commits[i - 1].offset), -1)
    if rewind > 0 and not any(c.offset >= commits[rewind - 1].offset for c in commits[rewind:]):
        return "REWIND"
    if any(c.lag <= allowed_lag for c in commits):
        return "OK"
    if all(c.offset == first.offset for c in commits):
        return "STALL"
    if all(later.lag >= earlier.lag for earlier, later in pairwise(commits)):
        return "WARN"
    return "OK"


def evaluate_group(statuses: Iterable[PartitionStatus]) -> GroupStatus:
    """Burrow's group status: the worst partition status, STOP, STALL and REWIND counting as ERR.

    NOTFOUND when the group has no committed partition at all.
    """
    worst: GroupStatus = "NOTFOUND"
    for s in statuses:
        as_group: GroupStatus = "ERR" if _SEVERITY[s] >= _SEVERITY["ERR"] else s  # type: ignore[assignment]
        if _SEVERITY[as_group] > _SEVERITY[worst]:
            worst = as_group
    return worst


# -- snapshots ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionLag:
    """One partition of a group at one moment. ``lag`` is never negative (a broker behind counts as 0)."""

    topic: str
    partition: int
    committed: int
    end: int

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


@dataclass(frozen=True)
class GroupSnapshot:
    """A group's committed offsets and end offsets, read at ``taken_ms``."""

    group: str
    state: str
    members: int
    partitions: tuple[PartitionLag, ...]
    taken_ms: int

    @property
    def live(self) -> bool:
        """Members hold partitions and may commit (DescribeGroups says so)."""
        return self.members > 0 and self.state in _LIVE_STATES


@dataclass(frozen=True)
class PartitionReport:
    topic: str
    partition: int
    committed: int
    end: int
    lag: int
    status: PartitionStatus
    complete: float

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("topic", "partition", "committed", "end", "lag", "status", "complete")}


@dataclass(frozen=True)
class GroupReport:
    """What ``shoprank lag`` prints for a group: Burrow's group status, its worst partition status, lags."""

    group: str
    state: str
    members: int
    status: GroupStatus
    worst: PartitionStatus | None
    partitions: tuple[PartitionReport, ...]

    @property
    def total_lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def complete(self) -> float:
        """The least complete partition window (1.0: every window is full)."""
        return min((p.complete for p in self.partitions), default=0.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "state": self.state,
            "members": self.members,
            "status": self.status,
            "worst_partition_status": self.worst,
            "total_lag": self.total_lag,
            "complete": self.complete,
            "partitions": [p.as_dict() for p in self.partitions],
        }


# -- the window -----------------------------------------------------------------------------------


@dataclass
class _Partition:
    commits: deque[Commit]
    broker_offsets: deque[int]
    polls: int = 0


@dataclass
class LagWindow:
    """Sliding windows of commits per (group, topic, partition), fed by :meth:`observe`.

    ``intervals`` is the window length (Burrow's ``storage.intervals``, default 10); ``allowed_lag``
    and ``minimum_complete`` are Burrow's evaluator settings of the same names.
    """

    intervals: int = 10
    allowed_lag: int = 0
    minimum_complete: float = 0.5
    _parts: dict[tuple[str, str, int], _Partition] = field(default_factory=dict)
    _last: dict[str, GroupSnapshot] = field(default_factory=dict)

    def observe(self, snap: GroupSnapshot) -> None:
        self._last[snap.group] = snap
        for p in snap.partitions:
            key = (snap.group, p.topic, p.partition)
            part = self._parts.get(key)
            if part is None:
                part = self._parts[key] = _Partition(deque(maxlen=self.intervals), deque(maxlen=self.intervals))
            part.polls += 1
            part.broker_offsets.append(p.end)
            moved = not part.commits or part.commits[-1].offset != p.committed
            if moved or snap.live:  # see the module docstring: no move and no members = no commit
                part.commits.append(Commit(p.committed, snap.taken_ms, p.lag))

    def report(self, group: str, now_ms: int | None = None) -> GroupReport:
        """The group as of its latest snapshot, judged over its window."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        snap = self._last.get(group)
        if snap is None:
            return GroupReport(group, "Unknown", 0, "NOTFOUND", None, ())
        parts = []
        for p in snap.partitions:
            w = self._parts[(group, p.topic, p.partition)]
            complete = min(1.0, w.polls / self.intervals)
            status: PartitionStatus = "OK"
            if complete >= self.minimum_complete:
                status = evaluate_partition(list(w.commits), list(w.broker_offsets), p.lag, now_ms, self.allowed_lag)
            parts.append(PartitionReport(p.topic, p.partition, p.committed, p.end, p.lag, status, round(complete, 2)))
        statuses = [p.status for p in parts]
        worst = max(statuses, key=_SEVERITY.__getitem__, default=None)
        return GroupReport(group, snap.state, snap.members, evaluate_group(statuses), worst, tuple(parts))

    def groups(self) -> list[str]:
        return sorted(self._last)


# -- reading the broker ---------------------------------------------------------------------------


class LagProbe:
    """Takes :class:`GroupSnapshot` s from a broker; keeps one admin connection across snapshots.

    Groups come from ListGroups. Committed offsets are asked for with explicit partitions (every
    partition of every topic but Kafka's internal ones): Tansu answers the "all partitions" form of
    OffsetFetch (v2+, null topics) with a response aiokafka cannot decode, while the explicit form
    works on Tansu and Kafka alike. A broker that cannot list groups falls back to ``fallback_groups``.
    """

    def __init__(self, bootstrap: str, fallback_groups: Sequence[str] = (), request_timeout_s: float = 10.0) -> None:
        self.bootstrap = bootstrap
        self.fallback_groups = list(fallback_groups)
        self._timeout_ms = int(request_timeout_s * 1000)
        self._admin: AIOKafkaAdminClient | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()

    async def _client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=self._timeout_ms)
            await admin.start()
            self._admin = admin
        return self._admin

    async def list_groups(self) -> list[str]:
        """Consumer groups the broker knows; ``fallback_groups`` if it cannot list them."""
        admin = await self._client()
        try:
            listed = await admin.list_consumer_groups()
        except KafkaError as exc:
            log.warning("ListGroups failed (%s); using the configured groups %s", exc, self.fallback_groups)
            return list(self.fallback_groups)
        return sorted({g[0] for g in listed if not g[1] or g[1] == "consumer"})

    async def snapshot(self, groups: Sequence[str] | None = None) -> list[GroupSnapshot]:
        """One snapshot of ``groups`` (default: every group listed). Raises ``KafkaError`` when unreachable."""
        try:
            return await self._snapshot(groups)
        except (KafkaError, OSError, TimeoutError):
            await self.close()  # reconnect from scratch next time
            raise

    async def _snapshot(self, groups: Sequence[str] | None) -> list[GroupSnapshot]:
        admin = await self._client()
        names = list(groups) if groups else await self.list_groups()
        if not names:
            return []
        topics = [t for t in await admin.list_topics() if not t.startswith("__")]
        described = await admin.describe_topics(topics) if topics else []
        tps = [
            TopicPartition(d["topic"], p["partition"])
            for d in described
            if d["error_code"] == 0
            for p in d["partitions"]
        ]
        states = await self._states(admin, names)
        committed: dict[str, dict[TopicPartition, int]] = {}
        for g in names:
            offsets = await admin.list_consumer_group_offsets(g, partitions=tps) if tps else {}
            committed[g] = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        wanted = sorted({tp for per_group in committed.values() for tp in per_group})
        ends = await end_offsets(self.bootstrap, wanted)
        taken_ms = int(time.time() * 1000)
        return [
            GroupSnapshot(
                group=g,
                state=states.get(g, ("Unknown", 0))[0],
                members=states.get(g, ("Unknown", 0))[1],
                partitions=tuple(
                    PartitionLag(tp.topic, tp.partition, off, ends[tp]) for tp, off in sorted(committed[g].items())
                ),
                taken_ms=taken_ms,
            )
            for g in names
        ]

    @staticmethod
    async def _states(admin: AIOKafkaAdminClient, groups: Sequence[str]) -> dict[str, tuple[str, int]]:
        """Group → (state, member count) from DescribeGroups; a group the broker cannot describe is left out.

        One request per group: the embedded broker now and then sends a DescribeGroups answer aiokafka
        cannot decode (seen for a group whose last member had gone), which would hide every group's state.
        """
        out: dict[str, tuple[str, int]] = {}
        for name in groups:
            try:
                responses = await admin.describe_consumer_groups([name])
            except KafkaError as exc:
                log.warning("DescribeGroups failed for %s (%s); its state is unknown", name, exc)
                continue
            for resp in responses:
                for g in resp.groups:
                    error_code, group_id, state, _ptype, _proto, members = g[:6]
                    if error_code == 0:
                        out[group_id] = (state, len(members))
        return out
