"""Runs one Faust worker in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import fcntl
import logging
from pathlib import Path
from typing import IO

import faust

from streams import autocreate, metrics, repeated_logs
from streams.app import create_app
from streams.broker import resolve_bootstrap
from streams.exceptions import UserInputError
from streams.kafka import ensure_topics
from streams.malloc_arenas import limit_malloc_arenas
from streams.settings import EventLoop, Settings

__all__ = ["run_worker"]


def _hold_data_dir(path: Path) -> IO[bytes]:
    """Lock the worker's data directory: two workers on one table store would each wait for the other."""
    path.mkdir(parents=True, exist_ok=True)
    handle = (path / "worker.lock").open("ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise UserInputError(
            f"another worker is using {path} — give each worker on this machine its own "
            "SHOPRANK_WORKER_DATA_DIR (or its own SHOPRANK_WORKER_APP_ID)"
        ) from None
    return handle


def new_event_loop(kind: EventLoop) -> asyncio.AbstractEventLoop:
    """A new event loop of ``kind``: ``asyncio`` (the standard library's) or ``uvloop`` (libuv's)."""
    if kind == "uvloop":
        import uvloop  # imported only where chosen: the CLI's other commands never load it

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run_worker(settings: Settings) -> int:
    """Start (or reuse) the broker, create missing topics, then serve until stopped. Returns an exit code."""
    manifest = settings.models.embedder_dir / "manifest.json"
    if not manifest.exists():  # fail before joining the group, with the fix, not inside Faust
        raise UserInputError(
            f"no exported model in {settings.models.embedder_dir} — run `shoprank models export` "
            "(or set SHOPRANK_MODELS_DIR)"
        )
    lock = _hold_data_dir(settings.faust_dir)  # noqa: F841 - held (by the open file) until the process ends
    limit_malloc_arenas(settings.worker.malloc_arenas)  # before any thread of ours allocates
    bootstrap, broker = resolve_bootstrap(settings.kafka, start_embedded=True)
    try:
        loop = new_event_loop(settings.worker.event_loop)
        asyncio.set_event_loop(loop)
        metrics.EVENT_LOOP.labels(settings.worker.event_loop).set(1)
        # Topics first, from their specs; no client of this process may create one by asking about it
        # (streams.autocreate): the broker's defaults would break co-partitioning and compaction.
        autocreate.install()
        loop.run_until_complete(ensure_topics(bootstrap, settings.kafka.topic_prefix, retention_ms=settings.kafka.retention_ms))
        shop = create_app(settings, bootstrap)
        worker = faust.Worker(
            shop.faust,
            loop=loop,
            loglevel=settings.worker.loglevel,
            quiet=True,
            redirect_stdouts=False,
        )
        # Faust's start-up spinner hangs a DEBUG handler on the root logger and lowers the root to DEBUG,
        # so every debug call in Faust built a log record: one per message sent (5% of a busy worker).
        worker.spinner = None
        logging.getLogger("aiokafka").setLevel(logging.ERROR)
        repeated_logs.install()  # while the broker is away aiokafka repeats one error per request
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            return int(exc.code or 0) if isinstance(exc.code, int) or exc.code is None else 1
        finally:
            shop.resources.close()  # agents have stopped: flush and close the store
        return 0
    finally:
        if broker is not None:
            broker.stop()
