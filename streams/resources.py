"""The worker's heavy, shared resources, built once and lazily: embedder, vector store, indexer, searcher."""

from __future__ import annotations

import threading
from functools import cached_property

from models.embedder import OnnxEmbedder
from models.indexer import CatalogueIndexer
from models.searcher import Searcher
from models.store import VectorStore, open_store
from streams.settings import Settings

__all__ = ["Resources"]


class Resources:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()  # built from executor threads; build each thing once

    @cached_property
    def embedder(self) -> OnnxEmbedder:
        with self._lock:
            return OnnxEmbedder(self.settings.models.embedder_dir)

    @cached_property
    def store(self) -> VectorStore:
        s = self.settings.store
        with self._lock:
            if s.kind == "edge":
                return open_store("edge", root=s.dir)
            return open_store("qdrant", url=s.url, collection_prefix=s.collection_prefix)

    @cached_property
    def indexer(self) -> CatalogueIndexer:
        return CatalogueIndexer(self.store, self.embedder)

    @cached_property
    def searcher(self) -> Searcher:
        return Searcher(self.store, self.embedder, self.settings.tenants)

    def loaded(self) -> dict[str, bool]:
        return {"model_loaded": "embedder" in self.__dict__, "store_open": "store" in self.__dict__}

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()
