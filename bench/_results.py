"""Shared by every benchmark: describe the machine, append rows to bench/RESULTS.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")

HEADER = """# Benchmark results

Every benchmark appends rows here: one row per metric, with the baseline measured **in the same run**
and the ratio between them (machines here are noisy; compare ratios, not absolute figures).

| date (UTC) | machine | benchmark | metric | value | baseline | ratio | notes |
|---|---|---|---|---|---|---|---|
"""


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{platform.node()} {cpu} {os.cpu_count()} cores, Python {platform.python_version()}"


def append_rows(benchmark: str, rows: list[tuple[str, float, float | None, str]]) -> None:
    """Append ``(metric, value, baseline, notes)`` rows for ``benchmark``."""
    if not RESULTS.exists():
        RESULTS.write_text(HEADER)
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    with RESULTS.open("a") as f:
        for metric, value, baseline, notes in rows:
            ratio = f"{value / baseline:.3g}" if baseline else "-"
            base = f"{baseline:,.0f}" if baseline is not None else "-"
            f.write(f"| {now} | {machine()} | {benchmark} | {metric} | {value:,.1f} | {base} | {ratio} | {notes} |\n")
