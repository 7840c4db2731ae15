"""Forgetting a shopper: every worker drops their events from then on, whichever id form they carry."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from schemas import PixelEvent, encode
from streams.attribution import user_hasher
from streams.broker import EmbeddedBroker
from streams.privacy import forget_record, user_key_of
from tests.conftest import run_cli
from tests.test_search import send

SECRET = "shoprank-change-me"  # the default SHOPRANK_ATTRIBUTION_USER_HASH_KEY


def test_the_pseudonym_is_the_same_for_the_raw_id_and_the_collectors_form() -> None:
    hashed = user_hasher(SECRET)("alice")
    assert user_key_of("alice", SECRET) == hashed == user_key_of(f"h:{hashed}", SECRET)
    assert user_key_of("alice", "another-secret") != hashed
    key, _ = forget_record("demo", "alice", SECRET)
    assert key == f"demo:{hashed}".encode() and b"alice" not in key


def click(user: str, tenant: str = "demo") -> PixelEvent:
    return PixelEvent(event_id=uuid.uuid4().hex, tenant=tenant, type="click", user_id=user,  # type: ignore[arg-type]
                      session_id=f"s-{uuid.uuid4().hex[:6]}", client_ts=int(time.time() * 1000), search_id="q1",
                      product_id="p1", position=0)


def publish(broker: EmbeddedBroker, prefix: str, events: list[PixelEvent]) -> None:
    send(broker, f"{prefix}shoprank.pixel", [(f"{e.tenant}:{e.session_id}", encode(e)) for e in events])


def wait_pixel(worker: Any, check: Any, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stats = worker.get("/v1/stats/pixel")
        if check(stats):
            return stats
        time.sleep(0.2)
    raise AssertionError(f"pixel stats never got there: {stats}")


@pytest.mark.integration
def test_a_forgotten_shopper_s_events_are_dropped_on_every_path(
    broker: EmbeddedBroker, prefix: str, make_worker: Any
) -> None:
    worker = make_worker(prefix)
    clicks = lambda s: s["counts"].get("demo", {}).get("click", 0)  # noqa: E731
    publish(broker, prefix, [click("alice"), click("alice"), click("bob"), click("alice", tenant="acme")])
    wait_pixel(worker, lambda s: clicks(s) == 3)

    res = run_cli("--bootstrap", broker.bootstrap, "--topic-prefix", prefix, "forget-user", "--tenant", "demo", "alice")
    assert res.returncode == 0, res.stderr
    assert "alice" not in res.stdout  # only the pseudonym is echoed, and stored
    wait_pixel(worker, lambda s: s["privacy"]["users"] == 1)

    pseudonym = "h:" + user_hasher(SECRET)("alice")  # the form the collector publishes
    publish(broker, prefix, [click("alice"), click(pseudonym), click("bob"), click("alice", tenant="acme")])
    stats = wait_pixel(worker, lambda s: s["privacy"]["events_dropped"] == 2 and clicks(s) == 4)
    assert stats["counts"]["acme"]["click"] == 2  # forgotten in demo only: tenants are separate shops
    assert stats["dead_letters"].get("duplicate_event", 0) == 0 and sum(stats["dead_letters"].values()) == 0

    bad = run_cli("--bootstrap", broker.bootstrap, "--topic-prefix", prefix, "forget-user", "--tenant", "Demo!", "x")
    assert bad.returncode == 2 and "tenant" in bad.stderr
