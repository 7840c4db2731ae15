"""The worker's ranker hub: a batch writes each engagement record once, with the same values as one by one."""

from __future__ import annotations

from typing import Any

from models.ranker import Engagement
from schemas import AttributedInteraction, LoggedItem
from streams.packed import DictRecords
from streams.ranking import RankerHub
from streams.settings import Settings, WorkerSettings

NOW = 1_700_000_000_000


class CountingTable(dict[str, Any]):
    """Stands in for the Faust table (a mapping): every write would be one changelog record."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes += 1
        super().__setitem__(key, value)


def _batch() -> list[AttributedInteraction]:
    out: list[AttributedInteraction] = []
    for k in range(6):  # six searches showing overlapping products, then a click and a purchase on each
        sid, ts = f"s{k}", NOW + k * 1000
        shown = [f"p{(k + i) % 8}" for i in range(5)]
        out.append(AttributedInteraction(
            interaction_id=f"{sid}:i", tenant="demo", search_id=sid, query="trail shoes", outcome="impression",
            items=[LoggedItem(product_id=p, position=i, features={"dense": 0.5 - i / 10}) for i, p in enumerate(shown)],
            event_ts=ts, search_ts=ts))
        for outcome, value in (("click", 0.0), ("purchase", 40.0)):
            out.append(AttributedInteraction(
                interaction_id=f"{sid}:{outcome}", tenant="demo", search_id=sid, query="trail shoes",
                outcome=outcome, product_id=shown[1], position=1, features={"dense": 0.4},  # type: ignore[arg-type]
                value=value, currency="EUR", event_ts=ts + 10, search_ts=ts))
    return out


def test_a_batch_writes_each_engagement_record_once_with_the_values_of_one_by_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(tenants=("demo",), worker=WorkerSettings(data_dir=tmp_path))  # type: ignore[call-arg]
    batch = _batch()

    table = CountingTable()
    hub = RankerHub(settings, DictRecords(table))
    hub.learn(batch)

    reference: dict[str, list[float]] = {}  # the same updates, one write each, on a plain dict
    engagement = Engagement(reference, half_life_ms=settings.ranker.half_life_days * 86_400_000)
    updates = 0
    for it in batch:
        for item in it.items or ():
            shown = (engagement.product_key(item.product_id), engagement.pair_key(it.query, item.product_id))
            seen = hub.get("demo").propensity(item.position)  # type: ignore[union-attr]
            for key in shown:
                engagement.add(key, now_ms=it.event_ts, examined=seen)
                updates += 1
        if it.product_id is not None:
            for key in (engagement.product_key(it.product_id), engagement.pair_key(it.query, it.product_id)):
                if it.outcome == "click":
                    engagement.add(key, now_ms=it.event_ts, clicks=1.0)
                else:
                    engagement.add(key, now_ms=it.event_ts, purchases=it.credit, revenue=it.value, margin=it.margin)
                updates += 1

    assert {k.removeprefix("eng|demo|"): v for k, v in table.items()} == reference
    assert table.writes == len(reference) < updates  # each record once, however often the batch updated it
    # Outside a batch, reads see what the batch wrote (the search agent ranks from the table).
    assert hub.get("demo").engagement.rates(engagement.product_key("p1"), NOW + 6000).clicks > 0  # type: ignore[union-attr]


def test_many_records_read_at_once_see_held_writes_and_stay_within_the_tenant(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(tenants=("demo", "other"), worker=WorkerSettings(data_dir=tmp_path))  # type: ignore[call-arg]
    table: dict[str, Any] = {"eng|demo|p:a": [1.0] * 7, "eng|other|p:b": [2.0] * 7}
    hub = RankerHub(settings, DictRecords(table))
    view = hub.get("demo").engagement.store  # type: ignore[union-attr]
    assert view.get_many(["p:a", "p:b", "p:c"]) == [[1.0] * 7, None, None]  # p:b is the other tenant's
    view.hold()
    view["p:c"] = [3.0] * 7
    assert view.get_many(["p:a", "p:c"]) == [[1.0] * 7, [3.0] * 7]  # held, not yet written
    assert "eng|demo|p:c" not in table
    view.flush()
    assert view.get_many(["p:c"]) == [[3.0] * 7] and table["eng|demo|p:c"] == [3.0] * 7
