"""Fixtures: one real Tansu broker per test session, fresh topics and groups per test."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
from streams.kafka import ensure_topics
from streams.supervise import WorkerProcess, free_port

REPO = Path(__file__).resolve().parents[1]
#: Exported once and reused across runs (export takes ~10 s; the manifest makes reuse safe).
MODELS = REPO / ".shoprank" / "test-models"


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The real all-MiniLM-L6-v2, exported to ONNX by the project's own export code."""
    from models.export import export_base_model

    export_base_model(MODELS / "base")
    return MODELS / "base"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    b = EmbeddedBroker("127.0.0.1", free_port(), log_path=log).start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def prefix(broker: EmbeddedBroker) -> str:
    """A fresh topic prefix with all of shoprank's topics created under it."""
    p = f"t{uuid.uuid4().hex[:10]}."
    asyncio.run(ensure_topics(broker.bootstrap, p))
    return p


@pytest.fixture
def make_worker(broker: EmbeddedBroker, tmp_path: Path, model_dir: Path) -> Iterator[callable]:  # type: ignore[valid-type]
    """Factory: start workers on the session broker; every one is stopped after the test."""
    started: list[WorkerProcess] = []

    def make(prefix: str, app_id: str | None = None, tenants: str = "demo,acme",
             extra_env: dict[str, str] | None = None, **kw: object) -> WorkerProcess:
        w = WorkerProcess(
            broker.bootstrap,
            app_id=app_id or f"app-{uuid.uuid4().hex[:8]}",
            topic_prefix=prefix,
            tenants=tenants,
            data_dir=tmp_path / "data",
            log_path=tmp_path / f"worker-{len(started)}.log",
            extra_env={"SHOPRANK_MODELS_DIR": str(model_dir.parent), "SHOPRANK_MODELS_EMBEDDER": model_dir.name,
                       "SHOPRANK_STORE_DIR": str(tmp_path / "index"), **(extra_env or {})},
            **kw,  # type: ignore[arg-type]
        )
        started.append(w)
        return w.start()

    yield make
    for w in started:
        w.stop()


def run_cli(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``shoprank ARGS`` as a user would, in a child process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPRANK_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=REPO,
    )
