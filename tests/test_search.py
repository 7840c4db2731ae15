"""Catalogue indexing and search on the real broker, the real ONNX model and both real store backends."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas import CatalogueUpdate, DeadLetter, SearchResult, decode, encode
from streams.broker import EmbeddedBroker
from schemas.topics import TOPICS
from streams.kafka import describe_topics, ensure_topics, producer, read_topic
from streams.lag import LagProbe
from streams.search import STALE_AFTER_S
from streams.search_client import SearchClient
from streams.settings import Settings
from streams.supervise import WorkerProcess
from tests.test_broker import topic_configs

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000

PRODUCTS = [
    ("p1", "Trail running shoes", "Stridex", ["Shoes", "Running"], 89.0, 5),
    ("p2", "Road running shoes, lightweight", "Fleetfoot", ["Shoes", "Running"], 120.0, 3),
    ("p3", "Leather hiking boots", "Stridex", ["Shoes", "Hiking"], 150.0, 0),
    ("p4", "Cordless power drill 18V", "Voltra", ["Tools", "Power tools"], 99.0, 10),
    ("p5", "Hammer drill XJ-9000 with case", "Voltra", ["Tools", "Power tools"], 179.0, 2),
    ("p6", "Claw hammer, fibreglass handle", "Forgeline", ["Tools", "Hand tools"], 19.5, 40),
    ("p7", "Stainless steel frying pan 28 cm", "Cucina", ["Kitchen", "Cookware"], 45.0, 12),
    ("p8", "Cast iron skillet", "Cucina", ["Kitchen", "Cookware"], 39.0, 7),
    ("p9", "Chef's knife 20 cm", "Edgewise", ["Kitchen", "Knives"], 65.0, 9),
    ("p10", "Wool running socks, 3 pairs", "Fleetfoot", ["Shoes", "Accessories"], 15.0, 100),
]


def product(pid: str, title: str, brand: str, cats: list[str], price: float, stock: int, ts: int = T0,
            tenant: str = "demo", **extra: Any) -> CatalogueUpdate:
    return CatalogueUpdate(tenant=tenant, product_id=pid, updated_at=ts, title=title, brand=brand,
                           category_path=cats, price=price, currency="EUR", stock=stock, margin=0.3, **extra)


def send(broker: EmbeddedBroker, topic: str, values: list[tuple[str | None, bytes]]) -> None:
    async def go() -> None:
        async with producer(broker.bootstrap) as prod:
            for key, value in values:
                await prod.send(topic, value, key=key.encode() if key else None)

    asyncio.run(go())


def send_updates(broker: EmbeddedBroker, prefix: str, updates: list[CatalogueUpdate]) -> None:
    send(broker, f"{prefix}shoprank.catalogue", [(f"{u.tenant}:{u.product_id}", encode(u)) for u in updates])


def wait_stats(worker: WorkerProcess, **at_least: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stats = worker.get("/v1/stats/catalogue")
        if all(stats.get(k, 0) >= v for k, v in at_least.items()):
            return stats
        time.sleep(0.1)
    raise AssertionError(f"catalogue stats {stats} never reached {at_least}")


class Env:
    def __init__(self, broker: EmbeddedBroker, prefix: str, worker: WorkerProcess) -> None:
        self.broker, self.prefix, self.worker = broker, prefix, worker

    def search(self, query: str, **fields: Any) -> SearchResult:
        return asyncio.run(self._search(query, **fields))

    async def _search(self, query: str, tenant: str = "demo", **fields: Any) -> SearchResult:
        async with SearchClient(self.broker.bootstrap, f"{self.prefix}shoprank.search-requests",
                                f"{self.prefix}shoprank.search-results") as client:
            return await client.search(tenant, query, timeout_s=30, **fields)

    def raw_request(self, request_id: str, value: bytes) -> SearchResult:
        async def go() -> SearchResult:
            async with SearchClient(self.broker.bootstrap, f"{self.prefix}shoprank.search-requests",
                                    f"{self.prefix}shoprank.search-results") as client:
                return await client.send_raw(request_id, value, timeout_s=30)

        return asyncio.run(go())

    def post(self, body: bytes, path: str = "/v1/search") -> tuple[int, Any]:
        """POST raw bytes (bad JSON included, which http_post_json cannot send)."""
        req = urllib.request.Request(self.worker.url + path, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module", params=["edge", "qdrant"])
def env(request: pytest.FixtureRequest, broker: EmbeddedBroker, model_dir: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One worker per store backend, with the sample products indexed."""
    kind = request.param
    prefix = f"s{uuid.uuid4().hex[:8]}."
    asyncio.run(ensure_topics(broker.bootstrap, prefix))
    tmp = tmp_path_factory.mktemp(f"search-{kind}")
    store_env = {"SHOPRANK_STORE_KIND": kind, "SHOPRANK_STORE_DIR": str(tmp / "index")}
    if kind == "qdrant":
        store_env["SHOPRANK_STORE_URL"] = ":memory:"  # qdrant-client's local mode: the server API in-process
    worker = WorkerProcess(
        broker.bootstrap, topic_prefix=prefix, app_id=f"search-{kind}", tenants="demo,acme", data_dir=tmp / "data",
        log_path=tmp / "w.log",
        extra_env={"SHOPRANK_MODELS_DIR": str(model_dir.parent), "SHOPRANK_MODELS_EMBEDDER": model_dir.name,
                   **store_env},
    ).start()
    try:
        send_updates(broker, prefix, [product(*p) for p in PRODUCTS])
        wait_stats(worker, embedded=len(PRODUCTS))
        yield Env(broker, prefix, worker)
    finally:
        worker.stop()


