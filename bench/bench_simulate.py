"""The learning loop's business figure: conversion of the learning ranker against the static control.

Runs ``shoprank simulate`` (shoppers with hidden tastes and position bias, driving the real broker,
worker, attribution and ranker; sessions split by hash between the learning ranker and the static
hybrid order) on the generator's catalogue and on a labelled set, and records, per data set, the
conversion and revenue per search of both buckets over the last fifth of the run (the baseline is the
control bucket of the same run), plus the worker's own attributed conversion lift over the whole run.
Goal: conversion at least 20% above control within 50,000 events, on both kinds of data.

Usage: python bench/bench_simulate.py [--events 50000] [--labelled-dir ../shared/data/homedepot-dev]
       [--from-json generated=FILE labelled=FILE] [--no-record]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Row, append_rows, code_version  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCHMARK = "bench_simulate"


def _rows(label: str, fig: dict, rev: str) -> list[Row]:
    windows = fig["windows"]
    last = windows[-max(1, len(windows) // 5):]

    def total(bucket: str, key: str) -> float:
        return sum(w.get(bucket, {}).get(key, 0) for w in last)

    conv = {b: total(b, "converted") / max(1, total(b, "searches")) for b in ("learning", "control")}
    rps = {b: total(b, "revenue") / max(1, total(b, "searches")) for b in ("learning", "control")}
    note = (f"{fig['events']} events, {fig['products']} products, {fig['queries']} queries, last {len(last)} of "
            f"{len(windows)} windows of {fig['window']} events; whole-run attributed conversion lift "
            f"{fig['worker_analytics'].get('conversion_lift')}; code {rev}")
    return [
        Row(f"conversion per search, learning ranker vs static control ({label})", conv["learning"], conv["control"], note),
        Row(f"revenue per search, learning ranker vs static control ({label})", rps["learning"], rps["control"], note),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--labelled-dir", default=str(REPO.parent / "shared" / "data" / "homedepot-dev"))
    ap.add_argument("--from-json", nargs="*", default=[], help="label=FILE: record a finished run instead")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    rev = code_version(REPO / "streams")
    runs: dict[str, Path] = dict(item.split("=", 1) for item in args.from_json)  # type: ignore[misc]
    for label, extra in (("generated", ["--products", "3000"]),
                         ("labelled", ["--data", "labelled", "--labelled-dir", args.labelled_dir,
                                       "--products", "8000"])):
        if label in runs:
            continue
        # Kept (ignored by git) so a crash in the second run does not cost the first one.
        out = REPO / ".shoprank" / "bench" / f"simulate-{label}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "streams.cli", "simulate", "--events", str(args.events),
                        "--json-out", str(out), "--plot", str(REPO / "bench" / f"simulate-{label}.png"), *extra],
                       check=True, cwd=REPO)
        runs[label] = out
    rows = [r for label, path in runs.items() for r in _rows(label, orjson.loads(Path(path).read_bytes()), rev)]
    for r in rows:
        print(f"{r.metric}: {r.value:.4f} vs {r.baseline:.4f} ({(r.ratio or 0) - 1:+.1%})")
    if not args.no_record:
        append_rows(BENCHMARK, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
