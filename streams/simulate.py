"""`shoprank simulate`: shoppers search, click and buy through the real pipeline, and the learning ranker
is compared with the static control bucket in the same run.

Sessions are split by a hash of their id (the worker's own bucketing, ``SHOPRANK_RANKER_CONTROL_SHARE``,
here one half): control sessions see the hybrid order, learning sessions the online ranker's. Every
search goes over Kafka to the worker; every shopper event goes to the pixel topic, through validation,
attribution and the learner, exactly as the JavaScript pixel's would. Reported per window of events:
conversion (searches with a purchase), revenue per search and the share of clicks on new products, per
bucket, as a table and a PNG plot.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from models.searcher import assign_bucket
from schemas import PixelEvent, SearchResult, encode
from streams.kafka import ensure_topics, producer
from streams.search_client import SearchClient
from streams.settings import Settings
from streams.shoppers import World, generated_world, labelled_world, react
from streams.supervise import WorkerProcess, free_port

__all__ = ["simulate", "run_simulation", "Window"]

CONTROL_SHARE = 0.5


@dataclass
class Window:
    """Outcomes of one bucket within one window of events."""

    searches: int = 0
    converted: int = 0
    revenue: float = 0.0
    clicks: int = 0
    new_clicks: int = 0

    def add(self, other: Window) -> None:
        self.searches += other.searches
        self.converted += other.converted
        self.revenue += other.revenue
        self.clicks += other.clicks
        self.new_clicks += other.new_clicks

    @property
    def conversion(self) -> float:
        return self.converted / self.searches if self.searches else 0.0

    @property
    def revenue_per_search(self) -> float:
        return self.revenue / self.searches if self.searches else 0.0


@dataclass
class SimulationReport:
    events: int = 0
    windows: list[dict[str, Window]] = field(default_factory=list)
    seconds: float = 0.0

    def total(self, bucket: str, last: int | None = None) -> Window:
        out = Window()
        for w in self.windows[-last:] if last else self.windows:
            out.add(w.get(bucket, Window()))
        return out


async def run_simulation(world: World, bootstrap: str, prefix: str, *, events: int, window: int,
                         concurrency: int = 16, seed: int = 1, progress: Any = None) -> SimulationReport:
    """Drive ``events`` shopper events through the pipeline; the worker must serve ``world.tenant``."""
    report = SimulationReport()
    current: dict[str, Window] = {"learning": Window(), "control": Window()}
    report.windows.append(current)
    rng = random.Random(seed)
    pixel = f"{prefix}shoprank.pixel"
    started = time.monotonic()
    counter = {"sessions": 0}

    async with SearchClient(bootstrap, f"{prefix}shoprank.search-requests",
                            f"{prefix}shoprank.search-results") as client, \
            producer(bootstrap, linger_ms=5) as prod:

        async def one_session() -> None:
            nonlocal current
            n = counter["sessions"]
            counter["sessions"] += 1
            session = f"sim-{seed}-{n}"
            user = f"u-{seed}-{n}"
            srng = random.Random(rng.random())
            query = world.pick_query(srng)
            result: SearchResult = await client.search(world.tenant, query.text, timeout_s=60, session_id=session,
                                                       user_id=user, page_size=10)
            if result.error or not result.search_id or not result.items:
                return
            reaction = react(world, query, result.items, srng)
            now = int(time.time() * 1000)
            evs = [_event("impression", world, session, user, result.search_id, now, items=[i.product_id for i in result.items])]
            for rank, pid in reaction.clicks:
                evs.append(_event("click", world, session, user, result.search_id, now, product_id=pid, position=rank))
            for rank, pid in reaction.carts:
                evs.append(_event("add_to_cart", world, session, user, result.search_id, now, product_id=pid,
                                  position=rank, quantity=1, price=world.price[pid], currency="EUR"))
            for rank, pid in reaction.purchases:
                evs.append(_event("purchase", world, session, user, result.search_id, now, product_id=pid,
                                  position=rank, quantity=1, price=world.price[pid], value=world.price[pid],
                                  currency="EUR"))
            key = f"{world.tenant}:{session}".encode()
            for e in evs:
                await prod.send(pixel, encode(e), key=key)
            w = current[assign_bucket(session, CONTROL_SHARE)]
            w.searches += 1
            w.converted += bool(reaction.purchases)
            w.revenue += sum(world.price[p] for _, p in reaction.purchases)
            w.clicks += len(reaction.clicks)
            w.new_clicks += sum(1 for _, p in reaction.clicks if p in world.new_products)
            before = report.events
            report.events += len(evs)
            if before // window != report.events // window and report.events < events:
                current = {"learning": Window(), "control": Window()}
                report.windows.append(current)
            if progress is not None:
                progress(min(report.events, events))

        async def worker_loop() -> None:
            while report.events < events:
                try:
                    await one_session()
                except TimeoutError:
                    continue

        await asyncio.gather(*(worker_loop() for _ in range(concurrency)))
        await prod.flush()
    if not any(b.searches for b in report.windows[-1].values()):
        report.windows.pop()
    report.seconds = time.monotonic() - started
    return report


def _event(etype: str, world: World, session: str, user: str, search_id: str, now: int, **kw: Any) -> PixelEvent:
    return PixelEvent(event_id=uuid.uuid4().hex, tenant=world.tenant, type=etype, user_id=user,  # type: ignore[arg-type]
                      session_id=session, client_ts=now, search_id=search_id, **kw)


def render(report: SimulationReport, console: Console, window: int) -> Table:
    table = Table(title=f"learning ranker vs static control, per {window:,} events", title_justify="left")
    for col in ("events", "searches L/C", "conversion L", "conversion C", "lift", "rev/search L", "rev/search C",
                "new-product clicks L/C"):
        table.add_column(col, justify="right")
    seen = 0
    for w in report.windows:
        seen += window
        lw, cw = w.get("learning", Window()), w.get("control", Window())
        lift = (lw.conversion / cw.conversion - 1) if cw.conversion else float("nan")
        table.add_row(
            f"≤{min(seen, report.events):,}", f"{lw.searches}/{cw.searches}", f"{lw.conversion:.3f}",
            f"{cw.conversion:.3f}", f"{lift:+.0%}", f"{lw.revenue_per_search:.2f}", f"{cw.revenue_per_search:.2f}",
            f"{lw.new_clicks}/{cw.new_clicks}",
        )
    return table


def plot(report: SimulationReport, window: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [(i + 1) * window for i in range(len(report.windows))]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for bucket, style in (("learning", "-o"), ("control", "--s")):
        axes[0].plot(xs, [w.get(bucket, Window()).conversion for w in report.windows], style, label=bucket)
        axes[1].plot(xs, [w.get(bucket, Window()).revenue_per_search for w in report.windows], style, label=bucket)
    axes[0].set_title("conversion (searches with a purchase)")
    axes[1].set_title("revenue per search")
    for ax in axes:
        ax.set_xlabel("shopper events")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@click.command()
@click.option("--data", type=click.Choice(["generated", "labelled"]), default="generated", show_default=True,
              help="Shoppers' ground truth: the catalogue generator's, or a labelled set (--labelled-dir).")
@click.option("--labelled-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=Path("../shared/data/homedepot-dev"), show_default=True)
@click.option("--events", type=click.IntRange(100, 10_000_000), default=50_000, show_default=True)
@click.option("--window", type=click.IntRange(50, 1_000_000), default=5_000, show_default=True)
@click.option("--products", type=click.IntRange(10, 200_000), default=3_000, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 256), default=16, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a PNG of conversion and revenue per search over time.")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the per-window figures as JSON (bench/bench_simulate.py reads them).")
@click.pass_context
def simulate(ctx: click.Context, data: str, labelled_dir: Path, events: int, window: int, products: int,
             concurrency: int, seed: int, plot_path: Path | None, json_out: Path | None) -> None:
    """Simulated shoppers against a fresh worker: learning ranker vs static control, live."""
    from models.export import serving_model
    from streams.broker import resolve_bootstrap
    from streams.demo import _index

    settings: Settings = ctx.ensure_object(dict)["settings"]
    console = Console(stderr=True)
    now = int(time.time() * 1000)
    if data == "labelled":
        if not (labelled_dir / "qrels.txt").exists():
            raise click.ClickException(f"no qrels.txt in {labelled_dir}: pass --labelled-dir DIR "
                                       "(products.jsonl, queries.tsv, qrels.txt)")
        world = labelled_world(labelled_dir, products=products, seed=seed, now_ms=now)
    else:
        world = generated_world(products, seed=seed, now_ms=now)
    console.print(f"[bold]world[/] {data}: {len(world.catalogue):,} products, {len(world.queries)} queries, "
                  f"{len(world.new_products)} new products")
    with console.status("exporting the bundled model to ONNX (first run only)…"):
        serving_model(settings.models.embedder_dir)
    bootstrap, broker = resolve_bootstrap(settings.kafka, start_embedded=True)
    prefix = f"{settings.kafka.topic_prefix}sim{uuid.uuid4().hex[:6]}."
    run_dir = settings.worker.data_dir / "simulate" / prefix.rstrip(".")
    try:
        asyncio.run(ensure_topics(bootstrap, prefix, retention_ms=settings.kafka.retention_ms))
        worker = WorkerProcess(
            bootstrap, app_id="simulate", topic_prefix=prefix, tenants=world.tenant, web_port=free_port(),
            data_dir=run_dir, log_path=run_dir / "worker.log",
            extra_env={"SHOPRANK_STORE_DIR": str(run_dir / "index"), "SHOPRANK_MODELS_DIR": str(settings.models.dir),
                       "SHOPRANK_MODELS_EMBEDDER": settings.models.embedder,
                       "SHOPRANK_RANKER_CONTROL_SHARE": str(CONTROL_SHARE)},
        )
        run_dir.mkdir(parents=True, exist_ok=True)
        with console.status("starting worker…"):
            worker.start()
        try:
            _index(console, worker, bootstrap, f"{prefix}shoprank.catalogue", world.catalogue, 1800)
            from rich.progress import Progress

            with Progress(console=console, transient=True) as prog:
                task = prog.add_task("shoppers searching, clicking, buying", total=events)
                report = asyncio.run(run_simulation(
                    world, bootstrap, prefix, events=events, window=window, concurrency=concurrency, seed=seed,
                    progress=lambda done: prog.update(task, completed=done)))
            learned = worker.get(f"/v1/analytics/{world.tenant}")
        finally:
            worker.stop()
    finally:
        if broker is not None:
            broker.stop()
    out = Console()
    out.print(render(report, out, window))
    last = max(1, len(report.windows) // 5)
    lw, cw = report.total("learning", last), report.total("control", last)
    lift = lw.conversion / cw.conversion - 1 if cw.conversion else float("nan")
    out.print(f"{report.events:,} events, {sum(w.searches for b in report.windows for w in b.values()):,} searches "
              f"in {report.seconds:.0f} s; last {last} window(s): conversion {lw.conversion:.3f} vs {cw.conversion:.3f} "
              f"({lift:+.0%}), revenue/search {lw.revenue_per_search:.2f} vs {cw.revenue_per_search:.2f}")
    out.print(f"worker's own analytics (attributed): {learned.get('conversion_lift')} conversion lift, "
              f"coverage {learned.get('query_coverage')}")
    if plot_path:
        plot(report, window, plot_path, f"shoprank simulate ({data}, {report.events:,} events)")
        out.print(f"plot: {plot_path}")
    if json_out:
        json_out.write_bytes(orjson.dumps({
            "data": data, "events": report.events, "seconds": report.seconds, "window": window,
            "products": len(world.catalogue), "queries": len(world.queries),
            "windows": [{b: vars(w) for b, w in ws.items()} for ws in report.windows],
            "worker_analytics": learned,
        }))
