"""One fine-tuning run for one tenant, end to end: rows → splits → pairs → train → register → gate.

What ``shoprank models train`` runs; usable from a notebook or a scheduler the same way. Hard
negatives are mined with the model serving now, from products of the *training* rows only, so mining
never looks at a held-out product.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models.embedder import Embedder, OnnxEmbedder
from models.ranker.online import Objective
from models.training.data import SPLITS, Example, SplitName, Splits, make_splits
from models.training.gate import GateConfig, GateResult, run_gate
from models.training.pairs import build_pairs, mine_hard_negatives
from models.training.registry import TrainingManifest, read_version, register, serving_version, version_dir
from models.training.trainer import TrainConfig, TrainReport, train

__all__ = ["RunConfig", "RunResult", "train_tenant"]


@dataclass(frozen=True)
class RunConfig:
    test_fraction: float = 0.2
    splits: tuple[SplitName, ...] = SPLITS
    #: Hard negatives mined per query with the serving model (0: only labelled or skipped negatives).
    mined_per_query: int = 5
    negatives_per_pair: int = 1
    #: Training pairs whose loss is measured before and after (dropout off), as a sanity figure.
    eval_pairs: int = 256
    gate: bool = True
    gate_config: GateConfig = field(default_factory=GateConfig)
    seed: int = 0


@dataclass
class RunResult:
    splits: Splits
    report: TrainReport
    manifest: TrainingManifest
    gate: GateResult | None


def _window(rows: Iterable[Example]) -> dict[str, int | None]:
    times = [e.ts for e in rows if e.ts > 0]
    return {"from_ts": min(times) if times else None, "to_ts": max(times) if times else None}


def train_tenant(examples: Sequence[Example], *, models_dir: Path, tenant: str, base_dir: Path, work_dir: Path,
                 source: str, objective: Objective | None = None, config: RunConfig | None = None,
                 train_config: TrainConfig | None = None, progress: bool = True,
                 log: Callable[[str], None] = lambda _: None,
                 load: Callable[[Path], Embedder] = OnnxEmbedder) -> RunResult:
    """Fine-tune on ``examples`` for ``tenant`` and register the result; gate it unless told not to.

    ``base_dir`` is the exported base model: what serves a tenant with nothing promoted, and the
    gate's yardstick then. ``work_dir`` keeps the checkpoint, so the same call resumes a run that
    ran out of time.
    """
    config = config or RunConfig()
    train_config = train_config or TrainConfig(seed=config.seed)
    splits = make_splits(list(examples), test_fraction=config.test_fraction, splits=config.splits, seed=config.seed)
    log(f"rows: {splits.sizes()}; held out: {splits.held_out}")
    if not splits.tests:
        log("no held-out split has a positive row: the gate will not promote this model")
    mined: dict[str, list[tuple[str, str]]] = {}
    if config.mined_per_query > 0:
        current = serving_version(models_dir, tenant)
        miner = load(base_dir if current is None else version_dir(models_dir, tenant, current))
        pool = {e.product_id: e.text for e in splits.train}
        mined = mine_hard_negatives(miner, splits.train, pool, per_query=config.mined_per_query)
    pairs = build_pairs(splits.train, mined=mined, negatives_per_pair=config.negatives_per_pair, seed=config.seed)
    log(f"{len(pairs)} training pairs")
    step = max(1, len(pairs) // config.eval_pairs) if config.eval_pairs else 0
    sample = pairs[::step][: config.eval_pairs] if step else None
    report = train(pairs, work_dir, train_config, eval_pairs=sample, progress=progress)
    log(f"trained {report.steps}/{report.total_steps} steps, {report.pairs_seen} pairs in {report.seconds:.0f} s "
        f"({report.seconds_per_10k_pairs / 60:.1f} min per 10,000 pairs); {report.stopped}")
    data: dict[str, Any] = {"source": source, "window": _window(examples), "train_window": _window(splits.train),
                            "sizes": splits.sizes(), "held_out": splits.held_out, "pairs": len(pairs)}
    manifest = register(models_dir, tenant, report.model_dir, data=data,
                        objective=asdict(objective or Objective()),
                        train={"config": asdict(train_config), "report": {
                            k: v for k, v in report.summary().items() if k != "losses"}})
    log(f"registered {manifest.version} (ONNX vs torch {manifest.parity_max_abs_diff:.1e})")
    if report.stopped == "done":
        # The run is complete and registered: the next run on new data starts fresh instead of refusing
        # a checkpoint that belongs to this one. A run cut short keeps it, so the same call resumes.
        shutil.rmtree(work_dir / "checkpoint", ignore_errors=True)
    result = None
    if config.gate:
        result = run_gate(models_dir, tenant, manifest.version, splits.tests, base_dir=base_dir,
                          config=config.gate_config, load=load)
        manifest = read_version(models_dir, tenant, manifest.version)
    return RunResult(splits, report, manifest, result)
