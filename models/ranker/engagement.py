"""Time-decayed engagement counters for products and query×product pairs.

Each record is ``[examined, clicks, carts, purchases, revenue, margin, ts_ms]``, every count decayed
by ``0.5 ** (age / half_life)`` up to ``ts_ms``; decay is applied lazily when a record is read or
updated, so an update is O(1). ``examined`` is position-bias corrected: an impression at rank ``r``
adds the estimated probability that a shopper looked at rank ``r`` (see models.ranker.propensity),
so a product shown low on the page is not blamed for clicks nobody could have given it.

The records live in any mutable mapping of plain lists: a dict in tests, a Faust table in the worker
(keys ``p|<product>`` and ``qp|<query>|<product>``).
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Engagement", "Rates"]

#: Pseudo-observations pulling rates toward the prior (Bayesian smoothing of a Beta-Binomial).
PRIOR_WEIGHT = 20.0
PRIOR_CTR = 0.05
PRIOR_ATC = 0.015
PRIOR_CVR = 0.008

_E, _C, _A, _P, _REV, _MARGIN, _TS = range(7)


@dataclass(frozen=True)
class Rates:
    impressions: float
    clicks: float
    purchases: float
    ctr: float
    atc: float
    cvr: float


class Engagement:
    def __init__(self, store: MutableMapping[str, list[float]], half_life_ms: float = 7 * 86_400_000) -> None:
        self.store = store
        self.half_life_ms = half_life_ms

    @staticmethod
    def product_key(product_id: str) -> str:
        return f"p|{product_id}"

    @staticmethod
    def pair_key(query: str, product_id: str) -> str:
        return Engagement.pair_keys(query, [product_id])[0]

    @staticmethod
    def pair_keys(query: str, product_ids: Sequence[str]) -> list[str]:
        """:meth:`pair_key` for one query and many products."""
        prefix = f"qp|{' '.join(query.lower().split())}|"
        return [prefix + pid for pid in product_ids]

    def _decayed(self, key: str, now_ms: float) -> list[float]:
        rec = self.store.get(key)
        if rec is None:
            return [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, float(now_ms)]
        rec = list(rec)
        dt = now_ms - rec[_TS]
        if dt > 0:
            f = 0.5 ** (dt / self.half_life_ms)
            for i in range(_TS):
                rec[i] *= f
            rec[_TS] = float(now_ms)
        return rec

    def add(self, key: str, *, now_ms: float, examined: float = 0.0, clicks: float = 0.0, carts: float = 0.0,
            purchases: float = 0.0, revenue: float = 0.0, margin: float = 0.0) -> None:
        rec = self._decayed(key, now_ms)
        rec[_E] += examined
        rec[_C] += clicks
        rec[_A] += carts
        rec[_P] += purchases
        rec[_REV] += revenue
        rec[_MARGIN] += margin
        self.store[key] = rec

    def rates(self, key: str, now_ms: float) -> Rates:
        rec = self._decayed(key, now_ms)
        n = rec[_E] + PRIOR_WEIGHT
        return Rates(
            impressions=rec[_E], clicks=rec[_C], purchases=rec[_P],
            ctr=(rec[_C] + PRIOR_CTR * PRIOR_WEIGHT) / n,
            atc=(rec[_A] + PRIOR_ATC * PRIOR_WEIGHT) / n,
            cvr=(rec[_P] + PRIOR_CVR * PRIOR_WEIGHT) / n,
        )

    def rates_many(self, keys: Sequence[str], now_ms: float) -> np.ndarray:
        """``[impressions, ctr, atc, cvr]`` per key, one row each: :meth:`rates` for many keys at once."""
        recs = np.zeros((len(keys), _TS + 1), dtype=np.float64)
        recs[:, _TS] = now_ms
        get_many = getattr(self.store, "get_many", None)
        found = get_many(keys) if get_many is not None else [self.store.get(key) for key in keys]
        for i, rec in enumerate(found):
            if rec is not None:
                recs[i] = rec
        dt = now_ms - recs[:, _TS]
        factor = np.where(dt > 0, 0.5 ** (np.maximum(dt, 0.0) / self.half_life_ms), 1.0)
        counts = recs[:, :_TS] * factor[:, None]
        n = counts[:, _E] + PRIOR_WEIGHT
        return np.column_stack((
            counts[:, _E],
            (counts[:, _C] + PRIOR_CTR * PRIOR_WEIGHT) / n,
            (counts[:, _A] + PRIOR_ATC * PRIOR_WEIGHT) / n,
            (counts[:, _P] + PRIOR_CVR * PRIOR_WEIGHT) / n,
        ))

    def record(self, key: str, now_ms: float) -> list[float]:
        """The decayed record (for tests and analytics)."""
        return self._decayed(key, now_ms)
