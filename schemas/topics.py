"""Every topic shoprank uses: name, record type, key and partition count, in one place."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from schemas.base import Record
from schemas.catalogue import CatalogueUpdate
from schemas.deadletter import DeadLetter
from schemas.interactions import AttributedInteraction, SearchLog
from schemas.pixel import PixelEvent
from schemas.privacy import ForgetUser
from schemas.ranker import RankerSnapshot
from schemas.rules import MerchandisingRule
from schemas.search import SearchRequest, SearchResult

__all__ = ["TopicSpec", "TOPICS", "TopicName", "topic_spec"]

TopicName = Literal[
    "catalogue", "search-requests", "search-results", "pixel", "searches", "interactions", "rules", "privacy",
    "rankers", "dead-letters",
]


def _join(*fields: str) -> Callable[[Mapping[str, Any]], str | None]:
    """Key builder: ``tenant:id``. Tenant-scoped keys keep a shop's records for one entity in order."""

    def key(value: Mapping[str, Any]) -> str | None:
        parts = [value.get(f) for f in fields]
        if any(not isinstance(p, str) or not p for p in parts):
            return None
        return ":".join(parts)  # type: ignore[arg-type]

    return key


@dataclass(frozen=True)
class TopicSpec:
    """A topic's contract. ``name`` is logical; the broker-side name is ``prefix + "shoprank." + name``."""

    name: TopicName
    record: type[Record]
    key_doc: str
    key: Callable[[Mapping[str, Any]], str | None]
    partitions: int
    compacted: bool = False
    description: str = ""

    def full_name(self, prefix: str = "") -> str:
        return f"{prefix}shoprank.{self.name}"


TOPICS: dict[TopicName, TopicSpec] = {
    spec.name: spec
    for spec in (
        TopicSpec(
            "catalogue", CatalogueUpdate, "tenant:product_id", _join("tenant", "product_id"), 4,
            description="Product upserts and deletes.",
        ),
        TopicSpec(
            "search-requests", SearchRequest, "tenant:request_id", _join("tenant", "request_id"), 4,
            description="Search requests from the gateway and other clients.",
        ),
        TopicSpec(
            "search-results", SearchResult, "request_id", _join("request_id"), 4,
            description="Default reply topic for search results.",
        ),
        TopicSpec(
            "pixel", PixelEvent, "tenant:session_id", _join("tenant", "session_id"), 4,
            description="Shopper events from the pixel; keyed by session so one shopper's events stay in order.",
        ),
        TopicSpec(
            "searches", SearchLog, "tenant:session_id", _join("tenant", "session_id"), 4,
            description="What each answered search showed, with ranker features; co-partitioned with pixel.",
        ),
        TopicSpec(
            "interactions", AttributedInteraction, "tenant", _join("tenant"), 4,
            description="Outcomes attributed to the search that produced them; one tenant learns on one partition.",
        ),
        TopicSpec(
            "rules", MerchandisingRule, "tenant:rule_id", _join("tenant", "rule_id"), 1, compacted=True,
            description="Merchandising rules; compacted, the latest version of each rule wins.",
        ),
        TopicSpec(
            "privacy", ForgetUser, "tenant:user_key", _join("tenant", "user_key"), 1, compacted=True,
            description="Shoppers to forget: every worker drops their events from then on.",
        ),
        TopicSpec(
            "rankers", RankerSnapshot, "tenant", _join("tenant"), 1, compacted=True,
            description="Each tenant's learned ranker, published by the worker that learns it for all the others.",
        ),
        TopicSpec(
            "dead-letters", DeadLetter, "source key, or none", lambda v: None, 1,
            description="Messages an agent could not use, with reason, origin and original bytes.",
        ),
    )
}


def topic_spec(name: str) -> TopicSpec:
    """Look a topic up by logical name (``pixel``) or broker name (``shoprank.pixel``)."""
    short = name.rsplit("shoprank.", 1)[-1]
    try:
        return TOPICS[short]  # type: ignore[index]
    except KeyError:
        known = ", ".join(TOPICS)
        raise KeyError(f"unknown topic {name!r}; known topics: {known}") from None
