"""`shoprank analytics`: a tenant's live analytics, read from a running worker's HTTP endpoint."""

from __future__ import annotations

import orjson
import click
from rich.console import Console
from rich.table import Table

from streams.supervise import http_json

__all__ = ["analytics"]

_ROWS = (
    ("searches", "searches shown"), ("conversion", "conversion (searches with a purchase)"),
    ("revenue_per_search", "revenue per search"), ("ctr", "searches with a click"), ("purchases", "purchases"),
    ("revenue", "revenue"), ("margin", "margin"), ("new_product_click_share", "clicks on new products"),
    ("explored_clicks", "clicks on explored slots"),
)


@click.command()
@click.option("--tenant", required=True, help="The shop.")
@click.option("--url", default="http://127.0.0.1:6066", show_default=True, help="A worker's HTTP address.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@click.option("--key", envvar="SHOPRANK_READ_KEY", default=None,
              help="The tenant's read key (sr_sk_…), where workers require one; env SHOPRANK_READ_KEY.")
def analytics(tenant: str, url: str, as_json: bool, key: str | None) -> None:
    """Conversion against the control bucket, revenue per search, new products, query coverage."""
    headers = {"Authorization": f"Bearer {key}"} if key else None
    status, body = http_json(f"{url.rstrip('/')}/v1/analytics/{tenant}", timeout_s=5, headers=headers)
    if status == 0:
        raise click.ClickException(f"no worker answers at {url}: start one with `shoprank worker` or pass --url")
    if status != 200:
        message = body.get("error", {}).get("message") if isinstance(body, dict) else body
        raise click.ClickException(f"{url} answered {status}: {message}")
    if as_json:
        click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return
    buckets = body.get("buckets", {})
    held = body.get("partitions", {})
    scope = "" if held.get("complete", True) else (
        f" (partitions {', '.join(map(str, held.get('held', [])))} of {held.get('of')}: this worker holds no copy of "
        "the others; ask another worker, or run one standby replica per worker)")
    table = Table(title=f"analytics for {tenant}{scope}", title_justify="left")
    table.add_column("metric")
    for bucket in ("learning", "control"):
        table.add_column(bucket, justify="right")
    for key, label in _ROWS:
        table.add_row(label, *(_fmt(buckets.get(b, {}).get(key)) for b in ("learning", "control")))
    console = Console()
    console.print(table)
    console.print(f"conversion lift {_fmt(body.get('conversion_lift'), pct=True)}, revenue per search lift "
                  f"{_fmt(body.get('revenue_per_search_lift'), pct=True)}, query coverage "
                  f"{_fmt(body.get('query_coverage'), pct=True)}")


def _fmt(value: object, *, pct: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:+.1%}" if pct else f"{value:,.4g}"
    return f"{value:,}" if isinstance(value, int) else str(value)
