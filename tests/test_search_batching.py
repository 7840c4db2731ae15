"""The gateway's search batching on its own: requests arriving together share a batch, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.search import _Coalescer


class Request:
    def __init__(self, request_id: str) -> None:
        self.request_id = request_id


def test_requests_arriving_while_a_batch_runs_go_together_in_the_next_one() -> None:
    sizes: list[int] = []

    async def run(requests: list[Any]) -> list[Any]:
        sizes.append(len(requests))
        await asyncio.sleep(0.02)  # the search thread at work: the other requests queue meanwhile
        return [f"answer to {r.request_id}" for r in requests]

    async def main() -> list[Any]:
        coalescer = _Coalescer(run, max_batch=8)  # type: ignore[arg-type]
        return await asyncio.gather(*(coalescer.submit(Request(f"r{i}")) for i in range(20)))  # type: ignore[arg-type]

    answers = asyncio.run(main())
    assert answers == [f"answer to r{i}" for i in range(20)]
    assert sizes == [8, 8, 4]  # all twenty queued before the first batch began


def test_a_failing_batch_fails_its_requests_and_the_next_batch_still_runs() -> None:
    calls = 0

    async def run(requests: list[Any]) -> list[Any]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 1:
            raise RuntimeError("store unavailable")
        return [r.request_id for r in requests]

    async def main() -> tuple[Any, Any]:
        coalescer = _Coalescer(run, max_batch=8)  # type: ignore[arg-type]
        first = asyncio.ensure_future(coalescer.submit(Request("a")))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="store unavailable"):
            await first
        return await coalescer.submit(Request("b")), calls  # type: ignore[arg-type]

    assert asyncio.run(main()) == ("b", 2)


def test_a_caller_that_gave_up_does_not_stop_the_others() -> None:
    async def run(requests: list[Any]) -> list[Any]:
        await asyncio.sleep(0.02)
        return [r.request_id for r in requests]

    async def main() -> list[Any]:
        coalescer = _Coalescer(run, max_batch=8)  # type: ignore[arg-type]
        tasks = [asyncio.ensure_future(coalescer.submit(Request(f"r{i}"))) for i in range(4)]  # type: ignore[arg-type]
        await asyncio.sleep(0.005)
        tasks[2].cancel()  # an HTTP client that disconnected
        return await asyncio.gather(*tasks, return_exceptions=True)

    got = asyncio.run(main())
    assert got[:2] == ["r0", "r1"] and got[3] == "r3" and isinstance(got[2], asyncio.CancelledError)
