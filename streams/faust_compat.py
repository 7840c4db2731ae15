"""Adjustments to faust-streaming's Kafka driver, applied once when the app is built.

- Faust recovers a table by reading its changelog up to the partition's end offset, which it asks for
  with ListOffsets. On the embedded Tansu broker that answer can be short (see
  :func:`streams.kafka.end_offsets`), so recovery would stop early and silently lose table state.
  We route Faust's end-offset lookup through the verified one.
- Faust hard-codes the worker consumer's ``fetch_max_wait_ms`` to 1500. Tansu holds a fetch for that
  whole time even when data arrives (measured: ~450 ms median delay at 1500, ~5 ms at 50), which
  puts seconds into search latency. The wait becomes a setting (``SHOPRANK_KAFKA_FETCH_MAX_WAIT_MS``).
- The consumer can be handed a record it has just processed again (seen on Tansu, at fetch-batch
  boundaries). Faust lets it through (its check is ``offset >= last read``) and acks the offset a
  second time after that offset was committed; the duplicate in its acked list then breaks the run
  of consecutive offsets it commits, and commits crawl forward an offset or two per interval while
  lag grows. We drop a record whose offset is not past the last one processed (unless Faust has
  seeked since), and keep the acked list free of duplicates and already-committed offsets.
- A record whose hand-over to the streams straddles a rebalance is skipped by Faust's stream (old
  generation) but still acknowledged, and Faust's fetch loop then records its offset as read *after*
  recovery has sought the partition back to the committed offset. The records between the committed
  offset and that one are then dropped as "already read" when fetched again, and committed over when
  only one of them is missing (Faust's head check is ``min(acked) - committed > 1``). This lost one
  pixel event in 450 in CI, and left holes of about a stream buffer (~1,000 offsets) in the learning
  agent's partitions. A seek now wins over that stale read offset, a record never handed to a stream
  is never acknowledged, and a commit is held while the partition's next record is unacknowledged.
- A broker that lost its log (the embedded one keeps it in memory only) must not go unnoticed: the
  consumer's acks, commits, end offsets seen and committed offsets found at assignment feed a
  :class:`streams.logloss.LogLossWatch`, which reports what was lost and resets the agents' watermarks.
  A commit never goes past the partition's end as the broker last served it in a fetch response (an
  offset past it belongs to the lost log, and committed there it would hide the loss and start the new
  log's readers past their first records); once our topics had to be created again, a partition's
  commit also waits for a fetch from the new log, and after any assignment for a first fetch. When the
  loss is found, what Faust holds of the old log (committed offset, acks, gaps) is dropped, and a
  record of the old log that finishes later is not acknowledged as an offset of the new one.
- Faust's seek (``ThreadDelegateConsumer._seek``) calls aiokafka's ``seek`` from the worker's event loop,
  not in the consumer's thread, where the fetcher deletes the partition's buffered records while that
  thread may be walking the same dict in ``fetched_records``: ``KeyError`` there crashed the fetcher
  and the worker (bench_faults, restarts a few seconds apart, three runs in three). Every seek now
  runs in the consumer's thread, as Faust's other calls into it do.
- Faust's flush before a commit gives up after 0.1 s without a message sent, so a commit could run
  ahead of the table writes made for it, which a crash then lost. The flush now waits for them all.
- Faust takes a jump in a partition's offsets for a gap in its log and commits across it. A record
  fetched before a seek and handed over after it jumps so, and the records it jumped over were lost
  (bench_faults, 2 runs in 5). Only compacted topics have gaps: for the others the commit waits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from faust.transport import consumer as faust_consumer
from faust.transport import producer as faust_producer
from faust.transport.drivers import aiokafka as faust_aiokafka

from schemas.topics import TOPICS
from streams.kafka import end_offsets
from streams.logloss import LogLossWatch

__all__ = ["install"]

_installed = False
log = logging.getLogger(__name__)


_fetch_max_wait_ms = 1500
#: The watch of the app built last in this process (one worker app per process).
_log_loss: LogLossWatch | None = None


def install(fetch_max_wait_ms: int | None = None, log_loss: LogLossWatch | None = None) -> None:
    global _installed, _fetch_max_wait_ms, _log_loss
    if fetch_max_wait_ms is not None:
        _fetch_max_wait_ms = fetch_max_wait_ms
    if log_loss is not None:
        _log_loss = log_loss
    if _installed:
        return
    thread_cls = faust_aiokafka.AIOKafkaConsumerThread
    original = thread_cls._highwaters

    async def _highwaters(self: Any, partitions: list[Any]) -> Mapping[Any, int]:
        consumer = self._ensure_consumer()
        if self.consumer.in_transaction:
            return await original(self, partitions)
        servers = consumer._client._bootstrap_servers  # noqa: SLF001 - aiokafka keeps no public copy
        bootstrap = servers if isinstance(servers, str) else ",".join(map(str, servers))
        return await end_offsets(bootstrap, partitions)

    thread_cls._highwaters = _highwaters

    create_worker_consumer = thread_cls._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create_worker_consumer(self, transport)
        consumer._fetch_max_wait_ms = _fetch_max_wait_ms  # noqa: SLF001 - read when the consumer starts
        return consumer

    thread_cls._create_worker_consumer = _create_worker_consumer
    _install_seek_in_consumer_thread()
    _install_redelivery_guard()
    _install_seek_fence()
    _install_stale_handover_guard()
    _install_log_loss_hooks()
    _install_changelog_check()
    _install_full_flush()
    faust_add_gap = _install_no_gaps_in_uncompacted_topics()
    _install_in_order_handover(faust_add_gap)
    _installed = True


def _install_redelivery_guard() -> None:
    consumer_cls = faust_consumer.Consumer
    getmany = consumer_cls.getmany
    new_offset = consumer_cls._new_offset

    async def guarded_getmany(self: Any, timeout: float) -> Any:
        last: dict[Any, int] = self.__dict__.setdefault("_shoprank_last_offset", {})
        held: dict[Any, int] = self.__dict__.setdefault("_shoprank_held", {})
        ends_read: set[Any] = set()
        async for tp, message in getmany(self, timeout):
            if _log_loss is not None and tp not in ends_read:  # once per partition and fetch round
                ends_read.add(tp)
                _log_loss.saw_end(tp, self.highwater(tp))
            if _log_loss is not None:
                _log_loss.fetched(message)
            if self.__dict__.get("_shoprank_seeking") and not self._is_changelog_tp(tp):
                # Fetched while perform_seek runs (see _install_seek_fence): not handed over now;
                # fenced_perform_seek rewinds to the first of them once the seek is complete.
                held[tp] = min(held.get(tp, message.offset), message.offset)
                continue
            read = self._read_offset.get(tp)
            # ``read`` equal to what we last handed over means no seek happened since (a seek sets it
            # to the next offset to read), so an offset at or below it was processed already.
            if read is not None and last.get(tp) == read and message.offset <= read:
                continue
            last[tp] = message.offset
            yield tp, message

    def deduplicated_new_offset(self: Any, tp: Any) -> int | None:
        acked = self._acked[tp]
        if acked:
            committed = self._committed_offset[tp]
            kept = sorted({o for o in acked if committed is None or o >= committed})
            self._acked_index[tp].difference_update(set(acked) - set(kept))  # the two stay one set
            acked[:] = kept
            if kept and committed is not None and kept[0] > committed and not self._gap[tp].overlaps(committed):
                # The partition's next record is not acknowledged yet: committing now would skip it.
                # (Faust lets exactly one missing record through: its check is ``min - committed > 1``.)
                _note_held(self, tp, committed, kept[0])
                return None
        return new_offset(self, tp)

    consumer_cls.getmany = guarded_getmany
    consumer_cls._new_offset = deduplicated_new_offset


#: Seconds a commit may be held for one missing record before the worker's log says so.
HELD_WARN_S = 30.0


def _note_held(consumer: Any, tp: Any, committed: int, first_acked: int) -> None:
    """Say once, after :data:`HELD_WARN_S`, that a partition's commit waits for a record (lag shows it)."""
    held: dict[Any, tuple[int, float, bool]] = consumer.__dict__.setdefault("_shoprank_held_commit", {})
    now = time.monotonic()
    at, since, said = held.get(tp, (committed, now, False))
    if at != committed:
        since, said = now, False
    if not said and now - since >= HELD_WARN_S:
        said = True
        log.warning("%s[%d]: not committing past offset %d, still unprocessed %.0f s after offsets from %d on "
                    "were; it is read again at the next rebalance or restart", tp.topic, tp.partition,
                    committed, now - since, first_acked)
    held[tp] = (committed, since, said)


