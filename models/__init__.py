"""Embedding, ranking and training. Never imports ``streams``: everything here runs without Kafka."""

from models.embedder import Embedder, OnnxEmbedder
from models.exceptions import ModelError, ModelNotFound
from models.manifest import ModelManifest

__all__ = ["Embedder", "OnnxEmbedder", "ModelError", "ModelNotFound", "ModelManifest"]
