"""Shopper events published by the JavaScript pixel."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from schemas.base import Currency, Identifier, Record, TenantId

__all__ = ["PixelEvent", "EventType", "EVENT_TYPES"]

EventType = Literal["impression", "click", "add_to_cart", "purchase", "page_view"]
EVENT_TYPES: tuple[EventType, ...] = ("impression", "click", "add_to_cart", "purchase", "page_view")

#: Event types that concern one product and so must name it.
_PRODUCT_EVENTS = frozenset({"click", "add_to_cart", "purchase"})


class PixelEvent(Record):
    """One shopper event. Keyed on its topic by ``tenant:session_id``.

    ``impression`` is a results page shown: ``items`` lists the product ids in the order shown,
    under the ``search_id`` that produced them. Interactions point back to that ``search_id``.
    Timestamps are Unix epoch milliseconds.
    """

    event_id: Identifier = Field(description="Unique per event; retries reuse it, so it deduplicates.")
    tenant: TenantId
    type: EventType
    user_id: Identifier = Field(description="Anonymous shopper id set by the pixel.")
    session_id: Identifier
    client_ts: int = Field(ge=0, description="When the event happened, by the browser's clock (epoch ms).")
    server_ts: int | None = Field(
        default=None, ge=0, description="When the collector received it (epoch ms); filled in if absent."
    )
    search_id: Identifier | None = Field(default=None, description="The search that led to this event.")
    product_id: Identifier | None = None
    items: list[Identifier] | None = Field(
        default=None, max_length=1000, description="Impression only: product ids in the order shown."
    )
    position: int | None = Field(default=None, ge=0, description="0-based rank of product_id in the results.")
    quantity: int | None = Field(default=None, ge=1, le=100_000)
    price: float | None = Field(default=None, ge=0, description="Unit price of product_id.")
    value: float | None = Field(default=None, ge=0, description="Total value (price × quantity) of the event.")
    currency: Currency | None = None
    page_url: str | None = Field(default=None, max_length=2048)

    @model_validator(mode="after")
    def _required_by_type(self) -> PixelEvent:
        if self.type in _PRODUCT_EVENTS and self.product_id is None:
            raise PydanticCustomError("missing", "a {type} event needs product_id", {"type": self.type})
        if self.type == "impression" and not self.items:
            raise PydanticCustomError("missing", "an impression event needs items (the product ids shown)")
        if self.type == "purchase" and (self.value is None or self.currency is None):
            raise PydanticCustomError("missing", "a purchase event needs value and currency")
        if (self.value is not None or self.price is not None) and self.currency is None:
            raise ValueError("value and price need a currency")
        return self
