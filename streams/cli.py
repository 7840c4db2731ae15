"""The ``shoprank`` command line: broker, worker, produce, tail, topics, demo.

Every failure a user can cause ends in one line on stderr that says what to do, and a non-zero exit.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

import click
import orjson
from pydantic import ValidationError

from schemas import TOPICS, topic_spec
from streams.exceptions import BrokerStartError, BrokerUnavailable, ShoprankError, UserInputError
from streams.settings import Settings, load_settings

__all__ = ["main", "cli"]

_EXIT_USAGE = 2
_EXIT_FAILURE = 1


def _settings(ctx: click.Context) -> Settings:
    return ctx.ensure_object(dict)["settings"]  # type: ignore[no-any-return]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bootstrap", envvar="SHOPRANK_KAFKA_BOOTSTRAP", help="Kafka bootstrap servers (host:port,…).")
@click.option("--topic-prefix", default=None, help="Prefix of every topic name (isolates deployments).")
@click.pass_context
def cli(ctx: click.Context, bootstrap: str | None, topic_prefix: str | None) -> None:
    """shoprank: streaming, self-learning search and ranking for online shops."""
    try:
        settings = load_settings(kafka={"bootstrap": bootstrap, "topic_prefix": topic_prefix})
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise UserInputError(f"bad setting {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    ctx.ensure_object(dict)["settings"] = settings


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default 19092).")
@click.option("--host", default=None, help="Listen address (default 127.0.0.1).")
@click.pass_context
def broker(ctx: click.Context, port: int | None, host: str | None) -> None:
    """Run the embedded Kafka-protocol broker (Tansu, memory only) until Ctrl-C."""
    from streams.broker import EmbeddedBroker

    kafka = _settings(ctx).kafka
    b = EmbeddedBroker(host or kafka.embedded_host, port or kafka.embedded_port)
    b.start()
    click.echo(f"broker ready at {b.bootstrap} (memory only: its log is lost when it stops)", err=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            if not b.running():
                raise BrokerStartError("the broker process exited unexpectedly")
    finally:
        b.stop()


@cli.command()
@click.option("--web-port", type=click.IntRange(1, 65535), default=None, help="HTTP port (default 6066).")
@click.option("--app-id", default=None, help="Consumer group / app id (default shoprank).")
@click.option("--loglevel", type=click.Choice(["crit", "error", "warn", "info", "debug"]), default=None)
@click.option("--tenants", default=None, help="Comma-separated tenant ids served.")
@click.pass_context
def worker(
    ctx: click.Context, web_port: int | None, app_id: str | None, loglevel: str | None, tenants: str | None
) -> None:
    """Run a stream worker (starts or reuses the embedded broker unless --bootstrap is given)."""
    from streams.worker import run_worker

    base = _settings(ctx)
    settings = load_settings(
        kafka=base.kafka.model_dump(),
        worker={"web_port": web_port, "app_id": app_id, "loglevel": loglevel},
        tenants=tenants,
    )
    sys.exit(run_worker(settings))


def _resolve(settings: Settings) -> str:
    from streams.broker import resolve_bootstrap

    # produce, tail and topics only reuse a broker: one they started would take its
    # memory-only log with it when they exit.
    bootstrap, _ = resolve_bootstrap(settings.kafka, start_embedded=False)
    return bootstrap


def _topic_name(settings: Settings, name: str) -> str:
    try:
        return settings.topic(name)
    except KeyError as exc:
        raise UserInputError(str(exc.args[0])) from None


@cli.command()
@click.argument("topic")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.pass_context
def produce(ctx: click.Context, topic: str, file: Path) -> None:
    """Send each JSON line of FILE (or - for stdin) to TOPIC, keyed as the topic's contract says."""
    from streams.kafka import ensure_topics, producer

    settings = _settings(ctx)
    name = _topic_name(settings, topic)
    spec = topic_spec(topic)
    records = _read_json_lines(file)
    bootstrap = _resolve(settings)

    async def send() -> None:
        # From its spec if no worker created it yet: naming a missing topic gets the broker's defaults.
        await ensure_topics(bootstrap, settings.kafka.topic_prefix, [spec], settings.kafka.retention_ms)
        async with producer(bootstrap, linger_ms=5) as prod:
            for obj, line in records:
                key = spec.key(obj) if isinstance(obj, dict) else None
                await prod.send(name, line, key=key.encode() if key else None)

    asyncio.run(send())
    click.echo(f"sent {len(records)} messages to {name}", err=True)


def _read_json_lines(file: Path) -> list[tuple[Any, bytes]]:
    """All lines parsed up front, so a bad line sends nothing rather than half a file."""
    try:
        raw = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except FileNotFoundError:
        raise UserInputError(f"{file}: no such file — give a JSON-lines file or - for stdin") from None
    except OSError as exc:
        raise UserInputError(f"{file}: cannot read ({exc.strerror})") from None
    out = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((orjson.loads(line), line))
        except orjson.JSONDecodeError as exc:
            raise UserInputError(f"{file}:{n}: not JSON ({exc}) — nothing was sent") from None
    return out


