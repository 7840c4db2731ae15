"""Many table records in one changelog record: packs for tables that write thousands of keys a batch.

Faust sends one changelog record per table write, and that producer path (a future, a buffer, a
send, an acknowledgement and a persisted-offset write, each) is what bounds the learning agent: an
impression updates two engagement records per product shown, so a batch of 500 interactions wrote
about 4,000 changelog records (bench_learning: 115,000 of them for 20,000 input messages).
:class:`PackedRecords` keeps each record under its own key in the table's store, where readers find
it as before, but sends the changes of a batch to the changelog as a few *packs* of up to
``chunk`` records each; the stores expand a pack back into its records when they recover
(:func:`expand_pack`, used by :mod:`streams.table_store`).

Compaction stays correct and bounded. A pack's changelog key names one of ``slots`` slots of its
partition, used in turn, so a compacted changelog keeps at most ``slots`` packs per partition. Each
record belongs to the slot that last wrote it (its store value says which: ``[partition, slot,
value]``); when a slot is written again, the records it still holds are carried forward into the
new pack. So the newest changelog record holding a key always holds its newest value, whatever
compaction has removed, and a replay from any point ends with the same records as the store.

Records written here are never deleted (engagement counters decay instead); a table whose records are
deleted needs Faust's own per-key tombstones.

Values are also kept decoded in memory (:class:`PackedRecords` ``_values``): every record the learning
agent updates is read first, and reading it back from the store cost a RocksDB lookup and a JSON decode
each time, a quarter of the agent's time (bench_learning profile). The search thread reads them too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from faust.streams import current_event

__all__ = ["DictRecords", "PACK_PREFIX", "PackedRecords", "Records", "expand_pack", "is_pack_key"]

#: Changelog keys of packs (``pk|<partition>|<slot>``); no table record may start with it.
PACK_PREFIX = "pk|"
_PACK_PREFIX_JSON = b'"' + PACK_PREFIX.encode()
#: Slots per partition: a compacted changelog keeps at most this many packs of a partition.
SLOTS = 1024
#: Records per pack, before the records carried forward (keeps a pack near 100-200 KB).
CHUNK = 1000
#: Decoded values kept in memory before the cache starts again empty: about 400 bytes each (key, list,
#: floats), so 20 MB at most. bench_learning's traffic touches 28,000 engagement records.
VALUE_CACHE = 50_000


class Records(Protocol):
    """Where records under a key prefix live: read one, write a batch of them."""

    def get(self, key: str) -> Any | None: ...

    def get_many(self, keys: Sequence[str]) -> list[Any | None]: ...

    def write(self, records: dict[str, Any]) -> None: ...

    def keys(self, prefix: str) -> Iterator[str]: ...


class DictRecords:
    """:class:`Records` over a plain mapping: no changelog (tests, notebooks)."""

    def __init__(self, mapping: Any) -> None:
        self.mapping = mapping

    def get(self, key: str) -> Any | None:
        return self.mapping.get(key)

    def get_many(self, keys: Sequence[str]) -> list[Any | None]:
        get = self.mapping.get
        return [get(key) for key in keys]

    def write(self, records: dict[str, Any]) -> None:
        for key, value in records.items():
            self.mapping[key] = value

    def keys(self, prefix: str) -> Iterator[str]:
        return (k for k in list(self.mapping.keys()) if k.startswith(prefix))


def is_pack_key(raw_key: bytes | None) -> bool:
    """Whether a changelog record's key (JSON-serialised, as Faust writes table keys) names a pack."""
    return raw_key is not None and raw_key.startswith(_PACK_PREFIX_JSON)


def expand_pack(pack: dict[str, Any]) -> Iterator[tuple[str, list[Any]]]:
    """The (key, store value) pairs a pack's changelog value holds, as :class:`PackedRecords` stores them."""
    partition, slot = pack["p"], pack["s"]
    for key, value in pack["r"].items():
        yield key, [partition, slot, value]


