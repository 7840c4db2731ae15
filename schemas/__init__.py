"""Message contracts of every shoprank topic. Imports nothing else of shoprank's."""

from schemas.base import MAX_MESSAGE_BYTES, Record, decode, encode, validate
from schemas.catalogue import CatalogueUpdate
from schemas.deadletter import DeadLetter
from schemas.exceptions import DecodeError, RejectReason, ShoprankError
from schemas.interactions import OUTCOMES, AttributedInteraction, LoggedItem, Outcome, SearchLog
from schemas.pixel import EVENT_TYPES, EventType, PixelEvent
from schemas.privacy import ForgetUser
from schemas.ranker import LinearModelState, RankerSnapshot
from schemas.rules import MerchandisingRule, RuleTarget
from schemas.search import RankedItem, SearchError, SearchFilters, SearchRequest, SearchResult
from schemas.topics import TOPICS, TopicSpec, topic_spec

__all__ = [
    "MAX_MESSAGE_BYTES",
    "Record",
    "decode",
    "encode",
    "validate",
    "CatalogueUpdate",
    "DeadLetter",
    "DecodeError",
    "RejectReason",
    "ShoprankError",
    "EVENT_TYPES",
    "EventType",
    "PixelEvent",
    "OUTCOMES",
    "AttributedInteraction",
    "LoggedItem",
    "Outcome",
    "SearchLog",
    "ForgetUser",
    "LinearModelState",
    "RankerSnapshot",
    "MerchandisingRule",
    "RuleTarget",
    "RankedItem",
    "SearchError",
    "SearchFilters",
    "SearchRequest",
    "SearchResult",
    "TOPICS",
    "TopicSpec",
    "topic_spec",
]