def _install_stale_handover_guard() -> None:
    """A seek decides where a partition is read from, even if a record fetched before it is handed over after.

    Faust's fetch loop (``Consumer._drain_messages``) awaits the hand-over of one record at a time and
    then sets the partition's read offset to that record's offset. During a rebalance the hand-over
    waits on flow control, and recovery meanwhile seeks the partition to its committed offset; when
    the hand-over completes, the loop overwrites the seek's read offset with the stale record's offset.
    The records from the committed offset up to it are then fetched again and dropped as already read.
    Here every seek is numbered per partition; when the fetch loop comes back for the next record and
    a seek has happened since the last one was handed over, the seek's read offset is put back.
    Faust's stream skips such a stale record (its generation is old) but acknowledges it; it was never
    processed, so that acknowledgement is not recorded (the record is read again from the seek).
    """
    consumer_cls = faust_consumer.Consumer
    seek = consumer_cls.seek
    perform_seek = consumer_cls.perform_seek  # already fenced: see _install_seek_fence
    getmany = consumer_cls.getmany  # already guarded: see _install_redelivery_guard
    ack = consumer_cls.ack

    def _after_seek(self: Any, tps: Any) -> None:
        serial: dict[Any, int] = self.__dict__.setdefault("_shoprank_seek_serial", {})
        read: dict[Any, int | None] = self.__dict__.setdefault("_shoprank_seek_read", {})
        for tp in tps:
            serial[tp] = serial.get(tp, 0) + 1
            read[tp] = self._read_offset.get(tp)

    async def numbered_seek(self: Any, partition: Any, offset: int) -> None:
        await seek(self, partition, offset)
        _after_seek(self, [partition])

    async def numbered_perform_seek(self: Any) -> None:
        await perform_seek(self)
        _after_seek(self, list(self._read_offset))

    async def restoring_getmany(self: Any, timeout: float) -> Any:
        serial: dict[Any, int] = self.__dict__.setdefault("_shoprank_seek_serial", {})
        async for tp, message in getmany(self, timeout):
            before = serial.get(tp, 0)
            yield tp, message
            if serial.get(tp, 0) != before:  # sought while this record was being handed over
                self._read_offset[tp] = self.__dict__["_shoprank_seek_read"].get(tp)
                self.__dict__.setdefault("_shoprank_last_offset", {}).pop(tp, None)  # see the redelivery guard
                log.info("%s[%d]: record %d was handed over after a seek; reading from the seek's offset",
                         tp.topic, tp.partition, message.offset)

    def unskipped_ack(self: Any, message: Any) -> bool:
        if (not message.tracked and not message.acked
                and (message.generation_id != self.app.consumer_generation_id or not self.app.flow_control.is_active())
                and self.app.topics.acks_enabled_for(message.topic)):
            message.acked = True  # skipped by the stream, never processed: it is fetched again after the seek
            return False
        return ack(self, message)

    consumer_cls.seek = numbered_seek
    consumer_cls.perform_seek = numbered_perform_seek
    consumer_cls.getmany = restoring_getmany
    consumer_cls.ack = unskipped_ack


