"""More faults on the real broker (issue 6, item 5): broker restart, slow consumer, poison at a high
rate, an unavailable vector store. Each test bounds its own waits and ends by itself on failure."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from schemas import SearchResult, encode
from schemas.deadletter import MAX_KEPT_BYTES
from streams.broker import EmbeddedBroker
from streams.cli_lag import _one_shot
from streams.kafka import producer
from streams.lag import GroupReport, LagProbe, LagWindow
from streams.sample_events import BAD_INPUTS, SampleMessage, valid_events
from streams.samples.generator import generate_catalogue
from streams.search_client import SearchClient
from streams.supervise import WorkerProcess
from tests.test_broker import topic_configs
from tests.test_worker import dead_letters, expected_counts, publish

pytestmark = pytest.mark.integration


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 0.25,
             explain: Callable[[], Any] | None = None) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``, the last value and ``explain()``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every_s)
    why = f"; {explain()!r}" if explain else ""
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s (last: {last!r}{why})")


def pixel_stats(worker: WorkerProcess) -> dict[str, Any]:
    return worker.get("/v1/stats/pixel")  # type: ignore[no-any-return]


# -- 3. poison messages at a high rate ------------------------------------------------------------


def poison(n: int, seed: int) -> list[SampleMessage]:
    """``n`` malformed pixel messages of every kind we reject, oversize ones just over the limit."""
    rng = random.Random(seed)
    kinds = [(build, reason) for name, (build, reason) in BAD_INPUTS.items() if name != "1 MB payload"]
    out = []
    for i in range(n):
        ev = orjson.loads(valid_events(1, seed=seed * 100_000 + i)[0].value)
        ev["type"] = "page_view"
        key = f"demo:{ev['session_id']}".encode()
        if i % 7 == 0:  # oversize: a bit over the 64 KB limit (a few are much larger than what is kept)
            pad = 70_000 if i % 49 else MAX_KEPT_BYTES + 10_000
            out.append(SampleMessage(key, orjson.dumps({**ev, "page_url": "x" * pad}), "payload_too_large", "demo"))
            continue
        build, reason = kinds[rng.randrange(len(kinds))]
        out.append(SampleMessage(key, build(ev), reason, "demo"))
    return out


def _time_to_count(worker: WorkerProcess, broker: EmbeddedBroker, topic: str, msgs: list[SampleMessage],
                   want: dict[str, dict[str, int]], timeout_s: float) -> tuple[float, list[tuple[int, int]]]:
    start = time.monotonic()
    positions = publish(broker, topic, msgs)
    wait_for("good events counted", lambda: pixel_stats(worker)["counts"] == want, timeout_s, every_s=0.05)
    return time.monotonic() - start, positions


def test_poison_at_a_high_rate_is_dead_lettered_and_good_events_count_once(
        broker: EmbeddedBroker, prefix: str, make_worker) -> None:  # type: ignore[no-untyped-def]
    worker = make_worker(prefix)
    topic = f"{prefix}shoprank.pixel"
    clean = valid_events(2_000, seed=31, tenants=("demo", "acme"))
    good = valid_events(2_000, seed=32, tenants=("demo", "acme"))
    bad = poison(2_000, seed=33)
    mixed = [m for pair in zip(good, bad, strict=True) for m in pair]  # one bad message after every good one

    clean_s, _ = _time_to_count(worker, broker, topic, clean, expected_counts(clean), 60)
    mixed_s, positions = _time_to_count(worker, broker, topic, mixed, expected_counts(clean + good), 60)
    time.sleep(2.0)  # anything counted twice would show up now
    stats = pixel_stats(worker)
    assert stats["counts"] == expected_counts(clean + good)
    assert stats["processed"] == {"valid": len(clean) + len(good), "rejected": len(bad)}

    letters = wait_for("every bad message dead-lettered",
                       lambda: (d := dead_letters(broker, prefix)) and len(d) >= len(bad) and d, 30, every_s=1.0)
    assert len(letters) == len(bad)
    by_origin = {(d.source_partition, d.source_offset): d for d in letters}
    sent = dict(zip(((p, o) for p, o in positions), mixed, strict=True))
    assert {pos for pos, m in sent.items() if m.expect != "valid"} == set(by_origin)
    for pos, letter in by_origin.items():
        msg = sent[pos]
        assert letter.reason == msg.expect, (letter.reason, letter.detail, msg.value[:80])
        assert letter.detail and letter.source_topic == topic and letter.agent == "pixel-validate"
        assert letter.key == msg.key
        assert letter.value_size == len(msg.value)
        assert letter.value_sha256 == hashlib.sha256(msg.value).hexdigest()
        assert letter.value == msg.value[:MAX_KEPT_BYTES]
        assert letter.value_truncated == (len(msg.value) > MAX_KEPT_BYTES)
    assert sum(stats["dead_letters"].values()) == len(bad)
    print(f"\ngood-event throughput: {len(clean) / clean_s:,.0f}/s clean ({clean_s:.1f} s), "
          f"{len(good) / mixed_s:,.0f}/s with one poison message per good one ({mixed_s:.1f} s, "
          f"{len(mixed) / mixed_s:,.0f} messages/s); publish time included")


# -- 2. slow consumer: lag rises, Burrow's status says so, then it drains ----------------------------


def _catalogue_topic(prefix: str) -> str:
    return f"{prefix}shoprank.catalogue"


def _lag_reports(bootstrap: str, group: str, samples: int = 3, interval: float = 0.5) -> GroupReport:
    """What ``shoprank lag --json --group G --samples N`` computes (the same function)."""
    (report,) = asyncio.run(_one_shot(bootstrap, [group], [group], samples, interval, 0))
    return report


def _topic_lag(report: GroupReport, topic: str) -> int:
    return sum(p.lag for p in report.partitions if p.topic == topic)


def test_slow_consumer_lag_rises_is_reported_then_drains(broker: EmbeddedBroker, prefix: str,
                                                         make_worker) -> None:  # type: ignore[no-untyped-def]
    app_id = "slow"
    group = f"{prefix}{app_id}"
    topic = _catalogue_topic(prefix)
    worker = make_worker(prefix, app_id=app_id)
    # Embedding runs at tens of products a second on a busy 2-core machine: a few hundred make a backlog.
    products = generate_catalogue(420, seed=41)
    first, products = products[:20], products[20:]

    async def send(updates: list[Any]) -> None:
        async with producer(broker.bootstrap, linger_ms=5) as prod:
            for u in updates:
                await prod.send(topic, encode(u), key=f"{u.tenant}:{u.product_id}".encode())

    # The group needs committed offsets before Burrow's rules can judge it (NOTFOUND until then).
    asyncio.run(send(first))
    wait_for("first products committed", lambda: sum(
        p.committed for p in _lag_reports(broker.bootstrap, group, samples=1).partitions if p.topic == topic
    ) == len(first), 60, every_s=1.0)

    async def burst() -> list[GroupReport]:
        """Publish faster than the catalogue agent embeds, judging the group over a sliding window meanwhile."""
        window = LagWindow(intervals=4, allowed_lag=0, minimum_complete=1.0)
        reports: list[GroupReport] = []
        async with LagProbe(broker.bootstrap, [group]) as probe, producer(broker.bootstrap, linger_ms=5) as prod:
            for start in range(0, len(products), 50):
                for u in products[start:start + 50]:
                    await prod.send(topic, encode(u), key=f"{u.tenant}:{u.product_id}".encode())
                await prod.flush()
                for snap in await probe.snapshot([group]):
                    window.observe(snap)
                reports.append(window.report(group))
                await asyncio.sleep(0.3)
        return reports

    during = asyncio.run(burst())
    lagging = [r for r in during if r.status in ("WARN", "ERR") and _topic_lag(r, topic) > 0]
    assert lagging, [(r.status, r.worst, _topic_lag(r, topic)) for r in during]
    peak = max(_topic_lag(r, topic) for r in during)

    seen: list[tuple[str, int]] = []

    def drained() -> GroupReport | None:
        r = _lag_reports(broker.bootstrap, group)
        seen.append((r.status, _topic_lag(r, topic)))
        return r if _topic_lag(r, topic) == 0 and r.status == "OK" else None

    try:
        final = wait_for("lag drained to 0 with status OK", drained, 80, every_s=1.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; (status, lag) seen: {seen}; {worker.get('/v1/stats/catalogue')}") from None
    assert sum(p.committed for p in final.partitions if p.topic == topic) == len(first) + len(products)
    assert worker.get("/v1/stats/catalogue")["embedded"] == len(first) + len(products)
    print(f"\nslow consumer: peak lag {peak}, statuses during the burst "
          f"{sorted({f'{r.status}/{r.worst}' for r in during})}, drained to {final.status}")


# -- 4. the vector store is unavailable: retry with back-off, commit nothing until it is written ----


def _readyz(worker: WorkerProcess) -> tuple[int, dict[str, Any]]:
    from streams.supervise import http_json

    return http_json(worker.url + "/readyz")  # type: ignore[return-value]


def test_store_unavailable_is_retried_and_every_product_is_indexed_once(
        broker: EmbeddedBroker, prefix: str, make_worker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from models.store.edge import EdgeStore

    # A real failure, not an injected one: the store's volume is missing and a plain file sits where
    # its directory should be (chmod would not do: the tests may run as root).
    volume = tmp_path / "volume"
    volume.write_bytes(b"not a directory")
    store_dir = volume / "index"
    app_id = "store-down"
    group = f"{prefix}{app_id}"
    topic = _catalogue_topic(prefix)
    worker = make_worker(prefix, app_id=app_id, extra_env={"SHOPRANK_STORE_DIR": str(store_dir)})
    products = generate_catalogue(30, seed=51)
    publish(broker, topic, [SampleMessage(f"{u.tenant}:{u.product_id}".encode(), encode(u), "valid")
                            for u in products])

    failing = wait_for("the catalogue agent retrying", lambda: (
        s := worker.get("/v1/stats/catalogue"))["store_retries"] >= 3 and s, 30)
    assert "index" in failing["store_error"] and failing["embedded"] == 0 and not failing["dead_letters"]
    status, ready = _readyz(worker)
    assert status == 503 and ready["failed"] == ["store_writable"], ready
    time.sleep(3.5)  # past Faust's commit interval (2.8 s): nothing of the batch may be committed
    report = _lag_reports(broker.bootstrap, group, samples=1)
    assert sum(p.committed for p in report.partitions if p.topic == topic) == 0, report

    volume.unlink()  # the volume is back
    volume.mkdir()
    wait_for("every product indexed", lambda: worker.get("/v1/stats/catalogue")["embedded"] == len(products), 60)
    wait_for("ready again", lambda: _readyz(worker)[0] == 200, 30)
    stats = worker.get("/v1/stats/catalogue")
    assert stats["embedded"] == len(products) and stats["store_error"] is None and not stats["dead_letters"]
    wait_for("offsets committed", lambda: sum(
        p.committed for p in _lag_reports(broker.bootstrap, group, samples=1).partitions if p.topic == topic
    ) == len(products), 30, every_s=1.0)
    print(f"\nstore down: {stats['store_retries']} retries, then {stats['embedded']} products indexed once")

    assert worker.stop() == 0
    store = EdgeStore(store_dir)  # the worker closed its shard: open it as the next one would
    try:
        ids: list[str] = []
        offset = None
        while True:
            page, offset = store.scroll("demo", offset=offset)
            ids += [p["product_id"] for p in page]
            if offset is None:
                break
        assert sorted(ids) == sorted(u.product_id for u in products)
        assert store.count("demo") == len(products)
    finally:
        store.close()


# -- 1. the broker restarts and loses its log (memory only) ----------------------------------------


def _send_all(bootstrap: str, topic: str, msgs: list[tuple[bytes | None, bytes]]) -> None:
    async def go() -> None:
        async with producer(bootstrap, linger_ms=5, max_request_size=2_000_000) as prod:
            for key, value in msgs:
                await prod.send(topic, value, key=key)

    asyncio.run(go())


def _learning(worker: WorkerProcess, tenant: str) -> dict[str, float]:
    return worker.get(f"/v1/analytics/{tenant}")["buckets"].get("learning", {})  # type: ignore[no-any-return]


def _sum_totals(*parts: dict[str, Any]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for part in parts:
        for tenant, counts in part.items():
            for k, v in counts.items():
                out.setdefault(tenant, {}).setdefault(k, 0.0)
                out[tenant][k] += float(v)
    return out


class _Restartable:
    """A worker on a broker of its own, which the test stops and starts again on the same port."""

    def __init__(self, tmp_path: Any, model_dir: Any, app_id: str, store: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        import uuid

        from streams.kafka import ensure_topics
        from streams.supervise import free_port

        self.tmp_path, self.port, self.app_id = tmp_path, free_port(), app_id
        self.starts = 0
        self.last_ready: dict[str, Any] = {}
        self.topics_before: dict[str, int] = {}
        self.broker: EmbeddedBroker | None = None
        self.start_broker()
        self.prefix = f"t{uuid.uuid4().hex[:10]}."
        self.tenants = ("demo", "acme")
        asyncio.run(ensure_topics(self.bootstrap, self.prefix))
        self.worker = WorkerProcess(
            self.bootstrap, app_id=app_id, topic_prefix=self.prefix, tenants=",".join(self.tenants),
            data_dir=tmp_path / "data", log_path=tmp_path / "worker.log",
            extra_env={"SHOPRANK_MODELS_DIR": str(model_dir.parent), "SHOPRANK_MODELS_EMBEDDER": model_dir.name,
                       "SHOPRANK_STORE_DIR": str(tmp_path / "index"), "SHOPRANK_RANKER_CHECKPOINT_INTERVAL_S": "1",
                       "SHOPRANK_KAFKA_SESSION_TIMEOUT_S": "4", "SHOPRANK_KAFKA_HEARTBEAT_INTERVAL_S": "0.5",
                       **({"SHOPRANK_WORKER_STORE": store} if store else {}), **(env or {})})

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def topic(self, name: str) -> str:
        return f"{self.prefix}shoprank.{name}"

    def start_broker(self) -> None:
        self.starts += 1
        self.broker = EmbeddedBroker("127.0.0.1", self.port, log_path=self.tmp_path / f"tansu-{self.starts}.log")
        self.broker.start()

    def restart_broker(self) -> None:
        """Stop the broker (its log is in memory: gone) and start an empty one on the same port."""
        from streams.kafka import describe_topics
        from streams.supervise import http_json

        assert self.broker is not None
        # Every topic of this worker (ours and Faust's changelogs), to be there again after the restart.
        self.topics_before = {n: p for n, p in asyncio.run(describe_topics(self.bootstrap)).items()
                              if n.startswith(self.prefix)}
        self.broker.stop()
        status, body = http_json(self.worker.url + "/readyz")
        assert status == 503 and "broker_reachable" in body["failed"], body
        self.start_broker()

    def ready_with_topics(self) -> bool:
        """The worker answers ready and has created its topics on the (new) broker."""
        from schemas.topics import TOPICS
        from streams.kafka import describe_topics
        from streams.supervise import http_json

        names = asyncio.run(describe_topics(self.bootstrap))
        want = {**self.topics_before, **{s.full_name(self.prefix): s.partitions for s in TOPICS.values()}}
        # A topic the broker created by itself (its default partition count) counts as missing.
        missing = sorted(f"{n} ({names.get(n)} of {p} partitions)" for n, p in want.items() if names.get(n) != p)
        status, body = http_json(self.worker.url + "/readyz")
        # Kept for the failure message: which topics were missing and which checks failed.
        if not missing:  # created from our specs, not by the broker's defaults when a client named them
            rules = topic_configs(self.bootstrap, self.topic("rules"))
            if rules.get("cleanup.policy") != "compact":
                missing.append(f"{self.topic('rules')} (not compacted: {rules})")
        self.last_ready = {"missing_topics": missing, "readyz": status, "failed": body.get("failed") if isinstance(body, dict) else body}
        return not missing and status == 200

    def send_sessions(self, traffic: Any) -> None:
        for name in ("searches", "pixel"):
            _send_all(self.bootstrap, self.topic(name), [(k, v) for t, k, v in traffic.messages if t == name])

    def send_products(self, updates: list[Any]) -> None:
        _send_all(self.bootstrap, self.topic("catalogue"),
                  [(f"{u.tenant}:{u.product_id}".encode(), encode(u)) for u in updates])

    def start_with_shop(self, seed: int) -> tuple[list[Any], Any]:
        """Start the worker, index the test shop and count 200 sessions; (products, session traffic)."""
        from streams.sample_sessions import session_traffic
        from tests.test_search import PRODUCTS, product

        self.worker.start()
        shop = [product(*p) for p in PRODUCTS]
        self.send_products(shop)
        traffic = session_traffic(200, tenants=self.tenants, seed=seed)
        self.send_sessions(traffic)
        wait_for("catalogue indexed", lambda: self.worker.get("/v1/stats/catalogue")["embedded"] == len(shop), 60)
        wait_for("sessions counted", lambda: self.learned(_sum_totals(traffic.totals)), 60)
        return shop, traffic

    def learned(self, want: dict[str, dict[str, float]]) -> bool:
        return all({k: float(_learning(self.worker, t).get(k, 0)) for k in want[t]} == want[t] for t in self.tenants)

    def stop(self) -> None:
        self.worker.stop()
        if self.broker is not None:
            self.broker.stop()


async def _search_over_kafka(bootstrap: str, prefix: str, query: str) -> SearchResult:
    async with SearchClient(bootstrap, f"{prefix}shoprank.search-requests", f"{prefix}shoprank.search-results") as client:
        return await client.search("demo", query, timeout_s=30)


def test_broker_restart_worker_reconnects_keeps_disk_state_and_counts_new_events(
        tmp_path, model_dir) -> None:  # type: ignore[no-untyped-def]
    from models.store.edge import EdgeStore
    from streams.sample_sessions import session_traffic
    from streams.supervise import http_post_json

    env = _Restartable(tmp_path, model_dir, "restarted")
    worker = env.worker
    try:
        shop, before = env.start_with_shop(seed=61)
        rankers = tmp_path / "data" / "rankers" / env.app_id
        checkpoints = wait_for("ranker checkpoints on disk", lambda: sorted(rankers.glob("*")), 30)
        time.sleep(3.5)  # past Faust's commit interval: the broker holds this worker's offsets

        env.restart_broker()
        wait_for("worker ready on the new broker, its topics created again", env.ready_with_topics, 60, every_s=0.5,
                 explain=lambda: env.last_ready)
        # Everything had been processed: the lost logs are reported, with nothing lost from them.
        report = wait_for("the lost logs reported", lambda: (r := worker.get("/v1/stats/broker"))["log_resets"] and r,
                          30)
        assert {r["topic"] for r in report["log_resets"]} >= {env.topic("pixel"), env.topic("interactions")}, report
        assert sum(report["lost_records"].values()) == 0, report

        # Keep publishing on the new broker: the new log's offsets start at 0 again, and still count.
        more = generate_catalogue(10, seed=63)
        env.send_products(more)
        after = session_traffic(100, tenants=env.tenants, seed=64)
        env.send_sessions(after)
        want = _sum_totals(before.totals, after.totals)
        wait_for("sessions after the restart learned too", lambda: env.learned(want), 60,
                 explain=lambda: {"want": want, "got": {t: _learning(worker, t) for t in env.tenants}})
        want_pixel = _sum_totals(before.pixel_counts, after.pixel_counts)
        got_pixel = worker.get("/v1/stats/pixel")["counts"]
        assert {t: {k: float(v) for k, v in got_pixel[t].items()} for t in env.tenants} == want_pixel
        stats = wait_for("new products indexed", lambda: (
            s := worker.get("/v1/stats/catalogue"))["embedded"] == len(shop) + len(more) and s, 60)
        status, result = http_post_json(worker.url + "/v1/search", {"tenant": "demo", "query": "trail running shoes"})
        assert status == 200 and "p1" in [i["product_id"] for i in result["items"]], result
        # Search over Kafka too: the search request consumer (its own group) reconnected and joined again.
        over_kafka = asyncio.run(_search_over_kafka(env.bootstrap, env.prefix, "trail running shoes"))
        assert over_kafka.error is None and "p1" in [i.product_id for i in over_kafka.items], over_kafka
    finally:
        env.stop()

    # State on disk is intact: the index holds every product indexed, the ranker checkpoints are there.
    store = EdgeStore(tmp_path / "index")
    try:
        assert store.count("demo") == stats["embedded"]
        assert store.payloads("demo", ["p1"])["p1"]["title"] == "Trail running shoes"
    finally:
        store.close()
    assert all(p.exists() and p.stat().st_size > 0 for p in checkpoints)


def test_a_topic_deleted_under_the_worker_is_read_again_once_it_is_back(
        tmp_path, model_dir) -> None:  # type: ignore[no-untyped-def]
    """A topic deleted under a running worker (or lost with the broker's log) leaves the stream consumer
    reading positions of a log that is gone, then, after its next group join, without the topic at all
    (Faust's assignor skips a topic the metadata lacks). It must join again each time (streams.group_watch):
    aiokafka alone notices a topic created again only at its next metadata refresh, 5 minutes later,
    and the embedded broker answers a lone member's new join with the assignment it made before (CI,
    2026-12-06: a worker held no partition after a broker restart and /readyz stayed at 503)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from streams.sample_sessions import session_traffic

    # The topic guard waits 20 s: the worker joins while the pixel topic is missing, then once it is back.
    env = _Restartable(tmp_path, model_dir, "deleted", env={"SHOPRANK_KAFKA_TOPIC_CHECK_S": "20"})
    worker = env.worker
    pixel = env.topic("pixel")
    try:
        _, before = env.start_with_shop(seed=81)

        async def delete_pixel() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=env.bootstrap)
            await admin.start()
            try:
                await admin.delete_topics([pixel])
            finally:
                await admin.close()

        asyncio.run(delete_pixel())
        wait_for("a join without the pixel topic", lambda: pixel in worker.get("/v1/stats/broker")["group"][
            "skipped_topics"], 30)
        wait_for("the pixel topic created again", env.ready_with_topics, 60, every_s=0.5,
                 explain=lambda: env.last_ready)
        group = wait_for("the worker joined its group again, with the pixel topic", lambda: (
            g := worker.get("/v1/stats/broker")["group"])["assignment"].get(pixel) == [0, 1, 2, 3] and g, 30)
        assert group["rejoins"] >= 1 and "past the end" in group["reasons"][0], group
        if group["rejoins"] >= 2:
            assert pixel in group["reasons"][-1] and "missing at its last group join" in group["reasons"][-1], group
        # else aiokafka rejoined by itself: its fetcher asked for metadata while the topic was back, before the
        # next check here (CI, 2026-12-07: pixel assigned 0.2 s after the topic guard created it). Either way
        # the worker holds the topic again, and its new log is read below.
        # The loss was reported: nothing had been left unprocessed in the deleted log.
        report = worker.get("/v1/stats/broker")
        assert {r["topic"] for r in report["log_resets"]} >= {pixel} and report["lost_records"][pixel] == 0, report

        after = session_traffic(100, tenants=env.tenants, seed=82)
        env.send_sessions(after)
        want_pixel = _sum_totals(before.pixel_counts, after.pixel_counts)
        wait_for("pixel events on the new topic counted", lambda: {
            t: {k: float(v) for k, v in worker.get("/v1/stats/pixel")["counts"][t].items()} for t in env.tenants
        } == want_pixel, 60)
        wait_for("their sessions learned", lambda: env.learned(_sum_totals(before.totals, after.totals)), 60)
    finally:
        env.stop()


