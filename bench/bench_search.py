"""Search latency over Kafka and over HTTP under open-loop load, against same-run floors; worker memory.

In one run, on one embedded (Tansu) broker and one ``shoprank worker`` (Qdrant Edge store, base MiniLM):

1. indexing: ``generate_catalogue(--products)`` is published to the catalogue topic (keyed
   ``tenant:product_id``) and ``/v1/stats/catalogue`` is polled until every product is embedded;
2. Kafka floor: a bare aiokafka echo in its own process (one asyncio task consumes a 4-partition
   ``ping`` topic and produces each value to a 4-partition ``pong`` topic under the same key); the client
   sends pings open loop at ``--rps`` for ``--seconds`` with the SearchClient's settings (producer
   ``linger_ms=0`` and ``send_and_wait``, reply consumer without group, ``fetch_max_wait_ms=5``,
   ``getmany(timeout_ms=100)``) and times each ping to its pong;
3. search over Kafka: the same open-loop schedule through ``SearchClient.send`` with seeded queries of 2-3
   consecutive words from generated titles, distinct request ids;
4. search over HTTP: the same schedule as ``POST /v1/search`` (aiohttp, bounded connection pool), against
   ``GET /healthz`` of the same worker at the same rate as the HTTP floor;
5. memory: RSS (``VmRSS`` of the worker and its descendants) right after start-up (baseline) and after
   the same worker has indexed ``--memory-products`` (the catalogue is extended in place; polling stops
   at ``--memory-timeout-s`` and the RSS at the count reached is recorded).

Latency is measured from each request's *scheduled* send time to its reply (open loop, so a slow server
cannot hide queueing by slowing the sender); a request without a reply after ``--timeout-s`` is a timeout.
The client freezes its own objects before each phase, so that its garbage collections stay short.

Usage: python bench/bench_search.py [--products 10000] [--rps 100] [--seconds 20] [--memory-products 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing as mp
import os
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Row, append_rows, code_version, fmt, machine

import streams
from models.embedder import OnnxEmbedder
from models.export import BASE_FP32_DIR, BASE_INT8_DIR, export_base_model
from schemas import SearchRequest, encode
from streams.broker import EmbeddedBroker
from streams.kafka import ensure_topics, producer
from streams.samples import generate_catalogue
from streams.search_client import SearchClient, SearchTimeout
from streams.settings import KafkaSettings
from streams.supervise import WorkerProcess, free_port, http_json, log_tail

BENCHMARK = "bench_search"
ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / ".shoprank" / "models"
TENANT = "demo"
SEED = 7
POLL_S = 0.5
MAX_IN_FLIGHT = 5_000  # open-loop safety valve: requests beyond this are counted as dropped, not sent
WARMUP = 20

console = Console(width=None if sys.stdout.isatty() else 150)


# --- figures -----------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class LoadResult:
    """One open-loop phase: per-request latencies (ms) from scheduled send to reply."""

    label: str
    scheduled: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    timeouts: int = 0
    dropped: int = 0
    max_send_lag_ms: float = 0.0
    elapsed_s: float = 0.0  # first scheduled send to last answer
    server_ms: dict[str, list[float]] = field(default_factory=dict)  # timings_ms per stage, from results
    error_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    @property
    def p50(self) -> float:
        return pct(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        return pct(self.latencies_ms, 99)

    @property
    def achieved_rps(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s else float("nan")

    def add_error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    def add_timings(self, timings: dict[str, float]) -> None:
        for k, v in timings.items():
            self.server_ms.setdefault(k, []).append(v)

    def summary(self) -> str:
        s = (f"{self.label}: {self.ok}/{self.scheduled} ok, p50 {self.p50:.1f} ms, p99 {self.p99:.1f} ms, "
             f"max {max(self.latencies_ms, default=float('nan')):.1f} ms, {self.achieved_rps:.1f} rps achieved, "
             f"errors {self.errors}, timeouts {self.timeouts}, dropped {self.dropped}, "
             f"max send lag {self.max_send_lag_ms:.1f} ms")
        if self.error_kinds:
            s += f", error kinds {self.error_kinds}"
        return s

    def server_summary(self) -> str:
        parts = [f"{k} p50 {pct(v, 50):.1f}/p99 {pct(v, 99):.1f}" for k, v in sorted(self.server_ms.items())]
        return "; ".join(parts)


async def open_loop(label: str, rps: float, seconds: float, timeout_s: float, fire: Any) -> LoadResult:
    """Call ``await fire(i, result)`` at t0 + i/rps for i < rps*seconds without waiting for answers.

    ``fire`` returns the answer time (perf_counter) or None when the request failed (it records why).
    """
    n = int(rps * seconds)
    res = LoadResult(label, n, seconds)
    # The client's own full garbage collections would pause the measurement: it holds the catalogue
    # and the queries (12-16 ms pauses in a load phase, seen with gc.callbacks). Frozen, they are not walked.
    gc.collect()
    gc.freeze()
    tasks: set[asyncio.Task[None]] = set()
    last_done = 0.0
    t0 = time.perf_counter() + 0.05

    async def one(i: int, due: float) -> None:
        nonlocal last_done
        done_at = await fire(i, res)
        if done_at is not None:
            res.latencies_ms.append((done_at - due) * 1000)
            last_done = max(last_done, done_at)

    for i in range(n):
        due = t0 + i / rps
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        res.max_send_lag_ms = max(res.max_send_lag_ms, (time.perf_counter() - due) * 1000)
        if len(tasks) >= MAX_IN_FLIGHT:
            res.dropped += 1
            continue
        task = asyncio.create_task(one(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:  # every fire() is bounded by timeout_s; this bound is only a backstop
        await asyncio.wait(set(tasks), timeout=timeout_s + 15)
    for task in list(tasks):
        task.cancel()
        res.timeouts += 1
    res.elapsed_s = (last_done - t0) if last_done else 0.0
    return res


# --- the Kafka floor: a bare aiokafka echo -----------------------------------------------------------------


async def _assign_from_end(consumer: Any, topic: str) -> None:
    from aiokafka import TopicPartition

    parts = consumer.partitions_for_topic(topic)
    if not parts:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    if not tps:
        raise RuntimeError(f"topic {topic} has no partitions")
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)


async def _echo(bootstrap: str, ping: str, pong: str, ready: Any, stop: Any, max_s: float) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    prod = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    cons = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                            fetch_max_wait_ms=5)
    await prod.start()
    await cons.start()
    try:
        await _assign_from_end(cons, ping)
        ready.set()
        deadline = time.monotonic() + max_s
        while not stop.is_set() and time.monotonic() < deadline:
            batch = await cons.getmany(timeout_ms=100)
            for messages in batch.values():
                for m in messages:
                    await prod.send(pong, m.value, key=m.key)  # enqueue; like a Faust reply, no wait for the ack
    finally:
        await cons.stop()
        await prod.stop()


def echo_main(bootstrap: str, ping: str, pong: str, ready: Any, stop: Any, max_s: float) -> None:
    """Entry point of the echo process (spawned)."""
    asyncio.run(_echo(bootstrap, ping, pong, ready, stop, max_s))


class EchoClient:
    """SearchClient's structure and settings, for pings: send_and_wait, then await the pong by key."""

    def __init__(self, bootstrap: str, ping: str, pong: str) -> None:
        self.bootstrap, self.ping, self.pong = bootstrap, ping, pong
        self._pending: dict[bytes, asyncio.Future[float]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=0)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                          fetch_max_wait_ms=5)
        await self._producer.start()
        await self._consumer.start()
        await _assign_from_end(self._consumer, self.pong)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._consumer.stop()
        await self._producer.stop()

    async def roundtrip(self, key: bytes, value: bytes, timeout_s: float) -> float:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        try:
            await self._producer.send_and_wait(self.ping, value, key=key)
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self._pending.pop(key, None)

    async def _read(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for messages in batch.values():
                for m in messages:
                    fut = self._pending.get(m.key) if m.key else None
                    if fut is not None and not fut.done():
                        orjson.loads(m.value)  # a reply is parsed by the real client too
                        fut.set_result(now)


async def create_plain_topics(bootstrap: str, names: list[str], partitions: int = 4) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


async def kafka_floor(bootstrap: str, prefix: str, queries: list[str], rps: float, seconds: float,
                      timeout_s: float) -> LoadResult:
    ping, pong = f"{prefix}bench.ping", f"{prefix}bench.pong"
    await create_plain_topics(bootstrap, [ping, pong])
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=echo_main, args=(bootstrap, ping, pong, ready, stop, seconds + timeout_s + 120),
                       daemon=True)
    proc.start()
    try:
        deadline = time.monotonic() + 60
        while not ready.is_set():
            if not proc.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the echo process did not start")
            await asyncio.sleep(0.05)
        async with EchoClient(bootstrap, ping, pong) as client:
            for i in range(WARMUP):
                await client.roundtrip(f"w{i}".encode(), orjson.dumps({"i": i}), timeout_s)

            async def fire(i: int, res: LoadResult) -> float | None:
                key = f"ping-{i}".encode()
                value = orjson.dumps({"request_id": f"ping-{i}", "tenant": TENANT, "query": queries[i % len(queries)]})
                try:
                    return await client.roundtrip(key, value, timeout_s)
                except TimeoutError:
                    res.timeouts += 1
                except Exception as exc:  # noqa: BLE001 - counted, the load goes on
                    res.add_error(type(exc).__name__)
                return None

            return await open_loop("aiokafka echo", rps, seconds, timeout_s, fire)
    finally:
        stop.set()
        proc.join(15)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)


