"""``shoprank demo``: the main job on the embedded defaults, end to end, in one command.

Starts (or reuses) the embedded broker and a worker, exports the bundled model (once), publishes the
bundled sample catalogue and shows indexing progress, answers queries (arguments, a prompt, or a few
examples) with ranked results, prices and facets, then streams shopper events with bad input mixed in
and shows what the worker counted and dead-lettered.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from collections import Counter

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from schemas import SearchResult, encode
from streams.broker import resolve_bootstrap
from streams.kafka import ensure_topics, producer
from streams.render import print_result
from streams.sample_events import mixed_traffic
from streams.settings import Settings
from streams.supervise import WorkerProcess, free_port

__all__ = ["demo"]

#: Queries for a non-interactive run on the bundled DummyJSON catalogue (arguments or a prompt replace them).
EXAMPLE_QUERIES = ("lightweight laptop", "luxury watch", "running shoes", "pan for stir fry", "red lipstick")


@click.command()
@click.argument("queries", nargs=-1)
@click.option("--events", type=click.IntRange(0, 1_000_000), default=2_000, show_default=True,
              help="Shopper events to stream after the searches (0 to skip).")
@click.option("--catalogue", "catalogue_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Catalogue JSON lines to index instead of the bundled DummyJSON products.")
@click.option("--synthetic", type=click.IntRange(1, 1_000_000), default=None,
              help="Index this many seeded synthetic products (streams/samples/generator.py) instead.")
@click.option("--learn-events", type=click.IntRange(0, 1_000_000), default=6_000, show_default=True,
              help="Simulated shopper events to run through the learning loop at the end (0 to skip).")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--timeout", type=click.FloatRange(min=1), default=300.0, show_default=True, help="Seconds to wait.")
@click.pass_context
def demo(ctx: click.Context, queries: tuple[str, ...], events: int, catalogue_file: Path | None,
         synthetic: int | None, learn_events: int, seed: int, timeout: float) -> None:
    """Index the sample catalogue, answer QUERIES (or prompt), stream shopper events."""
    from models.export import serving_model
    from schemas import DecodeError
    from streams.samples import generate_catalogue, load_catalogue_file, sample_catalogue

    settings: Settings = ctx.ensure_object(dict)["settings"]
    console = Console(stderr=True)
    if catalogue_file and synthetic:
        raise click.UsageError("give --catalogue or --synthetic, not both")
    try:
        if catalogue_file:
            catalogue = load_catalogue_file(catalogue_file, "demo")
        elif synthetic:
            catalogue = generate_catalogue(synthetic, seed=seed, tenant="demo")
        else:
            catalogue = sample_catalogue("demo")
    except DecodeError as err:
        raise click.ClickException(f"{err.detail} ({err.reason})") from None
    with console.status("exporting the bundled model to ONNX (first run only)…"):
        manifest = serving_model(settings.models.embedder_dir)
    console.print(f"[bold]model[/] {manifest.version} in {settings.models.embedder_dir}")
    bootstrap, broker = resolve_bootstrap(settings.kafka, start_embedded=True)
    tenants = ("demo", "acme", "sim")
    try:
        console.print(f"[bold]broker[/] {bootstrap}" + (" (embedded, memory only)" if broker else ""))
        prefix = settings.kafka.topic_prefix
        asyncio.run(ensure_topics(bootstrap, prefix, retention_ms=settings.kafka.retention_ms))
        run_dir = settings.worker.data_dir / "demo"
        run_dir.mkdir(parents=True, exist_ok=True)
        worker = WorkerProcess(
            bootstrap,
            app_id=f"shoprank-demo-{int(time.time())}",
            topic_prefix=prefix,
            tenants=",".join(tenants),
            web_port=free_port(),
            data_dir=run_dir,
            log_path=run_dir / "worker.log",
            extra_env={"SHOPRANK_STORE_DIR": str(run_dir / f"index-{int(time.time())}"),
                       "SHOPRANK_MODELS_DIR": str(settings.models.dir),
                       "SHOPRANK_MODELS_EMBEDDER": settings.models.embedder,
                       "SHOPRANK_RANKER_CONTROL_SHARE": "0.5"},
        )
        with console.status("starting worker (joins its consumer group, loads the model)…"):
            worker.start()
        console.print(f"[bold]worker[/] {worker.url} ready (log: {run_dir / 'worker.log'})")
        try:
            _index(console, worker, bootstrap, settings.topic("catalogue"), catalogue, timeout)
            _answer(console, worker, queries)
            if events:
                _pixel(console, worker, bootstrap, settings.topic("pixel"), events, seed, tenants[:2], timeout)
            if learn_events:
                _learning(console, worker, bootstrap, prefix, learn_events, seed, timeout)
        finally:
            with console.status("stopping worker…"):
                worker.stop()
    finally:
        if broker is not None:
            broker.stop()


def _publish(bootstrap: str, topic: str, items: list[tuple[bytes | None, bytes]]) -> None:
    async def go() -> None:
        async with producer(bootstrap, linger_ms=5, max_request_size=2_000_000) as prod:
            for key, value in items:
                await prod.send(topic, value, key=key)

    asyncio.run(go())


def _index(console: Console, worker: WorkerProcess, bootstrap: str, topic: str, catalogue: list, timeout: float) -> None:  # type: ignore[type-arg]
    started = time.monotonic()
    _publish(bootstrap, topic, [(f"{u.tenant}:{u.product_id}".encode(), encode(u)) for u in catalogue])
    with Progress(console=console) as progress:
        task = progress.add_task(f"indexing {len(catalogue)} products", total=len(catalogue))
        while time.monotonic() - started < timeout:
            s = worker.get("/v1/stats/catalogue")
            done = s["embedded"] + s["payload_only"] + s["stale"] + s["rejected"]
            progress.update(task, completed=done)
            if done >= len(catalogue):
                break
            time.sleep(0.2)
    console.print(f"indexed {len(catalogue)} products in {time.monotonic() - started:.1f} s")


def _answer(console: Console, worker: WorkerProcess, queries: tuple[str, ...]) -> None:
    from streams.supervise import http_post_json

    interactive = not queries and sys.stdin.isatty()
    todo = list(queries) or ([] if interactive else list(EXAMPLE_QUERIES))
    out = Console()
    while True:
        if interactive:
            q = click.prompt("search (empty line to go on)", default="", show_default=False)
            if not q.strip():
                break
            todo = [q]
        if not todo:
            break
        for q in todo:
            status, body = http_post_json(worker.url + "/v1/search", {"tenant": "demo", "query": q, "page_size": 5})
            if status != 200:
                out.print(f"[red]{q!r}: {body.get('error')}: {body.get('message')}[/]")
                continue
            print_result(out, SearchResult.model_validate(body))
        if not interactive:
            break


def _pixel(console: Console, worker: WorkerProcess, bootstrap: str, topic: str, n: int, seed: int,
           tenants: tuple[str, ...], timeout: float) -> None:
    msgs = mixed_traffic(n, seed=seed, tenants=tenants)
    expected = Counter(m.expect for m in msgs)
    started = time.monotonic()
    _publish(bootstrap, topic, [(m.key, m.value) for m in msgs])
    stats: dict = {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("worker validating shopper events", total=len(msgs))
        while time.monotonic() - started < timeout:
            stats = worker.get("/v1/stats/pixel")
            done = stats["processed"]["valid"] + stats["processed"]["rejected"]
            progress.update(task, completed=done)
            if done >= len(msgs):
                break
            time.sleep(0.2)
    out = Console()
    table = Table(title="valid shopper events per tenant and type (Faust table)", title_justify="left")
    table.add_column("tenant")
    types = ["impression", "click", "add_to_cart", "purchase", "page_view"]
    for t in types:
        table.add_column(t, justify="right")
    for tenant, per_type in sorted(stats.get("counts", {}).items()):
        table.add_row(tenant, *(str(per_type.get(t, 0)) for t in types))
    out.print(table)
    dead = Counter(stats.get("dead_letters", {}))
    out.print("dead letters: " + ", ".join(f"{r} {c}/{expected.get(r, 0)}" for r, c in sorted(dead.items())))
    valid = stats.get("processed", {}).get("valid", 0)
    out.print(f"{len(msgs)} events in {time.monotonic() - started:.1f} s: {valid} counted "
              f"(expected {expected['valid']}), {sum(dead.values())} dead-lettered with reasons")
    if valid != expected["valid"]:
        raise click.ClickException(f"counted {valid} valid events, expected {expected['valid']}")


def _learning(console: Console, worker: WorkerProcess, bootstrap: str, prefix: str, n: int, seed: int,
              timeout: float) -> None:
    """Simulated shoppers (tenant ``sim``) search, click and buy; the learning ranker vs the static control."""
    from streams.shoppers import generated_world
    from streams.simulate import render, run_simulation

    world = generated_world(1_200, seed=seed, tenant="sim", now_ms=int(time.time() * 1000))
    console.print(f"[bold]learning loop[/]: {len(world.catalogue):,} products for shop 'sim', shoppers with hidden "
                  "tastes; half the sessions see the learning ranker, half the static hybrid order")
    _index(console, worker, bootstrap, f"{prefix}shoprank.catalogue", world.catalogue, timeout)
    window = max(500, n // 6)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("shoppers searching, clicking, buying", total=n)
        report = asyncio.run(run_simulation(world, bootstrap, prefix, events=n, window=window, seed=seed,
                                            progress=lambda done: progress.update(task, completed=done)))
    out = Console()
    out.print(render(report, out, window))
    summary = worker.get("/v1/analytics/sim")
    out.print(f"worker's attributed analytics for 'sim': conversion lift {summary.get('conversion_lift')}, "
              f"revenue per search lift {summary.get('revenue_per_search_lift')}, query coverage "
              f"{summary.get('query_coverage')} — run `shoprank simulate` for a longer race")