def test_broker_restart_while_the_worker_is_down_keeps_its_aggregates_on_disk(
        tmp_path, model_dir) -> None:  # type: ignore[no-untyped-def]
    """With rocksdb:// the tables live on local disk (streams.table_store): a worker stopped, then started on an
    empty broker, still has its totals and counts, and counts the new log from its start (its changelogs
    on the new broker end before the offsets its tables had reached: streams.faust_compat)."""
    from streams.sample_sessions import session_traffic
    from streams.supervise import http_post_json

    env = _Restartable(tmp_path, model_dir, "away", store="rocksdb://")
    worker = env.worker
    try:
        _, before = env.start_with_shop(seed=71)
        worker.stop()

        assert env.broker is not None
        env.broker.stop()  # its log is in memory: every topic, changelog and committed offset is gone
        env.start_broker()
        worker.start()
        wait_for("worker ready on the new broker, its topics created again", env.ready_with_topics, 90, every_s=0.5,
                 explain=lambda: env.last_ready)
        # Nothing was replayed (the new log is empty): what the worker reports comes from its disk.
        assert env.learned(_sum_totals(before.totals)), {t: _learning(worker, t) for t in env.tenants}
        got_pixel = worker.get("/v1/stats/pixel")["counts"]
        assert {t: {k: float(v) for k, v in got_pixel[t].items()} for t in env.tenants} == _sum_totals(
            before.pixel_counts)
        report = worker.get("/v1/stats/broker")
        assert any("learn-state" in r["topic"] for r in report["log_resets"]), report

        # The new log's offsets start at 0 again: its sessions count in full, on top of the old ones.
        after = session_traffic(100, tenants=env.tenants, seed=72)
        env.send_sessions(after)
        wait_for("sessions on the new log counted on top", lambda: env.learned(_sum_totals(before.totals, after.totals)),
                 60)
        time.sleep(2.0)  # anything counted twice would show up now
        assert env.learned(_sum_totals(before.totals, after.totals))
        got_pixel = worker.get("/v1/stats/pixel")["counts"]
        assert {t: {k: float(v) for k, v in got_pixel[t].items()} for t in env.tenants} == _sum_totals(
            before.pixel_counts, after.pixel_counts)
        status, result = http_post_json(worker.url + "/v1/search", {"tenant": "demo", "query": "trail running shoes"})
        assert status == 200 and "p1" in [i["product_id"] for i in result["items"]], result  # the index, on disk
    finally:
        env.stop()


