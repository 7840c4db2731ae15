"""Weighted training examples for per-shop fine-tuning, and held-out splits that cannot leak.

Two sources give the same :class:`Example` rows: a labelled set (``products.jsonl``, ``queries.tsv``,
``qrels.txt``; a grade becomes a weight) and the attributed interactions the learning loop already
writes (``AttributedInteraction``; the outcome and the tenant's objective become a weight, older
evidence counts less). One row is one piece of evidence: aggregation into training pairs happens after
the split (:mod:`models.training.pairs`), so a test event can never lend its weight to a training row.

:func:`make_splits` holds out, at once, a set of queries, a set of products and the last part of the
time range; the training rows are those touching none of them, and each held-out part is scored
apart, so a model is judged on shoppers' new queries, on new products and on next week separately.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import orjson

from models.evaluation import LabelledSet
from models.indexer import product_text
from models.ranker.online import Objective
from schemas import CatalogueUpdate
from schemas.interactions import AttributedInteraction

__all__ = [
    "SPLITS",
    "Example",
    "OutcomeWeights",
    "SplitName",
    "Splits",
    "examples_from_interactions",
    "examples_from_labelled",
    "make_splits",
    "normalise_query",
    "read_catalogue",
    "read_interactions",
]

SplitName = Literal["time", "query", "product"]
#: ``time``: the last part of the time range; ``query``: queries never seen in training;
#: ``product``: products never seen in training.
SPLITS: tuple[SplitName, ...] = ("time", "query", "product")

_DAY_MS = 86_400_000
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Example:
    """One piece of evidence that ``text`` (product ``product_id``) does or does not answer ``query``.

    ``weight`` is the business weight of a positive (how much getting it right is worth) or the
    strength of a negative; ``grade`` is the relevance label used to score held-out rows
    (0 = not relevant). ``ts`` is when it happened, epoch ms (0 = undated, as in a labelled set).
    """

    query: str
    product_id: str
    text: str
    weight: float
    grade: int
    ts: int = 0

    @property
    def positive(self) -> bool:
        return self.grade > 0


def normalise_query(query: str) -> str:
    """The form two queries must share to count as the same (``Drill  Bits`` = ``drill bits``)."""
    return _SPACE.sub(" ", query.strip().lower())


# --------------------------------------------------------------------------------------- labelled set


def examples_from_labelled(data: LabelledSet, *, grade_weights: Mapping[int, float] | None = None
                           ) -> list[Example]:
    """One example per judgement; by default a grade ``g > 0`` weighs ``g`` and grade 0 is a negative.

    Grade-0 judgements are real negatives (an assessor saw them and said no), so they weigh 1 as
    negatives: they become hard negatives for their query.
    """
    texts = {p.product_id: product_text(p) for p in data.products}
    weights = dict(grade_weights or {})
    out = []
    for qid, judged in data.qrels.items():
        query = data.queries.get(qid)
        if not query:
            continue
        for pid, grade in sorted(judged.items()):
            if pid not in texts:
                continue
            weight = weights.get(grade, float(grade) if grade > 0 else 1.0)
            out.append(Example(query, pid, texts[pid], weight, max(grade, 0)))
    return out


# --------------------------------------------------------------------------------------- interactions


@dataclass(frozen=True)
class OutcomeWeights:
    """How much each outcome is worth as a positive, under a tenant's :class:`Objective`.

    A purchase weighs ``purchase × (1 + revenue·value + margin·margin)`` (the objective's revenue and
    margin weights, value and margin already multiplied by attribution credit), never less than
    ``purchase``: a sale at a loss is still a sale, the objective's job is to rank what earns more
    higher, not to teach the model that a bought product is irrelevant. So purchase > add-to-cart >
    click always holds. ``max_weight`` keeps one large order from drowning a thousand clicks.
    Shown-but-skipped products weigh ``skipped`` as weak negatives. Evidence loses half its weight
    every ``half_life_days`` (catalogues and tastes move).
    """

    objective: Objective = field(default_factory=Objective)
    click: float = 1.0
    add_to_cart: float = 2.0
    purchase: float = 4.0
    skipped: float = 0.5
    max_weight: float = 40.0
    half_life_days: float = 30.0

    def positive(self, record: AttributedInteraction) -> tuple[float, int]:
        """(weight before decay, grade) of a click, add-to-cart or purchase."""
        if record.outcome == "purchase":
            gain = self.objective.revenue * record.value + self.objective.margin * record.margin
            return min(self.max_weight, self.purchase * (1.0 + max(gain, 0.0))), 3
        if record.outcome == "add_to_cart":
            return self.add_to_cart, 2
        return self.click, 1

    def decay(self, ts: int, now: int) -> float:
        """The share of its weight that evidence ``now - ts`` old keeps."""
        if self.half_life_days <= 0:
            return 1.0
        age_days = max(0, now - ts) / _DAY_MS
        return math.pow(0.5, age_days / self.half_life_days)


def read_interactions(path: Path) -> Iterator[AttributedInteraction]:
    """``AttributedInteraction`` records from a JSON-lines file (``shoprank tail interactions`` output)."""
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                yield AttributedInteraction.model_validate(orjson.loads(line))


def read_catalogue(path: Path, *, tenant: str | None = None) -> dict[str, str]:
    """product id → the text it is indexed by, from ``CatalogueUpdate`` JSON lines (newest version wins)."""
    latest: dict[str, tuple[int, str]] = {}
    with path.open("rb") as f:
        for line in f:
            if not line.strip():
                continue
            obj = orjson.loads(line)
            if tenant is not None:
                obj["tenant"] = obj.get("tenant", tenant)
            u = CatalogueUpdate.model_validate(obj)
            if tenant is not None and u.tenant != tenant:
                continue
            if u.product_id not in latest or u.updated_at >= latest[u.product_id][0]:
                latest[u.product_id] = (u.updated_at, product_text(u))
    return {pid: text for pid, (_, text) in latest.items()}


def examples_from_interactions(records: Iterable[AttributedInteraction] | Path, catalogue: Mapping[str, str], *,
                               tenant: str | None = None, weights: OutcomeWeights | None = None,
                               now: int | None = None) -> list[Example]:
    """Positives from clicks, carts and purchases; weak negatives from what was shown above them and skipped.

    A product counts as skipped only if the shopper clicked, carted or bought something *below* it in
    the same search (skip-above): an item below every click may never have been looked at, so it says
    nothing. Products missing from ``catalogue`` are dropped (no text to learn from). ``now`` is the
    reference for time decay; by default the newest event, so the same file always gives the same rows.
    """
    w = weights or OutcomeWeights()
    rows = [r for r in (read_interactions(records) if isinstance(records, Path) else records)
            if tenant is None or r.tenant == tenant]
    if not rows:
        return []
    ref = now if now is not None else max(r.event_ts for r in rows)
    engaged: dict[str, dict[str, int]] = {}  # search_id -> product -> lowest position engaged
    for r in rows:
        if r.outcome != "impression" and r.product_id is not None and r.position is not None:
            seen = engaged.setdefault(r.search_id, {})
            seen[r.product_id] = min(seen.get(r.product_id, r.position), r.position)
    out: list[Example] = []
    for r in rows:
        if r.outcome == "impression":
            hits = engaged.get(r.search_id)
            if not hits or not r.items:
                continue
            deepest = max(hits.values())
            for item in r.items:
                if item.position < deepest and item.product_id not in hits and item.product_id in catalogue:
                    out.append(Example(r.query, item.product_id, catalogue[item.product_id],
                                       w.skipped * w.decay(r.search_ts, ref), 0, r.search_ts))
        elif r.product_id is not None and r.product_id in catalogue:
            base, grade = w.positive(r)
            out.append(Example(r.query, r.product_id, catalogue[r.product_id],
                               base * w.decay(r.event_ts, ref), grade, r.event_ts))
    return out


# --------------------------------------------------------------------------------------------- splits


@dataclass
class Splits:
    """Training rows and the held-out rows of each split; no held-out row shares what its split holds out.

    ``held_out`` records what was withheld (queries, products, the time cutoff) so a report can say so.
    """

    train: list[Example]
    tests: dict[SplitName, list[Example]]
    held_out: dict[str, object] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), **{f"test_{k}": len(v) for k, v in self.tests.items()}}


def make_splits(examples: list[Example], *, test_fraction: float = 0.2, splits: Iterable[SplitName] = SPLITS,
                seed: int = 0) -> Splits:
    """Hold out queries, products and the last ``test_fraction`` of the time range at once (seeded).

    * ``time``: rows after ``t_min + (1 - test_fraction)·(t_max - t_min)``; only when rows are dated
      (a labelled set is not, and gets no time split).
    * ``query``: a ``test_fraction`` sample of distinct (normalised) queries; its rows, up to the cutoff.
    * ``product``: a ``test_fraction`` sample of products; their rows on queries not held out, up to
      the cutoff.

    Training keeps only rows touching no held-out query, no held-out product and nothing after the
    cutoff, so each test set is leakage-free for what it measures; a test set with no positive row is
    dropped (it could not score anything).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    wanted = set(splits)
    rng = random.Random(seed)
    cutoff: int | None = None
    times = [e.ts for e in examples if e.ts > 0]
    if "time" in wanted and times and max(times) > min(times):
        lo, hi = min(times), max(times)
        cutoff = int(lo + (1 - test_fraction) * (hi - lo))
    queries = sorted({normalise_query(e.query) for e in examples})
    products = sorted({e.product_id for e in examples})
    held_q = set(rng.sample(queries, round(len(queries) * test_fraction))) if "query" in wanted else set()
    held_p = set(rng.sample(products, round(len(products) * test_fraction))) if "product" in wanted else set()

    train: list[Example] = []
    tests: dict[SplitName, list[Example]] = {"time": [], "query": [], "product": []}
    for e in examples:
        if cutoff is not None and e.ts > cutoff:
            tests["time"].append(e)
        elif normalise_query(e.query) in held_q:
            tests["query"].append(e)
        elif e.product_id in held_p:
            tests["product"].append(e)
        else:
            train.append(e)
    kept = {k: v for k, v in tests.items() if k in wanted and any(e.positive for e in v)}
    return Splits(train, kept, {"cutoff_ts": cutoff, "queries": len(held_q), "products": len(held_p),
                                "test_fraction": test_fraction, "seed": seed})
