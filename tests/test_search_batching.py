"""Search batching on its own: requests arriving together share a batch, in order, and each answer
leaves as soon as it is ready."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import faust
import pytest

from schemas import SearchRequest, SearchResult
from streams.search import SearchPipeline, _Coalescer
from streams.settings import Settings


class Request:
    def __init__(self, request_id: str) -> None:
        self.request_id = request_id


def test_requests_arriving_while_a_batch_runs_go_together_in_the_next_one() -> None:
    sizes: list[int] = []

    async def run(requests: list[Any], deliver: Any) -> list[Any]:
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

    async def run(requests: list[Any], deliver: Any) -> list[Any]:
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
    async def run(requests: list[Any], deliver: Any) -> list[Any]:
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


def test_an_answer_ready_early_reaches_its_caller_before_the_batch_ends() -> None:
    async def run(requests: list[Any], deliver: Any) -> list[Any]:
        await deliver(0, "first")  # the search thread has ranked the first request
        await asyncio.sleep(0.5)  # and is still ranking the others
        return ["first", "second"]

    async def main() -> tuple[Any, float, float]:
        loop = asyncio.get_running_loop()
        coalescer = _Coalescer(run, max_batch=8)  # type: ignore[arg-type]
        t0 = loop.time()
        first = asyncio.ensure_future(coalescer.submit(Request("a")))  # type: ignore[arg-type]
        second = asyncio.ensure_future(coalescer.submit(Request("b")))  # type: ignore[arg-type]
        got = await first
        t_first = loop.time() - t0
        await second
        return (got, await second), t_first, loop.time() - t0

    answers, t_first, t_second = asyncio.run(main())
    assert answers == ("first", "second")
    assert t_first < 0.25 <= 0.5 <= t_second


class _SteppedSearcher:
    """Answers its batch one request at a time, each only after the test has seen the previous one
    delivered: a pipeline that waits for the whole batch would never deliver the second."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.delivered = threading.Semaphore(0)
        self.fail_after = fail_after

    def search_many_logged(self, requests: list[SearchRequest], *, on_answer: Any, **_: Any) -> list[Any]:
        out = []
        for i, r in enumerate(requests):
            if i == self.fail_after:
                raise RuntimeError("store closed")
            result = SearchResult(request_id=r.request_id, tenant=r.tenant, query=r.query, answered_at=1)
            out.append((result, None))
            on_answer(i, result, None)
            assert self.delivered.acquire(timeout=10), "the answer was not delivered while the batch ran"
        return out


@pytest.mark.parametrize("fail_after", [None, 1])
def test_the_pipeline_delivers_each_answer_while_the_batch_runs(fail_after: int | None) -> None:
    searcher = _SteppedSearcher(fail_after)
    app = faust.App("batching-test", broker="kafka://127.0.0.1:1")
    pipeline = SearchPipeline(app, Settings(tenants=("demo",)), lambda: searcher, "127.0.0.1:1")
    requests = [SearchRequest(request_id=f"r{i}", tenant="demo", query=f"q{i}") for i in range(3)]
    delivered: list[tuple[int, str, str | None]] = []

    async def deliver(i: int, result: SearchResult) -> None:
        delivered.append((i, result.request_id, result.error.code if result.error else None))
        searcher.delivered.release()

    results = asyncio.run(pipeline.answer_many(requests, deliver))
    if fail_after is None:
        assert delivered == [(0, "r0", None), (1, "r1", None), (2, "r2", None)]
    else:  # what was answered went out; the rest get an error answer, never silence
        assert delivered == [(0, "r0", None), (1, "r1", "internal_error"), (2, "r2", "internal_error")]
    assert [r.request_id for r in results] == ["r0", "r1", "r2"]


class _EagerSearcher:
    """Answers its whole batch at once, without waiting for the loop: the search thread outruns it."""

    def search_many_logged(self, requests: list[SearchRequest], *, on_answer: Any, **_: Any) -> list[Any]:
        out = []
        for i, r in enumerate(requests):
            result = SearchResult(request_id=r.request_id, tenant=r.tenant, query=r.query, answered_at=1)
            out.append((result, None))
            on_answer(i, result, None)
        return out


def test_answers_ready_together_reach_the_loop_in_one_wake_up_each_delivered_once() -> None:
    app = faust.App("batching-test-eager", broker="kafka://127.0.0.1:1")
    pipeline = SearchPipeline(app, Settings(tenants=("demo",)), lambda: _EagerSearcher(), "127.0.0.1:1")
    requests = [SearchRequest(request_id=f"r{i}", tenant="demo", query=f"q{i}") for i in range(200)]
    delivered: list[int] = []
    wake_ups = 0

    async def deliver(i: int, result: SearchResult) -> None:
        assert result.request_id == f"r{i}"
        delivered.append(i)

    async def main() -> list[SearchResult]:
        nonlocal wake_ups
        loop = asyncio.get_running_loop()
        real = loop.call_soon_threadsafe

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal wake_ups
            wake_ups += 1
            return real(*args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        return await pipeline.answer_many(requests, deliver)

    results = asyncio.run(main())
    assert delivered == list(range(200)) and [r.request_id for r in results] == [f"r{i}" for i in range(200)]
    # 201 hand-overs (200 answers and the end of the batch; one wake-up each before); the loop is woken
    # far fewer times. The thread pool's own completion callback is one of the counted calls.
    assert wake_ups < 50, wake_ups
