"""Simulated shoppers with hidden preferences, for `shoprank simulate` (no Kafka here).

A *world* is a catalogue plus queries with true relevance: from the seeded catalogue generator (its
ground-truth topics: a query is a few topics of some product, relevant products carry them all) or from
a labelled set in the ``../shared/data`` format (grades 0-2 become relevance 0, 0.5, 1; titles only, so
prices and margins are synthesised from a hash of the product id, documented in :func:`labelled_world`).

Every product also has a hidden *appeal* in [0, 1] (how well it sells once seen: photos, reviews,
value), drawn from a hash of its id, which no ranking feature can see; shoppers:

- examine rank ``r`` with probability ``1 / (1 + r) ** 0.8`` (position bias) and stop after a purchase;
- click an examined product with probability ``relevance × (0.1 + 0.5 × appeal)``, plus 0.01 noise;
- after a click, add to cart with probability ``relevance × (0.05 + 0.45 × appeal)`` and buy 60% of carts.

Calibrated to the shape of real shop search: about half of searches get a click and roughly one in
eight ends in a purchase (published e-commerce search conversion is mostly 2-15%), most of it on a
minority of products; the earlier, more generous setting (40% conversion) left ranking little to win.

So a ranker that learns which relevant products convert beats the static order, and new products
(launched during the run, with no history) must be explored to be found.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from schemas import CatalogueUpdate, RankedItem
from streams.samples.generator import generate_catalogue, product_topics

__all__ = ["World", "Query", "Reaction", "generated_world", "labelled_world", "react", "examine"]


def _unit(text: str) -> float:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


@dataclass(frozen=True)
class Query:
    text: str
    relevance: dict[str, float]  # product id -> true relevance in [0, 1]; absent = 0


@dataclass
class World:
    tenant: str
    catalogue: list[CatalogueUpdate]
    queries: list[Query]
    appeal: dict[str, float] = field(default_factory=dict)
    new_products: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.appeal:
            # Beta(2, 3)-like via the inverse CDF of a hashed uniform: most products middling, a few stars.
            self.appeal = {u.product_id: _unit("appeal:" + u.product_id) ** 1.6 for u in self.catalogue}
        self.price = {u.product_id: (u.price or 0.0) for u in self.catalogue}
        self.margin = {u.product_id: (u.margin or 0.0) for u in self.catalogue}

    def pick_query(self, rng: random.Random) -> Query:
        # Zipf-like popularity: a few head queries and a long tail, as in real shops.
        i = min(len(self.queries) - 1, int(len(self.queries) * rng.random() ** 2.5))
        return self.queries[i]


def examine(rank: int) -> float:
    return 1.0 / (1.0 + rank) ** 0.8


@dataclass
class Reaction:
    clicks: list[tuple[int, str]] = field(default_factory=list)  # (rank, product id)
    carts: list[tuple[int, str]] = field(default_factory=list)
    purchases: list[tuple[int, str]] = field(default_factory=list)


def react(world: World, query: Query, items: Iterable[RankedItem], rng: random.Random) -> Reaction:
    """What one shopper does with one results page."""
    out = Reaction()
    for item in items:
        if rng.random() >= examine(item.rank):
            continue
        rel = query.relevance.get(item.product_id, 0.0)
        appeal = world.appeal.get(item.product_id, 0.0)
        if rng.random() >= rel * (0.1 + 0.5 * appeal) + 0.01:
            continue
        out.clicks.append((item.rank, item.product_id))
        if rng.random() < rel * (0.05 + 0.45 * appeal):
            out.carts.append((item.rank, item.product_id))
            if rng.random() < 0.6:
                out.purchases.append((item.rank, item.product_id))
                break
    return out


def generated_world(products: int = 3_000, *, seed: int = 11, tenant: str = "sim", queries: int = 400,
                    new_share: float = 0.1, now_ms: int = 0) -> World:
    """The catalogue generator's products and intent queries (type [+ colour] [+ brand])."""
    catalogue = generate_catalogue(products, seed=seed, tenant=tenant)
    rng = random.Random(seed)
    topics = {u.product_id: product_topics(u) for u in catalogue}
    new = frozenset(u.product_id for u in catalogue if _unit("new:" + u.product_id) < new_share)
    if now_ms:  # launch dates: new products this week, the rest a year ago
        catalogue = [u.model_copy(update={"created_at": now_ms - (2 if u.product_id in new else 365) * 86_400_000})
                     for u in catalogue]
    seen: set[str] = set()
    out: list[Query] = []
    attempts = 0
    while len(out) < queries and attempts < queries * 20:
        attempts += 1
        src = rng.choice(catalogue)
        t = topics[src.product_id]
        kind = [x for x in t if x.startswith("type:")]
        if not kind:
            continue
        intent = {kind[0]}
        extra = [x for x in t if x.startswith(("colour:", "material:"))]
        if extra and rng.random() < 0.5:
            intent.add(rng.choice(extra))
        text = " ".join(x.split(":", 1)[1] for x in sorted(intent, key=lambda x: not x.startswith(("colour", "material"))))
        if text in seen:
            continue
        relevant = {pid: 1.0 for pid, pt in topics.items() if intent <= pt}
        if len(relevant) < 3:
            continue
        seen.add(text)
        out.append(Query(text, relevant))
    return World(tenant, catalogue, out, new_products=new)


