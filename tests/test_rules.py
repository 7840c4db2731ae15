"""Merchandising rules: apply_rules as pure logic, the topic fold, the CLI, and rules live on a real worker."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.rules import apply_rules, in_scope, matches, normalise, rule_status, without_hidden
from models.store import Hit
from schemas import DeadLetter, DecodeError, MerchandisingRule, RuleTarget, SearchResult, decode, encode
from streams.broker import EmbeddedBroker
from streams.kafka import describe_topics, read_topic
from streams.rules import RuleLog
from streams.search_client import SearchClient
from streams.supervise import WorkerProcess
from tests.conftest import run_cli
from tests.test_broker import topic_configs
from tests.test_search import PRODUCTS, product, send, send_updates, wait_stats

NOW = 1_800_000_000_000


def hit(pid: str, score: float, brand: str = "Acme", path: Sequence[str] = ("Shoes", "Running"),
        **attributes: Any) -> Hit:
    payload: dict[str, Any] = {"product_id": pid, "brand": brand, "category_path": list(path)}
    if attributes:
        payload["attributes"] = attributes
    return Hit(pid, score, {"fused": score}, payload)


def rule(action: str, rule_id: str | None = None, *, updated_at: int = NOW - 1000, **fields: Any) -> MerchandisingRule:
    target = {k: fields.pop(k) for k in ("product_id", "brand", "category", "attribute") if k in fields}
    return MerchandisingRule(rule_id=rule_id or f"{action}-{uuid.uuid4().hex[:6]}", tenant="demo", action=action,
                             target=RuleTarget(**target), updated_at=updated_at, **fields)


def run(items: Sequence[Hit], rules: Sequence[MerchandisingRule], *, query: str = "running shoes",
        category: str | None = None, now_ms: int = NOW, page_size: int = 5,
        lookup: Callable[[Sequence[str]], Sequence[Hit]] | None = None) -> list[str]:
    return [r.hit.product_id for r in apply_rules(items, rules, query=query, category=category, now_ms=now_ms,
                                                  page_size=page_size, lookup=lookup)]


ITEMS = [hit("a", 0.9), hit("b", 0.8, brand="Zed"), hit("c", 0.7, path=("Shoes", "Trail"), color="red"),
         hit("d", 0.6, colors=["blue", "Green"], size=42, waterproof=True), hit("e", 0.5), hit("f", 0.4),
         hit("g", 0.3, brand="Zed")]


# --- pure logic ---------------------------------------------------------------------------------------------


def test_no_rules_is_the_first_page_unchanged() -> None:
    out = apply_rules(ITEMS, [], query="q", category=None, now_ms=NOW, page_size=3)
    assert [r.hit for r in out] == ITEMS[:3] and all(r.rules == () for r in out)


@pytest.mark.parametrize("target, gone", [
    ({"product_id": "b"}, {"b"}),
    ({"brand": "zed"}, {"b", "g"}),  # case-insensitive
    ({"category": "Shoes"}, {p.product_id for p in ITEMS}),  # top level of the path
    ({"category": "trail"}, {"c"}),  # leaf level
    ({"attribute": {"color": "RED"}}, {"c"}),
    ({"attribute": {"colors": "green"}}, {"d"}),  # any element of a list
    ({"attribute": {"size": "42"}}, {"d"}),  # numbers by value
    ({"attribute": {"waterproof": "true"}}, {"d"}),
    ({"attribute": {"size": "42", "colors": "red"}}, set()),  # every pair must match
    ({"attribute": {"nope": "x"}}, set()),
])
def test_hide_removes_every_product_the_target_selects_and_the_page_refills(target: dict[str, Any],
                                                                            gone: set[str]) -> None:
    out = run(ITEMS, [rule("hide", **target)], page_size=5)
    expected = [p.product_id for p in ITEMS if p.product_id not in gone][:5]
    assert out == expected


def test_boost_and_bury_scale_scores_resort_and_record_the_rule() -> None:
    boost = rule("boost", "r-boost", product_id="e", factor=2.0)
    bury = rule("bury", "r-bury", brand="Acme", factor=0.5)
    out = apply_rules(ITEMS, [boost, bury], query="q", category=None, now_ms=NOW, page_size=7)
    assert [r.hit.product_id for r in out] == ["b", "e", "a", "c", "d", "g", "f"]  # d, g tie at 0.3: kept in order
    e = next(r for r in out if r.hit.product_id == "e")
    assert e.hit.score == pytest.approx(0.5) and e.hit.scores["rules"] == pytest.approx(1.0)  # 2 × 0.5
    assert e.rules == ("r-boost", "r-bury")  # rule-id order
    b = next(r for r in out if r.hit.product_id == "b")
    assert b.rules == () and "rules" not in b.hit.scores and b.hit.score == 0.8


def test_score_ties_after_scaling_keep_the_ranker_order() -> None:
    items = [hit("x", 0.4), hit("y", 0.8), hit("z", 0.2)]
    out = run(items, [rule("bury", brand="Acme", factor=0.5)], page_size=3)
    assert out == ["y", "x", "z"]  # all scaled alike: order kept
    tie = run([hit("x", 0.4), hit("y", 0.2)], [rule("boost", product_id="y", factor=2.0)], page_size=2)
    assert tie == ["x", "y"]  # 0.4 vs 0.4: the earlier stays first


def test_a_boost_raises_a_negative_score_too() -> None:
    items = [hit("x", -0.1), hit("y", -0.15)]
    assert run(items, [rule("boost", product_id="y", factor=2.0)], page_size=2) == ["y", "x"]
    assert run(items, [rule("bury", product_id="x", factor=0.5)], page_size=2) == ["y", "x"]


def test_pin_places_products_at_their_slots_in_slot_order() -> None:
    pins = [rule("pin", "p2", product_id="f", position=2), rule("pin", "p0", product_id="e", position=0)]
    out = apply_rules(ITEMS, pins, query="q", category=None, now_ms=NOW, page_size=5)
    assert [r.hit.product_id for r in out] == ["e", "a", "f", "b", "c"]
    assert out[0].rules == ("p0",) and out[2].rules == ("p2",) and out[1].rules == ()


def test_contested_slot_goes_to_the_newer_pin_and_the_older_takes_the_next() -> None:
    old = rule("pin", "old", product_id="e", position=1, updated_at=NOW - 5000)
    new = rule("pin", "new", product_id="f", position=1, updated_at=NOW - 10)
    assert run(ITEMS, [old, new], page_size=4) == ["a", "f", "e", "b"]
    twice = [rule("pin", "one", product_id="e", position=3), rule("pin", "two", product_id="e", position=0)]
    assert run(ITEMS, twice, page_size=4) == ["e", "a", "b", "c"]  # first placement (lowest slot) wins


def test_pins_beyond_the_page_or_the_list() -> None:
    assert run(ITEMS, [rule("pin", product_id="g", position=5)], page_size=5) == ["a", "b", "c", "d", "e"]
    short = [hit("a", 0.9), hit("b", 0.8)]
    assert run(short, [rule("pin", product_id="a", position=4)], page_size=5) == ["b", "a"]


def test_a_pinned_product_missing_from_the_candidates_is_fetched_through_the_lookup() -> None:
    asked: list[list[str]] = []

    def lookup(ids: Sequence[str]) -> list[Hit]:
        asked.append(list(ids))
        return [hit(i, 0.01) for i in ids if i == "far"]

    pins = [rule("pin", "far-pin", product_id="far", position=1), rule("pin", product_id="gone", position=0)]
    out = run(ITEMS, pins, page_size=3, lookup=lookup)
    assert out == ["a", "far", "b"] and asked == [["gone", "far"]]  # in pin order; "gone" is not indexed: skipped
    assert run(ITEMS, pins, page_size=3) == ["a", "b", "c"]  # no lookup: such pins do nothing


def test_hide_beats_pin_beats_boost() -> None:
    pin = rule("pin", "pin-b", product_id="b", position=0)
    assert run(ITEMS, [pin, rule("hide", brand="Zed")], page_size=3) == ["a", "c", "d"]
    fetched = rule("pin", product_id="far", position=0)
    assert run(ITEMS, [fetched, rule("hide", brand="Zed")], page_size=2,
               lookup=lambda ids: [hit("far", 0.0, brand="Zed")]) == ["a", "c"]
    bury = rule("bury", "bury-b", product_id="b", factor=0.1)
    out = apply_rules(ITEMS, [pin, bury], query="q", category=None, now_ms=NOW, page_size=3)
    assert out[0].hit.product_id == "b" and out[0].rules == ("pin-b",) and out[0].hit.score == 0.8


def test_query_scope_is_exact_after_normalising() -> None:
    scoped = rule("hide", product_id="a", queries=["Running  SHOES"])
    assert "a" not in run(ITEMS, [scoped], query=" running shoes ")
    assert "a" in run(ITEMS, [scoped], query="running shoe")
    assert normalise("  Red\tJACKET ") == "red jacket"


def test_category_scope_follows_the_request_category_filter_and_both_scopes_must_hold() -> None:
    scoped = rule("hide", product_id="a", categories=["Running"])
    assert "a" in run(ITEMS, [scoped])  # no category filter: not in scope (item categories do not count)
    assert "a" not in run(ITEMS, [scoped], category="running")
    both = rule("hide", product_id="a", categories=["Running"], queries=["shoes"])
    assert "a" in run(ITEMS, [both], query="boots", category="Running")
    assert "a" not in run(ITEMS, [both], query="shoes", category="Running")


def test_time_window_start_inclusive_end_exclusive_and_deleted_rules_never_apply() -> None:
    timed = rule("hide", product_id="a", starts_at=NOW, ends_at=NOW + 10)
    assert "a" in run(ITEMS, [timed], now_ms=NOW - 1)
    assert "a" not in run(ITEMS, [timed], now_ms=NOW)
    assert "a" not in run(ITEMS, [timed], now_ms=NOW + 9)
    assert "a" in run(ITEMS, [timed], now_ms=NOW + 10)
    assert [rule_status(timed, t) for t in (NOW - 1, NOW, NOW + 10)] == ["scheduled", "active", "expired"]
    deleted = rule("hide", product_id="a").model_copy(update={"deleted": True})
    assert "a" in run(ITEMS, [deleted]) and rule_status(deleted, NOW) == "deleted"
    assert in_scope(rule("hide", product_id="a"), query="x", category=None, now_ms=NOW)


def test_without_hidden_is_what_facets_count() -> None:
    rules = [rule("hide", brand="Zed"), rule("hide", product_id="a", queries=["other"])]
    assert [h.product_id for h in without_hidden(ITEMS, rules, query="q", category=None, now_ms=NOW)] == \
        ["a", "c", "d", "e", "f"]


def test_matches_on_a_payload_without_the_field() -> None:
    bare = {"product_id": "x"}
    assert not matches(RuleTarget(brand="Zed"), "x", bare)
    assert not matches(RuleTarget(category="Shoes"), "x", bare)
    assert not matches(RuleTarget(attribute={"color": "red"}), "x", bare)
    assert matches(RuleTarget(product_id="x"), "x", bare)


def test_the_contract_refuses_contradictory_rules() -> None:
    with pytest.raises(ValueError, match="position"):
        rule("pin", product_id="a")
    with pytest.raises(ValueError, match="above 1"):
        rule("boost", product_id="a", factor=0.5)
    with pytest.raises(ValueError, match="below 1"):
        rule("bury", product_id="a", factor=2.0)
    with pytest.raises(ValueError):
        rule("hide", product_id="a", queries=[])  # an empty scope would silently match nothing


_ids = st.sampled_from(list("abcdefghij"))
_rules = st.lists(st.one_of(
    st.builds(lambda p: rule("hide", product_id=p), _ids),
    st.builds(lambda p, n: rule("pin", product_id=p, position=n), _ids, st.integers(0, 12)),
    st.builds(lambda p, f: rule("boost", product_id=p, factor=f), _ids, st.floats(1.01, 10)),
    st.builds(lambda b, f: rule("bury", brand=b, factor=f), st.sampled_from(["Acme", "Zed"]), st.floats(0.01, 0.99)),
), max_size=8)


@settings(max_examples=200, deadline=None)
@given(rules=_rules, page_size=st.integers(1, 12), n=st.integers(0, 10))
def test_property_page_is_unique_bounded_and_never_shows_hidden_products(
        rules: list[MerchandisingRule], page_size: int, n: int) -> None:
    items = [hit(c, 1.0 - i / 10, brand="Zed" if i % 3 else "Acme") for i, c in enumerate("abcdefghij"[:n])]
    out = run(items, rules, page_size=page_size)
    hidden = {r.target.product_id for r in rules if r.action == "hide"}
    assert len(out) == len(set(out)) == min(page_size, n - len(hidden & {h.product_id for h in items}))
    assert not hidden & set(out)
    shown = {h.product_id for h in items} - hidden
    for r in rules:  # an uncontested pin of a visible product holds its slot
        if r.action == "pin" and r.target.product_id in shown:
            rivals = [o for o in rules if o.action == "pin" and o is not r and o.target.product_id not in hidden]
            if not rivals and (r.position or 0) < len(out):
                assert out[r.position or 0] == r.target.product_id


# --- the fold of the topic ----------------------------------------------------------------------------------


def test_rule_log_keeps_the_latest_version_and_remembers_deletes() -> None:
    fold = RuleLog(tenants=frozenset({"demo"}))
    v1 = rule("hide", "r1", product_id="a", updated_at=10)
    v2 = v1.model_copy(update={"updated_at": 20, "target": RuleTarget(product_id="b")})
    key = b"demo:r1"
    assert fold.apply(key, encode(v1)) == ("stored", "demo")
    assert fold.apply(key, encode(v2)) == ("stored", "demo")
    assert fold.apply(key, encode(v1)) == ("stale", "demo")  # an older version read later changes nothing
    assert fold.rules("demo")[0].target.product_id == "b"
    gone = v2.model_copy(update={"deleted": True, "updated_at": 30})
    assert fold.apply(key, encode(gone)) == ("deleted", "demo")
    assert fold.apply(key, encode(v2)) == ("stale", "demo")  # no resurrection
    assert fold.rules("demo") == [] and fold.rules("demo", include_deleted=True)[0].deleted
    assert fold.apply(key, None) == ("tombstone", "demo") and fold.rules("demo", include_deleted=True) == []
    other = rule("hide", "r2", product_id="a").model_copy(update={"tenant": "acme"})
    assert fold.apply(b"acme:r2", encode(other)) == ("other_tenant", "acme") and fold.rules("acme") == []


def test_rule_log_refuses_bad_records() -> None:
    fold = RuleLog()
    with pytest.raises(DecodeError) as err:
        fold.apply(b"demo:x", b"{not json")
    assert err.value.reason == "invalid_json"
    with pytest.raises(DecodeError) as err:
        fold.apply(b"demo:x", orjson.dumps({"rule_id": "x", "tenant": "demo", "action": "pin", "updated_at": 1,
                                            "target": {"product_id": "p1"}}))
    assert "position" in err.value.detail
    with pytest.raises(DecodeError, match="does not match"):
        fold.apply(b"demo:other", encode(rule("hide", "x", product_id="a")))


# --- the command line (input errors need no broker) ---------------------------------------------------------


@pytest.mark.parametrize("args, says", [
    (["--action", "pin", "--product", "p1"], "pin needs --product ID and --position N"),
    (["--action", "pin", "--brand", "B", "--position", "1"], "pin needs --product ID"),
    (["--action", "boost", "--brand", "B"], "boost needs --factor"),
    (["--action", "bury", "--brand", "B", "--factor", "3"], "between 0 and 1"),
    (["--action", "hide", "--brand", "B", "--factor", "3"], "--factor applies to boost and bury only"),
    (["--action", "hide", "--brand", "B", "--position", "3"], "--position applies to pin only"),
    (["--action", "hide"], "name exactly one target"),
    (["--action", "hide", "--brand", "B", "--product", "p"], "name exactly one target"),
    (["--action", "hide", "--attribute", "color"], "name=value"),
    (["--action", "hide", "--brand", "B", "--starts", "tomorrow"], "ISO 8601"),
    (["--action", "hide", "--brand", "B", "--starts", "2026-02-01", "--ends", "2026-01-01"], "--ends must be after"),
    (["--action", "hide", "--brand", "B", "--id", "has space"], "invalid rule (rule_id)"),
    (["--action", "frob", "--brand", "B"], "'frob' is not one of"),
])
def test_rules_add_refuses_bad_input_with_one_line_and_exit_2(args: list[str], says: str) -> None:
    res = run_cli("rules", "add", "--tenant", "demo", *args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in res.stderr and res.stdout == ""


def test_rules_cli_names_a_bad_tenant() -> None:
    res = run_cli("rules", "list", "--tenant", "Not A Tenant")
    assert res.returncode == 2 and "is not a tenant id" in res.stderr


def test_publishing_before_any_worker_creates_the_topics_from_their_specs(broker: EmbeddedBroker) -> None:
    # Named by a producer, a missing topic would be created by the broker's defaults: 4 partitions on
    # the embedded broker, not compacted, so old versions of a rule would expire and others pile up.
    prefix = f"fresh{uuid.uuid4().hex[:6]}."
    cli = ("--bootstrap", broker.bootstrap, "--topic-prefix", prefix)
    assert run_cli(*cli, "rules", "add", "--tenant", "demo", "--action", "hide", "--brand", "B").returncode == 0
    assert run_cli(*cli, "forget-user", "--tenant", "demo", "alice").returncode == 0
    for name in ("rules", "privacy"):
        topic = f"{prefix}shoprank.{name}"
        assert asyncio.run(describe_topics(broker.bootstrap)).get(topic) == 1, topic
        assert topic_configs(broker.bootstrap, topic).get("cleanup.policy") == "compact", topic


# --- live on a worker -----------------------------------------------------------------------------------------

class Shop:
    """A worker with the sample catalogue indexed for two tenants, and the CLI pointed at its broker."""

    def __init__(self, broker: EmbeddedBroker, prefix: str, worker: WorkerProcess) -> None:
        self.broker, self.prefix, self.worker = broker, prefix, worker

    def cli(self, *args: str) -> Any:
        return run_cli("--bootstrap", self.broker.bootstrap, "--topic-prefix", self.prefix, "rules", *args)

    def add(self, *args: str) -> str:
        res = self.cli("add", *args)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    def search(self, query: str, tenant: str = "demo", **fields: Any) -> SearchResult:
        async def go() -> SearchResult:
            async with SearchClient(self.broker.bootstrap, f"{self.prefix}shoprank.search-requests",
                                    f"{self.prefix}shoprank.search-results") as client:
                return await client.search(tenant, query, timeout_s=30, page_size=5, **fields)

        return asyncio.run(go())

    def ids(self, query: str, tenant: str = "demo", **fields: Any) -> list[str]:
        result = self.search(query, tenant, **fields)
        assert result.error is None, result.error
        return [i.product_id for i in result.items]

    def eventually(self, query: str, check: Callable[[list[str]], bool], tenant: str = "demo") -> list[str]:
        """Search until ``check`` holds: workers pick rules up from the topic asynchronously."""
        deadline = time.monotonic() + 30
        while True:
            found = self.ids(query, tenant)
            if check(found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{query!r} for {tenant} still gives {found}")
            time.sleep(0.2)

    def records_read(self) -> int:
        stats = self.worker.get("/v1/stats/rules")
        return sum(stats["records"].values()) + sum(stats["dead_letters"].values())

    def wait_read(self, n: int) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while self.records_read() < n:
            assert time.monotonic() < deadline, self.worker.get("/v1/stats/rules")
            time.sleep(0.1)
        return self.worker.get("/v1/stats/rules")  # type: ignore[no-any-return]


@pytest.mark.integration
def test_rules_live_on_a_worker_and_survive_its_restart(broker: EmbeddedBroker, prefix: str,
                                                        make_worker: Callable[..., WorkerProcess]) -> None:
    # Rules are judged against the hybrid order: no exploration slots shuffling the page under them.
    static = {"SHOPRANK_RANKER_EXPLORE_SLOTS": ""}
    worker = make_worker(prefix, extra_env=static)
    shop = Shop(broker, prefix, worker)
    send_updates(broker, prefix, [product(*p) for p in PRODUCTS]
                 + [product(*p, tenant="acme") for p in PRODUCTS])
    wait_stats(worker, embedded=2 * len(PRODUCTS))
    q = "running shoes"
    base_result = shop.search(q)
    base = [i.product_id for i in base_result.items]
    acme_base = shop.ids(q, "acme")
    assert base[:2] in (["p1", "p2"], ["p2", "p1"]) and "p9" not in base
    assert worker.get("/readyz")["checks"]["rules_loaded"] is True

    # pin: a kitchen knife nobody retrieves for this query goes to slot 1 (fetched from the store)
    pin = shop.add("--tenant", "demo", "--action", "pin", "--product", "p9", "--position", "1",
                   "--query", "Running Shoes")
    assert shop.eventually(q, lambda ids: ids[1:2] == ["p9"])[0] == base[0]
    result = shop.search(q)
    assert result.items[1].rules == [pin] and "rules" in result.timings_ms
    assert "p9" not in shop.ids("trail running shoes")  # query scope: exact after normalising
    assert "p9" not in shop.ids(q, filters={"category": "Shoes"})  # a fetched pin must pass the request's filters

    # hide: the top product is gone and the page is refilled
    hide = shop.add("--tenant", "demo", "--action", "hide", "--product", base[0])
    after = shop.eventually(q, lambda ids: base[0] not in ids)
    assert after[1] == "p9" and len(after) == 5
    top_brand = {p[0]: p[2] for p in PRODUCTS}[base[0]]
    facets = shop.search(q).facets["brand"]
    assert facets.get(top_brand, 0) == base_result.facets["brand"][top_brand] - 1  # facets skip hidden products

    # an expired and a scheduled rule change nothing; a marker rule added after them proves both were read
    past, future = "2020-01-01T00:00", "2099-01-01T00:00"
    res = shop.cli("add", "--tenant", "demo", "--action", "hide", "--product", after[0], "--ends", past)
    assert res.returncode == 0 and "already ended" in res.stderr
    shop.add("--tenant", "demo", "--action", "hide", "--product", after[0], "--starts", future)
    shop.add("--tenant", "demo", "--action", "pin", "--product", "p7", "--position", "3", "--id", "marker")
    marked = shop.eventually(q, lambda ids: ids[3:4] == ["p7"])
    assert marked[0] == after[0]  # neither the expired nor the scheduled hide applied

    # a bad rule on the topic is dead-lettered and the worker goes on reading and serving
    read = shop.records_read()
    send(broker, f"{prefix}shoprank.rules", [
        ("demo:bad", b"{not json"),
        ("demo:bad2", orjson.dumps({"rule_id": "bad2", "tenant": "demo", "action": "pin", "updated_at": 1,
                                    "target": {"product_id": "p1"}})),  # pin without a position
    ])
    stats = shop.wait_read(read + 2)
    assert stats["dead_letters"] == {"invalid_json": 1, "invalid_value": 1}

    async def letters() -> list[DeadLetter]:
        return [decode(DeadLetter, v) async for _, _, _, v, _ in  # type: ignore[arg-type]
                read_topic(broker.bootstrap, f"{prefix}shoprank.dead-letters", idle_timeout_s=1)]

    dead = [d for d in asyncio.run(letters()) if d.agent == "rules"]
    assert [d.reason for d in dead] == ["invalid_json", "invalid_value"] and dead[1].tenant == "demo"
    assert shop.ids(q)[1] == "p9"

    # list: latest versions with their status
    listed = [json.loads(line) for line in shop.cli("list", "--tenant", "demo", "--json").stdout.splitlines()]
    status = {r["rule_id"]: r["status"] for r in listed}
    assert status[pin] == status[hide] == status["marker"] == "active"
    assert sorted(status.values()).count("expired") == 1 and sorted(status.values()).count("scheduled") == 1

    # the other tenant never saw any of it
    assert shop.ids(q, "acme") == acme_base

    # rm: the pin is gone from results and from the list
    rm = shop.cli("rm", "--tenant", "demo", pin)
    assert rm.returncode == 0, rm.stderr
    shop.eventually(q, lambda ids: "p9" not in ids)
    table = shop.cli("list", "--tenant", "demo")
    assert table.returncode == 0 and "marker" in table.stdout and hide in table.stdout and pin not in table.stdout
    again = shop.cli("rm", "--tenant", "demo", pin)
    assert again.returncode == 1 and "has no rule" in again.stderr

    # a worker started later reads the rules back from the topic before it answers
    expected = shop.ids(q)
    worker.stop()
    later = make_worker(prefix, app_id=worker.env["SHOPRANK_WORKER_APP_ID"], extra_env=static)
    shop.worker = later
    assert later.get("/readyz")["checks"]["rules_loaded"] is True
    assert shop.ids(q) == expected and base[0] not in expected
    assert later.get("/v1/stats/rules")["rules"]["demo"] == 4  # hide, expired, scheduled, marker
    assert shop.ids(q, "acme") == acme_base
