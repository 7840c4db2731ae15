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