# --- search over Kafka and HTTP ----------------------------------------------------------------------------


async def kafka_search(bootstrap: str, prefix: str, queries: list[str], rps: float, seconds: float,
                       timeout_s: float) -> LoadResult:
    run = uuid.uuid4().hex[:8]
    async with SearchClient(bootstrap, f"{prefix}shoprank.search-requests",
                            f"{prefix}shoprank.search-results") as client:
        for i in range(WARMUP):  # the searcher is built lazily, on the first request
            await client.search(TENANT, queries[i], timeout_s=60, request_id=f"warm-{run}-{i}")

        async def fire(i: int, res: LoadResult) -> float | None:
            req = SearchRequest(request_id=f"k-{run}-{i}", tenant=TENANT, query=queries[i % len(queries)],
                                reply_topic=client.reply_topic, page_size=20)
            sent_ms = time.time() * 1000
            try:
                result = await client.send(req, timeout_s=timeout_s)
            except SearchTimeout:
                res.timeouts += 1
                return None
            except Exception as exc:  # noqa: BLE001
                res.add_error(type(exc).__name__)
                return None
            done = time.perf_counter()
            if result.error is not None:
                res.add_error(result.error.code)
                return None
            res.add_timings(result.timings_ms)
            got_ms = time.time() * 1000  # wall clocks: split the round trip at the worker's answered_at
            res.add_timings({"sent->answered": result.answered_at - sent_ms,
                             "answered->received": got_ms - result.answered_at})
            return done

        return await open_loop("search over Kafka", rps, seconds, timeout_s, fire)


