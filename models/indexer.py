"""Applies catalogue updates to a vector store: newest version wins, unchanged text is not re-embedded.

No Kafka here: the catalogue agent hands batches of decoded updates to :class:`CatalogueIndexer`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from models.embedder import Embedder
from models.serving import Serving, ServingTable
from models.store import ProductPoint, VectorStore
from schemas import CatalogueUpdate

__all__ = ["CatalogueIndexer", "IndexReport", "content_hash", "product_text"]


def product_text(u: CatalogueUpdate) -> str:
    """The text a product is embedded and keyword-indexed by."""
    parts = [u.title or "", u.brand or "", " > ".join(u.category_path or []), (u.description or "")[:1000]]
    return ". ".join(p for p in parts if p)


def content_hash(u: CatalogueUpdate) -> str:
    return hashlib.sha256(product_text(u).encode()).hexdigest()[:32]


def _payload(u: CatalogueUpdate, model_version: str, digest: str) -> dict[str, Any]:
    path = list(u.category_path or [])
    payload: dict[str, Any] = {
        "product_id": u.product_id,
        "title": u.title,
        "category_path": path,
        "categories": path,
        "price": u.price,
        "currency": u.currency,
        "margin": u.margin,
        "stock": u.stock,
        "in_stock": 1 if (u.stock is None or u.stock > 0) else 0,
        "updated_at": u.updated_at,
        "created_at": u.created_at,
        "content_hash": digest,
        "model_version": model_version,
        "text": product_text(u),  # what a hot swap re-embeds with the next model (models.serving)
    }
    if u.brand:
        payload["brand"] = u.brand
    if u.attributes:
        payload["attributes"] = u.attributes
    if u.image_url:
        payload["image_url"] = u.image_url
    return {k: v for k, v in payload.items() if v is not None}


@dataclass
class IndexReport:
    """What one batch did. ``stale`` counts updates older than (or as old as) what is indexed."""

    embedded: int = 0
    payload_only: int = 0
    deleted: int = 0
    stale: int = 0
    tenants: set[str] = field(default_factory=set)


class CatalogueIndexer:
    """Idempotent, order-tolerant indexing of catalogue updates into per-tenant collections.

    Writes go to every collection :class:`~models.serving.ServingTable` names for the tenant: the
    serving one and, during a hot swap, the one being built with the next model (each with its own
    embedder), under the tenant's lock so the swap's own writes never interleave with them.
    """

    def __init__(self, store: VectorStore, embedder: Embedder, serving: ServingTable | None = None) -> None:
        self.store = store
        self.embedder = embedder
        self.serving = serving if serving is not None else ServingTable(embedder)
        self._collections: set[tuple[str, int]] = set()

    def apply(self, updates: Sequence[CatalogueUpdate], versions: dict[str, int | None] | None = None) -> IndexReport:
        """Index ``updates``. ``versions`` maps ``tenant:product_id`` to the ``updated_at`` of its delete (so
        a late upsert cannot resurrect a deleted product); it is read, and each delete taken is added.
        A product in the store carries its own ``updated_at``, compared too, so upserts are not added.
        """
        versions = {} if versions is None else versions
        report = IndexReport()
        latest: dict[tuple[str, str], CatalogueUpdate] = {}
        for u in updates:  # within a batch, the newest version of each product wins
            key = (u.tenant, u.product_id)
            if key not in latest or u.updated_at > latest[key].updated_at:
                latest[key] = u
            elif u is not latest[key]:
                report.stale += 1
        by_tenant: dict[str, list[CatalogueUpdate]] = {}
        for (tenant, _), u in latest.items():
            by_tenant.setdefault(tenant, []).append(u)
        for tenant, items in by_tenant.items():
            with self.serving.lock(tenant):
                self._apply_tenant(tenant, items, versions, report)
        return report

    def _ensure(self, target: Serving) -> None:
        key = (target.collection, target.embedder.dimensions)
        if key not in self._collections:
            self.store.ensure_collection(target.collection, target.embedder.dimensions)
            self._collections.add(key)

    def _apply_tenant(
        self, tenant: str, items: list[CatalogueUpdate], versions: dict[str, int | None], report: IndexReport
    ) -> None:
        report.tenants.add(tenant)
        targets = self.serving.targets(tenant)
        for target in targets:
            self._ensure(target)
        ids = [u.product_id for u in items]
        existing = self.store.payloads(targets[0].collection, ids)
        fresh: list[CatalogueUpdate] = []
        for u in items:
            vkey = f"{tenant}:{u.product_id}"
            known = max(versions.get(vkey) or 0, existing.get(u.product_id, {}).get("updated_at", 0))
            if u.updated_at <= known:
                report.stale += 1
                continue
            if u.op == "delete":
                versions[vkey] = u.updated_at
            fresh.append(u)
        for i, target in enumerate(targets):
            held = existing if i == 0 else self.store.payloads(target.collection, ids)
            # Only the serving collection's writes are reported: a collection being built is extra work.
            self._write(target, fresh, held, report if i == 0 else IndexReport())

    def _write(self, target: Serving, fresh: list[CatalogueUpdate], existing: dict[str, dict[str, Any]],
               report: IndexReport) -> None:
        embedder, collection = target.embedder, target.collection
        to_embed: list[tuple[CatalogueUpdate, str]] = []
        deletes: list[str] = []
        for u in fresh:
            if u.op == "delete":
                deletes.append(u.product_id)
                continue
            digest = content_hash(u)
            old = existing.get(u.product_id)
            if old and old.get("content_hash") == digest and old.get("model_version") == embedder.version:
                self.store.set_payload(collection, u.product_id, _payload(u, embedder.version, digest))
                report.payload_only += 1
            else:
                to_embed.append((u, digest))
        if deletes:
            self.store.delete(collection, deletes)
            report.deleted += len(deletes)
        if to_embed:
            texts = [product_text(u) for u, _ in to_embed]
            vectors = embedder.embed(texts)
            points = [
                ProductPoint(u.product_id, vectors[i], texts[i], _payload(u, embedder.version, digest))
                for i, (u, digest) in enumerate(to_embed)
            ]
            self.store.upsert(collection, points)
            report.embedded += len(points)
