"""Packed table records (streams.packed): replaying the changelog, compacted or not, gives back the store."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import faust.streams as faust_streams
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.packed import PACK_PREFIX, PackedRecords, expand_pack, is_pack_key


class _Message:
    def __init__(self, partition: int) -> None:
        self.partition = partition


class _Event:
    def __init__(self, partition: int) -> None:
        self.message = _Message(partition)


class FakeTable:
    """What PackedRecords uses of a Faust table: its store (``data``), its changelog, recovery hooks."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.changelog: list[tuple[int, str, Any]] = []  # (partition, key, value) in send order
        self.recover_hooks: list[Any] = []

    def send_changelog(self, partition: int, key: str, value: Any) -> None:
        self.changelog.append((partition, key, value))

    def on_recover(self, hook: Any) -> None:
        self.recover_hooks.append(hook)


def _in_partition(partition: int) -> _Event:
    event = _Event(partition)
    faust_streams._current_event.set(weakref.ref(event))  # noqa: SLF001 - what streams.batching.as_current does
    return event  # the caller keeps it alive while writing


def replay(changelog: list[tuple[int, str, Any]], into: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a store holds after recovering from ``changelog`` (streams.table_store expands packs so)."""
    store = dict(into or {})
    for _, key, value in changelog:
        assert is_pack_key(f'"{key}"'.encode()), key
        store.update(expand_pack(value))
    return store


def compacted(changelog: list[tuple[int, str, Any]]) -> list[tuple[int, str, Any]]:
    """Kafka log compaction: the newest record of each key, in log order."""
    last = {key: i for i, (_, key, _) in enumerate(changelog)}
    return [record for i, record in enumerate(changelog) if last[record[1]] == i]


batches = st.lists(
    st.tuples(st.integers(0, 1), st.dictionaries(st.sampled_from([f"eng|k{i}" for i in range(40)]),
                                                  st.integers(0, 1000), min_size=1, max_size=12)),
    min_size=1, max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(batches=batches, cut=st.integers(0, 10_000))
def test_any_replay_of_the_packs_gives_back_the_store(batches: list[tuple[int, dict[str, int]]], cut: int) -> None:
    table = FakeTable()
    packed = PackedRecords(table, "eng|", slots=3, chunk=4)
    snapshots: list[dict[str, Any]] = []  # the store after each changelog record (a restart's disk state)
    for partition, records in batches:
        _event = _in_partition(partition)
        before = len(table.changelog)
        packed.write(records)
        snapshots.extend([dict(table.data)] * (len(table.changelog) - before))
    live = table.data
    assert {k: v[2] for k, v in live.items()} == {k: v for _, r in batches for k, v in r.items()}  # last write wins

    log = table.changelog
    assert replay(log) == live  # a new worker reading the whole log
    assert replay(compacted(log)) == live  # ... or the log after compaction
    assert len(compacted(log)) <= 2 * 3  # at most `slots` packs per partition survive compaction
    # A worker whose store on disk reached some record reads only what follows it.
    at = cut % len(log)
    assert replay(log[at + 1:], into=snapshots[at]) == live
    # Compaction may have run over that tail too.
    assert replay(compacted(log[at + 1:]), into=snapshots[at]) == live


def test_after_a_recovery_the_slots_are_learnt_again_from_the_store() -> None:
    table = FakeTable()
    first = PackedRecords(table, "eng|", slots=2, chunk=2)
    _event = _in_partition(0)
    first.write({"eng|a": 1, "eng|b": 2})  # slot 0
    first.write({"eng|c": 3})  # slot 1
    # A restarted worker: same store, fresh writer, which must carry a and b when it writes slot 0 again.
    second = PackedRecords(table, "eng|", slots=2, chunk=2)
    asyncio.run(table.recover_hooks[-1]())
    second.write({"eng|c": 4})  # slot 0 again: its pack must still hold a and b
    assert replay(compacted(table.changelog)) == table.data
    assert table.changelog[-1][2]["r"] == {"eng|a": 1, "eng|b": 2, "eng|c": 4}


def test_a_batch_is_a_few_packs_not_a_record_per_key() -> None:
    table = FakeTable()
    packed = PackedRecords(table, "eng|", chunk=1000)
    _event = _in_partition(3)
    packed.write({f"eng|k{i}": [float(i)] for i in range(2500)})
    assert [(p, k) for p, k, _ in table.changelog] == [(3, f"{PACK_PREFIX}3|0"), (3, f"{PACK_PREFIX}3|1"),
                                                      (3, f"{PACK_PREFIX}3|2")]
    assert packed.get("eng|k2499") == [2499.0]
    assert sorted(packed.keys("eng|k249")) == sorted(f"eng|k249{s}" for s in ["", *"0123456789"])


def test_misuse_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="clash"):
        PackedRecords(FakeTable(), "pk|x")
    packed = PackedRecords(FakeTable(), "eng|")
    faust_streams._current_event.set(None)  # noqa: SLF001
    with pytest.raises(RuntimeError, match="inside an agent"):
        packed.write({"eng|a": 1})
    _event = _in_partition(0)
    with pytest.raises(ValueError, match="outside"):
        packed.write({"totals|a": 1})


ENGAGEMENT = ("p_impressions", "p_ctr", "p_cvr", "qp_impressions", "qp_ctr", "qp_cvr")


@pytest.mark.integration
@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_engagement_comes_back_from_the_packed_changelog_alone(broker, prefix, make_worker, tmp_path,  # type: ignore[no-untyped-def]
                                                                store: str) -> None:
    """A restarted worker with nothing on disk rebuilds the engagement records from the packs in the changelog.

    memory:// tables always start empty; for rocksdb:// the worker restarts on an empty data directory.
    """
    import time

    from schemas import SearchLog, decode
    from streams.kafka import read_topic
    from tests.test_learning import Loop, ev
    from tests.test_search import PRODUCTS, product, send_updates, wait_stats

    env = {"SHOPRANK_WORKER_STORE": store, "SHOPRANK_RANKER_EXPLORE_SLOTS": "",
           "SHOPRANK_RANKER_CONTROL_SHARE": "0", "SHOPRANK_ATTRIBUTION_SWEEP_INTERVAL_S": "0.5"}
    worker = make_worker(prefix, app_id="packed", tenants="demo", extra_env=env)
    send_updates(broker, prefix, [product(*p) for p in PRODUCTS])
    wait_stats(worker, embedded=len(PRODUCTS))
    loop = Loop(broker, prefix, worker)
    for k in range(5):
        session = f"s{k}"
        result = loop.search("shoes", session)
        shown = [i.product_id for i in result.items]
        loop.events(ev("impression", session, search_id=result.search_id, items=shown),
                    ev("click", session, search_id=result.search_id, product_id=shown[1], position=1))
    deadline = time.monotonic() + 60
    while worker.get("/v1/analytics/demo")["buckets"].get("learning", {}).get("clicks", 0) < 5:
        assert time.monotonic() < deadline, "the clicks were not learnt"
        time.sleep(0.3)

    def engagement_seen_by(session: str) -> dict[str, list[float]]:
        search_id = loop.search("shoes", session).search_id

        async def logs() -> list[SearchLog]:
            return [decode(SearchLog, v) async for _, _, _, v, _ in
                    read_topic(broker.bootstrap, f"{prefix}shoprank.searches", idle_timeout_s=0.5) if v]

        for _ in range(50):
            found = [log for log in asyncio.run(logs()) if log.search_id == search_id]
            if found:
                return {it.product_id: [it.features[f] for f in ENGAGEMENT] for it in found[0].items}
            time.sleep(0.2)
        raise AssertionError(f"no search log for {search_id}")

    before = engagement_seen_by("probe-1")
    assert any(row[0] > 0 for row in before.values()), before  # impressions were counted
    assert worker.stop() == 0
    worker.env["SHOPRANK_WORKER_DATA_DIR"] = str(tmp_path / "empty-data-dir")
    worker.start()
    after = engagement_seen_by("probe-2")
    assert after.keys() == before.keys()
    for pid, row in before.items():  # decay over a few seconds (half-life of days) is far below the tolerance
        assert after[pid] == pytest.approx(row, rel=1e-4), pid


class _MovingStore(dict):  # type: ignore[type-arg]
    """A store whose partitions can move (``epoch``, as streams.table_store's stores) and whose reads can be
    interleaved with a write (``during_get``), as a search thread's read can be with the event loop's."""

    epoch = 0
    during_get: Any = None

    def get(self, key: Any, default: Any = None) -> Any:
        found = super().get(key, default)
        hook, self.during_get = self.during_get, None
        if hook is not None:
            hook()
        return found


def test_values_kept_in_memory_give_way_to_the_store_after_a_move_or_a_recovery() -> None:
    table = FakeTable()
    table.data = _MovingStore()
    packed = PackedRecords(table, "eng|")
    _event = _in_partition(0)
    packed.write({"eng|a": [1.0]})
    assert packed.get("eng|a") == [1.0]
    table.data["eng|a"] = [0, 0, [5.0]]  # a recovery wrote the store
    asyncio.run(table.recover_hooks[-1]())
    assert packed.get("eng|a") == [5.0] == packed.get_many(["eng|a"])[0]
    packed.write({"eng|a": [6.0]})
    table.data["eng|a"] = [1, 0, [7.0]]  # the partitions moved: another worker's value came back
    table.data.epoch += 1
    assert packed.get_many(["eng|a", "eng|b"]) == [[7.0], None]
    assert packed.get("eng|a") == [7.0]


def test_a_read_in_another_thread_never_puts_back_an_older_value() -> None:
    import threading

    table = FakeTable()
    table.data = _MovingStore({"eng|b": [0, 0, [1.0]]})
    packed = PackedRecords(table, "eng|")
    asyncio.run(table.recover_hooks[-1]())  # the store's records were recovered: eng|b is known

    def search_thread() -> None:
        _event = _in_partition(0)
        # The event loop writes while this read is under way: the read saw the value before the write.
        table.data.during_get = lambda: packed.write({"eng|b": [2.0]})
        seen.append(packed.get("eng|b"))

    seen: list[Any] = []
    reader = threading.Thread(target=search_thread)
    reader.start()
    reader.join()
    assert seen == [[1.0]]
    _event = _in_partition(0)
    assert packed.get("eng|b") == [2.0]  # the write's value, not the one the other thread read before it
