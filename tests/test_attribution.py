"""Per-search attribution rules, on the pure Attributor (the agent's wiring is tested in test_learning)."""

from __future__ import annotations

from typing import Any

from schemas import LoggedItem, PixelEvent, SearchLog
from streams.attribution import AttributionConfig, Attributor, new_session, user_hasher

T0 = 1_700_000_000_000


def _log(sid: str, items: list[str], ts: int = T0, query: str = "red shoes") -> SearchLog:
    return SearchLog(
        search_id=sid, tenant="demo", session_id="s1", query=query, answered_at=ts,
        items=[LoggedItem(product_id=p, position=i, features={"dense": 0.5, "margin_rate": 0.25})
               for i, p in enumerate(items)],
    )


def _ev(eid: str, etype: str, ts: int, **kw: Any) -> PixelEvent:
    extra: dict[str, Any] = {}
    if etype == "purchase":
        extra = {"value": 40.0, "currency": "EUR", "quantity": 2, "price": 20.0}
    return PixelEvent(event_id=eid, tenant="demo", type=etype, user_id="u1", session_id="s1",  # type: ignore[arg-type]
                      client_ts=ts, server_ts=ts, **{**extra, **kw})


def _attributor(**kw: Any) -> Attributor:
    return Attributor(AttributionConfig(**kw), user_hasher("secret"))


def test_click_and_purchase_credit_the_search_named_by_search_id() -> None:
    a, st = _attributor(), new_session()
    a.add_search(st, _log("q1", ["p1", "p2", "p3"]))
    imp = a.add_event(st, _ev("e0", "impression", T0 + 10, search_id="q1", items=["p1", "p2", "p3"]))
    (page,) = imp.interactions
    assert page.outcome == "impression" and page.items is not None
    assert [(i.product_id, i.position, i.features["dense"]) for i in page.items] == [
        ("p1", 0, 0.5), ("p2", 1, 0.5), ("p3", 2, 0.5)]
    click = a.add_event(st, _ev("e1", "click", T0 + 20, search_id="q1", product_id="p2", position=1)).interactions
    assert [(i.search_id, i.product_id, i.position, i.attributed_by) for i in click] == [("q1", "p2", 1, "search_id")]
    assert click[0].features["dense"] == 0.5 and click[0].query == "red shoes"
    buy = a.add_event(st, _ev("e2", "purchase", T0 + 30, search_id="q1", product_id="p2")).interactions
    assert len(buy) == 1 and buy[0].search_id == "q1" and buy[0].value == 40.0
    assert buy[0].margin == 10.0  # value × the margin rate logged at serve time
    assert buy[0].user_hash and buy[0].user_hash != "u1"


def test_purchase_reached_through_clicks_on_two_searches_splits_the_credit() -> None:
    a, st = _attributor(), new_session()
    a.add_search(st, _log("q1", ["p1", "p2"], T0))
    a.add_search(st, _log("q2", ["p2", "p9"], T0 + 100, query="shoes red"))
    a.add_event(st, _ev("c1", "click", T0 + 10, search_id="q1", product_id="p2"))
    a.add_event(st, _ev("c2", "click", T0 + 110, search_id="q2", product_id="p2"))
    buy = a.add_event(st, _ev("b1", "purchase", T0 + 200, product_id="p2")).interactions
    assert sorted((i.search_id, i.credit, i.value, i.attributed_by) for i in buy) == [
        ("q1", 0.5, 20.0, "click_chain"), ("q2", 0.5, 20.0, "click_chain")]
    assert len({i.interaction_id for i in buy}) == 2


def test_without_search_id_the_latest_search_showing_the_product_in_the_window_gets_it() -> None:
    a, st = _attributor(window_ms=1_000), new_session()
    a.add_search(st, _log("old", ["p1"], T0))
    a.add_search(st, _log("new", ["p1"], T0 + 500))
    click = a.add_event(st, _ev("c1", "click", T0 + 600, product_id="p1")).interactions
    assert [(i.search_id, i.attributed_by) for i in click] == [("new", "session_window")]
    late = a.add_event(st, _ev("c2", "click", T0 + 5_000, product_id="p1"))
    assert late.interactions == [] and late.unattributed[0][1] == "no_search_in_window"