class PackedRecords:
    """Records of one Faust table (keys under ``prefix``), sent to its changelog in packs.

    :meth:`write` runs inside an agent, after the caller made the event whose partition the records
    belong to current (:func:`streams.batching.as_current`): the store writes and the packs go to
    that partition, in order with the table's other writes of the batch.
    """

    def __init__(self, table: Any, prefix: str, *, slots: int = SLOTS, chunk: int = CHUNK,
                 cache: int = VALUE_CACHE) -> None:
        if prefix.startswith(PACK_PREFIX) or PACK_PREFIX.startswith(prefix):
            raise ValueError(f"prefix {prefix!r} would clash with the pack keys ({PACK_PREFIX!r})")
        self.table = table
        self.prefix = prefix
        self.slots = slots
        self.chunk = chunk
        self._store = table.data
        #: Decoded values, exact for every key they hold: filled by writes and by reads of the writing
        #: thread (the event loop's, which builds this object). A read in another thread (search) could
        #: race a write and put back the value the write replaced, so other threads only look. Emptied
        #: when the store's partitions change (``epoch``) and after each recovery.
        self._values: dict[str, Any] = {}
        self._cache = cache
        self._epoch = self._store_epoch()
        self._writer = threading.get_ident()
        #: Which (partition, slot) holds each record's newest value, and the records each slot holds.
        self._owner: dict[str, tuple[int, int]] = {}
        self._held: dict[tuple[int, int], set[str]] = {}
        self._next_slot: dict[int, int] = {}
        table.on_recover(self._rebuild)

    def get(self, key: str) -> Any | None:
        values = self._current_values()
        value = values.get(key)
        if value is not None:
            return value
        writer = threading.get_ident() == self._writer
        if writer and key not in self._owner:
            # Absent: every record of the partitions this worker writes was written here or recovered
            # (``_rebuild``). The writer reads only those; a search may read a standby's records.
            return None
        stored = self._store.get(key)
        if stored is None:
            return None
        if writer:
            self._remember(key, stored[2])
        return stored[2]

    def get_many(self, keys: Sequence[str]) -> list[Any | None]:
        """:meth:`get` for many keys: a search reads two records per candidate, most of them absent."""
        values = self._current_values()
        out = [values.get(key) for key in keys]
        missing = [i for i, value in enumerate(out) if value is None]
        if not missing:
            return out
        wanted = [keys[i] for i in missing]
        get_many = getattr(self._store, "get_many", None)
        found = get_many(wanted) if get_many is not None else [self._store.get(key) for key in wanted]
        for i, stored in zip(missing, found, strict=True):
            if stored is not None:
                out[i] = stored[2]
        return out

    def _store_epoch(self) -> int:
        return int(getattr(self._store, "epoch", 0))

    def _current_values(self) -> dict[str, Any]:
        """The decoded values, emptied first if the store's partitions changed since they were kept."""
        epoch = self._store_epoch()
        if epoch != self._epoch:
            # Rebound, not cleared: another thread may be reading the old dict right now.
            self._values, self._epoch = {}, epoch
        return self._values

    def _remember(self, key: str, value: Any) -> None:
        values = self._values
        if len(values) >= self._cache:
            values = self._values = {}
        values[key] = value

    def keys(self, prefix: str) -> Iterator[str]:
        return (k for k in list(self._store.keys()) if k.startswith(prefix))

    def write(self, records: dict[str, Any]) -> None:
        """Store ``records`` (key → value) and send them to the changelog in packs."""
        if not records:
            return
        event = current_event()
        if event is None:
            raise RuntimeError("PackedRecords.write runs inside an agent: make an event current first")
        outside = [key for key in records if not key.startswith(self.prefix)]
        if outside:  # refused before anything is written: a half-written batch would never reach the changelog
            raise ValueError(f"keys {outside[:3]!r} are outside this pack writer's prefix {self.prefix!r}")
        partition = event.message.partition
        items = list(records.items())
        for start in range(0, len(items), self.chunk):
            self._write_pack(partition, dict(items[start:start + self.chunk]))

    def _write_pack(self, partition: int, records: dict[str, Any]) -> None:
        slot = self._next_slot.get(partition, 0)
        self._next_slot[partition] = (slot + 1) % self.slots
        here = (partition, slot)
        pack: dict[str, Any] = {}
        # What this slot still holds, and nothing wrote since, goes into the pack again: once the new
        # pack replaces the old one in a compacted changelog, it is the only record of those values.
        for key in self._held.get(here, ()):
            if key not in records and (value := self.get(key)) is not None:
                pack[key] = value
        held = set(pack)
        self._current_values()  # a moved epoch empties the cache now, not after this pack's values are in it
        stored: list[tuple[str, list[Any]]] = []
        for key, value in records.items():
            before = self._owner.get(key)
            if before is not None and before != here:
                self._held.get(before, set()).discard(key)
            self._owner[key] = here
            stored.append((key, [partition, slot, value]))
            self._remember(key, value)
            pack[key] = value
            held.add(key)
        set_many = getattr(self._store, "set_many", None)
        if set_many is not None:  # one store write for the pack (streams.table_store)
            set_many(partition, stored)
        else:
            for key, value in stored:
                self._store[key] = value
        self._held[here] = held
        self.table.send_changelog(partition, f"{PACK_PREFIX}{partition}|{slot}", {"p": partition, "s": slot, "r": pack})

    async def _rebuild(self) -> None:
        """After a recovery, learn again which slot holds each record (their store values say)."""
        owner: dict[str, tuple[int, int]] = {}
        held: dict[tuple[int, int], set[str]] = {}
        for key, stored in self._store.items():
            if isinstance(key, str) and key.startswith(self.prefix) and stored:
                where = (stored[0], stored[1])
                owner[key] = where
                held.setdefault(where, set()).add(key)
        self._owner, self._held = owner, held
        self._values = {}  # the store may now hold other values than those kept
