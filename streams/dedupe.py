"""Ids already seen, kept in a Faust table as one record per batch rather than one per id.

A changelog write per id would cost as much as the rest of an agent's work (Faust's producer path is
what bounds these agents); one record per partition per batch costs almost nothing. An in-memory
index answers lookups and is rebuilt from the table after every recovery.

Each entry names the message that first carried the id (partition, offset): the same message
replayed after a crash is recognised as itself, not taken for a duplicate. Records live in the same
table as the state they guard and are written before it, so on one changelog partition, in order.
"""

from __future__ import annotations

from typing import Any

from streams.batching import as_current

__all__ = ["BatchedDedupe"]


class BatchedDedupe:
    PREFIX = "dedupe|"

    def __init__(self, table: Any, window_ms: int) -> None:
        self.table = table
        self.window_ms = window_ms
        self.index: dict[str, tuple[int, int]] = {}
        self._pending: dict[int, list[list[Any]]] = {}
        #: The partition and write time (ms) of each record in the table: a purge finds the stale ones
        #: here. Walking the table instead decoded every record of it, sessions and counters included
        #: (2.5% of a worker's time on bench_learning's traffic).
        self._records: dict[str, tuple[int, int]] = {}
        table.on_recover(self._rebuild)

    def seen_elsewhere(self, key: str, partition: int, offset: int) -> bool:
        """True when another message already carried ``key``; otherwise remember this one."""
        first = self.index.get(key)
        if first is not None:
            return first != (partition, offset)
        self.index[key] = (partition, offset)
        self._pending.setdefault(partition, []).append([key, offset])
        return False

    def flush(self, anchors: dict[int, Any], now_ms: int) -> None:
        """Write this batch's new ids: one record per partition, to that partition's changelog."""
        for partition, entries in self._pending.items():
            as_current(anchors[partition])
            key = f"{self.PREFIX}{partition}|{entries[0][1]}"
            self.table[key] = {"p": partition, "t": now_ms, "ids": entries}
            self._records[key] = (partition, now_ms)
        self._pending = {}

    def purge(self, now_ms: int, partitions: set[int], anchors: dict[int, Any]) -> int:
        """Forget ids older than the window on ``partitions`` (held here, with an anchor event)."""
        horizon = now_ms - self.window_ms
        stale = [(key, p) for key, (p, t) in self._records.items() if t < horizon and p in partitions and p in anchors]
        for key, partition in stale:
            del self._records[key]
            record = self.table.get(key)
            if record is None:
                continue
            for entry in record["ids"]:
                self.index.pop(entry[0], None)
            as_current(anchors[partition])
            del self.table[key]
        return len(stale)

    async def _rebuild(self) -> None:
        index: dict[str, tuple[int, int]] = {}
        records: dict[str, tuple[int, int]] = {}
        for key, record in self.table.items():
            if key.startswith(self.PREFIX) and record:
                records[key] = (record["p"], record["t"])
                for entry in record["ids"]:
                    index.setdefault(entry[0], (record["p"], entry[1]))
        self.index, self._records = index, records
