"""Crashes on the real broker: kill -9 during a run loses nothing and counts nothing twice."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from streams.broker import EmbeddedBroker
from streams.sample_sessions import session_traffic
from tests.test_search import send

pytestmark = pytest.mark.integration


def _learning_totals(worker: Any, tenant: str) -> dict[str, float]:
    return worker.get(f"/v1/analytics/{tenant}")["buckets"].get("learning", {})


def test_kill_9_repeatedly_loses_nothing_and_counts_nothing_twice(broker: EmbeddedBroker, prefix: str,
                                                                   make_worker) -> None:  # type: ignore[no-untyped-def]
    tenants = ("demo", "acme")
    traffic = session_traffic(1_200, tenants=tenants, seed=17)
    for topic in ("searches", "pixel"):
        send(broker, f"{prefix}shoprank.{topic}", [(k.decode(), v) for t, k, v in traffic.messages if t == topic])

    rng = random.Random(3)
    fast_failover = {"SHOPRANK_KAFKA_SESSION_TIMEOUT_S": "4", "SHOPRANK_KAFKA_HEARTBEAT_INTERVAL_S": "0.5"}
    worker = make_worker(prefix, app_id="crashy", tenants=",".join(tenants), extra_env=fast_failover)
    cut_short = 0
    for _ in range(3):
        time.sleep(rng.uniform(0.5, 2.0))
        seen = _learning_totals(worker, "demo").get("clicks", 0)
        cut_short += seen < traffic.totals["demo"]["clicks"]
        worker.kill()
        worker.start()

    deadline = time.monotonic() + 420  # generous: on a loaded 2-core machine recovery after three kills is slow
    want = {t: {k: float(v) for k, v in traffic.totals[t].items()} for t in tenants}
    while True:
        got = {t: {k: float(_learning_totals(worker, t).get(k, 0)) for k in want[t]} for t in tenants}
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    time.sleep(2.0)  # anything counted twice would show up now
    got = {t: {k: float(_learning_totals(worker, t).get(k, 0)) for k in want[t]} for t in tenants}
    assert got == want
    pixel = worker.get("/v1/stats/pixel")["counts"]
    assert {t: pixel.get(t, {}) for t in tenants} == {t: dict(traffic.pixel_counts[t]) for t in tenants}
    assert cut_short >= 1, "no kill landed mid-run: the test proved nothing; send more traffic"
    # The last kill left the tables on disk open: they were read again from their changelogs (streams.table_store).
    rebuilt = worker.get("/v1/stats/broker")["tables_rebuilt_after_crash"]
    assert any("learn-state-changelog" in tp for tp in rebuilt) and sum(rebuilt.values()) > 0, rebuilt


def test_events_waiting_for_their_searches_are_not_given_up_while_the_searches_backlog_is_read(
        broker: EmbeddedBroker, prefix: str, make_worker) -> None:  # type: ignore[no-untyped-def]
    """A restarted worker finds events that were waiting for their search logs, parked longer ago than
    the grace, and those logs in the backlog it has yet to read: it must read the backlog before it gives
    up on them. Here the worker handles every pixel event and stops before their grace (15 s) runs out;
    the search logs are published, and it starts again once the grace has run out."""
    tenants = ("demo", "acme")
    traffic = session_traffic(400, tenants=tenants, seed=29)
    env = {"SHOPRANK_ATTRIBUTION_LATE_GRACE_S": "15", "SHOPRANK_ATTRIBUTION_SWEEP_INTERVAL_S": "0.5"}
    worker = make_worker(prefix, app_id="backlog", tenants=",".join(tenants), extra_env=env)
    send(broker, f"{prefix}shoprank.pixel", [(k.decode(), v) for t, k, v in traffic.messages if t == "pixel"])
    want_pixel = {t: dict(traffic.pixel_counts[t]) for t in tenants}
    deadline = time.monotonic() + 120
    while worker.get("/v1/stats/pixel")["counts"] != want_pixel and time.monotonic() < deadline:
        time.sleep(0.5)
    assert worker.get("/v1/stats/pixel")["counts"] == want_pixel
    time.sleep(3.5)  # past Faust's commit interval: the restarted worker starts after these events
    parked = time.monotonic()
    waiting = worker.get("/v1/stats/pixel")["attribution"]
    assert waiting["interactions"] == {} and waiting["unattributed"] == {}, waiting  # all parked, none given up
    worker.stop()
    send(broker, f"{prefix}shoprank.searches", [(k.decode(), v) for t, k, v in traffic.messages if t == "searches"])
    time.sleep(max(0.0, 16 - (time.monotonic() - parked)))  # the parked events are now older than the grace
    worker.start()

    want = {t: {k: float(v) for k, v in traffic.totals[t].items()} for t in tenants}
    deadline = time.monotonic() + 240
    while True:
        got = {t: {k: float(_learning_totals(worker, t).get(k, 0)) for k in want[t]} for t in tenants}
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    stats = worker.get("/v1/stats/pixel")["attribution"]
    assert got == want, stats
    assert stats["unattributed"] == {}, stats
