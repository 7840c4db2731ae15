"""Table changelog records decoded only when something reads them.

Faust decodes the key and value of every changelog record it reads (recovery at start-up, standby
copies all the time) as the record leaves the fetcher. The RocksDB store then writes the record's raw
bytes and never looks at the decoded ones; only the memory store and the packs of engagement records
(streams.packed, expanded on recovery) read them. With two workers on bench_learning's traffic that
decoding, mostly of session states a standby copy only stores, was 5.5% of a worker's event loop.

The tables pass :func:`changelog_schema` as their schema: the events it makes decode their key and
value on first read, with the same serializers as before, and remember them.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.types import AppT

__all__ = ["LazyChangelogEvent", "changelog_schema"]

_UNREAD: Any = object()


class LazyChangelogEvent(faust.Event):
    """A changelog event whose key and value are decoded when first read."""

    def __init__(self, app: AppT, schema: faust.Schema, message: Any) -> None:
        self._schema = schema
        super().__init__(app, _UNREAD, _UNREAD, message.headers, message)  # key and value through the setters

    @property  # type: ignore[override]
    def key(self) -> Any:
        if self._key is _UNREAD:
            self._key = self._schema.loads_key(self.app, self.message, loads=self.app.serializers.loads_key)
        return self._key

    @key.setter
    def key(self, key: Any) -> None:
        self._key = key

    @property  # type: ignore[override]
    def value(self) -> Any:
        if self._value is _UNREAD:
            message = self.message
            if message.value is None:  # a tombstone (the changelog topic allows empty values)
                self._value = None
            else:
                self._value = self._schema.loads_value(self.app, message, loads=self.app.serializers.loads_value)
        return self._value

    @value.setter
    def value(self, value: Any) -> None:
        self._value = value

    def __repr__(self) -> str:  # Faust's shows the key and value: a repr (asyncio's of a task, a log) would decode them
        m = self.message
        return f"<{type(self).__name__}: {m.topic}[{m.partition}]@{m.offset} raw key={m.key!r}>"


class _LazySchema(faust.Schema):
    def compile(self, app: AppT, **_: Any) -> Any:
        # Decode errors surface where the key or value is read (a store applying the batch), not here:
        # the changelog holds only what this worker's tables wrote.
        async def decode(message: Any, *, propagate: bool = False) -> LazyChangelogEvent:
            return LazyChangelogEvent(app, self, message)

        return decode


def changelog_schema() -> faust.Schema:
    """A schema for ``app.Table(schema=...)``: Faust's defaults (JSON keys and values), decoded lazily."""
    return _LazySchema()
