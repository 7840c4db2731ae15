"""CatalogueIndexer over both store backends, with the real model."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.embedder import OnnxEmbedder
from models.indexer import CatalogueIndexer, product_text
from models.store import open_store
from streams.samples.generator import generate_catalogue


@pytest.mark.parametrize("kind", ["edge", "qdrant"])
def test_a_batch_larger_than_the_embedder_s_sub_batches_is_written_whole_each_product_with_its_own_vector(
        kind: str, model_dir: Path, tmp_path: Path) -> None:
    embedder = OnnxEmbedder(model_dir)
    store = open_store(kind, root=tmp_path / "index", url=":memory:")  # type: ignore[arg-type]
    products = generate_catalogue(300, tenant="demo", seed=11)
    report = CatalogueIndexer(store, embedder).apply(products)
    assert report.embedded == len(products) and store.count("demo") == len(products)
    # The embedder sorts texts by length into sub-batches of 64: each product's own text still finds it
    # first, at a cosine of 1 (no vector went to another product).
    for p in (products[3], products[133], products[-1]):
        text = product_text(p)
        [hit] = store.search("demo", embedder.embed([text])[0], text, limit=1, mode="dense")
        assert hit.product_id == p.product_id and hit.scores["dense"] > 0.999
    store.close()
