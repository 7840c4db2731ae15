"""The shopper simulator through the real pipeline (small): both buckets served, outcomes attributed."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from models.searcher import assign_bucket
from schemas import RankedItem
from streams.broker import EmbeddedBroker
from streams.shoppers import generated_world, labelled_world, react
from streams.simulate import CONTROL_SHARE, run_simulation
from tests.test_search import send_updates, wait_stats

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).parent / "fixtures" / "eval-mini"


def test_shoppers_prefer_relevant_appealing_products_near_the_top() -> None:
    world = generated_world(300, seed=3)
    query = world.queries[0]
    relevant = sorted(query.relevance, key=lambda p: -world.appeal[p])
    irrelevant = [u.product_id for u in world.catalogue if u.product_id not in query.relevance][:10]
    rng = random.Random(0)

    def purchases(order: list[str]) -> int:
        items = [RankedItem(product_id=p, rank=i, score=0.0) for i, p in enumerate(order)]
        return sum(bool(react(world, query, items, rng).purchases) for _ in range(2_000))

    assert purchases(relevant[:3] + irrelevant) > 2 * purchases(irrelevant + relevant[:3])


def test_a_labelled_set_becomes_a_world_with_graded_relevance() -> None:
    world = labelled_world(FIXTURE, products=50, queries=5)
    assert world.queries and all(0 < g <= 1 for q in world.queries for g in q.relevance.values())
    judged = {p for q in world.queries for p in q.relevance}
    assert judged <= {u.product_id for u in world.catalogue}
    assert all(u.price and u.price > 0 and u.margin is not None for u in world.catalogue)


def test_simulation_drives_both_buckets_through_attribution(broker: EmbeddedBroker, prefix: str,
                                                            make_worker) -> None:  # type: ignore[no-untyped-def]
    world = generated_world(300, seed=5, tenant="sim", now_ms=int(time.time() * 1000))
    worker = make_worker(prefix, tenants="sim", extra_env={"SHOPRANK_RANKER_CONTROL_SHARE": str(CONTROL_SHARE)})
    send_updates(broker, prefix, world.catalogue)
    wait_stats(worker, embedded=len(world.catalogue))
    report = asyncio.run(run_simulation(world, broker.bootstrap, prefix, events=400, window=200, concurrency=4))
    learning, control = report.total("learning"), report.total("control")
    assert report.events >= 400 and learning.searches > 10 and control.searches > 10
    assert {assign_bucket(f"sim-1-{i}", CONTROL_SHARE) for i in range(50)} == {"learning", "control"}
    deadline = time.monotonic() + 60
    while True:
        buckets = worker.get("/v1/analytics/sim")["buckets"]
        shown = {b: buckets.get(b, {}).get("searches", 0) for b in ("learning", "control")}
        if shown == {"learning": learning.searches, "control": control.searches}:
            break
        assert time.monotonic() < deadline, (shown, learning, control)
        time.sleep(0.5)
    assert buckets["learning"]["clicks"] == learning.clicks and buckets["control"]["clicks"] == control.clicks
    from tests.conftest import run_cli

    res = run_cli("analytics", "--tenant", "sim", "--url", worker.url)
    assert res.returncode == 0, res.stderr
    assert "conversion lift" in res.stdout and "searches shown" in res.stdout
    assert "of 4" not in res.stdout  # one worker holds every partition: nothing to warn about


def test_analytics_cli_errors_are_one_line() -> None:
    from tests.conftest import run_cli

    res = run_cli("analytics", "--tenant", "demo", "--url", "http://127.0.0.1:1")
    assert res.returncode == 1 and res.stderr.startswith("shoprank: no worker answers at http://127.0.0.1:1")
    assert len(res.stderr.strip().splitlines()) == 1


def test_analytics_cli_says_when_a_worker_holds_only_some_partitions() -> None:
    import http.server
    import threading

    import orjson

    from tests.conftest import run_cli

    body = orjson.dumps({"tenant": "demo", "buckets": {"learning": {"searches": 3}},
                         "partitions": {"held": [0, 1], "of": 4, "complete": False}})

    class Partial(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Partial)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        res = run_cli("analytics", "--tenant", "demo", "--url", f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert res.returncode == 0, res.stderr
    assert "partitions 0, 1 of 4" in " ".join(res.stdout.split())
