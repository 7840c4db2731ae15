"""Versioned fine-tuned models per tenant, and which one serves: register, list, promote, roll back.

Layout under the models directory (``SHOPRANK_MODELS_DIR``)::

    tenants/<tenant>/<version>/   model.onnx, tokenizer.json, manifest.json (what serving reads),
                                  training.json (how it was made, how it scored, its status)
    tenants/<tenant>/SERVING      the version serving the tenant (models.serving.write_pointer)
    tenants/<tenant>/promotions.jsonl   every promote and rollback, in order

The pointer is the truth workers act on (streams.swap polls it and hot-swaps); it is written first and
atomically (temporary file, then ``os.replace``), and the statuses in ``training.json`` follow it.
A rollback undoes the latest promotion still in force, replayed from ``promotions.jsonl``, so rolling
back twice goes two promotions back, and past the first one to the base model.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field

from models.embedder import OnnxEmbedder
from models.exceptions import ModelError, ModelNotFound
from models.export import BASE_MODEL_NAME, TorchReference, export_model
from models.serving import read_pointer, write_pointer

__all__ = [
    "PARITY_TOLERANCE",
    "TRAINING_MANIFEST",
    "Status",
    "TrainingManifest",
    "check_parity",
    "list_versions",
    "promote",
    "read_version",
    "register",
    "rollback",
    "serving_version",
    "update_version",
    "version_dir",
]

Status = Literal["candidate", "serving", "retired"]
TRAINING_MANIFEST = "training.json"
#: Largest allowed difference between the ONNX and the torch vector of the same text (as for the base).
PARITY_TOLERANCE = 1e-4
_PROMOTIONS = "promotions.jsonl"
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$")
_PARITY_TEXTS = ("cordless drill", "a", "white interior paint, eggshell, 1 gallon", "",
                 "Stainless steel 12-inch frying pan with glass lid, induction compatible " * 8,
                 "écouteurs sans fil bluetooth", "2x4 pressure treated lumber 8 ft")


class TrainingManifest(BaseModel):
    """How a version was made and judged. ``metrics``: split → {"candidate", "serving", "relative_gain"}."""

    model_config = ConfigDict(extra="ignore")

    tenant: str
    version: str
    base_model: str
    model_version: str
    content_hash: str = Field(description="sha256 of the ONNX file.")
    data: dict[str, Any] = Field(default_factory=dict, description="Source, time window, split sizes.")
    objective: dict[str, float] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict, description="Config and report of the training run.")
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    parity_max_abs_diff: float
    status: Status = "candidate"
    reason: str = "registered; not yet judged by the gate"
    created_at: int
    history: list[dict[str, Any]] = Field(default_factory=list)


def _tenant_dir(models_dir: Path, tenant: str) -> Path:
    return models_dir / "tenants" / tenant


def version_dir(models_dir: Path, tenant: str, version: str) -> Path:
    """The directory of ``version``; raises :class:`ModelNotFound` naming ``shoprank models list``."""
    path = _tenant_dir(models_dir, tenant) / version
    if not _VERSION.match(version) or not (path / TRAINING_MANIFEST).exists():
        raise ModelNotFound(f"tenant {tenant!r} has no model version {version!r} — see `shoprank models list "
                            f"--tenant {tenant}`")
    return path


def _write_json_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def read_version(models_dir: Path, tenant: str, version: str) -> TrainingManifest:
    path = version_dir(models_dir, tenant, version)
    return TrainingManifest.model_validate(orjson.loads((path / TRAINING_MANIFEST).read_bytes()))


def update_version(models_dir: Path, manifest: TrainingManifest, **changes: Any) -> TrainingManifest:
    """Write ``manifest`` with ``changes``; a status change is appended to its history with the reason."""
    new = manifest.model_copy(update=changes)
    if "status" in changes or "reason" in changes:
        new.history = [*manifest.history, {"at": int(time.time() * 1000), "status": new.status,
                                           "reason": new.reason}]
    path = _tenant_dir(models_dir, manifest.tenant) / manifest.version / TRAINING_MANIFEST
    _write_json_atomic(path, orjson.dumps(new.model_dump(), option=orjson.OPT_INDENT_2) + b"\n")
    return new


def check_parity(trained_dir: Path, exported_dir: Path, texts: tuple[str, ...] = _PARITY_TEXTS) -> float:
    """Largest |ONNX − torch| over ``texts``; what serving computes must be what was trained."""
    onnx = OnnxEmbedder(exported_dir).embed(list(texts))
    ref = TorchReference(trained_dir).embed(list(texts))
    return float(np.abs(onnx - ref).max())


def register(models_dir: Path, tenant: str, trained_dir: Path, *, data: dict[str, Any] | None = None,
             objective: dict[str, float] | None = None, train: dict[str, Any] | None = None,
             base_model: str = BASE_MODEL_NAME, version: str | None = None) -> TrainingManifest:
    """Export ``trained_dir`` (a transformers folder from models.training.trainer) as a new candidate.

    The export goes to a hidden directory first and is renamed into place only after the parity check
    passes, so a listed version is always complete and servable. Raises :class:`ModelError` when ONNX
    and torch disagree by more than :data:`PARITY_TOLERANCE`.
    """
    tdir = _tenant_dir(models_dir, tenant)
    tdir.mkdir(parents=True, exist_ok=True)
    tmp = tdir / f".new-{os.getpid()}-{time.monotonic_ns()}"
    try:
        manifest = export_model(trained_dir, tmp, name=f"{BASE_MODEL_NAME}-{tenant}",
                                source=f"fine-tuned for {tenant} from {base_model}", force=True)
        diff = check_parity(trained_dir, tmp)
        if not diff <= PARITY_TOLERANCE:
            raise ModelError(f"ONNX export of {trained_dir} differs from torch by {diff:.2e} "
                             f"(> {PARITY_TOLERANCE}) — not registered")
        now = int(time.time() * 1000)
        name = version or f"{datetime.fromtimestamp(now / 1000, UTC):%Y%m%dT%H%M%S}-{manifest.sha256[:8]}"
        if not _VERSION.match(name):
            raise ValueError(f"{name!r} is not a version name (letters, digits, '.', '_', '-')")
        final = tdir / name
        if final.exists():
            raise ModelError(f"{final} already exists")
        info = TrainingManifest(tenant=tenant, version=name, base_model=base_model, model_version=manifest.version,
                                content_hash=manifest.sha256, data=data or {}, objective=objective or {},
                                train=train or {}, parity_max_abs_diff=diff, created_at=now,
                                history=[{"at": now, "status": "candidate", "reason": "registered"}])
        (tmp / TRAINING_MANIFEST).write_bytes(orjson.dumps(info.model_dump(), option=orjson.OPT_INDENT_2) + b"\n")
        os.replace(tmp, final)
        return info
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def list_versions(models_dir: Path, tenant: str) -> list[TrainingManifest]:
    """Every registered version of ``tenant``, oldest first."""
    tdir = _tenant_dir(models_dir, tenant)
    if not tdir.exists():
        return []
    found = [TrainingManifest.model_validate(orjson.loads((d / TRAINING_MANIFEST).read_bytes()))
             for d in tdir.iterdir() if d.is_dir() and not d.name.startswith(".") and (d / TRAINING_MANIFEST).exists()]
    return sorted(found, key=lambda m: (m.created_at, m.version))


def serving_version(models_dir: Path, tenant: str) -> str | None:
    """The version the tenant's pointer names, or None when the base model serves it."""
    target = read_pointer(models_dir, tenant)
    return None if target is None else target.name