#: shoprank's compacted topics (by their name's end: the deployment's prefix comes before it).
_COMPACTED = tuple(spec.full_name() for spec in TOPICS.values() if spec.compacted)


def _install_no_gaps_in_uncompacted_topics() -> Callable[..., Awaitable[None]]:
    """A jump in the offsets of a topic that is not compacted is never taken for a gap in its log.

    Faust's fetch loop reads a record more than one offset past the partition's read offset as a gap
    (records compacted away, or transaction markers) and later commits across it. A record fetched
    before a seek and handed over after it jumps just so: recovery seeks a partition to its committed
    offset, the seek fence rewinds it there again, and records the consumer had fetched from further on
    were still being handed over. The records in between, never processed, were then committed over:
    bench_faults lost 1,662 and then 572 pixel events of one partition in 2 of 5 runs on 2026-12-07
    (the worker's log: "record 14451 was handed over after a seek", the partition rewound to 13516, the
    next incarnation reading from 14402). shoprank's stream topics are neither compacted nor written in
    transactions, so their offsets have no gaps: without one, the commit waits for those records, which
    the rewind reads again (a commit held for a missing record is logged after 30 s: _note_held).
    """
    consumer_cls = faust_consumer.Consumer
    add_gap = consumer_cls._add_gap

    async def _add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        if tp.topic.endswith(_COMPACTED):
            await add_gap(self, tp, offset_from, offset_to)
        else:
            log.info("%s[%d]: records %d-%d not handed over in order (a seek since they were fetched?); "
                     "not a gap: the commit waits for them", tp.topic, tp.partition, offset_from, offset_to - 1)

    consumer_cls._add_gap = _add_gap
    return add_gap  # Faust's own: gaps the broker confirms are real go through it (_install_in_order_handover)


