"""Worker child processes never outlive the process that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited; only its entry remains
    except FileNotFoundError:
        return False


def test_a_worker_stops_when_its_parent_is_killed_9(broker: EmbeddedBroker, model_dir: Path, tmp_path: Path) -> None:
    env = {"SHOPRANK_MODELS_DIR": str(model_dir.parent), "SHOPRANK_MODELS_EMBEDDER": model_dir.name,
           "SHOPRANK_STORE_DIR": str(tmp_path / "index")}
    code = (
        "import time; from streams.supervise import WorkerProcess; "
        f"w = WorkerProcess({broker.bootstrap!r}, app_id='orphan-{uuid.uuid4().hex[:6]}', topic_prefix='orph.', "
        f"data_dir=__import__('pathlib').Path({str(tmp_path / 'data')!r}), log_path=__import__('pathlib').Path({str(tmp_path / 'worker.log')!r}), "
        f"extra_env={env!r}).start(120); print('up', w.process.pid, flush=True); time.sleep(300)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        line = parent.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("up"), f"{line!r}; see {tmp_path / 'worker.log'}"
        child = int(line.split()[1])
        assert _alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _alive(child):
            time.sleep(0.2)
        assert not _alive(child), "the worker outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        if child is not None and _alive(child):
            os.killpg(child, signal.SIGKILL)