def _promotions(models_dir: Path, tenant: str) -> list[dict[str, Any]]:
    path = _tenant_dir(models_dir, tenant) / _PROMOTIONS
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _log(models_dir: Path, tenant: str, entry: dict[str, Any]) -> None:
    path = _tenant_dir(models_dir, tenant) / _PROMOTIONS
    old = path.read_bytes() if path.exists() else b""
    _write_json_atomic(path, old + orjson.dumps(entry) + b"\n")


def _stack(models_dir: Path, tenant: str) -> list[str]:
    """Promotions still in force, oldest first: a promotion pushes, a rollback pops."""
    stack: list[str] = []
    for entry in _promotions(models_dir, tenant):
        if entry["action"] == "promote":
            stack.append(entry["to"])
        elif stack:
            stack.pop()
    return stack


def _switch(models_dir: Path, tenant: str, target: str | None, reason: str, retire_reason: str) -> None:
    current = serving_version(models_dir, tenant)
    write_pointer(models_dir, tenant, None if target is None else version_dir(models_dir, tenant, target))
    if current is not None and current != target:
        try:
            update_version(models_dir, read_version(models_dir, tenant, current), status="retired",
                           reason=retire_reason)
        except ModelNotFound:
            pass  # the pointer named a directory that is gone: nothing to retire
    if target is not None:
        update_version(models_dir, read_version(models_dir, tenant, target), status="serving", reason=reason)


def promote(models_dir: Path, tenant: str, version: str, *, reason: str = "promoted by hand") -> TrainingManifest:
    """Make ``version`` serve ``tenant``; the version serving until now is retired."""
    version_dir(models_dir, tenant, version)  # fails before anything changes if it does not exist
    current = serving_version(models_dir, tenant)
    if current == version:
        return read_version(models_dir, tenant, version)
    _switch(models_dir, tenant, version, reason, f"replaced by {version}: {reason}")
    _log(models_dir, tenant, {"at": int(time.time() * 1000), "action": "promote", "from": current, "to": version,
                              "reason": reason})
    return read_version(models_dir, tenant, version)


def rollback(models_dir: Path, tenant: str, *, reason: str = "rolled back by hand") -> str | None:
    """Undo the latest promotion in force: the version before it serves again (None: the base model)."""
    stack = _stack(models_dir, tenant)
    current = serving_version(models_dir, tenant)
    if not stack and current is None:
        raise ModelError(f"nothing to roll back: the base model already serves {tenant!r}")
    target = stack[-2] if len(stack) >= 2 else None
    _switch(models_dir, tenant, target, f"serving again after a rollback: {reason}", f"rolled back: {reason}")
    _log(models_dir, tenant, {"at": int(time.time() * 1000), "action": "rollback", "from": current, "to": target,
                              "reason": reason})
    return target
