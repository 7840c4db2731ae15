"""Events/s through the pixel validation agent on one worker, against raw aiokafka consumption.

Both read the same pre-produced events from the same embedded (Tansu) broker in the same run:

- baseline: one aiokafka consumer (no group, every partition assigned, from the beginning) doing
  ``orjson.loads`` on each message; timed from the first ``getmany`` to the Nth message, best of
  ``--baseline-passes`` passes over the topic;
- agent: a ``shoprank worker`` subprocess (Faust) that validates, deduplicates and counts each event
  in its changelogged tables. Its ``/v1/stats/pixel`` is polled every 0.1 s; the rate is the events
  processed between the first poll that shows any (the worker has started consuming) and the poll
  that shows all N, divided by the time between those polls. Time to ready (process start to
  ``/readyz`` 200) is reported on its own.

Two passes: valid events only, then mixed traffic (about 5% bad or duplicate, each dead-lettered),
each on fresh topics and a fresh worker. Counts are checked against what the generator expects.

Usage: python bench/bench_validation.py [--events 20000] [--no-mixed] [--no-record]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Row, append_rows, code_version, fmt, machine  # noqa: E402

import streams  # noqa: E402
from streams.broker import EmbeddedBroker  # noqa: E402
from streams.kafka import ensure_topics, producer  # noqa: E402
from streams.sample_events import SampleMessage, mixed_traffic, valid_events  # noqa: E402
from streams.supervise import WorkerProcess, free_port, log_tail  # noqa: E402

BENCHMARK = "bench_validation"
POLL_S = 0.1
#: pass label -> what its events are, for the results table
WORKLOADS = {"valid": "valid events", "mixed": "mixed, 5% bad or duplicate"}

console = Console()


@dataclass
class PassResult:
    label: str
    events: int
    produce_rate: float
    baseline_rates: list[float]
    ready_s: float
    agent_rate: float
    agent_elapsed_s: float
    stats: dict[str, Any]
    problems: list[str] = field(default_factory=list)

    @property
    def baseline_rate(self) -> float:
        return max(self.baseline_rates)


# --- producing and the raw-consumer baseline -------------------------------------------------------------


async def _produce(bootstrap: str, topic: str, msgs: list[SampleMessage]) -> float:
    """Send every message (keyed as generated), wait for all acks; producer events/s."""
    async with producer(bootstrap, linger_ms=5, max_request_size=2_000_000) as prod:
        start = time.perf_counter()
        futures = [await prod.send(topic, m.value, key=m.key) for m in msgs]
        await asyncio.gather(*futures)
        return len(msgs) / (time.perf_counter() - start)


async def _raw_consume(bootstrap: str, topic: str, n: int, timeout_s: float = 60.0) -> float:
    """One pass of a plain aiokafka consumer over ``topic`` from the beginning: events/s."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - first metadata may be empty
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            raise RuntimeError(f"topic {topic} has no partitions")
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        start = time.perf_counter()
        deadline = start + timeout_s
        while seen < n:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"raw consumer read {seen} of {n} messages in {timeout_s:.0f} s")
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for messages in batch.values():
                for m in messages:
                    try:
                        orjson.loads(m.value)
                    except orjson.JSONDecodeError:
                        pass
                    seen += 1
        return n / (time.perf_counter() - start)
    finally:
        await consumer.stop()


# --- the agent ---------------------------------------------------------------------------------------------


def _agent_rate(worker: WorkerProcess, n: int, timeout_s: float) -> tuple[float, float, dict[str, Any]]:
    """Poll the worker until it has processed ``n`` messages: (events/s, seconds measured, last stats)."""
    start: float | None = None
    first = 0
    done = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if worker.process is None or worker.process.poll() is not None:
            raise RuntimeError(f"worker exited while processing ({done} of {n} done)")
        stats = worker.get("/v1/stats/pixel")
        done = stats["processed"]["valid"] + stats["processed"]["rejected"]
        now = time.perf_counter()
        if start is None and done > 0:
            start, first = now, done
        if done >= n:
            assert start is not None
            if now == start or done == first:  # everything landed between two polls: no interval to time
                return float("nan"), 0.0, stats
            return (done - first) / (now - start), now - start, stats
        time.sleep(POLL_S)
    raise TimeoutError(f"worker processed {done} of {n} in {timeout_s:.0f} s")


def _check(msgs: list[SampleMessage], stats: dict[str, Any]) -> list[str]:
    """What the worker reports against what the generator expects; an empty list when exact."""
    problems = []
    expected_valid = sum(1 for m in msgs if m.expect == "valid")
    got_valid = stats["processed"]["valid"]
    if got_valid != expected_valid:
        problems.append(f"valid {got_valid} != expected {expected_valid}")
    expected_dead = Counter(m.expect for m in msgs if m.expect != "valid")
    got_dead = Counter({k: v for k, v in stats["dead_letters"].items() if v})
    if got_dead != expected_dead:
        problems.append(f"dead letters {dict(got_dead)} != expected {dict(expected_dead)}")
    expected_counts: dict[str, Counter[str]] = {}
    for m in msgs:
        if m.expect == "valid":
            expected_counts.setdefault(str(m.tenant), Counter())[str(m.type)] += 1
    got_counts = {t: Counter(per) for t, per in stats["counts"].items()}
    if got_counts != expected_counts:
        problems.append("per-tenant counts differ from the events produced")
    return problems