def ids(result: SearchResult) -> list[str]:
    return [i.product_id for i in result.items]


def test_hybrid_search_answers_with_scores_versions_timings_and_facets(env: Env) -> None:
    r = env.search("running shoes", page_size=5)
    assert r.error is None and r.search_id and r.query == "running shoes"
    assert set(ids(r)[:2]) == {"p1", "p2"}
    top = r.items[0]
    assert {"dense", "bm25", "fused"} <= set(top.scores) and top.price in (89.0, 120.0) and top.currency == "EUR"
    assert r.model_versions["embedder"].startswith("all-MiniLM-L6-v2")
    assert {"embed", "retrieve", "total"} <= set(r.timings_ms)
    assert r.facets["category"]["Shoes"] >= 3 and "brand" in r.facets
    assert env.search("running shoes").search_id != r.search_id  # a new search_id per search


def test_keyword_signal_finds_a_model_number(env: Env) -> None:
    assert ids(env.search("XJ-9000"))[0] == "p5"


def test_filters(env: Env) -> None:
    assert set(ids(env.search("shoes", filters={"category": "Running"}))) == {"p1", "p2"}
    assert set(ids(env.search("shoes", filters={"brand": ["Stridex"]}))) == {"p1", "p3"}
    in_range = ids(env.search("drill", filters={"price_min": 50.0, "price_max": 150.0}))
    assert "p4" in in_range and "p5" not in in_range and "p6" not in in_range
    assert "p3" not in ids(env.search("hiking boots", filters={"in_stock": True}))


def test_bad_requests_get_defined_error_replies(env: Env) -> None:
    assert env.search("   ").error.code == "empty_query"  # type: ignore[union-attr]
    assert env.search("shoes", tenant="acme").items == []  # served tenant, nothing indexed: empty, no error
    unknown = env.raw_request("r-unknown", orjson.dumps({"request_id": "r-unknown", "tenant": "nobody",
                                                        "query": "shoes", "reply_topic": f"{env.prefix}shoprank.search-results"}))
    assert unknown.error.code == "unknown_tenant"  # type: ignore[union-attr]
    long = env.raw_request("r-long", orjson.dumps({"request_id": "r-long", "tenant": "demo", "query": "x" * 600}))
    assert long.error.code == "query_too_long"  # type: ignore[union-attr]
    not_text = env.raw_request("r-int", orjson.dumps({"request_id": "r-int", "tenant": "demo", "query": 42}))
    assert not_text.error.code == "invalid_query"  # type: ignore[union-attr]
    # Nobody to answer: kept in dead letters, and the agent keeps serving.
    send(env.broker, f"{env.prefix}shoprank.search-requests", [(None, b"\xff\xfe garbage")])
    assert env.search("skillet").items[0].product_id == "p8"


