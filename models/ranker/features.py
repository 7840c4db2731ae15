"""The ranker's features, built the same way at serve time and logged with every search.

Relevance is split into content (how well the product's text matches the query: dense cosine, BM25,
the fused hybrid score and rank, category and brand words in the query) and engagement (what shoppers
did with it: time-decayed, smoothed click, cart and purchase rates for the query×product pair and for
the product). Business inputs (price, margin rate) and freshness (age, a new-product flag) complete
the vector. Names are stable: they travel in ``SearchLog`` and ``AttributedInteraction``.

A search scores about a hundred candidates, so they are built as one matrix (:func:`feature_matrix`,
columns in ``FEATURES`` order): per-candidate dicts built by Python were half of a search's cost.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np

from models.ranker.engagement import Engagement

__all__ = ["FEATURES", "NEW_PRODUCT_DAYS", "Candidate", "candidate_features", "feature_matrix", "query_tokens"]

#: A product first seen less than this many days ago is "new".
NEW_PRODUCT_DAYS = 14.0

FEATURES = (
    "dense", "bm25", "fused", "retrieval_rank",
    "category_match", "brand_match",
    "p_impressions", "p_ctr", "p_atc", "p_cvr",
    "qp_impressions", "qp_ctr", "qp_cvr",
    "price_log", "margin_rate", "age_days", "is_new",
)

_TOKEN = re.compile(r"[a-z0-9]+")
_DAY_MS = 86_400_000


class Candidate(Protocol):
    """A retrieved product. Its ``payload`` is not changed in place once ranked: the parts of the
    features that depend on the payload alone are remembered by payload identity (:func:`_static`)."""

    # Read-only members, so that frozen dataclasses (the store's Hit) satisfy the protocol.
    @property
    def product_id(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def scores(self) -> dict[str, float]: ...
    @property
    def payload(self) -> dict[str, Any]: ...


def query_tokens(query: str) -> frozenset[str]:
    return frozenset(_TOKEN.findall(query.lower()))


@functools.lru_cache(maxsize=65_536)
def _tokens_of_text(text: str) -> frozenset[str]:
    # Brands and category paths repeat across candidates and searches: tokenise each once.
    return frozenset(_TOKEN.findall(text.lower()))


def _tokens_of(values: Any) -> frozenset[str]:
    if not values:
        return frozenset()
    if isinstance(values, str):
        return _tokens_of_text(values)
    return _tokens_of_text(" ".join(str(v) for v in values))


def _finite(x: Any, default: float = 0.0) -> float:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return default
    return f if math.isfinite(f) else default


def candidate_features(
    *, query: str, rank: int, scores: Mapping[str, float], payload: Mapping[str, Any],
    engagement: Engagement, now_ms: int,
) -> dict[str, float]:
    """Features of one retrieved candidate for ``query`` (missing or non-finite inputs become 0)."""
    row = _matrix(query, [(rank, scores, payload)], engagement, now_ms)[0]
    return dict(zip(FEATURES, row.tolist(), strict=True))


def feature_matrix(query: str, hits: Sequence[Candidate], engagement: Engagement, now_ms: int) -> np.ndarray:
    """One row of features per candidate, in ``FEATURES`` order; a candidate's rank is its index."""
    return _matrix(query, [(r, h.scores, h.payload) for r, h in enumerate(hits)], engagement, now_ms)


class _Static(NamedTuple):
    """What a candidate's features take from its payload alone: the same in every search."""

    product_id: str
    category: frozenset[str]
    brand: frozenset[str]
    price_log: float
    margin_rate: float
    created_ms: float


def _static_of(payload: Mapping[str, Any]) -> _Static:
    created = payload.get("created_at") or payload.get("updated_at")
    return _Static(
        str(payload.get("product_id", "")),
        _tokens_of(payload.get("category_path")),
        _tokens_of(payload.get("brand")),
        math.log1p(max(0.0, _finite(payload.get("price")))),
        min(1.0, max(-1.0, _finite(payload.get("margin")))),
        # NaN: no date (a year old); a date that is not a number counts as now, as it always has.
        _finite(created, math.inf) if created else math.nan,
    )


#: Static parts by payload identity. The edge store serves a product's payload as the same object from
#: its payload cache until the product changes, so most candidates are found here; the entry holds the
#: payload itself, so its id cannot be reused by another object while the entry lives.
_STATIC: dict[int, tuple[Mapping[str, Any], _Static]] = {}
_STATIC_ENTRIES = 20_000


def _static(payload: Mapping[str, Any]) -> _Static:
    entry = _STATIC.get(id(payload))
    if entry is not None and entry[0] is payload:
        return entry[1]
    static = _static_of(payload)
    if len(_STATIC) >= _STATIC_ENTRIES:
        _STATIC.clear()
    _STATIC[id(payload)] = (payload, static)
    return static


def _matrix(query: str, candidates: Sequence[tuple[int, Mapping[str, float], Mapping[str, Any]]],
            engagement: Engagement, now_ms: int) -> np.ndarray:
    out = np.zeros((len(candidates), len(FEATURES)), dtype=np.float64)
    if not candidates:
        return out
    q = query_tokens(query)
    pids: list[str] = []
    rows: list[tuple[float, ...]] = []
    for rank, scores, payload in candidates:
        st = _static(payload)
        pids.append(st.product_id)
        rows.append((
            scores.get("dense", 0.0), scores.get("bm25", 0.0), scores.get("fused", 0.0),
            1.0 / (1.0 + rank),
            0.0 if q.isdisjoint(st.category) else 1.0,
            0.0 if q.isdisjoint(st.brand) else 1.0,
            st.price_log, st.margin_rate, st.created_ms,
        ))
    try:
        content = np.array(rows, dtype=np.float64)
    except (TypeError, ValueError):  # a score that is not a number: each one checked
        content = np.array([[_finite(v) for v in row[:8]] + [row[8]] for row in rows], dtype=np.float64)
    scored = content[:, 0:3]
    out[:, 0:3] = np.where(np.isfinite(scored), scored, 0.0)
    out[:, 3:6] = content[:, 3:6]
    out[:, 13:15] = content[:, 6:8]
    created = content[:, 8]
    known = ~np.isnan(created)
    age = np.where(known, np.maximum(0.0, (now_ms - np.where(known, created, 0.0)) / _DAY_MS), 365.0)
    out[:, 15] = np.minimum(age, 365.0)
    out[:, 16] = age < NEW_PRODUCT_DAYS
    p = engagement.rates_many([engagement.product_key(pid) for pid in pids], now_ms)
    qp = engagement.rates_many(engagement.pair_keys(query, pids), now_ms)
    out[:, 6] = np.log1p(p[:, 0])
    out[:, 7:10] = p[:, 1:4]
    out[:, 10] = np.log1p(qp[:, 0])
    out[:, 11] = qp[:, 1]
    out[:, 12] = qp[:, 3]
    return out
