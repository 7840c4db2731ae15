"""Examination propensity by rank, estimated from the ranker's own randomised slots.

Shoppers look at the top of a results page more than the bottom, so raw click-through by rank mixes
relevance with attention. The exploration budget (models.ranker.online) places a candidate drawn at
random, not by score, into a few slots; for those placements relevance does not depend on the slot,
so click-through of explored items by slot, relative to the top explored slot, estimates how much
attention each slot gets (the randomisation idea of Joachims et al., "Unbiased Learning-to-Rank with
Biased Feedback", 2017, restricted to the slots we randomise). Unexplored slots take the value of the
nearest explored slot above them, and until enough explored impressions exist a prior curve
``1 / (1 + rank) ** 0.7`` stands in. Estimates are clipped to [0.05, 1] so inverse weights stay bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Propensity"]

_MIN_IMPRESSIONS = 200
_FLOOR = 0.05


def prior(rank: int) -> float:
    return max(_FLOOR, 1.0 / (1.0 + rank) ** 0.7)


@dataclass
class Propensity:
    slots: tuple[int, ...]
    impressions: dict[int, float] = field(default_factory=dict)
    clicks: dict[int, float] = field(default_factory=dict)

    def shown(self, rank: int, *, explored: bool) -> None:
        if explored and rank in self.slots:
            self.impressions[rank] = self.impressions.get(rank, 0.0) + 1.0

    def clicked(self, rank: int, *, explored: bool) -> None:
        if explored and rank in self.slots:
            self.clicks[rank] = self.clicks.get(rank, 0.0) + 1.0

    def _ctr(self, rank: int) -> float | None:
        n = self.impressions.get(rank, 0.0)
        if n < _MIN_IMPRESSIONS:
            return None
        return (self.clicks.get(rank, 0.0) + 0.5) / (n + 1.0)

    def __call__(self, rank: int) -> float:
        """Estimated probability that a shopper examines ``rank`` (0-based)."""
        if not self.slots or rank < min(self.slots):
            return prior(rank)
        top = min(self.slots)
        slot = max(s for s in self.slots if s <= rank)
        base, here = self._ctr(top), self._ctr(slot)
        if base is None or here is None or base <= 0:
            return prior(rank)
        return min(1.0, max(_FLOOR, prior(top) * here / base))

    def state(self) -> dict[str, dict[int, float]]:
        return {"impressions": dict(self.impressions), "clicks": dict(self.clicks)}