#: Seconds a stream partition's records may keep arriving past the offset it waits for before one is
#: taken anyway (the records in between are gone from the log: retention, or a log the broker lost).
OUT_OF_ORDER_TAKEN_AFTER_S = 10.0


def _install_in_order_handover(add_gap: Callable[..., Awaitable[None]]) -> None:
    """A stream partition's records are handed over in offset order, from where the last seek put it.

    Records of a topic that is neither compacted nor transactional follow one another one offset at a
    time; after a seek to ``X`` the next record is ``X``. Any other record is one the consumer fetched
    before a seek, still on its way: it is dropped unacknowledged, and read again in order. Processed,
    it would be counted ahead of the records before it, and the agents' offset watermarks would then
    take those, once read, for records already counted. bench_faults lost attributed interactions
    so in 2 of 7 runs on 2026-12-07 (the worker's log: recovery's fence held ``interactions[3]`` back
    from 7525, was lowered before its rewind to the committed 7524, and record 11711 was processed).
    Should records keep coming past the awaited offset for :data:`OUT_OF_ORDER_TAKEN_AFTER_S` with no
    seek, the log no longer holds it: the next record is taken, with a warning, and the offsets below
    the log's start (asked of the broker) count as a gap the commit may pass: ``add_gap`` is Faust's own
    ``Consumer._add_gap``, which _install_no_gaps_in_uncompacted_topics replaced for stream topics.
    """
    consumer_cls = faust_consumer.Consumer
    getmany = consumer_cls.getmany
    seek = consumer_cls.seek
    delegate_cls = faust_consumer.ThreadDelegateConsumer  # the worker's consumer seeks to commits there
    seek_to_committed = delegate_cls.seek_to_committed

    def _state(self: Any) -> tuple[dict[Any, int], dict[Any, float]]:
        return self.__dict__.setdefault("_shoprank_next", {}), self.__dict__.setdefault("_shoprank_ahead", {})

    def _gapless(self: Any, tp: Any) -> bool:
        """A stream topic of ours: neither compacted nor a changelog, so its offsets follow one another."""
        return not tp.topic.endswith(_COMPACTED) and not self._is_changelog_tp(tp)

    def _handing(self: Any) -> dict[Any, Any]:
        """Per partition, the record Faust's fetch loop is handing over right now (it may wait for flow)."""
        return self.__dict__.setdefault("_shoprank_handing", {})

    def _outrun(self: Any, tps: Any) -> None:
        """A seek of ``tps``: a record of theirs still being handed over is from before it. Its stream is to
        skip it, as it skips the records of an older generation (and its acknowledgement does not count:
        _install_stale_handover_guard); processed after the records before it were skipped (flow
        control during recovery), it set the watermarks past them (bench_faults, 2026-12-07)."""
        handing = _handing(self)
        for tp in tps:
            message = handing.get(tp)
            if message is not None and _gapless(self, tp):
                message.generation_id = -1  # no consumer generation is negative

    async def in_order_getmany(self: Any, timeout: float) -> Any:
        awaited, ahead_since = _state(self)
        handing = _handing(self)
        dropping: dict[Any, int] = self.__dict__.setdefault("_shoprank_dropping", {})
        async for tp, message in getmany(self, timeout):
            offset, want = message.offset, awaited.get(tp)
            if want is not None and offset != want and _gapless(self, tp):
                if offset < want:
                    continue  # handed over already, or from before a seek back
                since = ahead_since.get(tp)
                if since is None:
                    since = ahead_since[tp] = time.monotonic()
                    log.info("%s[%d]: record %d came while %d was awaited (fetched before a seek?): held back, "
                             "the records are read in order", tp.topic, tp.partition, offset, want)
                if time.monotonic() - since < OUT_OF_ORDER_TAKEN_AFTER_S:
                    continue  # fetched before a seek: the records from ``want`` on are coming
                log.warning("%s[%d]: offsets %d-%d never came in %.0f s (gone from the log?); reading on from %d",
                            tp.topic, tp.partition, want, offset - 1, time.monotonic() - since, offset)
                await _skip_what_the_log_lost(self, tp, want, offset)
            ahead_since.pop(tp, None)
            awaited[tp] = offset + 1
            handing[tp] = message
            read = self._read_offset.get(tp)
            if read is not None and offset < read and _gapless(self, tp) and dropping.get(tp) != read:
                # Faust's fetch loop drops a record below its read offset unprocessed (the agents read
                # it from the broker when a later one comes: streams.gapfill); logged once per read offset.
                dropping[tp] = read
                log.warning("%s[%d]: record %d is next in order, but Faust's fetch loop read up to %d and drops "
                            "it", tp.topic, tp.partition, offset, read)
            yield tp, message
            handing.pop(tp, None)

    async def awaiting_seek(self: Any, partition: Any, offset: int) -> None:
        awaited, ahead_since = _state(self)
        awaited[partition] = offset  # before the seek runs: records yielded meanwhile are from before it
        ahead_since.pop(partition, None)
        _outrun(self, [partition])
        await seek(self, partition, offset)

    async def awaiting_seek_to_committed(self: Any) -> Mapping[Any, int]:
        committed = await seek_to_committed(self)  # inside perform_seek, before the fence's rewinds
        awaited, ahead_since = _state(self)
        _outrun(self, committed)
        for tp, offset in committed.items():
            if offset is not None and offset >= 0:
                awaited[tp] = offset
            else:  # nothing committed: read from wherever the reset policy starts
                awaited.pop(tp, None)
            ahead_since.pop(tp, None)
        return committed

    async def _skip_what_the_log_lost(self: Any, tp: Any, want: int, offset: int) -> None:
        """Offsets ``want`` .. ``offset - 1`` never came: those below the log's start (retention deleted
        them) are a real gap, which the commit may pass, as Faust passes a compacted topic's gaps.

        Without it the commit stayed below them for good (stream topics have no gaps:
        _install_no_gaps_in_uncompacted_topics), lag counted from it grew without end, and every restart
        read again from there. Offsets the log still holds are no gap: the commit waits for them."""
        try:
            start = (await self.earliest_offsets(tp)).get(tp)
        except Exception as exc:  # noqa: BLE001 - the broker's answer is needed; without it, wait (safe side)
            log.warning("%s[%d]: log start unknown (%s); the commit waits below %d", tp.topic, tp.partition, exc, want)
            return
        gone_to = min(start, offset) if start is not None else want
        if gone_to > want:
            log.warning("%s[%d]: offsets %d-%d are gone from the log (it starts at %d); the commit passes them",
                        tp.topic, tp.partition, want, gone_to - 1, start)
            await add_gap(self, tp, want, gone_to - 1)
        else:
            log.warning("%s[%d]: the log still holds %d (it starts at %s); the commit waits for it",
                        tp.topic, tp.partition, want, start)

    consumer_cls.getmany = in_order_getmany
    consumer_cls.seek = awaiting_seek
    delegate_cls.seek_to_committed = awaiting_seek_to_committed


