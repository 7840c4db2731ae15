"""The baselines of bench_learning: bare Faust agents that do no work on the messages they read.

Same broker, same Faust version and settings as a shoprank worker, no tables, no decoding. Prints
``{"n": N, "seconds": S}`` on stdout and exits.

- ``count`` (the goal's baseline): one agent counts the messages of the given topics, first message to
  the Nth.
- ``relay``: the shape of shoprank's learning loop without its work. One agent reads the topics in
  batches and publishes each message of the first topic again, to a relay topic, awaiting the
  broker's acknowledgement per batch (as the attribution stage publishes its interactions); a second
  agent in the same app reads the relay topic. N is the number of messages relayed; the time runs from
  the first message read to the Nth relayed message read back. What no pipeline with that second hop
  can beat on this broker and machine.

The event loop is asyncio's unless the fifth argument says ``uvloop`` (as the worker's setting
``SHOPRANK_WORKER_EVENT_LOOP``): compared with a worker, the baseline runs on the worker's loop.

Usage: python bench/bare_faust.py BOOTSTRAP TOPIC[,TOPIC...] N [count|relay] [asyncio|uvloop]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from typing import Any, cast, get_args

import faust
import orjson

from streams.settings import EventLoop
from streams.worker import new_event_loop

#: As the shoprank worker's agents and producer (streams.pixel, streams.learning, streams.app).
_BATCH_MAX = 500
_BATCH_WITHIN_S = 0.05
_LINGER_S = 0.005
_BATCH_BYTES = 256 * 1024


def _done(n: int, start: float) -> None:
    print(orjson.dumps({"n": n, "seconds": time.perf_counter() - start}).decode(), flush=True)
    os._exit(0)  # noqa: SLF001 - the figure is out; skip Faust's slow shutdown


def main() -> None:
    bootstrap, topic_name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    mode = sys.argv[4] if len(sys.argv) > 4 else "count"
    loop_kind = sys.argv[5] if len(sys.argv) > 5 else "asyncio"
    if loop_kind not in get_args(EventLoop):
        raise SystemExit(f"unknown event loop {loop_kind!r}: {' or '.join(get_args(EventLoop))}")
    app = faust.App(
        f"bare-{uuid.uuid4().hex[:8]}", broker=f"kafka://{bootstrap}", store="memory://", web_enabled=False,
        consumer_auto_offset_reset="earliest", broker_rebalance_timeout=6, topic_replication_factor=1,
        datadir=f"/tmp/bare-faust-{os.getpid()}", producer_linger=_LINGER_S, producer_max_batch_size=_BATCH_BYTES,
    )
    names = topic_name.split(",")
    topic = app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    state = {"seen": 0, "start": 0.0}

    if mode == "count":
        @app.agent(topic)
        async def count(stream: faust.StreamT[bytes]) -> None:
            async for _ in stream:
                if state["seen"] == 0:
                    state["start"] = time.perf_counter()
                state["seen"] += 1
                if state["seen"] >= n:
                    _done(n, state["start"])
    elif mode == "relay":
        relay_name = f"bare-relay-{uuid.uuid4().hex[:6]}"
        relay = app.topic(relay_name, partitions=8, key_type=bytes, value_type=bytes, key_serializer="raw",
                          value_serializer="raw")

        @app.agent(topic)
        async def forward(stream: faust.StreamT[Any]) -> None:
            async for batch in stream.take_events(_BATCH_MAX, within=_BATCH_WITHIN_S):
                if state["start"] == 0.0:
                    state["start"] = time.perf_counter()
                sent = [await app.producer.send(relay_name, e.message.key, e.message.value, partition=None,
                                                timestamp=None, headers=None)
                        for e in batch if e.message.topic == names[0]]
                if sent:
                    await asyncio.gather(*sent)

        @app.agent(relay)
        async def count_relayed(stream: faust.StreamT[Any]) -> None:
            async for batch in stream.take_events(_BATCH_MAX, within=_BATCH_WITHIN_S):
                state["seen"] += len(batch)
                if state["seen"] >= n:
                    _done(n, state["start"])
    else:
        raise SystemExit(f"unknown mode {mode!r}: count or relay")

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    asyncio.set_event_loop(new_event_loop(cast(EventLoop, loop_kind)))
    app.main()


if __name__ == "__main__":
    main()
