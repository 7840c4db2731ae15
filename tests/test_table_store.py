"""The worker's table stores (streams.table_store): packs expanded on recovery, an exact read cache."""

from __future__ import annotations

import tracemalloc
import weakref
from pathlib import Path
from typing import Any

import faust
import faust.streams as faust_streams
import orjson
import pytest
from faust.types import TP

from streams import table_store
from streams.table_store import table_options


class _Message:
    def __init__(self, partition: int, offset: int = 0, key: bytes | None = None, value: bytes | None = None) -> None:
        self.partition, self.offset, self.key, self.value = partition, offset, key, value
        self.tp = TP("x-changelog", partition)


class _Event:
    def __init__(self, message: _Message, key: Any = None, value: Any = None) -> None:
        self.message, self.key, self.value = message, key, value


def changelog_event(partition: int, offset: int, key: str, value: Any) -> _Event:
    """A changelog record as Faust's recovery hands it to a store: decoded key and value, raw message."""
    raw = _Message(partition, offset, orjson.dumps(key), None if value is None else orjson.dumps(value))
    return _Event(raw, key, value)


def table_data(store_url: str, datadir: Path, app_id: str = "t") -> Any:
    """The store of a 4-partition table "x", as a worker's app with ``store_url`` builds it under ``datadir``."""
    table_store.install()
    app = faust.App(f"{app_id}-{datadir.name}", broker="kafka://127.0.0.1:1", store=store_url, datadir=str(datadir))
    return app.Table("x", default=None, partitions=4, options=table_options(store_url)).data


def in_partition(store: Any, partition: int) -> None:
    """Make an event of ``partition`` current: writes go to the current event's partition."""
    event = _Event(_Message(partition))
    faust_streams._current_event.set(weakref.ref(event))  # noqa: SLF001 - what streams.batching.as_current does
    store.keep_alive = event  # the context holds the event weakly


