"""Merchandising rules: a priority layer applied after the ranker."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas.base import Identifier, Record, TenantId

__all__ = ["MerchandisingRule", "RuleAction", "RuleTarget"]

RuleAction = Literal["pin", "boost", "bury", "hide"]


class RuleTarget(Record):
    """Which products a rule acts on; exactly one selector is given."""

    product_id: Identifier | None = None
    brand: str | None = None
    category: str | None = None
    attribute: dict[str, str] | None = Field(
        default=None, min_length=1, description="Attribute name → value; every pair must match."
    )

    @model_validator(mode="after")
    def _one_selector(self) -> RuleTarget:
        given = [v for v in (self.product_id, self.brand, self.category, self.attribute) if v is not None]
        if len(given) != 1:
            raise ValueError("a rule target names exactly one of product_id, brand, category, attribute")
        return self


class MerchandisingRule(Record):
    """Keyed by ``tenant:rule_id`` on a compacted topic; ``deleted`` retires a rule."""

    rule_id: Identifier
    tenant: TenantId
    action: RuleAction
    target: RuleTarget
    position: int | None = Field(default=None, ge=0, description="pin: 0-based slot.")
    factor: float | None = Field(default=None, gt=0, description="boost (>1) or bury (<1) score multiplier.")
    queries: list[str] | None = Field(
        default=None, min_length=1, description="Only for these queries (normalised, exact)."
    )
    categories: list[str] | None = Field(
        default=None, min_length=1, description="Only when the request's category filter is one of these."
    )
    starts_at: int | None = Field(default=None, ge=0)
    ends_at: int | None = Field(default=None, ge=0)
    deleted: bool = False
    updated_at: int = Field(ge=0)

    @model_validator(mode="after")
    def _action_args(self) -> MerchandisingRule:
        if self.action == "pin" and (self.position is None or self.target.product_id is None):
            raise ValueError("pin needs a position and a product_id target")
        if self.action in ("boost", "bury") and self.factor is None:
            raise ValueError(f"{self.action} needs a factor")
        if self.action == "boost" and self.factor is not None and self.factor <= 1:
            raise ValueError("a boost factor must be above 1 (use bury to lower products)")
        if self.action == "bury" and self.factor is not None and self.factor >= 1:
            raise ValueError("a bury factor must be below 1 (use boost to raise products)")
        if self.starts_at is not None and self.ends_at is not None and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self
