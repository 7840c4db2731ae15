"""The catalogue's versions table on the real broker: it holds deletes only (a product in the store carries
its own ``updated_at``), it comes back from the changelog alone, and a version recorded earlier (tables
written before 2026-12-06 hold upserts' too) still guards its product."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas import CatalogueUpdate
from streams.kafka import producer, read_topic
from streams.supervise import WorkerProcess, http_post_json
from tests.test_search import PRODUCTS, T0, product, send_updates, wait_stats

pytestmark = pytest.mark.integration

APP_ID = "versions"


def changelog(prefix: str) -> str:
    return f"{prefix}{APP_ID}-catalogue-versions-changelog"


def start(broker: Any, prefix: str, model_dir: Path, tmp: Path, data: str) -> WorkerProcess:
    """A worker on its own table directory ``data`` and a store directory shared by every start."""
    return WorkerProcess(
        broker.bootstrap, topic_prefix=prefix, app_id=APP_ID, tenants="demo", data_dir=tmp / data,
        log_path=tmp / f"{data}.log",
        extra_env={"SHOPRANK_MODELS_DIR": str(model_dir.parent), "SHOPRANK_MODELS_EMBEDDER": model_dir.name,
                   "SHOPRANK_STORE_DIR": str(tmp / "index")},
    ).start()


def search(worker: WorkerProcess, query: str) -> list[dict[str, Any]]:
    status, body = http_post_json(worker.url + "/v1/search", {"tenant": "demo", "query": query, "page_size": 10})
    assert status == 200, body
    return body["items"]


def test_only_deletes_are_recorded_and_they_survive_a_new_table_directory(
        broker: Any, prefix: str, model_dir: Path, tmp_path: Path) -> None:
    # A version recorded before this worker: p11 was deleted at T0 + 30.
    async def old_record() -> None:
        async with producer(broker.bootstrap) as prod:
            await prod.send_and_wait(changelog(prefix), orjson.dumps(T0 + 30), key=orjson.dumps("demo:p11"),
                                     partition=0)

    asyncio.run(old_record())
    hose = ("p11", "Garden hose 25 m", "Verdo", ["Garden", "Watering"], 35.0, 8)
    first = start(broker, prefix, model_dir, tmp_path, "data-1")
    try:
        send_updates(broker, prefix, [product(*p) for p in PRODUCTS] + [product(*hose, ts=T0 + 25)])
        wait_stats(first, embedded=len(PRODUCTS), stale=1)
        send_updates(broker, prefix, [CatalogueUpdate(op="delete", tenant="demo", product_id="p6", updated_at=T0 + 20)])
        stats = wait_stats(first, deleted=1)
        assert stats["embedded"] == len(PRODUCTS) and stats["stale"] == 1
        assert "p11" not in [item["product_id"] for item in search(first, "garden hose")]
    finally:
        assert first.stop() == 0

    async def records() -> list[tuple[bytes | None, Any]]:
        return [(key, orjson.loads(value)) async for _, _, key, value, _ in  # type: ignore[misc]
                read_topic(broker.bootstrap, changelog(prefix), idle_timeout_s=1)]

    written = asyncio.run(records())
    # Besides the next offset each batch expects per partition (streams.gapfill, one record per batch)...
    nexts = [(key, value) for key, value in written if key is not None and orjson.loads(key).startswith("next|")]
    assert nexts and all(isinstance(value, dict) for _, value in nexts), written
    # ...the delete and the version recorded before; no upsert wrote a record.
    versions = [record for record in written if record not in nexts]
    assert sorted(versions) == [(orjson.dumps("demo:p11"), T0 + 30), (orjson.dumps("demo:p6"), T0 + 20)], written

    # A new table directory: the versions come from the changelog alone (the store keeps its products).
    second = start(broker, prefix, model_dir, tmp_path, "data-2")
    try:
        before = wait_stats(second)
        send_updates(broker, prefix, [
            # older than the delete: p6 stays deleted
            product("p6", "Claw hammer, fibreglass handle", "Forgeline", ["Tools", "Hand tools"], 19.5, 40, ts=T0 + 15),
            # older than its recorded delete: ignored
            product(*hose, ts=T0 + 28),
            # newer than everything: taken (payload only, the text is unchanged)
            product("p7", "Stainless steel frying pan 28 cm", "Cucina", ["Kitchen", "Cookware"], 29.0, 12, ts=T0 + 10),
        ])
        stats = wait_stats(second, stale=before["stale"] + 2, payload_only=before["payload_only"] + 1)
        assert stats["embedded"] == before["embedded"] and stats["stale"] == before["stale"] + 2
        assert "p6" not in [item["product_id"] for item in search(second, "claw hammer")]
        assert "p11" not in [item["product_id"] for item in search(second, "garden hose")]
        pan = search(second, "frying pan")[0]
        assert pan["product_id"] == "p7" and pan["price"] == 29.0
    finally:
        assert second.stop() == 0