@cli.command()
@click.argument("topic")
@click.option("--max", "max_messages", type=click.IntRange(min=1), default=None, help="Stop after N messages.")
@click.option("--follow", "-f", is_flag=True, help="Keep waiting for new messages.")
@click.option("--meta", is_flag=True, help="Wrap each value with partition, offset, key and timestamp.")
@click.option("--idle", type=click.FloatRange(min=0.1), default=2.0, help="Stop after this many idle seconds.")
@click.pass_context
def tail(ctx: click.Context, topic: str, max_messages: int | None, follow: bool, meta: bool, idle: float) -> None:
    """Print TOPIC's messages from the beginning, one per line."""
    from streams.kafka import read_topic

    settings = _settings(ctx)
    name = _topic_name(settings, topic)
    bootstrap = _resolve(settings)

    async def run() -> None:
        async for tp, offset, key, value, ts in read_topic(
            bootstrap, name, idle_timeout_s=idle, max_messages=max_messages, follow=follow
        ):
            if meta:
                line = orjson.dumps(
                    {
                        "partition": tp.partition,
                        "offset": offset,
                        "timestamp": ts,
                        "key": key.decode("utf-8", "replace") if key else None,
                        "value": _json_or_b64(value),
                    }
                )
                sys.stdout.buffer.write(line + b"\n")
            else:
                sys.stdout.buffer.write((value or b"") + b"\n")
            sys.stdout.flush()

    asyncio.run(run())


def _json_or_b64(value: bytes | None) -> Any:
    if value is None:
        return None
    try:
        return orjson.Fragment(value) if orjson.loads(value) is not None else None
    except orjson.JSONDecodeError:
        return {"base64": base64.b64encode(value).decode()}


@cli.command()
@click.option("--create/--no-create", default=True, help="Create missing topics (default) or only list.")
@click.pass_context
def topics(ctx: click.Context, create: bool) -> None:
    """List shoprank's topics with their partitions, creating missing ones."""
    from rich.console import Console
    from rich.table import Table

    from streams.kafka import describe_topics, ensure_topics

    settings = _settings(ctx)
    bootstrap = _resolve(settings)
    prefix = settings.kafka.topic_prefix
    created = asyncio.run(ensure_topics(bootstrap, prefix, retention_ms=settings.kafka.retention_ms)) if create else []
    names = [spec.full_name(prefix) for spec in TOPICS.values()]
    found = asyncio.run(describe_topics(bootstrap, names))
    table = Table("topic", "key", "partitions", "compacted", "status")
    for spec in TOPICS.values():
        full = spec.full_name(prefix)
        status = "created" if full in created else ("ok" if full in found else "missing")
        table.add_row(full, spec.key_doc, str(found.get(full, "-")), "yes" if spec.compacted else "", status)
    Console().print(table)


@cli.command()
@click.argument("query")
@click.option("--tenant", default="demo", show_default=True)
@click.option("--size", "page_size", type=click.IntRange(1, 100), default=10, show_default=True)
@click.option("--category", default=None, help="Filter: any level of the category path.")
@click.option("--brand", "brands", multiple=True, help="Filter: brand (repeatable).")
@click.option("--min-price", type=click.FloatRange(min=0), default=None)
@click.option("--max-price", type=click.FloatRange(min=0), default=None)
@click.option("--in-stock", is_flag=True, default=None, help="Filter: only products in stock.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the raw SearchResult.")
@click.pass_context
def search(ctx: click.Context, query: str, tenant: str, page_size: int, category: str | None, brands: tuple[str, ...],
           min_price: float | None, max_price: float | None, in_stock: bool | None, timeout: float,
           as_json: bool) -> None:
    """Search over Kafka: send a request, print the reply (needs a running worker)."""
    from schemas import SearchFilters, encode
    from streams.search_client import SearchClient, SearchTimeout

    settings = _settings(ctx)
    bootstrap = _resolve(settings)
    try:
        filters = SearchFilters(category=category, brand=list(brands) or None, price_min=min_price,
                                price_max=max_price, in_stock=in_stock)
    except ValidationError as exc:
        raise UserInputError(f"bad filter: {exc.errors(include_url=False)[0]['msg']}") from None

    async def run() -> Any:
        async with SearchClient(bootstrap, settings.topic("search-requests"), settings.topic("search-results")) as c:
            return await c.search(tenant, query, timeout_s=timeout, page_size=page_size, filters=filters)

    try:
        result = asyncio.run(run())
    except SearchTimeout as exc:
        raise UserInputError(str(exc)) from None
    except ValidationError as exc:
        raise UserInputError(f"bad request: {exc.errors(include_url=False)[0]['msg']}") from None
    if as_json:
        sys.stdout.buffer.write(encode(result) + b"\n")
        return
    if result.error:
        raise UserInputError(f"{result.error.code}: {result.error.message}")
    from rich.console import Console

    from streams.render import print_result

    print_result(Console(), result)


