"""Hot swap of a tenant's embedding model: searches never fail and never mix two models' vectors.

The "next model" is the base MiniLM with its output negated (one Neg node appended to the ONNX graph):
it ranks exactly as the base model does, yet a query vector of one model against product vectors of
the other scores ``-cosine``, so any mix shows at once in the scores.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.embedder import OnnxEmbedder
from models.indexer import CatalogueIndexer
from models.searcher import Searcher
from models.serving import Serving, ServingTable, collection_for, read_pointer, rebuild, write_pointer
from models.store import open_store
from schemas import CatalogueUpdate, SearchRequest
from streams.samples.generator import generate_catalogue
from tests.conftest import MODELS
from tests.test_search import product, send_updates


@pytest.fixture(scope="module")
def int8_dir(model_dir: Path) -> Path:
    """The next model: the base model with its output negated, under its own version."""
    import shutil

    import onnx

    from models.manifest import ModelManifest, file_sha256

    out = MODELS / "base-negated"
    if (out / "manifest.json").exists():
        return out
    tmp = MODELS / f".negated-{uuid.uuid4().hex[:6]}"
    tmp.mkdir(parents=True)
    shutil.copy(model_dir / "tokenizer.json", tmp / "tokenizer.json")
    model = onnx.load(str(model_dir / "model.onnx"))
    graph = model.graph
    old = graph.output[0].name
    graph.node.append(onnx.helper.make_node("Neg", [old], [old + "_neg"]))
    graph.output[0].name = old + "_neg"
    onnx.save(model, str(tmp / "model.onnx"))
    base = ModelManifest.read(model_dir)
    digest = file_sha256(tmp / "model.onnx")
    base.model_copy(update={"version": f"negated-{digest[:8]}", "sha256": digest}).write(tmp)
    tmp.rename(out)
    return out


def catalogue(n: int, ts: int = 1_000) -> list[CatalogueUpdate]:
    return [u.model_copy(update={"updated_at": ts}) for u in generate_catalogue(n, tenant="demo", seed=7)]


def index_with_hose(broker: Any, prefix: str, worker: Any, n: int) -> None:
    """Publish ``n`` catalogue products and a garden hose (the product a "garden hose" search must find
    first), and wait until ``worker`` has embedded them (at most 90 s)."""
    send_updates(broker, prefix, [u.model_copy(update={"updated_at": 1}) for u in catalogue(n)]
                 + [product("p-hose", "Garden hose 30 m", "Greenline", ["Garden"], 25.0, 4)])
    deadline = time.monotonic() + 90
    while worker.get("/v1/stats/catalogue").get("embedded", 0) < n + 1 and time.monotonic() < deadline:
        time.sleep(0.2)


@pytest.mark.parametrize("kind", ["edge", "qdrant"])
def test_a_swap_under_search_and_update_load_fails_no_search_and_mixes_no_vectors(
    kind: str, model_dir: Path, int8_dir: Path, tmp_path: Path
) -> None:
    base, nxt = OnnxEmbedder(model_dir), OnnxEmbedder(int8_dir)
    assert base.version != nxt.version
    store = open_store(kind, root=tmp_path / "index", url=":memory:")  # type: ignore[arg-type]
    table = ServingTable(base, tmp_path / "serving.json", OnnxEmbedder)
    indexer = CatalogueIndexer(store, base, table)
    searcher = Searcher(store, base, ["demo"], serving=table)
    products = catalogue(300)
    indexer.apply(products)
    queries = ["red jacket", "kitchen knife", "running shoes", "wireless headphones", "garden hose"]

    failures: list[str] = []
    seen: list[tuple[str, str, float, str]] = []  # (embedder version, query, top dense score, top product)
    stop = threading.Event()

    def search_load() -> None:
        i = 0
        while not stop.is_set():
            q = queries[i % len(queries)]
            i += 1
            try:
                r = searcher.search(SearchRequest(request_id=uuid.uuid4().hex, tenant="demo", query=q, page_size=5))
            except Exception as exc:  # noqa: BLE001 - counted: the test demands none
                failures.append(repr(exc))
                continue
            if r.error is not None or not r.items:
                failures.append(f"{r.error} / {len(r.items)} items")
                continue
            top = r.items[0]
            seen.append((r.model_versions["embedder"], q, top.scores.get("dense", float("nan")), top.product_id))

    # Updates while the swap runs: a new product, a price change, a deletion.
    def update_load() -> None:
        time.sleep(0.3)
        indexer.apply([
            products[0].model_copy(update={"price": 1.23, "updated_at": 2_000}),
            CatalogueUpdate(tenant="demo", product_id=products[1].product_id, op="delete", updated_at=2_000),
            products[2].model_copy(update={"product_id": "brand-new", "title": "Brand new garden hose 30 m",
                                           "updated_at": 2_000}),
        ])

    threads = [threading.Thread(target=search_load), threading.Thread(target=update_load)]
    for t in threads:
        t.start()
    try:
        target = Serving(collection_for("demo", nxt.version, base.version), nxt, int8_dir)
        report = rebuild(store, table, "demo", target, page=32, max_core_share=0.5)
        time.sleep(0.5)  # searches on the new model
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)

    assert failures == []
    versions = [v for v, *_ in seen]
    assert set(versions) == {base.version, nxt.version}
    switch = versions.index(nxt.version)
    assert all(v == nxt.version for v in versions[switch:]), "a search went back to the old model"
    assert table.serving("demo").collection == target.collection and report.embedded > 250

    # Never mixed: each top dense score is the cosine of the reported model's query and product vectors.
    texts = {p.product_id: p for p in products}
    for version, query, score, pid in seen[:: max(1, len(seen) // 40)]:
        emb = base if version == base.version else nxt
        if pid not in texts:
            continue
        from models.indexer import product_text

        q, d = emb.embed([query])[0], emb.embed([product_text(texts[pid])])[0]
        assert abs(float(np.dot(q, d)) - score) < 2e-3, (version, query, pid)

    # The new collection has the catalogue as it is now, updates made during the rebuild included.
    new = target.collection
    assert store.count(new) == 300  # 300 - 1 deleted + 1 new
    payloads = store.payloads(new, [products[0].product_id, products[1].product_id, "brand-new"])
    assert payloads[products[0].product_id]["price"] == 1.23 and products[1].product_id not in payloads
    assert payloads["brand-new"]["model_version"] == nxt.version

    # A restarted worker serves the same model and collection; a rollback swaps back the same way.
    reopened = ServingTable(base, tmp_path / "serving.json", OnnxEmbedder)
    assert reopened.serving("demo").collection == new and reopened.serving("demo").version == nxt.version
    back = rebuild(store, table, "demo", Serving("demo", base), max_core_share=1.0)
    assert table.serving("demo").version == base.version and back.new_version == base.version
    assert store.payloads("demo", ["brand-new"])["brand-new"]["model_version"] == base.version
    store.close()


def test_the_pointer_names_a_model_directory(tmp_path: Path) -> None:
    assert read_pointer(tmp_path, "demo") is None
    (tmp_path / "tenants" / "demo" / "v2").mkdir(parents=True)
    write_pointer(tmp_path, "demo", tmp_path / "tenants" / "demo" / "v2")
    assert read_pointer(tmp_path, "demo") == (tmp_path / "tenants" / "demo" / "v2").resolve()
    write_pointer(tmp_path, "demo", None)
    assert read_pointer(tmp_path, "demo") is None


@pytest.mark.integration
def test_a_worker_swaps_when_the_tenant_s_model_is_promoted(
    broker: Any, prefix: str, make_worker: Any, model_dir: Path, int8_dir: Path, tmp_path: Path
) -> None:
    """Over HTTP, on the real broker: searches during the swap all succeed, then report the new model."""
    from streams.supervise import http_post_json

    models = tmp_path / "models"
    models.mkdir()
    (models / "base").symlink_to(model_dir)
    (models / "tenants" / "demo").mkdir(parents=True)
    (models / "tenants" / "demo" / "v-int8").symlink_to(int8_dir)
    worker = make_worker(prefix, extra_env={"SHOPRANK_MODELS_DIR": str(models), "SHOPRANK_MODELS_EMBEDDER": "base",
                                            "SHOPRANK_MODELS_SWAP_CHECK_S": "0.5",
                                            "SHOPRANK_RANKER_EXPLORE_SLOTS": ""})
    index_with_hose(broker, prefix, worker, 200)

    def search() -> tuple[int, Any]:
        return http_post_json(worker.url + "/v1/search", {"tenant": "demo", "query": "garden hose", "page_size": 5})

    status, before = search()
    assert status == 200
    write_pointer(models, "demo", models / "tenants" / "demo" / "v-int8")
    answers: list[tuple[int, Any]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        answers.append(search())
        stats = worker.get("/v1/stats/models")
        if stats["serving"]["demo"]["version"] != before["model_versions"]["embedder"]:
            break
    else:
        raise AssertionError(f"no swap within 120 s: {worker.get('/v1/stats/models')}")
    after_status, after = search()
    assert [s for s, _ in answers if s != 200] == [] and after_status == 200
    assert after["model_versions"]["embedder"] == OnnxEmbedder(int8_dir).version
    assert after["items"][0]["product_id"] == "p-hose"
    deadline = time.monotonic() + 10
    while "demo" not in stats["last_swap"] and time.monotonic() < deadline:  # the report follows the switch
        time.sleep(0.1)
        stats = worker.get("/v1/stats/models")
    assert stats["last_swap"]["demo"]["embedded"] == 201 and stats["failed"] == {}
    assert len(answers) > 3  # the swap took a while, and searches went on meanwhile


@pytest.mark.parametrize("kind", ["edge", "qdrant"])
def test_a_new_base_model_re_embeds_the_products_another_one_embedded_in_place(
    kind: str, model_dir: Path, int8_dir: Path, tmp_path: Path
) -> None:
    """An fp32 catalogue under an int8 default, say: afterwards every vector is the serving model's."""
    from models.serving import refresh_base

    old, new = OnnxEmbedder(model_dir), OnnxEmbedder(int8_dir)
    store = open_store(kind, root=tmp_path / "index", url=":memory:")  # type: ignore[arg-type]
    products = catalogue(120)
    CatalogueIndexer(store, old).apply(products)
    table = ServingTable(new)  # the worker restarted with another base model
    indexer = CatalogueIndexer(store, new, table)
    # Written by the indexer before the refresh: already the new model's, or gone.
    indexer.apply([products[0].model_copy(update={"price": 1.23, "updated_at": 2_000}),
                   CatalogueUpdate(tenant="demo", product_id=products[1].product_id, op="delete", updated_at=2_000)])
    searcher = Searcher(store, new, ["demo"], serving=table)

    target, query = products[5], products[5].title or ""

    def dense() -> float | None:  # the target's dense score; BM25 retrieves it by its title whatever its vector
        r = searcher.search(SearchRequest(request_id=uuid.uuid4().hex, tenant="demo", query=query, page_size=100))
        return next(i.scores.get("dense") for i in r.items if i.product_id == target.product_id)

    before = dense()  # the negated model's query against the old model's vector: far, or not found by it
    assert before is None or before < 0

    done: list[int] = []
    report = refresh_base(store, table, "demo", page=32, max_core_share=1.0, progress=done.append)
    assert report.embedded == 118 and report.old_version == old.version and report.new_version == new.version
    assert done[-1] == 118
    payloads = store.payloads("demo", [p.product_id for p in products])
    assert {p["model_version"] for p in payloads.values()} == {new.version} and len(payloads) == 119
    assert payloads[products[0].product_id]["price"] == 1.23  # the indexer's write stands
    from models.indexer import product_text

    q, d = new.embed([query])[0], new.embed([product_text(target)])[0]
    after = dense()
    assert after is not None and after > 0.5 and abs(float(np.dot(q, d)) - after) < 2e-3

    assert refresh_base(store, table, "demo", max_core_share=1.0).embedded == 0  # nothing left to do
    # A tenant with a promoted model is served from that model's own collection: nothing to refresh.
    table.begin("demo", Serving("demo--x", old, model_dir))
    table.commit("demo")
    assert refresh_base(store, table, "demo", max_core_share=1.0).embedded == 0
    store.close()


