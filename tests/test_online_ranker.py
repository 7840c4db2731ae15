"""The online ranker on its own: learning, objectives, exploration, position bias, checkpoints."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from models.ranker import Engagement, Objective, OnlineRanker, Propensity, RankerConfig
from schemas import AttributedInteraction, LoggedItem

NOW = 1_700_000_000_000
DAY = 86_400_000


@dataclass
class FakeHit:
    product_id: str
    score: float
    scores: dict[str, float] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)


def _hits(n: int = 12, *, price: float = 20.0) -> list[FakeHit]:
    return [FakeHit(f"p{i}", 1.0 / (60 + i), {"dense": 0.5 - i * 0.01, "fused": 1.0 / (60 + i)},
                    {"product_id": f"p{i}", "price": price, "margin": 0.3, "created_at": NOW - 100 * DAY})
            for i in range(n)]


def _impression(ranker: OnlineRanker, ranked: list[Any], sid: str, ts: int, query: str = "shoes") -> None:
    ranker.learn(AttributedInteraction(
        interaction_id=f"{sid}:i", tenant="demo", search_id=sid, query=query, outcome="impression",
        items=[LoggedItem(product_id=r.hit.product_id, position=i, features=r.features, explored=r.explored)
               for i, r in enumerate(ranked[:10])], event_ts=ts, search_ts=ts))


def _outcome(ranker: OnlineRanker, r: Any, pos: int, outcome: str, sid: str, ts: int, value: float = 0.0,
             query: str = "shoes") -> None:
    ranker.learn(AttributedInteraction(
        interaction_id=f"{sid}:{outcome}", tenant="demo", search_id=sid, query=query, outcome=outcome,  # type: ignore[arg-type]
        product_id=r.hit.product_id, position=pos, features=r.features, explored=r.explored, value=value,
        currency="EUR", event_ts=ts, search_ts=ts))


def _simulate(ranker: OnlineRanker, hits: list[FakeHit], good: set[str], rounds: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    for k in range(rounds):
        ts = NOW + k * 1000
        ranked = ranker.rank("shoes", hits, now_ms=ts, page_size=10)
        _impression(ranker, ranked, f"s{k}", ts)
        for pos, r in enumerate(ranked[:10]):
            examine = 1.0 / (1 + pos) ** 0.7
            relevant = 0.5 if r.hit.product_id in good else 0.03
            if rng.random() < examine * relevant:
                _outcome(ranker, r, pos, "click", f"s{k}", ts)
                if r.hit.product_id in good and rng.random() < 0.5:
                    _outcome(ranker, r, pos, "purchase", f"s{k}", ts, value=20.0)


def test_learning_moves_the_product_shoppers_buy_to_the_top() -> None:
    ranker = OnlineRanker(RankerConfig(warmup=50, explore_slots=(5,)), Engagement({}))
    hits = _hits()
    before = [r.hit.product_id for r in ranker.rank("shoes", hits, now_ms=NOW, page_size=10, explore=False)]
    assert before[:3] == ["p0", "p1", "p2"]  # cold: the hybrid order stands
    _simulate(ranker, hits, good={"p9"}, rounds=400)
    after = [r.hit.product_id for r in ranker.rank("shoes", hits, now_ms=NOW + 500_000, page_size=10, explore=False)]
    assert after.index("p9") <= 1, after
    assert ranker.version.endswith(str(ranker.updates)) and ranker.updates > 400


def test_the_objective_decides_between_cheap_high_margin_and_expensive() -> None:
    hits = _hits(2)
    hits[0].payload.update(price=100.0, margin=0.6)  # margin 60
    hits[1].payload.update(price=200.0, margin=0.05)  # margin 10
    orders = {}
    for name, objective in {"revenue": Objective(0, 1, 0), "margin": Objective(0, 0, 1)}.items():
        ranker = OnlineRanker(RankerConfig(objective=objective, warmup=0, explore_slots=()), Engagement({}))
        orders[name] = [r.hit.product_id for r in ranker.rank("x", hits, now_ms=NOW, page_size=2)]
    # Same (untrained) purchase probabilities: the objective alone decides.
    assert orders == {"revenue": ["p1", "p0"], "margin": ["p0", "p1"]}


def test_a_new_product_gets_explored_and_earns_its_place() -> None:
    ranker = OnlineRanker(RankerConfig(warmup=50, explore_slots=(3, 6), seed=4), Engagement({}))
    hits = _hits(30)
    newcomer = hits[-1]
    newcomer.payload["created_at"] = NOW
    _simulate(ranker, hits, good={"p29"}, rounds=600, seed=3)
    final = ranker.rank("shoes", hits, now_ms=NOW + 700_000, page_size=10, explore=False)
    assert [r.hit.product_id for r in final].index("p29") < 3
    assert final[[r.hit.product_id for r in final].index("p29")].features["is_new"] == 1.0


def test_ranking_a_batch_scores_each_candidate_as_river_and_the_feature_builder_would_one_by_one() -> None:
    # The ranker scores all candidates at once (numpy); River's own one-by-one prediction is the reference.
    from models.ranker import candidate_features
    from models.ranker.online import _clean

    objective = Objective(conversion=1.0, revenue=0.02, margin=0.5)
    ranker = OnlineRanker(RankerConfig(objective=objective, warmup=0, explore_slots=()), Engagement({}))
    hits = _hits(30)
    for i, h in enumerate(hits):
        h.payload.update(price=10.0 + 7 * i, margin=0.05 * (i % 9), brand="Acme Shoes" if i % 3 else None,
                         category_path=["Sports", "Running shoes"])
    _simulate(ranker, hits, good={"p4", "p21"}, rounds=300)
    now = NOW + 400_000
    ranked = ranker.rank("acme shoes", hits, now_ms=now, page_size=10)
    e = ranker.engagement
    for r in ranked:
        rank = hits.index(r.hit)
        one = candidate_features(query="acme shoes", rank=rank, scores=r.hit.scores, payload=r.hit.payload,
                                 engagement=e, now_ms=now)
        assert r.features == pytest.approx(one, rel=1e-12, abs=1e-15)
        p, qp = e.rates(e.product_key(r.hit.product_id), now), e.rates(e.pair_key("acme shoes", r.hit.product_id), now)
        assert (one["p_impressions"], one["p_ctr"], one["p_atc"], one["p_cvr"]) == pytest.approx(
            (math.log1p(p.impressions), p.ctr, p.atc, p.cvr), rel=1e-12)
        assert (one["qp_impressions"], one["qp_ctr"], one["qp_cvr"]) == pytest.approx(
            (math.log1p(qp.impressions), qp.ctr, qp.cvr), rel=1e-12)
        assert one["retrieval_rank"] == 1.0 / (1 + rank) and one["price_log"] == math.log1p(r.hit.payload["price"])
        x = _clean(one)
        p_click = ranker.click.predict_proba_one(ranker.click_scaler.transform_one(x))[True]
        p_buy = ranker.buy.predict_proba_one(ranker.buy_scaler.transform_one(x))[True]
        expected = p_click * p_buy * objective.value(math.expm1(x["price_log"]), x["margin_rate"])
        assert r.value == pytest.approx(expected, rel=1e-9)
    assert [r.value for r in ranked] == sorted((r.value for r in ranked), reverse=True)
    assert len({round(r.value, 12) for r in ranked}) > 10  # a trained model, not one constant score
    assert ranked[0].features["brand_match"] == 1.0 or ranked[0].features["category_match"] == 1.0


def test_checkpoint_round_trip_gives_identical_scores(tmp_path: Path) -> None:
    store: dict[str, list[float]] = {}
    ranker = OnlineRanker(RankerConfig(warmup=10, explore_slots=()), Engagement(store))
    hits = _hits()
    _simulate(ranker, hits, good={"p4"}, rounds=100)
    ranker.save(tmp_path / "r.pkl")
    again = OnlineRanker.load(tmp_path / "r.pkl", RankerConfig(warmup=10, explore_slots=()), Engagement(store))
    a = [(r.hit.product_id, r.value) for r in ranker.rank("shoes", hits, now_ms=NOW, page_size=10)]
    b = [(r.hit.product_id, r.value) for r in again.rank("shoes", hits, now_ms=NOW, page_size=10)]
    assert a == b and again.version == ranker.version


def test_propensity_from_randomised_slots_recovers_the_examination_curve() -> None:
    truth = {3: 0.6, 5: 0.4, 8: 0.2}
    p = Propensity(tuple(truth))
    rng = random.Random(9)
    for _ in range(20_000):
        for slot, examine in truth.items():
            p.shown(slot, explored=True)
            if rng.random() < examine * 0.2:  # same relevance in every slot: the slots are randomised
                p.clicked(slot, explored=True)
    for slot, examine in truth.items():
        assert p(slot) / p(3) == pytest.approx(examine / truth[3], rel=0.15)
    assert p(0) == 1.0 and p(9) <= p(8)


def test_engagement_halves_at_the_half_life() -> None:
    e = Engagement({}, half_life_ms=DAY)
    e.add("p|x", now_ms=NOW, examined=10, clicks=4)
    assert e.record("p|x", NOW + DAY)[1] == pytest.approx(2.0)


def test_bad_feature_values_are_neutral_not_fatal() -> None:
    ranker = OnlineRanker(RankerConfig(warmup=0), Engagement({}))
    ranker.learn(AttributedInteraction(
        interaction_id="x", tenant="demo", search_id="s", query="q", outcome="click", product_id="p", position=0,
        features={"dense": math.inf, "bm25": math.nan, "unknown": 3.0}, event_ts=NOW, search_ts=NOW))
    hits = [FakeHit("p", 0.1, {"dense": math.nan}, {"product_id": "p", "price": "n/a"})]
    (only,) = ranker.rank("q", hits, now_ms=NOW, page_size=1)
    assert math.isfinite(only.value)


def test_features_follow_each_payload_object_while_the_static_parts_are_remembered() -> None:
    # Static parts are remembered by payload identity: a changed product is a new payload object.
    from models.ranker.features import FEATURES, feature_matrix

    e = Engagement({})
    price = FEATURES.index("price_log")
    first = _hits(3)
    x1 = feature_matrix("shoes", first, e, NOW)
    assert (x1 == feature_matrix("shoes", first, e, NOW)).all()  # same objects, same features
    for round_ in range(50):  # new payload objects (old ones freed) never take another's features
        changed = _hits(3, price=5.0 + round_)
        x = feature_matrix("shoes", changed, e, NOW)
        assert x[:, price] == pytest.approx([math.log1p(5.0 + round_)] * 3)
        del changed



def test_impressions_teach_each_rank_as_often_as_it_is_examined_and_replays_learn_the_same() -> None:
    """An item shown at rank r is a click negative with probability propensity(r), at weight 1."""
    config = RankerConfig(explore_slots=())
    for rank in (0, 2, 5, 9):
        ranker, replay = (OnlineRanker(config, Engagement({})) for _ in range(2))
        for k in range(3000):
            it = AttributedInteraction(
                interaction_id=f"s{k}:i", tenant="demo", search_id=f"s{k}", query="shoes", outcome="impression",
                items=[LoggedItem(product_id=f"p{k % 40}", position=rank, features={"dense": 0.3})],
                event_ts=NOW, search_ts=NOW)
            ranker.learn(it)
            replay.learn(it)
        learned = ranker.click_scaler.counts["dense"] / 3000  # the scaler counts the examples learned
        assert learned == pytest.approx(ranker.propensity(rank), abs=0.03)
        assert ranker.click.weights == replay.click.weights and ranker.click.intercept == replay.click.intercept
