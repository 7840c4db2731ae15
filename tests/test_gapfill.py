"""streams.gapfill on the real broker: records an agent's batch skipped are read from the log, in order.

The batches are built by hand (the fetch-loop race that skips records cannot be triggered on demand;
tests/test_commit_guard.py pins down what is known of it); the records, the broker and the reads are real.
The table is a dict with Faust's ``on_recover`` hook: what the fill keeps in it is plain keys and values.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import faust
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic
from faust.types import TP, ConsumerMessage

from streams import faust_compat, gapfill
from streams.gapfill import GapFill
from streams.kafka import create_missing, producer, read_range

faust_compat.install()


class _Table(dict):  # type: ignore[type-arg]
    def on_recover(self, callback: Any) -> None:
        self.recovered = callback


def _event(app: faust.App, topic: str, offset: int, value: bytes) -> Any:
    tp = TP(topic, 0)
    message = ConsumerMessage(topic, 0, offset, 0.0, 0, [], b"k", value, None, 1, len(value), tp,
                              generation_id=app.consumer_generation_id)
    return faust.Event(app, b"k", value, [], message)


def _setup(bootstrap: str, n: int) -> str:
    topic = f"gapfill-{uuid.uuid4().hex[:8]}"

    async def go() -> None:
        await create_missing(bootstrap, [NewTopic(topic, 1, 1)])
        async with producer(bootstrap) as prod:
            for i in range(n):
                await prod.send_and_wait(topic, f"v{i}".encode(), partition=0)

    asyncio.run(go())
    return topic


def test_a_skipped_range_is_read_from_the_broker_in_order_and_acknowledged(broker: Any) -> None:
    topic = _setup(broker.bootstrap, 10)
    app = faust.App(f"gapfill-{uuid.uuid4().hex[:6]}", broker=f"kafka://{broker.bootstrap}")
    app.topics.acks_enabled_for = lambda name: True  # type: ignore[method-assign]  # a plain stream topic
    app.flow_control.resume()
    table = _Table()
    gaps = GapFill(app, table, "test agent", broker.bootstrap, [topic])

    async def batch(*offsets: int) -> list[tuple[int, bytes]]:
        events = await gaps.fill([_event(app, topic, o, f"v{o}".encode()) for o in offsets])
        gaps.save()
        gaps.ack()
        return [(e.message.offset, e.message.value) for e in events]

    async def go() -> None:
        assert await batch(0, 1) == [(0, b"v0"), (1, b"v1")]
        assert table["next|0"] == {topic: 2}
        # 2-4 never handed over: read from the broker, before 5, with the log's own values.
        assert await batch(5, 6) == [(o, f"v{o}".encode()) for o in range(2, 7)]
        assert table["next|0"] == {topic: 7}
        assert gaps.stats.gaps == 1 and gaps.stats.filled == 3 and gaps.stats.gone == 0
        assert {2, 3, 4} <= set(app.consumer._acked[TP(topic, 0)])  # the commit may pass them
        # A replay below the next offset is handed on as it is (the agents' watermarks drop it).
        assert await batch(3) == [(3, b"v3")]
        assert table["next|0"] == {topic: 7}
        # Another incarnation, its table recovered: it goes on from the next offset the table kept.
        again = GapFill(app, table, "test agent", broker.bootstrap, [topic])
        assert [e.message.offset for e in await again.fill([_event(app, topic, 9, b"v9")])] == [7, 8, 9]

    asyncio.run(go())


def test_after_a_recovery_the_table_decides(broker: Any) -> None:
    topic = _setup(broker.bootstrap, 6)
    app = faust.App(f"gapfill-{uuid.uuid4().hex[:6]}", broker=f"kafka://{broker.bootstrap}")
    table = _Table()
    gaps = GapFill(app, table, "test agent", broker.bootstrap, [topic])

    async def go() -> None:
        await gaps.fill([_event(app, topic, 0, b"v0")])
        gaps.save()
        table["next|0"] = {topic: 4}  # another worker read on, and its writes reached this table's changelog
        await table.recovered()
        assert [e.message.offset for e in await gaps.fill([_event(app, topic, 5, b"v5")])] == [4, 5]

    asyncio.run(go())


def test_read_range_stops_at_the_end_offset(broker: Any) -> None:
    topic = _setup(broker.bootstrap, 5)
    records = asyncio.run(read_range(broker.bootstrap, TopicPartition(topic, 0), 1, 4))
    assert [(r.offset, r.value) for r in records] == [(1, b"v1"), (2, b"v2"), (3, b"v3")]


def test_records_at_the_end_of_a_quiet_partition_are_read_too(broker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """No later record shows the jump: the tail check compares the consumer's commit with the next offset
    expected. The consumer's assignment stands in for a started worker's."""
    topic = _setup(broker.bootstrap, 8)
    app = faust.App(f"gapfill-{uuid.uuid4().hex[:6]}", broker=f"kafka://{broker.bootstrap}")
    app.flow_control.resume()
    monkeypatch.setattr(app.consumer, "assignment", lambda: {TP(topic, 0), TP("someone-elses", 0)})
    gaps = GapFill(app, _Table(), "test agent", broker.bootstrap, [topic])

    async def go() -> None:
        await gaps.fill([_event(app, topic, o, f"v{o}".encode()) for o in (0, 1, 2)])
        gaps.save()
        app.consumer._committed_offset[TP(topic, 0)] = 8  # Faust acknowledged 3-7 unprocessed and committed
        assert await gaps.tail() == []  # handed a record just now: the stream may still bring the rest
        monkeypatch.setattr(gapfill, "TAIL_IDLE_S", 0.0)
        events = await gaps.tail()
        assert [(e.message.offset, e.message.value) for e in events] == [(o, f"v{o}".encode()) for o in range(3, 8)]
        assert gaps.stats.tails == 1
        assert [e.message.offset for e in await gaps.fill(events)] == list(range(3, 8))  # as the agent does
        gaps.save()
        assert await gaps.tail() == []  # nothing past the commit now
        app.consumer._committed_offset[TP(topic, 0)] = 6
        assert await gaps.tail() == []  # a commit behind: the stream hands those over again

    asyncio.run(go())


def test_the_catalogue_agent_expects_offsets_from_the_start_again_once_the_broker_lost_its_log() -> None:
    """The catalogue log lost (streams.logloss): its new offsets start below the next offset the agent
    kept, and no jump past it would be seen until they passed it again."""
    from streams.catalogue import CataloguePipeline
    from streams.logloss import LogLossWatch
    from streams.settings import Settings

    settings = Settings(tenants=("demo",))
    app = faust.App(f"catalogue-loss-{uuid.uuid4().hex[:6]}", broker="kafka://127.0.0.1:1")
    log_loss = LogLossWatch()
    pipeline = CataloguePipeline(app, settings, "127.0.0.1:1", lambda: None, log_loss)
    topic = settings.topic("catalogue")
    handled: list[int] = []

    async def index(batch: list[Any]) -> None:  # the indexing itself is not what this test is about
        handled.extend(event.message.offset for event in batch)

    pipeline._index = index  # type: ignore[method-assign]
    pipeline.gaps._next = {0: {topic: 900}}  # noqa: SLF001 - the old log's next offset
    log_loss._pending[topic] = {0}  # noqa: SLF001 - as LogLossWatch records a reset it found at an assignment
    asyncio.run(pipeline._handle([_event(app, topic, 3, b"{}")]))
    assert pipeline.gaps._next[0] == {topic: 4}  # noqa: SLF001 - from the new log's offsets on
    assert handled == [3] and log_loss.take(topic, {0}) == set()  # the reset was taken once
