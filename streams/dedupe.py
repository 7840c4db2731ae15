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
            self.table[f"{self.PREFIX}{partition}|{entries[0][1]}"] = {"p": partition, "t": now_ms, "ids": entries}
        self._pending = {}

    def purge(self, now_ms: int, partitions: set[int], anchors: dict[int, Any]) -> int:
        """Forget ids older than the window on ``partitions`` (held here, with an anchor event)."""
        horizon = now_ms - self.window_ms
        stale = [(k, v) for k, v in self.table.items()
                 if k.startswith(self.PREFIX) and v["p"] in partitions and v["p"] in anchors and v["t"] < horizon]
        for key, record in stale:
            for entry in record["ids"]:
                self.index.pop(entry[0], None)
            as_current(anchors[record["p"]])
            del self.table[key]
        return len(stale)

    async def _rebuild(self) -> None:
        index: dict[str, tuple[int, int]] = {}
        for key, record in self.table.items():
            if key.startswith(self.PREFIX) and record:
                for entry in record["ids"]:
                    index.setdefault(entry[0], (record["p"], entry[1]))
        self.index = index
