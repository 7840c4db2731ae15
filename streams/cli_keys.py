"""``shoprank keys create | list | revoke``: per-tenant API keys, stored hashed in the key file.

``create`` prints the key once; only its SHA-256 hash is kept. Workers reread the key file within
seconds, so no restart is needed. Point every worker at the same file (SHOPRANK_SECURITY_KEYS_FILE).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import click
import orjson

from streams.exceptions import UserInputError
from streams.keys import KeyFileError, create_key, read_keys, revoke_key
from streams.settings import Settings

__all__ = ["keys"]

_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")  # schemas.base.TenantId


def _settings(ctx: click.Context) -> Settings:
    return ctx.ensure_object(dict)["settings"]  # type: ignore[no-any-return]


@click.group()
def keys() -> None:
    """Pixel write keys and analytics read keys, per tenant."""


@keys.command("create")
@click.argument("tenant")
@click.option("--kind", type=click.Choice(["write", "read"]), default="write", show_default=True,
              help="write: public pixel key (sr_pk_); read: secret analytics key (sr_sk_).")
@click.option("--origin", "origins", multiple=True,
              help="Allowed page origin, e.g. https://shop.example (repeat; none: any origin).")
@click.pass_context
def create(ctx: click.Context, tenant: str, kind: str, origins: tuple[str, ...]) -> None:
    """Create a key for TENANT and print it (shown only this once)."""
    settings = _settings(ctx)
    if not _TENANT.match(tenant):
        raise UserInputError(f"tenant {tenant!r} is not a tenant id (lower-case letters, digits, - and _)")
    if tenant not in settings.tenants:
        raise UserInputError(f"tenant {tenant!r} is not served (SHOPRANK_TENANTS={','.join(settings.tenants)})")
    try:
        record, key = create_key(settings.keys_file, tenant, kind, origins)  # type: ignore[arg-type]
    except KeyFileError as exc:
        raise UserInputError(str(exc)) from None
    click.echo(key)
    click.echo(f"id {record.id} · tenant {tenant} · {kind} · origins {', '.join(record.origins) or 'any'} · "
               f"stored hashed in {settings.keys_file}", err=True)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per key.")
@click.pass_context
def list_keys(ctx: click.Context, as_json: bool) -> None:
    """Keys in the key file (ids and scopes; the keys themselves are not stored)."""
    settings = _settings(ctx)
    try:
        records = read_keys(settings.keys_file)
    except KeyFileError as exc:
        raise UserInputError(str(exc)) from None
    if as_json:
        for r in records:
            click.echo(orjson.dumps({k: v for k, v in vars(r).items() if k != "hash"}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "tenant", "kind", "origins", "created", "revoked")
    for r in records:
        when = datetime.fromtimestamp(r.created_at, UTC).strftime("%Y-%m-%d %H:%M")
        gone = datetime.fromtimestamp(r.revoked_at, UTC).strftime("%Y-%m-%d %H:%M") if r.revoked_at else ""
        table.add_row(r.id, r.tenant, r.kind, ", ".join(r.origins) or "any", when, gone)
    Console().print(table)


@keys.command("revoke")
@click.argument("key_id")
@click.pass_context
def revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke a key by id; workers refuse it within seconds."""
    try:
        record = revoke_key(_settings(ctx).keys_file, key_id)
    except KeyFileError as exc:
        raise UserInputError(str(exc)) from None
    click.echo(f"revoked {record.id} ({record.tenant}, {record.kind})")
