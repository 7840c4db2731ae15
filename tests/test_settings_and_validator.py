"""Settings parsing and the contextual pixel checks, without a broker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
import uvloop
from pydantic import ValidationError

from schemas import DecodeError
from streams.pixel import PixelValidator
from streams.sample_events import valid_events
from streams.settings import Settings, load_settings
from streams.worker import new_event_loop


def test_settings_read_the_environment_and_flags_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPRANK_KAFKA_BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("SHOPRANK_TENANTS", "demo, acme ,")
    monkeypatch.setenv("SHOPRANK_WORKER_WEB_PORT", "7001")
    s = load_settings(worker={"web_port": 7002, "app_id": None})
    assert s.kafka.bootstrap == "kafka-1:9092,kafka-2:9092"
    assert s.tenants == ("demo", "acme")
    assert s.worker.web_port == 7002 and s.worker.app_id == "shoprank"
    assert s.topic("pixel") == "shoprank.pixel"
    with pytest.raises(ValidationError):
        s.worker.web_port = 1  # type: ignore[misc]  # frozen


def test_bad_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPRANK_WORKER_WEB_PORT", "not-a-port")
    with pytest.raises(ValidationError):
        Settings()


def _validator() -> PixelValidator:
    return PixelValidator(Settings(tenants=("demo",)))


def test_validator_fills_server_ts_from_broker_time() -> None:
    raw = valid_events(1)[0].value
    now = int(time.time() * 1000)
    assert _validator().check(raw, now_ms=now, broker_ts_ms=now - 5).server_ts == now - 5
    assert _validator().check(raw, now_ms=now).server_ts == now


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"tenant": "other"}, "unknown_tenant"),
        ({"client_ts": int(time.time() * 1000) + 3_600_000}, "future_timestamp"),
        ({"page_url": "x" * 70_000}, "payload_too_large"),
    ],
)
def test_contextual_rejections(change: dict, reason: str) -> None:
    ev = {**orjson.loads(valid_events(1)[0].value), **change}
    with pytest.raises(DecodeError) as err:
        _validator().check(orjson.dumps(ev), now_ms=int(time.time() * 1000))
    assert err.value.reason == reason


def test_small_clock_skew_is_accepted() -> None:
    now = int(time.time() * 1000)
    ev = {**orjson.loads(valid_events(1)[0].value), "client_ts": now + 60_000}
    assert _validator().check(orjson.dumps(ev), now_ms=now).client_ts == now + 60_000


def test_resources_are_built_once_even_from_racing_threads(tmp_path, model_dir) -> None:  # type: ignore[no-untyped-def]
    import threading

    from streams.resources import Resources
    from streams.settings import ModelSettings, StoreSettings

    settings = Settings(models=ModelSettings(dir=model_dir.parent, embedder=model_dir.name, batch_size=16),
                        store=StoreSettings(dir=tmp_path / "index"))
    res = Resources(settings)
    assert res.embedder.batch_size == 16  # SHOPRANK_MODELS_BATCH_SIZE reaches the serving embedder
    got: list[object] = []
    barrier = threading.Barrier(4)

    def touch() -> None:
        barrier.wait()
        got.append(res.store)  # a second Edge opener of the same shard directory would fail

    threads = [threading.Thread(target=touch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and all(s is got[0] for s in got)
    assert res.indexer.store is res.searcher.store is got[0]
    res.close()



def test_standby_replicas_reach_faust(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.app import create_app

    monkeypatch.setenv("SHOPRANK_WORKER_STANDBY_REPLICAS", "0")
    settings = load_settings(tenants=("demo",), worker={"data_dir": tmp_path})
    shop = create_app(settings, "127.0.0.1:1")  # built, not started: no broker needed
    assert shop.faust.conf.table_standby_replicas == 0
    assert create_app(load_settings(tenants=("demo",), worker={"data_dir": tmp_path / "b", "standby_replicas": 2}),
                      "127.0.0.1:1").faust.conf.table_standby_replicas == 2


def test_the_worker_event_loop_is_the_one_its_setting_names(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().worker.event_loop == "asyncio"
    monkeypatch.setenv("SHOPRANK_WORKER_EVENT_LOOP", "uvloop")
    assert Settings().worker.event_loop == "uvloop"
    monkeypatch.setenv("SHOPRANK_WORKER_EVENT_LOOP", "trio")
    with pytest.raises(ValidationError, match="asyncio|uvloop"):
        Settings()

    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    for kind, loop_type in (("uvloop", uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)):
        loop = new_event_loop(kind)
        try:
            assert isinstance(loop, loop_type)
            assert (kind == "uvloop") == isinstance(loop, uvloop.Loop)
            assert loop.run_until_complete(answer()) == 42
        finally:
            loop.close()
