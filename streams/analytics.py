"""Live per-tenant analytics from attributed interactions: conversion against the control bucket,
revenue per search, new-product performance and query coverage.

Counters are plain dicts (JSON-able, kept in a Faust table per tenant, bucket and partition); this
module only adds to them and summarises them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from schemas import AttributedInteraction

__all__ = ["COUNTERS", "add_interaction", "summarise", "merge"]

COUNTERS = (
    "searches", "converted_searches", "clicks", "carts", "purchases", "revenue", "margin",
    "new_impressions", "new_clicks", "new_purchases", "explored_clicks", "explored_purchases",
)

#: The feature the ranker logs for a product that is new (models.ranking.features).
NEW_FLAG = "is_new"


def add_interaction(totals: dict[str, float], it: AttributedInteraction, *, first_purchase_of_search: bool) -> None:
    """Count one (already deduplicated) interaction into ``totals``."""
    if it.outcome == "impression":  # one results page shown: one search
        _inc(totals, "searches", 1)
        _inc(totals, "new_impressions", sum(1 for i in it.items or () if i.features.get(NEW_FLAG, 0.0) >= 0.5))
        return
    is_new = it.features.get(NEW_FLAG, 0.0) >= 0.5
    if it.outcome == "click":
        _inc(totals, "clicks", 1)
        if is_new:
            _inc(totals, "new_clicks", 1)
        if it.explored:
            _inc(totals, "explored_clicks", 1)
    elif it.outcome == "add_to_cart":
        _inc(totals, "carts", 1)
    else:
        _inc(totals, "purchases", it.credit)
        _inc(totals, "revenue", it.value)
        _inc(totals, "margin", it.margin)
        if first_purchase_of_search:
            _inc(totals, "converted_searches", 1)
        if is_new:
            _inc(totals, "new_purchases", it.credit)
        if it.explored:
            _inc(totals, "explored_purchases", it.credit)


def _inc(totals: dict[str, float], name: str, by: float) -> None:
    totals[name] = totals.get(name, 0) + by


def merge(parts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in parts:
        for k, v in part.items():
            out[k] = out.get(k, 0) + v
    return out


def summarise(by_bucket: Mapping[str, Mapping[str, float]], coverage: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Rates per bucket and the learning bucket's lift over control."""
    out: dict[str, Any] = {"buckets": {}}
    for bucket, t in by_bucket.items():
        searches = t.get("searches", 0)
        clicks = t.get("clicks", 0)
        out["buckets"][bucket] = {
            **{k: round(t.get(k, 0), 4) for k in COUNTERS},
            "conversion": round(t.get("converted_searches", 0) / searches, 5) if searches else None,
            "ctr": round(clicks / searches, 5) if searches else None,
            "revenue_per_search": round(t.get("revenue", 0) / searches, 4) if searches else None,
            "new_product_click_share": round(t.get("new_clicks", 0) / clicks, 5) if clicks else None,
        }
    learn, ctrl = out["buckets"].get("learning", {}), out["buckets"].get("control", {})
    for metric in ("conversion", "revenue_per_search"):
        a, b = learn.get(metric), ctrl.get(metric)
        out[f"{metric}_lift"] = round(a / b - 1, 4) if a is not None and b else None
    if coverage is not None:
        total = coverage.get("searches", 0)
        out["query_coverage"] = round(coverage.get("confident", 0) / total, 4) if total else None
        out["coverage_counts"] = dict(coverage)
    return out
