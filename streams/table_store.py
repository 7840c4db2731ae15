"""Faust tables on local disk (RocksDB through rocksdict): the aggregates survive any restart.

``SHOPRANK_WORKER_STORE=rocksdb://`` (the default) keeps every table partition in a RocksDB database
under the worker's data directory. A restarted worker then reads only the changelog records written
after the last one it had persisted (Faust keeps that offset in each database), so start-up no longer
grows with the changelogs; and a broker that lost its log (the embedded one keeps it in memory only)
no longer takes the aggregates with it.

What differs from Faust's own RocksDB store:

* **Reads by key, not by the current event's partition.** Faust reads a key from the database of the
  partition of the event being processed. shoprank writes each record in the context of the event
  that caused it (``streams.batching.as_current``), but reads across partitions: a batch mixes them,
  and the search agent reads the learning agent's engagement counters while handling a search
  request. Keys are unique across partitions here (as in the memory store, a single dict), so a read
  goes to the partition that holds the key (Faust's key index, then each database's bloom filter).
* **Small memory budget.** Faust's defaults allow 3 × 64 MB of write buffers and a 2 GB block cache per
  partition database; a worker holds a few dozen of those. These tables are small and hot, and
  their working set lives in the OS page cache anyway.
* **A read cache** of raw values and absences, exact across threads (see :class:`RocksStore`).
* **Packs expanded on recovery** (here and in :class:`MemoryStore`, for ``memory://``): a changelog
  record carrying many table records (streams.packed) becomes those records in the store.

* **A database a crashed process left open is read again from its changelog.** Faust writes a record to
  the database at once and to the changelog later, so a ``kill -9`` can leave the database ahead of
  its changelog, and recovery would then mix older and newer values (:meth:`RocksStore.rebuild`). A
  file beside each database marks it open; recovery empties a database found so marked and reads its
  changelog from the start (streams.faust_compat). Kafka Streams does the same under exactly-once, for
  the same reason: it writes to a store before the changelog has the write, so a crash wipes the
  store (KIP-844). Only crashes pay for it: a stopped worker's databases are kept.

A database whose persisted changelog offset is past the changelog's end (the broker lost its log) is
handled in :mod:`streams.faust_compat`: Faust would refuse to start. A database left open by a crash
is then kept as it is: it is the newest state there is.

Exact under repeated kill -9 (bench/bench_faults.py). The first runs lost 2-14% of a tenant's
attributed clicks: tables recovered in seconds, so a worker's consumer could be fetching past its
committed offset when Faust's post-assignment seek began, and the seek fence then resumed after the
skipped records (fixed in streams.faust_compat; memory:// recovery was too slow to hit it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from faust import stores
from faust.stores import memory as faust_memory
from faust.stores import rocksdb as faust_rocksdb
from faust.types import EventT
from faust.utils import json as faust_json
from rocksdict import WriteBatch

from streams.packed import expand_pack, is_pack_key

__all__ = ["MemoryStore", "RocksStore", "install", "right_sized", "table_options"]

#: Per partition database: write buffers (bytes, count) and block cache (bytes).
_WRITE_BUFFER_BYTES = 4 * 1024 * 1024
_WRITE_BUFFERS = 2
_BLOCK_CACHE_BYTES = 8 * 1024 * 1024


def table_options(store_url: str) -> dict[str, Any] | None:
    """Options for ``app.Table(options=...)`` with this store (None: the store takes none)."""
    if not store_url.startswith("rocksdb:"):
        return None
    return {
        "driver": "rocksdict",
        "write_buffer_size": _WRITE_BUFFER_BYTES,
        "max_write_buffer_number": _WRITE_BUFFERS,
        "block_cache_size": _BLOCK_CACHE_BYTES,
        "block_cache_compressed_size": 0,
    }


#: Raw values (or their absence) the read cache of a store keeps before it starts again empty.
_CACHE_ENTRIES = 50_000


def right_sized(raw: bytes) -> bytes:
    """A copy of ``raw`` that holds no more memory than its length: for bytes kept long (orjson's output
    keeps a 4 KB buffer however short it is)."""
    return bytes(memoryview(raw))


class RocksStore(faust_rocksdb.Store):
    """Faust's RocksDB store, read by key across its partitions, through a read cache.

    The cache holds raw values and absences: a search reads two engagement records for each of a
    hundred candidates, most of them absent, and an absent key costs a lookup in every partition's
    database. It stays exact because every write passes through this store: a write updates the
    database, then counts itself and drops the key; a read that raced a write (the search thread reads
    while the event loop writes) sees the count move and does not keep what it read.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._cache: dict[bytes, bytes | None] = {}
        self._keys: dict[Any, bytes] = {}
        self._writes = 0
        #: Moves whenever the partitions this store holds change: caches of decoded values kept above
        #: the store (streams.packed) start again then. Changelog records applied to standby
        #: partitions do not move it: they never touch the keys of partitions this worker writes.
        self.epoch = 0
        #: Partitions whose database a crashed process left open (see :meth:`rebuild`).
        self.unclean: set[int] = set()
        super().__init__(*args, **kwargs)
        #: Faust encodes a value through its serializer registry and codec layers; for the JSON tables
        #: here that ends in ``faust.utils.json.dumps`` (orjson), called directly by :meth:`set_many` (the
        #: learning agent writes thousands of engagement records a second: the layers were a third of its
        #: store writes).
        json_values = self.value_type is None and self.value_serializer == "json"
        self._dump_value: Callable[[Any], bytes | None] = faust_json.dumps if json_values else self._encode_value

    def _get(self, key: bytes) -> bytes | None:
        cache = self._cache
        try:
            return cache[key]
        except KeyError:
            pass
        seen = self._writes
        found = self._get_bucket_for_key(key)
        value = None if found is None else found.value
        if len(cache) >= _CACHE_ENTRIES:
            cache.clear()
        cache[key] = value
        if self._writes != seen:  # a write landed meanwhile: what was read may be older than it
            cache.pop(key, None)
        return value

    def _contains(self, key: bytes) -> bool:
        return self._get(key) is not None

    def get_many(self, keys: Sequence[Any]) -> list[Any]:
        """The value of each key, None where absent: ``get`` without a KeyError raised per absent key."""
        get, decode, encode = self._get, self._decode_value, self._encode_key
        return [None if (raw := get(encode(key))) is None else decode(raw) for key in keys]

    def _encode_key(self, key: Any) -> bytes:
        """The stored form of ``key``, right-sized and (for str keys) cached.

        Faust encodes a key through its serializer registry (a JSON dump for str keys): a third of a
        search's engagement reads went there, for the same product keys search after search. Every key
        this store keeps (here, in the read cache, in Faust's key index) is copied out of orjson's
        buffer: orjson 3.12+ returns a bytes object that holds a 4 KB allocation whatever its length,
        so 50,000 cached keys held 200 MB (tracemalloc in the worker under search load; the same was
        reported to Home Assistant).
        """
        if type(key) is not str:  # noqa: E721 - only str keys are kept (hashable, immutable)
            return right_sized(super()._encode_key(key))
        keys = self._keys
        try:
            return keys[key]
        except KeyError:
            pass
        if len(keys) >= _CACHE_ENTRIES:
            keys.clear()
        raw = keys[key] = right_sized(super()._encode_key(key))
        return raw

    def _set(self, key: bytes, value: bytes | None) -> None:
        super()._set(key, value)
        self._wrote(key)

    def set_many(self, partition: int, items: Iterable[tuple[Any, Any]]) -> None:
        """Store many (key, value) pairs in ``partition``'s database in one write.

        One RocksDB write per batch instead of one per key: each write appends to the database's
        write-ahead log with a system call of its own, which made the learning agent's engagement
        writes a tenth of its time (bench_learning profile). Durable as ``__setitem__`` is.
        """
        batch = WriteBatch(raw_mode=True)
        keys = []
        encode_key, dump_value = self._encode_key, self._dump_value
        for key, value in items:
            raw = encode_key(key)
            batch.put(raw, dump_value(value))
            keys.append(raw)
        if not keys:
            return
        self._db_for_partition(partition).write(batch)
        index = self._key_index
        for raw in keys:
            index[raw] = partition
            self._wrote(raw)

    def _del(self, key: bytes) -> None:
        super()._del(key)
        self._wrote(key)

    def _moved(self) -> None:
        """The partitions (or the whole content) of this store changed."""
        self.epoch += 1
        self._wrote(None)

    def _wrote(self, key: bytes | None) -> None:
        """After a write to the databases (``None``: to any key)."""
        self._writes += 1
        if key is None:
            self._cache.clear()
        else:
            self._cache.pop(key, None)

    def apply_changelog_batch(self, batch: Iterable[EventT], to_key: Callable[[Any], Any],
                              to_value: Callable[[Any], Any]) -> None:
        """Faust's recovery, with packs (streams.packed) expanded into the records they carry."""
        keys: list[bytes] = []

        def noted(events: Iterable[Any]) -> Iterator[Any]:
            for event in events:
                keys.append(event.message.key)
                yield event

        super().apply_changelog_batch(noted(_expanded(batch, self._encode_key, self._encode_value)), to_key,
                                      to_value)
        # Only the keys written leave the read cache: standby partitions take their records as often as
        # every 0.5 s (streams.app), and clearing it all each time would send searches back to RocksDB.
        if len(keys) > _CACHE_ENTRIES // 10:
            self._wrote(None)
        else:
            for key in keys:
                self._wrote(key)

    def _open_for_partition(self, partition: int) -> Any:
        mark = self._open_mark(partition)
        if mark.exists():
            self.unclean.add(partition)
        db = super()._open_for_partition(partition)
        mark.touch()
        self._moved()  # keys read as absent may be in the database opened now
        return db

    def _open_mark(self, partition: int) -> Path:
        """A file beside the partition's database while a process has it open: left behind by a crash."""
        path = self.partition_path(partition)
        return path.with_name(f"{path.name}.open")

    def _closed(self, partition: int) -> None:
        """The process is done with the partition's database: a later open finds it clean (unless it still
        awaits the rebuild :meth:`rebuild` does)."""
        if partition not in self.unclean:
            self._open_mark(partition).unlink(missing_ok=True)

    def rebuild(self, partition: int) -> int:
        """Empty the partition's database, which a crashed process left holding writes its changelog may lack,
        for recovery to read it again from the changelog's start. Returns the keys removed.

        Faust writes a table record to the database at once and to the changelog later; a process killed
        in between leaves the database ahead of the changelog. Recovery then reads the changelog after the
        offset the database persisted: its records put back older values of some keys and leave the
        newer local values of others, a state no sequence of writes produced. bench_faults, 2026-12-07: a
        tenant's totals back at offset 8560 of ``interactions[0]`` while the learning agent's next offset
        (streams.gapfill), never rewritten by the changelog, stayed at 8794: 233 interactions never counted.
        """
        db = self._db_for_partition(partition)
        batch = WriteBatch(raw_mode=True)
        removed = 0
        for key in db.keys():  # noqa: SIM118 - a RocksDB database, not a dict
            batch.delete(key)
            removed += 1
        db.write(batch)
        index = self._key_index
        for key in [k for k, p in index.items() if p == partition]:
            del index[key]
        self.unclean.discard(partition)
        self._moved()
        return removed

    def keep(self, partition: int) -> None:
        """Keep the partition's database as a crashed process left it: its changelog lost what it holds (the
        broker lost its log), so it is the newest state there is."""
        self.unclean.discard(partition)

    def revoke_partitions(self, table: Any, tps: Any) -> None:
        for tp in tps:
            if tp.topic in table.changelog_topic.topics and tp.partition in self._dbs:
                self._closed(tp.partition)
        super().revoke_partitions(table, tps)
        self._moved()  # the partitions' databases are closed: their keys read as absent now

    async def stop(self) -> None:
        for partition in list(self._dbs):
            self._closed(partition)
        await super().stop()

    async def assign_partitions(self, table: Any, tps: Any, generation_id: int = 0) -> None:
        await super().assign_partitions(table, tps, generation_id)
        self._moved()

    def _clear(self) -> None:
        super()._clear()
        self._moved()

    def reset_state(self) -> None:
        super().reset_state()
        self._moved()

    def restore_backup(self, tp: Any, latest: bool = True, backup_id: int = 0) -> None:
        super().restore_backup(tp, latest, backup_id)
        self._moved()


