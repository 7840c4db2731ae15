"""Qdrant Edge adapter: the Qdrant engine in-process, one persistent shard directory per tenant.

Layout: ``root/<tenant>/`` holds the shard (segments, write-ahead log, config). Writes are in the WAL
when :meth:`EdgeStore.upsert` returns, so they survive a killed process; :meth:`EdgeStore.flush`
also writes them into the segments, which makes reopening fast.

A shard has a single opener: a second ``EdgeStore`` on the same directory, in this process or another,
fails until the first closes it. Share one store per process; several processes need the server backend.

Edge has no background optimizer: points stay in an appendable, brute-force segment until
:meth:`EdgeStore.optimize` builds the HNSW and payload-indexed segments. Call it after a bulk load.

Search hits' payloads are kept in a bounded in-process cache (:class:`_PayloadCache`). Reading a hundred
payloads from the engine and converting them to Python was a third of a search's cost; the cache stays
exact because this store is the shard's only writer (see above), and every write goes through it.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

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

log = logging.getLogger(__name__)

__all__ = ["EdgeStore", "edge_filter"]

_BATCH = 1024
#: Quantized candidates, then the best of them rescored with the float vectors.
_RESCORE = qe.SearchParams(quantization=qe.QuantizationSearchParams(rescore=True, oversampling=RESCORE_OVERSAMPLING))
_HIT_PAYLOAD = qe.PayloadSelector.Exclude(list(SEARCH_PAYLOAD_EXCLUDE))
_INDEX_TYPES = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "float": qe.PayloadSchemaType.Float,
    "integer": qe.PayloadSchemaType.Integer,
}


def edge_filter(f: SearchFilter | None) -> qe.Filter | None:
    """The Edge filter for ``f``: one ``FieldCondition`` per constraint (match and range never share one)."""
    if f is None:
        return None
    must: list[Any] = []
    if f.category:
        must.append(qe.FieldCondition("categories", match=qe.MatchValue(f.category)))
    if f.brands:
        must.append(qe.FieldCondition("brand", match=qe.MatchAny(list(f.brands))))
    if f.price_min is not None or f.price_max is not None:
        lo = None if f.price_min is None else float(f.price_min)
        hi = None if f.price_max is None else float(f.price_max)
        must.append(
            qe.FieldCondition("price", range=qe.RangeFloat(gte=lo, lte=hi))
        )  # keywords: positional order is gte, gt, lte, lt
    if f.in_stock is not None:
        must.append(qe.FieldCondition("in_stock", match=qe.MatchValue(1 if f.in_stock else 0)))
    if f.product_ids is not None:
        must.append(qe.FieldCondition("product_id", match=qe.MatchAny(list(f.product_ids))))
    return qe.Filter(must=must) if must else None


def _open_error(path: Path, e: Exception) -> StoreError:
    if "WouldBlock" in str(e):  # the WAL is locked by its opener
        return StoreError(
            f"the Qdrant Edge shard at {path} is already open (in this or another process) — a shard has one "
            "opener: share one store per process, or use SHOPRANK_STORE_KIND=qdrant to serve several processes"
        )
    return StoreError(f"cannot open the Qdrant Edge shard at {path}: {e} — if it is damaged, remove it and re-index")


def _config(dimensions: int, quantization: Quantization = "none") -> qe.EdgeConfig:
    if quantization == "binary":
        # One bit per dimension in RAM; the float vectors stay on disk for rescoring the best candidates.
        dense = qe.EdgeVectorParams(size=dimensions, distance=qe.Distance.Cosine, memory=qe.Memory.Cold,
                                    quantization_config=qe.BinaryQuantizationConfig(memory=qe.Memory.Cached))
    else:
        dense = qe.EdgeVectorParams(size=dimensions, distance=qe.Distance.Cosine)
    return qe.EdgeConfig(
        vectors={DENSE: dense},
        sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
    )


class _PayloadCache:
    """Search-hit payloads by tenant and point id, at most ``capacity`` of them (oldest read evicted first).

    A search that read the engine before a write and fills the cache after it would keep the old payload,
    so writers bump the tenant's generation and a fill is dropped when the generation moved meanwhile.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: dict[tuple[str, str], dict[str, Any]] = {}
        self._generation: dict[str, int] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def generation(self, tenant: str) -> int:
        return self._generation.get(tenant, 0)

    def get(self, tenant: str, keys: Sequence[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """The cached payloads among ``keys``, and the keys to read from the engine."""
        found: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        entries = self._entries
        for key in keys:
            payload = entries.get((tenant, key))
            if payload is None:
                missing.append(key)
            else:
                found[key] = payload
        self.hits += len(found)
        self.misses += len(missing)
        return found, missing

    def fill(self, tenant: str, generation: int, payloads: dict[str, dict[str, Any]]) -> None:
        if self.capacity <= 0 or not payloads:
            return
        with self._lock:
            if self._generation.get(tenant, 0) != generation:
                return
            entries = self._entries
            for key, payload in payloads.items():
                entries[(tenant, key)] = payload
            excess = len(entries) - self.capacity
            if excess > 0:
                for old in list(itertools.islice(entries, excess)):
                    del entries[old]

    def invalidate(self, tenant: str, keys: Sequence[str] | None = None) -> None:
        """Forget ``keys`` (every point of the tenant when None); call after the engine write."""
        with self._lock:
            self._generation[tenant] = self._generation.get(tenant, 0) + 1
            if keys is None:
                for old in [k for k in self._entries if k[0] == tenant]:
                    del self._entries[old]
            else:
                for key in keys:
                    self._entries.pop((tenant, key), None)


class EdgeStore:
    """:class:`~models.store.base.VectorStore` on Qdrant Edge shards under ``root``. Not thread-safe."""

    backend = "edge"

    def __init__(self, root: Path, quantization: Quantization = "none", *, payload_cache: int = 20_000,
                 fusion: Fusion = DEFAULT_FUSION) -> None:
        self.root = Path(root)
        self.quantization = quantization
        self.fusion = fusion
        self._shards: dict[str, qe.EdgeShard] = {}
        self._dims: dict[str, int] = {}  # known for shards opened by ensure_collection
        self._payloads = _PayloadCache(payload_cache)
        #: Vectors written per open shard since its index was last built (see optimize_pending).
        self._written: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def path(self, tenant: str) -> Path:
        """The tenant's shard directory."""
        return self.root / check_tenant(tenant)

    def ensure_collection(self, tenant: str, dimensions: int) -> None:
        if dimensions <= 0:
            raise DimensionMismatch(f"dimensions must be positive, got {dimensions}")
        if self._dims.get(tenant) == dimensions and tenant in self._shards:
            return
        path = self.path(tenant)
        self._release(tenant)  # reopen with the config, so the engine checks it against the segments
        config = _config(dimensions, self.quantization)
        try:
            if path.is_dir() and any(path.iterdir()):
                shard = qe.EdgeShard.load(str(path), config)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                shard = qe.EdgeShard.create(str(path), config)
        except Exception as e:  # the engine raises bare Exception
            if "incompatible" in str(e).lower():
                raise DimensionMismatch(
                    f"tenant {tenant!r}'s shard at {path} was built for other vectors than {dimensions}-d cosine "
                    f"({e}) — re-index it: remove that directory and index the catalogue again"
                ) from e
            raise _open_error(path, e) from e
        self._shards[tenant] = shard
        self._dims[tenant] = dimensions
        with self._engine(tenant, "create payload indexes"):
            have = set(shard.info().payload_schema)
            for field, kind in PAYLOAD_INDEXES.items():
                if field not in have:
                    shard.update(qe.UpdateOperation.create_field_index(field, _INDEX_TYPES[kind]))

    def flush(self) -> None:
        for tenant, shard in self._shards.items():
            with self._engine(tenant, "flush"):
                shard.flush()

    def optimize(self, tenant: str | None = None) -> None:
        """Build HNSW and indexed segments (blocking) for one tenant, or every open one."""
        for name in [tenant] if tenant else list(self._shards):
            self._optimize(name)

    def optimize_existing(self) -> list[str]:
        """Optimize every shard under ``root`` (HNSW for segments past Qdrant's indexing threshold); the
        names of those that changed.

        Qdrant Edge has no background optimizer: without this, a shard's vectors stay in plain segments
        and every dense search scans all of them (10,000 products: hybrid query 1.06 ms plain, 0.49 ms
        with HNSW; the scan grows with the catalogue). The call holds the interpreter until it is done
        (about 2 s for 10,000 new vectors), so the worker runs it while opening the store, before it
        reports ready, not while it serves.
        """
        changed = []
        names = sorted(p.name for p in self.root.iterdir() if p.is_dir() and any(p.iterdir())) \
            if self.root.is_dir() else []
        for name in names:
            try:
                if self._optimize(name):
                    changed.append(name)
            except StoreError as exc:  # searched as before; that tenant's own errors say why
                log.warning("did not optimize %s: %s", self.root / name, exc)
        return changed

    def optimize_pending(self, min_points: int) -> list[str]:
        """Optimize each open shard that took at least ``min_points`` vectors since it was last optimized.

        New vectors land in a plain segment that every dense search scans; this builds its HNSW graph.
        It holds the interpreter meanwhile (see :meth:`optimize_existing`), so the catalogue agent calls
        it only once its input has been quiet for a while (``SHOPRANK_STORE_OPTIMIZE_IDLE_S``).
        """
        due = [name for name, n in self._written.items() if n >= max(1, min_points) and name in self._shards]
        return [name for name in due if self._optimize(name)]

    def _optimize(self, name: str) -> bool:
        shard = self._shard(name)
        self._written[name] = 0
        with self._engine(name, "optimize"):
            return bool(shard.optimize())

    def close(self) -> None:
        for tenant in list(self._shards):
            self._release(tenant)

    def _release(self, tenant: str) -> None:
        shard = self._shards.pop(tenant, None)
        self._dims.pop(tenant, None)
        if shard is not None:
            with self._engine(tenant, "close"):
                shard.flush()
                shard.close()

    def _shard(self, tenant: str) -> qe.EdgeShard:
        shard = self._shards.get(tenant)
        if shard is not None:
            return shard
        path = self.path(tenant)
        if not (path.is_dir() and any(path.iterdir())):
            raise CollectionNotFound(tenant)
        try:
            shard = qe.EdgeShard.load(str(path))
        except Exception as e:
            raise _open_error(path, e) from e
        self._shards[tenant] = shard
        return shard

    @contextmanager
    def _engine(self, tenant: str, action: str) -> Iterator[None]:
        """Turn the engine's bare exceptions into :class:`StoreError` that names tenant and action."""
        try:
            yield
        except StoreError:
            raise
        except Exception as e:
            if "dimension" in str(e).lower():
                raise DimensionMismatch(
                    f"tenant {tenant!r}: {e} — use the embedder the catalogue was indexed with, or re-index"
                ) from e
            raise StoreError(f"qdrant edge could not {action} for tenant {tenant!r}: {e}") from e

    # -- writes ------------------------------------------------------------------------------

    def upsert(self, tenant: str, points: Sequence[ProductPoint]) -> None:
        shard = self._shard(tenant)
        dims = self._dims.get(tenant)
        for start in range(0, len(points), _BATCH):
            batch, ids = [], []
            for p in points[start : start + _BATCH]:
                dense = np.asarray(p.dense, dtype=np.float32)
                if dims is not None and dense.shape != (dims,):
                    raise DimensionMismatch(
                        f"product {p.product_id!r} has a vector of shape {dense.shape}, tenant {tenant!r} "
                        f"is indexed with {dims} dimensions — use the same embedder, or re-index"
                    )
                vectors = {DENSE: dense.tolist(), SPARSE: document_vector(p.text)}
                ids.append(point_id(tenant, p.product_id))
                batch.append(qe.Point(ids[-1], vectors, clean_payload(p.product_id, p.payload)))
            with self._engine(tenant, "upsert"):
                shard.update(qe.UpdateOperation.upsert_points(batch))
            self._payloads.invalidate(tenant, ids)
            self._written[tenant] = self._written.get(tenant, 0) + len(batch)

    def set_payload(self, tenant: str, product_id: str, payload: dict[str, Any]) -> None:
        shard = self._shard(tenant)
        pid = point_id(tenant, product_id)
        with self._engine(tenant, "read points"):
            found = shard.retrieve([pid], False, False)
        if not found:
            raise PointNotFound(tenant, product_id)
        with self._engine(tenant, "set payload"):
            shard.update(qe.UpdateOperation.set_payload([pid], clean_payload(product_id, payload)))
        self._payloads.invalidate(tenant, [pid])

    def delete(self, tenant: str, product_ids: Sequence[str]) -> None:
        if not product_ids:
            return
        shard = self._shard(tenant)
        ids = [point_id(tenant, p) for p in product_ids]
        with self._engine(tenant, "delete"):
            shard.update(qe.UpdateOperation.delete_points([*ids]))  # a new list: the stub's is list[int | UUID | str]
        self._payloads.invalidate(tenant, ids)

    # -- reads -------------------------------------------------------------------------------

    def payloads(self, tenant: str, product_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        shard = self._shard(tenant)
        if not product_ids:
            return {}
        with self._engine(tenant, "read points"):
            records = shard.retrieve([point_id(tenant, p) for p in dict.fromkeys(product_ids)], True, False)
        # Each .payload access converts the engine's record again: read it once.
        return {payload["product_id"]: payload for r in records if (payload := r.payload)}

    def scroll(self, tenant: str, offset: Any = None, limit: int = 256) -> tuple[list[dict[str, Any]], Any]:
        shard = self._shard(tenant)
        with self._engine(tenant, "scroll"):
            records, after = shard.scroll(qe.ScrollRequest(offset=offset, limit=limit, with_payload=True,
                                                           with_vector=False))
        return [payload for r in records if (payload := r.payload)], after

    def drop(self, tenant: str) -> None:
        path = self.path(tenant)
        self._release(tenant)
        self._written.pop(tenant, None)
        self._payloads.invalidate(tenant)
        if path.is_dir():
            shutil.rmtree(path)

    def count(self, tenant: str) -> int:
        shard = self._shard(tenant)
        with self._engine(tenant, "count"):
            return shard.count(qe.CountRequest(exact=True))

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
        shard = self._shard(tenant)
        plan = plan_query(dense, text, mode, limit)
        if plan is None:
            return []
        with self._engine(tenant, "search"):
            generation = self._payloads.generation(tenant)
            ranked = rank(self._stages(shard, plan, edge_filter(filter)), plan.limit, fusion or self.fusion,
                          candidates=plan.candidates)
            # Payloads only for the final hits: reading them in the query costs twice as much per point
            # and would read up to twice as many points.
            payloads, missing = self._payloads.get(tenant, [r.key for r in ranked])
            if missing:
                read = {str(r.id): payload for r in shard.retrieve([*missing], _HIT_PAYLOAD, False)
                        if (payload := r.payload)}
                self._payloads.fill(tenant, generation, read)
                payloads.update(read)
        return to_hits(ranked, payloads)

    def _stages(self, shard: qe.EdgeShard, plan: QueryPlan, where: qe.Filter | None) -> dict[str, list[Scored]]:
        queries: dict[str, Any] = {}
        params: dict[str, Any] = {}
        if plan.dense is not None:
            queries[DENSE] = qe.Query.Nearest(plan.dense, using=DENSE)
            if self.quantization != "none":
                params[DENSE] = _RESCORE
        if plan.sparse is not None:
            queries[SPARSE] = qe.Query.Nearest(plan.sparse, using=SPARSE)
        requests = [qe.QueryRequest(limit=plan.candidates, query=q, filter=where, params=params.get(name))
                    for name, q in queries.items()]
        # One batch: the engine plans both stages together and shares the pass over the segments.
        results = shard.query_batch(qe.QueryBatchRequest(requests))
        return {
            name: [Scored(str(p.id), float(p.score)) for p in points]
            for name, points in zip(queries, results, strict=True)
        }
