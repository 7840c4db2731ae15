"""``shoprank demo``: the main job on the embedded defaults, end to end, in one command.

Starts (or reuses) the embedded broker and a worker, publishes a seeded stream of shopper events with
bad input mixed in, waits for the worker to account for every one, and prints what it counted and
what it dead-lettered.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from streams.broker import resolve_bootstrap
from streams.kafka import ensure_topics, producer
from streams.sample_events import mixed_traffic
from streams.supervise import WorkerProcess, free_port

__all__ = ["demo"]


@click.command()
@click.option("--events", type=click.IntRange(1, 1_000_000), default=5_000, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--timeout", type=click.FloatRange(min=1), default=180.0, show_default=True, help="Seconds to wait.")
@click.pass_context
def demo(ctx: click.Context, events: int, seed: int, timeout: float) -> None:
    """Run broker + worker, publish shopper events (some bad), show counts and dead letters."""
    settings = ctx.ensure_object(dict)["settings"]
    console = Console(stderr=True)
    bootstrap, broker = resolve_bootstrap(settings.kafka, start_embedded=True)
    tenants = ("demo", "acme")
    try:
        console.print(f"[bold]broker[/] {bootstrap}" + (" (embedded, memory only)" if broker else ""))
        prefix = settings.kafka.topic_prefix
        asyncio.run(ensure_topics(bootstrap, prefix))
        data_dir = settings.worker.data_dir / "demo"
        worker = WorkerProcess(
            bootstrap,
            app_id=f"shoprank-demo-{int(time.time())}",
            topic_prefix=prefix,
            tenants=",".join(tenants),
            web_port=free_port(),
            data_dir=data_dir,
            log_path=data_dir.with_suffix(".log") if data_dir.parent.mkdir(parents=True, exist_ok=True) is None else None,
        )
        with console.status("starting worker (joins its consumer group)…"):
            worker.start()
        console.print(f"[bold]worker[/] {worker.url} ready")
        try:
            _run(console, worker, bootstrap, settings.topic("pixel"), events, seed, tenants, timeout)
        finally:
            with console.status("stopping worker…"):
                worker.stop()
    finally:
        if broker is not None:
            broker.stop()


def _run(console: Console, worker: WorkerProcess, bootstrap: str, topic: str, n: int, seed: int,
         tenants: tuple[str, ...], timeout: float) -> None:
    msgs = mixed_traffic(n, seed=seed, tenants=tenants)
    expected = Counter(m.expect for m in msgs)

    async def publish() -> None:
        async with producer(bootstrap, linger_ms=5, max_request_size=2_000_000) as prod:
            for m in msgs:
                await prod.send(topic, m.value, key=m.key)

    started = time.monotonic()
    asyncio.run(publish())
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("worker processing events", total=len(msgs))
        stats: dict = {}
        while time.monotonic() - started < timeout:
            stats = worker.get("/v1/stats/pixel")
            done = stats["processed"]["valid"] + stats["processed"]["rejected"]
            progress.update(task, completed=done)
            if done >= len(msgs):
                break
            time.sleep(0.3)
    elapsed = time.monotonic() - started

    table = Table(title="valid events per tenant and type (Faust table)")
    table.add_column("tenant")
    types = ["impression", "click", "add_to_cart", "purchase", "page_view"]
    for t in types:
        table.add_column(t, justify="right")
    for tenant, per_type in sorted(stats.get("counts", {}).items()):
        table.add_row(tenant, *(str(per_type.get(t, 0)) for t in types))
    out = Console()
    out.print(table)
    dead = Table(title="dead letters by reason")
    dead.add_column("reason")
    dead.add_column("count", justify="right")
    dead.add_column("expected", justify="right")
    for reason, count in sorted(stats.get("dead_letters", {}).items()):
        dead.add_row(reason, str(count), str(expected.get(reason, 0)))
    out.print(dead)
    valid = stats.get("processed", {}).get("valid", 0)
    out.print(
        f"{len(msgs)} events in {elapsed:.1f} s: {valid} counted (expected {expected['valid']}), "
        f"{len(msgs) - expected['valid']} bad or duplicate sent to dead letters"
    )
    if valid != expected["valid"]:
        raise click.ClickException(f"counted {valid} valid events, expected {expected['valid']}")