@cli.command("eval")
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Labelled set: products.jsonl, queries.tsv, qrels.txt.")
@click.option("--queries", "max_queries", type=click.IntRange(min=1), default=None, help="Sample this many queries.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("eval-results"),
              show_default=True, help="Where the markdown table and PNG plot go.")
@click.option("--store-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Reuse this Qdrant Edge directory (indexes once; default: a fresh temporary one).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--dense-weight", "dense_weights", type=click.FloatRange(0.0, 1.0), multiple=True,
              help="Also score relative fusion with this dense weight (repeat to try several; a row each).")
@click.pass_context
def eval_cmd(ctx: click.Context, data_dir: Path, max_queries: int | None, out_dir: Path, store_dir: Path | None,
             seed: int, dense_weights: tuple[float, ...]) -> None:
    """NDCG@10, MRR@10, Recall@100 of keyword, dense and hybrid search (retrieval and re-ranking)."""
    import tempfile

    from rich.console import Console
    from rich.progress import Progress

    from models.embedder import OnnxEmbedder
    from models.evaluation import evaluate, load_labelled_set
    from models.export import serving_model
    from models.store import open_store
    from streams.resources import store_fusion

    settings = _settings(ctx)
    for name in ("products.jsonl", "queries.tsv", "qrels.txt"):
        if not (data_dir / name).exists():
            raise UserInputError(f"{data_dir} has no {name} — a labelled set needs products.jsonl, queries.tsv, qrels.txt")
    console = Console(stderr=True)
    data = load_labelled_set(data_dir, max_queries=max_queries, seed=seed)
    serving_model(settings.models.embedder_dir)
    embedder = OnnxEmbedder(settings.models.embedder_dir)
    with tempfile.TemporaryDirectory() as tmp:
        root = store_dir or Path(tmp)
        store = open_store("edge", root=root)
        already = (root / "eval").exists() and store_dir is not None
        try:
            with Progress(console=console) as progress:
                tasks: dict[str, Any] = {}

                def tick(stage: str, done: int, total: int) -> None:
                    if stage not in tasks:
                        tasks[stage] = progress.add_task(stage, total=total)
                    progress.update(tasks[stage], completed=done + 1)

                report = evaluate(data, store, embedder, index=not already, progress=tick,
                                  fusion=store_fusion(settings.store), dense_weights=dense_weights)
        finally:
            store.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    md = report.markdown()
    (out_dir / f"relevance-{data.name}.md").write_text(md)
    png = report.plot(out_dir / f"relevance-{data.name}.png")
    click.echo(md)
    click.echo(f"wrote {out_dir / f'relevance-{data.name}.md'} and {png}", err=True)


@cli.group()
def models() -> None:
    """Exported embedding models."""


@models.command("export")
@click.option("--dir", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Target directory (default: SHOPRANK_MODELS_DIR/base-int8, or base with --fp32).")
@click.option("--int8/--fp32", "int8", default=True, show_default=True,
              help="Quantise to int8 (dynamic, per channel), or keep fp32 weights.")
@click.option("--force", is_flag=True, help="Export again even if the directory holds this model.")
@click.pass_context
def models_export(ctx: click.Context, out_dir: Path | None, int8: bool, force: bool) -> None:
    """Export the bundled all-MiniLM-L6-v2 to ONNX (once; later runs reuse it)."""
    from models.exceptions import ModelError
    from models.export import BASE_FP32_DIR, BASE_INT8_DIR, export_base_model

    settings = _settings(ctx)
    target = out_dir or settings.models.dir / (BASE_INT8_DIR if int8 else BASE_FP32_DIR)
    try:
        manifest = export_base_model(target, quantize=int8, force=force)
    except ModelError as exc:
        raise UserInputError(str(exc)) from None
    click.echo(f"{manifest.version}: {manifest.dimensions} dims, {manifest.onnx_file} in {target}")


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"shoprank: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, turning every expected failure into one line."""
    from streams.cli_lag import lag
    from streams.demo import demo

    cli.add_command(demo)
    cli.add_command(lag)
    from streams.cli_rules import rules

    cli.add_command(rules)
    from streams.simulate import simulate

    cli.add_command(simulate)
    from streams.cli_analytics import analytics

    cli.add_command(analytics)
    from streams.cli_keys import keys

    cli.add_command(keys)
    from streams.cli_privacy import forget_user

    cli.add_command(forget_user)
    from streams.cli_models import register_commands

    register_commands(models)
    try:
        cli.main(args=argv, prog_name="shoprank", standalone_mode=False)
    except click.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx else "shoprank"
        _fail(f"{exc.format_message()} (see `{cmd} --help`)", _EXIT_USAGE)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code or _EXIT_FAILURE)
    except click.Abort:
        _fail("aborted", 130)
    except (BrokerUnavailable, BrokerStartError, UserInputError) as exc:
        _fail(str(exc), _EXIT_FAILURE)
    except ShoprankError as exc:
        _fail(str(exc), _EXIT_FAILURE)
    except KeyboardInterrupt:
        _fail("interrupted", 130)


if __name__ == "__main__":
    main()
