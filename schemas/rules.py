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
    attribute: dict[str, str] | None = Field(default=None, description="One attribute name → value.")

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
    queries: list[str] | None = Field(default=None, description="Only for these queries (normalised, exact).")
    categories: list[str] | None = Field(default=None, description="Only when browsing these categories.")
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
        if self.starts_at is not None and self.ends_at is not None and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self
