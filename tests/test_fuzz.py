"""Property-based fuzzing of the decoders: any bytes in, a record or a DecodeError out, never a crash."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import TOPICS, DecodeError, PixelEvent, decode, encode

RECORDS = [spec.record for spec in TOPICS.values()]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=6),
    max_leaves=20,
)

FIELDS = list(PixelEvent.model_fields)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), record=st.sampled_from(RECORDS))
def test_arbitrary_bytes_never_crash_a_decoder(data: bytes, record: type) -> None:
    try:
        decode(record, data)
    except DecodeError as err:
        assert err.reason and err.detail


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=12), record=st.sampled_from(RECORDS))
def test_arbitrary_json_objects_never_crash_a_decoder(obj: dict, record: type) -> None:
    try:
        raw = orjson.dumps(obj)
    except orjson.JSONEncodeError:
        return
    try:
        decode(record, raw)
    except DecodeError as err:
        assert err.reason and err.detail


ids = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FFF, blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cs")),
    min_size=1,
    max_size=40,
)

pixel_events = st.builds(
    dict,
    event_id=ids,
    tenant=st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True),
    type=st.just("click"),
    user_id=ids,
    session_id=ids,
    client_ts=st.integers(0, 2**53),
    product_id=ids,
    position=st.integers(0, 1000),
    price=st.floats(0, 1e9, allow_nan=False),
    currency=st.sampled_from(["EUR", "USD", "GBP"]),
)


@settings(max_examples=200, deadline=None)
@given(obj=pixel_events)
def test_valid_events_round_trip_exactly(obj: dict) -> None:
    ev = decode(PixelEvent, orjson.dumps(obj))
    assert decode(PixelEvent, encode(ev)) == ev
    assert ev.event_id == obj["event_id"] and ev.client_ts == obj["client_ts"]
