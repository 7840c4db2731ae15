"""What a search runs (the plan) and how its stages become one ranked list (RRF), shared by both backends.

Fusion is done here, not by Qdrant's ``Fusion.Rrf``, so every hit keeps its per-stage scores
(``dense``, ``bm25``) next to the fused one: the ranker and the search log need them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from qdrant_edge import SparseVector

from models.store.base import DENSE, MIN_CANDIDATES, SPARSE, Hit, SearchMode
from models.store.bm25 import query_vector
from models.store.exceptions import InvalidRequest

__all__ = ["FUSED", "RRF_K", "QueryPlan", "Ranked", "Scored", "plan_query", "rank", "rrf", "to_hits"]

#: The usual Reciprocal Rank Fusion constant (Cormack et al. 2009); it damps the weight of the top ranks.
RRF_K = 60
#: Key of the fused score in :attr:`Hit.scores`.
FUSED = "fused"
_MODES = ("hybrid", "dense", "keyword")


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


def _ranked(stage: Sequence[Scored]) -> list[Scored]:
    # Engines order equal scores by internal segment order, which differs between backends; the point
    # id (a UUID5 of tenant and product id, the same on every backend) breaks ties so both agree.
    return sorted(stage, key=lambda s: (-s.score, s.key))


def rank(stages: Mapping[str, Sequence[Scored]], limit: int) -> list[Ranked]:
    """The best ``limit`` points from the stage results (keys ``dense`` and/or ``bm25``).

    One stage: its order and score. Two stages: RRF, ties broken by the better single-stage rank,
    then point id.
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
    fused = rrf({name: [s.key for s in stage] for name, stage in ranked.items()})
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
