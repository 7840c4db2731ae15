"""The pixel collector: keys stored hashed, origins, size and rate limits, tenant isolation.

The rules are tested on the Collector directly; then one worker on the real broker shows that what
POST /v1/events accepts reaches the pixel topic exactly, and that nothing it refuses does.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas import PixelEvent, decode
from streams.broker import EmbeddedBroker
from streams.collector import Collector, CollectorError
from streams.keys import KeyRing, create_key, read_keys, revoke_key
from streams.kafka import read_topic
from streams.pixel_js import pixel_minified
from streams.settings import Settings

PAGE = "https://shop.example"


def event(tenant: str = "demo", **kw: Any) -> dict[str, Any]:
    return {"event_id": uuid.uuid4().hex, "tenant": tenant, "type": "click", "user_id": "visitor-42",
            "session_id": "s1", "client_ts": int(time.time() * 1000), "search_id": "q1", "product_id": "p1",
            "position": 0, **kw}


def body(key: str, *events: dict[str, Any]) -> bytes:
    return orjson.dumps({"key": key, "events": list(events)})


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    return tmp_path / "keys.json"


def collector(keyfile: Path, **security: Any) -> Collector:
    settings = Settings(tenants=("demo", "acme"), security=security)  # type: ignore[arg-type]
    return Collector(settings, KeyRing(keyfile, recheck_s=0))


def refused(c: Collector, raw: bytes, origin: str | None = PAGE) -> CollectorError:
    with pytest.raises(CollectorError) as info:
        c.admit(raw, origin=origin)
    return info.value


def test_keys_are_stored_hashed_and_shown_once(keyfile: Path) -> None:
    record, key = create_key(keyfile, "demo", "write", (PAGE + ":443/",))
    stored = keyfile.read_text()
    assert key.startswith("sr_pk_") and key not in stored
    assert record.hash in stored and record.origins == (PAGE,)  # normalised as browsers send Origin
    assert read_keys(keyfile) == [record]
    assert oct(keyfile.stat().st_mode & 0o777) == "0o600"


def test_a_valid_batch_is_admitted_keyed_by_session_with_the_user_id_pseudonymised(keyfile: Path) -> None:
    _, key = create_key(keyfile, "demo", "write", (PAGE,))
    got = collector(keyfile).admit(body(key, event(), event(type="impression", items=["p1", "p2"])), origin=PAGE)
    assert [k for k, _ in got.records] == [b"demo:s1", b"demo:s1"]
    events = [decode(PixelEvent, v) for _, v in got.records]
    assert all(e.user_id.startswith("h:") and "visitor-42" not in e.user_id for e in events)
    assert all(e.server_ts is not None for e in events)
    same = collector(keyfile).admit(body(key, event()), origin=PAGE)
    assert decode(PixelEvent, same.records[0][1]).user_id == events[0].user_id  # stable pseudonym


def test_keys_origins_and_tenants_are_enforced(keyfile: Path) -> None:
    rec, demo_key = create_key(keyfile, "demo", "write", (PAGE,))
    _, read_key = create_key(keyfile, "demo", "read")
    c = collector(keyfile)
    assert refused(c, body("sr_pk_nope", event())).status == 401
    assert refused(c, body(read_key, event())).status == 401  # a read key cannot write
    assert refused(c, body(demo_key, event()), origin="https://evil.example").code == "origin_not_allowed"
    cross = refused(c, body(demo_key, event(), event(tenant="acme")))  # demo's key writing for acme
    assert (cross.status, cross.code) == (403, "tenant_mismatch") and cross.details[0]["index"] == 1
    assert c.admit(body(demo_key, event()), origin=None).records  # server-side senders send no Origin
    revoke_key(keyfile, rec.id)
    assert refused(c, body(demo_key, event())).code == "invalid_key"


def test_malformed_requests_get_a_reason_and_nothing_is_admitted(keyfile: Path) -> None:
    _, key = create_key(keyfile, "demo")
    c = collector(keyfile, max_request_bytes=4096, max_events_per_request=3)
    assert refused(c, b"{not json").status == 400
    assert refused(c, b"[1, 2]").code == "invalid_body"
    assert refused(c, body(key)).code == "no_events"
    assert refused(c, body(key, *[event()] * 4)).code == "too_many_events"
    assert refused(c, body(key, event(page_url="x" * 5000))).status == 413
    bad = refused(c, body(key, event(), event(type="purchase"), event(client_ts=int(time.time() * 1000) + 10**9)))
    assert bad.status == 422
    assert [(d["index"], d["error"]) for d in bad.details] == [(1, "missing_field"), (2, "future_timestamp")]
    assert "value and currency" in bad.details[0]["message"]


def test_requests_beyond_the_rate_get_429_with_retry_after(keyfile: Path) -> None:
    _, key = create_key(keyfile, "demo")
    _, other = create_key(keyfile, "acme")
    c = collector(keyfile, rate_per_key_per_s=1.0, rate_burst=3.0)
    now = 1_700_000_000_000
    for _ in range(3):
        c.admit(body(key, event(client_ts=now)), origin=None, now_ms=now)
    err = refused_at(c, body(key, event(client_ts=now)), now)
    assert err.status == 429 and err.retry_after_s is not None and 0 < err.retry_after_s <= 1.0
    assert c.admit(body(other, event(tenant="acme", client_ts=now)), origin=None, now_ms=now).records  # own bucket
    assert c.admit(body(key, event(client_ts=now)), origin=None, now_ms=now + 1000).records  # refilled


def refused_at(c: Collector, raw: bytes, now_ms: int) -> CollectorError:
    with pytest.raises(CollectorError) as info:
        c.admit(raw, origin=None, now_ms=now_ms)
    return info.value


def test_the_served_pixel_is_small() -> None:
    js = pixel_minified()
    assert len(js) < 5 * 1024, len(js)
    assert b"sendBeacon" in js and b"/v1/events" in js and b"//" not in js.replace(b"://", b"")


# --- over HTTP, on the real broker -------------------------------------------------------------


def post(url: str, raw: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
    req = urllib.request.Request(url, data=raw, method="POST", headers={"Content-Type": "text/plain", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.integration
def test_the_collector_publishes_exactly_what_it_accepts(
    broker: EmbeddedBroker, prefix: str, make_worker: Any, tmp_path: Path
) -> None:
    keyfile = tmp_path / "keys.json"
    _, demo_w = create_key(keyfile, "demo", "write", (PAGE,))
    _, demo_r = create_key(keyfile, "demo", "read")
    _, acme_r = create_key(keyfile, "acme", "read")
    worker = make_worker(prefix, extra_env={"SHOPRANK_SECURITY_KEYS_FILE": str(keyfile),
                                            "SHOPRANK_SECURITY_REQUIRE_READ_KEY": "true"})
    url = worker.url + "/v1/events"
    good = [event(session_id=f"s{i}") for i in range(5)]
    status, answer, headers = post(url, body(demo_w, *good[:3]), {"Origin": PAGE})
    assert (status, answer) == (202, {"accepted": 3}) and headers["Access-Control-Allow-Origin"] == PAGE
    assert post(url, body(demo_w, *good[3:]), {"Origin": PAGE})[0] == 202
    refusals = [
        post(url, body(demo_w, event(type="purchase"))),  # no value
        post(url, body(demo_w, event(tenant="acme"))),  # another tenant
        post(url, body(demo_w, event()), {"Origin": "https://evil.example"}),
        post(url, body("sr_pk_forged", event())),
        post(url, b"\xff\xfe not json"),
        post(url, body(demo_w, event(page_url="x" * 70_000))),
    ]
    assert [r[0] for r in refusals] == [422, 403, 403, 401, 400, 413]
    assert all(r[1]["error"] and r[1]["message"] for r in refusals)

    async def read() -> list[PixelEvent]:
        return [decode(PixelEvent, value) async for _, _, _, value, _ in
                read_topic(broker.bootstrap, f"{prefix}shoprank.pixel", idle_timeout_s=3)]

    on_topic = asyncio.run(read())
    assert sorted(e.event_id for e in on_topic) == sorted(e["event_id"] for e in good)

    # Read keys: a tenant reads its own analytics only.
    analytics = worker.url + "/v1/analytics/demo"
    assert get(analytics)[0] == 401
    assert get(analytics, {"Authorization": f"Bearer {acme_r}"})[0] == 403
    assert get(analytics, {"Authorization": f"Bearer {demo_w}"})[0] == 401  # a write key cannot read
    assert get(analytics, {"Authorization": f"Bearer {demo_r}"})[0] == 200
    status, js = get(worker.url + "/v1/pixel.js")
    assert status == 200 and js == pixel_minified()
