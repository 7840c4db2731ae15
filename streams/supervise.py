"""Start and stop ``shoprank worker`` processes: for the demo, the tests and the benchmarks."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["WorkerProcess", "die_with_parent", "free_port", "http_json", "http_post_json", "log_tail", "spawn"]

_PR_SET_PDEATHSIG = 1


def spawn(argv: list[str], log_path: Path | None, **popen: Any) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr appended to ``log_path`` (or discarded), stdin closed."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - the child keeps its own copy
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **popen)  # noqa: S603
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a child's log, or "(no log)": for failure messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def die_with_parent(parent_pid: int) -> None:
    """Runs in the child before exec: ask Linux to SIGTERM us when our parent dies (even by kill -9).

    Linux sends it when the thread that started the child exits: start children from a thread that
    lives as long as they should.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        # The parent may have died between fork and prctl: then nobody would ever signal us.
        if os.getppid() != parent_pid:
            os._exit(1)


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str, timeout_s: float = 2.0, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """GET ``url``; (status, parsed JSON body). Connection failures give status 0."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout_s) as resp:  # noqa: S310 - loopback URLs we build
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"null")
        except ValueError:
            return exc.code, body.decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def http_post_json(url: str, body: Any, timeout_s: float = 30.0) -> tuple[int, Any]:
    """POST ``body`` as JSON; (status, parsed JSON body). Connection failures give status 0."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - loopback URLs we build
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


class WorkerProcess:
    """A ``shoprank worker`` child process configured through its environment."""

    def __init__(
        self,
        bootstrap: str,
        *,
        app_id: str = "shoprank",
        topic_prefix: str = "",
        tenants: str = "demo",
        web_port: int | None = None,
        data_dir: Path | None = None,
        log_path: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.web_port = web_port or free_port()
        self.env = {
            **os.environ,
            "SHOPRANK_KAFKA_BOOTSTRAP": bootstrap,
            "SHOPRANK_KAFKA_TOPIC_PREFIX": topic_prefix,
            "SHOPRANK_WORKER_APP_ID": app_id,
            "SHOPRANK_WORKER_WEB_PORT": str(self.web_port),
            "SHOPRANK_TENANTS": tenants,
            "PYTHONUNBUFFERED": "1",
            **({"SHOPRANK_WORKER_DATA_DIR": str(data_dir)} if data_dir else {}),
            **(extra_env or {}),
        }
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self, ready_timeout_s: float = 90.0) -> WorkerProcess:
        parent = os.getpid()
        # Its own session (stop() signals the group), and it goes when its parent goes: a demo or a
        # test killed with -9 leaves no worker behind holding its ports and consumer group.
        self.process = spawn(
            [sys.executable, "-m", "streams.cli", "worker"], self.log_path, env=self.env, start_new_session=True,
            preexec_fn=lambda: die_with_parent(parent),
        )
        self.wait_ready(ready_timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise RuntimeError(f"worker exited with code {code} before it was ready; see {self.log_path}")
            status, body = http_json(self.url + "/readyz")
            if status == 200 and body and body.get("ready"):
                return
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"worker not ready within {timeout_s:.0f} s; see {self.log_path}")

    def get(self, path: str) -> Any:
        status, body = http_json(self.url + path)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}: {body}")
        return body

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``: Faust may ignore SIGTERM while starting up."""
        proc, self.process = self.process, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode

    def kill(self) -> None:
        """kill -9, as a crash would."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()
