"""Search batching on its own: requests arriving together share a batch, in order, and each answer
leaves as soon as it is ready."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import faust
import pytest

from schemas import SearchRequest, SearchResult, encode
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


def _record(offset: int, request: SearchRequest) -> Any:
    from aiokafka.structs import ConsumerRecord

    value = encode(request)
    return ConsumerRecord(topic="shoprank.search-requests", partition=2, offset=offset, timestamp=int(time.time() * 1000),
                          timestamp_type=0, key=None, value=value, checksum=None, serialized_key_size=0,
                          serialized_value_size=len(value), headers=())


class _PoisonedPipeline:
    """A pipeline whose search-log step fails on one query, with the broker's side recorded instead of sent."""

    def __init__(self, dead_letter_fails: bool = False) -> None:
        app = faust.App("batching-test-poison", broker="kafka://127.0.0.1:1")
        self.pipeline = SearchPipeline(app, Settings(tenants=("demo",)), lambda: _EagerSearcher(), "127.0.0.1:1")
        self.replies: list[tuple[str, str, str | None]] = []
        self.dead: list[tuple[int, str, str, bytes]] = []
        real_log = self.pipeline._log

        async def log_or_fail(result: SearchResult, search_log: Any) -> None:
            if result.query == "poison":
                raise ValueError("cannot log this search")
            await real_log(result, search_log)

        async def reply(topic: str, result: SearchResult) -> None:
            self.replies.append((topic, result.request_id, result.error.code if result.error else None))

        async def dead_letter(message: Any, reason: str, detail: str, tenant: str | None = None) -> None:
            if dead_letter_fails:
                raise ConnectionError("broker away")
            self.dead.append((message.offset, reason, detail, message.value))

        self.pipeline._log = log_or_fail  # type: ignore[method-assign]
        self.pipeline._reply = reply  # type: ignore[method-assign]
        self.pipeline.dead.send = dead_letter  # type: ignore[method-assign]


def test_a_request_that_fails_its_batch_is_dead_lettered_and_the_others_are_answered() -> None:
    poisoned = _PoisonedPipeline()
    requests = [SearchRequest(request_id=f"r{i}", tenant="demo", query="poison" if i == 1 else f"q{i}") for i in range(3)]
    records = [_record(10 + i, r) for i, r in enumerate(requests)]
    # Without the guard the exception reaches the consumer, which would read the same batch again, for ever.
    with pytest.raises(ValueError):
        asyncio.run(poisoned.pipeline.handle(records))
    poisoned.replies.clear()

    asyncio.run(poisoned.pipeline.handle_isolating(records))
    answered = {(rid, code) for _, rid, code in poisoned.replies}
    assert ("r0", None) in answered and ("r2", None) in answered
    assert ("r1", "internal_error") in answered  # its client learns it failed rather than waiting out a timeout
    assert [(offset, reason) for offset, reason, _, _ in poisoned.dead] == [(11, "internal_error")]
    assert "cannot log this search" in poisoned.dead[0][2] and poisoned.dead[0][3] == records[1].value
    assert poisoned.pipeline.stats.dead_lettered == 1


def test_an_exception_while_setting_a_request_aside_is_not_swallowed() -> None:
    poisoned = _PoisonedPipeline(dead_letter_fails=True)
    records = [_record(5, SearchRequest(request_id="r0", tenant="demo", query="poison"))]
    with pytest.raises(ConnectionError):  # it reaches the consumer, which reconnects and reads the batch again
        asyncio.run(poisoned.pipeline.handle_isolating(records))


def test_broker_trouble_is_not_blamed_on_the_requests_the_batch_is_read_again() -> None:
    from aiokafka.errors import KafkaTimeoutError

    poisoned = _PoisonedPipeline()

    async def broker_away(result: SearchResult, search_log: Any) -> None:
        raise KafkaTimeoutError("no broker")

    poisoned.pipeline._log = broker_away  # type: ignore[method-assign]
    records = [_record(7, SearchRequest(request_id="r0", tenant="demo", query="q"))]
    with pytest.raises(KafkaTimeoutError):
        asyncio.run(poisoned.pipeline.handle_isolating(records))
    assert poisoned.dead == []  # nothing set aside: the consumer reconnects and answers it then
