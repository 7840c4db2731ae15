"""Search requests and the results replied to them."""

from __future__ import annotations

from pydantic import Field

from schemas.base import Identifier, Record, TenantId

__all__ = ["SearchRequest", "SearchFilters", "SearchResult", "RankedItem", "SearchError"]


class SearchFilters(Record):
    """Restrictions on the candidate set; every given filter must hold."""

    category: str | None = Field(default=None, max_length=200, description="Any level of the category path.")
    brand: list[str] | None = Field(default=None, max_length=100)
    price_min: float | None = Field(default=None, ge=0)
    price_max: float | None = Field(default=None, ge=0)
    in_stock: bool | None = None


class SearchRequest(Record):
    """A shopper's query. Keyed by ``tenant:request_id``; the answer goes to ``reply_topic``."""

    request_id: Identifier
    tenant: TenantId
    query: str = Field(max_length=512)
    user_id: Identifier | None = None
    session_id: Identifier | None = None
    filters: SearchFilters | None = None
    page_size: int = Field(default=20, ge=1, le=100)
    reply_topic: str | None = Field(
        default=None, max_length=249, pattern=r"^[A-Za-z0-9._-]+$", description="Defaults to the results topic."
    )
    sent_at: int | None = Field(default=None, ge=0, description="Client send time (epoch ms).")


class RankedItem(Record):
    product_id: Identifier
    rank: int = Field(ge=0)
    score: float
    scores: dict[str, float] = Field(default_factory=dict, description="Score per stage: dense, bm25, fused, ranker…")
    rules: list[str] = Field(
        default_factory=list, description="Ids of the merchandising rules that placed or scaled this item."
    )
    title: str | None = None
    price: float | None = None
    currency: str | None = None


class SearchError(Record):
    code: str = Field(description="Stable code, e.g. empty_query, unknown_tenant, query_too_long, request_expired, internal_error.")
    message: str


class SearchResult(Record):
    """The answer to one request. ``search_id`` is what later pixel events point back to."""

    request_id: Identifier
    tenant: TenantId
    search_id: Identifier | None = Field(default=None, description="Absent when the request failed.")
    query: str | None = None
    items: list[RankedItem] = Field(default_factory=list)
    facets: dict[str, dict[str, int]] = Field(default_factory=dict)
    model_versions: dict[str, str] = Field(default_factory=dict)
    timings_ms: dict[str, float] = Field(default_factory=dict, description="Wall time per stage.")
    error: SearchError | None = None
    answered_at: int = Field(ge=0)
