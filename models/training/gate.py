"""The promotion gate: a candidate serves only if it beats the serving model on every held-out split.

"Every" matters: a model that learns a shop's frequent queries by heart can gain on next week's
traffic (the time split) while losing on queries it never saw, or on products added after training,
which is where a shop's search usually fails. Each split is scored apart by NDCG@10 (ir-measures, as
``shoprank eval``) of dense retrieval over the products judged in that split, and the candidate must
beat the serving model by ``min_relative_gain`` on each; otherwise it stays a candidate and its
manifest says which split failed and by how much.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.embedder import Embedder, OnnxEmbedder
from models.training.data import Example, normalise_query
from models.training.registry import promote, read_version, serving_version, update_version, version_dir

__all__ = ["GateConfig", "GateResult", "decide", "rerank_ndcg", "retrieval_ndcg", "run_gate", "score_splits"]

_METRIC = "nDCG@10"


@dataclass(frozen=True)
class GateConfig:
    """``min_relative_gain``: 0.01 means the candidate needs at least 1 % more NDCG@10 on each split."""

    min_relative_gain: float = 0.01
    #: Retrieval depth of the run that NDCG@10 is computed on.
    depth: int = 100


@dataclass
class GateResult:
    promoted: bool
    reason: str
    #: split → {"candidate", "serving", "relative_gain"}
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)


def retrieval_ndcg(embedder: Embedder, examples: Sequence[Example], *, depth: int = 100,
                   distractors: Mapping[str, str] | None = None) -> float:
    """NDCG@10 of ``embedder`` retrieving, for each query with a positive, from every product in ``examples``
    (plus ``distractors``, product id → text, unjudged: a bigger haystack, as a real catalogue is)."""
    import ir_measures

    texts: dict[str, str] = dict(distractors or {})
    qrels: dict[str, dict[str, int]] = {}
    qtext: dict[str, str] = {}
    for e in examples:
        texts[e.product_id] = e.text
        q = normalise_query(e.query)
        qtext.setdefault(q, e.query)
        qrels.setdefault(q, {})[e.product_id] = max(qrels.get(q, {}).get(e.product_id, 0), e.grade)
    queries = sorted(q for q, judged in qrels.items() if any(g > 0 for g in judged.values()))
    if not queries:
        raise ValueError("no held-out query has a positive: nothing to score")
    ids = sorted(texts)
    docs = embedder.embed([texts[p] for p in ids])
    qv = embedder.embed([qtext[q] for q in queries])
    k = min(depth, len(ids))
    run = []
    for start in range(0, len(queries), 512):
        scores = qv[start : start + 512] @ docs.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        for row, q in enumerate(queries[start : start + 512]):
            run += [ir_measures.ScoredDoc(q, ids[i], float(scores[row, i])) for i in top[row]]
    measure = ir_measures.parse_measure(_METRIC)
    judged = [ir_measures.Qrel(q, p, g) for q in queries for p, g in qrels[q].items()]
    return float(ir_measures.calc_aggregate([measure], judged, run).get(measure, 0.0))


def rerank_ndcg(embedder: Embedder, examples: Sequence[Example]) -> float:
    """NDCG@10 of ``embedder`` re-ranking each query's own judged products (the re-ranking mode of
    ``shoprank eval``): how well it orders candidates that retrieval already found."""
    import ir_measures

    texts: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    qtext: dict[str, str] = {}
    for e in examples:
        texts[e.product_id] = e.text
        q = normalise_query(e.query)
        qtext.setdefault(q, e.query)
        qrels.setdefault(q, {})[e.product_id] = max(qrels.get(q, {}).get(e.product_id, 0), e.grade)
    queries = sorted(q for q, judged in qrels.items() if any(g > 0 for g in judged.values()))
    if not queries:
        raise ValueError("no held-out query has a positive: nothing to score")
    ids = sorted(texts)
    where = {p: i for i, p in enumerate(ids)}
    docs = embedder.embed([texts[p] for p in ids])
    qv = embedder.embed([qtext[q] for q in queries])
    run = [ir_measures.ScoredDoc(q, p, float(qv[row] @ docs[where[p]]))
           for row, q in enumerate(queries) for p in qrels[q]]
    measure = ir_measures.parse_measure(_METRIC)
    judged = [ir_measures.Qrel(q, p, g) for q in queries for p, g in qrels[q].items()]
    return float(ir_measures.calc_aggregate([measure], judged, run).get(measure, 0.0))


def score_splits(embedder: Embedder, tests: Mapping[str, Sequence[Example]], *, depth: int = 100
                 ) -> dict[str, float]:
    """NDCG@10 of ``embedder`` on each held-out split."""
    return {name: retrieval_ndcg(embedder, rows, depth=depth) for name, rows in tests.items()}


def decide(candidate: Mapping[str, float], serving: Mapping[str, float], config: GateConfig
           ) -> GateResult:
    """Promote only if the candidate beats serving by ``min_relative_gain`` on every split."""
    if not candidate:
        return GateResult(False, "no held-out split to judge on")
    metrics: dict[str, dict[str, float]] = {}
    failed = []
    for name in sorted(candidate):
        c, s = candidate[name], serving[name]
        gain = (c - s) / s if s > 0 else (float("inf") if c > 0 else 0.0)
        metrics[name] = {"candidate": c, "serving": s, "relative_gain": gain}
        if not (c > s and gain >= config.min_relative_gain):
            failed.append(f"{name} split: NDCG@10 {c:.4f} vs serving {s:.4f} ({gain:+.2%}, "
                          f"needs {config.min_relative_gain:+.2%})")
    if failed:
        return GateResult(False, "did not beat the serving model on every held-out split: " + "; ".join(failed),
                          metrics)
    summary = ", ".join(f"{n} {m['relative_gain']:+.2%}" for n, m in metrics.items())
    return GateResult(True, f"beat the serving model on every held-out split ({summary})", metrics)


def run_gate(models_dir: Path, tenant: str, version: str, tests: Mapping[str, Sequence[Example]], *,
             base_dir: Path, config: GateConfig | None = None,
             load: Callable[[Path], Embedder] = OnnxEmbedder) -> GateResult:
    """Judge candidate ``version`` against what serves ``tenant`` now (``base_dir`` if nothing was promoted).

    The scores and the reason go into the candidate's manifest either way; a pass promotes it.
    """
    config = config or GateConfig()
    manifest = read_version(models_dir, tenant, version)
    current = serving_version(models_dir, tenant)
    serving_dir = base_dir if current is None else version_dir(models_dir, tenant, current)
    candidate_scores = score_splits(load(version_dir(models_dir, tenant, version)), tests, depth=config.depth)
    serving_scores = score_splits(load(serving_dir), tests, depth=config.depth)
    result = decide(candidate_scores, serving_scores, config)
    against = f"against {current or 'the base model'}"
    if result.promoted:
        update_version(models_dir, manifest, metrics=result.metrics)
        promote(models_dir, tenant, version, reason=f"gate {against}: {result.reason}")
    else:
        update_version(models_dir, manifest, metrics=result.metrics, status="candidate",
                       reason=f"gate {against}: {result.reason}")
    return result
