"""``shoprank rules add | list | rm``: merchandising rules on the compacted rules topic.

``add`` publishes a rule (an existing ``--id`` is replaced), ``rm`` publishes its ``deleted`` version, and
``list`` reads the topic to its end and shows the latest version of each rule. Workers pick changes up
from the topic within about a second. Invalid input exits 2 with one line naming the fix.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import click
import orjson
from pydantic import ValidationError

from models.rules import normalise, rule_status
from schemas import MerchandisingRule, RuleTarget, encode
from streams.exceptions import UserInputError
from streams.settings import Settings

__all__ = ["rules"]

_TENANT_HELP = "Tenant id (lower-case slug)."
_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")  # schemas.base.TenantId


def _settings(ctx: click.Context) -> Settings:
    return ctx.ensure_object(dict)["settings"]  # type: ignore[no-any-return]


def _bootstrap(settings: Settings) -> str:
    from streams.broker import resolve_bootstrap

    # Reuse only: a broker started here would take its memory-only log, and the rule, with it on exit.
    bootstrap, _ = resolve_bootstrap(settings.kafka, start_embedded=False)
    return bootstrap


def _tenant(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not _TENANT.match(value):
        raise click.BadParameter(f"{value!r} is not a tenant id — use 1 to 64 of a-z, 0-9, '_' and '-', "
                                 "starting with a letter or digit")
    return value


def _epoch_ms(value: str | None, option: str) -> int | None:
    """ISO 8601 → epoch ms; a time without an offset is UTC."""
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time — e.g. 2026-12-01T09:00 or 2026-12-01T09:00+01:00",
                                 param_hint=option) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%MZ")


def _describe(r: MerchandisingRule) -> str:
    t = r.target
    what = (f"product {t.product_id}" if t.product_id else f"brand {t.brand}" if t.brand
            else f"category {t.category}" if t.category
            else "attribute " + ", ".join(f"{k}={v}" for k, v in (t.attribute or {}).items()))
    arg = f" at {r.position}" if r.action == "pin" else (f" ×{r.factor:g}" if r.factor is not None else "")
    return f"{r.action} {what}{arg}"


def _scope(r: MerchandisingRule) -> str:
    parts = ([f"queries {', '.join(r.queries)}"] if r.queries else []) + (
        [f"in {', '.join(r.categories)}"] if r.categories else [])
    return "; ".join(parts) or "every search"


def _window(r: MerchandisingRule) -> str:
    if r.starts_at is None and r.ends_at is None:
        return "always"
    start = f"from {_iso(r.starts_at)}" if r.starts_at is not None else ""
    end = f"until {_iso(r.ends_at)}" if r.ends_at is not None else ""
    return " ".join(p for p in (start, end) if p)


def _target(product: str | None, brand: str | None, category: str | None, attributes: tuple[str, ...]) -> RuleTarget:
    given = [name for name, v in (("--product", product), ("--brand", brand), ("--category", category),
                                  ("--attribute", attributes)) if v]
    if len(given) != 1:
        raise click.UsageError(
            "name exactly one target: --product ID, --brand B, --category C or --attribute name=value"
            + (f" (got {', '.join(given)})" if given else "")
        )
    attr: dict[str, str] | None = None
    if attributes:
        attr = {}
        for pair in attributes:
            name, sep, value = pair.partition("=")
            if not sep or not name.strip() or not value.strip():
                raise click.BadParameter(f"{pair!r} is not name=value — e.g. --attribute color=red",
                                         param_hint="--attribute")
            attr[name.strip()] = value.strip()
    return RuleTarget(product_id=product, brand=brand, category=category, attribute=attr)


def _check_action_args(action: str, target: RuleTarget, position: int | None, factor: float | None) -> None:
    if action == "pin":
        if position is None or target.product_id is None:
            raise click.UsageError("pin needs --product ID and --position N (0-based slot)")
    elif position is not None:
        raise click.UsageError("--position applies to pin only")
    if action in ("boost", "bury"):
        if factor is None:
            raise click.UsageError(f"{action} needs --factor F ({'above' if action == 'boost' else 'below'} 1)")
        if action == "boost" and factor <= 1:
            raise click.UsageError(f"boost needs --factor above 1 (got {factor:g}); use bury to lower products")
        if action == "bury" and not 0 < factor < 1:
            raise click.UsageError(f"bury needs --factor between 0 and 1 (got {factor:g}); use boost to raise products")
    elif factor is not None:
        raise click.UsageError("--factor applies to boost and bury only")


def _rule_error(exc: ValidationError) -> click.UsageError:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"])
    return click.UsageError(f"invalid rule{f' ({where})' if where else ''}: {err['msg']}")


def _publish(bootstrap: str, settings: Settings, rule: MerchandisingRule) -> None:
    from schemas.topics import TOPICS
    from streams.kafka import ensure_topics, producer

    async def send() -> None:
        # Created from its spec (one partition, compacted) when no worker has yet: a producer naming a
        # missing topic would have the broker create it with its defaults.
        await ensure_topics(bootstrap, settings.kafka.topic_prefix, [TOPICS["rules"]], settings.kafka.retention_ms)
        async with producer(bootstrap) as prod:
            await prod.send_and_wait(settings.topic("rules"), encode(rule), key=f"{rule.tenant}:{rule.rule_id}".encode())

    asyncio.run(send())


def _read(settings: Settings, bootstrap: str) -> Any:
    from streams.rules import read_rules

    try:
        return asyncio.run(read_rules(bootstrap, settings.topic("rules")))
    except LookupError as exc:
        raise UserInputError(str(exc)) from None
    except TimeoutError:
        raise UserInputError(f"could not read {settings.topic('rules')} to its end within 30 s — is the broker busy?") \
            from None


@click.group()
def rules() -> None:
    """Merchandising rules: pin, boost, bury or hide products, per tenant."""


@rules.command("add")
@click.option("--tenant", required=True, callback=_tenant, help=_TENANT_HELP)
@click.option("--action", type=click.Choice(["pin", "boost", "bury", "hide"]), required=True)
@click.option("--product", default=None, help="Target: one product id.")
@click.option("--brand", default=None, help="Target: every product of this brand.")
@click.option("--category", default=None, help="Target: products with this category at any level of their path.")
@click.option("--attribute", "attributes", multiple=True, metavar="NAME=VALUE",
              help="Target: products whose attribute has this value (repeatable: all must match).")
@click.option("--position", type=click.IntRange(min=0), default=None, help="pin: 0-based slot on the page.")
@click.option("--factor", type=float, default=None, help="boost (>1) or bury (<1): score multiplier.")
@click.option("--query", "queries", multiple=True, help="Only for this query (repeatable; case and spacing ignored).")
@click.option("--in-category", "categories", multiple=True,
              help="Only when the search filters on this category (repeatable).")
@click.option("--starts", default=None, metavar="ISO", help="Active from this time (ISO 8601; UTC unless an offset).")
@click.option("--ends", default=None, metavar="ISO", help="Active until this time (ISO 8601; UTC unless an offset).")
@click.option("--id", "rule_id", default=None, help="Rule id (default: generated); an existing id is replaced.")
@click.pass_context
def add(ctx: click.Context, tenant: str, action: str, product: str | None, brand: str | None, category: str | None,
        attributes: tuple[str, ...], position: int | None, factor: float | None, queries: tuple[str, ...],
        categories: tuple[str, ...], starts: str | None, ends: str | None, rule_id: str | None) -> None:
    """Publish a rule and print its id."""
    settings = _settings(ctx)
    target = _checked(lambda: _target(product, brand, category, attributes))
    _check_action_args(action, target, position, factor)
    starts_at, ends_at = _epoch_ms(starts, "--starts"), _epoch_ms(ends, "--ends")
    if starts_at is not None and ends_at is not None and ends_at <= starts_at:
        raise click.UsageError("--ends must be after --starts")
    if any(not normalise(q) for q in queries):
        raise click.BadParameter("a query must not be blank", param_hint="--query")
    now = int(time.time() * 1000)
    rule = _checked(lambda: MerchandisingRule(
        rule_id=rule_id or f"r-{uuid.uuid4().hex[:12]}",
        tenant=tenant,
        action=action,  # type: ignore[arg-type]
        target=target,
        position=position,
        factor=factor,
        queries=list(dict.fromkeys(normalise(q) for q in queries)) or None,
        categories=[c.strip() for c in categories] or None,
        starts_at=starts_at,
        ends_at=ends_at,
        updated_at=now,
    ))
    _publish(_bootstrap(settings), settings, rule)
    if rule_status(rule, now) == "expired":
        click.echo(f"note: rule {rule.rule_id} has already ended; it will not apply", err=True)
    click.echo(rule.rule_id)


def _checked(build: Any) -> Any:
    try:
        return build()
    except ValidationError as exc:
        raise _rule_error(exc) from None


@rules.command("list")
@click.option("--tenant", required=True, callback=_tenant, help=_TENANT_HELP)
@click.option("--json", "as_json", is_flag=True, help="One JSON rule a line, with its status.")
@click.option("--all", "show_all", is_flag=True, help="Include removed rules.")
@click.pass_context
def list_rules(ctx: click.Context, tenant: str, as_json: bool, show_all: bool) -> None:
    """The tenant's rules: latest version of each, with active / scheduled / expired status."""
    settings = _settings(ctx)
    fold = _read(settings, _bootstrap(settings))
    now = int(time.time() * 1000)
    found = fold.rules(tenant, include_deleted=show_all)
    if as_json:
        for rule in found:
            line = orjson.dumps({**rule.model_dump(mode="json", exclude_none=True), "status": rule_status(rule, now)})
            sys.stdout.buffer.write(line + b"\n")
        sys.stdout.flush()
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"rules of {tenant}")
    table.add_column("id", no_wrap=True)
    table.add_column("rule")
    table.add_column("scope")
    table.add_column("when")
    table.add_column("status", no_wrap=True)
    for r in found:
        table.add_row(r.rule_id, _describe(r), _scope(r), _window(r), rule_status(r, now))
    Console().print(table)


@rules.command("rm")
@click.option("--tenant", required=True, callback=_tenant, help=_TENANT_HELP)
@click.argument("rule_id")
@click.pass_context
def rm(ctx: click.Context, tenant: str, rule_id: str) -> None:
    """Remove a rule (publishes its deleted version)."""
    settings = _settings(ctx)
    bootstrap = _bootstrap(settings)
    current = _read(settings, bootstrap).latest.get((tenant, rule_id))
    if current is None or current.deleted:
        raise UserInputError(f"tenant {tenant!r} has no rule {rule_id!r} — `shoprank rules list --tenant {tenant}` "
                             "shows its rule ids")
    gone = current.model_copy(update={"deleted": True,
                                      "updated_at": max(int(time.time() * 1000), current.updated_at + 1)})
    _publish(bootstrap, settings, gone)
    click.echo(f"removed {rule_id}", err=True)