def test_broker_restart_with_work_in_flight_reports_what_the_log_lost(
        tmp_path, model_dir) -> None:  # type: ignore[no-untyped-def]
    from tests.test_search import PRODUCTS, product

    env = _Restartable(tmp_path, model_dir, "in-flight")
    worker = env.worker
    catalogue = env.topic("catalogue")
    try:
        worker.start()
        shop = [product(*p) for p in PRODUCTS]
        env.send_products(shop)
        wait_for("catalogue indexed", lambda: worker.get("/v1/stats/catalogue")["embedded"] == len(shop), 60)
        # A burst the catalogue agent (embedding) needs a while for; the broker goes away once the worker
        # has seen the burst's end, before it has indexed it all.
        burst = generate_catalogue(300, seed=62)
        env.send_products(burst)
        published = len(shop) + len(burst)
        seen = wait_for("the worker saw the burst's end", lambda: (
            s := worker.get("/v1/stats/broker")["topics"].get(catalogue, {})).get("end_seen") == published and s, 30)
        assert seen["processed"] < published, "the burst was indexed before the broker stopped: nothing in flight"
        env.restart_broker()
        # This failed now and then until 2026-12-02 (xfailed): Faust's table recovery waited for good on
        # changelog records Tansu listed but did not serve (writes it had accepted to a topic it had
        # lost: streams.kafka.end_offsets), and old-log offsets committed to the new broker hid part of
        # the loss (streams.faust_compat._within_served_log).
        _loss_reported_and_books_balance(worker, catalogue, published, len(burst))
        wait_for("worker ready on the new broker", env.ready_with_topics, 90, every_s=0.5,
                 explain=lambda: env.last_ready)
        indexed = worker.get("/v1/stats/catalogue")["embedded"]
        more = generate_catalogue(5, seed=65)
        env.send_products(more)
        wait_for("new products indexed", lambda: worker.get("/v1/stats/catalogue")["embedded"] == indexed + len(more), 60)
    finally:
        env.stop()


