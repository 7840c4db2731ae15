"""``shoprank models train | list | promote | rollback | retrain``: per-tenant fine-tuned embedding models.

``train`` fine-tunes the bundled MiniLM on a labelled set or on attributed interactions, registers the
result under ``SHOPRANK_MODELS_DIR/tenants/<tenant>/<version>`` and runs the promotion gate; ``promote``
and ``rollback`` move the tenant's serving pointer, which workers pick up and hot-swap to.
The work lives in ``models.training``; this module only reads options and prints.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import click

from streams.exceptions import UserInputError
from streams.settings import Settings

__all__ = ["register_commands"]

_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")  # schemas.base.TenantId


def _settings(ctx: click.Context) -> Settings:
    return ctx.ensure_object(dict)["settings"]  # type: ignore[no-any-return]


def _tenant(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not _TENANT.match(value):
        raise click.BadParameter(f"{value!r} is not a tenant id — use 1 to 64 of a-z, 0-9, '_' and '-', "
                                 "starting with a letter or digit")
    return value


_tenant_option = click.option("--tenant", required=True, callback=_tenant, help="Tenant id (lower-case slug).")


@click.command("train")
@_tenant_option
@click.option("--labelled", "labelled_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Labelled set: products.jsonl, queries.tsv, qrels.txt.")
@click.option("--interactions", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="AttributedInteraction JSON lines (e.g. `shoprank tail interactions` output).")
@click.option("--catalogue", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CatalogueUpdate JSON lines giving product texts (needed with --interactions).")
@click.option("--out", "work_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Checkpoints and the trained folder; rerun with the same --out to resume "
                   "(default: SHOPRANK_MODELS_DIR/training/TENANT).")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Stop training cleanly after this long (a checkpoint is kept).")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop after this many steps.")
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=3e-5, show_default=True)
@click.option("--split", "splits", type=click.Choice(["time", "query", "product"]), multiple=True,
              help="Held-out splits the gate judges on (repeatable; default: all that the data allows).")
@click.option("--test-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
              show_default=True)
@click.option("--objective", default=None,
              help="conversion=…,revenue=…,margin=… (default: the tenant's SHOPRANK_RANKER_OBJECTIVE).")
@click.option("--half-life-days", type=float, default=30.0, show_default=True, help="Interaction weight decay.")
@click.option("--queries", "max_queries", type=click.IntRange(min=1), default=None,
              help="Labelled set: sample this many queries.")
@click.option("--hard-negatives", type=click.IntRange(min=0), default=5, show_default=True,
              help="Mined per query with the serving model (0: only labelled or skipped negatives).")
@click.option("--min-gain", type=float, default=0.01, show_default=True,
              help="Relative NDCG@10 gain over the serving model needed on every held-out split.")
@click.option("--no-gate", is_flag=True, help="Register as a candidate without judging it.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_context
def train_cmd(ctx: click.Context, tenant: str, labelled_dir: Path | None, interactions: Path | None,
              catalogue: Path | None, work_dir: Path | None, max_minutes: float, max_steps: int | None, epochs: int,
              batch_size: int, lr: float, splits: tuple[str, ...], test_fraction: float, objective: str | None,
              half_life_days: float, max_queries: int | None, hard_negatives: int, min_gain: float, no_gate: bool,
              seed: int) -> None:
    """Fine-tune the embedding model for one tenant, register it, and promote it if it passes the gate."""
    from models.exceptions import ModelError
    from models.export import serving_model
    from models.ranker.online import Objective
    from models.training.data import (
        SPLITS,
        OutcomeWeights,
        examples_from_interactions,
        examples_from_labelled,
        read_catalogue,
    )
    from models.training.gate import GateConfig
    from models.training.pipeline import RunConfig, train_tenant
    from models.training.trainer import TrainConfig

    settings = _settings(ctx)
    if (labelled_dir is None) == (interactions is None):
        raise UserInputError("give one of --labelled DIR or --interactions FILE.jsonl")
    if interactions is not None and catalogue is None:
        raise UserInputError("--interactions needs --catalogue FILE.jsonl for the product texts")
    try:
        obj = Objective.parse(objective or settings.ranker.objective_for(tenant))
    except ValueError as exc:
        raise UserInputError(f"--objective: {exc}") from None
    if labelled_dir is not None:
        from models.evaluation import load_labelled_set

        for name in ("products.jsonl", "queries.tsv", "qrels.txt"):
            if not (labelled_dir / name).exists():
                raise UserInputError(f"{labelled_dir} has no {name} — a labelled set needs products.jsonl, "
                                     "queries.tsv, qrels.txt")
        rows = examples_from_labelled(load_labelled_set(labelled_dir, tenant=tenant, max_queries=max_queries,
                                                        seed=seed))
        source = f"labelled:{labelled_dir.resolve().name}"
    else:
        assert interactions is not None and catalogue is not None
        rows = examples_from_interactions(interactions, read_catalogue(catalogue, tenant=tenant), tenant=tenant,
                                          weights=OutcomeWeights(objective=obj, half_life_days=half_life_days))
        source = f"interactions:{interactions.name}"
    if len(rows) < 4:
        raise UserInputError(f"only {len(rows)} usable rows for {tenant!r} — need labelled or attributed "
                             "interactions with products in the catalogue")
    click.echo(f"{len(rows)} rows from {source}", err=True)
    base_dir = settings.models.embedder_dir
    serving_model(base_dir)
    run = RunConfig(test_fraction=test_fraction, splits=tuple(splits) or SPLITS,  # type: ignore[arg-type]
                    mined_per_query=hard_negatives, gate=not no_gate,
                    gate_config=GateConfig(min_relative_gain=min_gain), seed=seed)
    tc = TrainConfig(batch_size=batch_size, epochs=epochs, max_steps=max_steps, max_minutes=max_minutes, lr=lr,
                     seed=seed)
    try:
        result = train_tenant(rows, models_dir=settings.models.dir, tenant=tenant, base_dir=base_dir,
                              work_dir=work_dir or settings.models.dir / "training" / tenant, source=source,
                              objective=obj, config=run, train_config=tc, log=lambda m: click.echo(m, err=True))
    except ModelError as exc:
        raise UserInputError(str(exc)) from None
    m = result.manifest
    for split, scores in m.metrics.items():
        click.echo(f"{split:8} NDCG@10 candidate {scores['candidate']:.4f}  serving {scores['serving']:.4f}  "
                   f"({scores['relative_gain']:+.2%})")
    click.echo(f"{m.version}: {m.status} — {m.reason}")


@click.command("list")
@_tenant_option
@click.pass_context
def list_cmd(ctx: click.Context, tenant: str) -> None:
    """The tenant's model versions, oldest first, with status, held-out NDCG@10 and the reason."""
    from models.training.registry import list_versions, serving_version

    models_dir = _settings(ctx).models.dir
    current = serving_version(models_dir, tenant)
    versions = list_versions(models_dir, tenant)
    if not versions:
        click.echo(f"no trained models for {tenant!r} — train one with `shoprank models train --tenant {tenant}`")
        return
    for m in versions:
        mark = "*" if m.version == current else " "
        created = datetime.fromtimestamp(m.created_at / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        scores = " ".join(f"{k}={v['candidate']:.3f}" for k, v in sorted(m.metrics.items())) or "-"
        click.echo(f"{mark} {m.version}  {m.status:9}  {created}  {scores}  {m.reason}")
    click.echo(f"serving: {current or 'base model'}")


@click.command("promote")
@_tenant_option
@click.argument("version")
@click.option("--reason", default="promoted by hand", show_default=True)
@click.pass_context
def promote_cmd(ctx: click.Context, tenant: str, version: str, reason: str) -> None:
    """Make VERSION serve the tenant (workers hot-swap to it); the one serving until now is retired."""
    from models.exceptions import ModelError
    from models.training.registry import promote

    try:
        m = promote(_settings(ctx).models.dir, tenant, version, reason=reason)
    except ModelError as exc:
        raise UserInputError(str(exc)) from None
    click.echo(f"{tenant}: {m.version} serving")


@click.command("rollback")
@_tenant_option
@click.option("--reason", default="rolled back by hand", show_default=True)
@click.pass_context
def rollback_cmd(ctx: click.Context, tenant: str, reason: str) -> None:
    """Undo the latest promotion: the version before it (or the base model) serves again."""
    from models.exceptions import ModelError
    from models.training.registry import rollback

    try:
        target = rollback(_settings(ctx).models.dir, tenant, reason=reason)
    except ModelError as exc:
        raise UserInputError(str(exc)) from None
    click.echo(f"{tenant}: {target or 'base model'} serving")


@click.command("retrain")
@click.option("--tenant", "tenants", multiple=True, callback=lambda c, p, v: tuple(_tenant(c, p, t) for t in v),
              help="Only these tenants (repeatable; default: SHOPRANK_TENANTS).")
@click.option("--once", is_flag=True, help="One cycle (collect, train what is due) and exit.")
@click.option("--status", "status_only", is_flag=True,
              help="Collect, print each tenant's data and whether a run is due, and exit without training.")
@click.pass_context
def retrain_cmd(ctx: click.Context, tenants: tuple[str, ...], once: bool, status_only: bool) -> None:
    """Retrain each tenant's model from its attributed outcomes when due (new data or elapsed time).

    Runs until stopped, checking every SHOPRANK_RETRAIN_CHECK_S; triggers and budget are the
    SHOPRANK_RETRAIN_* settings. A model that passes the gate is promoted and the workers hot-swap to it.
    """
    import asyncio
    import logging
    import signal
    import threading

    from models.exceptions import ModelError
    from streams.broker import resolve_bootstrap
    from streams.retrain import CollectReport, Retrainer

    settings = _settings(ctx)
    bootstrap, _ = resolve_bootstrap(settings.kafka, start_embedded=False)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        retrainer = Retrainer(settings, bootstrap, tenants=tenants or None)
    except ModelError as exc:
        raise UserInputError(str(exc)) from None
    try:
        if status_only:
            report = asyncio.run(retrainer.collect())
            click.echo(f"collected {report.interactions} interactions, {report.catalogue_texts} product texts",
                       err=True)
            for tenant, row in retrainer.status().items():
                click.echo(f"{tenant}: {row['positives']} positives, {row['products']} products, "
                           f"{row['runs']} runs, last {row['last_version'] or '-'} ({row['last_status'] or '-'}); "
                           f"{'DUE' if row['due'] else 'not due'}: {row['reason']}")
            return
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())

        def on_cycle(collected: CollectReport, results: dict[str, dict[str, object]]) -> None:
            click.echo(f"collected {collected.interactions} interactions, {collected.catalogue_texts} product "
                       f"texts" + (f", dead letters {collected.dead_letters}" if collected.dead_letters else ""),
                       err=True)
            for tenant, r in results.items():
                click.echo(f"{tenant}: {r.get('version') or '-'} {r['status']} — {r['reason']}")

        retrainer.run(once=once, stop=stop, on_cycle=on_cycle)
    finally:
        retrainer.close()


def register_commands(group: click.Group) -> None:
    """Add train, list, promote, rollback and retrain to the ``shoprank models`` group."""
    for command in (train_cmd, list_cmd, promote_cmd, rollback_cmd, retrain_cmd):
        group.add_command(command)
