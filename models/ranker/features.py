"""The ranker's features, built the same way at serve time and logged with every search.

Relevance is split into content (how well the product's text matches the query: dense cosine, BM25,
the fused RRF score and rank, category and brand words in the query) and engagement (what shoppers
did with it: time-decayed, smoothed click, cart and purchase rates for the query×product pair and for
the product). Business inputs (price, margin rate) and freshness (age, a new-product flag) complete
the vector. Names are stable: they travel in ``SearchLog`` and ``AttributedInteraction``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from models.ranker.engagement import Engagement

__all__ = ["FEATURES", "NEW_PRODUCT_DAYS", "candidate_features", "query_tokens"]

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


def query_tokens(query: str) -> frozenset[str]:
    return frozenset(_TOKEN.findall(query.lower()))


def _tokens_of(values: Any) -> frozenset[str]:
    if not values:
        return frozenset()
    if isinstance(values, str):
        values = [values]
    return frozenset(t for v in values for t in _TOKEN.findall(str(v).lower()))


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
    q = query_tokens(query)
    pid = str(payload.get("product_id", ""))
    p = engagement.rates(engagement.product_key(pid), now_ms)
    qp = engagement.rates(engagement.pair_key(query, pid), now_ms)
    price = max(0.0, _finite(payload.get("price")))
    created = payload.get("created_at") or payload.get("updated_at")
    age_days = max(0.0, (now_ms - _finite(created, now_ms)) / 86_400_000) if created else 365.0
    return {
        "dense": _finite(scores.get("dense")),
        "bm25": _finite(scores.get("bm25")),
        "fused": _finite(scores.get("fused")),
        "retrieval_rank": 1.0 / (1.0 + rank),
        "category_match": 1.0 if q & _tokens_of(payload.get("category_path")) else 0.0,
        "brand_match": 1.0 if q & _tokens_of(payload.get("brand")) else 0.0,
        "p_impressions": math.log1p(p.impressions),
        "p_ctr": p.ctr,
        "p_atc": p.atc,
        "p_cvr": p.cvr,
        "qp_impressions": math.log1p(qp.impressions),
        "qp_ctr": qp.ctr,
        "qp_cvr": qp.cvr,
        "price_log": math.log1p(price),
        "margin_rate": min(1.0, max(-1.0, _finite(payload.get("margin")))),
        "age_days": min(age_days, 365.0),
        "is_new": 1.0 if age_days < NEW_PRODUCT_DAYS else 0.0,
    }