def _loss_reported_and_books_balance(worker, catalogue: str, published: int, burst: int) -> None:  # type: ignore[no-untyped-def]
    """Once the broker is back: the loss is reported and published = handled + reported lost."""
    try:
        wait_for("the lost log reported", lambda: any(r["topic"] == catalogue for r in
                                                      worker.get("/v1/stats/broker")["log_resets"]), 60)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {worker.get('/v1/stats/broker')}") from None

    books: list[tuple[int, int]] = []

    def balanced() -> tuple[int, int] | None:
        cat = worker.get("/v1/stats/catalogue")
        # Every record the agent handled: indexed, payload-only, stale (a redelivered or older version).
        embedded = cat["embedded"] + cat["payload_only"] + cat["stale"] + cat["rejected"]
        lost = worker.get("/v1/stats/broker")["lost_records"].get(catalogue, 0)
        books.append((embedded, lost))
        return (embedded, lost) if embedded + lost == published else None

    try:
        embedded, lost = wait_for("every product indexed or reported lost", balanced, 60, every_s=1.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: published {published}, (indexed, lost) seen {books[-5:]}, "
                             f"{worker.get('/v1/stats/broker')}") from None
    # Records the worker had fetched before the broker went away are still processed (not lost);
    # what it had not fetched is gone and reported. Either may be zero, the books must balance.
    assert 0 <= lost < burst
    print(f"\nbroker restart with work in flight: {published} products published, {embedded} handled, "
          f"{lost} lost with the log and reported")
