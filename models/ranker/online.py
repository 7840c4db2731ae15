"""The online ranker: River models that learn from each attributed interaction and re-rank candidates
by predicted business value under the tenant's objective.

Two logistic regressions (River, SGD, behind a running standard scaler) share the feature vector of
models.ranker.features: ``P(click | shown, examined)`` and ``P(purchase | click)``. Impressions are
the click model's negatives, counted by the examination propensity of their rank (an unexamined
item is weak evidence); clicks are its positives with inverse-propensity weights, clipped at 10, so
that position bias is not learned as relevance. A shown item is learned as a negative with
probability equal to its propensity, at weight 1, rather than always at that weight: the same
expected update, for about 40% of the River updates on a page of ten (they were most of the learning
agent's time). The draw is a hash of the interaction and product ids, so a replay after a crash, and
a worker that adopted the model, learn exactly the same. A candidate's value is::

    P(click) · P(purchase | click) · (w_conversion + w_revenue · price + w_margin · price · margin_rate)

Cold start: the models score any product from its content features, so a new product gets a prior
from what it looks like; and a small exploration budget (Thompson sampling over a few slots, from the
Beta posterior of each candidate's examined clicks) shows products with little evidence, so they can
earn their place. Until the models have seen ``warmup`` interactions the hybrid order stands.
"""

from __future__ import annotations

import math
import os
import pickle
import tempfile
import threading
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from river import linear_model, optim, preprocessing

from models.ranker.engagement import Engagement
from models.ranker.features import FEATURES, Candidate, feature_matrix
from models.ranker.propensity import Propensity
from schemas import AttributedInteraction, LinearModelState, RankerSnapshot

__all__ = ["Objective", "RankerConfig", "OnlineRanker", "Ranked", "Candidate"]

_MAX_IPS = 10.0


@dataclass(frozen=True)
class Objective:
    """A tenant's business objective: weights over conversion, revenue and margin."""

    conversion: float = 1.0
    revenue: float = 0.0
    margin: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Objective:
        """``conversion=1,revenue=0.02,margin=0`` (missing names are 0 once any is given)."""
        weights = {"conversion": 0.0, "revenue": 0.0, "margin": 0.0}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            if name.strip() not in weights:
                raise ValueError(f"unknown objective term {name.strip()!r}; use conversion, revenue or margin")
            weights[name.strip()] = float(value)
        if all(w == 0 for w in weights.values()):
            raise ValueError("an objective needs at least one non-zero weight")
        return cls(**weights)

    def value(self, price: float, margin_rate: float) -> float:
        return self.conversion + self.revenue * price + self.margin * price * margin_rate


@dataclass(frozen=True)
class RankerConfig:
    objective: Objective = field(default_factory=Objective)
    #: 0-based page slots filled by exploration instead of by score.
    explore_slots: tuple[int, ...] = (3, 7)
    #: Candidates (by value) beyond the page that exploration may draw from.
    explore_pool: int = 40
    #: How many retrieved candidates are scored.
    depth: int = 100
    #: Interactions before the models' order replaces the hybrid order.
    warmup: int = 200
    seed: int = 0


class Ranked:
    """A candidate with its predicted value and its features (logged for learning).

    A search scores a hundred candidates but logs the features of a page of them, so the feature dict
    is built from the candidate's matrix row only when read.
    """

    __slots__ = ("hit", "value", "explored", "_features", "_row")

    def __init__(self, hit: Any, value: float, features: dict[str, float] | None = None, explored: bool = False,
                 *, row: Sequence[float] | None = None) -> None:
        self.hit, self.value, self.explored = hit, value, explored
        self._features = features
        self._row = row

    @property
    def features(self) -> dict[str, float]:
        if self._features is None:
            self._features = dict(zip(FEATURES, self._row, strict=True)) if self._row is not None else {}
        return self._features

    def feature(self, name: str) -> float:
        """One feature, without building the dict."""
        if self._row is not None and self._features is None:
            return self._row[_COLUMN[name]]
        return self.features.get(name, 0.0)

    def __repr__(self) -> str:
        return f"Ranked({self.hit!r}, {self.value!r}, explored={self.explored})"


