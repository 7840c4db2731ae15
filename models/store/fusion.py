"""What a search runs (the plan) and how its stages become one ranked list, shared by both backends.

Fusion is done here, not by Qdrant's ``Fusion.Rrf``, so every hit keeps its per-stage scores
(``dense``, ``bm25``) next to the fused one: the ranker and the search log need them.

Two fusions (:class:`Fusion`):

- ``relative`` (the default): each stage's scores are min-max normalised over the candidates it
  returned, and the fused score is ``w * dense + (1 - w) * bm25`` (a product one stage did not return
  gets 0 from it). Weaviate's "relativeScoreFusion" (its default since 1.24) and the convex combination
  that Bruch, Gai and Ingber found better than RRF in "An Analysis of Fusion Functions for Hybrid
  Retrieval" (ACM TOIS 2023). It keeps how far ahead a stage's best match is, which ranks throw away.
- ``rrf``: Reciprocal Rank Fusion (Cormack et al. 2009), ranks only.

On homedepot-dev, where BM25 is much the stronger stage, RRF ranked *below* keyword search alone and
relative fusion at the untuned equal weight above it (README, "Hybrid fusion"; 2026-12-08).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, get_args

import numpy as np
from qdrant_edge import SparseVector

from models.store.base import DENSE, MIN_CANDIDATES, SPARSE, Hit, SearchMode
from models.store.bm25 import query_vector
from models.store.exceptions import InvalidRequest

__all__ = ["DEFAULT_FUSION", "FUSED", "RRF_K", "Fusion", "FusionMethod", "QueryPlan", "Ranked", "Scored",
           "plan_query", "rank", "relative", "rrf", "to_hits"]

#: The usual Reciprocal Rank Fusion constant (Cormack et al. 2009); it damps the weight of the top ranks.
RRF_K = 60
#: Key of the fused score in :attr:`Hit.scores`.
FUSED = "fused"
_MODES = ("hybrid", "dense", "keyword")

FusionMethod = Literal["relative", "rrf"]


@dataclass(frozen=True)
class Fusion:
    """How a hybrid search merges its dense and BM25 stages (see the module doc)."""

    method: FusionMethod = "relative"
    #: ``relative`` only: the dense stage's share of the fused score, the BM25 stage's is ``1 - dense_weight``.
    dense_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in get_args(FusionMethod):
            raise InvalidRequest(f"fusion {self.method!r} is unknown — use {' or '.join(get_args(FusionMethod))}")
        if not 0.0 <= self.dense_weight <= 1.0:
            raise InvalidRequest(f"the dense weight of a fusion is a share, 0 to 1, not {self.dense_weight}")

    def describe(self) -> str:
        return f"relative, dense weight {self.dense_weight:g}" if self.method == "relative" else "RRF"


#: What a store fuses with unless told otherwise (SHOPRANK_STORE_FUSION's default).
DEFAULT_FUSION = Fusion()


class Scored(NamedTuple):
    """One point as one retrieval stage returned it."""

    key: str  # the point id
    score: float


class Ranked(NamedTuple):
    """One point of the final ranking, before its payload is attached."""

    key: str
    score: float
    scores: dict[str, float]


@dataclass(frozen=True)
class QueryPlan:
    """The stages one search runs. At least one of ``dense``/``sparse`` is set."""

    dense: list[float] | None
    sparse: SparseVector | None
    candidates: int  # per stage
    limit: int


def plan_query(dense: np.ndarray | None, text: str, mode: SearchMode, limit: int) -> QueryPlan | None:
    """The stages to run, or ``None`` when nothing can match (no limit, or a query without terms).

    Hybrid mode drops the stage it has no input for: empty text (or only stopwords) leaves dense
    retrieval, no vector leaves keyword retrieval.
    """
    if mode not in _MODES:
        raise InvalidRequest(f"search mode {mode!r} is unknown — use one of {', '.join(_MODES)}")
    if mode == "dense" and dense is None:
        raise InvalidRequest("mode='dense' needs a query vector — embed the query, or search with mode='keyword'")
    vector: list[float] | None = None
    if dense is not None and mode != "keyword":
        array = np.asarray(dense, dtype=np.float32)
        if array.ndim != 1 or array.size == 0:
            raise InvalidRequest(f"the query vector must be one non-empty row, got shape {array.shape}")
        vector = array.tolist()
    sparse = query_vector(text) if mode != "dense" else None
    if limit <= 0 or (vector is None and sparse is None):
        return None
    return QueryPlan(vector, sparse, max(limit, MIN_CANDIDATES), limit)


def rrf(rankings: Mapping[str, Sequence[str]], k: int = RRF_K) -> dict[str, float]:
    """Reciprocal Rank Fusion: each list adds ``1 / (k + rank)`` (rank from 1) to the ids it ranks.

    >>> rrf({"a": ["x", "y"], "b": ["y"]}, k=60) == {"x": 1 / 61, "y": 1 / 62 + 1 / 61}
    True
    """
    fused: dict[str, float] = {}
    for ranking in rankings.values():
        for position, key in enumerate(ranking, start=1):
            fused[key] = fused.get(key, 0.0) + 1.0 / (k + position)
    return fused


def relative(scores: Mapping[str, Sequence[float]], weights: Mapping[str, float],
             floors: Mapping[str, float] | None = None) -> list[float]:
    """Relative score fusion of aligned score lists: each list min-max normalised, then weighted and summed.

    ``scores[stage][i]`` is item ``i``'s score in ``stage`` or NaN where the stage did not return it (it
    then adds 0). A stage's scores are normalised from its lowest score, or from ``floors[stage]`` when
    that is lower: the score of what the stage did not return, when it is known. A stage whose scores
    are all equal (and no floor below them) gives each of its items 1.

    >>> relative({"a": [2.0, 1.0, float("nan")], "b": [float("nan"), 4.0, 0.0]}, {"a": 0.5, "b": 0.5})
    [0.5, 0.5, 0.0]
    >>> relative({"a": [2.0, 1.0]}, {"a": 1.0}, floors={"a": 0.0})
    [1.0, 0.5]
    """
    n = len(next(iter(scores.values()), ()))
    fused = np.zeros(n)
    for stage, values in scores.items():
        x = np.asarray(values, dtype=np.float64)
        seen = ~np.isnan(x)
        if not seen.any():
            continue
        lo, hi = x[seen].min(), x[seen].max()
        if floors is not None and stage in floors:
            lo = min(lo, floors[stage])
        normalised = (x - lo) / (hi - lo) if hi > lo else np.ones(n)
        fused += weights[stage] * np.where(seen, normalised, 0.0)
    return fused.tolist()


def _ranked(stage: Sequence[Scored]) -> list[Scored]:
    # Engines order equal scores by internal segment order, which differs between backends; the point
    # id (a UUID5 of tenant and product id, the same on every backend) breaks ties so both agree.
    return sorted(stage, key=lambda s: (-s.score, s.key))


def rank(stages: Mapping[str, Sequence[Scored]], limit: int, fusion: Fusion = DEFAULT_FUSION, *,
         candidates: int | None = None) -> list[Ranked]:
    """The best ``limit`` points from the stage results (keys ``dense`` and/or ``bm25``), each stage asked
    for ``candidates`` points.

    One stage: its order and score. Two stages: ``fusion``, ties broken by the better single-stage
    rank, then point id.
    """
    ranked = {name: _ranked(stage) for name, stage in stages.items()}
    if len(ranked) == 1:
        ((name, only),) = ranked.items()
        return [Ranked(s.key, s.score, {name: s.score}) for s in only[:limit]]
    scores: dict[str, dict[str, float]] = {}
    best_rank: dict[str, int] = {}
    for name in (DENSE, SPARSE):
        for position, s in enumerate(ranked.get(name, ())):
            scores.setdefault(s.key, {})[name] = s.score
            best_rank[s.key] = min(position, best_rank.get(s.key, position))
    if fusion.method == "rrf":
        fused = rrf({name: [s.key for s in stage] for name, stage in ranked.items()})
    else:
        keys = list(scores)
        weights = {DENSE: fusion.dense_weight, SPARSE: 1.0 - fusion.dense_weight}
        # A BM25 stage that returned fewer points than it was asked for returned every product sharing a
        # term with the query; the others score 0. Normalised from the lowest score returned instead, its
        # last match would get no more than a product without any query term (the second of two matches
        # of a rare part number ranked below dense-only products).
        exhausted = candidates is not None and len(ranked.get(SPARSE, ())) < candidates
        nan = float("nan")
        fused = dict(zip(keys, relative({name: [scores[k].get(name, nan) for k in keys] for name in ranked},
                                        weights, {SPARSE: 0.0} if exhausted else None), strict=True))
    order = sorted(fused, key=lambda key: (-fused[key], best_rank[key], key))[:limit]
    return [Ranked(key, fused[key], {**scores[key], FUSED: fused[key]}) for key in order]


def to_hits(ranked: Sequence[Ranked], payloads: Mapping[str, dict[str, Any]]) -> list[Hit]:
    """Hits for the ranked points whose payload is known (a point deleted meanwhile is dropped)."""
    hits = []
    for r in ranked:
        payload = payloads.get(r.key)
        if payload is not None:
            hits.append(Hit(payload["product_id"], r.score, r.scores, payload))
    return hits
