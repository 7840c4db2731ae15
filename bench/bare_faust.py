"""The baseline of bench_learning: a bare Faust agent that only counts the pixel topic's messages.

Same broker, same Faust version and settings as a shoprank worker, no tables, no decoding. Prints
``{"n": N, "seconds": S}`` (first message to the Nth) on stdout and exits.

Usage: python bench/bare_faust.py BOOTSTRAP TOPIC[,TOPIC...] N
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

import faust
import orjson


def main() -> None:
    bootstrap, topic_name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    app = faust.App(
        f"bare-{uuid.uuid4().hex[:8]}", broker=f"kafka://{bootstrap}", store="memory://", web_enabled=False,
        consumer_auto_offset_reset="earliest", broker_rebalance_timeout=6, topic_replication_factor=1,
        datadir=f"/tmp/bare-faust-{os.getpid()}",
    )
    topic = app.topic(*topic_name.split(","), key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    state = {"seen": 0, "start": 0.0}

    @app.agent(topic)
    async def count(stream: faust.StreamT[bytes]) -> None:
        async for _ in stream:
            if state["seen"] == 0:
                state["start"] = time.perf_counter()
            state["seen"] += 1
            if state["seen"] >= n:
                print(orjson.dumps({"n": n, "seconds": time.perf_counter() - state["start"]}).decode(), flush=True)
                os._exit(0)  # noqa: SLF001 - the figure is out; skip Faust's slow shutdown

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    asyncio.set_event_loop(asyncio.new_event_loop())
    app.main()


if __name__ == "__main__":
    main()
