"""Errors of the vector store layer. Every message says what to do next."""

from __future__ import annotations

from models.exceptions import ModelError

__all__ = ["CollectionNotFound", "DimensionMismatch", "InvalidRequest", "PointNotFound", "StoreError"]


class StoreError(ModelError):
    """The vector store could not do what was asked (engine failure, unreachable server, ...)."""


class CollectionNotFound(StoreError, LookupError):
    """A tenant has no collection (Qdrant server) or shard directory (Qdrant Edge) yet."""

    def __init__(self, tenant: str) -> None:
        super().__init__(f"no collection for tenant {tenant!r} — index its catalogue first")
        self.tenant = tenant


class PointNotFound(StoreError, LookupError):
    """A product that an update names is not in the tenant's collection."""

    def __init__(self, tenant: str, product_id: str) -> None:
        super().__init__(
            f"product {product_id!r} is not indexed for tenant {tenant!r} — upsert it (with its vector) first"
        )
        self.tenant = tenant
        self.product_id = product_id


class DimensionMismatch(StoreError, ValueError):
    """A vector's length differs from the dimension the tenant's collection was built with."""


class InvalidRequest(StoreError, ValueError):
    """The arguments cannot make a valid store operation (bad tenant id, dense mode without a vector, ...)."""
