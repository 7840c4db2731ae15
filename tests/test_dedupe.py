"""Batched dedupe records (streams.dedupe): ids remembered per batch, forgotten after the window.

On a real Faust table (memory store; its changelog sends wait in the producer buffer, no broker needed).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import faust
import faust.streams as faust_streams
from faust.types import Message

from streams.dedupe import BatchedDedupe

WINDOW_MS = 1_000


def _event(app: faust.App, partition: int, offset: int) -> Any:
    message = Message("src", partition, offset, 0.0, 0, None, b"k", b"v", None)
    return faust.Event(app, b"k", b"v", {}, message)


def _run(check: Any) -> None:
    async def go() -> None:
        app = faust.App("test-dedupe", broker="kafka://127.0.0.1:1", store="memory://")
        app.topic("src", partitions=4)
        table = app.Table("state", default=None, partitions=4)
        events = {p: _event(app, p, 0) for p in range(4)}
        faust_streams._current_event.set(weakref.ref(events[0]))  # noqa: SLF001 - a table write needs one
        await check(app, table, BatchedDedupe(table, WINDOW_MS), events)

    asyncio.run(go())


def test_a_purge_forgets_stale_ids_of_the_partitions_held_and_keeps_the_rest() -> None:
    async def check(app: faust.App, table: Any, dedupe: BatchedDedupe, events: dict[int, Any]) -> None:
        table["sess|a:1"] = {"searches": {}}  # other records of the table are left alone
        assert not dedupe.seen_elsewhere("old-1", 1, 10)
        assert not dedupe.seen_elsewhere("old-2", 2, 20)
        dedupe.flush(events, now_ms=1_000)
        assert not dedupe.seen_elsewhere("new-1", 1, 11)
        dedupe.flush(events, now_ms=2_500)
        assert dedupe.seen_elsewhere("old-1", 1, 99)  # a second message with the id: a duplicate

        purged = dedupe.purge(3_000, partitions={1}, anchors=events)  # partition 2 is not held here

        assert purged == 1
        assert not dedupe.seen_elsewhere("old-1", 1, 99)  # forgotten: past the window
        assert dedupe.seen_elsewhere("new-1", 1, 12)  # within the window
        assert dedupe.seen_elsewhere("old-2", 2, 21)  # another worker's to purge
        assert "dedupe|1|10" not in table and "dedupe|2|20" in table and "dedupe|1|11" in table
        assert table["sess|a:1"] == {"searches": {}}

    _run(check)


def test_after_a_recovery_the_records_in_the_table_are_purged_too() -> None:
    async def check(app: faust.App, table: Any, dedupe: BatchedDedupe, events: dict[int, Any]) -> None:
        assert not dedupe.seen_elsewhere("a", 3, 5)
        dedupe.flush(events, now_ms=1_000)
        restarted = BatchedDedupe(table, WINDOW_MS)  # a new worker finds the records in its recovered table
        await restarted._rebuild()  # noqa: SLF001 - what the table's on_recover callback runs
        assert restarted.seen_elsewhere("a", 3, 6)

        assert restarted.purge(5_000, partitions={3}, anchors=events) == 1

        assert not restarted.seen_elsewhere("a", 3, 6)
        assert "dedupe|3|5" not in table

    _run(check)
