"""The manifest written beside every exported model: what it is, where it came from, its hash."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict

__all__ = ["ModelManifest", "file_sha256", "MANIFEST_NAME"]

MANIFEST_NAME = "manifest.json"


class ModelManifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    version: str
    dimensions: int
    max_length: int
    source: str
    onnx_file: str
    sha256: str
    quantized: bool = False
    created_at: int

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_NAME
        path.write_bytes(orjson.dumps(self.model_dump(), option=orjson.OPT_INDENT_2) + b"\n")
        return path

    @classmethod
    def read(cls, directory: Path) -> ModelManifest:
        return cls.model_validate(orjson.loads((directory / MANIFEST_NAME).read_bytes()))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
