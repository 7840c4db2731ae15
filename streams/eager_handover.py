"""Faust's fetch loop hands a record to the streams in place when nothing makes it wait.

For every record it fetches, Faust's consumer (``Consumer._drain_messages``) awaits
``self.wait_first(callback(message), self.suspend_flow.wait())``: the hand-over (decode the record, put
it on the stream's buffer) raced against a suspended flow (a rebalance), a stop and a crash. That is
four tasks, an ``asyncio.wait`` and three cancellations per record, although the hand-over almost never
waits: the buffer has room. Under bench_learning's traffic this machinery took about a tenth of the
worker's event loop.

The consumer's ``wait_first`` now first runs such a hand-over in place, up to its first suspension, as
Python 3.12's eager tasks do. If it finishes there, the answer is the one ``wait_first`` would have
given: nothing else was set when it started, and nothing else ran meanwhile. If it suspends (a full
buffer, a suspended flow), the rest of it goes through Faust's ``wait_first`` as before, so a rebalance
or a stop still interrupts it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

from faust.transport import consumer as faust_consumer
from mode.services import WaitResults

__all__ = ["install"]

_installed = False


def install() -> None:
    """Patch Faust's consumer class once per process."""
    global _installed
    if _installed:
        return
    _installed = True
    faust_wait_first = faust_consumer.Consumer.wait_first

    async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> WaitResults:
        # Only the fetch loop's form: a hand-over and the flow's event, with nothing set yet.
        if (timeout is None and len(coros) == 2 and asyncio.iscoroutine(coros[0])
                and not (self.suspend_flow.is_set() or self._stopped.is_set() or self._crashed.is_set())):
            handover, others = coros[0], coros[1:]
            try:
                step = handover.send(None)
            except StopIteration as done:
                _close(others)
                return WaitResults([handover], [done.value], False)
            except BaseException:
                _close(others)
                raise
            coros = (_finish(handover, step), *others)
        return await faust_wait_first(self, *coros, timeout=timeout)

    faust_consumer.Consumer.wait_first = wait_first  # type: ignore[method-assign]


def _close(coros: tuple[Any, ...]) -> None:
    """Close coroutines that will not run (a coroutine never awaited warns when collected)."""
    for coro in coros:
        if asyncio.iscoroutine(coro):
            coro.close()


async def _finish(coro: Coroutine[Any, Any, Any], step: Any) -> Any:
    """The rest of ``coro``, which already ran up to yielding ``step``."""
    return await _Resumed(coro, step)


class _Resumed:
    __slots__ = ("coro", "step")

    def __init__(self, coro: Coroutine[Any, Any, Any], step: Any) -> None:
        self.coro, self.step = coro, step

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, step = self.coro, self.step
        while True:
            try:
                sent = yield step  # the future it waits on, to the task that now runs it
            except BaseException as exc:  # noqa: BLE001 - thrown in by that task (a cancellation): passed on
                try:
                    step = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    step = coro.send(sent)
                except StopIteration as done:
                    return done.value
