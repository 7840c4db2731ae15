"""The vector store's vocabulary: what goes in, what a search asks for, what comes out.

Two adapters implement :class:`VectorStore`: :class:`models.store.edge.EdgeStore` (Qdrant Edge,
in-process, one shard directory per tenant) and :class:`models.store.server.QdrantServerStore`
(a Qdrant server, or qdrant-client's local mode, one collection per tenant). Both store the same
named vectors and payload indexes, so a tenant's catalogue means the same thing on either.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from models.store.exceptions import InvalidRequest

if TYPE_CHECKING:  # fusion builds on this module
    from models.store.fusion import Fusion

__all__ = [
    "DENSE",
    "MIN_CANDIDATES",
    "PAYLOAD_INDEXES",
    "RESCORE_OVERSAMPLING",
    "SPARSE",
    "Hit",
    "ProductPoint",
    "Quantization",
    "SearchFilter",
    "SearchMode",
    "VectorStore",
    "check_tenant",
    "clean_payload",
    "point_id",
]

#: Name of the dense (cosine) vector in every collection.
DENSE = "dense"
#: Name of the sparse BM25 vector (IDF modifier) in every collection.
SPARSE = "bm25"
#: Each retrieval stage fetches at least this many candidates, so fusion and facets have material.
MIN_CANDIDATES = 100
#: Payload fields indexed in every collection, and their index type.
PAYLOAD_INDEXES: dict[str, Literal["keyword", "float", "integer"]] = {
    "product_id": "keyword",
    "categories": "keyword",
    "brand": "keyword",
    "price": "float",
    "in_stock": "integer",
}

#: Payload fields search hits leave out: the embedded text (up to about 1 KB a product) is read only to
#: re-embed a catalogue (models.serving), and converting it for every hit was a quarter of retrieval time.
SEARCH_PAYLOAD_EXCLUDE: tuple[str, ...] = ("text",)

SearchMode = Literal["hybrid", "dense", "keyword"]
#: Dense vector storage: float32 only, or binary quantised (1 bit per dimension) with float rescoring.
Quantization = Literal["none", "binary"]
#: With binary quantisation, this many times the candidates are rescored with the float vectors.
RESCORE_OVERSAMPLING = 3.0

# Fixed forever: point ids derive from it, so changing it orphans every indexed point.
_POINT_NAMESPACE = uuid.UUID("adf187f0-f515-5bf4-875a-382bc2fe75be")  # uuid5(NAMESPACE_URL, "shoprank:product")
# The same rule as schemas.base.TenantId: the id becomes a directory and a collection name.
_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class ProductPoint:
    """One product as the store indexes it."""

    product_id: str
    dense: np.ndarray  # shape (dim,), float32, L2-normalised
    text: str  # what BM25 indexes: title, brand, categories, description
    payload: dict[str, Any]


@dataclass(frozen=True)
class SearchFilter:
    """Conditions every hit must satisfy.

    ``None`` fields do not filter, nor do an empty ``category`` or ``brands``; an empty ``product_ids``
    matches nothing.
    """

    category: str | None = None  # matches any level of category_path
    brands: tuple[str, ...] | None = None
    price_min: float | None = None
    price_max: float | None = None
    in_stock: bool | None = None
    product_ids: tuple[str, ...] | None = None  # only these products (re-ranking a known candidate set)


@dataclass(frozen=True)
class Hit:
    """A retrieved product.

    ``score`` is the fused score in hybrid mode, else the single stage's score. ``scores`` holds one
    entry per stage that returned the product: ``"dense"`` (cosine), ``"bm25"``, ``"fused"`` (hybrid mode:
    the fusion's score, see :mod:`models.store.fusion`).
    """

    product_id: str
    score: float
    scores: dict[str, float]
    payload: dict[str, Any]


class VectorStore(Protocol):
    """Per-tenant product index with dense, keyword and hybrid retrieval."""

    backend: str  # "edge" or "qdrant"

    def ensure_collection(self, tenant: str, dimensions: int) -> None:
        """Create the tenant's collection and payload indexes if missing; idempotent."""
        ...

    def upsert(self, tenant: str, points: Sequence[ProductPoint]) -> None:
        """Insert or replace points; idempotent by ``product_id``."""
        ...

    def set_payload(self, tenant: str, product_id: str, payload: dict[str, Any]) -> None:
        """Merge ``payload`` into an indexed product's payload; vectors are left as they are."""
        ...

    def delete(self, tenant: str, product_ids: Sequence[str]) -> None:
        """Remove products; unknown ids are ignored."""
        ...

    def payloads(self, tenant: str, product_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored payloads by product id; ids that are not indexed are absent."""
        ...

    def search(
        self,
        tenant: str,
        dense: np.ndarray | None,
        text: str,
        *,
        filter: SearchFilter | None = None,
        limit: int = 100,
        mode: SearchMode = "hybrid",
        fusion: Fusion | None = None,
    ) -> list[Hit]:
        """Best ``limit`` products for the query, best first; hybrid mode merges its stages with ``fusion``
        (default: the store's own)."""
        ...

    def scroll(self, tenant: str, offset: Any = None, limit: int = 256) -> tuple[list[dict[str, Any]], Any]:
        """One page of stored payloads, and the offset of the next page (None after the last)."""
        ...

    def drop(self, tenant: str) -> None:
        """Delete the collection and everything in it; a missing one is ignored."""
        ...

    def count(self, tenant: str) -> int:
        """Number of products indexed for the tenant."""
        ...

    def flush(self) -> None:
        """Make every acknowledged write durable."""
        ...

    def optimize_pending(self, min_points: int) -> list[str]:
        """Build the vector index of each open collection that took at least ``min_points`` vectors since it
        was last built; the names of those built (a Qdrant server builds its indexes itself: none)."""
        ...

    def close(self) -> None:
        """Flush and release files and connections."""
        ...


def check_tenant(tenant: str) -> str:
    """``tenant`` if it is a valid tenant id, else :class:`InvalidRequest`."""
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        raise InvalidRequest(
            f"tenant id {tenant!r} is not valid — use 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or digit"
        )
    return tenant


def point_id(tenant: str, product_id: str) -> str:
    """The Qdrant point id of a product: a UUID5, stable across runs, processes and backends.

    >>> point_id("demo", "sku-1") == point_id("demo", "sku-1") != point_id("acme", "sku-1")
    True
    """
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{tenant}:{product_id}"))


def clean_payload(product_id: str | None, payload: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``payload`` as it is stored: ``product_id`` set, ``in_stock`` as 0/1.

    A filter on a boolean payload value never matches in Qdrant Edge 0.9, so flags are stored as 0/1 ints.

    >>> clean_payload("a", {"in_stock": True, "price": 3.0})
    {'in_stock': 1, 'price': 3.0, 'product_id': 'a'}
    """
    out = dict(payload)
    if product_id is not None:
        out["product_id"] = product_id
    if isinstance(out.get("in_stock"), bool):
        out["in_stock"] = int(out["in_stock"])
    return out