class MemoryStore(faust_memory.Store):
    """Faust's in-memory store, with packs (streams.packed) expanded into their records on recovery."""

    #: As RocksStore.epoch. Faust's memory store keeps every key across rebalances: only a reset moves it.
    epoch = 0

    def _clear(self) -> None:
        super()._clear()
        self.epoch += 1

    def reset_state(self) -> None:
        super().reset_state()
        self.epoch += 1

    def get_many(self, keys: Sequence[Any]) -> list[Any]:
        """The value of each key, None where absent."""
        get = self.data.get
        return [get(key) for key in keys]

    def set_many(self, partition: int, items: Iterable[tuple[Any, Any]]) -> None:
        """As RocksStore.set_many (one dict holds every partition here)."""
        self.data.update(items)

    def apply_changelog_batch(self, batch: Iterable[EventT], to_key: Callable[[Any], Any],
                              to_value: Callable[[Any], Any]) -> None:
        super().apply_changelog_batch(_expanded(batch, self._encode_key, self._encode_value), to_key, to_value)


class _Record:
    """A changelog event as far as Faust's stores read one: the decoded key and value, the raw message."""

    __slots__ = ("key", "message", "value")

    def __init__(self, key: str, value: Any, message: Any) -> None:
        self.key, self.value, self.message = key, value, message


class _Message:
    __slots__ = ("key", "offset", "partition", "tp", "value")

    def __init__(self, like: Any, key: bytes, value: bytes | None) -> None:
        self.tp, self.partition, self.offset = like.tp, like.partition, like.offset
        self.key, self.value = key, value


def _expanded(batch: Iterable[EventT], encode_key: Callable[[Any], bytes],
              encode_value: Callable[[Any], bytes | None]) -> Iterator[Any]:
    """The changelog events of ``batch``, each pack replaced by one event per record it carries.

    A pack's records take its offset, so the store's persisted offset still ends at the last record
    read. The pack key itself is never stored.
    """
    for event in batch:
        message = event.message
        if not is_pack_key(message.key) or message.value is None:
            yield event
            continue
        for key, stored in expand_pack(event.value):
            yield _Record(key, stored, _Message(message, encode_key(key), encode_value(stored)))


def install() -> None:
    """Store URLs build the stores above (Faust's registry maps a URL scheme to a class)."""
    stores.STORES.aliases["rocksdb"] = f"{__name__}:RocksStore"
    stores.STORES.aliases["memory"] = f"{__name__}:MemoryStore"
