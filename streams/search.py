"""The search agent: search requests in, ranked results out on each request's reply topic."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import faust
import mode
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    InvalidMessageError,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from models.searcher import Searcher, error_result
from schemas import DecodeError, SearchLog, SearchRequest, SearchResult, decode, encode
from schemas.topics import TOPICS
from streams import metrics
from streams.batching import in_thread
from streams.deadletters import DeadLetterSink, RecordOrigin, plausible_tenant, record_origin, salvage
from streams.fetchwait import IdleFetchWait
from streams.kafka import PRODUCER_BATCH_BYTES, create_missing, new_topic, reconnecting
from streams.settings import Settings
from streams.stale_assignment import AssignmentCheck

__all__ = ["SearchPipeline", "request_error_code"]

log = logging.getLogger(__name__)

#: A top result this close to the query (cosine, MiniLM) or with any keyword match counts as a confident
#: answer for query coverage; below it shoppers mostly see loosely related products.
CONFIDENT_DENSE = 0.5
_BATCH_MAX = 32
#: A request that waited this long in the topic is not searched but answered ``request_expired``: its
#: client gave up long ago (the SearchClient and the gateway wait seconds), and after a stop of the
#: worker the backlog would otherwise delay every fresh request behind searches nobody reads.
STALE_AFTER_S = 60.0
#: How often the request consumer commits what it answered (and at every rebalance and stop).
_COMMIT_EVERY_S = 1.0
_RETRY_S = 1.0
#: Kafka errors that come from one record (its size, its reply topic's name), not from the broker being
#: away: the request that caused them is set aside rather than read again.
_RECORD_ERRORS = (InvalidMessageError, InvalidTopicError, MessageSizeTooLargeError, RecordListTooLargeError,
                  RecordTooLargeError)


def _broker_trouble(exc: BaseException) -> bool:
    """Whether handling failed because of the broker (then the batch is read again after a reconnect)."""
    return isinstance(exc, KafkaError) and not isinstance(exc, _RECORD_ERRORS)


#: Takes each answer of a batch as soon as it is ready: (index in the batch, result).
Deliver = Callable[[int, SearchResult], Awaitable[None]]


def _log_failed_reply(delivery: asyncio.Future[Any]) -> None:
    if not delivery.cancelled() and delivery.exception() is not None:
        log.warning("a search reply was not delivered: %s", delivery.exception())


def request_error_code(err: DecodeError) -> str:
    """Stable error code in a reply for a request that does not satisfy the contract."""
    if "query" in err.detail and "at most" in err.detail:
        return "query_too_long"
    if err.detail.startswith("query:"):
        return "invalid_query"
    return "invalid_request"


class _Coalescer:
    """Gateway searches that arrive while a batch runs are answered together in the next one.

    Each HTTP request in its own executor thread made concurrent searches fight over the interpreter
    (retrieval took 8x longer under load than in the agent's batches); in one batch they share one ONNX
    call and run one after another.
    """

    def __init__(self, run: Callable[[list[SearchRequest], Deliver], Awaitable[list[SearchResult]]],
                 max_batch: int) -> None:
        self._run = run
        self._max_batch = max_batch
        self._pending: list[tuple[SearchRequest, asyncio.Future[SearchResult]]] = []
        self._draining = False

    async def submit(self, request: SearchRequest) -> SearchResult:
        future: asyncio.Future[SearchResult] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if not self._draining:
            self._draining = True
            asyncio.ensure_future(self._drain())
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[SearchRequest, asyncio.Future[SearchResult]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch:]

                async def deliver(i: int, result: SearchResult,
                                  batch: list[tuple[SearchRequest, asyncio.Future[SearchResult]]] = batch) -> None:
                    if not batch[i][1].done():
                        batch[i][1].set_result(result)

                results = await self._run([request for request, _ in batch], deliver)
                for (_, future), result in zip(batch, results, strict=True):  # any not delivered yet
                    if not future.done():
                        future.set_result(result)
                batch = []
        except BaseException as exc:  # cancelled at shutdown: nobody may wait forever
            for _, future in batch + self._pending:
                if future.done():
                    continue
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                else:
                    future.cancel()
            self._pending = []
            raise
        finally:
            self._draining = False


@dataclass
class SearchStats:
    answered: int = 0
    errors: int = 0
    dead_lettered: int = 0
    #: Requests older than STALE_AFTER_S when read: answered ``request_expired``, not searched.
    expired: int = 0
    #: Per tenant: answered searches, and those whose top result is a confident match (query coverage).
    coverage: dict[str, Counter[str]] = field(default_factory=dict)

    def count_coverage(self, result: SearchResult) -> None:
        c = self.coverage.setdefault(result.tenant, Counter())
        c["searches"] += 1
        top = result.items[0].scores if result.items else {}
        if top.get("dense", 0.0) >= CONFIDENT_DENSE or top.get("bm25", 0.0) > 0:
            c["confident"] += 1


class _ReplyProducer(mode.Service):
    """The search agent's own producer: replies go out at once, while the worker's producer (Faust's)
    lingers to pack changelog and event records into fewer requests (SHOPRANK_KAFKA_PRODUCER_LINGER_MS)."""

    def __init__(self, bootstrap: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bootstrap = bootstrap
        self.producer: AIOKafkaProducer | None = None

    async def on_start(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=0, max_batch_size=PRODUCER_BATCH_BYTES)
        try:
            await producer.start()
        except KafkaError as exc:  # replies still go out, through the worker's producer
            log.warning("search replies go through the worker's producer: their own did not start (%s)", exc)
            await producer.stop()
            return
        self.producer = producer

    async def on_stop(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            await producer.stop()  # sends what is still buffered first


class _Committed(ConsumerRebalanceListener):
    """Commits the answered requests of partitions about to move to another worker; checks what a join gave."""

    def __init__(self, requests: _RequestConsumer, check: AssignmentCheck) -> None:
        self.requests = requests
        self.check = check

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.requests.commit(only=set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.check.assigned(assigned)


class _RequestConsumer(mode.Service):
    """Reads search requests with its own consumer group (``<app id>-search``), not Faust's consumer.

    Faust's consumer fetches every partition the worker holds (catalogue, pixel, searches, tables'
    changelogs: dozens) in each request, and the embedded broker holds every fetch for its whole wait,
    so a search request waited for that wait and for a fetch cycle that costs the worker's interpreter
    far more than four partitions do. Here the search requests' four partitions are fetched alone, with
    their own short wait (``SHOPRANK_KAFKA_SEARCH_FETCH_MAX_WAIT_MS``), and a longer one while no
    requests come (``SHOPRANK_KAFKA_SEARCH_IDLE_FETCH_MAX_WAIT_MS``). Offsets are committed once the
    answers are handed to the reply producer, every second and at each rebalance and stop: a worker that
    dies answers at most the last second's requests again, which clients tell apart by request id.
    """

    def __init__(self, pipeline: SearchPipeline, settings: Settings, bootstrap: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.bootstrap = bootstrap
        self.topic = settings.topic("search-requests")
        self.group = f"{settings.kafka.topic_prefix}{settings.worker.app_id}-search"
        self.kafka = settings.kafka
        self.consumer: AIOKafkaConsumer | None = None
        self._answered: dict[TopicPartition, int] = {}  # next offset to commit, per partition
        self._check = AssignmentCheck()
        self._committed_at = 0.0

    def partitions(self) -> set[TopicPartition]:
        """The search request partitions this worker answers now (none before it joined its group)."""
        consumer = self.consumer
        return set(consumer.assignment()) if consumer is not None else set()

    @property
    def assigned(self) -> bool:
        """Holds search request partitions, or is a spare: a member of a group with more members than
        partitions, which serves the gateway's searches and takes partitions over when a member leaves."""
        return bool(self.partitions()) or (self.consumer is not None and self._check.spare)

    @mode.Service.task
    async def _run(self) -> None:
        await reconnecting(self._consume, f"search requests from {self.topic}", _RETRY_S)

    async def _consume(self) -> None:
        kafka = self.kafka
        # A stale assignment from the broker ends this consumer: a new one joins.
        check = self._check = AssignmentCheck()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.group, enable_auto_commit=False,
            partition_assignment_strategy=(check.assignor,),
            auto_offset_reset="earliest", fetch_max_wait_ms=kafka.search_fetch_max_wait_ms,
            max_poll_records=_BATCH_MAX, metadata_max_age_ms=int(kafka.search_metadata_max_age_s * 1000),
            rebalance_timeout_ms=int(kafka.rebalance_timeout_s * 1000),
            session_timeout_ms=int(kafka.session_timeout_s * 1000),
            heartbeat_interval_ms=int(kafka.heartbeat_interval_s * 1000),
        )
        await consumer.start()
        wait = IdleFetchWait(kafka.search_fetch_max_wait_ms, kafka.search_idle_fetch_max_wait_ms)
        try:
            consumer.subscribe([self.topic], listener=_Committed(self, check))
            self.consumer = consumer
            while not self.should_stop:
                check.raise_if_stale()
                fetched = await consumer.getmany(timeout_ms=100, max_records=_BATCH_MAX)
                records = [record for part in fetched.values() for record in part]
                wait.after_fetch(consumer, bool(records))
                if records:
                    await self.pipeline.handle_isolating(records)
                    for tp, part in fetched.items():
                        self._answered[tp] = part[-1].offset + 1
                if time.monotonic() - self._committed_at >= _COMMIT_EVERY_S:
                    await self.commit()
        finally:
            try:
                await self.commit()
            finally:
                self.consumer = None
                await consumer.stop()

    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        """Commit the answered requests (of ``only`` those partitions); a failed commit is retried later."""
        consumer = self.consumer
        self._committed_at = time.monotonic()
        if consumer is None:
            return
        todo = {tp: offset for tp, offset in self._answered.items() if only is None or tp in only}
        if not todo:
            return
        try:
            await consumer.commit(todo)
        except KafkaError as exc:  # CommitFailedError included: a rebalance under way, the next owner answers again
            log.info("search request offsets not committed (%s); they are answered again after a move", exc)
            if only is None:
                return
        for tp in todo:  # committed, or revoked: either way no longer this worker's to commit
            if self._answered.get(tp) == todo[tp]:
                del self._answered[tp]


