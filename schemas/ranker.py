"""A tenant's learned ranker, shared between workers.

Only the worker that holds a tenant's ``interactions`` partition learns its model, but searches land on
every worker. That worker publishes a snapshot of the model to a compacted topic keyed by tenant; every
worker follows the topic and serves the newest snapshot it has read. The snapshot is plain numbers, not
a pickle, so that whoever can write the topic cannot run code on the workers.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints, field_validator

from schemas.base import Identifier, Record, TenantId

__all__ = ["LinearModelState", "RankerSnapshot"]

#: A feature name: the models have a few dozen at most, named like ``qp_ctr``.
FeatureName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]
_Finite = Annotated[float, Field(allow_inf_nan=False)]
_MAX_FEATURES = 256


class LinearModelState(Record):
    """A logistic regression behind a running standard scaler (River's), as numbers."""

    counts: dict[FeatureName, Annotated[int, Field(ge=0)]] = Field(
        max_length=_MAX_FEATURES, description="Scaler: values seen per feature.")
    means: dict[FeatureName, _Finite] = Field(max_length=_MAX_FEATURES, description="Scaler: running means.")
    variances: dict[FeatureName, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(
        max_length=_MAX_FEATURES, description="Scaler: running variances.")
    weights: dict[FeatureName, _Finite] = Field(max_length=_MAX_FEATURES, description="Weight per scaled feature.")
    intercept: _Finite
    iterations: int = Field(ge=0, description="Optimiser steps taken (its learning-rate schedule's clock).")


class RankerSnapshot(Record):
    """Keyed by ``tenant`` on a compacted topic: the latest snapshot of each tenant's model wins."""

    tenant: TenantId
    model: Identifier = Field(description="Model family, e.g. river-lr; a worker adopts only its own family.")
    updates: int = Field(ge=0, description="Interactions learned: the model's version, newer wins.")
    click: LinearModelState = Field(description="P(click | shown, examined).")
    buy: LinearModelState = Field(description="P(purchase | click).")
    impressions_by_slot: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(
        default_factory=dict, max_length=_MAX_FEATURES,
        description="Examination propensity: impressions of explored items, by 0-based slot.")
    clicks_by_slot: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(
        default_factory=dict, max_length=_MAX_FEATURES,
        description="Examination propensity: clicks on explored items, by 0-based slot.")
    worker: str = Field(default="", max_length=256, description="Which worker published it (for operators).")
    published_at: int = Field(ge=0, description="Milliseconds since the epoch.")

    @field_validator("impressions_by_slot", "clicks_by_slot")
    @classmethod
    def _slots_are_ranks(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [k for k in value if not (k.isascii() and k.isdigit() and len(k) <= 4)]
        if bad:
            raise ValueError(f"slot keys are 0-based ranks written as digits, not {bad[:3]}")
        return value