def run_pass(
    broker: EmbeddedBroker, label: str, msgs: list[SampleMessage], tenants: str, workdir: Path, passes: int
) -> PassResult:
    n = len(msgs)
    prefix = f"bench{time.time_ns()}."
    asyncio.run(ensure_topics(broker.bootstrap, prefix))
    topic = f"{prefix}shoprank.pixel"

    console.print(f"[bold]{WORKLOADS[label]}[/]: producing {n:,} events to {topic} ...")
    produce_rate = asyncio.run(_produce(broker.bootstrap, topic, msgs))
    baseline = [asyncio.run(_raw_consume(broker.bootstrap, topic, n)) for _ in range(passes)]
    console.print(f"  raw aiokafka: {', '.join(fmt(b) for b in baseline)} events/s")

    log = workdir / f"worker-{prefix}log"
    worker = WorkerProcess(
        broker.bootstrap, topic_prefix=prefix, tenants=tenants, app_id=f"bench-{prefix.rstrip('.')}",
        data_dir=workdir / prefix, log_path=log,
    )
    t0 = time.perf_counter()
    try:
        worker.start(ready_timeout_s=120)
        ready_s = time.perf_counter() - t0
        console.print(f"  worker ready in {ready_s:.1f} s; consuming ...")
        rate, elapsed, stats = _agent_rate(worker, n, timeout_s=max(120.0, n / 50))
    except Exception:
        console.print(f"[red]worker failed; last lines of {log}:[/]\n{log_tail(log)}")
        raise
    finally:
        worker.stop()

    problems = _check(msgs, stats)
    if problems:
        for p in problems:
            console.print(f"[bold red]WARNING[/] {label}: {p}")
    console.print(f"  agent: {fmt(rate)} events/s over {elapsed:.1f} s; counts {'exact' if not problems else 'WRONG'}")
    return PassResult(label, n, produce_rate, baseline, ready_s, rate, elapsed, stats, problems)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000, help="events per pass (default 20000)")
    ap.add_argument("--tenants", default="demo,acme", help="tenants the events are spread over (default demo,acme)")
    ap.add_argument("--baseline-passes", type=int, default=3, help="raw-consumer passes; the best counts (default 3)")
    ap.add_argument("--no-mixed", action="store_true", help="skip the mixed-traffic pass")
    ap.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = ap.parse_args()
    n = args.events
    tenants = tuple(t.strip() for t in args.tenants.split(",") if t.strip())
    rev = code_version(Path(streams.__file__).parent)
    load_before = os.getloadavg()[0]  # other work on a 2-core machine moves the figures; say so in the notes
    console.print(f"{BENCHMARK}: {n:,} events/pass, tenants {','.join(tenants)}, code {rev}, {machine()}")

    workloads = [("valid", lambda: valid_events(n, seed=1, tenants=tenants))]
    if not args.no_mixed:
        workloads.append(("mixed", lambda: mixed_traffic(n, seed=2, tenants=tenants)))

    results: list[PassResult] = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="shoprank-bench-") as tmp:
        workdir = Path(tmp)
        broker = EmbeddedBroker(port=free_port(), log_path=workdir / "broker.log")
        try:
            broker.start()
            for label, build in workloads:
                results.append(run_pass(broker, label, build(), ",".join(tenants), workdir, args.baseline_passes))
        finally:
            broker.stop()
    total_s = time.perf_counter() - t_start

    table = Table(title=f"{BENCHMARK} ({n:,} events/pass, {total_s:.0f} s in all)")
    for col in ("pass", "produce ev/s", "raw aiokafka ev/s", "agent ev/s", "agent / raw", "ready s", "counts"):
        table.add_column(col, justify="left" if col in ("pass", "counts") else "right")
    for r in results:
        table.add_row(
            r.label, fmt(r.produce_rate), fmt(r.baseline_rate), fmt(r.agent_rate),
            f"{r.agent_rate / r.baseline_rate:.2%}", f"{r.ready_s:.1f}",
            "exact" if not r.problems else "[red]WRONG[/]",
        )
    console.print(table)

    if not args.no_record:
        rows = []
        for r in results:
            counts = "exact" if not r.problems else "WRONG: " + "; ".join(r.problems)
            note = (
                f"{r.events} events, tenants {','.join(tenants)}; agent timed over {r.agent_elapsed_s:.1f} s; "
                f"baseline best of {len(r.baseline_rates)}; load {load_before:.2f} before run; counts {counts}; "
                f"code {rev}"
            )
            metric = f"events/s through validation agent ({WORKLOADS[r.label]})"
            rows.append(Row(metric, r.agent_rate, r.baseline_rate, note))
        ready = [r.ready_s for r in results]
        starts = ", ".join(f"{s:.1f}" for s in ready)
        rows.append(Row(
            "worker time to ready, s (start to /readyz 200)", statistics.median(ready), None,
            f"median of {len(ready)} worker starts ({starts} s) on fresh topics; load {load_before:.2f} before run; "
            f"code {rev}",
        ))
        append_rows(BENCHMARK, rows)
        console.print("appended to bench/RESULTS.md")
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