class SearchPipeline:
    AGENT = "search"

    def __init__(self, app: faust.App, settings: Settings, searcher_factory: Any, bootstrap: str) -> None:
        self.app = app
        self.bootstrap = bootstrap
        self.retention_ms = settings.kafka.retention_ms
        self.results_topic = settings.topic("search-results")
        self.searches_log = app.topic(
            settings.topic("searches"), key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )
        self.dead = DeadLetterSink(app, settings, self.AGENT)
        self.stats = SearchStats()
        self._searcher_factory = searcher_factory
        self._searcher: Searcher | None = None
        self._reply_topics: dict[str, Any] = {}
        self._gateway = _Coalescer(self.answer_many, _BATCH_MAX)
        self._replies = app.add_dependency(_ReplyProducer(bootstrap))
        self.requests = app.add_dependency(_RequestConsumer(self, settings, bootstrap))

    @property
    def searcher(self) -> Searcher:
        if self._searcher is None:
            self._searcher = self._searcher_factory()
        return self._searcher

    async def answer(self, request: SearchRequest) -> SearchResult:
        """Answer one request (the gateway calls this), batched with those arriving meanwhile."""
        return await self._gateway.submit(request)

    async def answer_many(self, requests: list[SearchRequest], deliver: Deliver | None = None) -> list[SearchResult]:
        """Answer requests (agent and gateway alike) and log what each answered search showed.

        Each answer goes to ``deliver`` as soon as the search thread has it, not when the whole batch is
        done: under load a batch holds 20-30 requests that are ranked one after another, and the first
        ones waited about 100 ms for the last (bench_search, answered->received p50).
        """
        loop = asyncio.get_running_loop()
        ready: asyncio.Queue[tuple[int, SearchResult, SearchLog | None] | None] = asyncio.Queue()
        # Answers wait in ``handed`` for the loop; one wake-up carries all that arrived before the loop
        # ran: each call_soon_threadsafe writes to the loop's self-pipe under the GIL, which the event
        # loop and the search thread share (bench_search profile: ~4% of the worker's samples).
        handed: list[tuple[int, SearchResult, SearchLog | None] | None] = []
        lock = threading.Lock()

        def take() -> None:  # in the loop
            with lock:
                items = handed.copy()
                handed.clear()
            for item in items:
                ready.put_nowait(item)

        def hand_over(item: tuple[int, SearchResult, SearchLog | None] | None) -> None:
            with lock:
                handed.append(item)
                if len(handed) > 1:  # a wake-up is already on its way
                    return
            try:
                loop.call_soon_threadsafe(take)
            except RuntimeError:  # the loop closed at shutdown: nobody waits for this batch any more
                pass

        def run() -> None:  # in the search thread
            try:
                self.searcher.search_many_logged(requests, on_answer=lambda i, r, sl: hand_over((i, r, sl)))
            finally:
                hand_over(None)

        work = asyncio.ensure_future(in_thread(run))
        results: list[SearchResult | None] = [None] * len(requests)
        while (item := await ready.get()) is not None:
            i, result, search_log = item
            results[i] = result
            await self._log(result, search_log)
            if deliver is not None:
                await deliver(i, result)
        try:
            await work
        except Exception as exc:  # noqa: BLE001 - a failing store or model answers an error, never crashes
            log.exception("search failed for %d of %d requests", results.count(None), len(requests))
            for i, request in enumerate(requests):
                if results[i] is None:
                    result = results[i] = error_result(
                        request.request_id, request.tenant, "internal_error", type(exc).__name__)
                    if deliver is not None:
                        await deliver(i, result)
        return results  # type: ignore[return-value]

    async def _log(self, result: SearchResult, search_log: SearchLog | None) -> None:
        metrics.observe_search((result,))
        if result.search_id is None:
            return
        self.stats.count_coverage(result)
        if search_log is not None:
            # Keyed like pixel events, so attribution meets the log and the session's events on one partition.
            key = f"{search_log.tenant}:{search_log.session_id}".encode()
            await self.searches_log.send(key=key, value=encode(search_log))

    async def handle_isolating(self, records: list[Any]) -> None:
        """:meth:`handle`, with a record it fails on set aside, so that it cannot stop the consumer.

        Were the exception to reach the consumer, it would start again from its last commit and meet the
        same record again, for ever. After a failed batch, its records are handled one at a time, and
        one that fails alone is answered ``internal_error`` where it can be and dead-lettered (reason,
        original bytes, topic, partition and offset). The others may be answered twice: clients match
        replies by request id. Broker trouble (a Kafka error not caused by one record) is no reason to
        set requests aside: it reaches the consumer, which reconnects and reads the batch again. A dead
        letter the broker refuses is sent again by the sink until it is taken, as in every agent.
        """
        try:
            await self.handle(records)
            return
        except Exception as exc:  # noqa: BLE001 - which record it was is found below
            if _broker_trouble(exc):
                raise
            log.exception("a batch of %d search requests failed; handling them one at a time", len(records))
        for record in records:
            try:
                await self.handle([record])
            except Exception as exc:  # noqa: BLE001 - this record alone fails: set it aside
                if _broker_trouble(exc):
                    raise
                log.exception("search request %s[%d]@%d failed; dead-lettered", record.topic, record.partition,
                              record.offset)
                await self._set_aside(record, f"{type(exc).__name__}: {exc}")

    async def _set_aside(self, record: Any, detail: str) -> None:
        ident = salvage(record.value, "request_id", "tenant", "reply_topic")
        tenant = plausible_tenant(ident.get("tenant"))
        reply_to = ident.get("reply_topic", self.results_topic)
        if reply_to != self.results_topic and reply_to not in self._reply_topics:  # not known to exist
            reply_to = self.results_topic
        if "request_id" in ident and tenant is not None:
            try:
                await self._reply(reply_to, error_result(ident["request_id"], tenant, "internal_error",
                                                         "this request could not be handled; it was kept"))
            except Exception:  # noqa: BLE001 - the dead letter below still keeps it
                log.exception("no internal_error reply for request %s", ident["request_id"])
        self.stats.errors += 1
        self.stats.dead_lettered += 1
        await self.dead.send(record_origin(record), "internal_error", detail, tenant=tenant)

    async def handle(self, records: list[Any]) -> None:
        """Answer a batch of search request records (aiokafka ``ConsumerRecord``) on their reply topics."""
        metrics.EVENTS.labels(self.AGENT).inc(len(records))
        valid: list[tuple[SearchRequest, str]] = []
        now_ms = time.time() * 1000
        expired = 0
        for record in records:
            admitted = await self._admit(record_origin(record))
            if admitted is None:
                continue
            if record.timestamp is not None and now_ms - record.timestamp > STALE_AFTER_S * 1000:
                # Not searched, but answered: a client still listening learns why, and nothing vanishes.
                request, reply_to = admitted
                expired += 1
                await self._reply(reply_to, error_result(
                    request.request_id, request.tenant, "request_expired",
                    f"waited {(now_ms - record.timestamp) / 1000:.0f} s in the topic (over {STALE_AFTER_S:.0f} s); "
                    "send it again"))
                continue
            valid.append(admitted)
        if expired:
            self.stats.expired += expired
            log.warning("%d search requests waited over %.0f s in %s: answered request_expired, not searched",
                        expired, STALE_AFTER_S, records[0].topic)
        if not valid:
            return

        async def deliver(i: int, result: SearchResult) -> None:
            if result.error:
                self.stats.errors += 1
            else:
                self.stats.answered += 1
            await self._reply(valid[i][1], result)

        await self.answer_many([r for r, _ in valid], deliver)

    async def _admit(self, message: RecordOrigin) -> tuple[SearchRequest, str] | None:
        """The request and its reply topic, or None once a bad request has been answered or dead-lettered."""
        raw = message.value or b""
        try:
            request = decode(SearchRequest, raw)
        except DecodeError as err:
            ident = salvage(raw, "request_id", "tenant")
            tenant = plausible_tenant(ident.get("tenant"))
            if "request_id" not in ident or tenant is None:  # nobody to answer: keep it with the reason
                self.stats.dead_lettered += 1
                await self.dead.send(message, err.reason, err.detail, tenant=tenant)
                return None
            request_id = ident["request_id"]
            self.stats.errors += 1
            await self._reply(self.results_topic, error_result(request_id, tenant, request_error_code(err), err.detail))
            return None
        reply_to = request.reply_topic or self.results_topic
        if not reply_to.startswith(self.results_topic):
            self.stats.errors += 1
            await self._reply(self.results_topic, error_result(
                request.request_id, request.tenant, "invalid_reply_topic",
                f"reply_topic must start with {self.results_topic!r}",
            ))
            return None
        why_not = await self._reply_topic_ready(reply_to)
        if why_not is not None:
            self.stats.errors += 1
            await self._reply(self.results_topic, error_result(
                request.request_id, request.tenant, "invalid_reply_topic", why_not))
            return None
        return request, reply_to

    async def _reply_topic_ready(self, name: str) -> str | None:
        """None when replies can go to ``name``, creating it like the results topic if missing; else why not.

        The worker's clients may not create topics by naming them (streams.autocreate), and a send to a
        topic that does not exist would hold this agent for the producer's whole request timeout.
        """
        if name == self.results_topic or name in self._reply_topics:
            return None
        try:
            await create_missing(self.bootstrap, [new_topic(TOPICS["search-results"], name, self.retention_ms)])
        except KafkaError as exc:
            return f"reply_topic {name!r} does not exist and could not be created ({exc}); create it first"
        self._reply_channel(name)
        return None

    def _reply_channel(self, name: str) -> Any:
        topic = self._reply_topics.get(name)
        if topic is None:
            topic = self._reply_topics[name] = self.app.topic(
                name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
            )
        return topic

    async def _reply(self, topic_name: str, result: SearchResult) -> None:
        key, value = result.request_id.encode(), encode(result)
        producer = self._replies.producer
        if producer is None:  # not started yet, or stopping: the worker's producer takes it
            await self._reply_channel(topic_name).send(key=key, value=value)
            return
        try:
            # Enqueued, not awaited to the broker's ack: the agent goes on with the next answer.
            delivery = await producer.send(topic_name, value, key=key)
        except KafkaError as exc:
            log.warning("reply to %s for request %s not sent: %s", topic_name, result.request_id, exc)
            return
        delivery.add_done_callback(_log_failed_reply)

