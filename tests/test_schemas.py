"""Topic contracts: generated JSON Schemas match the records, codecs round-trip, bad input is named."""

from __future__ import annotations

import base64

import jsonschema
import orjson
import pytest

from schemas import (
    TOPICS,
    CatalogueUpdate,
    DeadLetter,
    DecodeError,
    MerchandisingRule,
    PixelEvent,
    SearchRequest,
    SearchResult,
    decode,
    encode,
    topic_spec,
)
from schemas.deadletter import MAX_KEPT_BYTES
from schemas.generate import SCHEMA_DIR, json_schemas, render
from streams.sample_events import BAD_INPUTS, bad_messages, valid_events

CONTEXTUAL = {"future_timestamp", "unknown_tenant", "duplicate_event"}  # need the deployment to judge

SAMPLES = {
    "catalogue": {"tenant": "demo", "product_id": "p1", "updated_at": 1, "title": "Red shoe", "price": 9.5,
                  "currency": "EUR", "category_path": ["Shoes", "Running"], "stock": 3, "attributes": {"size": 42}},
    "search-requests": {"request_id": "r1", "tenant": "demo", "query": "red shoes",
                        "filters": {"brand": ["Acme"], "price_max": 50.0, "in_stock": True}},
    "search-results": {"request_id": "r1", "tenant": "demo", "search_id": "s1", "answered_at": 5,
                       "items": [{"product_id": "p1", "rank": 0, "score": 0.9, "scores": {"dense": 0.8}}]},
    "pixel": {"event_id": "e1", "tenant": "demo", "type": "click", "user_id": "u1", "session_id": "s1",
              "client_ts": 1, "product_id": "p1", "position": 0, "search_id": "s1"},
    "searches": {"search_id": "s1", "tenant": "demo", "session_id": "x1", "query": "red shoes", "answered_at": 5,
                 "items": [{"product_id": "p1", "position": 0, "features": {"dense": 0.8, "bm25": 3.1}}]},
    "interactions": {"interaction_id": "e1:s1", "tenant": "demo", "search_id": "s1", "query": "red shoes",
                     "product_id": "p1", "position": 0, "outcome": "purchase", "credit": 0.5, "value": 10.0,
                     "margin": 2.5, "currency": "EUR", "event_ts": 9, "search_ts": 5},
    "rules": {"rule_id": "r1", "tenant": "demo", "action": "pin", "target": {"product_id": "p1"}, "position": 0,
              "updated_at": 1},
    "privacy": {"tenant": "demo", "user_key": "0123456789abcdef0123456789abcdef", "requested_at": 7},
    "rankers": {"tenant": "demo", "model": "river-lr", "updates": 3, "published_at": 9, "worker": "host:6066",
                "click": {"counts": {"dense": 3}, "means": {"dense": 0.5}, "variances": {"dense": 0.1},
                          "weights": {"dense": 0.2}, "intercept": -0.1, "iterations": 3},
                "buy": {"counts": {}, "means": {}, "variances": {}, "weights": {}, "intercept": 0.0, "iterations": 0},
                "impressions_by_slot": {"3": 250.0}, "clicks_by_slot": {"3": 12.0}},
    "dead-letters": {"reason": "invalid_json", "detail": "x", "source_topic": "t", "source_partition": 0,
                     "source_offset": 3, "value_b64": "eA==", "value_size": 1, "value_sha256": "0" * 64,
                     "agent": "a", "rejected_at": 1},
}


def test_checked_in_json_schemas_match_the_records() -> None:
    generated = json_schemas()
    on_disk = {p.stem for p in SCHEMA_DIR.glob("*.json")}
    assert on_disk == set(TOPICS), "a topic's schema file is missing or stale: run `make schemas`"
    for name, schema in generated.items():
        assert (SCHEMA_DIR / f"{name}.json").read_bytes() == render(schema), (
            f"schemas/jsonschema/{name}.json drifted from its record: run `make schemas`"
        )


@pytest.mark.parametrize("name", sorted(TOPICS))
def test_sample_round_trips_and_validates_against_its_json_schema(name: str) -> None:
    spec = TOPICS[name]  # type: ignore[index]
    record = decode(spec.record, orjson.dumps(SAMPLES[name]))
    assert decode(spec.record, encode(record)) == record
    jsonschema.validate(orjson.loads(encode(record)), json_schemas()[name])