def labelled_world(path: Path, *, tenant: str = "sim", products: int = 8_000, queries: int = 600,
                   seed: int = 11, new_share: float = 0.1, now_ms: int = 0) -> World:
    """A labelled set (products.jsonl, queries.tsv, qrels.txt). Prices are log-normal around 40 (5 to
    ~800) and margins 5-45%, both from a hash of the product id, because the set has titles only.
    The catalogue is every judged product of the chosen queries plus unjudged ones up to ``products``."""
    rng = random.Random(seed)
    qrels: dict[str, dict[str, float]] = {}
    for line in (path / "qrels.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 4:
            qrels.setdefault(parts[0], {})[parts[2]] = int(parts[3]) / 2
    texts = dict(line.split("\t", 1) for line in (path / "queries.tsv").read_text().splitlines() if "\t" in line)
    usable = sorted(q for q, rel in qrels.items() if q in texts and sum(1 for g in rel.values() if g >= 1) >= 2)
    chosen = rng.sample(usable, min(queries, len(usable)))
    judged = {pid for q in chosen for pid in qrels[q]}
    titles: dict[str, str] = {}
    extra: list[tuple[str, str]] = []
    with (path / "products.jsonl").open("rb") as f:
        for raw in f:
            rec = orjson.loads(raw)
            pid, title = str(rec["product_id"]), rec.get("title") or ""
            if pid in judged:
                titles[pid] = title
            elif title:
                extra.append((pid, title))
    rng.shuffle(extra)
    for pid, title in extra[: max(0, products - len(titles))]:
        titles[pid] = title
    new = frozenset(pid for pid in titles if _unit("new:" + pid) < new_share)
    catalogue = [
        CatalogueUpdate(
            tenant=tenant, product_id=pid, updated_at=1, title=title[:1000],
            price=round(math.exp(math.log(40) + 1.1 * _gauss(pid)), 2), currency="USD",
            margin=round(0.05 + 0.4 * _unit("margin:" + pid), 3), stock=10,
            created_at=(now_ms - (2 if pid in new else 365) * 86_400_000) if now_ms else None,
        )
        for pid, title in titles.items()
    ]
    qs = [Query(texts[q].strip(), {p: g for p, g in qrels[q].items() if g > 0}) for q in chosen]
    return World(tenant, catalogue, qs, new_products=new)


def _gauss(pid: str) -> float:
    u1 = max(1e-12, _unit("p1:" + pid))
    u2 = _unit("p2:" + pid)
    return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)
