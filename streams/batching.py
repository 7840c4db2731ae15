"""Shared plumbing for agents that process micro-batches of raw messages."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import faust.streams as faust_streams

__all__ = ["active_partitions", "as_current", "in_thread", "standby_partitions"]

T = TypeVar("T")


def as_current(event: Any) -> None:
    """Make ``event`` the stream's current event, so table writes go to its partition's changelog.

    Faust routes a table write to the changelog partition of the event being processed; inside a
    batch that is whichever event Faust saw last, so we name the right one before each write.
    """
    faust_streams._current_event.set(weakref.ref(event))  # noqa: SLF001


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking work (ONNX inference, store writes) off the event loop, so heartbeats go on."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def active_partitions(app: Any, topic: str) -> set[int]:
    """The partitions of ``topic`` this worker processes (not its standby copies of others)."""
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic}


def standby_partitions(app: Any, changelog: str) -> set[int]:
    """The partitions of a table's ``changelog`` topic this worker keeps standby copies of."""
    return {tp.partition for tp in app.assignor.assigned_standbys() if tp.topic == changelog}