def _install_seek_in_consumer_thread() -> None:
    """aiokafka is not thread-safe: a seek joins the queue of calls the consumer's thread runs (see module doc)."""

    async def seek_in_consumer_thread(self: Any, partition: Any, offset: int) -> None:
        await self._thread.call_thread(self._thread.seek, partition, offset)

    faust_consumer.ThreadDelegateConsumer._seek = seek_in_consumer_thread


def _install_seek_fence() -> None:
    """No record is processed while the consumer seeks its stream partitions to their committed offsets.

    Faust's recovery resumes the stream partitions *before* ``perform_seek`` (faust/tables/recovery.py,
    ``_resume_streams`` and ``on_recovery_completed``), so the fetcher can hand over records while the
    seek is in flight; perform_seek then overwrites the read and committed offsets those records were
    processed against. Measured on the embedded broker: a worker restarted onto a backlog processed the
    records, lost their acks, and never committed past them again (lag frozen, some events never
    counted). The fence holds such records back and, once the seek is done, rewinds each partition to
    its committed offset (the earliest one when it has none), so they are read again in a consistent
    state: every agent drops what it had already counted (offset watermarks, dedupe records).
    """
    consumer_cls = faust_consumer.Consumer
    perform_seek = consumer_cls.perform_seek

    async def fenced_perform_seek(self: Any) -> None:
        held: dict[Any, int] = self.__dict__.setdefault("_shoprank_held", {})
        self.__dict__["_shoprank_seeking"] = True
        try:
            await perform_seek(self)
        finally:
            self.__dict__["_shoprank_seeking"] = False
            self.__dict__.setdefault("_shoprank_last_offset", {}).clear()  # a seek happened: see the guard
        rewind, held_now = {}, dict(held)
        held.clear()
        assigned = self.assignment()
        unknown = [tp for tp in held_now if tp in assigned and self._committed_offset.get(tp) is None]
        earliest = dict(await self.earliest_offsets(*unknown)) if unknown else {}
        for tp, first in held_now.items():
            if tp in assigned:
                # From the committed offset, not from the first record held: the fetcher may have been
                # ahead of it when the seek began (records before the fence, dropped by the stream
                # while flow control was off), and a rewind to the first held record then skipped
                # them for good (measured: 862 records of one partition in bench_faults, once tables
                # recovered in seconds from disk). Reading again from the commit is at-least-once.
                committed = self._committed_offset.get(tp)
                start = committed if committed is not None else earliest.get(tp)
                rewind[tp] = start if start is not None else first
        for tp, offset in rewind.items():
            log.info("re-reading %s from %d: records fetched during the seek were held back", tp, offset)
            await self.seek(tp, offset)

    consumer_cls.perform_seek = fenced_perform_seek


