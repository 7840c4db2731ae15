"""Worker child processes never outlive the process that started them."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
from tests.conftest import child_outlives_killed_parent

pytestmark = pytest.mark.integration


def test_a_worker_stops_when_its_parent_is_killed_9(broker: EmbeddedBroker, model_dir: Path, tmp_path: Path) -> None:
    env = {"SHOPRANK_MODELS_DIR": str(model_dir.parent), "SHOPRANK_MODELS_EMBEDDER": model_dir.name,
           "SHOPRANK_STORE_DIR": str(tmp_path / "index")}
    code = (
        "import pathlib, time; from streams.supervise import WorkerProcess; "
        f"w = WorkerProcess({broker.bootstrap!r}, app_id='orphan-{uuid.uuid4().hex[:6]}', topic_prefix='orph.', "
        f"data_dir=pathlib.Path({str(tmp_path / 'data')!r}), log_path=pathlib.Path({str(tmp_path / 'worker.log')!r}), "
        f"extra_env={env!r}).start(120); print('up', w.process.pid, flush=True); time.sleep(300)"
    )
    alive, line = child_outlives_killed_parent(code, within_s=30)
    assert line.startswith("up"), f"{line!r}; see {tmp_path / 'worker.log'}"
    assert not alive, "the worker outlived its killed parent"
