"""Changelog records are decoded when read, not as they are fetched (streams.lazy_changelog).

On the changelog channel a real Faust table consumes, with its real stores: a RocksDB store applies
records without decoding them; a memory store and the packs read what they need.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import faust
import orjson
import pytest
from faust.exceptions import ValueDecodeError
from faust.types import TP, Message

from streams import table_store
from streams.lazy_changelog import _UNREAD, changelog_schema
from streams.table_store import table_options
from tests.test_table_store import in_partition


def _table(store_url: str, datadir: Path) -> Any:
    table_store.install()
    app = faust.App(f"lazy-{store_url[:4]}-{datadir.name}", broker="kafka://127.0.0.1:1", store=store_url,
                    datadir=str(datadir))
    return app.Table("x", default=None, partitions=4, options=table_options(store_url), schema=changelog_schema())


def _fetched(table: Any, events: list[tuple[int, int, bytes, bytes | None]]) -> list[Any]:
    """The events the table's changelog channel makes of these (partition, offset, key, value) records."""
    channel = table.changelog_topic.clone_using_queue(asyncio.Queue())  # as Faust's table manager does

    async def decode_all() -> list[Any]:
        return [await channel.decode(Message(channel.get_topic_name(), p, o, 0.0, 0, None, k, v, None),
                                     propagate=True)
                for p, o, k, v in events]

    return asyncio.run(decode_all())


@pytest.mark.parametrize("value", [b'{"n": 3}', b"\xff not json"])
def test_reading_decodes_as_faust_did_and_until_then_nothing_is_decoded(tmp_path: Path, value: bytes) -> None:
    table = _table("memory://", tmp_path)
    [event] = _fetched(table, [(1, 5, b'"totals|x"', value)])  # Faust's own decode raised here on bad JSON
    assert event.key == "totals|x"
    if value.startswith(b"{"):
        assert event.value == {"n": 3}
    else:
        with pytest.raises(ValueDecodeError):
            event.value  # noqa: B018 - the read is the test


def test_a_tombstone_reads_as_none(tmp_path: Path) -> None:
    [event] = _fetched(_table("memory://", tmp_path), [(0, 1, b'"sess|a:1"', None)])
    assert event.value is None and event.message.value is None


def test_rocksdb_stores_the_raw_records_it_never_decoded(tmp_path: Path) -> None:
    table = _table("rocksdb://", tmp_path)
    store = table.data
    in_partition(store, 1)
    store["other"] = 0  # opens partition 1's database
    session = {"searches": {"s1": {"q": "red shoes", "items": {"p1": [0, {"dense": 0.5}, False]}}}, "p": 1}
    pack = {"p": 1, "s": 3, "r": {"eng|a": [1.0, 2.0]}}
    events = _fetched(table, [(1, 7, b'"sess|a:1"', orjson.dumps(session)), (1, 8, b'"pk|1|3"', orjson.dumps(pack))])
    table.apply_changelog_batch(events)
    assert store.get("sess|a:1") == session
    assert store.get("eng|a") == [1, 3, [1.0, 2.0]]  # the pack was read, and expanded into its records
    assert store.persisted_offset(TP(table.changelog_topic.get_topic_name(), 1)) == 8
    session_event, pack_event = events
    # The session was stored as fetched, never decoded; the pack was decoded, to expand it.
    assert session_event._key is _UNREAD and session_event._value is _UNREAD  # noqa: SLF001
    assert pack_event._value is not _UNREAD  # noqa: SLF001


def test_the_memory_store_recovers_decoded_records(tmp_path: Path) -> None:
    table = _table("memory://", tmp_path)
    events = _fetched(table, [(2, 1, b'"totals|x"', b'{"n": 3}'), (2, 2, b'"pk|2|0"', orjson.dumps(
        {"p": 2, "s": 0, "r": {"eng|b": [4.0]}}))])
    table.apply_changelog_batch(events)
    assert table.data.get("totals|x") == {"n": 3}
    assert table.data.get("eng|b") == [2, 0, [4.0]]