#: Per partition, the log end last warned about: one warning per lost log, not one per commit.
_past_end_warned: dict[Any, int] = {}


def _within_served_log(consumer: Any, offsets: Mapping[Any, int], lost_at_ms: int | None) -> dict[Any, int]:
    """The offsets a commit may carry: none past the partition's end as the broker last served it.

    A live log's high-watermark never goes below an offset a consumer read, so an offset past it is one
    of a log the broker has lost (the embedded broker restarted). Committed there, it would hide the
    loss from :class:`LogLossWatch` (which compares committed offsets at the next assignment) and
    start the new log's readers past its first records. Once our topics had to be created again
    (``lost_at_ms``), a partition is committed only after a fetch response from the new log has given
    its end: until then the end known is the old log's.
    """
    try:
        assignment = consumer._thread._consumer._subscription.subscription.assignment  # noqa: SLF001
    except AttributeError:  # not started: Faust's own checks decide
        return dict(offsets)
    if assignment is None:  # between assignments: Faust's own checks decide
        return dict(offsets)
    kept: dict[Any, int] = {}
    for tp, offset in offsets.items():
        state = assignment.state_value(tp)
        if state is None:
            kept[tp] = offset
        elif state.highwater is None:
            # Assigned, nothing fetched since: the end of this log is unknown. After the broker lost its
            # log, a commit here (of records fetched from the old log and finished after the rejoin) put
            # old offsets on the new broker, which hid the loss and started the new log's readers past
            # its first records (CI, 2026-12-06: five new products never indexed).
            log.debug("commit of %s[%d] held: nothing fetched since it was assigned", tp.topic, tp.partition)
        elif lost_at_ms is not None and (state.timestamp or 0) < lost_at_ms:
            log.debug("commit of %s[%d] held: no fetch from the broker's new log yet", tp.topic, tp.partition)
        elif offset > state.highwater:
            if _log_loss is not None:
                _log_loss.past_end.add(tp)  # streams.group_watch joins the group again: the loss is then reported
            if _past_end_warned.get(tp) == state.highwater:
                continue
            _past_end_warned[tp] = state.highwater
            log.warning(
                "not committing offset %d of %s[%d]: the broker's log of it ends at %d, so the offset is from a "
                "log it lost (the loss is reported when partitions are next assigned)",
                offset, tp.topic, tp.partition, state.highwater,
            )
        else:
            kept[tp] = offset
    return kept


def _install_log_loss_hooks() -> None:
    consumer_cls = faust_consumer.Consumer
    ack = consumer_cls.ack
    commit_offsets = consumer_cls._commit_offsets
    driver_cls = faust_aiokafka.Consumer
    seek_to_committed = driver_cls.seek_to_committed

    def watched_ack(self: Any, message: Any) -> bool:
        done = ack(self, message)
        if done and _log_loss is not None and _log_loss.acked(message.tp, message.offset, message):
            _forget_ack(self, message.tp, message.offset)  # an offset of the lost log, not of this one
            return False
        return done

    async def watched_commit_offsets(self: Any, offsets: Mapping[Any, int], *args: Any, **kwargs: Any) -> bool:
        if _log_loss is not None:
            offsets = _within_served_log(self, offsets, _log_loss.log_lost_at_ms)
            if not offsets:
                return False
        did = await commit_offsets(self, offsets, *args, **kwargs)
        if did and _log_loss is not None:
            assigned = self.assignment()
            _log_loss.did_commit({tp: o for tp, o in offsets.items() if tp in assigned})
        return did

    async def watched_seek_to_committed(self: Any) -> Mapping[Any, int]:
        committed = await seek_to_committed(self)
        if _log_loss is not None:
            ends: dict[Any, int] = {}
            suspects = _log_loss.suspects(dict(committed))
            if suspects:
                try:
                    ends = dict(await self.highwaters(*suspects))
                except Exception:  # noqa: BLE001 - no verdict on those partitions this time
                    log.warning("could not read end offsets of %s to check for a lost log", suspects)
            resets = _log_loss.check_committed(dict(committed), ends)
            lost = {(r.topic, r.partition) for r in resets}
            for tp in committed:
                if (tp.topic, tp.partition) in lost:
                    _forget_partition(self, tp)
            # Records Faust fetched and then dropped (its flow stopped for a rebalance) are read again only
            # because a seek to the committed offset moves the partition back; one without a committed
            # offset (a log the broker lost, nothing committed yet) stayed where the fetcher had got to,
            # and they were never processed (seen: a second join during the rebalance after a broker
            # restart left a whole batch of pixel events uncounted). Read such a partition from its start,
            # as the consumer's auto_offset_reset says: the agents drop what they had already counted.
            uncommitted = [tp for tp, offset in committed.items() if offset is None and tp.topic in _log_loss.topics]
            if uncommitted:
                try:
                    starts = dict(await self.earliest_offsets(*uncommitted))
                except Exception:  # noqa: BLE001 - left where they are, as before
                    log.warning("could not read the start offsets of %s to read them from there", uncommitted)
                    starts = {}
                for tp, first in starts.items():
                    await self.seek(tp, first)
        return committed

    consumer_cls.ack = watched_ack
    consumer_cls._commit_offsets = watched_commit_offsets
    driver_cls.seek_to_committed = watched_seek_to_committed


