"""The pixel validation agent on the real broker: counts, dead letters, restart recovery."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections import Counter

import orjson
import pytest

from schemas import DeadLetter, decode
from schemas.deadletter import MAX_KEPT_BYTES
from streams.broker import EmbeddedBroker
from streams.kafka import producer, read_topic
from streams.sample_events import SampleMessage, bad_messages, valid_events
from streams.supervise import WorkerProcess

pytestmark = pytest.mark.integration


def publish(broker: EmbeddedBroker, topic: str, msgs: list[SampleMessage]) -> list[tuple[int, int]]:
    """Send in order; return (partition, offset) of each message."""

    async def go() -> list[tuple[int, int]]:
        async with producer(broker.bootstrap, max_request_size=2_000_000, linger_ms=2) as prod:
            futures = [await prod.send(topic, m.value, key=m.key) for m in msgs]
            metas = [await f for f in futures]
        return [(m.partition, m.offset) for m in metas]

    return asyncio.run(go())


def wait_processed(worker: WorkerProcess, total: int, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    stats: dict = {}
    while time.monotonic() < deadline:
        stats = worker.get("/v1/stats/pixel")
        if stats["processed"]["valid"] + stats["processed"]["rejected"] >= total:
            return stats
        time.sleep(0.2)
    raise AssertionError(f"worker processed only {stats.get('processed')} of {total}")


def wait_counts(worker: WorkerProcess, expected: dict, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    counts: dict = {}
    while time.monotonic() < deadline:
        counts = worker.get("/v1/stats/pixel")["counts"]
        if counts == expected:
            return counts
        time.sleep(0.2)
    raise AssertionError(f"counts {counts} never reached {expected}")


def expected_counts(msgs: list[SampleMessage]) -> dict[str, dict[str, int]]:
    out: dict[str, Counter[str]] = {}
    for m in msgs:
        if m.expect == "valid":
            out.setdefault(m.tenant, Counter())[m.type] += 1  # type: ignore[arg-type, index]
    return {t: dict(c) for t, c in out.items()}


def dead_letters(broker: EmbeddedBroker, prefix: str) -> list[DeadLetter]:
    async def go() -> list[DeadLetter]:
        return [
            decode(DeadLetter, value)  # type: ignore[arg-type]
            async for _, _, _, value, _ in read_topic(broker.bootstrap, f"{prefix}shoprank.dead-letters",
                                                     idle_timeout_s=1.0)
        ]

    return asyncio.run(go())


def test_counts_dead_letters_and_keeps_serving(broker: EmbeddedBroker, prefix: str, make_worker) -> None:  # type: ignore[no-untyped-def]
    worker = make_worker(prefix)
    topic = f"{prefix}shoprank.pixel"
    good = valid_events(300, seed=1, tenants=("demo", "acme"))
    bad = bad_messages(seed=2)
    dup = [SampleMessage(good[0].key, good[0].value, "duplicate_event", "demo")]
    more = valid_events(100, seed=3, tenants=("demo", "acme"))
    assert len({m.expect for m in bad}) >= 10, "at least ten kinds of bad input"

    publish(broker, topic, good)
    wait_counts(worker, expected_counts(good))
    positions = publish(broker, topic, bad + dup)
    publish(broker, topic, more)  # served after the poison
    wait_counts(worker, expected_counts(good + more))

    assert worker.get("/healthz") == {"status": "ok"}
    letters = dead_letters(broker, prefix)
    assert len(letters) == len(bad) + len(dup)
    by_origin = {(d.source_partition, d.source_offset): d for d in letters}
    for msg, (partition, offset) in zip(bad + dup, positions, strict=True):
        letter = by_origin[(partition, offset)]
        assert letter.reason == msg.expect, (letter.reason, letter.detail)
        assert letter.detail and letter.source_topic == topic and letter.agent == "pixel-validate"
        assert letter.key == msg.key
        assert letter.value_size == len(msg.value)
        assert letter.value_sha256 == hashlib.sha256(msg.value).hexdigest()
        assert letter.value == msg.value[:MAX_KEPT_BYTES]
        assert letter.value_truncated == (len(msg.value) > MAX_KEPT_BYTES)
    stats = worker.get("/v1/stats/pixel")
    assert sum(stats["dead_letters"].values()) == len(letters)


def test_restart_recovers_tables_from_the_changelog(broker: EmbeddedBroker, prefix: str, make_worker) -> None:  # type: ignore[no-untyped-def]
    topic = f"{prefix}shoprank.pixel"
    app_id = "restart-app"
    first = make_worker(prefix, app_id=app_id)
    batch1 = valid_events(200, seed=5, tenants=("demo", "acme"))
    publish(broker, topic, batch1)
    wait_counts(first, expected_counts(batch1))
    assert first.stop() == 0, "SIGTERM should end the worker cleanly"

    second = make_worker(prefix, app_id=app_id)
    # Nothing new was sent: the counts come back from the changelog alone.
    assert second.get("/v1/stats/pixel")["counts"] == expected_counts(batch1)
    # The dedupe table came back too: a replay of an already-counted event is not counted again.
    replay = [SampleMessage(batch1[7].key, batch1[7].value, "duplicate_event", batch1[7].tenant)]
    batch2 = valid_events(50, seed=6, tenants=("demo",))
    publish(broker, topic, replay + batch2)
    wait_counts(second, expected_counts(batch1 + batch2))
    wait_processed(second, len(batch2) + 1)
    assert second.get("/v1/stats/pixel")["dead_letters"] == {"duplicate_event": 1}
    letter = dead_letters(broker, prefix)[0]
    assert base64.b64decode(letter.value_b64) == batch1[7].value


def test_counts_kept_by_an_earlier_version_are_carried_on(broker: EmbeddedBroker, prefix: str, make_worker) -> None:  # type: ignore[no-untyped-def]
    """Earlier versions kept a count record per tenant, type and partition (``count|t|type|p``); the
    worker now keeps one per partition. Recovered old records count, and new events add to them."""
    topic = f"{prefix}shoprank.pixel"
    app_id = "legacy-app"
    first = make_worker(prefix, app_id=app_id)
    batch1 = valid_events(200, seed=7, tenants=("demo", "acme"))
    where = publish(broker, topic, batch1)
    wait_counts(first, expected_counts(batch1))
    assert first.stop() == 0
    # Rewrite the changelog as the earlier version left it: its records, and none of the new kind.
    legacy: dict[str, list[int]] = {}
    for msg, (partition, offset) in zip(batch1, where, strict=True):
        if msg.expect == "valid":
            n, _ = legacy.get(key := f"count|{msg.tenant}|{msg.type}|{partition}", (0, -1))
            legacy[key] = [n + 1, offset]

    async def rewrite() -> None:
        async with producer(broker.bootstrap) as prod:
            changelog = f"{prefix}{app_id}-pixel-state-changelog"
            for partition in range(4):
                await prod.send_and_wait(changelog, None, key=orjson.dumps(f"counts|{partition}"), partition=partition)
            for key, value in legacy.items():
                await prod.send_and_wait(changelog, orjson.dumps(value), key=orjson.dumps(key),
                                         partition=int(key.rsplit("|", 1)[1]))

    asyncio.run(rewrite())
    second = make_worker(prefix, app_id=app_id)
    assert second.get("/v1/stats/pixel")["counts"] == expected_counts(batch1)
    # The dedupe records came back as before, and new events add to the old counts.
    replay = [SampleMessage(batch1[3].key, batch1[3].value, "duplicate_event", batch1[3].tenant)]
    batch2 = valid_events(60, seed=8, tenants=("demo", "acme"))
    publish(broker, topic, replay + batch2)
    wait_counts(second, expected_counts(batch1 + batch2))
    assert second.stop() == 0
    # Written back as one record per partition: a third start recovers the same from it.
    third = make_worker(prefix, app_id=app_id)
    assert third.get("/v1/stats/pixel")["counts"] == expected_counts(batch1 + batch2)


def test_deployments_with_different_prefixes_share_no_table_state(broker: EmbeddedBroker, make_worker) -> None:  # type: ignore[no-untyped-def]
    import uuid

    from streams.kafka import ensure_topics

    prefixes = [f"iso{uuid.uuid4().hex[:6]}.", f"iso{uuid.uuid4().hex[:6]}."]
    for p in prefixes:
        asyncio.run(ensure_topics(broker.bootstrap, p))
    events = valid_events(30, seed=9)
    first = make_worker(prefixes[0], app_id="same-app")
    publish(broker, f"{prefixes[0]}shoprank.pixel", events)
    wait_counts(first, expected_counts(events))
    first.stop()
    # Same app id, other prefix: must start empty and count the same events afresh, not as duplicates.
    second = make_worker(prefixes[1], app_id="same-app")
    assert second.get("/v1/stats/pixel")["counts"] == {}
    publish(broker, f"{prefixes[1]}shoprank.pixel", events)
    wait_counts(second, expected_counts(events))
