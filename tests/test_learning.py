"""The learning loop on the real broker, model and store: search → pixel events → attributed interactions."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas import AttributedInteraction, LoggedItem, PixelEvent, SearchLog, SearchResult, decode, encode
from streams.broker import EmbeddedBroker
from streams.kafka import ensure_topics, read_topic
from streams.search_client import SearchClient
from streams.supervise import WorkerProcess
from tests.test_search import PRODUCTS, product, send, send_updates, wait_stats

pytestmark = pytest.mark.integration


class Loop:
    def __init__(self, broker: EmbeddedBroker, prefix: str, worker: WorkerProcess) -> None:
        self.broker, self.prefix, self.worker = broker, prefix, worker

    def search(self, query: str, session: str, tenant: str = "demo") -> SearchResult:
        async def go() -> SearchResult:
            async with SearchClient(self.broker.bootstrap, f"{self.prefix}shoprank.search-requests",
                                    f"{self.prefix}shoprank.search-results") as client:
                return await client.search(tenant, query, timeout_s=30, session_id=session, user_id="u-" + session)

        return asyncio.run(go())

    def events(self, *events: PixelEvent) -> None:
        send(self.broker, f"{self.prefix}shoprank.pixel", [(f"{e.tenant}:{e.session_id}", encode(e)) for e in events])

    def interactions(self, want: int, timeout_s: float = 30) -> list[AttributedInteraction]:
        """Every interaction on the topic once at least ``want`` have arrived."""
        deadline = time.monotonic() + timeout_s
        got: list[AttributedInteraction] = []
        while time.monotonic() < deadline:
            async def read() -> list[AttributedInteraction]:
                return [decode(AttributedInteraction, v) async for _, _, _, v, _ in
                        read_topic(self.broker.bootstrap, f"{self.prefix}shoprank.interactions", idle_timeout_s=0.5)
                        if v is not None]

            got = asyncio.run(read())
            if len(got) >= want:
                return got
            time.sleep(0.3)
        raise AssertionError(f"only {len(got)} of {want} interactions arrived: {got}")

    def stats(self) -> dict[str, Any]:
        return self.worker.get("/v1/stats/pixel")["attribution"]


def ev(etype: str, session: str, tenant: str = "demo", **kw: Any) -> PixelEvent:
    now = int(time.time() * 1000)
    if etype == "purchase":
        kw = {"value": 89.0, "price": 89.0, "quantity": 1, "currency": "EUR", **kw}
    return PixelEvent(event_id=uuid.uuid4().hex, tenant=tenant, type=etype, user_id="u-" + session,  # type: ignore[arg-type]
                      session_id=session, client_ts=now, **kw)


@pytest.fixture(scope="module")
def loop(broker: EmbeddedBroker, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    prefix = f"l{uuid.uuid4().hex[:8]}."
    asyncio.run(ensure_topics(broker.bootstrap, prefix))
    tmp = tmp_path_factory.mktemp("learning")
    worker = WorkerProcess(
        broker.bootstrap, topic_prefix=prefix, app_id="learning", tenants="demo,acme", data_dir=tmp / "data",
        log_path=tmp / "w.log",
        extra_env={"SHOPRANK_MODELS_DIR": str(model_dir.parent), "SHOPRANK_MODELS_EMBEDDER": model_dir.name,
                   "SHOPRANK_STORE_DIR": str(tmp / "index"), "SHOPRANK_ATTRIBUTION_LATE_GRACE_S": "2",
                   "SHOPRANK_ATTRIBUTION_SWEEP_INTERVAL_S": "0.5", "SHOPRANK_RANKER_WARMUP": "30",
                   "SHOPRANK_RANKER_CONTROL_SHARE": "0", "SHOPRANK_RANKER_EXPLORE_SLOTS": "",
                   "SHOPRANK_RANKER_CHECKPOINT_INTERVAL_S": "0.5"},
    ).start()
    try:
        send_updates(broker, prefix, [product(*p) for p in PRODUCTS])
        send_updates(broker, prefix, [product(*p, tenant="acme") for p in PRODUCTS])
        wait_stats(worker, embedded=2 * len(PRODUCTS))
        yield Loop(broker, prefix, worker)
    finally:
        worker.stop()


def test_click_and_purchase_are_attributed_to_the_search_that_showed_the_product(loop: Loop) -> None:
    result = loop.search("running shoes", "sess-a")
    assert result.search_id and result.items
    shown = [i.product_id for i in result.items[:5]]
    clicked = result.items[1]
    click = ev("click", "sess-a", search_id=result.search_id, product_id=clicked.product_id, position=1)
    loop.events(
        ev("impression", "sess-a", search_id=result.search_id, items=shown),
        click,
        click,  # a retried send of the same event: counted once
        ev("purchase", "sess-a", product_id=clicked.product_id),  # no search_id: found through the click
    )
    got = [i for i in loop.interactions(3) if i.session_id == "sess-a"]
    by_outcome = {o: [i for i in got if i.outcome == o] for o in ("impression", "click", "purchase")}
    (page,) = by_outcome["impression"]
    assert [(i.product_id, i.position) for i in page.items or ()] == list(zip(shown, range(5), strict=True))
    assert len(by_outcome["click"]) == 1 and by_outcome["click"][0].search_id == result.search_id
    (buy,) = by_outcome["purchase"]
    assert (buy.search_id, buy.product_id, buy.attributed_by, buy.value) == (
        result.search_id, clicked.product_id, "click_chain", 89.0)
    assert buy.query == "running shoes" and buy.features.get("fused", 0) > 0  # logged at serve time
    assert buy.user_hash and "sess-a" not in buy.user_hash


def test_an_event_naming_an_unknown_search_is_reported_not_lost(loop: Loop) -> None:
    before = loop.stats()["unattributed"].get("unknown_search", 0)
    loop.events(ev("click", "sess-b", search_id="no-such-search", product_id="p1"))
    deadline = time.monotonic() + 30
    while loop.stats()["unattributed"].get("unknown_search", 0) <= before:
        assert time.monotonic() < deadline, loop.stats()
        time.sleep(0.3)


def test_a_click_that_overtakes_its_search_log_still_finds_it(loop: Loop) -> None:
    sid = f"late-{uuid.uuid4().hex[:6]}"
    loop.events(ev("click", "sess-c", search_id=sid, product_id="p4", position=0))
    time.sleep(0.5)
    log = SearchLog(search_id=sid, tenant="demo", session_id="sess-c", query="drill",
                    items=[LoggedItem(product_id="p4", position=0, features={"dense": 0.7})],
                    answered_at=int(time.time() * 1000))
    send(loop.broker, f"{loop.prefix}shoprank.searches", [("demo:sess-c", encode(log))])
    got = [i for i in loop.interactions(1) if i.search_id == sid]
    deadline = time.monotonic() + 30
    while not got:
        assert time.monotonic() < deadline
        got = [i for i in loop.interactions(1) if i.search_id == sid]
    assert [(i.outcome, i.product_id, i.query, i.attributed_by) for i in got] == [("click", "p4", "drill", "search_id")]


def test_analytics_count_the_attributed_outcomes_once(loop: Loop) -> None:
    started_ms = time.time() * 1000
    result = loop.search("cast iron skillet", "sess-d", tenant="acme")
    shown = [i.product_id for i in result.items[:3]]
    click = ev("click", "sess-d", tenant="acme", search_id=result.search_id, product_id=shown[0], position=0)
    buy = ev("purchase", "sess-d", tenant="acme", search_id=result.search_id, product_id=shown[0], value=39.0)
    loop.events(ev("impression", "sess-d", tenant="acme", search_id=result.search_id, items=shown), click, buy, buy)
    deadline = time.monotonic() + 30
    while True:
        summary = loop.worker.get("/v1/analytics/acme")
        learning = summary["buckets"].get("learning", {})
        if learning.get("purchases", 0) >= 1:
            break
        assert time.monotonic() < deadline, summary
        time.sleep(0.3)
    time.sleep(1.0)  # a double count would land now
    learning = loop.worker.get("/v1/analytics/acme")["buckets"]["learning"]
    assert (learning["searches"], learning["clicks"], learning["purchases"], learning["converted_searches"]) == (1, 1, 1, 1)
    assert learning["revenue"] == 39.0 and learning["conversion"] == 1.0
    assert summary["query_coverage"] is not None
    assert loop.worker.get("/v1/analytics/demo")["buckets"].get("learning", {}).get("revenue", 0) != 39.0
    learned = loop.worker.get("/v1/stats/learning")  # impression, click, purchase at least; when, on the worker's clock
    assert learned["learned"] >= 3 and learned["rejected"] == 0
    assert started_ms <= learned["last_learned_ms"] <= time.time() * 1000


def _ids(result: SearchResult) -> list[str]:
    return [i.product_id for i in result.items]


def test_purchases_teach_the_ranker_and_the_ranking_changes_for_that_tenant_only(loop: Loop) -> None:
    query = "shoes"
    before = loop.search(query, "warm-0")
    acme_before = _ids(loop.search(query, "acme-0", tenant="acme"))
    favourite = _ids(before)[-1]  # the product shoppers want is last in the hybrid order
    for k in range(40):
        session = f"shopper-{k}"
        result = loop.search(query, session)
        shown = _ids(result)
        pos = shown.index(favourite)
        other = shown[0] if shown[0] != favourite else shown[1]
        loop.events(
            ev("impression", session, search_id=result.search_id, items=shown),
            ev("click", session, search_id=result.search_id, product_id=other, position=shown.index(other)),
            ev("click", session, search_id=result.search_id, product_id=favourite, position=pos),
            ev("purchase", session, search_id=result.search_id, product_id=favourite),
        )
    deadline = time.monotonic() + 60
    while True:
        after = loop.search(query, "check")
        if _ids(after).index(favourite) < _ids(before).index(favourite) - 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert _ids(after).index(favourite) < _ids(before).index(favourite) - 1, (_ids(before), _ids(after))
    assert after.model_versions["ranker"] != before.model_versions["ranker"]
    assert after.items[0].scores.get("ranker") is not None
    assert _ids(loop.search(query, "acme-1", tenant="acme")) == acme_before  # the other shop learned nothing

    # The ranker's state survives a restart: same version, same improved order.
    time.sleep(1.5)  # a checkpoint interval
    learned = loop.search(query, "check-2")
    loop.worker.stop()
    loop.worker.start()
    again = loop.search(query, "check-3")
    assert again.model_versions["ranker"] == learned.model_versions["ranker"]
    assert _ids(again).index(favourite) == _ids(learned).index(favourite)