def _forget_ack(consumer: Any, tp: Any, offset: int) -> None:
    """Take back what Faust's ``ack`` recorded for ``offset`` of ``tp``: it is not to be committed."""
    acked = consumer._acked.get(tp)
    if acked is not None and offset in acked:
        acked.remove(offset)
        consumer._n_acked = max(0, consumer._n_acked - 1)
    index = consumer._acked_index.get(tp)
    if index is not None:
        index.discard(offset)


def _forget_partition(consumer: Any, tp: Any) -> None:
    """Drop what Faust knows of the log the broker lost for ``tp``: committed and read offsets, acks, gaps.

    ``perform_seek`` leaves the committed offset Faust holds when the broker has none, so the old log's
    one stayed: acks of the new log's records below it were ignored, and a rewind sought the new log
    to it, past its end (Faust then dropped every new record below that offset as already read).
    """
    consumer._committed_offset.pop(tp, None)
    consumer._acked.pop(tp, None)
    consumer._acked_index.pop(tp, None)
    consumer._gap.pop(tp, None)
    consumer._read_offset.pop(tp, None)
    consumer.__dict__.get("_shoprank_last_offset", {}).pop(tp, None)


def _install_changelog_check() -> None:
    """A table on disk that is ahead of its changelog re-reads the new changelog instead of stopping Faust.

    Faust starts reading a changelog partition after the offset its database on disk persisted, and
    refuses to start (ConsistencyError) when that offset is past the partition's end. Offsets never go
    back on a live log, so that means the broker lost its log while this worker was away (the embedded
    broker keeps it in memory only). The table on disk is the newest state there is: keep it, read the
    new changelog from its start (what it holds was written after the loss), and tell the
    :class:`LogLossWatch`, so that the agents restart the offset watermarks kept in those tables.
    """
    from faust.tables import recovery as faust_recovery

    recovery_cls = faust_recovery.Recovery
    build_offsets = recovery_cls._build_offsets

    async def checked_build_offsets(self: Any, consumer: Any, tps: Any, destination: Any, title: str) -> None:
        await build_offsets(self, consumer, tps, destination, title)
        unclean: dict[Any, Any] = {}  # tp -> its RocksStore, left open by a process that crashed
        for tp in tps:
            store = getattr(self.tables._changelogs.get(tp.topic), "data", None)
            if tp.partition in getattr(store, "unclean", ()):
                unclean[tp] = store
        persisted = [tp for tp in tps if destination.get(tp) is not None and destination[tp] >= 0]
        if not persisted and not unclean:
            return
        ends = await consumer.highwaters(*persisted) if persisted else {}
        went_back: set[Any] = set()
        for tp in persisted:
            end = ends.get(tp)
            if end is None or destination[tp] <= end - 1:
                continue
            log.warning("table changelog %s[%d] ends at offset %d, before the %d its table on disk reached: "
                        "reading it from the start", tp.topic, tp.partition, end, destination[tp])
            if _log_loss is not None:
                _log_loss.changelog_went_back(tp, destination[tp], end)
            destination[tp] = -1
            went_back.add(tp)
        if unclean:
            await _rebuild_unclean(consumer, unclean, destination, went_back)

    recovery_cls._build_offsets = checked_build_offsets


