"""CatalogueIndexer over both store backends: large batches are written in overlapping steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.embedder import OnnxEmbedder
from models.indexer import WRITE_STEP, CatalogueIndexer, product_text
from models.store import open_store
from streams.samples.generator import generate_catalogue


@pytest.mark.parametrize("kind", ["edge", "qdrant"])
def test_a_batch_larger_than_a_step_is_written_whole_each_product_with_its_own_vector(
        kind: str, model_dir: Path, tmp_path: Path) -> None:
    embedder = OnnxEmbedder(model_dir)
    store = open_store(kind, root=tmp_path / "index", url=":memory:")  # type: ignore[arg-type]
    products = generate_catalogue(2 * WRITE_STEP + 44, tenant="demo", seed=11)
    report = CatalogueIndexer(store, embedder).apply(products)
    assert report.embedded == len(products) and store.count("demo") == len(products)
    # One product of each step: its own text finds it first, at a cosine of 1 (no vector went to
    # another product across the steps).
    for p in (products[3], products[WRITE_STEP + 5], products[-1]):
        text = product_text(p)
        [hit] = store.search("demo", embedder.embed([text])[0], text, limit=1, mode="dense")
        assert hit.product_id == p.product_id and hit.scores["dense"] > 0.999
    store.close()


def test_a_failed_embedding_leaves_no_write_running_behind_it(model_dir: Path, tmp_path: Path) -> None:
    class FailsOnSecondStep:
        def __init__(self, inner: OnnxEmbedder) -> None:
            self.inner, self.calls = inner, 0
            self.version, self.dimensions = inner.version, inner.dimensions

        def embed(self, texts: Any) -> np.ndarray:
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("model failed")
            return self.inner.embed(texts)

    store = open_store("edge", root=tmp_path / "index")
    indexer = CatalogueIndexer(store, FailsOnSecondStep(OnnxEmbedder(model_dir)))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="model failed"):
        indexer.apply(generate_catalogue(2 * WRITE_STEP, tenant="demo", seed=11))
    assert store.count("demo") == WRITE_STEP  # the first step's write had finished when apply raised
    store.close()
