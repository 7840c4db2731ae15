"""The vector store: one interface (:class:`VectorStore`), two Qdrant backends chosen by configuration.

- ``edge``: Qdrant Edge in-process, a persistent shard directory per tenant under ``root``.
- ``qdrant``: a Qdrant server at ``url`` (``":memory:"`` runs qdrant-client's local mode in-process),
  a collection per tenant.

Both index a dense cosine vector ``dense`` and a BM25 sparse vector ``bm25`` (computed client-side
with Qdrant Edge's ``Bm25`` for both, see :mod:`models.store.bm25`), and fuse them in Python
(:mod:`models.store.fusion`: relative score fusion by default, or RRF).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from models.store.base import Hit, ProductPoint, Quantization, SearchFilter, SearchMode, VectorStore
from models.store.edge import EdgeStore
from models.store.exceptions import (
    CollectionNotFound,
    DimensionMismatch,
    InvalidRequest,
    PointNotFound,
    StoreError,
)
from models.store.fusion import DEFAULT_FUSION, Fusion, FusionMethod
from models.store.server import QdrantServerStore

__all__ = [
    "DEFAULT_FUSION",
    "CollectionNotFound",
    "DimensionMismatch",
    "EdgeStore",
    "Fusion",
    "FusionMethod",
    "Hit",
    "InvalidRequest",
    "PointNotFound",
    "ProductPoint",
    "QdrantServerStore",
    "Quantization",
    "SearchFilter",
    "SearchMode",
    "StoreError",
    "StoreKind",
    "VectorStore",
    "open_store",
]

StoreKind = Literal["edge", "qdrant"]


def open_store(
    kind: StoreKind,
    *,
    root: Path | None = None,
    url: str | None = None,
    collection_prefix: str = "",
    quantization: Quantization = "none",
    fusion: Fusion = DEFAULT_FUSION,
) -> VectorStore:
    """The configured store: ``kind="edge"`` needs ``root``, ``kind="qdrant"`` needs ``url``.

    >>> store = open_store("qdrant", url=":memory:")
    >>> store.backend
    'qdrant'
    >>> store.close()
    """
    if kind == "edge":
        if root is None:
            raise InvalidRequest("the edge store needs a directory — set SHOPRANK_STORE_DIR")
        return EdgeStore(Path(root), quantization, fusion=fusion)
    if kind == "qdrant":
        if not url:
            raise InvalidRequest(
                "the qdrant store needs a server URL — set SHOPRANK_STORE_URL (e.g. http://localhost:6333, "
                "or :memory: for an in-process store)"
            )
        return QdrantServerStore.from_url(url, collection_prefix=collection_prefix, quantization=quantization,
                                          fusion=fusion)
    raise InvalidRequest(f"store kind {kind!r} is unknown — set SHOPRANK_STORE_KIND to edge or qdrant")
