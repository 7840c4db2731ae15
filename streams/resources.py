"""The worker's heavy, shared resources, built once and lazily: embedder, vector store, indexer, searcher."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, cast

from models.embedder import Embedder, OnnxEmbedder, TruncatedEmbedder
from models.indexer import CatalogueIndexer
from models.rules import RuleSource
from models.searcher import RankerSource, Searcher
from models.serving import ServingTable
from models.store import Fusion, VectorStore, open_store
from models.store.edge import EdgeStore
from streams.settings import Settings, StoreSettings

__all__ = ["Resources", "store_fusion"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def store_fusion(s: StoreSettings) -> Fusion:
    """How the configured store fuses hybrid searches (SHOPRANK_STORE_FUSION, SHOPRANK_STORE_DENSE_WEIGHT)."""
    return Fusion(s.fusion, s.dense_weight)


class Resources:
    """Built from executor threads (start-up warm-up, the first catalogue batch, the first search), so each
    thing is built under one lock exactly once: a Qdrant Edge shard admits a single opener."""

    def __init__(self, settings: Settings, rules: RuleSource | None = None, ranker: RankerSource | None = None) -> None:
        self.settings = settings
        self.rules = rules
        self.ranker = ranker
        self._lock = threading.RLock()
        self._built: dict[str, object] = {}

    def _once(self, name: str, build: Callable[[], T]) -> T:
        if name not in self._built:
            with self._lock:
                if name not in self._built:
                    self._built[name] = build()
        return cast(T, self._built[name])  # stored by the build of that name only

    @property
    def embedder(self) -> Embedder:
        return self._once("embedder", lambda: self._embedder(self.settings.models.embedder_dir))

    def _embedder(self, model_dir: Path) -> Embedder:
        m = self.settings.models
        model = OnnxEmbedder(model_dir, batch_size=m.batch_size, threads=m.threads or None,
                             query_threads=m.query_threads or None)
        return TruncatedEmbedder(model, m.dimensions) if m.dimensions and m.dimensions < model.dimensions else model

    @property
    def store(self) -> VectorStore:
        s = self.settings.store

        def build() -> VectorStore:
            fusion = store_fusion(s)
            if s.kind == "edge":
                store = EdgeStore(s.dir, s.quantization, fusion=fusion)
                # Index what the last run left unindexed before anything is served (see optimize_existing).
                started = time.perf_counter()
                if changed := store.optimize_existing():
                    log.info("optimized the shards of %s in %.1f s", ", ".join(changed), time.perf_counter() - started)
                return store
            return open_store("qdrant", url=s.url, collection_prefix=s.collection_prefix, quantization=s.quantization,
                              fusion=fusion)

        return self._once("store", build)

    @property
    def serving(self) -> ServingTable:
        """Each tenant's model and collection; what a restarted worker served before, it serves again."""
        return self._once("serving", lambda: ServingTable(
            self.embedder, self.settings.worker.data_dir / "serving.json", self._embedder))

    @property
    def indexer(self) -> CatalogueIndexer:
        return self._once("indexer", lambda: CatalogueIndexer(self.store, self.embedder, self.serving))

    @property
    def searcher(self) -> Searcher:
        return self._once(
            "searcher", lambda: Searcher(self.store, self.embedder, self.settings.tenants, rules=self.rules,
                                         ranker=self.ranker, control_share=self.settings.ranker.control_share,
                                         serving=self.serving)
        )

    def loaded(self) -> dict[str, bool]:
        return {"model_loaded": "embedder" in self._built, "store_open": "store" in self._built}

    def close(self) -> None:
        with self._lock:
            store = cast("VectorStore | None", self._built.pop("store", None))
        if store is not None:
            store.close()
