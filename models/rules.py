"""Merchandising rules: the last stage of a search, after retrieval, fusion and the ranker.

Pure logic over ranked :class:`~models.store.Hit` lists: no Kafka, no store. A pinned product that retrieval
did not return is fetched through a :data:`PinLookup` the caller passes, so the caller decides what may be
shown (the searcher applies the request's filters to it).

How a rule applies, decided here once:

* **When.** Active from ``starts_at`` (inclusive) to ``ends_at`` (exclusive), epoch ms; a missing bound is
  open. A ``deleted`` rule never applies.
* **Where.** ``queries`` match the request's query after :func:`normalise` (lower-case, whitespace
  collapsed), exactly. ``categories`` match the request's *category filter* (normalised the same way): the
  category the shopper browses, not the item's own category, which is what a ``category`` *target*
  selects. With both given both must hold; with neither the rule applies to every search of its tenant.
* **What.** ``product_id`` exactly; ``brand``, ``category`` (any level of the item's category path) and
  ``attribute`` values case-insensitively after :func:`normalise`. An attribute holding a list matches when
  any element does; numbers and booleans compare by value (``"2"`` matches ``2.0``, ``"true"`` matches
  ``True``). Every name → value pair of an attribute target must match.
* **Conflicts.** hide beats pin beats boost/bury. A hidden product is gone even when pinned; a pinned product
  ignores boosts and buries; the factors of all boosts and buries that match an item multiply.
* **Scores.** A factor multiplies a non-negative score and divides a negative one, so a boost always raises
  an item. Items are re-sorted by the new score, stably: equal scores keep the ranker's order.
* **Pins.** Placed in order of ``position``, then newest ``updated_at``, then ``rule_id``; a pin whose slot
  is taken takes the next free one, and a product pinned by two rules keeps its first placement. A pin at or
  beyond ``page_size`` does nothing; a slot past the end of a short list becomes the end of the list.
* **Provenance.** Each returned item lists the ids of the rules that changed it: the pin that placed it, or
  the boosts and buries that scaled it (in rule-id order); ``scores["rules"]`` holds their combined factor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from models.store import Hit
from schemas import MerchandisingRule, RuleTarget

__all__ = [
    "PinLookup",
    "RuleSource",
    "RuleStatus",
    "RuledHit",
    "apply_rules",
    "in_scope",
    "matches",
    "normalise",
    "rule_status",
    "without_hidden",
]

#: Pinned product ids that retrieval did not return → the hits among them that may be shown.
PinLookup = Callable[[Sequence[str]], Sequence[Hit]]
#: A tenant's current rules (deleted ones may be included; they are skipped).
RuleSource = Callable[[str], Sequence[MerchandisingRule]]
RuleStatus = Literal["active", "scheduled", "expired", "deleted"]


@dataclass(frozen=True)
class RuledHit:
    """A hit on the final page and the ids of the rules that changed its place or score."""

    hit: Hit
    rules: tuple[str, ...] = ()


def normalise(text: str) -> str:
    """Lower-case, whitespace collapsed: how queries, categories and values are compared.

    >>> normalise("  Red   JACKET ")
    'red jacket'
    """
    return " ".join(text.split()).casefold()


def rule_status(rule: MerchandisingRule, now_ms: int) -> RuleStatus:
    """Where ``rule`` stands at ``now_ms``."""
    if rule.deleted:
        return "deleted"
    if rule.starts_at is not None and now_ms < rule.starts_at:
        return "scheduled"
    if rule.ends_at is not None and now_ms >= rule.ends_at:
        return "expired"
    return "active"


def in_scope(rule: MerchandisingRule, *, query: str, category: str | None, now_ms: int) -> bool:
    """True when ``rule`` is active at ``now_ms`` for a search of ``query`` within ``category``."""
    if rule_status(rule, now_ms) != "active":
        return False
    if rule.queries is not None and normalise(query) not in {normalise(q) for q in rule.queries}:
        return False
    return rule.categories is None or (
        category is not None and normalise(category) in {normalise(c) for c in rule.categories}
    )


def matches(target: RuleTarget, product_id: str, payload: Mapping[str, Any]) -> bool:
    """True when the product (its id and stored payload) is one ``target`` selects."""
    return _Selector.of(target).selects(product_id, _Facts.of(payload))


_TRUE, _FALSE = frozenset({"true", "yes", "1"}), frozenset({"false", "no", "0"})


@dataclass(frozen=True)
class _Facts:
    """What targets compare in a payload, normalised once per hit rather than once per rule."""

    brand: str | None
    categories: frozenset[str]
    attributes: Mapping[str, Any]

    @staticmethod
    def of(payload: Mapping[str, Any]) -> _Facts:
        brand = payload.get("brand")
        attrs = payload.get("attributes")
        return _Facts(
            normalise(brand) if isinstance(brand, str) else None,
            frozenset(normalise(c) for c in payload.get("category_path") or () if isinstance(c, str)),
            {k: _normal_value(v) for k, v in attrs.items()} if isinstance(attrs, Mapping) else {},
        )


@dataclass(frozen=True)
class _Selector:
    """A rule target with its values normalised once per search."""

    product_id: str | None
    brand: str | None
    category: str | None
    attribute: tuple[tuple[str, str, float | None], ...]  # name, normalised value, value as a number

    @staticmethod
    def of(t: RuleTarget) -> _Selector:
        attrs = tuple((name, normalise(v), _number(v)) for name, v in (t.attribute or {}).items())
        return _Selector(t.product_id, normalise(t.brand) if t.brand is not None else None,
                         normalise(t.category) if t.category is not None else None, attrs)

    def selects(self, product_id: str, facts: _Facts) -> bool:
        if self.product_id is not None:
            return product_id == self.product_id
        if self.brand is not None:
            return facts.brand == self.brand
        if self.category is not None:
            return self.category in facts.categories
        return bool(self.attribute) and all(
            name in facts.attributes and _value_matches(facts.attributes[name], text, number)
            for name, text, number in self.attribute
        )


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _normal_value(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_normal_value(v) for v in value)
    return normalise(value) if isinstance(value, str) else value


def _value_matches(value: Any, text: str, number: float | None) -> bool:
    """``value`` as :func:`_normal_value` left it."""
    if isinstance(value, tuple):
        return any(_value_matches(v, text, number) for v in value)
    if isinstance(value, bool):  # before numbers: bool is an int
        return text in (_TRUE if value else _FALSE)
    if isinstance(value, (int, float)):
        return number is not None and math.isclose(float(value), number, rel_tol=1e-9, abs_tol=1e-12)
    return isinstance(value, str) and value == text


def without_hidden(items: Sequence[Hit], rules: Iterable[MerchandisingRule], *, query: str, category: str | None,
                   now_ms: int) -> list[Hit]:
    """``items`` less those a hide rule in scope removes (what facets should count)."""
    hides = [_Selector.of(r.target) for r in rules
             if r.action == "hide" and in_scope(r, query=query, category=category, now_ms=now_ms)]
    return [h for h in items if not any(sel.selects(h.product_id, _Facts.of(h.payload)) for sel in hides)]


def _scaled(score: float, factor: float) -> float:
    # Dense cosine scores can be negative; multiplying one by a boost would lower it.
    return score * factor if score >= 0 else score / factor


def _pin_order(rule: MerchandisingRule) -> tuple[int, int, str]:
    return (rule.position or 0, -rule.updated_at, rule.rule_id)


def apply_rules(
    items: Sequence[Hit],
    rules: Iterable[MerchandisingRule],
    *,
    query: str,
    category: str | None,
    now_ms: int,
    page_size: int,
    lookup: PinLookup | None = None,
) -> list[RuledHit]:
    """The first ``page_size`` of ``items`` (ranked, best first) after the rules in scope (see module doc).

    ``items`` should run longer than ``page_size`` so that hidden and buried products leave room for others.
    ``lookup`` fetches pinned products missing from ``items``; without it such pins are skipped.
    """
    live = sorted((r for r in rules if in_scope(r, query=query, category=category, now_ms=now_ms)),
                  key=lambda r: r.rule_id)
    if not live or page_size <= 0:
        return [RuledHit(h) for h in items[: max(page_size, 0)]]
    hides = [_Selector.of(r.target) for r in live if r.action == "hide"]
    pins = sorted((r for r in live if r.action == "pin" and (r.position or 0) < page_size), key=_pin_order)
    scalers = [(r, _Selector.of(r.target)) for r in live if r.action in ("boost", "bury")]
    facts: dict[str, _Facts] = {}

    def facts_of(hit: Hit) -> _Facts:
        if (f := facts.get(hit.product_id)) is None:
            f = facts[hit.product_id] = _Facts.of(hit.payload)
        return f

    def hidden(hit: Hit) -> bool:
        return bool(hides) and any(sel.selects(hit.product_id, facts_of(hit)) for sel in hides)

    visible = [h for h in items if not hidden(h)]
    by_id = {h.product_id: h for h in visible}
    missing = [pid for r in pins if (pid := r.target.product_id) is not None and pid not in by_id]
    if missing and lookup is not None:
        hidden_ids = {h.product_id for h in items} - by_id.keys()  # hidden ones stay hidden
        for h in lookup(list(dict.fromkeys(p for p in missing if p not in hidden_ids))):
            if h.product_id not in by_id and not hidden(h):
                by_id[h.product_id] = h

    slots: dict[int, RuledHit] = {}
    placed: set[str] = set()
    for rule in pins:
        pid = rule.target.product_id
        if pid is None or pid in placed or pid not in by_id:
            continue
        slot = rule.position or 0
        while slot in slots:
            slot += 1
        if slot >= page_size:
            continue  # no room on the page: the product keeps its ranked place
        slots[slot] = RuledHit(by_id[pid], (rule.rule_id,))
        placed.add(pid)

    rest = [_scale(h, facts_of(h), scalers) if scalers else RuledHit(h) for h in visible if h.product_id not in placed]
    rest.sort(key=lambda r: -r.hit.score)  # stable: ties keep the ranker's order

    page: list[RuledHit] = []
    queue = iter(rest)
    for slot in range(page_size):
        if slot in slots:
            page.append(slots.pop(slot))
            continue
        nxt = next(queue, None)
        if nxt is None:
            break
        page.append(nxt)
    page.extend(slots[s] for s in sorted(slots))  # pins past the end of a short list close it
    return page[:page_size]


def _scale(hit: Hit, facts: _Facts, scalers: Sequence[tuple[MerchandisingRule, _Selector]]) -> RuledHit:
    hits = [r for r, sel in scalers if sel.selects(hit.product_id, facts)]
    if not hits:
        return RuledHit(hit)
    factor = math.prod(r.factor or 1.0 for r in hits)
    scored = replace(hit, score=_scaled(hit.score, factor), scores={**hit.scores, "rules": factor})
    return RuledHit(scored, tuple(r.rule_id for r in hits))
