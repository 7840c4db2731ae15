"""Fixtures: one real Tansu broker per test session, fresh topics and groups per test."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.broker import EmbeddedBroker
from streams.kafka import ensure_topics
from streams.supervise import WorkerProcess, free_port, log_tail

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
def int8_model_dir() -> Path:
    """The model a worker serves by default (``SHOPRANK_MODELS_EMBEDDER=base-int8``): the same weights
    quantised to int8, exported as the commands that serve it export it into an empty directory."""
    from models.export import BASE_INT8_DIR, serving_model

    serving_model(MODELS / BASE_INT8_DIR)
    return MODELS / BASE_INT8_DIR


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


@pytest.fixture
def no_autocreate(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's Kafka clients ask the broker not to create the topics they name, as the worker's
    do (streams.autocreate), for the rest of the test; like a Kafka with auto-creation off."""
    from aiokafka import client as aiokafka_client

    from streams import autocreate

    monkeypatch.setattr(aiokafka_client, "MetadataRequest", aiokafka_client.MetadataRequest)  # restored after
    autocreate.install()


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


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has exited: only its entry remains)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def child_outlives_killed_parent(code: str, within_s: float) -> tuple[bool, str]:
    """Run ``code`` in a parent process; it starts a child and prints ``up <child pid>``. Kill the
    parent with -9 and wait up to ``within_s`` for the child to go. (Child still alive, parent's line.)"""
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        line = parent.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("up"):
            return True, line
        child = int(line.split()[1])
        assert process_alive(child), line
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline and process_alive(child):
            time.sleep(0.1)
        return process_alive(child), line
    finally:
        if parent.poll() is None:
            parent.kill()
        if child is not None and process_alive(child):
            os.kill(child, signal.SIGKILL)


#: How much of each log a failed test shows: CI keeps only its output, not the temporary folders.
_LOG_TAIL_LINES = 60


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """On a failure, attach the tails of the logs under the test's tmp_path (worker, broker) to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    tmp = getattr(item, "funcargs", {}).get("tmp_path")
    if not isinstance(tmp, Path) or not tmp.is_dir():
        return
    for log in sorted(tmp.rglob("*.log")):
        report.sections.append((f"log tail: {log.relative_to(tmp)}", log_tail(log, _LOG_TAIL_LINES)))
