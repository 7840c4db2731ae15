"""Events/s through the pixel validation agent on one worker, against raw aiokafka consumption.

Both read the same pre-produced events from the same embedded broker in the same run:
- baseline: one aiokafka consumer, all partitions assigned, ``orjson.loads`` per message;
- agent: a ``shoprank worker`` (Faust) validating, deduplicating and counting each event in its
  tables (two changelog writes per event), measured from its first processed event to its last.

Usage: python bench/bench_validation.py [--events 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_rows  # noqa: E402

from streams.broker import EmbeddedBroker  # noqa: E402
from streams.kafka import ensure_topics, producer  # noqa: E402
from streams.sample_events import mixed_traffic, valid_events  # noqa: E402
from streams.supervise import WorkerProcess, free_port  # noqa: E402


async def _produce(bootstrap: str, topic: str, msgs: list) -> None:  # type: ignore[type-arg]
    async with producer(bootstrap, linger_ms=5, max_request_size=2_000_000) as prod:
        for m in msgs:
            await prod.send(topic, m.value, key=m.key)


async def _raw_consume(bootstrap: str, topic: str, n: int) -> float:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen, start = 0, None
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if start is None and batch:
                start = time.perf_counter()
            for messages in batch.values():
                for m in messages:
                    try:
                        orjson.loads(m.value)
                    except orjson.JSONDecodeError:
                        pass
                    seen += 1
        return n / (time.perf_counter() - (start or time.perf_counter()))
    finally:
        await consumer.stop()


def _agent_rate(worker: WorkerProcess, n: int, timeout_s: float = 600) -> tuple[float, dict]:  # type: ignore[type-arg]
    start = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = worker.get("/v1/stats/pixel")
        done = stats["processed"]["valid"] + stats["processed"]["rejected"]
        if start is None and done > 0:
            start, first = time.perf_counter(), done
        if done >= n:
            return (n - first) / (time.perf_counter() - start), stats  # type: ignore[operator]
        time.sleep(0.05)
    raise TimeoutError(f"worker processed {done} of {n} in {timeout_s} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000)
    args = ap.parse_args()
    n = args.events
    console = Console()
    broker = EmbeddedBroker(port=free_port()).start()
    rows = []
    try:
        for label, msgs in (
            ("valid events", valid_events(n, seed=1, tenants=("demo", "acme"))),
            ("mixed, 5% bad or duplicate", mixed_traffic(n, seed=2, tenants=("demo", "acme"))),
        ):
            prefix = f"bench{time.time_ns()}."
            asyncio.run(ensure_topics(broker.bootstrap, prefix))
            topic = f"{prefix}shoprank.pixel"
            asyncio.run(_produce(broker.bootstrap, topic, msgs))
            raw = asyncio.run(_raw_consume(broker.bootstrap, topic, len(msgs)))
            t0 = time.perf_counter()
            worker = WorkerProcess(broker.bootstrap, topic_prefix=prefix, tenants="demo,acme",
                                   app_id=f"bench-{prefix}", data_dir=Path(f"/tmp/{prefix}"))
            try:
                worker.start()
                ready_s = time.perf_counter() - t0
                rate, stats = _agent_rate(worker, len(msgs))
            finally:
                worker.stop()
            expected_valid = sum(1 for m in msgs if m.expect == "valid")
            ok = stats["processed"]["valid"] == expected_valid
            note = f"{len(msgs)} {label}; worker ready in {ready_s:.1f} s; counts {'exact' if ok else 'WRONG'}"
            rows.append((f"events/s through validation agent ({label})", rate, raw, note))
            console.print(f"{label}: raw aiokafka {raw:,.0f}/s, agent {rate:,.0f}/s "
                          f"({rate / raw:.1%}), ready in {ready_s:.1f} s, counts {'exact' if ok else 'WRONG'}")
    finally:
        broker.stop()
    table = Table("metric", "agent", "raw aiokafka", "ratio")
    for metric, value, base, _ in rows:
        table.add_row(metric, f"{value:,.0f}", f"{base:,.0f}", f"{value / base:.1%}")
    console.print(table)
    append_rows("bench_validation", rows)
    console.print("appended to bench/RESULTS.md")


if __name__ == "__main__":
    main()