async def drain_kafka(bootstrap: str, prefix: str, max_s: float = 180.0) -> float:
    """Wait until the worker has worked off requests the client gave up on: seconds until sentinels answer.

    Sentinels on every partition (distinct ids spread over the 4 request partitions) are answered only
    after what is queued before them, so the next phase does not share the worker with a backlog.
    """
    run = uuid.uuid4().hex[:8]
    t = time.perf_counter()
    async with SearchClient(bootstrap, f"{prefix}shoprank.search-requests",
                            f"{prefix}shoprank.search-results") as client:
        await asyncio.gather(*(client.search(TENANT, "drain", timeout_s=max_s, request_id=f"drain-{run}-{i}")
                               for i in range(12)))
    return time.perf_counter() - t


async def http_load(label: str, url: str, method: str, queries: list[str], rps: float, seconds: float,
                    timeout_s: float, concurrency: int) -> LoadResult:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    run = uuid.uuid4().hex[:8]
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def call(i: int) -> tuple[int, bytes]:
            if method == "GET":
                async with session.get(url) as resp:
                    return resp.status, await resp.read()
            body = orjson.dumps({"request_id": f"h-{run}-{i}", "tenant": TENANT, "query": queries[i % len(queries)],
                                 "page_size": 20})
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                return resp.status, await resp.read()

        for i in range(WARMUP):
            await call(i)

        async def fire(i: int, res: LoadResult) -> float | None:
            sent_ms = time.time() * 1000
            try:
                status, raw = await call(i)
            except TimeoutError:
                res.timeouts += 1
                return None
            except Exception as exc:  # noqa: BLE001
                res.add_error(type(exc).__name__)
                return None
            done = time.perf_counter()
            if status != 200:
                res.add_error(f"http {status}")
                return None
            parsed = orjson.loads(raw)
            if method == "POST":
                res.add_timings(parsed.get("timings_ms") or {})
                got_ms = time.time() * 1000
                res.add_timings({"sent->answered": parsed["answered_at"] - sent_ms,
                                 "answered->received": got_ms - parsed["answered_at"]})
            return done

        return await open_loop(label, rps, seconds, timeout_s, fire)


