"""/metrics, /healthz and /readyz on a running worker (real broker, store and model)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas import CatalogueUpdate, encode
from streams.broker import EmbeddedBroker
from streams.kafka import producer
from streams.lag import LagWindow
from streams.metrics import observe_search, render, set_model_version
from streams.sample_events import valid_events
from streams.supervise import WorkerProcess, http_json, http_post_json

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(worker: WorkerProcess) -> Samples:
    """Every sample on /metrics, by (name, sorted labels)."""
    import urllib.request

    with urllib.request.urlopen(worker.url + "/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def named(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def wait_for(worker: WorkerProcess, check: Callable[[Samples], bool], what: str, timeout_s: float = 60) -> Samples:
    deadline = time.monotonic() + timeout_s
    samples: Samples = {}
    while time.monotonic() < deadline:
        samples = scrape(worker)
        if check(samples):
            return samples
        time.sleep(0.3)
    shoprank = {k: v for k, v in samples.items() if k[0].startswith("shoprank_")}
    raise AssertionError(f"never saw {what}; shoprank series: {shoprank}")


def send(broker: EmbeddedBroker, topic: str, values: list[tuple[bytes | None, bytes]]) -> None:
    async def go() -> None:
        async with producer(broker.bootstrap, linger_ms=5) as prod:
            for key, val in values:
                await prod.send(topic, val, key=key)

    asyncio.run(go())


def test_metrics_move_with_traffic(broker: EmbeddedBroker, prefix: str, make_worker) -> None:  # type: ignore[no-untyped-def]
    app_id = f"m-{uuid.uuid4().hex[:6]}"
    group = f"{prefix}{app_id}"
    worker = make_worker(prefix, app_id=app_id, extra_env={"SHOPRANK_WORKER_METRICS_INTERVAL_S": "0.5"})
    before = scrape(worker)
    pixel = "pixel-validate"
    assert value(before, "shoprank_dead_letters_total", agent=pixel, reason="invalid_json") == 0

    # Bad input: dead letters by reason, and events per agent count it too.
    send(broker, f"{prefix}shoprank.pixel", [(b"demo:s1", b"{not json"), (b"demo:s2", b"[1, 2]")])
    after_bad = wait_for(
        worker, lambda s: value(s, "shoprank_dead_letters_total", agent=pixel, reason="invalid_json") >= 1,
        "a dead letter counted by reason",
    )
    assert value(after_bad, "shoprank_agent_events_total", agent=pixel) >= 2
    assert sum(v for labels, v in named(after_bad, "shoprank_dead_letters_total").items()
               if ("agent", pixel) in labels) == 2

    # Good events: the counter moves again, and the lag of the worker's partitions is sampled back to 0.
    send(broker, f"{prefix}shoprank.pixel", [(m.key, m.value) for m in valid_events(30, seed=3)])
    events = wait_for(worker, lambda s: value(s, "shoprank_agent_events_total", agent=pixel) >= 32, "32 pixel events")
    lag = wait_for(
        worker,
        lambda s: any(dict(labels).get("topic") == f"{prefix}shoprank.pixel" for labels in named(s, "shoprank_consumer_lag"))
        and sum(named(s, "shoprank_consumer_lag").values()) == 0,
        "pixel partitions with lag 0",
    )
    assert all(dict(labels)["group"] == group for labels in named(lag, "shoprank_consumer_lag"))
    assert value(lag, "shoprank_consumer_group_status", group=group, shoprank_consumer_group_status="OK") == 1
    assert value(events, "shoprank_agent_events_total", agent=pixel) >= 32

    # Catalogue and search: index size per tenant, stage latencies, the embedder's version.
    updates = [
        CatalogueUpdate(tenant="demo", product_id=f"p{i}", updated_at=1_700_000_000_000, title=f"red jacket {i}",
                        brand="Acme", category_path=["Clothing"], price=10.0 + i, currency="EUR", stock=3)
        for i in range(5)
    ]
    send(broker, f"{prefix}shoprank.catalogue", [(f"demo:{u.product_id}".encode(), encode(u)) for u in updates])
    indexed = wait_for(worker, lambda s: value(s, "shoprank_index_points", tenant="demo") == 5, "5 points indexed")
    assert value(indexed, "shoprank_index_points", tenant="acme") == 0
    assert value(indexed, "shoprank_agent_events_total", agent="catalogue-index") >= 5
    embedders = [dict(labels) for labels in named(indexed, "shoprank_model_version_info") if ("kind", "embedder") in labels]
    assert len(embedders) == 1 and embedders[0]["version"]

    status, body = http_post_json(worker.url + "/v1/search", {"tenant": "demo", "query": "red jacket"})
    assert status == 200, body
    searched = scrape(worker)
    stages = {dict(labels)["stage"]: v for labels, v in named(searched, "shoprank_search_stage_seconds_count").items()}
    assert stages and set(stages) == set(body["timings_ms"]) and all(v >= 1 for v in stages.values())
    # Start-up froze the worker's long-lived objects out of full collections (streams.gc_freeze).
    assert value(searched, "shoprank_gc_frozen_objects") > 100_000
    assert value(searched, "python_gc_collections_total", generation="0") > 0
    # The worker runs on the event loop its settings name (asyncio's unless told otherwise).
    assert value(searched, "shoprank_event_loop_info", loop="asyncio") == 1
    assert value(searched, "shoprank_event_loop_info", loop="uvloop") == 0


def test_readyz_goes_from_503_naming_the_check_to_200(broker: EmbeddedBroker, prefix: str, tmp_path: Path,
                                                      model_dir: Path) -> None:
    worker = WorkerProcess(
        broker.bootstrap, app_id=f"r-{uuid.uuid4().hex[:6]}", topic_prefix=prefix, tenants="demo",
        data_dir=tmp_path / "data", log_path=tmp_path / "worker.log",
        extra_env={"SHOPRANK_MODELS_DIR": str(model_dir.parent), "SHOPRANK_MODELS_EMBEDDER": model_dir.name,
                   "SHOPRANK_STORE_DIR": str(tmp_path / "index")},
    )
    seen: list[tuple[int, Any]] = []
    stop = threading.Event()

    def poll() -> None:  # while start() waits for ready, record every answer /readyz gives
        while not stop.is_set():
            status, body = http_json(worker.url + "/readyz", timeout_s=2)
            if status:
                seen.append((status, body))
            time.sleep(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        worker.start()
        time.sleep(0.3)
        stop.set()
        poller.join(5)
        assert http_json(worker.url + "/healthz")[0] == 200
        not_ready = [body for status, body in seen if status == 503]
        ready = [body for status, body in seen if status == 200]
        assert not_ready, f"never saw a 503 during start-up: {seen[:3]}"
        assert ready and ready[-1]["ready"] and ready[-1]["failed"] == []
        first = not_ready[0]
        assert first["ready"] is False and first["failed"]
        assert set(first["failed"]) <= set(first["checks"]) and not any(first["checks"][f] for f in first["failed"])
        assert {"broker_reachable", "partitions_assigned", "store_open", "model_loaded"} <= set(ready[-1]["checks"])
        # The 503s come before the 200s: readiness does not flap once reached.
        statuses = [s for s, _ in seen]
        assert statuses.index(200) > statuses.index(503) and 503 not in statuses[statuses.index(200):]
    finally:
        stop.set()
        worker.stop()


def test_metrics_exposition_without_a_worker() -> None:
    """The instruments render in the Prometheus text format; versions replace, not accumulate."""
    from schemas import SearchResult

    set_model_version("ranker", "r1")
    set_model_version("ranker", "r2")
    observe_search([SearchResult(request_id="x", tenant="demo", answered_at=1, timings_ms={"embed": 3.0, "retrieve": 1.5})])
    text = render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    rankers = [s.labels["version"] for s in families["shoprank_model_version_info"].samples
               if s.labels["kind"] == "ranker"]
    assert rankers == ["r2"]
    counts = {s.labels["stage"]: s.value for s in families["shoprank_search_stage_seconds"].samples
              if s.name.endswith("_count")}
    assert counts["embed"] >= 1 and counts["retrieve"] >= 1
    assert LagWindow().report("nobody").status == "NOTFOUND"