def test_a_click_that_arrives_before_its_search_waits_for_it() -> None:
    a, st = _attributor(), new_session()
    early = a.add_event(st, _ev("c1", "click", T0 + 10, search_id="q1", product_id="p3"))
    assert early.interactions == [] and early.unattributed == [] and len(st["pending"]) == 1
    out = a.add_search(st, _log("q1", ["p1", "p3"]))
    assert [(i.search_id, i.product_id, i.position) for i in out.interactions] == [("q1", "p3", 1)]
    assert st["pending"] == []


def test_an_unknown_search_id_is_reported_once_the_grace_runs_out() -> None:
    a, st = _attributor(late_grace_ms=1_000), new_session()
    a.add_event(st, _ev("c1", "click", T0, search_id="nope", product_id="p1"))
    assert a.expire(st, T0 + 500).unattributed == []
    settled = a.expire(st, T0 + 1_000)
    assert settled.interactions == [] and [r for _, r in settled.unattributed] == ["unknown_search"]
    assert st["pending"] == []


def test_expire_forgets_searches_and_clicks_past_the_window() -> None:
    a, st = _attributor(window_ms=1_000), new_session()
    a.add_search(st, _log("q1", ["p1"], T0))
    a.add_event(st, _ev("c1", "click", T0 + 1, search_id="q1", product_id="p1"))
    a.expire(st, T0 + 2_000)
    assert list(st["searches"]) == ["q1"], "the window runs on event time: nothing newer happened in the session"
    assert not Attributor.is_idle(st, T0 + 1_000, 1_000)
    a.add_event(st, _ev("v1", "page_view", T0 + 1_500))
    a.expire(st, T0 + 2_000)
    assert st["searches"] == {} and st["clicks"] == {}
    assert Attributor.is_idle(st, T0 + 2_501, 1_000) and not Attributor.is_idle(st, T0 + 2_500, 1_000)


def test_a_backlog_handled_late_is_attributed_as_if_handled_live() -> None:
    """A worker catching up (after a restart, behind a burst) handles events long after they happened,
    and the pixel and searches topics in any interleaving: the grace runs on the worker's clock from
    when it parked the event, so a click handled before its search log still meets it."""
    a, st = _attributor(late_grace_ms=1_000, window_ms=60_000), new_session()
    now = T0 + 3_600_000  # an hour after the session happened
    early = a.add_event(st, _ev("c1", "click", T0 + 10, search_id="q1", product_id="p3"), now)
    assert early.interactions == [] and len(st["pending"]) == 1
    assert a.expire(st, now + 999).unattributed == [], "it waits its grace from when it was parked"
    out = a.add_search(st, _log("q1", ["p1", "p3"], T0), now + 500)
    assert [(i.search_id, i.product_id) for i in out.interactions] == [("q1", "p3")]
    a.expire(st, now + 5_000)
    assert list(st["searches"]) == ["q1"], "an hour-old search stays while the session's events are that old"
    buy = a.add_event(st, _ev("b1", "purchase", T0 + 20, product_id="p3"), now + 5_000).interactions
    assert [(i.search_id, i.attributed_by) for i in buy] == [("q1", "click_chain")]
    late = a.add_event(st, _ev("x1", "click", T0 + 10, search_id="gone", product_id="p9"), now + 6_000)
    assert late.unattributed == [] and a.expire(st, now + 7_000).unattributed[0][1] == "unknown_search"


def test_session_state_stays_bounded() -> None:
    a, st = _attributor(max_searches=3), new_session()
    for i in range(10):
        a.add_search(st, _log(f"q{i}", ["p1"], T0 + i))
    assert sorted(st["searches"]) == ["q7", "q8", "q9"]
