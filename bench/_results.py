"""Shared by every benchmark: describe the machine and the code, append rows to bench/RESULTS.md.

One results file for the whole project, one row per metric::

    | date (UTC) | machine | benchmark | metric | value | baseline | ratio | notes |

``baseline`` is a reference measured **in the same run** on the same machine (a raw client, a
brute-force search, ...); ``ratio`` is value / baseline. Machines here are small and noisy, so compare
ratios across rows, not absolute figures. A metric without a baseline leaves both cells as ``-``.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RESULTS", "Row", "append_rows", "code_version", "fmt", "machine"]

RESULTS = Path(__file__).resolve().with_name("RESULTS.md")

HEADER = """# Benchmark results

Every benchmark in `bench/` appends rows here, one row per metric:

- **date (UTC)**: when the run finished.
- **machine**: host name, CPU architecture, cores, Python version.
- **benchmark**: the script (`bench_validation`, ...).
- **metric**: what was measured, with its unit.
- **value**: shoprank's figure.
- **baseline**: a reference measured **in the same run** on the same machine (for example a raw
  aiokafka consumer), `-` when the metric has none.
- **ratio**: value / baseline. Machines here are small and noisy: compare ratios, not absolute figures.
- **notes**: size of the run, code revision (`+dirty` when the working tree had uncommitted changes),
  checks (`counts exact`), anything else needed to read the row.

| date (UTC) | machine | benchmark | metric | value | baseline | ratio | notes |
|---|---|---|---|---|---|---|---|
"""


@dataclass(frozen=True)
class Row:
    """One metric of one run. ``baseline`` is None when the metric has no same-run reference."""

    metric: str
    value: float
    baseline: float | None = None
    notes: str = ""

    @property
    def ratio(self) -> float | None:
        return self.value / self.baseline if self.baseline else None


def machine() -> str:
    """``host arch N cores, Python X.Y.Z``: enough to tell rows from different machines apart."""
    cpu = platform.processor() or platform.machine() or "unknown-cpu"
    return f"{platform.node() or 'unknown-host'} {cpu} {os.cpu_count()} cores, Python {platform.python_version()}"


def code_version(path: Path | str) -> str:
    """Short commit of the git checkout holding ``path``, ``+dirty`` if tracked files differ from it.

    The results table itself does not count: a run after another of the same session found it changed.

    Read-only (``rev-parse`` and ``diff-index``); ``unknown revision`` outside a git checkout.
    """
    where = Path(path).resolve()
    where = where if where.is_dir() else where.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "diff-index", "--quiet", "HEAD", "--", ":/", ":(exclude,top)bench/RESULTS.md"],
            capture_output=True, check=False, timeout=10,
        ).returncode != 0
    except (OSError, subprocess.SubprocessError):
        return "unknown revision"
    return f"{rev}+dirty" if dirty else rev


def fmt(x: float | None) -> str:
    """A figure for the table: thousands separators, about 3-4 significant digits."""
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:,.2f}".rstrip("0").rstrip(".")
    return f"{x:.3g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def append_rows(benchmark: str, rows: Iterable[Row], *, results: Path = RESULTS) -> list[str]:
    """Append ``rows`` for ``benchmark`` to the results table (created with its header if missing).

    Returns the lines written.
    """
    if not results.exists():
        results.write_text(HEADER)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    host = machine()
    lines = [
        "| " + " | ".join(
            _cell(c) for c in (now, host, benchmark, r.metric, fmt(r.value), fmt(r.baseline), fmt(r.ratio), r.notes)
        ) + " |\n"
        for r in rows
    ]
    text = results.read_text()
    with results.open("a") as f:
        if text and not text.endswith("\n"):
            f.write("\n")
        f.writelines(lines)
    return lines