def test_unknown_fields_are_tolerated_and_versions_checked() -> None:
    ev = decode(PixelEvent, orjson.dumps({**SAMPLES["pixel"], "brand_new_field": [1, 2]}))
    assert ev.event_id == "e1"
    with pytest.raises(DecodeError) as err:
        decode(PixelEvent, orjson.dumps({**SAMPLES["pixel"], "schema_version": 2}))
    assert err.value.reason == "unsupported_schema_version"


@pytest.mark.parametrize("msg", [m for m in bad_messages() if m.expect not in CONTEXTUAL],
                         ids=[n for n, (_, r) in BAD_INPUTS.items() if r not in CONTEXTUAL])
def test_each_kind_of_bad_pixel_input_gets_its_reason(msg) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DecodeError) as err:
        decode(PixelEvent, msg.value, max_bytes=64 * 1024)
    assert err.value.reason == msg.expect
    assert err.value.detail


def test_json_schema_and_decoder_agree_on_structural_errors() -> None:
    schema = json_schemas()["pixel"]
    good = orjson.loads(valid_events(1)[0].value)
    jsonschema.validate(good, schema)
    for broken in (
        {k: v for k, v in good.items() if k != "user_id"},
        {**good, "client_ts": "yesterday"},
        {**good, "type": "teleport"},
        {**good, "position": -1},
        {**good, "tenant": "Not A Slug"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)
        with pytest.raises(DecodeError):
            decode(PixelEvent, orjson.dumps(broken))


def test_strict_types_refuse_coercion() -> None:
    with pytest.raises(DecodeError) as err:
        decode(PixelEvent, orjson.dumps({**SAMPLES["pixel"], "position": "3"}))
    assert err.value.reason == "wrong_type"


def test_cross_field_rules() -> None:
    with pytest.raises(DecodeError, match="needs product_id"):
        decode(PixelEvent, orjson.dumps({**SAMPLES["pixel"], "product_id": None}))
    with pytest.raises(DecodeError, match="title"):
        decode(CatalogueUpdate, orjson.dumps({"tenant": "demo", "product_id": "p", "updated_at": 1}))
    assert decode(CatalogueUpdate, orjson.dumps({"op": "delete", "tenant": "demo", "product_id": "p",
                                                 "updated_at": 1})).op == "delete"
    with pytest.raises(DecodeError, match="factor"):
        decode(MerchandisingRule, orjson.dumps({**SAMPLES["rules"], "action": "boost"}))
    with pytest.raises(DecodeError, match="page_size"):
        decode(SearchRequest, orjson.dumps({**SAMPLES["search-requests"], "page_size": 0}))
    assert decode(SearchResult, orjson.dumps(SAMPLES["search-results"])).items[0].scores == {"dense": 0.8}


def test_dead_letter_keeps_original_bytes_and_cuts_huge_ones() -> None:
    small = b"\xff not json"
    letter = DeadLetter.keeping(small, b"k", reason="invalid_utf8", detail="d", source_topic="t",
                                source_partition=1, source_offset=2, agent="a", rejected_at=0)
    assert letter.value == small and letter.key == b"k" and not letter.value_truncated
    huge = b"x" * (MAX_KEPT_BYTES + 10)
    letter = DeadLetter.keeping(huge, None, reason="payload_too_large", detail="d", source_topic="t",
                                source_partition=0, source_offset=0, agent="a", rejected_at=0)
    assert letter.value_truncated and letter.value_size == len(huge) and letter.value == huge[:MAX_KEPT_BYTES]
    assert base64.b64decode(decode(DeadLetter, encode(letter)).value_b64) == huge[:MAX_KEPT_BYTES]


def test_topic_keys_are_tenant_scoped() -> None:
    assert topic_spec("pixel").key(SAMPLES["pixel"]) == "demo:s1"
    assert topic_spec("shoprank.catalogue").key(SAMPLES["catalogue"]) == "demo:p1"
    assert topic_spec("pixel").key({"tenant": "demo"}) is None
    with pytest.raises(KeyError, match="known topics"):
        topic_spec("nope")
