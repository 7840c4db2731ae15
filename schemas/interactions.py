"""The learning loop's contracts: what each search showed, and shopper outcomes attributed to it.

``SearchLog`` is written by the search agent for every answered search, keyed like pixel events
(``tenant:session_id``) and partitioned the same way, so the attribution agent sees a session's
searches and its clicks on one partition, in order. ``AttributedInteraction`` is what attribution
emits for the ranker and the aggregates, keyed by ``tenant`` so one tenant's model learns in one place.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas.base import Currency, Identifier, Record, TenantId

__all__ = ["LoggedItem", "SearchLog", "AttributedInteraction", "Outcome", "OUTCOMES", "Bucket"]

Outcome = Literal["impression", "click", "add_to_cart", "purchase"]
OUTCOMES: tuple[Outcome, ...] = ("impression", "click", "add_to_cart", "purchase")

#: ``learning``: ranked by the online ranker; ``control``: the static hybrid ranking (for A/B analytics).
Bucket = Literal["learning", "control"]


class LoggedItem(Record):
    """One product as shown, with the features the ranker saw when it ranked it."""

    product_id: Identifier
    position: int = Field(ge=0, description="0-based rank shown.")
    features: dict[str, float] = Field(default_factory=dict, description="Ranker input features at serve time.")
    explored: bool = Field(default=False, description="Placed by the exploration budget, not by its score.")


class SearchLog(Record):
    """One answered search: the query, the items shown in order and their features."""

    search_id: Identifier
    tenant: TenantId
    session_id: Identifier | None = None
    user_id: Identifier | None = None
    query: str = Field(max_length=512)
    category: str | None = Field(default=None, description="Category filter, if the search had one.")
    items: list[LoggedItem] = Field(default_factory=list, max_length=100)
    bucket: Bucket = "learning"
    ranker_version: str | None = None
    answered_at: int = Field(ge=0, description="Epoch ms.")


class AttributedInteraction(Record):
    """One shopper outcome credited to the search that produced it.

    An ``impression`` is one results page shown: ``items`` lists what it showed, in order, with the
    logged features (the ranker's negatives and the exposure counts); one record per page keeps the
    topic ten to a hundred times smaller than a record per item. Click, add-to-cart and purchase rows
    name ``product_id`` and ``position`` and carry ``credit`` (a purchase reached through clicks on two
    searches gives each half) and ``value``/``margin`` already multiplied by that credit.
    """

    interaction_id: Identifier = Field(description="Deterministic from the source event: replays deduplicate.")
    tenant: TenantId
    search_id: Identifier
    query: str = Field(max_length=512)
    product_id: Identifier | None = Field(default=None, description="The product; absent for impressions.")
    position: int | None = Field(default=None, ge=0, description="0-based rank shown; absent for impressions.")
    items: list[LoggedItem] | None = Field(default=None, max_length=100, description="Impression only: the page shown.")
    outcome: Outcome
    credit: float = Field(default=1.0, gt=0, le=1)
    value: float = Field(default=0.0, ge=0, description="Revenue credited (price × quantity × credit).")
    margin: float = Field(default=0.0, description="Margin credited, in the same currency as value.")
    currency: Currency | None = None
    attributed_by: Literal["search_id", "session_window", "click_chain"] = "search_id"
    features: dict[str, float] = Field(default_factory=dict, description="Ranker features logged at serve time.")
    explored: bool = False
    bucket: Bucket = "learning"
    ranker_version: str | None = None
    session_id: Identifier | None = None
    user_hash: str | None = Field(default=None, max_length=64, description="Keyed hash of the user id, never the id.")
    event_ts: int = Field(ge=0, description="When the outcome happened (epoch ms).")
    search_ts: int = Field(ge=0, description="When the search was answered (epoch ms).")

    @model_validator(mode="after")
    def _shape_by_outcome(self) -> AttributedInteraction:
        if self.outcome == "impression":
            if not self.items:
                raise ValueError("an impression lists the items shown")
        elif self.product_id is None or self.position is None:
            raise ValueError(f"a {self.outcome} names product_id and position")
        return self
