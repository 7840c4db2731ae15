"""``shoprank forget-user``: forget one shopper of one tenant on every worker."""

from __future__ import annotations

import asyncio
import re

import click

from streams.privacy import forget_record
from streams.settings import Settings

__all__ = ["forget_user"]

_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")  # schemas.base.TenantId


@click.command("forget-user")
@click.option("--tenant", required=True, help="The shop.")
@click.argument("user_id")
@click.pass_context
def forget_user(ctx: click.Context, tenant: str, user_id: str) -> None:
    """Forget USER_ID (the pixel's user id, or its h:… pseudonym as seen on the topics).

    Every worker drops the shopper's events from then on, replays included. Events already in the
    event topics expire with the topics' retention; aggregates and models hold nothing per shopper.
    """
    from schemas.topics import TOPICS
    from streams.broker import resolve_bootstrap
    from streams.kafka import ensure_topics, producer

    settings: Settings = ctx.ensure_object(dict)["settings"]
    if not _TENANT.match(tenant):
        raise click.BadParameter(f"{tenant!r} is not a tenant id (lower-case letters, digits, - and _)",
                                 param_hint="--tenant")
    if not user_id.strip():
        raise click.BadParameter("give the user id to forget", param_hint="USER_ID")
    key, value = forget_record(tenant, user_id.strip(), settings.attribution.user_hash_key)
    # Reuse only: a broker started here would take its memory-only log, and the request, with it on exit.
    bootstrap, _ = resolve_bootstrap(settings.kafka, start_embedded=False)

    async def send() -> None:
        # From its spec (compacted, kept for good) if no worker created it yet, not the broker's defaults.
        await ensure_topics(bootstrap, settings.kafka.topic_prefix, [TOPICS["privacy"]], settings.kafka.retention_ms)
        async with producer(bootstrap) as prod:
            await prod.send_and_wait(settings.topic("privacy"), value, key=key)

    asyncio.run(send())
    click.echo(f"forgetting {key.decode()} on every worker serving {tenant}")