def _model() -> tuple[preprocessing.StandardScaler, linear_model.LogisticRegression]:
    return preprocessing.StandardScaler(), linear_model.LogisticRegression(optimizer=optim.SGD(0.02), l2=1e-4)


def _state(scaler: preprocessing.StandardScaler, model: linear_model.LogisticRegression) -> LinearModelState:
    return LinearModelState(
        counts={f: int(n) for f, n in scaler.counts.items()}, means={f: float(v) for f, v in scaler.means.items()},
        variances={f: float(v) for f, v in scaler.vars.items()},
        weights={f: float(v) for f, v in model.weights.items()}, intercept=float(model.intercept),
        iterations=int(model.optimizer.n_iterations),
    )


def _restore(state: LinearModelState) -> tuple[preprocessing.StandardScaler, linear_model.LogisticRegression]:
    """Fresh River objects holding ``state`` (known features only), ready to predict and to learn on."""
    scaler, model = _model()
    known = _COLUMN.keys()
    scaler.counts.update({f: n for f, n in state.counts.items() if f in known})
    scaler.means.update({f: v for f, v in state.means.items() if f in known})
    scaler.vars.update({f: v for f, v in state.variances.items() if f in known})
    for f, w in state.weights.items():
        if f in known:
            model._weights[f] = w  # noqa: SLF001 - River keeps weights in a VectorDict with no public setter
    model.intercept = state.intercept
    model.optimizer.n_iterations = state.iterations
    return scaler, model


_COLUMN = {name: i for i, name in enumerate(FEATURES)}
_PRICE_LOG = FEATURES.index("price_log")
_MARGIN_RATE = FEATURES.index("margin_rate")


def _dicts(x: np.ndarray) -> list[dict[str, float]]:
    return [dict(zip(FEATURES, row, strict=True)) for row in x.tolist()]


def _predict_proba(scaler: preprocessing.StandardScaler, model: linear_model.LogisticRegression,
                   x: np.ndarray) -> np.ndarray:
    """``model.predict_proba_one(scaler.transform_one(row))[True]`` for every row of ``x`` at once."""
    means = np.array([scaler.means.get(f, 0.0) for f in FEATURES])
    variances = np.array([scaler.vars.get(f, 0.0) for f in FEATURES])
    std = np.sqrt(variances)
    z = np.divide(x - means, std, out=np.zeros_like(x), where=variances != 0)
    weights = model.weights
    logit = z @ np.array([weights.get(f, 0.0) for f in FEATURES]) + model.intercept
    # River's sigmoid saturates beyond +-30.
    with np.errstate(over="ignore"):
        p = 1.0 / (1.0 + np.exp(-logit))
    return np.where(logit < -30, 0.0, np.where(logit > 30, 1.0, p))


def _draw(interaction_id: str, product_id: str) -> float:
    """A uniform number in [0, 1) fixed by the two ids."""
    return zlib.crc32(f"{interaction_id}|{product_id}".encode()) / 4_294_967_296


_NUMBERS = frozenset((float, int))
_ZEROS = (0.0,) * len(FEATURES)


def _clean(features: Mapping[str, float]) -> dict[str, float]:
    """Exactly the known features, finite (a logged vector from an older version may lack some)."""
    values = list(map(features.get, FEATURES, _ZEROS))
    # The common case in one pass over C loops: every value a number and their sum finite (so each is).
    # It was a fifth of a ranker update when each value was checked on its own.
    if _NUMBERS.issuperset(map(type, values)) and math.isfinite(sum(values)):
        return dict(zip(FEATURES, map(float, values)))
    return {name: float(v) if isinstance(v, (int, float)) and math.isfinite(v) else 0.0
            for name, v in zip(FEATURES, values)}