def vm_speed_ms(model_dir: Path) -> float:
    """Median time of a one-query embed on one thread: this VM's speed varied about 2x within an hour
    (noisy neighbours, not steal time), which the ratios against the I/O-bound floors do not show."""
    embedder = OnnxEmbedder(model_dir, threads=1)
    embedder.embed(["warm up"])
    times = []
    for i in range(50):
        t = time.perf_counter()
        embedder.embed([f"red running shoes {i}"])
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def make_queries(titles: list[str], n: int, seed: int) -> list[str]:
    """``n`` queries of 2-3 consecutive words from seeded random titles."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        words = re.findall(r"[A-Za-z0-9][A-Za-z0-9'-]*", rng.choice(titles))
        if len(words) < 2:
            continue
        k = min(len(words), rng.choice((2, 3)))
        start = rng.randrange(len(words) - k + 1)
        out.append(" ".join(words[start:start + k]))
    return out


# --- catalogue and memory ----------------------------------------------------------------------------------


async def publish(bootstrap: str, topic: str, updates: list[Any]) -> None:
    async with producer(bootstrap, linger_ms=5, max_request_size=2_000_000) as prod:
        futures = [await prod.send(topic, encode(u), key=f"{u.tenant}:{u.product_id}".encode()) for u in updates]
        await asyncio.gather(*futures)


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo and len(out) < 1000:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return out


def _status_kb(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mb(pid: int) -> float:
    """VmRSS of ``pid`` and every descendant, in MB (MiB: /proc reports KiB)."""
    return sum(_status_kb(p, "VmRSS") for p in _descendants(pid)) / 1024


def hwm_mb(pid: int) -> float:
    return _status_kb(pid, "VmHWM") / 1024


def wait_index_built(worker: WorkerProcess, builds_before: int, timeout_s: float = 120.0) -> tuple[float, float | None]:
    """Wait for the worker to build the vector index of what it just embedded (it does once the
    catalogue has been quiet for SHOPRANK_STORE_OPTIMIZE_IDLE_S), so that no load phase shares the
    machine with the build; (seconds waited, the build's own duration or None if none came)."""
    t = time.perf_counter()
    while time.perf_counter() - t < timeout_s:
        # The build holds the worker: a poll that lands meanwhile waits for it, or times out.
        status, stats = http_json(worker.url + "/v1/stats/catalogue", timeout_s=30.0)
        if status == 200 and stats.get("index_builds", 0) > builds_before:
            return time.perf_counter() - t, stats.get("last_index_build_s")
        time.sleep(0.25)
    return time.perf_counter() - t, None


def wait_embedded(worker: WorkerProcess, target: int, timeout_s: float, on_poll: Any = None) -> tuple[int, float, bool]:
    """Poll until ``embedded >= target`` or ``timeout_s``: (embedded, seconds, reached)."""
    start = last_print = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    done = first = -1
    while True:
        if worker.process is None or worker.process.poll() is not None:
            raise RuntimeError(f"worker exited while indexing ({done} of {target} embedded)")
        stats = worker.get("/v1/stats/catalogue")
        done = stats["embedded"]
        if first < 0:
            first = done
        if on_poll:
            on_poll()
        now = time.perf_counter()
        if done >= target:
            return done, now - start, True
        if time.monotonic() > deadline:
            return done, now - start, False
        if now - last_print > 30:
            console.print(f"  ... {done:,}/{target:,} embedded after {now - start:.0f} s "
                          f"({(done - first) / (now - start):.0f}/s), rejected {stats['rejected']}")
            last_print = now
        time.sleep(POLL_S)


# --- main --------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--products", type=int, default=10_000, help="products indexed before the load (default 10000)")
    ap.add_argument("--rps", type=float, default=100.0, help="open-loop request rate (default 100)")
    ap.add_argument("--seconds", type=float, default=20.0, help="duration of each load phase (default 20)")
    ap.add_argument("--memory-products", type=int, default=50_000,
                    help="products indexed before the memory reading (default 50000; 0 skips it)")
    ap.add_argument("--memory-timeout-s", type=float, default=480.0,
                    help="stop indexing for the memory reading after this long (default 480)")
    ap.add_argument("--timeout-s", type=float, default=10.0, help="per-request timeout (default 10)")
    ap.add_argument("--http-concurrency", type=int, default=64, help="aiohttp connection pool size (default 64)")
    ap.add_argument("--fp32", action="store_true",
                    help="serve the fp32 export (base) instead of the default int8 one: catalogue and queries; rows "
                         "say so")
    ap.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = ap.parse_args()
    n, rps, secs = args.products, args.rps, args.seconds
    mem_n = max(args.memory_products, 0)
    rev = code_version(Path(streams.__file__).parent)
    load_before = os.getloadavg()[0]
    console.print(f"{BENCHMARK}: {n:,} products, {rps:g} rps x {secs:g} s, memory at {mem_n:,} products, "
                  f"code {rev}, {machine()}, load {load_before:.2f}")

    served = BASE_FP32_DIR if args.fp32 else BASE_INT8_DIR
    model = export_base_model(MODELS / served, quantize=not args.fp32)
    console.print(f"model {model.version} in {MODELS / served}")
    # The VM check embeds with fp32 whatever serves, so that it compares across the rows of every date.
    export_base_model(MODELS / BASE_FP32_DIR)
    vm_check = vm_speed_ms(MODELS / BASE_FP32_DIR)
    console.print(f"VM check: one-query embed {vm_check:.1f} ms (one thread, median of 50)")
    updates = generate_catalogue(max(n, mem_n), seed=SEED, tenant=TENANT)
    first, rest = updates[:n], updates[n:mem_n]
    queries = make_queries([u.title for u in first if u.title], int(rps * secs) + WARMUP, seed=SEED)
    console.print(f"sample queries: {queries[:6]}")

    t_start = time.perf_counter()
    figures: dict[str, Any] = {}
    phases: dict[str, LoadResult] = {}
    with tempfile.TemporaryDirectory(prefix="shoprank-bench-search-") as tmp:
        workdir = Path(tmp)
        broker = EmbeddedBroker(port=free_port(), log_path=workdir / "broker.log")
        worker: WorkerProcess | None = None
        try:
            broker.start()
            prefix = f"bsearch{time.time_ns()}."
            asyncio.run(ensure_topics(broker.bootstrap, prefix))
            worker = WorkerProcess(
                broker.bootstrap, topic_prefix=prefix, tenants=TENANT, app_id=f"bench-{prefix.rstrip('.')}",
                data_dir=workdir / "data", log_path=workdir / "worker.log",
                extra_env={"SHOPRANK_MODELS_DIR": str(MODELS), "SHOPRANK_MODELS_EMBEDDER": served,
                           "SHOPRANK_STORE_DIR": str(workdir / "index")},
            )
            t = time.perf_counter()
            worker.start(ready_timeout_s=120)
            assert worker.process is not None
            pid = worker.process.pid
            figures["ready_s"] = time.perf_counter() - t
            time.sleep(2)  # let start-up allocations settle
            figures["rss_start"] = rss_mb(pid)
            console.print(f"worker ready in {figures['ready_s']:.1f} s, RSS {figures['rss_start']:.0f} MB")

            # 1. indexing
            console.print(f"[bold]indexing[/] {n:,} products ...")
            t = time.perf_counter()
            asyncio.run(publish(broker.bootstrap, f"{prefix}shoprank.catalogue", first))
            figures["publish_s"] = time.perf_counter() - t
            done, _, reached = wait_embedded(worker, n, timeout_s=max(300.0, n / 10))
            figures["index_s"] = time.perf_counter() - t
            if not reached:
                raise TimeoutError(f"only {done} of {n} products embedded in {figures['index_s']:.0f} s")
            figures["index_wait_s"], figures["index_build_s"] = wait_index_built(worker, 0)
            figures["rss_indexed"] = rss_mb(pid)
            console.print(f"  {n:,} embedded {figures['index_s']:.1f} s after publishing started "
                          f"({n / figures['index_s']:.0f}/s), RSS {figures['rss_indexed']:.0f} MB; vector index "
                          f"built in {figures['index_build_s']} s, {figures['index_wait_s']:.1f} s after the last "
                          "product was embedded")

            # 2-4. load phases
            console.print("[bold]Kafka floor[/]: aiokafka echo ...")
            phases["floor"] = asyncio.run(kafka_floor(broker.bootstrap, prefix, queries[WARMUP:], rps, secs,
                                                      args.timeout_s))
            console.print("  " + phases["floor"].summary())
            console.print("[bold]search over Kafka[/] ...")
            phases["kafka"] = asyncio.run(kafka_search(broker.bootstrap, prefix, queries, rps, secs, args.timeout_s))
            console.print("  " + phases["kafka"].summary())
            console.print("  server timings_ms: " + phases["kafka"].server_summary())
            figures["drain_s"] = asyncio.run(drain_kafka(broker.bootstrap, prefix))
            console.print(f"  worker's request backlog worked off {figures['drain_s']:.1f} s after the phase ended")
            console.print("[bold]HTTP floor[/]: GET /healthz ...")
            phases["healthz"] = asyncio.run(http_load("GET /healthz", worker.url + "/healthz", "GET", queries, rps,
                                                      secs, args.timeout_s, args.http_concurrency))
            console.print("  " + phases["healthz"].summary())
            console.print("[bold]search over HTTP[/] ...")
            phases["http"] = asyncio.run(http_load("POST /v1/search", worker.url + "/v1/search", "POST", queries,
                                                   rps, secs, args.timeout_s, args.http_concurrency))
            console.print("  " + phases["http"].summary())
            console.print("  server timings_ms: " + phases["http"].server_summary())
            figures["rss_after_load"] = rss_mb(pid)

            # 5. memory
            figures["mem_target"] = mem_n
            if mem_n > n:
                console.print(f"[bold]memory[/]: indexing {len(rest):,} more products (to {mem_n:,}), "
                              f"at most {args.memory_timeout_s:.0f} s ...")
                peak = [figures["rss_after_load"]]
                t = time.perf_counter()
                asyncio.run(publish(broker.bootstrap, f"{prefix}shoprank.catalogue", rest))
                done, _, reached = wait_embedded(worker, mem_n, args.memory_timeout_s,
                                                 on_poll=lambda: peak.append(rss_mb(pid)))
                figures["mem_index_s"] = time.perf_counter() - t
                figures["mem_reached"], figures["mem_complete"] = done, reached
                figures["mem_rate"] = (done - n) / figures["mem_index_s"]
                figures["mem_peak_sampled"] = max(peak)
                if reached:  # the index of the new products is part of what a worker holds
                    figures["mem_index_wait_s"], figures["mem_index_build_s"] = wait_index_built(
                        worker, int(figures["index_build_s"] is not None))
            else:
                figures["mem_reached"], figures["mem_complete"] = n, True
            time.sleep(1)
            figures["rss_mem"] = rss_mb(pid)
            figures["hwm"] = hwm_mb(pid)
            console.print(f"  RSS {figures['rss_mem']:.0f} MB with {figures['mem_reached']:,} products "
                          f"(start {figures['rss_start']:.0f} MB, peak VmHWM {figures['hwm']:.0f} MB)")
        except Exception:
            if worker is not None:
                console.print(f"[red]failed; last lines of the worker log:[/]\n{log_tail(workdir / 'worker.log')}")
            raise
        finally:
            if worker is not None:
                worker.stop()
            broker.stop()
    total_s = time.perf_counter() - t_start
    load_after = os.getloadavg()[0]

    floor, kafka, healthz, http = phases["floor"], phases["kafka"], phases["healthz"], phases["http"]
    table = Table(title=f"{BENCHMARK}: {n:,} products, {rps:g} rps x {secs:g} s ({total_s:.0f} s in all)")
    for col in ("phase", "p50 ms", "p99 ms", "max ms", "ok/sent", "rps", "errors", "timeouts", "p99/floor p99"):
        table.add_column(col, justify="left" if col == "phase" else "right")
    for res, base in ((floor, None), (kafka, floor), (healthz, None), (http, healthz)):
        table.add_row(res.label, fmt(res.p50), fmt(res.p99), fmt(max(res.latencies_ms, default=float("nan"))),
                      f"{res.ok}/{res.scheduled}", fmt(res.achieved_rps), str(res.errors), str(res.timeouts),
                      f"{res.p99 / base.p99:.2f}" if base else "-")
    console.print(table)
    for res in (kafka, http):
        console.print(f"{res.label} server timings_ms: {res.server_summary()}")
    mem = Table(title="worker memory (VmRSS, worker + children)")
    for col in ("when", "RSS MB"):
        mem.add_column(col, justify="left" if col == "when" else "right")
    mem.add_row("after start-up", fmt(figures["rss_start"]))
    mem.add_row(f"after indexing {n:,}", fmt(figures["rss_indexed"]))
    mem.add_row("after the load phases", fmt(figures["rss_after_load"]))
    mem.add_row(f"with {figures['mem_reached']:,} products", fmt(figures["rss_mem"]))
    mem.add_row("peak (VmHWM of the worker)", fmt(figures["hwm"]))
    console.print(mem)

    if not args.no_record:
        common = (f"load {load_before:.2f} before, {load_after:.2f} after; VM check: one-query embed "
                  f"{vm_check:.1f} ms on one thread; code {rev}")

        def load_note(res: LoadResult, floor_res: LoadResult, floor_what: str) -> str:
            drained = (f"; worker backlog drained {figures['drain_s']:.1f} s after the phase"
                       if res is kafka else "")
            kafka_settings = KafkaSettings()  # what the worker reads from the same environment
            waits = (f"search request fetch wait {kafka_settings.search_fetch_max_wait_ms} ms, "
                     f"streams fetch wait {kafka_settings.fetch_max_wait_ms} ms")
            return (f"{n} generated products indexed (edge store, MiniLM {'fp32' if args.fp32 else 'int8'} "
                    f"{model.version}, {waits}); "
                    f"open loop {rps:g} rps x {secs:g} s, "
                    f"latency from scheduled send; {res.ok}/{res.scheduled} ok, achieved {res.achieved_rps:.1f} rps, "
                    f"errors {res.errors}, timeouts {res.timeouts} (>{args.timeout_s:g} s; percentiles over answered "
                    f"requests only), dropped {res.dropped}{drained}; "
                    f"server timings_ms {res.server_summary()}; baseline = {floor_what} at the same rate "
                    f"(p50 {floor_res.p50:.1f}, p99 {floor_res.p99:.1f} ms, {floor_res.ok}/{floor_res.scheduled} ok); "
                    f"{common}")

        kafka_floor_what = "bare aiokafka echo round trip (4-partition ping/pong, SearchClient settings)"
        http_floor_what = "GET /healthz on the same worker (aiohttp)"
        rows = [
            Row("search over Kafka p50 ms", kafka.p50, floor.p50, load_note(kafka, floor, kafka_floor_what)),
            Row("search over Kafka p99 ms", kafka.p99, floor.p99, load_note(kafka, floor, kafka_floor_what)),
            Row("search over HTTP p50 ms", http.p50, healthz.p50, load_note(http, healthz, http_floor_what)),
            Row("search over HTTP p99 ms", http.p99, healthz.p99, load_note(http, healthz, http_floor_what)),
            Row(f"catalogue indexing time s ({n} products)", figures["index_s"], None,
                f"publish start to /v1/stats/catalogue embedded={n} ({n / figures['index_s']:.1f} products/s; "
                f"publishing took {figures['publish_s']:.1f} s); HNSW index built after, once the catalogue was "
                f"quiet: {figures['index_build_s']} s, done {figures['index_wait_s']:.1f} s after the last product "
                f"was embedded, before the load phases; worker ready in {figures['ready_s']:.1f} s; {common}"),
        ]
        if mem_n:
            reached = figures["mem_reached"]
            if figures["mem_complete"]:
                how = f"all {reached} indexed"
            else:
                how = (f"time bound {args.memory_timeout_s:.0f} s hit: {reached} of {mem_n} embedded "
                       f"({figures['mem_rate']:.1f} products/s), RSS at the count reached")
            extra = (f"; indexing {len(rest)} more took {figures['mem_index_s']:.0f} s"
                     if "mem_index_s" in figures else "")
            if "mem_index_build_s" in figures:
                extra += f"; RSS read after their HNSW build ({figures['mem_index_build_s']} s)"
            rows.append(Row(
                f"worker RSS MB with {reached} products", figures["rss_mem"], figures["rss_start"],
                f"VmRSS of the worker and its children; same worker as the latency rows, catalogue extended in place "
                f"({how}{extra}); baseline = RSS right after start-up, before indexing; RSS {figures['rss_indexed']:.0f} MB "
                f"after {n}, {figures['rss_after_load']:.0f} MB after the load phases; worker VmHWM "
                f"{figures['hwm']:.0f} MB; goal < 1500 MB; {common}",
            ))
        if args.fp32:  # not the default configuration: its rows must not read as the default's
            rows = [Row(f"{r.metric}, fp32 embedder", r.value, r.baseline, r.notes) for r in rows]
        append_rows(BENCHMARK, rows)
        console.print(f"appended {len(rows)} rows to bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
