"""``shoprank lag``: committed offset, end offset and lag per group, topic and partition, with Burrow's status.

A status needs a window of commits (see :mod:`streams.lag`), so one call samples the broker several
times: by default 5 snapshots 1 s apart (about 4 s), judged over those 5. ``--samples 1`` reports
lag only (status ``null`` / ``-``). ``--watch`` keeps sampling; its window (``--window``, default 10
snapshots, Burrow's default) fills as it runs, and partitions are reported OK until half of it is full.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import click
import orjson
from aiokafka.errors import KafkaError

from streams.exceptions import BrokerUnavailable
from streams.lag import GroupReport, GroupSnapshot, LagProbe, LagWindow
from streams.settings import Settings

__all__ = ["lag", "lag_table"]

_STYLE = {"OK": "green", "WARN": "yellow", "ERR": "bold red", "STOP": "red", "STALL": "red", "REWIND": "red",
          "NOTFOUND": "dim"}


@click.command()
@click.option("--group", "groups", multiple=True, help="Only this consumer group (repeatable). Default: all groups.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (one JSON document per report).")
@click.option("--watch", is_flag=True, help="Refresh live until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between snapshots.")
@click.option("--samples", type=click.IntRange(min=1), default=5, show_default=True,
              help="Snapshots per one-shot report (the status window); 1 = lag only, no status.")
@click.option("--window", type=click.IntRange(min=2), default=10, show_default=True,
              help="With --watch: snapshots in the sliding window (Burrow's intervals).")
@click.option("--allowed-lag", type=click.IntRange(min=0), default=0, show_default=True,
              help="Lag at or below this counts as caught up (Burrow's allowed-lag).")
@click.pass_context
def lag(ctx: click.Context, groups: tuple[str, ...], as_json: bool, watch: bool, interval: float, samples: int,
        window: int, allowed_lag: int) -> None:
    """Consumer lag per group, topic and partition, and each group's status by Burrow's rules.

    A status needs a window of snapshots: one call takes --samples of them --interval apart (about
    4 s by default) and judges those; --watch keeps a sliding window of --window snapshots.
    """
    from streams.broker import resolve_bootstrap

    settings: Settings = ctx.ensure_object(dict)["settings"]
    bootstrap, _ = resolve_bootstrap(settings.kafka, start_embedded=False)
    # Used only if the broker cannot list groups: the group of a worker started with these settings.
    fallback = [f"{settings.kafka.topic_prefix}{settings.worker.app_id}"]
    try:
        if watch:
            _watch(bootstrap, list(groups), fallback, as_json, interval, window, allowed_lag)
        else:
            reports = asyncio.run(_one_shot(bootstrap, list(groups), fallback, samples, interval, allowed_lag))
            _print(reports, as_json, judged=samples > 1)
    except (KafkaError, OSError) as exc:
        raise BrokerUnavailable(bootstrap, embedded=settings.kafka.bootstrap is None) from exc


async def _one_shot(bootstrap: str, groups: list[str], fallback: list[str], samples: int, interval: float,
                    allowed_lag: int) -> list[GroupReport]:
    win = LagWindow(intervals=samples, allowed_lag=allowed_lag, minimum_complete=1.0)
    async with LagProbe(bootstrap, fallback) as probe:
        names = groups or await probe.list_groups()
        for i in range(samples):
            if i:
                await asyncio.sleep(interval)
            _observe(win, await probe.snapshot(names))
    return [win.report(g) for g in names]


def _observe(win: LagWindow, snaps: Sequence[GroupSnapshot]) -> None:
    for snap in snaps:
        win.observe(snap)


def _watch(bootstrap: str, groups: list[str], fallback: list[str], as_json: bool, interval: float, window: int,
           allowed_lag: int) -> None:
    from rich.console import Console
    from rich.live import Live

    win = LagWindow(intervals=window, allowed_lag=allowed_lag)

    async def run(live: Live | None) -> None:
        async with LagProbe(bootstrap, fallback) as probe:
            while True:
                # Groups are listed again each time: a worker started meanwhile shows up.
                names = groups or await probe.list_groups()
                _observe(win, await probe.snapshot(names))
                reports = [win.report(g) for g in names]
                if live is None:
                    _print(reports, True, judged=True)
                else:
                    note = f"every {interval:g} s · window {window} · Ctrl-C stops"
                    live.update(lag_table(reports, note=note), refresh=True)
                await asyncio.sleep(interval)

    try:
        if as_json:
            asyncio.run(run(None))
        else:
            with Live(console=Console(), auto_refresh=False, redirect_stderr=False) as live:
                asyncio.run(run(live))
    except KeyboardInterrupt:
        return


def _print(reports: list[GroupReport], as_json: bool, *, judged: bool) -> None:
    if as_json:
        out = []
        for r in reports:
            d = r.as_dict()
            if not judged:  # one snapshot is not a window: say so rather than print OK
                d["status"] = d["worst_partition_status"] = None
                for p in d["partitions"]:
                    p["status"] = None
            out.append(d)
        sys.stdout.buffer.write(orjson.dumps({"groups": out}) + b"\n")
        sys.stdout.flush()
        return
    from rich.console import Console

    Console().print(lag_table(reports, judged=judged))


def lag_table(reports: Sequence[GroupReport], *, judged: bool = True, note: str | None = None) -> Any:
    """A rich table: one header row per group (status, total lag), then its partitions."""
    from rich.table import Table
    from rich.text import Text

    table = Table("group / topic", "partition", "committed", "end", "lag", "status", caption=note)
    if not reports:
        table.add_row(Text("no consumer groups", style="dim"), "", "", "", "", "")
    for r in reports:
        if judged:
            label = r.status if r.worst in (None, "OK", "WARN") else f"{r.status} ({r.worst})"
            status = Text(label, style=_STYLE.get(r.status, ""))
            if r.partitions and r.complete < 1.0:
                status.append(f" {r.complete:.0%} window", style="dim")
        else:
            status = Text("-", style="dim")
        table.add_row(Text(r.group, style="bold"), Text(f"{r.state}, {r.members} members", style="dim"), "", "",
                      str(r.total_lag), status, end_section=not r.partitions)
        for i, p in enumerate(r.partitions):
            table.add_row(
                f"  {p.topic}", str(p.partition), str(p.committed), str(p.end), str(p.lag),
                Text(p.status, style=_STYLE[p.status]) if judged else Text("-", style="dim"),
                end_section=i == len(r.partitions) - 1,
            )
    return table