async def _rebuild_unclean(consumer: Any, unclean: dict[Any, Any], destination: Any, went_back: set[Any]) -> None:
    """Table partitions on disk that a crashed process left open (streams.table_store.RocksStore.rebuild)
    are emptied and read again from their changelog's start, unless that changelog lost what the database
    holds (the broker lost its log): the database is then the newest state there is, and stays."""
    earliest = await consumer.earliest_offsets(*unclean)
    for tp, store in unclean.items():
        if tp in went_back:
            store.keep(tp.partition)
            log.warning("table %s[%d] on disk was left open by a process that crashed, and its changelog lost "
                        "what it holds: keeping it as it is", tp.topic, tp.partition)
            continue
        removed = store.rebuild(tp.partition)
        if _log_loss is not None:
            _log_loss.tables_rebuilt[f"{tp.topic}[{tp.partition}]"] = removed
        start = earliest.get(tp)
        destination[tp] = start - 1 if start is not None else -1
        log.warning("table %s[%d] on disk was left open by a process that crashed, so it may hold writes its "
                    "changelog lacks: emptied (%d keys), reading the changelog from offset %d", tp.topic,
                    tp.partition, removed, destination[tp] + 1)


#: Seconds a commit waits for the table writes before it: a broker that takes longer must not hold a
#: rebalance (a commit runs when partitions are revoked); the agents read again what a crash would
#: then lose (streams.gapfill).
FLUSH_WAIT_MAX_S = 2.0


def _install_full_flush() -> None:
    """A commit waits until every table write made before it is with the broker.

    Faust flushes its producer before committing the consumer's offsets (``Consumer._commit_offsets``),
    so that a committed offset never runs ahead of the table changelog records written for it. But its
    buffer's ``flush`` gives up as soon as 0.1 s pass without a message sent (``flush_atmost``), and does
    not count the message being sent right then: under load (its buffer held 150-430 messages in
    bench_faults) the commit went ahead of writes that a ``kill -9`` then lost. The restarted worker
    found offsets committed past records whose counts, sessions and dedupe entries were gone: all four
    ``pixel`` partitions ~380 records behind their commits in one run of 2026-12-07 evening (the agents
    read those again from the broker: streams.gapfill). Here ``flush`` waits until every write put in the
    buffer before it has been sent, for up to :data:`FLUSH_WAIT_MAX_S` (then it says so, and the commit
    goes on).
    """
    buffer_cls = faust_producer.ProducerBuffer
    put, send_pending, flush = buffer_cls.put, buffer_cls._send_pending, buffer_cls.flush

    def counted_put(self: Any, fut: Any) -> None:
        self.__dict__["_shoprank_put"] = self.__dict__.get("_shoprank_put", 0) + 1
        put(self, fut)

    async def counted_send_pending(self: Any, fut: Any) -> None:
        try:
            await send_pending(self, fut)
        finally:
            sent = self.__dict__["_shoprank_sent"] = self.__dict__.get("_shoprank_sent", 0) + 1
            flushes: deque[tuple[int, asyncio.Future[None]]] | None = self.__dict__.get("_shoprank_flushes")
            while flushes and flushes[0][0] <= sent:  # in order of their targets: the put count only grows
                _, done = flushes.popleft()
                if not done.done():  # a flush that gave up cancelled it
                    done.set_result(None)

    async def full_flush(self: Any) -> None:
        if self.app.conf.producer_threaded:  # another sender (not used by shoprank): Faust's own flush
            return await flush(self)
        # Only the writes put before the commit: under steady writes the buffer is never empty, and waiting
        # for that held every commit for the whole limit. Woken once, by the send that reaches the target:
        # a wake-up per message sent (Faust's ``message_sent``) cost one worker ~20% of bench_learning.
        target = self.__dict__.get("_shoprank_put", 0)
        if target <= self.__dict__.get("_shoprank_sent", 0):
            return
        if self.state != "running":
            if self.size:
                raise RuntimeError("Cannot flush: Producer not Running")  # as Faust's own flush
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.__dict__.setdefault("_shoprank_flushes", deque()).append((target, done))
        try:
            await asyncio.wait_for(done, timeout=FLUSH_WAIT_MAX_S)
        except TimeoutError:
            log.warning("%d table write(s) still unsent after %.0f s; committing anyway (the agents read again "
                        "from the broker what a crash now loses)",
                        target - self.__dict__.get("_shoprank_sent", 0), FLUSH_WAIT_MAX_S)

    buffer_cls.put = counted_put
    buffer_cls._send_pending = counted_send_pending
    buffer_cls.flush = full_flush
