"""Training pairs: a query, one product that answers it, its business weight, and hard negatives.

Rows from :mod:`models.training.data` are aggregated here, after the split, per (query, product):
weights add up (a click, a cart and a purchase of the same product are three pieces of evidence),
and a product is a positive for a query if any row says so. Hard negatives come from two places:
products judged or skipped for the query (grade 0), and products a current model ranks high for the
query that are not known to answer it (:func:`mine_hard_negatives`, over a ranked list).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.embedder import Embedder
from models.training.data import Example, normalise_query

__all__ = ["Pair", "build_pairs", "mine_hard_negatives"]


@dataclass(frozen=True)
class Pair:
    """One positive term of the loss.

    ``weight`` is normalised over the training set to a mean of 1, so a batch's loss stays on the
    scale the learning rate expects whatever currency or objective produced the weights.
    ``negatives`` are (product id, text) hard negatives; ``positives`` are all products known to
    answer the query, so that none of them is ever used as this query's negative in a batch.
    """

    query: str
    product_id: str
    text: str
    weight: float
    negatives: tuple[tuple[str, str], ...]
    positives: frozenset[str]


def build_pairs(examples: Sequence[Example], *, mined: Mapping[str, Sequence[tuple[str, str]]] | None = None,
                negatives_per_pair: int = 1, max_weight_ratio: float = 10.0, seed: int = 0) -> list[Pair]:
    """Aggregate ``examples`` into pairs, each with up to ``negatives_per_pair`` hard negatives (seeded).

    ``mined`` maps a normalised query to ranked (product id, text) candidates, e.g. from
    :func:`mine_hard_negatives`; labelled or skipped negatives come first, mined ones fill up.
    A weight above ``max_weight_ratio`` times the mean is clipped before normalising.
    """
    rng = random.Random(seed)
    pos: dict[str, dict[str, list[object]]] = {}  # query -> product -> [query text, text, weight]
    neg: dict[str, dict[str, str]] = {}
    for e in examples:
        q = normalise_query(e.query)
        if e.positive and e.weight > 0:
            slot = pos.setdefault(q, {}).setdefault(e.product_id, [e.query, e.text, 0.0])
            slot[2] = float(slot[2]) + e.weight  # type: ignore[arg-type]
        elif not e.positive:
            neg.setdefault(q, {})[e.product_id] = e.text
    raw: list[tuple[str, str, str, float, tuple[tuple[str, str], ...], frozenset[str]]] = []
    for q in sorted(pos):
        positives = frozenset(pos[q])
        labelled = [(p, t) for p, t in sorted(neg.get(q, {}).items()) if p not in positives]
        extra = [(p, t) for p, t in (mined or {}).get(q, ()) if p not in positives and p not in neg.get(q, {})]
        for pid in sorted(pos[q]):
            qtext, text, weight = pos[q][pid]
            picks = rng.sample(labelled, min(negatives_per_pair, len(labelled)))
            picks += extra[: negatives_per_pair - len(picks)]
            raw.append((str(qtext), pid, str(text), float(weight), tuple(picks), positives))  # type: ignore[arg-type]
    if not raw:
        return []
    mean = float(np.mean([r[3] for r in raw]))
    clipped = [min(r[3], max_weight_ratio * mean) for r in raw]
    scale = len(clipped) / sum(clipped)
    return [Pair(r[0], r[1], r[2], w * scale, r[4], r[5]) for r, w in zip(raw, clipped, strict=True)]


def mine_hard_negatives(embedder: Embedder, examples: Sequence[Example], pool: Mapping[str, str], *,
                        per_query: int = 5, skip_top: int = 0) -> dict[str, list[tuple[str, str]]]:
    """For each query with a positive, the ``per_query`` highest-ranked pool products not known to answer it.

    The ranked list is ``embedder``'s dense retrieval over ``pool`` (product id → text), i.e. what
    the current model gets wrong. ``skip_top`` drops the very top unlabelled hits, which in a sparse
    labelled set are often unjudged true answers rather than negatives.
    """
    queries: dict[str, str] = {}
    known: dict[str, set[str]] = {}
    for e in examples:
        q = normalise_query(e.query)
        known.setdefault(q, set()).add(e.product_id)
        if e.positive:
            queries.setdefault(q, e.query)
    if not queries or not pool:
        return {}
    ids = list(pool)
    docs = embedder.embed([pool[p] for p in ids])
    keys = sorted(queries)
    qv = embedder.embed([queries[q] for q in keys])
    depth = min(len(ids), per_query + skip_top + 64)
    out: dict[str, list[tuple[str, str]]] = {}
    for start in range(0, len(keys), 256):
        scores = qv[start : start + 256] @ docs.T
        top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
        for row, q in enumerate(keys[start : start + 256]):
            order = top[row][np.argsort(-scores[row, top[row]])]
            hits = [ids[i] for i in order if ids[i] not in known[q]][skip_top : skip_top + per_query]
            out[q] = [(p, pool[p]) for p in hits]
    return out