class OnlineRanker:
    def __init__(self, config: RankerConfig, engagement: Engagement, *, name: str = "river-lr") -> None:
        self.config = config
        self.engagement = engagement
        self.name = name
        self.click_scaler, self.click = _model()
        self.buy_scaler, self.buy = _model()
        self.propensity = Propensity(config.explore_slots)
        self.updates = 0
        self.rng = np.random.default_rng(config.seed)
        # Search threads rank while the learning agent updates: River models are plain dicts.
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        return f"{self.name}-{self.updates}"

    # -- serving ----------------------------------------------------------------------------------

    def features(self, query: str, hits: Sequence[Candidate], now_ms: int) -> list[dict[str, float]]:
        return _dicts(feature_matrix(query, hits, self.engagement, now_ms))

    def rank(self, query: str, hits: Sequence[Candidate], *, now_ms: int, page_size: int,
             explore: bool = True) -> list[Ranked]:
        """Candidates re-ordered by predicted value, with exploration in the configured slots."""
        head = list(hits[: self.config.depth])
        x = feature_matrix(query, head, self.engagement, now_ms)
        with self._lock:
            warm = self.updates >= self.config.warmup
            values = self._values(x).tolist() if warm else [h.score for h in head]
        rows = x.tolist()
        ranked = sorted((Ranked(h, v, row=row) for h, v, row in zip(head, values, rows, strict=True)),
                        key=lambda r: -r.value)
        if explore:
            self._explore(ranked, page_size)
        return ranked + [Ranked(h, h.score, {}) for h in hits[self.config.depth:]]

    def _values(self, x: np.ndarray) -> np.ndarray:
        """Predicted value of each row of ``x`` (columns in FEATURES order), as River would predict one by one."""
        p_click = _predict_proba(self.click_scaler, self.click, x)
        p_buy = _predict_proba(self.buy_scaler, self.buy, x)
        price = np.expm1(x[:, _PRICE_LOG])
        o = self.config.objective
        return p_click * p_buy * (o.conversion + o.revenue * price + o.margin * price * x[:, _MARGIN_RATE])

    def _explore(self, ranked: list[Ranked], page_size: int) -> None:
        """Thompson sampling: each slot goes to the pool candidate with the highest sampled click rate.

        One draw per candidate from the Beta posterior of its examined clicks; the slots, in order, take
        the best draw among the candidates at or below them not yet placed.
        """
        slots = [s for s in self.config.explore_slots if s < min(page_size, len(ranked))]
        if not slots:
            return
        pool_end = min(len(ranked), page_size + self.config.explore_pool)
        start = slots[0]
        shown = np.expm1(np.array([r.feature("p_impressions") for r in ranked[start:pool_end]]))
        ctr = np.array([r.feature("p_ctr") for r in ranked[start:pool_end]])
        clicks = ctr * (shown + 20.0) - 1.0  # undo the smoothing prior
        draws = self.rng.beta(np.maximum(clicks, 0.0) + 1.0, np.maximum(shown - clicks, 0.0) + 20.0).tolist()
        pool = list(zip(ranked[start:pool_end], draws, strict=True))  # (candidate, draw), in ranked order
        head = ranked[:start]
        for slot in slots:
            while len(head) < slot and pool:  # fill up to the slot in ranked order
                head.append(pool.pop(0)[0])
            if not pool:
                break
            best = max(range(len(pool)), key=lambda i: pool[i][1])
            chosen = pool.pop(best)[0]
            chosen.explored = True
            head.append(chosen)
        head.extend(r for r, _ in pool)
        ranked[:pool_end] = head

    # -- learning ---------------------------------------------------------------------------------

    def learn(self, it: AttributedInteraction) -> None:
        now = it.event_ts
        with self._lock:
            if it.outcome == "impression":
                for item in it.items or ():
                    seen = self.propensity(item.position)
                    if _draw(it.interaction_id, item.product_id) < seen:  # see the module doc
                        self._learn(self.click_scaler, self.click, _clean(item.features), False, 1.0)
                    self.propensity.shown(item.position, explored=item.explored)
                    self.engagement.add(self.engagement.product_key(item.product_id), now_ms=now, examined=seen)
                    self.engagement.add(self.engagement.pair_key(it.query, item.product_id), now_ms=now, examined=seen)
            else:
                assert it.product_id is not None and it.position is not None
                x = _clean(it.features)
                pkey = self.engagement.product_key(it.product_id)
                qkey = self.engagement.pair_key(it.query, it.product_id)
                if it.outcome == "click":
                    weight = min(_MAX_IPS, 1.0 / self.propensity(it.position))
                    self._learn(self.click_scaler, self.click, x, True, weight)
                    self._learn(self.buy_scaler, self.buy, x, False, 1.0)
                    self.propensity.clicked(it.position, explored=it.explored)
                    for key in (pkey, qkey):
                        self.engagement.add(key, now_ms=now, clicks=1.0)
                elif it.outcome == "add_to_cart":
                    for key in (pkey, qkey):
                        self.engagement.add(key, now_ms=now, carts=it.credit)
                else:
                    self._learn(self.buy_scaler, self.buy, x, True, it.credit)
                    for key in (pkey, qkey):
                        self.engagement.add(key, now_ms=now, purchases=it.credit, revenue=it.value, margin=it.margin)
            self.updates += 1

    @staticmethod
    def _learn(scaler: Any, model: Any, x: dict[str, float], y: bool, weight: float) -> None:
        scaler.learn_one(x)
        model.learn_one(scaler.transform_one(x), y, w=weight)

    # -- sharing between workers ------------------------------------------------------------------

    def snapshot(self, tenant: str, *, worker: str, now_ms: int) -> RankerSnapshot:
        """The learned state as plain numbers (streams.ranker_share publishes it for the other workers).

        Engagement is not in it: it lives in the learning table, which reaches other workers as standby
        replicas.
        """
        with self._lock:
            return RankerSnapshot(
                tenant=tenant, model=self.name, updates=self.updates,
                click=_state(self.click_scaler, self.click), buy=_state(self.buy_scaler, self.buy),
                impressions_by_slot={str(k): v for k, v in self.propensity.impressions.items()},
                clicks_by_slot={str(k): v for k, v in self.propensity.clicks.items()},
                worker=worker, published_at=now_ms,
            )

    def adopt(self, snapshot: RankerSnapshot) -> bool:
        """Take ``snapshot``'s state if it is of this model family and has learned more than this one.

        Features this version does not know are dropped: it never computes them, so their weights could
        not count. Returns whether the snapshot was taken.
        """
        if snapshot.model != self.name or snapshot.updates <= self.updates:
            return False
        click_scaler, click = _restore(snapshot.click)
        buy_scaler, buy = _restore(snapshot.buy)
        with self._lock:
            if snapshot.updates <= self.updates:
                return False
            self.click_scaler, self.click = click_scaler, click
            self.buy_scaler, self.buy = buy_scaler, buy
            self.propensity.impressions = {int(k): v for k, v in snapshot.impressions_by_slot.items()}
            self.propensity.clicks = {int(k): v for k, v in snapshot.clicks_by_slot.items()}
            self.updates = snapshot.updates
        return True

    # -- checkpoints ------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write the models atomically (engagement lives in its own store)."""
        with self._lock:
            blob = pickle.dumps({
                "name": self.name, "updates": self.updates, "click": (self.click_scaler, self.click),
                "buy": (self.buy_scaler, self.buy), "propensity": self.propensity.state(),
                "rng": self.rng.bit_generator.state,
            })
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, config: RankerConfig, engagement: Engagement) -> OnlineRanker:
        state = pickle.loads(path.read_bytes())  # noqa: S301 - our own checkpoint, written by save()
        ranker = cls(config, engagement, name=state["name"])
        ranker.updates = state["updates"]
        ranker.click_scaler, ranker.click = state["click"]
        ranker.buy_scaler, ranker.buy = state["buy"]
        ranker.propensity.impressions = dict(state["propensity"]["impressions"])
        ranker.propensity.clicks = dict(state["propensity"]["clicks"])
        if isinstance(state.get("rng"), dict):  # checkpoints before 2026-12-03 held a random.Random state
            ranker.rng.bit_generator.state = state["rng"]
        return ranker
