"""Sharing the learned ranker between workers: snapshots that rank exactly as the model that learned them,
and a hub that publishes only what it learned and adopts only what is newer."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from models.ranker import Engagement, OnlineRanker, RankerConfig
from schemas import DecodeError, RankerSnapshot, decode, encode
from streams.broker import EmbeddedBroker
from streams.packed import DictRecords
from streams.ranking import RankerHub
from streams.settings import Settings, WorkerSettings
from streams.supervise import WorkerProcess, http_json
from tests.test_faults_more import wait_for
from tests.test_online_ranker import NOW, _hits, _simulate
from tests.test_search import send

CONFIG = RankerConfig(warmup=10, explore_slots=(3,))


def _trained(rounds: int = 150) -> tuple[OnlineRanker, dict[str, list[float]]]:
    store: dict[str, list[float]] = {}
    ranker = OnlineRanker(CONFIG, Engagement(store))
    _simulate(ranker, _hits(), good={"p6"}, rounds=rounds)
    return ranker, store


def _through_the_topic(snapshot: RankerSnapshot) -> RankerSnapshot:
    return decode(RankerSnapshot, encode(snapshot))


def _values(ranker: OnlineRanker, now_ms: int = NOW) -> list[tuple[str, float]]:
    return [(r.hit.product_id, r.value) for r in ranker.rank("shoes", _hits(), now_ms=now_ms, page_size=10,
                                                              explore=False)]


def test_an_adopted_snapshot_ranks_and_learns_on_exactly_as_the_model_that_learned_it() -> None:
    learner, store = _trained()
    snapshot = _through_the_topic(learner.snapshot("demo", worker="w1", now_ms=NOW))
    # Another worker: the same engagement records (its standby copy), no model.
    follower = OnlineRanker(CONFIG, Engagement(copy.deepcopy(store)))
    assert _values(follower) != _values(learner)

    assert follower.adopt(snapshot)
    assert follower.version == learner.version and follower.updates > 150
    assert _values(follower) == _values(learner)
    assert follower.propensity.state() == learner.propensity.state() and learner.propensity.impressions
    # Adopted mid-stream (a partition handed over), it learns on from there as the learner would have.
    follower.rng.bit_generator.state = learner.rng.bit_generator.state  # exploration draws are each worker's own
    _simulate(learner, _hits(), good={"p6"}, rounds=20, seed=7)
    _simulate(follower, _hits(), good={"p6"}, rounds=20, seed=7)
    assert _values(follower, NOW + 10**6) == _values(learner, NOW + 10**6)


def test_a_snapshot_is_adopted_only_when_newer_and_of_the_same_model_family() -> None:
    learner, store = _trained()
    older = _through_the_topic(learner.snapshot("demo", worker="w1", now_ms=NOW))
    _simulate(learner, _hits(), good={"p6"}, rounds=10, seed=3)
    before = _values(learner)
    assert not learner.adopt(older)  # behind this model: it stays as it is
    assert not learner.adopt(learner.snapshot("demo", worker="w1", now_ms=NOW))  # level with it
    other = OnlineRanker(CONFIG, Engagement(store), name="gbdt")
    assert not other.adopt(older) and other.updates == 0
    assert _values(learner) == before


def test_features_unknown_to_this_version_are_dropped_on_adoption() -> None:
    learner, store = _trained()
    state = orjson.loads(encode(learner.snapshot("demo", worker="w1", now_ms=NOW)))
    for model in ("click", "buy"):  # a newer version's feature: this one never computes it
        for part, value in (("counts", 9), ("means", 1.0), ("variances", 1.0), ("weights", 50.0)):
            state[model][part]["future_feature"] = value
    follower = OnlineRanker(CONFIG, Engagement(store))
    assert follower.adopt(decode(RankerSnapshot, orjson.dumps(state)))
    assert "future_feature" not in follower.click.weights and "future_feature" not in follower.buy_scaler.means
    assert _values(follower) == _values(learner)


@pytest.mark.parametrize(("change", "says"), [
    (lambda s: s["click"]["weights"].update(dense="big"), "click.weights.dense"),
    (lambda s: s["buy"]["variances"].update(dense=-1.0), "buy.variances.dense"),
    (lambda s: s["click"]["means"].update({"Not A Feature": 1.0}), "click.means"),
    (lambda s: s.update(updates=-1), "updates"),
    (lambda s: s["impressions_by_slot"].update(top=3.0), "slot keys are 0-based ranks"),
    (lambda s: s.pop("buy"), "buy"),
])
def test_the_contract_names_what_is_wrong_with_a_bad_snapshot(change: Any, says: str) -> None:
    learner, _ = _trained(30)
    state = orjson.loads(encode(learner.snapshot("demo", worker="w1", now_ms=NOW)))
    change(state)
    with pytest.raises(DecodeError) as err:
        decode(RankerSnapshot, orjson.dumps(state))
    assert says in str(err.value)


def _hub(tmp_path: Path, records: dict[str, Any]) -> RankerHub:
    settings = Settings(tenants=("demo", "acme"), ranker={"warmup": 10, "explore_slots": ""},  # type: ignore[call-arg]
                        worker=WorkerSettings(data_dir=tmp_path))  # type: ignore[call-arg]
    return RankerHub(settings, DictRecords(records))


def test_a_hub_publishes_what_it_learned_once_and_never_what_it_adopted_or_restored(tmp_path: Path) -> None:
    from tests.test_ranker_hub import _batch

    table: dict[str, Any] = {}  # both workers read the same engagement records, as through standbys
    learner, follower = _hub(tmp_path / "a", table), _hub(tmp_path / "b", table)
    assert learner.snapshots_due("a", NOW) == []
    learner.learn(_batch())
    (snapshot,) = learner.snapshots_due("a", NOW)
    assert (snapshot.tenant, snapshot.updates, snapshot.worker) == ("demo", 18, "a")
    learner.shared(snapshot)
    assert learner.snapshots_due("a", NOW) == []  # nothing new learned since

    assert follower.adopt(_through_the_topic(snapshot)) == "adopted"
    assert follower.versions() == learner.versions() == {"demo": "river-lr-18"}
    assert follower.snapshots_due("b", NOW) == []  # adopted, not learned here: not published again
    assert follower.adopt(snapshot) == "not_newer"
    assert learner.adopt(snapshot) == "not_newer"  # the learner reads its own snapshot back
    acme = snapshot.model_copy(update={"tenant": "other"})
    assert follower.adopt(acme) == "other_tenant" and "other" not in follower.versions()

    # A worker restarted from its checkpoint has nothing new to say until it learns again.
    learner.checkpoint()
    restarted = _hub(tmp_path / "a", table)
    assert restarted.get("demo") is not None and restarted.versions() == {"demo": "river-lr-18"}
    assert restarted.snapshots_due("a", NOW) == []


def test_a_hub_never_publishes_a_model_behind_one_read_from_the_topic(tmp_path: Path) -> None:
    from tests.test_ranker_hub import _batch

    table: dict[str, Any] = {}
    ahead, behind = _hub(tmp_path / "a", table), _hub(tmp_path / "b", table)
    ahead.learn(_batch())
    ahead.learn(_batch()[:3])  # 21 updates
    behind.learn(_batch())  # 18: a former owner that learned from an older base
    behind.adopt(ahead.snapshots_due("a", NOW)[0].model_copy(update={"model": "gbdt"}))  # read, not taken
    assert behind.versions() == {"demo": "river-lr-18"}
    assert behind.snapshots_due("b", NOW) == []  # the topic holds 21: compaction must not keep an 18


# -- two workers on the real broker ---------------------------------------------------------------


def _versions(worker: WorkerProcess) -> dict[str, str]:
    return worker.get("/v1/stats/rankers")["versions"]  # type: ignore[no-any-return]


def _worker(make_worker: Callable[..., WorkerProcess], prefix: str, app_id: str, home: Path,
            env: dict[str, str]) -> WorkerProcess:
    """A worker of group ``app_id`` with its own data directory and Qdrant Edge store under ``home``."""
    return make_worker(prefix, app_id=app_id, extra_env={
        **env, "SHOPRANK_WORKER_DATA_DIR": str(home), "SHOPRANK_STORE_DIR": str(home.with_name(f"{home.name}-ix"))})


def _interactions(tag: str) -> list[tuple[str, bytes]]:
    from tests.test_ranker_hub import _batch

    return [(it.tenant, encode(it.model_copy(update={"interaction_id": f"{tag}-{it.interaction_id}"})))
            for it in _batch()]


@pytest.mark.integration
def test_a_worker_that_never_learned_a_tenant_serves_the_model_that_did(
        broker: EmbeddedBroker, prefix: str, make_worker: Callable[..., WorkerProcess], tmp_path: Path) -> None:
    app_id = f"share-{uuid.uuid4().hex[:6]}"
    fast = {"SHOPRANK_RANKER_SHARE_INTERVAL_S": "0.3", "SHOPRANK_RANKER_CHECKPOINT_INTERVAL_S": "0.3",
            "SHOPRANK_RANKER_WARMUP": "5"}

    def worker(name: str) -> WorkerProcess:
        return _worker(make_worker, prefix, app_id, tmp_path / name, fast)

    a = worker("a")
    send(broker, f"{prefix}shoprank.interactions", _interactions("first"))
    def stats(w: WorkerProcess) -> Callable[[], Any]:
        return lambda: w.get("/v1/stats/rankers")

    wait_for("a learns and publishes 18", lambda: _versions(a) == {"demo": "river-lr-18"}
             and stats(a)()["records"].get("published") == 1, 60, explain=stats(a))

    # A second worker in the group, with its own (empty) data directory: it has never learned anything.
    b = worker("b")
    assert b.get("/readyz")["checks"]["rankers_loaded"] is True
    wait_for("b adopts a's model", lambda: _versions(b) == {"demo": "river-lr-18"}, 60, explain=stats(b))
    assert b.get("/v1/stats/rankers")["records"]["adopted"] == 1
    # Each indexes half the catalogue into a Qdrant Edge store of its own, and says its searches see only that.
    def coverage() -> list[dict[str, Any]]:
        return [w.get("/v1/stats/catalogue")["coverage"] for w in (a, b)]

    def split() -> bool:
        return sorted(p for c in coverage() for p in c["partitions"]) == [0, 1, 2, 3]

    wait_for("the catalogue split over both", split, 60, explain=coverage)
    assert [c["searches_see_whole_catalogue"] for c in coverage()] == [False, False]

    # More outcomes: whichever worker now holds the tenant's partition learns, and the other follows.
    send(broker, f"{prefix}shoprank.interactions", _interactions("second"))
    wait_for("both serve 36", lambda: _versions(a) == _versions(b) == {"demo": "river-lr-36"}, 60,
             explain=lambda: (stats(a)(), stats(b)()))

    # Either worker answers the shop's whole analytics: the other's partition is held as a standby copy.
    def analytics(w: WorkerProcess, scope: str = "held") -> dict[str, Any]:
        return w.get(f"/v1/analytics/demo?partitions={scope}")  # type: ignore[no-any-return]

    wait_for("equal analytics on both", lambda: analytics(a)["buckets"] == analytics(b)["buckets"] != {}, 60,
             explain=lambda: (analytics(a)["partitions"], analytics(b)["partitions"], analytics(b)))
    whole = analytics(a)
    assert whole["partitions"] == {"held": [0, 1, 2, 3], "of": 4, "complete": True}
    assert whole["buckets"]["learning"]["clicks"] == 12  # six clicks in each of the two batches
    active = [analytics(w, "active") for w in (a, b)]
    assert sorted(len(x["partitions"]["held"]) for x in active) == [2, 2]  # each partition processed once
    assert [x["buckets"].get("learning", {}).get("clicks", 0) for x in active] in ([12, 0], [0, 12])
    status, body = http_json(a.url + "/v1/analytics/demo?partitions=some")
    assert (status, body["error"]["code"]) == (400, "invalid_partitions")

    # A record that is not a snapshot is dead-lettered by each worker, which goes on following the topic.
    from tests.test_schemas import SAMPLES

    far_ahead = orjson.dumps({**SAMPLES["rankers"], "updates": 10**6})  # would be adopted, were its key right
    send(broker, f"{prefix}shoprank.rankers", [("demo", b"{not json"), ("demo", orjson.dumps({"tenant": "demo"})),
                                               ("acme", far_ahead)])
    bad = {"invalid_json": 1, "missing_field": 1, "invalid_value": 1}
    for w in (a, b):
        wait_for("each dead-letters the bad records", lambda w=w: stats(w)()["dead_letters"] == bad, 60,
                 explain=stats(w))
        assert _versions(w) == {"demo": "river-lr-36"}

    # Restarted, a worker serves the shared model before it learns anything new.
    b.stop()
    b2 = worker("b")
    assert _versions(b2) in ({}, {"demo": "river-lr-36"})  # built at the first search or snapshot read
    wait_for("the restarted b serves 36", lambda: _versions(b2) == {"demo": "river-lr-36"}, 60, explain=stats(b2))


@pytest.mark.integration
def test_a_rebalance_hands_the_model_over_without_waiting_for_the_timer(
        broker: EmbeddedBroker, prefix: str, make_worker: Callable[..., WorkerProcess], tmp_path: Path) -> None:
    app_id = f"handover-{uuid.uuid4().hex[:6]}"
    never = {"SHOPRANK_RANKER_SHARE_INTERVAL_S": "3600", "SHOPRANK_RANKER_WARMUP": "5"}  # the timer never fires

    def worker(name: str) -> WorkerProcess:
        return _worker(make_worker, prefix, app_id, tmp_path / name, never)

    a = worker("a")
    send(broker, f"{prefix}shoprank.interactions", _interactions("only"))
    wait_for("a learns 18", lambda: _versions(a) == {"demo": "river-lr-18"}, 60,
             explain=lambda: a.get("/v1/stats/rankers"))
    assert "published" not in a.get("/v1/stats/rankers")["records"]
    assert a.get("/v1/stats/catalogue")["coverage"] == {
        "partitions": [0, 1, 2, 3], "of": 4, "searches_see_whole_catalogue": True}

    b = worker("b")  # joining revokes a's partitions: a publishes then, after its agents finished
    wait_for("b adopts a's model at the rebalance", lambda: _versions(b) == {"demo": "river-lr-18"}, 60,
             explain=lambda: b.get("/v1/stats/rankers"))
    assert a.get("/v1/stats/rankers")["records"]["published"] == 1
