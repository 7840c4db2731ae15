"""Seeded pixel-event generator: realistic valid traffic plus every kind of bad input we reject.

Used by ``shoprank demo``, the integration tests and the benchmark, so all three see the same traffic.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import orjson

__all__ = ["SampleMessage", "valid_events", "BAD_INPUTS", "mixed_traffic"]


@dataclass(frozen=True)
class SampleMessage:
    key: bytes | None
    value: bytes
    expect: str  # "valid" or the expected dead-letter reason
    tenant: str | None = None
    type: str | None = None


def _event(rng: random.Random, tenant: str, now_ms: int) -> dict[str, object]:
    etype = rng.choices(["impression", "click", "add_to_cart", "purchase", "page_view"], [40, 30, 12, 6, 12])[0]
    session = f"s{rng.randrange(500)}"
    ev: dict[str, object] = {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "tenant": tenant,
        "type": etype,
        "user_id": f"u{rng.randrange(400)}",
        "session_id": session,
        "client_ts": now_ms - rng.randrange(60_000),
        "search_id": f"q{rng.randrange(10_000)}",
    }
    if etype == "impression":
        ev["items"] = [f"p{rng.randrange(2000)}" for _ in range(10)]
    elif etype != "page_view":
        price = round(rng.uniform(2, 300), 2)
        qty = rng.randint(1, 3)
        ev.update(product_id=f"p{rng.randrange(2000)}", position=rng.randrange(20), price=price, currency="EUR")
        if etype != "click":
            ev.update(quantity=qty, value=round(price * qty, 2))
    return ev


def _msg(ev: dict[str, object], expect: str = "valid") -> SampleMessage:
    key = f"{ev.get('tenant')}:{ev.get('session_id')}".encode()
    return SampleMessage(key, orjson.dumps(ev), expect, ev.get("tenant"), ev.get("type"))  # type: ignore[arg-type]


def valid_events(n: int, *, seed: int = 7, tenants: tuple[str, ...] = ("demo",)) -> list[SampleMessage]:
    """``n`` valid events spread over ``tenants``, deterministic for a given seed."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    return [_msg(_event(rng, rng.choice(tenants), now)) for _ in range(n)]


def _mutate(field: str, value: object) -> Callable[[dict[str, object]], dict[str, object]]:
    return lambda ev: {**ev, field: value}


def _drop(field: str) -> Callable[[dict[str, object]], dict[str, object]]:
    return lambda ev: {k: v for k, v in ev.items() if k != field}


def _purchase(ev: dict[str, object]) -> dict[str, object]:
    return {**ev, "type": "purchase", "product_id": "p1", "quantity": 1, "value": 10.0, "price": 10.0, "currency": "EUR"}


#: name → (build from a valid event, expected dead-letter reason). Raw-bytes cases ignore the event.
BAD_INPUTS: dict[str, tuple[Callable[[dict[str, object]], bytes], str]] = {
    "not json": (lambda ev: b"hello, not json", "invalid_json"),
    "bad utf-8": (lambda ev: b'{"event_id": "\xff\xfe"}', "invalid_utf8"),
    "json array": (lambda ev: b"[1, 2, 3]", "not_an_object"),
    "missing field": (lambda ev: orjson.dumps(_drop("user_id")(ev)), "missing_field"),
    "wrong type": (lambda ev: orjson.dumps(_mutate("client_ts", "yesterday")(ev)), "wrong_type"),
    "unknown event type": (lambda ev: orjson.dumps(_mutate("type", "teleport")(ev)), "unknown_event_type"),
    "negative price": (lambda ev: orjson.dumps({**_purchase(ev), "price": -5.0}), "invalid_value"),
    "1 MB payload": (lambda ev: orjson.dumps({**ev, "page_url": "x" * 1_000_000}), "payload_too_large"),
    "future timestamp": (lambda ev: orjson.dumps(_mutate("client_ts", int(time.time() * 1000) + 86_400_000)(ev)),
                         "future_timestamp"),
    "unknown tenant": (lambda ev: orjson.dumps(_mutate("tenant", "nobody")(ev)), "unknown_tenant"),
    "purchase without value": (lambda ev: orjson.dumps({**_purchase(ev), "value": None}), "missing_field"),
    "newer schema version": (lambda ev: orjson.dumps(_mutate("schema_version", 99)(ev)),
                             "unsupported_schema_version"),
    "empty object": (lambda ev: b"{}", "missing_field"),
}


def bad_messages(*, seed: int = 11, tenant: str = "demo") -> list[SampleMessage]:
    """One message per kind of bad input, each with its expected dead-letter reason."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    out = []
    for build, reason in BAD_INPUTS.values():
        ev = _event(rng, tenant, now)
        ev["type"] = "page_view"
        out.append(SampleMessage(f"{tenant}:{ev['session_id']}".encode(), build(ev), reason, tenant))
    return out


def mixed_traffic(n: int, *, bad_every: int = 20, seed: int = 7, tenants: tuple[str, ...] = ("demo",)) -> list[SampleMessage]:
    """``n`` messages: valid events with one bad one (cycling through the kinds) every ``bad_every``,
    and a duplicate of an earlier event now and then."""
    good = valid_events(n, seed=seed, tenants=tenants)
    bad = bad_messages(seed=seed, tenant=tenants[0])
    out: list[SampleMessage] = []
    for i, m in enumerate(good):
        if i and i % bad_every == 0:
            if (i // bad_every) % (len(bad) + 1) == len(bad):
                prev = out[-1] if out[-1].expect == "valid" else m
                out.append(SampleMessage(prev.key, prev.value, "duplicate_event", prev.tenant, prev.type))
            else:
                out.append(bad[(i // bad_every) % (len(bad) + 1)])
        out.append(m)
    return out[:n]