@pytest.mark.integration
def test_a_worker_restarted_on_another_base_model_re_embeds_its_catalogue(
    broker: Any, prefix: str, make_worker: Any, model_dir: Path, int8_dir: Path, tmp_path: Path
) -> None:
    """What upgrading to the int8 default does to a catalogue indexed in fp32, with the same data directories."""
    from streams.supervise import http_post_json

    models = tmp_path / "models"
    models.mkdir()
    (models / "before").symlink_to(model_dir)
    (models / "after").symlink_to(int8_dir)
    env = {"SHOPRANK_MODELS_DIR": str(models), "SHOPRANK_MODELS_SWAP_CHECK_S": "0.5",
           "SHOPRANK_RANKER_EXPLORE_SLOTS": ""}
    first = make_worker(prefix, app_id="upgrade", extra_env={**env, "SHOPRANK_MODELS_EMBEDDER": "before"})
    index_with_hose(broker, prefix, first, 150)
    first.stop()

    second = make_worker(prefix, app_id="upgrade", extra_env={**env, "SHOPRANK_MODELS_EMBEDDER": "after"})
    deadline = time.monotonic() + 60
    while "demo" not in (stats := second.get("/v1/stats/models"))["base_refreshed"] and time.monotonic() < deadline:
        time.sleep(0.2)
    new = OnnxEmbedder(int8_dir).version
    assert stats["base_refreshed"]["demo"] == {"version": new, "re_embedded": 151,
                                               "replaced": OnnxEmbedder(model_dir).version,
                                               "seconds": stats["base_refreshed"]["demo"]["seconds"]}, stats
    assert stats["base_refreshed"]["acme"]["re_embedded"] == 0 and stats["failed"] == {}
    status, answer = http_post_json(second.url + "/v1/search", {"tenant": "demo", "query": "garden hose",
                                                                "page_size": 5})
    assert status == 200 and answer["model_versions"]["embedder"] == new
    top = answer["items"][0]
    assert top["product_id"] == "p-hose" and top["scores"]["dense"] > 0.5  # its vector is the new model's
