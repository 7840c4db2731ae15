"""Throughput of the learning loop: pixel events and search logs through attribution and the learner.

In one run, on one embedded (Tansu) broker, with the same seeded session traffic
(``streams.sample_sessions``: search logs, impressions, clicks, carts, purchases, 2% retried):

- baseline: a bare Faust agent (``bench/bare_faust.py``) that only counts the messages of the pixel
  and searches topics, timed from its first message to the last;
- one shoprank worker: validation, dedupe, per-search attribution, interactions topic, the learning
  agent (dedupe, analytics totals, ranker update when a ranker is configured), timed from the first
  message produced to the moment every tenant's totals equal the generator's ground truth: once a poll
  finds them exact, the end is when a worker last learned a batch (``GET /v1/stats/learning``), which
  the poll, once a second, sees up to a second late;
- two shoprank workers in one consumer group, same traffic on fresh topics (scaling ratio); then the
  same without standby replicas (``SHOPRANK_WORKER_STANDBY_REPLICAS=0``), whose changelog replay is what
  two workers on one 2-core machine spend the difference on;
- a ceiling: a bare Faust relay (``bare_faust.py relay``) that publishes each pixel message again and
  reads it back in the same app, as the worker publishes each attributed interaction to the
  interactions topic (re-keyed by tenant, so that one tenant's ranker learns in one place) and reads it
  back in the learning agent. No pipeline with that second hop does better on the same broker.

Totals are checked exactly; a run whose totals do not match says so in the notes. Each shoprank run
also notes how many cores the workers, the broker and this process kept busy over it: two workers and
the broker share the machine's cores, which bounds what a second worker can add on a small machine.

The search logs carry two features per item shown unless ``--ranker-features`` gives them the ranker's
seventeen, in full precision, as the search agent logs them: three times the bytes through the searches
and interactions topics and the session states.

Usage: python bench/bench_learning.py [--sessions 5000] [--tenants 8] [--ranker-features] [--no-record]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Row, append_rows, code_version, fmt, machine  # noqa: E402

import streams  # noqa: E402
from streams.broker import EmbeddedBroker  # noqa: E402
from streams.kafka import ensure_topics, producer  # noqa: E402
from streams.sample_sessions import SessionTraffic, session_traffic  # noqa: E402
from streams.supervise import WorkerProcess, free_port  # noqa: E402

BENCHMARK = "bench_learning"
REPO = Path(__file__).resolve().parents[1]
console = Console()
#: How often the totals are read while the workers catch up. Each read asks every worker for every
#: tenant's analytics (8 HTTP requests a worker); at 0.2 s that cost the worker being measured ~20% of
#: its core (745 messages/s unpolled vs 565 polled). At 1 s the figure is at most one interval late.
POLL_S = 1.0


async def _produce(bootstrap: str, prefix: str, traffic: SessionTraffic) -> None:
    async with producer(bootstrap, linger_ms=5, max_request_size=2_000_000) as prod:
        futures = [await prod.send(f"{prefix}shoprank.{topic}", value, key=key) for topic, key, value in traffic.messages]
        await asyncio.gather(*futures)


def _bare_faust(bootstrap: str, prefix: str, n: int, mode: str = "count", relayed: int = 0) -> float:
    """Messages/s of the bare Faust baseline (``count``: all ``n`` read; ``relay``: ``relayed`` pixel
    messages read back after a second hop; the rate is of the ``n`` input messages either way)."""
    topics = f"{prefix}shoprank.pixel,{prefix}shoprank.searches"
    target = n if mode == "count" else relayed
    out = subprocess.run([sys.executable, str(REPO / "bench" / "bare_faust.py"), bootstrap, topics, str(target), mode],
                         capture_output=True, text=True, timeout=900, cwd=REPO)
    # Faust routes a worker's stdout through its logger, so the figure may come back on either stream.
    found = re.search(r'\{"n":\s*\d+,\s*"seconds":\s*[0-9.eE+-]+\}', out.stdout + out.stderr)
    if found is None:
        raise RuntimeError(f"bare Faust baseline printed no figure:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    figure = orjson.loads(found.group(0))
    return n / figure["seconds"]  # the same input messages as the shoprank runs


def _totals(workers: list[WorkerProcess], tenants: list[str]) -> dict[str, dict[str, float]]:
    """Learning-bucket totals per tenant, summed over workers (each reports the partitions it processes)."""
    out: dict[str, dict[str, float]] = {}
    for t in tenants:
        acc: dict[str, float] = {}
        for w in workers:
            for k, v in w.get(f"/v1/analytics/{t}?partitions=active")["buckets"].get("learning", {}).items():
                if isinstance(v, (int, float)) and v is not None:
                    acc[k] = acc.get(k, 0) + v
        out[t] = acc
    return out


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cores(broker: EmbeddedBroker, workers: list[WorkerProcess]) -> Callable[[float], str]:
    """Starts counting CPU; the function returned says how many cores each party kept busy since."""
    pids = {"workers": [w.process.pid for w in workers if w.process is not None],
            "broker": [broker.process.pid] if broker.process is not None else []}
    start = {k: sum(map(_cpu_s, v)) for k, v in pids.items()}
    own = os.times()

    def busy(elapsed_s: float) -> str:
        now = os.times()
        used = {k: (sum(map(_cpu_s, v)) - start[k]) / elapsed_s for k, v in pids.items()}
        used["this process (producer, polls)"] = (now.user + now.system - own.user - own.system) / elapsed_s
        parts = ", ".join(f"{k} {v:.2f}" for k, v in used.items())
        return f"cores busy {sum(used.values()):.2f} of {os.cpu_count()} ({parts})"

    return busy


def _shoprank(broker: EmbeddedBroker, traffic: SessionTraffic, tenants: list[str], workers_n: int,
              workdir: Path, timeout_s: float, env: dict[str, str] | None = None) -> tuple[float, float, bool, str]:
    """(messages/s, seconds, totals exact, cores busy) with ``workers_n`` workers in one group."""
    prefix = f"b{uuid.uuid4().hex[:6]}."
    asyncio.run(ensure_topics(broker.bootstrap, prefix))
    workers = [
        WorkerProcess(broker.bootstrap, topic_prefix=prefix, app_id="bench-learn", tenants=",".join(tenants),
                      data_dir=workdir / f"{prefix}{i}", log_path=workdir / f"{prefix}{i}.log",
                      extra_env={"SHOPRANK_STORE_DIR": str(workdir / f"{prefix}{i}" / "index"), **(env or {})})
        for i in range(workers_n)
    ]
    try:
        for w in workers:
            w.start(ready_timeout_s=180)
        if workers_n > 1:  # the group settles once every member has joined
            time.sleep(8)
            for w in workers:
                w.wait_ready(120)
        want = {t: {k: float(v) for k, v in traffic.totals[t].items()} for t in tenants}
        cores = _cores(broker, workers)
        t0 = time.perf_counter()
        t0_ms = time.time() * 1000
        asyncio.run(_produce(broker.bootstrap, prefix, traffic))
        console.print(f"  produced {len(traffic.messages):,} messages in {time.perf_counter() - t0:.1f} s")
        deadline = time.monotonic() + timeout_s
        while True:
            got = _totals(workers, tenants)
            exact = all({k: got[t].get(k, 0.0) for k in want[t]} == want[t] for t in tenants)
            if exact or time.monotonic() > deadline:
                break
            time.sleep(POLL_S)
        polled = time.perf_counter() - t0
        # The poll sees the totals exact up to POLL_S late; each worker notes when it last learned a batch.
        last_ms = max(w.get("/v1/stats/learning")["last_learned_ms"] for w in workers)
        elapsed = (last_ms - t0_ms) / 1000 if exact else polled
        busy = cores(polled)
        time.sleep(2)
        got = _totals(workers, tenants)
        exact = all({k: got[t].get(k, 0.0) for k in want[t]} == want[t] for t in tenants)
        return len(traffic.messages) / elapsed, elapsed, exact, f"{busy}; the poll saw them exact at {polled:.1f} s"
    finally:
        for w in workers:
            w.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=5_000)
    ap.add_argument("--tenants", type=int, default=8, help="tenants the sessions are spread over (default 8)")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--ranker-features", action="store_true",
                    help="search logs carry the ranker's 17 features per item, as the search agent logs them "
                         "(default: two, as in the tests' traffic)")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    tenants = [f"shop{i}" for i in range(args.tenants)]
    traffic = session_traffic(args.sessions, tenants=tuple(tenants), seed=23, ranker_features=args.ranker_features)
    features = "17 ranker features" if args.ranker_features else "2 features"
    n = len(traffic.messages)
    rev = code_version(Path(streams.__file__).parent)
    load = os.getloadavg()[0]
    console.print(f"{BENCHMARK}: {args.sessions:,} sessions, {n:,} messages ({traffic.pixel_events:,} pixel events), "
                  f"search logs with {features} per item, "
                  f"{len(tenants)} tenants, code {rev}, {machine()}, load {load:.2f}")
    with tempfile.TemporaryDirectory(prefix="shoprank-bench-") as tmp:
        workdir = Path(tmp)
        broker = EmbeddedBroker(port=free_port(), log_path=workdir / "broker.log").start()
        try:
            prefix = f"b{uuid.uuid4().hex[:6]}."
            asyncio.run(ensure_topics(broker.bootstrap, prefix))
            asyncio.run(_produce(broker.bootstrap, prefix, traffic))
            bare = _bare_faust(broker.bootstrap, prefix, n)
            console.print(f"  bare Faust agent: {fmt(bare)} messages/s")
            relay = _bare_faust(broker.bootstrap, prefix, n, "relay", relayed=traffic.pixel_events)
            console.print(f"  bare Faust relay (two hops, no work): {fmt(relay)} messages/s")
            one, one_s, one_ok, one_cpu = _shoprank(broker, traffic, tenants, 1, workdir, args.timeout)
            console.print(f"  one worker: {fmt(one)} messages/s over {one_s:.1f} s, totals "
                          f"{'exact' if one_ok else 'WRONG'}; {one_cpu}")
            two, two_s, two_ok, two_cpu = _shoprank(broker, traffic, tenants, 2, workdir, args.timeout)
            console.print(f"  two workers: {fmt(two)} messages/s over {two_s:.1f} s, totals "
                          f"{'exact' if two_ok else 'WRONG'}; {two_cpu}")
            nostandby, nostandby_s, nostandby_ok, nostandby_cpu = _shoprank(
                broker, traffic, tenants, 2, workdir, args.timeout, {"SHOPRANK_WORKER_STANDBY_REPLICAS": "0"})
            console.print(f"  two workers, no standby replicas: {fmt(nostandby)} messages/s over {nostandby_s:.1f} s, "
                          f"totals {'exact' if nostandby_ok else 'WRONG'}; {nostandby_cpu}")
        finally:
            broker.stop()
    table = Table(title=BENCHMARK)
    for col in ("run", "messages/s", "vs bare Faust", "totals"):
        table.add_column(col)
    table.add_row("bare Faust agent", fmt(bare), "1", "-")
    table.add_row("bare Faust relay (two hops, no work)", fmt(relay), f"{relay / bare:.2f}", "-")
    table.add_row("1 worker", fmt(one), f"{one / bare:.2f}", "exact" if one_ok else "WRONG")
    table.add_row("2 workers", fmt(two), f"{two / bare:.2f} ({two / one:.2f}× one)", "exact" if two_ok else "WRONG")
    table.add_row("2 workers, no standby replicas", fmt(nostandby),
                  f"{nostandby / bare:.2f} ({nostandby / one:.2f}× one)", "exact" if nostandby_ok else "WRONG")
    console.print(table)
    if not args.no_record:
        note = (f"{args.sessions} sessions, {n} messages ({traffic.pixel_events} pixel events + search logs with "
                f"{features} per item shown), "
                f"{len(tenants)} tenants; load {load:.2f} before run; totals polled every {POLL_S:g} s, end when a "
                f"worker last learned a batch (/v1/stats/learning); code {rev}")
        append_rows(BENCHMARK, [
            Row("messages/s through a bare Faust relay, two hops and no work (vs bare Faust agent)", relay, bare,
                f"{note}; each pixel message published again and read back in the same app, as the learning "
                "loop's interactions are: the most any pipeline with that second hop reaches here"),
            Row("messages/s through attribution + learning, 1 worker (vs bare Faust agent)", one, bare,
                f"{note}; totals {'exact' if one_ok else 'WRONG'}; {one_cpu}"),
            Row("messages/s through attribution + learning, 2 workers (vs 1 worker)", two, one,
                f"{note}; one standby replica per table partition (the default); "
                f"totals {'exact' if two_ok else 'WRONG'}; {two_cpu}"),
            Row("messages/s through attribution + learning, 2 workers, no standby replicas (vs 1 worker)",
                nostandby, one,
                f"{note}; SHOPRANK_WORKER_STANDBY_REPLICAS=0: neither worker replays the other's changelogs; "
                f"totals {'exact' if nostandby_ok else 'WRONG'}; {nostandby_cpu}"),
        ])
    return 0 if one_ok and two_ok and nostandby_ok else 1


if __name__ == "__main__":
    sys.exit(main())
