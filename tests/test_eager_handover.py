"""The fetch loop's hand-over runs in place when nothing makes it wait, and as before when something does.

On a real Faust consumer (built, not connected: ``wait_first`` needs no broker). The fetch loop calls
``consumer.wait_first(callback(message), consumer.suspend_flow.wait())``; these tests make that call.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from typing import Any

import faust
import pytest

from streams import eager_handover


def _consumer() -> Any:
    """Built inside the running loop: Faust's ``wait_first`` starts its tasks on the consumer's loop."""
    eager_handover.install()
    return faust.App("test-eager-handover", broker="kafka://127.0.0.1:1").consumer


def _recording(ran_in: list[asyncio.Task[Any] | None]) -> Any:
    """A hand-over that never waits and notes the task it ran in."""

    async def handover() -> str:
        ran_in.append(asyncio.current_task())
        return "delivered"

    return handover


def test_a_handover_that_does_not_wait_finishes_in_place() -> None:
    ran_in: list[asyncio.Task[Any] | None] = []
    handover = _recording(ran_in)

    async def go() -> Any:
        consumer = _consumer()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the flow's event coroutine is closed, not left unawaited
            result = await consumer.wait_first(handover(), consumer.suspend_flow.wait())
            gc.collect()
        return result, asyncio.current_task()

    (result, caller) = asyncio.run(go())
    assert result.done and result.results == ["delivered"] and not result.stopped
    assert ran_in == [caller]  # in the fetch loop's own task: no task of its own


def test_a_handover_that_waits_is_finished_by_fausts_wait_first() -> None:
    async def go() -> Any:
        consumer = _consumer()
        room = asyncio.get_running_loop().create_future()
        steps: list[str] = []

        async def handover() -> str:
            steps.append("decoded")
            value = await room  # a full stream buffer
            steps.append(f"put {value}")
            return "delivered"

        asyncio.get_running_loop().call_later(0.05, room.set_result, "now")
        result = await consumer.wait_first(handover(), consumer.suspend_flow.wait())
        return result, steps

    result, steps = asyncio.run(go())
    assert result.results == ["delivered"] and not result.stopped
    assert steps == ["decoded", "put now"]  # each step once: resumed, not started again


def test_a_waiting_handover_gives_way_when_the_flow_is_suspended() -> None:
    async def go() -> Any:
        consumer = _consumer()
        cancelled = asyncio.Event()

        async def handover() -> None:
            try:
                await asyncio.sleep(30)  # a buffer that never gets room
            except asyncio.CancelledError:
                cancelled.set()
                raise

        asyncio.get_running_loop().call_later(0.05, consumer.suspend_flow.set)
        result = await asyncio.wait_for(consumer.wait_first(handover(), consumer.suspend_flow.wait()), 5)
        await asyncio.wait_for(cancelled.wait(), 5)
        return result

    result = asyncio.run(go())
    assert len(result.done) == 1 and result.results == [True]  # the flow's event won; the hand-over was cancelled


def test_an_error_in_the_handover_reaches_the_fetch_loop() -> None:
    async def broken() -> None:
        raise ValueError("undecodable")

    async def broken_later() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("undecodable later")

    async def go(handover: Any) -> None:
        consumer = _consumer()
        await consumer.wait_first(handover, consumer.suspend_flow.wait())

    with pytest.raises(ValueError, match="undecodable"):
        asyncio.run(go(broken()))
    with pytest.raises(ValueError, match="undecodable later"):
        asyncio.run(go(broken_later()))


def test_while_the_flow_is_suspended_nothing_runs_in_place() -> None:
    ran_in: list[asyncio.Task[Any] | None] = []
    handover = _recording(ran_in)

    async def go() -> Any:
        consumer = _consumer()
        consumer.suspend_flow.set()
        await consumer.wait_first(handover(), consumer.suspend_flow.wait())
        return asyncio.current_task()

    caller = asyncio.run(go())
    assert ran_in and ran_in[0] is not caller  # Faust's own path: a task of its own