@pytest.fixture(params=["rocksdb://", "memory://"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    data = table_data(request.param, tmp_path)
    in_partition(data, 1)
    return data


def test_packs_are_expanded_into_their_records_on_recovery(store: Any) -> None:
    store["other"] = 0  # partition 1's database is open ...
    assert store.get("eng|a") is None  # ... and this key was read (on disk: remembered) as absent there
    pack = {"p": 1, "s": 7, "r": {"eng|a": [1.0], "eng|b": [2.0]}}
    store.apply_changelog_batch([changelog_event(1, 5, "totals|x", {"n": 3}),
                                 changelog_event(1, 6, "pk|1|7", pack)], to_key=lambda k: k, to_value=lambda v: v)
    assert store.get("eng|a") == [1, 7, [1.0]]
    assert store.get("eng|b") == [1, 7, [2.0]]
    assert store.get("totals|x") == {"n": 3}
    assert store.get("pk|1|7") is None  # the pack itself is not a record
    if isinstance(store, table_store.RocksStore):
        assert store.persisted_offset(TP("x-changelog", 1)) == 6


def test_reads_see_every_write_through_the_cache(store: Any) -> None:
    assert store.get("k") is None
    store["k"] = [1]
    assert store.get("k") == [1]
    store["k"] = [2]
    assert store["k"] == [2]
    assert "k" in store
    del store["k"]
    assert store.get("k") is None
    assert "k" not in store


def test_get_many_reads_like_get_present_and_absent_alike(store: Any) -> None:
    store["a"] = [1.0, 2.0]
    store["c"] = [3.0]
    assert store.get_many(["a", "b", "c", "a"]) == [[1.0, 2.0], None, [3.0], [1.0, 2.0]]
    store["a"] = [9.0]
    del store["c"]
    assert store.get_many(["a", "c"]) == [[9.0], None]  # through the cache, as fresh as get
    assert store.get_many([]) == []
    store["é:1"] = [4.0]  # a key JSON escapes: encoded once, then read from the memo as it was written
    assert store.get_many(["é:1", "é:1"]) == [[4.0], [4.0]] == [store.get("é:1")] * 2


def test_a_read_that_races_a_write_keeps_nothing_stale(tmp_path: Path) -> None:
    store = table_data("rocksdb://", tmp_path)
    in_partition(store, 0)
    store["k"] = [1]
    read = store._get_bucket_for_key  # noqa: SLF001

    def slow_read(key: bytes) -> Any:
        found = read(key)  # the old value is read, then the event loop writes before the reader caches it
        store["k"] = [2]
        return found

    store._cache.clear()  # noqa: SLF001 - start cold
    store._get_bucket_for_key = slow_read  # type: ignore[method-assign]
    assert store.get("k") == [1]  # what the racing read saw
    store._get_bucket_for_key = read  # type: ignore[method-assign]
    assert store.get("k") == [2]  # not the stale [1] it read


def test_set_many_writes_like_setitem_and_reads_see_it(store: Any, tmp_path: Path) -> None:
    assert store.get("eng|a") is None  # the read cache now holds the key's absence
    store["eng|b"] = [0]
    store.set_many(1, [("eng|a", [1, 0, [1.0]]), ("eng|b", [1, 0, [2.0]]), ("é|c", [1, 0, [3.0]])])
    assert store.get_many(["eng|a", "eng|b", "é|c"]) == [[1, 0, [1.0]], [1, 0, [2.0]], [1, 0, [3.0]]]
    assert store["eng|a"] == [1, 0, [1.0]]
    store.set_many(1, [])
    if isinstance(store, table_store.RocksStore):  # on disk, in partition 1's database, found after a reopen
        assert store._key_index[store._encode_key("eng|a")] == 1  # noqa: SLF001
        for db in store._dbs.values():  # noqa: SLF001 - as a stopping worker closes them
            db.close()
        reopened = table_data("rocksdb://", tmp_path, app_id="t2")
        reopened._db_for_partition(1)  # noqa: SLF001 - Faust opens a partition's database when it is assigned
        assert reopened.get("é|c") == [1, 0, [3.0]]


def test_set_many_stores_the_bytes_faust_would(tmp_path: Path) -> None:
    """set_many calls Faust's JSON dumps itself, past the registry: the bytes match Faust's own encoding."""
    store = table_data("rocksdb://", tmp_path)
    in_partition(store, 1)
    value = {"n": 3, "f": [0.1, 1e-300, -0.0], 7: "int key", "s": "é\u2028"}
    store["one|x"] = value
    store.set_many(1, [("many|x", value)])
    stored = store._get  # noqa: SLF001 - the bytes in the database
    faust_bytes = store._encode_value(value)  # noqa: SLF001
    assert stored(store._encode_key("many|x")) == stored(store._encode_key("one|x")) == faust_bytes  # noqa: SLF001


def test_the_epoch_moves_when_partitions_change_not_on_standby_records(tmp_path: Path) -> None:
    store = table_data("rocksdb://", tmp_path)
    in_partition(store, 0)
    store["k"] = [1]  # opens partition 0's database
    epoch = store.epoch
    store.apply_changelog_batch([changelog_event(2, 1, "j", [2])], to_key=lambda k: k, to_value=lambda v: v)
    assert store.get("j") == [2]
    assert store.epoch == epoch + 1  # partition 2's database was opened, not just written
    assert store.get("k") == [1]  # both cached now
    store.apply_changelog_batch([changelog_event(2, 2, "j", [3])], to_key=lambda k: k, to_value=lambda v: v)
    assert store.epoch == epoch + 1
    assert store.get("j") == [3]  # the record applied left the read cache ...
    assert orjson.dumps("k") in store._cache  # noqa: SLF001 - ... and only it: standbys apply every 0.5 s
    store.revoke_partitions(store.table, {TP("x-changelog", 2)})
    assert store.epoch == epoch + 2


def test_keys_the_store_keeps_hold_no_more_memory_than_their_length(tmp_path: Path) -> None:
    """orjson returns a short key in a 4 KB buffer; a store keeps thousands of keys (its key cache, its
    read cache, Faust's key index), so each kept key must be a right-sized copy."""
    data = table_data("rocksdb://", tmp_path)
    in_partition(data, 1)
    data["warm"] = 0  # opens partition 1's database outside the measurement
    keys = [f"eng|query {i}|product {i}" for i in range(2000)]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        data.get_many(keys)  # each key encoded once, then kept (key cache, read cache of absences)
        for key in keys[:500]:
            data[key] = 1.0  # the write path keeps the key too (Faust's key index)
        kept = tracemalloc.take_snapshot().compare_to(before, "filename")
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in kept)
    assert data.get_many(keys[:2]) == [1.0, 1.0]
    # Right-sized: about 150 B kept per key. As orjson returned them: about 5 KB.
    assert grown < 2000 * 1024, f"{grown / 2000:.0f} B kept per key"


def _close_without_stopping(store: Any) -> None:
    """What a kill -9 leaves: the databases' files as they were, no ``stop``."""
    for db in store._dbs.values():  # noqa: SLF001 - RocksDB keeps the files locked while open
        db.close()
    store._dbs.clear()  # noqa: SLF001


def test_a_database_a_crashed_process_left_open_is_emptied_for_recovery_and_a_stopped_one_is_kept(
        tmp_path: Path) -> None:
    """Faust writes a record to RocksDB at once and to the changelog later: a process killed in between
    leaves the database ahead of its changelog, and recovery, reading the changelog after the database's
    persisted offset, would mix older and newer values (bench_faults, 2026-12-07: 233 interactions never
    counted). Such a database is emptied, to be read again from its changelog; one stopped cleanly is kept."""
    import asyncio

    first = table_data("rocksdb://", tmp_path, app_id="crash")
    in_partition(first, 1)
    first["a"] = [1]
    first["b"] = [2]
    first.set_persisted_offset(TP("x-changelog", 1), 7)
    assert first.unclean == set()
    _close_without_stopping(first)

    second = table_data("rocksdb://", tmp_path, app_id="crash")
    assert second.persisted_offset(TP("x-changelog", 1)) == 7  # opens partition 1's database ...
    assert second.unclean == {1}  # ... which the first left open
    assert second.get("a") == [1]
    removed = second.rebuild(1)
    assert removed == 3 and second.unclean == set()  # two records and the persisted offset
    assert second.get("a") is None and second.persisted_offset(TP("x-changelog", 1)) is None
    in_partition(second, 1)
    second["c"] = [3]
    asyncio.run(second.stop())  # a clean stop
    _close_without_stopping(second)

    third = table_data("rocksdb://", tmp_path, app_id="crash")
    assert third.persisted_offset(TP("x-changelog", 1)) is None  # opens it
    assert third.unclean == set() and third.get("c") == [3]


def test_recovery_reads_an_unclean_partition_from_its_changelog_start_unless_the_changelog_lost_it(
        tmp_path: Path) -> None:
    """streams.faust_compat at recovery: an unclean database is emptied and its changelog read from its
    earliest offset; one whose changelog ends before what it holds (the broker lost its log) is kept."""
    import asyncio

    from streams import faust_compat

    first = table_data("rocksdb://", tmp_path, app_id="rec")
    in_partition(first, 1)
    first["a"] = [1]
    in_partition(first, 2)
    first["b"] = [2]
    _close_without_stopping(first)
    store = table_data("rocksdb://", tmp_path, app_id="rec")
    intact, lost = TP("x-changelog", 1), TP("x-changelog", 2)
    store.persisted_offset(intact), store.persisted_offset(lost)  # recovery reads them first: opens both
    assert store.unclean == {1, 2}

    class _Consumer:
        async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
            return {tp: 3 for tp in tps}  # retention took the first three records

    destination = {intact: 9, lost: -1}  # the lost one: already set to read the new log from its start
    asyncio.run(faust_compat._rebuild_unclean(_Consumer(), {intact: store, lost: store}, destination, {lost}))
    assert destination == {intact: 2, lost: -1}  # Faust reads from the offset after the one given
    assert store.get("a") is None and store.get("b") == [2]
    assert store.unclean == set()
