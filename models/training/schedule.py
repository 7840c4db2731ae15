"""When to fine-tune a tenant again: after enough new attributed outcomes, or after enough time with some.

Two triggers, as a shop's traffic decides: a busy shop retrains as soon as ``min_new`` new positives
(clicks, add-to-carts, purchases) have arrived since its last run; a quiet one retrains every
``every_s`` as long as at least ``min_new_on_schedule`` new positives arrived (retraining on the same
data would only spend CPU). No run starts before the tenant has ``min_total`` positives in all, nor
sooner than ``min_interval_s`` after the previous one, however busy the shop.

The state per tenant (``<tenant>.json`` under the schedule folder) records when each run happened, on
how many positives, and what came of it, so a restarted retrainer keeps the cadence.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

__all__ = ["Decision", "RetrainPolicy", "RetrainState", "decide_retrain", "load_state", "save_state"]


@dataclass(frozen=True)
class RetrainPolicy:
    every_s: float = 24 * 3600.0
    min_new: int = 5_000
    min_new_on_schedule: int = 200
    min_total: int = 1_000
    min_interval_s: float = 3600.0


@dataclass
class RetrainState:
    last_run_at: float | None = None
    positives_at_last_run: int = 0
    runs: int = 0
    last_version: str | None = None
    last_status: str | None = None
    last_reason: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Decision:
    due: bool
    trigger: str  # "data", "schedule" or "" when not due
    reason: str


def decide_retrain(state: RetrainState, positives: int, now: float, policy: RetrainPolicy) -> Decision:
    """Whether to train now, which trigger fired, and why (or why not) in words for the log and the CLI."""
    new = max(0, positives - state.positives_at_last_run)
    if positives < policy.min_total:
        return Decision(False, "", f"{positives} positives in all, fewer than the {policy.min_total} needed")
    since = None if state.last_run_at is None else now - state.last_run_at
    if since is not None and since < policy.min_interval_s:
        return Decision(False, "", f"last run {since / 60:.0f} min ago, within the minimum interval "
                                   f"of {policy.min_interval_s / 60:.0f} min")
    if new >= policy.min_new:
        return Decision(True, "data", f"{new} new positives since the last run (threshold {policy.min_new})")
    if since is None or since >= policy.every_s:
        when = "never trained" if since is None else f"last run {since / 3600:.1f} h ago"
        if new >= policy.min_new_on_schedule:
            return Decision(True, "schedule", f"{when}, {new} new positives")
        return Decision(False, "", f"{when}, but only {new} new positives (need {policy.min_new_on_schedule})")
    return Decision(False, "", f"{new} new positives of {policy.min_new}; next scheduled run in "
                               f"{(policy.every_s - since) / 3600:.1f} h")


def _path(folder: Path, tenant: str) -> Path:
    return folder / f"{tenant}.json"


def load_state(folder: Path, tenant: str) -> RetrainState:
    path = _path(folder, tenant)
    if not path.exists():
        return RetrainState()
    data = orjson.loads(path.read_bytes())
    return RetrainState(**{k: v for k, v in data.items() if k in RetrainState.__dataclass_fields__})


def save_state(folder: Path, tenant: str, state: RetrainState) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = _path(folder, tenant).with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(asdict(state), option=orjson.OPT_INDENT_2))
    os.replace(tmp, _path(folder, tenant))