def test_stale_requests_are_answered_expired_and_answered_ones_are_committed(env: Env) -> None:
    """Search requests have their own consumer group: a request older than STALE_AFTER_S is not searched
    (its client gave up) but answered request_expired and counted; what was answered is committed, so
    lag shows it done."""
    topic = f"{env.prefix}shoprank.search-requests"
    before = env.worker.get("/v1/stats/search")
    stale_at = int(time.time() * 1000) - int(2 * STALE_AFTER_S * 1000)

    async def send_stale() -> None:
        async with producer(env.broker.bootstrap) as prod:
            await prod.send_and_wait(topic, orjson.dumps({"request_id": "r-stale", "tenant": "demo", "query": "skillet"}),
                                     key=b"demo:r-stale", timestamp_ms=stale_at)

    asyncio.run(send_stale())
    assert env.search("skillet").items[0].product_id == "p8"
    deadline = time.monotonic() + 30
    while (after := env.worker.get("/v1/stats/search"))["expired"] == before["expired"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert after["expired"] == before["expired"] + 1 and after["answered"] > before["answered"]

    async def replies() -> dict[str, SearchResult]:
        return {k.decode(): decode(SearchResult, v) async for _, _, k, v, _ in read_topic(
            env.broker.bootstrap, f"{env.prefix}shoprank.search-results", idle_timeout_s=3) if k is not None}

    stale = asyncio.run(replies())["r-stale"]
    assert stale.error is not None and stale.error.code == "request_expired" and stale.items == []
    assert stale.search_id is None  # not searched: nothing to attribute later events to

    group = after["requests_group"]
    assert group.startswith(env.prefix) and group.endswith("-search")  # <prefix><app id>-search
    assert after["requests_assigned"] == [f"{topic}[{p}]" for p in range(TOPICS["search-requests"].partitions)]

    async def lag() -> tuple[int, int]:
        async with LagProbe(env.broker.bootstrap, [group]) as probe:
            (snap,) = await probe.snapshot([group])
        return sum(p.lag for p in snap.partitions), sum(p.committed for p in snap.partitions if p.committed > 0)

    deadline = time.monotonic() + 30
    while (seen := asyncio.run(lag()))[0] > 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert seen[0] == 0 and seen[1] > 0, seen


def test_a_reply_topic_that_does_not_exist_yet_is_created_like_the_results_topic(env: Env) -> None:
    own = f"{env.prefix}shoprank.search-results.own-{uuid.uuid4().hex[:6]}"

    def listed() -> dict[str, int]:  # lists the broker's topics; naming one would create it
        return asyncio.run(describe_topics(env.broker.bootstrap))

    assert own not in listed()
    send(env.broker, f"{env.prefix}shoprank.search-requests",
         [("demo:r-own", orjson.dumps({"request_id": "r-own", "tenant": "demo", "query": "chef knife",
                                       "reply_topic": own}))])
    deadline = time.monotonic() + 30
    while own not in listed() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert listed().get(own) == TOPICS["search-results"].partitions
    # Created by the worker from the results topic's spec, not by the broker's defaults (no retention of ours).
    assert topic_configs(env.broker.bootstrap, own).get("retention.ms") == str(Settings().kafka.retention_ms)

    async def replies() -> list[SearchResult]:
        return [decode(SearchResult, v) async for *_, v, _ in read_topic(env.broker.bootstrap, own, idle_timeout_s=5)
                if v is not None]

    (reply,) = asyncio.run(replies())
    assert reply.request_id == "r-own" and reply.error is None and reply.items[0].product_id == "p9"


def test_a_client_with_its_own_reply_topic_works_where_the_broker_creates_no_topics(
        env: Env, no_autocreate: None) -> None:
    # Kafka as in docker/ (auto.create.topics.enable=false): naming a missing topic creates nothing.
    # Simulated here by asking the broker not to (streams.autocreate) in this process.
    own = f"{env.prefix}shoprank.search-results.client-{uuid.uuid4().hex[:6]}"

    async def go() -> SearchResult:
        async with SearchClient(env.broker.bootstrap, f"{env.prefix}shoprank.search-requests", own) as client:
            return await client.search("demo", "chef knife", timeout_s=30)

    result = asyncio.run(go())
    assert result.error is None and result.items[0].product_id == "p9"
    assert asyncio.run(describe_topics(env.broker.bootstrap)).get(own) == TOPICS["search-results"].partitions


def test_gateway(env: Env) -> None:
    status, body = env.post(orjson.dumps({"tenant": "demo", "query": "chef knife", "page_size": 3}))
    assert status == 200 and body["items"][0]["product_id"] == "p9" and len(body["items"]) <= 3
    assert env.post(b"{not json")[0] == 400
    status, body = env.post(orjson.dumps({"tenant": "demo", "query": ""}))
    assert status == 422 and body["error"] == "empty_query"
    status, body = env.post(orjson.dumps({"tenant": "nobody", "query": "x"}))
    assert status == 404 and body["error"] == "unknown_tenant"
    status, body = env.post(orjson.dumps({"tenant": "demo", "query": "x" * 600}))
    assert status == 422 and body["error"] == "query_too_long"
    assert env.post(orjson.dumps({"tenant": "demo", "query": "x", "page_size": 0}))[0] == 422
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(env.worker.url + "/v1/search", timeout=10)
    assert err.value.code == 405
    spec = env.worker.get("/openapi.json")
    assert spec["openapi"].startswith("3.") and "/v1/search" in spec["paths"]
    assert "SearchRequest" in spec["components"]["schemas"]


def test_concurrent_gateway_searches_each_get_their_own_answer(env: Env) -> None:
    # Searches arriving together are answered in one batch: no answer may go to another request.
    from concurrent.futures import ThreadPoolExecutor

    expected = {"chef knife": "p9", "cast iron skillet": "p8", "hammer drill XJ-9000": "p5", "running socks": "p10"}
    queries = list(expected) * 6

    def post(query: str) -> tuple[str, int, dict[str, Any]]:
        status, body = env.post(orjson.dumps({"tenant": "demo", "query": query, "page_size": 3}))
        return query, status, body

    with ThreadPoolExecutor(len(queries)) as pool:
        answers = list(pool.map(post, queries))
    for query, status, body in answers:
        assert status == 200 and body["query"] == query, (query, body)
        assert body["items"][0]["product_id"] == expected[query], (query, body["items"])
    assert len({body["search_id"] for _, _, body in answers}) == len(queries)


def test_updates_deletes_order_and_idempotence(env: Env) -> None:
    before = wait_stats(env.worker)
    # price/stock only: no re-embedding, visible in results
    send_updates(env.broker, env.prefix, [product("p7", "Stainless steel frying pan 28 cm", "Cucina",
                                                  ["Kitchen", "Cookware"], 29.0, 12, ts=T0 + 10)])
    stats = wait_stats(env.worker, payload_only=before["payload_only"] + 1)
    assert stats["embedded"] == before["embedded"]
    assert next(i for i in env.search("frying pan").items if i.product_id == "p7").price == 29.0
    # a redelivered message and an older version change nothing
    send_updates(env.broker, env.prefix, [
        product("p7", "Stainless steel frying pan 28 cm", "Cucina", ["Kitchen", "Cookware"], 29.0, 12, ts=T0 + 10),
        product("p7", "Old title", "Cucina", ["Kitchen", "Cookware"], 99.0, 1, ts=T0 + 5),
    ])
    stats = wait_stats(env.worker, stale=before["stale"] + 2)
    assert stats["embedded"] == before["embedded"] and stats["payload_only"] == before["payload_only"] + 1
    assert next(i for i in env.search("frying pan").items if i.product_id == "p7").price == 29.0
    # a text change re-embeds
    send_updates(env.broker, env.prefix, [product("p8", "Cast iron skillet with pour spouts", "Cucina",
                                                  ["Kitchen", "Cookware"], 39.0, 7, ts=T0 + 10)])
    wait_stats(env.worker, embedded=before["embedded"] + 1)
    # delete, then a late upsert older than the delete: stays deleted
    delete = CatalogueUpdate(op="delete", tenant="demo", product_id="p6", updated_at=T0 + 20)
    send_updates(env.broker, env.prefix, [delete])
    wait_stats(env.worker, deleted=before["deleted"] + 1)
    send_updates(env.broker, env.prefix, [product("p6", "Claw hammer", "Forgeline", ["Tools", "Hand tools"],
                                                  19.5, 40, ts=T0 + 15)])
    wait_stats(env.worker, stale=before["stale"] + 3)
    assert "p6" not in ids(env.search("claw hammer"))


def test_bad_catalogue_records_are_dead_lettered(env: Env) -> None:
    before = wait_stats(env.worker)
    send(env.broker, f"{env.prefix}shoprank.catalogue", [
        ("demo:x", b"not json"),
        ("demo:x", orjson.dumps({"tenant": "demo", "product_id": "x", "updated_at": 1})),  # upsert without title
        ("nobody:x", orjson.dumps({"tenant": "nobody", "product_id": "x", "updated_at": 1, "title": "t"})),
        ("demo:x", orjson.dumps({"tenant": "demo", "product_id": "x", "updated_at": 1, "title": "t", "price": -1,
                                 "currency": "EUR"})),
    ])
    wait_stats(env.worker, rejected=before["rejected"] + 4)

    async def letters() -> list[DeadLetter]:
        return [decode(DeadLetter, v) async for _, _, _, v, _ in  # type: ignore[arg-type]
                read_topic(env.broker.bootstrap, f"{env.prefix}shoprank.dead-letters", idle_timeout_s=1)]

    reasons = [d.reason for d in asyncio.run(letters()) if d.agent == "catalogue-index"]
    assert reasons == ["invalid_json", "missing_field", "unknown_tenant", "invalid_value"]


def test_search_replies_do_not_wait_for_the_workers_lingering_producer(
        broker: EmbeddedBroker, model_dir: Path, tmp_path: Path) -> None:
    """The worker's producer waits up to SHOPRANK_KAFKA_PRODUCER_LINGER_MS to fill a batch (good for
    changelogs and events); replies have their own producer, so a long linger must not reach them."""
    linger_ms = 1000
    prefix = f"l{uuid.uuid4().hex[:8]}."
    asyncio.run(ensure_topics(broker.bootstrap, prefix))
    worker = WorkerProcess(
        broker.bootstrap, topic_prefix=prefix, app_id="search-linger", tenants="demo", data_dir=tmp_path / "data",
        log_path=tmp_path / "w.log",
        extra_env={"SHOPRANK_MODELS_DIR": str(model_dir.parent), "SHOPRANK_MODELS_EMBEDDER": model_dir.name,
                   "SHOPRANK_STORE_DIR": str(tmp_path / "index"),
                   "SHOPRANK_KAFKA_PRODUCER_LINGER_MS": str(linger_ms)},
    ).start()
    try:
        send_updates(broker, prefix, [product(*p) for p in PRODUCTS[:4]])
        wait_stats(worker, embedded=4)

        async def round_trips() -> list[float]:
            async with SearchClient(broker.bootstrap, f"{prefix}shoprank.search-requests",
                                    f"{prefix}shoprank.search-results") as client:
                await client.search("demo", "warm up", timeout_s=30)
                times = []
                for query in ("running shoes", "hiking boots", "power drill", "trail", "drill"):
                    started = time.perf_counter()
                    result = await client.search("demo", query, timeout_s=30)
                    times.append((time.perf_counter() - started) * 1000)
                    assert result.error is None and result.items
                return times

        times = asyncio.run(round_trips())
        # Through the lingering producer every reply would take at least linger_ms.
        assert sorted(times)[len(times) // 2] < 0.6 * linger_ms, times
    finally:
        worker.stop()
