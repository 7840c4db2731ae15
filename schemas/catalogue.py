"""Catalogue updates: product upserts and deletes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from schemas.base import Currency, Identifier, Record, TenantId

__all__ = ["CatalogueUpdate", "CatalogueOp"]

CatalogueOp = Literal["upsert", "delete"]


class CatalogueUpdate(Record):
    """A product's new state, or its removal. Keyed by ``tenant:product_id``.

    Updates for one product may arrive out of order; ``updated_at`` (epoch ms) decides which wins.
    A ``delete`` needs only tenant, product_id and updated_at.
    """

    op: CatalogueOp = "upsert"
    tenant: TenantId
    product_id: Identifier
    updated_at: int = Field(ge=0, description="Version of this product state (epoch ms); newest wins.")
    created_at: int | None = Field(
        default=None, ge=0, description="When the product was launched (epoch ms): its age, and whether it is new."
    )
    title: str | None = Field(default=None, min_length=1, max_length=1000)
    description: str | None = Field(default=None, max_length=20_000)
    category_path: list[str] | None = Field(default=None, max_length=16, description="Root first.")
    brand: str | None = Field(default=None, max_length=200)
    price: float | None = Field(default=None, ge=0)
    currency: Currency | None = None
    margin: float | None = Field(default=None, ge=-1, le=1, description="Gross margin as a fraction of price.")
    stock: int | None = Field(default=None, ge=0)
    attributes: dict[str, str | float | int | bool | list[str]] | None = None
    image_url: str | None = Field(default=None, max_length=2048)

    @model_validator(mode="after")
    def _upsert_fields(self) -> CatalogueUpdate:
        if self.op == "upsert":
            if self.title is None:
                raise PydanticCustomError("missing", "an upsert needs a title")
            if self.price is not None and self.currency is None:
                raise PydanticCustomError("missing", "a price needs a currency")
        return self
