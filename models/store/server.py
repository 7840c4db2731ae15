"""Qdrant server adapter (qdrant-client): one collection per tenant, ``{prefix}shoprank_{tenant}``.

The same class runs on qdrant-client's local mode (``QdrantClient(":memory:")`` or ``path=...``), which
is what the tests use. Local mode ignores payload indexes (filters still work, by scanning) and counts
every point, including ones with an empty sparse vector, in the BM25 IDF, where the engine counts only
points that have terms: scores differ slightly on catalogues with text-less products.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_edge import SparseVector

from models.store.base import (
    DENSE,
    PAYLOAD_INDEXES,
    RESCORE_OVERSAMPLING,
    SEARCH_PAYLOAD_EXCLUDE,
    SPARSE,
    Hit,
    ProductPoint,
    Quantization,
    SearchFilter,
    SearchMode,
    check_tenant,
    clean_payload,
    point_id,
)
from models.store.bm25 import document_vector
from models.store.exceptions import (
    CollectionNotFound,
    DimensionMismatch,
    PointNotFound,
    StoreError,
)
from models.store.fusion import DEFAULT_FUSION, Fusion, QueryPlan, Scored, plan_query, rank, to_hits

__all__ = ["QdrantServerStore", "server_filter"]

_BATCH = 256
_HIT_PAYLOAD = qm.PayloadSelectorExclude(exclude=list(SEARCH_PAYLOAD_EXCLUDE))
_INDEX_TYPES = {
    "keyword": qm.PayloadSchemaType.KEYWORD,
    "float": qm.PayloadSchemaType.FLOAT,
    "integer": qm.PayloadSchemaType.INTEGER,
}


def server_filter(f: SearchFilter | None) -> qm.Filter | None:
    """The qdrant-client filter for ``f``, condition for condition the same as the Edge one."""
    if f is None:
        return None
    must: list[qm.Condition] = []
    if f.category:
        must.append(qm.FieldCondition(key="categories", match=qm.MatchValue(value=f.category)))
    if f.brands:
        must.append(qm.FieldCondition(key="brand", match=qm.MatchAny(any=list(f.brands))))
    if f.price_min is not None or f.price_max is not None:
        lo = None if f.price_min is None else float(f.price_min)
        hi = None if f.price_max is None else float(f.price_max)
        must.append(qm.FieldCondition(key="price", range=qm.Range(gte=lo, lte=hi)))
    if f.in_stock is not None:
        must.append(qm.FieldCondition(key="in_stock", match=qm.MatchValue(value=1 if f.in_stock else 0)))
    if f.product_ids is not None:
        must.append(qm.FieldCondition(key="product_id", match=qm.MatchAny(any=list(f.product_ids))))
    return qm.Filter(must=must) if must else None


def _sparse(vector: SparseVector) -> qm.SparseVector:
    return qm.SparseVector(indices=list(vector.indices), values=list(vector.values))


class _Serialized:
    """A qdrant-client in local mode with every call under one lock.

    Local mode keeps points in numpy arrays that an upsert grows in place, and the worker calls the store
    from several threads (searches, catalogue batches, a model swap's rebuild): a search that ran while
    an upsert grew the arrays failed ("operands could not be broadcast together with shapes (301,)
    (300,)", test_swap). A Qdrant server serves concurrent requests itself.
    """

    def __init__(self, client: QdrantClient) -> None:
        self._client = client
        self._lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return call


class QdrantServerStore:
    """:class:`~models.store.base.VectorStore` on a Qdrant server (or qdrant-client local mode)."""

    backend = "qdrant"

    def __init__(self, client: QdrantClient, collection_prefix: str = "", quantization: Quantization = "none",
                 fusion: Fusion = DEFAULT_FUSION) -> None:
        self.client = client
        self.collection_prefix = collection_prefix
        self.quantization = quantization
        self.fusion = fusion
        self._dims: dict[str, int] = {}  # collections known to exist, with their dense dimension

    @classmethod
    def from_url(
        cls, url: str, *, collection_prefix: str = "", api_key: str | None = None, timeout: int = 10,
        quantization: Quantization = "none", fusion: Fusion = DEFAULT_FUSION,
    ) -> QdrantServerStore:
        """Connect to ``url`` (``":memory:"``: an in-process local-mode store) and check it answers."""
        if url == ":memory:":
            return cls(cast(QdrantClient, _Serialized(QdrantClient(":memory:"))), collection_prefix, quantization,
                       fusion)
        client = QdrantClient(url=url, api_key=api_key, timeout=timeout)
        try:
            client.get_collections()
        except Exception as e:
            client.close()
            raise StoreError(
                f"Qdrant not reachable at {url} ({e}) — start one (`docker compose -f docker/compose.yaml up -d "
                "qdrant`), set SHOPRANK_STORE_URL, or use SHOPRANK_STORE_KIND=edge"
            ) from e
        return cls(client, collection_prefix, quantization, fusion)

    def collection(self, tenant: str) -> str:
        """The tenant's collection name."""
        return f"{self.collection_prefix}shoprank_{check_tenant(tenant)}"

    # -- lifecycle ---------------------------------------------------------------------------

    def ensure_collection(self, tenant: str, dimensions: int) -> None:
        if dimensions <= 0:
            raise DimensionMismatch(f"dimensions must be positive, got {dimensions}")
        if self._dims.get(tenant) == dimensions:
            return
        name = self.collection(tenant)
        with self._engine(tenant, "create the collection"):
            if not self.client.collection_exists(name):
                try:
                    binary = self.quantization == "binary"
                    self.client.create_collection(
                        name,
                        vectors_config={DENSE: qm.VectorParams(size=dimensions, distance=qm.Distance.COSINE,
                                                               on_disk=True if binary else None)},
                        quantization_config=qm.BinaryQuantization(binary=qm.BinaryQuantizationConfig(always_ram=True))
                        if binary else None,
                        sparse_vectors_config={SPARSE: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
                    )
                except Exception:
                    if not self.client.collection_exists(name):  # else another worker just created it
                        raise
            info = self.client.get_collection(name)
        have = self._dense_size(info)
        if have != dimensions:
            raise DimensionMismatch(
                f"collection {name!r} holds {have}-d vectors, not {dimensions}-d — use the embedder it was "
                f"indexed with, or re-index: delete the collection and index the catalogue again"
            )
        missing = [f for f in PAYLOAD_INDEXES if f not in (info.payload_schema or {})]
        with self._engine(tenant, "create payload indexes"), warnings.catch_warnings():
            # Local mode warns that indexes have no effect there; filters still work without them.
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            for field in missing:
                self.client.create_payload_index(name, field, field_schema=_INDEX_TYPES[PAYLOAD_INDEXES[field]])
        self._dims[tenant] = dimensions

    @staticmethod
    def _dense_size(info: qm.CollectionInfo) -> int | None:
        vectors = info.config.params.vectors
        params = vectors.get(DENSE) if isinstance(vectors, dict) else None
        return params.size if params is not None else None

    def _require(self, tenant: str) -> str:
        """The tenant's collection name; :class:`CollectionNotFound` if it does not exist."""
        name = self.collection(tenant)
        if tenant not in self._dims:
            with self._engine(tenant, "look up the collection"):
                if not self.client.collection_exists(name):
                    raise CollectionNotFound(tenant)
                size = self._dense_size(self.client.get_collection(name))
            if size is None:
                raise StoreError(f"collection {name!r} has no {DENSE!r} vector — it was not made by shoprank; re-index")
            self._dims[tenant] = size
        return name

    def flush(self) -> None:
        """Nothing to do: the server acknowledges writes once they are in its WAL (``wait=True``)."""

    def optimize_pending(self, min_points: int) -> list[str]:
        """Nothing to do: the server's optimizers index new segments in its own threads."""
        return []

    def close(self) -> None:
        self.client.close()
        self._dims.clear()

    @contextmanager
    def _engine(self, tenant: str, action: str) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except Exception as e:
            raise StoreError(f"qdrant could not {action} for tenant {tenant!r}: {e}") from e

    def _check_dims(self, tenant: str, vector: np.ndarray | list[float], what: str) -> None:
        dims = self._dims[tenant]
        if len(vector) != dims:
            raise DimensionMismatch(
                f"{what} has {len(vector)} dimensions, tenant {tenant!r} is indexed with {dims} — "
                "use the embedder the catalogue was indexed with, or re-index"
            )

    # -- writes ------------------------------------------------------------------------------

    def upsert(self, tenant: str, points: Sequence[ProductPoint]) -> None:
        name = self._require(tenant)
        for start in range(0, len(points), _BATCH):
            batch = []
            for p in points[start : start + _BATCH]:
                dense = np.asarray(p.dense, dtype=np.float32).ravel()
                self._check_dims(tenant, dense, f"product {p.product_id!r}'s vector")
                batch.append(
                    qm.PointStruct(
                        id=point_id(tenant, p.product_id),
                        vector={DENSE: dense.tolist(), SPARSE: _sparse(document_vector(p.text))},
                        payload=clean_payload(p.product_id, p.payload),
                    )
                )
            with self._engine(tenant, "upsert"):
                self.client.upsert(name, batch, wait=True)

    def set_payload(self, tenant: str, product_id: str, payload: dict[str, Any]) -> None:
        name = self._require(tenant)
        pid = point_id(tenant, product_id)
        with self._engine(tenant, "read points"):
            found = self.client.retrieve(name, [pid], with_payload=False)
        if not found:
            raise PointNotFound(tenant, product_id)
        with self._engine(tenant, "set payload"):
            self.client.set_payload(name, clean_payload(product_id, payload), points=[pid], wait=True)

    def delete(self, tenant: str, product_ids: Sequence[str]) -> None:
        name = self._require(tenant)
        if not product_ids:
            return
        selector = qm.PointIdsList(points=[point_id(tenant, p) for p in product_ids])
        with self._engine(tenant, "delete"):
            self.client.delete(name, selector, wait=True)

    # -- reads -------------------------------------------------------------------------------

    def payloads(self, tenant: str, product_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        name = self._require(tenant)
        if not product_ids:
            return {}
        with self._engine(tenant, "read points"):
            records = self.client.retrieve(name, [point_id(tenant, p) for p in dict.fromkeys(product_ids)])
        return {r.payload["product_id"]: dict(r.payload) for r in records if r.payload}

    def scroll(self, tenant: str, offset: Any = None, limit: int = 256) -> tuple[list[dict[str, Any]], Any]:
        name = self._require(tenant)
        with self._engine(tenant, "scroll"):
            records, after = self.client.scroll(name, limit=limit, offset=offset, with_payload=True,
                                                with_vectors=False)
        return [dict(r.payload) for r in records if r.payload], after

    def drop(self, tenant: str) -> None:
        name = self.collection(tenant)
        with self._engine(tenant, "drop the collection"):
            if self.client.collection_exists(name):
                self.client.delete_collection(name)
        self._dims.pop(tenant, None)

    def count(self, tenant: str) -> int:
        name = self._require(tenant)
        with self._engine(tenant, "count"):
            return self.client.count(name, exact=True).count

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
        name = self._require(tenant)
        plan = plan_query(dense, text, mode, limit)
        if plan is None:
            return []
        if plan.dense is not None:
            self._check_dims(tenant, plan.dense, "the query vector")
        with self._engine(tenant, "search"):
            stages, payloads = self._stages(name, plan, server_filter(filter))
        return to_hits(rank(stages, plan.limit, fusion or self.fusion, candidates=plan.candidates), payloads)

    def _stages(
        self, name: str, plan: QueryPlan, where: qm.Filter | None
    ) -> tuple[dict[str, list[Scored]], dict[str, dict[str, Any]]]:
        requests: dict[str, qm.QueryRequest] = {}
        if plan.dense is not None:
            rescore = qm.SearchParams(quantization=qm.QuantizationSearchParams(
                rescore=True, oversampling=RESCORE_OVERSAMPLING)) if self.quantization != "none" else None
            requests[DENSE] = qm.QueryRequest(
                query=plan.dense, using=DENSE, filter=where, limit=plan.candidates, with_payload=_HIT_PAYLOAD, params=rescore
            )
        if plan.sparse is not None:
            requests[SPARSE] = qm.QueryRequest(
                query=_sparse(plan.sparse), using=SPARSE, filter=where, limit=plan.candidates, with_payload=_HIT_PAYLOAD
            )
        # Payloads come with the candidates: one round trip beats a second one for the final hits' payloads.
        responses = self.client.query_batch_points(name, list(requests.values()))
        stages: dict[str, list[Scored]] = {}
        payloads: dict[str, dict[str, Any]] = {}
        for stage, response in zip(requests, responses, strict=True):
            stages[stage] = [Scored(str(p.id), float(p.score)) for p in response.points]
            payloads.update((str(p.id), p.payload) for p in response.points if p.payload)
        return stages, payloads
