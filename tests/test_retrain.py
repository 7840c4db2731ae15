"""Periodic retraining per tenant: the triggers, the crash-exact training log, and a real cycle on the
broker — attributed interactions and catalogue texts collected from the topics, a due tenant fine-tuned,
registered and gated, a tenant without enough data left alone, bad records dead-lettered."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import orjson
import pytest

from models.evaluation import load_labelled_set
from models.exceptions import ModelError
from models.training.datalog import TrainingLog
from models.training.registry import list_versions
from models.training.schedule import RetrainPolicy, RetrainState, decide_retrain, load_state
from schemas import CatalogueUpdate, DeadLetter, encode
from schemas.interactions import AttributedInteraction, LoggedItem
from streams.broker import EmbeddedBroker
from streams.kafka import producer, read_topic
from streams.retrain import Retrainer
from streams.settings import load_settings
from tests.conftest import run_cli

FIXTURE = Path(__file__).parent / "fixtures" / "eval-mini"
DAY = 86_400_000
T0 = 1_750_000_000_000
POLICY = RetrainPolicy(every_s=3600, min_new=100, min_new_on_schedule=10, min_total=20, min_interval_s=600)


# ------------------------------------------------------------------------------------------- triggers


def test_a_tenant_with_too_little_data_is_never_due() -> None:
    d = decide_retrain(RetrainState(), 19, now=0, policy=POLICY)
    assert not d.due and "fewer than the 20" in d.reason


def test_first_run_waits_for_the_total_then_runs_on_schedule() -> None:
    d = decide_retrain(RetrainState(), 25, now=0, policy=POLICY)
    assert d.due and d.trigger == "schedule" and "never trained" in d.reason


def test_enough_new_data_triggers_before_the_schedule() -> None:
    state = RetrainState(last_run_at=0, positives_at_last_run=50)
    assert not decide_retrain(state, 149, now=1200, policy=POLICY).due  # 99 new, 20 min after: wait
    d = decide_retrain(state, 150, now=1200, policy=POLICY)
    assert d.due and d.trigger == "data" and "100 new positives" in d.reason


def test_elapsed_time_triggers_only_with_some_new_data() -> None:
    state = RetrainState(last_run_at=0, positives_at_last_run=50)
    late = decide_retrain(state, 55, now=7200, policy=POLICY)
    assert not late.due and "only 5 new positives" in late.reason
    d = decide_retrain(state, 60, now=7200, policy=POLICY)
    assert d.due and d.trigger == "schedule"


def test_never_two_runs_within_the_minimum_interval() -> None:
    state = RetrainState(last_run_at=0, positives_at_last_run=0)
    d = decide_retrain(state, 10_000, now=300, policy=POLICY)
    assert not d.due and "minimum interval" in d.reason


# -------------------------------------------------------------------------------------- training log


def _click(i: int, tenant: str = "demo", product: str = "1", query: str = "cordless drill", *,
           ts: int = T0, outcome: str = "click") -> AttributedInteraction:
    return AttributedInteraction(interaction_id=f"{tenant}-{i}", tenant=tenant, search_id=f"s{i}", query=query,
                                 product_id=product, position=0, outcome=outcome,  # type: ignore[arg-type]
                                 event_ts=ts, search_ts=ts, user_hash="ab" * 16, session_id="sess")


def _impression(i: int, products: list[str], tenant: str = "demo", query: str = "cordless drill", *,
                ts: int = T0) -> AttributedInteraction:
    return AttributedInteraction(interaction_id=f"{tenant}-imp-{i}", tenant=tenant, search_id=f"s{i}", query=query,
                                 outcome="impression", event_ts=ts, search_ts=ts,
                                 items=[LoggedItem(product_id=p, position=k) for k, p in enumerate(products)])


def _product(pid: str, title: str, *, ts: int = T0, tenant: str = "demo", price: float | None = None
             ) -> CatalogueUpdate:
    return CatalogueUpdate(tenant=tenant, product_id=pid, updated_at=ts, title=title, price=price,
                           currency="EUR" if price is not None else None)


def test_log_keeps_only_checkpointed_records_across_a_crash(tmp_path: Path) -> None:
    log = TrainingLog(tmp_path)
    for i in range(3):
        log.add_interaction(_click(i))
    log.add_catalogue(_product("1", "Cordless drill"))
    log.checkpoint({"interactions:0": 3, "catalogue:0": 1})
    for i in range(3, 5):
        log.add_interaction(_click(i))  # read from Kafka, never checkpointed:
    log.add_catalogue(_product("2", "Hammer"))
    log._files.sync()  # ...but already on disk when the process dies
    log.close()

    again = TrainingLog(tmp_path)
    assert [r.interaction_id for r in again.interactions("demo")] == ["demo-0", "demo-1", "demo-2"]
    assert again.catalogue("demo") == {"1": "Cordless drill"}
    assert again.positions == {"interactions:0": 3, "catalogue:0": 1}  # Kafka resumes right after them
    assert again.counts["demo"].positives == 3
    again.add_interaction(_click(3))
    again.checkpoint({"interactions:0": 4})
    assert [r.interaction_id for r in again.interactions("demo")][-1] == "demo-3"
    again.close()


def test_log_drops_personal_fields_and_writes_a_text_only_when_it_changes(tmp_path: Path) -> None:
    with TrainingLog(tmp_path) as log:
        log.add_interaction(_click(0))
        assert log.add_catalogue(_product("1", "Cordless drill", ts=T0))
        assert not log.add_catalogue(_product("1", "Cordless drill", ts=T0 + 5, price=99.0))  # price only
        assert not log.add_catalogue(_product("1", "Old drill name", ts=T0 - 5))  # older than what we hold
        assert log.add_catalogue(_product("1", "Cordless drill 20V", ts=T0 + 9))
        log.checkpoint({})
        [row] = log.interactions("demo")
        assert row.user_hash is None and row.session_id is None
        raw = (tmp_path / "demo" / "interactions.jsonl").read_bytes()
        assert b"user_hash" not in raw and b"sess" not in raw
        assert log.catalogue("demo") == {"1": "Cordless drill 20V"}
        assert len((tmp_path / "demo" / "catalogue.jsonl").read_bytes().splitlines()) == 2


def test_only_one_retrainer_per_log(tmp_path: Path) -> None:
    with TrainingLog(tmp_path), pytest.raises(ModelError, match="another retrainer"):
        TrainingLog(tmp_path)


# --------------------------------------------------------------------------------- a real cycle


def _outcomes(tenant: str, sessions: int) -> list[AttributedInteraction]:
    """Each session searches a fixture query, sees its judged products, clicks the relevant ones."""
    data = load_labelled_set(FIXTURE, tenant=tenant)
    out: list[AttributedInteraction] = []
    qids = sorted(data.qrels)
    for s in range(sessions):
        qid = qids[s % len(qids)]
        ts = T0 + s * DAY // 10
        shown = sorted(data.qrels[qid], key=lambda p: -data.qrels[qid][p])
        out.append(_impression(s, shown, tenant, data.queries[qid], ts=ts))
        for pos, pid in enumerate(shown):
            if data.qrels[qid][pid] > 0:
                r = _click(s * 100 + pos, tenant, pid, data.queries[qid], ts=ts + 1000,
                           outcome="purchase" if data.qrels[qid][pid] > 1 else "click")
                out.append(r.model_copy(update={"search_id": f"s{s}", "position": pos}))
    return out


async def _publish(bootstrap: str, settings, records: list[AttributedInteraction],  # type: ignore[no-untyped-def]
                   catalogue: list[CatalogueUpdate], junk: list[bytes] = ()) -> None:  # type: ignore[assignment]
    async with producer(bootstrap, linger_ms=5) as p:
        for u in catalogue:
            await p.send(settings.topic("catalogue"), encode(u), key=f"{u.tenant}:{u.product_id}".encode())
        for r in records:
            await p.send(settings.topic("interactions"), encode(r), key=r.tenant.encode())
        for raw in junk:
            await p.send(settings.topic("interactions"), raw, key=b"demo")


def test_retrainer_collects_trains_the_due_tenant_and_leaves_the_other(broker: EmbeddedBroker, prefix: str,
                                                                        int8_model_dir: Path, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    shutil.copytree(int8_model_dir, models_dir / int8_model_dir.name)  # what serves by default
    settings = load_settings(tenants=("demo", "acme"), kafka={"bootstrap": broker.bootstrap, "topic_prefix": prefix},
                             models={"dir": models_dir},
                             retrain={"min_total": 20, "min_new": 1000, "min_new_on_schedule": 10, "max_steps": 2,
                                      "max_minutes": 3, "min_interval_minutes": 60})
    products = load_labelled_set(FIXTURE, tenant="demo").products
    demo = _outcomes("demo", 30)
    acme = _outcomes("acme", 2)  # a handful of positives: not enough to train on
    asyncio.run(_publish(broker.bootstrap, settings, demo + acme, products, junk=[b"{not json", b'{"tenant": 5}']))

    retrainer = Retrainer(settings, broker.bootstrap)
    try:
        report = asyncio.run(retrainer.collect(max_s=60))
        assert report.interactions == len(demo) + len(acme)
        assert report.catalogue_texts == len(products)
        assert report.dead_letters == {"invalid_json": 1, "missing_field": 1}
        positives = sum(r.outcome != "impression" for r in demo)
        assert retrainer.log.counts["demo"].positives == positives
        decisions = retrainer.decisions()
        assert decisions["demo"].due and decisions["demo"].trigger == "schedule"
        assert not decisions["acme"].due and "fewer than the 20" in decisions["acme"].reason

        results = retrainer.run_due()
        assert set(results) == {"demo"}
        assert results["demo"]["status"] in {"serving", "candidate"}, results
        [m] = list_versions(models_dir, "demo")
        assert m.version == results["demo"]["version"] and m.data["source"] == "retrain:schedule"
        assert m.train["report"]["steps"] == 2 and m.reason  # gated: the reason says why either way
        assert list_versions(models_dir, "acme") == []
        state = load_state(retrainer.root / "schedule", "demo")
        assert state.runs == 1 and state.positives_at_last_run == positives and state.last_version == m.version
        assert not retrainer.decisions()["demo"].due  # nothing new, and within the minimum interval

        # A second cycle reads only what is new: nothing counted twice.
        more = _outcomes("demo", 33)[len(demo):]
        asyncio.run(_publish(broker.bootstrap, settings, more, []))
        assert asyncio.run(retrainer.collect(max_s=60)).interactions == len(more)
        assert retrainer.log.counts["demo"].interactions == len(demo) + len(more)
    finally:
        retrainer.close()

    async def letters() -> list[DeadLetter]:
        return [DeadLetter.model_validate(orjson.loads(v)) async for _, _, _, v, _ in
                read_topic(broker.bootstrap, settings.topic("dead-letters"), idle_timeout_s=1.0)]

    got = asyncio.run(letters())
    assert sorted(d.reason for d in got) == ["invalid_json", "missing_field"]
    assert all(d.agent == "retrain" and d.source_topic == settings.topic("interactions") for d in got)
    assert {d.value for d in got} == {b"{not json", b'{"tenant": 5}'}

    # The CLI reads the same log (a restarted retrainer) and says why nothing is due.
    env = {"SHOPRANK_KAFKA_BOOTSTRAP": broker.bootstrap, "SHOPRANK_KAFKA_TOPIC_PREFIX": prefix,
           "SHOPRANK_MODELS_DIR": str(models_dir), "SHOPRANK_TENANTS": "demo,acme", "SHOPRANK_RETRAIN_MIN_TOTAL": "20"}
    status = run_cli("models", "retrain", "--status", env=env, timeout=120)
    assert status.returncode == 0, status.stderr[-2000:]
    assert "collected 0 interactions" in status.stderr  # all of it was checkpointed before
    assert "demo: " in status.stdout and "not due" in status.stdout and "minimum interval" in status.stdout
